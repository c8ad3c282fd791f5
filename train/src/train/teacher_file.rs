//! The teacher weight file: a Swin V2 state dict under torchvision's names (so it also loads
//! into `torchvision.models.swin_v2_t(num_classes=C)`) with a JSON description in the
//! safetensors `__metadata__` under [`METADATA_KEY`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use derm_codegen::ir::Crop;
use serde::{Deserialize, Serialize};
use tch::{Device, nn};

use super::checkpoint;
use crate::models::swin_v2::{SwinV2, SwinV2Config};

/// The `__metadata__` key of the [`TeacherMeta`] JSON.
pub const METADATA_KEY: &str = "derm.teacher";
/// Value of [`TeacherMeta::format`].
pub const FORMAT: &str = "derm-teacher";
/// The version this code writes and reads.
pub const VERSION: u32 = 1;

/// Everything about a teacher except its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherMeta {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// Architecture name (`swin_v2_t`).
    pub arch: String,
    /// Class names in logit order.
    pub class_names: Vec<String>,
    /// Group names of the data it was trained on.
    pub group_names: Vec<String>,
    /// Input side it was trained at.
    pub input_size: usize,
    /// Per-channel mean of `[0, 1]` pixels its inputs were normalized with.
    pub mean: [f32; 3],
    /// Per-channel std of the same.
    pub std: [f32; 3],
    /// Which part of a photo its training tiles held (files written before the field existed:
    /// centred squares).
    #[serde(default = "default_crop")]
    pub crop: Crop,
    /// The command that trained it.
    pub command: String,
    /// Source revision.
    pub git_commit: String,
    /// Validation metrics of the saved epoch.
    pub metrics: BTreeMap<String, f64>,
}

fn default_crop() -> Crop {
    Crop::Centre
}

impl TeacherMeta {
    /// The network configuration.
    pub fn config(&self) -> Result<SwinV2Config> {
        match self.arch.as_str() {
            "swin_v2_t" => Ok(SwinV2Config::swin_v2_t(self.class_names.len() as i64)),
            a => bail!("unknown teacher architecture {a:?} (this build knows swin_v2_t)"),
        }
    }
}

/// Writes the variables of `vs` and `meta` to `path` atomically.
pub fn save(path: &Path, vs: &nn::VarStore, meta: &TeacherMeta) -> Result<()> {
    let mut tensors: Vec<_> = vs.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut m = HashMap::new();
    m.insert(METADATA_KEY.to_owned(), serde_json::to_string(meta)?);
    let bytes = checkpoint::to_safetensors_bytes(&tensors, m)?;
    checkpoint::write_atomic(path, &bytes)
        .with_context(|| format!("saving teacher {}", path.display()))
}

/// Reads a teacher: its metadata and a network holding its weights.
pub fn load(path: &Path) -> Result<(TeacherMeta, nn::VarStore, SwinV2)> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read teacher {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
    let text = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .with_context(|| {
            format!(
                "{}: no {METADATA_KEY} metadata (not a derm-train teacher file)",
                path.display()
            )
        })?;
    let meta: TeacherMeta = serde_json::from_str(text)
        .with_context(|| format!("{}: bad {METADATA_KEY} metadata", path.display()))?;
    ensure!(
        meta.format == FORMAT && meta.version == VERSION,
        "{}: format {:?} v{}, expected {FORMAT:?} v{VERSION}",
        path.display(),
        meta.format,
        meta.version
    );
    let vs = nn::VarStore::new(Device::Cpu);
    let net = SwinV2::new(&vs.root(), meta.config()?)?;
    super::fit::load_weights(path, &vs)?;
    Ok((meta, vs, net))
}

/// The `__metadata__` key of a teacher-logits file.
pub const LOGITS_METADATA_KEY: &str = "derm.teacher_logits";

/// Description of a teacher-logits file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitsMeta {
    /// The teacher file the logits came from.
    pub teacher: String,
    /// The cache folder (row `i` = cache sample `i`).
    pub cache: String,
    /// Samples in the cache.
    pub samples: usize,
    /// Samples whose logits were computed (the others are zero rows, marked absent).
    #[serde(default)]
    pub computed: usize,
    /// Image side the teacher saw.
    pub input_size: usize,
    /// Seconds it took.
    pub seconds: f64,
}

/// Writes `[N, C]` logits, one row per cache sample, and `present` (`[N]` u8: 1 where the
/// row was computed).
pub fn save_logits(
    path: &Path,
    logits: &tch::Tensor,
    present: &[bool],
    meta: &LogitsMeta,
) -> Result<()> {
    let mut m = HashMap::new();
    m.insert(LOGITS_METADATA_KEY.to_owned(), serde_json::to_string(meta)?);
    let p: Vec<u8> = present.iter().map(|&b| b as u8).collect();
    let tensors = [
        ("logits".to_owned(), logits.shallow_clone()),
        ("present".to_owned(), tch::Tensor::from_slice(&p)),
    ];
    let bytes = checkpoint::to_safetensors_bytes(&tensors, m)?;
    checkpoint::write_atomic(path, &bytes).with_context(|| format!("saving {}", path.display()))
}

/// Reads a teacher-logits file for a cache of `samples` samples and `classes` classes.
pub fn load_logits(
    path: &Path,
    samples: usize,
    classes: usize,
) -> Result<(LogitsMeta, super::fit::TeacherLogits)> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read teacher logits {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
    let meta: LogitsMeta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(LOGITS_METADATA_KEY))
        .with_context(|| format!("{}: no {LOGITS_METADATA_KEY} metadata", path.display()))
        .and_then(|t| {
            serde_json::from_str(t).with_context(|| format!("{}: bad metadata", path.display()))
        })?;
    let v = st
        .tensor("logits")
        .map_err(|_| anyhow::anyhow!("{}: no tensor \"logits\"", path.display()))?;
    ensure!(
        v.dtype() == safetensors::Dtype::F32,
        "{}: logits must be f32, found {:?}",
        path.display(),
        v.dtype()
    );
    ensure!(
        v.shape() == [samples, classes],
        "{}: logits have shape {:?}, this cache needs [{samples}, {classes}]",
        path.display(),
        v.shape()
    );
    let t = tch::Tensor::f_from_data_size(
        v.data(),
        &[samples as i64, classes as i64],
        tch::Kind::Float,
    )?;
    let present = match st.tensor("present") {
        Ok(p) => {
            ensure!(
                p.dtype() == safetensors::Dtype::U8 && p.shape() == [samples],
                "{}: \"present\" must be u8 [{samples}], found {:?} {:?}",
                path.display(),
                p.dtype(),
                p.shape()
            );
            p.data().iter().map(|&b| b != 0).collect()
        }
        Err(_) => vec![true; samples],
    };
    Ok((meta, super::fit::TeacherLogits { logits: t, present }))
}
