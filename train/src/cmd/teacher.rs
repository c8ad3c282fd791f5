//! `derm-train teacher`: trains the Swin V2-T teacher on a fold of a cache.

use anyhow::Result;
use clap::Args;

use crate::args::{BalanceArgs, DataArgs, RunArgs};
use crate::train::cli::TrainArgs;
use crate::train::run;
use crate::train::spec::{ModelSpec, RunSpec, TeacherModelArgs};

/// Arguments of `derm-train teacher`.
#[derive(Debug, Clone, Args)]
pub struct TeacherArgs {
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
    /// Teacher model.
    pub model: TeacherModelArgs,
    #[command(flatten)]
    /// Output folder, resume, threads.
    pub run: RunArgs,
}

/// Runs `derm-train teacher`.
pub fn run(a: TeacherArgs) -> Result<()> {
    let spec = RunSpec {
        data: a.data,
        balance: a.balance,
        model: ModelSpec::Teacher(a.model),
        teacher: None,
        train: a.train,
    };
    run::execute(&spec, &a.run.context("teacher"))?
        .report
        .print();
    Ok(())
}
