//! The training loop shared by `teacher`, `student` and `distill`: balanced batches from the
//! cache, class-weighted cross-entropy or the distillation loss, a checkpointable optimizer
//! with warmup + cosine, ESFair metrics on the validation fold after every epoch, best-epoch
//! selection, and checkpoints every N steps and every epoch that `--resume` continues from.
//!
//! Determinism: all data randomness is keyed by `(seed, epoch, position)` in the loader, and
//! libtorch's generator (stochastic depth, dropout) is re-seeded from `(seed, step)` before
//! every step, so the state to resume is just the step, the sampler position, the weights
//! and the optimizer. With the same thread count a resumed run ends with the same weights,
//! bit for bit, as an uninterrupted one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use super::checkpoint::{self, CheckpointFile};
use super::ema::Ema;
use super::loss::{self, KdConfig};
use super::optim::{LrSchedule, OptimConfig, Optimizer};
use super::progress::EpochProgress;
use crate::data::balance::BalancePlan;
use crate::data::cache::Cache;
use crate::data::loader::{Batches, LoaderOptions, SamplerState};
use crate::metrics::{self, EvalOptions, Evaluation};

/// File name of the rolling checkpoint inside the output folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// File name of the best epoch's model variables (a plain state dict) inside the output folder.
pub const BEST_WEIGHTS_FILE: &str = "best_weights.safetensors";

/// What "best epoch" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Criterion {
    /// ESFair accuracy (correct / total).
    Accuracy,
    /// Mean per-class recall (NV is two thirds of HAM10000, so plain accuracy rewards
    /// predicting NV).
    Balanced,
    /// ESFair fairness score `(0.2 - SPD) / 0.2`, ties broken by accuracy.
    Fairness,
    /// Mean of accuracy and fairness: ESFair's overall score without its latency term,
    /// which is the same for every epoch of one model.
    Overall,
    /// The final epoch: no selection on the validation fold, so its scores are an unbiased
    /// estimate (and a run trained with `--train-on-val` has nothing to select on).
    Last,
}

impl FromStr for Criterion {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "accuracy" => Self::Accuracy,
            "balanced" | "balanced_accuracy" => Self::Balanced,
            "fairness" => Self::Fairness,
            "overall" => Self::Overall,
            "last" => Self::Last,
            o => {
                bail!(
                    "unknown selection criterion {o:?} (accuracy, balanced, fairness, overall or last)"
                )
            }
        })
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Accuracy => "accuracy",
            Self::Balanced => "balanced",
            Self::Fairness => "fairness",
            Self::Overall => "overall",
            Self::Last => "last",
        })
    }
}

impl Criterion {
    /// The score to maximize (for [`Criterion::Last`], the overall score, reported only:
    /// every epoch replaces the previous one, see [`Criterion::keeps`]).
    pub fn score(self, e: &Evaluation) -> f64 {
        let fair = e.fairness.unwrap_or(0.0);
        match self {
            Self::Accuracy => e.accuracy,
            Self::Balanced => e.balanced_accuracy,
            Self::Fairness => fair + 1e-6 * e.accuracy,
            Self::Overall | Self::Last => (e.accuracy + fair) / 2.0,
        }
    }

    /// Whether an epoch scoring `score` becomes the best one, given the best so far.
    pub fn keeps(self, score: f64, best: Option<f64>) -> bool {
        self == Self::Last || best.is_none_or(|b| score > b)
    }
}

/// A per-channel affine map from the loader's normalization (the cache's mean/std) to the
/// one a model expects, e.g. `[-1, 1]` for the ImageNet student.
#[derive(Debug)]
pub struct InputMap {
    scale: Tensor,
    shift: Tensor,
}

impl InputMap {
    /// `x_model = ((x * s_cache + m_cache) - m_model) / s_model`.
    pub fn new(cache_mean: [f32; 3], cache_std: [f32; 3], mean: [f32; 3], std: [f32; 3]) -> Self {
        let scale: Vec<f32> = (0..3).map(|c| cache_std[c] / std[c]).collect();
        let shift: Vec<f32> = (0..3).map(|c| (cache_mean[c] - mean[c]) / std[c]).collect();
        Self {
            scale: Tensor::from_slice(&scale).view([1, 3, 1, 1]),
            shift: Tensor::from_slice(&shift).view([1, 3, 1, 1]),
        }
    }

    /// Applies the map to an `[B, 3, H, W]` batch.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        x * &self.scale + &self.shift
    }
}

/// Teacher logits computed once per cache sample (`derm-train teacher-logits`).
#[derive(Debug)]
pub struct TeacherLogits {
    /// `[N, C]` f32, row = cache sample index.
    pub logits: Tensor,
    /// Whether row `i` was computed.
    pub present: Vec<bool>,
}

impl TeacherLogits {
    /// The rows of `indices`; fails if one was not computed.
    pub fn rows(&self, indices: &[usize]) -> Result<Tensor> {
        if let Some(&i) = indices
            .iter()
            .find(|&&i| !self.present.get(i).copied().unwrap_or(false))
        {
            bail!("no cached teacher logits for cache sample {i}");
        }
        let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        Ok(self.logits.index_select(0, &Tensor::from_slice(&idx)))
    }
}

/// Where the distillation targets come from.
pub enum Teacher<'a> {
    /// Plain supervised training.
    None,
    /// Run the teacher on every batch (eval mode, no gradient), on the loader's images.
    Model(&'a dyn ModuleT),
    /// Look the logits up in a cache computed beforehand.
    Cached(&'a TeacherLogits),
}

impl fmt::Debug for Teacher<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Teacher::None => "Teacher::None",
            Teacher::Model(_) => "Teacher::Model",
            Teacher::Cached(_) => "Teacher::Cached",
        })
    }
}

/// Everything about a run that must not change across `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitOptions {
    /// Epochs to train.
    pub epochs: u64,
    /// Training batch size.
    pub batch_size: usize,
    /// Evaluation batch size.
    pub eval_batch_size: usize,
    /// Seed of data order, flips, noise and libtorch's generator.
    pub seed: u64,
    /// Side of the training images (`None`: the cache size).
    pub train_size: Option<usize>,
    /// Random flips.
    pub flip: bool,
    /// Dihedral symmetries, random resized crop and colour jitter on top of the flips.
    #[serde(default)]
    pub augment: crate::data::augment::Augment,
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup steps (`None`: 5% of the run, at most 500).
    pub warmup_steps: Option<u64>,
    /// Keep the learning rate constant after the warmup.
    pub constant_lr: bool,
    /// Optimizer.
    pub optim: OptimConfig,
    /// Checkpoint every this many steps (0: only at epoch ends).
    pub checkpoint_every: u64,
    /// Best-epoch criterion.
    pub criterion: Criterion,
    /// Distillation knobs (used when a teacher is given).
    pub kd: KdConfig,
    /// Class weights of the cross-entropy (`None`: unweighted).
    pub class_weights: Option<Vec<f32>>,
    /// Metric options (class and group names, minority, exclusions).
    pub eval: EvalOptions,
    /// Re-estimate BatchNorm statistics over this many training batches before each
    /// evaluation ("precise BN"). With torchvision's momentum of 0.01 the running statistics
    /// trail the weights by hundreds of steps, which on short runs makes eval-mode outputs
    /// meaningless.
    #[serde(default)]
    pub bn_recalibrate: Option<BnRecalibrate>,
    /// Label smoothing of the (hard-label) cross-entropy, in `[0, 1)`; 0 is plain CE.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Decay of an exponential moving average of the weights ([`Ema`]) that evaluation, the
    /// kept weights and the student file use; `None`: the weights as trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f64>,
}

/// Precise-BN settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BnRecalibrate {
    /// Training batches averaged.
    pub batches: usize,
    /// The model's BatchNorm momentum (to read batch statistics back).
    pub momentum: f64,
}

impl FitOptions {
    fn loader(&self) -> LoaderOptions {
        let mut o = LoaderOptions::train(self.batch_size, self.seed);
        o.train_size = self.train_size;
        o.flip = self.flip;
        o.augment = self.augment;
        o
    }
}

/// One epoch's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch index (0-based).
    pub epoch: u64,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Training steps in the epoch.
    pub steps: u64,
    /// Training images per second (forward + backward + update, data included), over the
    /// part of the epoch this process ran.
    pub images_per_s: f64,
    /// Learning rate of the epoch's last step.
    pub last_lr: f64,
    /// Unweighted cross-entropy on the validation fold.
    pub val_loss: f64,
    /// The validation metrics.
    pub val: Evaluation,
    /// The criterion's score.
    pub score: f64,
    /// With `--ema`, the validation metrics of the live weights (the last step's), beside
    /// `val`, the average's: what the average buys, epoch by epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_live: Option<Evaluation>,
}

/// The best epoch so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// Epoch index.
    pub epoch: u64,
    /// Its score.
    pub score: f64,
}

/// The loop state stored in every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// The run's options (checked on resume).
    pub options: FitOptions,
    /// Steps taken.
    pub global_step: u64,
    /// Total steps of the run.
    pub total_steps: u64,
    /// Where the sampler stands.
    pub sampler: SamplerState,
    /// Sum of the current epoch's step losses so far.
    pub epoch_loss_sum: f64,
    /// Steps of the current epoch so far.
    pub epoch_steps: u64,
    /// Best epoch so far.
    pub best: Option<Best>,
    /// Finished epochs.
    pub history: Vec<EpochRecord>,
    /// All epochs done.
    pub finished: bool,
}

/// What the data side of a run is.
#[derive(Debug)]
pub struct FitData<'a> {
    /// The preprocessed cache.
    pub cache: &'a Cache,
    /// The training slots (balanced or plain).
    pub plan: &'a BalancePlan,
    /// Validation sample indices.
    pub val: &'a [usize],
}

/// Knobs of one call that may change across a resume.
#[derive(Debug, Default)]
pub struct RunControl {
    /// Continue from `out/checkpoint.safetensors` if it exists.
    pub resume: bool,
    /// Stop (as if killed, without the epoch's evaluation) after this many global steps;
    /// used to test resuming.
    pub stop_after_steps: Option<u64>,
    /// Show progress.
    pub progress: bool,
    /// Label of the progress display.
    pub label: String,
}

/// How the run ended.
#[derive(Debug)]
pub struct FitOutcome {
    /// Final loop state (history, best epoch).
    pub state: LoopState,
    /// Where the best epoch's weights are.
    pub best_weights: PathBuf,
    /// Whether the run was stopped early by [`RunControl::stop_after_steps`].
    pub stopped: bool,
    /// The global step a resumed run continued from (`None`: it started from scratch).
    pub resumed_from_step: Option<u64>,
    /// Seconds spent in this call.
    pub seconds: f64,
}

fn step_seed(seed: u64, step: u64) -> i64 {
    let mut r = crate::data::rng::Rng::from_parts(&[seed, step, 0x70C4]);
    (r.next_u64() >> 1) as i64
}

/// Saves `vs`'s variables as a plain safetensors state dict (torchvision names), atomically.
pub fn save_weights(path: &Path, vs: &nn::VarStore) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_owned(), "derm-train-weights/1".to_owned());
    let bytes = checkpoint::to_safetensors_bytes(&tensors, meta)?;
    checkpoint::write_atomic(path, &bytes)
}

/// Loads a plain state dict written by [`save_weights`] (or any safetensors file with the
/// same names) into `vs`; names and shapes must match exactly.
pub fn load_weights(path: &Path, vs: &nn::VarStore) -> Result<()> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read weights {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
    let vars = vs.variables();
    let mut missing: Vec<&String> = vars.keys().filter(|k| st.tensor(k).is_err()).collect();
    missing.sort();
    let mut extra: Vec<&str> = st
        .names()
        .into_iter()
        .filter(|k| !vars.contains_key(*k))
        .collect();
    extra.sort();
    ensure!(
        missing.is_empty() && extra.is_empty(),
        "{} does not match the model: missing {missing:?}, unexpected {extra:?}",
        path.display()
    );
    tch::no_grad(|| -> Result<()> {
        for (name, var) in &vars {
            let v = st.tensor(name).expect("checked above");
            let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
            ensure!(
                shape == var.size(),
                "{}: {name} has shape {shape:?}, the model {:?}",
                path.display(),
                var.size()
            );
            let t = Tensor::f_from_data_size(v.data(), &shape, dtype_kind(v.dtype())?)?;
            ensure!(
                t.kind() == var.kind(),
                "{}: {name} is {:?}, the model {:?}",
                path.display(),
                t.kind(),
                var.kind()
            );
            let mut var = var.shallow_clone();
            var.f_copy_(&t)?;
        }
        Ok(())
    })
}

fn dtype_kind(d: safetensors::Dtype) -> Result<Kind> {
    Ok(match d {
        safetensors::Dtype::F32 => Kind::Float,
        safetensors::Dtype::F64 => Kind::Double,
        safetensors::Dtype::I64 => Kind::Int64,
        safetensors::Dtype::I32 => Kind::Int,
        safetensors::Dtype::U8 => Kind::Uint8,
        d => bail!("unsupported weight dtype {d:?}"),
    })
}

/// What a model predicted on a set of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// Arg-max class per sample.
    pub preds: Vec<usize>,
    /// True class per sample.
    pub labels: Vec<usize>,
    /// Group per sample.
    pub groups: Vec<usize>,
    /// Mean unweighted cross-entropy.
    pub loss: f64,
}

/// Predictions and mean unweighted cross-entropy of `model` over `indices` (eval mode).
pub fn predict(
    model: &dyn ModuleT,
    cache: &Cache,
    indices: &[usize],
    batch_size: usize,
    train_size: Option<usize>,
    input: Option<&InputMap>,
) -> Result<Predictions> {
    let plan = BalancePlan::plain(indices);
    let mut opts = LoaderOptions::eval(batch_size);
    opts.train_size = train_size;
    let (mut preds, mut labels, mut groups) = (Vec::new(), Vec::new(), Vec::new());
    let mut loss_sum = 0.0;
    for batch in Batches::new(cache, &plan, opts, 0)? {
        let batch = batch?;
        let x = match input {
            Some(m) => m.apply(&batch.images),
            None => batch.images.shallow_clone(),
        };
        let logits = tch::no_grad(|| model.forward_t(&x, false));
        let n = batch.indices.len();
        loss_sum += loss::cross_entropy(&logits, &batch.labels, None).double_value(&[]) * n as f64;
        preds.extend(
            Vec::<i64>::try_from(logits.argmax(-1, false))?
                .into_iter()
                .map(|p| p as usize),
        );
        labels.extend(
            Vec::<i64>::try_from(&batch.labels)?
                .into_iter()
                .map(|l| l as usize),
        );
        groups.extend(batch.groups);
    }
    ensure!(!preds.is_empty(), "nothing to evaluate");
    let loss = loss_sum / preds.len() as f64;
    Ok(Predictions {
        preds,
        labels,
        groups,
        loss,
    })
}

/// Evaluates `model` on `indices` with the ESFair metrics; also returns the mean loss.
pub fn evaluate(
    model: &dyn ModuleT,
    cache: &Cache,
    indices: &[usize],
    batch_size: usize,
    train_size: Option<usize>,
    input: Option<&InputMap>,
    opts: &EvalOptions,
) -> Result<(Evaluation, f64)> {
    let p = predict(model, cache, indices, batch_size, train_size, input)?;
    Ok((
        metrics::evaluate(&p.preds, &p.labels, &p.groups, opts)?,
        p.loss,
    ))
}

/// Re-estimates BatchNorm running statistics over `batches` training batches (the
/// pretrained student's statistics are placeholders). In train mode BatchNorm normalizes
/// with batch statistics, so the running buffers do not affect the forward pass: each batch
/// starts them from zero, reads the batch's statistics back (`running = momentum * stat`),
/// and the final buffers are the plain average over batches, like PyTorch's
/// `momentum=None`. Returns the number of BatchNorm layers updated.
pub fn reestimate_batchnorm(
    model: &dyn ModuleT,
    vs: &nn::VarStore,
    momentum: f64,
    data: &FitData<'_>,
    opts: &FitOptions,
    input: Option<&InputMap>,
    batches: usize,
) -> Result<usize> {
    ensure!(
        momentum > 0.0 && momentum <= 1.0,
        "BatchNorm momentum {momentum} must be in (0, 1]"
    );
    let vars = vs.variables();
    let mut layers: Vec<(Tensor, Tensor)> = Vec::new();
    let mut names: Vec<&String> = vars
        .keys()
        .filter(|k| k.ends_with(".running_mean"))
        .collect();
    names.sort();
    for n in names {
        let prefix = n.trim_end_matches(".running_mean");
        let var = vars
            .get(&format!("{prefix}.running_var"))
            .with_context(|| format!("{prefix} has running_mean but no running_var"))?;
        layers.push((vars[n].shallow_clone(), var.shallow_clone()));
    }
    if layers.is_empty() {
        return Ok(0);
    }
    let mut sums: Vec<(Tensor, Tensor)> = layers
        .iter()
        .map(|(m, v)| (m.zeros_like(), v.zeros_like()))
        .collect();
    let mut seen = 0usize;
    let mut loader = data.clone_loader(opts, 0)?;
    tch::no_grad(|| -> Result<()> {
        for _ in 0..batches {
            let Some(batch) = loader.next() else { break };
            let batch = batch?;
            for (m, v) in &mut layers {
                let _ = m.zero_();
                let _ = v.zero_();
            }
            let x = match input {
                Some(m) => m.apply(&batch.images),
                None => batch.images.shallow_clone(),
            };
            let _ = model.forward_t(&x, true);
            for ((m, v), (sm, sv)) in layers.iter().zip(&mut sums) {
                *sm += m / momentum;
                *sv += v / momentum;
            }
            seen += 1;
        }
        Ok(())
    })?;
    ensure!(seen > 0, "no training batch for BatchNorm re-estimation");
    tch::no_grad(|| {
        for ((m, v), (sm, sv)) in layers.iter_mut().zip(&sums) {
            m.copy_(&(sm / seen as f64));
            v.copy_(&(sv / seen as f64));
        }
    });
    Ok(layers.len())
}

/// Re-estimates the BatchNorm statistics of a network whose BatchNorm layers were folded
/// away before it was shipped (placeholder statistics), *without changing the function it
/// computes*: each layer's affine part is rescaled so that, in eval mode,
/// `gamma' * (y - mean) / sqrt(var + eps) + beta' == a * y + c`, the placeholder layer's own
/// map (`a = gamma / sqrt(var0 + eps)`, `c = beta - mean0 * a`), with `gamma' = a * sqrt(var + eps)`
/// and `beta' = c + a * mean`.
///
/// Plain re-estimation ([`reestimate_batchnorm`] alone) normalizes every channel to unit
/// variance while gamma stays 1, which rescales the pretrained features channel by channel
/// before fine-tuning starts. Here train-mode BatchNorm then reproduces the pretrained
/// activations up to batch noise. Each pass measures every layer's input statistics under the
/// previous pass's layers, so layer `k` is exact after `k` passes: there is one pass per
/// BatchNorm layer (the deep layers of a folded network see activations thousands of times
/// larger than unit variance, so fewer passes leave them far off). The largest relative
/// change of the last pass (batch noise only, a few percent) is returned with the layer
/// count so callers can report it.
#[allow(clippy::too_many_arguments)]
pub fn preserve_pretrained_batchnorm(
    model: &dyn ModuleT,
    vs: &nn::VarStore,
    momentum: f64,
    eps: f64,
    data: &FitData<'_>,
    opts: &FitOptions,
    input: Option<&InputMap>,
    batches: usize,
) -> Result<(usize, f64)> {
    let vars = vs.variables();
    let mut names: Vec<&String> = vars
        .keys()
        .filter(|k| k.ends_with(".running_mean"))
        .collect();
    names.sort();
    // Per layer: (gamma, beta, running_mean, running_var, a, c).
    let mut layers = Vec::with_capacity(names.len());
    for n in names {
        let prefix = n.trim_end_matches(".running_mean");
        let get = |s: &str| -> Result<Tensor> {
            Ok(vars
                .get(&format!("{prefix}.{s}"))
                .with_context(|| format!("{prefix} has running_mean but no {s}"))?
                .shallow_clone())
        };
        let (gamma, beta, mean, var) = (
            get("weight")?,
            get("bias")?,
            get("running_mean")?,
            get("running_var")?,
        );
        let a = tch::no_grad(|| &gamma / (&var + eps).sqrt());
        let c = tch::no_grad(|| &beta - &mean * &a);
        layers.push((gamma, beta, mean, var, a, c));
    }
    let mut change = f64::INFINITY;
    for _ in 0..layers.len() {
        let before: Vec<(Tensor, Tensor)> =
            layers.iter().map(|l| (l.2.copy(), l.3.copy())).collect();
        reestimate_batchnorm(model, vs, momentum, data, opts, input, batches)?;
        change = 0.0;
        tch::no_grad(|| {
            for ((gamma, beta, mean, var, a, c), (m0, v0)) in layers.iter_mut().zip(&before) {
                let sd = (&*var + eps).sqrt();
                gamma.copy_(&(&*a * &sd));
                beta.copy_(&(&*c + &*a * &*mean));
                let dm = ((&*mean - m0).abs() / &sd).max().double_value(&[]);
                let dv = ((&*var - v0).abs() / (v0 + eps)).max().double_value(&[]);
                change = change.max(dm).max(dv);
            }
        });
    }
    Ok((layers.len(), change))
}

impl FitData<'_> {
    fn clone_loader(&self, opts: &FitOptions, epoch: u64) -> Result<Batches<'_>> {
        Batches::new(self.cache, self.plan, opts.loader(), epoch)
    }
}

/// The learning-rate schedule and step count of a run over `data` with `opts`.
fn schedule(data: &FitData<'_>, opts: &FitOptions) -> Result<(u64, LrSchedule)> {
    let steps_per_epoch = data.clone_loader(opts, 0)?.num_batches() as u64;
    ensure!(
        steps_per_epoch > 0,
        "{} training samples make no full batch of {}",
        data.plan.len(),
        opts.batch_size
    );
    let total_steps = steps_per_epoch * opts.epochs;
    let warmup = opts
        .warmup_steps
        .unwrap_or_else(|| (total_steps / 20).min(500));
    let schedule = LrSchedule {
        base_lr: opts.lr,
        warmup_steps: warmup,
        total_steps,
        min_lr_ratio: 0.0,
        constant: opts.constant_lr,
    };
    Ok((steps_per_epoch, schedule))
}

impl LoopState {
    /// The state of a run that has not taken a step.
    fn start(opts: &FitOptions, total_steps: u64) -> Self {
        LoopState {
            options: opts.clone(),
            global_step: 0,
            total_steps,
            sampler: SamplerState {
                epoch: 0,
                position: 0,
            },
            epoch_loss_sum: 0.0,
            epoch_steps: 0,
            best: None,
            history: Vec::new(),
            finished: false,
        }
    }

    /// Loads the checkpoint at `path` into `vs` and `optimizer` and returns its loop state;
    /// refuses one written with other options (its steps would not mean the same thing).
    fn resume(
        path: &Path,
        opts: &FitOptions,
        vs: &nn::VarStore,
        optimizer: &mut Optimizer,
        ema: Option<&mut Ema>,
    ) -> Result<Self> {
        let file = CheckpointFile::open(path)?;
        let saved: LoopState = file.state()?;
        if saved.options != *opts {
            bail!(
                "{} was written with different options; resume with the same ones or use a new --out.\n saved: {}\n now:   {}",
                path.display(),
                serde_json::to_string(&saved.options)?,
                serde_json::to_string(opts)?
            );
        }
        file.load_model(vs)?;
        file.load_optimizer(optimizer)?;
        if let Some(e) = ema {
            file.load_ema(e)?;
        }
        eprintln!(
            "resuming {} at step {} (epoch {}, position {})",
            path.display(),
            saved.global_step,
            saved.sampler.epoch,
            saved.sampler.position
        );
        Ok(saved)
    }
}

/// The parts of a run that stay fixed while it trains.
struct Trainer<'a> {
    model: &'a dyn ModuleT,
    vs: &'a nn::VarStore,
    data: &'a FitData<'a>,
    teacher: Teacher<'a>,
    input: Option<&'a InputMap>,
    opts: &'a FitOptions,
    control: &'a RunControl,
    schedule: LrSchedule,
    steps_per_epoch: u64,
    weights: Option<Tensor>,
    /// Added to each row of teacher logits (`KdConfig::teacher_adjust`); `None` when off.
    teacher_shift: Option<Tensor>,
    ckpt_path: PathBuf,
    best_path: PathBuf,
}

/// How the training part of an epoch ended.
struct EpochRun {
    /// Stopped by [`RunControl::stop_after_steps`] before the epoch's end.
    stopped: bool,
    images_per_s: f64,
    last_lr: f64,
}

impl Trainer<'_> {
    /// The loss of one batch: weighted cross-entropy, or distillation against the teacher.
    fn loss(&self, logits: &Tensor, batch: &crate::data::loader::Batch) -> Result<Tensor> {
        let w = self.weights.as_ref();
        Ok(match &self.teacher {
            Teacher::None => {
                loss::cross_entropy_smoothed(logits, &batch.labels, w, self.opts.label_smoothing)
            }
            Teacher::Model(t) => {
                let tl = tch::no_grad(|| t.forward_t(&batch.images, false));
                let tl = self.adjust_teacher(tl);
                loss::distillation_loss(logits, &tl, &batch.labels, w, self.opts.kd)
            }
            Teacher::Cached(c) => {
                let tl = self.adjust_teacher(c.rows(&batch.indices)?);
                loss::distillation_loss(logits, &tl, &batch.labels, w, self.opts.kd)
            }
        })
    }

    /// Teacher logits with the prior shift added, when there is one.
    fn adjust_teacher(&self, logits: Tensor) -> Tensor {
        match &self.teacher_shift {
            Some(shift) => logits + shift,
            None => logits,
        }
    }

    /// Trains the rest of the current epoch, checkpointing every `checkpoint_every` steps.
    fn train_epoch(
        &self,
        state: &mut LoopState,
        optimizer: &mut Optimizer,
        mut ema: Option<&mut Ema>,
    ) -> Result<EpochRun> {
        let (opts, data) = (self.opts, self.data);
        let mut batches = Batches::resume(data.cache, data.plan, opts.loader(), state.sampler)?;
        let left = self.steps_per_epoch.saturating_sub(state.epoch_steps);
        let mut progress = EpochProgress::new(
            &format!(
                "{} epoch {}/{}",
                self.control.label,
                state.sampler.epoch + 1,
                opts.epochs
            ),
            left,
            self.control.progress,
        );
        let mut last_lr = self.schedule.lr(state.global_step.saturating_sub(1));
        let mut stopped = false;
        loop {
            if self
                .control
                .stop_after_steps
                .is_some_and(|s| state.global_step >= s)
            {
                stopped = true;
                break;
            }
            let Some(batch) = batches.next() else { break };
            let batch = batch?;
            tch::manual_seed(step_seed(opts.seed, state.global_step));
            let lr = self.schedule.lr(state.global_step);
            let x = match self.input {
                Some(m) => m.apply(&batch.images),
                None => batch.images.shallow_clone(),
            };
            let logits = self.model.forward_t(&x, true);
            let loss = self.loss(&logits, &batch)?;
            optimizer.zero_grad();
            loss.backward();
            optimizer.step(lr);
            let l = loss.double_value(&[]);
            ensure!(
                l.is_finite(),
                "loss became {l} at step {} (lower --lr?)",
                state.global_step
            );
            last_lr = lr;
            state.global_step += 1;
            if let Some(e) = ema.as_deref_mut() {
                e.update(state.global_step);
            }
            state.epoch_loss_sum += l;
            state.epoch_steps += 1;
            state.sampler = batches.state();
            progress.step(
                batch.indices.len() as u64,
                state.epoch_loss_sum / state.epoch_steps as f64,
            );
            if opts.checkpoint_every > 0 && state.global_step.is_multiple_of(opts.checkpoint_every)
            {
                checkpoint::save_with_ema(
                    &self.ckpt_path,
                    self.vs,
                    optimizer,
                    state,
                    ema.as_deref(),
                )?;
            }
        }
        progress.finish();
        Ok(EpochRun {
            stopped,
            images_per_s: progress.images_per_s(),
            last_lr,
        })
    }

    /// Evaluates the epoch just trained, keeps its weights if it is the best so far, and
    /// checkpoints the start of the next epoch.
    fn end_epoch(
        &self,
        state: &mut LoopState,
        optimizer: &Optimizer,
        run: &EpochRun,
        mut ema: Option<&mut Ema>,
    ) -> Result<()> {
        let (opts, data, model) = (self.opts, self.data, self.model);
        let epoch = state.sampler.epoch;
        if let Some(bn) = opts.bn_recalibrate {
            // Its training-mode forward may draw dropout masks: seed it like a step, so a run
            // resumed right before this point draws the same ones.
            tch::manual_seed(step_seed(opts.seed ^ 0xB4, state.global_step));
            reestimate_batchnorm(
                model,
                self.vs,
                bn.momentum,
                data,
                opts,
                self.input,
                bn.batches,
            )?;
        }
        // The average is what is evaluated and kept; training goes on from the live weights.
        let live = match ema.as_deref_mut() {
            Some(e) => {
                let (live, _) = self.evaluate_now()?;
                e.swap();
                Some(live)
            }
            None => None,
        };
        let evaluated = self.evaluate_and_keep(state, run, epoch, live);
        if let Some(e) = ema.as_deref_mut() {
            e.swap();
        }
        evaluated?;
        state.sampler = SamplerState {
            epoch: epoch + 1,
            position: 0,
        };
        state.epoch_loss_sum = 0.0;
        state.epoch_steps = 0;
        state.finished = epoch + 1 >= opts.epochs;
        checkpoint::save_with_ema(&self.ckpt_path, self.vs, optimizer, state, ema.as_deref())
    }

    /// The validation metrics and loss of the model as it is now.
    fn evaluate_now(&self) -> Result<(Evaluation, f64)> {
        let (opts, data) = (self.opts, self.data);
        evaluate(
            self.model,
            data.cache,
            data.val,
            opts.eval_batch_size,
            opts.train_size,
            self.input,
            &opts.eval,
        )
    }

    /// Evaluates the model as it is now, records the epoch (with `live`, the live weights'
    /// metrics when it is the average that is evaluated), and keeps the weights if the
    /// criterion says so.
    fn evaluate_and_keep(
        &self,
        state: &mut LoopState,
        run: &EpochRun,
        epoch: u64,
        live: Option<Evaluation>,
    ) -> Result<()> {
        let opts = self.opts;
        let (val, val_loss) = self.evaluate_now()?;
        let score = opts.criterion.score(&val);
        let record = EpochRecord {
            epoch,
            train_loss: state.epoch_loss_sum / state.epoch_steps.max(1) as f64,
            steps: state.epoch_steps,
            images_per_s: run.images_per_s,
            last_lr: run.last_lr,
            val_loss,
            val,
            score,
            val_live: live,
        };
        if let Some(l) = &record.val_live {
            eprintln!(
                "{} epoch {}: live weights (not averaged): acc {:.4}, balanced {:.4}",
                self.control.label,
                epoch + 1,
                l.accuracy,
                l.balanced_accuracy
            );
        }
        eprintln!(
            "{} epoch {}: train loss {:.4}, val loss {:.4}, acc {:.4}, balanced {:.4}, fairness {}, {} {:.4}",
            self.control.label,
            epoch + 1,
            record.train_loss,
            val_loss,
            record.val.accuracy,
            record.val.balanced_accuracy,
            record
                .val
                .fairness
                .map_or("-".into(), |f| format!("{f:.4}")),
            opts.criterion,
            score
        );
        if opts
            .criterion
            .keeps(score, state.best.as_ref().map(|b| b.score))
        {
            save_weights(&self.best_path, self.vs)?;
            state.best = Some(Best { epoch, score });
        }
        state.history.push(record);
        Ok(())
    }
}

/// Trains `model` (whose variables live in `vs`) and writes `out/checkpoint.safetensors`,
/// `out/best_weights.safetensors`. `input` maps the loader's normalization to the model's;
/// the teacher (if any) sees the loader's images unchanged.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    model: &dyn ModuleT,
    vs: &nn::VarStore,
    data: &FitData<'_>,
    teacher: Teacher<'_>,
    input: Option<&InputMap>,
    opts: &FitOptions,
    out: &Path,
    control: &RunControl,
) -> Result<FitOutcome> {
    let started = Instant::now();
    ensure!(opts.epochs > 0, "epochs must be > 0");
    ensure!(
        opts.lr > 0.0 && opts.lr.is_finite(),
        "learning rate {} must be > 0",
        opts.lr
    );
    opts.kd.validate()?;
    // Precise BN re-estimates the live weights' statistics, but with a weight average it is
    // the average that is evaluated and kept: the two together would recalibrate the wrong
    // weights.
    ensure!(
        opts.ema.is_none() || opts.bn_recalibrate.is_none(),
        "a weight average (ema) and BatchNorm re-estimation before each evaluation \
         (bn_recalibrate) cannot be combined"
    );
    ensure!(!data.val.is_empty(), "the validation fold is empty");
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (steps_per_epoch, schedule) = schedule(data, opts)?;
    let trainer = Trainer {
        model,
        vs,
        data,
        teacher,
        input,
        opts,
        control,
        schedule,
        steps_per_epoch,
        weights: opts.class_weights.as_ref().map(|w| Tensor::from_slice(w)),
        teacher_shift: (opts.kd.teacher_adjust > 0.0).then(|| {
            loss::teacher_shift(
                &data.plan.class_counts(data.cache.labels()),
                opts.kd.teacher_adjust,
            )
        }),
        ckpt_path: out.join(CHECKPOINT_FILE),
        best_path: out.join(BEST_WEIGHTS_FILE),
    };
    let mut optimizer = Optimizer::new(vs, opts.optim)?;
    let mut ema = opts.ema.map(|d| Ema::new(vs, d)).transpose()?;
    let (mut state, resumed_from_step) = if control.resume && trainer.ckpt_path.exists() {
        let s = LoopState::resume(&trainer.ckpt_path, opts, vs, &mut optimizer, ema.as_mut())?;
        let step = s.global_step;
        (s, Some(step))
    } else {
        (LoopState::start(opts, steps_per_epoch * opts.epochs), None)
    };

    let mut stopped = false;
    while !state.finished {
        let run = trainer.train_epoch(&mut state, &mut optimizer, ema.as_mut())?;
        if run.stopped {
            stopped = true;
            break;
        }
        trainer.end_epoch(&mut state, &optimizer, &run, ema.as_mut())?;
    }
    Ok(FitOutcome {
        state,
        best_weights: trainer.best_path,
        stopped,
        resumed_from_step,
        seconds: started.elapsed().as_secs_f64(),
    })
}
