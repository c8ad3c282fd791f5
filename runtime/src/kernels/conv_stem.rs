//! Dense kxk convolution from the planar (CHW) model input to HWC, used only
//! for the first layer (3 input channels).

use super::Activation;
use super::depthwise::tap_range;

/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(target_arch = "aarch64")]
pub use neon::conv_stem;
/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(not(target_arch = "aarch64"))]
pub use portable as conv_stem;

/// Portable stem convolution.
///
/// `input` is `[cin][ih][iw]` (CHW), `w` is `[kh][kw][cin][cout]`, `bias` is
/// `[cout]`, `out` is `[oh][ow][cout]` (HWC); `stride` and the symmetric zero
/// padding `pad` apply to both axes.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn portable(
    input: &[f32],
    ih: usize,
    iw: usize,
    cin: usize,
    w: &[f32],
    bias: &[f32],
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    act: Activation,
    out: &mut [f32],
) {
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
    use super::super::Activation;
    use super::super::depthwise::tap_range;
    use super::super::neon_util::activate;
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
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn conv_stem(
        input: &[f32],
        ih: usize,
        iw: usize,
        cin: usize,
        w: &[f32],
        bias: &[f32],
        cout: usize,
        kh: usize,
        kw: usize,
        stride: usize,
        pad: usize,
        oh: usize,
        ow: usize,
        act: Activation,
        out: &mut [f32],
    ) {
        assert!(
            input.len() >= cin * ih * iw,
            "conv_stem: input shorter than cin * ih * iw"
        );
        assert!(
            w.len() >= kh * kw * cin * cout,
            "conv_stem: weights shorter than kh * kw * cin * cout"
        );
        assert!(bias.len() >= cout, "conv_stem: bias shorter than cout");
        assert!(
            out.len() >= oh * ow * cout,
            "conv_stem: out shorter than oh * ow * cout"
        );
        assert!(stride > 0, "conv_stem: stride 0");
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
        let ox_lo = pad.div_ceil(stride).min(ow);
        let ox_hi = if iw + pad >= kw {
            ((iw + pad - kw) / stride + 1).min(ow)
        } else {
            0
        }
        .max(ox_lo);
        let c16 = cout - cout % 16;
        for oy in 0..oh {
            let (ky0, ky1) = tap_range(oy, stride, pad, kh, ih);
            if ky0 != 0 || ky1 != kh {
                for ox in 0..ow {
                    pixel(input, w, bias, &g, oy, ox, 0, out);
                }
                continue;
            }
            for ox in (0..ox_lo).chain(ox_hi..ow) {
                pixel(input, w, bias, &g, oy, ox, 0, out);
            }
            let mut ox = ox_lo;
            while ox + 4 <= ox_hi {
                let mut cb = 0;
                while cb < c16 {
                    // SAFETY: rows oy * stride - pad + ky (< kh) are inside
                    // (full tap range) and columns of pixels ox..ox + 4 are
                    // inside because ox + 4 <= ox_hi; cb + 16 <= cout keeps
                    // weight, bias and output reads in bounds.
                    unsafe {
                        four_pixels(
                            input.as_ptr(),
                            w.as_ptr(),
                            bias.as_ptr(),
                            &g,
                            oy,
                            ox,
                            cb,
                            out.as_mut_ptr(),
                        )
                    };
                    cb += 16;
                }
                for px in ox..ox + 4 {
                    pixel(input, w, bias, &g, oy, px, c16, out);
                }
                ox += 4;
            }
            while ox < ox_hi {
                pixel(input, w, bias, &g, oy, ox, 0, out);
                ox += 1;
            }
        }
    }

    /// Pixels `ox..ox + 4` of row `oy`, channels `cb..cb + 16`, all taps inside.
    ///
    /// # Safety
    /// See the call site: every tap of these pixels is inside the input and
    /// `cb + 16 <= cout`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn four_pixels(
        input: *const f32,
        w: *const f32,
        bias: *const f32,
        g: &Geom,
        oy: usize,
        ox: usize,
        cb: usize,
        out: *mut f32,
    ) {
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
        let mut cb = c0;
        while cb + 4 <= g.cout {
            // SAFETY: tap_range keeps iy < ih and ix < iw, so input reads are
            // below cin * ih * iw; cb + 4 <= cout bounds weights, bias and
            // the output pixel (asserted lengths).
            unsafe {
                let mut acc = vld1q_f32(bias.as_ptr().add(cb));
                for ky in ky0..ky1 {
                    let iy = oy * g.stride + ky - g.pad;
                    for kx in kx0..kx1 {
                        let ix = ox * g.stride + kx - g.pad;
                        for ci in 0..g.cin {
                            let a = *input.as_ptr().add(ci * plane + iy * g.iw + ix);
                            let wt = w
                                .as_ptr()
                                .add(((ky * g.kw + kx) * g.cin + ci) * g.cout + cb);
                            acc = vfmaq_n_f32(acc, vld1q_f32(wt), a);
                        }
                    }
                }
                vst1q_f32(out.as_mut_ptr().add(o + cb), activate(g.act, acc));
            }
            cb += 4;
        }
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
