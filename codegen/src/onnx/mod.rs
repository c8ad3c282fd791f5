//! ONNX export: the model file's network as an ONNX model (opset 17, `f32` or QDQ int8), for other
//! engines (ONNX Runtime, tract) and tools (Netron, `onnx.checker`).
//!
//! The ONNX graph is the network alone, batch 1: input `"input"`, float `[1, 3, H, W]`, is
//! the tensor derm-runtime's `run` takes, already cropped, resized and normalized as the
//! model file's `preprocess` says; output `"logits"` is float `[1, classes]`. The
//! preprocessing, the class names and where the weights came from travel in the model's
//! `metadata_props` ([`META_PREPROCESS`], [`META_CLASSES`], ...), each value JSON.
//!
//! Every op maps to standard operators ([`export`] documents the mapping); node and value
//! names are the model file's op and value names, so a layer found in Netron is found in the
//! model file. Weights are stored as `f32` whatever the file stores: `f16` is widened and
//! `i8` dequantized by [`ModelFile::tensor_f32`](crate::ir::ModelFile::tensor_f32), the same
//! conversion code generation and the reference interpreter use. The exception is an int8
//! model file (one with `quantization`): it is written in QDQ form, int8 weights and every
//! activation rounded where the runtime rounds it ([`export`] says how, and what differs).
//!
//! ```
//! use derm_codegen::onnx::{proto::ModelProto, to_onnx};
//! use derm_codegen::synthetic::SyntheticSpec;
//! use prost::Message;
//! let model = SyntheticSpec::tiny(1).build()?;
//! let bytes = to_onnx(&model)?;
//! let onnx = ModelProto::decode(bytes.as_slice())?;
//! let graph = onnx.graph.unwrap();
//! assert_eq!(graph.input[0].name, "input");
//! assert_eq!(graph.output[0].name, "logits");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod export;
pub mod proto;

pub use export::{
    ExportOptions, INPUT_NAME, IR_VERSION, META_CLASSES, META_GROUPS, META_PRECISION,
    META_PREPROCESS, META_PROVENANCE, META_SOURCE_NAME, META_SOURCE_SHA256, OPSET_VERSION,
    OUTPUT_NAME, OnnxError, PRODUCER_NAME, model_proto, to_onnx, to_onnx_with,
};
