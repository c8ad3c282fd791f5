//! The one training entry point: [`execute`] turns a [`RunSpec`] into a trained model file,
//! a checkpoint that `--resume` continues from, and a JSON report (with the spec in it).
//! `student`, `teacher`, `distill` and every `experiment` cell go through it, so they build
//! the data, the models and the reports the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};
use serde::Serialize;
use tch::{Device, nn};

use super::cli::{DataSummary, RunData, TrainArgs, command_line, git_commit};
use super::fit::{self, EpochRecord, FitData, FitOptions, FitOutcome, InputMap, Teacher};
use super::spec::{BnInit, ModelSpec, RunSpec, StudentModelArgs, TeacherModelArgs, TeacherSource};
use super::teacher_file::{self, TeacherMeta};
use crate::models::mobilenet_v3::{
    self, BN_MOMENTUM, Head, LoadOptions, MobileNetV3, MobileNetV3Config,
};
use crate::models::swin_v2::{SwinV2, SwinV2Config, trainable_parameter_count};
use crate::report;
use crate::student_file::{self, Provenance, StudentMeta};

/// File name of the JSON report inside a run's output folder.
pub const REPORT_FILE: &str = "report.json";

/// How and where one run executes: what may differ between two executions of the same
/// spec (a resumed run, another machine, an experiment cell).
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Output folder: checkpoint, best weights, model file, `report.json`.
    pub out: PathBuf,
    /// Continue from `out/checkpoint.safetensors` if it exists.
    pub resume: bool,
    /// libtorch intra-op threads (`None`: libtorch's choice).
    pub threads: Option<i32>,
    /// Show progress.
    pub progress: bool,
    /// Label of the progress display.
    pub label: String,
}

impl RunContext {
    fn apply_threads(&self) -> Result<()> {
        if let Some(t) = self.threads {
            ensure!(t > 0, "--threads {t} must be > 0");
            tch::set_num_threads(t);
        }
        Ok(())
    }
}

/// The JSON report of a training run (`OUT/report.json`, under `result`).
#[derive(Debug, Serialize)]
pub struct TrainReport {
    /// teacher, student or distill.
    pub role: String,
    /// The spec that was executed.
    pub spec: RunSpec,
    /// Architecture summary.
    pub model: BTreeMap<String, String>,
    /// Trainable parameters.
    pub parameters: i64,
    /// Data sizes.
    pub data: DataSummary,
    /// Loop options.
    pub options: FitOptions,
    /// Per-epoch numbers.
    pub epochs: Vec<EpochRecord>,
    /// Best epoch (0-based).
    pub best_epoch: Option<u64>,
    /// Its validation record.
    pub best: Option<EpochRecord>,
    /// Seconds of the last invocation (a resumed run counts only its own part).
    pub seconds: f64,
    /// Files written.
    pub outputs: BTreeMap<String, String>,
    /// Anything else worth recording (e.g. distillation speed).
    pub extra: BTreeMap<String, serde_json::Value>,
    /// Command line.
    pub command: String,
    /// Source revision.
    pub git_commit: String,
}

impl TrainReport {
    /// Prints the best epoch's tables.
    pub fn print(&self) {
        if let Some(b) = &self.best {
            println!(
                "best epoch {} ({} = {:.4})",
                b.epoch + 1,
                self.options.criterion,
                b.score
            );
            println!("{}", b.val.summary_table());
            println!("{}", b.val.group_table());
        }
    }
}

/// What [`execute`] produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// The report, as written to `out/report.json`.
    pub report: TrainReport,
    /// The global step the run continued from when it resumed a checkpoint.
    pub resumed_from_step: Option<u64>,
    /// The trained model file (`student.safetensors` or `teacher.safetensors`).
    pub model_file: PathBuf,
}

/// Metric map of one epoch for provenance fields.
pub fn metric_map(r: &EpochRecord) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    m.insert("accuracy".into(), r.val.accuracy);
    m.insert("balanced_accuracy".into(), r.val.balanced_accuracy);
    if let Some(f) = r.val.fairness {
        m.insert("fairness".into(), f);
    }
    if let Some(s) = r.val.spd {
        m.insert("spd".into(), s);
    }
    m.insert("val_loss".into(), r.val_loss);
    m
}

/// Trains what `spec` describes into `ctx.out` and writes `ctx.out/report.json`.
pub fn execute(spec: &RunSpec, ctx: &RunContext) -> Result<RunOutcome> {
    spec.validate()?;
    ctx.apply_threads()?;
    match &spec.model {
        ModelSpec::Teacher(m) => train_teacher(spec, m, ctx),
        ModelSpec::Student(m) => train_student(spec, m, ctx),
    }
}

fn fit_data(data: &RunData) -> FitData<'_> {
    FitData {
        cache: &data.cache,
        plan: &data.plan,
        val: &data.val,
    }
}

fn control(ctx: &RunContext) -> fit::RunControl {
    fit::RunControl {
        resume: ctx.resume,
        progress: ctx.progress,
        label: ctx.label.clone(),
        ..Default::default()
    }
}

/// The validation scores a model file records: none when the validation images were
/// trained on (`--train-on-val`), since those would be training scores that `export` and
/// `pi-bench` would then show as validation scores.
fn recorded_metrics(data: &RunData, best: Option<&EpochRecord>) -> BTreeMap<String, f64> {
    match best {
        Some(r) if !data.val_in_train => metric_map(r),
        _ => BTreeMap::new(),
    }
}

fn best_record(outcome: &FitOutcome) -> Option<EpochRecord> {
    outcome
        .state
        .best
        .as_ref()
        .and_then(|b| outcome.state.history.iter().find(|r| r.epoch == b.epoch))
        .cloned()
}

fn base_outputs(model: &Path, out: &Path) -> BTreeMap<String, String> {
    let mut outputs = BTreeMap::new();
    let key = if model.ends_with("teacher.safetensors") {
        "teacher"
    } else {
        "student"
    };
    outputs.insert(key.into(), model.display().to_string());
    outputs.insert(
        "checkpoint".into(),
        out.join(fit::CHECKPOINT_FILE).display().to_string(),
    );
    outputs
}

fn finish(
    report: TrainReport,
    outcome: &FitOutcome,
    model_file: PathBuf,
    ctx: &RunContext,
) -> Result<RunOutcome> {
    report::write_report(&ctx.out.join(REPORT_FILE), &report.role, &report)?;
    Ok(RunOutcome {
        report,
        resumed_from_step: outcome.resumed_from_step,
        model_file,
    })
}

fn train_teacher(spec: &RunSpec, m: &TeacherModelArgs, ctx: &RunContext) -> Result<RunOutcome> {
    let cfg = SwinV2Config::swin_v2_t(crate::data::NUM_CLASSES as i64);
    spec.train.validate(cfg.input_multiple() as usize)?;
    let data = RunData::open(&spec.data, &spec.balance, &spec.train)?;
    let opts = spec.train.fit_options(&data, Default::default());

    tch::manual_seed(spec.train.seed as i64);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = SwinV2::new(&vs.root(), cfg)?;
    if let Some(w) = &m.init_weights {
        let opts = LoadOptions {
            skip: vec!["head".into()],
        };
        let n = mobilenet_v3::load_torchvision_weights(&mut vs, w, &opts)?;
        eprintln!("loaded {n} tensors from {}", w.display());
    }
    let outcome = fit::fit(
        &net,
        &vs,
        &fit_data(&data),
        Teacher::None,
        None,
        &opts,
        &ctx.out,
        &control(ctx),
    )?;

    fit::load_weights(&outcome.best_weights, &vs)?;
    let best = best_record(&outcome);
    let meta = TeacherMeta {
        format: teacher_file::FORMAT.into(),
        version: teacher_file::VERSION,
        arch: m.arch.clone(),
        class_names: data.cache.class_names().to_vec(),
        group_names: data.cache.group_names().to_vec(),
        input_size: spec.train.train_size,
        mean: data.cache.mean(),
        std: data.cache.std(),
        crop: data.cache.crop(),
        command: command_line(),
        git_commit: git_commit(),
        metrics: recorded_metrics(&data, best.as_ref()),
    };
    let teacher_path = ctx.out.join("teacher.safetensors");
    teacher_file::save(&teacher_path, &vs, &meta)?;

    let mut model = BTreeMap::new();
    model.insert("arch".into(), m.arch.clone());
    model.insert("input_size".into(), spec.train.train_size.to_string());
    model.insert(
        "init_weights".into(),
        m.init_weights
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string()),
    );
    let report = TrainReport {
        role: spec.role().into(),
        spec: spec.clone(),
        model,
        parameters: trainable_parameter_count(&vs),
        data: data.summary(&spec.data, &spec.balance),
        options: opts,
        epochs: outcome.state.history.clone(),
        best_epoch: outcome.state.best.as_ref().map(|b| b.epoch),
        best,
        seconds: outcome.seconds,
        outputs: base_outputs(&teacher_path, &ctx.out),
        extra: BTreeMap::new(),
        command: meta.command.clone(),
        git_commit: meta.git_commit.clone(),
    };
    finish(report, &outcome, teacher_path, ctx)
}

/// The distillation teacher of a run, loaded: its logits or its network.
enum LoadedTeacher {
    Cached(fit::TeacherLogits),
    // The variables stay alive with the network that uses them. Boxed: a Swin network is
    // large next to the cached variant.
    Live { _vs: nn::VarStore, net: Box<SwinV2> },
}

/// Loads the teacher of `source` and checks it against the run's cache; also returns what
/// the report records about it.
fn load_teacher(
    source: &TeacherSource,
    data: &RunData,
    extra: &mut BTreeMap<String, serde_json::Value>,
) -> Result<LoadedTeacher> {
    Ok(match source {
        TeacherSource::Logits(p) => {
            // The teacher's input size is its own business: a teacher that sees the images
            // at a higher resolution than the student is one way to make it stronger. The
            // report keeps it (`teacher_logits.input_size`) beside the student's.
            let (meta, logits) =
                teacher_file::load_logits(p, data.cache.len(), data.cache.class_names().len())?;
            extra.insert("teacher_logits".into(), serde_json::to_value(&meta)?);
            extra.insert("teacher_source".into(), "cached logits".into());
            LoadedTeacher::Cached(logits)
        }
        TeacherSource::File(p) => {
            let (meta, vs, net) = teacher_file::load(p)?;
            data.cache.check_crop(meta.crop, p)?;
            ensure!(
                meta.mean == data.cache.mean() && meta.std == data.cache.std(),
                "{}: the teacher was trained with mean {:?} / std {:?}, this cache has {:?} / {:?}",
                p.display(),
                meta.mean,
                meta.std,
                data.cache.mean(),
                data.cache.std()
            );
            extra.insert("teacher".into(), serde_json::to_value(&meta)?);
            extra.insert("teacher_source".into(), "live teacher".into());
            LoadedTeacher::Live {
                _vs: vs,
                net: Box::new(net),
            }
        }
    })
}

fn train_student(spec: &RunSpec, m: &StudentModelArgs, ctx: &RunContext) -> Result<RunOutcome> {
    spec.train.validate(32)?;
    let kd = spec
        .teacher
        .as_ref()
        .map(|t| t.config())
        .unwrap_or_default();
    let data = RunData::open(&spec.data, &spec.balance, &spec.train)?;
    let mut opts = spec.train.fit_options(&data, kd);
    opts.bn_recalibrate = (m.bn_batches > 0).then_some(fit::BnRecalibrate {
        batches: m.bn_batches,
        momentum: BN_MOMENTUM,
    });
    let mut extra = BTreeMap::new();
    let loaded = spec
        .teacher
        .as_ref()
        .map(|t| load_teacher(&t.source, &data, &mut extra))
        .transpose()?;
    let teacher = match &loaded {
        None => Teacher::None,
        Some(LoadedTeacher::Cached(c)) => Teacher::Cached(c),
        Some(LoadedTeacher::Live { net, .. }) => Teacher::Model(net.as_ref()),
    };

    let s = setup_student(m, &data, &opts, spec.train.seed)?;
    let outcome = fit::fit(
        &s.net,
        &s.vs,
        &fit_data(&data),
        teacher,
        s.input.as_ref(),
        &opts,
        &ctx.out,
        &control(ctx),
    )?;
    let notes = if spec.teacher.is_some() {
        format!("distilled (alpha {}, T {})", kd.alpha, kd.temperature)
    } else {
        String::new()
    };
    let path = save_student(&s, m, &data, &spec.train, &outcome, &ctx.out, notes)?;
    let mut report = student_report(spec, &s, m, &data, opts, &outcome);
    report.outputs = base_outputs(&path, &ctx.out);
    report.extra = extra;
    finish(report, &outcome, path, ctx)
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
        let fd = fit_data(data);
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
    let best = best_record(outcome);
    let provenance = Provenance {
        trained: true,
        command: command_line(),
        dataset: data.cache.index().source.clone(),
        git_commit: git_commit(),
        seed: Some(train.seed as i64),
        init_weights: m.init_weights.as_ref().map(|p| p.display().to_string()),
        metrics: recorded_metrics(data, best.as_ref()),
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
    meta.crop = data.cache.crop();
    let path = out.join("student.safetensors");
    student_file::save(&path, &s.vs, &meta)?;
    Ok(path)
}

/// The common part of the student and distill reports (outputs and extra left empty).
fn student_report(
    spec: &RunSpec,
    s: &StudentSetup,
    m: &StudentModelArgs,
    data: &RunData,
    opts: FitOptions,
    outcome: &FitOutcome,
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
    TrainReport {
        role: spec.role().into(),
        spec: spec.clone(),
        model,
        parameters: mobilenet_v3::trainable_parameters(&s.vs),
        data: data.summary(&spec.data, &spec.balance),
        options: opts,
        epochs: outcome.state.history.clone(),
        best_epoch: outcome.state.best.as_ref().map(|b| b.epoch),
        best: best_record(outcome),
        seconds: outcome.seconds,
        outputs: BTreeMap::new(),
        extra: BTreeMap::new(),
        command: command_line(),
        git_commit: git_commit(),
    }
}
