//! Depthwise kxk int8 convolution on HWC tensors.

use super::Epilogue;
use super::window::{Window, for_each_output, mac};
use crate::kernels::requant::{Dispatch, Row};

/// The variant this target uses: [`portable`], which the compiler
/// vectorizes with NEON on aarch64.
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
    // SAFETY: the dispatching row function needs no CPU feature.
    unsafe { body::<Dispatch>(x, s, x_zero_point, w, bias, e, out) }
}

/// [`portable`]'s computation with the row function `R`: the one source of
/// every variant (they differ in the features they are compiled with).
///
/// # Safety
/// `R`'s CPU features are present.
#[inline(always)]
unsafe fn body<R: Row>(
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
    let c = s.c;
    let zx = x_zero_point as i16;
    // SAFETY: R's features are the caller's contract.
    unsafe {
        for_each_output::<R>(win, c, bias, e, out, |acc, c0, t| {
            let src = (t.iy * s.iw + t.ix) * c + c0;
            let wt = (t.ky * s.k + t.kx) * c + c0;
            mac(acc, &w[wt..], &x[src..], zx);
        })
    }
}

/// x86_64: [`portable`]'s source compiled with AVX2.
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
        unsafe { body::<requant::Avx2>(x, s, x_zero_point, w, bias, e, out) }
    }
}

/// The variant this target uses: [`avx2`] when the CPU has AVX2 (with FMA,
/// as [`crate::kernels::has_avx2_fma`] reports for every AVX2 kernel), else
/// [`portable`].
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
    if crate::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { avx2::depthwise(x, s, x_zero_point, w, bias, e, out) }
    } else {
        portable(x, s, x_zero_point, w, bias, e, out)
    }
}
