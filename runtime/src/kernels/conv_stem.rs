//! Dense kxk convolution from the planar (CHW) model input to HWC, used only
//! for the first layer (3 input channels).

use super::depthwise::tap_range;
use super::{Activation, ConvShape};

/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(target_arch = "aarch64")]
pub use neon::conv_stem;
/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
pub use portable as conv_stem;

/// Portable stem convolution.
///
/// `input` is `[cin][ih][iw]` (CHW), `w` is `[kh][kw][cin][cout]`, `bias` is
/// `[cout]`, `out` is `[oh][ow][cout]` (HWC); `stride` and the symmetric zero
/// padding `pad` apply to both axes.
#[inline]
pub fn portable(
    input: &[f32],
    s: ConvShape,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) {
    let ConvShape {
        ih,
        iw,
        cin,
        cout,
        kh,
        kw,
        stride,
        pad,
        oh,
        ow,
    } = s;
    debug_assert_eq!(input.len(), cin * ih * iw);
    debug_assert_eq!(w.len(), kh * kw * cin * cout);
    debug_assert_eq!(bias.len(), cout);
    debug_assert_eq!(out.len(), oh * ow * cout);
    let plane = ih * iw;
    for oy in 0..oh {
        let (ky0, ky1) = tap_range(oy, stride, pad, kh, ih);
        for ox in 0..ow {
            let (kx0, kx1) = tap_range(ox, stride, pad, kw, iw);
            let o = (oy * ow + ox) * cout;
            let dst = &mut out[o..o + cout];
            dst.copy_from_slice(bias);
            for ky in ky0..ky1 {
                let iy = oy * stride + ky - pad;
                for kx in kx0..kx1 {
                    let ix = ox * stride + kx - pad;
                    for ci in 0..cin {
                        let a = input[ci * plane + iy * iw + ix];
                        let t = ((ky * kw + kx) * cin + ci) * cout;
                        for (d, &wv) in dst.iter_mut().zip(&w[t..t + cout]) {
                            *d += a * wv;
                        }
                    }
                }
            }
            act.apply_slice(dst);
        }
    }
}

/// NEON stem convolution for aarch64.
///
/// Interior pixels go four at a time with 16 output channels (16 vector
/// accumulators): each tap loads four weight vectors once for the four
/// pixels and four input scalars, then issues 16 lane FMAs. Border pixels and
/// channel tails use a per-pixel path that skips padding taps.
#[cfg(target_arch = "aarch64")]
pub mod neon {
    use super::super::depthwise::{inside_range, tap_range};
    use super::super::neon_util::{activate, ld1x4_post_by, ldp_fresh};
    use super::super::{Activation, ConvShape};
    use core::arch::aarch64::*;

    /// Shape of the stem layer.
    struct Geom {
        ih: usize,
        iw: usize,
        cin: usize,
        cout: usize,
        kh: usize,
        kw: usize,
        stride: usize,
        pad: usize,
        ow: usize,
        act: Activation,
    }

    /// NEON stem convolution with the contract of [`super::portable`].
    ///
    /// # Panics
    /// If a slice is shorter than the shape says.
    // Inlined into its generated layer like the other NEON kernels, so the shape's fields are
    // constants there (`#[inline]` left it a call with the shape in memory: 10 k more
    // aarch64 instructions per image on MobileNetV3-Small).
    #[inline(always)]
    pub fn conv_stem(
        input: &[f32],
        s: ConvShape,
        w: &[f32],
        bias: &[f32],
        act: Activation,
        out: &mut [f32],
    ) {
        let ConvShape {
            ih,
            iw,
            cin,
            cout,
            kh,
            kw,
            stride,
            pad,
            oh,
            ow,
        } = s;
        s.assert_fits("conv_stem", input, w, bias, out);
        let g = Geom {
            ih,
            iw,
            cin,
            cout,
            kh,
            kw,
            stride,
            pad,
            ow,
            act,
        };
        let (ox_lo, ox_hi) = inside_range(ow, stride, pad, kw, iw);
        let c16 = cout - cout % 16;
        // MobileNet's stem (3x3, stride 2, pad 1, RGB) has the `rgb3x3s2` groups, which also
        // take the first output row and column (their padding taps are left out).
        let rgb3x3 = kh == 3 && kw == 3 && cin == 3 && stride == 2 && pad == 1;
        for oy in 0..oh {
            let (ky0, ky1) = tap_range(oy, stride, pad, kh, ih);
            let full = ky0 == 0 && ky1 == kh;
            let top = rgb3x3 && oy == 0 && ky0 == 1 && ky1 == 3;
            if !full && !top {
                for ox in 0..ow {
                    pixel(input, w, bias, &g, oy, ox, 0, out);
                }
                continue;
            }
            // Groups of four interior pixels; the last group is moved left to
            // end at ox_hi (recomputing a few pixels with identical results)
            // instead of leaving up to three pixels to the slow path.
            macro_rules! group {
                ($ox:expr, $top:expr, $left:expr) => {{
                    let ox = $ox;
                    let op = out.as_mut_ptr();
                    // One argument list for both group forms, per block of 16 channels.
                    let args = |cb: usize| -> GroupArgs<'_> {
                        (
                            input.as_ptr(),
                            w.as_ptr(),
                            bias.as_ptr(),
                            &g,
                            oy,
                            ox,
                            cb,
                            op,
                        )
                    };
                    let mut cb = 0;
                    // The unrolled kernel reads 10 values past each group's first tap
                    // column, so the group must end inside the input slice.
                    if rgb3x3 && 2 * ih * iw + (oy * 2 + 1) * iw + ox * 2 + 10 <= input.len() {
                        while cb < c16 {
                            // SAFETY: rows oy * 2 - 1..oy * 2 + 2 are inside, or the first
                            // is padding and `top` leaves it out; columns ox * 2 - 1.. are
                            // inside, or column -1 is padding and `left` leaves it out; the
                            // group's reads end inside input (the check above); cb + 16 <=
                            // cout bounds weights, bias and the four output pixels
                            // (ox + 4 <= ow).
                            unsafe {
                                let args = args(cb);
                                macro_rules! edges {
                                    ($a:literal) => {
                                        match ($top, $left) {
                                            (false, false) => rgb3x3s2::<$a, false, false>(args),
                                            (false, true) => rgb3x3s2::<$a, false, true>(args),
                                            (true, false) => rgb3x3s2::<$a, true, false>(args),
                                            (true, true) => rgb3x3s2::<$a, true, true>(args),
                                        }
                                    };
                                }
                                match act {
                                    Activation::None => edges!(0),
                                    Activation::Relu => edges!(1),
                                    Activation::Hardswish => edges!(2),
                                    Activation::ScaledHardswish => edges!(3),
                                }
                            }
                            cb += 16;
                        }
                    }
                    if $top || $left {
                        // Edge groups only take the rgb3x3s2 form; anything it left goes
                        // pixel by pixel.
                        if cb < cout {
                            for px in ox..ox + 4 {
                                pixel(input, w, bias, &g, oy, px, cb, out);
                            }
                        }
                    } else {
                        while cb < c16 {
                            // SAFETY: rows oy * stride - pad + ky (< kh) are inside
                            // (full tap range) and columns of pixels ox..ox + 4 are
                            // inside because ox + 4 <= ox_hi; cb + 16 <= cout keeps
                            // weight, bias and output reads in bounds.
                            unsafe { four_pixels(args(cb)) };
                            cb += 16;
                        }
                        if c16 < cout {
                            for px in ox..ox + 4 {
                                pixel(input, w, bias, &g, oy, px, c16, out);
                            }
                        }
                    }
                }};
            }
            // The first output column (its window starts in the padding) joins the first
            // group when the rgb3x3s2 form applies.
            let left = rgb3x3 && ox_lo == 1 && ox_hi >= 4;
            let start = if left {
                group!(0, top, true);
                4
            } else {
                for ox in 0..ox_lo {
                    pixel(input, w, bias, &g, oy, ox, 0, out);
                }
                ox_lo
            };
            for ox in ox_hi..ow {
                pixel(input, w, bias, &g, oy, ox, 0, out);
            }
            let mut ox = start;
            while ox + 4 <= ox_hi {
                group!(ox, top, false);
                ox += 4;
            }
            if ox < ox_hi && ox_hi - start >= 4 {
                group!(ox_hi - 4, top, false);
                ox = ox_hi;
            }
            while ox < ox_hi {
                pixel(input, w, bias, &g, oy, ox, 0, out);
                ox += 1;
            }
        }
    }

    /// Arguments of [`rgb3x3s2`] and [`four_pixels`]: input, weights, bias, shape, oy, ox,
    /// cb, out.
    type GroupArgs<'a> = (
        *const f32,
        *const f32,
        *const f32,
        &'a Geom,
        usize,
        usize,
        usize,
        *mut f32,
    );

    /// Pixels `ox..ox + 4` of row `oy`, channels `cb..cb + 16`, for a 3x3
    /// stride-2 pad-1 stem on 3 planar channels, activation `A` (0 none,
    /// 1 ReLU, 2 hardswish, 3 scaled hardswish). Each input row is read with two `ld2`: lanes
    /// 0, 2, 4, 6 and 1, 3, 5, 7 are the kx = 0 and kx = 1 taps of the four
    /// pixels, and the load two values further on gives kx = 2; each tap's
    /// 16 weights are one `ld1` of four registers; 16 accumulators.
    ///
    /// # Safety
    /// All taps of the four pixels are inside the input, the reads end at
    /// most 11 values after the first tap of the last row of the last
    /// channel, inside the input slice; `cb + 16 <= cout`.
    #[inline(always)]
    unsafe fn rgb3x3s2<const A: u8, const TOP: bool, const LEFT: bool>(args: GroupArgs<'_>) {
        let (input, w, bias, g, oy, ox, cb, out) = args;
        let plane = g.ih * g.iw;
        let act = match A {
            0 => Activation::None,
            1 => Activation::Relu,
            2 => Activation::Hardswish,
            _ => Activation::ScaledHardswish,
        };
        // SAFETY: see the function contract.
        unsafe {
            // Each pixel loads its biases with two `ldp`, where copying one loaded set takes
            // four `mov`.
            let mut acc: [[float32x4_t; 4]; 4] = core::array::from_fn(|_| {
                let [b0, b1] = ldp_fresh(bias.add(cb));
                let [b2, b3] = ldp_fresh(bias.add(cb + 8));
                [b0, b1, b2, b3]
            });
            // Taps in the weights' own order (ky, kx, ci), so one `ld1` per tap reads its 16
            // weights and steps to the next tap; TOP starts at kernel row 1.
            let mut wp = w.add(usize::from(TOP) * 9 * g.cout + cb);
            for ky in usize::from(TOP)..3 {
                if !LEFT {
                    // Interior groups: the kernel row is one `asm!` block ([`rgb_row`]).
                    let r = input.add((oy * 2 + ky - 1) * g.iw + ox * 2 - 1);
                    rgb_row(&mut acc, r, plane, &mut wp, g.cout);
                    continue;
                }
                // Pixel 0's kx = 0 tap is the padding column: one `ld2` from column 0 gives
                // the odd columns 1, 3, 5, 7 (kx = 2) and the even ones (kx = 1); kx = 0 is
                // 0, 1, 3, 5 shifted in from a zero vector.
                let cols: [[float32x4_t; 3]; 3] = core::array::from_fn(|ci| {
                    let e = vld2q_f32(input.add(ci * plane + (oy * 2 + ky - 1) * g.iw));
                    [vextq_f32::<3>(vdupq_n_f32(0.0), e.1), e.0, e.1]
                });
                for kx in 0..3 {
                    for col in &cols {
                        let wt = ld1x4_post_by(&mut wp, g.cout);
                        let col = col[kx];
                        macro_rules! px {
                            ($l:literal) => {
                                for j in 0..4 {
                                    acc[$l][j] = vfmaq_laneq_f32::<$l>(acc[$l][j], wt[j], col);
                                }
                            };
                        }
                        px!(0);
                        px!(1);
                        px!(2);
                        px!(3);
                    }
                }
            }
            for (px, accp) in acc.iter().enumerate() {
                let o = out.add((oy * g.ow + ox + px) * g.cout + cb);
                for (j, av) in accp.iter().enumerate() {
                    vst1q_f32(o.add(4 * j), activate(act, *av));
                }
            }
        }
    }

    /// Four `fmla` of pixel `$px` (lane `$px` of input register `v$col`) by the tap's 16
    /// weights (`v28`..`v31`) into its accumulators `{a$px0}`..`{a$px3}`.
    macro_rules! rgb_pixel {
        ($px:literal, $col:literal) => {
            concat!(
                "fmla {a",
                $px,
                "0:v}.4s, v28.4s, v",
                $col,
                ".s[",
                $px,
                "]\n",
                "fmla {a",
                $px,
                "1:v}.4s, v29.4s, v",
                $col,
                ".s[",
                $px,
                "]\n",
                "fmla {a",
                $px,
                "2:v}.4s, v30.4s, v",
                $col,
                ".s[",
                $px,
                "]\n",
                "fmla {a",
                $px,
                "3:v}.4s, v31.4s, v",
                $col,
                ".s[",
                $px,
                "]\n",
            )
        };
    }

    /// One tap of [`rgb_row`]: its 16 weights (one `ld1`, stepping to the next tap) times
    /// the four pixels' inputs in register `v$col`.
    macro_rules! rgb_tap {
        ($col:literal) => {
            concat!(
                "ld1 {{v28.4s, v29.4s, v30.4s, v31.4s}}, [{wp}], {ws}\n",
                rgb_pixel!(0, $col),
                rgb_pixel!(1, $col),
                rgb_pixel!(2, $col),
                rgb_pixel!(3, $col),
            )
        };
    }

    /// One kernel row of [`rgb3x3s2`] for four pixels none of whose taps is padding: per
    /// channel two `ld2` (lanes 0, 2, 4, 6 and 1, 3, 5, 7 of the row from column `2 ox - 1`
    /// are the kx = 0 and kx = 1 taps, the load two values on gives kx = 2), then the 9
    /// taps in the weights' order (kx, ci), 16 `fmla` each.
    ///
    /// One `asm!` block: the six `ld2` post-increment one pointer (8 bytes, then on to the
    /// next channel plane), where LLVM computed each address with an `add` (`ld2` has no
    /// offset form) and kept a loop counter over the three rows.
    ///
    /// # Safety
    /// `r` points at the row's first tap column in channel 0, and 8 values from it and from
    /// `r + 2` are readable in each of the three planes `plane` apart; `*wp` points at the
    /// row's 9 taps of 16 weights, `cout` apart, and is advanced past them.
    #[inline(always)]
    unsafe fn rgb_row(
        acc: &mut [[float32x4_t; 4]; 4],
        r: *const f32,
        plane: usize,
        wp: &mut *const f32,
        cout: usize,
    ) {
        // SAFETY: the loads stay inside what the contract makes readable; the asm writes no
        // memory and only the declared registers.
        unsafe {
            core::arch::asm!(
                "ld2 {{v16.4s, v17.4s}}, [{r}], {s8}",
                "ld2 {{v18.4s, v19.4s}}, [{r}], {sp}",
                "ld2 {{v20.4s, v21.4s}}, [{r}], {s8}",
                "ld2 {{v22.4s, v23.4s}}, [{r}], {sp}",
                "ld2 {{v24.4s, v25.4s}}, [{r}], {s8}",
                "ld2 {{v26.4s, v27.4s}}, [{r}], {sp}",
                rgb_tap!(16),
                rgb_tap!(20),
                rgb_tap!(24),
                rgb_tap!(17),
                rgb_tap!(21),
                rgb_tap!(25),
                rgb_tap!(18),
                rgb_tap!(22),
                rgb_tap!(26),
                a00 = inout(vreg) acc[0][0], a01 = inout(vreg) acc[0][1],
                a02 = inout(vreg) acc[0][2], a03 = inout(vreg) acc[0][3],
                a10 = inout(vreg) acc[1][0], a11 = inout(vreg) acc[1][1],
                a12 = inout(vreg) acc[1][2], a13 = inout(vreg) acc[1][3],
                a20 = inout(vreg) acc[2][0], a21 = inout(vreg) acc[2][1],
                a22 = inout(vreg) acc[2][2], a23 = inout(vreg) acc[2][3],
                a30 = inout(vreg) acc[3][0], a31 = inout(vreg) acc[3][1],
                a32 = inout(vreg) acc[3][2], a33 = inout(vreg) acc[3][3],
                r = inout(reg) r => _,
                s8 = in(reg) 8usize,
                sp = in(reg) plane * 4 - 8,
                wp = inout(reg) *wp,
                ws = in(reg) cout * 4,
                out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                out("v20") _, out("v21") _, out("v22") _, out("v23") _,
                out("v24") _, out("v25") _, out("v26") _, out("v27") _,
                out("v28") _, out("v29") _, out("v30") _, out("v31") _,
                options(readonly, nostack, preserves_flags),
            );
        }
    }

    /// Pixels `ox..ox + 4` of row `oy`, channels `cb..cb + 16`, all taps inside.
    ///
    /// # Safety
    /// See the call site: every tap of these pixels is inside the input and
    /// `cb + 16 <= cout`.
    #[inline(always)]
    unsafe fn four_pixels(args: GroupArgs<'_>) {
        let (input, w, bias, g, oy, ox, cb, out) = args;
        let s = g.stride;
        let plane = g.ih * g.iw;
        // SAFETY: the caller's contract bounds every offset below.
        unsafe {
            let b = [
                vld1q_f32(bias.add(cb)),
                vld1q_f32(bias.add(cb + 4)),
                vld1q_f32(bias.add(cb + 8)),
                vld1q_f32(bias.add(cb + 12)),
            ];
            let mut acc = [b; 4];
            for ky in 0..g.kh {
                let iy = oy * s + ky - g.pad;
                for kx in 0..g.kw {
                    let ix0 = ox * s + kx - g.pad;
                    for ci in 0..g.cin {
                        let wt = w.add(((ky * g.kw + kx) * g.cin + ci) * g.cout + cb);
                        let wv = [
                            vld1q_f32(wt),
                            vld1q_f32(wt.add(4)),
                            vld1q_f32(wt.add(8)),
                            vld1q_f32(wt.add(12)),
                        ];
                        let src = input.add(ci * plane + iy * g.iw + ix0);
                        for (px, accp) in acc.iter_mut().enumerate() {
                            let a = *src.add(px * s);
                            for (av, wq) in accp.iter_mut().zip(wv) {
                                *av = vfmaq_n_f32(*av, wq, a);
                            }
                        }
                    }
                }
            }
            for (px, accp) in acc.iter().enumerate() {
                let o = out.add((oy * g.ow + ox + px) * g.cout + cb);
                for (j, av) in accp.iter().enumerate() {
                    vst1q_f32(o.add(4 * j), activate(g.act, *av));
                }
            }
        }
    }

    /// One output pixel, channels `c0..cout`, skipping padding taps.
    ///
    /// The accumulators live in the output pixel itself: per valid tap one
    /// input scalar is broadcast against the tap's weight row, so the tap
    /// index arithmetic is paid once per tap rather than per channel block.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn pixel(
        input: &[f32],
        w: &[f32],
        bias: &[f32],
        g: &Geom,
        oy: usize,
        ox: usize,
        c0: usize,
        out: &mut [f32],
    ) {
        let (ky0, ky1) = tap_range(oy, g.stride, g.pad, g.kh, g.ih);
        let (kx0, kx1) = tap_range(ox, g.stride, g.pad, g.kw, g.iw);
        let plane = g.ih * g.iw;
        let o = (oy * g.ow + ox) * g.cout;
        let c4 = c0 + (g.cout - c0) / 4 * 4;
        out[o + c0..o + c4].copy_from_slice(&bias[c0..c4]);
        for ky in ky0..ky1 {
            let iy = oy * g.stride + ky - g.pad;
            for kx in kx0..kx1 {
                let ix = ox * g.stride + kx - g.pad;
                for ci in 0..g.cin {
                    let a = input[ci * plane + iy * g.iw + ix];
                    let t = ((ky * g.kw + kx) * g.cin + ci) * g.cout;
                    let mut cb = c0;
                    while cb < c4 {
                        // SAFETY: cb + 4 <= c4 <= cout bounds the weight row
                        // (t + cout <= kh * kw * cin * cout) and the output
                        // pixel (o + cout <= oh * ow * cout), both asserted.
                        unsafe {
                            let d = out.as_mut_ptr().add(o + cb);
                            vst1q_f32(
                                d,
                                vfmaq_n_f32(vld1q_f32(d), vld1q_f32(w.as_ptr().add(t + cb)), a),
                            );
                        }
                        cb += 4;
                    }
                }
            }
        }
        let mut cb = c0;
        while cb < c4 {
            // SAFETY: as above.
            unsafe {
                let d = out.as_mut_ptr().add(o + cb);
                vst1q_f32(d, activate(g.act, vld1q_f32(d)));
            }
            cb += 4;
        }
        let cb = c4;
        for ch in cb..g.cout {
            let mut acc = bias[ch];
            for ky in ky0..ky1 {
                let iy = oy * g.stride + ky - g.pad;
                for kx in kx0..kx1 {
                    let ix = ox * g.stride + kx - g.pad;
                    for ci in 0..g.cin {
                        acc += input[ci * plane + iy * g.iw + ix]
                            * w[((ky * g.kw + kx) * g.cin + ci) * g.cout + ch];
                    }
                }
            }
            out[o + ch] = g.act.apply(acc);
        }
    }
}

/// AVX2 + FMA stem for x86_64 hosts: per output pixel, up to 32 output
/// channels (4 `__m256`) accumulate in registers while each valid tap's
/// input value is broadcast once.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::super::avx2_util::activate;
    use super::super::depthwise::{inside_range, tap_range};
    use super::super::{Activation, ConvShape};
    use core::arch::x86_64::*;

    /// The most taps (`kh * kw * cin`) of the flat loop for interior
    /// windows; larger stems take the nested loops everywhere.
    const FLAT_TAPS: usize = 64;

    /// AVX2 stem convolution with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`super::super::has_avx2_fma`]).
    ///
    /// # Panics
    /// If a slice is shorter than the shape says.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn conv_stem(
        input: &[f32],
        s: ConvShape,
        w: &[f32],
        bias: &[f32],
        act: Activation,
        out: &mut [f32],
    ) {
        let ConvShape {
            ih,
            iw,
            cin,
            cout,
            kh,
            kw,
            stride,
            pad,
            oh,
            ow,
        } = s;
        s.assert_fits("conv_stem", input, w, bias, out);
        let plane = ih * iw;
        let c32 = cout - cout % 32;
        let c8 = cout - cout % 8;
        // Windows with every tap inside the input take one flat loop over
        // the taps with their input offsets from the window's corner
        // computed here once (the MobileNetV3 stem's 27), instead of the
        // nested tap loops below with their per-tap index arithmetic.
        let taps = kh * kw * cin;
        let mut offs = [0usize; FLAT_TAPS];
        let flat = taps <= FLAT_TAPS;
        if flat {
            for ky in 0..kh {
                for kx in 0..kw {
                    for ci in 0..cin {
                        offs[(ky * kw + kx) * cin + ci] = ci * plane + ky * iw + kx;
                    }
                }
            }
        }
        // Output columns whose whole window lies inside the input: x_lo..x_hi.
        let (x_lo, x_hi) = inside_range(ow, stride, pad, kw, iw);
        let c16 = cout - cout % 16;
        for oy in 0..oh {
            let (ky0, ky1) = tap_range(oy, stride, pad, kh, ih);
            let mut ox = 0;
            while ox < ow {
                let (kx0, kx1) = tap_range(ox, stride, pad, kw, iw);
                let o = (oy * ow + ox) * cout;
                let inside_rows = ky0 == 0 && ky1 == kh;
                if flat && inside_rows && ox >= x_lo && ox + 4 <= x_hi && c16 > 0 {
                    // Four neighbouring pixels at once: their 8 accumulators per 16
                    // channels are independent (per pixel, two chains of 27 dependent
                    // FMAs would wait out the FMA latency at each tap), and each
                    // weight load serves four pixels.
                    // SAFETY: the four windows are inside the input (x_lo..x_hi, every
                    // kernel row), so corner + r * stride + offs[t] < cin * plane;
                    // c16 <= cout bounds weights, bias and the four output pixels.
                    unsafe {
                        let corner = (oy * stride - pad) * iw + ox * stride - pad;
                        for cb in (0..c16).step_by(16) {
                            four_pixels(
                                input.as_ptr().add(corner),
                                stride,
                                &offs[..taps],
                                w.as_ptr().add(cb),
                                bias.as_ptr().add(cb),
                                cout,
                                act,
                                out.as_mut_ptr().add(o + cb),
                            );
                        }
                        if c16 < cout {
                            for r in 0..4 {
                                flat_pixel(
                                    input.as_ptr().add(corner + r * stride),
                                    &offs[..taps],
                                    w,
                                    &bias[..cout],
                                    act,
                                    out.as_mut_ptr().add(o + r * cout),
                                    c16,
                                );
                            }
                        }
                    }
                    ox += 4;
                    continue;
                }
                'pixel: {
                    if flat && inside_rows && kx0 == 0 && kx1 == kw {
                        // SAFETY: every tap is inside (tap_range returned the whole
                        // kernel), so corner + offs[t] < cin * plane; the output
                        // pixel's cout channels are inside the asserted length.
                        unsafe {
                            let corner = (oy * stride - pad) * iw + ox * stride - pad;
                            flat_pixel(
                                input.as_ptr().add(corner),
                                &offs[..taps],
                                w,
                                &bias[..cout],
                                act,
                                out.as_mut_ptr().add(o),
                                0,
                            );
                        }
                        break 'pixel;
                    }
                    // The blocks of 32 and of 8 channels stay written out: one closure over a
                    // slice of accumulators for both made the whole 224x224 network 8% slower
                    // (1.25 -> 1.35 ms, `examples/latency`), though few pixels come here.
                    // SAFETY (both blocks): tap_range keeps input reads inside;
                    // cb + 32 (or + 8) <= cout bounds weights, bias and the
                    // output pixel; lengths asserted above.
                    let mut cb = 0;
                    while cb < c32 {
                        unsafe {
                            let bp = bias.as_ptr().add(cb);
                            let mut acc = [
                                _mm256_loadu_ps(bp),
                                _mm256_loadu_ps(bp.add(8)),
                                _mm256_loadu_ps(bp.add(16)),
                                _mm256_loadu_ps(bp.add(24)),
                            ];
                            for ky in ky0..ky1 {
                                let iy = oy * stride + ky - pad;
                                for kx in kx0..kx1 {
                                    let ix = ox * stride + kx - pad;
                                    for ci in 0..cin {
                                        let a = _mm256_set1_ps(
                                            *input.as_ptr().add(ci * plane + iy * iw + ix),
                                        );
                                        let wt =
                                            w.as_ptr().add(((ky * kw + kx) * cin + ci) * cout + cb);
                                        for (j, v) in acc.iter_mut().enumerate() {
                                            *v = _mm256_fmadd_ps(
                                                a,
                                                _mm256_loadu_ps(wt.add(8 * j)),
                                                *v,
                                            );
                                        }
                                    }
                                }
                            }
                            for (j, v) in acc.iter().enumerate() {
                                _mm256_storeu_ps(
                                    out.as_mut_ptr().add(o + cb + 8 * j),
                                    activate(act, *v),
                                );
                            }
                        }
                        cb += 32;
                    }
                    while cb < c8 {
                        unsafe {
                            let mut acc = _mm256_loadu_ps(bias.as_ptr().add(cb));
                            for ky in ky0..ky1 {
                                let iy = oy * stride + ky - pad;
                                for kx in kx0..kx1 {
                                    let ix = ox * stride + kx - pad;
                                    for ci in 0..cin {
                                        let a = _mm256_set1_ps(
                                            *input.as_ptr().add(ci * plane + iy * iw + ix),
                                        );
                                        let wt =
                                            w.as_ptr().add(((ky * kw + kx) * cin + ci) * cout + cb);
                                        acc = _mm256_fmadd_ps(a, _mm256_loadu_ps(wt), acc);
                                    }
                                }
                            }
                            _mm256_storeu_ps(out.as_mut_ptr().add(o + cb), activate(act, acc));
                        }
                        cb += 8;
                    }
                    for ch in c8..cout {
                        let mut acc = bias[ch];
                        for ky in ky0..ky1 {
                            let iy = oy * stride + ky - pad;
                            for kx in kx0..kx1 {
                                let ix = ox * stride + kx - pad;
                                for ci in 0..cin {
                                    acc += input[ci * plane + iy * iw + ix]
                                        * w[((ky * kw + kx) * cin + ci) * cout + ch];
                                }
                            }
                        }
                        out[o + ch] = act.apply(acc);
                    }
                }
                ox += 1;
            }
        }
    }

    /// Channels `cb0..cout` of one output pixel whose window is inside the input (`ip` its
    /// corner, `offs[t]` tap `t`'s offset from it, `w[t * cout..]` its weights), into `op`:
    /// 16 channels per block, then 8, then one by one.
    ///
    /// # Safety
    /// AVX2 + FMA; every `ip + offs[t]` readable; `bias` holds exactly the `cout` biases,
    /// `w` `offs.len() * cout` weights; `op` `cout` writable values.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn flat_pixel(
        ip: *const f32,
        offs: &[usize],
        w: &[f32],
        bias: &[f32],
        act: Activation,
        op: *mut f32,
        cb0: usize,
    ) {
        let cout = bias.len();
        let mut cb = cb0;
        // SAFETY: see the function contract; cb + 16 (or + 8) <= cout bounds the weights,
        // bias and output channels.
        unsafe {
            while cb + 16 <= cout {
                let bp = bias.as_ptr().add(cb);
                let (mut a0, mut a1) = (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)));
                for (t, &off) in offs.iter().enumerate() {
                    let a = _mm256_set1_ps(*ip.add(off));
                    let wt = w.as_ptr().add(t * cout + cb);
                    a0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(wt), a0);
                    a1 = _mm256_fmadd_ps(a, _mm256_loadu_ps(wt.add(8)), a1);
                }
                _mm256_storeu_ps(op.add(cb), activate(act, a0));
                _mm256_storeu_ps(op.add(cb + 8), activate(act, a1));
                cb += 16;
            }
            while cb + 8 <= cout {
                let mut a0 = _mm256_loadu_ps(bias.as_ptr().add(cb));
                for (t, &off) in offs.iter().enumerate() {
                    let a = _mm256_set1_ps(*ip.add(off));
                    a0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(w.as_ptr().add(t * cout + cb)), a0);
                }
                _mm256_storeu_ps(op.add(cb), activate(act, a0));
                cb += 8;
            }
            for ch in cb..cout {
                let mut acc = bias[ch];
                for (t, &off) in offs.iter().enumerate() {
                    acc += *ip.add(off) * w[t * cout + ch];
                }
                *op.add(ch) = act.apply(acc);
            }
        }
    }

    /// Channels `0..16` (from `w`, `bias`, `out` already offset to the block) of four
    /// neighbouring output pixels whose windows are inside the input; `ip` is pixel 0's
    /// window corner, pixel `r`'s is `stride * r` further; `offs[t]` is tap `t`'s offset
    /// from the corner, `w[t * cout..]` its weights.
    ///
    /// # Safety
    /// AVX2 + FMA; every `ip + r * stride + offs[t]` for r < 4 readable; `w` holds
    /// `offs.len() * cout` values (16 from each row), `bias` 16, `out` `3 * cout + 16`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn four_pixels(
        ip: *const f32,
        stride: usize,
        offs: &[usize],
        w: *const f32,
        bias: *const f32,
        cout: usize,
        act: Activation,
        out: *mut f32,
    ) {
        // SAFETY: see the function contract.
        unsafe {
            let b = [_mm256_loadu_ps(bias), _mm256_loadu_ps(bias.add(8))];
            let mut acc = [b; 4];
            for (t, &off) in offs.iter().enumerate() {
                let wt = w.add(t * cout);
                let w0 = _mm256_loadu_ps(wt);
                let w1 = _mm256_loadu_ps(wt.add(8));
                for (r, a) in acc.iter_mut().enumerate() {
                    let x = _mm256_set1_ps(*ip.add(off + r * stride));
                    a[0] = _mm256_fmadd_ps(x, w0, a[0]);
                    a[1] = _mm256_fmadd_ps(x, w1, a[1]);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let o = out.add(r * cout);
                _mm256_storeu_ps(o, activate(act, a[0]));
                _mm256_storeu_ps(o.add(8), activate(act, a[1]));
            }
        }
    }
}

/// The variant this target uses: AVX2 + FMA when the CPU has them, else
/// [`portable`].
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn conv_stem(
    input: &[f32],
    s: ConvShape,
    w: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) {
    if super::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { avx2::conv_stem(input, s, w, bias, act, out) }
    } else {
        portable(input, s, w, bias, act, out)
    }
}
