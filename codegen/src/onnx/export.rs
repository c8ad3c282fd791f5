//! Lowering of a [`ModelFile`] to an ONNX [`ModelProto`].
//!
//! | model-file op | ONNX nodes |
//! |---|---|
//! | `conv2d` | `Conv` (`group` for depthwise), then `Relu` or `HardSwish` when fused |
//! | `squeeze_excite` | `GlobalAveragePool`, `Conv` 1x1 (fc1), `Relu`, `Conv` 1x1 (fc2), `HardSigmoid` (alpha 1/6, beta 1/2), `Mul` |
//! | `add` | `Add` |
//! | `global_avg_pool` | `GlobalAveragePool`, `Flatten` (axis 1) |
//! | `linear` | `Gemm` (`transB` = 1), then `Relu` or `HardSwish` when fused |
//!
//! An int8 model file (one with `quantization`, docs/int8.md) is written in ONNX's QDQ form,
//! the one ONNX Runtime's quantization tools produce and its graph optimizer fuses into
//! integer kernels (`QLinearConv`, `QLinearAdd`, ...):
//! - every activation the file rounds (each key of [`crate::quant::activation_keys`]: the
//!   input, op outputs, hardswish pre-activations, squeeze-excite pooled and hidden vectors)
//!   goes through `QuantizeLinear` -> `DequantizeLinear` on the file's scale and zero point,
//!   placed where the int8 kernels round it (a hardswish's pre-activation before the
//!   `HardSwish`, an output after the op's activation);
//! - weights are the file's `int8` bytes with their per-channel scales (`DequantizeLinear`,
//!   `axis` 0), biases its `int32` values at scale `input scale * weight scale[c]`, zero
//!   point 0, as ONNX Runtime's fused kernels expect them;
//! - activations are `uint8` with zero point `z + 128`: the same grid as the file's `int8`
//!   one (`q_u8 = q_i8 + 128`), in the type ONNX Runtime's x86 kernels prefer (u8
//!   activations, s8 weights).
//!
//! What stays float: the squeeze-excite gate (the runtime computes it in Q15, far finer than
//! int8) and the requantization arithmetic (ONNX rounds `x / scale` in float, the runtime
//! with an integer multiplier and shift), so ONNX Runtime's logits are close to the
//! runtime's, not equal. [`ExportOptions::dequantize`] exports the float network instead.
//!
//! Values carry the batch dimension ONNX operators expect: a model-file value `[C, H, W]`
//! is `[1, C, H, W]`, a vector `[N]` is `[1, N]`. `HardSigmoid(x) = max(0, min(1, x / 6 +
//! 1/2))` is the model file's `relu6(x + 3) / 6`, and ONNX's `HardSwish` is `x` times it.

use std::collections::{BTreeMap, HashMap, HashSet};

use prost::Message;

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};
use crate::ir::{
    Activation, Add, Conv2d, DType, GlobalAvgPool, IrError, Linear, ModelFile, Op, QParams,
    SqueezeExcite, ValueShapes,
};
use crate::metadata::{self, ModelMetadata};
use crate::quant;

/// ONNX IR version written (`IR_VERSION_2021_7_30`, the one that goes with opset 15-18).
pub const IR_VERSION: i64 = 8;
/// Version of the default (`ai.onnx`) operator set imported; `HardSwish` needs 14 or later.
pub const OPSET_VERSION: i64 = 17;
/// Name of the graph input: float `[1, 3, H, W]`, already preprocessed.
pub const INPUT_NAME: &str = "input";
/// Name of the graph output: float `[1, classes]`.
pub const OUTPUT_NAME: &str = "logits";
/// `ModelProto.producer_name`; `producer_version` is this crate's version.
pub const PRODUCER_NAME: &str = "derm-codegen";

/// `metadata_props` key: the class names in logit order, a JSON array of strings.
pub const META_CLASSES: &str = "derm.classes";
/// `metadata_props` key: the fairness groups the model was evaluated on, a JSON array.
pub const META_GROUPS: &str = "derm.groups";
/// `metadata_props` key: how a photo becomes `input`, the model file's `preprocess` as JSON
/// (`resize` `[H, W]`, `crop`, `mean`, `std`; see docs/model-format.md).
pub const META_PREPROCESS: &str = "derm.preprocess";
/// `metadata_props` key: stored precision of the source file's weights (`f32`, `f16`, `i8`,
/// or several joined by `+`); the ONNX weights are `f32` in every case.
pub const META_PRECISION: &str = "derm.precision";
/// `metadata_props` key: the model file's `provenance` object as JSON.
pub const META_PROVENANCE: &str = "derm.provenance";
/// `metadata_props` key: the source model file's name (only with [`ExportOptions::source`]).
pub const META_SOURCE_NAME: &str = "derm.source_name";
/// `metadata_props` key: SHA-256 of the source model file's bytes, 64 lowercase hex digits
/// (only with [`ExportOptions::source`]).
pub const META_SOURCE_SHA256: &str = "derm.source_sha256";

/// Why a model could not be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// The model file is invalid (validation names the op, value or tensor at fault).
    #[error("invalid model: {0}")]
    Invalid(#[from] IrError),
    /// A weight could not be read as `f32` values of the shape the op needs.
    #[error("op {op:?}: tensor {tensor:?}: {reason}")]
    Tensor {
        /// The op reading the tensor.
        op: String,
        /// The tensor name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
}

/// Export options beyond the model itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// The file the model was read from: its name and SHA-256 are recorded in
    /// `metadata_props` ([`META_SOURCE_NAME`], [`META_SOURCE_SHA256`]), so an ONNX file can
    /// be traced to the exact model file. The other fields of [`ModelMetadata`] are
    /// recomputed from the model.
    pub source: Option<ModelMetadata>,
    /// For an int8 model file, export the float network its weights dequantize to, with no
    /// activation rounding, instead of the QDQ form (see the [module docs](super)). No
    /// effect on a float file.
    pub dequantize: bool,
}

/// The model as ONNX protobuf bytes (a `.onnx` file), with default [`ExportOptions`].
///
/// Validates the model first; see the [module docs](super) for what the graph holds.
pub fn to_onnx(model: &ModelFile) -> Result<Vec<u8>, OnnxError> {
    to_onnx_with(model, &ExportOptions::default())
}

/// [`to_onnx`] with options (for example the source file's SHA-256 in the metadata).
pub fn to_onnx_with(model: &ModelFile, opts: &ExportOptions) -> Result<Vec<u8>, OnnxError> {
    Ok(model_proto(model, opts)?.encode_to_vec())
}

/// The model as an ONNX [`ModelProto`], before encoding: for callers that inspect or amend
/// it. `prost::Message::encode_to_vec` gives the bytes [`to_onnx_with`] returns.
pub fn model_proto(model: &ModelFile, opts: &ExportOptions) -> Result<ModelProto, OnnxError> {
    let shapes = model.validate()?;
    let g = &model.graph;
    let grid = match &g.quantization {
        Some(q) if !opts.dequantize => Some(&q.activations),
        _ => None,
    };
    let mut b = Builder::new(model, &shapes, grid);
    for op in &g.ops {
        match op {
            Op::Conv2d(c) => b.conv2d(c)?,
            Op::SqueezeExcite(s) => b.squeeze_excite(s)?,
            Op::Add(a) => b.add(a)?,
            Op::GlobalAvgPool(p) => b.global_avg_pool(p)?,
            Op::Linear(l) => b.linear(l)?,
        }
    }
    let [_, c, h, w] = g.input.shape;
    let classes = model.num_classes();
    let graph = GraphProto {
        node: b.nodes,
        name: opts
            .source
            .as_ref()
            .map_or_else(|| "derm-model".to_owned(), |s| s.name.clone()),
        initializer: b.initializers,
        doc_string: graph_doc(model),
        input: vec![value_info(INPUT_NAME, &[1, c, h, w])],
        output: vec![value_info(OUTPUT_NAME, &[1, classes])],
        value_info: b.value_info,
    };
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET_VERSION,
        }],
        producer_name: PRODUCER_NAME.to_owned(),
        producer_version: env!("CARGO_PKG_VERSION").to_owned(),
        domain: String::new(),
        model_version: 0,
        doc_string: format!(
            "{classes}-class image classifier exported from a derm model file (format \
             version {}); the input is already preprocessed, see the metadata_props key \
             {META_PREPROCESS:?}.",
            g.version
        ),
        graph: Some(graph),
        metadata_props: metadata_props(model, opts),
    })
}

fn graph_doc(model: &ModelFile) -> String {
    let g = &model.graph;
    let p = &g.preprocess;
    let [_, _, h, w] = g.input.shape;
    let crop = match p.crop {
        crate::ir::Crop::None => "the whole photo",
        crate::ir::Crop::Centre => "the largest centred region of the input's aspect ratio",
    };
    format!(
        "input: float [1, 3, {h}, {w}], NCHW, RGB, already preprocessed as derm-runtime \
         does: {crop} of an RGB8 photo, resized to {h}x{w} with antialiased bilinear \
         interpolation (PyTorch antialias=True, align_corners=False; Pillow BILINEAR), then \
         (pixel / 255 - mean[c]) / std[c] with mean {:?} and std {:?}. logits: float [1, {}], \
         in the order {:?}.",
        p.mean,
        p.std,
        g.classes.len(),
        g.classes
    )
}

fn metadata_props(model: &ModelFile, opts: &ExportOptions) -> Vec<StringStringEntryProto> {
    let g = &model.graph;
    let mut props = vec![
        (META_CLASSES, json(&g.classes)),
        (META_GROUPS, json(&g.groups)),
        (META_PREPROCESS, json(&g.preprocess)),
        (META_PRECISION, metadata::precision(model)),
        (META_PROVENANCE, json(&g.provenance)),
    ];
    if let Some(src) = &opts.source {
        props.push((META_SOURCE_NAME, src.name.clone()));
        props.push((META_SOURCE_SHA256, src.sha256.clone()));
    }
    props
        .into_iter()
        .map(|(key, value)| StringStringEntryProto {
            key: key.to_owned(),
            value,
        })
        .collect()
}

/// Compact JSON of a graph field. Strings, finite numbers and JSON maps always serialize;
/// the fallback only keeps this total.
fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// ONNX dimensions: validation bounds every size far below `i64::MAX`, so the cast is exact.
fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

fn value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    typed_value_info(name, shape, DataType::Float)
}

fn typed_value_info(name: &str, shape: &[usize], elem: DataType) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto {
                    dim: dims(shape)
                        .into_iter()
                        .map(|d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                            denotation: String::new(),
                        })
                        .collect(),
                }),
            })),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Ints as i32,
        ints: dims(ints),
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

/// Graph under construction. ONNX has one namespace for every value (graph inputs,
/// initializers, node outputs), while the model file keeps values and tensors apart, so
/// every name goes through [`Builder::fresh`].
struct Builder<'m> {
    model: &'m ModelFile,
    shapes: &'m ValueShapes,
    /// The int8 file's activation grids when exporting the QDQ form.
    grid: Option<&'m BTreeMap<String, QParams>>,
    /// Value names taken so far.
    used: HashSet<String>,
    /// Node names taken so far (a namespace of their own).
    used_nodes: HashSet<String>,
    /// Model-file value name -> ONNX value name.
    values: HashMap<String, String>,
    /// (tensor, ONNX dims) -> initializer name: a tensor read twice in one shape is stored once.
    stored: HashMap<(String, Vec<usize>), String>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    value_info: Vec<ValueInfoProto>,
}

impl<'m> Builder<'m> {
    fn new(
        model: &'m ModelFile,
        shapes: &'m ValueShapes,
        grid: Option<&'m BTreeMap<String, QParams>>,
    ) -> Self {
        let mut b = Self {
            model,
            shapes,
            grid,
            used: HashSet::new(),
            used_nodes: HashSet::new(),
            values: HashMap::new(),
            stored: HashMap::new(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            value_info: Vec::new(),
        };
        // Reserved first, so no intermediate value can take the graph's interface names.
        b.used.insert(INPUT_NAME.to_owned());
        b.used.insert(OUTPUT_NAME.to_owned());
        let input = &model.graph.input;
        // An int8 model's first step: the float input onto its grid.
        let name = b.rounded(
            &input.name,
            INPUT_NAME.to_owned(),
            &format!("{INPUT_NAME}.quantized"),
            &input.shape,
        );
        b.values.insert(input.name.clone(), name);
        b
    }

    /// Whether the QDQ export rounds activation `key` (the file has a grid for it).
    fn rounds(&self, key: &str) -> bool {
        self.grid.is_some_and(|g| g.contains_key(key))
    }

    /// Where the node computing activation `key` writes when its readers use `target`:
    /// `target` itself, unless the QDQ export rounds `key`; then a fresh float value that
    /// [`Self::round`] carries into `target`.
    fn unrounded(&mut self, key: &str, target: &str) -> String {
        if self.rounds(key) {
            self.temp(&format!("{target}.float"))
        } else {
            target.to_owned()
        }
    }

    /// `QuantizeLinear` -> `DequantizeLinear` from `value` into `target` on `key`'s grid,
    /// as `uint8` (zero point + 128, the same grid); nothing when `value` is `target`
    /// ([`Self::unrounded`] gave no separate value).
    fn round(&mut self, key: &str, value: String, target: String, shape: &[usize]) {
        let Some(p) = self.grid.and_then(|g| g.get(key)).copied() else {
            return;
        };
        if value == target {
            return;
        }
        // A per-channel grid (`quantization.channel_scales`): ONNX's per-axis form, one
        // scale per channel on axis 1 of NCHW and the shared zero point repeated.
        let channels = self.grid_channel_scales(key);
        let (dims, scales): (Vec<i64>, Vec<f32>) = match channels {
            Some(c) => (vec![c.len() as i64], c.to_vec()),
            None => (vec![], vec![p.scale]),
        };
        let axis = || match channels {
            Some(_) => vec![attr_int("axis", 1)],
            None => vec![],
        };
        let scale = self.temp(&format!("{key}.scale"));
        self.initializers.push(TensorProto {
            dims: dims.clone(),
            data_type: DataType::Float as i32,
            name: scale.clone(),
            raw_data: scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            ..Default::default()
        });
        let zero = self.temp(&format!("{key}.zero_point"));
        // Validation keeps zero points in -128..=127, so the shifted one fits a byte.
        let z = (p.zero_point + 128).clamp(0, 255) as u8;
        self.initializers.push(TensorProto {
            dims,
            data_type: DataType::Uint8 as i32,
            name: zero.clone(),
            raw_data: vec![z; scales.len()],
            ..Default::default()
        });
        let q = self.temp(&format!("{key}.q"));
        self.quantize_node(
            &format!("{key}.quantize"),
            vec![value, scale.clone(), zero.clone()],
            q.clone(),
            shape,
            axis(),
        );
        self.node(
            "DequantizeLinear",
            &format!("{key}.dequantize"),
            vec![q, scale, zero],
            target,
            shape,
            axis(),
        );
    }

    /// The per-channel scales of value `key` (`quantization.channel_scales`), if any.
    fn grid_channel_scales(&self, key: &str) -> Option<&'m [f32]> {
        let model: &'m ModelFile = self.model;
        model
            .graph
            .quantization
            .as_ref()
            .and_then(|q| q.channel_scales_of(key))
    }

    /// `want`, or `want_2`, `want_3`, ... if taken.
    fn fresh(used: &mut HashSet<String>, want: &str) -> String {
        if used.insert(want.to_owned()) {
            return want.to_owned();
        }
        (2usize..)
            .map(|n| format!("{want}_{n}"))
            .find(|c| used.insert(c.clone()))
            .unwrap_or_default()
    }

    /// The ONNX name of model-file value `value`, read by op `op`.
    fn read(&self, op: &str, value: &str) -> Result<String, OnnxError> {
        self.values.get(value).cloned().ok_or_else(|| {
            IrError::UndefinedValue {
                op: op.to_owned(),
                value: value.to_owned(),
            }
            .into()
        })
    }

    /// ONNX shape (batch first) of model-file value `value`.
    fn shape(&self, op: &str, value: &str) -> Result<Vec<usize>, OnnxError> {
        let s = self
            .shapes
            .get(value)
            .ok_or_else(|| IrError::UndefinedValue {
                op: op.to_owned(),
                value: value.to_owned(),
            })?;
        Ok(std::iter::once(1).chain(s.iter().copied()).collect())
    }

    /// Defines the ONNX value holding model-file value `value` (the graph output is
    /// [`OUTPUT_NAME`]).
    fn define(&mut self, value: &str) -> String {
        let name = if value == self.model.graph.output {
            OUTPUT_NAME.to_owned()
        } else {
            Self::fresh(&mut self.used, value)
        };
        self.values.insert(value.to_owned(), name.clone());
        name
    }

    /// A fresh name for a value inside one op's lowering.
    fn temp(&mut self, want: &str) -> String {
        Self::fresh(&mut self.used, want)
    }

    /// Adds a node writing `output` (shape `shape`, recorded in `value_info` unless it is
    /// the graph output).
    fn node(
        &mut self,
        op_type: &str,
        name: &str,
        input: Vec<String>,
        output: String,
        shape: &[usize],
        attribute: Vec<AttributeProto>,
    ) {
        if output != OUTPUT_NAME {
            self.value_info.push(value_info(&output, shape));
        }
        self.push_node(op_type, name, input, output, attribute);
    }

    /// A `QuantizeLinear` node writing `output` (shape `shape`) as `uint8`.
    fn quantize_node(
        &mut self,
        name: &str,
        input: Vec<String>,
        output: String,
        shape: &[usize],
        attribute: Vec<AttributeProto>,
    ) {
        self.value_info
            .push(typed_value_info(&output, shape, DataType::Uint8));
        self.push_node("QuantizeLinear", name, input, output, attribute);
    }

    fn push_node(
        &mut self,
        op_type: &str,
        name: &str,
        input: Vec<String>,
        output: String,
        attribute: Vec<AttributeProto>,
    ) {
        let name = Self::fresh(&mut self.used_nodes, name);
        self.nodes.push(NodeProto {
            input,
            output: vec![output],
            name,
            op_type: op_type.to_owned(),
            domain: String::new(),
            attribute,
            doc_string: String::new(),
        });
    }

    /// The initializer holding tensor `tensor` as `f32` in shape `shape` (which must have
    /// the tensor's element count), added on first use.
    fn weight(&mut self, op: &str, tensor: &str, shape: &[usize]) -> Result<String, OnnxError> {
        let key = (tensor.to_owned(), shape.to_vec());
        if let Some(name) = self.stored.get(&key) {
            return Ok(name.clone());
        }
        let err = |reason: String| OnnxError::Tensor {
            op: op.to_owned(),
            tensor: tensor.to_owned(),
            reason,
        };
        if self.grid.is_some() {
            let is_i8 = self.model.tensors.get(tensor).map(|t| t.dtype) == Some(DType::I8);
            if is_i8 {
                let name = self.int8_weight(tensor, shape).map_err(err)?;
                self.stored.insert(key, name.clone());
                return Ok(name);
            }
        }
        let values = self
            .model
            .tensor_f32(tensor)
            .map_err(|e| err(e.to_string()))?;
        let numel: usize = shape.iter().product();
        if values.len() != numel {
            return Err(err(format!(
                "{} values cannot be viewed as shape {shape:?}",
                values.len()
            )));
        }
        let name = Self::fresh(&mut self.used, tensor);
        self.initializers.push(TensorProto {
            dims: dims(shape),
            data_type: DataType::Float as i32,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        self.stored.insert(key, name.clone());
        Ok(name)
    }

    /// `value` rounded on `key`'s grid into a fresh value named after `want`, or `value`
    /// itself when the QDQ export does not round `key`.
    fn rounded(&mut self, key: &str, value: String, want: &str, shape: &[usize]) -> String {
        if !self.rounds(key) {
            return value;
        }
        let target = self.temp(want);
        self.round(key, value, target.clone(), shape);
        target
    }

    /// The QDQ form of the file's `int8` weight `tensor` viewed as `shape`: the bytes as
    /// stored, `DequantizeLinear` with the per-channel scales and zero points (axis 0).
    fn int8_weight(&mut self, tensor: &str, shape: &[usize]) -> Result<String, String> {
        let t = self
            .model
            .tensors
            .get(tensor)
            .ok_or("not in the model file")?;
        let q = self
            .model
            .graph
            .tensors
            .get(tensor)
            .and_then(|s| s.quant.as_ref())
            .ok_or("an i8 tensor without quantization parameters")?;
        if q.axis != 0 {
            return Err(format!("quantized along axis {}, not 0", q.axis));
        }
        let numel: usize = shape.iter().product();
        if t.data.len() != numel {
            return Err(format!(
                "{} values cannot be viewed as shape {shape:?}",
                t.data.len()
            ));
        }
        let scales = self
            .model
            .tensors
            .get(&q.scale)
            .and_then(crate::ir::Tensor::to_f32)
            .ok_or_else(|| format!("scale tensor {:?} is missing or not float", q.scale))?;
        let zeros = self
            .model
            .tensors
            .get(&q.zero_point)
            .filter(|z| z.dtype == DType::I8)
            .ok_or_else(|| format!("zero-point tensor {:?} is missing or not i8", q.zero_point))?;
        if scales.len() != shape[0] || zeros.data.len() != shape[0] {
            return Err(format!(
                "{} scales and {} zero points for {} channels",
                scales.len(),
                zeros.data.len(),
                shape[0]
            ));
        }
        let name = Self::fresh(&mut self.used, &format!("{tensor}.int8"));
        self.initializers.push(TensorProto {
            dims: dims(shape),
            data_type: DataType::Int8 as i32,
            name: name.clone(),
            raw_data: t.data.clone(),
            ..Default::default()
        });
        let scale = self.channel_scales(&q.scale, &scales);
        let zero = Self::fresh(&mut self.used, &q.zero_point);
        self.initializers.push(TensorProto {
            dims: vec![shape[0] as i64],
            data_type: DataType::Int8 as i32,
            name: zero.clone(),
            raw_data: zeros.data.clone(),
            ..Default::default()
        });
        let out = Self::fresh(&mut self.used, tensor);
        self.node(
            "DequantizeLinear",
            &format!("{tensor}.dequantize"),
            vec![name, scale, zero],
            out.clone(),
            shape,
            vec![attr_int("axis", 0)],
        );
        Ok(out)
    }

    /// A float initializer `[n]` of per-channel scales named after `want`.
    fn channel_scales(&mut self, want: &str, scales: &[f32]) -> String {
        let name = Self::fresh(&mut self.used, want);
        self.initializers.push(TensorProto {
            dims: vec![scales.len() as i64],
            data_type: DataType::Float as i32,
            name: name.clone(),
            raw_data: scales.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// The bias `tensor` of a layer with weight `weight` whose input is activation
    /// `input_key`: in the QDQ form an int8 file's `int32` bias goes through
    /// `DequantizeLinear` at scale `input scale * weight scale[c]` (zero point 0), the
    /// accumulator units it is stored in; otherwise as [`Self::weight`].
    fn bias(
        &mut self,
        op: &str,
        tensor: &str,
        weight: &str,
        input_key: &str,
    ) -> Result<String, OnnxError> {
        let Some(t) = self.model.tensors.get(tensor) else {
            return self.weight(op, tensor, &[0]);
        };
        let n = t.shape.iter().product::<usize>();
        if t.dtype != DType::I32 {
            return self.weight(op, tensor, &[n]);
        }
        // The input's scale per output channel: its own per channel if it is on a
        // per-channel grid (read by a depthwise convolution, whose channel c reads channel
        // c; validation keeps one scale per channel).
        let x_scales = self
            .model
            .graph
            .quantization
            .as_ref()
            .and_then(|q| q.scales_of(input_key, n));
        let err = |reason: String| OnnxError::Tensor {
            op: op.to_owned(),
            tensor: tensor.to_owned(),
            reason,
        };
        let w_scales = self
            .model
            .graph
            .tensors
            .get(weight)
            .and_then(|s| s.quant.as_ref())
            .and_then(|q| self.model.tensors.get(&q.scale))
            .and_then(crate::ir::Tensor::to_f32)
            .ok_or_else(|| err(format!("its weight {weight:?} has no per-channel scales")))?;
        if w_scales.len() != n {
            return Err(err(format!(
                "{n} values for the {} channels of {weight:?}",
                w_scales.len()
            )));
        }
        let Some(x_scales) = x_scales else {
            return Err(err(format!(
                "an i32 bias needs the scale of its input {input_key:?}, which the file does \
                 not quantize"
            )));
        };
        let scales: Vec<f32> = w_scales
            .iter()
            .zip(&x_scales)
            .map(|(&s, &xs)| xs * s)
            .collect();
        if self.grid.is_none() {
            // The float network (`dequantize`): the bias in real units.
            let key = (tensor.to_owned(), vec![n]);
            if let Some(name) = self.stored.get(&key) {
                return Ok(name.clone());
            }
            let values: Vec<f32> = t
                .data
                .chunks_exact(4)
                .zip(&scales)
                .map(|(b, &s)| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 * s)
                .collect();
            let name = Self::fresh(&mut self.used, tensor);
            self.initializers.push(TensorProto {
                dims: vec![n as i64],
                data_type: DataType::Float as i32,
                name: name.clone(),
                raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..Default::default()
            });
            self.stored.insert(key, name.clone());
            return Ok(name);
        }
        let name = Self::fresh(&mut self.used, &format!("{tensor}.int32"));
        self.initializers.push(TensorProto {
            dims: vec![n as i64],
            data_type: DataType::Int32 as i32,
            name: name.clone(),
            raw_data: t.data.clone(),
            ..Default::default()
        });
        let scale = self.channel_scales(&format!("{tensor}.scale"), &scales);
        let zero = Self::fresh(&mut self.used, &format!("{tensor}.zero_point"));
        self.initializers.push(TensorProto {
            dims: vec![n as i64],
            data_type: DataType::Int32 as i32,
            name: zero.clone(),
            raw_data: vec![0; 4 * n],
            ..Default::default()
        });
        let out = Self::fresh(&mut self.used, tensor);
        self.node(
            "DequantizeLinear",
            &format!("{tensor}.dequantize"),
            vec![name, scale, zero],
            out.clone(),
            &[n],
            vec![attr_int("axis", 0)],
        );
        Ok(out)
    }

    /// The output of op `op`, computed into `computed` by its main node, through its
    /// fused activation into model-file value `output`, rounded where the QDQ form rounds
    /// it: a table-driven hardswish's input on the `<op>:pre_activation` grid, the output on
    /// its own grid. Returns nothing; the readers of `output` find it by name.
    fn finish(
        &mut self,
        op: &str,
        act: Activation,
        computed: String,
        output: &str,
        shape: &[usize],
    ) {
        if act == Activation::None && !self.rounds(output) {
            // [`Self::main_output`] gave the output value itself.
            return;
        }
        let target = self.define(output);
        let (op_type, suffix) = match act {
            Activation::None => {
                self.round(output, computed, target, shape);
                return;
            }
            Activation::Relu => ("Relu", "relu"),
            Activation::Hardswish => ("HardSwish", "hardswish"),
        };
        let pre = self.rounded(
            &quant::pre_activation_key(op),
            computed,
            &format!("{op}.pre_activation"),
            shape,
        );
        let act_out = self.unrounded(output, &target);
        self.node(
            op_type,
            &format!("{op}.{suffix}"),
            vec![pre],
            act_out.clone(),
            shape,
            vec![],
        );
        self.round(output, act_out, target, shape);
    }

    /// Where op `op`'s main node writes before [`Self::finish`]: a fresh value when an
    /// activation or rounding follows, else the output value itself.
    fn main_output(&mut self, op: &str, act: Activation, output: &str, suffix: &str) -> String {
        if act == Activation::None && !self.rounds(output) {
            self.define(output)
        } else {
            self.temp(&format!("{op}.{suffix}"))
        }
    }

    fn conv2d(&mut self, c: &Conv2d) -> Result<(), OnnxError> {
        let x = self.read(&c.name, &c.input)?;
        let w = self.weight(
            &c.name,
            &c.weight,
            &[
                c.out_channels,
                c.in_channels / c.groups.max(1),
                c.kernel[0],
                c.kernel[1],
            ],
        )?;
        let b = self.bias(&c.name, &c.bias, &c.weight, &c.input)?;
        let shape = self.shape(&c.name, &c.output)?;
        let [ph, pw] = c.padding;
        let attrs = vec![
            attr_ints("kernel_shape", &c.kernel),
            attr_ints("strides", &c.stride),
            attr_ints("pads", &[ph, pw, ph, pw]),
            attr_ints("dilations", &[1, 1]),
            attr_int("group", c.groups as i64),
        ];
        let conv_out = self.main_output(&c.name, c.activation, &c.output, "conv");
        self.node(
            "Conv",
            &c.name,
            vec![x, w, b],
            conv_out.clone(),
            &shape,
            attrs,
        );
        self.finish(&c.name, c.activation, conv_out, &c.output, &shape);
        Ok(())
    }

    fn squeeze_excite(&mut self, s: &SqueezeExcite) -> Result<(), OnnxError> {
        let n = &s.name;
        let (c, q) = (s.channels, s.squeeze_channels);
        let x = self.read(n, &s.input)?;
        let shape = self.shape(n, &s.output)?;
        // torchvision stores fc1/fc2 as 1x1 convs; the model file may hold them 2-D.
        let w1 = self.weight(n, &s.fc1_weight, &[q, c, 1, 1])?;
        let b1 = self.bias(n, &s.fc1_bias, &s.fc1_weight, &quant::pooled_key(n))?;
        let w2 = self.weight(n, &s.fc2_weight, &[c, q, 1, 1])?;
        let b2 = self.bias(n, &s.fc2_bias, &s.fc2_weight, &quant::hidden_key(n))?;
        let one_by_one = || {
            vec![
                attr_ints("kernel_shape", &[1, 1]),
                attr_ints("strides", &[1, 1]),
                attr_ints("pads", &[0, 0, 0, 0]),
            ]
        };
        let pooled = self.temp(&format!("{n}.avgpool"));
        self.node(
            "GlobalAveragePool",
            &format!("{n}.avgpool"),
            vec![x.clone()],
            pooled.clone(),
            &[1, c, 1, 1],
            vec![],
        );
        let pooled = self.rounded(
            &quant::pooled_key(n),
            pooled,
            &format!("{n}.pooled"),
            &[1, c, 1, 1],
        );
        let fc1 = self.temp(&format!("{n}.fc1"));
        self.node(
            "Conv",
            &format!("{n}.fc1"),
            vec![pooled, w1, b1],
            fc1.clone(),
            &[1, q, 1, 1],
            one_by_one(),
        );
        let relu = self.temp(&format!("{n}.relu"));
        self.node(
            "Relu",
            &format!("{n}.relu"),
            vec![fc1],
            relu.clone(),
            &[1, q, 1, 1],
            vec![],
        );
        let relu = self.rounded(
            &quant::hidden_key(n),
            relu,
            &format!("{n}.hidden"),
            &[1, q, 1, 1],
        );
        let fc2 = self.temp(&format!("{n}.fc2"));
        self.node(
            "Conv",
            &format!("{n}.fc2"),
            vec![relu, w2, b2],
            fc2.clone(),
            &[1, c, 1, 1],
            one_by_one(),
        );
        let scale = self.temp(&format!("{n}.hardsigmoid"));
        self.node(
            "HardSigmoid",
            &format!("{n}.hardsigmoid"),
            vec![fc2],
            scale.clone(),
            &[1, c, 1, 1],
            // relu6(x + 3) / 6 == clamp(x / 6 + 1/2, 0, 1).
            vec![attr_float("alpha", 1.0 / 6.0), attr_float("beta", 0.5)],
        );
        let out = self.main_output(n, Activation::None, &s.output, "mul");
        self.node("Mul", n, vec![x, scale], out.clone(), &shape, vec![]);
        self.finish(n, Activation::None, out, &s.output, &shape);
        Ok(())
    }

    fn add(&mut self, a: &Add) -> Result<(), OnnxError> {
        let x = self.read(&a.name, &a.inputs[0])?;
        let y = self.read(&a.name, &a.inputs[1])?;
        let shape = self.shape(&a.name, &a.output)?;
        let out = self.main_output(&a.name, Activation::None, &a.output, "add");
        self.node("Add", &a.name, vec![x, y], out.clone(), &shape, vec![]);
        self.finish(&a.name, Activation::None, out, &a.output, &shape);
        Ok(())
    }

    fn global_avg_pool(&mut self, p: &GlobalAvgPool) -> Result<(), OnnxError> {
        let x = self.read(&p.name, &p.input)?;
        let shape = self.shape(&p.name, &p.output)?;
        let channels = shape.get(1).copied().unwrap_or(0);
        let pooled = self.temp(&format!("{}.pool", p.name));
        self.node(
            "GlobalAveragePool",
            &p.name,
            vec![x],
            pooled.clone(),
            &[1, channels, 1, 1],
            vec![],
        );
        let out = self.main_output(&p.name, Activation::None, &p.output, "flatten");
        self.node(
            "Flatten",
            &format!("{}.flatten", p.name),
            vec![pooled],
            out.clone(),
            &shape,
            vec![attr_int("axis", 1)],
        );
        self.finish(&p.name, Activation::None, out, &p.output, &shape);
        Ok(())
    }

    fn linear(&mut self, l: &Linear) -> Result<(), OnnxError> {
        let x = self.read(&l.name, &l.input)?;
        let w = self.weight(&l.name, &l.weight, &[l.out_features, l.in_features])?;
        let b = self.bias(&l.name, &l.bias, &l.weight, &l.input)?;
        let shape = self.shape(&l.name, &l.output)?;
        let gemm_out = self.main_output(&l.name, l.activation, &l.output, "gemm");
        self.node(
            "Gemm",
            &l.name,
            vec![x, w, b],
            gemm_out.clone(),
            &shape,
            vec![attr_int("transB", 1)],
        );
        self.finish(&l.name, l.activation, gemm_out, &l.output, &shape);
        Ok(())
    }
}
