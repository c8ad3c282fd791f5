//! Which tensors of a float model lose accuracy under int8 (`derm-train quant-sensitivity`).
//!
//! The folded float graph runs in tch with the int8 rounding switched on for a chosen set
//! of tensors only: the weights (per output channel, as `quantize` stores them) and any
//! subset of the activations (`quant::activation_keys`, on the grids calibration chose).
//! Quantizing one activation alone shows how much damage its grid does by itself; leaving
//! one out of the fully quantized network shows how much of the total loss it carries.
//! Both are measured against the float network's predictions, so no labels are needed to
//! find the culprit (PyTorch's Numeric Suite and TFLite's quantization debugger answer the
//! same question).
//!
//! Two changes to the int8 grid can be tried before building them: the hardswish of some ops
//! computed in f32 (their pre-activations are not rounded, as `--float-hardswish` does), and a
//! feature map on one grid per channel instead of one per tensor
//! ([`Sensitivity::per_channel_grids`]; the int8 format has no such grid).
//!
//! The rounding is the straight-through fake quantization that `derm-train qat` trains
//! through ([`super::qat::fake_quant`], [`super::qat::fake_quant_weight`]); the int8 file
//! computes the same grid in integers (the squeeze-excite gate in Q15, hardswish by table),
//! so the fully quantized row here approximates, and does not replace, the int8 reference
//! interpreter's score.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, ensure};
use derm_codegen::ir::{Graph, ModelFile, Op, QParams};
use derm_codegen::quant;
use tch::{Kind, Tensor};

use super::qat::{fake_quant, fake_quant_per_channel, fake_quant_weight};
use super::tch_graph::{TchGraph, Values, walk};

/// Which parts of the network are rounded to int8 in one forward pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rounding {
    /// The weight tensors rounded per output channel, by name (biases stay float: int32 in
    /// the file).
    pub weights: BTreeSet<String>,
    /// The activations (keys of `quant::activation_keys`) put on their int8 grids.
    pub activations: BTreeSet<String>,
}

/// A float model with every tensor's int8 rounding prepared, to run with any [`Rounding`].
#[derive(Debug)]
pub struct Sensitivity {
    float: TchGraph,
    quantized_weights: BTreeMap<String, Tensor>,
    params: BTreeMap<String, QParams>,
    /// The activation keys (no pre-activation of a float hardswish op).
    keys: Vec<String>,
    /// Feature maps rounded on one grid per channel instead of `params`' one grid.
    channel_params: BTreeMap<String, Vec<QParams>>,
    /// Bias corrections: bias name -> (its layer's weight name, the amount subtracted from
    /// the bias when that weight is rounded).
    corrections: BTreeMap<String, (String, Tensor)>,
}

/// One forward pass's view of the weights and values: [`Sensitivity`] under a [`Rounding`].
struct Partial<'a> {
    s: &'a Sensitivity,
    rounding: &'a Rounding,
}

impl Values for Partial<'_> {
    fn weight(&self, name: &str) -> Result<Tensor> {
        if self.rounding.weights.contains(name) {
            self.s
                .quantized_weights
                .get(name)
                .map(Tensor::shallow_clone)
                .with_context(|| format!("{name} is not a weight of the model"))
        } else {
            self.s.float.weight(name)
        }
    }

    fn bias(&self, name: &str) -> Result<Tensor> {
        let b = self.s.float.bias(name)?;
        match self.s.corrections.get(name) {
            Some((weight, shift)) if self.rounding.weights.contains(weight) => Ok(b - shift),
            _ => Ok(b),
        }
    }

    fn value(&self, x: Tensor, key: &str) -> Result<Tensor> {
        if !self.rounding.activations.contains(key) {
            return Ok(x);
        }
        let p = self
            .s
            .params
            .get(key)
            .with_context(|| format!("no quantization parameters for {key}"))?;
        match self.s.channel_params.get(key) {
            Some(per_channel) => fake_quant_per_channel(&x, per_channel),
            None => Ok(fake_quant(&x, *p)),
        }
    }
}

/// Each channel's statistics of every value of the float network on calibration images, from
/// one pass ([`Sensitivity::channel_statistics`]): what per-channel grids and bias correction
/// are derived from.
#[derive(Debug)]
pub struct ChannelStatistics(BTreeMap<String, ChannelStats>);

/// Each channel's statistics of one value over the calibration images (and its pixels).
#[derive(Debug)]
struct ChannelStats {
    /// Dimensions of the value (4 for a feature map `[N, C, H, W]`, 2 for a vector).
    dims: i64,
    /// Sum per channel (`f64`), and the number of values summed per channel.
    sum: Tensor,
    count: i64,
    /// Lowest and highest value per channel.
    lo: Tensor,
    hi: Tensor,
}

/// The float network, recording [`ChannelStats`] of every value it computes.
struct StatsRecorder<'a> {
    float: &'a TchGraph,
    stats: RefCell<BTreeMap<String, ChannelStats>>,
}

impl Values for StatsRecorder<'_> {
    fn weight(&self, name: &str) -> Result<Tensor> {
        self.float.weight(name)
    }

    fn bias(&self, name: &str) -> Result<Tensor> {
        self.float.bias(name)
    }

    fn value(&self, x: Tensor, key: &str) -> Result<Tensor> {
        let c = x.size()[1];
        let t = x.transpose(0, 1).reshape([c, -1]).to_kind(Kind::Double);
        let batch = ChannelStats {
            dims: x.dim() as i64,
            sum: t.sum_dim_intlist(1, false, Kind::Double),
            count: t.size()[1],
            lo: t.amin([1i64].as_slice(), false),
            hi: t.amax([1i64].as_slice(), false),
        };
        let mut stats = self.stats.borrow_mut();
        match stats.get_mut(key) {
            Some(s) => {
                s.sum += batch.sum;
                s.count += batch.count;
                s.lo = s.lo.minimum(&batch.lo);
                s.hi = s.hi.maximum(&batch.hi);
            }
            None => {
                stats.insert(key.to_owned(), batch);
            }
        }
        Ok(x)
    }
}

/// The names of the weight tensors (not biases) that int8 stores per output channel.
fn weight_names(graph: &Graph) -> Vec<&str> {
    let mut names = Vec::new();
    for op in &graph.ops {
        match op {
            Op::Conv2d(c) => names.push(c.weight.as_str()),
            Op::Linear(l) => names.push(l.weight.as_str()),
            Op::SqueezeExcite(s) => {
                names.push(s.fc1_weight.as_str());
                names.push(s.fc2_weight.as_str());
            }
            Op::Add(_) | Op::GlobalAvgPool(_) => {}
        }
    }
    names
}

impl Sensitivity {
    /// The float `model` with `params`, one grid per
    /// `quant::activation_keys_with(graph, float_hardswish)` entry (from
    /// [`super::qat::activation_grid`]): the ops of `float_hardswish` compute their hardswish
    /// in f32, so their pre-activations are never rounded.
    pub fn new(
        model: &ModelFile,
        params: BTreeMap<String, QParams>,
        float_hardswish: &[String],
    ) -> Result<Self> {
        ensure!(
            model.graph.quantization.is_none(),
            "the sensitivity analysis starts from a float model; this one is already int8"
        );
        let keys = quant::activation_keys_with(&model.graph, float_hardswish);
        for key in &keys {
            ensure!(
                params.contains_key(key),
                "no quantization parameters for activation {key}"
            );
        }
        let float = TchGraph::new(model)?;
        let mut quantized_weights = BTreeMap::new();
        for name in weight_names(&model.graph) {
            let q = tch::no_grad(|| float.weight(name).map(|w| fake_quant_weight(&w)))?;
            quantized_weights.insert(name.to_owned(), q);
        }
        Ok(Self {
            float,
            quantized_weights,
            params,
            keys,
            channel_params: BTreeMap::new(),
            corrections: BTreeMap::new(),
        })
    }

    /// Bias correction (Nagel et al., "Data-free quantization", 2019): rounding a layer's
    /// weights by `dW` shifts its output's mean by `dW` applied to the mean input; each
    /// convolution and linear layer's bias absorbs that shift, with each input channel's
    /// mean in `stats` (the float network's values on calibration images; padding taps are
    /// counted as the mean, not as zero). Applies
    /// wherever the layer's weight is rounded. Squeeze-excite's layers are left as they are.
    pub fn bias_correction(&mut self, stats: &ChannelStatistics) -> Result<()> {
        let mean = |name: &str| -> Result<Tensor> {
            let st = stats
                .0
                .get(name)
                .with_context(|| format!("{name} was never computed"))?;
            Ok((&st.sum / st.count as f64).to_kind(Kind::Float))
        };
        let mut corrections = BTreeMap::new();
        for op in &self.float.graph().ops {
            let (input, weight, bias, groups) = match op {
                Op::Conv2d(c) => (&c.input, &c.weight, &c.bias, c.groups),
                Op::Linear(l) => (&l.input, &l.weight, &l.bias, 1),
                _ => continue,
            };
            let q = self
                .quantized_weights
                .get(weight)
                .with_context(|| format!("{weight} is not a weight of the model"))?;
            let dw = tch::no_grad(|| self.float.weight(weight).map(|w| q - w))?;
            let out = dw.size()[0];
            // Sum over the kernel's taps: [out, inputs per group].
            let dw = dw
                .reshape([out, dw.size()[1], -1])
                .sum_dim_intlist(2, false, Kind::Float);
            let mu = mean(input)?;
            let shift = if groups == 1 {
                dw.matmul(&mu)
            } else {
                ensure!(
                    dw.size()[1] == 1 && mu.size()[0] == out,
                    "{weight}: bias correction handles dense and depthwise layers, not {groups} groups"
                );
                dw.squeeze_dim(1) * mu
            };
            corrections.insert(bias.clone(), (weight.clone(), shift));
        }
        self.corrections = corrections;
        Ok(())
    }

    /// Each channel's sum, count and range of every value of the float network on
    /// `calibration` (`[N, 3, H, W]`, run `batch` images at a time), in one pass.
    pub fn channel_statistics(
        &self,
        calibration: &Tensor,
        batch: i64,
    ) -> Result<ChannelStatistics> {
        let rec = StatsRecorder {
            float: &self.float,
            stats: RefCell::new(BTreeMap::new()),
        };
        for chunk in calibration.split(batch.max(1), 0) {
            tch::no_grad(|| walk(self.float.graph(), &chunk, &rec))?;
        }
        Ok(ChannelStatistics(rec.stats.into_inner()))
    }

    /// Puts each feature map of `keys` on one grid per channel: each channel's range in
    /// `stats` (the float network's values on calibration images), widened to hold 0, as `quant::params_for_range` sets a tensor's. A key that is
    /// not an activation of the model, or names a vector rather than a feature map, is
    /// refused by name.
    pub fn per_channel_grids(&mut self, keys: &[String], stats: &ChannelStatistics) -> Result<()> {
        for key in keys {
            ensure!(
                self.keys.contains(key),
                "{key} is not an activation that the int8 model rounds (see the keys in \
                 sensitivity.json)"
            );
        }
        for key in keys {
            let st = stats
                .0
                .get(key)
                .with_context(|| format!("{key} was never computed"))?;
            ensure!(
                st.dims == 4,
                "{key} is a value of {} dimensions, not a feature map [N, C, H, W]: a \
                 per-channel grid is for feature maps",
                st.dims
            );
            let lo = Vec::<f32>::try_from(st.lo.to_kind(Kind::Float))?;
            let hi = Vec::<f32>::try_from(st.hi.to_kind(Kind::Float))?;
            let grid = lo
                .iter()
                .zip(&hi)
                .map(|(&l, &h)| quant::params_for_range(l, h))
                .collect();
            self.channel_params.insert(key.clone(), grid);
        }
        Ok(())
    }

    /// Every weight tensor that int8 stores per output channel, in execution order.
    pub fn weight_names(&self) -> Vec<String> {
        weight_names(self.float.graph())
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Every activation key, in execution order (the input first).
    pub fn keys(&self) -> Vec<String> {
        self.keys.clone()
    }

    /// Logits `[N, C]` of a preprocessed batch `[N, 3, H, W]` with `rounding` applied (no
    /// grad).
    pub fn logits(&self, x: &Tensor, rounding: &Rounding) -> Result<Tensor> {
        let v = Partial { s: self, rounding };
        let mut layers = tch::no_grad(|| walk(self.float.graph(), x, &v))?;
        Ok(layers.pop().context("the graph has no ops")?.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::qat::QatGraph;

    fn model_and_grid() -> (ModelFile, BTreeMap<String, QParams>, Vec<Vec<f32>>) {
        crate::export::qat::tiny_model_and_grid(4)
    }

    /// The largest absolute difference of two tensors of one shape.
    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        f64::try_from((a - b).abs().max()).unwrap()
    }

    fn batch(model: &ModelFile, inputs: &[Vec<f32>]) -> Tensor {
        let s = model.graph.input.shape[2] as i64;
        let flat: Vec<f32> = inputs.concat();
        Tensor::from_slice(&flat).view([inputs.len() as i64, 3, s, s])
    }

    #[test]
    fn nothing_rounded_is_the_float_graph_and_everything_is_the_qat_graph() {
        let (model, params, inputs) = model_and_grid();
        let x = batch(&model, &inputs);
        let s = Sensitivity::new(&model, params.clone(), &[]).unwrap();
        let none = Rounding {
            weights: BTreeSet::new(),
            activations: BTreeSet::new(),
        };
        let float = TchGraph::new(&model).unwrap().forward(&x).unwrap();
        assert_eq!(max_diff(&s.logits(&x, &none).unwrap(), &float), 0.0);
        let all = Rounding {
            weights: s.weight_names().into_iter().collect(),
            activations: s.keys().into_iter().collect(),
        };
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let qat = QatGraph::new(&model, params, &[], &vs.root()).unwrap();
        let want = tch::no_grad(|| qat.forward(&x)).unwrap();
        let got = s.logits(&x, &all).unwrap();
        assert_eq!(max_diff(&got, &want), 0.0);
        // The rounding really changes something, or the two checks above prove nothing.
        assert!(max_diff(&want, &float) > 0.0);
    }

    #[test]
    fn one_activation_rounds_only_its_own_value() {
        let (model, params, inputs) = model_and_grid();
        let x = batch(&model, &inputs);
        let s = Sensitivity::new(&model, params, &[]).unwrap();
        let keys = s.keys();
        let last = keys.last().unwrap().clone();
        let one = Rounding {
            weights: BTreeSet::new(),
            activations: [last.clone()].into_iter().collect(),
        };
        let none = Rounding {
            weights: BTreeSet::new(),
            activations: BTreeSet::new(),
        };
        let d = max_diff(&s.logits(&x, &one).unwrap(), &s.logits(&x, &none).unwrap());
        assert!(d > 0.0, "rounding {last} changed nothing");
        let unknown = Rounding {
            weights: BTreeSet::new(),
            activations: ["no.such.value".to_owned()].into_iter().collect(),
        };
        let last_weight = s.weight_names().pop().unwrap();
        let w = Rounding {
            weights: [last_weight.clone()].into_iter().collect(),
            activations: BTreeSet::new(),
        };
        let d = max_diff(&s.logits(&x, &w).unwrap(), &s.logits(&x, &none).unwrap());
        assert!(d > 0.0, "rounding {last_weight} changed nothing");
        // A key no op produces is never asked for, so it rounds nothing.
        assert_eq!(
            max_diff(
                &s.logits(&x, &unknown).unwrap(),
                &s.logits(&x, &none).unwrap()
            ),
            0.0
        );
    }

    #[test]
    fn a_per_channel_grid_keeps_each_channel_within_half_its_own_step() {
        // Two channels of very different ranges: one grid for both rounds the small one to
        // a few levels; one grid each keeps every value within half of its channel's step.
        let x = Tensor::cat(
            &[
                Tensor::linspace(-0.1, 0.1, 50, tch::kind::FLOAT_CPU).view([1, 1, 5, 10]),
                Tensor::linspace(-20.0, 30.0, 50, tch::kind::FLOAT_CPU).view([1, 1, 5, 10]),
            ],
            1,
        );
        let grids = [
            derm_codegen::quant::params_for_range(-0.1, 0.1),
            derm_codegen::quant::params_for_range(-20.0, 30.0),
        ];
        let y = fake_quant_per_channel(&x, &grids).unwrap();
        for (c, g) in grids.iter().enumerate() {
            let err = max_diff(&y.select(1, c as i64), &x.select(1, c as i64));
            assert!(err <= f64::from(g.scale) / 2.0 + 1e-7, "channel {c}: {err}");
        }
        let whole = fake_quant(&x, derm_codegen::quant::params_for_range(-20.0, 30.0));
        let small = max_diff(&whole.select(1, 0), &x.select(1, 0));
        assert!(
            small > 10.0 * f64::from(grids[0].scale),
            "one grid for both: {small}"
        );
        // The same grid for every channel is the per-tensor rounding.
        let same = fake_quant_per_channel(&x, &[grids[1], grids[1]]).unwrap();
        assert_eq!(max_diff(&same, &whole), 0.0);
        // A grid of the wrong number of channels is refused.
        assert!(fake_quant_per_channel(&x, &grids[..1]).is_err());
    }

    #[test]
    fn per_channel_grids_fit_each_channel_of_a_feature_map_and_refuse_bad_keys() {
        let (model, params, inputs) = model_and_grid();
        let x = batch(&model, &inputs);
        let mut s = Sensitivity::new(&model, params.clone(), &[]).unwrap();
        // The first op's output (not a pre-activation: the value walk returns is the one
        // rounded).
        let key = model.graph.ops[0].output().to_owned();
        assert!(s.keys().contains(&key));
        let one = Rounding {
            weights: BTreeSet::new(),
            activations: [key.clone()].into_iter().collect(),
        };
        let first_output = |s: &Sensitivity, r: &Rounding| {
            let v = Partial { s, rounding: r };
            tch::no_grad(|| walk(s.float.graph(), &x, &v)).unwrap()[0]
                .1
                .shallow_clone()
        };
        let none = Rounding {
            weights: BTreeSet::new(),
            activations: BTreeSet::new(),
        };
        let float = first_output(&s, &none);
        let stats = s.channel_statistics(&x, 3).unwrap();
        s.per_channel_grids(std::slice::from_ref(&key), &stats)
            .unwrap();
        let grid = s.channel_params[&key].clone();
        assert_eq!(grid.len() as i64, float.size()[1]);
        // Each channel's range lies within the tensor's, so no channel's step is coarser.
        let whole = params[&key].scale;
        assert!(
            grid.iter().all(|g| g.scale <= whole * (1.0 + 1e-6)),
            "{grid:?} vs {whole}"
        );
        assert!(
            grid.iter().any(|g| g.scale < whole * 0.99),
            "{grid:?} vs {whole}"
        );
        // On the images the ranges came from nothing is clipped: every value is within half
        // of its own channel's step.
        let rounded = first_output(&s, &one);
        for (c, g) in grid.iter().enumerate() {
            let c = c as i64;
            let err = max_diff(&rounded.select(1, c), &float.select(1, c));
            assert!(
                err <= f64::from(g.scale) / 2.0 * (1.0 + 1e-5),
                "channel {c}: {err} vs {g:?}"
            );
        }
        assert!(max_diff(&rounded, &float) > 0.0, "{key} is not rounded");
        let e = s
            .per_channel_grids(&["no.such.value".to_owned()], &stats)
            .unwrap_err();
        assert!(e.to_string().contains("no.such.value"), "{e}");
        let v = s
            .keys()
            .into_iter()
            .find(|k| k.ends_with(":pooled"))
            .expect("the tiny model has a squeeze-excite");
        let e = s
            .per_channel_grids(std::slice::from_ref(&v), &stats)
            .unwrap_err();
        assert!(e.to_string().contains("not a feature map"), "{v}: {e}");
    }

    #[test]
    fn bias_correction_removes_the_mean_shift_of_rounded_weights() {
        // The last linear layer has no activation, so its output's mean moves by exactly
        // dW times its mean input: corrected on the images it was measured on, the mean of
        // the logits is the float one's.
        let (model, params, inputs) = model_and_grid();
        let x = batch(&model, &inputs);
        let mut s = Sensitivity::new(&model, params, &[]).unwrap();
        let last = s.weight_names().pop().unwrap();
        let last_only = Rounding {
            weights: [last.clone()].into_iter().collect(),
            activations: BTreeSet::new(),
        };
        let none = Rounding {
            weights: BTreeSet::new(),
            activations: BTreeSet::new(),
        };
        let float = s.logits(&x, &none).unwrap();
        let shift = |y: &Tensor| {
            f64::try_from((y - &float).mean_dim(0, false, Kind::Double).abs().max()).unwrap()
        };
        let before = shift(&s.logits(&x, &last_only).unwrap());
        let stats = s.channel_statistics(&x, 3).unwrap();
        s.bias_correction(&stats).unwrap();
        let after = shift(&s.logits(&x, &last_only).unwrap());
        assert!(before > 1e-4, "rounding {last} moved no mean: {before}");
        assert!(after < 1e-5, "{after} (before: {before})");
        // Nothing rounded, nothing corrected.
        assert_eq!(max_diff(&s.logits(&x, &none).unwrap(), &float), 0.0);
    }
}
