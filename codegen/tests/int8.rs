//! int8 models: post-training quantization of synthetic models tracks the
//! float network, the file round-trips, and every corrupt quantization
//! parameter is rejected with an error naming the tensor or activation.

use derm_codegen::ir::{IrError, ModelFile, QParams};
use derm_codegen::quant::ptq::{Calibration, RangeMethod, quantize};
use derm_codegen::quant::{activation_keys, pre_activation_key};
use derm_codegen::reference;
use derm_codegen::synthetic::{SyntheticSpec, tiny_branching};

fn input(model: &ModelFile, seed: u64) -> Vec<f32> {
    derm_codegen::synthetic::smooth_input(model, seed)
}

fn int8_of(model: &ModelFile, n: u64, method: RangeMethod) -> ModelFile {
    let mut cal = Calibration::new();
    for s in 0..n {
        cal.observe(model, &input(model, s)).unwrap();
    }
    quantize(model, &cal, method).unwrap()
}

/// Largest minus smallest value.
fn span(v: &[f32]) -> f32 {
    v.iter().cloned().fold(f32::MIN, f32::max) - v.iter().cloned().fold(f32::MAX, f32::min)
}

/// Largest |a - b| over the logits, as a fraction of b's range.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / span(b).max(1e-12)
}

fn tiny() -> ModelFile {
    SyntheticSpec::tiny(7).build().unwrap()
}

#[test]
fn ptq_logits_track_the_float_model() {
    for (name, model) in [("tiny", tiny()), ("branching", tiny_branching(5).unwrap())] {
        for method in [RangeMethod::MinMax, RangeMethod::Percentile(0.9999)] {
            let q = int8_of(&model, 24, method);
            // Max |diff| over all test inputs against the mean logit range:
            // one input with nearly equal logits would make a per-input ratio meaningless.
            let (mut diff, mut range) = (0f32, 0f32);
            for s in 100..116 {
                let x = input(&model, s);
                let f = reference::logits(&model, &x).unwrap();
                let i = reference::logits(&q, &x).unwrap();
                diff = diff.max(rel_err(&i, &f) * span(&f));
                range += span(&f) / 16.0;
            }
            let worst = diff / range;
            // Random weights amplify rounding through ~20 layers (1-12% per layer here);
            // a wrong op or rescale gives a difference of the order of the whole range.
            assert!(worst < 0.2, "{name} {method}: {worst}");
        }
    }
}

#[test]
fn int8_file_round_trips_and_reports_itself() {
    let q = int8_of(&tiny(), 8, RangeMethod::MinMax);
    assert_eq!(q.graph.version, 2);
    assert_eq!(derm_codegen::metadata::precision(&q), "int8");
    let back = ModelFile::from_bytes(&q.to_bytes().unwrap()).unwrap();
    assert_eq!(back, q);
    // Weights are a quarter of the float file's.
    let bytes = |m: &ModelFile| m.tensors.values().map(|t| t.data.len()).sum::<usize>();
    // A third of the float file's bytes for this tiny model, whose per-channel scales and
    // i32 biases weigh more than in a real network (MobileNetV3: docs/int8.md).
    let ratio = bytes(&q) as f64 / bytes(&tiny()) as f64;
    assert!(ratio < 0.36, "{ratio}");
    let x = input(&q, 3);
    let a = reference::logits(&q, &x).unwrap();
    assert_eq!(a, reference::logits(&back, &x).unwrap());
    // Every value is reported as int8 and its dequantization.
    let acts = &q.graph.quantization.as_ref().unwrap().activations;
    for v in reference::run(&q, &x).unwrap() {
        let Some(ints) = &v.quantized else {
            assert_eq!(v.name, q.graph.output);
            continue;
        };
        let p = acts[&v.name];
        for (d, &i) in v.data.iter().zip(ints) {
            assert_eq!(*d, p.scale * (i32::from(i) - p.zero_point) as f32);
        }
    }
    // Compiled to int8 kernel calls: the generated module quantizes its input first and
    // ends in the f32 logits of the last linear layer.
    let g = derm_codegen::generate(&q, &Default::default()).unwrap();
    assert!(
        g.code.contains("kernels::int8::quantize("),
        "no input quantization"
    );
    assert!(
        g.code.contains("kernels::int8::linear_logits("),
        "no f32 logits"
    );
    assert!(
        !g.code.contains("kernels::pointwise("),
        "a float kernel in an int8 model"
    );
    assert_eq!(g.report.layers[0].kernel, "int8::quantize");
}

#[test]
fn keys_cover_every_intermediate() {
    let m = tiny();
    let keys = activation_keys(&m.graph);
    assert_eq!(keys[0], m.graph.input.name);
    assert!(!keys.contains(&m.graph.output));
    assert!(keys.iter().any(|k| k.ends_with(":pooled")));
    assert!(keys.iter().any(|k| k.ends_with(":hidden")));
    assert!(keys.iter().any(|k| k.ends_with(":pre_activation")));
}

/// The int8 file `q` of the float model `m` stays close to it on inputs it was not
/// calibrated on (closer than a plain int8 file would need to be to be useful), and its bytes
/// read back to the same model.
fn tracks_float_and_round_trips(m: &ModelFile, q: &ModelFile) {
    for s in 10..13 {
        let x = input(m, s);
        let f = reference::logits(m, &x).unwrap();
        let i = reference::logits(q, &x).unwrap();
        assert!(rel_err(&i, &f) < 0.1, "seed {s}: {i:?} vs {f:?}");
    }
    let back = ModelFile::from_bytes(&q.to_bytes().unwrap()).unwrap();
    assert_eq!(&back, q);
}

/// The quantized tiny model with its graph JSON edited, read back from bytes.
fn read_edited(edit: impl FnOnce(&mut serde_json::Value)) -> Result<ModelFile, IrError> {
    edited_copy(&int8_of(&tiny(), 4, RangeMethod::MinMax), edit)
}

/// `q` with its graph JSON edited, read back from bytes (validated as any file is).
fn edited_copy(
    q: &ModelFile,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<ModelFile, IrError> {
    let mut v = serde_json::to_value(&q.graph).unwrap();
    edit(&mut v);
    let mut q2 = q.clone();
    q2.graph = serde_json::from_value(v).map_err(|e| IrError::GraphJson(e.to_string()))?;
    ModelFile::from_bytes(&raw_bytes(&q2))
}

/// Serializes without validating (to_bytes would refuse a corrupt model).
fn raw_bytes(m: &ModelFile) -> Vec<u8> {
    let meta = std::collections::HashMap::from([(
        "derm.graph".to_owned(),
        serde_json::to_string(&m.graph).unwrap(),
    )]);
    let views: Vec<_> = m
        .tensors
        .iter()
        .map(|(k, t)| {
            let dt = t.dtype.to_safetensors();
            (
                k.clone(),
                safetensors::tensor::TensorView::new(dt, t.shape.clone(), &t.data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

fn act_key(m: &ModelFile) -> String {
    // A mid-network value: the second op's output.
    m.graph.ops[1].output().to_owned()
}

#[test]
fn corrupt_activation_parameters_are_named() {
    let key = act_key(&tiny());
    let set = |p: serde_json::Value| {
        let key = key.clone();
        move |v: &mut serde_json::Value| v["quantization"]["activations"][&key] = p
    };
    for (p, expect) in [
        (
            serde_json::json!({"scale": 0.0, "zero_point": 0}),
            "not a positive normal",
        ),
        (
            serde_json::json!({"scale": -0.5, "zero_point": 0}),
            "not a positive normal",
        ),
        (
            serde_json::json!({"scale": 1e-40, "zero_point": 0}),
            "not a positive normal",
        ),
        (
            serde_json::json!({"scale": 0.1, "zero_point": 128}),
            "outside -128..=127",
        ),
        (
            serde_json::json!({"scale": 0.1, "zero_point": -129}),
            "outside -128..=127",
        ),
        // Consistent types, but the multiplier into this value needs a shift beyond 62.
        (
            serde_json::json!({"scale": 1e30, "zero_point": 0}),
            "shift outside 1..=62",
        ),
    ] {
        let e = read_edited(set(p.clone())).unwrap_err().to_string();
        assert!(e.contains(&key) && e.contains(expect), "{p}: {e}");
    }
    // NaN has no JSON form: null is a schema error naming the field.
    let e = read_edited(set(serde_json::json!({"scale": null, "zero_point": 0})))
        .unwrap_err()
        .to_string();
    assert!(e.contains("graph JSON") && e.contains("null"), "{e}");
    // And built in memory, NaN is named like zero.
    let mut q = int8_of(&tiny(), 4, RangeMethod::MinMax);
    q.graph.quantization.as_mut().unwrap().activations.insert(
        key.clone(),
        QParams {
            scale: f32::NAN,
            zero_point: 0,
        },
    );
    let e = q.validate().unwrap_err().to_string();
    assert!(e.contains(&key) && e.contains("NaN"), "{e}");
}

#[test]
fn missing_extra_and_versioned_keys_are_named() {
    let m = tiny();
    let pre = m
        .graph
        .ops
        .iter()
        .find_map(|o| match o {
            derm_codegen::ir::Op::Conv2d(c)
                if c.activation == derm_codegen::ir::Activation::Hardswish =>
            {
                Some(pre_activation_key(&c.name))
            }
            _ => None,
        })
        .unwrap();
    let e = read_edited(|v| {
        v["quantization"]["activations"]
            .as_object_mut()
            .unwrap()
            .remove(&pre);
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains(&pre) && e.contains("missing"), "{e}");
    let e = read_edited(|v| {
        v["quantization"]["activations"]["no such value"] =
            serde_json::json!({"scale": 0.1, "zero_point": 0})
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("no such value"), "{e}");
    let out = m.graph.output.clone();
    let e = read_edited(|v| {
        v["quantization"]["activations"][&out] = serde_json::json!({"scale": 0.1, "zero_point": 0})
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains(&out) && e.contains("f32"), "{e}");
    let e = read_edited(|v| v["version"] = 1.into())
        .unwrap_err()
        .to_string();
    assert!(e.contains("version 2"), "{e}");
}

#[test]
fn corrupt_weights_and_biases_are_named() {
    let q = int8_of(&tiny(), 4, RangeMethod::MinMax);
    let conv = match &q.graph.ops[1] {
        derm_codegen::ir::Op::Conv2d(c) => c.clone(),
        o => panic!("op 1 is {}", o.kind()),
    };
    let spec = q.graph.tensors[&conv.weight].quant.clone().unwrap();

    // A weight of -128.
    let mut m = q.clone();
    m.tensors.get_mut(&conv.weight).unwrap().data[0] = 0x80;
    let e = ModelFile::from_bytes(&raw_bytes(&m))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&conv.weight) && e.contains("-128"), "{e}");

    // An asymmetric weight zero point.
    let mut m = q.clone();
    m.tensors.get_mut(&spec.zero_point).unwrap().data[0] = 3;
    let e = ModelFile::from_bytes(&raw_bytes(&m))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&conv.weight) && e.contains("symmetric"), "{e}");

    // Weight scales of 0 and NaN.
    for bad in [0f32, f32::NAN] {
        let mut m = q.clone();
        m.tensors.get_mut(&spec.scale).unwrap().data[..4].copy_from_slice(&bad.to_le_bytes());
        let e = ModelFile::from_bytes(&raw_bytes(&m))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&conv.weight), "{bad}: {e}");
    }

    // A float bias in an int8 model.
    let mut m = q.clone();
    let n = m.tensors[&conv.bias].shape[0];
    m.tensors.insert(
        conv.bias.clone(),
        derm_codegen::ir::Tensor::from_f32(vec![n], &vec![0.0; n]),
    );
    m.graph.tensors.get_mut(&conv.bias).unwrap().dtype = derm_codegen::ir::DType::F32;
    let e = ModelFile::from_bytes(&raw_bytes(&m))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&conv.bias) && e.contains("i32"), "{e}");

    // i32 tensors in a float model.
    let mut f = tiny();
    f.tensors.insert(
        conv.bias.clone(),
        derm_codegen::ir::Tensor::from_i32(vec![n], &vec![0; n]),
    );
    f.graph.tensors.get_mut(&conv.bias).unwrap().dtype = derm_codegen::ir::DType::I32;
    let e = ModelFile::from_bytes(&raw_bytes(&f))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&conv.bias) && e.contains("quantized models"),
        "{e}"
    );
}

/// `quantization.float_hardswish`: a file that lists ops is version 3, has no
/// pre-activation key for them, plans the float epilogue, stays close to the float model,
/// round-trips; a wrong name, a duplicate, an older version or a left-over pre-activation
/// key is rejected naming what is wrong.
#[test]
fn float_hardswish_files_are_version_3_and_checked() {
    use derm_codegen::ir::{Activation, Op};
    use derm_codegen::quant::{ConvOutput, OpPlan, QuantPlan};
    let m = tiny();
    let q = derm_codegen::synthetic::int8_float_hardswish_of(&m, 4).unwrap();
    let float = q
        .graph
        .quantization
        .as_ref()
        .unwrap()
        .float_hardswish
        .clone();
    let hardswish: Vec<String> = m
        .graph
        .ops
        .iter()
        .filter(|o| matches!(o, Op::Conv2d(c) if c.activation == Activation::Hardswish))
        .map(|o| o.name().to_owned())
        .collect();
    assert!(hardswish.len() >= 2, "{hardswish:?}");
    assert_eq!(float, hardswish);
    assert_eq!(q.graph.version, 3);
    assert!(
        !activation_keys(&q.graph)
            .iter()
            .any(|k| k.ends_with(":pre_activation"))
    );
    let shapes = q.validate().unwrap();
    let plan = QuantPlan::new(&q, &shapes).unwrap();
    let floats = plan
        .ops
        .iter()
        .filter(|p| matches!(p, OpPlan::Conv(c) if matches!(c.output, ConvOutput::FloatHardswish { .. })))
        .count();
    assert_eq!(floats, hardswish.len());
    tracks_float_and_round_trips(&m, &q);

    let edited = |edit: &dyn Fn(&mut serde_json::Value)| edited_copy(&q, edit);
    let e = edited(&|v| v["version"] = 2.into())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("float_hardswish") && e.contains("version 3"),
        "{e}"
    );
    // An op without a hardswish (the graph output, a linear layer) named.
    let out_op = m.graph.ops.last().unwrap().name().to_owned();
    let e = edited(&|v| v["quantization"]["float_hardswish"][0] = out_op.clone().into())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&out_op) && e.contains("not a hardswish"), "{e}");
    let e = edited(&|v| v["quantization"]["float_hardswish"][0] = "no such op".into())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such op"), "{e}");
    let first = hardswish[0].clone();
    let e = edited(&|v| {
        v["quantization"]["float_hardswish"]
            .as_array_mut()
            .unwrap()
            .push(first.clone().into())
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains(&first) && e.contains("twice"), "{e}");
    let pre = pre_activation_key(&first);
    let e = edited(&|v| {
        v["quantization"]["activations"][&pre] = serde_json::json!({"scale": 0.1, "zero_point": 0})
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains(&pre), "{e}");
    // A file that no longer lists an op needs its pre-activation grid back.
    let e = edited(&|v| v["quantization"]["float_hardswish"] = serde_json::json!([]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(":pre_activation") && e.contains("missing"),
        "{e}"
    );
}

/// A channel whose weights are (nearly) zero but whose bias is not, as trained networks
/// have (a squeeze-excite gate that learned to ignore its input): its weight scale is
/// raised until the bias fits in `2^30` accumulator units, instead of the quantizer
/// failing with a bias beyond `i32`; the bias keeps its value and the other channels
/// their `max |w| / 127` scales.
#[test]
fn a_dead_channel_with_a_bias_still_quantizes() {
    let mut m = tiny();
    let conv = match &m.graph.ops[1] {
        derm_codegen::ir::Op::Conv2d(c) => c.clone(),
        o => panic!("op 1 is {}", o.kind()),
    };
    let w_shape = m.tensors[&conv.weight].shape.clone();
    let mut w = m.tensor_f32(&conv.weight).unwrap();
    let mut b = m.tensor_f32(&conv.bias).unwrap();
    let inner = w.len() / conv.out_channels;
    for (i, v) in w[..inner].iter_mut().enumerate() {
        *v = if i % 2 == 0 { 2.5e-7 } else { -1e-7 };
    }
    b[0] = 3.0;
    m.tensors.insert(
        conv.weight.clone(),
        derm_codegen::ir::Tensor::from_f32(w_shape, &w),
    );
    m.tensors.insert(
        conv.bias.clone(),
        derm_codegen::ir::Tensor::from_f32(vec![b.len()], &b),
    );
    let m = ModelFile::new(m.graph.clone(), m.tensors.clone()).unwrap();

    let q = int8_of(&m, 8, RangeMethod::MinMax);
    let sx = q.graph.quantization.as_ref().unwrap().activations[&conv.input].scale;
    let spec = q.graph.tensors[&conv.weight].quant.clone().unwrap();
    let scales = q.tensors[&spec.scale].to_f32().unwrap();
    let bq = q.tensors[&conv.bias].to_i32().unwrap();
    assert!(
        bq[0].unsigned_abs() <= 1 << 30 && bq[0].unsigned_abs() > 1 << 29,
        "bias 0 in accumulator units: {}",
        bq[0]
    );
    let back = f64::from(bq[0]) * f64::from(sx) * f64::from(scales[0]);
    assert!((back - 3.0).abs() < 1e-6, "bias 0 dequantized: {back}");
    // The scale was raised far above max |w| / 127, and the near-zero weights are
    // rounded on it.
    assert!(scales[0] > 10.0 * 2.5e-7 / 127.0, "scale 0: {}", scales[0]);
    let qw = q.tensors[&conv.weight].to_i8().unwrap();
    for (v, &x) in qw[..inner].iter().zip(&w[..inner]) {
        assert_eq!(
            f64::from(*v),
            (f64::from(x) / f64::from(scales[0])).round_ties_even(),
            "{:?}",
            &qw[..inner]
        );
    }
    for (c, row) in w.chunks(inner).enumerate().skip(1) {
        let max = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert_eq!(scales[c], max / 127.0, "channel {c}");
    }
    // And the network still tracks the float one.
    let x = input(&m, 100);
    let f = reference::logits(&m, &x).unwrap();
    let i = reference::logits(&q, &x).unwrap();
    assert!(rel_err(&i, &f) < 0.2, "{}", rel_err(&i, &f));
}

/// `quantization.channel_scales`: a file with per-channel grids on the depthwise inputs is
/// version 4, plans per-channel multipliers and inverse scales, stays close to the float
/// model, round-trips; a corrupt entry (a wrong count, a bad scale, a value that is not a
/// depthwise input, a table hardswish writer, an older version) is rejected by name.
#[test]
fn channel_scale_files_are_version_4_and_checked() {
    use derm_codegen::quant::{ConvOutput, OpPlan, QuantPlan, depthwise_inputs};
    let m = tiny();
    let q = derm_codegen::synthetic::int8_channel_grids_of(&m, 4).unwrap();
    let quant = q.graph.quantization.as_ref().unwrap();
    let grids = depthwise_inputs(&m.graph);
    assert!(grids.len() >= 2, "{grids:?}");
    assert_eq!(quant.channel_scales.keys().cloned().collect::<Vec<_>>(), {
        let mut g = grids.clone();
        g.sort();
        g
    });
    assert_eq!(q.graph.version, 4);
    // The channels really have different scales, and the largest is the tensor's.
    for (k, s) in &quant.channel_scales {
        let (lo, hi) = s
            .iter()
            .fold((f32::MAX, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(hi > lo, "{k}: {s:?}");
        assert_eq!(quant.activations[k].scale, hi, "{k}");
    }
    let shapes = q.validate().unwrap();
    let plan = QuantPlan::new(&q, &shapes).unwrap();
    // A float hardswish writing a per-channel grid has per-channel inverse scales.
    assert!(plan.ops.iter().any(|p| matches!(p,
        OpPlan::Conv(c) if matches!(&c.output, ConvOutput::FloatHardswish { inv_scale, .. }
            if inv_scale.iter().any(|v| *v != inv_scale[0])))));
    tracks_float_and_round_trips(&m, &q);

    let edited = |edit: &dyn Fn(&mut serde_json::Value)| edited_copy(&q, edit);
    let key = grids[0].clone();
    let e = edited(&|v| v["version"] = 3.into())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("channel_scales") && e.contains("version 4"),
        "{e}"
    );
    let e = edited(&|v| {
        v["quantization"]["channel_scales"][&key]
            .as_array_mut()
            .unwrap()
            .pop();
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains(&key) && e.contains("scales for"), "{e}");
    for bad in [0.0, -1.0, 1e-40] {
        let e = edited(&|v| v["quantization"]["channel_scales"][&key][0] = bad.into())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&key) && e.contains("channel 0"), "{bad}: {e}");
    }
    // The tensor scale must be the largest channel scale.
    let e = edited(&|v| v["quantization"]["activations"][&key]["scale"] = 123.0.into())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&key) && e.contains("largest"), "{e}");
    // A value that a pointwise convolution reads (the network input here) cannot have one.
    let input_name = m.graph.input.name.clone();
    let e = edited(&|v| {
        v["quantization"]["channel_scales"][&input_name] = serde_json::json!([0.1, 0.1, 0.1])
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains(&input_name) && e.contains("depthwise"), "{e}");
    // A writer whose hardswish is a table (one grid) cannot write one.
    let writer = m
        .graph
        .ops
        .iter()
        .find(|o| {
            o.output() == key
                && matches!(o, derm_codegen::ir::Op::Conv2d(c)
                    if c.activation == derm_codegen::ir::Activation::Hardswish)
        })
        .map(|o| o.name().to_owned());
    if let Some(w) = writer {
        let e = edited(&|v| {
            let list = v["quantization"]["float_hardswish"].as_array_mut().unwrap();
            list.retain(|n| n.as_str() != Some(w.as_str()));
            v["quantization"]["activations"][derm_codegen::quant::pre_activation_key(&w)] =
                serde_json::json!({"scale": 0.05, "zero_point": 0});
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains(&key) && e.contains("table"), "{e}");
    } else {
        panic!("the tiny model's first depthwise input {key} has no hardswish writer");
    }
}
