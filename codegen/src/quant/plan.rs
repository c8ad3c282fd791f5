//! Every integer constant a quantized model needs, derived once from the
//! file and checked: the plan that the reference interpreter executes and
//! that code generation emits. Building it is the validation of a quantized
//! file, so each error names the tensor or activation key at fault.

use std::collections::BTreeSet;

use super::{
    ADD_SHIFT, GATE_BITS, Multiplier, WEIGHT_MAX, activation_keys, float_hardswish_inv_scale,
    hardswish_table, hidden_key, inv_scale, pooled_key, pre_activation_key,
};
use crate::ir::{Activation, DType, IrError, ModelFile, Op, QParams, ValueShapes};

/// The integer form of a quantized model, op by op.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantPlan {
    /// Parameters of the quantized model input.
    pub input: QParams,
    /// `1 / input.scale` as the `f32` the input quantization multiplies by.
    pub input_inv_scale: f32,
    /// One entry per graph op, in order.
    pub ops: Vec<OpPlan>,
}

/// The integer parameters of one op.
#[derive(Debug, Clone, PartialEq)]
pub enum OpPlan {
    /// A convolution or a linear layer.
    Conv(ConvPlan),
    /// Squeeze-and-excite.
    SqueezeExcite(SePlan),
    /// Residual add.
    Add(AddPlan),
    /// Global average pooling.
    Pool(PoolPlan),
}

/// Convolution or linear: `acc[c] = bias[c] + sum w[c, k] * (x[k] - x_zero_point)`
/// (padding taps add nothing), then [`ConvOutput`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConvPlan {
    /// Zero point of the input.
    pub x_zero_point: i32,
    /// Weights as stored (`[out, in / groups, kh, kw]` or `[out, in]`), in `[-127, 127]`.
    pub weight: Vec<i8>,
    /// Per-output-channel bias in accumulator units.
    pub bias: Vec<i32>,
    /// How the accumulator becomes the output.
    pub output: ConvOutput,
}

/// The epilogue of a convolution or linear layer.
#[derive(Debug, Clone, PartialEq)]
pub enum ConvOutput {
    /// `y = clamp(zero_point + requant(acc, mult[c]), min, 127)`; `min` is the
    /// zero point for a fused ReLU, else -128.
    Requant {
        /// Per output channel: `x_scale[c] * w_scale[c] / y_scale[c]` (one `x_scale` and
        /// one `y_scale` unless a value has a per-channel grid).
        mult: Vec<Multiplier>,
        /// Output zero point.
        zero_point: i32,
        /// Lower clamp.
        min: i32,
    },
    /// `a = clamp(pre_zero_point + requant(acc, mult[c]), -128, 127)`, `y = table[a + 128]`.
    Hardswish {
        /// Per output channel: `x_scale * w_scale[c] / pre_scale`.
        mult: Vec<Multiplier>,
        /// Zero point of the pre-activation.
        pre_zero_point: i32,
        /// [`super::hardswish_table`] of the pre-activation and output parameters.
        table: Box<[i8; 256]>,
    },
    /// A hardswish in `f32` ([`crate::ir::Quantization::float_hardswish`]):
    /// `y = `[`super::float_hardswish`]`(acc, scale[c], inv_scale[c], zero_point)`.
    FloatHardswish {
        /// Per output channel: `f32(x_scale * w_scale[c])`, the accumulator's real scale.
        scale: Vec<f32>,
        /// Per output channel: [`super::float_hardswish_inv_scale`] of the output's scale
        /// (the same for every channel unless the output has a per-channel grid).
        inv_scale: Vec<f32>,
        /// Output zero point.
        zero_point: i32,
    },
    /// The graph output: `logits[c] = (acc as f32) * scale[c]`, one `f32` multiply.
    Logits {
        /// Per output channel: `f32(x_scale * w_scale[c])`.
        scale: Vec<f32>,
    },
}

/// Squeeze-and-excite (`docs/int8.md`): `p = pool(x)`, `h = relu(fc1(p))`,
/// `g = gate(fc2(h))` in `[0, 2^15]`, `y = x * g`.
#[derive(Debug, Clone, PartialEq)]
pub struct SePlan {
    /// Zero point of the input.
    pub x_zero_point: i32,
    /// `x_scale / (hw * pooled_scale)`.
    pub pool_mult: Multiplier,
    /// Zero point of the pooled vector.
    pub pooled_zero_point: i32,
    /// `[squeeze][channels]`.
    pub fc1_weight: Vec<i8>,
    /// `[squeeze]`, accumulator units.
    pub fc1_bias: Vec<i32>,
    /// Per squeeze channel: `pooled_scale * w1_scale[j] / hidden_scale`.
    pub fc1_mult: Vec<Multiplier>,
    /// Zero point of the hidden vector (also its ReLU floor).
    pub hidden_zero_point: i32,
    /// `[channels][squeeze]`.
    pub fc2_weight: Vec<i8>,
    /// `[channels]`, accumulator units.
    pub fc2_bias: Vec<i32>,
    /// Per channel: `hidden_scale * w2_scale[c] * 2^15 / 6` (the `x / 6` of hardsigmoid).
    pub gate_mult: Vec<Multiplier>,
    /// `x_scale / (2^15 * y_scale)`.
    pub out_mult: Multiplier,
    /// Output zero point.
    pub out_zero_point: i32,
}

/// Residual add: `y = clamp(zy + requant(requant((a - za) << 20, ma) + requant((b - zb) << 20, mb), m_out))`.
#[derive(Debug, Clone, PartialEq)]
pub struct AddPlan {
    /// Zero points of the two inputs.
    pub zero_points: [i32; 2],
    /// `scale_i / (2 * max(scale_a, scale_b))`.
    pub mults: [Multiplier; 2],
    /// `2 * max(scale_a, scale_b) / (2^20 * y_scale)`.
    pub out_mult: Multiplier,
    /// Output zero point.
    pub out_zero_point: i32,
}

/// Global average pool: `y = clamp(zy + requant(sum_hw (x - zx), x_scale / (hw * y_scale)))`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPlan {
    /// Zero point of the input.
    pub x_zero_point: i32,
    /// `x_scale / (hw * y_scale)`.
    pub mult: Multiplier,
    /// Output zero point.
    pub out_zero_point: i32,
}

fn bad(tensor: &str, reason: impl Into<String>) -> IrError {
    IrError::BadQuant {
        tensor: tensor.to_owned(),
        reason: reason.into(),
    }
}

/// A multiplier or an error naming what it rescales.
fn mult(r: f64, tensor: &str, what: &str) -> Result<Multiplier, IrError> {
    Multiplier::from_real(r).ok_or_else(|| {
        bad(
            tensor,
            format!(
                "{what}: the real multiplier {r:e} needs a shift outside 1..=62 \
                 (scales are inconsistent)"
            ),
        )
    })
}

/// Per-channel weights: `i8` in `[-127, 127]`, zero points 0, one positive
/// normal scale per output channel (axis 0).
fn weights(model: &ModelFile, name: &str, out: usize) -> Result<(Vec<i8>, Vec<f64>), IrError> {
    let t = &model.tensors[name];
    let spec = &model.graph.tensors[name];
    let q = match (&spec.quant, t.dtype) {
        (Some(q), DType::I8) if q.axis == 0 => q,
        _ => {
            return Err(bad(
                name,
                format!(
                    "an int8 model's weights must be i8 with per-channel parameters on axis 0 \
                     (found {})",
                    t.dtype
                ),
            ));
        }
    };
    let values = t.to_i8().unwrap_or_default();
    if let Some(i) = values.iter().position(|&v| i32::from(v) < -WEIGHT_MAX) {
        return Err(bad(
            name,
            format!("element {i} is -128; int8 weights must lie in [-127, 127]"),
        ));
    }
    let zp = model.tensors[&q.zero_point].to_i8().unwrap_or_default();
    if let Some(c) = zp.iter().position(|&z| z != 0) {
        return Err(bad(
            name,
            format!(
                "zero point {} of channel {c}: int8 weights are symmetric (zero point 0)",
                zp[c]
            ),
        ));
    }
    let scales = model.tensors[&q.scale].to_f32().unwrap_or_default();
    if scales.len() != out {
        return Err(bad(
            name,
            format!("{} scales for {out} output channels", scales.len()),
        ));
    }
    if let Some(c) = scales.iter().position(|s| !s.is_normal() || *s <= 0.0) {
        return Err(bad(
            name,
            format!(
                "scale {} of channel {c} is not a positive normal number",
                scales[c]
            ),
        ));
    }
    Ok((values, scales.into_iter().map(f64::from).collect()))
}

fn bias(model: &ModelFile, name: &str, out: usize) -> Result<Vec<i32>, IrError> {
    let t = &model.tensors[name];
    match t.to_i32() {
        Some(v) if v.len() == out => Ok(v),
        _ => Err(bad(
            name,
            format!(
                "an int8 model's biases are i32 [{out}] in accumulator units (found {} {:?})",
                t.dtype, t.shape
            ),
        )),
    }
}

/// Checks that no accumulator of `k` products of `(x - zx)` (at most 255 in
/// magnitude) and weights (at most 127), plus the bias, can leave `i32`.
fn check_accumulator(op: &str, k: usize, bias: &[i32]) -> Result<(), IrError> {
    let max_bias = bias.iter().map(|b| i64::from(*b).abs()).max().unwrap_or(0);
    let bound = (k as i64)
        .saturating_mul(255 * 127)
        .saturating_add(max_bias);
    if bound > i64::from(i32::MAX) {
        return Err(IrError::BadOp {
            op: op.to_owned(),
            reason: format!("an int8 accumulator of {k} products could overflow i32"),
        });
    }
    Ok(())
}

impl QuantPlan {
    /// Derives and checks every constant of the quantized `model` (whose
    /// graph has `quantization`; `shapes` from its validation).
    pub fn new(model: &ModelFile, shapes: &ValueShapes) -> Result<Self, IrError> {
        let g = &model.graph;
        let acts = &g
            .quantization
            .as_ref()
            .ok_or_else(|| IrError::BadField {
                field: "quantization".into(),
                reason: "the model is not quantized".into(),
            })?
            .activations;
        check_float_hardswish(g)?;
        check_channel_scales(g, shapes)?;
        let keys = activation_keys(g);
        let wanted: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
        if let Some(k) = acts.keys().find(|k| !wanted.contains(k.as_str())) {
            return Err(bad(
                k,
                "listed in quantization.activations but not a value or intermediate of the graph \
                 (the graph output has none: the logits are f32)",
            ));
        }
        for k in &keys {
            let p = acts
                .get(k)
                .ok_or_else(|| bad(k, "missing from quantization.activations"))?;
            if !p.scale.is_normal() || p.scale <= 0.0 {
                return Err(bad(
                    k,
                    format!(
                        "activation scale {} is not a positive normal number",
                        p.scale
                    ),
                ));
            }
            if !(-128..=127).contains(&p.zero_point) {
                return Err(bad(
                    k,
                    format!(
                        "activation zero point {} is outside -128..=127",
                        p.zero_point
                    ),
                ));
            }
        }
        if let Some(op) = g
            .ops
            .iter()
            .find(|o| o.inputs().contains(&g.output.as_str()))
        {
            return Err(IrError::BadOp {
                op: op.name().to_owned(),
                reason: "reads the graph output, which an int8 model keeps only as f32 logits"
                    .into(),
            });
        }
        let q = |k: &str| acts[k];
        let s = |k: &str| f64::from(acts[k].scale);
        let input = q(&g.input.name);
        let mut ops = Vec::with_capacity(g.ops.len());
        for op in &g.ops {
            let is_output = op.output() == g.output;
            let plan = match op {
                Op::Conv2d(c) => {
                    let k = c.in_channels / c.groups * c.kernel[0] * c.kernel[1];
                    conv_plan(
                        model,
                        ConvArgs {
                            name: &c.name,
                            input: &c.input,
                            output: &c.output,
                            weight: &c.weight,
                            bias: &c.bias,
                            out: c.out_channels,
                            k,
                            activation: c.activation,
                            is_output,
                        },
                    )?
                }
                Op::Linear(l) => conv_plan(
                    model,
                    ConvArgs {
                        name: &l.name,
                        input: &l.input,
                        output: &l.output,
                        weight: &l.weight,
                        bias: &l.bias,
                        out: l.out_features,
                        k: l.in_features,
                        activation: l.activation,
                        is_output,
                    },
                )?,
                _ if is_output => {
                    return Err(IrError::BadOp {
                        op: op.name().to_owned(),
                        reason: "in an int8 model the graph output must be a linear or \
                                 convolution without activation (its f32 logits come from \
                                 the accumulator)"
                            .into(),
                    });
                }
                Op::SqueezeExcite(se) => {
                    let hw = shapes[&se.input][1] * shapes[&se.input][2];
                    check_sum(&se.name, hw)?;
                    let (pk, hk) = (pooled_key(&se.name), hidden_key(&se.name));
                    let (w1, s1) = weights(model, &se.fc1_weight, se.squeeze_channels)?;
                    let (w2, s2) = weights(model, &se.fc2_weight, se.channels)?;
                    let b1 = bias(model, &se.fc1_bias, se.squeeze_channels)?;
                    let b2 = bias(model, &se.fc2_bias, se.channels)?;
                    check_accumulator(&se.name, se.channels, &b1)?;
                    check_accumulator(&se.name, se.squeeze_channels, &b2)?;
                    let fc1_mult = s1
                        .iter()
                        .enumerate()
                        .map(|(j, w)| mult(s(&pk) * w / s(&hk), &hk, &format!("fc1 channel {j}")))
                        .collect::<Result<_, _>>()?;
                    let gate_mult = s2
                        .iter()
                        .enumerate()
                        .map(|(c, w)| {
                            mult(
                                s(&hk) * w * f64::from(1u32 << GATE_BITS) / 6.0,
                                &se.fc2_weight,
                                &format!("gate channel {c}"),
                            )
                        })
                        .collect::<Result<_, _>>()?;
                    OpPlan::SqueezeExcite(SePlan {
                        x_zero_point: q(&se.input).zero_point,
                        pool_mult: mult(s(&se.input) / (hw as f64 * s(&pk)), &pk, "pooling")?,
                        pooled_zero_point: q(&pk).zero_point,
                        fc1_weight: w1,
                        fc1_bias: b1,
                        fc1_mult,
                        hidden_zero_point: q(&hk).zero_point,
                        fc2_weight: w2,
                        fc2_bias: b2,
                        gate_mult,
                        out_mult: mult(
                            s(&se.input) / (f64::from(1u32 << GATE_BITS) * s(&se.output)),
                            &se.output,
                            "gated output",
                        )?,
                        out_zero_point: q(&se.output).zero_point,
                    })
                }
                Op::Add(a) => {
                    let (sa, sb) = (s(&a.inputs[0]), s(&a.inputs[1]));
                    let twice_max = 2.0 * sa.max(sb);
                    OpPlan::Add(AddPlan {
                        zero_points: [q(&a.inputs[0]).zero_point, q(&a.inputs[1]).zero_point],
                        mults: [
                            mult(sa / twice_max, &a.inputs[0], "add input")?,
                            mult(sb / twice_max, &a.inputs[1], "add input")?,
                        ],
                        out_mult: mult(
                            twice_max / (f64::from(1u32 << ADD_SHIFT) * s(&a.output)),
                            &a.output,
                            "add output",
                        )?,
                        out_zero_point: q(&a.output).zero_point,
                    })
                }
                Op::GlobalAvgPool(p) => {
                    let hw = shapes[&p.input][1] * shapes[&p.input][2];
                    check_sum(&p.name, hw)?;
                    OpPlan::Pool(PoolPlan {
                        x_zero_point: q(&p.input).zero_point,
                        mult: mult(
                            s(&p.input) / (hw as f64 * s(&p.output)),
                            &p.output,
                            "pooling",
                        )?,
                        out_zero_point: q(&p.output).zero_point,
                    })
                }
            };
            ops.push(plan);
        }
        Ok(Self {
            input,
            input_inv_scale: inv_scale(input),
            ops,
        })
    }
}

/// Every op listed in `quantization.float_hardswish` is a hardswish convolution or
/// linear layer that is not the graph output, listed once.
fn check_float_hardswish(g: &crate::ir::Graph) -> Result<(), IrError> {
    let Some(q) = &g.quantization else {
        return Ok(());
    };
    let mut seen = BTreeSet::new();
    for name in &q.float_hardswish {
        let field = || IrError::BadField {
            field: "quantization.float_hardswish".into(),
            reason: format!("{name:?} is not a hardswish convolution or linear layer of the graph"),
        };
        let op = g.ops.iter().find(|o| o.name() == name).ok_or_else(field)?;
        let hardswish = match op {
            Op::Conv2d(c) => c.activation == Activation::Hardswish,
            Op::Linear(l) => l.activation == Activation::Hardswish,
            _ => false,
        };
        if !hardswish || op.output() == g.output {
            return Err(field());
        }
        if !seen.insert(name.as_str()) {
            return Err(IrError::BadField {
                field: "quantization.float_hardswish".into(),
                reason: format!("{name:?} is listed twice"),
            });
        }
    }
    Ok(())
}

/// Every feature map in `quantization.channel_scales` has one positive normal scale per
/// channel, the largest being its `activations` scale, is written by a convolution whose
/// epilogue can apply a scale per channel (a ReLU, no activation, or a float hardswish:
/// not a hardswish table, which is one grid) and is read only by depthwise convolutions,
/// whose channel `c` reads channel `c` (`quant::depthwise_inputs`).
fn check_channel_scales(g: &crate::ir::Graph, shapes: &ValueShapes) -> Result<(), IrError> {
    let Some(q) = &g.quantization else {
        return Ok(());
    };
    let candidates = super::depthwise_inputs(g);
    for (name, scales) in &q.channel_scales {
        let field = |reason: String| IrError::BadField {
            field: "quantization.channel_scales".into(),
            reason: format!("{name:?}: {reason}"),
        };
        if !candidates.contains(name) {
            return Err(field(
                "not a feature map that a convolution writes and only depthwise convolutions \
                 read (the only values that can have a grid per channel)"
                    .into(),
            ));
        }
        let channels = shapes.get(name).map(|s| s[0]).unwrap_or_default();
        if scales.len() != channels {
            return Err(field(format!(
                "{} scales for {channels} channels",
                scales.len()
            )));
        }
        if let Some(c) = scales.iter().position(|s| !s.is_normal() || *s <= 0.0) {
            return Err(field(format!(
                "scale {} of channel {c} is not a positive normal number",
                scales[c]
            )));
        }
        let largest = scales.iter().copied().fold(0.0f32, f32::max);
        if q.activations.get(name).map(|p| p.scale) != Some(largest) {
            return Err(field(format!(
                "its activations scale must be the largest channel scale, {largest}"
            )));
        }
        let writer = g.ops.iter().find(|o| o.output() == name);
        if let Some(Op::Conv2d(c)) = writer
            && c.activation == Activation::Hardswish
            && !q.is_float_hardswish(&c.name)
        {
            return Err(field(format!(
                "written by {} through a hardswish table, which has one grid; list {} in \
                 quantization.float_hardswish",
                c.name, c.name
            )));
        }
    }
    Ok(())
}

/// A sum of `hw` values `(x - zx)` must fit `i32`.
fn check_sum(op: &str, hw: usize) -> Result<(), IrError> {
    if (hw as u64).saturating_mul(255) > i32::MAX as u64 {
        return Err(IrError::BadOp {
            op: op.to_owned(),
            reason: format!("an int8 sum over {hw} pixels could overflow i32"),
        });
    }
    Ok(())
}

/// Whether op `name` of the quantized `model` computes its hardswish in `f32`.
fn acts_float(model: &ModelFile, name: &str) -> bool {
    model
        .graph
        .quantization
        .as_ref()
        .is_some_and(|q| q.is_float_hardswish(name))
}

struct ConvArgs<'a> {
    name: &'a str,
    input: &'a str,
    output: &'a str,
    weight: &'a str,
    bias: &'a str,
    out: usize,
    k: usize,
    activation: Activation,
    is_output: bool,
}

fn conv_plan(model: &ModelFile, a: ConvArgs<'_>) -> Result<OpPlan, IrError> {
    let quant = model.graph.quantization.as_ref();
    let quant = quant.ok_or_else(|| bad(a.name, "not quantized"))?;
    let acts = &quant.activations;
    let x = acts[a.input];
    let (w, ws) = weights(model, a.weight, a.out)?;
    let b = bias(model, a.bias, a.out)?;
    check_accumulator(a.name, a.k, &b)?;
    // Scale per output channel of the input (a depthwise layer's channel c reads input
    // channel c, so a per-channel grid gives channel c its own; `check_channel_scales`
    // allowed one only there, with one scale per channel) and of the output.
    let per_channel_scale = |value: &str| -> Vec<f64> {
        let s = quant.scales_of(value, a.out).unwrap_or_default();
        s.into_iter().map(f64::from).collect()
    };
    let sx = per_channel_scale(a.input);
    let per_channel = |target: &[f64], key: &str| -> Result<Vec<Multiplier>, IrError> {
        ws.iter()
            .zip(target)
            .zip(&sx)
            .enumerate()
            .map(|(c, ((w, t), x))| mult(x * w / t, key, &format!("{} channel {c}", a.name)))
            .collect()
    };
    let output = if a.is_output {
        if a.activation != Activation::None {
            return Err(IrError::BadOp {
                op: a.name.to_owned(),
                reason: "the graph output of an int8 model cannot have an activation".into(),
            });
        }
        ConvOutput::Logits {
            scale: ws.iter().zip(&sx).map(|(w, x)| (x * w) as f32).collect(),
        }
    } else {
        let y = acts[a.output];
        let sy = per_channel_scale(a.output);
        let float = acts_float(model, a.name);
        match a.activation {
            Activation::Hardswish if float => {
                let scale = ws
                    .iter()
                    .zip(&sx)
                    .enumerate()
                    .map(|(c, (w, x))| {
                        let v = (x * w) as f32;
                        if v.is_normal() {
                            Ok(v)
                        } else {
                            Err(bad(
                                a.weight,
                                format!(
                                    "channel {c}: the accumulator scale {:e} (input scale x \
                                     weight scale) is not a normal f32",
                                    x * w
                                ),
                            ))
                        }
                    })
                    .collect::<Result<Vec<f32>, _>>()?;
                let inv_scale = sy
                    .iter()
                    .enumerate()
                    .map(|(c, &s)| {
                        let inv = float_hardswish_inv_scale(s as f32);
                        if inv.is_normal() {
                            Ok(inv)
                        } else {
                            Err(bad(
                                a.output,
                                format!("channel {c}: 1 / (6 x scale {s}) is not a normal f32"),
                            ))
                        }
                    })
                    .collect::<Result<Vec<f32>, _>>()?;
                ConvOutput::FloatHardswish {
                    scale,
                    inv_scale,
                    zero_point: y.zero_point,
                }
            }
            Activation::Hardswish => {
                let key = pre_activation_key(a.name);
                let pre = acts[&key];
                ConvOutput::Hardswish {
                    mult: per_channel(&vec![f64::from(pre.scale); a.out], &key)?,
                    pre_zero_point: pre.zero_point,
                    table: Box::new(hardswish_table(pre, y)),
                }
            }
            act => ConvOutput::Requant {
                mult: per_channel(&sy, a.output)?,
                zero_point: y.zero_point,
                min: if act == Activation::Relu {
                    y.zero_point
                } else {
                    -128
                },
            },
        }
    };
    Ok(OpPlan::Conv(ConvPlan {
        x_zero_point: x.zero_point,
        weight: w,
        bias: b,
        output,
    }))
}
