//! `pi-bench`: the paper's latency protocol (10 iterations x 100 images) and the full ESFair
//! score (accuracy, balanced accuracy, per-group accuracy, SPD, fairness, latency, overall) of
//! the model embedded in `derm-runtime`, on generated or labelled images.
//!
//! - [`protocol`]: the generated images and the latency summary every engine shares;
//! - [`data`]: labelled test images (ESFair folder or CSV manifest), decoded to RGB8;
//! - [`esfair`]: the score, with the same definitions as `derm-train`'s metrics.

pub mod data;
pub mod esfair;
pub mod protocol;
