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
//! [`golden`](fn@golden) computes the golden vectors: fixed seeded inputs, the student's
//! logits in tch (eval mode, no grad), and every op's output (`layer.<op name>`,
//! `[N, C, H, W]` or `[N, C]`) from running the exported graph's folded weights in tch,
//! which also checks the folding: export fails if those logits drift from the student's.
//!
//! [`Precision`] chooses how the weights are stored. Folding always happens in f32;
//! [`store_precision`] then converts the tensors (f16: IEEE half, round-to-nearest-even).
//! The runtime widens stored weights back to f32 and computes in f32, so the golden vectors
//! of a non-f32 export are recomputed from the widened weights ([`golden_stored`]): they
//! are what the stored file computes, and parity tests keep their 1e-4 tolerance.
//! int8 ([`quantize_int8`]) is post-training quantization by `derm_codegen::quant::ptq`
//! calibrated on training images; its golden logits are the int8 reference interpreter's
//! (`docs/int8.md`), which every int8 kernel must match exactly.

// The code is split by stage: `graph.rs` (BatchNorm folding, the op list), `tch_graph.rs`
// (the graph run in tch), `golden.rs` (golden vectors), `precision.rs` (f16 and int8
// storage), `qat.rs` (the graph with fake quantization, for `derm-train qat`), `sensitivity.rs`
// (that rounding switched on tensor by tensor, for `derm-train quant-sensitivity`) and
// `tweaks.rs` (edits of a student before export); this file holds the
// options, `export` and the re-exports that keep every item at `crate::export::*`.
pub mod bias_correction;
mod golden;
mod graph;
mod precision;
pub mod qat;
pub mod sensitivity;
mod tch_graph;
mod tweaks;

use std::path::Path;

use anyhow::{Context, Result};
use derm_codegen::ir;
pub use derm_codegen::quant::ptq::RangeMethod;

pub use golden::{
    Golden, LAYER_PREFIX, golden, golden_inputs, golden_int8, golden_path, golden_stored,
    relative_error,
};
pub use graph::{INPUT_NAME, fold_conv_bn, model_file};
pub use precision::{
    PRECISION_KEY, calibrate, channel_grid_ops, corrected, equalized, float_hardswish_ops,
    quantize_int8, store_precision,
};
pub use tch_graph::TchGraph;
pub use tweaks::{add_logit_bias, perturb_for_parity_tests};

use crate::student_file::Student;

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
    /// Cross-layer equalization before calibration
    /// (`derm_codegen::quant::equalize`).
    pub equalize: bool,
    /// Hardswish ops computed in `f32` from the accumulator, by name
    /// (`derm_codegen::ir::Quantization::float_hardswish`; [`float_hardswish_ops`]
    /// resolves `stem`).
    pub float_hardswish: Vec<String>,
    /// Correct the biases for the rounding's mean shifts before quantizing
    /// ([`bias_correction::bias_corrected`]).
    pub bias_correction: bool,
    /// Put the feature maps that depthwise convolutions read on per-channel grids
    /// ([`precision::channel_grid_ops`]; `derm_codegen::ir::Quantization::channel_scales`).
    pub channel_grids: bool,
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
            // `model_file` and `quantize` have both recorded "int8" as the precision.
            let stored = quantize_int8(&folded, cal)?;
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
