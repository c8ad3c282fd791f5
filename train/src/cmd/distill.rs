//! `derm-train distill`: trains the student with the distillation loss against a Swin V2
//! teacher, either running the teacher on every batch (`--teacher`) or reading logits it
//! computed once per image (`--teacher-logits`, from `derm-train teacher-logits`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail, ensure};
use clap::Args;

use super::student::{StudentModelArgs, save_student, setup_student, student_report};
use crate::args::{BalanceArgs, FoldArgs};
use crate::report;
use crate::train::cli::{KdArgs, RunData, TrainArgs};
use crate::train::fit::{self, FitData, Teacher};
use crate::train::teacher_file;

/// Arguments of `derm-train distill`.
#[derive(Debug, Clone, Args)]
pub struct DistillArgs {
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
    #[command(flatten)]
    /// Loss knobs.
    pub kd: KdArgs,
    /// Teacher file (`OUT/teacher.safetensors` of `derm-train teacher`), run on every batch.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Cached teacher logits (`derm-train teacher-logits`); used instead of running the teacher.
    #[arg(long)]
    pub teacher_logits: Option<PathBuf>,
}

/// Runs `derm-train distill`.
pub fn run(a: DistillArgs) -> Result<()> {
    a.train.setup(32)?;
    let kd = a.kd.config();
    kd.validate()?;
    let data = RunData::open(&a.fold, &a.balance, &a.train)?;
    let mut opts = a.train.fit_options(&data, kd);
    a.model.apply(&mut opts);
    let mut extra = BTreeMap::new();

    let mut cached = None;
    let mut live = None;
    match (&a.teacher_logits, &a.teacher) {
        (Some(p), _) => {
            let (meta, logits) =
                teacher_file::load_logits(p, data.cache.len(), data.cache.class_names().len())?;
            ensure!(
                meta.input_size == a.train.train_size,
                "{}: logits were computed at {}x{}, this run trains at {}",
                p.display(),
                meta.input_size,
                meta.input_size,
                a.train.train_size
            );
            extra.insert("teacher_logits".into(), serde_json::to_value(&meta)?);
            cached = Some(logits);
        }
        (None, Some(p)) => {
            let (meta, vs, net) = teacher_file::load(p)?;
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
            live = Some((vs, net));
        }
        (None, None) => bail!("distill needs --teacher FILE or --teacher-logits FILE"),
    }
    let teacher = match (&cached, &live) {
        (Some(c), _) => Teacher::Cached(c),
        (None, Some((_, net))) => Teacher::Model(net),
        (None, None) => unreachable!("one of them was set above"),
    };
    extra.insert(
        "teacher_source".into(),
        serde_json::Value::String(
            if cached.is_some() {
                "cached logits"
            } else {
                "live teacher"
            }
            .into(),
        ),
    );

    let s = setup_student(&a.model, &data, &opts, a.train.seed)?;
    let fd = FitData {
        cache: &data.cache,
        plan: &data.plan,
        val: &data.val,
    };
    let control = fit::RunControl {
        resume: a.train.resume,
        progress: !a.train.quiet,
        label: "distill".into(),
        ..Default::default()
    };
    let outcome = fit::fit(
        &s.net,
        &s.vs,
        &fd,
        teacher,
        s.input.as_ref(),
        &opts,
        &a.train.out,
        &control,
    )?;
    let notes = format!("distilled (alpha {}, T {})", kd.alpha, kd.temperature);
    let path = save_student(&s, &a.model, &data, &a.train, &outcome, &a.train.out, notes)?;
    let mut outputs = BTreeMap::new();
    outputs.insert("student".into(), path.display().to_string());
    outputs.insert(
        "checkpoint".into(),
        a.train.out.join(fit::CHECKPOINT_FILE).display().to_string(),
    );
    let mut rep = student_report(
        "distill", &s, &a.model, &a.fold, &a.balance, &data, opts, &outcome, outputs,
    );
    rep.extra = extra;
    report::write_report(&a.train.out.join("report.json"), "distill", &rep)?;
    rep.print();
    Ok(())
}
