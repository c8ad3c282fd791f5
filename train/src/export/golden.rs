//! Golden vectors: the fixed inputs and the outputs an exported model file must reproduce.
//!
//! [`golden`] checks the BatchNorm fold against the student while computing the f32
//! goldens; [`golden_stored`] and [`golden_int8`] recompute them for f16 and int8 files,
//! whose stored weights are what the runtime actually computes from. [`Golden::write`]
//! writes them beside the model file ([`golden_path`]).

use std::path::Path;

use anyhow::{Context, Result, bail};
use derm_codegen::ir::ModelFile;
use tch::{Kind, Tensor};

use super::TchGraph;
use crate::student_file::Student;

/// Prefix of the per-layer tensors in the golden file.
pub const LAYER_PREFIX: &str = "layer.";

/// Golden vectors for one model file.
#[derive(Debug)]
pub struct Golden {
    /// Preprocessed inputs `[N, 3, H, W]`.
    pub input: Tensor,
    /// The logits `[N, C]` the stored model must produce: the student's (tch, eval, no
    /// grad) for an f32 export, the folded graph's on the widened weights otherwise.
    pub logits: Tensor,
    /// Every op's output from the folded graph (with the stored weights), in execution order.
    pub layers: Vec<(String, Tensor)>,
}

impl Golden {
    /// Writes `input`, `logits` and `layer.<op name>` tensors (f32) to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, &Tensor)> = vec![
            ("input".to_owned(), &self.input),
            ("logits".to_owned(), &self.logits),
        ];
        for (name, t) in &self.layers {
            named.push((format!("{LAYER_PREFIX}{name}"), t));
        }
        let owned: Vec<(String, Vec<usize>, Vec<u8>)> = named
            .into_iter()
            .map(|(n, t)| {
                let t = t.to_kind(Kind::Float).contiguous();
                let numel = t.numel();
                let mut data = vec![0u8; numel * 4];
                t.copy_data_u8(&mut data, numel);
                let shape = t.size().iter().map(|&d| d as usize).collect();
                (n, shape, data)
            })
            .collect();
        let views = owned
            .iter()
            .map(|(n, shape, data)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .map(|v| (n.as_str(), v))
                    .map_err(|e| anyhow::anyhow!("golden tensor {n}: {e}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = safetensors::serialize(views, None)
            .map_err(|e| anyhow::anyhow!("cannot serialize {}: {e}", path.display()))?;
        std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The golden file's name beside a model file: `x.safetensors` -> `x.golden.safetensors`.
pub fn golden_path(model: &Path) -> std::path::PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    model.with_file_name(format!("{stem}.golden.safetensors"))
}

/// `n` fixed inputs `[n, 3, H, W]`: uniform pixels in [0, 1] from `seed`, normalized with
/// the student's mean/std, i.e. what preprocessing of a random photo produces.
pub fn golden_inputs(student: &Student, n: i64, seed: i64) -> Tensor {
    let [h, w] = student.meta.input_size.map(i64::from);
    tch::manual_seed(seed);
    let px = Tensor::rand([n, 3, h, w], (Kind::Float, tch::Device::Cpu));
    let mean = Tensor::from_slice(&student.meta.mean).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&student.meta.std).view([1, 3, 1, 1]);
    (px - mean) / std
}

/// Largest |a - b| over the batch, divided by the smallest per-sample logit range of `b`.
pub fn relative_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    let diff = f64::try_from((a - b).abs().max())?;
    let range = b.amax([1i64].as_slice(), false) - b.amin([1i64].as_slice(), false);
    let range = f64::try_from(range.min())?;
    Ok(diff / range.max(f64::MIN_POSITIVE))
}

/// Golden vectors for `model` (the export of `student`): `n` inputs from `seed`, the
/// student's eval logits and every folded layer's output. Fails if the folded graph's logits
/// are further than 1e-4 of the logit range from the student's (the folding is wrong).
pub fn golden(student: &Student, model: &ModelFile, n: i64, seed: i64) -> Result<Golden> {
    let input = golden_inputs(student, n, seed);
    let logits = tch::no_grad(|| student.model.forward_t(&input, false));
    let layers = TchGraph::new(model)?.layers(&input)?;
    let folded = &layers.last().context("the graph has no ops")?.1;
    let err = relative_error(folded, &logits)?;
    if !err.is_finite() || err > 1e-4 {
        bail!(
            "the exported graph disagrees with the student: max |diff| is {err:.2e} of the \
             logit range (limit 1e-4)"
        );
    }
    Ok(Golden {
        input,
        logits,
        layers,
    })
}

/// Golden vectors of `stored`, the export of `folded` in a narrower precision: per-layer
/// outputs and logits recomputed in tch from its widened weights, because those, not the
/// student's, are what the runtime computes from the file. `folded` is the f32 golden of
/// the same inputs ([`golden`], which checked the fold).
pub fn golden_stored(folded: &Golden, stored: &ModelFile) -> Result<Golden> {
    let layers = TchGraph::new(stored)?.layers(&folded.input)?;
    let logits = layers
        .last()
        .context("the graph has no ops")?
        .1
        .shallow_clone();
    Ok(Golden {
        input: folded.input.shallow_clone(),
        logits,
        layers,
    })
}

/// Golden vectors of the int8 model `stored`: `folded`'s inputs and the int8 reference
/// interpreter's logits (the values every int8 kernel must reproduce exactly). The
/// per-layer outputs are left out.
pub fn golden_int8(folded: &Golden, stored: &ModelFile) -> Result<Golden> {
    let net = crate::infer::ModelFileNet::new(stored.clone())?;
    let logits = net.logits(&folded.input)?;
    Ok(Golden {
        input: folded.input.shallow_clone(),
        logits,
        layers: Vec::new(),
    })
}
