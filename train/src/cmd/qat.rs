//! `derm-train qat`: quantization-aware fine-tuning of an f32 model file, written as an
//! int8 model file (docs/int8.md, "Quantization-aware fine-tuning").
//!
//! Calibrates the activation ranges on training images as `quantize` does, fine-tunes the
//! folded float network with those int8 grids in its forward pass
//! ([`crate::export::qat`]), then quantizes the fine-tuned weights on the same grids.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail, ensure};
use clap::Args;
use derm_codegen::golden::Golden as FloatGolden;
use derm_codegen::ir::ModelFile;
use derm_codegen::quant::ptq;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::export::{CalibrationArgs, command_line, git_commit, model_calibration_inputs};
use super::quantize::write_int8_golden;
use crate::args::CacheFoldArgs;
use crate::data::balance::{BalancePlan, ClassWeights};
use crate::data::loader::{Batches, LoaderOptions};
use crate::export::qat::{QatOptions, QatTrainer, activation_grid};
use crate::export::{
    RangeMethod, calibrate, channel_grid_ops, corrected, equalized, float_hardswish_ops,
};
use crate::train::cli::AugmentArgs;
use crate::train::fit::InputMap;
use crate::train::progress::EpochProgress;

/// Arguments of `derm-train qat`.
#[derive(Debug, Clone, Args)]
pub struct QatArgs {
    /// The f32 model file to fine-tune; the golden file beside it supplies the golden inputs.
    pub model: PathBuf,
    /// Output int8 model file; its golden vectors (the int8 oracle's logits on the same
    /// inputs) go beside it as `<name>.golden.safetensors`.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Training images (also the calibration images): the cache, or with `--fold` the
    /// training images of that fold (never fine-tune on the images you evaluate on).
    #[command(flatten)]
    pub data: CacheFoldArgs,
    /// At most this many training images (drawn with `--seed`).
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Calibration images, drawn from the training images with `--seed`.
    #[arg(long, default_value_t = 256)]
    pub calibration_images: usize,
    /// Activation ranges, `minmax` or `percentile:P`; fixed during fine-tuning.
    #[arg(long, default_value = "minmax")]
    pub calibration_range: RangeMethod,
    /// Draw the calibration images evenly from the classes (as `quantize
    /// --calibration-balanced`).
    #[arg(long)]
    pub calibration_balanced: bool,
    /// Cross-layer equalization before calibration (as `quantize --equalize`).
    #[arg(long)]
    pub equalize: bool,
    /// Compute this op's hardswish in f32 from the accumulator (repeatable; `stem` is the
    /// first convolution; as `quantize --float-hardswish`).
    #[arg(long, value_name = "OP")]
    pub float_hardswish: Vec<String>,
    /// Put every feature map that depthwise convolutions read on one grid scale per channel
    /// (as `quantize --channel-grids`); fine-tuning rounds them so.
    #[arg(long)]
    pub channel_grids: bool,
    /// Passes over the training images.
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    /// Softmax temperature of the distillation from the float model.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Also train each activation grid's scale (learned step size; zero points stay), with
    /// this learning rate on the scale's logarithm; the int8 file uses the trained grids.
    /// Without it the calibrated grids stay fixed.
    #[arg(long, value_name = "LR")]
    pub scale_lr: Option<f64>,
    /// Weight each image's distillation loss by its class (`sqrt`, `auto` or six numbers,
    /// as `student --class-weights`), so the rare classes' outputs count as they did in
    /// training; without it every image counts the same.
    #[arg(long)]
    pub class_weights: Option<ClassWeights>,
    /// Augmentation of the training images beyond the flips (the same flags as `student`'s),
    /// so that the float model is distilled on views it has not memorized as well. Off by
    /// default: on the recipe's fold-2 student it kept no more of the f32 predictions and
    /// lost balanced accuracy (docs/results.md).
    #[command(flatten)]
    pub augmentation: AugmentArgs,
    /// Correct every bias so that each layer's mean output on the calibration images is the
    /// float model's despite the rounding upstream (docs/int8.md, "Bias correction"):
    /// `before` fine-tuning (it starts from the corrected network), `after` it (on the
    /// result only), or `both`.
    #[arg(long, value_name = "WHEN")]
    pub bias_correction: Option<BiasCorrectionWhen>,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// libtorch intra-op threads.
    #[arg(long, default_value_t = 1)]
    pub threads: i32,
    /// Seed of the image order, flips and the calibration draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Continue an interrupted run from its checkpoint (`<output>.qat-checkpoint.safetensors`,
    /// written after every epoch); the same arguments are required.
    #[arg(long)]
    pub resume: bool,
}

/// When `qat --bias-correction` corrects the biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BiasCorrectionWhen {
    /// Before fine-tuning: the fine-tuning starts from the corrected network.
    Before,
    /// After fine-tuning, on the result.
    After,
    /// Before and after.
    Both,
}

impl BiasCorrectionWhen {
    fn before(self) -> bool {
        matches!(self, Self::Before | Self::Both)
    }

    fn after(self) -> bool {
        matches!(self, Self::After | Self::Both)
    }
}

/// Where the per-epoch checkpoint of a run writing `output` lives.
pub fn checkpoint_path(output: &Path) -> PathBuf {
    output.with_extension("qat-checkpoint.safetensors")
}

/// A run's progress, saved in its checkpoint after every epoch.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    /// Everything that shapes the result; a resumed run must match it.
    settings: serde_json::Value,
    /// Epochs finished.
    epochs_done: usize,
    /// Mean distillation loss of each finished epoch.
    losses: Vec<f64>,
}

/// A float model on its int8 grid: what `qat` trains on and `quant-sensitivity` scores.
pub struct FoldGrid {
    /// The model, cross-layer equalized when asked.
    pub model: ModelFile,
    /// The calibration images.
    pub cal: crate::export::Calibrate,
    /// Every activation observed on them.
    pub observed: ptq::Calibration,
    /// The grid of every activation key.
    pub params: std::collections::BTreeMap<String, derm_codegen::ir::QParams>,
    /// The ops whose hardswish runs in f32 (resolved names; no pre-activation grid).
    pub float_hardswish: Vec<String>,
    /// The per-channel scales of the feature maps on per-channel grids (their shared
    /// parameters are in `params`).
    pub channel_scales: std::collections::BTreeMap<String, Vec<f32>>,
}

/// Calibration of the float `model` (read from `path`) on `images` training images of
/// `data` (the fold's, as `quantize --calibration-fold` would draw them), after
/// cross-layer equalization when `equalize`, and the activation grid `range` chooses
/// (no pre-activation grid for the ops of `float_hardswish`; `stem` resolved; with
/// `channel_grids`, per-channel grids for the depthwise inputs: `channel_grid_ops`).
#[allow(clippy::too_many_arguments)]
pub fn fold_grid(
    model: ModelFile,
    path: &Path,
    data: &CacheFoldArgs,
    images: usize,
    range: RangeMethod,
    equalize: bool,
    float_hardswish: &[String],
    channel_grids: bool,
    balanced: bool,
    seed: u64,
    progress: bool,
) -> Result<FoldGrid> {
    let cal_args = CalibrationArgs {
        calibration_cache: Some(data.cache.clone()),
        calibration_fold: data.fold,
        calibration_k: data.k,
        calibration_split_seed: data.split_seed,
        calibration_images: images,
        calibration_range: range,
        equalize,
        float_hardswish: float_hardswish.to_vec(),
        bias_correction: false,
        calibration_balanced: balanced,
        channel_grids,
    };
    let cal = model_calibration_inputs(&model, path, &cal_args, &data.cache, seed, progress)?;
    let model = equalized(&model, &cal)?;
    let observed = calibrate(&model, &cal)?;
    let float_hardswish = float_hardswish_ops(&model, float_hardswish)?;
    let (float_hardswish, grids) = channel_grid_ops(&model, float_hardswish, channel_grids);
    let mut params = activation_grid(&model, &observed, range, &float_hardswish)?;
    let channel_scales = observed
        .channel_grids(&grids, range, &mut params)
        .map_err(|e| anyhow::anyhow!("per-channel grids: {e}"))?;
    Ok(FoldGrid {
        model,
        cal,
        observed,
        params,
        float_hardswish,
        channel_scales,
    })
}

/// Fine-tunes `a.model` on the int8 grid and writes the int8 file and its golden vectors.
pub fn run(a: QatArgs) -> Result<()> {
    let model = ModelFile::read(&a.model).map_err(|e| anyhow::anyhow!("{e}"))?;
    if model.graph.quantization.is_some() {
        bail!("{} is already an int8 model", a.model.display());
    }
    ensure!(a.epochs > 0, "--epochs must be at least 1");
    ensure!(a.batch_size > 0, "--batch-size must be at least 1");
    ensure!(a.threads > 0, "--threads must be at least 1");
    let augment = a.augmentation.augment();
    augment.validate()?;
    let golden = FloatGolden::read(FloatGolden::path_for(&a.model)).map_err(|e| {
        anyhow::anyhow!(
            "{e} (qat reads the golden inputs of {} from its golden file)",
            a.model.display()
        )
    })?;
    tch::set_num_threads(a.threads);
    let size = model.graph.input.shape[2];
    let FoldGrid {
        model,
        cal,
        observed,
        params,
        float_hardswish,
        channel_scales,
    } = fold_grid(
        model,
        &a.model,
        &a.data,
        a.calibration_images,
        a.calibration_range,
        a.equalize,
        &a.float_hardswish,
        a.channel_grids,
        a.calibration_balanced,
        a.seed,
        !a.quiet,
    )?;
    let g = &model.graph;

    let (cache, rows) = a
        .data
        .open(|f| crate::train::cli::train_indices(f, None, a.seed))?;
    let rows = crate::train::cli::subsample(rows, a.max_train, a.seed, 1);
    if a.data.fold.is_none() {
        // Without a fold every image is a training image, as for a shipped model.
        println!("fine-tuning on every image of {}", cache.dir().display());
    }
    ensure!(!rows.is_empty(), "no training images");
    cache.check_crop(g.preprocess.crop, &a.model)?;
    let map = InputMap::new(
        cache.mean(),
        cache.std(),
        g.preprocess.mean,
        g.preprocess.std,
    );
    let mut lo = LoaderOptions::train(a.batch_size, a.seed);
    lo.train_size = Some(size);
    // Keep a last partial batch: small fine-tuning sets should use every image.
    lo.drop_last = false;
    lo.augment = augment;
    let plan = BalancePlan::plain(&rows);
    let class_weights = a
        .class_weights
        .as_ref()
        .map(|w| Tensor::from_slice(&w.resolve(&plan.class_counts(cache.labels()))));
    let opts = QatOptions {
        lr: a.lr,
        temperature: a.temperature,
        scale_lr: a.scale_lr,
    };
    let params_before = params.clone();
    let correct_before = a.bias_correction.is_some_and(BiasCorrectionWhen::before);
    // What each correction did, for the provenance.
    let mut corrections = serde_json::Map::new();
    let start = if correct_before {
        let (m, report) = corrected(
            &model,
            &model,
            params.clone(),
            &channel_scales,
            &float_hardswish,
            &cal.inputs,
        )?;
        corrections.insert("before".into(), report);
        m
    } else {
        model.clone()
    };
    let mut trainer = QatTrainer::starting_from(
        &model,
        &start,
        params,
        &channel_scales,
        &float_hardswish,
        opts,
    )?;
    let started = std::time::Instant::now();
    let ck_path = checkpoint_path(&a.output);
    let mut settings = serde_json::json!({
        "source": a.model.display().to_string(),
        "cache": a.data.cache.display().to_string(),
        "fold": a.data.fold,
        "k": a.data.k,
        "split_seed": a.data.split_seed,
        "max_train": a.max_train,
        "calibration_images": a.calibration_images,
        "calibration_range": a.calibration_range.to_string(),
        "equalize": a.equalize,
        "float_hardswish": float_hardswish,
        "epochs": a.epochs,
        "lr": a.lr,
        "temperature": a.temperature,
        "scale_lr": a.scale_lr,
        "class_weights": class_weights.as_ref().map(|w| Vec::<f32>::try_from(w).unwrap_or_default()),
        "batch_size": a.batch_size,
        "seed": a.seed,
    });
    if a.calibration_balanced {
        // Only when asked, as below: older checkpoints' settings stay valid.
        settings["calibration_balanced"] = true.into();
    }
    if a.channel_grids {
        settings["channel_grids"] = true.into();
    }
    if correct_before {
        // Only when asked, as for `augment`: the fine-tuning starts elsewhere.
        settings["bias_correction_before"] = true.into();
    }
    if augment != Default::default() {
        // Only when asked, so that runs without it keep the settings of earlier versions
        // (a checkpoint they wrote still resumes).
        settings["augment"] = serde_json::to_value(augment)?;
    }
    let mut progress_state = Progress {
        settings: settings.clone(),
        epochs_done: 0,
        losses: Vec::new(),
    };
    if a.resume {
        ensure!(
            ck_path.exists(),
            "--resume: there is no checkpoint {} to continue from",
            ck_path.display()
        );
        let saved: Progress = trainer.resume(&ck_path)?;
        ensure!(
            saved.settings == settings,
            "{} was written by a run with other arguments: {} (this run: {})",
            ck_path.display(),
            saved.settings,
            settings
        );
        println!(
            "resuming from {} after epoch {}/{}",
            ck_path.display(),
            saved.epochs_done,
            a.epochs
        );
        progress_state = saved;
    } else {
        ensure!(
            !ck_path.exists(),
            "{} exists: an earlier run writing {} was interrupted; pass --resume to continue \
             it, or delete the checkpoint to start over",
            ck_path.display(),
            a.output.display()
        );
    }
    let mut last_loss = progress_state.losses.last().copied().unwrap_or(f64::NAN);
    for epoch in progress_state.epochs_done..a.epochs {
        let batches = Batches::new(&cache, &plan, lo, epoch as u64)?;
        let mut progress = EpochProgress::new(
            &format!("qat epoch {}/{}", epoch + 1, a.epochs),
            rows.len() as u64,
            !a.quiet,
        );
        let (mut sum, mut seen) = (0.0, 0usize);
        for b in batches {
            let b = b?;
            let x = map.apply(&b.images);
            let n = x.size()[0] as usize;
            let w = class_weights.as_ref().map(|w| w.index_select(0, &b.labels));
            let l = trainer.step_weighted(&x, w.as_ref())?;
            sum += l * n as f64;
            seen += n;
            progress.step(n as u64, l);
        }
        progress.finish();
        last_loss = sum / seen.max(1) as f64;
        println!(
            "qat epoch {}/{}: distillation loss {last_loss:.4} over {seen} images",
            epoch + 1,
            a.epochs
        );
        // Batches are seeded by epoch, so a run resumed here sees what this one would have.
        progress_state.epochs_done = epoch + 1;
        progress_state.losses.push(last_loss);
        trainer.save(&ck_path, &progress_state)?;
    }
    let grid = trainer.grid()?;
    // How far training moved the grids (1 when they stayed fixed).
    let moved: Vec<f64> = grid
        .iter()
        .map(|(k, p)| f64::from(p.scale) / f64::from(params_before[k].scale))
        .collect();
    let (min_moved, max_moved) = moved
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    if a.scale_lr.is_some() {
        println!(
            "learned activation scales: {:.3}x to {:.3}x the calibrated ones",
            min_moved, max_moved
        );
    }
    let tuned = trainer.finish(&model)?;
    let tuned = if a.bias_correction.is_some_and(BiasCorrectionWhen::after) {
        let (m, report) = corrected(
            &model,
            &tuned,
            grid.clone(),
            &channel_scales,
            &float_hardswish,
            &cal.inputs,
        )?;
        corrections.insert("after".into(), report);
        m
    } else {
        tuned
    };
    // The file rounds on the grids the fine-tuning rounded on: the calibrated ones (learned
    // from them with `--scale-lr`), with the same per-channel grids.
    let mut q = ptq::quantize_on_grid(&tuned, grid, channel_scales, &float_hardswish)
        .map_err(|e| anyhow::anyhow!("int8 quantization of the fine-tuned model: {e}"))?;
    q.graph
        .provenance
        .insert("calibration".into(), observed.record(a.calibration_range));
    // The provenance is the settings a resumed run must match, plus what the run measured.
    let mut provenance = settings;
    if let Some(p) = provenance.as_object_mut() {
        for (key, value) in [
            ("command", serde_json::json!(command_line())),
            ("git_commit", serde_json::json!(git_commit())),
            ("training_images", serde_json::json!(rows.len())),
            ("final_loss", serde_json::json!(last_loss)),
            (
                "scale_change",
                serde_json::json!({"min": min_moved, "max": max_moved}),
            ),
            (
                "seconds",
                serde_json::json!(started.elapsed().as_secs_f64()),
            ),
            // The images calibration really drew (at most the requested number).
            ("calibration_images", serde_json::json!(cal.inputs.len())),
            ("bias_correction", serde_json::json!(a.bias_correction)),
            (
                "bias_corrections",
                serde_json::Value::Object(corrections.clone()),
            ),
        ] {
            p.insert(key.into(), value);
        }
    }
    q.graph.provenance.insert("qat".into(), provenance);
    q.write(&a.output)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", a.output.display()))?;
    let (gp, n, agree) = write_int8_golden(&q, &golden, &a.output)?;
    println!(
        "wrote {} (quantization-aware, {} epochs on {} images in {:.0} s)",
        a.output.display(),
        a.epochs,
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "wrote {} ({n} golden inputs; int8 top-1 agrees with the f32 golden on {agree} of {n})",
        gp.display()
    );
    // The result is complete: the checkpoint has done its job.
    std::fs::remove_file(&ck_path)
        .map_err(|e| anyhow::anyhow!("removing the checkpoint {}: {e}", ck_path.display()))?;
    Ok(())
}
