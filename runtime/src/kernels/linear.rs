//! Fully connected layer (GEMV) on packed weights: `out = act(W x + bias)`.

use super::{Activation, NR};

/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(target_arch = "aarch64")]
pub use neon::linear;
/// The variant this target uses: NEON on aarch64, AVX2 (chosen at run time)
/// on x86_64, [`portable`] elsewhere.
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
pub use portable as linear;

/// Portable linear layer.
///
/// `input` is `[k]`, `w` is packed like [`super::pointwise`](mod@super::pointwise)'s weights
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

/// NEON GEMV for aarch64: per panel of 8 outputs, eight input values are
/// loaded as two vectors and broadcast by lane into four independent
/// accumulator pairs (breaking the FMA latency chain), the weights four
/// vectors per load instruction; full panels take the bias and activation in
/// registers.
#[cfg(target_arch = "aarch64")]
pub mod neon {
    use super::super::neon_util::{activate, ld1x4_post};
    use super::super::{Activation, NR, packed_len};
    use core::arch::aarch64::*;

    /// NEON linear layer with the contract of [`super::portable`].
    ///
    /// # Panics
    /// If a slice is shorter than the shape says.
    // Inlined into each generated layer (constant shapes), like the other NEON kernels.
    #[inline(always)]
    pub fn linear(
        input: &[f32],
        k: usize,
        n: usize,
        w: &[f32],
        bias: &[f32],
        act: Activation,
        out: &mut [f32],
    ) {
        // One pixel of a pointwise layer: the same contract.
        let s = crate::kernels::PointwiseShape { pixels: 1, k, n };
        s.assert_fits("linear", input, (w, packed_len(k, n)), bias, out, None);
        for panel in 0..n.div_ceil(NR) {
            let j0 = panel * NR;
            let width = NR.min(n - j0);
            // SAFETY: panel < n.div_ceil(8), so the panel's k * 8 weights lie
            // inside the asserted packed length; input reads stay below k.
            let (v0, v1) = unsafe { gemv_panel(input.as_ptr(), k, w.as_ptr().add(panel * k * NR)) };
            if width == NR {
                // SAFETY: j0 + 8 <= n bounds the bias reads and the output stores.
                unsafe {
                    let b = bias.as_ptr().add(j0);
                    let o = out.as_mut_ptr().add(j0);
                    vst1q_f32(o, activate(act, vaddq_f32(v0, vld1q_f32(b))));
                    vst1q_f32(o.add(4), activate(act, vaddq_f32(v1, vld1q_f32(b.add(4)))));
                }
                continue;
            }
            let mut t = [0.0f32; NR];
            // SAFETY: t holds 8 values.
            unsafe {
                vst1q_f32(t.as_mut_ptr(), v0);
                vst1q_f32(t.as_mut_ptr().add(4), v1);
            }
            for c in 0..width {
                out[j0 + c] = act.apply(t[c] + bias[j0 + c]);
            }
        }
    }

    /// `sum_i x[i] * wp[i * 8..i * 8 + 8]` as two vectors.
    ///
    /// Eight inputs per step: one `ldp` of inputs, four `ld1` of four weight vectors each
    /// (which advance the weight pointer), 16 `fmla` into four pairs of accumulators (four
    /// independent chains per output vector).
    ///
    /// # Safety
    /// `x` holds `k` values and `wp` `k * 8`.
    #[inline(always)]
    unsafe fn gemv_panel(x: *const f32, k: usize, wp: *const f32) -> (float32x4_t, float32x4_t) {
        // SAFETY: every read is below k (input) or k * 8 (weights): each `ld1x4_post`
        // reads the 16 weights of two inputs and the loops stop at k.
        unsafe {
            let z = vdupq_n_f32(0.0);
            let mut acc = [[z; 2]; 4];
            let mut w = wp;
            let mut i = 0;
            macro_rules! two {
                ($xv:expr, $l:literal, $m:literal, $a:literal, $b:literal) => {
                    let [w0, w1, w2, w3] = ld1x4_post(&mut w);
                    acc[$a][0] = vfmaq_laneq_f32::<$l>(acc[$a][0], w0, $xv);
                    acc[$a][1] = vfmaq_laneq_f32::<$l>(acc[$a][1], w1, $xv);
                    acc[$b][0] = vfmaq_laneq_f32::<$m>(acc[$b][0], w2, $xv);
                    acc[$b][1] = vfmaq_laneq_f32::<$m>(acc[$b][1], w3, $xv);
                };
            }
            while i + 8 <= k {
                let xv = vld1q_f32_x2(x.add(i));
                two!(xv.0, 0, 1, 0, 1);
                two!(xv.0, 2, 3, 2, 3);
                two!(xv.1, 0, 1, 0, 1);
                two!(xv.1, 2, 3, 2, 3);
                i += 8;
            }
            if i + 4 <= k {
                let xv = vld1q_f32(x.add(i));
                two!(xv, 0, 1, 0, 1);
                two!(xv, 2, 3, 2, 3);
                i += 4;
            }
            while i < k {
                let xs = *x.add(i);
                acc[0][0] = vfmaq_n_f32(acc[0][0], vld1q_f32(w), xs);
                acc[0][1] = vfmaq_n_f32(acc[0][1], vld1q_f32(w.add(4)), xs);
                w = w.add(NR);
                i += 1;
            }
            let lo = vaddq_f32(
                vaddq_f32(acc[0][0], acc[1][0]),
                vaddq_f32(acc[2][0], acc[3][0]),
            );
            let hi = vaddq_f32(
                vaddq_f32(acc[0][1], acc[1][1]),
                vaddq_f32(acc[2][1], acc[3][1]),
            );
            (lo, hi)
        }
    }
}

/// AVX2 + FMA GEMV for x86_64 hosts: each panel of 8 output channels is one
/// `__m256` accumulated over `k` (four accumulators, one per input of an
/// unrolled step, to break the FMA dependency chain), as the NEON variant
/// does with its lanes.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::super::{Activation, NR, packed_len};
    use core::arch::x86_64::*;

    // A panel is exactly one __m256.
    const _: () = assert!(NR == 8);

    /// AVX2 linear layer with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`super::super::has_avx2_fma`]).
    ///
    /// # Panics
    /// If a slice is shorter than `k` and `n` say.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn linear(
        input: &[f32],
        k: usize,
        n: usize,
        w: &[f32],
        bias: &[f32],
        act: Activation,
        out: &mut [f32],
    ) {
        // One pixel of a pointwise layer: the same contract.
        let s = crate::kernels::PointwiseShape { pixels: 1, k, n };
        s.assert_fits("linear", input, (w, packed_len(k, n)), bias, out, None);
        let x = input.as_ptr();
        for panel in 0..n.div_ceil(NR) {
            let j0 = panel * NR;
            let width = NR.min(n - j0);
            let mut t = [0.0f32; NR];
            // SAFETY: panel < n.div_ceil(8), so the panel's k * 8 weights lie
            // inside the asserted packed length; input reads stay below k;
            // t holds 8 values.
            unsafe {
                let wp = w.as_ptr().add(panel * k * NR);
                let mut a = [_mm256_setzero_ps(); 4];
                let mut i = 0;
                while i + 4 <= k {
                    for (u, a) in a.iter_mut().enumerate() {
                        let xv = _mm256_set1_ps(*x.add(i + u));
                        *a = _mm256_fmadd_ps(xv, _mm256_loadu_ps(wp.add((i + u) * NR)), *a);
                    }
                    i += 4;
                }
                while i < k {
                    let xv = _mm256_set1_ps(*x.add(i));
                    a[0] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(wp.add(i * NR)), a[0]);
                    i += 1;
                }
                let v = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
                _mm256_storeu_ps(t.as_mut_ptr(), v);
            }
            for c in 0..width {
                out[j0 + c] = act.apply(t[c] + bias[j0 + c]);
            }
        }
    }
}

/// The variant this target uses: AVX2 + FMA when the CPU has them, else
/// [`portable`].
#[cfg(target_arch = "x86_64")]
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
    if super::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { avx2::linear(input, k, n, w, bias, act, out) }
    } else {
        portable(input, k, n, w, bias, act, out)
    }
}
