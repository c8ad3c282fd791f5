//! Student -> model file (`derm_codegen::ir`) and golden vectors.
//!
//! [`model_file`] folds every BatchNorm into its convolution with the eval-mode running
//! statistics (in f64, then rounded once to f32) and writes the network as the IR's op list:
//!
//! | op name | kind | tensors |
//! |---|---|---|
//! | `features.0.0` | conv2d 3x3/2, hardswish (reads the input, NCHW) | `features.0.0.{weight,bias}` |
//! | `features.N.block.M.0` | conv2d (expand 1x1, depthwise kxk, project 1x1) | `features.N.block.M.0.{weight,bias}` |
//! | `features.N.block.M` | squeeze_excite | `features.N.block.M.{fc1,fc2}.{weight,bias}` (`[out, in, 1, 1]`) |
//! | `features.N.add` | add (residual blocks) | |
//! | `features.L.0` | conv2d 1x1, hardswish | `features.L.0.{weight,bias}` |
//! | `avgpool` | global_avg_pool | |
//! | `classifier.0`, `classifier.3` | linear (hardswish after `classifier.0` in the torchvision head) | `classifier.K.{weight,bias}` |
//!
//! Every op's output value has the op's name. Tensor names are torchvision's, so a folded
//! weight can be traced back to the checkpoint; the `bias` of a folded conv is new (the
//! torchvision conv has none).
//!
//! [`golden`] computes the golden vectors: fixed seeded inputs, the student's logits in
//! tch (eval mode, no grad), and every op's output (`layer.<op name>`, `[N, C, H, W]` or
//! `[N, C]`) from running the exported graph's folded weights in tch, which also checks the
//! folding: export fails if those logits drift from the student's.
//!
//! [`Precision`] chooses how the weights are stored. Folding always happens in f32;
//! [`store_precision`] then converts the tensors (f16: IEEE half, round-to-nearest-even).
//! The runtime widens stored weights back to f32 and computes in f32, so the golden vectors
//! of a non-f32 export are recomputed from the widened weights ([`golden_stored`]): they
//! are what the stored file computes, and parity tests keep their 1e-4 tolerance.
//! int8 ([`quantize_int8`]) is post-training quantization by `derm_codegen::quant::ptq`
//! calibrated on training images; its golden logits are the int8 reference interpreter's
//! (`docs/int8.md`), which every int8 kernel must match exactly.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use derm_codegen::ir::{self, Graph, ModelFile, Op};
pub use derm_codegen::quant::ptq::RangeMethod;
use tch::{Kind, Tensor};

use crate::models::mobilenet_v3::{self, Classifier, ConvBnAct, SqueezeExcite};
use crate::student_file::Student;

/// Name of the graph's input value.
pub const INPUT_NAME: &str = "input";
/// Prefix of the per-layer tensors in the golden file.
pub const LAYER_PREFIX: &str = "layer.";

/// Provenance key recording the stored precision of the weights ([`Precision::name`]).
pub const PRECISION_KEY: &str = "precision";

/// How the exported weights and biases are stored. For f32 and f16 the arithmetic is f32
/// (the runtime widens stored weights); int8 computes in integers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// IEEE binary32, exactly the folded weights.
    #[default]
    F32,
    /// IEEE binary16 (round-to-nearest-even): half the bytes, about 3 decimal digits.
    F16,
    /// int8 weights and activations with integer arithmetic (`docs/int8.md`), calibrated
    /// on training images: a quarter of the bytes.
    Int8,
}

impl Precision {
    /// The name in the command line, the provenance and `derm_codegen::metadata::precision`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What goes into the model file besides the network.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Extra provenance entries (e.g. `command`, `git_commit`); merged over the student's.
    pub provenance: serde_json::Map<String, serde_json::Value>,
    /// Write every op's output (`layer.<op name>`) into the golden file (about 7.5 MB per
    /// 224x224 Small input); `false` keeps only `input` and `logits`.
    pub golden_layers: bool,
    /// Stored type of every weight and bias.
    pub precision: Precision,
    /// Calibration of an int8 export (required for [`Precision::Int8`]).
    pub calibration: Option<Calibrate>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            provenance: serde_json::Map::new(),
            golden_layers: true,
            precision: Precision::F32,
            calibration: None,
        }
    }
}

/// Calibration data of an int8 export.
#[derive(Debug, Clone)]
pub struct Calibrate {
    /// Preprocessed images (`[3, H, W]` each, normalized for the student): training
    /// images, never the ones the model is evaluated on.
    pub inputs: Vec<Vec<f32>>,
    /// How each activation's range is chosen.
    pub range: RangeMethod,
    /// Show a progress bar.
    pub progress: bool,
}

/// Golden vectors for one model file.
#[derive(Debug)]
pub struct Golden {
    /// Preprocessed inputs `[N, 3, H, W]`.
    pub input: Tensor,
    /// The logits `[N, C]` the stored model must produce: the student's (tch, eval, no
    /// grad) for an f32 export, the folded graph's on the widened weights otherwise.
    pub logits: Tensor,
    /// Every op's output from the folded graph (with the stored weights), in execution order.
    pub layers: Vec<(String, Tensor)>,
}

impl Golden {
    /// Writes `input`, `logits` and `layer.<op name>` tensors (f32) to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, &Tensor)> = vec![
            ("input".to_owned(), &self.input),
            ("logits".to_owned(), &self.logits),
        ];
        for (name, t) in &self.layers {
            named.push((format!("{LAYER_PREFIX}{name}"), t));
        }
        let owned: Vec<(String, Vec<usize>, Vec<u8>)> = named
            .into_iter()
            .map(|(n, t)| {
                let t = t.to_kind(Kind::Float).contiguous();
                let numel = t.numel();
                let mut data = vec![0u8; numel * 4];
                t.copy_data_u8(&mut data, numel);
                let shape = t.size().iter().map(|&d| d as usize).collect();
                (n, shape, data)
            })
            .collect();
        let views = owned
            .iter()
            .map(|(n, shape, data)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .map(|v| (n.as_str(), v))
                    .map_err(|e| anyhow::anyhow!("golden tensor {n}: {e}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = safetensors::serialize(views, None)
            .map_err(|e| anyhow::anyhow!("cannot serialize {}: {e}", path.display()))?;
        std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The golden file's name beside a model file: `x.safetensors` -> `x.golden.safetensors`.
pub fn golden_path(model: &Path) -> std::path::PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    model.with_file_name(format!("{stem}.golden.safetensors"))
}

fn to_f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    let t = t.to_kind(Kind::Float).contiguous().view(-1);
    Ok(Vec::<f32>::try_from(&t)?)
}

fn ir_tensor(t: &Tensor) -> Result<ir::Tensor> {
    let shape = t.size().iter().map(|&d| d as usize).collect();
    Ok(ir::Tensor::from_f32(shape, &to_f32_vec(t)?))
}

fn ir_act(a: mobilenet_v3::Activation) -> ir::Activation {
    match a {
        mobilenet_v3::Activation::None => ir::Activation::None,
        mobilenet_v3::Activation::Relu => ir::Activation::Relu,
        mobilenet_v3::Activation::Hardswish => ir::Activation::Hardswish,
    }
}

/// Folds a conv's BatchNorm (eval statistics) into `(weight, bias)` as f32 tensors.
pub fn fold_conv_bn(layer: &ConvBnAct) -> Result<(Tensor, Tensor)> {
    tch::no_grad(|| {
        let bn = &layer.bn;
        let (Some(gamma), Some(beta)) = (&bn.ws, &bn.bs) else {
            bail!("BatchNorm without affine parameters cannot be folded");
        };
        let d = |t: &Tensor| t.to_kind(Kind::Double);
        let scale = d(gamma) / (d(&bn.running_var) + mobilenet_v3::BN_EPS).sqrt();
        let w = d(&layer.conv.ws) * scale.view([-1, 1, 1, 1]);
        let b = d(beta) - d(&bn.running_mean) * &scale;
        Ok((w.to_kind(Kind::Float), b.to_kind(Kind::Float)))
    })
}

struct Builder {
    ops: Vec<Op>,
    tensors: BTreeMap<String, ir::Tensor>,
    last: String,
}

impl Builder {
    fn conv(&mut self, name: &str, layer: &ConvBnAct) -> Result<String> {
        let (w, b) = fold_conv_bn(layer)?;
        let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
        self.tensors.insert(wn.clone(), ir_tensor(&w)?);
        self.tensors.insert(bn.clone(), ir_tensor(&b)?);
        let k = layer.kernel as usize;
        let (s, p) = (layer.stride as usize, layer.padding as usize);
        self.ops.push(Op::Conv2d(ir::Conv2d {
            name: name.to_owned(),
            input: self.last.clone(),
            output: name.to_owned(),
            weight: wn,
            bias: bn,
            in_channels: layer.cin as usize,
            out_channels: layer.cout as usize,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            groups: layer.groups as usize,
            activation: ir_act(layer.act),
        }));
        self.last = name.to_owned();
        Ok(self.last.clone())
    }

    fn se(&mut self, name: &str, se: &SqueezeExcite) -> Result<()> {
        let mut names = Vec::new();
        for (fc, conv) in [("fc1", &se.fc1), ("fc2", &se.fc2)] {
            let wn = format!("{name}.{fc}.weight");
            let bn = format!("{name}.{fc}.bias");
            self.tensors.insert(wn.clone(), ir_tensor(&conv.ws)?);
            let bias = conv
                .bs
                .as_ref()
                .with_context(|| format!("{name}.{fc} has no bias"))?;
            self.tensors.insert(bn.clone(), ir_tensor(bias)?);
            names.push((wn, bn));
        }
        let [(w1, b1), (w2, b2)] = <[_; 2]>::try_from(names).expect("two fcs");
        self.ops.push(Op::SqueezeExcite(ir::SqueezeExcite {
            name: name.to_owned(),
            input: self.last.clone(),
            output: name.to_owned(),
            channels: se.channels as usize,
            squeeze_channels: se.squeeze as usize,
            fc1_weight: w1,
            fc1_bias: b1,
            fc2_weight: w2,
            fc2_bias: b2,
        }));
        self.last = name.to_owned();
        Ok(())
    }

    fn linear(&mut self, name: &str, fc: &tch::nn::Linear, act: ir::Activation) -> Result<()> {
        let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
        let size = fc.ws.size();
        self.tensors.insert(wn.clone(), ir_tensor(&fc.ws)?);
        let bias = fc
            .bs
            .as_ref()
            .with_context(|| format!("{name} has no bias"))?;
        self.tensors.insert(bn.clone(), ir_tensor(bias)?);
        self.ops.push(Op::Linear(ir::Linear {
            name: name.to_owned(),
            input: self.last.clone(),
            output: name.to_owned(),
            weight: wn,
            bias: bn,
            in_features: size[1] as usize,
            out_features: size[0] as usize,
            activation: act,
        }));
        self.last = name.to_owned();
        Ok(())
    }
}

/// Builds the model file of a student: BatchNorm folded, op list as in the module docs,
/// preprocessing, classes and groups from its metadata, and provenance (the student's,
/// `precision`, then `opts.provenance` over it). Tensors are f32 here whatever
/// `opts.precision` says ([`store_precision`] converts them), so the fold can be checked
/// on its own. The result has passed `derm_codegen`'s validation.
pub fn model_file(student: &Student, opts: &ExportOptions) -> Result<ModelFile> {
    let m = &student.model;
    let meta = &student.meta;
    let mut b = Builder {
        ops: Vec::new(),
        tensors: BTreeMap::new(),
        last: INPUT_NAME.to_owned(),
    };
    b.conv("features.0.0", &m.stem)?;
    for (i, block) in m.blocks.iter().enumerate() {
        let n = i + 1;
        let block_input = b.last.clone();
        let mut j = 0;
        if let Some(e) = &block.expand {
            b.conv(&format!("features.{n}.block.{j}.0"), e)?;
            j += 1;
        }
        b.conv(&format!("features.{n}.block.{j}.0"), &block.depthwise)?;
        j += 1;
        if let Some(se) = &block.se {
            b.se(&format!("features.{n}.block.{j}"), se)?;
            j += 1;
        }
        let projected = b.conv(&format!("features.{n}.block.{j}.0"), &block.project)?;
        if block.cfg.has_residual() {
            let name = format!("features.{n}.add");
            b.ops.push(Op::Add(ir::Add {
                name: name.clone(),
                inputs: [projected, block_input],
                output: name.clone(),
            }));
            b.last = name;
        }
    }
    b.conv(&format!("features.{}.0", m.blocks.len() + 1), &m.last_conv)?;
    b.ops.push(Op::GlobalAvgPool(ir::GlobalAvgPool {
        name: "avgpool".into(),
        input: b.last.clone(),
        output: "avgpool".into(),
    }));
    b.last = "avgpool".into();
    match &m.classifier {
        Classifier::Paper { fc } => b.linear("classifier.0", fc, ir::Activation::None)?,
        Classifier::Torchvision { fc1, fc2, .. } => {
            b.linear("classifier.0", fc1, ir::Activation::Hardswish)?;
            b.linear("classifier.3", fc2, ir::Activation::None)?;
        }
    }
    let [h, w] = meta.input_size.map(|d| d as usize);
    let mut provenance = match serde_json::to_value(&meta.provenance)? {
        serde_json::Value::Object(o) => o,
        _ => serde_json::Map::new(),
    };
    provenance.insert(
        "student".into(),
        serde_json::json!({
            "arch": format!("mobilenet_v3_{}", meta.arch),
            "head": meta.head.name(),
            "batchnorm": "folded (eval running statistics)",
        }),
    );
    provenance.insert(
        PRECISION_KEY.into(),
        serde_json::Value::String(opts.precision.name().into()),
    );
    provenance.extend(opts.provenance.clone());
    let graph = Graph {
        format: ir::FORMAT_NAME.into(),
        version: ir::MIN_FORMAT_VERSION,
        input: ir::InputSpec {
            name: INPUT_NAME.into(),
            shape: [1, 3, h, w],
            layout: ir::Layout::Nchw,
        },
        output: b.last.clone(),
        preprocess: ir::Preprocess {
            resize: [h, w],
            // Training tiles are centred squares of the photo (`derm-train prepare`).
            crop: ir::Crop::Centre,
            mean: meta.mean,
            std: meta.std,
        },
        classes: meta.class_names.clone(),
        groups: meta.group_names.clone(),
        ops: b.ops,
        tensors: BTreeMap::new(),
        provenance,
        quantization: None,
    };
    ModelFile::new(graph, b.tensors).map_err(|e| anyhow::anyhow!("exported graph is invalid: {e}"))
}

/// `n` fixed inputs `[n, 3, H, W]`: uniform pixels in [0, 1] from `seed`, normalized with
/// the student's mean/std, i.e. what preprocessing of a random photo produces.
pub fn golden_inputs(student: &Student, n: i64, seed: i64) -> Tensor {
    let [h, w] = student.meta.input_size.map(i64::from);
    tch::manual_seed(seed);
    let px = Tensor::rand([n, 3, h, w], (Kind::Float, tch::Device::Cpu));
    let mean = Tensor::from_slice(&student.meta.mean).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&student.meta.std).view([1, 3, 1, 1]);
    (px - mean) / std
}

/// A model file's network in tch, weights materialized once: the folded graph that the
/// runtime runs, executed by libtorch (the baseline) or used to compute per-layer goldens.
#[derive(Debug)]
pub struct TchGraph {
    graph: Graph,
    weights: BTreeMap<String, Tensor>,
}

impl TchGraph {
    /// Converts every tensor of `model` (f16 and int8 dequantized to f32).
    pub fn new(model: &ModelFile) -> Result<Self> {
        let mut weights = BTreeMap::new();
        for op in &model.graph.ops {
            for name in op.tensor_names() {
                let v = model.tensor_f32(name)?;
                let shape: Vec<i64> = model.tensors[name]
                    .shape
                    .iter()
                    .map(|&d| d as i64)
                    .collect();
                weights.insert(
                    name.to_owned(),
                    Tensor::from_slice(&v).view(shape.as_slice()),
                );
            }
        }
        Ok(Self {
            graph: model.graph.clone(),
            weights,
        })
    }

    fn w(&self, name: &str) -> Result<&Tensor> {
        self.weights
            .get(name)
            .with_context(|| format!("tensor {name} is not in the model file"))
    }

    /// Runs the ops on a batch `[N, 3, H, W]` (no grad) and returns every op's output in
    /// execution order (`[N, C, H, W]` or `[N, C]`).
    pub fn layers(&self, input: &Tensor) -> Result<Vec<(String, Tensor)>> {
        let act = |x: Tensor, a: ir::Activation| match a {
            ir::Activation::None => x,
            ir::Activation::Relu => x.relu(),
            ir::Activation::Hardswish => x.hardswish(),
        };
        let mut values: BTreeMap<&str, Tensor> = BTreeMap::new();
        values.insert(self.graph.input.name.as_str(), input.shallow_clone());
        let get = |values: &BTreeMap<&str, Tensor>, n: &str| -> Result<Tensor> {
            values
                .get(n)
                .map(Tensor::shallow_clone)
                .with_context(|| format!("value {n} is read before it is written"))
        };
        let mut out = Vec::with_capacity(self.graph.ops.len());
        tch::no_grad(|| -> Result<()> {
            for op in &self.graph.ops {
                let y = match op {
                    Op::Conv2d(c) => {
                        let x = get(&values, &c.input)?;
                        let y = x.conv2d(
                            self.w(&c.weight)?,
                            Some(self.w(&c.bias)?),
                            [c.stride[0] as i64, c.stride[1] as i64],
                            [c.padding[0] as i64, c.padding[1] as i64],
                            [1, 1],
                            c.groups as i64,
                        );
                        act(y, c.activation)
                    }
                    Op::SqueezeExcite(s) => {
                        let x = get(&values, &s.input)?;
                        let (c, q) = (s.channels as i64, s.squeeze_channels as i64);
                        let pooled = x.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
                        let h = pooled
                            .linear(
                                &self.w(&s.fc1_weight)?.view([q, c]),
                                Some(self.w(&s.fc1_bias)?),
                            )
                            .relu();
                        let g = h
                            .linear(
                                &self.w(&s.fc2_weight)?.view([c, q]),
                                Some(self.w(&s.fc2_bias)?),
                            )
                            .hardsigmoid();
                        x * g.view([-1, c, 1, 1])
                    }
                    Op::Add(a) => get(&values, &a.inputs[0])? + get(&values, &a.inputs[1])?,
                    Op::GlobalAvgPool(p) => {
                        get(&values, &p.input)?.mean_dim([2i64, 3].as_slice(), false, Kind::Float)
                    }
                    Op::Linear(l) => {
                        let x = get(&values, &l.input)?;
                        act(
                            x.linear(self.w(&l.weight)?, Some(self.w(&l.bias)?)),
                            l.activation,
                        )
                    }
                };
                values.insert(op.output(), y.shallow_clone());
                out.push((op.name().to_owned(), y));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The logits `[N, C]` of a batch `[N, 3, H, W]` (no grad).
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let mut layers = self.layers(input)?;
        Ok(layers.pop().context("the graph has no ops")?.1)
    }
}

/// Largest |a - b| over the batch, divided by the smallest per-sample logit range of `b`.
pub fn relative_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    let diff = f64::try_from((a - b).abs().max())?;
    let range = b.amax([1i64].as_slice(), false) - b.amin([1i64].as_slice(), false);
    let range = f64::try_from(range.min())?;
    Ok(diff / range.max(f64::MIN_POSITIVE))
}

/// Golden vectors for `model` (the export of `student`): `n` inputs from `seed`, the
/// student's eval logits and every folded layer's output. Fails if the folded graph's logits
/// are further than 1e-4 of the logit range from the student's (the folding is wrong).
pub fn golden(student: &Student, model: &ModelFile, n: i64, seed: i64) -> Result<Golden> {
    let input = golden_inputs(student, n, seed);
    let logits = tch::no_grad(|| student.model.forward_t(&input, false));
    let layers = TchGraph::new(model)?.layers(&input)?;
    let folded = &layers.last().context("the graph has no ops")?.1;
    let err = relative_error(folded, &logits)?;
    if !err.is_finite() || err > 1e-4 {
        bail!(
            "the exported graph disagrees with the student: max |diff| is {err:.2e} of the \
             logit range (limit 1e-4)"
        );
    }
    Ok(Golden {
        input,
        logits,
        layers,
    })
}

/// `model` (all f32) with every tensor stored in `precision` (f32 or f16; int8 needs
/// calibration: [`quantize_int8`]). Errors name a tensor whose values do not fit (an f16
/// overflow would silently become infinity).
pub fn store_precision(model: &ModelFile, precision: Precision) -> Result<ModelFile> {
    if precision == Precision::Int8 {
        bail!("int8 is not a storage type: quantize with calibration images (quantize_int8)");
    }
    let mut tensors = BTreeMap::new();
    for (name, t) in &model.tensors {
        let values = t
            .to_f32()
            .with_context(|| format!("tensor {name} is {}, expected f32 or f16", t.dtype))?;
        let stored = match precision {
            Precision::F32 => ir::Tensor::from_f32(t.shape.clone(), &values),
            Precision::F16 => {
                let mut data = Vec::with_capacity(values.len() * 2);
                for (i, &v) in values.iter().enumerate() {
                    // `from_f32` rounds to nearest, ties to even.
                    let h = half::f16::from_f32(v);
                    if v.is_finite() && !h.is_finite() {
                        bail!(
                            "tensor {name}[{i}] = {v} does not fit in f16 (largest {})",
                            half::f16::MAX
                        );
                    }
                    data.extend_from_slice(&h.to_le_bytes());
                }
                ir::Tensor {
                    dtype: ir::DType::F16,
                    shape: t.shape.clone(),
                    data,
                }
            }
            Precision::Int8 => unreachable!("refused above"),
        };
        tensors.insert(name.clone(), stored);
    }
    let mut graph = model.graph.clone();
    // `ModelFile::new` rebuilds the table rows from the new tensors.
    graph.tensors.clear();
    ModelFile::new(graph, tensors).map_err(|e| anyhow::anyhow!("{precision} model is invalid: {e}"))
}

/// Golden vectors of `stored`, the export of `folded` in a narrower precision: per-layer
/// outputs and logits recomputed in tch from its widened weights, because those, not the
/// student's, are what the runtime computes from the file. `folded` is the f32 golden of
/// the same inputs ([`golden`], which checked the fold).
pub fn golden_stored(folded: &Golden, stored: &ModelFile) -> Result<Golden> {
    let layers = TchGraph::new(stored)?.layers(&folded.input)?;
    let logits = layers
        .last()
        .context("the graph has no ops")?
        .1
        .shallow_clone();
    Ok(Golden {
        input: folded.input.shallow_clone(),
        logits,
        layers,
    })
}

/// The int8 model of `folded` (an f32 export): activation ranges observed on
/// `cal.inputs` by the float reference interpreter, then `derm_codegen::quant::ptq::quantize`.
pub fn quantize_int8(folded: &ModelFile, cal: &Calibrate) -> Result<ModelFile> {
    use derm_codegen::quant::ptq::{Calibration, quantize};
    if cal.inputs.is_empty() {
        bail!("int8 export needs at least one calibration image");
    }
    let mut c = Calibration::new();
    let mut progress = crate::train::progress::EpochProgress::new(
        "calibrate",
        cal.inputs.len() as u64,
        cal.progress,
    );
    for x in &cal.inputs {
        c.observe(folded, x)
            .map_err(|e| anyhow::anyhow!("calibration: {e}"))?;
        progress.step(1, 0.0);
    }
    progress.finish();
    quantize(folded, &c, cal.range).map_err(|e| anyhow::anyhow!("int8 quantization: {e}"))
}

/// Golden vectors of the int8 model `stored`: `folded`'s inputs and the int8 reference
/// interpreter's logits (the values every int8 kernel must reproduce exactly). The
/// per-layer outputs are left out.
pub fn golden_int8(folded: &Golden, stored: &ModelFile) -> Result<Golden> {
    let net = crate::infer::ModelFileNet::new(stored.clone())?;
    let logits = net.logits(&folded.input)?;
    Ok(Golden {
        input: folded.input.shallow_clone(),
        logits,
        layers: Vec::new(),
    })
}

/// What [`export`] wrote.
#[derive(Debug)]
pub struct ExportReport {
    /// The model file.
    pub model_path: std::path::PathBuf,
    /// The golden file.
    pub golden_path: std::path::PathBuf,
    /// Ops in the graph.
    pub ops: usize,
    /// Parameters stored (after folding).
    pub params: usize,
    /// Folded graph vs student logits, as a fraction of the logit range (f32 weights).
    pub fold_error: f64,
    /// Stored weights' precision.
    pub precision: Precision,
    /// Golden logits of the stored model vs the student's, as a fraction of the logit
    /// range: the folding plus the rounding of the weights (equals `fold_error` for f32).
    pub precision_error: f64,
}

/// Reads the student file `checkpoint`, writes the model file `out` and its golden file
/// ([`golden_path`]) with `golden_n` inputs from `seed`.
pub fn export(
    checkpoint: &Path,
    out: &Path,
    opts: &ExportOptions,
    golden_n: i64,
    seed: i64,
) -> Result<ExportReport> {
    let student = crate::student_file::load(checkpoint)?;
    export_student(&student, out, opts, golden_n, seed)
}

/// [`export`] for a student already in memory.
pub fn export_student(
    student: &Student,
    out: &Path,
    opts: &ExportOptions,
    golden_n: i64,
    seed: i64,
) -> Result<ExportReport> {
    let folded = model_file(student, opts)?;
    let g = golden(student, &folded, golden_n, seed)?;
    let fold_error = relative_error(&g.layers.last().context("no ops")?.1, &g.logits)?;
    let (model, mut g, precision_error) = match opts.precision {
        Precision::F32 => (folded, g, fold_error),
        Precision::F16 => {
            let stored = store_precision(&folded, opts.precision)?;
            let sg = golden_stored(&g, &stored)?;
            let err = relative_error(&sg.logits, &g.logits)?;
            (stored, sg, err)
        }
        Precision::Int8 => {
            let cal = opts
                .calibration
                .as_ref()
                .context("an int8 export needs calibration images")?;
            let mut stored = quantize_int8(&folded, cal)?;
            stored
                .graph
                .provenance
                .insert(PRECISION_KEY.into(), "int8".into());
            let sg = golden_int8(&g, &stored)?;
            let err = relative_error(&sg.logits, &g.logits)?;
            (stored, sg, err)
        }
    };
    if !opts.golden_layers {
        g.layers.clear();
    }
    model
        .write(out)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
    let gp = golden_path(out);
    g.write(&gp)?;
    Ok(ExportReport {
        model_path: out.to_path_buf(),
        golden_path: gp,
        ops: model.graph.ops.len(),
        params: model.tensors.values().filter_map(ir::Tensor::numel).sum(),
        fold_error,
        precision: opts.precision,
        precision_error,
    })
}

/// Adds `bias[c]` to the output bias of the student's last Linear (`classifier.0` for the
/// paper head, `classifier.3` for torchvision's), so every logit `c` moves by `bias[c]`.
pub fn add_logit_bias(student: &Student, bias: &[f32]) -> Result<()> {
    let name = match student.meta.head {
        crate::models::mobilenet_v3::Head::Paper => "classifier.0.bias",
        crate::models::mobilenet_v3::Head::Torchvision => "classifier.3.bias",
    };
    let vars = student.vs.variables();
    let b = vars
        .get(name)
        .with_context(|| format!("student has no {name}"))?;
    anyhow::ensure!(
        b.size() == [bias.len() as i64],
        "--logit-bias has {} numbers, the classifier has {:?} outputs",
        bias.len(),
        b.size()
    );
    anyhow::ensure!(
        bias.iter().all(|v| v.is_finite()),
        "--logit-bias must be finite: {bias:?}"
    );
    tch::no_grad(|| {
        let mut b = b.shallow_clone();
        let _ = b.g_add_(&Tensor::from_slice(bias));
    });
    Ok(())
}

/// Gives every BatchNorm of a student random running statistics and affine parameters (as
/// after training) and widens the classifier, from `seed`. A fresh init has mean 0, var 1,
/// gamma 1, beta 0 and near-equal logits, which would let a wrong BatchNorm fold or a
/// dropped bias pass a parity test; tests of the export path call this first.
pub fn perturb_for_parity_tests(student: &Student, seed: i64) {
    tch::manual_seed(seed);
    tch::no_grad(|| {
        let all = student.vs.variables();
        let mut vars: Vec<(&String, &Tensor)> = all.iter().collect();
        // HashMap order is random; a fixed order makes the draws reproducible.
        vars.sort_by(|a, b| a.0.cmp(b.0));
        for (name, v) in vars {
            let mut v = v.shallow_clone();
            let n = v.size();
            let r = |lo: f64, hi: f64| {
                Tensor::rand(&n, (Kind::Float, tch::Device::Cpu)) * (hi - lo) + lo
            };
            let is_bn = all.contains_key(
                &name
                    .rsplit_once('.')
                    .map(|(p, _)| format!("{p}.running_var"))
                    .unwrap_or_default(),
            );
            if name.ends_with(".running_var") {
                v.copy_(&r(0.5, 2.0));
            } else if name.ends_with(".running_mean") {
                v.copy_(&r(-0.2, 0.2));
            } else if is_bn && name.ends_with(".weight") {
                v.copy_(&r(0.5, 1.5));
            } else if is_bn && name.ends_with(".bias") {
                v.copy_(&r(-0.1, 0.1));
            } else if name.starts_with("classifier") && name.ends_with(".bias") {
                v.copy_(&r(-0.5, 0.5));
            } else if name.starts_with("classifier") {
                v.copy_(&(v.shallow_clone() * 20.0));
            }
        }
    });
}
