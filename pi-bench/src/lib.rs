//! `pi-bench`: the paper's latency protocol (10 iterations x 100 images) and the full ESFair
//! score (accuracy, balanced accuracy, per-group accuracy, SPD, fairness, latency, overall) of
//! the model embedded in `derm-runtime`, on generated or labelled images.
//!
//! - [`protocol`]: the generated images and the latency summary every engine shares;
//! - [`runner`]: what is timed in each mode (`model`, `classify`, `end-to-end`) and the
//!   iterations split among worker threads, one arena each;
//! - [`data`]: labelled test images (ESFair folder or CSV manifest), decoded to RGB8;
//! - [`esfair`]: the score, with the same definitions as `derm-train`'s metrics;
//! - [`model_info`]: the embedded model's file, SHA-256, precision and recorded metrics;
//! - [`plot`]: per-group confusion-matrix PNGs;
//! - `engine` (feature `engine`, enabled by `libtorch`, `ort` and `tract`): the same protocol
//!   on other inference engines, with a logit check against the embedded model.

pub mod data;
#[cfg(feature = "engine")]
pub mod engine;
pub mod esfair;
pub mod model_info;
pub mod plot;
pub mod protocol;
pub mod runner;
