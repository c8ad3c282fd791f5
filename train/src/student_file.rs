//! The student weight file: what training writes and `derm-train export` reads.
//!
//! One `.safetensors` file holding the whole MobileNetV3 VarStore under torchvision's
//! names (conv weights, BatchNorm weight/bias/running statistics and
//! `num_batches_tracked`, classifier), so it also loads into PyTorch with
//! `model.load_state_dict(..., strict=True)`. Its `__metadata__` has one key,
//! [`METADATA_KEY`], whose value is the JSON of [`StudentMeta`]: architecture, head, classes,
//! groups, input size, normalization and provenance.
//!
//! This is a training checkpoint, not the deployable model file: BatchNorm is unfolded and
//! the graph is implicit in the architecture name. `derm-train export` turns it into the
//! model file that `derm-codegen` reads.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail};
use derm_codegen::ir::Crop;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use crate::models::mobilenet_v3::{
    self, Arch, DEFAULT_DROPOUT, Head, MobileNetV3, MobileNetV3Config,
};

/// The `__metadata__` key holding the [`StudentMeta`] JSON.
pub const METADATA_KEY: &str = "derm.student";
/// Value of [`StudentMeta::format`].
pub const FORMAT: &str = "derm-student";
/// The version this code writes and reads.
pub const VERSION: u32 = 1;

/// The class order of the ESFair / HAM10000 task, as the model's logits are ordered.
pub const DEFAULT_CLASSES: [&str; 6] = ["BCC", "BKL", "MEL", "NV", "unknown", "VASC"];

/// Where a student came from. Free-form strings; empty when unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Whether the weights were trained at all (false: seeded initialization only).
    pub trained: bool,
    /// The command line that produced the file.
    pub command: String,
    /// The data it was trained on (a path or a name).
    #[serde(default)]
    pub dataset: String,
    /// `git rev-parse HEAD` of the tree that produced it, if known.
    #[serde(default)]
    pub git_commit: String,
    /// Seed of the initialization, if the file was created from one.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Weights the initialization was loaded from (e.g. an ImageNet state dict), if any.
    #[serde(default)]
    pub init_weights: Option<String>,
    /// Validation metrics by name (e.g. `balanced_accuracy`).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Anything a reader should know (e.g. why the normalization is what it is).
    #[serde(default)]
    pub notes: String,
}

/// Everything about a student except its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentMeta {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] for files this code writes.
    pub version: u32,
    /// MobileNetV3 Small or Large.
    pub arch: Arch,
    /// Paper or torchvision classifier.
    pub head: Head,
    /// Number of classes; equals `class_names.len()`.
    pub num_classes: i64,
    /// Class names in logit order.
    pub class_names: Vec<String>,
    /// Names of the fairness groups (e.g. skin-tone groups) the student was evaluated on.
    #[serde(default)]
    pub group_names: Vec<String>,
    /// Network input `[height, width]`.
    pub input_size: [u32; 2],
    /// Per-channel (RGB) mean subtracted from pixels scaled to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel (RGB) divisor applied after the mean.
    pub std: [f32; 3],
    /// Which part of a photo the network was trained on (the cache's tiles): the centred
    /// square, or the whole photo squashed. Files written before the field existed were
    /// trained on centred squares.
    #[serde(default = "default_crop")]
    pub crop: Crop,
    /// Dropout of the torchvision head during training.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Where the weights came from.
    pub provenance: Provenance,
}

fn default_crop() -> Crop {
    Crop::Centre
}

fn default_dropout() -> f64 {
    DEFAULT_DROPOUT
}

impl StudentMeta {
    /// Metadata for a student with the given classes, 224x224 input and mean = std = 0.5
    /// (inputs scaled to [-1, 1]); callers then adjust fields.
    pub fn new(arch: Arch, head: Head, class_names: Vec<String>, provenance: Provenance) -> Self {
        Self {
            format: FORMAT.to_owned(),
            version: VERSION,
            arch,
            head,
            num_classes: class_names.len() as i64,
            class_names,
            group_names: Vec::new(),
            input_size: [224, 224],
            mean: [0.5; 3],
            std: [0.5; 3],
            crop: Crop::Centre,
            dropout: DEFAULT_DROPOUT,
            provenance,
        }
    }

    /// The network configuration this metadata describes.
    pub fn config(&self) -> MobileNetV3Config {
        MobileNetV3Config {
            arch: self.arch,
            head: self.head,
            num_classes: self.num_classes,
            dropout: self.dropout,
        }
    }

    /// Checks internal consistency; the error names the bad field and value.
    pub fn validate(&self) -> Result<()> {
        if self.format != FORMAT {
            bail!("format is {:?}, expected {FORMAT:?}", self.format);
        }
        if self.version != VERSION {
            bail!(
                "student file version {} is not supported (this build reads {VERSION})",
                self.version
            );
        }
        if self.num_classes < 1 || self.num_classes as usize != self.class_names.len() {
            bail!(
                "num_classes is {} but class_names has {} entries",
                self.num_classes,
                self.class_names.len()
            );
        }
        if let Some(n) = self.class_names.iter().find(|n| n.is_empty()) {
            bail!("class_names contains an empty name ({n:?})");
        }
        if self.input_size.contains(&0) || self.input_size.iter().any(|&d| d > 4096) {
            bail!("input_size {:?} is outside 1..=4096", self.input_size);
        }
        if let Some(s) = self.std.iter().find(|s| !s.is_finite() || **s <= 0.0) {
            bail!(
                "std {:?} has a non-positive or non-finite entry {s}",
                self.std
            );
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            bail!("mean {:?} has a non-finite entry", self.mean);
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("dropout {} is outside [0, 1)", self.dropout);
        }
        Ok(())
    }
}

/// A loaded student: metadata, its VarStore and the network over it.
#[derive(Debug)]
pub struct Student {
    /// The file's metadata.
    pub meta: StudentMeta,
    /// Every tensor of the file.
    pub vs: nn::VarStore,
    /// The network reading `vs`.
    pub model: MobileNetV3,
}

impl Student {
    /// A fresh student for `meta`, initialized from `seed` as torchvision initializes
    /// MobileNetV3.
    pub fn seeded(meta: StudentMeta, seed: i64) -> Result<Self> {
        meta.validate()?;
        let (vs, model) = mobilenet_v3::seeded(meta.config(), seed)?;
        Ok(Self { meta, vs, model })
    }

    /// Writes the student to `path` (see [`save`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        save(path, &self.vs, &self.meta)
    }
}

/// Writes every variable of `vs` (f32 parameters and statistics, int64
/// `num_batches_tracked`) and `meta` to `path`. The file is written next to `path` and
/// renamed into place, so an interrupted save never leaves a truncated checkpoint.
pub fn save(path: &Path, vs: &nn::VarStore, meta: &StudentMeta) -> Result<()> {
    meta.validate()
        .with_context(|| format!("refusing to write {}", path.display()))?;
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut owned = Vec::with_capacity(vars.len());
    for (name, t) in &vars {
        let t = t.to_device(tch::Device::Cpu).contiguous();
        let (dtype, elem) = match t.kind() {
            Kind::Float => (safetensors::Dtype::F32, 4),
            Kind::Int64 => (safetensors::Dtype::I64, 8),
            k => bail!("variable {name} has kind {k:?}; the student file holds f32 and i64"),
        };
        let numel = t.numel();
        let mut data = vec![0u8; numel * elem];
        t.copy_data_u8(&mut data, numel);
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        owned.push((name.clone(), dtype, shape, data));
    }
    let views = owned
        .iter()
        .map(|(n, dt, shape, data)| {
            safetensors::tensor::TensorView::new(*dt, shape.clone(), data)
                .map(|v| (n.as_str(), v))
                .map_err(|e| anyhow::anyhow!("tensor {n}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let info = HashMap::from([(METADATA_KEY.to_owned(), serde_json::to_string(meta)?)]);
    let tmp = path.with_extension("safetensors.partial");
    let bytes = safetensors::serialize(views, Some(info))
        .map_err(|e| anyhow::anyhow!("cannot serialize {}: {e}", path.display()))?;
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Reads only the metadata of a student file.
pub fn read_meta(path: &Path) -> Result<StudentMeta> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    meta_from_bytes(&bytes, path)
}

fn meta_from_bytes(bytes: &[u8], path: &Path) -> Result<StudentMeta> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a safetensors file: {e}", path.display()))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .with_context(|| {
            format!(
                "{} has no {METADATA_KEY:?} metadata: not a student file (a torchvision state \
                 dict? use init-student --init-weights)",
                path.display()
            )
        })?;
    let meta: StudentMeta = serde_json::from_str(json)
        .with_context(|| format!("{}: bad {METADATA_KEY:?} metadata", path.display()))?;
    meta.validate()
        .with_context(|| format!("{}: bad student metadata", path.display()))?;
    Ok(meta)
}

/// Reads a student file: metadata, then every tensor by name (strict: missing, extra and
/// mis-shaped tensors are all listed in the error).
pub fn load(path: &Path) -> Result<Student> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let meta = meta_from_bytes(&bytes, path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a safetensors file: {e}", path.display()))?;
    let mut vs = nn::VarStore::new(tch::Device::Cpu);
    let model = MobileNetV3::new(&vs.root(), meta.config())?;
    mobilenet_v3::load_tensors(&mut vs, &st, &[], &path.display().to_string())?;
    Ok(Student { meta, vs, model })
}
