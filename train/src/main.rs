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
    /// Write a seeded (untrained) student file, optionally over torchvision weights.
    InitStudent(derm_train::cmd::export::InitStudentArgs),
    /// Turn a MobileNetV3 trained elsewhere (torchvision state dict) into a student file.
    Import(derm_train::cmd::import::ImportArgs),
    /// Fold BatchNorm and write the model file for derm-codegen, plus golden vectors.
    Export(derm_train::cmd::export::ExportArgs),
    /// Quantize an f32 model file to int8 (post-training, calibrated on training images).
    Quantize(derm_train::cmd::quantize::QuantizeArgs),
    /// Quantization-aware fine-tuning of an f32 model file, written as an int8 model file.
    Qat(derm_train::cmd::qat::QatArgs),
    /// Which weights and activations of an f32 model file lose accuracy under int8.
    QuantSensitivity(derm_train::cmd::quant_sensitivity::QuantSensitivityArgs),
    /// Decode a dataset once into a preprocessed cache and print Table I.
    Prepare(derm_train::cmd::prepare::PrepareArgs),
    /// Lesion-grouped, class-stratified k-fold split of a cache.
    Split(derm_train::cmd::split::SplitArgs),
    /// Table I of a fold's training data before and after balancing, and the class weights.
    Stats(derm_train::cmd::stats::StatsArgs),
    /// Score a predictions CSV against a cache with the ESFair metrics (+ confusion PNGs).
    Metrics(derm_train::cmd::metrics::MetricsArgs),
    /// Train the Swin V2-T teacher on a fold of a cache.
    Teacher(Box<derm_train::cmd::teacher::TeacherArgs>),
    /// Train the MobileNetV3 student alone (from scratch or ImageNet weights).
    Student(Box<derm_train::cmd::student::StudentArgs>),
    /// Train the student with the distillation loss against a teacher or its cached logits.
    Distill(Box<derm_train::cmd::distill::DistillArgs>),
    /// Score trained student or teacher files (or their ensemble, optionally with test-time
    /// augmentation) on a cache or one fold of it.
    Evaluate(derm_train::cmd::evaluate::EvaluateArgs),
    /// Run a trained teacher once over a cache and store its logits for `distill`.
    TeacherLogits(derm_train::cmd::teacher_logits::TeacherLogitsArgs),
    /// Train the Table III grid (settings x models x folds), resumable and shardable.
    Experiment(Box<derm_train::cmd::experiment::ExperimentArgs>),
    /// Table III, Fig. 6 and Fig. 7 from the finished cells of an experiment folder.
    ExperimentReport(derm_train::cmd::experiment_report::ExperimentReportArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::InitStudent(a) => derm_train::cmd::export::init_student(a)?,
        Command::Export(a) => derm_train::cmd::export::run(a)?,
        Command::Import(a) => derm_train::cmd::import::run(a)?,
        Command::Quantize(a) => derm_train::cmd::quantize::run(a)?,
        Command::Qat(a) => derm_train::cmd::qat::run(a)?,
        Command::QuantSensitivity(a) => derm_train::cmd::quant_sensitivity::run(a)?,
        Command::Prepare(a) => derm_train::cmd::prepare::run(a)?,
        Command::Split(a) => derm_train::cmd::split::run(a)?,
        Command::Stats(a) => derm_train::cmd::stats::run(a)?,
        Command::Metrics(a) => derm_train::cmd::metrics::run(a)?,
        Command::Teacher(a) => derm_train::cmd::teacher::run(*a)?,
        Command::Student(a) => derm_train::cmd::student::run(*a)?,
        Command::Distill(a) => derm_train::cmd::distill::run(*a)?,
        Command::Evaluate(a) => derm_train::cmd::evaluate::run(a)?,
        Command::TeacherLogits(a) => derm_train::cmd::teacher_logits::run(a)?,
        Command::Experiment(a) => derm_train::cmd::experiment::run(*a)?,
        Command::ExperimentReport(a) => derm_train::cmd::experiment_report::run(a)?,
        Command::Env => {
            let r = derm_train::env_report::env_report()?;
            println!("libtorch threads: {}", r.threads);
            println!("cuda available:   {}", r.cuda);
            println!("2x2 matmul check: {:?}", r.matmul_check);
        }
    }
    Ok(())
}
