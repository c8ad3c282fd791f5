//! `derm-train student`: trains the MobileNetV3 student alone (from scratch or from the
//! ImageNet weights), and the student setup that `distill` shares.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use tch::nn;

use super::teacher::{TrainReport, metric_map};
use crate::args::{BalanceArgs, FoldArgs};
use crate::models::mobilenet_v3::{
    self, Arch, BN_MOMENTUM, Head, LoadOptions, MobileNetV3, MobileNetV3Config,
};
use crate::report;
use crate::student_file::{self, Provenance, StudentMeta};
use crate::train::cli::{RunData, TrainArgs, command_line, git_commit};
use crate::train::fit::{self, FitData, FitOptions, FitOutcome, InputMap};

/// The student's own flags.
#[derive(Debug, Clone, Args)]
pub struct StudentModelArgs {
    /// MobileNetV3 size: small or large.
    #[arg(long, default_value = "small")]
    pub arch: Arch,
    /// Classifier head: paper (one Linear) or torchvision (Linear-Hardswish-Dropout-Linear).
    #[arg(long, default_value = "paper")]
    pub head: Head,
    /// ImageNet weights (torchvision names, safetensors), e.g.
    /// ../shared/weights/mobilenet_v3_small_imagenet.safetensors. Its inputs are scaled to
    /// [-1, 1] and its BatchNorm statistics are placeholders, which are re-estimated first.
    #[arg(long)]
    pub init_weights: Option<PathBuf>,
    /// Training batches used to re-estimate BatchNorm statistics of `--init-weights`, and
    /// before every evaluation (0: never).
    #[arg(long, default_value_t = 20)]
    pub bn_batches: usize,
    /// How `--init-weights`' placeholder BatchNorm layers are re-estimated: `preserve`
    /// rescales each layer's affine part so the network computes exactly the pretrained
    /// function on the new data; `reset` keeps gamma = 1, normalizing every channel.
    #[arg(long, value_enum, default_value = "reset")]
    pub bn_init: BnInit,
}

/// How the placeholder BatchNorm statistics of pretrained weights are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BnInit {
    /// Statistics re-estimated, gamma and beta unchanged (every channel normalized).
    Reset,
    /// Statistics re-estimated and gamma/beta rescaled to keep the pretrained function.
    Preserve,
}

impl StudentModelArgs {
    /// Sets the loop's precise-BN option from `--bn-batches`.
    pub fn apply(&self, opts: &mut FitOptions) {
        opts.bn_recalibrate = (self.bn_batches > 0).then_some(fit::BnRecalibrate {
            batches: self.bn_batches,
            momentum: BN_MOMENTUM,
        });
    }
}

/// Arguments of `derm-train student`.
#[derive(Debug, Clone, Args)]
pub struct StudentArgs {
    #[command(flatten)]
    /// Cache and fold.
    pub fold: FoldArgs,
    #[command(flatten)]
    /// Balancing and class weights.
    pub balance: BalanceArgs,
    #[command(flatten)]
    /// Loop options.
    pub train: TrainArgs,
    #[command(flatten)]
    /// Student model.
    pub model: StudentModelArgs,
}

/// A student ready to train.
#[derive(Debug)]
pub struct StudentSetup {
    /// Its variables.
    pub vs: nn::VarStore,
    /// The network.
    pub net: MobileNetV3,
    /// Cache normalization -> the student's (`None`: the cache's own).
    pub input: Option<InputMap>,
    /// The normalization the student expects.
    pub mean: [f32; 3],
    /// See `mean`.
    pub std: [f32; 3],
    /// BatchNorm layers re-estimated.
    pub bn_layers: usize,
}

/// Builds the student (seeded), loads ImageNet weights if asked and re-estimates BatchNorm.
pub fn setup_student(
    m: &StudentModelArgs,
    data: &RunData,
    opts: &FitOptions,
    seed: u64,
) -> Result<StudentSetup> {
    let cfg = MobileNetV3Config::new(m.arch, m.head, crate::data::NUM_CLASSES as i64);
    let (mut vs, net) = mobilenet_v3::seeded(cfg, seed as i64)?;
    let (mut mean, mut std, mut input, mut bn_layers) =
        (data.cache.mean(), data.cache.std(), None, 0);
    if let Some(w) = &m.init_weights {
        // The paper head's classifier.0 is [C, 576], torchvision's is [1024, 576]: skip all of
        // the classifier for the paper head, only the 1000-way classifier.3 otherwise.
        let skip = match m.head {
            Head::Paper => "classifier",
            Head::Torchvision => "classifier.3",
        };
        let n = mobilenet_v3::load_torchvision_weights(
            &mut vs,
            w,
            &LoadOptions {
                skip: vec![skip.into()],
            },
        )?;
        (mean, std) = ([0.5; 3], [0.5; 3]);
        let map = InputMap::new(data.cache.mean(), data.cache.std(), mean, std);
        let fd = FitData {
            cache: &data.cache,
            plan: &data.plan,
            val: &data.val,
        };
        if m.bn_batches > 0 {
            bn_layers = match m.bn_init {
                BnInit::Reset => fit::reestimate_batchnorm(
                    &net,
                    &vs,
                    BN_MOMENTUM,
                    &fd,
                    opts,
                    Some(&map),
                    m.bn_batches,
                )?,
                BnInit::Preserve => {
                    let (n, change) = fit::preserve_pretrained_batchnorm(
                        &net,
                        &vs,
                        BN_MOMENTUM,
                        mobilenet_v3::BN_EPS,
                        &fd,
                        opts,
                        Some(&map),
                        m.bn_batches,
                    )?;
                    eprintln!(
                        "BatchNorm kept the pretrained function: largest relative change in the last of {n} passes {change:.4}"
                    );
                    n
                }
            };
        }
        eprintln!(
            "loaded {n} tensors from {}; re-estimated {bn_layers} BatchNorm layers over {} batches",
            w.display(),
            m.bn_batches
        );
        input = Some(map);
    }
    Ok(StudentSetup {
        vs,
        net,
        input,
        mean,
        std,
        bn_layers,
    })
}

/// Loads the best epoch into the student and writes `OUT/student.safetensors` with the
/// student-file format (what `derm-train export` reads). Returns its path.
pub fn save_student(
    s: &StudentSetup,
    m: &StudentModelArgs,
    data: &RunData,
    train: &TrainArgs,
    outcome: &FitOutcome,
    out: &Path,
    notes: String,
) -> Result<PathBuf> {
    fit::load_weights(&outcome.best_weights, &s.vs)?;
    let best = outcome
        .state
        .best
        .as_ref()
        .and_then(|b| outcome.state.history.iter().find(|r| r.epoch == b.epoch));
    let provenance = Provenance {
        trained: true,
        command: command_line(),
        dataset: data.cache.index().source.clone(),
        git_commit: git_commit(),
        seed: Some(train.seed as i64),
        init_weights: m.init_weights.as_ref().map(|p| p.display().to_string()),
        metrics: best.map(metric_map).unwrap_or_default(),
        notes,
    };
    let mut meta = StudentMeta::new(
        m.arch,
        m.head,
        data.cache.class_names().to_vec(),
        provenance,
    );
    meta.group_names = data.cache.group_names().to_vec();
    meta.input_size = [train.train_size as u32; 2];
    meta.mean = s.mean;
    meta.std = s.std;
    let path = out.join("student.safetensors");
    student_file::save(&path, &s.vs, &meta)?;
    Ok(path)
}

/// The common part of the student and distill reports.
#[allow(clippy::too_many_arguments)]
pub fn student_report(
    role: &str,
    s: &StudentSetup,
    m: &StudentModelArgs,
    a_fold: &FoldArgs,
    a_balance: &BalanceArgs,
    data: &RunData,
    opts: FitOptions,
    outcome: &FitOutcome,
    outputs: BTreeMap<String, String>,
) -> TrainReport {
    let mut model = BTreeMap::new();
    model.insert("arch".into(), format!("mobilenet_v3_{}", m.arch));
    model.insert("head".into(), m.head.to_string());
    model.insert(
        "init_weights".into(),
        m.init_weights
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string()),
    );
    model.insert("bn_reestimated_layers".into(), s.bn_layers.to_string());
    model.insert("bn_init".into(), format!("{:?}", m.bn_init).to_lowercase());
    model.insert("input_mean".into(), format!("{:?}", s.mean));
    model.insert("input_std".into(), format!("{:?}", s.std));
    let best = outcome
        .state
        .best
        .as_ref()
        .and_then(|b| outcome.state.history.iter().find(|r| r.epoch == b.epoch))
        .cloned();
    TrainReport {
        role: role.into(),
        model,
        parameters: mobilenet_v3::trainable_parameters(&s.vs),
        data: data.summary(a_fold, a_balance),
        options: opts,
        epochs: outcome.state.history.clone(),
        best_epoch: outcome.state.best.as_ref().map(|b| b.epoch),
        best,
        seconds: outcome.seconds,
        outputs,
        extra: BTreeMap::new(),
        command: command_line(),
        git_commit: git_commit(),
    }
}

/// Runs `derm-train student`.
pub fn run(a: StudentArgs) -> Result<()> {
    a.train.setup(32)?;
    let data = RunData::open(&a.fold, &a.balance, &a.train)?;
    let mut opts = a.train.fit_options(&data, Default::default());
    a.model.apply(&mut opts);
    let s = setup_student(&a.model, &data, &opts, a.train.seed)?;
    let fd = FitData {
        cache: &data.cache,
        plan: &data.plan,
        val: &data.val,
    };
    let control = fit::RunControl {
        resume: a.train.resume,
        progress: !a.train.quiet,
        label: "student".into(),
        ..Default::default()
    };
    let outcome = fit::fit(
        &s.net,
        &s.vs,
        &fd,
        fit::Teacher::None,
        s.input.as_ref(),
        &opts,
        &a.train.out,
        &control,
    )?;
    let path = save_student(
        &s,
        &a.model,
        &data,
        &a.train,
        &outcome,
        &a.train.out,
        String::new(),
    )?;
    let mut outputs = BTreeMap::new();
    outputs.insert("student".into(), path.display().to_string());
    outputs.insert(
        "checkpoint".into(),
        a.train.out.join(fit::CHECKPOINT_FILE).display().to_string(),
    );
    let rep = student_report(
        "student", &s, &a.model, &a.fold, &a.balance, &data, opts, &outcome, outputs,
    );
    report::write_report(&a.train.out.join("report.json"), "student", &rep)?;
    rep.print();
    Ok(())
}
