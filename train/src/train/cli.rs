//! Command-line options shared by `teacher`, `student` and `distill`, and the setup they
//! share: open the cache and fold, subsample for small budgets, balance, resolve class
//! weights, and turn flags into [`FitOptions`].

use anyhow::{Result, ensure};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::fit::{Criterion, FitOptions};
use super::loss::KdConfig;
use super::optim::{OptimConfig, OptimizerKind};
use crate::args::{BalanceArgs, DataArgs, FoldArgs};
use crate::data::augment::{Augment, CropRange, Jitter};
use crate::data::balance::BalancePlan;
use crate::data::cache::Cache;
use crate::data::rng::Rng;
use crate::metrics::EvalOptions;

/// Flags of the training loop itself (what is trained, not where: see
/// [`RunArgs`](crate::args::RunArgs)).
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
pub struct TrainArgs {
    /// Training image side (the cache's tiles are resized; divisible by 32).
    #[arg(long, default_value_t = 128)]
    pub train_size: usize,
    /// Epochs.
    #[arg(long, default_value_t = 1)]
    pub epochs: u64,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Peak learning rate (the paper's SGD used 1e-4; AdamW on small budgets wants ~1e-3).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Optimizer: sgd (momentum 0.9) or adamw.
    #[arg(long, default_value = "adamw")]
    pub optimizer: OptimizerKind,
    /// Weight decay (default: 0 for sgd, 0.05 for adamw).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Linear warmup steps (default: 5% of the run, at most 500).
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// Keep the learning rate constant after the warmup instead of a cosine decay.
    #[arg(long)]
    pub constant_lr: bool,
    /// Seed of initialization, data order, flips, noise and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Best-epoch criterion: accuracy, balanced, fairness, overall, or last (the final
    /// epoch, no selection on the validation fold).
    #[arg(long, default_value = "overall")]
    pub select: Criterion,
    /// Checkpoint every N steps (0: only at epoch ends).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: u64,
    /// Groups left out of SPD and the minority choice (comma-separated, e.g. `unknown`).
    #[arg(long, value_delimiter = ',')]
    pub exclude_groups: Vec<String>,
    /// Force the minority group instead of the smallest one.
    #[arg(long)]
    pub minority_group: Option<String>,
    /// No random flips.
    #[arg(long)]
    pub no_flip: bool,
    /// Augmentation on top of the flips.
    #[command(flatten)]
    #[serde(flatten)]
    pub augmentation: AugmentArgs,
    /// Label smoothing of the hard-label cross-entropy, in [0, 1) (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// Keep an exponential moving average of the weights with this decay, in (0, 1) (e.g.
    /// 0.998), and evaluate, select and save the average instead of the last step's weights.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f64>,
}

/// Distillation knobs.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
pub struct KdArgs {
    /// Weight of the teacher term.
    #[arg(long, default_value_t = 0.8)]
    pub alpha: f64,
    /// Softmax temperature.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f64,
    /// Class-weight the teacher term too (each sample by its label's `--class-weights`
    /// weight), not only the hard-label term.
    #[arg(long)]
    #[serde(default)]
    pub soft_class_weights: bool,
    /// Logit-adjust the teacher's targets by TAU (0: off): its logits minus `TAU * ln(prior)`,
    /// the training slots' class frequencies, before the temperature; 1 divides its
    /// probabilities by the prior, which undoes its lean toward the majority class.
    #[arg(long, default_value_t = 0.0, value_name = "TAU")]
    #[serde(default)]
    pub teacher_adjust: f64,
}

impl KdArgs {
    /// As a [`KdConfig`].
    pub fn config(&self) -> KdConfig {
        KdConfig {
            alpha: self.alpha,
            temperature: self.temperature,
            soft_class_weights: self.soft_class_weights,
            teacher_adjust: self.teacher_adjust,
        }
    }
}

/// What a run trains on.
#[derive(Debug)]
pub struct RunData {
    /// The cache.
    pub cache: Cache,
    /// Training indices (after `--max-train`).
    pub train: Vec<usize>,
    /// Validation indices (after `--max-val`).
    pub val: Vec<usize>,
    /// Balanced training slots.
    pub plan: BalancePlan,
    /// Cross-entropy class weights.
    pub class_weights: Vec<f32>,
    /// Whether the validation images are also trained on (`--train-on-val`), so their
    /// scores are not held-out scores.
    pub val_in_train: bool,
}

/// Sizes of a run's data, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct DataSummary {
    /// Cache folder.
    pub cache: String,
    /// Cache tile side.
    pub cache_size: usize,
    /// Folds.
    pub k: usize,
    /// Validation fold.
    pub fold: usize,
    /// Training images used.
    pub train_images: usize,
    /// Training slots per epoch (originals + noise copies).
    pub train_slots: usize,
    /// Noise copies per epoch.
    pub noise_copies: usize,
    /// Validation images used.
    pub val_images: usize,
    /// Balancing preset.
    pub balance: String,
    /// Class weights.
    pub class_weights: Vec<f32>,
}

/// At most `max` of `v`, drawn with `seed` on its own random `stream` (so draws for
/// different purposes are independent), in ascending order.
pub fn subsample(mut v: Vec<usize>, max: Option<usize>, seed: u64, stream: u64) -> Vec<usize> {
    if let Some(m) = max.filter(|&m| m < v.len()) {
        Rng::from_parts(&[seed, stream, 0x5B5E]).shuffle(&mut v);
        v.truncate(m);
        v.sort_unstable();
    }
    v
}

/// At most `n` of `rows`, drawn with `seed` evenly from the classes (`label` of a row): one
/// of each class in turn, a class that runs out leaving its turns to the others. Sorted.
pub fn balanced_draw(
    label: impl Fn(usize) -> usize,
    rows: Vec<usize>,
    n: usize,
    seed: u64,
) -> Vec<usize> {
    let mut by_class: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for r in rows {
        by_class.entry(label(r)).or_default().push(r);
    }
    for (c, v) in by_class.iter_mut() {
        Rng::from_parts(&[seed, 3, 0xBA1A, *c as u64]).shuffle(v);
        // Taken from the back below: reverse so that the shuffle's first rows go first.
        v.reverse();
    }
    let mut out = Vec::with_capacity(n);
    while out.len() < n && by_class.values().any(|v| !v.is_empty()) {
        for v in by_class.values_mut() {
            if out.len() < n
                && let Some(r) = v.pop()
            {
                out.push(r);
            }
        }
    }
    out.sort_unstable();
    out
}

/// The training indices a run with these flags uses (the fold's, after `--max-train`), so
/// `teacher-logits` can compute exactly those rows.
pub fn train_indices(
    fold: &FoldArgs,
    max_train: Option<usize>,
    seed: u64,
) -> Result<(Cache, Vec<usize>)> {
    let (cache, f) = fold.open()?;
    Ok((cache, subsample(f.train, max_train, seed, 1)))
}

/// The validation indices a run with these flags uses (the fold's, after `--max-val`), so
/// `evaluate` scores exactly the images training validated on.
pub fn val_indices(
    fold: &FoldArgs,
    max_val: Option<usize>,
    seed: u64,
) -> Result<(Cache, Vec<usize>)> {
    let (cache, f) = fold.open()?;
    Ok((cache, subsample(f.val, max_val, seed, 2)))
}

impl RunData {
    /// Opens the cache and fold, subsamples, balances and resolves class weights.
    pub fn open(data: &DataArgs, balance: &BalanceArgs, train: &TrainArgs) -> Result<Self> {
        let (cache, f) = data.fold.open()?;
        let mut tr = subsample(f.train, data.max_train, train.seed, 1);
        let val = subsample(f.val, data.max_val, train.seed, 2);
        if data.train_on_val {
            // The validation images join training; they are still scored each epoch (as
            // training images now), which shows the run is healthy but measures nothing.
            tr.extend_from_slice(&val);
            tr.sort_unstable();
        }
        ensure!(
            !tr.is_empty() && !val.is_empty(),
            "empty training or validation set"
        );
        let plan = BalancePlan::new(&cache, &tr, &balance.config()?, train.seed);
        let class_weights = balance
            .class_weights
            .resolve(&plan.class_counts(cache.labels()))
            .to_vec();
        Ok(Self {
            cache,
            train: tr,
            val,
            plan,
            class_weights,
            val_in_train: data.train_on_val,
        })
    }

    /// Sizes for the report.
    pub fn summary(&self, data: &DataArgs, balance: &BalanceArgs) -> DataSummary {
        let fold = &data.fold;
        DataSummary {
            cache: fold.cache.display().to_string(),
            cache_size: self.cache.image_size(),
            k: fold.k,
            fold: fold.fold,
            train_images: self.train.len(),
            train_slots: self.plan.len(),
            noise_copies: self.plan.num_copies(),
            val_images: self.val.len(),
            balance: balance.balance.to_string(),
            class_weights: self.class_weights.clone(),
        }
    }

    /// Metric options from the cache's names and the flags.
    pub fn eval_options(&self, train: &TrainArgs) -> EvalOptions {
        EvalOptions {
            class_names: self.cache.class_names().to_vec(),
            group_names: self.cache.group_names().to_vec(),
            minority_group: train.minority_group.clone(),
            exclude_groups: train.exclude_groups.clone(),
            latency_s_per_100: None,
        }
    }
}

fn parse_floats(s: &str, n: usize) -> std::result::Result<Vec<f32>, String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("{s:?}: {e}"))?;
    if v.len() != n {
        return Err(format!("{s:?}: expected {n} comma-separated numbers"));
    }
    Ok(v)
}

fn parse_pair(s: &str) -> std::result::Result<(f32, f32), String> {
    let v = parse_floats(s, 2)?;
    Ok((v[0], v[1]))
}

fn parse_triple(s: &str) -> std::result::Result<(f32, f32, f32), String> {
    let v = parse_floats(s, 3)?;
    Ok((v[0], v[1], v[2]))
}

/// Augmentation flags beyond the flips, shared by the training commands and `qat` (the
/// same names and defaults everywhere).
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
pub struct AugmentArgs {
    /// Also random transposes: with the flips, all 8 dihedral symmetries (90-degree
    /// rotations included).
    #[arg(long)]
    pub dihedral: bool,
    /// Random resized crop: area fraction range `MIN,MAX` of the cache tile (e.g. `0.35,1`).
    #[arg(long, value_parser = parse_pair)]
    pub crop_scale: Option<(f32, f32)>,
    /// Aspect-ratio range `MIN,MAX` of the random resized crop (with `--crop-scale`).
    #[arg(long, value_parser = parse_pair, default_value = "0.75,1.3333")]
    pub crop_ratio: (f32, f32),
    /// Colour jitter strengths `BRIGHTNESS,CONTRAST,SATURATION`, each factor drawn from
    /// [1 - x, 1 + x] (e.g. `0.1,0.1,0.1`).
    #[arg(long, value_parser = parse_triple)]
    pub jitter: Option<(f32, f32, f32)>,
}

impl AugmentArgs {
    /// The augmentation the flags ask for.
    pub fn augment(&self) -> Augment {
        Augment {
            dihedral: self.dihedral,
            crop: self.crop_scale.map(|scale| CropRange {
                scale,
                ratio: self.crop_ratio,
            }),
            jitter: self
                .jitter
                .map(|(brightness, contrast, saturation)| Jitter {
                    brightness,
                    contrast,
                    saturation,
                }),
        }
    }
}

impl TrainArgs {
    /// The augmentation the flags ask for.
    pub fn augment(&self) -> Augment {
        self.augmentation.augment()
    }

    /// Checks the image size against the model's multiple, the augmentation and the label
    /// smoothing.
    pub fn validate(&self, multiple: usize) -> Result<()> {
        ensure!(
            self.train_size > 0 && self.train_size.is_multiple_of(multiple),
            "--train-size {} must be a positive multiple of {multiple}",
            self.train_size
        );
        self.augment().validate()?;
        ensure!(
            (0.0..1.0).contains(&self.label_smoothing),
            "--label-smoothing {} must be in [0, 1)",
            self.label_smoothing
        );
        if let Some(d) = self.ema {
            ensure!(d > 0.0 && d < 1.0, "--ema {d} must be in (0, 1)");
        }
        Ok(())
    }

    /// The loop options.
    pub fn fit_options(&self, data: &RunData, kd: KdConfig) -> FitOptions {
        let mut optim = OptimConfig::for_kind(self.optimizer);
        if let Some(wd) = self.weight_decay {
            optim.weight_decay = wd;
        }
        FitOptions {
            epochs: self.epochs,
            batch_size: self.batch_size,
            eval_batch_size: self.batch_size.max(64),
            seed: self.seed,
            train_size: Some(self.train_size),
            flip: !self.no_flip,
            augment: self.augment(),
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            constant_lr: self.constant_lr,
            optim,
            checkpoint_every: self.checkpoint_every,
            criterion: self.select,
            kd,
            class_weights: Some(data.class_weights.clone()),
            eval: data.eval_options(self),
            bn_recalibrate: None,
            label_smoothing: self.label_smoothing,
            ema: self.ema,
        }
    }
}

/// The command line as one string, for provenance.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// `git rev-parse HEAD` if available (empty otherwise).
pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::balanced_draw;

    #[test]
    fn a_balanced_draw_takes_each_class_evenly_until_it_runs_out() {
        // Class 0 has 90 rows, class 1 has 8, class 2 has 30.
        let label = |r: usize| match r {
            0..90 => 0,
            90..98 => 1,
            _ => 2,
        };
        let rows: Vec<usize> = (0..128).collect();
        let count = |v: &[usize], c: usize| v.iter().filter(|&&r| label(r) == c).count();
        let v = balanced_draw(label, rows.clone(), 30, 7);
        assert_eq!(v.len(), 30);
        assert_eq!((count(&v, 0), count(&v, 1), count(&v, 2)), (11, 8, 11));
        assert!(v.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        // The seed chooses which rows; the same seed the same ones.
        assert_eq!(v, balanced_draw(label, rows.clone(), 30, 7));
        assert_ne!(v, balanced_draw(label, rows.clone(), 30, 8));
        // More than there are: every row once.
        assert_eq!(balanced_draw(label, rows.clone(), 500, 7), rows);
    }
}
