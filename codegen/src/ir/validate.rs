//! Validation and shape inference: after this passes, every later stage may
//! index tensors and values by the shapes it computed without checking.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    DType, FORMAT_NAME, FORMAT_VERSION, IrError, Layout, MIN_FORMAT_VERSION, ModelFile, Op,
    TensorSpec,
};

/// Inferred shape of every value: `[C, H, W]` for feature maps, `[N]` for
/// vectors (pooled features, logits). Batch is always 1 and left out.
pub type ValueShapes = BTreeMap<String, Vec<usize>>;

/// Largest value a single dimension may take; keeps every size product far
/// from overflow in later stages.
const MAX_DIM: usize = 1 << 16;
/// Largest element count of one value or tensor.
const MAX_NUMEL: usize = 1 << 28;

fn bad_field(field: &str, reason: impl Into<String>) -> IrError {
    IrError::BadField {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn bad_op(op: &str, reason: impl Into<String>) -> IrError {
    IrError::BadOp {
        op: op.to_owned(),
        reason: reason.into(),
    }
}

fn numel(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_NUMEL)
}

pub(super) fn validate(model: &ModelFile) -> Result<ValueShapes, IrError> {
    let g = &model.graph;
    if g.format != FORMAT_NAME {
        return Err(IrError::WrongFormat {
            found: g.format.clone(),
        });
    }
    if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&g.version) {
        return Err(IrError::UnsupportedVersion {
            found: g.version.to_string(),
            supported: FORMAT_VERSION,
        });
    }
    if g.quantization.is_some() && g.version < 2 {
        return Err(bad_field(
            "version",
            format!(
                "int8 quantization needs version 2, the file says {}",
                g.version
            ),
        ));
    }
    if let Some(q) = g
        .quantization
        .as_ref()
        .filter(|q| !q.float_hardswish.is_empty())
        && g.version < 3
    {
        return Err(bad_field(
            "version",
            format!(
                "quantization.float_hardswish ({}) needs version 3, the file says {}",
                q.float_hardswish.join(", "),
                g.version
            ),
        ));
    }
    if let Some(q) = g
        .quantization
        .as_ref()
        .filter(|q| !q.channel_scales.is_empty())
        && g.version < 4
    {
        let names: Vec<&str> = q.channel_scales.keys().map(String::as_str).collect();
        return Err(bad_field(
            "version",
            format!(
                "quantization.channel_scales ({}) needs version 4, the file says {}",
                names.join(", "),
                g.version
            ),
        ));
    }
    validate_table(model)?;

    let [n, c, h, w] = g.input.shape;
    let Layout::Nchw = g.input.layout;
    if n != 1 || c != 3 {
        return Err(bad_field(
            "input.shape",
            format!("{:?}: expected [1, 3, H, W]", g.input.shape),
        ));
    }
    if h == 0 || w == 0 || h > MAX_DIM || w > MAX_DIM {
        return Err(bad_field(
            "input.shape",
            format!("{:?}: H and W must be in 1..={MAX_DIM}", g.input.shape),
        ));
    }
    if g.preprocess.resize != [h, w] {
        return Err(bad_field(
            "preprocess.resize",
            format!(
                "{:?} differs from the input size [{h}, {w}]",
                g.preprocess.resize
            ),
        ));
    }
    for (i, (&m, &s)) in g.preprocess.mean.iter().zip(&g.preprocess.std).enumerate() {
        if !m.is_finite() || !s.is_finite() || s == 0.0 {
            return Err(bad_field(
                "preprocess",
                format!("channel {i}: mean {m} and std {s} must be finite, std non-zero"),
            ));
        }
    }
    if g.classes.is_empty() || g.classes.len() > MAX_DIM {
        return Err(bad_field("classes", "needs 1 to 65536 class names"));
    }

    let mut shapes = ValueShapes::new();
    shapes.insert(g.input.name.clone(), vec![c, h, w]);
    let mut op_names = BTreeSet::new();
    for op in &g.ops {
        let name = op.name();
        if !op_names.insert(name) {
            return Err(IrError::Duplicate {
                op: name.to_owned(),
                value: name.to_owned(),
            });
        }
        let mut ins = Vec::new();
        for v in op.inputs() {
            let s = shapes.get(v).ok_or_else(|| IrError::UndefinedValue {
                op: name.to_owned(),
                value: v.to_owned(),
            })?;
            ins.push(s.clone());
        }
        let out = infer(model, op, &ins)?;
        if numel(&out).is_none() || out.contains(&0) {
            return Err(bad_op(
                name,
                format!("output shape {out:?} is empty or too large"),
            ));
        }
        if shapes.insert(op.output().to_owned(), out).is_some() {
            return Err(IrError::Duplicate {
                op: name.to_owned(),
                value: op.output().to_owned(),
            });
        }
    }
    let out = shapes.get(&g.output).ok_or_else(|| {
        bad_field(
            "output",
            format!("value {:?} is not defined by any op", g.output),
        )
    })?;
    if out != &[g.classes.len()] {
        return Err(bad_field(
            "output",
            format!(
                "value {:?} has shape {out:?}, expected [{}] (one logit per class)",
                g.output,
                g.classes.len()
            ),
        ));
    }
    if g.quantization.is_some() {
        crate::quant::QuantPlan::new(model, &shapes)?;
    }
    Ok(shapes)
}

/// Table rows against stored tensors, including quantization parameters.
fn validate_table(model: &ModelFile) -> Result<(), IrError> {
    let g = &model.graph;
    if let Some(name) = model.tensors.keys().find(|k| !g.tensors.contains_key(*k)) {
        return Err(IrError::UnlistedTensor {
            tensor: name.clone(),
        });
    }
    for (name, spec) in &g.tensors {
        let ctx = || format!("tensor table entry {name:?}");
        let t = model
            .tensors
            .get(name)
            .ok_or_else(|| IrError::MissingTensor {
                op: None,
                tensor: name.clone(),
            })?;
        if t.dtype != spec.dtype {
            return Err(IrError::TensorDtype {
                context: ctx(),
                tensor: name.clone(),
                expected: spec.dtype.to_string(),
                actual: t.dtype.to_string(),
            });
        }
        if t.shape != spec.shape {
            return Err(IrError::TensorShape {
                context: ctx(),
                tensor: name.clone(),
                expected: spec.shape.clone(),
                actual: t.shape.clone(),
            });
        }
        if numel(&t.shape).is_none() || t.shape.iter().any(|&d| d > MAX_NUMEL) {
            return Err(IrError::TensorShape {
                context: ctx(),
                tensor: name.clone(),
                expected: vec![],
                actual: t.shape.clone(),
            });
        }
        if numel(&t.shape).and_then(|n| n.checked_mul(t.dtype.size())) != Some(t.data.len()) {
            return Err(IrError::Safetensors(format!(
                "tensor {name:?}: {} bytes do not match shape {:?} of {}",
                t.data.len(),
                t.shape,
                t.dtype
            )));
        }
        validate_quant(model, name, spec)?;
    }
    Ok(())
}

fn validate_quant(model: &ModelFile, name: &str, spec: &TensorSpec) -> Result<(), IrError> {
    let bad = |reason: String| IrError::BadQuant {
        tensor: name.to_owned(),
        reason,
    };
    match (&spec.quant, spec.dtype) {
        (None, DType::I8) => {
            let is_zero_point = model
                .graph
                .tensors
                .values()
                .any(|s| s.quant.as_ref().is_some_and(|q| q.zero_point == name));
            if is_zero_point {
                Ok(())
            } else {
                Err(bad("i8 tensors need quant parameters".into()))
            }
        }
        (None, DType::I32) if model.graph.quantization.is_none() => Err(bad(
            "i32 tensors (int8 biases) belong to quantized models (version 2 with quantization)"
                .into(),
        )),
        (None, _) => Ok(()),
        (Some(_), d) if d != DType::I8 => Err(bad(format!("{d} tensors cannot be quantized"))),
        (Some(q), _) => {
            let len = *spec.shape.get(q.axis).ok_or_else(|| {
                bad(format!(
                    "axis {} out of range for shape {:?}",
                    q.axis, spec.shape
                ))
            })?;
            for (what, tname, dtype) in [
                ("scale", &q.scale, DType::F32),
                ("zero_point", &q.zero_point, DType::I8),
            ] {
                let s = model
                    .graph
                    .tensors
                    .get(tname)
                    .ok_or_else(|| IrError::MissingTensor {
                        op: None,
                        tensor: tname.clone(),
                    })?;
                if s.dtype != dtype {
                    return Err(bad(format!(
                        "{what} tensor {tname:?} is {}, expected {dtype}",
                        s.dtype
                    )));
                }
                if s.shape != [len] {
                    return Err(bad(format!(
                        "{what} tensor {tname:?} has shape {:?}, expected [{len}]",
                        s.shape
                    )));
                }
            }
            if let Some(scale) = model.tensors.get(&q.scale).and_then(|t| t.to_f32())
                && let Some(v) = scale.iter().find(|v| !v.is_finite() || **v <= 0.0)
            {
                return Err(bad(format!("scale {v} is not a positive finite number")));
            }
            Ok(())
        }
    }
}

/// Checks that `tensor` exists, is a float-like weight, and has one of the
/// accepted shapes (the first is reported as expected).
fn expect_tensor(
    model: &ModelFile,
    op: &str,
    tensor: &str,
    shapes: &[Vec<usize>],
) -> Result<(), IrError> {
    let t = model
        .tensors
        .get(tensor)
        .ok_or_else(|| IrError::MissingTensor {
            op: Some(op.to_owned()),
            tensor: tensor.to_owned(),
        })?;
    if !shapes.contains(&t.shape) {
        return Err(IrError::TensorShape {
            context: format!("op {op:?}"),
            tensor: tensor.to_owned(),
            expected: shapes[0].clone(),
            actual: t.shape.clone(),
        });
    }
    Ok(())
}

fn expect_value(
    op: &str,
    value: &str,
    shape: &[usize],
    rank: usize,
    expected: impl Fn() -> String,
) -> Result<(), IrError> {
    if shape.len() != rank {
        return Err(IrError::ValueShape {
            op: op.to_owned(),
            value: value.to_owned(),
            expected: expected(),
            actual: shape.to_vec(),
        });
    }
    Ok(())
}

fn positive(op: &str, what: &str, v: usize) -> Result<(), IrError> {
    if v == 0 || v > MAX_DIM {
        return Err(bad_op(
            op,
            format!("{what} is {v}, must be in 1..={MAX_DIM}"),
        ));
    }
    Ok(())
}

/// Output shape of `op` given its input shapes, after checking parameters
/// and weights.
fn infer(model: &ModelFile, op: &Op, ins: &[Vec<usize>]) -> Result<Vec<usize>, IrError> {
    let name = op.name();
    match op {
        Op::Conv2d(c) => {
            let x = &ins[0];
            expect_value(name, &c.input, x, 3, || {
                format!("[{}, H, W]", c.in_channels)
            })?;
            positive(name, "in_channels", c.in_channels)?;
            positive(name, "out_channels", c.out_channels)?;
            positive(name, "groups", c.groups)?;
            for i in 0..2 {
                positive(name, "kernel", c.kernel[i])?;
                positive(name, "stride", c.stride[i])?;
                if c.padding[i] >= c.kernel[i] {
                    return Err(bad_op(
                        name,
                        format!(
                            "padding {:?} must be smaller than kernel {:?}",
                            c.padding, c.kernel
                        ),
                    ));
                }
            }
            if c.in_channels % c.groups != 0 || c.out_channels % c.groups != 0 {
                return Err(bad_op(
                    name,
                    format!(
                        "groups {} must divide in_channels {} and out_channels {}",
                        c.groups, c.in_channels, c.out_channels
                    ),
                ));
            }
            if x[0] != c.in_channels {
                return Err(IrError::ValueShape {
                    op: name.to_owned(),
                    value: c.input.clone(),
                    expected: format!("[{}, H, W] (in_channels)", c.in_channels),
                    actual: x.clone(),
                });
            }
            let mut out = vec![c.out_channels];
            for i in 0..2 {
                let padded = x[i + 1] + 2 * c.padding[i];
                if padded < c.kernel[i] {
                    return Err(IrError::ValueShape {
                        op: name.to_owned(),
                        value: c.input.clone(),
                        expected: format!(
                            "spatial size >= kernel {:?} after padding {:?}",
                            c.kernel, c.padding
                        ),
                        actual: x.clone(),
                    });
                }
                out.push((padded - c.kernel[i]) / c.stride[i] + 1);
            }
            let w = vec![
                c.out_channels,
                c.in_channels / c.groups,
                c.kernel[0],
                c.kernel[1],
            ];
            expect_tensor(model, name, &c.weight, &[w])?;
            expect_tensor(model, name, &c.bias, &[vec![c.out_channels]])?;
            Ok(out)
        }
        Op::SqueezeExcite(s) => {
            let x = &ins[0];
            positive(name, "channels", s.channels)?;
            positive(name, "squeeze_channels", s.squeeze_channels)?;
            if x.len() != 3 || x[0] != s.channels {
                return Err(IrError::ValueShape {
                    op: name.to_owned(),
                    value: s.input.clone(),
                    expected: format!("[{}, H, W] (channels)", s.channels),
                    actual: x.clone(),
                });
            }
            let (c, q) = (s.channels, s.squeeze_channels);
            expect_tensor(model, name, &s.fc1_weight, &[vec![q, c], vec![q, c, 1, 1]])?;
            expect_tensor(model, name, &s.fc1_bias, &[vec![q]])?;
            expect_tensor(model, name, &s.fc2_weight, &[vec![c, q], vec![c, q, 1, 1]])?;
            expect_tensor(model, name, &s.fc2_bias, &[vec![c]])?;
            Ok(x.clone())
        }
        Op::Add(a) => {
            if ins[0] != ins[1] {
                return Err(IrError::ValueShape {
                    op: name.to_owned(),
                    value: a.inputs[1].clone(),
                    expected: format!("{:?} (the shape of {:?})", ins[0], a.inputs[0]),
                    actual: ins[1].clone(),
                });
            }
            Ok(ins[0].clone())
        }
        Op::GlobalAvgPool(p) => {
            let x = &ins[0];
            expect_value(name, &p.input, x, 3, || "[C, H, W]".into())?;
            Ok(vec![x[0]])
        }
        Op::Linear(l) => {
            positive(name, "in_features", l.in_features)?;
            positive(name, "out_features", l.out_features)?;
            let x = &ins[0];
            if x.as_slice() != [l.in_features] {
                return Err(IrError::ValueShape {
                    op: name.to_owned(),
                    value: l.input.clone(),
                    expected: format!("[{}] (in_features)", l.in_features),
                    actual: x.clone(),
                });
            }
            expect_tensor(
                model,
                name,
                &l.weight,
                &[vec![l.out_features, l.in_features]],
            )?;
            expect_tensor(model, name, &l.bias, &[vec![l.out_features]])?;
            Ok(vec![l.out_features])
        }
    }
}
