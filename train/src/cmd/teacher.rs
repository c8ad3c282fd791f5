//! `derm-train teacher`: trains the Swin V2-T teacher on a fold of a cache.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;
use tch::{Device, nn};

use crate::args::{BalanceArgs, FoldArgs};
use crate::models::swin_v2::{SwinV2, SwinV2Config, trainable_parameter_count};
use crate::report;
use crate::train::cli::{DataSummary, RunData, TrainArgs, command_line, git_commit};
use crate::train::fit::{self, EpochRecord, FitOptions, RunControl, Teacher};
use crate::train::teacher_file::{self, TeacherMeta};

/// Arguments of `derm-train teacher`.
#[derive(Debug, Clone, Args)]
pub struct TeacherArgs {
    #[command(flatten)]
    /// Cache and fold.
    pub fold: FoldArgs,
    #[command(flatten)]
    /// Balancing and class weights.
    pub balance: BalanceArgs,
    #[command(flatten)]
    /// Loop options.
    pub train: TrainArgs,
    /// Teacher architecture (only swin_v2_t).
    #[arg(long, default_value = "swin_v2_t")]
    pub arch: String,
    /// A torchvision swin_v2_t state dict (safetensors) to start from; `head.*` is skipped.
    #[arg(long)]
    pub init_weights: Option<PathBuf>,
}

/// The JSON report of a training command.
#[derive(Debug, Serialize)]
pub struct TrainReport {
    /// teacher, student or distill.
    pub role: String,
    /// Architecture summary.
    pub model: BTreeMap<String, String>,
    /// Trainable parameters.
    pub parameters: i64,
    /// Data sizes.
    pub data: DataSummary,
    /// Loop options.
    pub options: FitOptions,
    /// Per-epoch numbers.
    pub epochs: Vec<EpochRecord>,
    /// Best epoch (0-based).
    pub best_epoch: Option<u64>,
    /// Its validation record.
    pub best: Option<EpochRecord>,
    /// Seconds of the last invocation (a resumed run counts only its own part).
    pub seconds: f64,
    /// Files written.
    pub outputs: BTreeMap<String, String>,
    /// Anything else worth recording (e.g. distillation speed).
    pub extra: BTreeMap<String, serde_json::Value>,
    /// Command line.
    pub command: String,
    /// Source revision.
    pub git_commit: String,
}

impl TrainReport {
    /// Prints the best epoch's tables.
    pub fn print(&self) {
        if let Some(b) = &self.best {
            println!(
                "best epoch {} ({} = {:.4})",
                b.epoch + 1,
                self.options.criterion,
                b.score
            );
            println!("{}", b.val.summary_table());
            println!("{}", b.val.group_table());
        }
    }
}

/// Metric map of one epoch for provenance fields.
pub fn metric_map(r: &EpochRecord) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    m.insert("accuracy".into(), r.val.accuracy);
    m.insert("balanced_accuracy".into(), r.val.balanced_accuracy);
    if let Some(f) = r.val.fairness {
        m.insert("fairness".into(), f);
    }
    if let Some(s) = r.val.spd {
        m.insert("spd".into(), s);
    }
    m.insert("val_loss".into(), r.val_loss);
    m
}

/// Runs `derm-train teacher`.
pub fn run(a: TeacherArgs) -> Result<()> {
    if a.arch != "swin_v2_t" {
        bail!("--arch {:?}: the teacher is swin_v2_t", a.arch);
    }
    let cfg = SwinV2Config::swin_v2_t(crate::data::NUM_CLASSES as i64);
    a.train.setup(cfg.input_multiple() as usize)?;
    let data = RunData::open(&a.fold, &a.balance, &a.train)?;
    let opts = a.train.fit_options(&data, Default::default());

    tch::manual_seed(a.train.seed as i64);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = SwinV2::new(&vs.root(), cfg)?;
    if let Some(w) = &a.init_weights {
        let opts = crate::models::mobilenet_v3::LoadOptions {
            skip: vec!["head".into()],
        };
        let n = crate::models::mobilenet_v3::load_torchvision_weights(&mut vs, w, &opts)?;
        eprintln!("loaded {n} tensors from {}", w.display());
    }
    let fd = fit::FitData {
        cache: &data.cache,
        plan: &data.plan,
        val: &data.val,
    };
    let control = RunControl {
        resume: a.train.resume,
        progress: !a.train.quiet,
        label: "teacher".into(),
        ..Default::default()
    };
    let outcome = fit::fit(
        &net,
        &vs,
        &fd,
        Teacher::None,
        None,
        &opts,
        &a.train.out,
        &control,
    )?;

    fit::load_weights(&outcome.best_weights, &vs)?;
    let best = outcome
        .state
        .best
        .as_ref()
        .and_then(|b| outcome.state.history.iter().find(|r| r.epoch == b.epoch))
        .cloned();
    let meta = TeacherMeta {
        format: teacher_file::FORMAT.into(),
        version: teacher_file::VERSION,
        arch: a.arch.clone(),
        class_names: data.cache.class_names().to_vec(),
        group_names: data.cache.group_names().to_vec(),
        input_size: a.train.train_size,
        mean: data.cache.mean(),
        std: data.cache.std(),
        command: command_line(),
        git_commit: git_commit(),
        metrics: best.as_ref().map(metric_map).unwrap_or_default(),
    };
    let teacher_path = a.train.out.join("teacher.safetensors");
    teacher_file::save(&teacher_path, &vs, &meta)?;

    let mut outputs = BTreeMap::new();
    outputs.insert("teacher".into(), teacher_path.display().to_string());
    outputs.insert(
        "checkpoint".into(),
        a.train.out.join(fit::CHECKPOINT_FILE).display().to_string(),
    );
    let mut model = BTreeMap::new();
    model.insert("arch".into(), a.arch.clone());
    model.insert("input_size".into(), a.train.train_size.to_string());
    model.insert(
        "init_weights".into(),
        a.init_weights
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string()),
    );
    let rep = TrainReport {
        role: "teacher".into(),
        model,
        parameters: trainable_parameter_count(&vs),
        data: data.summary(&a.fold, &a.balance),
        options: opts,
        epochs: outcome.state.history.clone(),
        best_epoch: outcome.state.best.as_ref().map(|b| b.epoch),
        best,
        seconds: outcome.seconds,
        outputs,
        extra: BTreeMap::new(),
        command: meta.command.clone(),
        git_commit: meta.git_commit.clone(),
    };
    report::write_report(&a.train.out.join("report.json"), "teacher", &rep)?;
    rep.print();
    Ok(())
}
