//! Squeeze-and-excitation: per-channel gates computed from the global mean.
//!
//! `s = hardsigmoid(fc2(relu(fc1(mean_hw(x)))))`, then `x[p][ch] *= s[ch]`,
//! as torchvision's `SqueezeExcitation` in MobileNetV3.

use super::{Activation, global_avg_pool, hardsigmoid, linear};

/// Squeeze-and-excitation in place; see [`portable`] for the contract.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn squeeze_excite(
    x: &mut [f32],
    hw: usize,
    c: usize,
    csq: usize,
    w1: &[f32],
    b1: &[f32],
    w2: &[f32],
    b2: &[f32],
    scratch: &mut [f32],
) {
    portable(x, hw, c, csq, w1, b1, w2, b2, scratch)
}

/// Portable squeeze-and-excitation.
///
/// `x` is `[hw][c]` and is scaled in place; `w1`/`b1` are fc1 (`c -> csq`,
/// packed like pointwise weights), `w2`/`b2` fc2 (`csq -> c`); `scratch`
/// holds at least `c + csq` values.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn portable(
    x: &mut [f32],
    hw: usize,
    c: usize,
    csq: usize,
    w1: &[f32],
    b1: &[f32],
    w2: &[f32],
    b2: &[f32],
    scratch: &mut [f32],
) {
    debug_assert_eq!(x.len(), hw * c);
    debug_assert!(scratch.len() >= c + csq);
    let (pooled, rest) = scratch.split_at_mut(c);
    let hidden = &mut rest[..csq];
    global_avg_pool(x, hw, c, pooled);
    linear(pooled, c, csq, w1, b1, Activation::Relu, hidden);
    // The pooled means are dead now; their slot receives the gates.
    let gates = pooled;
    linear(hidden, csq, c, w2, b2, Activation::None, gates);
    for g in gates.iter_mut() {
        *g = hardsigmoid(*g);
    }
    scale_channels(x, c, gates);
}

/// `x[p][ch] *= gates[ch]`.
#[inline]
fn scale_channels(x: &mut [f32], c: usize, gates: &[f32]) {
    if c == 0 {
        return;
    }
    for px in x.chunks_exact_mut(c) {
        for (v, &g) in px.iter_mut().zip(gates) {
            *v *= g;
        }
    }
}
