//! The Table III grid: balancing settings x models x folds, one training run ("cell") each,
//! all through [`execute`](crate::train::run::execute).
//!
//! Every cell lives in `DIR/cells/<setting>-<model>-f<fold>/` with its checkpoint, model
//! file and `cell.json` (spec and result). The grid is resumable and shardable without a
//! scheduler: a cell with a `cell.json` is done and never rerun; an unfinished one resumes
//! from its checkpoint; `--shard K/N` takes the cells whose index in the fixed cell order is
//! `K` modulo `N`; and an exclusive `flock(2)` on `cell.lock` keeps two processes (on one
//! machine or on several sharing the folder) from training the same cell at once. The
//! kernel drops that lock when its holder dies, so a killed run leaves no stale lock.

pub mod lock;
pub mod report;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::args::{BalanceArgs, DataArgs, FoldArgs};
use crate::data::balance::{ClassWeights, Preset};
use crate::metrics::Evaluation;
use crate::train::cli::{KdArgs, TrainArgs};
use crate::train::fit::EpochRecord;
use crate::train::run::{self, RunContext};
use crate::train::spec::{
    KdSpec, ModelSpec, RunSpec, StudentModelArgs, TeacherModelArgs, TeacherSource,
};
use crate::train::teacher_file;
use lock::CellLock;

/// Folder of the cells inside an experiment folder.
pub const CELLS_DIR: &str = "cells";
/// A finished cell's record, inside its folder.
pub const CELL_FILE: &str = "cell.json";
/// The per-cell lock file, inside its folder.
pub const LOCK_FILE: &str = "cell.lock";

/// One model column of the grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GridModel {
    /// The MobileNetV3 student alone.
    Student,
    /// The Swin V2-T teacher.
    Teacher,
    /// The student distilled from a teacher.
    Kd(KdTeacher),
}

/// The teacher of a `kd` column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KdTeacher {
    /// The teacher trained by the grid's own `teacher` cell of the same setting and fold.
    Cell(String),
    /// A teacher file; `{fold}` in the path is replaced by the cell's fold.
    File(PathBuf),
    /// A teacher-logits file; `{fold}` in the path is replaced by the cell's fold.
    Logits(PathBuf),
}

impl GridModel {
    /// The model's part of a cell name (`student`, `teacher`, `kd-teacher`, `kd-<file stem>`).
    pub fn name(&self) -> String {
        match self {
            GridModel::Student => "student".into(),
            GridModel::Teacher => "teacher".into(),
            GridModel::Kd(KdTeacher::Cell(c)) => format!("kd-{c}"),
            GridModel::Kd(KdTeacher::File(p) | KdTeacher::Logits(p)) => {
                let stem = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().replace("{fold}", ""))
                    .unwrap_or_default();
                let safe: String = stem
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                format!("kd-{}", safe.trim_matches('_'))
            }
        }
    }
}

impl fmt::Display for GridModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for GridModel {
    type Err = anyhow::Error;
    /// `student`, `teacher`, `kd` (= `kd:teacher`), `kd:teacher` (the grid's teacher cell) or
    /// `kd:PATH` (a teacher file or a teacher-logits file, told apart by its metadata).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        Ok(match s {
            "student" => GridModel::Student,
            "teacher" => GridModel::Teacher,
            "kd" => GridModel::Kd(KdTeacher::Cell("teacher".into())),
            _ => match s.strip_prefix("kd:") {
                Some("teacher") => GridModel::Kd(KdTeacher::Cell("teacher".into())),
                Some(p) if p.ends_with(".safetensors") || p.contains('/') => {
                    GridModel::Kd(teacher_kind(Path::new(p))?)
                }
                Some(o) => bail!(
                    "model {s:?}: kd:{o} names neither the grid's `teacher` nor a .safetensors file"
                ),
                None => bail!(
                    "unknown model {s:?} (student, teacher, kd, kd:teacher or kd:PATH.safetensors)"
                ),
            },
        })
    }
}

/// Whether `path` (with `{fold}` as fold 0) is a teacher file or a teacher-logits file.
fn teacher_kind(path: &Path) -> Result<KdTeacher> {
    let probe = PathBuf::from(path.to_string_lossy().replace("{fold}", "0"));
    let bytes = std::fs::read(&probe)
        .with_context(|| format!("cannot read teacher {}", probe.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", probe.display()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.contains_key(teacher_file::LOGITS_METADATA_KEY) {
        Ok(KdTeacher::Logits(path.to_path_buf()))
    } else if meta.contains_key(teacher_file::METADATA_KEY) {
        Ok(KdTeacher::File(path.to_path_buf()))
    } else {
        bail!(
            "{}: neither a teacher file nor a teacher-logits file (no {} or {} metadata)",
            probe.display(),
            teacher_file::METADATA_KEY,
            teacher_file::LOGITS_METADATA_KEY
        )
    }
}

/// `--shard K/N`: this process runs the cells whose index is `K` modulo `N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard (0-based).
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (k, n) = s
            .split_once('/')
            .with_context(|| format!("--shard {s:?}: expected K/N, e.g. 0/4"))?;
        let parse = |x: &str| {
            x.trim()
                .parse::<usize>()
                .with_context(|| format!("--shard {s:?}: {x:?} is not a number"))
        };
        let (index, count) = (parse(k)?, parse(n)?);
        ensure!(
            count > 0 && index < count,
            "--shard {s:?}: K must be below N (0 <= K < N)"
        );
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Whether the cell at `index` of the cell order belongs to this shard.
    pub fn takes(&self, index: usize) -> bool {
        index % self.count == self.index
    }
}

/// What every cell shares; each cell adds its setting, model and fold.
#[derive(Debug, Clone)]
pub struct CellTemplate {
    /// Cache folder.
    pub cache: PathBuf,
    /// Folds.
    pub k: usize,
    /// Seed of the fold assignment.
    pub split_seed: u64,
    /// Training subset size.
    pub max_train: Option<usize>,
    /// Validation subset size.
    pub max_val: Option<usize>,
    /// Balancing target multiplier.
    pub scale: f64,
    /// Class weights.
    pub class_weights: ClassWeights,
    /// Loop options.
    pub train: TrainArgs,
    /// The student (of `student` and `kd` cells).
    pub student: StudentModelArgs,
    /// The teacher (of `teacher` cells).
    pub teacher: TeacherModelArgs,
    /// Distillation knobs (of `kd` cells).
    pub kd: KdArgs,
}

/// One cell of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Position in the cell order (what `--shard` divides).
    pub index: usize,
    /// `<setting>-<model>-f<fold>`.
    pub name: String,
    /// Balancing setting.
    pub setting: Preset,
    /// Model column.
    pub model: GridModel,
    /// Validation fold.
    pub fold: usize,
    /// What the cell trains.
    pub spec: RunSpec,
    /// The cell whose teacher file this one distils from (a `kd:teacher` cell).
    pub depends_on: Option<String>,
}

/// The name of the cell of `setting`, `model` and `fold`.
pub fn cell_name(setting: Preset, model: &str, fold: usize) -> String {
    format!("{setting}-{model}-f{fold}")
}

/// The folder of cell `name` in experiment folder `dir`.
pub fn cell_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(CELLS_DIR).join(name)
}

/// The grid's cells, in their fixed order: settings, then models, then folds (the order of
/// the lists given), so every process of a sharded run numbers them the same way. Teacher
/// cells come before the `kd` cells that use them when `teacher` is listed before `kd`.
pub fn grid(
    dir: &Path,
    template: &CellTemplate,
    settings: &[Preset],
    models: &[GridModel],
    folds: &[usize],
) -> Result<Vec<Cell>> {
    ensure!(
        !settings.is_empty() && !models.is_empty() && !folds.is_empty(),
        "the grid is empty: give at least one setting, model and fold"
    );
    if let Some(f) = folds.iter().find(|&&f| f >= template.k) {
        bail!("fold {f} must be below --k {}", template.k);
    }
    for (i, m) in models.iter().enumerate() {
        ensure!(
            !models[..i].contains(m),
            "model {m} is listed twice in --models"
        );
        if let GridModel::Kd(KdTeacher::Cell(t)) = m {
            ensure!(
                models.contains(&GridModel::Teacher),
                "model kd:{t} distils from the grid's teacher cells: add `teacher` to --models"
            );
        }
    }
    let mut cells = Vec::new();
    for &setting in settings {
        for model in models {
            for &fold in folds {
                let name = cell_name(setting, &model.name(), fold);
                let (model_spec, teacher, depends_on) = match model {
                    GridModel::Student => {
                        (ModelSpec::Student(template.student.clone()), None, None)
                    }
                    GridModel::Teacher => {
                        (ModelSpec::Teacher(template.teacher.clone()), None, None)
                    }
                    GridModel::Kd(t) => {
                        let (source, dep) = match t {
                            KdTeacher::Cell(c) => {
                                let dep = cell_name(setting, c, fold);
                                let file = cell_dir(dir, &dep).join("teacher.safetensors");
                                (TeacherSource::File(file), Some(dep))
                            }
                            KdTeacher::File(p) => (TeacherSource::File(for_fold(p, fold)), None),
                            KdTeacher::Logits(p) => {
                                (TeacherSource::Logits(for_fold(p, fold)), None)
                            }
                        };
                        let kd = KdSpec {
                            source,
                            kd: template.kd.clone(),
                        };
                        (ModelSpec::Student(template.student.clone()), Some(kd), dep)
                    }
                };
                let spec = RunSpec {
                    data: DataArgs {
                        fold: FoldArgs {
                            cache: template.cache.clone(),
                            k: template.k,
                            fold,
                            split_seed: template.split_seed,
                        },
                        max_train: template.max_train,
                        max_val: template.max_val,
                        train_on_val: false,
                    },
                    balance: BalanceArgs {
                        balance: setting,
                        balance_targets: None,
                        noise_sigma: None,
                        scale: template.scale,
                        class_weights: template.class_weights,
                    },
                    model: model_spec,
                    teacher,
                    train: template.train.clone(),
                };
                spec.validate().with_context(|| format!("cell {name}"))?;
                cells.push(Cell {
                    index: cells.len(),
                    name,
                    setting,
                    model: model.clone(),
                    fold,
                    spec,
                    depends_on,
                });
            }
        }
    }
    Ok(cells)
}

fn for_fold(p: &Path, fold: usize) -> PathBuf {
    PathBuf::from(p.to_string_lossy().replace("{fold}", &fold.to_string()))
}

/// What a finished cell wrote into its `cell.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// `<setting>-<model>-f<fold>`.
    pub name: String,
    /// Position in the cell order.
    pub index: usize,
    /// Balancing setting (`S1`..`S5`).
    pub setting: String,
    /// Model column (`student`, `teacher`, `kd-teacher`, ...).
    pub model: String,
    /// Validation fold.
    pub fold: usize,
    /// What the cell trained.
    pub spec: RunSpec,
    /// Training steps of the whole run.
    pub total_steps: u64,
    /// When the cell's last process resumed a killed run: the step it continued from.
    pub resumed_from_step: Option<u64>,
    /// Per-epoch history.
    pub epochs: Vec<EpochRecord>,
    /// Best epoch (0-based).
    pub best_epoch: Option<u64>,
    /// The best epoch's validation metrics: accuracy, balanced accuracy, per-class recall,
    /// per-group accuracy and confusion matrices, SPD and fairness.
    pub val: Option<Evaluation>,
    /// Seconds of the last process's part of the training.
    pub seconds: f64,
    /// The trained model file.
    pub model_file: String,
}

/// Reads the record of a finished cell, `None` when it has none yet.
pub fn read_cell(dir: &Path) -> Result<Option<CellRecord>> {
    let path = dir.join(CELL_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a cell record", path.display()))
            .map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// How the cells of one process run.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// libtorch threads per cell.
    pub threads: Option<i32>,
    /// Show progress.
    pub progress: bool,
    /// How often to look again at a teacher cell another process is training.
    pub poll: Duration,
}

/// What happened to one cell in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellStatus {
    /// Trained here (possibly resuming a killed run).
    Trained {
        /// The step it resumed from.
        resumed_from_step: Option<u64>,
    },
    /// Already finished: left alone.
    Done,
    /// Another process holds its lock: left to it.
    Busy,
}

/// Runs this shard's cells of `cells` into experiment folder `dir`, in order; returns each
/// taken cell's name and status.
pub fn run_grid(
    dir: &Path,
    cells: &[Cell],
    shard: Shard,
    opts: &RunnerOptions,
) -> Result<Vec<(String, CellStatus)>> {
    let mut out = Vec::new();
    for cell in cells.iter().filter(|c| shard.takes(c.index)) {
        let status = run_cell(dir, cells, cell, opts)?;
        eprintln!("cell {} ({}): {status:?}", cell.name, cell.index);
        out.push((cell.name.clone(), status));
    }
    Ok(out)
}

/// Trains `cell` unless it is finished or another process holds it.
fn run_cell(dir: &Path, cells: &[Cell], cell: &Cell, opts: &RunnerOptions) -> Result<CellStatus> {
    let cdir = cell_dir(dir, &cell.name);
    if read_cell(&cdir)?.is_some() {
        return Ok(CellStatus::Done);
    }
    std::fs::create_dir_all(&cdir).with_context(|| format!("creating {}", cdir.display()))?;
    let Some(_lock) = CellLock::try_acquire(&cdir.join(LOCK_FILE))? else {
        return Ok(CellStatus::Busy);
    };
    // Another process may have finished it between the first look and the lock.
    if read_cell(&cdir)?.is_some() {
        return Ok(CellStatus::Done);
    }
    if let Some(dep) = &cell.depends_on {
        let d = cells.iter().find(|c| &c.name == dep).with_context(|| {
            format!(
                "cell {} needs cell {dep}, which is not in the grid",
                cell.name
            )
        })?;
        wait_for(dir, cells, d, opts)?;
    }
    let ctx = RunContext {
        out: cdir.clone(),
        resume: true,
        threads: opts.threads,
        progress: opts.progress,
        label: cell.name.clone(),
    };
    let outcome = run::execute(&cell.spec, &ctx).with_context(|| format!("cell {}", cell.name))?;
    let r = &outcome.report;
    let record = CellRecord {
        name: cell.name.clone(),
        index: cell.index,
        setting: cell.setting.to_string(),
        model: cell.model.name(),
        fold: cell.fold,
        spec: cell.spec.clone(),
        total_steps: r.epochs.iter().map(|e| e.steps).sum(),
        resumed_from_step: outcome.resumed_from_step,
        epochs: r.epochs.clone(),
        best_epoch: r.best_epoch,
        val: r.best.as_ref().map(|b| b.val.clone()),
        seconds: r.seconds,
        model_file: outcome.model_file.display().to_string(),
    };
    // Written last and atomically: its presence is what "finished" means.
    crate::report::write_json(&cdir.join(CELL_FILE), &record)?;
    Ok(CellStatus::Trained {
        resumed_from_step: outcome.resumed_from_step,
    })
}

/// Returns once cell `dep` is finished: trains it here when no process holds it (its result
/// does not depend on who trains it), otherwise waits for the process that does.
fn wait_for(dir: &Path, cells: &[Cell], dep: &Cell, opts: &RunnerOptions) -> Result<()> {
    let mut said = false;
    loop {
        match run_cell(dir, cells, dep, opts)? {
            CellStatus::Done | CellStatus::Trained { .. } => return Ok(()),
            CellStatus::Busy => {
                if !said {
                    eprintln!("cell {}: another process is training it; waiting", dep.name);
                    said = true;
                }
                std::thread::sleep(opts.poll);
            }
        }
    }
}
