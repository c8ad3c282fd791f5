//! A naive interpreter of the IR: the oracle between the exporting framework
//! and the generated code, in `f32` for float models and in integers
//! ([`int8`]) for quantized ones.
//!
//! Straight loops over logical NCHW shapes with no packing, fusion or
//! planning, so a mismatch elsewhere can be located layer by layer.

use crate::ir::{Activation, IrError, ModelFile, Op};

pub mod int8;

/// One value computed by the interpreter.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerOutput {
    /// The value name (the op's `output`).
    pub name: String,
    /// Logical shape: `[C, H, W]` or `[N]`.
    pub shape: Vec<usize>,
    /// Data in that shape's row-major (CHW) order (dequantized for an int8 model).
    pub data: Vec<f32>,
    /// The int8 values themselves, for an int8 model's values other than the logits.
    pub quantized: Option<Vec<i8>>,
}

fn act(a: Activation, x: f32) -> f32 {
    match a {
        Activation::None => x,
        Activation::Relu => x.max(0.0),
        Activation::Hardswish => x * hardsigmoid(x),
    }
}

fn hardsigmoid(x: f32) -> f32 {
    (x + 3.0).clamp(0.0, 6.0) / 6.0
}

/// Runs the model on one preprocessed input (`[3, H, W]` flattened) and
/// returns every op's output in execution order; the model's logits are the
/// value named `model.graph.output`. A quantized model (one with
/// `quantization`) runs with its int8 semantics ([`crate::reference::int8`]),
/// and its values are reported dequantized.
pub fn run(model: &ModelFile, input: &[f32]) -> Result<Vec<LayerOutput>, IrError> {
    let shapes = model.validate()?;
    if model.graph.quantization.is_some() {
        let plan = crate::quant::QuantPlan::new(model, &shapes)?;
        return int8::run(model, &shapes, &plan, input);
    }
    run_float(model, &shapes, input, &mut |_, _, _| {})
}

/// What [`run_observed`] calls with each intermediate: its key, its shape and its values.
pub type Observer<'a> = dyn FnMut(&str, &[usize], &[f32]) + 'a;

/// [`run`] of a float model that also shows `observe` every intermediate
/// that int8 calibration needs, by its [`crate::quant::activation_keys`] key, with its
/// shape (`[C, H, W]` for a feature map, `[C]` for a vector): the input, each op's output,
/// the pre-activation of hardswish ops (the op's output shape), and squeeze-excite's pooled
/// and hidden vectors.
pub fn run_observed(
    model: &ModelFile,
    input: &[f32],
    observe: &mut Observer<'_>,
) -> Result<Vec<LayerOutput>, IrError> {
    let shapes = model.validate()?;
    if model.graph.quantization.is_some() {
        return Err(IrError::BadField {
            field: "quantization".into(),
            reason: "calibration observes a float model; this one is already quantized".into(),
        });
    }
    run_float(model, &shapes, input, observe)
}

fn check_input(
    model: &ModelFile,
    shapes: &crate::ir::ValueShapes,
    input: &[f32],
) -> Result<Vec<usize>, IrError> {
    let in_shape = &shapes[&model.graph.input.name];
    if input.len() != in_shape.iter().product::<usize>() {
        return Err(IrError::BadField {
            field: "input".into(),
            reason: format!("{} values given, expected {in_shape:?}", input.len()),
        });
    }
    Ok(in_shape.clone())
}

fn run_float(
    model: &ModelFile,
    shapes: &crate::ir::ValueShapes,
    input: &[f32],
    observe: &mut Observer<'_>,
) -> Result<Vec<LayerOutput>, IrError> {
    let g = &model.graph;
    let in_shape = check_input(model, shapes, input)?;
    observe(&g.input.name, &in_shape, input);
    let mut values: Vec<LayerOutput> = vec![LayerOutput {
        name: g.input.name.clone(),
        shape: in_shape,
        data: input.to_vec(),
        quantized: None,
    }];
    let get = |values: &[LayerOutput], name: &str| -> usize {
        // Validation guarantees every read value exists.
        values.iter().rposition(|v| v.name == name).unwrap_or(0)
    };
    for op in &g.ops {
        let out_shape = shapes[op.output()].clone();
        let data: Vec<f32> = match op {
            Op::Conv2d(c) => {
                let x = &values[get(&values, &c.input)];
                let w = model.tensor_f32(&c.weight)?;
                let b = model.tensor_f32(&c.bias)?;
                let pre = conv2d(&x.data, &x.shape, &out_shape, &w, &b, c);
                if c.activation == Activation::Hardswish {
                    observe(&crate::quant::pre_activation_key(&c.name), &out_shape, &pre);
                }
                pre.into_iter().map(|v| act(c.activation, v)).collect()
            }
            Op::SqueezeExcite(s) => {
                let x = &values[get(&values, &s.input)];
                let (c, q) = (s.channels, s.squeeze_channels);
                let hw = x.shape[1] * x.shape[2];
                let w1 = model.tensor_f32(&s.fc1_weight)?;
                let b1 = model.tensor_f32(&s.fc1_bias)?;
                let w2 = model.tensor_f32(&s.fc2_weight)?;
                let b2 = model.tensor_f32(&s.fc2_bias)?;
                let mean: Vec<f32> = (0..c)
                    .map(|ch| x.data[ch * hw..(ch + 1) * hw].iter().sum::<f32>() / hw as f32)
                    .collect();
                observe(&crate::quant::pooled_key(&s.name), &[c], &mean);
                let hidden: Vec<f32> = (0..q)
                    .map(|j| {
                        (b1[j] + (0..c).map(|i| w1[j * c + i] * mean[i]).sum::<f32>()).max(0.0)
                    })
                    .collect();
                observe(&crate::quant::hidden_key(&s.name), &[q], &hidden);
                let scale: Vec<f32> = (0..c)
                    .map(|j| {
                        hardsigmoid(b2[j] + (0..q).map(|i| w2[j * q + i] * hidden[i]).sum::<f32>())
                    })
                    .collect();
                x.data
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * scale[i / hw])
                    .collect()
            }
            Op::Add(a) => {
                let x = &values[get(&values, &a.inputs[0])].data;
                let y = &values[get(&values, &a.inputs[1])].data;
                x.iter().zip(y).map(|(a, b)| a + b).collect()
            }
            Op::GlobalAvgPool(p) => {
                let x = &values[get(&values, &p.input)];
                let hw = x.shape[1] * x.shape[2];
                x.data
                    .chunks_exact(hw)
                    .map(|ch| ch.iter().sum::<f32>() / hw as f32)
                    .collect()
            }
            Op::Linear(l) => {
                let x = &values[get(&values, &l.input)].data;
                let w = model.tensor_f32(&l.weight)?;
                let b = model.tensor_f32(&l.bias)?;
                let k = l.in_features;
                let pre: Vec<f32> = (0..l.out_features)
                    .map(|j| b[j] + (0..k).map(|i| w[j * k + i] * x[i]).sum::<f32>())
                    .collect();
                if l.activation == Activation::Hardswish {
                    observe(&crate::quant::pre_activation_key(&l.name), &out_shape, &pre);
                }
                pre.into_iter().map(|v| act(l.activation, v)).collect()
            }
        };
        observe(op.output(), &out_shape, &data);
        values.push(LayerOutput {
            name: op.output().to_owned(),
            shape: out_shape,
            data,
            quantized: None,
        });
    }
    values.remove(0);
    Ok(values)
}

/// The logits alone.
pub fn logits(model: &ModelFile, input: &[f32]) -> Result<Vec<f32>, IrError> {
    let out = run(model, input)?;
    let name = &model.graph.output;
    Ok(out
        .into_iter()
        .rfind(|v| &v.name == name)
        .map(|v| v.data)
        .unwrap_or_default())
}

/// The convolution before its activation: `bias[co]` plus every tap, per output.
fn conv2d(
    x: &[f32],
    xs: &[usize],
    ys: &[usize],
    w: &[f32],
    b: &[f32],
    c: &crate::ir::Conv2d,
) -> Vec<f32> {
    let plane = ys[1] * ys[2];
    let mut y: Vec<f32> = (0..ys[0] * plane).map(|o| b[o / plane]).collect();
    for_each_tap(xs, ys, c, |o, xi, wi| y[o] += w[wi] * x[xi]);
    y
}

/// Visits every tap of convolution `c` that falls inside the input (zero
/// padding contributes nothing in either semantics): `f(output index, input
/// index, weight index)`, all in logical CHW / `[out, in/groups, kh, kw]`
/// order, each output's taps in one fixed order. The float and int8
/// interpreters share it, so they convolve identically.
pub(crate) fn for_each_tap(
    xs: &[usize],
    ys: &[usize],
    c: &crate::ir::Conv2d,
    mut f: impl FnMut(usize, usize, usize),
) {
    let (ih, iw) = (xs[1] as isize, xs[2] as isize);
    let (oc, oh, ow) = (ys[0], ys[1], ys[2]);
    let [kh, kw] = c.kernel;
    let cin_g = c.in_channels / c.groups;
    let cout_g = c.out_channels / c.groups;
    for co in 0..oc {
        let g = co / cout_g;
        for oy in 0..oh {
            for ox in 0..ow {
                let o = (co * oh + oy) * ow + ox;
                for ci in 0..cin_g {
                    let cx = g * cin_g + ci;
                    for ky in 0..kh {
                        let iy = (oy * c.stride[0] + ky) as isize - c.padding[0] as isize;
                        if iy < 0 || iy >= ih {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix = (ox * c.stride[1] + kx) as isize - c.padding[1] as isize;
                            if ix < 0 || ix >= iw {
                                continue;
                            }
                            let xi = (cx * ih as usize + iy as usize) * iw as usize + ix as usize;
                            f(o, xi, ((co * cin_g + ci) * kh + ky) * kw + kx);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SyntheticSpec;

    #[test]
    fn hand_computed_conv_and_activations() {
        // 1 input channel 3x3 of ones, 2x2 kernel of ones, stride 1, pad 0:
        // every output sums 4 ones, plus bias.
        let c = crate::ir::Conv2d {
            name: "c".into(),
            input: "x".into(),
            output: "y".into(),
            weight: "w".into(),
            bias: "b".into(),
            in_channels: 1,
            out_channels: 1,
            kernel: [2, 2],
            stride: [1, 1],
            padding: [0, 0],
            groups: 1,
            activation: Activation::Hardswish,
        };
        let y = conv2d(&[1.0; 9], &[1, 3, 3], &[1, 2, 2], &[1.0; 4], &[-5.0], &c);
        assert_eq!(y, vec![-1.0; 4]);
        // hardswish(-1) = -1 * 2 / 6.
        assert_eq!(act(c.activation, y[0]), -1.0 / 3.0);
        assert_eq!(act(Activation::Relu, -2.0), 0.0);
        assert_eq!(act(Activation::Hardswish, 4.0), 4.0);
    }

    #[test]
    fn tiny_model_outputs_every_value_with_its_shape() {
        let m = SyntheticSpec::tiny(1).build().unwrap();
        let x: Vec<f32> = (0..3 * 32 * 32)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let out = run(&m, &x).unwrap();
        assert_eq!(out.len(), m.graph.ops.len());
        let shapes = m.validate().unwrap();
        for v in &out {
            assert_eq!(
                v.data.len(),
                shapes[&v.name].iter().product::<usize>(),
                "{}",
                v.name
            );
            assert!(v.data.iter().all(|f| f.is_finite()), "{}", v.name);
        }
        let l = logits(&m, &x).unwrap();
        assert_eq!(l.len(), 3);
        // Random weights should still separate the classes somewhat.
        assert!(l.iter().any(|&v| (v - l[0]).abs() > 1e-3), "{l:?}");
        assert!(run(&m, &x[1..]).is_err());
    }
}
