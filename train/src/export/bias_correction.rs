//! Empirical bias correction of the int8 network (`quantize --bias-correction`,
//! `qat --bias-correction`).
//!
//! Rounding shifts the mean of a layer's output: the weights' rounding `dW` moves it by `dW`
//! applied to the mean input, and the activations' rounding and clipping upstream move the
//! mean input itself. What int8 loses on MobileNetV3 is largely such shifts (docs/results.md,
//! "Where the int8 error is left"), and a shifted mean in front of the classifier moves
//! borderline images towards one class.
//!
//! The correction walks the rounded network (the fake-quantized graph of
//! [`super::qat::QatGraph`], which the int8 file computes) once over the calibration images,
//! in execution order. At each convolution, linear and squeeze-excite layer it sets the bias
//! so that the layer's mean pre-activation, over the calibration images and every output
//! pixel, equals the float network's:
//!
//! ```text
//! b' = b_float + mean(conv(E[x_float], W_float)) - mean(conv(E[x_rounded], W_rounded))
//! ```
//!
//! `E[x]` is the mean input map over the images (`[C, H, W]`); a convolution is linear, so
//! convolving the mean map gives the mean output at every pixel exactly, padding included.
//! Every layer sees the inputs that the corrections before it produced (Nagel et al.,
//! "Data-free quantization", 2019, correct each layer's weights in turn the same way; here the
//! means are measured, so the activations' rounding is corrected too). The corrected biases
//! become the int8 file's `i32` biases when the model is quantized.

use std::cell::RefCell;
use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use derm_codegen::ir::{self, ModelFile, Op, QParams};
use tch::{Kind, Tensor};

use super::qat::QatGraph;
use super::tch_graph::{TchGraph, Values, walk};

/// What [`bias_corrected`] changed.
#[derive(Debug, Clone)]
pub struct BiasCorrection {
    /// The biases corrected (one per convolution, linear layer and squeeze-excite layer).
    pub biases: usize,
    /// The largest change of a bias value, and the bias it is in.
    pub largest: (f32, String),
    /// The largest difference between the rounded and the float network's mean logit on
    /// the calibration images, before and after the correction.
    pub logit_shift: (f32, f32),
}

/// How a layer's bias is corrected: its input value, its weight, and the convolution's
/// geometry (`None`: a matrix-vector product).
struct Layer {
    input: String,
    weight: String,
    conv: Option<Conv>,
}

/// Stride, padding and groups of a convolution.
#[derive(Clone, Copy)]
struct Conv {
    stride: [i64; 2],
    padding: [i64; 2],
    groups: i64,
}

impl Layer {
    /// The layer's mean output over the images and pixels, without bias, for the mean
    /// input `mean` (`[C, H, W]` or `[C]`) and the weight `w`.
    fn mean_output(&self, mean: &Tensor, w: &Tensor) -> Tensor {
        match self.conv {
            Some(c) => mean
                .unsqueeze(0)
                .conv2d(w, None::<Tensor>, c.stride, c.padding, [1, 1], c.groups)
                .mean_dim([0i64, 2, 3].as_slice(), false, Kind::Float),
            None => w.reshape([w.size()[0], -1]).mv(mean),
        }
    }
}

/// Every layer whose bias is corrected, by bias name.
fn layers(graph: &ir::Graph) -> BTreeMap<String, Layer> {
    use derm_codegen::quant::{hidden_key, pooled_key};
    let mut out = BTreeMap::new();
    for op in &graph.ops {
        match op {
            Op::Conv2d(c) => {
                let conv = Conv {
                    stride: [c.stride[0] as i64, c.stride[1] as i64],
                    padding: [c.padding[0] as i64, c.padding[1] as i64],
                    groups: c.groups as i64,
                };
                out.insert(
                    c.bias.clone(),
                    Layer {
                        input: c.input.clone(),
                        weight: c.weight.clone(),
                        conv: Some(conv),
                    },
                );
            }
            Op::Linear(l) => {
                out.insert(
                    l.bias.clone(),
                    Layer {
                        input: l.input.clone(),
                        weight: l.weight.clone(),
                        conv: None,
                    },
                );
            }
            Op::SqueezeExcite(s) => {
                for (bias, input, weight) in [
                    (&s.fc1_bias, pooled_key(&s.name), &s.fc1_weight),
                    (&s.fc2_bias, hidden_key(&s.name), &s.fc2_weight),
                ] {
                    out.insert(
                        bias.clone(),
                        Layer {
                            input,
                            weight: weight.clone(),
                            conv: None,
                        },
                    );
                }
            }
            Op::Add(_) | Op::GlobalAvgPool(_) => {}
        }
    }
    out
}

/// The mean over the images (dimension 0) of every value the walk rounds, by key.
#[derive(Default)]
struct Means(RefCell<BTreeMap<String, Tensor>>);

impl Means {
    fn record(&self, key: &str, y: &Tensor) {
        let m = y.detach().mean_dim(0, false, Kind::Float);
        self.0.borrow_mut().insert(key.to_owned(), m);
    }

    fn get(&self, key: &str) -> Result<Tensor> {
        self.0
            .borrow()
            .get(key)
            .map(Tensor::shallow_clone)
            .with_context(|| format!("the mean of {key} was not recorded before its layer ran"))
    }
}

/// The float network, recording its mean values.
struct FloatMeans<'a> {
    float: &'a TchGraph,
    means: Means,
}

impl Values for FloatMeans<'_> {
    fn weight(&self, name: &str) -> Result<Tensor> {
        self.float.weight(name)
    }

    fn bias(&self, name: &str) -> Result<Tensor> {
        self.float.bias(name)
    }

    fn value(&self, x: Tensor, key: &str) -> Result<Tensor> {
        self.means.record(key, &x);
        Ok(x)
    }
}

/// The rounded network, each layer's bias corrected as the walk reaches it.
struct Correcting<'a> {
    rounded: &'a QatGraph,
    float: &'a TchGraph,
    float_means: &'a Means,
    layers: BTreeMap<String, Layer>,
    means: Means,
    corrected: RefCell<BTreeMap<String, Tensor>>,
}

impl Values for Correcting<'_> {
    fn weight(&self, name: &str) -> Result<Tensor> {
        self.rounded.weight(name)
    }

    fn bias(&self, name: &str) -> Result<Tensor> {
        let Some(layer) = self.layers.get(name) else {
            return self.rounded.bias(name);
        };
        let want = layer.mean_output(
            &self.float_means.get(&layer.input)?,
            &self.float.weight(&layer.weight)?,
        );
        let got = layer.mean_output(
            &self.means.get(&layer.input)?,
            &self.rounded.weight(&layer.weight)?,
        );
        let b = self.float.bias(name)? + want - got;
        self.corrected
            .borrow_mut()
            .insert(name.to_owned(), b.shallow_clone());
        Ok(b)
    }

    fn value(&self, x: Tensor, key: &str) -> Result<Tensor> {
        let y = self.rounded.value(x, key)?;
        self.means.record(key, &y);
        Ok(y)
    }
}

/// `tuned` (a float model file: `float` itself, or `float` fine-tuned for int8 by `qat`) with
/// every bias corrected so that, on the grid `params` (with the feature maps of
/// `channel_scales` on per-channel grids, and the hardswish of the ops in
/// `float_hardswish` in f32), each layer's mean pre-activation on the calibration images
/// `inputs` (`[3, H, W]` each, preprocessed) equals the float network `float`'s.
///
/// The rounded network runs all of `inputs` as one batch, so that each layer is corrected
/// for the inputs the corrections before it produced: 256 images at 128x128 take about 1 GB.
pub fn bias_corrected(
    float: &ModelFile,
    tuned: &ModelFile,
    params: BTreeMap<String, QParams>,
    channel_scales: &BTreeMap<String, Vec<f32>>,
    float_hardswish: &[String],
    inputs: &[Vec<f32>],
) -> Result<(ModelFile, BiasCorrection)> {
    ensure!(
        !inputs.is_empty(),
        "bias correction needs at least one calibration image"
    );
    ensure!(
        float.graph.ops == tuned.graph.ops,
        "bias correction: the fine-tuned model's graph differs from the float model's"
    );
    let [_, c, h, w] = float.graph.input.shape;
    let flat: Vec<f32> = inputs.concat();
    ensure!(
        flat.len() == inputs.len() * c * h * w,
        "bias correction: calibration images of {} values, the model takes {}x{}x{}",
        inputs.first().map_or(0, Vec::len),
        c,
        h,
        w
    );
    let x = Tensor::from_slice(&flat).view([inputs.len() as i64, c as i64, h as i64, w as i64]);

    let float_graph = TchGraph::new(float)?;
    let float_means = FloatMeans {
        float: &float_graph,
        means: Means::default(),
    };
    // The float network's means: batches of 32 keep its memory small (means add up).
    let mut sums: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut float_logits = Vec::new();
    for chunk in x.split(32, 0) {
        let n = chunk.size()[0] as f64;
        let mut out = tch::no_grad(|| walk(&float.graph, &chunk, &float_means))?;
        float_logits.push(out.pop().context("the graph has no ops")?.1);
        for (k, m) in std::mem::take(&mut *float_means.means.0.borrow_mut()) {
            let m = m * n;
            match sums.get_mut(&k) {
                Some(s) => *s += m,
                None => {
                    sums.insert(k, m);
                }
            }
        }
    }
    let total = inputs.len() as f64;
    let float_mean = Means(RefCell::new(
        sums.into_iter().map(|(k, s)| (k, s / total)).collect(),
    ));
    let float_logit_mean = Tensor::cat(&float_logits, 0).mean_dim(0, false, Kind::Float);

    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let rounded = QatGraph::new(tuned, params, float_hardswish, &vs.root())?
        .with_channel_scales(channel_scales)?;
    let logit_shift = |y: &Tensor| -> Result<f32> {
        Ok(f32::try_from(
            (y.mean_dim(0, false, Kind::Float) - &float_logit_mean)
                .abs()
                .max(),
        )?)
    };
    let before = logit_shift(&tch::no_grad(|| rounded.forward(&x))?)?;
    let correcting = Correcting {
        rounded: &rounded,
        float: &float_graph,
        float_means: &float_mean,
        layers: layers(&float.graph),
        means: Means::default(),
        corrected: RefCell::new(BTreeMap::new()),
    };
    let mut out = tch::no_grad(|| walk(&float.graph, &x, &correcting))?;
    let after = logit_shift(&out.pop().context("the graph has no ops")?.1)?;

    let mut tensors = tuned.tensors.clone();
    let mut largest = (0f32, String::new());
    let corrected = correcting.corrected.into_inner();
    for (name, b) in &corrected {
        let old = tuned.tensor_f32(name)?;
        let new = Vec::<f32>::try_from(b.to_kind(Kind::Float).contiguous().view(-1))?;
        ensure!(
            new.iter().all(|v| v.is_finite()),
            "bias correction made {name} non-finite"
        );
        for (o, n) in old.iter().zip(&new) {
            if (n - o).abs() > largest.0 {
                largest = ((n - o).abs(), name.clone());
            }
        }
        let shape = tuned.tensors[name].shape.clone();
        tensors.insert(name.clone(), ir::Tensor::from_f32(shape, &new));
    }
    let mut graph = tuned.graph.clone();
    graph.tensors.clear();
    let model =
        ModelFile::new(graph, tensors).map_err(|e| anyhow::anyhow!("bias-corrected model: {e}"))?;
    Ok((
        model,
        BiasCorrection {
            biases: corrected.len(),
            largest,
            logit_shift: (before, after),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_grid_inputs() -> (ModelFile, BTreeMap<String, QParams>, Vec<Vec<f32>>) {
        super::super::qat::tiny_model_and_grid(40)
    }

    #[test]
    fn corrected_biases_give_the_rounded_network_the_float_mean_logits() {
        let (model, params, inputs) = model_grid_inputs();
        let (fixed, report) = bias_corrected(
            &model,
            &model,
            params.clone(),
            &BTreeMap::new(),
            &[],
            &inputs,
        )
        .unwrap();
        // Rounding moved the mean logits, or the check below proves nothing.
        assert!(report.logit_shift.0 > 1e-3, "{report:?}");
        // The classifier is corrected last, for the inputs every earlier correction left,
        // so its mean output is the float one up to f32 sums.
        assert!(report.logit_shift.1 < 1e-4, "{report:?}");
        let n_layers = layers(&model.graph).len();
        assert_eq!(report.biases, n_layers);
        // The file's rounded network reproduces what the correction measured.
        let s = model.graph.input.shape[2] as i64;
        let x = Tensor::from_slice(&inputs.concat()).view([inputs.len() as i64, 3, s, s]);
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let q = QatGraph::new(&fixed, params, &[], &vs.root()).unwrap();
        let y = tch::no_grad(|| q.forward(&x)).unwrap();
        let f = TchGraph::new(&model).unwrap().forward(&x).unwrap();
        let shift = f64::try_from(
            (y.mean_dim(0, false, Kind::Float) - f.mean_dim(0, false, Kind::Float))
                .abs()
                .max(),
        )
        .unwrap();
        assert!(shift < 1e-4, "{shift}");
        // Only biases changed.
        for (name, t) in &model.tensors {
            if !layers(&model.graph).contains_key(name) {
                assert_eq!(t.data, fixed.tensors[name].data, "{name} changed");
            }
        }
    }

    #[test]
    fn a_mismatched_graph_or_image_is_refused() {
        let (model, params, inputs) = model_grid_inputs();
        let e =
            bias_corrected(&model, &model, params.clone(), &BTreeMap::new(), &[], &[]).unwrap_err();
        assert!(e.to_string().contains("at least one"), "{e}");
        let e = bias_corrected(
            &model,
            &model,
            params.clone(),
            &BTreeMap::new(),
            &[],
            &[vec![0.0; 5]],
        )
        .unwrap_err();
        assert!(e.to_string().contains("5 values"), "{e}");
        let mut other = model.clone();
        other.graph.ops.pop();
        let e = bias_corrected(&model, &other, params, &BTreeMap::new(), &[], &inputs).unwrap_err();
        assert!(e.to_string().contains("graph differs"), "{e}");
    }
}
