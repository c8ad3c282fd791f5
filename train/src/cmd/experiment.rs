//! `derm-train experiment`: the Table III grid (settings x models x folds) in one command,
//! resumable and shardable over processes sharing the output folder.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::data::balance::{ClassWeights, Preset};
use crate::experiment::{self, CellStatus, CellTemplate, GridModel, RunnerOptions, Shard};
use crate::train::cli::{KdArgs, TrainArgs};
use crate::train::spec::{StudentModelArgs, TeacherModelArgs};

/// Arguments of `derm-train experiment`.
#[derive(Debug, Clone, Args)]
pub struct ExperimentArgs {
    /// Experiment folder; each cell trains in `OUT/cells/<setting>-<model>-f<fold>/`.
    #[arg(long)]
    pub out: PathBuf,
    /// Cache folder (from `prepare`).
    #[arg(long)]
    pub cache: PathBuf,
    /// Number of lesion-grouped folds.
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Seed of the fold assignment.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Validation folds, each a column of cells (default: all `--k`).
    #[arg(long, value_delimiter = ',')]
    pub folds: Vec<usize>,
    /// Balancing settings (Table II presets).
    #[arg(long, value_delimiter = ',', default_value = "S1,S2,S3,S4,S5")]
    pub settings: Vec<Preset>,
    /// Models: `student`, `teacher`, `kd` (= `kd:teacher`: distilled from the `teacher` cell
    /// of the same setting and fold) or `kd:PATH.safetensors` (a teacher file or a
    /// teacher-logits file; `{fold}` in PATH becomes the cell's fold).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "student,teacher,kd:teacher"
    )]
    pub models: Vec<GridModel>,
    /// Run only the cells whose index in the cell order is K modulo N (a job-array index).
    #[arg(long, default_value = "0/1")]
    pub shard: Shard,
    /// Use at most N training images of each fold (a seeded random subset).
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Use at most N validation images of each fold (a seeded random subset).
    #[arg(long)]
    pub max_val: Option<usize>,
    /// Multiplies the balancing targets (set for ESFair's ~11k images).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Cross-entropy class weights: six numbers, `paper`, `auto` or `sqrt` (as `student`).
    #[arg(long, default_value = "paper")]
    pub class_weights: ClassWeights,
    #[command(flatten)]
    /// Loop options of every cell.
    pub train: TrainArgs,
    #[command(flatten)]
    /// The student of `student` and `kd` cells.
    pub student: StudentModelArgs,
    /// A torchvision swin_v2_t state dict for the `teacher` cells; `head.*` is skipped.
    #[arg(long)]
    pub teacher_init_weights: Option<PathBuf>,
    #[command(flatten)]
    /// Distillation knobs of `kd` cells.
    pub kd: KdArgs,
    /// libtorch intra-op threads per cell (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// No progress bar or progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `derm-train experiment`.
pub fn run(a: ExperimentArgs) -> Result<()> {
    let folds: Vec<usize> = if a.folds.is_empty() {
        (0..a.k).collect()
    } else {
        a.folds.clone()
    };
    let template = CellTemplate {
        cache: a.cache,
        k: a.k,
        split_seed: a.split_seed,
        max_train: a.max_train,
        max_val: a.max_val,
        scale: a.scale,
        class_weights: a.class_weights,
        train: a.train,
        student: a.student,
        teacher: TeacherModelArgs {
            arch: "swin_v2_t".into(),
            init_weights: a.teacher_init_weights,
        },
        kd: a.kd,
    };
    let cells = experiment::grid(&a.out, &template, &a.settings, &a.models, &folds)?;
    let mine = cells.iter().filter(|c| a.shard.takes(c.index)).count();
    eprintln!(
        "{} cells in the grid, {mine} in shard {}/{}",
        cells.len(),
        a.shard.index,
        a.shard.count
    );
    let opts = RunnerOptions {
        threads: a.threads,
        progress: !a.quiet,
        poll: Duration::from_secs(10),
    };
    let done = experiment::run_grid(&a.out, &cells, a.shard, &opts)?;
    for (name, status) in &done {
        let s = match status {
            CellStatus::Trained {
                resumed_from_step: Some(s),
            } => format!("trained (resumed at step {s})"),
            CellStatus::Trained { .. } => "trained".into(),
            CellStatus::Done => "already finished".into(),
            CellStatus::Busy => "being trained by another process".into(),
        };
        println!("{name}: {s}");
    }
    Ok(())
}
