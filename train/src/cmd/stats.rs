//! `derm-train stats`: what a fold's training data becomes after balancing.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::args::{BalanceArgs, FoldArgs};
use crate::data::balance::{BalanceConfig, BalancePlan};
use crate::data::prepare::table_one;
use crate::data::{CLASS_NAMES, NUM_CLASSES};
use crate::report::{Table, write_report};

/// Print Table I of a fold's training part, the balanced counts per
/// (group, class) cell, the epoch length and the resolved class weights.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    fold: FoldArgs,
    #[command(flatten)]
    balance: BalanceArgs,
    /// Seed of the copies' choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// JSON report (default: `<cache>/stats.json`).
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Serialize)]
struct StatsReport {
    cache: String,
    k: usize,
    fold: usize,
    train: usize,
    val: usize,
    train_counts: Vec<[usize; NUM_CLASSES]>,
    balance: BalanceConfig,
    balanced_counts: Vec<[usize; NUM_CLASSES]>,
    epoch_slots: usize,
    noise_copies: usize,
    class_weights: [f32; NUM_CLASSES],
}

/// Runs `stats`.
pub fn run(args: StatsArgs) -> Result<()> {
    let (cache, fold) = args.fold.open()?;
    let cfg = args.balance.config()?;
    let plan = BalancePlan::new(&cache, &fold.train, &cfg, args.seed);
    let train_counts = cache.counts(Some(&fold.train));
    let mut balanced = vec![[0usize; NUM_CLASSES]; cache.group_names().len()];
    for s in &plan.slots {
        balanced[cache.group(s.index)][cache.label(s.index)] += 1;
    }
    let weights = args
        .balance
        .class_weights
        .resolve(&plan.class_counts(cache.labels()));
    println!(
        "fold {} of {}: {} training / {} validation images",
        args.fold.fold,
        args.fold.k,
        fold.train.len(),
        fold.val.len()
    );
    println!("training images (Table I):");
    print!("{}", table_one(cache.group_names(), &train_counts));
    println!(
        "after balancing ({:?}, scale {}, sigma {}): {} slots per epoch, {} noise copies",
        args.balance.balance,
        cfg.scale,
        plan.sigma,
        plan.len(),
        plan.num_copies()
    );
    print!("{}", table_one(cache.group_names(), &balanced));
    let mut t = Table::new(["class", "weight"]);
    for (c, w) in CLASS_NAMES.iter().zip(weights) {
        t.row([c.to_string(), format!("{w:.4}")]);
    }
    println!("class weights:");
    print!("{t}");
    let report = args
        .report
        .unwrap_or_else(|| args.fold.cache.join("stats.json"));
    let body = StatsReport {
        cache: args.fold.cache.display().to_string(),
        k: args.fold.k,
        fold: args.fold.fold,
        train: fold.train.len(),
        val: fold.val.len(),
        train_counts,
        balance: cfg,
        balanced_counts: balanced,
        epoch_slots: plan.len(),
        noise_copies: plan.num_copies(),
        class_weights: weights,
    };
    write_report(&report, "stats", &body)?;
    println!("report: {}", report.display());
    Ok(())
}
