//! Squeeze-and-excitation: per-channel gates computed from the global mean.
//!
//! `s = hardsigmoid(fc2(relu(fc1(mean_hw(x)))))`, then `x[p][ch] *= s[ch]`,
//! as torchvision's `SqueezeExcitation` in MobileNetV3.

use super::{Activation, SeShape, hardsigmoid, linear, pool};

/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(target_arch = "aarch64")]
pub use neon::squeeze_excite;
/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
pub use portable as squeeze_excite;

/// Portable squeeze-and-excitation.
///
/// `x` is `[hw][c]` and is scaled in place; `w1`/`b1` are fc1 (`c -> csq`,
/// packed like pointwise weights), `w2`/`b2` fc2 (`csq -> c`); `scratch`
/// holds at least `c + csq` values.
#[inline]
pub fn portable(
    x: &mut [f32],
    s: SeShape,
    w1: &[f32],
    b1: &[f32],
    w2: &[f32],
    b2: &[f32],
    scratch: &mut [f32],
) {
    body(x, s, (w1, b1, w2, b2), scratch, linear::portable);
}

/// The GEMV signature of [`linear::portable`], which [`body`] calls twice.
type Gemv = fn(&[f32], usize, usize, &[f32], &[f32], Activation, &mut [f32]);

/// [`portable`]'s steps with the GEMV `gemv`: the one source of the portable
/// and AVX2 variants (the latter compiles it with AVX2 and passes
/// `linear::avx2::linear`).
/// `fc` is `(w1, b1, w2, b2)`.
#[inline(always)]
fn body(
    x: &mut [f32],
    s: SeShape,
    fc: (&[f32], &[f32], &[f32], &[f32]),
    scratch: &mut [f32],
    gemv: Gemv,
) {
    let SeShape {
        pixels: hw,
        c,
        squeeze: csq,
    } = s;
    let (w1, b1, w2, b2) = fc;
    debug_assert_eq!(x.len(), hw * c);
    debug_assert!(scratch.len() >= c + csq);
    let (pooled, rest) = scratch.split_at_mut(c);
    let hidden = &mut rest[..csq];
    pool::portable(x, hw, c, pooled);
    gemv(pooled, c, csq, w1, b1, Activation::Relu, hidden);
    // The pooled means are dead now; their slot receives the gates.
    let gates = pooled;
    gemv(hidden, csq, c, w2, b2, Activation::None, gates);
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

/// NEON squeeze-and-excitation for aarch64: the NEON pool and GEMV kernels,
/// vector hardsigmoid gates, and a channel-block-outer scale loop that keeps
/// each gate vector in a register while the pixels stream past.
#[cfg(target_arch = "aarch64")]
pub mod neon {
    use super::super::neon_util::{hardsigmoid, ld1x4_post_by, st1x4_post_by};
    use super::super::{Activation, SeShape, linear, pool};
    use core::arch::aarch64::*;

    /// NEON squeeze-and-excitation with the contract of [`super::portable`].
    ///
    /// # Panics
    /// If `x` is shorter than `hw * c`, `scratch` than `c + csq`, or a weight
    /// slice than its shape.
    // Inlined into each generated layer (constant shapes), like the other NEON kernels.
    #[inline(always)]
    pub fn squeeze_excite(
        x: &mut [f32],
        s: SeShape,
        w1: &[f32],
        b1: &[f32],
        w2: &[f32],
        b2: &[f32],
        scratch: &mut [f32],
    ) {
        let SeShape {
            pixels: hw,
            c,
            squeeze: csq,
        } = s;
        assert!(x.len() >= hw * c, "squeeze_excite: x shorter than hw * c");
        assert!(
            scratch.len() >= c + csq,
            "squeeze_excite: scratch shorter than c + csq"
        );
        let (pooled, rest) = scratch.split_at_mut(c);
        let hidden = &mut rest[..csq];
        pool::neon::global_avg_pool(x, hw, c, pooled);
        linear::neon::linear(pooled, c, csq, w1, b1, Activation::Relu, hidden);
        let gates = pooled;
        linear::neon::linear(hidden, csq, c, w2, b2, Activation::None, gates);
        let mut cb = 0;
        // SAFETY: cb + 16 (or cb + 4) <= c keeps gate accesses below c and pixel accesses
        // px * c + cb + 15 (or + 3) below hw * c (asserted above).
        unsafe {
            let xp = x.as_mut_ptr();
            while cb + 16 <= c {
                // 16 channels per pass: each pixel's block is one `ld1` and one `st1`.
                let g: [float32x4_t; 4] = core::array::from_fn(|j| {
                    hardsigmoid(vld1q_f32(gates.as_ptr().add(cb + 4 * j)))
                });
                // The loads and the stores walk the same pixels, each with its own pointer.
                let (mut r, mut p) = (xp.add(cb).cast_const(), xp.add(cb));
                for _ in 0..hw {
                    let v = ld1x4_post_by(&mut r, c);
                    st1x4_post_by(&mut p, core::array::from_fn(|j| vmulq_f32(v[j], g[j])), c);
                }
                cb += 16;
            }
            while cb + 4 <= c {
                let g = hardsigmoid(vld1q_f32(gates.as_ptr().add(cb)));
                for px in 0..hw {
                    let at = xp.add(px * c + cb);
                    vst1q_f32(at, vmulq_f32(vld1q_f32(at), g));
                }
                cb += 4;
            }
        }
        for ch in cb..c {
            let g = super::super::hardsigmoid(gates[ch]);
            for px in 0..hw {
                x[px * c + ch] *= g;
            }
        }
    }
}

/// x86_64: [`portable`]'s steps compiled with AVX2 and FMA (the pool and
/// the channel scaling vectorize), with the AVX2 linear layers.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::super::{SeShape, linear};
    use super::body;

    /// AVX2 squeeze-and-excitation with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`super::super::has_avx2_fma`]).
    ///
    /// # Panics
    /// If a slice is shorter than the shape says.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn squeeze_excite(
        x: &mut [f32],
        s: SeShape,
        w1: &[f32],
        b1: &[f32],
        w2: &[f32],
        b2: &[f32],
        scratch: &mut [f32],
    ) {
        let SeShape {
            pixels: hw,
            c,
            squeeze: csq,
        } = s;
        assert!(x.len() >= hw * c, "squeeze_excite: x shorter than hw * c");
        assert!(
            scratch.len() >= c + csq,
            "squeeze_excite: scratch shorter than c + csq"
        );
        // SAFETY (the GEMV): AVX2 and FMA are this function's contract, and
        // the closure does not leave it.
        let gemv = |x: &[f32], k, n, w: &[f32], b: &[f32], act, out: &mut [f32]| unsafe {
            linear::avx2::linear(x, k, n, w, b, act, out)
        };
        body(&mut x[..hw * c], s, (w1, b1, w2, b2), scratch, gemv);
    }
}

/// The variant this target uses: AVX2 + FMA when the CPU has them, else
/// [`portable`].
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn squeeze_excite(
    x: &mut [f32],
    s: SeShape,
    w1: &[f32],
    b1: &[f32],
    w2: &[f32],
    b2: &[f32],
    scratch: &mut [f32],
) {
    if super::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { avx2::squeeze_excite(x, s, w1, b1, w2, b2, scratch) }
    } else {
        portable(x, s, w1, b1, w2, b2, scratch)
    }
}
