//! Training losses: class-weighted cross-entropy and the distillation loss of the paper
//! (eqs. 3-8, as in its code): `(1 - a) * CE(s, y) + a * T^2 * KL(softmax(t/T) || softmax(s/T))`.

use anyhow::{Result, ensure};
use tch::{Kind, Reduction, Tensor};

/// Cross-entropy of `logits` `[B, C]` against class indices `targets` `[B]`, optionally
/// weighted per class (`weights` `[C]`). With weights the mean is PyTorch's:
/// `sum_i w[y_i] * nll_i / sum_i w[y_i]`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, weights: Option<&Tensor>) -> Tensor {
    logits.cross_entropy_loss(targets, weights, Reduction::Mean, -100, 0.0)
}

/// [`cross_entropy`] against targets smoothed towards the uniform distribution:
/// `(1 - eps) * one_hot + eps / C` (PyTorch's `label_smoothing`; with class weights the
/// normalizer is still `sum_i w[y_i]`).
pub fn cross_entropy_smoothed(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
    smoothing: f64,
) -> Tensor {
    logits.cross_entropy_loss(targets, weights, Reduction::Mean, -100, smoothing)
}

/// The distillation loss's two knobs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KdConfig {
    /// Weight of the soft (teacher) term; `1 - alpha` goes to the hard labels.
    pub alpha: f64,
    /// Softmax temperature applied to both student and teacher logits.
    pub temperature: f64,
    /// Weight the soft term's samples by their label's class weight, as the hard term's are
    /// (`sum_i w[y_i] KL_i / sum_i w[y_i]`). Without it the soft term is a plain batch mean,
    /// so with a large `alpha` the class weights act on a small part of the loss only.
    #[serde(default)]
    pub soft_class_weights: bool,
    /// Logit adjustment of the teacher's targets (`tau`, 0: off): the teacher's logits become
    /// `t - tau * ln(prior)` before the temperature, `prior` being the class frequencies of
    /// the training slots, so its probabilities are divided by `prior^tau` and renormalized.
    /// A teacher trained on HAM10000's class mix leans toward its majority class on the
    /// images it gets wrong; its soft targets then pull the student's rare-class images the
    /// same way, which lowers balanced accuracy (Menon et al., "Long-tail learning via logit
    /// adjustment", 2021, for the adjustment itself).
    #[serde(default)]
    pub teacher_adjust: f64,
}

impl Default for KdConfig {
    /// The paper's code: alpha 0.8, temperature 4.
    fn default() -> Self {
        Self {
            alpha: 0.8,
            temperature: 4.0,
            soft_class_weights: false,
            teacher_adjust: 0.0,
        }
    }
}

impl KdConfig {
    /// Rejects an alpha outside `[0, 1]` or a non-positive temperature.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (0.0..=1.0).contains(&self.alpha),
            "distillation alpha {} must be in [0, 1]",
            self.alpha
        );
        ensure!(
            self.temperature.is_finite() && self.temperature > 0.0,
            "distillation temperature {} must be > 0",
            self.temperature
        );
        ensure!(
            self.teacher_adjust.is_finite() && self.teacher_adjust >= 0.0,
            "--teacher-adjust {} must be >= 0",
            self.teacher_adjust
        );
        Ok(())
    }
}

/// The shift [`KdConfig::teacher_adjust`] adds to every row of teacher logits:
/// `-tau * ln(count[c] / sum(count))` per class `c`, a `[C]` tensor. A class without
/// training slots counts as one, so its shift stays finite.
pub fn teacher_shift(counts: &[usize], tau: f64) -> Tensor {
    let total = counts.iter().map(|&c| c.max(1)).sum::<usize>() as f64;
    let shift: Vec<f32> = counts
        .iter()
        .map(|&c| (-tau * (c.max(1) as f64 / total).ln()) as f32)
        .collect();
    Tensor::from_slice(&shift)
}

/// `KL(softmax(t/T) || softmax(s/T))` summed over classes and divided by the batch size
/// (PyTorch's `kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean")`).
pub fn kl_batchmean(student: &Tensor, teacher: &Tensor, temperature: f64) -> Tensor {
    let log_s = (student / temperature).log_softmax(-1, Kind::Float);
    let log_t = (teacher / temperature).log_softmax(-1, Kind::Float);
    let b = student.size()[0].max(1) as f64;
    // Written with log-probabilities of the teacher so a zero probability contributes 0
    // rather than 0 * log 0.
    (log_t.exp() * (&log_t - log_s)).sum(Kind::Float) / b
}

/// `KL(softmax(t/T) || softmax(s/T))` per sample, weighted by `weights[targets[i]]` and
/// normalized by the sum of those weights (the normalization of PyTorch's weighted
/// cross-entropy; equal weights give [`kl_batchmean`]).
pub fn kl_class_weighted(
    student: &Tensor,
    teacher: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
    temperature: f64,
) -> Tensor {
    let log_s = (student / temperature).log_softmax(-1, Kind::Float);
    let log_t = (teacher / temperature).log_softmax(-1, Kind::Float);
    let per_sample = (log_t.exp() * (&log_t - log_s)).sum_dim_intlist(-1, false, Kind::Float);
    let w = weights.to_kind(Kind::Float).index_select(0, targets);
    (per_sample * &w).sum(Kind::Float) / w.sum(Kind::Float)
}

/// `(1 - a) * CE(s, y) + a * T^2 * KL`, the cross-entropy optionally class-weighted; the KL a
/// batch mean, or class-weighted like the cross-entropy with `cfg.soft_class_weights`.
/// `teacher` is detached: no gradient flows into the teacher.
pub fn distillation_loss(
    student: &Tensor,
    teacher: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
    cfg: KdConfig,
) -> Tensor {
    let t = cfg.temperature;
    let hard = cross_entropy(student, targets, weights);
    let soft = match weights {
        Some(w) if cfg.soft_class_weights => {
            kl_class_weighted(student, &teacher.detach(), targets, w, t)
        }
        _ => kl_batchmean(student, &teacher.detach(), t),
    };
    hard * (1.0 - cfg.alpha) + soft * (cfg.alpha * t * t)
}
