//! `derm-train quantize`: an f32 model file to an int8 one by post-training
//! quantization (docs/int8.md), for a model whose training checkpoint is not at
//! hand (e.g. the shipped `models/default.safetensors`). `export --precision int8`
//! does the same from a checkpoint.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use derm_codegen::golden::Golden as FloatGolden;
use derm_codegen::ir::ModelFile;
use derm_codegen::reference;
use tch::Tensor;

use super::export::{CalibrationArgs, command_line, git_commit, model_calibration_inputs};
use crate::export::{Golden, golden_path, quantize_int8};

/// Arguments of `derm-train quantize`.
#[derive(Debug, Clone, Args)]
pub struct QuantizeArgs {
    /// The f32 (or f16) model file; the golden file beside it supplies the golden inputs.
    pub model: PathBuf,
    /// Output int8 model file; its golden vectors (the int8 oracle's logits on the same
    /// inputs) go beside it as `<name>.golden.safetensors`.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Where the calibration images come from (`--calibration-cache` is required).
    #[command(flatten)]
    pub calibration: CalibrationArgs,
    /// Seed of the draw of calibration images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Quantizes `a.model` and writes the int8 file and its golden vectors.
pub fn run(a: QuantizeArgs) -> Result<()> {
    let model = ModelFile::read(&a.model).map_err(|e| anyhow::anyhow!("{e}"))?;
    if model.graph.quantization.is_some() {
        bail!("{} is already an int8 model", a.model.display());
    }
    let golden_in = FloatGolden::path_for(&a.model);
    let golden = FloatGolden::read(&golden_in).map_err(|e| {
        anyhow::anyhow!(
            "{e} (quantize reads the golden inputs of {} from its golden file)",
            a.model.display()
        )
    })?;
    let cache = a
        .calibration
        .calibration_cache
        .as_ref()
        .context("quantize needs --calibration-cache (training images to calibrate on)")?;
    let cal = model_calibration_inputs(&model, &a.model, &a.calibration, cache, a.seed, !a.quiet)?;
    let mut q = quantize_int8(&model, &cal)?;
    let (kept, seen) = calibration_agreement(&model, &q, &cal.inputs)?;
    q.graph.provenance.insert(
        "quantize".into(),
        serde_json::json!({
            "command": command_line(),
            "git_commit": git_commit(),
            "source": a.model.display().to_string(),
            "calibration_images": cal.inputs.len(),
            "calibration_range": a.calibration.calibration_range.to_string(),
            "calibration_balanced": a.calibration.calibration_balanced,
            "calibration_agreement": {"images": seen, "top1_kept": kept},
        }),
    );
    q.write(&a.output)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", a.output.display()))?;

    let (gp, n, agree) = write_int8_golden(&q, &golden, &a.output)?;
    let bytes = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({} bytes, {:.3}x of {}), calibrated on {} images ({})",
        a.output.display(),
        bytes(&a.output),
        bytes(&a.output) as f64 / bytes(&a.model).max(1) as f64,
        a.model.display(),
        cal.inputs.len(),
        a.calibration.calibration_range
    );
    println!(
        "wrote {} ({n} golden inputs; int8 top-1 agrees with the f32 golden on {agree} of {n})",
        gp.display()
    );
    println!("int8 keeps the f32 top-1 on {kept} of {seen} calibration images");
    if seen > 0 && (kept as f64) < AGREEMENT_WARN * seen as f64 {
        eprintln!(
            "warning: post-training quantization changes {:.1}% of this network's predictions on \
             the very images it was calibrated on; `derm-train qat` fine-tunes it for int8, and \
             `derm-train evaluate --model {}` on a held-out fold measures what is lost \
             (docs/int8.md)",
            100.0 * (seen - kept) as f64 / seen as f64,
            a.output.display()
        );
    }
    Ok(())
}

/// At most this many calibration images are run through both networks to compare their
/// top-1 predictions (about a third of a second per image at 224x224 for the two interpreters).
const AGREEMENT_IMAGES: usize = 32;

/// Below this share of predictions kept, `quantize` warns: the shipped 224 px network keeps
/// about 80% after post-training quantization, where `qat` files keep 86-91% on held-out
/// images (docs/results.md).
const AGREEMENT_WARN: f64 = 0.95;

/// On how many of the first [`AGREEMENT_IMAGES`] calibration `inputs` the int8 network
/// `q` (its reference interpreter, the runtime's bits) has the float `model`'s top-1:
/// `(kept, images)`. A quick first signal, on images the grids were fitted to, not an
/// accuracy figure.
fn calibration_agreement(
    model: &ModelFile,
    q: &ModelFile,
    inputs: &[Vec<f32>],
) -> Result<(usize, usize)> {
    let n = inputs.len().min(AGREEMENT_IMAGES);
    let mut kept = 0;
    for x in &inputs[..n] {
        let f = reference::logits(model, x).map_err(|e| anyhow::anyhow!("f32 reference: {e}"))?;
        let i = reference::logits(q, x).map_err(|e| anyhow::anyhow!("int8 reference: {e}"))?;
        kept += usize::from(argmax(&f) == argmax(&i));
    }
    Ok((kept, n))
}

/// Writes the golden file of the int8 model `q` (written at `output`): the float golden
/// inputs and the int8 oracle's logits on them. Returns its path, the number of inputs and
/// on how many of them the int8 top-1 agrees with the float golden logits.
pub(crate) fn write_int8_golden(
    q: &ModelFile,
    golden: &FloatGolden,
    output: &std::path::Path,
) -> Result<(PathBuf, usize, usize)> {
    let [n, c, h, w] = golden.input_shape;
    let per = c * h * w;
    let mut logits = Vec::with_capacity(n * golden.num_classes);
    let mut agree = 0;
    for (x, want) in golden
        .inputs
        .chunks_exact(per)
        .zip(golden.logits.chunks_exact(golden.num_classes))
    {
        let y = reference::logits(q, x).map_err(|e| anyhow::anyhow!("int8 reference: {e}"))?;
        agree += usize::from(argmax(&y) == argmax(want));
        logits.extend(y);
    }
    let dims = |d: &[usize]| d.iter().map(|&v| v as i64).collect::<Vec<_>>();
    let out = Golden {
        input: Tensor::from_slice(&golden.inputs).view(dims(&golden.input_shape).as_slice()),
        logits: Tensor::from_slice(&logits).view([n as i64, golden.num_classes as i64]),
        layers: Vec::new(),
    };
    let gp = golden_path(output);
    out.write(&gp)?;
    Ok((gp, n, agree))
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len())
        .max_by(|&i, &j| v[i].total_cmp(&v[j]))
        .unwrap_or(0)
}
