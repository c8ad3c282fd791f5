//! `derm-train`: data preparation, training, distillation, evaluation and
//! export of the skin-lesion classifiers, on libtorch (CPU) through `tch`.

pub mod args;
pub mod cmd;
pub mod data;
pub mod env_report;
pub mod experiment;
pub mod export;
pub mod infer;
pub mod metrics;
pub mod models;
pub mod plot;
pub mod report;
pub mod student_file;
pub mod train;
