//! Dense kxk int8 convolution from the planar (CHW) quantized model input to
//! HWC, used only for the first layer (3 input channels).

use super::window::{Blocks, TapMac, Window, array, for_each_output, pixel_chunks, product};
use super::{CHUNK, Epilogue};
use crate::kernels::requant::{Dispatch, Row};
use core::ops::Range;

/// The variant this target uses: [`portable`], whose source takes explicit
/// NEON for its patch multiply-accumulate on aarch64 (the module `neon`).
#[cfg(not(target_arch = "x86_64"))]
pub use portable as conv_stem;

pub use crate::kernels::shape::ConvShape;

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
    if s.kh * s.kw * s.cin <= PATCH {
        // SAFETY: R's features are the caller's contract.
        unsafe { patched::<R>(x, s, x_zero_point, w, bias, e, out) };
        return;
    }
    let taps = StemTaps {
        x,
        w,
        plane: s.ih * s.iw,
        iw: s.iw,
        kw: s.kw,
        cin: s.cin,
        cout: s.cout,
        zx: x_zero_point as i16,
    };
    // SAFETY: R's features are the caller's contract.
    unsafe { for_each_output::<R, _>(win, s.cout, bias, e, out, &taps) }
}

/// The most window values (`kh * kw * cin`) the gathered path takes; the
/// MobileNetV3 stem has 27. Larger windows take the tap-by-tap path.
const PATCH: usize = 128;

/// The stem for windows of at most [`PATCH`] values: each output pixel's
/// window is first gathered into a patch of 16-bit offsets `x - zx` (0 in
/// the padding), in the weights' `(ky, kx, ci)` order, so the
/// multiply-accumulate runs over one flat loop of `kh * kw * cin` steps per
/// register block, with no tap bounds or input addressing inside it.
///
/// # Safety
/// `R`'s CPU features are present.
#[inline(always)]
unsafe fn patched<R: Row>(
    x: &[i8],
    s: ConvShape,
    x_zero_point: i32,
    w: &[i8],
    bias: &[i32],
    e: Epilogue<'_>,
    out: &mut [i8],
) {
    let (k, cout) = (s.kh * s.kw * s.cin, s.cout);
    let zx = x_zero_point as i16;
    let w = &w[..k * cout];
    // aarch64 widens the weights to 16 bits once per call, not at every tap of every pixel,
    // when they fit a 4 KiB stack buffer (the MobileNetV3 stem's 27 x 16 do).
    #[cfg(target_arch = "aarch64")]
    let mut wide_buf = [0i16; WIDE];
    #[cfg(target_arch = "aarch64")]
    let wide: &[i16] = match wide_buf.get_mut(..w.len()) {
        Some(d) => {
            for (d, &v) in d.iter_mut().zip(w) {
                *d = i16::from(v);
            }
            d
        }
        None => &[],
    };
    #[cfg(not(target_arch = "aarch64"))]
    let wide: &[i16] = &[];
    // Whether aarch64's vector gather suits this shape (each window must also lie inside).
    #[cfg(target_arch = "aarch64")]
    let vector = neon::gather3_fits(x, s, zx);
    #[cfg(not(target_arch = "aarch64"))]
    let vector = false;
    let mut patch = [0i16; PATCH];
    #[cfg(target_arch = "aarch64")]
    if vector && cout == 16 && wide.len() == k * 16 && bias.len() >= 16 {
        use super::{NeonEpilogue, NeonFloatHardswish};
        if let Some(f) = NeonFloatHardswish::new(&e, 16) {
            // SAFETY: `vector` is gather3_fits(x, s, zx); wide holds k * 16 weights.
            unsafe { fused16(x, s, zx, wide, bias, &f, &mut patch, out) };
            return;
        }
        if let Some(f) = NeonEpilogue::new(&e, 16) {
            // SAFETY: as above.
            unsafe { fused16(x, s, zx, wide, bias, &f, &mut patch, out) };
            return;
        }
    }
    let mut acc = [0i32; CHUNK];
    for oy in 0..s.oh {
        for ox in 0..s.ow {
            // SAFETY: `vector` is gather3_fits(x, s, zx) or false.
            unsafe { gather(x, s, oy, ox, zx, vector, &mut patch) };
            let o = (oy * s.ow + ox) * cout;
            let blocks = PatchBlocks {
                cout,
                w,
                wide,
                patch: &patch[..k],
            };
            // SAFETY: R's features are the caller's contract.
            unsafe {
                pixel_chunks::<R, _>(cout, bias, e, &mut acc, &mut out[o..o + cout], &blocks)
            };
        }
    }
}

/// aarch64, 16 output channels (the MobileNetV3 stem): each pixel's accumulators stay in
/// registers from the biases through the taps ([`neon::mac16`]) and the epilogue `epi`
/// (the operations of the row path, so the same bits) to one 16-byte store, instead of
/// going through the chunk row and the row epilogue.
///
/// # Safety
/// `neon::gather3_fits(x, s, zx)` holds; `wide` holds the `kh * kw * cin` taps' 16
/// widened weights each; `bias` 16 values; `epi` was made for 16 channels.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the `patched` locals it shares, all used
unsafe fn fused16<E: super::QuadEpilogue>(
    x: &[i8],
    s: ConvShape,
    zx: i16,
    wide: &[i16],
    bias: &[i32],
    epi: &E,
    patch: &mut [i16; PATCH],
    out: &mut [i8],
) {
    use core::arch::aarch64::*;
    let k = s.kh * s.kw * s.cin;
    assert!(
        out.len() >= s.oh * s.ow * 16 && wide.len() >= k * 16 && bias.len() >= 16,
        "int8 stem: a slice is shorter than the shape {s:?}"
    );
    // SAFETY: bias holds 16 values, wide k * 16, out oh * ow * 16 (asserted above); the
    // gather's contract is this function's; NEON is part of every aarch64 target.
    unsafe {
        let b = bias.as_ptr();
        let init = [
            vld1q_s32(b),
            vld1q_s32(b.add(4)),
            vld1q_s32(b.add(8)),
            vld1q_s32(b.add(12)),
        ];
        let mut second = [0i16; PATCH];
        for oy in 0..s.oh {
            let mut ox = 0;
            // Two pixels at a time share each tap's weight load.
            while ox + 2 <= s.ow {
                gather(x, s, oy, ox, zx, true, patch);
                gather(x, s, oy, ox + 1, zx, true, &mut second);
                let (a, b) = neon::mac16x2(init, wide.as_ptr(), &patch[..k], &second[..k]);
                let o = out.as_mut_ptr().add((oy * s.ow + ox) * 16);
                let q = core::array::from_fn(|i| epi.quad(a[i], 4 * i));
                vst1q_s8(o, epi.bytes(q));
                let q = core::array::from_fn(|i| epi.quad(b[i], 4 * i));
                vst1q_s8(o.add(16), epi.bytes(q));
                ox += 2;
            }
            if ox < s.ow {
                gather(x, s, oy, ox, zx, true, patch);
                let a = neon::mac16(init, wide.as_ptr(), 16, &patch[..k]);
                let q = core::array::from_fn(|i| epi.quad(a[i], 4 * i));
                vst1q_s8(out.as_mut_ptr().add((oy * s.ow + ox) * 16), epi.bytes(q));
            }
        }
    }
}

/// Output pixel (`oy`, `ox`)'s window as 16-bit offsets `x - zx` (0 in the
/// padding) in the weights' `(ky, kx, ci)` order, into `patch[..kh * kw * cin]`
/// (aarch64: 8-byte loads for interior windows when `vector`).
///
/// # Safety
/// `vector` is false, or `neon::gather3_fits(x, s, zx)` holds.
#[inline(always)]
#[cfg_attr(not(target_arch = "aarch64"), allow(unused_variables))]
unsafe fn gather(
    x: &[i8],
    s: ConvShape,
    oy: usize,
    ox: usize,
    zx: i16,
    vector: bool,
    patch: &mut [i16; PATCH],
) {
    // SAFETY: `vector` implies gather3_fits(x, s, zx) (the contract).
    #[cfg(target_arch = "aarch64")]
    if vector && unsafe { neon::gather3(x, s, oy, ox, zx, patch) } {
        return;
    }
    let plane = s.ih * s.iw;
    let mut t = 0;
    for ky in 0..s.kh {
        // Offsets by the padding, so that out-of-range taps wrap to huge
        // values and fail the `< ih` / `< iw` tests.
        let iy = (oy * s.stride + ky).wrapping_sub(s.pad);
        for kx in 0..s.kw {
            let ix = (ox * s.stride + kx).wrapping_sub(s.pad);
            let inside = iy < s.ih && ix < s.iw;
            for ci in 0..s.cin {
                patch[t] = if inside {
                    i16::from(x[ci * plane + iy * s.iw + ix]) - zx
                } else {
                    0
                };
                t += 1;
            }
        }
    }
}

/// The blocks of one output pixel of the patch path: its gathered window
/// `patch` against the weights `w` (`[k][cout]`).
struct PatchBlocks<'a> {
    cout: usize,
    w: &'a [i8],
    /// `w` widened to 16 bits, or empty.
    wide: &'a [i16],
    patch: &'a [i16],
}

impl Blocks for PatchBlocks<'_> {
    #[inline(always)]
    fn block<const L: usize>(&self, acc: &mut [i32], bias: &[i32], c: usize) {
        patch_block::<L>(acc, bias, c, self.cout, self.w, self.wide, self.patch);
    }
}

/// The most weights (`kh * kw * cin * cout`) aarch64 widens to 16 bits up
/// front, on the stack; larger stems widen them at every tap.
#[cfg(target_arch = "aarch64")]
const WIDE: usize = 2048;

/// `acc[..L] = bias[..L] + sum_t w[t][c + l] * patch[t]` for output
/// channels `c..c + L` (`w` is `[k][cout]`, `wide` the same widened to 16
/// bits or empty), in a register block.
#[inline(always)]
#[cfg_attr(not(target_arch = "aarch64"), allow(unused_variables))]
fn patch_block<const L: usize>(
    acc: &mut [i32],
    bias: &[i32],
    c: usize,
    cout: usize,
    w: &[i8],
    wide: &[i16],
    patch: &[i16],
) {
    let mut r: [i32; L] = match bias[..L].try_into() {
        Ok(r) => r,
        Err(_) => unreachable!("a slice of L values is an [i32; L]"),
    };
    #[cfg(target_arch = "aarch64")]
    if L == 16 && c + 16 <= cout && wide.len() >= patch.len() * cout {
        // SAFETY: r holds 16 values; tap t reads wide[t * cout + c..][..16],
        // inside wide for every t < patch.len() (checked just above).
        unsafe { neon::patch16(r.as_mut_ptr(), wide.as_ptr().add(c), cout, patch) };
        acc[..L].copy_from_slice(&r);
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if L == 16 && c + 16 <= cout && w.len() >= patch.len() * cout {
        // SAFETY: r holds 16 values; tap t reads w[t * cout + c..][..16],
        // inside w for every t < patch.len() (checked just above).
        unsafe { neon::patch16(r.as_mut_ptr(), w.as_ptr().add(c), cout, patch) };
        acc[..L].copy_from_slice(&r);
        return;
    }
    for (wt, &v) in w.chunks_exact(cout).zip(patch) {
        let wt = array::<L>(wt, c);
        for l in 0..L {
            r[l] = r[l].wrapping_add(product(wt[l], v));
        }
    }
    acc[..L].copy_from_slice(&r);
}

/// aarch64: [`patch_block`] for 16 channels with explicit NEON: eight patch
/// values per vector load, each multiplied by lane into the 16 accumulators
/// (SMLAL by element), so a tap costs one weight load, two widenings and
/// four multiply-accumulates. The compiler's own version loaded the weights
/// four bytes at a time and broadcast each patch value separately.
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{ConvShape, PATCH};
    use core::arch::aarch64::*;

    /// `$step!(L)` for each lane `L` of an `int16x8_t` of patch values: the lane is a
    /// const generic of the multiply-accumulate, so the eight steps are written out.
    macro_rules! each_lane {
        ($step:ident) => {
            $step!(0);
            $step!(1);
            $step!(2);
            $step!(3);
            $step!(4);
            $step!(5);
            $step!(6);
            $step!(7);
        };
    }

    /// Whether [`gather3`] suits this stem: 3 input channels, at most 8
    /// kernel columns, the last kernel row's 24-value store inside the patch,
    /// `x` holding its 3 planes and an int8 zero point. Checked once per
    /// call; [`gather3`] then checks only each window's position.
    #[inline(always)]
    pub(super) fn gather3_fits(x: &[i8], s: ConvShape, zx: i16) -> bool {
        s.cin == 3
            && s.kw <= 8
            && s.kh >= 1
            && (s.kh - 1) * s.kw * 3 + 24 <= PATCH
            && x.len() >= 3 * s.ih * s.iw
            && (-128..=127).contains(&zx)
    }

    /// Gathers the window of output pixel (`oy`, `ox`) into `patch` as
    /// [`super::patched`]'s scalar loop does (`x - zx` in `(ky, kx, ci)`
    /// order), for a window inside the input with 8 readable bytes from its
    /// first column: per kernel row, 8 bytes of each channel plane, widened
    /// and offset by SSUBL, interleaved by ST3. The lanes past `kw` land
    /// where the next kernel row's store overwrites them, or past the
    /// patch's `kh * kw * 3` values. Returns false, having written nothing,
    /// for any other window.
    ///
    /// # Safety
    /// [`gather3_fits`]`(x, s, zx)` holds.
    #[inline(always)]
    pub(super) unsafe fn gather3(
        x: &[i8],
        s: ConvShape,
        oy: usize,
        ox: usize,
        zx: i16,
        patch: &mut [i16; PATCH],
    ) -> bool {
        debug_assert!(gather3_fits(x, s, zx));
        let (iy0, ix0) = (oy * s.stride, ox * s.stride);
        let plane = s.ih * s.iw;
        // Inside: no padding tap, and 8 bytes from the first column stay in the row.
        let inside =
            iy0 >= s.pad && ix0 >= s.pad && iy0 - s.pad + s.kh <= s.ih && ix0 - s.pad + 8 <= s.iw;
        if !inside {
            return false;
        }
        let (iy0, ix0) = (iy0 - s.pad, ix0 - s.pad);
        // SAFETY: every load reads 8 bytes from (iy, ix0) of a plane with
        // iy < ih and ix0 + 8 <= iw (checked above), inside x (3 planes);
        // every store writes 24 values from ky * kw * 3 <= (kh - 1) * kw * 3,
        // ending within PATCH (both by gather3_fits, the caller's contract).
        // NEON is part of every aarch64 target.
        unsafe {
            let z = vdup_n_s8(zx as i8);
            let p = x.as_ptr();
            for ky in 0..s.kh {
                let at = (iy0 + ky) * s.iw + ix0;
                let r = vsubl_s8(vld1_s8(p.add(at)), z);
                let g = vsubl_s8(vld1_s8(p.add(plane + at)), z);
                let b = vsubl_s8(vld1_s8(p.add(2 * plane + at)), z);
                vst3q_s16(patch.as_mut_ptr().add(ky * s.kw * 3), int16x8x3_t(r, g, b));
            }
        }
        true
    }

    /// A weight type [`patch16`] reads: int8 as stored, or widened to 16 bits up front.
    pub(super) trait Weights16: Copy {
        /// The 16 weights at `w`, as two vectors of 16-bit lanes.
        ///
        /// # Safety
        /// `w` points at 16 values.
        unsafe fn load16(w: *const Self) -> (int16x8_t, int16x8_t);
    }

    impl Weights16 for i8 {
        #[inline(always)]
        unsafe fn load16(w: *const i8) -> (int16x8_t, int16x8_t) {
            // SAFETY: the caller's contract bounds the load.
            unsafe {
                let v = vld1q_s8(w);
                (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v))
            }
        }
    }

    impl Weights16 for i16 {
        #[inline(always)]
        unsafe fn load16(w: *const i16) -> (int16x8_t, int16x8_t) {
            // SAFETY: the caller's contract bounds the loads.
            unsafe { (vld1q_s16(w), vld1q_s16(w.add(8))) }
        }
    }

    /// `r[l] += sum_t w[t * cout + l] * patch[t]` for `l < 16`, wrapping
    /// (the products of int8 weights and offsets in `[-255, 255]` are exact
    /// in SMLAL's 32-bit lanes). A tap is one weight load (two for 16-bit
    /// weights), the widening of int8 weights, and four SMLAL by lane.
    ///
    /// # Safety
    /// `r` points at 16 values; `w` at `(patch.len() - 1) * cout + 16`.
    #[inline(always)]
    pub(super) unsafe fn patch16<W: Weights16>(
        r: *mut i32,
        w: *const W,
        cout: usize,
        patch: &[i16],
    ) {
        // SAFETY: the caller's contract bounds every load and store; NEON is
        // part of every aarch64 target.
        unsafe {
            let a = [
                vld1q_s32(r),
                vld1q_s32(r.add(4)),
                vld1q_s32(r.add(8)),
                vld1q_s32(r.add(12)),
            ];
            let a = mac16(a, w, cout, patch);
            vst1q_s32(r, a[0]);
            vst1q_s32(r.add(4), a[1]);
            vst1q_s32(r.add(8), a[2]);
            vst1q_s32(r.add(12), a[3]);
        }
    }

    /// `a[l / 4][l % 4] + sum_t w[t * cout + l] * patch[t]` for `l < 16`, wrapping: the
    /// body of [`patch16`] on registers.
    ///
    /// # Safety
    /// `w` points at `(patch.len() - 1) * cout + 16` values.
    #[inline(always)]
    pub(super) unsafe fn mac16<W: Weights16>(
        mut a: [int32x4_t; 4],
        w: *const W,
        cout: usize,
        patch: &[i16],
    ) -> [int32x4_t; 4] {
        // SAFETY: the caller's contract bounds every load; NEON is part of every aarch64
        // target.
        unsafe {
            let k = patch.len();
            let mut t = 0;
            while t + 8 <= k {
                let p = vld1q_s16(patch.as_ptr().add(t));
                let wt = w.add(t * cout);
                macro_rules! step {
                    ($l:literal) => {
                        tap::<$l, W>(&mut a, wt.add($l * cout), p)
                    };
                }
                each_lane!(step);
                t += 8;
            }
            while t < k {
                tap::<0, W>(&mut a, w.add(t * cout), vdupq_n_s16(patch[t]));
                t += 1;
            }
            a
        }
    }

    /// [`mac16`] for two pixels (`pa`, `pb`, the same length) of a 16-channel stem
    /// (`cout` = 16), from the same accumulators `init`: each tap's weights are loaded once
    /// for both.
    ///
    /// # Safety
    /// `w` points at `pa.len() * 16` values; `pb.len() == pa.len()`.
    #[inline(always)]
    pub(super) unsafe fn mac16x2(
        init: [int32x4_t; 4],
        w: *const i16,
        pa: &[i16],
        pb: &[i16],
    ) -> ([int32x4_t; 4], [int32x4_t; 4]) {
        debug_assert_eq!(pa.len(), pb.len());
        let (mut a, mut b) = (init, init);
        // SAFETY: the caller's contract bounds every load of w; the patch loads read
        // t..t + 8 <= k of both patches; NEON is part of every aarch64 target.
        unsafe {
            let k = pa.len().min(pb.len());
            let mut t = 0;
            while t + 8 <= k {
                let p = vld1q_s16(pa.as_ptr().add(t));
                let q = vld1q_s16(pb.as_ptr().add(t));
                let wt = w.add(t * 16);
                macro_rules! step {
                    ($l:literal) => {
                        tap2::<$l>(&mut a, &mut b, wt.add($l * 16), p, q)
                    };
                }
                each_lane!(step);
                t += 8;
            }
            while t < k {
                let (p, q) = (vdupq_n_s16(pa[t]), vdupq_n_s16(pb[t]));
                tap2::<0>(&mut a, &mut b, w.add(t * 16), p, q);
                t += 1;
            }
        }
        (a, b)
    }

    /// `a += w[..16] * p[LANE]` and `b += w[..16] * q[LANE]`, one weight load for both.
    ///
    /// # Safety
    /// `w` points at 16 values.
    #[inline(always)]
    unsafe fn tap2<const LANE: i32>(
        a: &mut [int32x4_t; 4],
        b: &mut [int32x4_t; 4],
        w: *const i16,
        p: int16x8_t,
        q: int16x8_t,
    ) {
        // SAFETY: the caller's contract bounds the load.
        unsafe {
            let (wl, wh) = i16::load16(w);
            a[0] = vmlal_laneq_s16::<LANE>(a[0], vget_low_s16(wl), p);
            a[1] = vmlal_high_laneq_s16::<LANE>(a[1], wl, p);
            a[2] = vmlal_laneq_s16::<LANE>(a[2], vget_low_s16(wh), p);
            a[3] = vmlal_high_laneq_s16::<LANE>(a[3], wh, p);
            b[0] = vmlal_laneq_s16::<LANE>(b[0], vget_low_s16(wl), q);
            b[1] = vmlal_high_laneq_s16::<LANE>(b[1], wl, q);
            b[2] = vmlal_laneq_s16::<LANE>(b[2], vget_low_s16(wh), q);
            b[3] = vmlal_high_laneq_s16::<LANE>(b[3], wh, q);
        }
    }

    /// `a += w[..16] * p[LANE]`, lane by lane.
    ///
    /// # Safety
    /// `w` points at 16 values.
    #[inline(always)]
    unsafe fn tap<const LANE: i32, W: Weights16>(
        a: &mut [int32x4_t; 4],
        w: *const W,
        p: int16x8_t,
    ) {
        // SAFETY: the caller's contract bounds the load.
        unsafe {
            let (wl, wh) = W::load16(w);
            a[0] = vmlal_laneq_s16::<LANE>(a[0], vget_low_s16(wl), p);
            a[1] = vmlal_high_laneq_s16::<LANE>(a[1], wl, p);
            a[2] = vmlal_laneq_s16::<LANE>(a[2], vget_low_s16(wh), p);
            a[3] = vmlal_high_laneq_s16::<LANE>(a[3], wh, p);
        }
    }
}

/// One stem tap: each input channel's value at the tap, broadcast over
/// output channels `c..c + L` of its weights.
struct StemTaps<'a> {
    x: &'a [i8],
    w: &'a [i8],
    plane: usize,
    iw: usize,
    kw: usize,
    cin: usize,
    cout: usize,
    /// The input zero point, as the 16-bit operand of [`product`] (the
    /// offsets `x - zx` lie in `[-255, 255]`).
    zx: i16,
}

impl TapMac for StemTaps<'_> {
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
        for (j, kx) in kx.enumerate() {
            for ci in 0..self.cin {
                let v = i16::from(self.x[ci * self.plane + iy * self.iw + ix0 + j]) - self.zx;
                let w = array::<L>(
                    self.w,
                    ((ky * self.kw + kx) * self.cin + ci) * self.cout + c,
                );
                for l in 0..L {
                    acc[l] = acc[l].wrapping_add(product(w[l], v));
                }
            }
        }
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

/// x86_64 with AVX-512: the [`avx2`] variant with the AVX-512 row
/// requantization (`requant::avx512`).
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::{ConvShape, Epilogue, body};
    use crate::kernels::requant;
    use core::arch::x86_64::*;

    /// AVX-512 int8 stem convolution with the contract of [`super::portable`].
    ///
    /// Stems with at most 4 kernel columns and 12 (kernel row, input
    /// channel) pairs, such as MobileNetV3's 3x3 over 3 channels, take the
    /// VNNI form (`vnni` in the source: one 4-byte load per kernel row and
    /// channel, against weights packed per call); others take
    /// [`super::portable`]'s source.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW, VL, VBMI and VNNI and AVX2
    /// ([`crate::kernels::has_avx512_vnni`]).
    ///
    /// # Panics
    /// If a slice is shorter than `s` says.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2")]
    pub unsafe fn conv_stem(
        x: &[i8],
        s: ConvShape,
        x_zero_point: i32,
        w: &[i8],
        bias: &[i32],
        e: Epilogue<'_>,
        out: &mut [i8],
    ) {
        if s.kw <= 4 && s.kh * s.cin <= GROUPS && s.stride > 0 {
            // SAFETY: the features are this function's contract; the shape
            // is vnni's.
            unsafe { vnni(x, s, x_zero_point, w, bias, e, out) }
        } else {
            // SAFETY: the features are this function's contract.
            unsafe { body::<requant::Avx512>(x, s, x_zero_point, w, bias, e, out) }
        }
    }

    /// The most (kernel row, input channel) pairs of the VNNI form: its
    /// packed weights stay in registers (two vectors per pair).
    const GROUPS: usize = 12;

    /// Output channels per block of the VNNI form.
    const NB: usize = 16;

    /// The VNNI form. A kernel row of one input channel is at most 4
    /// consecutive bytes of that channel's plane, so each (row, channel)
    /// pair `g` of an output pixel's window is one 4-byte load, broadcast
    /// to every lane and multiplied by `vpdpbusd` against the pair's packed
    /// weights (`[g][NB][4]`: the kernel columns, then zeros). `vpdpbusd`
    /// takes unsigned bytes, so inputs go in with their sign bit flipped
    /// (`x + 128`), and every tap is present: taps in the padding read the
    /// zero point `zx` (flipped, `zx + 128`), so that each accumulator is
    /// `sum_taps w * (x + 128)` and starts at `bias - (128 + zx) * sum_taps w`,
    /// which leaves the oracle's `bias + sum_inside w * (x - zx)` exactly
    /// (modulo `2^32`, as everywhere). Windows inside the input load
    /// straight from the planes; windows over the border go through a
    /// 4-byte-per-pair patch.
    ///
    /// # Safety
    /// The features of [`conv_stem`]; `s.kw <= 4`, `s.kh * s.cin <= GROUPS`,
    /// `s.stride > 0`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2")]
    unsafe fn vnni(
        x: &[i8],
        s: ConvShape,
        x_zero_point: i32,
        w: &[i8],
        bias: &[i32],
        e: Epilogue<'_>,
        out: &mut [i8],
    ) {
        let (cin, cout, plane) = (s.cin, s.cout, s.ih * s.iw);
        assert!(
            x.len() >= cin * plane
                && w.len() >= s.kh * s.kw * cin * cout
                && bias.len() >= cout
                && out.len() >= s.oh * s.ow * cout,
            "int8 stem: a slice is shorter than the shape {s:?}"
        );
        debug_assert_eq!(e.channels(), cout);
        let groups = s.kh * cin;
        let zflip = (x_zero_point + 128) as u8;
        for j0 in (0..cout).step_by(NB) {
            let m = NB.min(cout - j0);
            // [g = ci * kh + ky][NB][4 columns], as u32 (little-endian bytes).
            let mut wp = [0u32; GROUPS * NB];
            let mut init = [0i32; NB];
            for (c, ic) in init.iter_mut().enumerate().take(m) {
                let mut sum = 0i32;
                for ci in 0..cin {
                    for ky in 0..s.kh {
                        let mut b = [0u8; 4];
                        for (kx, bk) in b.iter_mut().enumerate().take(s.kw) {
                            let v = w[((ky * s.kw + kx) * cin + ci) * cout + j0 + c];
                            *bk = v as u8;
                            sum += i32::from(v);
                        }
                        wp[(ci * s.kh + ky) * NB + c] = u32::from_le_bytes(b);
                    }
                }
                *ic = bias[j0 + c].wrapping_sub((128 + x_zero_point).wrapping_mul(sum));
            }
            // SAFETY: wp holds GROUPS * NB values (2 * GROUPS vectors of 8);
            // interior loads are checked against x.len() below; the
            // features are this function's contract.
            unsafe {
                let flip = _mm256_set1_epi8(i8::MIN);
                let wv = wp.as_ptr().cast::<__m256i>();
                let mut wr = [[_mm256_setzero_si256(); 2]; GROUPS];
                for (g, r) in wr.iter_mut().enumerate().take(groups) {
                    *r = [
                        _mm256_loadu_si256(wv.add(2 * g)),
                        _mm256_loadu_si256(wv.add(2 * g + 1)),
                    ];
                }
                let init = [
                    _mm256_loadu_si256(init.as_ptr().cast()),
                    _mm256_loadu_si256(init.as_ptr().add(8).cast()),
                ];
                // The block's epilogue in registers when it can be (see `Epilogue16`),
                // else through the row function (kept out of line, so that the common
                // form inlines into every call of `finish`).
                let e16 = e.avx512_16(j0, m);
                let e = e.slice(j0..j0 + m);
                let store_mask: __mmask16 = if m == NB { !0 } else { (1u16 << m) - 1 };
                let rows = (cin, plane, s.kh, s.iw, s.stride);
                for oy in 0..s.oh {
                    let y0 = (oy * s.stride).wrapping_sub(s.pad);
                    let rows_inside = oy * s.stride >= s.pad && y0 + s.kh <= s.ih;
                    // Pixel ox's accumulators through the epilogue into `out`, by value:
                    // through memory, two 256-bit stores were read back as one 512-bit
                    // load, which waits for both stores to retire.
                    let mut finish = |ox: usize, ar: [__m256i; 2]| {
                        let o = (oy * s.ow + ox) * cout + j0;
                        match &e16 {
                            Some(e16) => {
                                let wide =
                                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(ar[0]), ar[1]);
                                _mm_mask_storeu_epi8(
                                    out[o..o + m].as_mut_ptr(),
                                    store_mask,
                                    e16.apply(wide),
                                );
                            }
                            None => finish_row(&e, ar, &mut out[o..o + m]),
                        }
                    };
                    let mut ox = 0;
                    while ox < s.ow {
                        let x0 = (ox * s.stride).wrapping_sub(s.pad);
                        // Pixels ox..ox + n all interior: every tap inside, and the last
                        // pair's 4-byte load inside x.
                        let interior = |n: usize| {
                            let last = x0.wrapping_add((n - 1) * s.stride);
                            rows_inside
                                && ox + n <= s.ow
                                && ox * s.stride >= s.pad
                                && last + s.kw <= s.iw
                                && (cin - 1) * plane + (y0 + s.kh - 1) * s.iw + last + 4 <= x.len()
                        };
                        let base = x
                            .as_ptr()
                            .wrapping_add(y0.wrapping_mul(s.iw).wrapping_add(x0));
                        if interior(4) {
                            // Four pixels at once: 8 independent accumulators (one pixel's
                            // two would chain every vpdpbusd of its window).
                            let a = windows::<4>(base, rows, flip, init, &wr);
                            for (r, &ar) in a.iter().enumerate() {
                                finish(ox + r, ar);
                            }
                            ox += 4;
                            continue;
                        }
                        if interior(1) {
                            finish(ox, windows::<1>(base, rows, flip, init, &wr)[0]);
                            ox += 1;
                            continue;
                        }
                        let mut a = init;
                        for ci in 0..cin {
                            for ky in 0..s.kh {
                                let g = ci * s.kh + ky;
                                let iy = y0.wrapping_add(ky);
                                let mut b = [zflip; 4];
                                for (kx, bk) in b.iter_mut().enumerate().take(s.kw) {
                                    let ix = x0.wrapping_add(kx);
                                    if iy < s.ih && ix < s.iw {
                                        *bk = (x[ci * plane + iy * s.iw + ix] as u8) ^ 0x80;
                                    }
                                }
                                let xb = _mm256_set1_epi32(i32::from_le_bytes(b));
                                a[0] = _mm256_dpbusd_epi32(a[0], xb, wr[g][0]);
                                a[1] = _mm256_dpbusd_epi32(a[1], xb, wr[g][1]);
                            }
                        }
                        finish(ox, a);
                        ox += 1;
                    }
                }
            }
        }
    }

    /// One pixel's block of [`NB`] accumulators through `e`'s row function into `out`
    /// (`e` and `out` have the block's channels).
    ///
    /// # Safety
    /// The features of [`conv_stem`].
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2")]
    unsafe fn finish_row(e: &Epilogue<'_>, a: [__m256i; 2], out: &mut [i8]) {
        let mut acc = [0i32; NB];
        // SAFETY: two 8-lane stores into the 16 values of acc; the features are this
        // function's contract.
        unsafe {
            _mm256_storeu_si256(acc.as_mut_ptr().cast(), a[0]);
            _mm256_storeu_si256(acc.as_mut_ptr().add(8).cast(), a[1]);
            e.apply_with::<requant::Avx512>(&acc[..out.len()], out);
        }
    }

    /// The accumulators of `R` neighbouring interior pixels of the VNNI form: pixel `r`'s
    /// window corner is `base + r * stride`; each (channel, kernel row) pair `g` is one
    /// 4-byte load, sign-flipped and broadcast, against `wr[g]`. `rows` is (cin, plane, kh,
    /// iw, stride).
    ///
    /// # Safety
    /// The features of [`conv_stem`]; every pixel's windows and their last pair's 4-byte
    /// load inside `x`; `wr` holds the `cin * kh` pairs' packed weights.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2")]
    unsafe fn windows<const R: usize>(
        base: *const i8,
        (cin, plane, kh, iw, stride): (usize, usize, usize, usize, usize),
        flip: __m256i,
        init: [__m256i; 2],
        wr: &[[__m256i; 2]; GROUPS],
    ) -> [[__m256i; 2]; R] {
        let mut a = [init; R];
        // SAFETY: see the function contract.
        unsafe {
            for ci in 0..cin {
                for ky in 0..kh {
                    let g = ci * kh + ky;
                    let row = base.add(ci * plane + ky * iw);
                    for (r, ar) in a.iter_mut().enumerate() {
                        let q = row.add(r * stride).cast::<i32>().read_unaligned();
                        let xb = _mm256_xor_si256(_mm256_set1_epi32(q), flip);
                        ar[0] = _mm256_dpbusd_epi32(ar[0], xb, wr[g][0]);
                        ar[1] = _mm256_dpbusd_epi32(ar[1], xb, wr[g][1]);
                    }
                }
            }
        }
        a
    }
}

/// The variant this target uses: [`avx512`] when the CPU has AVX-512
/// ([`crate::kernels::has_avx512_vnni`]), else [`avx2`] when it has AVX2
/// (with FMA, as [`crate::kernels::has_avx2_fma`] reports for every AVX2
/// kernel), else [`portable`].
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
    if crate::kernels::has_avx512_vnni() {
        // SAFETY: the CPU supports AVX-512 (checked just above).
        unsafe { avx512::conv_stem(x, s, x_zero_point, w, bias, e, out) }
    } else if crate::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { avx2::conv_stem(x, s, x_zero_point, w, bias, e, out) }
    } else {
        portable(x, s, x_zero_point, w, bias, e, out)
    }
}
