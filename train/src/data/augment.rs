//! Training-time augmentation: the 8 dihedral symmetries, random resized crop and colour
//! jitter, each switchable and each seeded per `(seed, epoch, position)` like the loader's
//! flips, so a resumed run replays the same augmented batch.
//!
//! Dermoscopy has no up, down, left or right, so every rotation by 90 degrees and every mirror
//! is a valid copy of a lesion. The crop follows torchvision's `RandomResizedCrop` (area scale
//! and log-uniform aspect ratio, ten tries, then the whole tile) and resamples with the same
//! antialiased bilinear filter the evaluation path uses, so crops never alias. Jitter works in
//! pixel space ([0, 1]) like torchvision's `ColorJitter`: brightness scales, contrast blends with
//! the image's mean grey, saturation blends with each pixel's grey.

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::rng::Rng;

/// Random resized crop: the crop covers a fraction `scale` of the tile's area with an aspect
/// ratio (width / height) in `ratio`, drawn log-uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CropRange {
    /// Smallest and largest crop area, as fractions of the tile (0 < min <= max <= 1).
    pub scale: (f32, f32),
    /// Smallest and largest aspect ratio (0 < min <= max).
    pub ratio: (f32, f32),
}

/// Colour jitter strengths: each factor is drawn uniformly from `[1 - x, 1 + x]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Jitter {
    /// Brightness strength (0: off).
    pub brightness: f32,
    /// Contrast strength (0: off).
    pub contrast: f32,
    /// Saturation strength (0: off).
    pub saturation: f32,
}

/// What augmentation a training loader applies on top of its flips.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Augment {
    /// Also transpose (with the flips: all 8 dihedral symmetries, i.e. 90-degree rotations).
    pub dihedral: bool,
    /// Random resized crop.
    pub crop: Option<CropRange>,
    /// Colour jitter.
    pub jitter: Option<Jitter>,
}

impl CropRange {
    /// Checks the ranges, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        let (s0, s1) = self.scale;
        let (r0, r1) = self.ratio;
        ensure!(
            s0.is_finite() && s1.is_finite() && 0.0 < s0 && s0 <= s1 && s1 <= 1.0,
            "crop scale {s0}..{s1} must satisfy 0 < min <= max <= 1"
        );
        ensure!(
            r0.is_finite() && r1.is_finite() && 0.0 < r0 && r0 <= r1,
            "crop ratio {r0}..{r1} must satisfy 0 < min <= max"
        );
        Ok(())
    }

    /// A crop box `(x0, y0, w, h)` inside a `side` x `side` tile, torchvision's way.
    pub fn draw(&self, side: usize, rng: &mut Rng) -> (usize, usize, usize, usize) {
        let area = (side * side) as f64;
        let (lr0, lr1) = ((self.ratio.0 as f64).ln(), (self.ratio.1 as f64).ln());
        for _ in 0..10 {
            let target = area * uniform(rng, self.scale.0 as f64, self.scale.1 as f64);
            let aspect = uniform(rng, lr0, lr1).exp();
            let w = (target * aspect).sqrt().round() as usize;
            let h = (target / aspect).sqrt().round() as usize;
            if w > 0 && h > 0 && w <= side && h <= side {
                let x0 = rng.below(side - w + 1);
                let y0 = rng.below(side - h + 1);
                return (x0, y0, w, h);
            }
        }
        (0, 0, side, side)
    }
}

impl Jitter {
    /// Checks the strengths (each in [0, 1)).
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            ensure!(
                v.is_finite() && (0.0..1.0).contains(&v),
                "jitter {name} {v} must be in [0, 1)"
            );
        }
        Ok(())
    }

    /// The three factors for one sample.
    pub fn draw(&self, rng: &mut Rng) -> [f32; 3] {
        [self.brightness, self.contrast, self.saturation]
            .map(|x| uniform(rng, 1.0 - x as f64, 1.0 + x as f64) as f32)
    }

    /// Applies per-sample `factors` (`[B]` each of brightness, contrast, saturation) to a
    /// normalized batch `[B, 3, S, S]` (normalized with `mean`/`std`), returning it normalized.
    pub fn apply(images: &Tensor, factors: &[[f32; 3]], mean: [f32; 3], std: [f32; 3]) -> Tensor {
        let b = factors.len() as i64;
        let col = |i: usize| {
            Tensor::from_slice(&factors.iter().map(|f| f[i]).collect::<Vec<_>>()).view([b, 1, 1, 1])
        };
        let m = Tensor::from_slice(&mean).view([1, 3, 1, 1]);
        let s = Tensor::from_slice(&std.map(|v| if v > 1e-6 { v } else { 1.0 })).view([1, 3, 1, 1]);
        let luma = Tensor::from_slice(&[0.299f32, 0.587, 0.114]).view([1, 3, 1, 1]);
        let mut p = (images * &s + &m) * col(0);
        p = p.clamp(0.0, 1.0);
        let grey_mean = (&p * &luma)
            .sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
            .mean_dim([2i64, 3].as_slice(), true, Kind::Float);
        p = ((&p - &grey_mean) * col(1) + &grey_mean).clamp(0.0, 1.0);
        let grey = (&p * &luma).sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
        p = ((&p - &grey) * col(2) + &grey).clamp(0.0, 1.0);
        (p - m) / s
    }
}

impl Augment {
    /// Checks every part.
    pub fn validate(&self) -> Result<()> {
        if let Some(c) = &self.crop {
            c.validate()?;
        }
        if let Some(j) = &self.jitter {
            j.validate()?;
        }
        Ok(())
    }

    /// Whether each sample needs its own geometric path (crop or transpose).
    pub fn per_sample_geometry(&self) -> bool {
        self.dihedral || self.crop.is_some()
    }
}

fn uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.next_f64()
}

/// One sample's geometry: crop `[3, h, w]` (already normalized, CHW) -> `out` x `out`
/// (antialiased bilinear when the size changes), then flips and a transpose.
pub fn finish_geometry(
    chw: &[f32],
    h: usize,
    w: usize,
    out: usize,
    flips: (bool, bool),
    transpose: bool,
) -> Result<Tensor> {
    let mut t = Tensor::from_slice(chw).view([1, 3, h as i64, w as i64]);
    if h != out || w != out {
        t = t.f_internal_upsample_bilinear2d_aa([out as i64, out as i64], false, None, None)?;
    }
    let mut dims = Vec::new();
    if flips.1 {
        dims.push(2i64);
    }
    if flips.0 {
        dims.push(3i64);
    }
    if !dims.is_empty() {
        t = t.flip(dims.as_slice());
    }
    if transpose {
        t = t.transpose(2, 3).contiguous();
    }
    Ok(t)
}

/// HWC RGB8 tile `src` (side `s`), region `(x0, y0, w, h)` -> CHW f32 via `lut` into `dst`
/// (`3*w*h`).
pub fn crop_to_chw(
    src: &[u8],
    s: usize,
    (x0, y0, w, h): (usize, usize, usize, usize),
    lut: &[[f32; 256]; 3],
    dst: &mut [f32],
) {
    let plane = w * h;
    for y in 0..h {
        for x in 0..w {
            let p = ((y0 + y) * s + x0 + x) * 3;
            let o = y * w + x;
            dst[o] = lut[0][src[p] as usize];
            dst[plane + o] = lut[1][src[p + 1] as usize];
            dst[2 * plane + o] = lut[2][src[p + 2] as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_boxes_stay_inside_and_follow_the_scale() {
        let c = CropRange {
            scale: (0.25, 0.5),
            ratio: (0.75, 4.0 / 3.0),
        };
        c.validate().unwrap();
        let mut rng = Rng::new(3);
        for _ in 0..500 {
            let (x0, y0, w, h) = c.draw(100, &mut rng);
            assert!(x0 + w <= 100 && y0 + h <= 100, "{x0} {y0} {w} {h}");
            let frac = (w * h) as f64 / 10_000.0;
            assert!((0.22..=0.53).contains(&frac), "area fraction {frac}");
        }
    }

    #[test]
    fn bad_ranges_are_named() {
        let c = CropRange {
            scale: (0.0, 1.0),
            ratio: (0.75, 1.33),
        };
        assert!(c.validate().unwrap_err().to_string().contains("crop scale"));
        let j = Jitter {
            brightness: 0.1,
            contrast: 1.5,
            saturation: 0.0,
        };
        assert!(j.validate().unwrap_err().to_string().contains("contrast"));
    }

    #[test]
    fn neutral_jitter_is_identity_and_transpose_is_exact() {
        let mean = [0.5f32, 0.4, 0.3];
        let std = [0.2f32, 0.25, 0.3];
        // Pixels inside [0, 1] so the clamps do nothing.
        let x = (Tensor::rand([2, 3, 5, 5], (Kind::Float, tch::Device::Cpu))
            - Tensor::from_slice(&mean).view([1, 3, 1, 1]))
            / Tensor::from_slice(&std).view([1, 3, 1, 1]);
        let y = Jitter::apply(&x, &[[1.0; 3], [1.0; 3]], mean, std);
        let d = (&x - &y).abs().max().double_value(&[]);
        assert!(d < 1e-5, "neutral jitter changed the image by {d}");

        let chw: Vec<f32> = (0..3 * 4 * 4).map(|v| v as f32).collect();
        let t = finish_geometry(&chw, 4, 4, 4, (false, false), true).unwrap();
        // element (c=0, y=1, x=2) of the transposed image is (y=2, x=1) of the original
        assert_eq!(t.double_value(&[0, 0, 1, 2]), (2 * 4 + 1) as f64);
    }
}
