//! Storage precision of an exported model: f16 conversion ([`store_precision`]) and int8
//! post-training quantization ([`quantize_int8`]).
//!
//! Both take the f32 model file of `graph.rs` and return a new one; the goldens of the
//! result are recomputed in `golden.rs`.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use derm_codegen::ir::{self, ModelFile};

use super::bias_correction::bias_corrected;
use super::{Calibrate, Precision};

/// Provenance key recording the stored precision of the weights ([`Precision::name`]).
pub const PRECISION_KEY: &str = "precision";

/// `model` (all f32) with every tensor stored in `precision` (f32 or f16; int8 needs
/// calibration: [`quantize_int8`]). Errors name a tensor whose values do not fit (an f16
/// overflow would silently become infinity).
pub fn store_precision(model: &ModelFile, precision: Precision) -> Result<ModelFile> {
    if precision == Precision::Int8 {
        bail!("int8 is not a storage type: quantize with calibration images (quantize_int8)");
    }
    let mut tensors = BTreeMap::new();
    for (name, t) in &model.tensors {
        let values = t
            .to_f32()
            .with_context(|| format!("tensor {name} is {}, expected f32 or f16", t.dtype))?;
        let stored = match precision {
            Precision::F32 => ir::Tensor::from_f32(t.shape.clone(), &values),
            Precision::F16 => {
                let mut data = Vec::with_capacity(values.len() * 2);
                for (i, &v) in values.iter().enumerate() {
                    // `from_f32` rounds to nearest, ties to even.
                    let h = half::f16::from_f32(v);
                    if v.is_finite() && !h.is_finite() {
                        bail!(
                            "tensor {name}[{i}] = {v} does not fit in f16 (largest {})",
                            half::f16::MAX
                        );
                    }
                    data.extend_from_slice(&h.to_le_bytes());
                }
                ir::Tensor {
                    dtype: ir::DType::F16,
                    shape: t.shape.clone(),
                    data,
                }
            }
            Precision::Int8 => unreachable!("refused above"),
        };
        tensors.insert(name.clone(), stored);
    }
    let mut graph = model.graph.clone();
    // `ModelFile::new` rebuilds the table rows from the new tensors.
    graph.tensors.clear();
    ModelFile::new(graph, tensors).map_err(|e| anyhow::anyhow!("{precision} model is invalid: {e}"))
}

/// The int8 model of `folded` (an f32 export): activation ranges observed on
/// `cal.inputs` by the float reference interpreter ([`calibrate`]), then
/// `derm_codegen::quant::ptq::quantize`.
pub fn quantize_int8(folded: &ModelFile, cal: &Calibrate) -> Result<ModelFile> {
    let folded = equalized(folded, cal)?;
    let c = calibrate(&folded, cal)?;
    let float = float_hardswish_ops(&folded, &cal.float_hardswish)?;
    let (float, grids) = channel_grid_ops(&folded, float, cal.channel_grids);
    let folded = if cal.bias_correction {
        let mut params = super::qat::activation_grid(&folded, &c, cal.range, &float)?;
        let scales = c
            .channel_grids(&grids, cal.range, &mut params)
            .map_err(|e| anyhow::anyhow!("per-channel grids: {e}"))?;
        let (mut m, report) = corrected(&folded, &folded, params, &scales, &float, &cal.inputs)?;
        m.graph.provenance.insert("bias_correction".into(), report);
        m
    } else {
        folded
    };
    derm_codegen::quant::ptq::quantize_with(&folded, &c, cal.range, &float, &grids)
        .map_err(|e| anyhow::anyhow!("int8 quantization: {e}"))
}

/// With `on` (`--channel-grids`): the feature maps of `model` that depthwise convolutions
/// read (`quant::depthwise_inputs`: the stem's output and every expansion's), to be put
/// on per-channel grids, and `float_hardswish` with their writers that have a hardswish
/// added (a hardswish table is one grid, so those compute it in f32). Without: the list
/// unchanged and no grids.
pub fn channel_grid_ops(
    model: &ModelFile,
    mut float_hardswish: Vec<String>,
    on: bool,
) -> (Vec<String>, Vec<String>) {
    use derm_codegen::ir::{Activation, Op};
    if !on {
        return (float_hardswish, Vec::new());
    }
    let grids = derm_codegen::quant::depthwise_inputs(&model.graph);
    for op in &model.graph.ops {
        if let Op::Conv2d(c) = op
            && c.activation == Activation::Hardswish
            && grids.contains(&c.output)
            && !float_hardswish.contains(&c.name)
        {
            float_hardswish.push(c.name.clone());
        }
    }
    (float_hardswish, grids)
}

/// `tuned` with its biases corrected on the grid `params` and `channel_scales`
/// ([`bias_corrected`]), the
/// correction printed, and its record for the provenance.
pub fn corrected(
    float: &ModelFile,
    tuned: &ModelFile,
    params: BTreeMap<String, derm_codegen::ir::QParams>,
    channel_scales: &BTreeMap<String, Vec<f32>>,
    float_hardswish: &[String],
    inputs: &[Vec<f32>],
) -> Result<(ModelFile, serde_json::Value)> {
    let (m, r) = bias_corrected(
        float,
        tuned,
        params,
        channel_scales,
        float_hardswish,
        inputs,
    )?;
    println!(
        "bias correction: {} biases on {} images, largest change {:.4} ({}); mean logits \
         {:.4} -> {:.4} from the float network's",
        r.biases,
        inputs.len(),
        r.largest.0,
        r.largest.1,
        r.logit_shift.0,
        r.logit_shift.1
    );
    let report = serde_json::json!({
        "images": inputs.len(),
        "biases": r.biases,
        "largest_change": r.largest.0,
        "largest_change_in": r.largest.1,
        "mean_logit_shift_before": r.logit_shift.0,
        "mean_logit_shift_after": r.logit_shift.1,
    });
    Ok((m, report))
}

/// The ops named by `--float-hardswish` in `model`: each name an op with a hardswish
/// (a convolution or linear layer), `stem` standing for the first op. Errors name the
/// value that is not one, with the ops that are.
pub fn float_hardswish_ops(model: &ModelFile, names: &[String]) -> Result<Vec<String>> {
    use derm_codegen::ir::{Activation, Op};
    let hardswish: Vec<&str> = model
        .graph
        .ops
        .iter()
        .filter(|op| match op {
            Op::Conv2d(c) => c.activation == Activation::Hardswish,
            Op::Linear(l) => l.activation == Activation::Hardswish,
            _ => false,
        })
        .map(|op| op.name())
        .collect();
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let name = if n == "stem" {
            model
                .graph
                .ops
                .first()
                .map(|o| o.name())
                .unwrap_or_default()
        } else {
            n.as_str()
        };
        if !hardswish.contains(&name) {
            bail!(
                "--float-hardswish {n}: not an op with a hardswish in this model (those are: {})",
                hardswish.join(", ")
            );
        }
        if !out.iter().any(|o| o == name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// `folded` itself, or with `cal.equalize` its cross-layer equalized form
/// (`derm_codegen::quant::equalize`, factors from the calibration images): the same
/// function with evener channel ranges. The rescaled connections and their largest
/// factors go into the provenance under `equalization`.
pub fn equalized(folded: &ModelFile, cal: &Calibrate) -> Result<ModelFile> {
    if !cal.equalize {
        return Ok(folded.clone());
    }
    let (mut m, links) = derm_codegen::quant::equalize::equalize(folded, &cal.inputs)
        .map_err(|e| anyhow::anyhow!("cross-layer equalization: {e}"))?;
    let largest =
        |l: &derm_codegen::quant::equalize::Link| l.factors.iter().copied().fold(1.0f32, f32::max);
    let record: Vec<serde_json::Value> = links
        .iter()
        .map(|l| {
            serde_json::json!({
                "producer": l.producer,
                "squeeze_excite": l.squeeze_excite,
                "consumer": l.consumer,
                "largest_factor": largest(l),
            })
        })
        .collect();
    println!(
        "cross-layer equalization: {} connections rescaled, largest factor {:.1}",
        links.len(),
        links.iter().map(largest).fold(1.0f32, f32::max)
    );
    m.graph
        .provenance
        .insert("equalization".into(), serde_json::Value::Array(record));
    Ok(m)
}

/// Every activation of `folded` observed on `cal.inputs` by the float reference
/// interpreter (with a progress bar when `cal.progress`).
pub fn calibrate(
    folded: &ModelFile,
    cal: &Calibrate,
) -> Result<derm_codegen::quant::ptq::Calibration> {
    if cal.inputs.is_empty() {
        bail!("int8 export needs at least one calibration image");
    }
    let mut c = derm_codegen::quant::ptq::Calibration::new();
    let mut progress = crate::train::progress::EpochProgress::new(
        "calibrate",
        cal.inputs.len() as u64,
        cal.progress,
    );
    for x in &cal.inputs {
        c.observe(folded, x)
            .map_err(|e| anyhow::anyhow!("calibration: {e}"))?;
        progress.step(1, 0.0);
    }
    progress.finish();
    Ok(c)
}
