//! Depthwise kxk int8 convolution on HWC tensors.

use super::Epilogue;
use super::window::{Window, for_each_output};

/// The variant every target uses for now: [`portable`] (vector variants will
/// keep its signature).
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
    for_each_output(win, c, bias, e, out, |acc, c0, t| {
        let n = acc.len();
        let src = (t.iy * s.iw + t.ix) * c + c0;
        let wt = (t.ky * s.k + t.kx) * c + c0;
        for ((d, &xv), &wv) in acc.iter_mut().zip(&x[src..src + n]).zip(&w[wt..wt + n]) {
            *d = d.wrapping_add(i32::from(wv) * (i32::from(xv) - x_zero_point));
        }
    });
}
