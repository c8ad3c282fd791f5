//! `derm-train evaluate`: scores trained student or teacher files (one, or an ensemble) on a
//! prepared cache or one fold of it, with optional test-time augmentation, and writes the
//! same ESFair JSON and confusion PNGs as training's evaluation, plus per-image predictions.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Result, ensure};
use clap::Args;
use serde::Serialize;

use crate::args::CacheFoldArgs;
use crate::infer::{self, InferOptions, Tta};
use crate::metrics::{EvalOptions, Evaluation, evaluate};
use crate::plot::confusion_pngs;
use crate::report::write_report;
use crate::train::cli::val_indices;

/// Arguments of `derm-train evaluate`.
#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    /// Student, teacher or exported model file (f32, f16 or int8, run as the runtime computes
    /// it); give it several times to score the ensemble (logits averaged).
    #[arg(long = "model", required = true)]
    pub models: Vec<PathBuf>,
    /// The cache; with `--fold`, only that fold's validation images.
    #[command(flatten)]
    pub data: CacheFoldArgs,
    /// As training's `--max-val` (with `--fold` and `--seed`): the same validation subset.
    #[arg(long)]
    pub max_val: Option<usize>,
    /// As training's `--seed` (only used with `--max-val`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image side for every model (default: the side each model was trained at).
    #[arg(long)]
    pub train_size: Option<usize>,
    /// Test-time augmentation: logits averaged over none, a mirror, or the 8 dihedral views.
    #[arg(long, value_enum, default_value_t = Tta::None)]
    pub tta: Tta,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Groups left out of SPD and the minority choice (comma-separated, e.g. `unknown`).
    #[arg(long, value_delimiter = ',')]
    pub exclude_groups: Vec<String>,
    /// Force the minority group instead of the smallest one.
    #[arg(long)]
    pub minority_group: Option<String>,
    /// Mean seconds per 100 images (enables the latency and overall scores).
    #[arg(long)]
    pub latency: Option<f64>,
    /// libtorch intra-op threads.
    #[arg(long)]
    pub threads: Option<i32>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Folder for `evaluation.json`, `predictions.csv` and the confusion PNGs.
    #[arg(long)]
    pub out: PathBuf,
}

/// The body of `evaluation.json`.
#[derive(Debug, Serialize)]
struct EvaluateReport<'a> {
    models: Vec<String>,
    cache: String,
    fold: Option<usize>,
    k: usize,
    split_seed: u64,
    images: usize,
    tta: Tta,
    train_size: Option<usize>,
    evaluation: &'a Evaluation,
}

/// Runs `derm-train evaluate`.
pub fn run(a: EvaluateArgs) -> Result<()> {
    if let Some(t) = a.threads {
        ensure!(t > 0, "--threads {t} must be > 0");
        tch::set_num_threads(t);
    }
    let (cache, rows) = a.data.open(|f| val_indices(f, a.max_val, a.seed))?;
    let models = a
        .models
        .iter()
        .map(|p| infer::load_model(p))
        .collect::<Result<Vec<_>>>()?;
    let opts = InferOptions {
        batch_size: a.batch_size,
        size: a.train_size,
        tta: a.tta,
        progress: !a.quiet,
    };
    let logits = infer::ensemble_logits(&models, &cache, &rows, &opts)?;
    let preds: Vec<usize> = Vec::<i64>::try_from(logits.argmax(-1, false))?
        .into_iter()
        .map(|p| p as usize)
        .collect();
    let labels: Vec<usize> = rows.iter().map(|&i| cache.label(i)).collect();
    let groups: Vec<usize> = rows.iter().map(|&i| cache.group(i)).collect();
    let eval_opts = EvalOptions {
        minority_group: a.minority_group.clone(),
        exclude_groups: a.exclude_groups.clone(),
        latency_s_per_100: a.latency,
        ..EvalOptions::for_cache(&cache)
    };
    let eval = evaluate(&preds, &labels, &groups, &eval_opts)?;
    print!("{}", eval.summary_table());
    print!("{}", eval.group_table());
    print!("{}", eval.class_table());

    std::fs::create_dir_all(&a.out)?;
    let flat: Vec<f32> = Vec::<f32>::try_from(logits.flatten(0, -1))?;
    let nc = cache.class_names().len();
    let mut csv = String::from("id,label,group,pred");
    for c in cache.class_names() {
        let _ = write!(csv, ",logit_{c}");
    }
    csv.push('\n');
    for (r, &i) in rows.iter().enumerate() {
        let _ = write!(
            csv,
            "{},{},{},{}",
            cache.id(i),
            cache.class_names()[labels[r]],
            cache.group_names()[groups[r]],
            cache.class_names()[preds[r]]
        );
        for v in &flat[r * nc..(r + 1) * nc] {
            let _ = write!(csv, ",{v}");
        }
        csv.push('\n');
    }
    let pred_path = a.out.join("predictions.csv");
    std::fs::write(&pred_path, csv)?;
    let body = EvaluateReport {
        models: a.models.iter().map(|p| p.display().to_string()).collect(),
        cache: a.data.cache.display().to_string(),
        fold: a.data.fold,
        k: a.data.k,
        split_seed: a.data.split_seed,
        images: rows.len(),
        tta: a.tta,
        train_size: a.train_size,
        evaluation: &eval,
    };
    let report = a.out.join("evaluation.json");
    write_report(&report, "evaluate", &body)?;
    let pngs = confusion_pngs(&a.out, "", &eval)?;
    println!(
        "report: {} (+ {}, {} confusion PNGs)",
        report.display(),
        pred_path.display(),
        pngs.len()
    );
    Ok(())
}
