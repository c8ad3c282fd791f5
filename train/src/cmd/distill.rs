//! `derm-train distill`: trains the student with the distillation loss against a Swin V2
//! teacher, either running the teacher on every batch (`--teacher`) or reading logits it
//! computed once per image (`--teacher-logits`, from `derm-train teacher-logits`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::args::{BalanceArgs, DataArgs, RunArgs};
use crate::train::cli::{KdArgs, TrainArgs};
use crate::train::run;
use crate::train::spec::{KdSpec, ModelSpec, RunSpec, StudentModelArgs, TeacherSource};

/// Arguments of `derm-train distill`.
#[derive(Debug, Clone, Args)]
pub struct DistillArgs {
    #[command(flatten)]
    /// Cache, fold and subset.
    pub data: DataArgs,
    #[command(flatten)]
    /// Balancing and class weights.
    pub balance: BalanceArgs,
    #[command(flatten)]
    /// Loop options.
    pub train: TrainArgs,
    #[command(flatten)]
    /// Student model.
    pub model: StudentModelArgs,
    #[command(flatten)]
    /// Loss knobs.
    pub kd: KdArgs,
    /// Teacher file (`OUT/teacher.safetensors` of `derm-train teacher`), run on every batch.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Cached teacher logits (`derm-train teacher-logits`); used instead of running the teacher.
    #[arg(long)]
    pub teacher_logits: Option<PathBuf>,
    #[command(flatten)]
    /// Output folder, resume, threads.
    pub run: RunArgs,
}

/// Runs `derm-train distill`.
pub fn run(a: DistillArgs) -> Result<()> {
    // Cached logits win when both are given: they are what the teacher computes anyway.
    let source = match (a.teacher_logits, a.teacher) {
        (Some(p), _) => TeacherSource::Logits(p),
        (None, Some(p)) => TeacherSource::File(p),
        (None, None) => bail!("distill needs --teacher FILE or --teacher-logits FILE"),
    };
    let spec = RunSpec {
        data: a.data,
        balance: a.balance,
        model: ModelSpec::Student(a.model),
        teacher: Some(KdSpec { source, kd: a.kd }),
        train: a.train,
    };
    run::execute(&spec, &a.run.context("distill"))?
        .report
        .print();
    Ok(())
}
