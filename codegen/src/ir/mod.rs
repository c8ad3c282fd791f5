//! The model file: one `.safetensors` file whose `__metadata__` holds the
//! graph as JSON under [`GRAPH_KEY`].
//!
//! The types here are the format; `docs/model-format.md` describes the same
//! thing for readers outside Rust. Writers (the trainer's export, the
//! synthetic builder) build a [`ModelFile`] and call [`ModelFile::write`];
//! readers call [`ModelFile::read`], which validates everything once so later
//! stages can trust shapes, names and parameters.

mod error;
mod io;
pub(crate) use io::read_file;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use error::IrError;
pub use validate::ValueShapes;

/// Metadata key of the graph JSON inside the safetensors header.
pub const GRAPH_KEY: &str = "derm.graph";
/// Value of the graph's `format` field.
pub const FORMAT_NAME: &str = "derm-model";
/// The newest graph version this reader understands. Version 2 added int8
/// activations ([`Graph::quantization`]) and `i32` tensors; version 3 added
/// [`Quantization::float_hardswish`] (files that do not use it are still
/// written as version 2); version 4 added [`Quantization::channel_scales`]
/// (written only by files that use them).
pub const FORMAT_VERSION: u32 = 4;
/// The oldest graph version this reader understands, and the one float
/// models are written with, so that readers of version 1 still read them.
pub const MIN_FORMAT_VERSION: u32 = 1;

/// A whole model: the graph plus the bytes of every tensor it names.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFile {
    /// Ops, shapes, preprocessing, labels, provenance and the tensor table.
    pub graph: Graph,
    /// Tensor data by name; every key is listed in `graph.tensors`.
    pub tensors: BTreeMap<String, Tensor>,
}

/// The JSON document stored under [`GRAPH_KEY`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graph {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// [`MIN_FORMAT_VERSION`] to [`FORMAT_VERSION`]; at least 2 when `quantization` is
    /// present, 3 when it lists [`Quantization::float_hardswish`] ops.
    pub version: u32,
    /// The network input.
    pub input: InputSpec,
    /// Name of the value holding the logits, shape `[classes.len()]`.
    pub output: String,
    /// How an RGB8 photo becomes the input tensor.
    pub preprocess: Preprocess,
    /// Class names in logit order.
    pub classes: Vec<String>,
    /// Names of the fairness groups (for example skin-tone groups) the model
    /// was evaluated on; informational.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Ops in execution order.
    pub ops: Vec<Op>,
    /// Every tensor stored in the file, by name.
    pub tensors: BTreeMap<String, TensorSpec>,
    /// Free-form record of how the file was made (command, dataset,
    /// metrics, git commit); must be a JSON object.
    #[serde(default)]
    pub provenance: serde_json::Map<String, serde_json::Value>,
    /// int8 activations (version 2): present, every op computes in integers
    /// as `docs/int8.md` specifies; absent, the model is float.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
}

/// The int8 activation parameters of a quantized model (`docs/int8.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantization {
    /// Per-tensor parameters by key: every value name except the graph
    /// output, plus `<op>:pre_activation` for hardswish convolutions and
    /// linears and `<op>:pooled`, `<op>:hidden` for squeeze-excite
    /// ([`crate::quant::activation_keys`] lists them for a graph).
    pub activations: BTreeMap<String, QParams>,
    /// Hardswish convolutions (or linears) whose activation runs in `f32` from the
    /// accumulator instead of through an int8 pre-activation and a 256-entry table
    /// (version 3; `docs/int8.md`, "Float hardswish"): such an op has no
    /// `<op>:pre_activation` key. For a layer whose output channels have very
    /// different ranges, such as the stem, one int8 grid for the pre-activation
    /// loses most of the model's int8 accuracy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub float_hardswish: Vec<String>,
    /// Feature maps on one grid scale per channel (version 4; `docs/int8.md`,
    /// "Per-channel grids"): value name -> one scale per channel. Every channel shares the
    /// zero point of the value's [`Self::activations`] entry, whose scale is the largest
    /// channel scale. Only a feature map that a convolution writes (with a ReLU, no
    /// activation, or a float hardswish) and that only depthwise convolutions read may have
    /// one: the writer's per-channel multipliers (or inverse scales) and the reader's
    /// per-channel multipliers absorb the channel scales, so no kernel changes. A depthwise
    /// input whose channels span very different ranges (MobileNetV3's expansions) keeps
    /// the small channels' detail that one grid for the whole tensor rounds away.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channel_scales: BTreeMap<String, Vec<f32>>,
}

impl Quantization {
    /// Whether op `name`'s hardswish runs in `f32` ([`Self::float_hardswish`]).
    pub fn is_float_hardswish(&self, name: &str) -> bool {
        self.float_hardswish.iter().any(|n| n == name)
    }

    /// The per-channel scales of value `name`, if it is on a per-channel grid
    /// ([`Self::channel_scales`]).
    pub fn channel_scales_of(&self, name: &str) -> Option<&[f32]> {
        self.channel_scales.get(name).map(Vec::as_slice)
    }

    /// The scale of each channel of value `name`, which has `channels` channels: its
    /// per-channel scales ([`Self::channel_scales`]), else its one [`Self::activations`]
    /// scale repeated. `None` if `name` has no grid. The length is the caller's to check
    /// where the file is not validated yet (validation keeps per-channel scales one per
    /// channel).
    pub fn scales_of(&self, name: &str, channels: usize) -> Option<Vec<f32>> {
        match self.channel_scales.get(name) {
            Some(s) => Some(s.clone()),
            None => self.activations.get(name).map(|p| vec![p.scale; channels]),
        }
    }
}

/// Affine int8 parameters of one activation tensor: `real = scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QParams {
    /// Positive, finite and normal.
    pub scale: f32,
    /// In `-128..=127` (an `i32` in the file so that a bad value is reported, not truncated).
    pub zero_point: i32,
}

/// Shape and layout of the network input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Value name the first op reads.
    pub name: String,
    /// `[1, 3, H, W]`.
    pub shape: [usize; 4],
    /// Always [`Layout::Nchw`].
    pub layout: Layout,
}

/// Memory layout of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Batch, channel, row, column (PyTorch's layout).
    #[serde(rename = "NCHW")]
    Nchw,
}

/// Preprocessing: the [`Crop`], bilinear resize (half-pixel centers) to `resize`, then
/// `(pixel / 255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// `[H, W]`, equal to the input's spatial size.
    pub resize: [usize; 2],
    /// Which part of the photo is resized (absent in older files: the whole image).
    #[serde(default)]
    pub crop: Crop,
    /// Per-channel mean (R, G, B) on the 0..1 scale.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B); non-zero.
    pub std: [f32; 3],
}

/// Which part of a photo preprocessing resizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Crop {
    /// The whole image, squashed to the input's aspect ratio.
    #[default]
    None,
    /// The largest centred region with the input's aspect ratio (for a square input, the
    /// centred square of the shorter side): how `derm-train prepare` makes training tiles.
    Centre,
}

/// Activation fused into the end of an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Identity.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `x * relu6(x + 3) / 6`.
    Hardswish,
}

/// One operation; the JSON object carries `"op": "<kind>"` beside the fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// 2-D convolution with BatchNorm folded in.
    Conv2d(Conv2d),
    /// Squeeze-and-excite (torchvision's MobileNetV3 flavour).
    SqueezeExcite(SqueezeExcite),
    /// Element-wise sum of two values of the same shape.
    Add(Add),
    /// Mean over H and W: `[C, H, W] -> [C]`.
    GlobalAvgPool(GlobalAvgPool),
    /// Fully connected layer: `[K] -> [N]`.
    Linear(Linear),
}

/// 2-D convolution: `[Cin, H, W] -> [Cout, OH, OW]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2d {
    /// Unique op name (used in errors and generated code).
    pub name: String,
    /// Value read.
    pub input: String,
    /// Value written.
    pub output: String,
    /// Tensor `[out_channels, in_channels / groups, kh, kw]`.
    pub weight: String,
    /// Tensor `[out_channels]`.
    pub bias: String,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// Zero padding `[ph, pw]`, applied on both sides.
    pub padding: [usize; 2],
    /// Channel groups; `groups == in_channels == out_channels` is depthwise.
    pub groups: usize,
    /// Fused activation.
    pub activation: Activation,
}

/// Squeeze-and-excite: `s = hardsigmoid(fc2(relu(fc1(mean_hw(x)))))`,
/// output `x * s` per channel. Shape preserving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqueezeExcite {
    /// Unique op name.
    pub name: String,
    /// Value read.
    pub input: String,
    /// Value written.
    pub output: String,
    /// Channels of the input.
    pub channels: usize,
    /// Width of the bottleneck.
    pub squeeze_channels: usize,
    /// Tensor `[squeeze_channels, channels]` or `[squeeze_channels, channels, 1, 1]`.
    pub fc1_weight: String,
    /// Tensor `[squeeze_channels]`.
    pub fc1_bias: String,
    /// Tensor `[channels, squeeze_channels]` or `[channels, squeeze_channels, 1, 1]`.
    pub fc2_weight: String,
    /// Tensor `[channels]`.
    pub fc2_bias: String,
}

/// Element-wise addition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Add {
    /// Unique op name.
    pub name: String,
    /// The two values added.
    pub inputs: [String; 2],
    /// Value written.
    pub output: String,
}

/// Global average pooling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalAvgPool {
    /// Unique op name.
    pub name: String,
    /// Value read, `[C, H, W]`.
    pub input: String,
    /// Value written, `[C]`.
    pub output: String,
}

/// Fully connected layer `y = W x + b`, then the activation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    /// Unique op name.
    pub name: String,
    /// Value read, `[in_features]`.
    pub input: String,
    /// Value written, `[out_features]`.
    pub output: String,
    /// Tensor `[out_features, in_features]`.
    pub weight: String,
    /// Tensor `[out_features]`.
    pub bias: String,
    /// K.
    pub in_features: usize,
    /// N.
    pub out_features: usize,
    /// Fused activation.
    pub activation: Activation,
}

impl Op {
    /// The op's unique name.
    pub fn name(&self) -> &str {
        match self {
            Op::Conv2d(o) => &o.name,
            Op::SqueezeExcite(o) => &o.name,
            Op::Add(o) => &o.name,
            Op::GlobalAvgPool(o) => &o.name,
            Op::Linear(o) => &o.name,
        }
    }

    /// The op kind as written in the JSON `op` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "conv2d",
            Op::SqueezeExcite(_) => "squeeze_excite",
            Op::Add(_) => "add",
            Op::GlobalAvgPool(_) => "global_avg_pool",
            Op::Linear(_) => "linear",
        }
    }

    /// Values read, in argument order.
    pub fn inputs(&self) -> Vec<&str> {
        match self {
            Op::Conv2d(o) => vec![&o.input],
            Op::SqueezeExcite(o) => vec![&o.input],
            Op::Add(o) => vec![&o.inputs[0], &o.inputs[1]],
            Op::GlobalAvgPool(o) => vec![&o.input],
            Op::Linear(o) => vec![&o.input],
        }
    }

    /// The value written.
    pub fn output(&self) -> &str {
        match self {
            Op::Conv2d(o) => &o.output,
            Op::SqueezeExcite(o) => &o.output,
            Op::Add(o) => &o.output,
            Op::GlobalAvgPool(o) => &o.output,
            Op::Linear(o) => &o.output,
        }
    }

    /// Names of the tensors (weights) the op reads.
    pub fn tensor_names(&self) -> Vec<&str> {
        match self {
            Op::Conv2d(o) => vec![&o.weight, &o.bias],
            Op::SqueezeExcite(o) => vec![&o.fc1_weight, &o.fc1_bias, &o.fc2_weight, &o.fc2_bias],
            Op::Add(_) | Op::GlobalAvgPool(_) => vec![],
            Op::Linear(o) => vec![&o.weight, &o.bias],
        }
    }
}

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE 754 binary32, little-endian.
    F32,
    /// IEEE 754 binary16, little-endian.
    F16,
    /// Signed 8-bit integer; weights of this type carry [`Quant`] parameters.
    I8,
    /// Signed 32-bit integer: the biases of an int8 model, in accumulator units
    /// (`docs/int8.md`; version 2).
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
            DType::I8 => 1,
            DType::I32 => 4,
        }
    }

    /// The name used in the JSON and in errors.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I8 => "i8",
            DType::I32 => "i32",
        }
    }

    /// The safetensors dtype this element type is stored as.
    pub fn to_safetensors(self) -> safetensors::Dtype {
        match self {
            DType::F32 => safetensors::Dtype::F32,
            DType::F16 => safetensors::Dtype::F16,
            DType::I8 => safetensors::Dtype::I8,
            DType::I32 => safetensors::Dtype::I32,
        }
    }

    pub(crate) fn from_safetensors(d: safetensors::Dtype) -> Option<Self> {
        match d {
            safetensors::Dtype::F32 => Some(DType::F32),
            safetensors::Dtype::F16 => Some(DType::F16),
            safetensors::Dtype::I8 => Some(DType::I8),
            safetensors::Dtype::I32 => Some(DType::I32),
            _ => None,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One row of the tensor table: what the stored tensor is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// Element type; must match the safetensors entry.
    pub dtype: DType,
    /// Shape; must match the safetensors entry.
    pub shape: Vec<usize>,
    /// Required for `i8`, absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant: Option<Quant>,
}

/// Per-channel affine quantization: `real = scale[c] * (q - zero_point[c])`
/// where `c` is the index along `axis`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quant {
    /// Name of an `f32` tensor of shape `[shape[axis]]`.
    pub scale: String,
    /// Name of an `i8` tensor of shape `[shape[axis]]`.
    pub zero_point: String,
    /// The channel axis.
    pub axis: usize,
}

/// Tensor bytes as stored (little-endian).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// `numel * dtype.size()` bytes.
    pub data: Vec<u8>,
}

impl Tensor {
    /// An `f32` tensor; `values.len()` must be the product of `shape`.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self {
            dtype: DType::F32,
            shape,
            data,
        }
    }

    /// An `i8` tensor (for quantized weights and zero points).
    pub fn from_i8(shape: Vec<usize>, values: &[i8]) -> Self {
        Self {
            dtype: DType::I8,
            shape,
            data: values.iter().map(|&v| v as u8).collect(),
        }
    }

    /// Element count (the product of the shape), `None` on overflow.
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }

    /// An `i32` tensor (the biases of an int8 model).
    pub fn from_i32(shape: Vec<usize>, values: &[i32]) -> Self {
        Self {
            dtype: DType::I32,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// The values of an `i8` tensor; `None` for other dtypes.
    pub fn to_i8(&self) -> Option<Vec<i8>> {
        (self.dtype == DType::I8).then(|| self.data.iter().map(|&b| b as i8).collect())
    }

    /// The values of an `i32` tensor; `None` for other dtypes.
    pub fn to_i32(&self) -> Option<Vec<i32>> {
        (self.dtype == DType::I32).then(|| {
            self.data
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
    }

    /// The values as `f32` for `f32` and `f16` tensors; `None` for `i8`
    /// (which needs its quantization parameters, see [`ModelFile::tensor_f32`])
    /// and `i32` (an int8 model's biases, whose scale comes from the op's input:
    /// `docs/int8.md`).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        match self.dtype {
            DType::F32 => Some(
                self.data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            DType::F16 => Some(
                self.data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            DType::I8 | DType::I32 => None,
        }
    }
}

impl ModelFile {
    /// Builds a model file, adding a table row for every tensor the graph's
    /// table does not list yet (plain, unquantized), then validates it.
    pub fn new(mut graph: Graph, tensors: BTreeMap<String, Tensor>) -> Result<Self, IrError> {
        for (name, t) in &tensors {
            graph
                .tensors
                .entry(name.clone())
                .or_insert_with(|| TensorSpec {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    quant: None,
                });
        }
        let model = Self { graph, tensors };
        model.validate()?;
        Ok(model)
    }

    /// Checks everything a reader relies on and infers every value's shape.
    pub fn validate(&self) -> Result<ValueShapes, IrError> {
        validate::validate(self)
    }

    /// A weight as `f32`: converts `f16` and dequantizes `i8` with its
    /// per-channel parameters.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>, IrError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| IrError::MissingTensor {
                op: None,
                tensor: name.to_owned(),
            })?;
        if let Some(v) = t.to_f32() {
            return Ok(v);
        }
        if t.dtype == DType::I32 {
            return Err(IrError::BadQuant {
                tensor: name.to_owned(),
                reason: "an i32 bias is in accumulator units (input scale * weight scale, \
                         docs/int8.md), not a float weight"
                    .into(),
            });
        }
        let spec = self.graph.tensors.get(name);
        let quant = spec
            .and_then(|s| s.quant.as_ref())
            .ok_or_else(|| IrError::BadQuant {
                tensor: name.to_owned(),
                reason: "i8 tensor without quant parameters".into(),
            })?;
        let scale = self
            .tensors
            .get(&quant.scale)
            .and_then(Tensor::to_f32)
            .ok_or_else(|| IrError::MissingTensor {
                op: None,
                tensor: quant.scale.clone(),
            })?;
        let zp = self
            .tensors
            .get(&quant.zero_point)
            .ok_or_else(|| IrError::MissingTensor {
                op: None,
                tensor: quant.zero_point.clone(),
            })?;
        let axis_len = t.shape.get(quant.axis).copied().unwrap_or(0);
        if scale.len() != axis_len || zp.data.len() != axis_len || axis_len == 0 {
            return Err(IrError::BadQuant {
                tensor: name.to_owned(),
                reason: format!(
                    "scale/zero_point length must equal shape[{}] = {axis_len}",
                    quant.axis
                ),
            });
        }
        // Elements sharing one channel form runs of `inner` along the flat data.
        let inner: usize = t.shape[quant.axis + 1..].iter().product();
        Ok(t.data
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let c = (i / inner.max(1)) % axis_len;
                scale[c] * (f32::from(q as i8) - f32::from(zp.data[c] as i8))
            })
            .collect())
    }

    /// Number of classes (logits).
    pub fn num_classes(&self) -> usize {
        self.graph.classes.len()
    }
}
