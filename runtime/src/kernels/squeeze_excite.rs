//! Squeeze-and-excitation: per-channel gates computed from the global mean.
//!
//! `s = hardsigmoid(fc2(relu(fc1(mean_hw(x)))))`, then `x[p][ch] *= s[ch]`,
//! as torchvision's `SqueezeExcitation` in MobileNetV3.
//!
//! When the only reader of the scaled map is a 1x1 convolution, the gates can scale that
//! convolution's weights instead (`squeeze_excite_weights`: `W[j][ch] * s[ch]`, one multiply
//! per weight rather than one per value of the map), which is what codegen emits where the
//! map has more pixels than the convolution has (panel-padded) outputs.

use super::{Activation, NR, SeShape, hardsigmoid, linear, pool};

/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(target_arch = "aarch64")]
pub use neon::squeeze_excite;
/// The variant this target uses: NEON on aarch64, [`portable_weights`] elsewhere.
#[cfg(target_arch = "aarch64")]
pub use neon::squeeze_excite_weights;
/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
pub use portable as squeeze_excite;
/// The variant this target uses: NEON on aarch64, [`portable_weights`] elsewhere.
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
pub use portable_weights as squeeze_excite_weights;

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
    body(x, s, [w1, b1, w2, b2], scratch, linear::portable);
}

/// Portable squeeze-and-excitation folded into the next 1x1 convolution's weights.
///
/// `x`, `s`, `scratch` and the fc layers (`fc`: `[w1, b1, w2, b2]`) as in [`portable`], but
/// `x` is only read; `proj` holds the convolution's weights (`c` inputs, packed in panels of
/// [`NR`] outputs like every 1x1 weight), and `out` receives them with row `ch` of every
/// panel times gate `ch`:
/// `out[p * c * NR + ch * NR + l] = proj[p * c * NR + ch * NR + l] * s[ch]`.
///
/// # Panics
/// If `out` and `proj` differ in length, or their length is not a multiple of `c * NR`.
#[inline]
pub fn portable_weights(
    x: &[f32],
    s: SeShape,
    fc: [&[f32]; 4],
    proj: &[f32],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let gates = gates(x, s, fc, scratch, linear::portable);
    scale_panels(proj, s.c, gates, out);
}

/// The gates of [`portable`] (hardsigmoid applied) in `scratch[..c]`, with the GEMV `gemv`.
#[inline(always)]
fn gates<'a>(
    x: &[f32],
    s: SeShape,
    fc: [&[f32]; 4],
    scratch: &'a mut [f32],
    gemv: Gemv,
) -> &'a [f32] {
    let [w1, b1, w2, b2] = fc;
    let (
        SeShape {
            pixels: hw,
            c,
            squeeze: csq,
        },
        pooled,
        hidden,
    ) = split_scratch(x, s, scratch);
    pool::portable(&x[..hw * c], hw, c, pooled);
    gemv(pooled, c, csq, w1, b1, Activation::Relu, hidden);
    // The pooled means are dead now; their slot receives the gates.
    let gates = pooled;
    gemv(hidden, csq, c, w2, b2, Activation::None, gates);
    for g in gates.iter_mut() {
        *g = hardsigmoid(*g);
    }
    gates
}

/// `scratch` as the pooled means (`c` values, later the gates) and the hidden layer (`csq`),
/// after checking `x` and `scratch` against `s`: the shape checks of every variant's gates.
///
/// # Panics
/// If `x` is shorter than `hw * c` or `scratch` than `c + csq`.
#[inline(always)]
fn split_scratch<'a>(
    x: &[f32],
    s: SeShape,
    scratch: &'a mut [f32],
) -> (SeShape, &'a mut [f32], &'a mut [f32]) {
    assert!(
        x.len() >= s.pixels * s.c,
        "squeeze_excite: x shorter than hw * c"
    );
    assert!(
        scratch.len() >= s.c + s.squeeze,
        "squeeze_excite: scratch shorter than c + csq"
    );
    let (pooled, rest) = scratch.split_at_mut(s.c);
    (s, pooled, &mut rest[..s.squeeze])
}

/// `out = proj` with row `ch` of every panel times `gates[ch]` (see [`portable_weights`]).
#[inline(always)]
fn scale_panels(proj: &[f32], c: usize, gates: &[f32], out: &mut [f32]) {
    assert!(
        proj.len() == out.len() && c > 0 && out.len().is_multiple_of(c * NR) && gates.len() >= c,
        "squeeze_excite_weights: weights of {} values for {c} channels into {}",
        proj.len(),
        out.len()
    );
    for (o, w) in out.chunks_exact_mut(c * NR).zip(proj.chunks_exact(c * NR)) {
        for ((o, w), &g) in o.chunks_exact_mut(NR).zip(w.chunks_exact(NR)).zip(gates) {
            for (d, &v) in o.iter_mut().zip(w) {
                *d = v * g;
            }
        }
    }
}

/// The GEMV signature of [`linear::portable`], which [`body`] calls twice.
type Gemv = fn(&[f32], usize, usize, &[f32], &[f32], Activation, &mut [f32]);

/// [`portable`]'s steps with the GEMV `gemv`: the one source of the portable
/// and AVX2 variants (the latter compiles it with AVX2 and passes
/// `linear::avx2::linear`).
/// `fc` is `[w1, b1, w2, b2]`.
#[inline(always)]
fn body(x: &mut [f32], s: SeShape, fc: [&[f32]; 4], scratch: &mut [f32], gemv: Gemv) {
    let gates = gates(x, s, fc, scratch, gemv);
    // Only the map's pixels: `x` may be longer (checked by `gates`).
    scale_channels(&mut x[..s.pixels * s.c], s.c, gates);
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
    use super::super::{Activation, NR, SeShape, linear, pool};
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
        let (hw, c) = (s.pixels, s.c);
        let gates = fc_gates(x, s, [w1, b1, w2, b2], scratch);
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

    /// NEON [`super::portable_weights`]: the gates as [`squeeze_excite`] computes them, then
    /// each panel's rows scaled four channels at a time (one `ld1` and one `st1` of four
    /// vectors per two rows, the gates by lane).
    ///
    /// # Panics
    /// As [`super::portable_weights`].
    #[inline(always)]
    pub fn squeeze_excite_weights(
        x: &[f32],
        s: SeShape,
        fc: [&[f32]; 4],
        proj: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        let c = s.c;
        assert!(
            proj.len() == out.len() && c > 0 && out.len().is_multiple_of(c * NR),
            "squeeze_excite_weights: weights of {} values for {c} channels into {}",
            proj.len(),
            out.len()
        );
        let gates = fc_gates(x, s, fc, scratch);
        let c4 = c - c % 4;
        // SAFETY: ch + 4 <= c4 <= c keeps gate accesses inside `gates` (c values), and each
        // panel's rows ch..ch + 4 (16 values from p * c * NR + ch * NR) inside the panel of
        // proj and out (lengths asserted equal, a multiple of c * NR).
        unsafe {
            let gp = gates.as_mut_ptr();
            for ch in (0..c4).step_by(4) {
                vst1q_f32(gp.add(ch), hardsigmoid(vld1q_f32(gp.add(ch))));
            }
            for p in 0..out.len() / (c * NR) {
                let mut r = proj.as_ptr().add(p * c * NR);
                let mut o = out.as_mut_ptr().add(p * c * NR);
                for ch in (0..c4).step_by(4) {
                    let g = vld1q_f32(gp.add(ch));
                    scale_two_rows::<0, 1>(&mut r, &mut o, g);
                    scale_two_rows::<2, 3>(&mut r, &mut o, g);
                }
            }
        }
        for (ch, g) in gates.iter_mut().enumerate().take(c).skip(c4) {
            *g = super::super::hardsigmoid(*g);
            for p in 0..out.len() / (c * NR) {
                let at = p * c * NR + ch * NR;
                for (o, &v) in out[at..at + NR].iter_mut().zip(&proj[at..at + NR]) {
                    *o = v * *g;
                }
            }
        }
    }

    /// The gates of both NEON variants before their hardsigmoid (which each applies where it
    /// uses them): the pooled means through fc1 and ReLU, then fc2, in `scratch[..c]`.
    ///
    /// # Panics
    /// If `x` is shorter than `hw * c`, `scratch` than `c + csq`, or a weight slice than its
    /// shape.
    #[inline(always)]
    fn fc_gates<'a>(
        x: &[f32],
        s: SeShape,
        fc: [&[f32]; 4],
        scratch: &'a mut [f32],
    ) -> &'a mut [f32] {
        let [w1, b1, w2, b2] = fc;
        let (
            SeShape {
                pixels: hw,
                c,
                squeeze: csq,
            },
            pooled,
            hidden,
        ) = super::split_scratch(x, s, scratch);
        pool::neon::global_avg_pool(x, hw, c, pooled);
        linear::neon::linear(pooled, c, csq, w1, b1, Activation::Relu, hidden);
        // The pooled means are dead now; their slot receives the gates.
        let gates = pooled;
        linear::neon::linear(hidden, csq, c, w2, b2, Activation::None, gates);
        gates
    }

    /// Two rows of a weight panel (16 values at `*r`: rows `ch + A` and `ch + B` of 8 outputs
    /// each) times gate lanes `A` and `B` of `g`, stored at `*o` with one `st1`; both pointers
    /// advance past them.
    ///
    /// # Safety
    /// `*r` points at 16 readable and `*o` at 16 writable `f32`.
    #[inline(always)]
    unsafe fn scale_two_rows<const A: i32, const B: i32>(
        r: &mut *const f32,
        o: &mut *mut f32,
        g: float32x4_t,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            let a = ld1x4_post_by(r, 16);
            st1x4_post_by(
                o,
                [
                    vmulq_laneq_f32::<A>(a[0], g),
                    vmulq_laneq_f32::<A>(a[1], g),
                    vmulq_laneq_f32::<B>(a[2], g),
                    vmulq_laneq_f32::<B>(a[3], g),
                ],
                16,
            );
        }
    }
}

/// x86_64: [`portable`]'s steps compiled with AVX2 and FMA (the pool and
/// the channel scaling vectorize), with the AVX2 linear layers.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::super::{SeShape, linear};
    use super::{body, gates, scale_panels};

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
        // SAFETY (the GEMV): AVX2 and FMA are this function's contract, and
        // the closure does not leave it.
        let gemv = |x: &[f32], k, n, w: &[f32], b: &[f32], act, out: &mut [f32]| unsafe {
            linear::avx2::linear(x, k, n, w, b, act, out)
        };
        body(x, s, [w1, b1, w2, b2], scratch, gemv);
    }

    /// AVX2 [`super::portable_weights`]: the same steps with the AVX2 GEMV, compiled with
    /// AVX2 (the pool and the weight scaling vectorize).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`super::super::has_avx2_fma`]).
    ///
    /// # Panics
    /// As [`super::portable_weights`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn squeeze_excite_weights(
        x: &[f32],
        s: SeShape,
        fc: [&[f32]; 4],
        proj: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        // SAFETY (the GEMV): as in `squeeze_excite`.
        let gemv = |x: &[f32], k, n, w: &[f32], b: &[f32], act, out: &mut [f32]| unsafe {
            linear::avx2::linear(x, k, n, w, b, act, out)
        };
        let gates = gates(x, s, fc, scratch, gemv);
        scale_panels(proj, s.c, gates, out);
    }
}

/// The variant this target uses: AVX2 + FMA when the CPU has them, else
/// [`portable_weights`].
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn squeeze_excite_weights(
    x: &[f32],
    s: SeShape,
    fc: [&[f32]; 4],
    proj: &[f32],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    if super::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { avx2::squeeze_excite_weights(x, s, fc, proj, scratch, out) }
    } else {
        portable_weights(x, s, fc, proj, scratch, out)
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
