//! Int8 requantization: the one rounding rule every int8 kernel follows.
//!
//! An int8 kernel accumulates in `i32` and maps the accumulator `x` back to
//! the output's int8 scale with a real multiplier `r`, stored as a 31-bit
//! fixed-point multiplier `m` and a right shift `s` (`r = m * 2^-s`):
//!
//! ```text
//! requant(x: i32, m: i32, s: u32) -> i32
//!     = saturate_i32((x as i64 * m as i64 + (1 << (s - 1))) >> s)
//! ```
//!
//! - `>>` is the arithmetic (flooring) shift of the 64-bit value, so the
//!   result is `x * m / 2^s` rounded to nearest, ties toward +infinity, with
//!   a single rounding;
//! - `m` lies in `[2^30, 2^31 - 1]` and `s` in `[1, 62]`. The product fits
//!   `i64` because `|x| <= 2^31` and `m < 2^31`, and adding `2^(s - 1) <= 2^61`
//!   cannot overflow either;
//! - the result saturates to `i32`, which matters when `r > 1`.
//!
//! `derm-codegen` derives `(m, s)` from `r` as `s = 30 - floor(log2 r)`,
//! `m = round(r * 2^s)`, and if `m == 2^31` then `m = 2^30, s -= 1`; it
//! rejects scales whose `s` falls outside `[1, 62]`.
//!
//! [`requant_i8`] applies the rule to one output row (one pixel's channels,
//! per-channel multipliers), adds the output zero point and clamps to
//! `[min, max]`: `(-128, 127)` for plain int8 saturation, `(zero_point, 127)`
//! for a fused ReLU. Every variant gives bit-identical results.

/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(target_arch = "aarch64")]
pub use neon::requant_i8;
/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
pub use portable as requant_i8;

/// The requantization rule for one value (see the module docs):
/// `saturate_i32((x * m + 2^(s - 1)) >> s)` computed in `i64`.
///
/// `m` must lie in `[2^30, 2^31 - 1]` and `s` in `[1, 62]` (checked by
/// `debug_assert!`).
#[inline(always)]
pub const fn requant(x: i32, m: i32, s: u32) -> i32 {
    debug_assert!(
        m >= 1 << 30 && s >= 1 && s <= 62,
        "requant: multiplier outside [2^30, 2^31 - 1] or shift outside [1, 62]"
    );
    // |x * m| < 2^62 and 2^(s - 1) <= 2^61, so the sum cannot overflow.
    let v = (x as i64 * m as i64 + (1i64 << (s - 1))) >> s;
    if v > i32::MAX as i64 {
        i32::MAX
    } else if v < i32::MIN as i64 {
        i32::MIN
    } else {
        v as i32
    }
}

/// Portable row requantization:
/// `out[i] = clamp(zero_point + requant(acc[i], mult[i], shift[i]), min, max)`.
///
/// All slices have the same length; `zero_point` lies in `[-128, 127]` and
/// `min <= max`. The zero-point addition saturates in `i32` (it can only
/// matter for saturated values, which the clamp maps to `min` or `max`
/// anyway).
#[inline]
pub fn portable(
    acc: &[i32],
    mult: &[i32],
    shift: &[u8],
    zero_point: i32,
    min: i8,
    max: i8,
    out: &mut [i8],
) {
    debug_assert_eq!(acc.len(), out.len());
    debug_assert_eq!(mult.len(), out.len());
    debug_assert_eq!(shift.len(), out.len());
    debug_assert!(min <= max);
    // The vector variants add the zero point in 64 bits without saturating;
    // that equals this saturating add only for int8 zero points.
    debug_assert!((-128..=127).contains(&zero_point));
    for (((o, &x), &m), &s) in out.iter_mut().zip(acc).zip(mult).zip(shift) {
        let v = requant(x, m, s as u32).saturating_add(zero_point);
        // max-then-min, in this order in every variant, so that even a
        // (contract-breaking) min > max gives the same bits everywhere.
        *o = v.max(min as i32).min(max as i32) as i8;
    }
}

/// NEON row requantization for aarch64, 8 values per iteration.
///
/// `SRSHL` with a negative per-lane shift (`vrshlq_s64`) is exactly the rule:
/// it adds `2^(s - 1)` and shifts right arithmetically, computing the sum
/// without intermediate overflow, for every shift up to 63. `vqmovn_s64`
/// then saturates to `i32`, `vqaddq_s32` adds the zero point saturating like
/// [`portable`], and the final narrowings to `i8` are exact because the
/// values are already clamped to `[min, max]`.
#[cfg(target_arch = "aarch64")]
pub mod neon {
    use super::portable;
    use core::arch::aarch64::*;

    /// NEON row requantization with the contract of [`super::portable`].
    ///
    /// # Panics
    /// If `acc`, `mult` or `shift` is shorter than `out` (the raw-pointer
    /// loop relies on this check).
    #[inline]
    pub fn requant_i8(
        acc: &[i32],
        mult: &[i32],
        shift: &[u8],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
    ) {
        let len = out.len();
        assert!(
            acc.len() >= len && mult.len() >= len && shift.len() >= len,
            "requant_i8: inputs shorter than out"
        );
        // SAFETY (every load below): rows8 calls this with i + 8 <= len, and every input
        // holds at least len values (asserted above). NEON is part of every aarch64 target.
        let rescale = |i: usize| unsafe {
            let s8 = vld1_u8(shift.as_ptr().add(i));
            let (a, m) = (acc.as_ptr().add(i), mult.as_ptr().add(i));
            if vminv_u8(s8) > 31 {
                // Every shift above 31 (every conv layer of the shipped models): the 32-bit
                // form, see `high_quad`.
                let t = vmovl_s8(vreinterpret_s8_u8(vsub_u8(vdup_n_u8(31), s8)));
                (
                    high_quad(a, m, vget_low_s16(t)),
                    high_quad(a.add(4), m.add(4), vget_high_s16(t)),
                )
            } else {
                // Negated shifts: SRSHL shifts right for negative counts and reads only the
                // low byte of each 64-bit count.
                let ns = vmovl_s8(vneg_s8(vreinterpret_s8_u8(s8)));
                (
                    quad(a, m, vget_low_s16(ns)),
                    quad(a.add(4), m.add(4), vget_high_s16(ns)),
                )
            }
        };
        rows8(acc, mult, shift, zero_point, min, max, out, rescale);
    }

    /// The loop of both NEON rows: values `i..i + 8` rescaled by `rescale(i)` (the rule
    /// without the zero point, called only with `i + 8 <= out.len()`), then the zero point
    /// added saturating, the clamp, the narrows and the store; the tail by [`portable`].
    #[allow(clippy::too_many_arguments)] // the row's arguments, plus its rescale
    #[inline(always)]
    fn rows8(
        acc: &[i32],
        mult: &[i32],
        shift: &[u8],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
        rescale: impl Fn(usize) -> (int32x4_t, int32x4_t),
    ) {
        debug_assert!(min <= max);
        let len = out.len();
        let mut i = 0;
        // SAFETY: i + 8 <= len, so the 8-byte store stays in out; NEON is part of every
        // aarch64 target.
        unsafe {
            let zp = vdupq_n_s32(zero_point);
            let lo = vdupq_n_s32(min as i32);
            let hi = vdupq_n_s32(max as i32);
            while i + 8 <= len {
                let (a, b) = rescale(i);
                let (mut a, mut b) = (vqaddq_s32(a, zp), vqaddq_s32(b, zp));
                // The saturating narrows below already clamp to [-128, 127]:
                // only tighter bounds (a fused ReLU's) need their own step.
                if min > i8::MIN {
                    (a, b) = (vmaxq_s32(a, lo), vmaxq_s32(b, lo));
                }
                if max < i8::MAX {
                    (a, b) = (vminq_s32(a, hi), vminq_s32(b, hi));
                }
                let v = vqmovn_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(b)));
                vst1_s8(out.as_mut_ptr().add(i), v);
                i += 8;
            }
        }
        portable(
            &acc[i..len],
            &mult[i..len],
            &shift[i..len],
            zero_point,
            min,
            max,
            &mut out[i..],
        );
    }

    /// [`requant_i8`] for a row whose shifts all exceed 31, with
    /// `high_shift[i] = 31 - shift[i]` precomputed by codegen: 8 values per
    /// step in 32-bit lanes (SQDMULH, then SRSHL by `31 - s`: the exact form
    /// of the rule proved at `high_quad`) with no conversion or check of the
    /// shifts.
    ///
    /// # Panics
    /// If `acc`, `mult`, `shift` or `high_shift` is shorter than `out`.
    #[allow(clippy::too_many_arguments)] // requant_i8's, plus the second form of the shifts
    #[inline]
    pub fn requant_i8_high(
        acc: &[i32],
        mult: &[i32],
        shift: &[u8],
        high_shift: &[i32],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
    ) {
        let len = out.len();
        assert!(
            acc.len() >= len && mult.len() >= len && shift.len() >= len && high_shift.len() >= len,
            "requant_i8_high: inputs shorter than out"
        );
        // SAFETY (every load below): rows8 calls this with i + 8 <= len, and every input
        // holds at least len values (asserted above). NEON is part of every aarch64 target.
        let rescale = |i: usize| unsafe {
            let (a, m, t) = (
                acc.as_ptr().add(i),
                mult.as_ptr().add(i),
                high_shift.as_ptr().add(i),
            );
            (
                vrshlq_s32(vqdmulhq_s32(vld1q_s32(a), vld1q_s32(m)), vld1q_s32(t)),
                vrshlq_s32(
                    vqdmulhq_s32(vld1q_s32(a.add(4)), vld1q_s32(m.add(4))),
                    vld1q_s32(t.add(4)),
                ),
            )
        };
        rows8(acc, mult, shift, zero_point, min, max, out, rescale);
    }

    /// The rule on four lanes whose shifts `s` all exceed 31, in 32-bit
    /// lanes; `t` holds `31 - s` (negative).
    ///
    /// SQDMULH gives `q = floor(x * m / 2^31)` (it saturates only for two
    /// `i32::MIN` operands, and `m >= 2^30`), and SRSHL by `31 - s` gives
    /// `floor((q + 2^(s - 32)) / 2^(s - 31))` without intermediate overflow.
    /// That is the rule's `floor((x * m + 2^(s - 1)) / 2^s)`: with
    /// `x * m = q * 2^31 + r`, `0 <= r < 2^31`, the rule's quotient is
    /// `(N + r / 2^31) / 2^(s - 31)` for the integer `N = q + 2^(s - 32)`, and
    /// adding a fraction below 1 to an integer numerator never moves the
    /// floor of a division by a power of two. The result needs no
    /// saturation (`|x * m| < 2^62`). Two instructions a lane pair instead
    /// of the 64-bit products and shifts of [`quad`].
    ///
    /// # Safety
    /// `acc` and `mult` point at four readable values each.
    #[inline(always)]
    unsafe fn high_quad(acc: *const i32, mult: *const i32, t: int16x4_t) -> int32x4_t {
        // SAFETY: the caller guarantees four values behind each pointer; the
        // rest is register-only NEON (aarch64 baseline).
        unsafe {
            let q = vqdmulhq_s32(vld1q_s32(acc), vld1q_s32(mult));
            vrshlq_s32(q, vmovl_s16(t))
        }
    }

    /// `saturate_i32((x * m + 2^(s - 1)) >> s)` on four lanes; `ns` holds the
    /// negated shifts.
    ///
    /// # Safety
    /// `acc` and `mult` point at four readable values each.
    #[inline(always)]
    unsafe fn quad(acc: *const i32, mult: *const i32, ns: int16x4_t) -> int32x4_t {
        // SAFETY: the caller guarantees four values behind each pointer; the
        // rest is register-only NEON (aarch64 baseline).
        unsafe {
            let x = vld1q_s32(acc);
            let m = vld1q_s32(mult);
            let ns = vmovl_s16(ns);
            let p0 = vmull_s32(vget_low_s32(x), vget_low_s32(m));
            let p1 = vmull_high_s32(x, m);
            let r0 = vrshlq_s64(p0, vmovl_s32(vget_low_s32(ns)));
            let r1 = vrshlq_s64(p1, vmovl_high_s32(ns));
            vqmovn_high_s64(vqmovn_s64(r0), r1)
        }
    }
}

/// AVX2 row requantization for x86_64 hosts, 8 values per iteration.
///
/// `_mm256_mul_epi32` multiplies the even 32-bit lanes into 64-bit products,
/// so the odd lanes go through a second multiply after a 32-bit shift. AVX2
/// has no 64-bit arithmetic right shift, but the logical `_mm256_srlv_epi64`
/// gives the same result after an offset: every product `v = x * m` of two
/// `i32`s lies in `[-2^62 + 2^31, 2^62]`, so `v + 2^(s - 1) + 2^62` lies in
/// `[0, 2^64)` (no wrap-around as an unsigned 64-bit value) and
/// `(v + 2^(s - 1) + 2^62) >>logical s == ((v + 2^(s - 1)) >>arith s) + 2^(62 - s)`
/// because `2^s` divides `2^62` for `s <= 62`. After subtracting `2^(62 - s)` the zero
/// point is added and the value clamped to `[min, max]` while still 64-bit,
/// which equals [`portable`]'s saturate-then-clamp since `min` and `max` lie
/// well inside `i32`.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::portable;
    use core::arch::x86_64::*;

    /// AVX2 row requantization with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX2 (implied by [`super::super::has_avx2_fma`]).
    ///
    /// # Panics
    /// If `acc`, `mult` or `shift` is shorter than `out`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn requant_i8(
        acc: &[i32],
        mult: &[i32],
        shift: &[u8],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
    ) {
        let len = out.len();
        assert!(
            acc.len() >= len && mult.len() >= len && shift.len() >= len,
            "requant_i8: inputs shorter than out"
        );
        debug_assert!(min <= max);
        let c = Consts {
            zp: _mm256_set1_epi64x(zero_point as i64),
            lo: _mm256_set1_epi64x(min as i64),
            hi: _mm256_set1_epi64x(max as i64),
        };
        let mut i = 0;
        while i + 8 <= len {
            // SAFETY: i + 8 <= len and every input holds at least len values,
            // so the 8-lane loads (unaligned) and the 8-byte store stay in
            // bounds.
            unsafe {
                let x = _mm256_loadu_si256(acc.as_ptr().add(i).cast());
                let m = _mm256_loadu_si256(mult.as_ptr().add(i).cast());
                let s = _mm256_cvtepu8_epi32(_mm_loadl_epi64(shift.as_ptr().add(i).cast()));
                // Even lanes keep their 32-bit values in the low halves of
                // the 64-bit lanes (mul_epi32 ignores the high halves, the
                // shift counts must be masked); odd lanes are moved down.
                let even = lanes(
                    x,
                    m,
                    _mm256_and_si256(s, _mm256_set1_epi64x(0xFFFF_FFFF)),
                    &c,
                );
                let odd = lanes(
                    _mm256_srli_epi64::<32>(x),
                    _mm256_srli_epi64::<32>(m),
                    _mm256_srli_epi64::<32>(s),
                    &c,
                );
                // Clamped to [min, max], so the low 32 bits are the values;
                // interleave them back into lane order.
                let v = _mm256_blend_epi32::<0b1010_1010>(even, _mm256_slli_epi64::<32>(odd));
                // Saturating packs are exact on values already in i8 range.
                let w =
                    _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                _mm_storel_epi64(out.as_mut_ptr().add(i).cast(), _mm_packs_epi16(w, w));
            }
            i += 8;
        }
        portable(
            &acc[i..len],
            &mult[i..len],
            &shift[i..len],
            zero_point,
            min,
            max,
            &mut out[i..],
        );
    }

    /// Per-call constants, broadcast to 64-bit lanes.
    struct Consts {
        zp: __m256i,
        lo: __m256i,
        hi: __m256i,
    }

    /// `clamp(zp + ((x * m + 2^(s - 1)) >> s), lo, hi)` on the four 64-bit
    /// lanes whose low 32 bits hold `x` and `m`; `s` holds 64-bit counts.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lanes(x: __m256i, m: __m256i, s: __m256i, c: &Consts) -> __m256i {
        let one = _mm256_set1_epi64x(1);
        let bias = _mm256_set1_epi64x(1 << 62);
        let p = _mm256_mul_epi32(x, m);
        // 2^(s - 1) + 2^62: the rounding constant plus the offset that makes
        // the sum non-negative, so the logical shift floors like an
        // arithmetic one.
        let round = _mm256_add_epi64(_mm256_sllv_epi64(one, _mm256_sub_epi64(s, one)), bias);
        let q = _mm256_srlv_epi64(_mm256_add_epi64(p, round), s);
        let v = _mm256_sub_epi64(q, _mm256_srlv_epi64(bias, s));
        let v = _mm256_add_epi64(v, c.zp);
        // AVX2 has no 64-bit min/max: compare and blend, max first like
        // the other variants.
        let v = _mm256_blendv_epi8(v, c.lo, _mm256_cmpgt_epi64(c.lo, v));
        _mm256_blendv_epi8(v, c.hi, _mm256_cmpgt_epi64(v, c.hi))
    }
}

/// AVX-512 row requantization for x86_64 hosts (F and VL, in 256-bit
/// registers), 8 values per iteration: the [`avx2`] variant's computation
/// with the instructions AVX2 lacks. The 64-bit products of
/// `_mm256_mul_epi32` are shifted by the arithmetic `vpsravq` (no offset
/// needed) and clamped with the 64-bit `vpmaxsq`/`vpminsq` (no compare and
/// blend), and `vpmovdb` narrows the clamped values to bytes.
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::portable;
    use core::arch::x86_64::*;

    /// AVX-512 row requantization with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and VL and AVX2 (implied by
    /// [`super::super::has_avx512_vnni`]).
    ///
    /// # Panics
    /// If `acc`, `mult` or `shift` is shorter than `out`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx2")]
    pub unsafe fn requant_i8(
        acc: &[i32],
        mult: &[i32],
        shift: &[u8],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
    ) {
        let len = out.len();
        assert!(
            acc.len() >= len && mult.len() >= len && shift.len() >= len,
            "requant_i8: inputs shorter than out"
        );
        debug_assert!(min <= max);
        let zp = _mm256_set1_epi64x(zero_point as i64);
        let (lo, hi) = (
            _mm256_set1_epi64x(min as i64),
            _mm256_set1_epi64x(max as i64),
        );
        let low32 = _mm256_set1_epi64x(0xFFFF_FFFF);
        let mut i = 0;
        while i + 8 <= len {
            // SAFETY: i + 8 <= len and every input holds at least len values,
            // so the 8-lane loads (unaligned) and the 8-byte store stay in
            // bounds.
            unsafe {
                let x = _mm256_loadu_si256(acc.as_ptr().add(i).cast());
                let m = _mm256_loadu_si256(mult.as_ptr().add(i).cast());
                let s = _mm256_cvtepu8_epi32(_mm_loadl_epi64(shift.as_ptr().add(i).cast()));
                // mul_epi32 reads the low half of each 64-bit lane: the even
                // lanes in place, the odd ones moved down.
                let even = lanes(x, m, _mm256_and_si256(s, low32), zp, lo, hi);
                let odd = lanes(
                    _mm256_srli_epi64::<32>(x),
                    _mm256_srli_epi64::<32>(m),
                    _mm256_srli_epi64::<32>(s),
                    zp,
                    lo,
                    hi,
                );
                // Clamped to [min, max], so the low 32 bits are the values,
                // and truncating them to bytes is exact.
                let v = _mm256_blend_epi32::<0b1010_1010>(even, _mm256_slli_epi64::<32>(odd));
                _mm_storel_epi64(out.as_mut_ptr().add(i).cast(), _mm256_cvtepi32_epi8(v));
            }
            i += 8;
        }
        portable(
            &acc[i..len],
            &mult[i..len],
            &shift[i..len],
            zero_point,
            min,
            max,
            &mut out[i..],
        );
    }

    /// [`requant_i8`] for a row whose shifts all exceed 31, with
    /// `high_shift[i] = 31 - shift[i]` precomputed by codegen (the form
    /// `neon::requant_i8_high` uses): 16 values per step in 32-bit lanes,
    /// the row's tail through a lane mask.
    ///
    /// `h = floor(x * m / 2^31)` comes from the even and odd 64-bit products
    /// (`vpmuldq`), each shifted so that bits 31-62 land in its own 32-bit
    /// half, then blended. The rounding shift by `r = s - 31 >= 1` is
    /// `(u >> 1) + (u & 1)` with `u = h >> (r - 1)`, which is
    /// `floor((h + 2^(r - 1)) / 2^r)` without the add that could overflow.
    /// Together they are the rule exactly (the proof is at
    /// `neon::high_quad`: the floor of the product by `2^31` followed by a
    /// rounding shift equals the single rounding). The result lies within
    /// `±2^30`, so adding the zero point cannot wrap, and `vpmovsdb`'s signed
    /// saturation to `[-128, 127]` followed by the clamp to `[min, max]` in
    /// bytes equals [`super::portable`]'s clamp of the `i32` value.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VL and AVX2 (implied by
    /// [`super::super::has_avx512_vnni`]).
    ///
    /// # Panics
    /// If `acc`, `mult`, `shift` or `high_shift` is shorter than `out`.
    #[allow(clippy::too_many_arguments)] // requant_i8's, plus the second form of the shifts
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
    pub unsafe fn requant_i8_high(
        acc: &[i32],
        mult: &[i32],
        shift: &[u8],
        high_shift: &[i32],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
    ) {
        // SAFETY: the features are this function's contract; the identity
        // needs none.
        unsafe {
            requant_i8_high_then(
                acc,
                mult,
                shift,
                high_shift,
                zero_point,
                min,
                max,
                out,
                |b| b,
            )
        }
    }

    /// [`requant_i8_high`] with `post` applied to each step's 16 bytes
    /// before they are stored (the int8 epilogue's hardswish lookup), so a
    /// lookup reads its indices from a register instead of reloading bytes
    /// just written through a mask (a masked store does not forward to the
    /// load after it, which stalls until the store retires).
    ///
    /// # Safety
    /// As [`requant_i8_high`]; `post` may use only features it has.
    ///
    /// # Panics
    /// As [`requant_i8_high`].
    #[allow(clippy::too_many_arguments)] // requant_i8_high's, plus the map
    #[inline(always)]
    pub(crate) unsafe fn requant_i8_high_then(
        acc: &[i32],
        mult: &[i32],
        shift: &[u8],
        high_shift: &[i32],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
        post: impl Fn(__m128i) -> __m128i,
    ) {
        let len = out.len();
        assert!(
            acc.len() >= len && mult.len() >= len && shift.len() >= len && high_shift.len() >= len,
            "requant_i8_high: inputs shorter than out"
        );
        debug_assert!(
            shift[..len]
                .iter()
                .zip(high_shift)
                .all(|(&s, &t)| s > 31 && t == 31 - s as i32)
        );
        // SAFETY: every load and the store are masked to the lanes
        // i..min(i + 16, len), inside every input (asserted above);
        // masked-off lanes are neither read nor written. The features are
        // the caller's contract.
        unsafe {
            let zp = _mm512_set1_epi32(zero_point);
            let (lo, hi) = (_mm_set1_epi8(min), _mm_set1_epi8(max));
            let mut i = 0;
            while i < len {
                let k: __mmask16 = if len - i >= 16 {
                    !0
                } else {
                    (1u16 << (len - i)) - 1
                };
                let x = _mm512_maskz_loadu_epi32(k, acc.as_ptr().add(i));
                let m = _mm512_maskz_loadu_epi32(k, mult.as_ptr().add(i));
                let t = _mm512_maskz_loadu_epi32(k, high_shift.as_ptr().add(i));
                let b = _mm512_cvtsepi32_epi8(_mm512_add_epi32(high16(x, m, t), zp));
                let b = post(_mm_min_epi8(_mm_max_epi8(b, lo), hi));
                _mm_mask_storeu_epi8(out.as_mut_ptr().add(i), k, b);
                i += 16;
            }
        }
    }

    /// The rule on 16 lanes whose shifts `s` all exceed 31, in 32-bit lanes,
    /// with `t = 31 - s`: `floor(x * m / 2^31)` from the even and odd 64-bit
    /// products (see [`requant_i8_high`]), then the rounding shift by
    /// `s - 31`.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F.
    #[inline(always)]
    pub(crate) unsafe fn high16(x: __m512i, m: __m512i, t: __m512i) -> __m512i {
        // SAFETY: register-only AVX-512 F, the caller's contract.
        unsafe {
            // Even lanes: bits 31-62 of the product into the low half.
            let even = _mm512_srli_epi64::<31>(_mm512_mul_epi32(x, m));
            // Odd lanes: the product of the high halves, doubled, puts bits
            // 31-62 into the high half.
            let odd = _mm512_mul_epi32(_mm512_srli_epi64::<32>(x), _mm512_srli_epi64::<32>(m));
            let h = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_add_epi64(odd, odd));
            // r - 1 = s - 32 = -t - 1 = !t.
            let u = _mm512_srav_epi32(h, _mm512_xor_si512(t, _mm512_set1_epi32(-1)));
            _mm512_add_epi32(
                _mm512_srai_epi32::<1>(u),
                _mm512_and_si512(u, _mm512_set1_epi32(1)),
            )
        }
    }

    /// `clamp(zp + ((x * m + 2^(s - 1)) >> s), lo, hi)` on the four 64-bit
    /// lanes whose low 32 bits hold `x` and `m`; `s` holds 64-bit counts.
    /// The clamp in 64 bits equals the rule's saturation to `i32` followed
    /// by the clamp, since `lo` and `hi` lie inside `i32`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx2")]
    fn lanes(x: __m256i, m: __m256i, s: __m256i, zp: __m256i, lo: __m256i, hi: __m256i) -> __m256i {
        let one = _mm256_set1_epi64x(1);
        let p = _mm256_mul_epi32(x, m);
        let round = _mm256_sllv_epi64(one, _mm256_sub_epi64(s, one));
        let q = _mm256_srav_epi64(_mm256_add_epi64(p, round), s);
        _mm256_min_epi64(_mm256_max_epi64(_mm256_add_epi64(q, zp), lo), hi)
    }
}

/// The variant this target uses: [`avx512`] when the CPU has AVX-512
/// ([`super::has_avx512_vnni`]), else AVX2 when it has that (with FMA, as
/// [`super::has_avx2_fma`] reports for every AVX2 kernel), else [`portable`]
/// (checked once, then one cached load per call).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn requant_i8(
    acc: &[i32],
    mult: &[i32],
    shift: &[u8],
    zero_point: i32,
    min: i8,
    max: i8,
    out: &mut [i8],
) {
    if super::has_avx512_vnni() {
        // SAFETY: the CPU supports AVX-512 F and VL (checked just above).
        unsafe { avx512::requant_i8(acc, mult, shift, zero_point, min, max, out) }
    } else if super::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { avx2::requant_i8(acc, mult, shift, zero_point, min, max, out) }
    } else {
        portable(acc, mult, shift, zero_point, min, max, out)
    }
}

/// A [`requant_i8`] variant chosen at compile time, so that a kernel
/// variant compiled for a CPU feature (an AVX2 int8 kernel) calls the row
/// function of the same feature directly, and the compiler can inline it
/// instead of going through the run-time dispatch on every row.
pub(crate) trait Row {
    /// Whether the variant's features include AVX-512 VBMI, BW and VL, so
    /// that the int8 epilogue may look up its hardswish tables with
    /// `vpermi2b`.
    #[cfg(target_arch = "x86_64")]
    const VBMI: bool = false;

    /// [`requant_i8`]'s contract.
    ///
    /// # Safety
    /// The variant's CPU features are present.
    unsafe fn requant_i8(
        acc: &[i32],
        mult: &[i32],
        shift: &[u8],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
    );

    /// [`requant_i8`]'s contract for a row whose shifts all exceed 31, with
    /// `high_shift[i] = 31 - shift[i]` given too (see
    /// `int8::Epilogue::high_shift`); a variant uses whichever form suits it.
    ///
    /// # Safety
    /// The variant's CPU features are present.
    #[allow(clippy::too_many_arguments)] // requant_i8's, plus the second form of the shifts
    #[inline(always)]
    unsafe fn requant_i8_high(
        acc: &[i32],
        mult: &[i32],
        shift: &[u8],
        high_shift: &[i32],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
    ) {
        let _ = high_shift;
        // SAFETY: the caller's contract is requant_i8's.
        unsafe { Self::requant_i8(acc, mult, shift, zero_point, min, max, out) }
    }
}

/// [`requant_i8`] as this target dispatches it (needs no CPU feature).
pub(crate) struct Dispatch;

impl Row for Dispatch {
    #[inline(always)]
    unsafe fn requant_i8(
        acc: &[i32],
        mult: &[i32],
        shift: &[u8],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
    ) {
        requant_i8(acc, mult, shift, zero_point, min, max, out)
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    unsafe fn requant_i8_high(
        acc: &[i32],
        mult: &[i32],
        shift: &[u8],
        high_shift: &[i32],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
    ) {
        neon::requant_i8_high(acc, mult, shift, high_shift, zero_point, min, max, out)
    }
}

/// [`avx2::requant_i8`], for kernels compiled with AVX2.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Row for Avx2 {
    #[inline(always)]
    unsafe fn requant_i8(
        acc: &[i32],
        mult: &[i32],
        shift: &[u8],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
    ) {
        // SAFETY: AVX2 is the caller's contract.
        unsafe { avx2::requant_i8(acc, mult, shift, zero_point, min, max, out) }
    }
}

/// [`avx512::requant_i8`], for kernels compiled with AVX-512 (F, BW, VL and
/// VBMI: the kernels using it run only where [`super::has_avx512_vnni`]).
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Row for Avx512 {
    const VBMI: bool = true;

    #[inline(always)]
    unsafe fn requant_i8(
        acc: &[i32],
        mult: &[i32],
        shift: &[u8],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
    ) {
        // SAFETY: AVX-512 F and VL and AVX2 are the caller's contract.
        unsafe { avx512::requant_i8(acc, mult, shift, zero_point, min, max, out) }
    }

    #[inline(always)]
    unsafe fn requant_i8_high(
        acc: &[i32],
        mult: &[i32],
        shift: &[u8],
        high_shift: &[i32],
        zero_point: i32,
        min: i8,
        max: i8,
        out: &mut [i8],
    ) {
        // SAFETY: AVX-512 F, BW and VL and AVX2 are the caller's contract.
        unsafe { avx512::requant_i8_high(acc, mult, shift, high_shift, zero_point, min, max, out) }
    }
}
