//! Dense kxk int8 convolution from the planar (CHW) quantized model input to
//! HWC, used only for the first layer (3 input channels).

use super::Epilogue;
use super::window::{Window, for_each_output, mac_broadcast};
use crate::kernels::requant::{Dispatch, Row};

/// The variant this target uses: [`portable`], which the compiler
/// vectorizes with NEON on aarch64.
#[cfg(not(target_arch = "x86_64"))]
pub use portable as conv_stem;

/// Shape of a dense convolution: input `ih x iw x cin`, `cout` output
/// channels, a `kh x kw` kernel, `stride` and symmetric zero padding `pad` on
/// both axes, output `oh x ow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input height.
    pub ih: usize,
    /// Input width.
    pub iw: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride, both axes.
    pub stride: usize,
    /// Zero padding on each side, both axes.
    pub pad: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

/// Portable int8 stem convolution.
///
/// `x` is `[cin][ih][iw]` (CHW) with zero point `x_zero_point`, `w` is
/// `[kh][kw][cin][cout]`, `bias` is `[cout]`, `out` is `[oh][ow][cout]`
/// (HWC), and `e` has `cout` channels. For every output pixel,
/// `acc[co] = bias[co] + sum w * (x - x_zero_point)` over the taps inside the
/// input (taps in the padding are skipped: padding is real zero, which adds
/// nothing), then `e` maps the row to int8.
///
/// Output channels go in chunks of [`CHUNK`](super::CHUNK) through a stack accumulator, so
/// the epilogue is applied to each chunk with its slice of multipliers.
#[inline]
pub fn portable(
    x: &[i8],
    s: ConvShape,
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
    s: ConvShape,
    x_zero_point: i32,
    w: &[i8],
    bias: &[i32],
    e: Epilogue<'_>,
    out: &mut [i8],
) {
    debug_assert_eq!(x.len(), s.cin * s.ih * s.iw);
    debug_assert_eq!(w.len(), s.kh * s.kw * s.cin * s.cout);
    debug_assert!((-128..=127).contains(&x_zero_point));
    let win = Window {
        ih: s.ih,
        iw: s.iw,
        kh: s.kh,
        kw: s.kw,
        stride: s.stride,
        pad: s.pad,
        oh: s.oh,
        ow: s.ow,
    };
    let plane = s.ih * s.iw;
    // 16-bit operands (see `mac_broadcast`).
    let zx = x_zero_point as i16;
    // SAFETY: R's features are the caller's contract.
    unsafe {
        for_each_output::<R>(win, s.cout, bias, e, out, |acc, c0, t| {
            for ci in 0..s.cin {
                let v = i16::from(x[ci * plane + t.iy * s.iw + t.ix]) - zx;
                let wt = ((t.ky * s.kw + t.kx) * s.cin + ci) * s.cout + c0;
                mac_broadcast(acc, &w[wt..], v);
            }
        })
    }
}

/// x86_64: [`portable`]'s source compiled with AVX2.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::{ConvShape, Epilogue, body};
    use crate::kernels::requant;

    /// AVX2 int8 stem convolution with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX2 ([`crate::kernels::has_avx2_fma`]).
    #[target_feature(enable = "avx2")]
    pub unsafe fn conv_stem(
        x: &[i8],
        s: ConvShape,
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
pub fn conv_stem(
    x: &[i8],
    s: ConvShape,
    x_zero_point: i32,
    w: &[i8],
    bias: &[i32],
    e: Epilogue<'_>,
    out: &mut [i8],
) {
    if crate::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { avx2::conv_stem(x, s, x_zero_point, w, bias, e, out) }
    } else {
        portable(x, s, x_zero_point, w, bias, e, out)
    }
}
