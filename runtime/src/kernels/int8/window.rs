//! The output walk shared by the int8 window kernels ([`conv_stem`] and
//! [`depthwise`]): every output pixel, its output channels in chunks of
//! [`CHUNK`], each chunk in register blocks of 16 and 8 channels (then one
//! by one: [`pixel_chunks`]), the in-bounds taps of the window for each
//! block, then the epilogue on the chunk.
//!
//! Only the innermost step differs between the two kernels (how one tap adds
//! to a block of accumulators: [`TapMac`]), so everything around it,
//! including which taps fall in the padding, lives here once. The stem's
//! gathered-patch path fills its blocks another way ([`Blocks`]) and shares
//! the per-pixel chunk walk.
//!
//! A block's accumulators are a local `[i32; L]` that stays in vector
//! registers across all of its taps and is stored once; accumulating the
//! taps into the chunk's stack row instead made every tap a load and a store
//! of each accumulator, which dominated both kernels.
//!
//! [`conv_stem`]: mod@super::conv_stem
//! [`depthwise`]: mod@super::depthwise

use super::{CHUNK, Epilogue};
use crate::kernels::depthwise::tap_range;
use crate::kernels::requant::Row;
use core::ops::Range;

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

/// How the taps of one kernel row add to a block of accumulators: the one
/// step in which the window kernels differ.
pub(crate) trait TapMac {
    /// `acc[l] += ` the products of the taps (`ky`, `kx`) for `kx` in
    /// `kx0..kx1` for output channel `c + l`, wrapping, for `l < L`; tap
    /// `kx0` reads input pixel (`iy`, `ix0`) and each next tap the pixel to
    /// its right. The range is never empty.
    fn row<const L: usize>(
        &self,
        acc: &mut [i32; L],
        c: usize,
        ky: usize,
        kx: Range<usize>,
        iy: usize,
        ix0: usize,
    );
}

/// The in-bounds kernel rows `ky0..ky1` and columns `kx0..kx1` of the
/// window at output pixel (`oy`, `ox`).
#[derive(Clone, Copy, Debug)]
struct Taps {
    ky0: usize,
    ky1: usize,
    kx0: usize,
    kx1: usize,
    /// Input row and column of kernel position (0, 0), plus the padding (so
    /// that it is never negative).
    y0: usize,
    x0: usize,
}

/// How one output pixel's accumulators are filled, a register block of `L`
/// output channels at a time: what [`pixel_chunks`] calls for every block.
pub(crate) trait Blocks {
    /// `acc[..L] = bias[..L] + ` this pixel's sum for output channels
    /// `c..c + L`, wrapping.
    fn block<const L: usize>(&self, acc: &mut [i32], bias: &[i32], c: usize);
}

/// One output pixel: its `cout` channels in chunks of [`CHUNK`], each chunk
/// in register blocks of 16 and 8 channels (then one by one) from `b`, then
/// the epilogue `e` maps the chunk through the row function `R` into `out`
/// (the pixel's `cout` values). The one output walk of both window kernels,
/// whatever fills the blocks.
///
/// # Safety
/// `R`'s CPU features are present.
#[inline(always)]
pub(crate) unsafe fn pixel_chunks<R: Row, B: Blocks>(
    cout: usize,
    bias: &[i32],
    e: Epilogue<'_>,
    acc: &mut [i32; CHUNK],
    out: &mut [i8],
    b: &B,
) {
    for c0 in (0..cout).step_by(CHUNK) {
        let n = CHUNK.min(cout - c0);
        let mut i = 0;
        while i + 16 <= n {
            b.block::<16>(&mut acc[i..], &bias[c0 + i..], c0 + i);
            i += 16;
        }
        if i + 8 <= n {
            b.block::<8>(&mut acc[i..], &bias[c0 + i..], c0 + i);
            i += 8;
        }
        while i < n {
            b.block::<1>(&mut acc[i..], &bias[c0 + i..], c0 + i);
            i += 1;
        }
        // SAFETY: R's features are the caller's contract.
        unsafe {
            e.slice(c0..c0 + n)
                .apply_with::<R>(&acc[..n], &mut out[c0..c0 + n])
        };
    }
}

/// Computes `out` (`[oh][ow][cout]`, HWC): for every output pixel and every
/// chunk of output channels starting at `c0`, the accumulators start at
/// `bias[c0..]`, `m` adds each tap inside the input (taps in the padding add
/// nothing: padding is real zero), and `e` maps the chunk to int8 through
/// the row function `R`.
///
/// # Safety
/// `R`'s CPU features are present.
#[inline(always)]
pub(crate) unsafe fn for_each_output<R: Row, M: TapMac>(
    win: Window,
    cout: usize,
    bias: &[i32],
    e: Epilogue<'_>,
    out: &mut [i8],
    m: &M,
) {
    // SAFETY: R's features are the caller's contract.
    unsafe { for_each_output_with::<R, M, _>(win, cout, bias, e, out, m, |_, _, _| false) }
}

/// [`for_each_output`], offering each output pixel whose window lies wholly
/// inside the input to `interior(oy, ox, out_pixel)` first: a variant with
/// a faster form for such windows computes the pixel's `cout` outputs and
/// returns true, or returns false to leave the pixel to `m`.
///
/// # Safety
/// `R`'s CPU features are present.
#[inline(always)]
pub(crate) unsafe fn for_each_output_with<R: Row, M: TapMac, F>(
    win: Window,
    cout: usize,
    bias: &[i32],
    e: Epilogue<'_>,
    out: &mut [i8],
    m: &M,
    mut interior: F,
) where
    F: FnMut(usize, usize, &mut [i8]) -> bool,
{
    debug_assert_eq!(bias.len(), cout);
    debug_assert_eq!(e.channels(), cout);
    debug_assert_eq!(out.len(), win.oh * win.ow * cout);
    debug_assert!(win.stride > 0);
    let mut acc = [0i32; CHUNK];
    for oy in 0..win.oh {
        let (ky0, ky1) = tap_range(oy, win.stride, win.pad, win.kh, win.ih);
        for ox in 0..win.ow {
            let (kx0, kx1) = tap_range(ox, win.stride, win.pad, win.kw, win.iw);
            let taps = Taps {
                ky0,
                ky1,
                kx0,
                kx1,
                y0: oy * win.stride,
                x0: ox * win.stride,
            };
            let o = (oy * win.ow + ox) * cout;
            let inside = ky0 == 0 && ky1 == win.kh && kx0 == 0 && kx1 == win.kw;
            if inside && interior(oy, ox, &mut out[o..o + cout]) {
                continue;
            }
            let blocks = WindowBlocks {
                taps,
                pad: win.pad,
                m,
            };
            // SAFETY: R's features are the caller's contract.
            unsafe {
                pixel_chunks::<R, _>(cout, bias, e, &mut acc, &mut out[o..o + cout], &blocks)
            };
        }
    }
}

/// The blocks of one output pixel of a window kernel: every in-bounds kernel
/// row of `taps` through `m`.
struct WindowBlocks<'a, M> {
    taps: Taps,
    pad: usize,
    m: &'a M,
}

impl<M: TapMac> Blocks for WindowBlocks<'_, M> {
    #[inline(always)]
    fn block<const L: usize>(&self, acc: &mut [i32], bias: &[i32], c: usize) {
        let (taps, pad) = (self.taps, self.pad);
        let mut r: [i32; L] = match bias[..L].try_into() {
            Ok(r) => r,
            Err(_) => unreachable!("a slice of L values is an [i32; L]"),
        };
        if taps.kx0 < taps.kx1 {
            let ix0 = taps.x0 + taps.kx0 - pad;
            for ky in taps.ky0..taps.ky1 {
                let iy = taps.y0 + ky - pad;
                self.m.row::<L>(&mut r, c, ky, taps.kx0..taps.kx1, iy, ix0);
            }
        }
        acc[..L].copy_from_slice(&r);
    }
}

/// `w * v` for an int8 weight and a 16-bit input offset `v` in
/// `[-255, 255]`, as `i32` (the product is below `2^15` in magnitude).
///
/// Written on widened operands, so aarch64 takes the widening
/// multiply-accumulate (SMLAL) and x86 `vpmulld` on 8 lanes. A 16-bit
/// product on x86 (`vpmullw`, 16 lanes) was slower: the compiler kept the
/// lanes in 32 bits and sign-extended each product from 16 bits with two
/// shifts.
#[inline(always)]
pub(crate) fn product(w: i8, v: i16) -> i32 {
    i32::from(w) * i32::from(v)
}

/// The `L` values of `s` from `at`, as an array reference (a bounds check,
/// then fixed-size code).
#[inline(always)]
pub(crate) fn array<const L: usize>(s: &[i8], at: usize) -> &[i8; L] {
    match s[at..at + L].try_into() {
        Ok(a) => a,
        Err(_) => unreachable!("a slice of L values is an [i8; L]"),
    }
}

/// The `L` values of `s` from `at`, read without a bounds check.
///
/// # Safety
/// `at + L <= s.len()`.
#[inline(always)]
pub(crate) unsafe fn read<const L: usize>(s: &[i8], at: usize) -> [i8; L] {
    debug_assert!(at + L <= s.len());
    // SAFETY: the caller's contract keeps the L bytes inside `s`; any bytes
    // are a valid [i8; L] and the read is unaligned.
    unsafe { s.as_ptr().add(at).cast::<[i8; L]>().read_unaligned() }
}
