//! Batches of tensors from a cache, for training and evaluation.
//!
//! Everything random (the epoch's order, flips, the noise on copies) is drawn
//! from streams keyed by `(seed, epoch, position)`, so a [`SamplerState`]
//! (`epoch` + `position`) is all a checkpoint needs to resume an epoch
//! exactly where it stopped, with the same flips and the same noise.

use anyhow::{Context, Result, ensure};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::augment::{self, Augment, Jitter};
use super::balance::{BalancePlan, Slot};
use super::cache::Cache;
use super::rng::Rng;

/// How batches are made.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoaderOptions {
    /// Samples per batch.
    pub batch_size: usize,
    /// Seed of the order, flips and noise.
    pub seed: u64,
    /// Side of the tensors handed out; `None` keeps the cache size. A
    /// smaller side is an antialiased bilinear resize in libtorch.
    pub train_size: Option<usize>,
    /// Random horizontal and vertical flips (dermoscopy has no up or left).
    pub flip: bool,
    /// Shuffle the slots each epoch.
    pub shuffle: bool,
    /// Drop a last, smaller batch.
    pub drop_last: bool,
    /// Dihedral symmetries, random resized crop, colour jitter (training only).
    #[serde(default)]
    pub augment: Augment,
}

impl LoaderOptions {
    /// Training: shuffled, flipped, last partial batch dropped.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        LoaderOptions {
            batch_size,
            seed,
            train_size: None,
            flip: true,
            shuffle: true,
            drop_last: true,
            augment: Augment::default(),
        }
    }

    /// Evaluation: in order, no augmentation, every sample.
    pub fn eval(batch_size: usize) -> Self {
        LoaderOptions {
            batch_size,
            seed: 0,
            train_size: None,
            flip: false,
            shuffle: false,
            drop_last: false,
            augment: Augment::default(),
        }
    }
}

/// Where a sampler stands: the epoch and the next slot position in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    /// Epoch number (it keys the shuffle).
    pub epoch: u64,
    /// Slots of this epoch already handed out.
    pub position: usize,
}

/// One batch.
#[derive(Debug)]
pub struct Batch {
    /// `[B, 3, S, S]` f32, normalized with the cache mean/std (plus noise on
    /// copies).
    pub images: Tensor,
    /// `[B]` i64 class indices.
    pub labels: Tensor,
    /// Group index per sample.
    pub groups: Vec<usize>,
    /// Cache sample index per sample.
    pub indices: Vec<usize>,
    /// Whether each sample is a noise copy.
    pub noise: Vec<bool>,
}

const STREAM_ORDER: u64 = 0x0DE5;
const STREAM_FLIP: u64 = 0xF11B;
const STREAM_NOISE: u64 = 0x4015;
const STREAM_AUGMENT: u64 = 0xA06E;

/// One sample's crop (normalized CHW) and the geometric draws still to apply to it.
struct CroppedSample {
    chw: Vec<f32>,
    h: usize,
    w: usize,
    flips: (bool, bool),
    transpose: bool,
}

/// Iterator over an epoch's batches (`Item = Result<Batch>`).
#[derive(Debug)]
pub struct Batches<'a> {
    cache: &'a Cache,
    order: Vec<Slot>,
    sigma: f32,
    opts: LoaderOptions,
    epoch: u64,
    position: usize,
    lut: [[f32; 256]; 3],
}

/// Per-channel `(v/255 - mean)/std` for every byte value; a zero std (a
/// constant channel) divides by 1 instead.
pub fn normalize_lut(mean: [f32; 3], std: [f32; 3]) -> [[f32; 256]; 3] {
    let mut lut = [[0f32; 256]; 3];
    for c in 0..3 {
        let s = if std[c] > 1e-6 { std[c] } else { 1.0 };
        for (v, out) in lut[c].iter_mut().enumerate() {
            *out = (v as f32 / 255.0 - mean[c]) / s;
        }
    }
    lut
}

/// HWC RGB8 `src` (side `s`) -> CHW f32 normalized via `lut`, optionally
/// flipped left-right and/or top-bottom, into `dst` (`3*s*s`).
pub fn hwc_to_chw(
    src: &[u8],
    s: usize,
    lut: &[[f32; 256]; 3],
    flip_h: bool,
    flip_v: bool,
    dst: &mut [f32],
) {
    let plane = s * s;
    for y in 0..s {
        let sy = if flip_v { s - 1 - y } else { y };
        for x in 0..s {
            let sx = if flip_h { s - 1 - x } else { x };
            let p = (sy * s + sx) * 3;
            let o = y * s + x;
            dst[o] = lut[0][src[p] as usize];
            dst[plane + o] = lut[1][src[p + 1] as usize];
            dst[2 * plane + o] = lut[2][src[p + 2] as usize];
        }
    }
}

impl<'a> Batches<'a> {
    /// The batches of `epoch` over `plan`'s slots.
    pub fn new(
        cache: &'a Cache,
        plan: &BalancePlan,
        opts: LoaderOptions,
        epoch: u64,
    ) -> Result<Self> {
        Self::resume(cache, plan, opts, SamplerState { epoch, position: 0 })
    }

    /// Continues an epoch from a saved [`SamplerState`].
    pub fn resume(
        cache: &'a Cache,
        plan: &BalancePlan,
        opts: LoaderOptions,
        state: SamplerState,
    ) -> Result<Self> {
        ensure!(opts.batch_size > 0, "batch size must be > 0");
        if let Some(t) = opts.train_size {
            ensure!(t > 0, "train size must be > 0");
        }
        opts.augment.validate()?;
        ensure!(
            state.position <= plan.slots.len(),
            "sampler position {} beyond the plan's {} slots",
            state.position,
            plan.slots.len()
        );
        if let Some(s) = plan.slots.iter().find(|s| s.index >= cache.len()) {
            anyhow::bail!(
                "plan slot index {} beyond the cache's {} samples",
                s.index,
                cache.len()
            );
        }
        let mut order = plan.slots.clone();
        if opts.shuffle {
            Rng::from_parts(&[opts.seed, state.epoch, STREAM_ORDER]).shuffle(&mut order);
        }
        Ok(Batches {
            cache,
            order,
            sigma: plan.sigma,
            opts,
            epoch: state.epoch,
            position: state.position,
            lut: normalize_lut(cache.mean(), cache.std()),
        })
    }

    /// The state after the last batch handed out (save it in checkpoints).
    pub fn state(&self) -> SamplerState {
        SamplerState {
            epoch: self.epoch,
            position: self.position,
        }
    }

    /// Batches in a whole epoch.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.order.len(), self.opts.batch_size);
        if self.opts.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Side of the images handed out.
    pub fn output_size(&self) -> usize {
        self.opts.train_size.unwrap_or(self.cache.image_size())
    }

    /// The flips of the sample at epoch position `pos` (the same draws as before augmentation
    /// existed, so flips-only runs are unchanged).
    fn flips(&self, pos: usize) -> (bool, bool) {
        if self.opts.flip {
            let mut r = Rng::from_parts(&[self.opts.seed, self.epoch, pos as u64, STREAM_FLIP]);
            (r.coin(), r.coin())
        } else {
            (false, false)
        }
    }

    /// Images through the per-sample geometric path: crop, resize, flips, transpose.
    fn geometry_batch(&self, start: usize, slots: &[Slot]) -> Result<Tensor> {
        let s = self.cache.image_size();
        let out = self.output_size();
        let aug = self.opts.augment;
        let (seed, epoch) = (self.opts.seed, self.epoch);
        let crops: Vec<CroppedSample> = slots
            .par_iter()
            .enumerate()
            .map_init(
                || vec![0u8; self.cache.sample_bytes()],
                |px, (k, slot)| -> Result<_> {
                    self.cache.read_image(slot.index, px)?;
                    let mut r = Rng::from_parts(&[seed, epoch, (start + k) as u64, STREAM_AUGMENT]);
                    let transpose = aug.dihedral && r.coin();
                    let bx = match &aug.crop {
                        Some(c) => c.draw(s, &mut r),
                        None => (0, 0, s, s),
                    };
                    let mut chw = vec![0f32; 3 * bx.2 * bx.3];
                    augment::crop_to_chw(px, s, bx, &self.lut, &mut chw);
                    Ok(CroppedSample {
                        chw,
                        h: bx.3,
                        w: bx.2,
                        flips: self.flips(start + k),
                        transpose,
                    })
                },
            )
            .collect::<Result<_>>()?;
        let views = crops
            .iter()
            .map(|c| augment::finish_geometry(&c.chw, c.h, c.w, out, c.flips, c.transpose))
            .collect::<Result<Vec<_>>>()
            .context("augmenting batch")?;
        Ok(Tensor::cat(&views, 0))
    }

    fn make(&self, start: usize, slots: &[Slot]) -> Result<Batch> {
        let mut images = if self.opts.augment.per_sample_geometry() {
            self.geometry_batch(start, slots)?
        } else {
            self.plain_batch(start, slots)?
        };
        let b = slots.len();
        let (seed, epoch) = (self.opts.seed, self.epoch);
        if let Some(j) = &self.opts.augment.jitter {
            let factors: Vec<[f32; 3]> = (0..b)
                .map(|k| {
                    // A stream of its own, so switching the crop on or off leaves jitter alone.
                    let mut r =
                        Rng::from_parts(&[seed, epoch, (start + k) as u64, STREAM_AUGMENT, 1]);
                    j.draw(&mut r)
                })
                .collect();
            images = Jitter::apply(&images, &factors, self.cache.mean(), self.cache.std());
        }
        self.finish(start, slots, images)
    }

    /// Images through the original path: whole tiles, flips, one batched resize.
    fn plain_batch(&self, start: usize, slots: &[Slot]) -> Result<Tensor> {
        let s = self.cache.image_size();
        let per = 3 * s * s;
        let b = slots.len();
        let mut buf = vec![0f32; b * per];
        buf.par_chunks_mut(per)
            .zip(slots.par_iter())
            .enumerate()
            .try_for_each_init(
                || vec![0u8; self.cache.sample_bytes()],
                |px, (k, (dst, slot))| -> Result<()> {
                    self.cache.read_image(slot.index, px)?;
                    let (fh, fv) = self.flips(start + k);
                    hwc_to_chw(px, s, &self.lut, fh, fv, dst);
                    Ok(())
                },
            )?;
        let mut images = Tensor::from_slice(&buf).view([b as i64, 3, s as i64, s as i64]);
        let out = self.output_size();
        if out != s {
            images = images
                .f_internal_upsample_bilinear2d_aa([out as i64, out as i64], false, None, None)
                .context("resizing batch")?;
        }
        Ok(images)
    }
}

impl Batches<'_> {
    fn finish(&self, start: usize, slots: &[Slot], mut images: Tensor) -> Result<Batch> {
        let b = slots.len();
        let out = self.output_size();
        let (seed, epoch) = (self.opts.seed, self.epoch);
        if self.sigma > 0.0 && slots.iter().any(|sl| sl.noise) {
            let per_out = 3 * out * out;
            let mut noise = vec![0f32; b * per_out];
            noise
                .par_chunks_mut(per_out)
                .zip(slots.par_iter())
                .enumerate()
                .for_each(|(k, (dst, slot))| {
                    if slot.noise {
                        Rng::from_parts(&[seed, epoch, (start + k) as u64, STREAM_NOISE])
                            .fill_normal(dst, self.sigma);
                    }
                });
            images += Tensor::from_slice(&noise).view([b as i64, 3, out as i64, out as i64]);
        }
        let labels: Vec<i64> = slots
            .iter()
            .map(|sl| self.cache.label(sl.index) as i64)
            .collect();
        Ok(Batch {
            images,
            labels: Tensor::from_slice(&labels).to_kind(Kind::Int64),
            groups: slots.iter().map(|sl| self.cache.group(sl.index)).collect(),
            indices: slots.iter().map(|sl| sl.index).collect(),
            noise: slots.iter().map(|sl| sl.noise).collect(),
        })
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        let n = self.order.len();
        let start = self.position;
        let end = (start + self.opts.batch_size).min(n);
        if start >= n || (self.opts.drop_last && end - start < self.opts.batch_size) {
            return None;
        }
        let slots = self.order[start..end].to_vec();
        self.position = end;
        Some(self.make(start, &slots))
    }
}
