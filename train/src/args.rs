//! Argument groups shared by several subcommands (flatten them with
//! `#[command(flatten)]`), each turned into library settings by one method.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::data::NUM_CLASSES;
use crate::data::balance::{BalanceConfig, ClassWeights, Preset, parse_targets};
use crate::data::cache::Cache;
use crate::data::split::{Fold, kfold};

fn targets_arg(s: &str) -> Result<[usize; NUM_CLASSES]> {
    parse_targets(s)
}

/// Balancing and class weights (paper III-C, III-D).
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
pub struct BalanceArgs {
    /// Balancing preset: S1 none; S2/S3 every class to 2500 per group with
    /// noise sigma 0.03/0.05; S4/S5 `[BCC,BKL,MEL,NV,unknown,VASC]` to
    /// `[4000,4000,4000,4000,2500,2500]` with sigma 0.03/0.05.
    #[arg(long, default_value = "S1")]
    pub balance: Preset,
    /// Custom per-class targets per group, six counts in class order
    /// (BCC,BKL,MEL,NV,unknown,VASC); overrides the preset's.
    #[arg(long, value_parser = targets_arg)]
    pub balance_targets: Option<[usize; NUM_CLASSES]>,
    /// Noise standard deviation for copies (normalized units); overrides the preset's.
    #[arg(long)]
    pub noise_sigma: Option<f32>,
    /// Multiplies the targets (set for ESFair's ~11k images; HAM10000 here has 8,077).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Cross-entropy class weights: six numbers in class order, `paper`
    /// (15,15,15,15,1,5), `auto` (inverse frequency of the training slots) or `sqrt` (its
    /// square root: milder, keeps more of the majority class's accuracy).
    #[arg(long, default_value = "paper")]
    pub class_weights: ClassWeights,
}

impl BalanceArgs {
    /// The balancing configuration these flags describe.
    pub fn config(&self) -> Result<BalanceConfig> {
        BalanceConfig::new(
            self.balance,
            self.balance_targets,
            self.noise_sigma,
            self.scale,
        )
    }
}

/// A cache and which fold of it to train on.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct FoldArgs {
    /// Cache folder (from `prepare`).
    #[arg(long)]
    pub cache: PathBuf,
    /// Number of lesion-grouped folds.
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Which fold validates (0-based).
    #[arg(long, default_value_t = 0)]
    pub fold: usize,
    /// Seed of the fold assignment.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
}

impl FoldArgs {
    /// Opens the cache and computes the chosen fold.
    pub fn open(&self) -> Result<(Cache, Fold)> {
        ensure!(
            self.fold < self.k,
            "--fold {} must be below --k {}",
            self.fold,
            self.k
        );
        let cache = Cache::open(&self.cache)?;
        let mut folds = kfold(&cache, self.k, self.split_seed)?;
        Ok((cache, folds.swap_remove(self.fold)))
    }
}

/// A cache, or one fold of it, to score or compute logits on (`evaluate`, `teacher-logits`):
/// every image without `--fold`; with it, the images of that fold the command names.
#[derive(Debug, Clone, Args)]
pub struct CacheFoldArgs {
    /// Cache folder (from `prepare`).
    #[arg(long)]
    pub cache: PathBuf,
    /// Only one fold's images (`evaluate`: its validation images; `teacher-logits`: its
    /// training images); default: every image.
    #[arg(long)]
    pub fold: Option<usize>,
    /// Folds (with `--fold`).
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Seed of the fold assignment (with `--fold`).
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
}

impl CacheFoldArgs {
    /// Opens the cache once and picks its rows: `in_fold` (e.g. the fold's validation or
    /// training indices) when `--fold` is given, else every row.
    pub fn open(
        &self,
        in_fold: impl FnOnce(&FoldArgs) -> Result<(Cache, Vec<usize>)>,
    ) -> Result<(Cache, Vec<usize>)> {
        match self.fold {
            Some(fold) => in_fold(&FoldArgs {
                cache: self.cache.clone(),
                k: self.k,
                fold,
                split_seed: self.split_seed,
            }),
            None => {
                let cache = Cache::open(&self.cache)?;
                let rows = (0..cache.len()).collect();
                Ok((cache, rows))
            }
        }
    }
}

/// A fold and the subset of it a run uses: the data part of a [`RunSpec`](crate::train::spec::RunSpec).
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct DataArgs {
    #[command(flatten)]
    #[serde(flatten)]
    /// Cache and fold.
    pub fold: FoldArgs,
    /// Use at most N training images of the fold (a seeded random subset), for small budgets.
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Use at most N validation images of the fold (a seeded random subset).
    #[arg(long)]
    pub max_val: Option<usize>,
    /// Train on the validation images too (after `--max-val`). Their scores are then
    /// training scores: this is for the final model of a recipe already measured on
    /// held-out folds, with `--select last`.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub train_on_val: bool,
}

/// Where and how a training command runs: not part of what it trains (its spec), so a
/// resumed run or another machine may change them.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Output folder: checkpoint, best weights, final model, JSON report.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from `OUT/checkpoint.safetensors` (same flags required).
    #[arg(long)]
    pub resume: bool,
    /// libtorch intra-op threads (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// No progress bar or progress lines.
    #[arg(long)]
    pub quiet: bool,
}

impl RunArgs {
    /// The execution context of one run labelled `label` (progress display, provenance).
    pub fn context(&self, label: &str) -> crate::train::run::RunContext {
        crate::train::run::RunContext {
            out: self.out.clone(),
            resume: self.resume,
            threads: self.threads,
            progress: !self.quiet,
            label: label.into(),
        }
    }
}
