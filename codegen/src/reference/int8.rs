//! The int8 semantics of `docs/int8.md`, executed literally with the
//! constants of a [`QuantPlan`]: straight loops over logical CHW shapes, one
//! [`requant`] per rescale, `i64` where a sum could otherwise wrap. Every
//! int8 kernel variant must reproduce these values bit for bit.

use std::collections::HashMap;

use super::LayerOutput;
use crate::ir::{IrError, ModelFile, Op, ValueShapes};
use crate::quant::{
    ADD_SHIFT, ConvOutput, ConvPlan, GATE_ONE, OpPlan, QuantPlan, quantize_input, requant, sat8,
};

/// An op's result: int8 values, or the `f32` logits of the output op.
enum Out {
    Int8(Vec<i8>),
    Logits(Vec<f32>),
}

/// Runs the quantized `model` (its `plan` from [`QuantPlan::new`]) on one
/// `f32` input and returns every op's output, dequantized, with the int8
/// values beside them.
pub fn run(
    model: &ModelFile,
    shapes: &ValueShapes,
    plan: &QuantPlan,
    input: &[f32],
) -> Result<Vec<LayerOutput>, IrError> {
    let g = &model.graph;
    let in_shape = super::check_input(model, shapes, input)?;
    let quantization = g.quantization.as_ref().ok_or_else(|| IrError::BadField {
        field: "quantization".into(),
        reason: "the model is not quantized".into(),
    })?;
    let acts = &quantization.activations;
    let xq: Vec<i8> = input
        .iter()
        .map(|&x| quantize_input(x, plan.input_inv_scale, plan.input.zero_point))
        .collect();
    let mut values: HashMap<&str, (Vec<usize>, Vec<i8>)> = HashMap::new();
    values.insert(&g.input.name, (in_shape, xq));
    let mut outputs = Vec::with_capacity(g.ops.len());
    for (op, p) in g.ops.iter().zip(&plan.ops) {
        let ys = shapes[op.output()].clone();
        // Validation guarantees every value an op reads was written before it.
        let get = |name: &str| &values[name];
        let out = match (op, p) {
            (Op::Conv2d(c), OpPlan::Conv(cp)) => {
                let (xs, x) = get(&c.input);
                let acc = conv_acc(x, xs, &ys, cp, c);
                let plane = ys[1] * ys[2];
                epilogue(&acc, |i| i / plane, &cp.output)
            }
            (Op::Linear(l), OpPlan::Conv(cp)) => {
                let (_, x) = get(&l.input);
                let k = l.in_features;
                let acc: Vec<i32> = (0..l.out_features)
                    .map(|j| {
                        let dot: i64 = (0..k)
                            .map(|i| {
                                i64::from(cp.weight[j * k + i])
                                    * (i64::from(x[i]) - i64::from(cp.x_zero_point))
                            })
                            .sum();
                        (i64::from(cp.bias[j]) + dot) as i32
                    })
                    .collect();
                epilogue(&acc, |j| j, &cp.output)
            }
            (Op::SqueezeExcite(s), OpPlan::SqueezeExcite(sp)) => {
                let (xs, x) = get(&s.input);
                let (c, q, hw) = (s.channels, s.squeeze_channels, xs[1] * xs[2]);
                let zx = i64::from(sp.x_zero_point);
                let pooled: Vec<i64> = (0..c)
                    .map(|ch| {
                        let sum: i64 = x[ch * hw..(ch + 1) * hw]
                            .iter()
                            .map(|&v| i64::from(v) - zx)
                            .sum();
                        i64::from(sat8(
                            i64::from(sp.pooled_zero_point)
                                + i64::from(requant(sum as i32, sp.pool_mult)),
                        )) - i64::from(sp.pooled_zero_point)
                    })
                    .collect();
                let hz = i64::from(sp.hidden_zero_point);
                let hidden: Vec<i64> = (0..q)
                    .map(|j| {
                        let acc = i64::from(sp.fc1_bias[j])
                            + (0..c)
                                .map(|i| i64::from(sp.fc1_weight[j * c + i]) * pooled[i])
                                .sum::<i64>();
                        let h =
                            (hz + i64::from(requant(acc as i32, sp.fc1_mult[j]))).clamp(hz, 127);
                        h - hz
                    })
                    .collect();
                let gate: Vec<i64> = (0..c)
                    .map(|ch| {
                        let acc = i64::from(sp.fc2_bias[ch])
                            + (0..q)
                                .map(|j| i64::from(sp.fc2_weight[ch * q + j]) * hidden[j])
                                .sum::<i64>();
                        (i64::from(requant(acc as i32, sp.gate_mult[ch])) + i64::from(GATE_ONE / 2))
                            .clamp(0, i64::from(GATE_ONE))
                    })
                    .collect();
                Out::Int8(
                    x.iter()
                        .enumerate()
                        .map(|(i, &v)| {
                            let prod = (i64::from(v) - zx) * gate[i / hw];
                            sat8(
                                i64::from(sp.out_zero_point)
                                    + i64::from(requant(prod as i32, sp.out_mult)),
                            )
                        })
                        .collect(),
                )
            }
            (Op::Add(a), OpPlan::Add(ap)) => {
                let (_, x) = get(&a.inputs[0]);
                let (_, y) = get(&a.inputs[1]);
                let scaled = |v: i8, k: usize| {
                    let shifted = (i32::from(v) - ap.zero_points[k]) << ADD_SHIFT;
                    i64::from(requant(shifted, ap.mults[k]))
                };
                Out::Int8(
                    x.iter()
                        .zip(y)
                        .map(|(&u, &v)| {
                            let sum = (scaled(u, 0) + scaled(v, 1)) as i32;
                            sat8(
                                i64::from(ap.out_zero_point) + i64::from(requant(sum, ap.out_mult)),
                            )
                        })
                        .collect(),
                )
            }
            (Op::GlobalAvgPool(_), OpPlan::Pool(pp)) => {
                let (xs, x) = get(op.inputs()[0]);
                let hw = xs[1] * xs[2];
                Out::Int8(
                    x.chunks_exact(hw)
                        .map(|ch| {
                            let sum: i64 = ch
                                .iter()
                                .map(|&v| i64::from(v) - i64::from(pp.x_zero_point))
                                .sum();
                            sat8(
                                i64::from(pp.out_zero_point)
                                    + i64::from(requant(sum as i32, pp.mult)),
                            )
                        })
                        .collect(),
                )
            }
            _ => {
                return Err(IrError::BadOp {
                    op: op.name().to_owned(),
                    reason: "the quantization plan does not match the op".into(),
                });
            }
        };
        let (data, quantized) = match out {
            Out::Int8(q) => {
                let p = acts[op.output()];
                // Channel `c` is the plane `[c]` of `[C, ...]`, with its scale (one for
                // every channel unless the value has a per-channel grid).
                let scales = quantization
                    .scales_of(op.output(), ys[0])
                    .unwrap_or_default();
                let plane = (q.len() / ys[0].max(1)).max(1);
                let data = q
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| scales[i / plane] * (i32::from(v) - p.zero_point) as f32)
                    .collect();
                values.insert(op.output(), (ys.clone(), q.clone()));
                (data, Some(q))
            }
            Out::Logits(l) => (l, None),
        };
        outputs.push(LayerOutput {
            name: op.output().to_owned(),
            shape: ys,
            data,
            quantized,
        });
    }
    Ok(outputs)
}

/// `acc[co, oy, ox] = bias[co] + sum w * (x - zx)` over the taps inside the
/// input (padding adds nothing: it is real zero, `x = zx`).
fn conv_acc(x: &[i8], xs: &[usize], ys: &[usize], p: &ConvPlan, c: &crate::ir::Conv2d) -> Vec<i32> {
    let plane = ys[1] * ys[2];
    let zx = i64::from(p.x_zero_point);
    let mut acc: Vec<i64> = (0..ys[0] * plane)
        .map(|o| i64::from(p.bias[o / plane]))
        .collect();
    super::for_each_tap(xs, ys, c, |o, xi, wi| {
        acc[o] += i64::from(p.weight[wi]) * (i64::from(x[xi]) - zx);
    });
    // The plan checked that no accumulator can leave i32.
    acc.into_iter().map(|a| a as i32).collect()
}

/// The conv/linear epilogue; `channel(i)` is the output channel of element `i`.
fn epilogue(acc: &[i32], channel: impl Fn(usize) -> usize, o: &ConvOutput) -> Out {
    match o {
        ConvOutput::Requant {
            mult,
            zero_point,
            min,
        } => Out::Int8(
            acc.iter()
                .enumerate()
                .map(|(i, &a)| {
                    let v = i64::from(*zero_point) + i64::from(requant(a, mult[channel(i)]));
                    v.clamp(i64::from(*min), 127) as i8
                })
                .collect(),
        ),
        ConvOutput::Hardswish {
            mult,
            pre_zero_point,
            table,
        } => Out::Int8(
            acc.iter()
                .enumerate()
                .map(|(i, &a)| {
                    let pre =
                        sat8(i64::from(*pre_zero_point) + i64::from(requant(a, mult[channel(i)])));
                    table[(i32::from(pre) + 128) as usize]
                })
                .collect(),
        ),
        ConvOutput::FloatHardswish {
            scale,
            inv_scale,
            zero_point,
        } => Out::Int8(
            acc.iter()
                .enumerate()
                .map(|(i, &a)| {
                    let c = channel(i);
                    crate::quant::float_hardswish(a, scale[c], inv_scale[c], *zero_point)
                })
                .collect(),
        ),
        ConvOutput::Logits { scale } => Out::Logits(
            acc.iter()
                .enumerate()
                .map(|(i, &a)| a as f32 * scale[channel(i)])
                .collect(),
        ),
    }
}
