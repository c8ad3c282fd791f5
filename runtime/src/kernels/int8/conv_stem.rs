//! Dense kxk int8 convolution from the planar (CHW) quantized model input to
//! HWC, used only for the first layer (3 input channels).

use super::{CHUNK, Epilogue};
use crate::kernels::depthwise::tap_range;

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
/// Output channels go in chunks of [`CHUNK`] through a stack accumulator, so
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
    debug_assert_eq!(bias.len(), s.cout);
    debug_assert_eq!(e.channels(), s.cout);
    debug_assert_eq!(out.len(), s.oh * s.ow * s.cout);
    debug_assert!(s.stride > 0);
    debug_assert!((-128..=127).contains(&x_zero_point));
    let plane = s.ih * s.iw;
    let mut acc = [0i32; CHUNK];
    for oy in 0..s.oh {
        let (ky0, ky1) = tap_range(oy, s.stride, s.pad, s.kh, s.ih);
        for ox in 0..s.ow {
            let (kx0, kx1) = tap_range(ox, s.stride, s.pad, s.kw, s.iw);
            let o = (oy * s.ow + ox) * s.cout;
            for c0 in (0..s.cout).step_by(CHUNK) {
                let n = CHUNK.min(s.cout - c0);
                let acc = &mut acc[..n];
                acc.copy_from_slice(&bias[c0..c0 + n]);
                for ky in ky0..ky1 {
                    let iy = oy * s.stride + ky - s.pad;
                    for kx in kx0..kx1 {
                        let ix = ox * s.stride + kx - s.pad;
                        for ci in 0..s.cin {
                            let a = i32::from(x[ci * plane + iy * s.iw + ix]) - x_zero_point;
                            let t = ((ky * s.kw + kx) * s.cin + ci) * s.cout + c0;
                            for (d, &wv) in acc.iter_mut().zip(&w[t..t + n]) {
                                *d = d.wrapping_add(i32::from(wv) * a);
                            }
                        }
                    }
                }
                e.slice(c0..c0 + n).apply(acc, &mut out[o + c0..o + c0 + n]);
            }
        }
    }
}
