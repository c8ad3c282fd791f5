//! `derm-train metrics`: score a predictions file against a cache's labels
//! with the ESFair formulas, print the tables and draw the confusion PNGs.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;

use crate::data::cache::Cache;
use crate::data::class_index;
use crate::data::manifest::split_csv_line;
use crate::metrics::{EvalOptions, evaluate};
use crate::plot::confusion_pngs;
use crate::report::write_report;

/// Score predictions made anywhere (a trained model, the runtime on a Pi)
/// for samples of a cache.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Cache whose labels and groups are the ground truth.
    #[arg(long)]
    pub cache: PathBuf,
    /// CSV with a header and columns `id` (the cache's sample id) and `pred`
    /// (a class name or index); samples not listed are not scored.
    #[arg(long)]
    pub predictions: PathBuf,
    /// Group left out of SPD and of the minority choice (repeatable).
    #[arg(long)]
    pub exclude_group: Vec<String>,
    /// Force the minority group instead of the smallest one.
    #[arg(long)]
    pub minority_group: Option<String>,
    /// Mean seconds per 100 images (enables the latency and overall scores).
    #[arg(long)]
    pub latency: Option<f64>,
    /// Folder for `evaluation.json` and the confusion-matrix PNGs.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `metrics`.
pub fn run(args: MetricsArgs) -> Result<()> {
    let cache = Cache::open(&args.cache)?;
    let by_id: HashMap<&str, usize> = (0..cache.len()).map(|i| (cache.id(i), i)).collect();
    let text = std::fs::read_to_string(&args.predictions)
        .with_context(|| format!("reading {}", args.predictions.display()))?;
    let at = |line: usize| format!("{}:line {}", args.predictions.display(), line);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        bail!("{}: empty file", args.predictions.display())
    };
    let header = split_csv_line(header).map_err(|e| anyhow::anyhow!("{}: {e}", at(1)))?;
    let col = |n: &str| header.iter().position(|h| h.trim() == n);
    let (Some(ci), Some(cp)) = (col("id"), col("pred")) else {
        bail!(
            "{}: needs columns id and pred (found {})",
            args.predictions.display(),
            header.join(",")
        );
    };
    let (mut preds, mut labels, mut groups) = (vec![], vec![], vec![]);
    let mut seen = vec![false; cache.len()];
    for (i, line) in lines {
        let f = split_csv_line(line).map_err(|e| anyhow::anyhow!("{}: {e}", at(i + 1)))?;
        let id = f.get(ci).map(|s| s.trim()).unwrap_or("");
        let p = f.get(cp).map(|s| s.trim()).unwrap_or("");
        let Some(&s) = by_id.get(id) else {
            bail!("{}: id {id:?} is not in the cache", at(i + 1))
        };
        ensure!(!seen[s], "{}: id {id:?} listed twice", at(i + 1));
        seen[s] = true;
        let pred = class_index(p)
            .or_else(|| {
                p.parse::<usize>()
                    .ok()
                    .filter(|&c| c < cache.class_names().len())
            })
            .ok_or_else(|| anyhow::anyhow!("{}: prediction {p:?} is not a class", at(i + 1)))?;
        preds.push(pred);
        labels.push(cache.label(s));
        groups.push(cache.group(s));
    }
    let opts = EvalOptions {
        minority_group: args.minority_group.clone(),
        exclude_groups: args.exclude_group.clone(),
        latency_s_per_100: args.latency,
        ..EvalOptions::for_cache(&cache)
    };
    let eval = evaluate(&preds, &labels, &groups, &opts)?;
    print!("{}", eval.summary_table());
    print!("{}", eval.group_table());
    print!("{}", eval.class_table());
    let report = args.out.join("evaluation.json");
    write_report(&report, "metrics", &eval)?;
    let pngs = confusion_pngs(&args.out, "", &eval)?;
    println!(
        "report: {} ({} confusion PNGs beside it)",
        report.display(),
        pngs.len()
    );
    Ok(())
}
