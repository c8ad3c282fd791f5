//! Depthwise kxk int8 convolution on HWC tensors.

use super::Epilogue;
use super::window::{TapMac, Window, for_each_output, product, read};
use crate::kernels::requant::{Dispatch, Row};
use core::ops::Range;

/// The variant this target uses: [`portable`], whose source takes explicit
/// NEON for its kernel rows on aarch64 (the module `neon`).
#[cfg(not(target_arch = "x86_64"))]
pub use portable as depthwise;

pub use crate::kernels::shape::DepthwiseShape;

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
    // SAFETY: the dispatching row function needs no CPU feature, and the
    // taps use no x86 vector code (`AVX2 = false`).
    unsafe { body::<Dispatch, false>(x, s, x_zero_point, w, bias, e, out) }
}

/// [`portable`]'s computation with the row function `R`: the one source of
/// every variant (they differ in the features they are compiled with, and
/// on x86_64 `AVX2` selects explicit AVX2 for the taps of 16 or 8 channels).
///
/// # Safety
/// `R`'s CPU features are present, and AVX2 is present if `AVX2` is true.
#[inline(always)]
unsafe fn body<R: Row, const AVX2: bool>(
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
    let taps = DepthwiseTaps::<AVX2> {
        x,
        w,
        iw: s.iw,
        c: s.c,
        k: s.k,
        zx: x_zero_point as i16,
    };
    #[cfg(target_arch = "aarch64")]
    if let Some(fast) = neon::Interior::new(x, s, x_zero_point, w, bias, &e) {
        fast.run(out);
        return;
    }
    // SAFETY: R's features are the caller's contract.
    unsafe { for_each_output::<R, _>(win, s.c, bias, e, out, &taps) }
}

/// One depthwise tap: channel `c + l` of the input pixel times channel
/// `c + l` of the tap's weights. `AVX2`: the x86_64 AVX2 rows may be used
/// (the constructor's contract, see [`body`]).
struct DepthwiseTaps<'a, const AVX2: bool> {
    x: &'a [i8],
    w: &'a [i8],
    iw: usize,
    c: usize,
    k: usize,
    /// The input zero point, as the 16-bit operand of [`product`].
    zx: i16,
}

impl<const AVX2: bool> TapMac for DepthwiseTaps<'_, AVX2> {
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
        // One bounds check per kernel row: the taps step one pixel (`c`
        // values) at a time through both the input row and the weights.
        let n = kx.len();
        let span = (n - 1) * self.c + L;
        let xs = (iy * self.iw + ix0) * self.c + c;
        let ws = (ky * self.k + kx.start) * self.c + c;
        let (x, w) = (&self.x[xs..xs + span], &self.w[ws..ws + span]);
        #[cfg(target_arch = "aarch64")]
        if L == 16 || L == 8 {
            // SAFETY: acc holds L values; x and w hold (n - 1) * c + L values,
            // so each of the n taps reads L values of both.
            unsafe { neon::row::<L>(acc.as_mut_ptr(), x.as_ptr(), w.as_ptr(), n, self.c, self.zx) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if AVX2 && (L == 16 || L == 8) {
            // SAFETY: as for NEON above; AVX2 is present when AVX2 is true
            // (the contract of `body`).
            unsafe { x86::row::<L>(acc.as_mut_ptr(), x.as_ptr(), w.as_ptr(), n, self.c, self.zx) };
            return;
        }
        for j in 0..n {
            // SAFETY: j * c + L <= (n - 1) * c + L = span, the length of
            // both slices.
            let (xv, wv) = unsafe { (read::<L>(x, j * self.c), read::<L>(w, j * self.c)) };
            for l in 0..L {
                acc[l] = acc[l].wrapping_add(product(wv[l], i16::from(xv[l]) - self.zx));
            }
        }
    }
}

/// aarch64: the taps of one kernel row for a block of 16 or 8 channels with
/// explicit NEON, because the compiler's own vectorization of the portable
/// loop went four lanes at a time through 32-bit lanes (about 1.8
/// instructions per multiply-accumulate instead of 0.75 here).
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::DepthwiseShape;
    use crate::kernels::int8::{Epilogue, NeonEpilogue, QuadEpilogue};
    use core::arch::aarch64::*;

    /// Most channels [`Interior`] handles (its folded biases live on the stack).
    const MAX_C: usize = 1024;
    /// Most taps (`k * k`) [`Interior`] handles: up to 7x7 kernels.
    const MAX_TAPS: usize = 49;
    /// The most bytes of a padded copy of the input (`(ih + 2 * pad) * (iw + 2 * pad) *
    /// c`) [`Interior::run`] keeps on the stack, as the x86_64 AVX-512 form does.
    const PADDED: usize = 96 * 1024;

    /// Every output pixel, every channel at once: the input zero point folded into the
    /// bias (`bias - zx * sum of the channel's k * k weights`), so each tap is an
    /// int8 x int8 product. That is exact for a window wholly inside the input; a tap in
    /// the padding reads the zero point instead (a padded copy of the input,
    /// [`Interior::run`], or a row of `zx` for [`Interior::border`]), whose products
    /// `zx * w` the folded bias cancels, as padding (real zero) adds nothing. Two taps'
    /// products are summed in int16 (each below 2^14 in magnitude, `|w| <= 127`), then
    /// widened into the int32 accumulators (SMULL, SMLAL, SADDW: 12 instructions per 32
    /// multiply-accumulates, against 20 for the subtract-and-widen rows; [`mac2`]); then
    /// the epilogue on the registers ([`NeonEpilogue`], as the fused pointwise tiles), so
    /// the same bits as the generic walk. Taken when the channels are a multiple of 8
    /// (blocks of 16, then one of 8), at most [`MAX_C`], and the epilogue has a register
    /// form.
    pub(super) struct Interior<'a> {
        x: &'a [i8],
        w: &'a [i8],
        s: DepthwiseShape,
        /// `bias[c] - zx * sum_t w[t][c]`, wrapping.
        folded: [i32; MAX_C],
        /// `c` copies of the input zero point: what a tap in the padding reads.
        zeros: [i8; MAX_C],
        epi: NeonEpilogue<'a>,
    }

    impl<'a> Interior<'a> {
        /// The fast form for this layer, if its shape and epilogue allow it.
        #[inline(always)]
        pub(super) fn new(
            x: &'a [i8],
            s: DepthwiseShape,
            x_zero_point: i32,
            w: &'a [i8],
            bias: &[i32],
            e: &Epilogue<'a>,
        ) -> Option<Self> {
            let c = s.c;
            if !c.is_multiple_of(8) || c > MAX_C || s.k == 0 || s.k * s.k > MAX_TAPS {
                return None;
            }
            let epi = NeonEpilogue::new(e, c)?;
            assert!(
                x.len() >= s.ih * s.iw * c && w.len() >= s.k * s.k * c && bias.len() >= c,
                "int8 depthwise: a slice is shorter than the shape {s:?}"
            );
            let mut folded = [0i32; MAX_C];
            // SAFETY: c % 8 == 0, c <= MAX_C and the lengths were asserted above.
            unsafe { fold_bias(w, bias, x_zero_point, c, s.k * s.k, &mut folded) };
            Some(Self {
                x,
                w,
                s,
                folded,
                zeros: [x_zero_point as i8; MAX_C],
                epi,
            })
        }

        /// Every output pixel of the layer into `out` (`oh * ow * c` values).
        ///
        /// Pixels go four at a time in raster order ([`Interior::group`]: the windows
        /// share each weight load). Windows must lie inside the image they read, so a
        /// layer with padding first copies its input into a padded image on the stack (the
        /// zero point in the padding, at most [`PADDED`] bytes: at 224x224 every depthwise
        /// layer of MobileNetV3-Small but the first two, at 128x128 all of them); a larger
        /// one reads its input in place, two pixels of a row at a time where both windows
        /// lie inside it, the border pixels one at a time ([`Interior::border`]).
        ///
        /// # Panics
        /// If `out` is shorter than the layer's output.
        #[inline(always)]
        pub(super) fn run(&self, out: &mut [i8]) {
            let s = self.s;
            let c = s.c;
            assert!(
                out.len() >= s.oh * s.ow * c,
                "int8 depthwise: the output is shorter than {s:?}"
            );
            let (pih, piw) = (s.ih + 2 * s.pad, s.iw + 2 * s.pad);
            let fits = s.oh == 0
                || s.ow == 0
                || ((s.oh - 1) * s.stride + s.k <= pih && (s.ow - 1) * s.stride + s.k <= piw);
            if s.pad == 0 || (pih * piw * c <= PADDED && fits) {
                let mut img = core::mem::MaybeUninit::<[i8; PADDED]>::uninit();
                let (src, row_w) = if s.pad == 0 {
                    (self.x.as_ptr(), s.iw)
                } else {
                    let p = img.as_mut_ptr().cast::<i8>();
                    // SAFETY: the image's pih * piw * c <= PADDED bytes (checked above),
                    // every one of them written here: padding rows, then each input row
                    // between its left and right padding; the input holds ih * iw * c.
                    unsafe {
                        let z = self.zeros[0];
                        let (row, pad) = (piw * c, s.pad * c);
                        core::ptr::write_bytes(p, z as u8, s.pad * row);
                        for y in 0..s.ih {
                            let r = p.add((s.pad + y) * row);
                            core::ptr::write_bytes(r, z as u8, pad);
                            core::ptr::copy_nonoverlapping(
                                self.x.as_ptr().add(y * s.iw * c),
                                r.add(pad),
                                s.iw * c,
                            );
                            core::ptr::write_bytes(r.add(pad + s.iw * c), z as u8, pad);
                        }
                        core::ptr::write_bytes(p.add((s.pad + s.ih) * row), z as u8, s.pad * row);
                    }
                    (p.cast_const(), piw)
                };
                let offs = Self::offsets(s, row_w);
                // Pixels in raster order, four at a time: a group may span two rows (its
                // windows are then further apart in the image), so no row's odd pixel is
                // left to the one-pixel form.
                let total = s.oh * s.ow;
                let at = |p: usize| ((p / s.ow) * s.stride * row_w + (p % s.ow) * s.stride) * c;
                let o = out.as_mut_ptr();
                let mut p = 0;
                // SAFETY: every window lies inside the image (`fits`, or no padding), whose
                // rows are `row_w` pixels; output pixel p is out[p * c..][..c], p < total.
                unsafe {
                    while p + 4 <= total {
                        let a0 = at(p);
                        let d = [0, at(p + 1) - a0, at(p + 2) - a0, at(p + 3) - a0];
                        let outs = [
                            o.add(p * c),
                            o.add((p + 1) * c),
                            o.add((p + 2) * c),
                            o.add((p + 3) * c),
                        ];
                        self.group::<4>(src.add(a0), &offs, d, outs);
                        p += 4;
                    }
                    // The last one to three pixels one at a time: a two-pixel group
                    // here would be one more instantiation of the tap loop in every
                    // layer (compile time) for a few pixels per layer.
                    while p < total {
                        self.group::<1>(src.add(at(p)), &offs, [0], [o.add(p * c)]);
                        p += 1;
                    }
                }
                return;
            }
            let offs = Self::offsets(s, s.iw);
            for oy in 0..s.oh {
                let ky = crate::kernels::depthwise::tap_range(oy, s.stride, s.pad, s.k, s.ih);
                let (lo, hi) =
                    crate::kernels::depthwise::inside_range(s.ow, s.stride, s.pad, s.k, s.iw);
                let o = out[oy * s.ow * c..].as_mut_ptr();
                let mut ox = 0;
                while ox < s.ow {
                    let kx = crate::kernels::depthwise::tap_range(ox, s.stride, s.pad, s.k, s.iw);
                    // SAFETY: `group` is only given windows wholly inside the
                    // input (rows ky full, columns ox and ox + 1 in lo..hi), `border` the
                    // window's in-bounds tap ranges, their contracts; pixel ox of the
                    // output row is out[(oy * ow + ox) * c..][..c].
                    unsafe {
                        if ky == (0, s.k) && ox >= lo && ox < hi {
                            let at = self
                                .x
                                .as_ptr()
                                .add(((oy * s.stride - s.pad) * s.iw + ox * s.stride - s.pad) * c);
                            if ox + 1 < hi {
                                let outs = [o.add(ox * c), o.add((ox + 1) * c)];
                                self.group::<2>(at, &offs, [0, s.stride * c], outs);
                                ox += 2;
                            } else {
                                self.group::<1>(at, &offs, [0], [o.add(ox * c)]);
                                ox += 1;
                            }
                        } else {
                            let out = core::slice::from_raw_parts_mut(o.add(ox * c), c);
                            self.border(oy, ox, ky, kx, out);
                            ox += 1;
                        }
                    }
                }
            }
        }

        /// Offset of tap `t = ky * k + kx` from its window's first value, in an image of
        /// rows of `row_w` pixels. A table, read once per tap, because the tap loops are
        /// not unrolled: computed in the loop, `t / k` and `t % k` took more instructions
        /// than the tap's products.
        #[inline(always)]
        fn offsets(s: DepthwiseShape, row_w: usize) -> [usize; MAX_TAPS] {
            let mut offs = [0usize; MAX_TAPS];
            for (t, o) in offs.iter_mut().enumerate().take(s.k * s.k) {
                *o = ((t / s.k) * row_w + t % s.k) * s.c;
            }
            offs
        }

        /// `N` output pixels: the first window starts at `at`, pixel `n`'s `d[n]` values
        /// further (`d[0] = 0`), its taps at `offs` ([`Interior::offsets`]); into `outs`.
        ///
        /// # Safety
        /// Every window lies inside the image; each of `outs` holds `c` values.
        #[inline(always)]
        unsafe fn group<const N: usize>(
            &self,
            at: *const i8,
            offs: &[usize; MAX_TAPS],
            d: [usize; N],
            outs: [*mut i8; N],
        ) {
            // SAFETY: t < k * k <= MAX_TAPS.
            let tap = move |t: usize| at.wrapping_add(unsafe { *offs.get_unchecked(t) });
            // SAFETY: the caller's contract, passed on.
            unsafe {
                match self.s.k {
                    3 => self.taps::<N, 9>(tap, d, outs),
                    5 => self.taps::<N, 25>(tap, d, outs),
                    _ => self.taps::<N, 0>(tap, d, outs),
                }
            }
        }

        /// Output pixel (`oy`, `ox`), all channels, into `out`, for a window partly in
        /// the padding: its in-bounds kernel rows are `ky.0..ky.1` and columns
        /// `kx.0..kx.1` (`tap_range`); the other taps read [`Interior::zeros`].
        ///
        /// # Safety
        /// `ky` and `kx` are the window's in-bounds ranges (so every other tap reads an
        /// input pixel); `out` holds `c` values.
        #[inline(always)]
        pub(super) unsafe fn border(
            &self,
            oy: usize,
            ox: usize,
            ky: (usize, usize),
            kx: (usize, usize),
            out: &mut [i8],
        ) {
            let s = self.s;
            let mut ptrs = [self.zeros.as_ptr(); MAX_TAPS];
            // Input row and column of tap (0, 0) plus the padding (never negative).
            let (y0, x0) = (oy * s.stride, ox * s.stride);
            for r in ky.0..ky.1 {
                for q in kx.0..kx.1 {
                    let at = ((y0 + r - s.pad) * s.iw + x0 + q - s.pad) * s.c;
                    // SAFETY: an in-bounds tap (the contract) reads pixel `at / c` of the
                    // input, which holds `ih * iw * c` values (checked in `new`).
                    ptrs[r * s.k + q] = unsafe { self.x.as_ptr().add(at) };
                }
            }
            let o = [out.as_mut_ptr()];
            // SAFETY: every pointer is an input pixel or `zeros`, each `c` values long; out
            // holds c values.
            unsafe {
                match s.k {
                    3 => self.taps::<1, 9>(|t| *ptrs.get_unchecked(t), [0], o),
                    5 => self.taps::<1, 25>(|t| *ptrs.get_unchecked(t), [0], o),
                    _ => self.taps::<1, 0>(|t| *ptrs.get_unchecked(t), [0], o),
                }
            }
        }

        /// `N` output pixels for `TAPS = k * k` taps (or any `k` when `TAPS` is 0): tap `t`
        /// of pixel `n` reads its `c` input values from `at(t) + d[n]`, and the pixel goes
        /// to `outs[n]`. Each pair of taps loads its two weight vectors once for all `N`
        /// pixels: for four pixels, per pair of taps and 16 channels, 10 loads and 32
        /// multiply/widen instructions for 128 multiply-accumulates, where one pixel at a
        /// time took 4 and 8 for 32.
        ///
        /// # Safety
        /// `at(t) + d[n]` points at `c` readable values for every `t < k * k` and `n < N`;
        /// each of `outs` holds `c` values.
        #[inline(always)]
        unsafe fn taps<const N: usize, const TAPS: usize>(
            &self,
            at: impl Fn(usize) -> *const i8,
            d: [usize; N],
            outs: [*mut i8; N],
        ) {
            let s = self.s;
            let c = s.c;
            let taps = if TAPS == 0 { s.k * s.k } else { TAPS };
            // SAFETY: every tap reads channels cb..cb + 16 (or + 8) <= c from at(t) + d[n]
            // (the contract); weights, folded biases, multipliers and shifts hold c values
            // (checked in `new`); the outputs hold c values.
            unsafe {
                let w = self.w.as_ptr();
                let epi = &self.epi;
                let mut cb = 0;
                while cb + 16 <= c {
                    let f = self.folded.as_ptr().add(cb);
                    let init = [
                        vld1q_s32(f),
                        vld1q_s32(f.add(4)),
                        vld1q_s32(f.add(8)),
                        vld1q_s32(f.add(12)),
                    ];
                    let mut a = [init; N];
                    // Pairs of taps, then the odd one left (k * k is odd for every odd k).
                    let mut t = 0;
                    while t + 2 <= taps {
                        let wa = vld1q_s8(w.add(t * c + cb));
                        let wb = vld1q_s8(w.add((t + 1) * c + cb));
                        let (pa, pb) = (at(t).add(cb), at(t + 1).add(cb));
                        for n in 0..N {
                            mac2(
                                &mut a[n],
                                vld1q_s8(pa.add(d[n])),
                                vld1q_s8(pb.add(d[n])),
                                wa,
                                wb,
                            );
                        }
                        t += 2;
                    }
                    if t < taps {
                        let wa = vld1q_s8(w.add(t * c + cb));
                        let pa = at(t).add(cb);
                        for (a, &d) in a.iter_mut().zip(&d) {
                            mac1(a, vld1q_s8(pa.add(d)), wa);
                        }
                    }
                    for n in 0..N {
                        let q = [
                            epi.quad(a[n][0], cb),
                            epi.quad(a[n][1], cb + 4),
                            epi.quad(a[n][2], cb + 8),
                            epi.quad(a[n][3], cb + 12),
                        ];
                        vst1q_s8(outs[n].add(cb), epi.bytes(q));
                    }
                    cb += 16;
                }
                if cb < c {
                    // The one block of 8 left (c % 8 == 0).
                    let f = self.folded.as_ptr().add(cb);
                    let mut a = [[vld1q_s32(f), vld1q_s32(f.add(4))]; N];
                    let mut t = 0;
                    while t + 2 <= taps {
                        let wa = vld1_s8(w.add(t * c + cb));
                        let wb = vld1_s8(w.add((t + 1) * c + cb));
                        let (pa, pb) = (at(t).add(cb), at(t + 1).add(cb));
                        for (a, &d) in a.iter_mut().zip(&d) {
                            let p =
                                vmlal_s8(vmull_s8(vld1_s8(pa.add(d)), wa), vld1_s8(pb.add(d)), wb);
                            a[0] = vaddw_s16(a[0], vget_low_s16(p));
                            a[1] = vaddw_high_s16(a[1], p);
                        }
                        t += 2;
                    }
                    if t < taps {
                        let wa = vld1_s8(w.add(t * c + cb));
                        let pa = at(t).add(cb);
                        for (a, &d) in a.iter_mut().zip(&d) {
                            let p = vmull_s8(vld1_s8(pa.add(d)), wa);
                            a[0] = vaddw_s16(a[0], vget_low_s16(p));
                            a[1] = vaddw_high_s16(a[1], p);
                        }
                    }
                    // Eight outputs: the low half of a 16-byte result built twice over.
                    for (a, &o) in a.iter().zip(&outs) {
                        let (q0, q1) = (epi.quad(a[0], cb), epi.quad(a[1], cb + 4));
                        let v = epi.bytes([q0, q1, q0, q1]);
                        vst1_s8(o.add(cb), vget_low_s8(v));
                    }
                }
            }
        }
    }

    /// `a += xa * wa + xb * wb` for 16 channels: the two taps' products summed in int16
    /// (each below 2^14 in magnitude), then widened into the four int32 accumulators.
    #[inline(always)]
    fn mac2(a: &mut [int32x4_t; 4], xa: int8x16_t, xb: int8x16_t, wa: int8x16_t, wb: int8x16_t) {
        // SAFETY: register-only NEON (aarch64 baseline).
        unsafe {
            let pl = vmlal_s8(
                vmull_s8(vget_low_s8(xa), vget_low_s8(wa)),
                vget_low_s8(xb),
                vget_low_s8(wb),
            );
            let ph = vmlal_high_s8(vmull_high_s8(xa, wa), xb, wb);
            a[0] = vaddw_s16(a[0], vget_low_s16(pl));
            a[1] = vaddw_high_s16(a[1], pl);
            a[2] = vaddw_s16(a[2], vget_low_s16(ph));
            a[3] = vaddw_high_s16(a[3], ph);
        }
    }

    /// `a += xa * wa` for 16 channels (the odd tap of a window).
    #[inline(always)]
    fn mac1(a: &mut [int32x4_t; 4], xa: int8x16_t, wa: int8x16_t) {
        // SAFETY: register-only NEON (aarch64 baseline).
        unsafe {
            let pl = vmull_s8(vget_low_s8(xa), vget_low_s8(wa));
            let ph = vmull_high_s8(xa, wa);
            a[0] = vaddw_s16(a[0], vget_low_s16(pl));
            a[1] = vaddw_high_s16(a[1], pl);
            a[2] = vaddw_s16(a[2], vget_low_s16(ph));
            a[3] = vaddw_high_s16(a[3], ph);
        }
    }

    /// `folded[ch] = bias[ch] - zx * sum_t w[t * c + ch]` for `ch < c`, wrapping, eight
    /// channels per step: the weight sums in int16 lanes (at most 49 taps of `|w| <= 127`:
    /// below 2^13), widened once. It runs on every layer call, so it is vectorized: one
    /// channel at a time it cost about 60 instructions per channel of a 5x5 layer, 127 k of
    /// the 128 px int8 model's 7.97 M aarch64 instructions per image. (Folding at codegen
    /// time would remove it altogether, but the portable and x86_64 forms take the raw bias.)
    ///
    /// # Safety
    /// `c % 8 == 0`, `c <= folded.len()`, `taps <= MAX_TAPS`, `w` holds `taps * c` values
    /// and `bias` `c`.
    #[inline(always)]
    unsafe fn fold_bias(
        w: &[i8],
        bias: &[i32],
        zx: i32,
        c: usize,
        taps: usize,
        folded: &mut [i32],
    ) {
        debug_assert!(c.is_multiple_of(8) && c <= folded.len() && taps <= MAX_TAPS);
        debug_assert!(w.len() >= taps * c && bias.len() >= c);
        // SAFETY: every read is below taps * c (weights) or c (bias), every store below c.
        unsafe {
            let z = vdupq_n_s32(zx);
            for cb in (0..c).step_by(8) {
                let mut sum = vdupq_n_s16(0);
                for t in 0..taps {
                    sum = vaddw_s8(sum, vld1_s8(w.as_ptr().add(t * c + cb)));
                }
                let b = bias.as_ptr().add(cb);
                let f = folded.as_mut_ptr().add(cb);
                let lo = vmlsq_s32(vld1q_s32(b), vmovl_s16(vget_low_s16(sum)), z);
                let hi = vmlsq_s32(vld1q_s32(b.add(4)), vmovl_high_s16(sum), z);
                vst1q_s32(f, lo);
                vst1q_s32(f.add(4), hi);
            }
        }
    }

    /// `acc[l] += sum_j w[j * step + l] * (x[j * step + l] - zx)` for
    /// `l < L` (16 or 8) and `j < n`, wrapping: SSUBL widens `x - zx`
    /// (in `[-255, 255]`) to int16, SXTL the weights, and SMLAL
    /// accumulates the exact products (below `2^15`) into int32 lanes.
    ///
    /// # Safety
    /// `acc` points at `L` values; `x` and `w` at `(n - 1) * step + L`.
    #[inline(always)]
    pub(super) unsafe fn row<const L: usize>(
        acc: *mut i32,
        x: *const i8,
        w: *const i8,
        n: usize,
        step: usize,
        zx: i16,
    ) {
        // SAFETY: the loads and stores stay inside the caller's contract;
        // NEON is part of every aarch64 target. zx is an int8 zero point.
        unsafe {
            let z = vdup_n_s8(zx as i8);
            if L == 16 {
                let zq = vcombine_s8(z, z);
                let (mut a0, mut a1) = (vld1q_s32(acc), vld1q_s32(acc.add(4)));
                let (mut a2, mut a3) = (vld1q_s32(acc.add(8)), vld1q_s32(acc.add(12)));
                for j in 0..n {
                    let xv = vld1q_s8(x.add(j * step));
                    let wv = vld1q_s8(w.add(j * step));
                    let (xl, xh) = (vsubl_s8(vget_low_s8(xv), z), vsubl_high_s8(xv, zq));
                    let (wl, wh) = (vmovl_s8(vget_low_s8(wv)), vmovl_high_s8(wv));
                    a0 = vmlal_s16(a0, vget_low_s16(xl), vget_low_s16(wl));
                    a1 = vmlal_high_s16(a1, xl, wl);
                    a2 = vmlal_s16(a2, vget_low_s16(xh), vget_low_s16(wh));
                    a3 = vmlal_high_s16(a3, xh, wh);
                }
                vst1q_s32(acc, a0);
                vst1q_s32(acc.add(4), a1);
                vst1q_s32(acc.add(8), a2);
                vst1q_s32(acc.add(12), a3);
            } else {
                let (mut a0, mut a1) = (vld1q_s32(acc), vld1q_s32(acc.add(4)));
                for j in 0..n {
                    let xl = vsubl_s8(vld1_s8(x.add(j * step)), z);
                    let wl = vmovl_s8(vld1_s8(w.add(j * step)));
                    a0 = vmlal_s16(a0, vget_low_s16(xl), vget_low_s16(wl));
                    a1 = vmlal_high_s16(a1, xl, wl);
                }
                vst1q_s32(acc, a0);
                vst1q_s32(acc.add(4), a1);
            }
        }
    }
}

/// x86_64: the taps of one kernel row for a block of 16 or 8 channels with
/// explicit AVX2, for the same reason as the NEON rows (the compiler's own
/// vectorization of the portable loop widened every product to 32 bits).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    /// `acc[l] += sum_j w[j * step + l] * (x[j * step + l] - zx)` for
    /// `l < L` (16 or 8) and `j < n`, wrapping: `x - zx` (in `[-255, 255]`)
    /// and the weights (in `[-127, 127]`) widened to int16 multiply exactly
    /// in int16 lanes (`|product| <= 32385`), then widen into int32 sums.
    ///
    /// # Safety
    /// `acc` points at `L` values; `x` and `w` at `(n - 1) * step + L`; the
    /// CPU supports AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row<const L: usize>(
        acc: *mut i32,
        x: *const i8,
        w: *const i8,
        n: usize,
        step: usize,
        zx: i16,
    ) {
        // SAFETY: the loads and stores stay inside the caller's contract.
        unsafe {
            if L == 16 {
                let z = _mm256_set1_epi16(zx);
                let mut a0 = _mm256_loadu_si256(acc.cast());
                let mut a1 = _mm256_loadu_si256(acc.add(8).cast());
                for j in 0..n {
                    let xv = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(j * step).cast()));
                    let wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.add(j * step).cast()));
                    let p = _mm256_mullo_epi16(_mm256_sub_epi16(xv, z), wv);
                    let (lo, hi) = (_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
                    a0 = _mm256_add_epi32(a0, _mm256_cvtepi16_epi32(lo));
                    a1 = _mm256_add_epi32(a1, _mm256_cvtepi16_epi32(hi));
                }
                _mm256_storeu_si256(acc.cast(), a0);
                _mm256_storeu_si256(acc.add(8).cast(), a1);
            } else {
                let z = _mm_set1_epi16(zx);
                let mut a0 = _mm256_loadu_si256(acc.cast());
                for j in 0..n {
                    let xv = _mm_cvtepi8_epi16(_mm_loadl_epi64(x.add(j * step).cast()));
                    let wv = _mm_cvtepi8_epi16(_mm_loadl_epi64(w.add(j * step).cast()));
                    let p = _mm_mullo_epi16(_mm_sub_epi16(xv, z), wv);
                    a0 = _mm256_add_epi32(a0, _mm256_cvtepi16_epi32(p));
                }
                _mm256_storeu_si256(acc.cast(), a0);
            }
        }
    }
}

/// x86_64: [`portable`]'s source compiled with AVX2, with explicit AVX2 for
/// the taps of 16 or 8 channels.
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
        unsafe { body::<requant::Avx2, true>(x, s, x_zero_point, w, bias, e, out) }
    }
}

/// x86_64 with AVX-512 VNNI: windows wholly inside the input in the VNNI
/// form (see [`avx512::depthwise`]), the others as the [`avx2`] variant,
/// with the AVX-512 row requantization (`requant::avx512`).
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::super::window::for_each_output_with;
    use super::{DepthwiseShape, DepthwiseTaps, Epilogue, Window, body};
    use crate::kernels::depthwise::inside_range;
    use crate::kernels::int8::Epilogue16;
    use crate::kernels::requant;
    use core::arch::x86_64::*;

    /// The most bytes of packed weights (`c * ceil(k * k / 4) * 4`) the VNNI
    /// form keeps on the stack (MobileNetV3-Small's widest, 576 channels of
    /// 5x5, take 16,128); larger layers take the [`super::avx2`] form.
    const PACKED: usize = 16 * 1024;

    /// Channels per block of the VNNI form (one 256-bit vector of bytes).
    const NB: usize = 32;

    /// The most bytes of a padded copy of the input (`(ih + 2 * pad) *
    /// (iw + 2 * pad) * c`) kept on the stack, so that border pixels take
    /// the VNNI form too: every 5x5 layer of MobileNetV3-Small at 224x224
    /// (14x14 and 7x7 maps, where the border holds half to four fifths of
    /// the pixels) and the 28x28 3x3 one, at most 98,304 bytes. At 128x128
    /// every layer but the first two fits. The 56x56 and 112x112 inputs
    /// (one border pixel in 14 or fewer) stay in place.
    const PADDED: usize = 96 * 1024;

    /// AVX-512 int8 depthwise convolution with the contract of
    /// [`super::portable`].
    ///
    /// Output pixels whose window lies wholly inside the input take the VNNI
    /// form: the window's taps go four at a time, and for each channel the
    /// four input bytes of four taps are interleaved into one 32-bit lane
    /// (two `vpermt2b`, `quads`), against the same four taps' weights
    /// interleaved the same way once per call, so one 512-bit `vpdpbusd`
    /// adds four taps' products for each of 16 channels. Inputs go in with
    /// their sign bit flipped (`x + 128`), so each channel's accumulator
    /// starts at `bias - (128 + zx) * sum w`, which leaves the oracle's
    /// `bias + sum w * (x - zx)` exactly (modulo `2^32`); a window's last
    /// group of four is filled with zero-weight taps. Small inputs with
    /// padding are first copied into a padded image on the stack (the zero
    /// point in the padding), so that every window lies inside it; there,
    /// 3x3 and 5x5 kernels go block by block of 32 channels with the block's
    /// weights and epilogue held in registers for all its pixels (and the
    /// image is stored sign-flipped, once per byte instead of per tap). Pixels at
    /// the border of larger inputs go through the tap-by-tap code of the
    /// other variants.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW, VL, VBMI and VNNI and AVX2
    /// ([`crate::kernels::has_avx512_vnni`]).
    ///
    /// # Panics
    /// If a slice is shorter than `s` says.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2")]
    pub unsafe fn depthwise(
        x: &[i8],
        s: DepthwiseShape,
        x_zero_point: i32,
        w: &[i8],
        bias: &[i32],
        e: Epilogue<'_>,
        out: &mut [i8],
    ) {
        let (c, taps) = (s.c, s.k * s.k);
        let groups = taps.div_ceil(4);
        let blocks = c.div_ceil(NB);
        if c == 0 || blocks * groups * 4 * NB > PACKED || s.stride == 0 || taps == 0 || groups > 7 {
            // SAFETY: the features are this function's contract.
            return unsafe { body::<requant::Avx512, true>(x, s, x_zero_point, w, bias, e, out) };
        }
        s.assert_fits("int8 depthwise", x, w, bias, out);
        // Per block of NB channels: `groups` x 4 vectors of interleaved
        // weights, then the 4 vectors of starting accumulators.
        // Left uninitialized (zeroing 32 KiB per call showed in profiles): every
        // byte read below is written first, the blocks' rows of both.
        let mut wp = core::mem::MaybeUninit::<[u8; PACKED]>::uninit();
        let mut init_rows = core::mem::MaybeUninit::<[[i32; NB]; PACKED / (4 * NB)]>::uninit();
        let wpm = wp.as_mut_ptr().cast::<u8>();
        let mask = |cb: usize| -> __mmask32 {
            let m = (c - cb).min(NB);
            if m == NB { !0 } else { (1u32 << m) - 1 }
        };
        // Input offset of each tap from the window's corner pixel; the
        // padding slots of the last group repeat tap 0 (zero weights). At
        // most 7 groups (5x5 kernels; larger ones took the form above).
        // Small inputs with padding are copied into a padded image (the
        // padding filled with the zero point, see above), so that every
        // window lies inside it and takes the VNNI form.
        let (pih, piw) = (s.ih + 2 * s.pad, s.iw + 2 * s.pad);
        let padded = s.pad > 0
            && pih * piw * c <= PADDED
            && (s.oh - 1) * s.stride + s.k <= pih
            && (s.ow - 1) * s.stride + s.k <= piw;
        let row_w = if padded { piw } else { s.iw };
        let mut rel = [0usize; 4 * 7];
        for (t, r) in rel.iter_mut().enumerate().take(groups * 4) {
            *r = if t < taps {
                (t / s.k * row_w + t % s.k) * c
            } else {
                0
            };
        }
        // SAFETY: every load of w is masked to the channels below c of a tap
        // t < taps; packed weights are written and read at (b * groups + g)
        // * 128 + 128 <= blocks * groups * 128 <= PACKED (checked above), and
        // init has PACKED / 128 >= blocks rows, whose first `blocks` are all
        // written before `init` views them (as are the packed weights of
        // every block and group before any read). Interior windows lie inside
        // the input (for_each_output_with's contract), and with a padded
        // image every window lies inside it (checked where `padded` is
        // set), so every input load, masked to the channels below c, reads
        // pixel (corner + tap) of x or of the image, whose pih * piw * c <=
        // PADDED bytes are all written first; the features are this
        // function's contract.
        unsafe {
            let ones = _mm512_set1_epi8(1);
            for b in 0..blocks {
                let cb = b * NB;
                let k = mask(cb);
                let mut sums = [_mm512_setzero_si512(); 2];
                for g in 0..groups {
                    let tap = |j: usize| {
                        let t = 4 * g + j;
                        if t < taps {
                            _mm256_maskz_loadu_epi8(k, w.as_ptr().add(t * c + cb))
                        } else {
                            _mm256_setzero_si256()
                        }
                    };
                    let q = quads(tap(0), tap(1), tap(2), tap(3));
                    let at = wpm.add((b * groups + g) * 4 * NB);
                    for (j, v) in q.iter().enumerate() {
                        _mm512_storeu_si512(at.add(64 * j).cast(), *v);
                        sums[j] = _mm512_dpbusd_epi32(sums[j], ones, *v);
                    }
                }
                let mut bv = [0i32; NB];
                bv[..(c - cb).min(NB)].copy_from_slice(&bias[cb..cb + (c - cb).min(NB)]);
                let z = _mm512_set1_epi32(128 + x_zero_point);
                let ip = init_rows
                    .as_mut_ptr()
                    .cast::<[i32; NB]>()
                    .add(b)
                    .cast::<__m512i>();
                for (j, sum) in sums.iter().enumerate() {
                    let corr = _mm512_mullo_epi32(*sum, z);
                    let nat = _mm512_loadu_si512(bv.as_ptr().add(16 * j).cast());
                    _mm512_storeu_si512(ip.add(j).cast(), _mm512_sub_epi32(nat, corr));
                }
            }
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
            let taps_mac = DepthwiseTaps::<true> {
                x,
                w,
                iw: s.iw,
                c,
                k: s.k,
                zx: x_zero_point as i16,
            };
            let high = e.high_shift.is_some();
            // 3x3 and 5x5 kernels with the epilogue in registers go block by block (see
            // below); in a padded image their inputs are stored sign-flipped, so the
            // flip is paid once per input byte instead of once per tap that reads it.
            let by_block = high && (groups == 3 || groups == 7);
            let flipped = padded && by_block;
            let mut image = core::mem::MaybeUninit::<[i8; PADDED]>::uninit();
            let xp = if padded {
                // Every byte of the padded image is written before any read:
                // the zero point everywhere, then the input's rows.
                let p = image.as_mut_ptr().cast::<i8>();
                let flip = if flipped { 0x80 } else { 0 };
                core::ptr::write_bytes(p, x_zero_point as i8 as u8 ^ flip, pih * piw * c);
                for y in 0..s.ih {
                    let (src, dst) = (
                        x.as_ptr().add(y * s.iw * c),
                        p.add(((y + s.pad) * piw + s.pad) * c),
                    );
                    if flipped {
                        flip_copy(src, dst, s.iw * c);
                    } else {
                        core::ptr::copy_nonoverlapping(src, dst, s.iw * c);
                    }
                }
                p.cast_const()
            } else {
                x.as_ptr()
            };
            let wpp = wpm.cast_const();
            // The `blocks` rows written above.
            let init: &[[i32; NB]] =
                core::slice::from_raw_parts(init_rows.as_ptr().cast::<[i32; NB]>(), blocks);
            // One output pixel in the VNNI form, its window's corner at
            // `corner` in the image `xp`.
            let pixel = |corner: usize, o: &mut [i8]| {
                let mut acc = [0i32; NB];
                for (b, ib) in init.iter().enumerate().take(blocks) {
                    let cb = b * NB;
                    let k = mask(cb);
                    let ip = ib.as_ptr().cast::<__m512i>();
                    let mut a = [
                        _mm512_loadu_si512(ip.cast()),
                        _mm512_loadu_si512(ip.add(1).cast()),
                    ];
                    for g in 0..groups {
                        let wv = wpp.add((b * groups + g) * 4 * NB).cast::<__m512i>();
                        let w = [
                            _mm512_loadu_si512(wv.cast()),
                            _mm512_loadu_si512(wv.add(1).cast()),
                        ];
                        group_taps::<2>(&mut a, xp.add(corner + cb), &rel[4 * g..4 * g + 4], k, w);
                    }
                    let m = (c - cb).min(NB);
                    if high {
                        // The epilogue in registers (`Epilogue16`), 16
                        // channels at a time.
                        for (h, ah) in a.iter().enumerate() {
                            let c0 = cb + 16 * h;
                            if c0 >= cb + m {
                                break;
                            }
                            let mh = (cb + m - c0).min(16);
                            if let Some(e16) = e.avx512_16(c0, mh) {
                                let k: __mmask16 = if mh == 16 { !0 } else { (1u16 << mh) - 1 };
                                _mm_mask_storeu_epi8(
                                    o[c0..c0 + mh].as_mut_ptr(),
                                    k,
                                    e16.apply(*ah),
                                );
                            }
                        }
                    } else {
                        let ap = acc.as_mut_ptr().cast::<__m512i>();
                        _mm512_storeu_si512(ap.cast(), a[0]);
                        _mm512_storeu_si512(ap.add(1).cast(), a[1]);
                        e.slice(cb..cb + m)
                            .apply_with::<requant::Avx512>(&acc[..m], &mut o[cb..cb + m]);
                    }
                }
            };
            if by_block {
                // 3x3 and 5x5 kernels: each block's weights in registers for all its
                // pixels (loading them per pixel made the loads the bottleneck). In a
                // padded image that is every pixel; in place, the pixels whose window lies
                // inside the input, and the border goes tap by tap below.
                let (ys, xs, pad) = if padded {
                    ((0, s.oh), (0, s.ow), 0)
                } else {
                    (
                        inside_range(s.oh, s.stride, s.pad, s.k, s.ih),
                        inside_range(s.ow, s.stride, s.pad, s.k, s.iw),
                        s.pad,
                    )
                };
                let v = InsideBlocks {
                    xp,
                    wp: wpp,
                    c,
                    row_w,
                    ys,
                    xs,
                    pad,
                    s,
                    e: &e,
                };
                for (b, ib) in init.iter().enumerate().take(blocks) {
                    // A block of at most 16 channels fills one accumulator vector.
                    match (groups, c - b * NB <= 16, flipped) {
                        (3, true, false) => v.block::<3, 1, false>(b, ib, out),
                        (3, false, false) => v.block::<3, 2, false>(b, ib, out),
                        (_, true, false) => v.block::<7, 1, false>(b, ib, out),
                        (_, false, false) => v.block::<7, 2, false>(b, ib, out),
                        (3, true, true) => v.block::<3, 1, true>(b, ib, out),
                        (3, false, true) => v.block::<3, 2, true>(b, ib, out),
                        (_, true, true) => v.block::<7, 1, true>(b, ib, out),
                        (_, false, true) => v.block::<7, 2, true>(b, ib, out),
                    }
                }
                if padded {
                    return;
                }
                // The border pixels; the interior ones were all written above.
                for_each_output_with::<requant::Avx512, _, _>(
                    win,
                    c,
                    &bias[..c],
                    e,
                    &mut out[..s.oh * s.ow * c],
                    &taps_mac,
                    |_, _, _| true,
                );
                return;
            }
            if padded {
                for oy in 0..s.oh {
                    for ox in 0..s.ow {
                        let corner = (oy * s.stride * piw + ox * s.stride) * c;
                        pixel(corner, &mut out[(oy * s.ow + ox) * c..][..c]);
                    }
                }
                return;
            }
            let interior = |oy: usize, ox: usize, o: &mut [i8]| -> bool {
                pixel(
                    ((oy * s.stride - s.pad) * s.iw + ox * s.stride - s.pad) * c,
                    o,
                );
                true
            };
            for_each_output_with::<requant::Avx512, _, _>(
                win,
                c,
                &bias[..c],
                e,
                &mut out[..s.oh * s.ow * c],
                &taps_mac,
                interior,
            );
        }
    }

    /// The image of [`depthwise`]'s VNNI form (the input, or its padded copy), the output
    /// pixels whose windows lie inside it, and what their blocks need.
    struct InsideBlocks<'a> {
        /// The image.
        xp: *const i8,
        /// Packed weights: per block, `G` groups of two vectors of interleaved taps.
        wp: *const u8,
        c: usize,
        /// The image's width.
        row_w: usize,
        /// Output rows and columns `lo..hi` to compute.
        ys: (usize, usize),
        xs: (usize, usize),
        /// Padding left out of the image (0 for the padded copy): window corner `(oy *
        /// stride - pad, ox * stride - pad)`.
        pad: usize,
        s: DepthwiseShape,
        e: &'a Epilogue<'a>,
    }

    impl InsideBlocks<'_> {
        /// Block `b` (channels `32 b..`) of every output pixel in `ys` x `xs`, from
        /// starting accumulators `init`, with the block's `G` groups of weights and its
        /// epilogue in registers; `H` accumulator vectors of 16 channels (1 when the
        /// block has at most 16 channels).
        ///
        /// # Safety
        /// The features of [`depthwise`]; `G` is the layer's group count, the epilogue's
        /// shifts have their high form, the windows of those pixels lie inside the image,
        /// the block has at most `16 H` channels; `out` holds `oh * ow * c` values; the
        /// image is stored sign-flipped (`x ^ 0x80`) if and only if `FLIPPED`.
        #[inline(always)]
        unsafe fn block<const G: usize, const H: usize, const FLIPPED: bool>(
            &self,
            b: usize,
            init: &[i32; NB],
            out: &mut [i8],
        ) {
            let (c, s) = (self.c, self.s);
            let cb = b * NB;
            let m = (c - cb).min(NB);
            debug_assert!(m <= 16 * H);
            let k: __mmask32 = if m == NB { !0 } else { (1u32 << m) - 1 };
            // SAFETY: the caller's contract; input loads are masked to the block's m
            // channels of a pixel of the image, stores to its m outputs of a pixel.
            unsafe {
                let wv = self.wp.add(b * G * 4 * NB).cast::<__m512i>();
                let wr: [[__m512i; 2]; G] = core::array::from_fn(|g| {
                    [
                        _mm512_loadu_si512(wv.add(2 * g).cast()),
                        _mm512_loadu_si512(wv.add(2 * g + 1).cast()),
                    ]
                });
                let ip = init.as_ptr().cast::<__m512i>();
                let start = [
                    _mm512_loadu_si512(ip.cast()),
                    _mm512_loadu_si512(ip.add(1).cast()),
                ];
                let e16: [Option<(Epilogue16, __mmask16)>; 2] = core::array::from_fn(|h| {
                    let c0 = cb + 16 * h;
                    if h >= H || c0 >= cb + m {
                        return None;
                    }
                    let mh = (cb + m - c0).min(16);
                    let km: __mmask16 = if mh == 16 { !0 } else { (1u16 << mh) - 1 };
                    self.e.avx512_16(c0, mh).map(|e| (e, km))
                });
                // Tap t of a window is kernel row t / K and column t % K: one pointer per
                // kernel row, and columns at multiples of c from it (the offsets taken from
                // a table of all 4 G taps instead were recomputed into 4 G pointers, spilled
                // to the stack, for every pixel).
                let kk = if G == 3 { 3 } else { 5 };
                debug_assert_eq!(kk, s.k);
                let line = self.row_w * c;
                for oy in self.ys.0..self.ys.1 {
                    let row = (oy * s.stride - self.pad) * self.row_w;
                    for ox in self.xs.0..self.xs.1 {
                        let corner = self.xp.add((row + ox * s.stride - self.pad) * c + cb);
                        let rows: [*const i8; 5] =
                            core::array::from_fn(|ky| corner.wrapping_add(ky * line));
                        let mut a = start;
                        for (g, w) in wr.iter().enumerate() {
                            let taps: [Option<*const i8>; 4] = core::array::from_fn(|j| {
                                let t = 4 * g + j;
                                (t < kk * kk).then(|| rows[t / kk].wrapping_add(t % kk * c))
                            });
                            group_taps_at::<H, FLIPPED>(&mut a, taps, k, *w);
                        }
                        let o = out.as_mut_ptr().add((oy * s.ow + ox) * c + cb);
                        for (h, eh) in e16.iter().enumerate().take(H) {
                            if let Some((e16, km)) = eh {
                                _mm_mask_storeu_epi8(o.add(16 * h), *km, e16.apply(a[h]));
                            }
                        }
                    }
                }
            }
        }
    }

    /// One group of four taps of a window into the accumulators `a` (32 channels, or the
    /// first 16 when `H` is 1): the taps' input bytes at `p + rel[j]` (channels masked by
    /// `k`), interleaved ([`quads`]) and sign-flipped, against the group's packed weights
    /// `w` (two vectors, the first `H` used).
    ///
    /// # Safety
    /// The features of [`depthwise`]; 32 bytes at each `p + rel[j]` may be read under `k`.
    #[inline(always)]
    unsafe fn group_taps<const H: usize>(
        a: &mut [__m512i; 2],
        p: *const i8,
        rel: &[usize],
        k: __mmask32,
        w: [__m512i; 2],
    ) {
        // SAFETY: the caller's contract.
        unsafe { group_taps_at::<H, false>(a, core::array::from_fn(|j| Some(p.add(rel[j]))), k, w) }
    }

    /// [`group_taps`] with each tap's input bytes at its own pointer, `None` for the zero
    /// taps that fill a window's last group (their weights are zero, so they take a zero
    /// vector instead of a load); with `FLIPPED` the bytes are already stored sign-flipped.
    ///
    /// # Safety
    /// The features of [`depthwise`]; 32 bytes at each pointer may be read under `k`.
    #[inline(always)]
    unsafe fn group_taps_at<const H: usize, const FLIPPED: bool>(
        a: &mut [__m512i; 2],
        taps: [Option<*const i8>; 4],
        k: __mmask32,
        w: [__m512i; 2],
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            let ld = |j: usize| match taps[j] {
                Some(p) => _mm256_maskz_loadu_epi8(k, p),
                None => _mm256_setzero_si256(),
            };
            let q = quads(ld(0), ld(1), ld(2), ld(3));
            let flip = _mm512_set1_epi8(i8::MIN);
            for j in 0..H {
                let u = if FLIPPED {
                    q[j]
                } else {
                    _mm512_xor_si512(q[j], flip)
                };
                a[j] = _mm512_dpbusd_epi32(a[j], u, w[j]);
            }
        }
    }

    /// Copies `n` bytes from `src` to `dst` with each sign bit flipped (`x ^ 0x80`: the
    /// unsigned form `vpdpbusd` takes), 64 at a time.
    ///
    /// # Safety
    /// The features of [`depthwise`]; `n` bytes readable at `src`, writable at `dst`.
    #[inline(always)]
    unsafe fn flip_copy(src: *const i8, dst: *mut i8, n: usize) {
        // SAFETY: the caller's contract; the tail's load and store are masked to the
        // bytes below n.
        unsafe {
            let flip = _mm512_set1_epi8(i8::MIN);
            let mut i = 0;
            while i + 64 <= n {
                let v = _mm512_loadu_si512(src.add(i).cast());
                _mm512_storeu_si512(dst.add(i).cast(), _mm512_xor_si512(v, flip));
                i += 64;
            }
            if i < n {
                let k: __mmask64 = (1u64 << (n - i)) - 1;
                let v = _mm512_maskz_loadu_epi8(k, src.add(i));
                _mm512_mask_storeu_epi8(dst.add(i), k, _mm512_xor_si512(v, flip));
            }
        }
    }

    /// Interleaves the bytes of four vectors (four taps, 32 channels) into
    /// 32-bit lanes `[v0[ch], v1[ch], v2[ch], v3[ch]]`, channels 0-15 in the
    /// first vector and 16-31 in the second, in order: two `vpermt2b` over
    /// the pairs `(v0, v1)` and `(v2, v3)`, where unpacking took eight
    /// shuffles and left the channels permuted.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    fn quads(v0: __m256i, v1: __m256i, v2: __m256i, v3: __m256i) -> [__m512i; 2] {
        // Byte 4 * ch + j of output h takes v_j[16 * h + ch]: index j * 32 + 16 * h + ch
        // of the 128 bytes (v0, v1, v2, v3).
        const IDX: [[u8; 64]; 2] = {
            let mut t = [[0u8; 64]; 2];
            let mut h = 0;
            while h < 2 {
                let mut i = 0;
                while i < 64 {
                    t[h][i] = ((i % 4) * 32 + 16 * h + i / 4) as u8;
                    i += 1;
                }
                h += 1;
            }
            t
        };
        let a = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v0), v1);
        let b = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v2), v3);
        // SAFETY: 64-byte loads of the two index tables.
        let (i0, i1) = unsafe {
            (
                _mm512_loadu_si512(IDX[0].as_ptr().cast()),
                _mm512_loadu_si512(IDX[1].as_ptr().cast()),
            )
        };
        [
            _mm512_permutex2var_epi8(a, i0, b),
            _mm512_permutex2var_epi8(a, i1, b),
        ]
    }
}

/// The variant this target uses: [`avx512`] when the CPU has AVX-512
/// ([`crate::kernels::has_avx512_vnni`]), else [`avx2`] when it has AVX2
/// (with FMA, as [`crate::kernels::has_avx2_fma`] reports for every AVX2
/// kernel), else [`portable`].
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
    if crate::kernels::has_avx512_vnni() {
        // SAFETY: the CPU supports AVX-512 (checked just above).
        unsafe { avx512::depthwise(x, s, x_zero_point, w, bias, e, out) }
    } else if crate::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { avx2::depthwise(x, s, x_zero_point, w, bias, e, out) }
    } else {
        portable(x, s, x_zero_point, w, bias, e, out)
    }
}
