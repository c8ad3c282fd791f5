//! The subcommands of `derm-train`: one module each, holding its clap
//! arguments and a thin `run` that calls the library.

pub mod distill;
pub mod evaluate;
pub mod experiment;
pub mod experiment_report;
pub mod export;
pub mod import;
pub mod metrics;
pub mod prepare;
pub mod qat;
pub mod quant_sensitivity;
pub mod quantize;
pub mod split;
pub mod stats;
pub mod student;
pub mod teacher;
pub mod teacher_logits;
