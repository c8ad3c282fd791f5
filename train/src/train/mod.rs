//! Training: losses, checkpointable optimizers and schedules, atomic checkpoints, the
//! shared training loop (supervised and distillation) and its progress display.

pub mod checkpoint;
pub mod cli;
pub mod ema;
pub mod fit;
pub mod loss;
pub mod optim;
pub mod progress;
pub mod run;
pub mod spec;
pub mod teacher_file;
