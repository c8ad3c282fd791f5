//! Quantization of the model's `f32` input to int8: the first step of an
//! int8 model.

/// The variant this target uses: [`portable`].
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
pub use portable as quantize;

/// The variant this target uses: [`neon::quantize`].
#[cfg(target_arch = "aarch64")]
pub use neon::quantize;

/// `1.5 * 2^23`: adding it to an `f32` of magnitude at most `2^22` leaves a
/// sum in `[2^23, 2^24)`, where the spacing of `f32` values is exactly 1, so
/// the addition itself rounds to an integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Portable input quantization:
/// `out[i] = sat8(zero_point + round_ties_even(clamp(input[i] * inv_scale, -1024, 1024)))`,
/// where `input[i] * inv_scale` is one `f32` multiply and a NaN product gives
/// `zero_point` (`quantize_input` of `derm_codegen::quant`).
///
/// `input` and `out` have the same length (`[3][H][W]`, CHW, as the model
/// input); `zero_point` is the input's zero point.
///
/// The rounding needs no `libm`: for `|v| <= 1024`, `(v + 1.5 * 2^23) - 1.5 * 2^23`
/// is `round_ties_even(v)` exactly. The sum lies in `[2^23, 2^24)`, where
/// `f32` values are the integers, so IEEE round-to-nearest-even rounds it to
/// `1.5 * 2^23 + round_ties_even(v)` (the constant is even, so the parity of
/// the sum is the parity of the rounded `v` and "ties to even" picks the same
/// integer); the subtraction of two integers below `2^24` is then exact.
/// Rust never reassociates or contracts floating-point arithmetic, so the
/// compiler cannot fold the two operations into `v` (this assumes `f32`
/// arithmetic is evaluated in single precision, as on every SSE2, NEON or
/// soft-float target; x87-only targets are not supported).
#[inline]
pub fn portable(input: &[f32], inv_scale: f32, zero_point: i32, out: &mut [i8]) {
    debug_assert_eq!(input.len(), out.len());
    for (o, &x) in out.iter_mut().zip(input) {
        *o = quantize_one(x, inv_scale, zero_point);
    }
}

/// One value by the rule of [`portable`], with the same bits as quantizing a whole `f32`
/// input: for code that quantizes value by value (the portable loop, the oracle's tests).
#[inline(always)]
pub fn quantize_one(x: f32, inv_scale: f32, zero_point: i32) -> i8 {
    let v = x * inv_scale;
    // f32::clamp passes NaN through; the rule maps it to real 0.
    let v = if v.is_nan() {
        0.0
    } else {
        v.clamp(-1024.0, 1024.0)
    };
    // An integer in [-1024, 1024], so the conversion is exact.
    let q = ((v + ROUND_MAGIC) - ROUND_MAGIC) as i32;
    // The oracle adds in i64; saturating in i32 gives the same clamp.
    zero_point.saturating_add(q).clamp(-128, 127) as i8
}

/// aarch64: 16 values per step with FCVTNS, which rounds to nearest with
/// ties to even (the rule's rounding), saturates, and maps NaN to 0 (the
/// rule's NaN), followed by saturating narrows and a saturating add of the
/// zero point. The rule's clamp to `[-1024, 1024]` needs no instruction:
/// beyond it the int8 result saturates either way, for any zero point in
/// `[-128, 127]`; any other zero point takes [`portable`].
#[cfg(target_arch = "aarch64")]
pub mod neon {
    use core::arch::aarch64::*;

    /// NEON input quantization with the contract (and the bits) of
    /// [`super::portable`].
    #[inline]
    pub fn quantize(input: &[f32], inv_scale: f32, zero_point: i32, out: &mut [i8]) {
        debug_assert_eq!(input.len(), out.len());
        let n = input.len().min(out.len());
        if !(-128..=127).contains(&zero_point) {
            return super::portable(&input[..n], inv_scale, zero_point, &mut out[..n]);
        }
        let mut i = 0;
        // SAFETY: every load reads input[i..i + 16] and every store writes
        // out[i..i + 16], with i + 16 <= n <= both lengths; NEON is part of
        // every aarch64 target.
        unsafe {
            let inv = vdupq_n_f32(inv_scale);
            let z = vdupq_n_s16(zero_point as i16);
            while i + 16 <= n {
                let p = input.as_ptr().add(i);
                let q = |k: usize| vcvtnq_s32_f32(vmulq_f32(vld1q_f32(p.add(4 * k)), inv));
                let lo = vqmovn_high_s32(vqmovn_s32(q(0)), q(1));
                let hi = vqmovn_high_s32(vqmovn_s32(q(2)), q(3));
                let (lo, hi) = (vqaddq_s16(lo, z), vqaddq_s16(hi, z));
                vst1q_s8(out.as_mut_ptr().add(i), vqmovn_high_s16(vqmovn_s16(lo), hi));
                i += 16;
            }
        }
        super::portable(&input[i..n], inv_scale, zero_point, &mut out[i..n]);
    }
}

/// x86_64 AVX2 quantization, 16 values per iteration: multiply, turn NaN
/// into 0 (an ordered-compare mask), clamp to `[-1024, 1024]`, convert with
/// the default rounding (to nearest, ties to even, as [`quantize_one`]'s
/// magic-number addition rounds), then narrow with saturating packs after
/// adding the zero point in 16 bits (exact: `|q| <= 1024`). Zero points
/// outside int8 go to [`portable`].
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use core::arch::x86_64::*;

    /// AVX2 quantization with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX2 ([`crate::kernels::has_avx2_fma`]).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize(input: &[f32], inv_scale: f32, zero_point: i32, out: &mut [i8]) {
        debug_assert_eq!(input.len(), out.len());
        let n = input.len().min(out.len());
        if !(-128..=127).contains(&zero_point) {
            return super::portable(&input[..n], inv_scale, zero_point, &mut out[..n]);
        }
        let inv = _mm256_set1_ps(inv_scale);
        let (lo, hi) = (_mm256_set1_ps(-1024.0), _mm256_set1_ps(1024.0));
        let z = _mm256_set1_epi16(zero_point as i16);
        let q = |p: *const f32| {
            // SAFETY: the caller reads 8 values at p, inside input.
            let v = _mm256_mul_ps(unsafe { _mm256_loadu_ps(p) }, inv);
            let v = _mm256_and_ps(v, _mm256_cmp_ps::<_CMP_ORD_Q>(v, v));
            _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi))
        };
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n: the two 8-value loads and the 16-byte
            // store stay inside input and out.
            unsafe {
                let p = input.as_ptr().add(i);
                // packs works per 128-bit half: [a0-3 b0-3 | a4-7 b4-7],
                // put back in order by the 64-bit permute.
                let w = _mm256_packs_epi32(q(p), q(p.add(8)));
                let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(w);
                let w = _mm256_adds_epi16(w, z);
                let b =
                    _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
                _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), b);
            }
            i += 16;
        }
        super::portable(&input[i..n], inv_scale, zero_point, &mut out[i..n]);
    }
}

/// The variant this target uses: [`avx2`] when the CPU has AVX2 (with FMA,
/// as [`crate::kernels::has_avx2_fma`] reports for every AVX2 kernel), else
/// [`portable`].
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn quantize(input: &[f32], inv_scale: f32, zero_point: i32, out: &mut [i8]) {
    if crate::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { avx2::quantize(input, inv_scale, zero_point, out) }
    } else {
        portable(input, inv_scale, zero_point, out)
    }
}
