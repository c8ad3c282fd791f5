//! Depthwise kxk int8 convolution on HWC tensors.

use super::Epilogue;
use super::window::{TapMac, Window, for_each_output, product, read};
use crate::kernels::requant::{Dispatch, Row};
use core::ops::Range;

/// The variant this target uses: [`portable`], whose source takes explicit
/// NEON for its kernel rows on aarch64 (the module `neon`).
#[cfg(not(target_arch = "x86_64"))]
pub use portable as depthwise;

/// Shape of a depthwise convolution: input `ih x iw x c`, a `k x k` kernel
/// per channel, `stride` and symmetric zero padding `pad` on both axes,
/// output `oh x ow x c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthwiseShape {
    /// Input height.
    pub ih: usize,
    /// Input width.
    pub iw: usize,
    /// Channels (input and output).
    pub c: usize,
    /// Kernel size, both axes.
    pub k: usize,
    /// Stride, both axes.
    pub stride: usize,
    /// Zero padding on each side, both axes.
    pub pad: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

/// Portable int8 depthwise convolution.
///
/// `x` is `[ih][iw][c]` with zero point `x_zero_point`, `w` is `[k][k][c]`,
/// `bias` is `[c]`, `out` is `[oh][ow][c]`, and `e` has `c` channels. For
/// every output pixel and channel,
/// `acc = bias + sum w * (x - x_zero_point)` over the taps inside the input
/// (taps in the padding are skipped: padding is real zero, which adds
/// nothing), then `e` maps the row to int8.
///
/// Channels go in chunks of [`CHUNK`](super::CHUNK) through a stack accumulator, so the
/// epilogue is applied to each chunk with its slice of multipliers.
#[inline]
pub fn portable(
    x: &[i8],
    s: DepthwiseShape,
    x_zero_point: i32,
    w: &[i8],
    bias: &[i32],
    e: Epilogue<'_>,
    out: &mut [i8],
) {
    // SAFETY: the dispatching row function needs no CPU feature, and the
    // taps use no x86 vector code (`AVX2 = false`).
    unsafe { body::<Dispatch, false>(x, s, x_zero_point, w, bias, e, out) }
}

/// [`portable`]'s computation with the row function `R`: the one source of
/// every variant (they differ in the features they are compiled with, and
/// on x86_64 `AVX2` selects explicit AVX2 for the taps of 16 or 8 channels).
///
/// # Safety
/// `R`'s CPU features are present, and AVX2 is present if `AVX2` is true.
#[inline(always)]
unsafe fn body<R: Row, const AVX2: bool>(
    x: &[i8],
    s: DepthwiseShape,
    x_zero_point: i32,
    w: &[i8],
    bias: &[i32],
    e: Epilogue<'_>,
    out: &mut [i8],
) {
    debug_assert_eq!(x.len(), s.ih * s.iw * s.c);
    debug_assert_eq!(w.len(), s.k * s.k * s.c);
    debug_assert!((-128..=127).contains(&x_zero_point));
    let win = Window {
        ih: s.ih,
        iw: s.iw,
        kh: s.k,
        kw: s.k,
        stride: s.stride,
        pad: s.pad,
        oh: s.oh,
        ow: s.ow,
    };
    let taps = DepthwiseTaps::<AVX2> {
        x,
        w,
        iw: s.iw,
        c: s.c,
        k: s.k,
        zx: x_zero_point as i16,
    };
    // SAFETY: R's features are the caller's contract.
    unsafe { for_each_output::<R, _>(win, s.c, bias, e, out, &taps) }
}

/// One depthwise tap: channel `c + l` of the input pixel times channel
/// `c + l` of the tap's weights. `AVX2`: the x86_64 AVX2 rows may be used
/// (the constructor's contract, see [`body`]).
struct DepthwiseTaps<'a, const AVX2: bool> {
    x: &'a [i8],
    w: &'a [i8],
    iw: usize,
    c: usize,
    k: usize,
    /// The input zero point, as the 16-bit operand of [`product`].
    zx: i16,
}

impl<const AVX2: bool> TapMac for DepthwiseTaps<'_, AVX2> {
    #[inline(always)]
    fn row<const L: usize>(
        &self,
        acc: &mut [i32; L],
        c: usize,
        ky: usize,
        kx: Range<usize>,
        iy: usize,
        ix0: usize,
    ) {
        // One bounds check per kernel row: the taps step one pixel (`c`
        // values) at a time through both the input row and the weights.
        let n = kx.len();
        let span = (n - 1) * self.c + L;
        let xs = (iy * self.iw + ix0) * self.c + c;
        let ws = (ky * self.k + kx.start) * self.c + c;
        let (x, w) = (&self.x[xs..xs + span], &self.w[ws..ws + span]);
        #[cfg(target_arch = "aarch64")]
        if L == 16 || L == 8 {
            // SAFETY: acc holds L values; x and w hold (n - 1) * c + L values,
            // so each of the n taps reads L values of both.
            unsafe { neon::row::<L>(acc.as_mut_ptr(), x.as_ptr(), w.as_ptr(), n, self.c, self.zx) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if AVX2 && (L == 16 || L == 8) {
            // SAFETY: as for NEON above; AVX2 is present when AVX2 is true
            // (the contract of `body`).
            unsafe { x86::row::<L>(acc.as_mut_ptr(), x.as_ptr(), w.as_ptr(), n, self.c, self.zx) };
            return;
        }
        for j in 0..n {
            // SAFETY: j * c + L <= (n - 1) * c + L = span, the length of
            // both slices.
            let (xv, wv) = unsafe { (read::<L>(x, j * self.c), read::<L>(w, j * self.c)) };
            for l in 0..L {
                acc[l] = acc[l].wrapping_add(product(wv[l], i16::from(xv[l]) - self.zx));
            }
        }
    }
}

/// aarch64: the taps of one kernel row for a block of 16 or 8 channels with
/// explicit NEON, because the compiler's own vectorization of the portable
/// loop went four lanes at a time through 32-bit lanes (about 1.8
/// instructions per multiply-accumulate instead of 0.75 here).
#[cfg(target_arch = "aarch64")]
mod neon {
    use core::arch::aarch64::*;

    /// `acc[l] += sum_j w[j * step + l] * (x[j * step + l] - zx)` for
    /// `l < L` (16 or 8) and `j < n`, wrapping: SSUBL widens `x - zx`
    /// (in `[-255, 255]`) to int16, SXTL the weights, and SMLAL
    /// accumulates the exact products (below `2^15`) into int32 lanes.
    ///
    /// # Safety
    /// `acc` points at `L` values; `x` and `w` at `(n - 1) * step + L`.
    #[inline(always)]
    pub(super) unsafe fn row<const L: usize>(
        acc: *mut i32,
        x: *const i8,
        w: *const i8,
        n: usize,
        step: usize,
        zx: i16,
    ) {
        // SAFETY: the loads and stores stay inside the caller's contract;
        // NEON is part of every aarch64 target. zx is an int8 zero point.
        unsafe {
            let z = vdup_n_s8(zx as i8);
            if L == 16 {
                let zq = vcombine_s8(z, z);
                let (mut a0, mut a1) = (vld1q_s32(acc), vld1q_s32(acc.add(4)));
                let (mut a2, mut a3) = (vld1q_s32(acc.add(8)), vld1q_s32(acc.add(12)));
                for j in 0..n {
                    let xv = vld1q_s8(x.add(j * step));
                    let wv = vld1q_s8(w.add(j * step));
                    let (xl, xh) = (vsubl_s8(vget_low_s8(xv), z), vsubl_high_s8(xv, zq));
                    let (wl, wh) = (vmovl_s8(vget_low_s8(wv)), vmovl_high_s8(wv));
                    a0 = vmlal_s16(a0, vget_low_s16(xl), vget_low_s16(wl));
                    a1 = vmlal_high_s16(a1, xl, wl);
                    a2 = vmlal_s16(a2, vget_low_s16(xh), vget_low_s16(wh));
                    a3 = vmlal_high_s16(a3, xh, wh);
                }
                vst1q_s32(acc, a0);
                vst1q_s32(acc.add(4), a1);
                vst1q_s32(acc.add(8), a2);
                vst1q_s32(acc.add(12), a3);
            } else {
                let (mut a0, mut a1) = (vld1q_s32(acc), vld1q_s32(acc.add(4)));
                for j in 0..n {
                    let xl = vsubl_s8(vld1_s8(x.add(j * step)), z);
                    let wl = vmovl_s8(vld1_s8(w.add(j * step)));
                    a0 = vmlal_s16(a0, vget_low_s16(xl), vget_low_s16(wl));
                    a1 = vmlal_high_s16(a1, xl, wl);
                }
                vst1q_s32(acc, a0);
                vst1q_s32(acc.add(4), a1);
            }
        }
    }
}

/// x86_64: the taps of one kernel row for a block of 16 or 8 channels with
/// explicit AVX2, for the same reason as the NEON rows (the compiler's own
/// vectorization of the portable loop widened every product to 32 bits).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    /// `acc[l] += sum_j w[j * step + l] * (x[j * step + l] - zx)` for
    /// `l < L` (16 or 8) and `j < n`, wrapping: `x - zx` (in `[-255, 255]`)
    /// and the weights (in `[-127, 127]`) widened to int16 multiply exactly
    /// in int16 lanes (`|product| <= 32385`), then widen into int32 sums.
    ///
    /// # Safety
    /// `acc` points at `L` values; `x` and `w` at `(n - 1) * step + L`; the
    /// CPU supports AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row<const L: usize>(
        acc: *mut i32,
        x: *const i8,
        w: *const i8,
        n: usize,
        step: usize,
        zx: i16,
    ) {
        // SAFETY: the loads and stores stay inside the caller's contract.
        unsafe {
            if L == 16 {
                let z = _mm256_set1_epi16(zx);
                let mut a0 = _mm256_loadu_si256(acc.cast());
                let mut a1 = _mm256_loadu_si256(acc.add(8).cast());
                for j in 0..n {
                    let xv = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(j * step).cast()));
                    let wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.add(j * step).cast()));
                    let p = _mm256_mullo_epi16(_mm256_sub_epi16(xv, z), wv);
                    let (lo, hi) = (_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
                    a0 = _mm256_add_epi32(a0, _mm256_cvtepi16_epi32(lo));
                    a1 = _mm256_add_epi32(a1, _mm256_cvtepi16_epi32(hi));
                }
                _mm256_storeu_si256(acc.cast(), a0);
                _mm256_storeu_si256(acc.add(8).cast(), a1);
            } else {
                let z = _mm_set1_epi16(zx);
                let mut a0 = _mm256_loadu_si256(acc.cast());
                for j in 0..n {
                    let xv = _mm_cvtepi8_epi16(_mm_loadl_epi64(x.add(j * step).cast()));
                    let wv = _mm_cvtepi8_epi16(_mm_loadl_epi64(w.add(j * step).cast()));
                    let p = _mm_mullo_epi16(_mm_sub_epi16(xv, z), wv);
                    a0 = _mm256_add_epi32(a0, _mm256_cvtepi16_epi32(p));
                }
                _mm256_storeu_si256(acc.cast(), a0);
            }
        }
    }
}

/// x86_64: [`portable`]'s source compiled with AVX2, with explicit AVX2 for
/// the taps of 16 or 8 channels.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::{DepthwiseShape, Epilogue, body};
    use crate::kernels::requant;

    /// AVX2 int8 depthwise convolution with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX2 ([`crate::kernels::has_avx2_fma`]).
    #[target_feature(enable = "avx2")]
    pub unsafe fn depthwise(
        x: &[i8],
        s: DepthwiseShape,
        x_zero_point: i32,
        w: &[i8],
        bias: &[i32],
        e: Epilogue<'_>,
        out: &mut [i8],
    ) {
        // SAFETY: AVX2 is this function's contract.
        unsafe { body::<requant::Avx2, true>(x, s, x_zero_point, w, bias, e, out) }
    }
}

/// x86_64 with AVX-512: the [`avx2`] variant with the AVX-512 row
/// requantization (`requant::avx512`).
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::{DepthwiseShape, Epilogue, body};
    use crate::kernels::requant;

    /// AVX-512 int8 depthwise convolution with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and VL and AVX2
    /// ([`crate::kernels::has_avx512_vnni`]).
    #[target_feature(enable = "avx512f,avx512vl,avx2")]
    pub unsafe fn depthwise(
        x: &[i8],
        s: DepthwiseShape,
        x_zero_point: i32,
        w: &[i8],
        bias: &[i32],
        e: Epilogue<'_>,
        out: &mut [i8],
    ) {
        // SAFETY: the features are this function's contract.
        unsafe { body::<requant::Avx512, true>(x, s, x_zero_point, w, bias, e, out) }
    }
}

/// The variant this target uses: [`avx512`] when the CPU has AVX-512
/// ([`crate::kernels::has_avx512_vnni`]), else [`avx2`] when it has AVX2
/// (with FMA, as [`crate::kernels::has_avx2_fma`] reports for every AVX2
/// kernel), else [`portable`].
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn depthwise(
    x: &[i8],
    s: DepthwiseShape,
    x_zero_point: i32,
    w: &[i8],
    bias: &[i32],
    e: Epilogue<'_>,
    out: &mut [i8],
) {
    if crate::kernels::has_avx512_vnni() {
        // SAFETY: the CPU supports AVX-512 (checked just above).
        unsafe { avx512::depthwise(x, s, x_zero_point, w, bias, e, out) }
    } else if crate::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { avx2::depthwise(x, s, x_zero_point, w, bias, e, out) }
    } else {
        portable(x, s, x_zero_point, w, bias, e, out)
    }
}
