//! `derm-train import`: a MobileNetV3 trained elsewhere (a torchvision `state_dict` in
//! safetensors, e.g. from `scripts/oof_teachers.py train --save-weights` on a GPU) becomes a
//! student file that `evaluate`, `export`, `quantize` and `qat` take like any trained here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cmd::export::{command_line, git_commit};
use crate::data::cache::Cache;
use crate::models::mobilenet_v3::{self, Arch, Head};
use crate::student_file::{Provenance, Student, StudentMeta};

/// Metadata key the GPU script stores its training settings under.
pub const TORCHVISION_STUDENT_KEY: &str = "derm.torchvision_student";

/// Arguments of `derm-train import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The trained network: a torchvision MobileNetV3 `state_dict` (safetensors, f32, with
    /// the BatchNorm statistics). Every tensor of the student must be in it, and nothing else.
    pub weights: PathBuf,
    /// The prepared cache it was trained on: the class and group names (in logit order) come
    /// from its index.
    #[arg(long)]
    pub cache: PathBuf,
    /// MobileNetV3 size: small or large.
    #[arg(long, default_value = "small")]
    pub arch: Arch,
    /// Classifier head: torchvision (Linear-Hardswish-Dropout-Linear, what torchvision's
    /// model has) or paper (one Linear).
    #[arg(long, default_value = "torchvision")]
    pub head: Head,
    /// Input side it was trained at (default: `size` in the file's training metadata).
    #[arg(long)]
    pub input_size: Option<u32>,
    /// Per-channel RGB mean on the 0..1 scale it was trained with.
    #[arg(long, num_args = 3, default_values_t = [0.5f32, 0.5, 0.5])]
    pub mean: Vec<f32>,
    /// Per-channel RGB standard deviation it was trained with.
    #[arg(long, num_args = 3, default_values_t = [0.5f32, 0.5, 0.5])]
    pub std: Vec<f32>,
    /// Free-form note stored in the provenance (the file's training metadata is added).
    #[arg(long, default_value = "")]
    pub notes: String,
    /// Output student file.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// The `derm.torchvision_student` metadata of the safetensors file `bytes` read from `path`,
/// if any (a JSON object as text).
pub fn training_metadata(bytes: &[u8], path: &Path) -> Result<Option<serde_json::Value>> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
    let Some(text) = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(TORCHVISION_STUDENT_KEY))
    else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_str(text).with_context(|| {
        format!(
            "{}: metadata {TORCHVISION_STUDENT_KEY} is not JSON",
            path.display()
        )
    })?;
    Ok(Some(v))
}

/// Builds the student file; returns its metadata.
pub fn import(a: &ImportArgs) -> Result<StudentMeta> {
    let cache = Cache::open(&a.cache)?;
    // Read once: the metadata and the tensors come from the same bytes.
    let bytes = std::fs::read(&a.weights)
        .with_context(|| format!("cannot read weights {}", a.weights.display()))?;
    let trained = training_metadata(&bytes, &a.weights)?;
    let size = match (a.input_size, trained.as_ref().and_then(|t| t.get("size"))) {
        (Some(s), _) => s,
        (None, Some(v)) => v
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .with_context(|| format!("{}: training size {v} is not a side", a.weights.display()))?,
        (None, None) => bail!(
            "{} records no training size: give --input-size",
            a.weights.display()
        ),
    };
    let three = |v: &[f32], what: &str| -> Result<[f32; 3]> {
        <[f32; 3]>::try_from(v).map_err(|_| anyhow::anyhow!("--{what} needs 3 values, got {v:?}"))
    };
    let mut notes = a.notes.clone();
    if let Some(t) = &trained {
        if !notes.is_empty() {
            notes.push_str("; ");
        }
        notes.push_str(&format!("trained elsewhere: {t}"));
    }
    let provenance = Provenance {
        trained: true,
        command: command_line(),
        dataset: cache.index().source.clone(),
        git_commit: git_commit(),
        seed: trained
            .as_ref()
            .and_then(|t| t.get("seed"))
            .and_then(|s| s.as_i64()),
        init_weights: Some(a.weights.display().to_string()),
        metrics: BTreeMap::new(),
        notes,
    };
    let mut meta = StudentMeta::new(a.arch, a.head, cache.class_names().to_vec(), provenance);
    meta.group_names = cache.group_names().to_vec();
    meta.input_size = [size, size];
    meta.mean = three(&a.mean, "mean")?;
    meta.std = three(&a.std, "std")?;
    meta.crop = cache.crop();
    // The seed only fills tensors the strict load below then overwrites, every one of them.
    let mut s = Student::seeded(meta, 0)?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid safetensors file: {e}",
            a.weights.display()
        )
    })?;
    mobilenet_v3::load_tensors(&mut s.vs, &st, &[], &a.weights.display().to_string())
        .with_context(|| {
            format!(
                "{} does not match a mobilenet_v3_{} with the {} head and {} classes (the cache's)",
                a.weights.display(),
                a.arch,
                a.head,
                cache.class_names().len()
            )
        })?;
    s.save(&a.output)?;
    Ok(s.meta)
}

/// `derm-train import`.
pub fn run(a: ImportArgs) -> Result<()> {
    let meta = import(&a)?;
    println!(
        "wrote {} (mobilenet_v3_{}, {} head, {} classes, {}x{} input)",
        a.output.display(),
        meta.arch,
        meta.head,
        meta.num_classes,
        meta.input_size[0],
        meta.input_size[1]
    );
    Ok(())
}
