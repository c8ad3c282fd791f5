//! `derm-train experiment-report`: Table III, Fig. 6 and Fig. 7 from an experiment folder.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::experiment::report::{self, Latency};

/// Arguments of `derm-train experiment-report`.
#[derive(Debug, Clone, Args)]
pub struct ExperimentReportArgs {
    /// Experiment folder (the `--out` of `experiment`).
    #[arg(long)]
    pub dir: PathBuf,
    /// A `pi-bench --json` report of the student on the Pi: its latency score enters the
    /// students' overall score (without it the latency score is left out).
    #[arg(long)]
    pub latency_json: Option<PathBuf>,
}

/// Runs `derm-train experiment-report`.
pub fn run(a: ExperimentReportArgs) -> Result<()> {
    let latency = a
        .latency_json
        .as_deref()
        .map(Latency::from_pi_bench)
        .transpose()?;
    let rep = report::write(&a.dir, latency)?;
    println!("{}", rep.table());
    println!("overall: {}", rep.overall);
    println!(
        "wrote {} and {} ({} images)",
        a.dir.join("report.md").display(),
        a.dir.join("report.json").display(),
        rep.images.len()
    );
    Ok(())
}
