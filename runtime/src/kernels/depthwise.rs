//! Depthwise kxk convolution on HWC tensors, vectorized over channels.

use super::Activation;

/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(target_arch = "aarch64")]
pub use neon::depthwise;
/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(not(target_arch = "aarch64"))]
pub use portable as depthwise;

/// Portable depthwise convolution.
///
/// `input` is `[ih][iw][c]`, `w` is `[k][k][c]`, `bias` is `[c]`, `out` is
/// `[oh][ow][c]`; `stride` and the symmetric zero padding `pad` apply to
/// both axes. Taps that fall into the padding are skipped.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn portable(
    input: &[f32],
    ih: usize,
    iw: usize,
    c: usize,
    w: &[f32],
    bias: &[f32],
    k: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    act: Activation,
    out: &mut [f32],
) {
    debug_assert_eq!(input.len(), ih * iw * c);
    debug_assert_eq!(w.len(), k * k * c);
    debug_assert_eq!(bias.len(), c);
    debug_assert_eq!(out.len(), oh * ow * c);
    for oy in 0..oh {
        let (ky0, ky1) = tap_range(oy, stride, pad, k, ih);
        for ox in 0..ow {
            let (kx0, kx1) = tap_range(ox, stride, pad, k, iw);
            let o = (oy * ow + ox) * c;
            let dst = &mut out[o..o + c];
            dst.copy_from_slice(bias);
            for ky in ky0..ky1 {
                let iy = oy * stride + ky - pad;
                for kx in kx0..kx1 {
                    let ix = ox * stride + kx - pad;
                    let src = &input[(iy * iw + ix) * c..(iy * iw + ix + 1) * c];
                    let wt = &w[(ky * k + kx) * c..(ky * k + kx + 1) * c];
                    for ((d, &s), &wv) in dst.iter_mut().zip(src).zip(wt) {
                        *d += s * wv;
                    }
                }
            }
            act.apply_slice(dst);
        }
    }
}

/// The taps `t` in `lo..hi` for which `o * stride + t - pad` lies in `0..len`.
#[inline(always)]
pub(crate) fn tap_range(
    o: usize,
    stride: usize,
    pad: usize,
    k: usize,
    len: usize,
) -> (usize, usize) {
    let start = o * stride;
    let lo = pad.saturating_sub(start);
    let hi = (len + pad).saturating_sub(start).min(k);
    (lo, hi.max(lo))
}

/// NEON depthwise kernel for aarch64.
///
/// Rows whose taps are all inside the input take the fast path: for each
/// block of 4 channels the `k * k` weight vectors stay in registers (9 or 25
/// of the 32), and `PX` neighbouring output pixels (4 for 3x3, 2 for 5x5)
/// are computed together so each input vector they share is loaded once.
/// Border pixels and channel tails use a per-pixel path that skips the
/// padding taps.
#[cfg(target_arch = "aarch64")]
pub mod neon {
    use super::super::Activation;
    use super::super::neon_util::activate;
    use super::tap_range;
    use core::arch::aarch64::*;

    /// NEON depthwise convolution with the contract of [`super::portable`].
    ///
    /// # Panics
    /// If a slice is shorter than the shape says.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn depthwise(
        input: &[f32],
        ih: usize,
        iw: usize,
        c: usize,
        w: &[f32],
        bias: &[f32],
        k: usize,
        stride: usize,
        pad: usize,
        oh: usize,
        ow: usize,
        act: Activation,
        out: &mut [f32],
    ) {
        assert!(
            input.len() >= ih * iw * c,
            "depthwise: input shorter than ih * iw * c"
        );
        assert!(
            w.len() >= k * k * c,
            "depthwise: weights shorter than k * k * c"
        );
        assert!(bias.len() >= c, "depthwise: bias shorter than c");
        assert!(
            out.len() >= oh * ow * c,
            "depthwise: out shorter than oh * ow * c"
        );
        assert!(stride > 0, "depthwise: stride 0");
        let g = Geom {
            ih,
            iw,
            c,
            k,
            stride,
            pad,
            oh,
            ow,
            act,
        };
        match (k, stride) {
            (3, 1) => rows::<3, 1, 4>(input, w, bias, &g, out),
            (3, 2) => rows::<3, 2, 4>(input, w, bias, &g, out),
            (5, 1) => rows::<5, 1, 2>(input, w, bias, &g, out),
            (5, 2) => rows::<5, 2, 2>(input, w, bias, &g, out),
            _ => {
                for oy in 0..oh {
                    for ox in 0..ow {
                        pixel(input, w, bias, &g, oy, ox, 0, out);
                    }
                }
            }
        }
    }

    /// Shape of one depthwise layer.
    struct Geom {
        ih: usize,
        iw: usize,
        c: usize,
        k: usize,
        stride: usize,
        pad: usize,
        oh: usize,
        ow: usize,
        act: Activation,
    }

    /// All output rows of a `K x K`, stride `S` layer.
    #[inline(always)]
    fn rows<const K: usize, const S: usize, const PX: usize>(
        input: &[f32],
        w: &[f32],
        bias: &[f32],
        g: &Geom,
        out: &mut [f32],
    ) {
        let c = g.c;
        // Output columns whose K taps are all inside the row.
        let ox_lo = g.pad.div_ceil(S).min(g.ow);
        let ox_hi = if g.iw + g.pad >= K {
            ((g.iw + g.pad - K) / S + 1).min(g.ow)
        } else {
            0
        }
        .max(ox_lo);
        for oy in 0..g.oh {
            let (ky0, ky1) = tap_range(oy, S, g.pad, K, g.ih);
            if ky0 != 0 || ky1 != K {
                for ox in 0..g.ow {
                    pixel(input, w, bias, g, oy, ox, 0, out);
                }
                continue;
            }
            let iy0 = oy * S - g.pad;
            let mut cb = 0;
            while cb + 4 <= c {
                // SAFETY: cb + 4 <= c; tap t < K * K reads w[t * c + cb..+4]
                // below K * K * c; bias below c (lengths asserted).
                let (wv, bv) = unsafe {
                    let mut wv = [vdupq_n_f32(0.0); 25];
                    for (t, v) in wv.iter_mut().enumerate().take(K * K) {
                        *v = vld1q_f32(w.as_ptr().add(t * c + cb));
                    }
                    (wv, vld1q_f32(bias.as_ptr().add(cb)))
                };
                for ox in (0..ox_lo).chain(ox_hi..g.ow) {
                    pixel_block(input, w, bias, g, oy, ox, cb, out);
                }
                let mut ox = ox_lo;
                while ox + PX <= ox_hi {
                    // SAFETY: rows iy0..iy0 + K are inside the input (full
                    // tap range), columns ox * S - pad .. (ox + PX - 1) * S
                    // - pad + K are inside because ox + PX <= ox_hi; the
                    // outputs are pixels of row oy below ow.
                    unsafe {
                        block::<K, S, PX>(
                            input.as_ptr(),
                            w_in(g, iy0, ox),
                            &wv,
                            bv,
                            g,
                            out.as_mut_ptr().add((oy * g.ow + ox) * c + cb),
                            cb,
                        )
                    };
                    ox += PX;
                }
                while ox < ox_hi {
                    // SAFETY: as above with one pixel.
                    unsafe {
                        block::<K, S, 1>(
                            input.as_ptr(),
                            w_in(g, iy0, ox),
                            &wv,
                            bv,
                            g,
                            out.as_mut_ptr().add((oy * g.ow + ox) * c + cb),
                            cb,
                        )
                    };
                    ox += 1;
                }
                cb += 4;
            }
            if cb < c {
                for ox in 0..g.ow {
                    pixel(input, w, bias, g, oy, ox, cb, out);
                }
            }
        }
    }

    /// Offset of input pixel (iy0, ox * S - pad) at channel 0.
    #[inline(always)]
    fn w_in(g: &Geom, iy0: usize, ox: usize) -> usize {
        (iy0 * g.iw + ox * g.stride - g.pad) * g.c
    }

    /// `PX` neighbouring output pixels, 4 channels, all taps inside.
    ///
    /// # Safety
    /// Input rows `at / (iw * c)..+K` and the columns the pixels touch are
    /// inside `input`; `out` has room for `PX` pixels of `c` channels.
    #[inline(always)]
    unsafe fn block<const K: usize, const S: usize, const PX: usize>(
        input: *const f32,
        at: usize,
        wv: &[float32x4_t; 25],
        bv: float32x4_t,
        g: &Geom,
        out: *mut f32,
        cb: usize,
    ) {
        let c = g.c;
        let row_stride = g.iw * c;
        // SAFETY: see the function contract; col < (PX - 1) * S + K stays
        // inside the columns of these pixels' taps.
        unsafe {
            let base = input.add(at + cb);
            let mut acc = [bv; PX];
            for ky in 0..K {
                let row = base.add(ky * row_stride);
                for col in 0..(PX - 1) * S + K {
                    let x = vld1q_f32(row.add(col * c));
                    for (px, a) in acc.iter_mut().enumerate() {
                        if col >= px * S && col - px * S < K {
                            *a = vfmaq_f32(*a, x, wv[ky * K + col - px * S]);
                        }
                    }
                }
            }
            for (px, a) in acc.iter().enumerate() {
                vst1q_f32(out.add(px * c), activate(g.act, *a));
            }
        }
    }

    /// One output pixel, channels `cb..cb + 4`, skipping padding taps.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn pixel_block(
        input: &[f32],
        w: &[f32],
        bias: &[f32],
        g: &Geom,
        oy: usize,
        ox: usize,
        cb: usize,
        out: &mut [f32],
    ) {
        let (c, k) = (g.c, g.k);
        let (ky0, ky1) = tap_range(oy, g.stride, g.pad, k, g.ih);
        let (kx0, kx1) = tap_range(ox, g.stride, g.pad, k, g.iw);
        // SAFETY: tap_range keeps iy < ih and ix < iw; cb + 4 <= c; weights
        // below k * k * c; the output pixel (oy, ox) is below oh * ow.
        unsafe {
            let mut acc = vld1q_f32(bias.as_ptr().add(cb));
            for ky in ky0..ky1 {
                let iy = oy * g.stride + ky - g.pad;
                for kx in kx0..kx1 {
                    let ix = ox * g.stride + kx - g.pad;
                    let x = vld1q_f32(input.as_ptr().add((iy * g.iw + ix) * c + cb));
                    acc = vfmaq_f32(acc, x, vld1q_f32(w.as_ptr().add((ky * k + kx) * c + cb)));
                }
            }
            vst1q_f32(
                out.as_mut_ptr().add((oy * g.ow + ox) * c + cb),
                activate(g.act, acc),
            );
        }
    }

    /// One output pixel, channels `c0..c` (4 at a time, then scalar).
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
        let (c, k) = (g.c, g.k);
        let mut cb = c0;
        while cb + 4 <= c {
            pixel_block(input, w, bias, g, oy, ox, cb, out);
            cb += 4;
        }
        if cb == c {
            return;
        }
        let (ky0, ky1) = tap_range(oy, g.stride, g.pad, k, g.ih);
        let (kx0, kx1) = tap_range(ox, g.stride, g.pad, k, g.iw);
        for ch in cb..c {
            let mut acc = bias[ch];
            for ky in ky0..ky1 {
                let iy = oy * g.stride + ky - g.pad;
                for kx in kx0..kx1 {
                    let ix = ox * g.stride + kx - g.pad;
                    acc += input[(iy * g.iw + ix) * c + ch] * w[(ky * k + kx) * c + ch];
                }
            }
            out[(oy * g.ow + ox) * c + ch] = g.act.apply(acc);
        }
    }
}
