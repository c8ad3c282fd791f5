//! Training checkpoints: one safetensors file with every model variable (parameters and
//! buffers such as BatchNorm statistics), the optimizer's state and, in the `__metadata__`
//! under [`METADATA_KEY`], the loop's own state as JSON (step, sampler position, seed,
//! best-so-far metric, history).
//!
//! Writes are atomic: the bytes go to a temporary file in the same folder, which is fsynced
//! and then renamed over the target (and the folder fsynced), so a process killed at any
//! moment leaves either the previous checkpoint or the new one, never a torn file.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use safetensors::tensor::{Dtype, TensorView};
use serde::{Serialize, de::DeserializeOwned};
use tch::{Kind, Tensor, nn};

use super::ema::Ema;
use super::optim::Optimizer;

/// The `__metadata__` key of the loop state.
pub const METADATA_KEY: &str = "derm.checkpoint";
/// The `__metadata__` key of the format tag.
pub const FORMAT_KEY: &str = "format";
/// Value stored under [`FORMAT_KEY`].
pub const FORMAT: &str = "derm-train-checkpoint/1";
/// Prefix of model variables in the tensor names.
pub const MODEL_PREFIX: &str = "model/";
/// Prefix of optimizer state in the tensor names.
pub const OPTIM_PREFIX: &str = "optim/";
/// Prefix of the weight average's tensors (`--ema`), when the run keeps one.
pub const EMA_PREFIX: &str = "ema/";

fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        k => bail!("cannot store a {k:?} tensor in a checkpoint"),
    })
}

fn kind_of(dtype: Dtype) -> Result<Kind> {
    Ok(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        d => bail!("unsupported checkpoint dtype {d:?}"),
    })
}

/// A tensor's raw bytes (CPU, contiguous, native = little-endian order on our targets).
fn tensor_bytes(t: &Tensor) -> Result<(Dtype, Vec<usize>, Vec<u8>)> {
    let t = t.detach().to_device(tch::Device::Cpu).contiguous();
    let dtype = dtype_of(t.kind())?;
    let numel = t.numel();
    let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut bytes, numel)?;
    let shape = t.size().iter().map(|&d| d as usize).collect();
    Ok((dtype, shape, bytes))
}

/// Serializes named tensors plus metadata to safetensors bytes.
pub fn to_safetensors_bytes(
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| tensor_bytes(t).map(|(d, s, b)| (n.clone(), d, s, b)))
        .collect::<Result<_>>()?;
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<_>>()?;
    Ok(safetensors::serialize(views, Some(metadata))?)
}

/// Writes `bytes` to `path` atomically: temporary file in the same folder, fsync, rename,
/// fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    // The rename itself must survive a power cut, not only the data.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Saves the model variables of `vs`, the optimizer's state and `state` to `path`.
pub fn save<T: Serialize>(
    path: &Path,
    vs: &nn::VarStore,
    opt: &Optimizer,
    state: &T,
) -> Result<()> {
    save_with_ema(path, vs, opt, state, None)
}

/// [`save`], plus the weight average of a run that keeps one.
pub fn save_with_ema<T: Serialize>(
    path: &Path,
    vs: &nn::VarStore,
    opt: &Optimizer,
    state: &T,
    ema: Option<&Ema>,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("{MODEL_PREFIX}{n}"), t))
        .collect();
    tensors.extend(
        opt.state_tensors()
            .into_iter()
            .map(|(n, t)| (format!("{OPTIM_PREFIX}{n}"), t)),
    );
    if let Some(e) = ema {
        tensors.extend(
            e.tensors()
                .into_iter()
                .map(|(n, t)| (format!("{EMA_PREFIX}{n}"), t)),
        );
    }
    let mut meta = HashMap::new();
    meta.insert(FORMAT_KEY.to_owned(), FORMAT.to_owned());
    meta.insert(METADATA_KEY.to_owned(), serde_json::to_string(state)?);
    meta.insert("optimizer_steps".to_owned(), opt.steps().to_string());
    let bytes = to_safetensors_bytes(&tensors, meta)?;
    write_atomic(path, &bytes).with_context(|| format!("saving checkpoint {}", path.display()))
}

/// An opened checkpoint file.
#[derive(Debug)]
pub struct CheckpointFile {
    path: std::path::PathBuf,
    bytes: Vec<u8>,
}

impl CheckpointFile {
    /// Reads `path` and checks the format tag.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes =
            fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
        let me = Self {
            path: path.to_owned(),
            bytes,
        };
        let format = me.metadata(FORMAT_KEY)?;
        ensure!(
            format == FORMAT,
            "{}: format {format:?}, expected {FORMAT:?}",
            path.display()
        );
        Ok(me)
    }

    fn st(&self) -> Result<safetensors::SafeTensors<'_>> {
        safetensors::SafeTensors::deserialize(&self.bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid safetensors file: {e}",
                self.path.display()
            )
        })
    }

    /// One `__metadata__` value.
    pub fn metadata(&self, key: &str) -> Result<String> {
        let (_, meta) = safetensors::SafeTensors::read_metadata(&self.bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid safetensors file: {e}",
                self.path.display()
            )
        })?;
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get(key).cloned())
            .with_context(|| {
                format!(
                    "{}: no {key:?} in its metadata (not a derm-train checkpoint?)",
                    self.path.display()
                )
            })
    }

    /// The loop state saved with the checkpoint.
    pub fn state<T: DeserializeOwned>(&self) -> Result<T> {
        let text = self.metadata(METADATA_KEY)?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: bad {METADATA_KEY} metadata", self.path.display()))
    }

    fn tensor(&self, name: &str) -> Result<Tensor> {
        let st = self.st()?;
        let v = st
            .tensor(name)
            .map_err(|_| anyhow::anyhow!("{}: no tensor {name:?}", self.path.display()))?;
        let kind = kind_of(v.dtype())?;
        let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
        Ok(Tensor::f_from_data_size(v.data(), &shape, kind)?)
    }

    /// Copies the saved model variables into `vs`. Every variable of `vs` must be in the file
    /// with the same shape and kind, and the file must hold no other model variable.
    pub fn load_model(&self, vs: &nn::VarStore) -> Result<()> {
        let st = self.st()?;
        let vars = vs.variables();
        let saved: Vec<&str> = st
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix(MODEL_PREFIX))
            .collect();
        let mut problems = Vec::new();
        let mut missing: Vec<&String> = vars
            .keys()
            .filter(|k| !saved.contains(&k.as_str()))
            .collect();
        missing.sort();
        if !missing.is_empty() {
            problems.push(format!("missing variables: {missing:?}"));
        }
        let mut extra: Vec<&&str> = saved.iter().filter(|k| !vars.contains_key(**k)).collect();
        extra.sort();
        if !extra.is_empty() {
            problems.push(format!("variables the model does not have: {extra:?}"));
        }
        if !problems.is_empty() {
            bail!(
                "{} does not match the model: {}",
                self.path.display(),
                problems.join("; ")
            );
        }
        tch::no_grad(|| -> Result<()> {
            for (name, var) in &vars {
                let t = self.tensor(&format!("{MODEL_PREFIX}{name}"))?;
                ensure!(
                    t.size() == var.size() && t.kind() == var.kind(),
                    "{}: {name} is {:?} {:?}, the model has {:?} {:?}",
                    self.path.display(),
                    t.kind(),
                    t.size(),
                    var.kind(),
                    var.size()
                );
                let mut var = var.shallow_clone();
                var.f_copy_(&t)?;
            }
            Ok(())
        })
    }

    /// Restores a weight average saved by [`save_with_ema`].
    pub fn load_ema(&self, ema: &mut Ema) -> Result<()> {
        ema.load(|n| self.tensor(&format!("{EMA_PREFIX}{n}")))
            .with_context(|| format!("restoring the weight average from {}", self.path.display()))
    }

    /// Restores the optimizer's state.
    pub fn load_optimizer(&self, opt: &mut Optimizer) -> Result<()> {
        let st = self.st()?;
        let names: Vec<String> = st
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix(OPTIM_PREFIX))
            .map(str::to_owned)
            .collect();
        let steps: u64 = self
            .metadata("optimizer_steps")?
            .parse()
            .with_context(|| format!("{}: bad optimizer_steps", self.path.display()))?;
        opt.load_state(
            &names,
            |n| self.tensor(&format!("{OPTIM_PREFIX}{n}")),
            steps,
        )
        .with_context(|| format!("restoring the optimizer from {}", self.path.display()))
    }
}
