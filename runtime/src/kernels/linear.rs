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

/// NEON GEMV for aarch64: per panel of 8 outputs, four input values are
/// loaded as one vector and broadcast by lane into two independent
/// accumulator pairs (breaking the FMA latency chain).
#[cfg(target_arch = "aarch64")]
pub mod neon {
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
        assert!(input.len() >= k, "linear: input shorter than k");
        assert!(
            w.len() >= packed_len(k, n),
            "linear: packed weights too short"
        );
        assert!(bias.len() >= n, "linear: bias shorter than n");
        assert!(out.len() >= n, "linear: out shorter than n");
        for panel in 0..n.div_ceil(NR) {
            let j0 = panel * NR;
            let width = NR.min(n - j0);
            // SAFETY: panel < n.div_ceil(8), so the panel's k * 8 weights lie
            // inside the asserted packed length; input reads stay below k.
            let (v0, v1) = unsafe { gemv_panel(input.as_ptr(), k, w.as_ptr().add(panel * k * NR)) };
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
    /// # Safety
    /// `x` holds `k` values and `wp` `k * 8`.
    #[inline(always)]
    unsafe fn gemv_panel(x: *const f32, k: usize, wp: *const f32) -> (float32x4_t, float32x4_t) {
        // SAFETY: every read is below k (input) or k * 8 (weights).
        unsafe {
            let z = vdupq_n_f32(0.0);
            let (mut a0, mut a1, mut b0, mut b1) = (z, z, z, z);
            let mut i = 0;
            while i + 4 <= k {
                let xv = vld1q_f32(x.add(i));
                let w = wp.add(i * NR);
                a0 = vfmaq_laneq_f32::<0>(a0, vld1q_f32(w), xv);
                a1 = vfmaq_laneq_f32::<0>(a1, vld1q_f32(w.add(4)), xv);
                b0 = vfmaq_laneq_f32::<1>(b0, vld1q_f32(w.add(8)), xv);
                b1 = vfmaq_laneq_f32::<1>(b1, vld1q_f32(w.add(12)), xv);
                a0 = vfmaq_laneq_f32::<2>(a0, vld1q_f32(w.add(16)), xv);
                a1 = vfmaq_laneq_f32::<2>(a1, vld1q_f32(w.add(20)), xv);
                b0 = vfmaq_laneq_f32::<3>(b0, vld1q_f32(w.add(24)), xv);
                b1 = vfmaq_laneq_f32::<3>(b1, vld1q_f32(w.add(28)), xv);
                i += 4;
            }
            while i < k {
                let xs = *x.add(i);
                a0 = vfmaq_n_f32(a0, vld1q_f32(wp.add(i * NR)), xs);
                a1 = vfmaq_n_f32(a1, vld1q_f32(wp.add(i * NR + 4)), xs);
                i += 1;
            }
            (vaddq_f32(a0, b0), vaddq_f32(a1, b1))
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
        assert!(input.len() >= k, "linear: input shorter than k");
        assert!(
            w.len() >= packed_len(k, n),
            "linear: packed weights too short"
        );
        assert!(bias.len() >= n, "linear: bias shorter than n");
        assert!(out.len() >= n, "linear: out shorter than n");
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
