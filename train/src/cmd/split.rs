//! `derm-train split`: lesion-grouped, class-stratified folds of a cache.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use clap::Args;
use serde::Serialize;

use crate::data::CLASS_NAMES;
use crate::data::cache::Cache;
use crate::data::split::{Fold, kfold};
use crate::report::{Table, write_report};

/// Split a cache into k lesion-grouped, class-stratified folds and print the
/// class counts of each validation fold.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// Cache folder (from `prepare`).
    #[arg(long)]
    pub cache: PathBuf,
    /// Number of folds.
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Seed of the assignment.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// JSON report with the folds (default: `<cache>/folds-k<K>-seed<SEED>.json`).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Also write each fold's validation images as a CSV manifest
    /// (`DIR/fold<F>-val.csv`: image_id, paper_label, group, lesion_id), e.g. to score a
    /// model on it with `pi-bench --manifest`.
    #[arg(long)]
    pub manifests: Option<PathBuf>,
}

#[derive(Serialize)]
struct SplitReport<'a> {
    cache: String,
    k: usize,
    seed: u64,
    folds: &'a [Fold],
}

/// Runs `split`.
pub fn run(args: SplitArgs) -> Result<()> {
    let cache = Cache::open(&args.cache)?;
    let folds = kfold(&cache, args.k, args.seed)?;
    let mut header = vec!["fold".to_string(), "val".into(), "train".into()];
    header.extend(CLASS_NAMES.iter().map(|c| format!("val {c}")));
    let mut t = Table::new(header);
    for (f, fold) in folds.iter().enumerate() {
        let val_lesions: HashSet<usize> = fold.val.iter().map(|&i| cache.lesion_index(i)).collect();
        ensure!(
            fold.train
                .iter()
                .all(|&i| !val_lesions.contains(&cache.lesion_index(i))),
            "fold {f}: a lesion is on both sides"
        );
        let mut counts = [0usize; CLASS_NAMES.len()];
        fold.val.iter().for_each(|&i| counts[cache.label(i)] += 1);
        let mut row = vec![
            f.to_string(),
            fold.val.len().to_string(),
            fold.train.len().to_string(),
        ];
        row.extend(counts.iter().map(|c| c.to_string()));
        t.row(row);
    }
    print!("{t}");
    let report = args.report.unwrap_or_else(|| {
        args.cache
            .join(format!("folds-k{}-seed{}.json", args.k, args.seed))
    });
    let body = SplitReport {
        cache: args.cache.display().to_string(),
        k: args.k,
        seed: args.seed,
        folds: &folds,
    };
    write_report(&report, "split", &body)?;
    println!("report: {}", report.display());
    if let Some(dir) = &args.manifests {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (f, fold) in folds.iter().enumerate() {
            let path = dir.join(format!("fold{f}-val.csv"));
            let mut text = String::from("image_id,paper_label,group,lesion_id\n");
            for &i in &fold.val {
                text.push_str(&format!(
                    "{},{},{},{}\n",
                    cache.id(i),
                    cache.class_names()[cache.label(i)],
                    cache.group_names()[cache.group(i)],
                    cache.lesion(i)
                ));
            }
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            println!("manifest: {} ({} images)", path.display(), fold.val.len());
        }
    }
    Ok(())
}
