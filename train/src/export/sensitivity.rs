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
//! The rounding is the straight-through fake quantization that `derm-train qat` trains
//! through ([`super::qat::fake_quant`], [`super::qat::fake_quant_weight`]); the int8 file
//! computes the same grid in integers (the squeeze-excite gate in Q15, hardswish by table),
//! so the fully quantized row here approximates, and does not replace, the int8 reference
//! interpreter's score.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use derm_codegen::ir::{Graph, ModelFile, Op, QParams};
use derm_codegen::quant;
use tch::Tensor;

use super::qat::{fake_quant, fake_quant_weight};
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
        self.s.float.bias(name)
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
        Ok(fake_quant(&x, *p))
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
    /// The float `model` with `params`, one grid per `quant::activation_keys` entry (from
    /// [`super::qat::activation_grid`]).
    pub fn new(model: &ModelFile, params: BTreeMap<String, QParams>) -> Result<Self> {
        anyhow::ensure!(
            model.graph.quantization.is_none(),
            "the sensitivity analysis starts from a float model; this one is already int8"
        );
        for key in quant::activation_keys(&model.graph) {
            anyhow::ensure!(
                params.contains_key(&key),
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
        })
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
        quant::activation_keys(self.float.graph())
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
    use derm_codegen::quant::ptq::{Calibration, RangeMethod};

    fn model_and_grid() -> (ModelFile, BTreeMap<String, QParams>, Vec<Vec<f32>>) {
        let model = derm_codegen::synthetic::SyntheticSpec::tiny(7)
            .build()
            .unwrap();
        let size = model.graph.input.shape[2];
        let inputs: Vec<Vec<f32>> = (0..4)
            .map(|i| {
                Tensor::randn([3 * size as i64 * size as i64], tch::kind::FLOAT_CPU)
                    .g_mul_scalar(1.0 + i as f64)
                    .try_into()
                    .unwrap()
            })
            .collect();
        let mut cal = Calibration::new();
        for x in &inputs {
            cal.observe(&model, x).unwrap();
        }
        let params =
            crate::export::qat::activation_grid(&model, &cal, RangeMethod::MinMax, &[]).unwrap();
        (model, params, inputs)
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
        let s = Sensitivity::new(&model, params.clone()).unwrap();
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
        let s = Sensitivity::new(&model, params).unwrap();
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
}
