//! Quantization-aware fine-tuning of a folded float model (`derm-train qat`).
//!
//! Post-training quantization of MobileNetV3 loses several points (docs/results.md), so the
//! folded float graph, the network the runtime computes, is fine-tuned with the int8
//! rounding in its forward pass:
//! - weights: per output channel, symmetric, `round(w / s).clamp(-127, 127) * s` with
//!   `s = max |w[c]| / 127` (the rule of `derm_codegen::quant::ptq`);
//! - activations: every key of `derm_codegen::quant::activation_keys` (the input, each op's
//!   output, hardswish pre-activations, squeeze-excite pooled and hidden vectors) through
//!   `(clamp(round(x / s) + z, -128, 127) - z) * s` with the scale and zero point that
//!   calibration chose; those parameters stay fixed, so the int8 file written afterwards
//!   quantizes with exactly the grid the weights were trained for.
//!
//! Gradients pass straight through the rounding, and are zero where an activation is
//! clipped (its value does not move the output there). With `--scale-lr` the grids' scales
//! are trained too (learned step size, [`fake_quant_learned`]; zero points stay), and the
//! int8 file is written on the trained grids. The squeeze-excite gate stays float:
//! the int8 kernels compute it in Q15, far finer than int8.
//!
//! The loss is distillation from the same float model (KL divergence of the softened
//! outputs): the aim is the float model's behaviour on the int8 grid, not a new model.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use derm_codegen::ir::{self, Graph, ModelFile, QParams};
use derm_codegen::quant::{self, WEIGHT_MAX};
use tch::{Kind, Tensor, nn};

use crate::train::checkpoint;
use crate::train::optim::{OptimConfig, Optimizer};

/// The int8 grid of every activation of `model` (one entry per
/// `quant::activation_keys_with(graph, float_hardswish)`: the ops in `float_hardswish`
/// compute their hardswish in f32 and have no pre-activation grid): the ranges
/// `calibration` observed, chosen by `method`, as `quantize_with` would set them.
pub fn activation_grid(
    model: &ModelFile,
    calibration: &derm_codegen::quant::ptq::Calibration,
    method: derm_codegen::quant::ptq::RangeMethod,
    float_hardswish: &[String],
) -> Result<BTreeMap<String, QParams>> {
    let mut params = BTreeMap::new();
    for key in quant::activation_keys_with(&model.graph, float_hardswish) {
        let (lo, hi) = calibration
            .range(&key, method)
            .with_context(|| format!("activation {key} was never observed in calibration"))?;
        params.insert(key, quant::params_for_range(lo, hi));
    }
    Ok(params)
}

/// Straight-through fake quantization of an activation on the grid of `p`.
///
/// Forward: the value the int8 tensor represents. Backward: identity inside the
/// representable range, zero where the value was clipped.
pub fn fake_quant(x: &Tensor, p: QParams) -> Tensor {
    let s = f64::from(p.scale);
    let z = f64::from(p.zero_point);
    let (lo, hi) = ((-128.0 - z) * s, (127.0 - z) * s);
    let clipped = x.clamp(lo, hi);
    let q = ((x / s).round() + z).clamp(-128.0, 127.0);
    let y = (q - z) * s;
    &clipped + (y - &clipped).detach()
}

/// Straight-through fake quantization of a feature map `[N, C, H, W]` with one grid per
/// channel (`params[c]`), as [`fake_quant`] does with one grid for the whole tensor.
pub fn fake_quant_per_channel(x: &Tensor, params: &[QParams]) -> Result<Tensor> {
    ensure!(
        x.dim() == 4 && x.size()[1] == params.len() as i64,
        "a per-channel grid of {} channels for a value of shape {:?}",
        params.len(),
        x.size()
    );
    let column = |v: Vec<f32>| Tensor::from_slice(&v).to_kind(x.kind()).view([1, -1, 1, 1]);
    let s = column(params.iter().map(|p| p.scale).collect());
    let z = column(params.iter().map(|p| p.zero_point as f32).collect());
    let lo = (-&z - 128.0) * &s;
    let hi = (-&z + 127.0) * &s;
    let clipped = x.clamp_tensor(Some(&lo), Some(&hi));
    let q = ((x / &s).round() + &z).clamp(-128.0, 127.0);
    let y = (q - &z) * &s;
    Ok(&clipped + (y - &clipped).detach())
}

/// Straight-through fake quantization of a weight `[out, ...]`, per output channel,
/// symmetric in `[-127, 127]` (an all-zero channel stays zero).
pub fn fake_quant_weight(w: &Tensor) -> Tensor {
    let out = w.size()[0];
    let max = w
        .detach()
        .abs()
        .view([out, -1])
        .amax([1i64].as_slice(), false);
    let shape: Vec<i64> = std::iter::once(out)
        .chain(std::iter::repeat_n(1, w.dim() - 1))
        .collect();
    let s = (max / f64::from(WEIGHT_MAX))
        .clamp_min(f64::from(f32::MIN_POSITIVE))
        .view(shape.as_slice());
    let q = (w / &s)
        .round()
        .clamp(-f64::from(WEIGHT_MAX), f64::from(WEIGHT_MAX))
        * &s;
    w + (q - w).detach()
}

/// Straight-through fake quantization on a grid whose scale is `scale` (a scalar tensor
/// that may require gradients) and whose zero point is `zero_point`.
///
/// Forward: as [`fake_quant`]. Backward: to `x` as [`fake_quant`]; to the scale the
/// learned-step-size gradient (Esser et al., LSQ): `round(x / s) - x / s` inside the range,
/// the clipped grid end `q - z` outside it, so the scale trades rounding error against
/// clipping.
pub fn fake_quant_learned(x: &Tensor, scale: &Tensor, zero_point: i32) -> Tensor {
    let z = f64::from(zero_point);
    let v = x / scale;
    let r = &v + (v.round() - &v).detach();
    ((r + z).clamp(-128.0, 127.0) - z) * scale
}

/// Learned activation scales: each grid's scale is `s0 * exp(gain * t)` with `t` a trained
/// variable starting at 0, so the optimizer's step on `t` moves the scale by about
/// `gain * lr` of itself (the weights' learning rate would barely move it).
#[derive(Debug)]
struct LearnedScales {
    log: BTreeMap<String, Tensor>,
    gain: f64,
}

/// A model file's folded graph with trainable weights and the int8 grid in its forward.
#[derive(Debug)]
pub struct QatGraph {
    graph: Graph,
    params: BTreeMap<String, QParams>,
    /// Pre-activation keys of the float hardswish ops: values the int8 model does not round.
    float_keys: Vec<String>,
    weights: BTreeMap<String, Tensor>,
    /// When the grids' scales are trained too.
    learned: Option<LearnedScales>,
    /// Feature maps on one grid per channel (`ir::Quantization::channel_scales`): each
    /// channel's parameters (the shared zero point, its own scale).
    channel: BTreeMap<String, Vec<QParams>>,
}

/// The int8 rounding as [`super::tch_graph::walk`] applies it: weights per channel,
/// activations on their calibrated grids.
impl super::tch_graph::Values for QatGraph {
    fn weight(&self, name: &str) -> Result<Tensor> {
        Ok(fake_quant_weight(self.var(name)?))
    }

    fn bias(&self, name: &str) -> Result<Tensor> {
        self.var(name).map(Tensor::shallow_clone)
    }

    fn value(&self, x: Tensor, key: &str) -> Result<Tensor> {
        if self.float_keys.iter().any(|k| k == key) {
            return Ok(x);
        }
        if let Some(grids) = self.channel.get(key) {
            return fake_quant_per_channel(&x, grids);
        }
        let p = self
            .params
            .get(key)
            .with_context(|| format!("no quantization parameters for {key}"))?;
        match &self.learned {
            Some(l) => {
                let t = l
                    .log
                    .get(key)
                    .with_context(|| format!("no scale for {key}"))?;
                let scale = (t * l.gain).exp() * f64::from(p.scale);
                Ok(fake_quant_learned(&x, &scale, p.zero_point))
            }
            None => Ok(fake_quant(&x, *p)),
        }
    }
}

impl QatGraph {
    /// The graph of the float `model`, its weights copied into variables of `vs`, and the
    /// activation parameters `params` (one per `quant::activation_keys_with(graph,
    /// float_hardswish)`; the hardswish of the ops in `float_hardswish` is not rounded
    /// before the activation, as the int8 model computes it in f32).
    pub fn new(
        model: &ModelFile,
        params: BTreeMap<String, QParams>,
        float_hardswish: &[String],
        vs: &nn::Path<'_>,
    ) -> Result<Self> {
        ensure!(
            model.graph.quantization.is_none(),
            "quantization-aware training starts from a float model; this one is already int8"
        );
        for key in quant::activation_keys_with(&model.graph, float_hardswish) {
            ensure!(
                params.contains_key(&key),
                "no quantization parameters for activation {key}"
            );
        }
        let mut weights = BTreeMap::new();
        for op in &model.graph.ops {
            for name in op.tensor_names() {
                let v = model
                    .tensor_f32(name)
                    .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
                let shape: Vec<i64> = model.tensors[name]
                    .shape
                    .iter()
                    .map(|&d| d as i64)
                    .collect();
                let init = Tensor::from_slice(&v).view(shape.as_slice());
                // Variable names cannot hold dots in a VarStore path.
                let var = vs.var_copy(&name.replace('.', "_"), &init);
                weights.insert(name.to_owned(), var);
            }
        }
        Ok(Self {
            graph: model.graph.clone(),
            params,
            float_keys: float_hardswish
                .iter()
                .map(|op| quant::pre_activation_key(op))
                .collect(),
            weights,
            learned: None,
            channel: BTreeMap::new(),
        })
    }

    /// The same graph with the feature maps of `scales` on one grid per channel
    /// (`ir::Quantization::channel_scales`: each channel its scale, all the zero point of
    /// the map's entry in the grid), as the int8 file will round them. Errors name a map
    /// that has no grid entry; learned scales ([`Self::learn_scales`]) are per tensor, so
    /// the two do not combine.
    pub fn with_channel_scales(mut self, scales: &BTreeMap<String, Vec<f32>>) -> Result<Self> {
        ensure!(
            self.learned.is_none() || scales.is_empty(),
            "learned grid scales and per-channel grids do not combine"
        );
        for (key, s) in scales {
            let p = self
                .params
                .get(key)
                .with_context(|| format!("a per-channel grid for {key}, which has no grid"))?;
            let grids = s
                .iter()
                .map(|&scale| QParams {
                    scale,
                    zero_point: p.zero_point,
                })
                .collect();
            self.channel.insert(key.clone(), grids);
        }
        Ok(self)
    }

    /// Trains every activation grid's scale too (zero points stay), with variables in
    /// `vs` whose optimizer steps move a scale by about `gain` times the learning rate of
    /// itself ([`fake_quant_learned`]).
    pub fn learn_scales(&mut self, vs: &nn::Path<'_>, gain: f64) -> Result<()> {
        ensure!(
            gain > 0.0 && gain.is_finite(),
            "the scales' gain must be positive, got {gain}"
        );
        ensure!(
            self.channel.is_empty(),
            "learned grid scales (--scale-lr) and per-channel grids (--channel-grids) do not \
             combine"
        );
        let log = self
            .params
            .keys()
            // Variable names cannot hold dots (nor, to be safe, colons) in a VarStore path.
            .map(|k| {
                let name = format!("scale_{}", k.replace(['.', ':'], "_"));
                (k.clone(), vs.zeros(&name, &[]))
            })
            .collect();
        self.learned = Some(LearnedScales { log, gain });
        Ok(())
    }

    /// The activation grids as trained: the calibrated ones, with learned scales when
    /// [`Self::learn_scales`] was called. Errors name a grid whose scale is not a positive
    /// normal `f32`.
    pub fn grid(&self) -> Result<BTreeMap<String, QParams>> {
        let Some(l) = &self.learned else {
            return Ok(self.params.clone());
        };
        let mut out = BTreeMap::new();
        for (key, p) in &self.params {
            let t = l.log[key].double_value(&[]);
            let scale = (f64::from(p.scale) * (t * l.gain).exp()) as f32;
            ensure!(
                scale.is_normal() && scale > 0.0,
                "the learned scale of {key} is {scale} (started at {})",
                p.scale
            );
            out.insert(
                key.clone(),
                QParams {
                    scale,
                    zero_point: p.zero_point,
                },
            );
        }
        Ok(out)
    }

    fn var(&self, name: &str) -> Result<&Tensor> {
        self.weights
            .get(name)
            .with_context(|| format!("tensor {name} is not in the model file"))
    }

    /// Logits `[N, C]` of a batch `[N, 3, H, W]` with fake quantization everywhere the int8
    /// model rounds (gradients flow to the weights).
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let mut layers = self.layers(input)?;
        Ok(layers.pop().context("the graph has no ops")?.1)
    }

    /// Every op's output in execution order, as [`forward`](Self::forward) computes them
    /// (the values the int8 model holds, dequantized; the logits last).
    pub fn layers(&self, input: &Tensor) -> Result<Vec<(String, Tensor)>> {
        super::tch_graph::walk(&self.graph, input, self)
    }

    /// A copy of `model` (the file this graph was built from) with the trained weights, in
    /// f32: the float model to quantize with the same activation parameters.
    pub fn to_model_file(&self, model: &ModelFile) -> Result<ModelFile> {
        let mut tensors = model.tensors.clone();
        for (name, w) in &self.weights {
            let shape = model.tensors[name].shape.clone();
            let v = Vec::<f32>::try_from(w.detach().to_kind(Kind::Float).contiguous().view(-1))?;
            tensors.insert(name.clone(), ir::Tensor::from_f32(shape, &v));
        }
        let mut graph = model.graph.clone();
        graph.tensors.clear();
        ModelFile::new(graph, tensors).map_err(|e| anyhow::anyhow!("fine-tuned model: {e}"))
    }
}

/// Settings of a [`QatTrainer`].
#[derive(Debug, Clone, Copy)]
pub struct QatOptions {
    /// Adam learning rate.
    pub lr: f64,
    /// Softmax temperature of the distillation loss.
    pub temperature: f64,
    /// Train the activation grids' scales with this learning rate on their logarithms
    /// (`None`: the calibrated grids stay fixed).
    pub scale_lr: Option<f64>,
}

/// Fine-tunes a float model on the int8 grid, distilling from the model itself: the caller
/// feeds batches to [`step`](Self::step), then takes the fine-tuned float model from
/// [`finish`](Self::finish) and quantizes it with the same activation parameters.
#[derive(Debug)]
pub struct QatTrainer {
    teacher: super::TchGraph,
    // Owns the variables that `qat` reads and the optimizer updates.
    vs: nn::VarStore,
    qat: QatGraph,
    opt: Optimizer,
    lr: f64,
    temperature: f64,
}

impl QatTrainer {
    /// A trainer for the float `model` on the grid `params` (one entry per
    /// `quant::activation_keys_with(graph, float_hardswish)`; see [`QatGraph::new`]).
    pub fn new(
        model: &ModelFile,
        params: BTreeMap<String, QParams>,
        float_hardswish: &[String],
        opts: QatOptions,
    ) -> Result<Self> {
        Self::starting_from(
            model,
            model,
            params,
            &BTreeMap::new(),
            float_hardswish,
            opts,
        )
    }

    /// [`Self::new`] whose trained network starts from `start` (the same graph as `model`,
    /// e.g. with its biases corrected for the rounding) while the loss still distils from
    /// `model`, with the feature maps of `channel_scales` on per-channel grids
    /// ([`QatGraph::with_channel_scales`]).
    pub fn starting_from(
        model: &ModelFile,
        start: &ModelFile,
        params: BTreeMap<String, QParams>,
        channel_scales: &BTreeMap<String, Vec<f32>>,
        float_hardswish: &[String],
        opts: QatOptions,
    ) -> Result<Self> {
        ensure!(
            model.graph.ops == start.graph.ops,
            "quantization-aware training: the starting network's graph differs from the model's"
        );
        ensure!(
            opts.lr > 0.0 && opts.lr.is_finite(),
            "learning rate must be positive, got {}",
            opts.lr
        );
        ensure!(
            opts.temperature > 0.0 && opts.temperature.is_finite(),
            "temperature must be positive, got {}",
            opts.temperature
        );
        let teacher = super::TchGraph::new(model)?;
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let mut qat = QatGraph::new(start, params, float_hardswish, &vs.root())?
            .with_channel_scales(channel_scales)?;
        if let Some(scale_lr) = opts.scale_lr {
            ensure!(
                scale_lr > 0.0 && scale_lr.is_finite(),
                "the scales' learning rate must be positive, got {scale_lr}"
            );
            // One optimizer for everything: the gain turns its step into `scale_lr`.
            qat.learn_scales(&vs.root(), scale_lr / opts.lr)?;
        }
        // Adam: the training optimizer without weight decay (its state can be checkpointed).
        let opt = Optimizer::new(
            &vs,
            OptimConfig {
                weight_decay: 0.0,
                ..OptimConfig::adamw()
            },
        )?;
        Ok(Self {
            teacher,
            vs,
            qat,
            opt,
            lr: opts.lr,
            temperature: opts.temperature,
        })
    }

    /// Saves the trained weights, the optimizer's state and `state` (the caller's
    /// progress record) to `path`, atomically, as a training checkpoint.
    pub fn save<T: serde::Serialize>(&self, path: &std::path::Path, state: &T) -> Result<()> {
        checkpoint::save(path, &self.vs, &self.opt, state)
    }

    /// Restores the weights and the optimizer's state saved by [`Self::save`] into this
    /// trainer (built from the same model and grid) and returns the saved `state`.
    pub fn resume<T: serde::de::DeserializeOwned>(&mut self, path: &std::path::Path) -> Result<T> {
        let ck = checkpoint::CheckpointFile::open(path)?;
        ck.load_model(&self.vs)?;
        ck.load_optimizer(&mut self.opt)?;
        ck.state()
    }

    /// The fake-quantized network being trained.
    pub fn graph(&self) -> &QatGraph {
        &self.qat
    }

    /// One optimizer step on a batch `[B, 3, H, W]` (normalized for the model); returns
    /// the distillation loss.
    pub fn step(&mut self, x: &Tensor) -> Result<f64> {
        self.step_weighted(x, None)
    }

    /// [`Self::step`] with each image's loss weighted by `weights` (`[B]`, for example its
    /// class's weight, so the rare classes' outputs count as they did in training; the
    /// loss is the weighted mean).
    pub fn step_weighted(&mut self, x: &Tensor, weights: Option<&Tensor>) -> Result<f64> {
        let t = self.temperature;
        let soft = tch::no_grad(|| self.teacher.forward(x))?
            .f_div_scalar(t)?
            .softmax(-1, Kind::Float);
        let logp = (self.qat.forward(x)? / t).log_softmax(-1, Kind::Float);
        // Cross-entropy against the softened float outputs (KL up to the teacher's
        // entropy), scaled by T^2 as in Hinton et al.
        let per_image = -(soft * logp).sum_dim_intlist(-1, false, Kind::Float);
        let mean = match weights {
            Some(w) => {
                ensure!(
                    w.size() == per_image.size(),
                    "{:?} weights for a batch of {:?}",
                    w.size(),
                    per_image.size()
                );
                (&per_image * w).sum(Kind::Float) / w.sum(Kind::Float).clamp_min(1e-12)
            }
            None => per_image.mean(Kind::Float),
        };
        let loss = mean * (t * t);
        let l = loss.double_value(&[]);
        ensure!(l.is_finite(), "qat loss is not finite ({l})");
        self.opt.zero_grad();
        loss.backward();
        self.opt.step(self.lr);
        Ok(l)
    }

    /// The fine-tuned float model: `model` (the file the trainer was built from) with the
    /// trained weights.
    pub fn finish(self, model: &ModelFile) -> Result<ModelFile> {
        self.qat.to_model_file(model)
    }

    /// The activation grids the int8 file must use: the calibrated ones, or with
    /// [`QatOptions::scale_lr`] the trained ones.
    pub fn grid(&self) -> Result<BTreeMap<String, QParams>> {
        self.qat.grid()
    }
}

/// The tiny synthetic model, `n` random calibration inputs (four scales of noise in turn) and
/// the min/max grid they give: the unit tests' int8 network.
#[cfg(test)]
pub(crate) fn tiny_model_and_grid(
    n: usize,
) -> (ModelFile, BTreeMap<String, QParams>, Vec<Vec<f32>>) {
    use derm_codegen::quant::ptq::{Calibration, RangeMethod};
    let model = derm_codegen::synthetic::SyntheticSpec::tiny(7)
        .build()
        .unwrap();
    let size = model.graph.input.shape[2];
    let inputs: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            Tensor::randn([3 * size as i64 * size as i64], tch::kind::FLOAT_CPU)
                .g_mul_scalar(1.0 + (i % 4) as f64)
                .try_into()
                .unwrap()
        })
        .collect();
    let mut cal = Calibration::new();
    for x in &inputs {
        cal.observe(&model, x).unwrap();
    }
    let params = activation_grid(&model, &cal, RangeMethod::MinMax, &[]).unwrap();
    (model, params, inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use derm_codegen::quant::ptq::{Calibration, RangeMethod};
    use derm_codegen::synthetic::{SyntheticSpec, smooth_input};

    /// A weighted step's loss is the weighted mean of the images' losses: a zero weight
    /// leaves an image out, equal weights give the plain mean.
    #[test]
    fn weighted_steps_weigh_each_image() {
        let model = SyntheticSpec::tiny(5).build().unwrap();
        let inputs: Vec<Vec<f32>> = (0..2).map(|s| smooth_input(&model, s)).collect();
        let mut cal = Calibration::new();
        for x in &inputs {
            cal.observe(&model, x).unwrap();
        }
        let grid = activation_grid(&model, &cal, RangeMethod::MinMax, &[]).unwrap();
        let opts = QatOptions {
            lr: 1e-4,
            temperature: 2.0,
            scale_lr: None,
        };
        let trainer = || QatTrainer::new(&model, grid.clone(), &[], opts).unwrap();
        let both = Tensor::from_slice(&inputs.concat()).view([2, 3, 32, 32]);
        let first = both.narrow(0, 0, 1);
        let w = |v: [f32; 2]| Tensor::from_slice(&v);
        let alone = trainer().step(&first).unwrap();
        let left_out = trainer()
            .step_weighted(&both, Some(&w([3.0, 0.0])))
            .unwrap();
        assert!((alone - left_out).abs() < 1e-6, "{alone} vs {left_out}");
        let plain = trainer().step(&both).unwrap();
        let equal = trainer()
            .step_weighted(&both, Some(&w([0.5, 0.5])))
            .unwrap();
        assert!((plain - equal).abs() < 1e-6, "{plain} vs {equal}");
        assert!(
            (plain - alone).abs() > 1e-6,
            "the two images' losses differ"
        );
        assert!(
            trainer()
                .step_weighted(&both, Some(&w([1.0, 1.0]).narrow(0, 0, 1)))
                .is_err()
        );
    }

    /// The scale's gradient is LSQ's: the rounding error `round(x/s) - x/s` inside the
    /// grid, the clipped end `q - z` outside; `x`'s gradient is 1 inside, 0 outside.
    #[test]
    fn learned_fake_quant_has_the_step_size_gradient() {
        let (s, z) = (0.5f64, -10i32);
        // Representable: (-128 - z) * s = -59 to (127 - z) * s = 68.5.
        let xs = [0.3f32, -1.26, 10.1, 80.0, -70.0];
        let x = Tensor::from_slice(&xs).set_requires_grad(true);
        let scale = Tensor::from(s as f32).set_requires_grad(true);
        let y = fake_quant_learned(&x, &scale, z);
        let fixed = fake_quant(
            &x,
            QParams {
                scale: s as f32,
                zero_point: z,
            },
        );
        assert_eq!(
            Vec::<f32>::try_from(&y).unwrap(),
            Vec::<f32>::try_from(&fixed).unwrap()
        );
        y.sum(Kind::Float).backward();
        let ds = scale.grad().double_value(&[]);
        let want: f64 = xs
            .iter()
            .map(|&v| {
                let v = f64::from(v) / s;
                let q = v.round() + f64::from(z);
                if q > 127.0 {
                    127.0 - f64::from(z)
                } else if q < -128.0 {
                    -128.0 - f64::from(z)
                } else {
                    v.round() - v
                }
            })
            .sum();
        assert!((ds - want).abs() < 1e-5, "{ds} vs {want}");
        let dx = Vec::<f32>::try_from(x.grad()).unwrap();
        assert_eq!(dx, [1.0, 1.0, 1.0, 0.0, 0.0]);
    }
}
