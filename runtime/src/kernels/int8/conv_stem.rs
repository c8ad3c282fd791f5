//! Dense kxk int8 convolution from the planar (CHW) quantized model input to
//! HWC, used only for the first layer (3 input channels).

use super::Epilogue;
use super::window::{Window, for_each_output};

/// The variant every target uses for now: [`portable`] (vector variants will
/// keep its signature).
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
    for_each_output(win, s.cout, bias, e, out, |acc, c0, t| {
        let n = acc.len();
        for ci in 0..s.cin {
            let a = i32::from(x[ci * plane + t.iy * s.iw + t.ix]) - x_zero_point;
            let wt = ((t.ky * s.kw + t.kx) * s.cin + ci) * s.cout + c0;
            for (d, &wv) in acc.iter_mut().zip(&w[wt..wt + n]) {
                *d = d.wrapping_add(i32::from(wv) * a);
            }
        }
    });
}
