//! `derm-train`: data preparation, training, distillation, evaluation and
//! export of the skin-lesion classifiers, on libtorch (CPU) through `tch`.

pub mod env_report;
