//! `derm-codegen`: owns the model-file format and turns a model file into
//! Rust source specialized for its exact shapes.
//!
//! - [`ir`]: the model file (schema, reader, writer, validation).
//! - [`reference`](mod@reference): a naive `f32` interpreter, the oracle for everything else.
//! - [`generate`]: model file -> Rust module + weight blob for `derm-runtime`'s kernels.
//! - [`plan`]: the static memory plan used by the generated code.
//! - [`metadata`]: the model file's name, SHA-256, precision and provenance as constants.
//! - [`synthetic`]: seeded random MobileNetV3-shaped models for tests.
//! - [`onnx`]: the model as an ONNX file, for other engines and tools.
//! - [`golden`]: a model's golden inputs and expected logits.
//!
//! ```
//! use derm_codegen::{GenOptions, generate, synthetic::SyntheticSpec};
//! let model = SyntheticSpec::tiny(1).build()?;
//! let out = generate(&model, &GenOptions::default())?;
//! assert!(out.code.contains("pub const ARENA_LEN"));
//! assert!(out.report.arena_len >= out.report.peak_live_len);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod emit;
pub mod golden;
pub mod ir;
pub mod metadata;
mod nodes;
pub mod onnx;
pub mod plan;
pub mod quant;
pub mod reference;
pub mod synthetic;

pub use emit::{ARENA_ALIGN, WEIGHT_ALIGN};

use ir::{IrError, ModelFile};

/// Why code could not be generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodegenError {
    /// The model file is invalid.
    #[error(transparent)]
    Ir(#[from] IrError),
    /// The model is valid but uses something no runtime kernel implements.
    #[error("op {op:?}: {reason}")]
    Unsupported {
        /// The op name.
        op: String,
        /// What is missing.
        reason: String,
    },
    /// A [`GenOptions`] value is invalid.
    #[error("invalid option: {0}")]
    Option(String),
    /// The generated tokens did not form a Rust file (a bug in an emitter).
    #[error("generated code does not parse: {0}")]
    Format(String),
}

/// How the generated code finds its weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// `include_bytes!(concat!(env!("OUT_DIR"), "/<file>"))`: for build scripts.
    OutDir(String),
    /// `include_bytes!("<path>")`, resolved relative to the file that
    /// `include!`s the generated code (use an absolute path to be safe).
    Path(String),
}

/// Code generation options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenOptions {
    /// Path of the runtime crate in the generated code: `crate` inside
    /// `derm-runtime`, `::derm_runtime` from any other crate.
    pub runtime_path: String,
    /// Where the weight blob will be.
    pub weights: WeightsSource,
    /// Fuse each residual `add` into the pointwise conv producing one operand.
    pub fuse_residual: bool,
    /// Emit each hardswish whose readers all have weights (or pass the value on to such
    /// layers) as six times hardswish, with the 1/6 folded into those weights: one vector
    /// instruction fewer per four outputs (`nodes::scale`; f32 models only).
    pub fold_hardswish: bool,
    /// Let each squeeze-excite whose map is read only by a 1x1 convolution, and has more
    /// pixels than that convolution has outputs, scale the convolution's weights instead of
    /// its map (`nodes::se_weights`; f32 models only).
    pub fold_se: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            runtime_path: "::derm_runtime".into(),
            weights: WeightsSource::OutDir("weights.bin".into()),
            fuse_residual: true,
            fold_hardswish: true,
            fold_se: true,
        }
    }
}

/// One generated layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerReport {
    /// Model op name.
    pub name: String,
    /// Runtime kernel called.
    pub kernel: &'static str,
    /// Output elements.
    pub output_len: usize,
    /// Multiply-accumulates.
    pub macs: u64,
}

/// Facts about the generated code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `ARENA_LEN`: the memory plan's length in `f32`.
    pub arena_len: usize,
    /// The peak-live lower bound in `f32` (sizes rounded to [`ARENA_ALIGN`]).
    pub peak_live_len: usize,
    /// Model parameters.
    pub params: usize,
    /// Multiply-accumulates per inference.
    pub macs: u64,
    /// Layers in execution order.
    pub layers: Vec<LayerReport>,
    /// Every planned buffer: (what it holds, size and lifetime, offset).
    pub buffers: Vec<(String, plan::Buffer, usize)>,
}

/// The generated module and its weights.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Rust source of a module body, to `include!` inside a module.
    pub code: String,
    /// The weight blob (little-endian `f32`, packed for the kernels); write
    /// it where [`GenOptions::weights`] says.
    pub weights: Vec<u8>,
    /// Plan size, parameters, MACs and layers.
    pub report: Report,
}

/// Generates Rust for `model`: validates it, lowers each op to a runtime
/// kernel call (fusing residual adds), plans the arena and packs the weights.
/// A quantized model (one with `quantization`) becomes calls to the int8
/// kernels (`derm_runtime::kernels::int8`) with every constant of its
/// [`quant::QuantPlan`]; residual adds stay separate there.
pub fn generate(model: &ModelFile, opts: &GenOptions) -> Result<Generated, CodegenError> {
    let shapes = model.validate()?;
    if model.graph.quantization.is_some() {
        // Building the plan derives and checks every integer constant.
        let plan = quant::QuantPlan::new(model, &shapes)?;
        return emit::int8::generate(model, &shapes, &plan, opts);
    }
    let nodes = nodes::lower(
        model,
        &shapes,
        opts.fuse_residual,
        opts.fold_hardswish,
        opts.fold_se,
    )?;
    emit::generate(model, &shapes, &nodes, opts)
}
