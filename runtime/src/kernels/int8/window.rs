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
use crate::kernels::requant::Row;

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
/// chunk to int8 through the row function `R`.
///
/// # Safety
/// `R`'s CPU features are present.
#[inline(always)]
pub(crate) unsafe fn for_each_output<R: Row>(
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
                // SAFETY: R's features are the caller's contract.
                unsafe {
                    e.slice(c0..c0 + n)
                        .apply_with::<R>(acc, &mut out[o + c0..o + c0 + n])
                };
            }
        }
    }
}

/// `w * v` for an int8 weight and a 16-bit input offset `v` in
/// `[-255, 255]`, as `i32`: the product is below `2^15` in magnitude, so
/// x86 takes one 16-bit multiply per lane (`vpmullw`, 16 lanes) and aarch64
/// the widening multiply-accumulate (SMLAL), which the compiler finds from
/// the widened operands. The value is the same either way.
#[inline(always)]
fn product(w: i8, v: i16) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        i32::from(i16::from(w) * v)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        i32::from(i16::from(w)) * i32::from(v)
    }
}

/// `acc[c] += product(w[c], x[c] - zx)` over one block of `L` channels.
#[inline(always)]
fn mac_block<const L: usize>(acc: &mut [i32], w: &[i8], x: &[i8], zx: i16) {
    let (acc, w, x): (&mut [i32; L], &[i8; L], &[i8; L]) = (
        (&mut acc[..L]).try_into().unwrap(),
        w[..L].try_into().unwrap(),
        x[..L].try_into().unwrap(),
    );
    for l in 0..L {
        acc[l] = acc[l].wrapping_add(product(w[l], i16::from(x[l]) - zx));
    }
}

/// `acc[c] += w[c] * (x[c] - zx)`, wrapping, for `c < acc.len()`.
///
/// The channels go in fixed blocks of 16 and 8 (then one by one): a
/// fixed-size block vectorizes at any row length, where a loop over a short
/// run-time length (16 or 24 channels) would stay scalar under the
/// compiler's wider unrolled vector loop. MobileNetV3's channel counts are
/// multiples of 8.
#[inline(always)]
pub(crate) fn mac(acc: &mut [i32], w: &[i8], x: &[i8], zx: i16) {
    let n = acc.len();
    let mut i = 0;
    while i + 16 <= n {
        mac_block::<16>(&mut acc[i..], &w[i..], &x[i..], zx);
        i += 16;
    }
    if i + 8 <= n {
        mac_block::<8>(&mut acc[i..], &w[i..], &x[i..], zx);
        i += 8;
    }
    for c in i..n {
        acc[c] = acc[c].wrapping_add(product(w[c], i16::from(x[c]) - zx));
    }
}

/// `acc[c] += w[c] * v`, wrapping, for `c < acc.len()`: one input value
/// `v` in `[-255, 255]` for every channel (the stem's taps), in the blocks
/// of [`mac`].
#[inline(always)]
pub(crate) fn mac_broadcast(acc: &mut [i32], w: &[i8], v: i16) {
    let n = acc.len();
    let mut i = 0;
    while i + 16 <= n {
        mac_broadcast_block::<16>(&mut acc[i..], &w[i..], v);
        i += 16;
    }
    if i + 8 <= n {
        mac_broadcast_block::<8>(&mut acc[i..], &w[i..], v);
        i += 8;
    }
    for c in i..n {
        acc[c] = acc[c].wrapping_add(product(w[c], v));
    }
}

/// `acc[c] += product(w[c], v)` over one block of `L` channels.
#[inline(always)]
fn mac_broadcast_block<const L: usize>(acc: &mut [i32], w: &[i8], v: i16) {
    let (acc, w): (&mut [i32; L], &[i8; L]) = (
        (&mut acc[..L]).try_into().unwrap(),
        w[..L].try_into().unwrap(),
    );
    for l in 0..L {
        acc[l] = acc[l].wrapping_add(product(w[l], v));
    }
}
