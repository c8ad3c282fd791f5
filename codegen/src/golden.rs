//! Golden vectors: `<model>.golden.safetensors` beside a model file holds preprocessed
//! inputs (`input`, `[N, 3, H, W]` f32) and the logits the exporting framework computed for
//! them (`logits`, `[N, classes]` f32); see docs/model-format.md.
//!
//! ```
//! use derm_codegen::golden::Golden;
//! use std::path::Path;
//! assert_eq!(
//!     Golden::path_for(Path::new("models/default.safetensors")),
//!     Path::new("models/default.golden.safetensors")
//! );
//! ```

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

use crate::ir::{IrError, ModelFile};

/// A model's golden inputs and expected logits.
#[derive(Debug, Clone, PartialEq)]
pub struct Golden {
    /// `[N, 3, H, W]`.
    pub input_shape: [usize; 4],
    /// `N * 3 * H * W` values, sample after sample, each `CHW`.
    pub inputs: Vec<f32>,
    /// Classes per sample.
    pub num_classes: usize,
    /// `N * num_classes` values, sample after sample.
    pub logits: Vec<f32>,
}

fn bad(field: &str, reason: impl Into<String>) -> IrError {
    IrError::BadField {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

impl Golden {
    /// Where the golden vectors of `model` live: `x.safetensors` -> `x.golden.safetensors`
    /// (any other name gets `.golden.safetensors` appended).
    pub fn path_for(model: &Path) -> PathBuf {
        let name = model.file_name().map(|n| n.to_string_lossy().into_owned());
        let stem = name
            .as_deref()
            .map(|n| n.strip_suffix(".safetensors").unwrap_or(n))
            .unwrap_or("model");
        model.with_file_name(format!("{stem}.golden.safetensors"))
    }

    /// Reads the golden file at `path`; errors name the file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, IrError> {
        crate::ir::read_file(path.as_ref(), Self::from_bytes)
    }

    /// Parses golden vectors from safetensors bytes; never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IrError> {
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| IrError::Safetensors(e.to_string()))?;
        let (xs, inputs) = read_f32(&st, "input")?;
        let (ys, logits) = read_f32(&st, "logits")?;
        let input_shape: [usize; 4] = xs
            .as_slice()
            .try_into()
            .map_err(|_| bad("input", format!("shape {xs:?}, expected [N, 3, H, W]")))?;
        let &[n, num_classes] = ys.as_slice() else {
            return Err(bad(
                "logits",
                format!("shape {ys:?}, expected [N, classes]"),
            ));
        };
        if n != input_shape[0] {
            return Err(bad(
                "logits",
                format!("{n} samples, but input has {}", input_shape[0]),
            ));
        }
        Ok(Self {
            input_shape,
            inputs,
            num_classes,
            logits,
        })
    }

    /// Checks that the samples fit `model`: input `[N, 3, H, W]` of the model's input size
    /// and one logit per class.
    pub fn check(&self, model: &ModelFile) -> Result<(), IrError> {
        let [_, c, h, w] = self.input_shape;
        let [_, mc, mh, mw] = model.graph.input.shape;
        if [c, h, w] != [mc, mh, mw] {
            return Err(bad(
                "input",
                format!(
                    "golden samples are {:?}, the model takes [N, {mc}, {mh}, {mw}]",
                    self.input_shape
                ),
            ));
        }
        if self.num_classes != model.num_classes() {
            return Err(bad(
                "logits",
                format!(
                    "{} logits per sample, the model has {} classes",
                    self.num_classes,
                    model.num_classes()
                ),
            ));
        }
        Ok(())
    }

    /// Number of samples.
    pub fn samples(&self) -> usize {
        self.input_shape[0]
    }

    /// Iterates over (input, expected logits) per sample.
    pub fn iter(&self) -> impl Iterator<Item = (&[f32], &[f32])> {
        let n_in: usize = self.input_shape[1..].iter().product();
        self.inputs
            .chunks_exact(n_in.max(1))
            .zip(self.logits.chunks_exact(self.num_classes.max(1)))
    }

    /// The vectors as JSON for tools outside Rust: `{"input_shape": [N, 3, H, W],
    /// "inputs": [[...], ...], "logits": [[...], ...]}`, one flat `CHW` list per sample.
    /// Each value is written as its exact `f64` widening, so it reads back bit for bit.
    pub fn to_json(&self) -> serde_json::Value {
        let (inputs, logits): (Vec<&[f32]>, Vec<&[f32]>) = self.iter().unzip();
        serde_json::json!({
            "input_shape": self.input_shape,
            "inputs": inputs,
            "logits": logits,
        })
    }
}

fn read_f32(st: &SafeTensors<'_>, name: &str) -> Result<(Vec<usize>, Vec<f32>), IrError> {
    let t = st
        .tensor(name)
        .map_err(|_| bad(name, "tensor missing from the golden file"))?;
    if t.dtype() != safetensors::Dtype::F32 {
        return Err(bad(name, format!("dtype {:?}, expected F32", t.dtype())));
    }
    let values = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((t.shape().to_vec(), values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SyntheticSpec;

    fn golden_bytes(xs: Vec<usize>, ys: Vec<usize>) -> Vec<u8> {
        use safetensors::tensor::TensorView;
        let xb = vec![0u8; xs.iter().product::<usize>() * 4];
        let yb: Vec<u8> = (0..ys.iter().product::<usize>())
            .flat_map(|i| (i as f32).to_le_bytes())
            .collect();
        let views = [
            (
                "input",
                TensorView::new(safetensors::Dtype::F32, xs, &xb).unwrap(),
            ),
            (
                "logits",
                TensorView::new(safetensors::Dtype::F32, ys, &yb).unwrap(),
            ),
        ];
        safetensors::serialize(views, None).unwrap()
    }

    #[test]
    fn reads_checks_and_writes_json() {
        let model = SyntheticSpec::tiny(1).build().unwrap();
        let g = Golden::from_bytes(&golden_bytes(vec![2, 3, 32, 32], vec![2, 3])).unwrap();
        g.check(&model).unwrap();
        assert_eq!(g.samples(), 2);
        let j = g.to_json();
        assert_eq!(j["input_shape"], serde_json::json!([2, 3, 32, 32]));
        assert_eq!(j["inputs"][1].as_array().unwrap().len(), 3 * 32 * 32);
        assert_eq!(j["logits"][1], serde_json::json!([3.0, 4.0, 5.0]));

        let wrong_size = Golden::from_bytes(&golden_bytes(vec![1, 3, 16, 16], vec![1, 3])).unwrap();
        assert!(
            wrong_size
                .check(&model)
                .unwrap_err()
                .to_string()
                .contains("[N, 3, 32, 32]")
        );
        let wrong_classes =
            Golden::from_bytes(&golden_bytes(vec![1, 3, 32, 32], vec![1, 4])).unwrap();
        assert!(
            wrong_classes
                .check(&model)
                .unwrap_err()
                .to_string()
                .contains("3 classes")
        );
        let err = Golden::from_bytes(&golden_bytes(vec![2, 3, 32, 32], vec![1, 3])).unwrap_err();
        assert!(err.to_string().contains("1 samples"), "{err}");
        assert!(Golden::from_bytes(b"not safetensors").is_err());
        let err = Golden::read("/nonexistent/x.golden.safetensors").unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent/x.golden.safetensors"),
            "{err}"
        );
    }
}
