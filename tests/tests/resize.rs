//! Training and the runtime see the same pixels: derm-runtime's crop + resize + normalize
//! equals libtorch's `_upsample_bilinear2d_aa` (`interpolate(mode="bilinear", antialias=True,
//! align_corners=False)`), the op `derm-train`'s loader resizes cached tiles with, within
//! 4e-5 in normalized units on average and a fixed-point bound for each value (below), for
//! reductions, enlargements and the dataset's own sizes.

use derm_runtime::preprocess::{Image, centre_crop, crop_resize_normalize};
use tch::{Device, Kind, Tensor};

/// Largest allowed difference of the `f32` filtering, in normalized (mean / std) units; the
/// runtime's fixed-point row weights add a bound that grows with the reduction (below).
const TOL: f32 = 1e-4;

/// Largest allowed mean difference over an image, in normalized units (0.0014 of an
/// intensity level at the smallest std here).
const MEAN_TOL: f32 = 4e-5;

fn pixels(w: usize, h: usize, seed: u32) -> Vec<u8> {
    let mut state = seed;
    (0..w * h * 3)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect()
}

/// The training side: crop, planar f32, normalize, then libtorch's antialiased bilinear.
fn torch_reference(
    px: &[u8],
    (w, h): (usize, usize),
    out: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> Vec<f32> {
    let r = centre_crop(w, h, out, out);
    let hwc = Tensor::from_slice(px).view([h as i64, w as i64, 3]);
    let crop = hwc
        .narrow(0, r.y as i64, r.height as i64)
        .narrow(1, r.x as i64, r.width as i64)
        .permute([2, 0, 1])
        .to_kind(Kind::Float)
        / 255.0;
    let m = Tensor::from_slice(&mean).view([3, 1, 1]);
    let s = Tensor::from_slice(&std).view([3, 1, 1]);
    let x = ((crop - m) / s).unsqueeze(0);
    let y = x
        .f_internal_upsample_bilinear2d_aa([out as i64, out as i64], false, None, None)
        .expect("libtorch resize");
    let y = y.contiguous().view([-1]).to_device(Device::Cpu);
    Vec::<f32>::try_from(&y).expect("f32 tensor")
}

#[test]
fn runtime_resize_equals_libtorch_antialiased_bilinear() {
    let mean = [0.764, 0.538, 0.563];
    let std = [0.138, 0.159, 0.176];
    // (width, height, output side): HAM10000's 200x150 to 128 and 224, its original 600x450,
    // a 150 px tile (what `prepare --size 150` caches) to 128, a portrait photo, a strong
    // reduction and an enlargement.
    for (i, &(w, h, out)) in [
        (200, 150, 128),
        (200, 150, 224),
        (600, 450, 128),
        (150, 150, 128),
        (160, 160, 128),
        (480, 640, 96),
        (1024, 768, 32),
        (40, 30, 64),
    ]
    .iter()
    .enumerate()
    {
        let px = pixels(w, h, 11 + i as u32);
        let img = Image::new(w, h, &px).unwrap();
        let mut got = vec![0f32; 3 * out * out];
        crop_resize_normalize(
            img,
            centre_crop(w, h, out, out),
            out,
            out,
            mean,
            std,
            &mut got,
        )
        .unwrap();
        let want = torch_reference(&px, (w, h), out, mean, std);
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // The runtime's vertical pass weighs rows in fixed point (units of 2^-15,
        // `runtime/src/preprocess/vertical.rs`), which moves a value by at most 0.51 (taps -
        // 1) units of the pixel range: the bound per value, on top of the f32 tolerance.
        let taps = (h.min(w) as f32 / out as f32).max(1.0) * 2.0 + 2.0;
        let bound = TOL + 0.51 * (taps - 1.0) / (32768.0 * std.iter().fold(1f32, |a, &b| a.min(b)));
        assert!(
            worst <= bound,
            "{w}x{h} -> {out}: max difference {worst} (bound {bound})"
        );
        let mean = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / got.len() as f32;
        assert!(mean <= MEAN_TOL, "{w}x{h} -> {out}: mean difference {mean}");
    }
}
