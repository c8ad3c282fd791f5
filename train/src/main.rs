//! `derm-train` command-line entry point.

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Train, distil, evaluate and export skin-lesion classifiers.
#[derive(Debug, Parser)]
#[command(name = "derm-train", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that libtorch loads and computes, and print its settings.
    Env,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Env => {
            let r = derm_train::env_report::env_report()?;
            println!("libtorch threads: {}", r.threads);
            println!("cuda available:   {}", r.cuda);
            println!("2x2 matmul check: {:?}", r.matmul_check);
        }
    }
    Ok(())
}
