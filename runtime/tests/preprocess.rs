//! The preprocessing on its own (crop, antialiased bilinear resize, normalization): against
//! values worked by hand, against the resize formula written per output pixel in f64, and
//! every variant of the resize's fixed-point vertical pass against the exact integer sum.

use derm_runtime::preprocess::{
    Image, PreprocessError, Region, centre_crop, crop_resize_normalize, resize_normalize, vertical,
};

#[test]
fn constant_image_normalizes_to_constant() {
    let pixels = [[10u8, 128, 250]; 5 * 7].concat();
    let img = Image::new(7, 5, &pixels).unwrap();
    let mut out = [0f32; 3 * 4 * 4];
    let mean = [0.1, 0.5, 0.9];
    let std = [0.2, 0.25, 0.3];
    resize_normalize(img, 4, 4, mean, std, &mut out).unwrap();
    for (c, px) in [10.0f32, 128.0, 250.0].iter().enumerate() {
        let want = (px / 255.0 - mean[c]) / std[c];
        for v in &out[c * 16..(c + 1) * 16] {
            assert!((v - want).abs() < 1e-5, "channel {c}: {v} vs {want}");
        }
    }
}

#[test]
fn downscale_by_two_widens_the_triangle() {
    // A 4x1 ramp to 2x1. Output 0 is centred at source 1.0 with a triangle of half-width 2:
    // source pixels 0, 1, 2 weigh 0.75, 0.75, 0.25 (normalized by 1.75). Worked by hand
    // from PyTorch's antialiased bilinear formula.
    let pixels: [u8; 12] = [0, 0, 0, 100, 100, 100, 200, 200, 200, 250, 250, 250];
    let img = Image::new(4, 1, &pixels).unwrap();
    let mut out = [0f32; 6];
    resize_normalize(img, 1, 2, [0.0; 3], [1.0 / 255.0; 3], &mut out).unwrap();
    let want = [
        125.0 / 1.75,
        (0.25 * 100.0 + 0.75 * 200.0 + 0.75 * 250.0) / 1.75,
    ];
    for (got, want) in out[..2].iter().zip(want) {
        assert!((got - want).abs() < 1e-3, "{got} vs {want}");
    }
}

/// The antialiased bilinear resize written per output pixel, in f64, straight from the
/// formula (PyTorch's `_upsample_bilinear2d_aa`): the strip version must agree with it.
fn naive(image: Image<'_>, out_h: usize, out_w: usize, out: &mut [f32]) {
    fn weights(o: usize, input: usize, output: usize) -> (usize, [f64; 256], usize) {
        let scale = input as f64 / output as f64;
        let support = scale.max(1.0);
        let centre = scale * (o as f64 + 0.5);
        let first = ((centre - support + 0.5) as i64).max(0) as usize;
        let end = ((centre + support + 0.5) as i64).min(input as i64) as usize;
        let mut w = [0f64; 256];
        let mut total = 0.0;
        for j in first..end {
            let v = (1.0 - ((j as f64 - centre + 0.5) / support).abs()).max(0.0);
            w[j - first] = v;
            total += v;
        }
        for v in &mut w {
            *v /= total;
        }
        (first, w, end - first)
    }
    for oy in 0..out_h {
        let (y0, wy, ny) = weights(oy, image.height, out_h);
        for ox in 0..out_w {
            let (x0, wx, nx) = weights(ox, image.width, out_w);
            for c in 0..3 {
                let mut v = 0.0;
                for (ky, &w_row) in wy[..ny].iter().enumerate() {
                    for (kx, &w_col) in wx[..nx].iter().enumerate() {
                        let px = image.pixels[((y0 + ky) * image.width + x0 + kx) * 3 + c];
                        v += w_row * w_col * f64::from(px);
                    }
                }
                out[c * out_h * out_w + oy * out_w + ox] =
                    (v * (1.0 / (255.0 * 0.25)) + (-0.5 / 0.25)) as f32;
            }
        }
    }
}

#[test]
fn strips_equal_the_per_pixel_formula() {
    let mut state = 7u32;
    let mut pixels = [0u8; 3 * 97 * 131];
    for p in pixels.iter_mut() {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *p = (state >> 24) as u8;
    }
    // Up- and down-scaling (mild, 2x, 13x, to one pixel), widths below, at and across
    // strip boundaries.
    for (w, h, ow, oh) in [
        (97, 131, 150, 7),
        (97, 131, 64, 64),
        (97, 131, 80, 112),
        (97, 131, 45, 10),
        (5, 3, 129, 2),
        (97, 131, 1, 1),
    ] {
        let img = Image::new(w, h, &pixels[..w * h * 3]).unwrap();
        let mut got = [0f32; 3 * 150 * 64];
        let mut want = [0f32; 3 * 150 * 64];
        let n = 3 * ow * oh;
        resize_normalize(img, oh, ow, [0.5; 3], [0.25; 3], &mut got[..n]).unwrap();
        naive(img, oh, ow, &mut want[..n]);
        // The vertical pass's fixed-point weights (`vertical::fixed_weights`) move a
        // value by at most 0.51 (taps - 1) / ONE of the pixel range: the bound, with the
        // f32 filter's own 1e-4; on average they move it far less.
        let taps = (h as f32 / oh as f32).max(1.0) * 2.0 + 2.0;
        let bound = 0.51 * (taps - 1.0) / (f32::from(vertical::ONE) * 0.25) + 1e-4;
        let mut total = 0f32;
        for (i, (g, w_)) in got[..n].iter().zip(&want[..n]).enumerate() {
            assert!(
                (g - w_).abs() <= bound,
                "{w}x{h} -> {ow}x{oh} at {i}: {g} vs {w_} (bound {bound})"
            );
            total += (g - w_).abs();
        }
        let mean = total / n as f32;
        assert!(mean <= 1e-4, "{w}x{h} -> {ow}x{oh}: mean difference {mean}");
    }
}

#[test]
fn a_large_reduction_keeps_every_pixel_and_huge_ones_are_refused() {
    // 600 px of alternating black and white columns to 128: every output averages
    // several columns, so nothing aliases to pure black or white.
    let mut pixels = [0u8; 600 * 3];
    for (i, p) in pixels.chunks_exact_mut(3).enumerate() {
        p.fill(if i % 2 == 0 { 0 } else { 255 });
    }
    let img = Image::new(600, 1, &pixels).unwrap();
    let mut out = [0f32; 3 * 128];
    resize_normalize(img, 1, 128, [0.0; 3], [1.0 / 255.0; 3], &mut out).unwrap();
    for v in &out {
        assert!((v - 127.5).abs() < 20.0, "{v}");
    }
    let wide = [7u8; 3 * 70_000];
    let img = Image::new(70_000, 1, &wide).unwrap();
    assert_eq!(
        resize_normalize(img, 1, 1, [0.0; 3], [1.0; 3], &mut [0f32; 3]),
        Err(PreprocessError::TooLarge)
    );
    // Just inside the limit it works, and a constant stays constant.
    let img = Image::new(60_000, 1, &wide[..3 * 60_000]).unwrap();
    let mut one = [0f32; 3 * 128];
    resize_normalize(img, 1, 128, [0.0; 3], [1.0 / 255.0; 3], &mut one).unwrap();
    assert!(one.iter().all(|v| (v - 7.0).abs() < 1e-3));
}

#[test]
fn centre_crop_keeps_the_middle_square() {
    assert_eq!(
        centre_crop(200, 150, 128, 128),
        Region {
            x: 25,
            y: 0,
            width: 150,
            height: 150
        }
    );
    assert_eq!(
        centre_crop(3, 700, 4, 4),
        Region {
            x: 0,
            y: 348,
            width: 3,
            height: 3
        }
    );
    assert_eq!(centre_crop(1, 6000, 224, 224).height, 1);
    assert_eq!(centre_crop(640, 480, 4, 3).width, 640);
    // Empty images do not underflow (the resize rejects them).
    assert_eq!(centre_crop(0, 5, 4, 4).x, 0);
    assert_eq!(centre_crop(5, 0, 4, 4).y, 0);
}

#[test]
fn crop_equals_resizing_the_cut_out_pixels() {
    let mut pixels = [0u8; 20 * 10 * 3];
    for (i, p) in pixels.iter_mut().enumerate() {
        *p = (i * 37 % 251) as u8;
    }
    let img = Image::new(20, 10, &pixels).unwrap();
    let r = centre_crop(20, 10, 6, 6);
    let mut cut = [0u8; 10 * 10 * 3];
    let row = r.width * 3;
    for y in 0..r.height {
        let src = ((r.y + y) * 20 + r.x) * 3;
        cut[y * row..(y + 1) * row].copy_from_slice(&pixels[src..src + row]);
    }
    let cut = &cut[..r.height * row];
    let mut a = [0f32; 3 * 36];
    let mut b = [0f32; 3 * 36];
    crop_resize_normalize(img, r, 6, 6, [0.5; 3], [0.25; 3], &mut a).unwrap();
    let cut_img = Image::new(r.width, r.height, cut).unwrap();
    resize_normalize(cut_img, 6, 6, [0.5; 3], [0.25; 3], &mut b).unwrap();
    assert_eq!(a, b);
    let outside = Region {
        x: 15,
        y: 0,
        width: 10,
        height: 10,
    };
    assert_eq!(
        crop_resize_normalize(img, outside, 6, 6, [0.5; 3], [0.25; 3], &mut a),
        Err(PreprocessError::BadRegion)
    );
}

#[test]
fn bad_sizes_are_errors() {
    assert_eq!(
        Image::new(0, 3, &[]).unwrap_err(),
        PreprocessError::EmptyImage
    );
    assert_eq!(
        Image::new(2, 2, &[0; 11]).unwrap_err(),
        PreprocessError::WrongPixelCount {
            expected: 12,
            actual: 11
        }
    );
    let img = Image::new(1, 1, &[1, 2, 3]).unwrap();
    let mut out = [0f32; 5];
    assert_eq!(
        resize_normalize(img, 2, 2, [0.0; 3], [1.0; 3], &mut out).unwrap_err(),
        PreprocessError::WrongOutputLen {
            expected: 12,
            actual: 5
        }
    );
}

#[test]
fn fixed_weights_sum_to_one_and_round_each_weight() {
    let w = [0.1f32, 0.2, 0.3, 0.25, 0.15];
    let mut q = [0u16; 5];
    let (first, taps) = vertical::fixed_weights(&w, &mut q);
    assert_eq!((first, taps), (0, 5));
    assert_eq!(
        q.iter().map(|&v| u32::from(v)).sum::<u32>(),
        u32::from(vertical::ONE)
    );
    for (&wj, &qj) in w.iter().zip(&q) {
        assert!(
            (f32::from(qj) - wj * f32::from(vertical::ONE)).abs() <= 1.0,
            "{wj} -> {qj}"
        );
    }
    // Zero weights at the ends go; a weight of one is alone.
    let mut q = [7u16; 4];
    assert_eq!(
        vertical::fixed_weights(&[0.0, 1.0, 0.0, 0.0], &mut q),
        (1, 1)
    );
    assert_eq!(q[0], vertical::ONE);
    let mut q = [0u16; 3];
    assert_eq!(vertical::fixed_weights(&[0.0, 0.5, 0.5], &mut q), (1, 2));
    assert_eq!(&q[..2], &[vertical::ONE / 2, vertical::ONE / 2]);
}

/// Every variant the CPU has (the dispatched one, the portable one, on x86_64 AVX2 and
/// AVX-512 where present; NEON is the dispatched one on aarch64) equals the scalar sum,
/// for chunk counts with and without a tail, short rows, odd and even row counts and the
/// largest pixels and weights.
#[test]
fn every_variant_equals_the_integer_sum() {
    let mut state = 3u32;
    let mut next = || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        state >> 8
    };
    let stride = 300;
    let mut src = [0u8; 300 * 9];
    for (i, p) in src.iter_mut().enumerate() {
        *p = if i % 97 == 0 { 255 } else { next() as u8 };
    }
    for rows in 1..=9 {
        let mut w = [0u16; 9];
        for wk in &mut w[..rows] {
            *wk = (next() % (u32::from(vertical::ONE) / rows as u32)) as u16;
        }
        if rows == 1 {
            w[0] = vertical::ONE;
        } else if rows == 2 {
            // The largest weight a pair may hold.
            w[..2].copy_from_slice(&[vertical::ONE - 1, 1]);
        }
        for n in [1, 7, 16, 31, 32, 33, 63, 64, 65, 100, 255, 256] {
            let mut variants: [Option<[f32; 256]>; 4] = [None; 4];
            let w = &w[..rows];
            let mut run = |v: usize, f: &dyn Fn(&mut [f32])| {
                let mut got = [0f32; 256];
                f(&mut got[..n]);
                variants[v] = Some(got);
            };
            run(0, &|o| vertical::vertical(&src, stride, w, o));
            run(1, &|o| vertical::portable(&src, stride, w, o));
            #[cfg(target_arch = "x86_64")]
            if rows > 1 && derm_runtime::kernels::has_avx2_fma() {
                // SAFETY: AVX2 checked; weights below vertical::ONE; the rows are in `src`.
                run(2, &|o| unsafe {
                    vertical::x86::avx2(src.as_ptr(), stride, w, o)
                });
            }
            #[cfg(target_arch = "x86_64")]
            if rows > 1 && derm_runtime::kernels::has_avx512_vnni() {
                // SAFETY: as above, with AVX-512.
                run(3, &|o| unsafe {
                    vertical::x86::avx512(src.as_ptr(), stride, w, o)
                });
            }
            for (v, got) in variants.iter().enumerate() {
                let Some(got) = got else { continue };
                for (i, &g) in got[..n].iter().enumerate() {
                    let want: u32 = (0..rows)
                        .map(|k| u32::from(w[k]) * u32::from(src[k * stride + i]))
                        .sum();
                    assert_eq!(
                        g, want as f32,
                        "variant {v}: {rows} rows, {n} values, at {i}"
                    );
                }
            }
        }
    }
}
