//! Depthwise kxk convolution on HWC tensors, vectorized over channels.

use super::Activation;

/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(target_arch = "aarch64")]
pub use neon::depthwise;
/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
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
/// For each output row and block of 4 channels the `k * k` weight vectors are loaded once into
/// registers (9 or 25 of the 32); `PX` neighbouring output pixels are then computed together so the
/// input vectors they share are loaded once (8/4 pixels for 3x3 stride 1/2, 4 for 5x5, with a
/// 2-pixel tail). Taps in the padding rows get zero weights and a clamped (valid) row pointer, so
/// every row takes the unrolled path; pixels whose taps leave the row on the left or right use the
/// same unrolled code with a compile-time column range. Zero-weight taps multiply real (finite)
/// activations, so a non-finite input next to the border can turn a padded output into NaN where
/// PyTorch would not look at it; activations are finite in practice.
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
    // Inlined with `rows` into each generated layer function, whose arguments are literals: the
    // channel stride becomes a constant, so input loads take immediate offsets instead of an
    // address `add` each (MobileNetV3-Small's depthwise layers: 6.48 M -> 4.67 M aarch64
    // instructions per image; the binary does not grow).
    #[inline(always)]
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
            (3, 1) => rows::<3, 9, 1, 8>(input, w, bias, &g, out),
            (3, 2) => rows::<3, 9, 2, 4>(input, w, bias, &g, out),
            (5, 1) => rows::<5, 25, 1, 4>(input, w, bias, &g, out),
            (5, 2) => rows::<5, 25, 2, 4>(input, w, bias, &g, out),
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

    /// All output rows of a `K x K` (`KK` taps), stride `S` layer (inlined for constant
    /// shapes, see [`depthwise`]).
    #[inline(always)]
    fn rows<const K: usize, const KK: usize, const S: usize, const PX: usize>(
        input: &[f32],
        w: &[f32],
        bias: &[f32],
        g: &Geom,
        out: &mut [f32],
    ) {
        let c = g.c;
        if g.ih == 0 || g.iw == 0 {
            // Every tap is padding: the output is act(bias).
            for ox in 0..g.oh * g.ow {
                pixel(input, w, bias, g, ox / g.ow, ox % g.ow, 0, out);
            }
            return;
        }
        // Output columns whose K taps all lie inside the row.
        let ox_lo = g.pad.div_ceil(S).min(g.ow);
        let ox_hi = if g.iw + g.pad >= K {
            ((g.iw + g.pad - K) / S + 1).min(g.ow)
        } else {
            0
        }
        .max(ox_lo);
        let c4 = c - c % 4;
        for oy in 0..g.oh {
            let (ky0, ky1) = tap_range(oy, S, g.pad, K, g.ih);
            // Padding rows read a valid row (any) with zero weights.
            let full = ky0 == 0 && ky1 == K;
            let mut row_off = [0usize; 5];
            let mut row_mask = [1.0f32; 5];
            for ky in 0..K {
                let valid = ky >= ky0 && ky < ky1;
                row_off[ky] = if valid {
                    (oy * S + ky - g.pad) * g.iw * c
                } else {
                    0
                };
                row_mask[ky] = if valid { 1.0 } else { 0.0 };
            }
            let mut cb = 0;
            while cb < c4 {
                // SAFETY: cb + 4 <= c; tap t < K * K reads w[t * c + cb..+4],
                // below K * K * c; bias below c (lengths asserted).
                let (mut wv, bv) = unsafe {
                    let mut wv = [vdupq_n_f32(0.0); KK];
                    for (t, v) in wv.iter_mut().enumerate() {
                        *v = vld1q_f32(w.as_ptr().add(t * c + cb));
                    }
                    (wv, vld1q_f32(bias.as_ptr().add(cb)))
                };
                if !full {
                    for (t, v) in wv.iter_mut().enumerate() {
                        // SAFETY: register-only NEON multiply (aarch64 baseline).
                        *v = unsafe { vmulq_n_f32(*v, row_mask[t / K]) };
                    }
                }
                let ctx = Ctx {
                    input: input.as_ptr(),
                    row_off,
                    wv,
                    bv,
                    g,
                    cb,
                };
                let orow = (oy * g.ow) * c + cb;
                // SAFETY (all calls below): rows in row_off are valid input
                // rows; for pixel ox the columns read are the tap columns
                // KX0..KX1 of that pixel, which lie inside 0..iw (interior
                // pixels: ox_lo <= ox, ox + PX <= ox_hi; border pixels: the
                // dispatch computes KX0/KX1 with tap_range); cb + 4 <= c; the
                // output pixels are in row oy, below ow.
                let o = out.as_mut_ptr();
                for ox in (0..ox_lo).chain(ox_hi..g.ow) {
                    let (kx0, kx1) = tap_range(ox, S, g.pad, K, g.iw);
                    let at = unsafe { o.add(orow + ox * c) };
                    let col0 = (ox * S) as isize - g.pad as isize;
                    macro_rules! border {
                        ($($a:literal, $b:literal);*) => {
                            match (kx0, kx1) {
                                $( ($a, $b) if $b <= K => unsafe { block::<K, KK, S, 1, $a, $b>(&ctx, col0, at) }, )*
                                _ => pixel_block(input, w, bias, g, oy, ox, cb, o),
                            }
                        };
                    }
                    border!(1, 3; 2, 3; 0, 2; 0, 1; 1, 5; 2, 5; 0, 4; 0, 3; 1, 4; 2, 4; 1, 2);
                }
                let mut ox = ox_lo;
                while ox + PX <= ox_hi {
                    let col0 = (ox * S) as isize - g.pad as isize;
                    unsafe { block::<K, KK, S, PX, 0, K>(&ctx, col0, o.add(orow + ox * c)) };
                    ox += PX;
                }
                // Narrow rows (7x7 maps leave 3 interior columns for 5x5)
                // still get a two-pixel block.
                if PX > 2 && ox + 2 <= ox_hi {
                    let col0 = (ox * S) as isize - g.pad as isize;
                    unsafe { block::<K, KK, S, 2, 0, K>(&ctx, col0, o.add(orow + ox * c)) };
                    ox += 2;
                }
                while ox < ox_hi {
                    let col0 = (ox * S) as isize - g.pad as isize;
                    unsafe { block::<K, KK, S, 1, 0, K>(&ctx, col0, o.add(orow + ox * c)) };
                    ox += 1;
                }
                cb += 4;
            }
            if c4 < c {
                for ox in 0..g.ow {
                    pixel(input, w, bias, g, oy, ox, c4, out);
                }
            }
        }
    }

    /// What the unrolled block needs for one row and channel block.
    struct Ctx<'a, const KK: usize> {
        input: *const f32,
        /// Offset of each tap row (a valid row; padding rows have zero weights).
        row_off: [usize; 5],
        wv: [float32x4_t; KK],
        bv: float32x4_t,
        g: &'a Geom,
        cb: usize,
    }

    /// `PX` neighbouring output pixels, channels `cb..cb + 4`, using tap
    /// columns `KX0..KX1` only. `col0` is the input column of tap 0 of the
    /// first pixel (may be negative when `KX0 > 0`).
    ///
    /// # Safety
    /// For every pixel `px` and tap column `kx` in `KX0..KX1`, input column
    /// `col0 + px * S + kx` lies in `0..iw`; `out` has room for `PX` pixels.
    #[inline(always)]
    unsafe fn block<
        const K: usize,
        const KK: usize,
        const S: usize,
        const PX: usize,
        const KX0: usize,
        const KX1: usize,
    >(
        x: &Ctx<'_, KK>,
        col0: isize,
        out: *mut f32,
    ) {
        let c = x.g.c;
        // SAFETY: see the function contract; only columns the pixels' valid
        // taps touch are loaded.
        unsafe {
            let mut acc = [x.bv; PX];
            for ky in 0..K {
                let row = x.input.add(x.row_off[ky] + x.cb);
                for col in KX0..(PX - 1) * S + KX1 {
                    let mut used = false;
                    for px in 0..PX {
                        if col >= px * S + KX0 && col < px * S + KX1 {
                            used = true;
                        }
                    }
                    if !used {
                        continue;
                    }
                    let v = vld1q_f32(row.offset((col0 + col as isize) * c as isize));
                    for (px, a) in acc.iter_mut().enumerate() {
                        if col >= px * S + KX0 && col < px * S + KX1 {
                            *a = vfmaq_f32(*a, v, x.wv[ky * K + col - px * S]);
                        }
                    }
                }
            }
            for (px, a) in acc.iter().enumerate() {
                vst1q_f32(out.add(px * c), activate(x.g.act, *a));
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
        out: *mut f32,
    ) {
        let (c, k) = (g.c, g.k);
        let (ky0, ky1) = tap_range(oy, g.stride, g.pad, k, g.ih);
        let (kx0, kx1) = tap_range(ox, g.stride, g.pad, k, g.iw);
        // SAFETY: tap_range keeps iy < ih and ix < iw; cb + 4 <= c; weights
        // below k * k * c; the output pixel (oy, ox) is below oh * ow, inside
        // the asserted output length.
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
            vst1q_f32(out.add((oy * g.ow + ox) * c + cb), activate(g.act, acc));
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
            pixel_block(input, w, bias, g, oy, ox, cb, out.as_mut_ptr());
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

/// AVX2 + FMA depthwise kernel for x86_64 hosts: 8 channels per `__m256`,
/// taps outside the input skipped per pixel; the 8-channel blocks of one
/// pixel run back to back so the input pixel and weight rows stream.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::super::Activation;
    use super::super::avx2_util::activate;
    use super::tap_range;
    use core::arch::x86_64::*;

    /// AVX2 depthwise convolution with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`super::super::has_avx2_fma`]).
    ///
    /// # Panics
    /// If a slice is shorter than the shape says.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn depthwise(
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
        let c8 = c - c % 8;
        for oy in 0..oh {
            let (ky0, ky1) = tap_range(oy, stride, pad, k, ih);
            for ox in 0..ow {
                let (kx0, kx1) = tap_range(ox, stride, pad, k, iw);
                let o = (oy * ow + ox) * c;
                let mut cb = 0;
                while cb < c8 {
                    // SAFETY: tap_range keeps iy < ih and ix < iw; cb + 8 <=
                    // c bounds the input pixel, weight row, bias and output
                    // pixel (o + c <= oh * ow * c); lengths asserted above.
                    unsafe {
                        let mut acc = _mm256_loadu_ps(bias.as_ptr().add(cb));
                        for ky in ky0..ky1 {
                            let iy = oy * stride + ky - pad;
                            let src = input.as_ptr().add(iy * iw * c + cb);
                            let wr = w.as_ptr().add(ky * k * c + cb);
                            for kx in kx0..kx1 {
                                let ix = ox * stride + kx - pad;
                                acc = _mm256_fmadd_ps(
                                    _mm256_loadu_ps(src.add(ix * c)),
                                    _mm256_loadu_ps(wr.add(kx * c)),
                                    acc,
                                );
                            }
                        }
                        _mm256_storeu_ps(out.as_mut_ptr().add(o + cb), activate(act, acc));
                    }
                    cb += 8;
                }
                for ch in c8..c {
                    let mut acc = bias[ch];
                    for ky in ky0..ky1 {
                        let iy = oy * stride + ky - pad;
                        for kx in kx0..kx1 {
                            let ix = ox * stride + kx - pad;
                            acc += input[(iy * iw + ix) * c + ch] * w[(ky * k + kx) * c + ch];
                        }
                    }
                    out[o + ch] = act.apply(acc);
                }
            }
        }
    }
}

/// The variant this target uses: AVX2 + FMA when the CPU has them, else
/// [`portable`].
#[cfg(target_arch = "x86_64")]
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
    if super::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { avx2::depthwise(input, ih, iw, c, w, bias, k, stride, pad, oh, ow, act, out) }
    } else {
        portable(input, ih, iw, c, w, bias, k, stride, pad, oh, ow, act, out)
    }
}
