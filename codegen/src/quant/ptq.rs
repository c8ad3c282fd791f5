//! Post-training quantization: activation ranges observed on calibration
//! inputs by the float reference interpreter, then weights, biases and
//! activations turned into an int8 model file (format version 2, 3 with
//! [`quantize_with`]'s float hardswish ops, 4 with its per-channel grids).

use std::collections::BTreeMap;

use super::{WEIGHT_MAX, activation_keys_with, channel_grid, params_for_range};
use crate::ir::{
    DType, FORMAT_VERSION, IrError, ModelFile, Op, QParams, Quant, Quantization, Tensor, TensorSpec,
};

/// How an activation's range is chosen from what calibration saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeMethod {
    /// The smallest and largest value seen.
    MinMax,
    /// The `p` and `1 - p` quantiles of a deterministic sample of the values
    /// (for example 0.9999), so rare outliers do not stretch the scale.
    Percentile(f64),
}

impl std::str::FromStr for RangeMethod {
    type Err = String;
    /// `minmax` or `percentile:P` with `P` in (0.5, 1], for example `percentile:99.99`
    /// (percent) or `percentile:0.9999`.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "minmax" {
            return Ok(Self::MinMax);
        }
        let p = s
            .strip_prefix("percentile:")
            .and_then(|p| p.parse::<f64>().ok())
            .map(|p| if p > 1.0 { p / 100.0 } else { p })
            .filter(|p| *p > 0.5 && *p <= 1.0)
            .ok_or_else(|| {
                format!("{s:?}: expected `minmax` or `percentile:P` with P in (50, 100] percent")
            })?;
        Ok(Self::Percentile(p))
    }
}

impl std::fmt::Display for RangeMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MinMax => f.write_str("minmax"),
            Self::Percentile(p) => write!(f, "percentile:{}", p * 100.0),
        }
    }
}

/// Values kept per activation and per input for percentiles: enough for a
/// 0.01% tail over a few hundred images, bounded in memory.
const SAMPLES_PER_INPUT: usize = 2048;

#[derive(Debug, Clone, Default)]
struct Stat {
    min: f32,
    max: f32,
    samples: Vec<f32>,
    /// Each channel's smallest and largest value, for feature maps `[C, H, W]`.
    channels: Vec<(f32, f32)>,
}

/// Activation statistics of a float model over calibration inputs.
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    stats: BTreeMap<String, Stat>,
    inputs: usize,
}

impl Calibration {
    /// No observations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inputs observed so far.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// What an int8 file's provenance records of its calibration (`"calibration"`): the
    /// inputs observed and the range `method` its grids were drawn with.
    pub fn record(&self, method: RangeMethod) -> serde_json::Value {
        serde_json::json!({"inputs": self.inputs, "range": method.to_string()})
    }

    /// Runs the float `model` on one preprocessed input (`[3, H, W]`) and
    /// records every activation it needs.
    pub fn observe(&mut self, model: &ModelFile, input: &[f32]) -> Result<(), IrError> {
        let stats = &mut self.stats;
        crate::reference::run_observed(model, input, &mut |key, shape, data| {
            let s = stats.entry(key.to_owned()).or_insert(Stat {
                min: f32::INFINITY,
                max: f32::NEG_INFINITY,
                samples: Vec::new(),
                channels: Vec::new(),
            });
            // Feature maps (`[C, H, W]`, channel planes contiguous): each channel's range,
            // for per-channel grids.
            if let Ok([c, h, w]) = <[usize; 3]>::try_from(shape)
                && c * h * w == data.len()
                && h * w > 0
            {
                super::widen_channel_ranges(&mut s.channels, c, data);
            }
            for &v in data {
                if v.is_finite() {
                    s.min = s.min.min(v);
                    s.max = s.max.max(v);
                }
            }
            // An even stride over the tensor: deterministic and spread over all channels.
            let step = data.len().div_ceil(SAMPLES_PER_INPUT).max(1);
            s.samples
                .extend(data.iter().step_by(step).filter(|v| v.is_finite()));
        })?;
        self.inputs += 1;
        Ok(())
    }

    /// The range `[lo, hi]` of `key` under `method`; `None` if never observed.
    pub fn range(&self, key: &str, method: RangeMethod) -> Option<(f32, f32)> {
        let s = self.stats.get(key)?;
        if s.min > s.max {
            return None;
        }
        match method {
            RangeMethod::MinMax => Some((s.min, s.max)),
            RangeMethod::Percentile(p) => {
                let mut v = s.samples.clone();
                v.sort_by(f32::total_cmp);
                let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
                Some((at(1.0 - p), at(p)))
            }
        }
    }

    /// Each channel's range of the feature map `key`: the channel's smallest and largest
    /// value, each limited to the tensor's [`Self::range`] under `method` (so a percentile
    /// still cuts a channel's outliers). `None` if `key` was never observed or is not a
    /// feature map `[C, H, W]`.
    pub fn channel_ranges(&self, key: &str, method: RangeMethod) -> Option<Vec<(f32, f32)>> {
        let s = self.stats.get(key)?;
        let (lo, hi) = self.range(key, method)?;
        if s.channels.is_empty() {
            return None;
        }
        Some(
            s.channels
                .iter()
                .map(|&(a, b)| {
                    if a > b {
                        // A channel with no finite value: the tensor's range.
                        (lo, hi)
                    } else {
                        (a.clamp(lo, hi), b.clamp(lo, hi))
                    }
                })
                .collect(),
        )
    }

    /// The per-channel grids of the feature maps `keys` ([`channel_grid`] of each channel's
    /// [`Self::channel_ranges`] under `method`), as an int8 file stores them: each key's
    /// shared parameters (its zero point, the largest scale) replace its entry in `params`,
    /// and its channel scales are returned (`quantization.channel_scales`). Errors name a
    /// key that is not a feature map observed in calibration.
    pub fn channel_grids(
        &self,
        keys: &[String],
        method: RangeMethod,
        params: &mut BTreeMap<String, QParams>,
    ) -> Result<BTreeMap<String, Vec<f32>>, IrError> {
        let mut scales = BTreeMap::new();
        for key in keys {
            let ranges = self
                .channel_ranges(key, method)
                .ok_or_else(|| IrError::BadQuant {
                    tensor: key.clone(),
                    reason: "a per-channel grid needs a feature map [C, H, W] observed in \
                             calibration"
                        .into(),
                })?;
            let (p, s) = channel_grid(&ranges);
            params.insert(key.clone(), p);
            scales.insert(key.clone(), s);
        }
        Ok(scales)
    }
}

/// The largest quantized bias [`quantize_on_grid`] makes, `2^30`: half the `i32` range, so
/// a bias plus its layer's sum (at most `k * 127 * 255`, under `2^25` for `k <= 1024`)
/// never leaves `i32`.
const BIAS_MAX: f64 = (1u32 << 30) as f64;

/// Symmetric per-output-channel int8: `scale[c] = max |w[c]| / 127`, or `min_scale[c]` if
/// that is larger.
///
/// `min_scale` is what keeps the channel's bias representable: a channel whose weights
/// are all (nearly) zero but whose bias is not (trained networks have such rows, e.g. a
/// squeeze-excite gate that learned to ignore its input) would otherwise get a scale so
/// small that `bias / (x_scale * w_scale)` overflows `i32`. A larger weight scale only
/// coarsens weights that are negligible beside the bias (TensorFlow Lite's converter
/// adjusts such scales the same way).
fn quantize_weight(w: &[f32], out: usize, min_scale: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let inner = w.len() / out.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(out);
    for (c, row) in w.chunks(inner.max(1)).enumerate() {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        // An all-zero channel quantizes to zeros whatever the scale; keep it normal.
        let s = if max > 0.0 {
            max / WEIGHT_MAX as f32
        } else {
            1.0
        };
        let s = s.max(min_scale.get(c).copied().unwrap_or(0.0));
        scales.push(s);
        q.extend(row.iter().map(|&v| {
            (f64::from(v) / f64::from(s))
                .round_ties_even()
                .clamp(-f64::from(WEIGHT_MAX), f64::from(WEIGHT_MAX)) as i8
        }));
    }
    (q, scales)
}

/// Builds the int8 model of the float `model` from `calibration` (which must
/// have observed it): weights per channel, biases in accumulator units,
/// activation parameters from `method`. Records `"precision": "int8"` and the
/// calibration in the provenance. Errors name the tensor that cannot be
/// represented (a bias beyond `i32`) or the key never observed.
pub fn quantize(
    model: &ModelFile,
    calibration: &Calibration,
    method: RangeMethod,
) -> Result<ModelFile, IrError> {
    quantize_with(model, calibration, method, &[], &[])
}

/// [`quantize`] with the hardswish of the ops named in `float_hardswish` computed in
/// `f32` from the accumulator ([`crate::ir::Quantization::float_hardswish`]; such a file
/// is format version 3), and the feature maps named in `channel_grids` on one grid scale
/// per channel ([`crate::ir::Quantization::channel_scales`], from each channel's range:
/// [`channel_grid`]; version 4). A file with neither is version 2.
pub fn quantize_with(
    model: &ModelFile,
    calibration: &Calibration,
    method: RangeMethod,
    float_hardswish: &[String],
    channel_grids: &[String],
) -> Result<ModelFile, IrError> {
    let g = &model.graph;
    if g.quantization.is_some() {
        return Err(IrError::BadField {
            field: "quantization".into(),
            reason: "the model is already quantized".into(),
        });
    }
    let mut acts = BTreeMap::new();
    for key in activation_keys_with(g, float_hardswish) {
        let (lo, hi) = calibration
            .range(&key, method)
            .ok_or_else(|| IrError::BadQuant {
                tensor: key.clone(),
                reason: "never observed during calibration".into(),
            })?;
        acts.insert(key, params_for_range(lo, hi));
    }
    let channel_scales = calibration.channel_grids(channel_grids, method, &mut acts)?;
    let mut q = quantize_on_grid(model, acts, channel_scales, float_hardswish)?;
    q.graph
        .provenance
        .insert("calibration".into(), calibration.record(method));
    Ok(q)
}

/// The int8 model of the float `model` with the activation grids `acts` given (one per
/// key of [`activation_keys_with`]`(graph, float_hardswish)`, for example ranges learned by
/// quantization-aware training) and the per-channel scales `channel_scales` of some feature
/// maps ([`crate::ir::Quantization::channel_scales`]): weights per channel, biases in
/// accumulator units. Records `"precision": "int8"` in the provenance; validation rejects
/// a bad grid by key.
pub fn quantize_on_grid(
    model: &ModelFile,
    acts: BTreeMap<String, QParams>,
    channel_scales: BTreeMap<String, Vec<f32>>,
    float_hardswish: &[String],
) -> Result<ModelFile, IrError> {
    let g = &model.graph;
    if g.quantization.is_some() {
        return Err(IrError::BadField {
            field: "quantization".into(),
            reason: "the model is already quantized".into(),
        });
    }
    for key in activation_keys_with(g, float_hardswish) {
        if !acts.contains_key(&key) {
            return Err(IrError::BadQuant {
                tensor: key,
                reason: "no activation grid given".into(),
            });
        }
    }
    let quantization = Quantization {
        activations: acts,
        float_hardswish: float_hardswish.to_vec(),
        channel_scales,
    };
    let mut tensors = BTreeMap::new();
    let mut table = BTreeMap::new();
    // The input scale of each output channel of a layer reading `input`: its per-channel
    // scales (a depthwise layer's channel c reads input channel c), or its one scale.
    // The file is not validated yet, so a per-channel grid on another reader is named here.
    let input_scales = |input: &str, out: usize| -> Result<Vec<f64>, IrError> {
        let s = quantization.scales_of(input, out).unwrap_or_default();
        if s.len() != out {
            return Err(IrError::BadQuant {
                tensor: input.to_owned(),
                reason: format!(
                    "{} per-channel scales, read by a layer of {out} output channels (only a \
                     depthwise convolution can read a per-channel grid)",
                    s.len()
                ),
            });
        }
        Ok(s.into_iter().map(f64::from).collect())
    };
    let mut add_layer =
        |weight: &str, bias: &str, out: usize, sx: Vec<f64>| -> Result<(), IrError> {
            let w = model.tensor_f32(weight)?;
            let b = model.tensor_f32(bias)?;
            let shape = model.tensors[weight].shape.clone();
            // The smallest weight scale at which each channel's bias fits in BIAS_MAX
            // (non-finite when the input scale is degenerate: validation names that grid).
            let min_scale: Vec<f32> = b
                .iter()
                .zip(&sx)
                .map(|(&b, &x)| (f64::from(b.abs()) / (x * BIAS_MAX)) as f32)
                .map(|s| if s.is_finite() { s } else { 0.0 })
                .collect();
            let (q, scales) = quantize_weight(&w, out, &min_scale);
            let (sn, zn) = (format!("{weight}.scale"), format!("{weight}.zero_point"));
            for n in [&sn, &zn] {
                if model.tensors.contains_key(n) {
                    return Err(IrError::BadQuant {
                        tensor: weight.to_owned(),
                        reason: format!("its parameter name {n:?} is already a tensor"),
                    });
                }
            }
            let bq = b
                .iter()
                .zip(&scales)
                .zip(&sx)
                .enumerate()
                .map(|(c, ((&b, &s), &x))| {
                    let v = (f64::from(b) / (x * f64::from(s))).round_ties_even();
                    // BIAS_MAX up to the rounding of min_scale; beyond i32 only when the
                    // scales are degenerate.
                    if v.abs() < f64::from(i32::MAX) {
                        Ok(v as i32)
                    } else {
                        Err(IrError::BadQuant {
                            tensor: bias.to_owned(),
                            reason: format!("channel {c}: {b} does not fit i32 at scale x*w"),
                        })
                    }
                })
                .collect::<Result<Vec<i32>, _>>()?;
            table.insert(
                weight.to_owned(),
                TensorSpec {
                    dtype: DType::I8,
                    shape: shape.clone(),
                    quant: Some(Quant {
                        scale: sn.clone(),
                        zero_point: zn.clone(),
                        axis: 0,
                    }),
                },
            );
            tensors.insert(weight.to_owned(), Tensor::from_i8(shape, &q));
            tensors.insert(sn, Tensor::from_f32(vec![out], &scales));
            tensors.insert(zn, Tensor::from_i8(vec![out], &vec![0; out]));
            tensors.insert(bias.to_owned(), Tensor::from_i32(vec![out], &bq));
            Ok(())
        };
    for op in &g.ops {
        match op {
            Op::Conv2d(c) => add_layer(
                &c.weight,
                &c.bias,
                c.out_channels,
                input_scales(&c.input, c.out_channels)?,
            )?,
            Op::Linear(l) => add_layer(
                &l.weight,
                &l.bias,
                l.out_features,
                input_scales(&l.input, l.out_features)?,
            )?,
            Op::SqueezeExcite(s) => {
                let pooled = input_scales(&super::pooled_key(&s.name), s.squeeze_channels)?;
                let hidden = input_scales(&super::hidden_key(&s.name), s.channels)?;
                add_layer(&s.fc1_weight, &s.fc1_bias, s.squeeze_channels, pooled)?;
                add_layer(&s.fc2_weight, &s.fc2_bias, s.channels, hidden)?;
            }
            Op::Add(_) | Op::GlobalAvgPool(_) => {}
        }
    }
    let mut graph = g.clone();
    // Older readers can read every file that does not use a later version's field.
    graph.version = if !quantization.channel_scales.is_empty() {
        FORMAT_VERSION
    } else if !quantization.float_hardswish.is_empty() {
        3
    } else {
        2
    };
    graph.tensors = table;
    graph.quantization = Some(quantization);
    graph.provenance.insert("precision".into(), "int8".into());
    ModelFile::new(graph, tensors)
}
