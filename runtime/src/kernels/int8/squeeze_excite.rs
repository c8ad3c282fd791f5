//! Int8 squeeze-and-excite, in place on an HWC tensor:
//! `y = x * hardsigmoid(fc2(relu(fc1(mean(x)))))`.

use super::{CHUNK, Mult, Uniform, gemv_acc, requant};
use requant::{Dispatch, Row};

/// The variant this target uses: [`portable`] (on aarch64 its row
/// requantizations are NEON through the dispatching row function).
#[cfg(not(target_arch = "x86_64"))]
pub use portable as squeeze_excite;

/// Fraction bits of the gate: `gate = round(hardsigmoid * 2^15)` in
/// `[0, 2^15]`, so `(x - zx) * gate` is at most `255 * 2^15 < 2^24` and fits
/// `i32`.
pub const GATE_BITS: u32 = 15;
/// The gate's value for 1.0.
pub const GATE_ONE: i32 = 1 << GATE_BITS;

pub use crate::kernels::shape::SeShape;

/// The constants of one squeeze-excite block (`SePlan` in codegen).
#[derive(Clone, Copy, Debug)]
pub struct SeParams<'a> {
    /// Zero point of the input (and of the in-place output's input values).
    pub x_zero_point: i32,
    /// `x_scale / (pixels * pooled_scale)`.
    pub pool_mult: Mult,
    /// Zero point of the pooled vector.
    pub pooled_zero_point: i32,
    /// `[squeeze][c]`, in `[-127, 127]`.
    pub fc1_weight: &'a [i8],
    /// `[squeeze]`, accumulator units.
    pub fc1_bias: &'a [i32],
    /// `[squeeze]`: `pooled_scale * w1_scale[j] / hidden_scale`.
    pub fc1_mult: &'a [i32],
    /// `[squeeze]`: shifts of `fc1_mult`.
    pub fc1_shift: &'a [u8],
    /// Zero point of the hidden vector, also its ReLU floor.
    pub hidden_zero_point: i32,
    /// `[c][squeeze]`, in `[-127, 127]`.
    pub fc2_weight: &'a [i8],
    /// `[c]`, accumulator units.
    pub fc2_bias: &'a [i32],
    /// `[c]`: `hidden_scale * w2_scale[c] * 2^15 / 6` (the `x / 6` of
    /// hardsigmoid, in gate units).
    pub gate_mult: &'a [i32],
    /// `[c]`: shifts of `gate_mult`.
    pub gate_shift: &'a [u8],
    /// `x_scale / (2^15 * y_scale)`.
    pub out_mult: Mult,
    /// Output zero point.
    pub out_zero_point: i32,
}

/// Portable int8 squeeze-and-excite, scaling `x` (`[pixels][c]`) in place.
///
/// With `zx`, `zp`, `zh`, `zy` the zero points of the input, pooled vector,
/// hidden vector and output:
///
/// ```text
/// pooled[ch] = sat8(zp + requant(sum_p (x[p][ch] - zx), pool_mult)) - zp
/// hidden[j]  = clamp(zh + requant(fc1_bias[j] + sum_ch fc1_w[j][ch] * pooled[ch],
///                                 fc1_mult[j], fc1_shift[j]), zh, 127) - zh
/// gate[ch]   = clamp(requant(fc2_bias[ch] + sum_j fc2_w[ch][j] * hidden[j],
///                            gate_mult[ch], gate_shift[ch]) + GATE_ONE / 2, 0, GATE_ONE)
/// y[p][ch]   = sat8(zy + requant((x[p][ch] - zx) * gate[ch], out_mult))
/// ```
///
/// (`hardsigmoid(v) = clamp(v / 6 + 1/2, 0, 1)`: the `/ 6` is in
/// `gate_mult`, the `+ 1/2` is `GATE_ONE / 2`.) `scratch` holds at least
/// `2 * c + squeeze` values: the pooled vector, the hidden vector and the
/// gate, in that order.
///
/// The oracle adds zero points and the gate offset in `i64` before
/// clamping; here they are saturating `i32` adds (inside
/// [`requant::requant_i8`] for the int8 steps). The two differ only when the
/// exact sum leaves `i32`, and then both clamp to the same bound, because
/// the other operand is far inside `i32` and the clamp bounds are too.
#[inline]
pub fn portable(x: &mut [i8], s: SeShape, p: &SeParams<'_>, scratch: &mut [i32]) {
    // SAFETY: the dispatching row function needs no CPU feature.
    unsafe { body::<Dispatch>(x, s, p, scratch) }
}

/// [`portable`]'s computation with the row function `R`: the one source of
/// every variant (they differ in the features they are compiled with, which
/// lets the compiler vectorize the pooling, the two small matrix-vector
/// products and the gate multiply for the target).
///
/// # Safety
/// `R`'s CPU features are present.
#[inline(always)]
unsafe fn body<R: Row>(x: &mut [i8], s: SeShape, p: &SeParams<'_>, scratch: &mut [i32]) {
    let (c, q) = (s.c, s.squeeze);
    debug_assert_eq!(x.len(), s.pixels * c);
    debug_assert!(scratch.len() >= 2 * c + q);
    debug_assert_eq!(p.fc1_weight.len(), q * c);
    debug_assert_eq!(p.fc1_bias.len(), q);
    debug_assert_eq!(p.fc1_mult.len(), q);
    debug_assert_eq!(p.fc1_shift.len(), q);
    debug_assert_eq!(p.fc2_weight.len(), c * q);
    debug_assert_eq!(p.fc2_bias.len(), c);
    debug_assert_eq!(p.gate_mult.len(), c);
    debug_assert_eq!(p.gate_shift.len(), c);
    let zx = p.x_zero_point;
    let (zp, zh) = (p.pooled_zero_point, p.hidden_zero_point);
    debug_assert!(
        [zx, zp, zh, p.out_zero_point]
            .iter()
            .all(|z| (-128..=127).contains(z))
    );
    if c == 0 {
        return;
    }
    let (pooled, rest) = scratch.split_at_mut(c);
    let (hidden, rest) = rest.split_at_mut(q);
    let gate = &mut rest[..c];
    let mut q8 = [0i8; CHUNK];

    // Pool: channel sums over the pixels (wrapping: the oracle's i64 sum
    // `as i32`), to int8 in the pooled scale, then back to offsets from the
    // pooled zero point (in [-255, 255]).
    #[cfg(target_arch = "aarch64")]
    neon::pool(x, c, zx, pooled);
    #[cfg(not(target_arch = "aarch64"))]
    {
        pooled.fill(0);
        for row in x.chunks_exact(c) {
            for (a, &v) in pooled.iter_mut().zip(row) {
                *a = a.wrapping_add(i32::from(v) - zx);
            }
        }
    }
    let pool = Uniform::new(p.pool_mult);
    for chunk in pooled.chunks_mut(CHUNK) {
        let q8 = &mut q8[..chunk.len()];
        // SAFETY: R's features are the caller's contract.
        unsafe { pool.apply_with::<R>(chunk, zp, -128, 127, q8) };
        for (a, &v) in chunk.iter_mut().zip(q8.iter()) {
            *a = i32::from(v) - zp;
        }
    }

    // fc1 and ReLU: the hidden zero point is the lower clamp (real 0).
    hidden.copy_from_slice(p.fc1_bias);
    gemv_acc(p.fc1_weight, c, pooled, offset16, hidden);
    for (j0, chunk) in (0..q).step_by(CHUNK).zip(hidden.chunks_mut(CHUNK)) {
        let m = chunk.len();
        let q8 = &mut q8[..m];
        // SAFETY: R's features are the caller's contract.
        unsafe {
            R::requant_i8(
                chunk,
                &p.fc1_mult[j0..j0 + m],
                &p.fc1_shift[j0..j0 + m],
                zh,
                zh as i8,
                127,
                q8,
            )
        };
        for (h, &v) in chunk.iter_mut().zip(q8.iter()) {
            *h = i32::from(v) - zh;
        }
    }

    // fc2 and hardsigmoid, in Q15.
    gate.copy_from_slice(p.fc2_bias);
    gemv_acc(p.fc2_weight, q, hidden, offset16, gate);
    for (ch, g) in gate.iter_mut().enumerate() {
        let v = requant::requant(*g, p.gate_mult[ch], u32::from(p.gate_shift[ch]));
        *g = v.saturating_add(GATE_ONE / 2).clamp(0, GATE_ONE);
    }

    // Scale every pixel by the gate, into the output's scale.
    #[cfg(target_arch = "x86_64")]
    if R::VBMI && p.out_mult.shift > 31 {
        // SAFETY: R has AVX-512 F, BW and VL (Row::VBMI's contract); the
        // shift exceeds 31.
        unsafe { avx512::scale(x, c, gate, zx, p.out_mult, p.out_zero_point) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if p.out_mult.shift > 31 {
        neon::scale(x, c, gate, zx, p.out_mult, p.out_zero_point);
        return;
    }
    let out = Uniform::new(p.out_mult);
    let mut prod = [0i32; CHUNK];
    for row in x.chunks_exact_mut(c) {
        for (row, gate) in row.chunks_mut(CHUNK).zip(gate.chunks(CHUNK)) {
            let prod = &mut prod[..row.len()];
            for ((d, &v), &g) in prod.iter_mut().zip(row.iter()).zip(gate) {
                // |x - zx| <= 255 and 0 <= g <= 2^15: below 2^24.
                *d = (i32::from(v) - zx) * g;
            }
            // SAFETY: R's features are the caller's contract.
            unsafe { out.apply_with::<R>(prod, p.out_zero_point, -128, 127, row) };
        }
    }
}

/// An offset of an int8 value from a zero point (in `[-255, 255]`) as the
/// `i16` [`gemv_acc`] multiplies.
#[inline(always)]
fn offset16(x: i32) -> i16 {
    debug_assert!((-255..=255).contains(&x));
    x as i16
}

/// aarch64: the gate multiply in registers.
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{Mult, requant};
    use core::arch::aarch64::*;

    /// Most pixels summed in `i16` lanes before they are widened: `255 * 128 < 2^15`.
    const RUN: usize = 255;

    /// `pooled[ch] = sum_p (x[p][ch] - zx)` for `ch < c` (wrapping `i32`, as the row path),
    /// 16 channels a step: the raw values summed in `i16` lanes (SADDW, up to [`RUN`]
    /// pixels), widened into `i32` lanes, and `pixels * zx` taken off once, which is the
    /// same sum modulo `2^32`. The compiler's vectorization of the scalar loop went across
    /// pixels with one lane load per byte (about 3.3 instructions per value for 16
    /// channels, where this takes 0.2). Channels past the last full 16 are summed one by
    /// one.
    ///
    /// # Panics
    /// If `pooled` holds fewer than `c` values.
    #[inline(always)]
    pub(super) fn pool(x: &[i8], c: usize, zx: i32, pooled: &mut [i32]) {
        let pooled = &mut pooled[..c];
        let pixels = x.len() / c;
        let full = c - c % 16;
        let off = (pixels as i32).wrapping_mul(zx);
        for cb in (0..full).step_by(16) {
            // SAFETY: every load reads channels cb..cb + 16 <= full <= c of a pixel p <
            // pixels, inside x; every store cb..cb + 16 of pooled's c values. NEON is part
            // of every aarch64 target.
            unsafe {
                let mut wide = [vdupq_n_s32(0); 4];
                let mut p = 0;
                while p < pixels {
                    let end = pixels.min(p + RUN);
                    let (mut lo, mut hi) = (vdupq_n_s16(0), vdupq_n_s16(0));
                    while p < end {
                        let v = vld1q_s8(x.as_ptr().add(p * c + cb));
                        lo = vaddw_s8(lo, vget_low_s8(v));
                        hi = vaddw_high_s8(hi, v);
                        p += 1;
                    }
                    wide[0] = vaddw_s16(wide[0], vget_low_s16(lo));
                    wide[1] = vaddw_high_s16(wide[1], lo);
                    wide[2] = vaddw_s16(wide[2], vget_low_s16(hi));
                    wide[3] = vaddw_high_s16(wide[3], hi);
                }
                let o = vdupq_n_s32(off);
                for (i, w) in wide.iter().enumerate() {
                    vst1q_s32(pooled.as_mut_ptr().add(cb + 4 * i), vsubq_s32(*w, o));
                }
            }
        }
        pooled[full..].fill(0);
        for row in x.chunks_exact(c) {
            for (a, &v) in pooled[full..].iter_mut().zip(&row[full..]) {
                *a = a.wrapping_add(i32::from(v) - zx);
            }
        }
    }

    /// The last step of [`super::portable`] for an output multiplier whose shift exceeds
    /// 31 (every squeeze-excite block of the shipped models):
    /// `y = sat8(zy + requant((x - zx) * gate, out_mult))` in place, 16 channels a step,
    /// the product formed and requantized in registers (SQDMULH, then SRSHL by
    /// `31 - shift`: the exact form of the rule, `requant::neon::requant_i8_high`), the
    /// zero point added saturating and the two narrows saturating. The row path stored
    /// each product to a buffer and requantized it in a second pass, with the shifts
    /// converted and checked per 8 values: about 5.4 instructions per value against
    /// 2.3 here. Channels past the last full 16 go one at a time through the scalar rule.
    ///
    /// # Panics
    /// If `gate` holds fewer than `c` values or `m.shift <= 31`.
    #[inline(always)]
    pub(super) fn scale(x: &mut [i8], c: usize, gate: &[i32], zx: i32, m: Mult, zy: i32) {
        assert!(
            gate.len() >= c && m.shift > 31,
            "int8 squeeze-excite: gate or shift"
        );
        debug_assert!((-128..=127).contains(&zx));
        let full = c - c % 16;
        // SAFETY: every load and store reads channels ch..ch + 16 <= full <= c of a row of
        // c values, or of the gate's c values (asserted above); NEON is part of every
        // aarch64 target.
        unsafe {
            let mv = vdupq_n_s32(m.m);
            let t = vdupq_n_s32(31 - i32::from(m.shift));
            let zx8 = vdupq_n_s8(zx as i8);
            let zyv = vdupq_n_s32(zy);
            // Four channels: |x - zx| <= 255 and 0 <= g <= 2^15, so the product is
            // below 2^24 (the gate's 2^15 does not fit i16: the product is formed in
            // 32-bit lanes).
            let quad = |d: int16x4_t, g: *const i32| {
                let prod = vmulq_s32(vmovl_s16(d), vld1q_s32(g));
                vqmovn_s32(vqaddq_s32(vrshlq_s32(vqdmulhq_s32(prod, mv), t), zyv))
            };
            for row in x.chunks_exact_mut(c) {
                let mut ch = 0;
                while ch < full {
                    let p = row.as_mut_ptr().add(ch);
                    let v = vld1q_s8(p);
                    let lo = vsubl_s8(vget_low_s8(v), vget_low_s8(zx8));
                    let hi = vsubl_high_s8(v, zx8);
                    let g = gate.as_ptr().add(ch);
                    let a =
                        vcombine_s16(quad(vget_low_s16(lo), g), quad(vget_high_s16(lo), g.add(4)));
                    let b = vcombine_s16(
                        quad(vget_low_s16(hi), g.add(8)),
                        quad(vget_high_s16(hi), g.add(12)),
                    );
                    vst1q_s8(p, vcombine_s8(vqmovn_s16(a), vqmovn_s16(b)));
                    ch += 16;
                }
                for (v, &g) in row[full..].iter_mut().zip(&gate[full..c]) {
                    let q = requant::requant((i32::from(*v) - zx) * g, m.m, u32::from(m.shift));
                    *v = zy.saturating_add(q).clamp(-128, 127) as i8;
                }
            }
        }
    }
}

/// x86_64: [`portable`]'s source compiled with AVX2.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::{SeParams, SeShape, body};
    use crate::kernels::requant;

    /// AVX2 int8 squeeze-and-excite with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`crate::kernels::has_avx2_fma`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn squeeze_excite(x: &mut [i8], s: SeShape, p: &SeParams<'_>, scratch: &mut [i32]) {
        // SAFETY: AVX2 is this function's contract.
        unsafe { body::<requant::Avx2>(x, s, p, scratch) }
    }
}

/// x86_64: [`portable`]'s source compiled with AVX-512 (F, BW, VL) and the
/// AVX-512 row requantization, with the gate multiply in registers
/// (`scale`).
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::{Mult, SeParams, SeShape, body};
    use crate::kernels::requant;
    use core::arch::x86_64::*;

    /// The last step of [`super::portable`], 16 channels a step, for an
    /// output multiplier whose shift exceeds 31:
    /// `y = sat8(zy + requant((x - zx) * gate, out_mult))` in place, the
    /// product formed and requantized in registers
    /// ([`requant::avx512::high16`]), where the row function would reload
    /// products just stored in narrower vectors (a store that does not
    /// forward to the wider load after it).
    ///
    /// # Safety
    /// The CPU supports AVX-512 F, BW and VL; `m.shift > 31`.
    ///
    /// # Panics
    /// If `gate` holds fewer than `c` values.
    #[inline(always)]
    pub(super) unsafe fn scale(x: &mut [i8], c: usize, gate: &[i32], zx: i32, m: Mult, zy: i32) {
        assert!(gate.len() >= c);
        debug_assert!(m.shift > 31);
        // SAFETY: every load and store is masked to channels ch..min(ch +
        // 16, c) of a row of c values, or of the gate's c values (asserted
        // above); the features are the caller's contract.
        unsafe {
            let (mv, t) = (
                _mm512_set1_epi32(m.m),
                _mm512_set1_epi32(31 - i32::from(m.shift)),
            );
            let (zxv, zyv) = (_mm512_set1_epi32(zx), _mm512_set1_epi32(zy));
            for row in x.chunks_exact_mut(c) {
                let mut ch = 0;
                while ch < c {
                    let k: __mmask16 = if c - ch >= 16 {
                        !0
                    } else {
                        (1u16 << (c - ch)) - 1
                    };
                    let p = row.as_mut_ptr().add(ch);
                    let v = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(k, p));
                    let g = _mm512_maskz_loadu_epi32(k, gate.as_ptr().add(ch));
                    // |x - zx| <= 255 and 0 <= g <= 2^15: below 2^24.
                    let prod = _mm512_mullo_epi32(_mm512_sub_epi32(v, zxv), g);
                    let q = requant::avx512::high16(prod, mv, t);
                    let b = _mm512_cvtsepi32_epi8(_mm512_add_epi32(q, zyv));
                    _mm_mask_storeu_epi8(p, k, b);
                    ch += 16;
                }
            }
        }
    }

    /// AVX-512 int8 squeeze-and-excite with the contract of
    /// [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support everything [`crate::kernels::has_avx512_vnni`]
    /// checks (the AVX-512 row functions assume it).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub unsafe fn squeeze_excite(x: &mut [i8], s: SeShape, p: &SeParams<'_>, scratch: &mut [i32]) {
        // SAFETY: the features are this function's contract.
        unsafe { body::<requant::Avx512>(x, s, p, scratch) }
    }
}

/// The variant this target uses: [`avx512`] when the CPU has AVX-512
/// ([`crate::kernels::has_avx512_vnni`]), else [`avx2`] when it has AVX2
/// ([`crate::kernels::has_avx2_fma`]), else [`portable`].
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn squeeze_excite(x: &mut [i8], s: SeShape, p: &SeParams<'_>, scratch: &mut [i32]) {
    if crate::kernels::has_avx512_vnni() {
        // SAFETY: the CPU supports AVX-512 (checked just above).
        unsafe { avx512::squeeze_excite(x, s, p, scratch) }
    } else if crate::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { avx2::squeeze_excite(x, s, p, scratch) }
    } else {
        portable(x, s, p, scratch)
    }
}
