//! `derm-train quant-sensitivity`: which weights and activations of an f32 model file lose
//! accuracy under int8 (docs/int8.md, "Finding the tensors that lose accuracy").
//!
//! Calibrates as `quantize` does (training images of `--fold`), then scores the validation
//! images of `--fold` with the int8 rounding switched on for: nothing (the float model),
//! the weights only, the activations only, everything, each activation alone,
//! everything but each activation, and each weight tensor alone ([`crate::export::sensitivity`]). Writes
//! `sensitivity.json` and prints the tensors that do the most damage.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Result, bail, ensure};
use clap::Args;
use derm_codegen::ir::ModelFile;
use derm_codegen::quant::ptq::RangeMethod;
use serde::Serialize;
use tch::{Kind, Tensor};

use super::qat::{FoldGrid, fold_grid};
use crate::args::CacheFoldArgs;
use crate::data::balance::BalancePlan;
use crate::data::loader::{Batches, LoaderOptions};
use crate::export::sensitivity::{Rounding, Sensitivity};
use crate::metrics::{EvalOptions, evaluate};
use crate::report::write_report;
use crate::train::cli::val_indices;
use crate::train::fit::InputMap;
use crate::train::progress::EpochProgress;

/// Arguments of `derm-train quant-sensitivity`.
#[derive(Debug, Clone, Args)]
pub struct QuantSensitivityArgs {
    /// The f32 model file.
    pub model: PathBuf,
    /// Images: with `--fold`, calibration on that fold's training images and scores on its
    /// validation images (use a fold whose scores you do not report).
    #[command(flatten)]
    pub data: CacheFoldArgs,
    /// At most this many validation images (drawn with `--seed`).
    #[arg(long)]
    pub max_val: Option<usize>,
    /// Calibration images, drawn from the training images with `--seed`.
    #[arg(long, default_value_t = 256)]
    pub calibration_images: usize,
    /// Activation ranges, `minmax` or `percentile:P`.
    #[arg(long, default_value = "minmax")]
    pub calibration_range: RangeMethod,
    /// Draw the calibration images evenly from the classes (as `quantize
    /// --calibration-balanced`).
    #[arg(long)]
    pub calibration_balanced: bool,
    /// Cross-layer equalization before calibration (as `quantize --equalize`).
    #[arg(long)]
    pub equalize: bool,
    /// Compute this op's hardswish in f32 (repeatable; `stem` is the first convolution): its
    /// pre-activation is never rounded, as with `qat --float-hardswish`.
    #[arg(long, value_name = "OP")]
    pub float_hardswish: Vec<String>,
    /// Round this feature map (an activation key, e.g. `features.0.0`) on one grid per
    /// channel, each channel's range from the calibration images (repeatable). The int8
    /// format has no such grid: this measures what one would buy before it is built.
    #[arg(long, value_name = "KEY")]
    pub per_channel_grid: Vec<String>,
    /// Wherever a layer's weights are rounded, its bias absorbs the mean output shift that
    /// their rounding causes on the calibration images (bias correction).
    #[arg(long)]
    pub bias_correction: bool,
    /// Seed of the calibration draw (and of `--max-val`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only the summary rows (float, weights, activations, all): a quick check of a
    /// calibration choice, without the per-activation rankings.
    #[arg(long)]
    pub summary_only: bool,
    /// Rows of each ranking printed (the JSON has every row).
    #[arg(long, default_value_t = 12)]
    pub top: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// libtorch intra-op threads.
    #[arg(long, default_value_t = 1)]
    pub threads: i32,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Folder for `sensitivity.json`.
    #[arg(long)]
    pub out: PathBuf,
}

/// One forward configuration's scores against the float model.
#[derive(Debug, Clone, Serialize)]
struct Row {
    /// What was rounded: `float`, `weights`, `activations`, `all`, an activation key or a
    /// weight tensor's name.
    name: String,
    /// `summary`, `alone` (only this activation rounded, weights float), `left_out`
    /// (everything rounded but this activation) or `weight_alone` (only this weight tensor
    /// rounded, activations float).
    kind: &'static str,
    /// Fraction of images whose top-1 class equals the float model's.
    agreement: f64,
    /// Mean KL divergence of the float model's softmax from this configuration's.
    kl: f64,
    accuracy: f64,
    balanced_accuracy: f64,
    /// Accuracy per group, in the cache's group order (`None`: no image of the group).
    group_accuracy: Vec<Option<f64>>,
    /// The calibrated range (minmax or percentile, as chosen) of an activation.
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<(f32, f32)>,
    /// The same activation's range at the 99.99th percentile, for comparison: a minmax
    /// span far wider than this one is stretched by a few outliers.
    #[serde(skip_serializing_if = "Option::is_none")]
    range_p9999: Option<(f32, f32)>,
}

/// The body of `sensitivity.json`.
#[derive(Debug, Serialize)]
struct Report {
    model: String,
    cache: String,
    fold: Option<usize>,
    k: usize,
    split_seed: u64,
    images: usize,
    calibration_images: usize,
    calibration_range: String,
    /// The ops whose hardswish ran in f32.
    float_hardswish: Vec<String>,
    /// The feature maps rounded on one grid per channel.
    per_channel_grids: Vec<String>,
    /// Whether biases absorbed the mean shift of their weights' rounding.
    bias_correction: bool,
    group_names: Vec<String>,
    rows: Vec<Row>,
}

/// Runs `derm-train quant-sensitivity`.
pub fn run(a: QuantSensitivityArgs) -> Result<()> {
    ensure!(a.threads > 0, "--threads must be at least 1");
    ensure!(a.batch_size > 0, "--batch-size must be at least 1");
    tch::set_num_threads(a.threads);
    let model = ModelFile::read(&a.model).map_err(|e| anyhow::anyhow!("{e}"))?;
    if model.graph.quantization.is_some() {
        bail!(
            "{} is already an int8 model; give the f32 file it came from",
            a.model.display()
        );
    }
    let FoldGrid {
        model,
        cal,
        observed,
        params,
        float_hardswish,
        ..
    } = fold_grid(
        model,
        &a.model,
        &a.data,
        a.calibration_images,
        a.calibration_range,
        a.equalize,
        &a.float_hardswish,
        false,
        a.calibration_balanced,
        a.seed,
        !a.quiet,
    )?;
    let calibration_images = cal.inputs.len();
    let g = &model.graph;
    let size = g.input.shape[2];
    let mut s = Sensitivity::new(&model, params, &float_hardswish)?;
    if !a.per_channel_grid.is_empty() || a.bias_correction {
        let flat: Vec<f32> = cal.inputs.concat();
        let images = Tensor::from_slice(&flat).view([
            calibration_images as i64,
            3,
            size as i64,
            size as i64,
        ]);
        let stats = s.channel_statistics(&images, a.batch_size as i64)?;
        s.per_channel_grids(&a.per_channel_grid, &stats)?;
        if a.bias_correction {
            s.bias_correction(&stats)?;
        }
    }

    // The scored images, preprocessed once and kept: every configuration runs on them.
    let (cache, rows) = a.data.open(|f| val_indices(f, a.max_val, a.seed))?;
    ensure!(!rows.is_empty(), "no validation images");
    if a.data.fold.is_none() {
        println!(
            "no --fold: calibrating and scoring on every image of {}",
            cache.dir().display()
        );
    }
    cache.check_crop(g.preprocess.crop, &a.model)?;
    let map = InputMap::new(
        cache.mean(),
        cache.std(),
        g.preprocess.mean,
        g.preprocess.std,
    );
    let mut lo = LoaderOptions::eval(a.batch_size);
    lo.train_size = Some(size);
    let (mut batches, mut labels, mut groups) = (Vec::new(), Vec::new(), Vec::new());
    for b in Batches::new(&cache, &BalancePlan::plain(&rows), lo, 0)? {
        let b = b?;
        labels.extend(b.indices.iter().map(|&i| cache.label(i)));
        groups.extend(b.indices.iter().map(|&i| cache.group(i)));
        batches.push(map.apply(&b.images));
    }
    let opts = EvalOptions::for_cache(&cache);

    let keys = s.keys();
    let weights = s.weight_names();
    let all_keys: BTreeSet<String> = keys.iter().cloned().collect();
    let mut configs: Vec<(String, &'static str, Rounding)> = vec![
        ("float".into(), "summary", rounding(none(), none())),
        (
            "weights".into(),
            "summary",
            rounding(weights.clone(), none()),
        ),
        (
            "activations".into(),
            "summary",
            rounding(none(), keys.clone()),
        ),
        (
            "all".into(),
            "summary",
            rounding(weights.clone(), keys.clone()),
        ),
    ];
    for k in keys.iter().filter(|_| !a.summary_only) {
        configs.push((k.clone(), "alone", rounding(none(), [k.clone()])));
    }
    for k in keys.iter().filter(|_| !a.summary_only) {
        let mut rest = all_keys.clone();
        rest.remove(k);
        configs.push((k.clone(), "left_out", rounding(weights.clone(), rest)));
    }
    for w in weights.iter().filter(|_| !a.summary_only) {
        configs.push((w.clone(), "weight_alone", rounding([w.clone()], none())));
    }
    println!(
        "{} activations, {} weight tensors, {} configurations on {} images",
        keys.len(),
        weights.len(),
        configs.len(),
        labels.len()
    );

    let logits_of = |r: &Rounding| -> Result<Tensor> {
        let parts = batches
            .iter()
            .map(|x| s.logits(x, r))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0).to_kind(Kind::Float))
    };
    let float = logits_of(&configs[0].2)?;
    let float_top: Vec<i64> = Vec::try_from(float.argmax(-1, false))?;
    let float_p = float.softmax(-1, Kind::Float);
    let float_logp = float.log_softmax(-1, Kind::Float);
    let mut progress = EpochProgress::new("configurations", configs.len() as u64, !a.quiet);
    let mut out = Vec::with_capacity(configs.len());
    for (name, kind, r) in &configs {
        let y = logits_of(r)?;
        let top: Vec<i64> = Vec::try_from(y.argmax(-1, false))?;
        let same = top.iter().zip(&float_top).filter(|(a, b)| a == b).count();
        let kl = f64::try_from(
            (&float_p * (&float_logp - y.log_softmax(-1, Kind::Float)))
                .sum_dim_intlist(-1, false, Kind::Double)
                .mean(Kind::Double),
        )?;
        let preds: Vec<usize> = top.iter().map(|&p| p as usize).collect();
        let e = evaluate(&preds, &labels, &groups, &opts)?;
        let is_key = matches!(*kind, "alone" | "left_out");
        out.push(Row {
            name: name.clone(),
            kind,
            agreement: same as f64 / top.len() as f64,
            kl,
            accuracy: e.accuracy,
            balanced_accuracy: e.balanced_accuracy,
            group_accuracy: e.groups.iter().map(|g| g.accuracy).collect(),
            range: is_key
                .then(|| observed.range(name, a.calibration_range))
                .flatten(),
            range_p9999: is_key
                .then(|| observed.range(name, RangeMethod::Percentile(0.9999)))
                .flatten(),
        });
        progress.step(1, 0.0);
    }
    progress.finish();

    print_tables(
        &out,
        cache.group_names(),
        if a.summary_only { 0 } else { a.top },
    );
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join("sensitivity.json");
    let body = Report {
        model: a.model.display().to_string(),
        cache: a.data.cache.display().to_string(),
        fold: a.data.fold,
        k: a.data.k,
        split_seed: a.data.split_seed,
        images: labels.len(),
        calibration_images,
        calibration_range: a.calibration_range.to_string(),
        float_hardswish,
        per_channel_grids: a.per_channel_grid.clone(),
        bias_correction: a.bias_correction,
        group_names: cache.group_names().to_vec(),
        rows: out,
    };
    write_report(&path, "quant-sensitivity", &body)?;
    println!("report: {}", path.display());
    Ok(())
}

fn rounding(
    weights: impl IntoIterator<Item = String>,
    keys: impl IntoIterator<Item = String>,
) -> Rounding {
    Rounding {
        weights: weights.into_iter().collect(),
        activations: keys.into_iter().collect(),
    }
}

fn none() -> Vec<String> {
    Vec::new()
}

/// The summary rows, then the activations that hurt most alone and those whose removal
/// recovers most, as markdown tables.
fn print_tables(rows: &[Row], group_names: &[String], top: usize) {
    let head = |title: &str| {
        println!("\n{title}\n");
        print!("| rounded | agreement | KL | accuracy | balanced |");
        for g in group_names {
            print!(" {g} |");
        }
        println!(" range | p99.99 range |");
        print!("|---|---|---|---|---|");
        for _ in group_names {
            print!("---|");
        }
        println!("---|---|");
    };
    let line = |r: &Row| {
        print!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} |",
            r.name, r.agreement, r.kl, r.accuracy, r.balanced_accuracy
        );
        for g in &r.group_accuracy {
            match g {
                Some(g) => print!(" {g:.4} |"),
                None => print!(" |"),
            }
        }
        let fmt =
            |v: Option<(f32, f32)>| v.map_or(String::new(), |(l, h)| format!("{l:.3}..{h:.3}"));
        println!(" {} | {} |", fmt(r.range), fmt(r.range_p9999));
    };
    head("Summary (agreement: top-1 equal to the float model's)");
    rows.iter().filter(|r| r.kind == "summary").for_each(line);
    if top == 0 {
        return;
    }
    let ranked = |kind: &str, title: &str, worst_first: bool| {
        let mut v: Vec<&Row> = rows.iter().filter(|r| r.kind == kind).collect();
        v.sort_by(|a, b| {
            let o = a.kl.total_cmp(&b.kl);
            if worst_first { o.reverse() } else { o }
        });
        head(title);
        v.into_iter().take(top).for_each(line);
    };
    ranked(
        "alone",
        "Rounded alone (weights float), largest KL first",
        true,
    );
    ranked(
        "left_out",
        "Everything rounded but this activation, smallest KL first (the most recovered)",
        false,
    );
    ranked(
        "weight_alone",
        "One weight tensor rounded alone (activations float), largest KL first",
        true,
    );
}
