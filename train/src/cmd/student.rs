//! `derm-train student`: trains the MobileNetV3 student alone (from scratch or from the
//! ImageNet weights).

use anyhow::Result;
use clap::Args;

use crate::args::{BalanceArgs, DataArgs, RunArgs};
use crate::train::cli::TrainArgs;
use crate::train::run;
use crate::train::spec::{ModelSpec, RunSpec, StudentModelArgs};

/// Arguments of `derm-train student`.
#[derive(Debug, Clone, Args)]
pub struct StudentArgs {
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
    /// Output folder, resume, threads.
    pub run: RunArgs,
}

/// Runs `derm-train student`.
pub fn run(a: StudentArgs) -> Result<()> {
    let spec = RunSpec {
        data: a.data,
        balance: a.balance,
        model: ModelSpec::Student(a.model),
        teacher: None,
        train: a.train,
    };
    run::execute(&spec, &a.run.context("student"))?
        .report
        .print();
    Ok(())
}
