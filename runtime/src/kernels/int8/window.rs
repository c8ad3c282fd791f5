//! The output walk shared by the int8 window kernels ([`conv_stem`] and
//! [`depthwise`]): every output pixel, its output channels in chunks of
//! [`CHUNK`], the in-bounds taps of its window, then the epilogue.
//!
//! Only the innermost step differs between the two kernels (how one tap adds
//! to a chunk of accumulators), so that step is the closure and everything
//! around it, including which taps fall in the padding, lives here once.
//!
//! [`conv_stem`]: mod@super::conv_stem
//! [`depthwise`]: mod@super::depthwise

use super::{CHUNK, Epilogue};
use crate::kernels::depthwise::tap_range;

/// A `kh x kw` window with `stride` and symmetric zero padding `pad` (both
/// axes) sliding over an `ih x iw` input to give an `oh x ow` output.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub ih: usize,
    pub iw: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

/// One in-bounds tap of the window at an output pixel: kernel position
/// (`ky`, `kx`) and the input pixel (`iy`, `ix`) it reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tap {
    pub ky: usize,
    pub kx: usize,
    pub iy: usize,
    pub ix: usize,
}

/// Computes `out` (`[oh][ow][cout]`, HWC): for every output pixel and every
/// chunk of output channels starting at `c0`, the accumulators start at
/// `bias[c0..]`, `add(acc, c0, tap)` adds each tap inside the input (taps
/// in the padding add nothing: padding is real zero), and `e` maps the
/// chunk to int8.
#[inline(always)]
pub(crate) fn for_each_output(
    win: Window,
    cout: usize,
    bias: &[i32],
    e: Epilogue<'_>,
    out: &mut [i8],
    mut add: impl FnMut(&mut [i32], usize, Tap),
) {
    debug_assert_eq!(bias.len(), cout);
    debug_assert_eq!(e.channels(), cout);
    debug_assert_eq!(out.len(), win.oh * win.ow * cout);
    debug_assert!(win.stride > 0);
    let mut acc = [0i32; CHUNK];
    for oy in 0..win.oh {
        let (ky0, ky1) = tap_range(oy, win.stride, win.pad, win.kh, win.ih);
        for ox in 0..win.ow {
            let (kx0, kx1) = tap_range(ox, win.stride, win.pad, win.kw, win.iw);
            let o = (oy * win.ow + ox) * cout;
            for c0 in (0..cout).step_by(CHUNK) {
                let n = CHUNK.min(cout - c0);
                let acc = &mut acc[..n];
                acc.copy_from_slice(&bias[c0..c0 + n]);
                for ky in ky0..ky1 {
                    let iy = oy * win.stride + ky - win.pad;
                    for kx in kx0..kx1 {
                        let ix = ox * win.stride + kx - win.pad;
                        add(acc, c0, Tap { ky, kx, iy, ix });
                    }
                }
                e.slice(c0..c0 + n).apply(acc, &mut out[o + c0..o + c0 + n]);
            }
        }
    }
}
