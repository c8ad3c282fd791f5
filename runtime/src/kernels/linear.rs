//! Fully connected layer (GEMV) on packed weights: `out = act(W x + bias)`.

use super::{Activation, NR};

/// Linear layer; see [`portable`] for the argument contract.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn linear(
    input: &[f32],
    k: usize,
    n: usize,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) {
    portable(input, k, n, w, bias, act, out)
}

/// Portable linear layer.
///
/// `input` is `[k]`, `w` is packed like [`super::pointwise`]'s weights
/// (`n.div_ceil(8) * 8 * k` values), `bias` and `out` are `[n]`.
#[inline]
pub fn portable(
    input: &[f32],
    k: usize,
    n: usize,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) {
    debug_assert_eq!(input.len(), k);
    debug_assert_eq!(w.len(), super::packed_len(k, n));
    debug_assert_eq!(bias.len(), n);
    debug_assert_eq!(out.len(), n);
    if k == 0 {
        for (o, &b) in out.iter_mut().zip(bias) {
            *o = act.apply(b);
        }
        return;
    }
    for (panel, wp) in w.chunks_exact(k * NR).enumerate().take(n.div_ceil(NR)) {
        let j0 = panel * NR;
        let width = NR.min(n - j0);
        // Two accumulator sets break the add dependency chain.
        let mut acc = [[0.0f32; NR]; 2];
        let mut pairs = wp.chunks_exact(2 * NR);
        let mut xs = input.chunks_exact(2);
        for (wrow, x) in (&mut pairs).zip(&mut xs) {
            for c in 0..NR {
                acc[0][c] += x[0] * wrow[c];
                acc[1][c] += x[1] * wrow[NR + c];
            }
        }
        if let ([x], wrow) = (xs.remainder(), pairs.remainder()) {
            for c in 0..NR {
                acc[0][c] += x * wrow[c];
            }
        }
        for c in 0..width {
            out[j0 + c] = act.apply(acc[0][c] + acc[1][c] + bias[j0 + c]);
        }
    }
}
