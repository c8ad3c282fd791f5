//! The run spec: everything that decides what one training run computes (data, fold,
//! balancing, model, teacher, loop options), as one serializable value. `student`, `teacher`,
//! `distill` and every cell of `experiment` build one and hand it to
//! [`execute`](super::run::execute); it is written into each report under `spec`, so a
//! report says exactly how to reproduce it.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::cli::{KdArgs, TrainArgs};
use super::loss::KdConfig;
use crate::args::{BalanceArgs, DataArgs};
use crate::models::mobilenet_v3::{Arch, Head};

/// One training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Cache, fold and subset.
    pub data: DataArgs,
    /// Balancing preset and class weights.
    pub balance: BalanceArgs,
    /// The network trained.
    pub model: ModelSpec,
    /// The distillation teacher (`None`: plain supervised training).
    pub teacher: Option<KdSpec>,
    /// Loop options.
    pub train: TrainArgs,
}

impl RunSpec {
    /// `teacher`, `student` or `distill`: the command this spec corresponds to, used as the
    /// report's role and the progress label.
    pub fn role(&self) -> &'static str {
        match (&self.model, &self.teacher) {
            (ModelSpec::Teacher(_), _) => "teacher",
            (ModelSpec::Student(_), None) => "student",
            (ModelSpec::Student(_), Some(_)) => "distill",
        }
    }

    /// Rejects combinations no command can run (a Swin teacher distilled from another
    /// teacher), before anything is loaded.
    pub fn validate(&self) -> Result<()> {
        if let (ModelSpec::Teacher(_), Some(_)) = (&self.model, &self.teacher) {
            bail!("only a student can be distilled: the teacher model takes no teacher");
        }
        if let ModelSpec::Teacher(t) = &self.model
            && t.arch != "swin_v2_t"
        {
            bail!("--arch {:?}: the teacher is swin_v2_t", t.arch);
        }
        if let Some(kd) = &self.teacher {
            kd.config().validate()?;
        }
        Ok(())
    }
}

/// Which network a run trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelSpec {
    /// A MobileNetV3 student.
    Student(StudentModelArgs),
    /// The Swin V2-T teacher.
    Teacher(TeacherModelArgs),
}

/// The student's own flags.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BnInit {
    /// Statistics re-estimated, gamma and beta unchanged (every channel normalized).
    Reset,
    /// Statistics re-estimated and gamma/beta rescaled to keep the pretrained function.
    Preserve,
}

/// The teacher's own flags.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct TeacherModelArgs {
    /// Teacher architecture (only swin_v2_t).
    #[arg(long, default_value = "swin_v2_t")]
    pub arch: String,
    /// A torchvision swin_v2_t state dict (safetensors) to start from; `head.*` is skipped.
    #[arg(long)]
    pub init_weights: Option<PathBuf>,
}

/// Where distillation targets come from, and the loss's knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KdSpec {
    /// The teacher.
    pub source: TeacherSource,
    /// Alpha and temperature.
    pub kd: KdArgs,
}

impl KdSpec {
    /// The loss configuration.
    pub fn config(&self) -> KdConfig {
        self.kd.config()
    }
}

/// A teacher for distillation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherSource {
    /// A teacher file (`teacher.safetensors` of a `teacher` run), run on every batch.
    File(PathBuf),
    /// Logits computed once per image by `teacher-logits`.
    Logits(PathBuf),
}
