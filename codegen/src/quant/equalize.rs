//! Cross-layer equalization: a float model rewritten, with the same function, so that
//! per-tensor int8 activations lose less.
//!
//! int8 activations have one scale per tensor ([`super::params_for_range`]). A fully
//! trained MobileNetV3 has tensors whose channels span very different ranges (one channel
//! reaches a few hundred while most stay within a few units), and the per-tensor grid then
//! leaves the small channels a handful of levels. Where a ReLU, or no activation, separates
//! two convolutions, channel `c` of the first can be multiplied by `k_c > 0` and the second's
//! input channel `c` divided by `k_c` without changing what the network computes, because
//! `relu(k z) = k relu(z)`. A squeeze-excite between them carries the scaling through: its
//! pooled channel `c` scales by `k_c`, so `fc1`'s column `c` is divided by `k_c`, the gate
//! is unchanged, and its output channel `c` scales by `k_c`.
//!
//! Nagel et al. (2019, "Data-Free Quantization Through Weight Equalization and Bias
//! Correction") choose the factors to equalize per-tensor *weight* ranges. Weights here are
//! already per output channel, so the factors equalize the *activation* ranges instead,
//! measured on calibration images (`R_c`: the largest `|x|` of channel `c`; `R`: the largest
//! over channels):
//! - into a depthwise convolution, whose weights are per channel too, dividing channel `c`
//!   costs nothing: `k_c = R / R_c`;
//! - into a dense convolution, dividing column `c` coarsens that column within its output
//!   channel's weight grid, so the factor is shared between the two grids:
//!   `k_c = sqrt(R / R_c)`.
//!
//! `R / R_c` is capped at [`MAX_RATIO`]; a channel that never fired (`R_c = 0`) keeps
//! `k_c = 1`. The producer's bias scales with its weights, so an int8 file of the result
//! needs nothing new: only the numbers in its tensors differ.

use std::collections::BTreeMap;

use crate::ir::{Activation, IrError, ModelFile, Op, Tensor};

/// The largest ratio `R / R_c` a channel is scaled by: beyond it a channel is so nearly
/// dead that lifting it further buys nothing and only stretches the weights.
pub const MAX_RATIO: f32 = 64.0;

/// One rescaled connection: `producer`'s output channels multiplied by `factors`, and
/// `consumer`'s input channels (and `squeeze_excite`'s `fc1` columns, when one sits
/// between) divided by them.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The convolution whose output channels are scaled.
    pub producer: String,
    /// A squeeze-excite between the two, carried through.
    pub squeeze_excite: Option<String>,
    /// The convolution whose input channels absorb the scaling.
    pub consumer: String,
    /// `k_c`, one per channel.
    pub factors: Vec<f32>,
}

/// The ops reading each value.
fn readers(model: &ModelFile) -> BTreeMap<&str, Vec<&Op>> {
    let mut r: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &model.graph.ops {
        for i in op.inputs() {
            r.entry(i).or_default().push(op);
        }
    }
    r
}

/// The connections that can be rescaled without changing the function: a convolution
/// with ReLU or no activation whose output is read only by a convolution (dense or
/// depthwise), directly or through one squeeze-excite that is itself read only by it.
/// Returned as `(producer, squeeze_excite, consumer)` op names, in graph order.
pub fn links(model: &ModelFile) -> Vec<(String, Option<String>, String)> {
    let g = &model.graph;
    let readers = readers(model);
    let only = |value: &str| -> Option<&Op> {
        match readers.get(value).map(Vec::as_slice) {
            Some([op]) if value != g.output => Some(*op),
            _ => None,
        }
    };
    let absorbs = |op: &Op, channels: usize| -> bool {
        matches!(op, Op::Conv2d(c) if c.in_channels == channels
            && (c.groups == 1 || (c.groups == c.in_channels && c.out_channels == c.in_channels)))
    };
    let mut out = Vec::new();
    for op in &g.ops {
        let Op::Conv2d(p) = op else { continue };
        if !matches!(p.activation, Activation::Relu | Activation::None) {
            continue;
        }
        let Some(next) = only(&p.output) else {
            continue;
        };
        match next {
            Op::Conv2d(c) if absorbs(next, p.out_channels) => {
                out.push((p.name.clone(), None, c.name.clone()));
            }
            Op::SqueezeExcite(s) if s.channels == p.out_channels => {
                if let Some(after @ Op::Conv2d(c)) = only(&s.output)
                    && absorbs(after, p.out_channels)
                {
                    out.push((p.name.clone(), Some(s.name.clone()), c.name.clone()));
                }
            }
            _ => {}
        }
    }
    out
}

fn bad(field: &str, reason: impl Into<String>) -> IrError {
    IrError::BadField {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// The largest `|x|` of every channel of every op output of `model`, over `inputs`
/// (preprocessed `[3, H, W]` images), by value name.
pub fn channel_ranges(
    model: &ModelFile,
    inputs: &[Vec<f32>],
) -> Result<BTreeMap<String, Vec<f32>>, IrError> {
    let shapes = model.validate()?;
    let mut ranges: BTreeMap<String, Vec<(f32, f32)>> = BTreeMap::new();
    for x in inputs {
        crate::reference::run_observed(model, x, &mut |key, _, data| {
            let Some(shape) = shapes.get(key) else {
                // Hardswish pre-activations and squeeze-excite internals are not values.
                return;
            };
            let c = shape.first().copied().unwrap_or(1).max(1);
            super::widen_channel_ranges(ranges.entry(key.to_owned()).or_default(), c, data);
        })?;
    }
    // The largest |x| of each channel (0 for one that never had a finite value).
    Ok(ranges
        .into_iter()
        .map(|(key, r)| {
            let largest = r
                .iter()
                .map(|&(lo, hi)| lo.abs().max(hi.abs()))
                .map(|m| if m.is_finite() { m } else { 0.0 })
                .collect();
            (key, largest)
        })
        .collect())
}

/// `k_c` for channel ranges `r` feeding a consumer that is depthwise or not.
fn factors(r: &[f32], depthwise: bool) -> Vec<f32> {
    let top = r.iter().copied().fold(0.0f32, f32::max);
    r.iter()
        .map(|&rc| {
            if rc <= 0.0 || top <= 0.0 {
                return 1.0;
            }
            let ratio = (top / rc).min(MAX_RATIO);
            if depthwise { ratio } else { ratio.sqrt() }
        })
        .collect()
}

/// Multiplies slice `c` along dimension `dim` of the f32 tensor `name` by `f[c]`.
fn scale_along(
    tensors: &mut BTreeMap<String, Tensor>,
    name: &str,
    dim: usize,
    f: &[f32],
) -> Result<(), IrError> {
    let t = tensors
        .get(name)
        .ok_or_else(|| bad(name, "tensor is missing"))?;
    let shape = t.shape.clone();
    if shape.get(dim) != Some(&f.len()) {
        return Err(bad(
            name,
            format!("dimension {dim} of {shape:?} is not {} channels", f.len()),
        ));
    }
    let mut v = t
        .to_f32()
        .ok_or_else(|| bad(name, "equalization rescales float tensors only"))?;
    let inner: usize = shape[dim + 1..].iter().product();
    let n = shape[dim];
    for (i, x) in v.iter_mut().enumerate() {
        *x *= f[(i / inner) % n];
    }
    tensors.insert(name.to_owned(), Tensor::from_f32(shape, &v));
    Ok(())
}

/// `model` with every [`links`] connection rescaled by factors from the channel ranges on
/// `inputs`, and the links applied. The result computes the same function up to float
/// rounding; it is a float model, to be calibrated and quantized like any other.
pub fn equalize(model: &ModelFile, inputs: &[Vec<f32>]) -> Result<(ModelFile, Vec<Link>), IrError> {
    if model.graph.quantization.is_some() {
        return Err(bad(
            "quantization",
            "equalization rewrites a float model; this one is already quantized",
        ));
    }
    if inputs.is_empty() {
        return Err(bad("inputs", "equalization needs calibration images"));
    }
    let ranges = channel_ranges(model, inputs)?;
    let op = |name: &str| model.graph.ops.iter().find(|o| o.name() == name);
    let mut tensors = model.tensors.clone();
    let mut applied = Vec::new();
    for (p, se, c) in links(model) {
        let (Some(Op::Conv2d(pc)), Some(Op::Conv2d(cc))) = (op(&p), op(&c)) else {
            continue;
        };
        let r = ranges
            .get(&pc.output)
            .ok_or_else(|| bad(&pc.output, "no calibration range"))?;
        let depthwise = cc.groups > 1;
        let k = factors(r, depthwise);
        let inv: Vec<f32> = k.iter().map(|k| 1.0 / k).collect();
        scale_along(&mut tensors, &pc.weight, 0, &k)?;
        scale_along(&mut tensors, &pc.bias, 0, &k)?;
        if let Some(Op::SqueezeExcite(s)) = se.as_deref().and_then(op) {
            scale_along(&mut tensors, &s.fc1_weight, 1, &inv)?;
        }
        // A depthwise weight is `[C, 1, kh, kw]`: its input channel is its output channel.
        scale_along(&mut tensors, &cc.weight, usize::from(!depthwise), &inv)?;
        applied.push(Link {
            producer: p,
            squeeze_excite: se,
            consumer: c,
            factors: k,
        });
    }
    let mut graph = model.graph.clone();
    graph.tensors.clear();
    let out = ModelFile::new(graph, tensors)?;
    Ok((out, applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SyntheticSpec;

    fn inputs(model: &ModelFile, n: usize) -> Vec<Vec<f32>> {
        let len: usize = model.graph.input.shape.iter().product();
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                (0..len)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        (s >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_tiny_model_has_relu_links_through_squeeze_excite_and_into_depthwise() {
        let m = SyntheticSpec::tiny(3).build().unwrap();
        let l = links(&m);
        assert!(!l.is_empty());
        assert!(l.iter().any(|(_, se, _)| se.is_some()), "{l:?}");
        for (p, _, c) in &l {
            let Some(Op::Conv2d(p)) = m.graph.ops.iter().find(|o| o.name() == p) else {
                panic!("{p} is not a conv")
            };
            assert_ne!(p.activation, Activation::Hardswish, "{l:?}");
            assert!(m.graph.ops.iter().any(|o| o.name() == c));
        }
    }

    #[test]
    fn equalization_keeps_the_function_and_evens_the_channel_ranges() {
        let m = SyntheticSpec::tiny(3).build().unwrap();
        let xs = inputs(&m, 3);
        let (e, applied) = equalize(&m, &xs).unwrap();
        assert!(!applied.is_empty());
        // Some factor really differs from 1, or the checks below prove nothing.
        assert!(applied.iter().flat_map(|l| &l.factors).any(|&k| k > 1.5));
        for x in &xs {
            let a = crate::reference::run(&m, x).unwrap();
            let b = crate::reference::run(&e, x).unwrap();
            let (la, lb) = (&a.last().unwrap().data, &b.last().unwrap().data);
            let span = la.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            for (u, v) in la.iter().zip(lb) {
                assert!((u - v).abs() <= 1e-4 * span, "logits {la:?} vs {lb:?}");
            }
        }
        // On the images they were measured on, each channel's range is now exactly what
        // the rule asks: `min(R, 64 R_c)` into a depthwise convolution, `R_c * sqrt(min(R /
        // R_c, 64))` into a dense one.
        let before = channel_ranges(&m, &xs).unwrap();
        let after = channel_ranges(&e, &xs).unwrap();
        let conv = |name: &str| match m.graph.ops.iter().find(|o| o.name() == name) {
            Some(Op::Conv2d(c)) => c.clone(),
            _ => unreachable!("{name} is a conv"),
        };
        let mut kinds = [0usize; 2];
        for l in &applied {
            let (p, c) = (conv(&l.producer), conv(&l.consumer));
            let depthwise = c.groups > 1;
            kinds[usize::from(depthwise)] += 1;
            let (b, a) = (&before[&p.output], &after[&p.output]);
            let top = b.iter().copied().fold(0.0f32, f32::max);
            for (ch, (&rb, &ra)) in b.iter().zip(a).enumerate() {
                let ratio = if rb > 0.0 {
                    (top / rb).min(MAX_RATIO)
                } else {
                    1.0
                };
                let want = rb * if depthwise { ratio } else { ratio.sqrt() };
                assert!(
                    (ra - want).abs() <= 1e-4 * top,
                    "{} channel {ch}: range {rb} -> {ra}, want {want}",
                    l.producer
                );
            }
        }
        assert!(
            kinds[0] > 0 && kinds[1] > 0,
            "dense and depthwise links: {kinds:?}"
        );
    }

    #[test]
    fn no_calibration_images_are_refused() {
        let m = SyntheticSpec::tiny(3).build().unwrap();
        let err = equalize(&m, &[]).unwrap_err().to_string();
        assert!(err.contains("calibration images"), "{err}");
    }
}
