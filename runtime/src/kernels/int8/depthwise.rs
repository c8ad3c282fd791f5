//! Depthwise kxk int8 convolution on HWC tensors.

use super::{CHUNK, Epilogue};
use crate::kernels::depthwise::tap_range;

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
/// Channels go in chunks of [`CHUNK`] through a stack accumulator, so the
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
    debug_assert_eq!(bias.len(), s.c);
    debug_assert_eq!(e.channels(), s.c);
    debug_assert_eq!(out.len(), s.oh * s.ow * s.c);
    debug_assert!(s.stride > 0);
    debug_assert!((-128..=127).contains(&x_zero_point));
    let c = s.c;
    let mut acc = [0i32; CHUNK];
    for oy in 0..s.oh {
        let (ky0, ky1) = tap_range(oy, s.stride, s.pad, s.k, s.ih);
        for ox in 0..s.ow {
            let (kx0, kx1) = tap_range(ox, s.stride, s.pad, s.k, s.iw);
            let o = (oy * s.ow + ox) * c;
            for c0 in (0..c).step_by(CHUNK) {
                let n = CHUNK.min(c - c0);
                let acc = &mut acc[..n];
                acc.copy_from_slice(&bias[c0..c0 + n]);
                for ky in ky0..ky1 {
                    let iy = oy * s.stride + ky - s.pad;
                    for kx in kx0..kx1 {
                        let ix = ox * s.stride + kx - s.pad;
                        let src = (iy * s.iw + ix) * c + c0;
                        let wt = (ky * s.k + kx) * c + c0;
                        for ((d, &xv), &wv) in
                            acc.iter_mut().zip(&x[src..src + n]).zip(&w[wt..wt + n])
                        {
                            *d = d.wrapping_add(i32::from(wv) * (i32::from(xv) - x_zero_point));
                        }
                    }
                }
                e.slice(c0..c0 + n).apply(acc, &mut out[o + c0..o + c0 + n]);
            }
        }
    }
}
