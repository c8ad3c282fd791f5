//! `derm-train init-student` (a seeded, untrained student file) and `derm-train export`
//! (student file -> model file + golden vectors).

use std::path::PathBuf;

use anyhow::{Result, bail, ensure};
use clap::Args;

use crate::export::{self, Calibrate, ExportOptions, Precision, RangeMethod};
use crate::models::mobilenet_v3::{self, Arch, Head, LoadOptions};
use crate::student_file::{DEFAULT_CLASSES, Provenance, Student, StudentMeta};

/// Arguments of `derm-train init-student`.
#[derive(Debug, Clone, Args)]
pub struct InitStudentArgs {
    /// MobileNetV3 size: small or large.
    #[arg(long, default_value = "small")]
    pub arch: Arch,
    /// Classifier head: paper (one Linear) or torchvision (Linear-Hardswish-Dropout-Linear).
    #[arg(long, default_value = "paper")]
    pub head: Head,
    /// Class names in logit order, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_CLASSES.map(String::from))]
    pub classes: Vec<String>,
    /// Fairness group names, comma-separated (informational).
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Input height and width.
    #[arg(long, num_args = 2, value_names = ["H", "W"], default_values_t = [224u32, 224])]
    pub input_size: Vec<u32>,
    /// Per-channel RGB mean on the 0..1 scale.
    #[arg(long, num_args = 3, default_values_t = [0.5f32, 0.5, 0.5])]
    pub mean: Vec<f32>,
    /// Per-channel RGB standard deviation.
    #[arg(long, num_args = 3, default_values_t = [0.5f32, 0.5, 0.5])]
    pub std: Vec<f32>,
    /// Seed of the initialization.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// A torchvision state dict (safetensors) to load by name after the seeded init.
    #[arg(long)]
    pub init_weights: Option<PathBuf>,
    /// Key prefixes of `--init-weights` to leave as initialized (e.g. `classifier` for the
    /// paper head, `classifier.3` for a torchvision head with other than 1000 classes).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Free-form note stored in the provenance.
    #[arg(long, default_value = "")]
    pub notes: String,
    /// Output student file.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Arguments of `derm-train export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Student file (from training or `init-student`).
    pub checkpoint: PathBuf,
    /// Output model file; the golden vectors go beside it as `<name>.golden.safetensors`.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Number of golden inputs.
    #[arg(long, default_value_t = 2)]
    pub golden_n: i64,
    /// Seed of the golden inputs.
    #[arg(long, default_value_t = 0)]
    pub golden_seed: i64,
    /// Leave the per-layer outputs out of the golden file (keeps `input` and `logits`).
    #[arg(long)]
    pub no_layers: bool,
    /// Add these numbers (one per class, comma-separated) to the classifier's output bias: a
    /// post-hoc logit adjustment that moves the decision thresholds at no run-time cost
    /// (e.g. `-tau * ln(class weight)` to undo part of the class weighting). Recorded in the
    /// provenance.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub logit_bias: Option<Vec<f32>>,
    /// Stored type of the weights and biases: f32; f16 (IEEE half, round-to-nearest-even;
    /// half the file; arithmetic stays f32); or int8 (integer weights, activations and
    /// arithmetic, docs/int8.md; needs `--calibration-cache`). The golden logits are those
    /// of the stored model.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// int8 calibration images.
    #[command(flatten)]
    pub calibration: CalibrationArgs,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// A JSON file stored in the provenance under `evaluation` (e.g. the `pi-bench --json`
    /// report of this model on a held-out fold), so the numbers travel with the model.
    #[arg(long)]
    pub evaluation: Option<PathBuf>,
}

/// Where int8 calibration images come from (`export --precision int8`, `quantize`).
#[derive(Debug, Clone, Args)]
pub struct CalibrationArgs {
    /// int8: the prepared cache whose training images calibrate the activation ranges.
    #[arg(long, help_heading = "int8 calibration")]
    pub calibration_cache: Option<PathBuf>,
    /// int8: calibrate on the training images of this fold (never on the images you
    /// evaluate on); without it, on every image of the cache.
    #[arg(long, help_heading = "int8 calibration")]
    pub calibration_fold: Option<usize>,
    /// int8: number of folds (with `--calibration-fold`).
    #[arg(long, default_value_t = 5, help_heading = "int8 calibration")]
    pub calibration_k: usize,
    /// int8: seed of the fold assignment (with `--calibration-fold`).
    #[arg(long, default_value_t = 0, help_heading = "int8 calibration")]
    pub calibration_split_seed: u64,
    /// int8: calibration images, drawn from the candidates with `--golden-seed`.
    #[arg(long, default_value_t = 256, help_heading = "int8 calibration")]
    pub calibration_images: usize,
    /// int8: activation ranges, `minmax` or `percentile:P` (e.g. `percentile:99.99`).
    #[arg(long, default_value = "minmax", help_heading = "int8 calibration")]
    pub calibration_range: RangeMethod,
    /// int8: cross-layer equalization first: rescale the channels between convolutions
    /// joined by a ReLU so that each tensor's channels span similar ranges (the same
    /// function; docs/int8.md).
    #[arg(long, help_heading = "int8 calibration")]
    pub equalize: bool,
    /// int8: compute this op's hardswish in f32 from the accumulator instead of through
    /// an int8 pre-activation and a lookup table (repeatable; `stem` is the first
    /// convolution, whose 16 channels share one int8 grid badly; docs/int8.md).
    #[arg(long, value_name = "OP", help_heading = "int8 calibration")]
    pub float_hardswish: Vec<String>,
    /// int8: correct every bias so that each layer's mean output on the calibration images
    /// is the float network's despite the rounding upstream (docs/int8.md, "Bias
    /// correction").
    #[arg(long, help_heading = "int8 calibration")]
    pub bias_correction: bool,
    /// int8: draw the calibration images evenly from the classes (up to
    /// `--calibration-images / classes` of each, the rest from the classes that have more),
    /// so that the rare classes weigh as much as the majority in the grids and in
    /// `--bias-correction`'s means.
    #[arg(long, help_heading = "int8 calibration")]
    pub calibration_balanced: bool,
    /// int8: put every feature map that depthwise convolutions read (the stem's output and
    /// each expansion's) on one grid scale per channel with a shared zero point, instead of
    /// one grid for the whole map; their writers' hardswish is computed in f32 (format
    /// version 4; docs/int8.md, "Per-channel grids").
    #[arg(long, help_heading = "int8 calibration")]
    pub channel_grids: bool,
}

fn three(v: &[f32], what: &str) -> Result<[f32; 3]> {
    <[f32; 3]>::try_from(v).map_err(|_| anyhow::anyhow!("--{what} needs 3 values, got {v:?}"))
}

/// The command line, for provenance (the program as `derm-train`, not its build path).
pub fn command_line() -> String {
    std::iter::once("derm-train".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `git rev-parse HEAD` of the current directory's repository, or empty.
pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Builds and writes a seeded student (optionally over torchvision weights).
pub fn init_student(a: InitStudentArgs) -> Result<()> {
    let [h, w] = <[u32; 2]>::try_from(a.input_size.as_slice())
        .map_err(|_| anyhow::anyhow!("--input-size needs 2 values"))?;
    let mut meta = StudentMeta::new(
        a.arch,
        a.head,
        a.classes.clone(),
        Provenance {
            trained: false,
            command: command_line(),
            git_commit: git_commit(),
            seed: Some(a.seed),
            init_weights: a.init_weights.as_ref().map(|p| p.display().to_string()),
            notes: a.notes.clone(),
            ..Default::default()
        },
    );
    meta.group_names = a.groups.clone();
    meta.input_size = [h, w];
    meta.mean = three(&a.mean, "mean")?;
    meta.std = three(&a.std, "std")?;
    let mut s = Student::seeded(meta, a.seed)?;
    if let Some(p) = &a.init_weights {
        let n = mobilenet_v3::load_torchvision_weights(
            &mut s.vs,
            p,
            &LoadOptions {
                skip: a.skip.clone(),
            },
        )?;
        println!("loaded {n} tensors from {}", p.display());
    } else if !a.skip.is_empty() {
        bail!("--skip only applies with --init-weights");
    }
    s.save(&a.output)?;
    println!(
        "wrote {} (mobilenet_v3_{}, {} head, {} classes, {} trainable parameters)",
        a.output.display(),
        a.arch,
        a.head,
        a.classes.len(),
        mobilenet_v3::trainable_parameters(&s.vs)
    );
    Ok(())
}

/// Exports a student file to a model file and golden vectors.
pub fn run(a: ExportArgs) -> Result<()> {
    if a.golden_n < 1 {
        bail!("--golden-n must be at least 1, got {}", a.golden_n);
    }
    let mut provenance = serde_json::Map::new();
    provenance.insert(
        "export".into(),
        serde_json::json!({
            "command": command_line(),
            "git_commit": git_commit(),
            "checkpoint": a.checkpoint.display().to_string(),
            "logit_bias": a.logit_bias,
        }),
    );
    if let Some(p) = &a.evaluation {
        let text = std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("reading --evaluation {}: {e}", p.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--evaluation {} is not JSON: {e}", p.display()))?;
        provenance.insert("evaluation".into(), v);
    }
    let student = crate::student_file::load(&a.checkpoint)?;
    if let Some(b) = &a.logit_bias {
        export::add_logit_bias(&student, b)?;
    }
    let calibration = match (a.precision, &a.calibration.calibration_cache) {
        (Precision::Int8, Some(cache)) => {
            let m = &student.meta;
            Some(calibration_inputs(
                &a.calibration,
                &a.checkpoint,
                cache,
                (m.mean, m.std, m.input_size[0] as usize, m.crop),
                a.golden_seed as u64,
                !a.quiet,
            )?)
        }
        (Precision::Int8, None) => {
            bail!("--precision int8 needs --calibration-cache (training images to calibrate on)")
        }
        (_, Some(_)) => bail!("--calibration-cache only applies with --precision int8"),
        (_, None) => None,
    };
    let r = export::export_student(
        &student,
        &a.output,
        &ExportOptions {
            provenance,
            golden_layers: !a.no_layers,
            precision: a.precision,
            calibration,
        },
        a.golden_n,
        a.golden_seed,
    )?;
    println!(
        "wrote {} ({} ops, {} parameters; folded graph vs student: {:.1e} of the logit range)",
        r.model_path.display(),
        r.ops,
        r.params,
        r.fold_error
    );
    if r.precision != Precision::F32 {
        println!(
            "{} weights vs student: {:.1e} of the logit range (golden logits are the {} model's)",
            r.precision, r.precision_error, r.precision
        );
    }
    println!("wrote {}", r.golden_path.display());
    Ok(())
}

/// [`calibration_inputs`] for the float model file `model` (read from `path`): its square
/// input side and its normalization; a non-square input is refused by name.
pub fn model_calibration_inputs(
    model: &derm_codegen::ir::ModelFile,
    path: &std::path::Path,
    a: &CalibrationArgs,
    cache: &std::path::Path,
    seed: u64,
    progress: bool,
) -> Result<Calibrate> {
    let g = &model.graph;
    let size = g.input.shape[2];
    if g.input.shape[3] != size {
        bail!(
            "{}: calibration resizes to a square input; this one is {:?}",
            path.display(),
            g.input.shape
        );
    }
    calibration_inputs(
        a,
        path,
        cache,
        (g.preprocess.mean, g.preprocess.std, size, g.preprocess.crop),
        seed,
        progress,
    )
}

/// The int8 calibration images: `--calibration-images` of the cache's (or the fold's
/// training) images, drawn with `seed`, preprocessed as evaluation does (resized to the
/// model's input size, normalized with its `(mean, std, size)`; the cache's tiles must be
/// framed by its `crop`). `model` is the model's file, named in errors.
pub fn calibration_inputs(
    a: &CalibrationArgs,
    model: &std::path::Path,
    cache: &std::path::Path,
    (mean, std, size, crop): ([f32; 3], [f32; 3], usize, derm_codegen::ir::Crop),
    seed: u64,
    progress: bool,
) -> Result<Calibrate> {
    use crate::data::balance::BalancePlan;
    use crate::data::loader::{Batches, LoaderOptions};
    ensure!(
        a.calibration_images > 0,
        "--calibration-images must be at least 1"
    );
    let data = crate::args::CacheFoldArgs {
        cache: cache.to_owned(),
        fold: a.calibration_fold,
        k: a.calibration_k,
        split_seed: a.calibration_split_seed,
    };
    let (cache, rows) = data.open(|f| crate::train::cli::train_indices(f, None, 0))?;
    cache.check_crop(crop, model)?;
    let rows = if a.calibration_balanced {
        crate::train::cli::balanced_draw(|r| cache.label(r), rows, a.calibration_images, seed)
    } else {
        crate::train::cli::subsample(rows, Some(a.calibration_images), seed, 3)
    };
    let map = crate::train::fit::InputMap::new(cache.mean(), cache.std(), mean, std);
    let mut lo = LoaderOptions::eval(64);
    lo.train_size = Some(size);
    let plan = BalancePlan::plain(&rows);
    let mut inputs = Vec::with_capacity(rows.len());
    for b in Batches::new(&cache, &plan, lo, 0)? {
        let x = map.apply(&b?.images).contiguous();
        let n = x.size()[0] as usize;
        let flat = Vec::<f32>::try_from(x.view(-1))?;
        inputs.extend(flat.chunks(flat.len() / n.max(1)).map(<[f32]>::to_vec));
    }
    println!(
        "calibrating int8 on {} images of {}{}",
        inputs.len(),
        cache.dir().display(),
        a.calibration_fold
            .map(|f| format!(" (training images of fold {f})"))
            .unwrap_or_default()
    );
    Ok(Calibrate {
        inputs,
        range: a.calibration_range,
        progress,
        equalize: a.equalize,
        float_hardswish: a.float_hardswish.clone(),
        bias_correction: a.bias_correction,
        channel_grids: a.channel_grids,
    })
}
