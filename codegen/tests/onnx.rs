//! ONNX export: the bytes decode as ONNX, the graph is well formed (topological, single
//! assignment, typed interface), holds the model file's weights bit for bit, and computes
//! what the reference interpreter computes. The last is checked by a small interpreter of
//! the ONNX operators used, written from the ONNX operator specs, so a wrong attribute
//! (pads, group, alpha, transB) fails here without ONNX Runtime; scripts/check_onnx.sh runs
//! the files in ONNX Runtime itself.

use std::collections::{BTreeMap, HashMap, HashSet};

use derm_codegen::ir::{Activation, DType, ModelFile, Op, Preprocess, Quant, Tensor};
use derm_codegen::metadata::{ModelMetadata, sha256_hex};
use derm_codegen::onnx::proto::{
    AttributeProto, ModelProto, NodeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto::dimension, type_proto,
};
use derm_codegen::onnx::{self, ExportOptions, OnnxError};
use derm_codegen::reference;
use derm_codegen::synthetic::{self, DEFAULT_CLASSES, SplitMix64, SyntheticSpec};
use prost::Message;

fn tiny() -> ModelFile {
    SyntheticSpec::tiny(7).build().unwrap()
}

fn small() -> ModelFile {
    SyntheticSpec::mobilenet_v3_small(&DEFAULT_CLASSES, 11)
        .build()
        .unwrap()
}

fn export(m: &ModelFile) -> ModelProto {
    let bytes = onnx::to_onnx(m).unwrap();
    ModelProto::decode(bytes.as_slice()).unwrap()
}

fn shape_of(v: &ValueInfoProto) -> (i32, Vec<i64>) {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.clone())
    else {
        panic!("{}: not a tensor type", v.name);
    };
    let dims = t
        .shape
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value {
            Some(dimension::Value::DimValue(n)) => n,
            ref other => panic!("{}: dimension {other:?}", v.name),
        })
        .collect();
    (t.elem_type, dims)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Inputs in [-1, 1], like normalized pixels with mean = std = 0.5.
fn sample(m: &ModelFile, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    let n: usize = m.graph.input.shape.iter().product();
    (0..n).map(|_| rng.uniform()).collect()
}

/// The structural properties every export must have.
fn check_structure(m: &ModelFile, p: &ModelProto) {
    assert_eq!(p.ir_version, 8);
    assert_eq!(p.opset_import.len(), 1);
    assert_eq!(p.opset_import[0].domain, "");
    assert_eq!(p.opset_import[0].version, 17);
    assert_eq!(p.producer_name, "derm-codegen");
    assert_eq!(p.producer_version, env!("CARGO_PKG_VERSION"));
    let g = p.graph.as_ref().unwrap();
    let [_, _, h, w] = m.graph.input.shape;

    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name, "input");
    let float = DataType::Float as i32;
    assert_eq!(
        shape_of(&g.input[0]),
        (float, vec![1, 3, h as i64, w as i64])
    );
    assert_eq!(g.output.len(), 1);
    assert_eq!(g.output[0].name, "logits");
    assert_eq!(
        shape_of(&g.output[0]),
        (float, vec![1, m.num_classes() as i64])
    );

    // Single assignment, topological order: every name is defined once, before it is read.
    let mut defined: HashSet<&str> = HashSet::from(["input"]);
    for t in &g.initializer {
        assert!(
            defined.insert(&t.name),
            "initializer {:?} defined twice",
            t.name
        );
        assert_eq!(t.data_type, float, "{}", t.name);
        let numel: i64 = t.dims.iter().product();
        assert_eq!(numel as usize * 4, t.raw_data.len(), "{}", t.name);
        assert!(t.float_data.is_empty(), "{}: raw_data only", t.name);
    }
    let typed: HashMap<&str, &ValueInfoProto> =
        g.value_info.iter().map(|v| (v.name.as_str(), v)).collect();
    assert_eq!(typed.len(), g.value_info.len(), "value_info names repeat");
    for n in &g.node {
        assert_eq!(n.domain, "", "{}", n.name);
        for i in &n.input {
            assert!(
                defined.contains(i.as_str()),
                "node {:?} reads {i:?} before it is defined",
                n.name
            );
        }
        assert_eq!(n.output.len(), 1, "{}", n.name);
        let out = n.output[0].as_str();
        assert!(defined.insert(out), "node {:?} redefines {out:?}", n.name);
        if out != "logits" {
            assert!(typed.contains_key(out), "{out} has no value_info");
        }
    }
    assert!(defined.contains("logits"));
    let node_names: HashSet<&str> = g.node.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(node_names.len(), g.node.len(), "node names repeat");

    // Readable names: every op and every intermediate value keeps its model-file name.
    for op in &m.graph.ops {
        assert!(
            node_names.contains(op.name()),
            "no node named {:?}",
            op.name()
        );
        if op.output() != m.graph.output {
            assert!(
                defined.contains(op.output()),
                "no value named {:?}",
                op.output()
            );
        }
    }

    // Op counts follow the documented lowering.
    let mut ir: BTreeMap<&str, usize> = BTreeMap::new();
    let mut bump = |k: &'static str, n: usize| *ir.entry(k).or_default() += n;
    for op in &m.graph.ops {
        match op {
            Op::Conv2d(c) => {
                bump("Conv", 1);
                match c.activation {
                    Activation::None => {}
                    Activation::Relu => bump("Relu", 1),
                    Activation::Hardswish => bump("HardSwish", 1),
                }
            }
            Op::SqueezeExcite(_) => {
                for k in ["GlobalAveragePool", "Relu", "HardSigmoid", "Mul"] {
                    bump(k, 1);
                }
                bump("Conv", 2);
            }
            Op::Add(_) => bump("Add", 1),
            Op::GlobalAvgPool(_) => {
                bump("GlobalAveragePool", 1);
                bump("Flatten", 1);
            }
            Op::Linear(l) => {
                bump("Gemm", 1);
                match l.activation {
                    Activation::None => {}
                    Activation::Relu => bump("Relu", 1),
                    Activation::Hardswish => bump("HardSwish", 1),
                }
            }
        }
    }
    let mut got: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &g.node {
        *got.entry(n.op_type.as_str()).or_default() += 1;
    }
    assert_eq!(got, ir);

    // Weights: every tensor an op reads, as the dequantized f32 values, bit for bit.
    let inits: HashMap<&str, &[u8]> = g
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t.raw_data.as_slice()))
        .collect();
    let mut read = HashSet::new();
    for op in &m.graph.ops {
        for t in op.tensor_names() {
            read.insert(t);
            let want = f32_bytes(&m.tensor_f32(t).unwrap());
            assert!(
                inits[t] == want.as_slice(),
                "initializer {t} differs from the model file"
            );
        }
    }
    assert_eq!(inits.len(), read.len(), "one initializer per tensor read");

    // Metadata: what an ONNX user needs to feed the model.
    let meta: HashMap<&str, &str> = p
        .metadata_props
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    let classes: Vec<String> = serde_json::from_str(meta[onnx::META_CLASSES]).unwrap();
    assert_eq!(classes, m.graph.classes);
    let pre: Preprocess = serde_json::from_str(meta[onnx::META_PREPROCESS]).unwrap();
    assert_eq!(pre, m.graph.preprocess);
    assert_eq!(
        meta[onnx::META_PRECISION],
        derm_codegen::metadata::precision(m)
    );
    let prov: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(meta[onnx::META_PROVENANCE]).unwrap();
    assert_eq!(prov, m.graph.provenance);
}

#[test]
fn tiny_export_is_well_formed() {
    let m = tiny();
    let p = export(&m);
    check_structure(&m, &p);
    // Without a source file there is no file hash to record.
    assert!(
        !p.metadata_props
            .iter()
            .any(|e| e.key == onnx::META_SOURCE_SHA256)
    );
}

#[test]
fn small_export_is_well_formed_with_the_expected_ops() {
    let m = small();
    let p = export(&m);
    check_structure(&m, &p);
    let g = p.graph.unwrap();
    let count = |t: &str| g.node.iter().filter(|n| n.op_type == t).count();
    // 34 convs (stem, 11 depthwise, 10 expand, 11 project, last), 9 SE with 2 convs each.
    assert_eq!(count("Conv"), 34 + 2 * 9);
    assert_eq!(count("HardSigmoid"), 9);
    assert_eq!(count("Add"), 6);
    assert_eq!(count("Gemm"), 1);
    // The stem: 3x3 stride 2, pad 1, dense; a depthwise conv carries its group count.
    let stem = g.node.iter().find(|n| n.name == "features.0.0").unwrap();
    assert_eq!(ints(stem, "strides"), [2, 2]);
    assert_eq!(ints(stem, "pads"), [1, 1, 1, 1]);
    assert_eq!(int(stem, "group"), Some(1));
    let dw = g
        .node
        .iter()
        .find(|n| n.name == "features.1.block.0.0")
        .unwrap();
    assert_eq!(int(dw, "group"), Some(16));
    let params: usize = g.initializer.iter().map(|t| t.raw_data.len() / 4).sum();
    let ir_params: usize = m
        .graph
        .ops
        .iter()
        .flat_map(|o| o.tensor_names())
        .map(|t| m.tensors[t].numel().unwrap())
        .sum();
    assert_eq!(params, ir_params);
}

#[test]
fn onnx_semantics_match_the_reference_interpreter() {
    for (m, seeds) in [(tiny(), &[1u64, 2][..]), (small(), &[3][..])] {
        let p = export(&m);
        for &seed in seeds {
            let x = sample(&m, seed);
            let want = reference::logits(&m, &x).unwrap();
            let got = Interp::new(&p).run(&x);
            assert_close(&got, &want, 1e-5);
        }
    }
}

#[test]
fn f16_and_i8_weights_are_dequantized_bit_for_bit() {
    let m = mixed_precision(tiny());
    assert_eq!(derm_codegen::metadata::precision(&m), "f32+f16+i8");
    let p = export(&m);
    // check_structure compares every initializer with ModelFile::tensor_f32, the dequantizer
    // codegen and the reference interpreter use.
    check_structure(&m, &p);
    // Spot-check the arithmetic itself on one value of each.
    let g = p.graph.as_ref().unwrap();
    let init = |n: &str| {
        let t = g.initializer.iter().find(|t| t.name == n).unwrap();
        f32::from_le_bytes(t.raw_data[..4].try_into().unwrap())
    };
    let h = &m.tensors["features.0.0.weight"];
    assert_eq!(h.dtype, DType::F16);
    assert_eq!(
        init("features.0.0.weight"),
        half::f16::from_le_bytes([h.data[0], h.data[1]]).to_f32()
    );
    let q = &m.tensors["classifier.0.weight"];
    assert_eq!(q.dtype, DType::I8);
    // Channel 0: scale 0.01, zero point 3.
    assert_eq!(
        init("classifier.0.weight"),
        0.01 * (f32::from(q.data[0] as i8) - 3.0)
    );
    // Quantization helpers are not weights of the ONNX graph.
    assert!(!g.initializer.iter().any(|t| t.name.starts_with("cls.")));
    let x = sample(&m, 5);
    assert_close(
        &Interp::new(&p).run(&x),
        &reference::logits(&m, &x).unwrap(),
        1e-5,
    );
}

/// int8 files of the small network: min/max post-training quantization, the same with
/// every hardswish in `f32` (no pre-activation grids), and that with every depthwise input
/// on a grid per channel.
fn int8_models() -> Vec<ModelFile> {
    let m = small();
    vec![
        synthetic::int8_of(&m, 2).unwrap(),
        synthetic::int8_float_hardswish_of(&m, 2).unwrap(),
        synthetic::int8_channel_grids_of(&m, 2).unwrap(),
    ]
}

/// Single assignment and topological order, for graphs whose initializers are not all float.
fn check_order(p: &ModelProto) {
    let g = p.graph.as_ref().unwrap();
    let mut defined: HashSet<&str> = HashSet::from(["input"]);
    for t in &g.initializer {
        assert!(defined.insert(&t.name), "initializer {:?} twice", t.name);
    }
    for n in &g.node {
        for i in &n.input {
            assert!(
                defined.contains(i.as_str()),
                "{:?} reads {i:?} early",
                n.name
            );
        }
        assert!(defined.insert(&n.output[0]), "{:?} redefines", n.name);
    }
    assert!(defined.contains("logits"));
    let names: HashSet<&str> = g.node.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names.len(), g.node.len(), "node names repeat");
}

#[test]
fn int8_files_export_as_qdq_on_their_own_grids() {
    for m in int8_models() {
        let p = export(&m);
        check_order(&p);
        let g = p.graph.as_ref().unwrap();
        let q = m.graph.quantization.as_ref().unwrap();
        let init: HashMap<&str, &derm_codegen::onnx::proto::TensorProto> =
            g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let types: HashMap<&str, i32> = g
            .value_info
            .iter()
            .map(|v| (v.name.as_str(), shape_of(v).0))
            .collect();

        // Every activation the file rounds, once, on its grid: u8 with zero point + 128.
        let quantize: Vec<&NodeProto> = g
            .node
            .iter()
            .filter(|n| n.op_type == "QuantizeLinear")
            .collect();
        let keys = derm_codegen::quant::activation_keys(&m.graph);
        assert_eq!(quantize.len(), keys.len());
        for key in &keys {
            let n = quantize
                .iter()
                .find(|n| n.name == format!("{key}.quantize"))
                .unwrap_or_else(|| panic!("{key} is not rounded"));
            let want = q.activations[key];
            let scale = init[n.input[1].as_str()];
            let zero = init[n.input[2].as_str()];
            // A per-channel grid: one scale per channel on axis 1, the zero point repeated.
            let scales = q
                .channel_scales_of(key)
                .map_or(vec![want.scale], <[f32]>::to_vec);
            let bytes: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
            assert_eq!(scale.raw_data, bytes, "{key}");
            assert_eq!(zero.raw_data.len(), scales.len(), "{key}");
            let axis = n.attribute.iter().find(|a| a.name == "axis").map(|a| a.i);
            assert_eq!(axis, (scales.len() > 1).then_some(1), "{key}");
            assert_eq!(zero.data_type, DataType::Uint8 as i32, "{key}");
            assert!(
                zero.raw_data
                    .iter()
                    .all(|&z| i32::from(z) == want.zero_point + 128),
                "{key}"
            );
            assert_eq!(types[n.output[0].as_str()], DataType::Uint8 as i32, "{key}");
        }

        // Weights are the file's int8 bytes, biases its int32 ones at scale x * w[c].
        let mut layers = 0;
        for op in &m.graph.ops {
            let (weight, bias, input) = match op {
                Op::Conv2d(c) => (&c.weight, &c.bias, c.input.clone()),
                Op::Linear(l) => (&l.weight, &l.bias, l.input.clone()),
                _ => continue,
            };
            layers += 1;
            let w = init[format!("{weight}.int8").as_str()];
            assert_eq!(w.data_type, DataType::Int8 as i32);
            assert_eq!(w.raw_data, m.tensors[weight].data, "{weight}");
            let b = init[format!("{bias}.int32").as_str()];
            assert_eq!(b.data_type, DataType::Int32 as i32);
            assert_eq!(b.raw_data, m.tensors[bias].data, "{bias}");
            let spec = m.graph.tensors[weight].quant.as_ref().unwrap();
            let ws = m.tensors[&spec.scale].to_f32().unwrap();
            let dq = g
                .node
                .iter()
                .find(|n| n.op_type == "DequantizeLinear" && n.input[0] == b.name)
                .unwrap();
            let bs = init[dq.input[1].as_str()];
            let xs = q
                .channel_scales_of(&input)
                .map_or(vec![q.activations[&input].scale; ws.len()], <[f32]>::to_vec);
            let want: Vec<u8> = ws
                .iter()
                .zip(&xs)
                .flat_map(|(&s, &x)| (x * s).to_le_bytes())
                .collect();
            assert_eq!(bs.raw_data, want, "{bias} scale");
        }
        assert!(layers >= 30, "{layers}");
        if !q.channel_scales.is_empty() {
            assert!(
                quantize
                    .iter()
                    .any(|n| init[n.input[1].as_str()].dims.len() == 1),
                "no per-axis grid exported"
            );
        }
        // No float copy of a weight: every float initializer is a scale.
        for t in &g.initializer {
            if t.data_type == DataType::Float as i32 {
                assert!(t.name.contains("scale"), "{} is a float weight", t.name);
            }
        }
    }
}

#[test]
fn the_qdq_export_computes_the_int8_model_up_to_rounding() {
    for m in int8_models() {
        let p = export(&m);
        let q = m.graph.quantization.as_ref().unwrap();
        for seed in [0, 1] {
            // The calibration inputs: the int8 grids cover them, as real images.
            let x = synthetic::smooth_input(&m, seed);
            let layers = reference::run(&m, &x).unwrap();
            // Layer by layer, each fed the int8 oracle's inputs: the ONNX graph must land on
            // the oracle's int8 values except where float rounding (ONNX divides by the scale
            // and computes the squeeze-excite gate in float; the oracle uses integer
            // multipliers and a Q15 gate) puts a value on the other side of a rounding
            // boundary. A missing or misplaced rounding, a wrong scale, zero point or bias
            // scale moves most values.
            let forced: HashMap<&str, &reference::LayerOutput> =
                layers.iter().map(|l| (l.name.as_str(), l)).collect();
            let mut checked = 0;
            let logits = Interp::new(&p).run_with(&x, |name, got| {
                let want = forced.get(name)?;
                checked += 1;
                let step = q.activations.get(name).map_or(1e-4, |p| p.scale);
                let off = got
                    .iter()
                    .zip(&want.data)
                    .map(|(a, b)| ((a - b) / step).abs())
                    .filter(|&d| d > 0.5)
                    .inspect(|&d| assert!(d <= 1.5, "{name}: {d} steps off"))
                    .count();
                assert!(
                    off * 200 <= got.len(),
                    "{name}: {off} of {} values off by one step",
                    got.len()
                );
                Some(want.data.clone())
            });
            assert_eq!(checked, m.graph.ops.len());
            assert_close(&logits, &layers.last().unwrap().data, 1e-5);
            // End to end, the one-step differences propagate: still close.
            let free = Interp::new(&p).run(&x);
            assert_close(&free, &reference::logits(&m, &x).unwrap(), 0.03);
        }
    }
}

#[test]
fn dequantize_exports_the_float_network_of_an_int8_file() {
    for m in int8_models() {
        let p = ModelProto::decode(
            onnx::to_onnx_with(
                &m,
                &ExportOptions {
                    dequantize: true,
                    ..Default::default()
                },
            )
            .unwrap()
            .as_slice(),
        )
        .unwrap();
        check_order(&p);
        let g = p.graph.as_ref().unwrap();
        assert!(g.node.iter().all(|n| !n.op_type.contains("Quantize")));
        let q = m.graph.quantization.as_ref().unwrap();
        let init: HashMap<&str, &derm_codegen::onnx::proto::TensorProto> =
            g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        for op in &m.graph.ops {
            let Op::Conv2d(c) = op else { continue };
            let w = init[c.weight.as_str()];
            assert_eq!(w.raw_data, f32_bytes(&m.tensor_f32(&c.weight).unwrap()));
            let spec = m.graph.tensors[&c.weight].quant.as_ref().unwrap();
            let ws = m.tensors[&spec.scale].to_f32().unwrap();
            let bq = &m.tensors[&c.bias].data;
            let xs = q.channel_scales_of(&c.input).map_or(
                vec![q.activations[&c.input].scale; ws.len()],
                <[f32]>::to_vec,
            );
            let want: Vec<f32> = bq
                .chunks_exact(4)
                .zip(ws.iter().zip(&xs))
                .map(|(b, (&s, &x))| i32::from_le_bytes(b.try_into().unwrap()) as f32 * (x * s))
                .collect();
            assert_eq!(
                init[c.bias.as_str()].raw_data,
                f32_bytes(&want),
                "{}",
                c.bias
            );
        }
    }
}

#[test]
fn source_file_identity_is_recorded() {
    let m = tiny();
    let bytes = m.to_bytes().unwrap();
    let opts = ExportOptions {
        source: Some(ModelMetadata::new(&m, "tiny.safetensors", &bytes)),
        ..Default::default()
    };
    let p = ModelProto::decode(onnx::to_onnx_with(&m, &opts).unwrap().as_slice()).unwrap();
    let meta: HashMap<String, String> = p
        .metadata_props
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect();
    assert_eq!(meta[onnx::META_SOURCE_SHA256], sha256_hex(&bytes));
    assert_eq!(meta[onnx::META_SOURCE_NAME], "tiny.safetensors");
    assert_eq!(p.graph.unwrap().name, "tiny.safetensors");
    let keys: HashSet<&String> = meta.keys().collect();
    assert_eq!(keys.len(), meta.len());
}

#[test]
fn clashing_names_stay_unique_and_the_interface_keeps_its_names() {
    // ONNX has one namespace for values and weights; the model file has two. Rename the
    // input to "x", one value to "input" (the ONNX input's name), one to "logits" (the
    // ONNX output's name, while another value is the model's output) and one to a tensor's.
    let mut m = tiny();
    let g = &mut m.graph;
    rename_value(&mut g.ops, "input", "x");
    g.input.name = "x".into();
    let out = g.output.clone();
    rename_value(&mut g.ops, &out, "scores");
    g.output = "scores".into();
    let values: Vec<String> = g.ops.iter().map(|o| o.output().to_owned()).collect();
    rename_value(&mut g.ops, &values[0], "input");
    rename_value(&mut g.ops, &values[1], "logits");
    rename_value(&mut g.ops, &values[2], "classifier.0.weight");
    let m = ModelFile::new(m.graph, m.tensors).unwrap();

    let p = export(&m);
    let gr = p.graph.as_ref().unwrap();
    assert_eq!(gr.input[0].name, "input");
    assert_eq!(gr.output[0].name, "logits");
    // First come, first named: the value keeps the name, the weight read later gets a suffix.
    assert!(gr.node.iter().any(|n| n.output[0] == "classifier.0.weight"));
    assert!(
        gr.initializer
            .iter()
            .any(|t| t.name == "classifier.0.weight_2")
    );
    let mut defined = HashSet::from(["input"]);
    for n in gr
        .initializer
        .iter()
        .map(|t| &t.name)
        .chain(gr.node.iter().map(|n| &n.output[0]))
    {
        assert!(defined.insert(n.as_str()), "{n:?} defined twice");
    }
    // The stem reads the graph input, and the renamed values are still computed right.
    assert_eq!(gr.node[0].input[0], "input");
    let x = sample(&m, 9);
    assert_close(
        &Interp::new(&p).run(&x),
        &reference::logits(&m, &x).unwrap(),
        1e-5,
    );
}

#[test]
fn invalid_models_are_named_errors() {
    // An op reading a value nothing defines.
    let mut m = tiny();
    if let Op::Add(a) = m
        .graph
        .ops
        .iter_mut()
        .find(|o| matches!(o, Op::Add(_)))
        .unwrap()
    {
        a.inputs[1] = "nowhere".into();
    }
    let e = onnx::to_onnx(&m).unwrap_err();
    assert!(matches!(e, OnnxError::Invalid(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("features.3.add") && msg.contains("nowhere"),
        "{msg}"
    );

    // A conv whose groups do not divide its channels.
    let mut m = tiny();
    if let Op::Conv2d(c) = &mut m.graph.ops[0] {
        c.groups = 5;
    }
    let msg = onnx::to_onnx(&m).unwrap_err().to_string();
    assert!(
        msg.contains("features.0.0") && msg.contains("groups"),
        "{msg}"
    );

    // The output names no value.
    let mut m = tiny();
    m.graph.output = "gone".into();
    let msg = onnx::to_onnx(&m).unwrap_err().to_string();
    assert!(msg.contains("gone"), "{msg}");

    // A weight that cannot be dequantized: the classifier's bias points at the zero-point
    // tensor of a quantized weight, which validation accepts (right shape, listed) but
    // which has no quantization parameters of its own.
    let mut m = mixed_precision(tiny());
    if let Some(Op::Linear(l)) = m.graph.ops.last_mut() {
        l.bias = "cls.zp".into();
    }
    m.validate().unwrap();
    match onnx::to_onnx(&m).unwrap_err() {
        OnnxError::Tensor { op, tensor, reason } => {
            assert_eq!((op.as_str(), tensor.as_str()), ("classifier.0", "cls.zp"));
            assert!(reason.contains("quant"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    let range = want.iter().copied().fold(f32::MIN, f32::max)
        - want.iter().copied().fold(f32::MAX, f32::min);
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff <= tol * range,
        "max |diff| {diff:e} > {tol:e} x logit range {range:e}: {got:?} vs {want:?}"
    );
}

/// The tiny model with its stem weight stored as f16 and its classifier weight as i8
/// (per-row scale and zero point), as `derm-train export` may write them.
fn mixed_precision(mut m: ModelFile) -> ModelFile {
    let stem = "features.0.0.weight";
    let w = m.tensor_f32(stem).unwrap();
    let t = &m.tensors[stem];
    let data = w
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let shape = t.shape.clone();
    m.tensors.insert(
        stem.into(),
        Tensor {
            dtype: DType::F16,
            shape,
            data,
        },
    );
    m.graph.tensors.get_mut(stem).unwrap().dtype = DType::F16;

    let cls = "classifier.0.weight";
    let w = m.tensor_f32(cls).unwrap();
    let shape = m.tensors[cls].shape.clone();
    let (n, k) = (shape[0], shape[1]);
    let scale: Vec<f32> = (0..n).map(|i| 0.01 * (i + 1) as f32).collect();
    let zp: Vec<i8> = (0..n).map(|i| 3 - i as i8).collect();
    let q: Vec<i8> = w
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let r = i / k;
            (v / scale[r] + f32::from(zp[r]))
                .round()
                .clamp(-128.0, 127.0) as i8
        })
        .collect();
    m.tensors.insert(cls.into(), Tensor::from_i8(shape, &q));
    m.tensors
        .insert("cls.scale".into(), Tensor::from_f32(vec![n], &scale));
    m.tensors
        .insert("cls.zp".into(), Tensor::from_i8(vec![n], &zp));
    let spec = m.graph.tensors.get_mut(cls).unwrap();
    spec.dtype = DType::I8;
    spec.quant = Some(Quant {
        scale: "cls.scale".into(),
        zero_point: "cls.zp".into(),
        axis: 0,
    });
    ModelFile::new(m.graph, m.tensors).unwrap()
}

fn rename_value(ops: &mut [Op], from: &str, to: &str) {
    let fix = |s: &mut String| {
        if s == from {
            *s = to.to_owned();
        }
    };
    for op in ops {
        match op {
            Op::Conv2d(o) => {
                fix(&mut o.input);
                fix(&mut o.output);
            }
            Op::SqueezeExcite(o) => {
                fix(&mut o.input);
                fix(&mut o.output);
            }
            Op::Add(o) => {
                fix(&mut o.inputs[0]);
                fix(&mut o.inputs[1]);
                fix(&mut o.output);
            }
            Op::GlobalAvgPool(o) => {
                fix(&mut o.input);
                fix(&mut o.output);
            }
            Op::Linear(o) => {
                fix(&mut o.input);
                fix(&mut o.output);
            }
        }
    }
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn ints(n: &NodeProto, name: &str) -> Vec<i64> {
    attr(n, name)
        .map(|a| {
            assert_eq!(a.r#type, AttributeType::Ints as i32, "{}.{name}", n.name);
            a.ints.clone()
        })
        .unwrap_or_default()
}

fn int(n: &NodeProto, name: &str) -> Option<i64> {
    attr(n, name).map(|a| {
        assert_eq!(a.r#type, AttributeType::Int as i32, "{}.{name}", n.name);
        a.i
    })
}

fn float(n: &NodeProto, name: &str) -> Option<f32> {
    attr(n, name).map(|a| {
        assert_eq!(a.r#type, AttributeType::Float as i32, "{}.{name}", n.name);
        a.f
    })
}

/// A tensor while interpreting: shape and row-major data.
#[derive(Clone)]
struct Val {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// The ONNX operators the exporter uses, as the ONNX operator documentation defines them
/// (including attribute defaults), with numpy-style broadcasting for Add and Mul.
struct Interp<'a> {
    model: &'a ModelProto,
    vals: HashMap<String, Val>,
    /// Element type of every initializer and node output that is not `float`.
    types: HashMap<String, i32>,
}

impl<'a> Interp<'a> {
    fn new(model: &'a ModelProto) -> Self {
        let g = model.graph.as_ref().unwrap();
        let vals = g
            .initializer
            .iter()
            .map(|t| {
                let raw = &t.raw_data;
                let data = match DataType::try_from(t.data_type).unwrap() {
                    DataType::Float => raw
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                    DataType::Int32 => raw
                        .chunks_exact(4)
                        .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32)
                        .collect(),
                    DataType::Int8 => raw.iter().map(|&b| f32::from(b as i8)).collect(),
                    DataType::Uint8 => raw.iter().map(|&b| f32::from(b)).collect(),
                    other => panic!("{}: initializer of type {other:?}", t.name),
                };
                let shape = t.dims.iter().map(|&d| d as usize).collect();
                (t.name.clone(), Val { shape, data })
            })
            .collect();
        let types = g
            .initializer
            .iter()
            .map(|t| (t.name.clone(), t.data_type))
            .chain(g.value_info.iter().map(|v| (v.name.clone(), shape_of(v).0)))
            .collect();
        Self { model, vals, types }
    }

    /// `QuantizeLinear` (round half to even, saturate to the zero point's type) and
    /// `DequantizeLinear` (per tensor, or per channel along `axis`), as ONNX defines them.
    fn qdq(&self, n: &NodeProto, x: &[&Val]) -> Val {
        let (v, scale, zero) = (x[0], x[1], x[2]);
        let axis = int(n, "axis").unwrap_or(1) as usize;
        let channel = |i: usize| {
            if scale.data.len() == 1 {
                return 0;
            }
            let inner: usize = v.shape[axis + 1..].iter().product();
            (i / inner) % v.shape[axis]
        };
        let data = if n.op_type == "QuantizeLinear" {
            let (lo, hi) = match DataType::try_from(self.types[&n.input[2]]).unwrap() {
                DataType::Uint8 => (0.0, 255.0),
                DataType::Int8 => (-128.0, 127.0),
                other => panic!("{}: zero point of type {other:?}", n.name),
            };
            v.data
                .iter()
                .enumerate()
                .map(|(i, &a)| {
                    let c = channel(i);
                    ((a / scale.data[c]).round_ties_even() + zero.data[c]).clamp(lo, hi)
                })
                .collect()
        } else {
            v.data
                .iter()
                .enumerate()
                .map(|(i, &a)| {
                    let c = channel(i);
                    (a - zero.data[c]) * scale.data[c]
                })
                .collect()
        };
        Val {
            shape: v.shape.clone(),
            data,
        }
    }

    fn run(self, input: &[f32]) -> Vec<f32> {
        self.run_with(input, |_, _| None)
    }

    /// [`Self::run`], passing each node's output to `check` by name: a returned value
    /// replaces it for the nodes that read it.
    fn run_with(
        mut self,
        input: &[f32],
        mut check: impl FnMut(&str, &[f32]) -> Option<Vec<f32>>,
    ) -> Vec<f32> {
        let g = self.model.graph.as_ref().unwrap();
        let (_, dims) = shape_of(&g.input[0]);
        let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        self.vals.insert(
            "input".into(),
            Val {
                shape,
                data: input.to_vec(),
            },
        );
        let declared: HashMap<&str, Vec<i64>> = g
            .value_info
            .iter()
            .chain(&g.output)
            .map(|v| (v.name.as_str(), shape_of(v).1))
            .collect();
        for n in &g.node {
            let x: Vec<&Val> = n.input.iter().map(|i| &self.vals[i]).collect();
            let y = match n.op_type.as_str() {
                "QuantizeLinear" | "DequantizeLinear" => self.qdq(n, &x),
                _ => eval(n, &x),
            };
            let want: Vec<usize> = declared[n.output[0].as_str()]
                .iter()
                .map(|&d| d as usize)
                .collect();
            assert_eq!(
                y.shape, want,
                "node {:?}: computed vs declared shape",
                n.name
            );
            let y = match check(&n.output[0], &y.data) {
                Some(data) => Val { data, ..y },
                None => y,
            };
            self.vals.insert(n.output[0].clone(), y);
        }
        self.vals.remove("logits").unwrap().data
    }
}

fn eval(n: &NodeProto, x: &[&Val]) -> Val {
    let map = |v: &Val, f: &dyn Fn(f32) -> f32| Val {
        shape: v.shape.clone(),
        data: v.data.iter().map(|&a| f(a)).collect(),
    };
    match n.op_type.as_str() {
        "Conv" => conv(n, x),
        "Relu" => map(x[0], &|a| a.max(0.0)),
        "HardSigmoid" => {
            let alpha = float(n, "alpha").unwrap_or(0.2);
            let beta = float(n, "beta").unwrap_or(0.5);
            map(x[0], &|a| (alpha * a + beta).clamp(0.0, 1.0))
        }
        "HardSwish" => map(x[0], &|a| a * (a / 6.0 + 0.5).clamp(0.0, 1.0)),
        "Add" => broadcast(x[0], x[1], |a, b| a + b),
        "Mul" => broadcast(x[0], x[1], |a, b| a * b),
        "GlobalAveragePool" => {
            let [b, c, h, w] = x[0].shape[..] else {
                panic!("{}: rank", n.name)
            };
            Val {
                shape: vec![b, c, 1, 1],
                data: x[0]
                    .data
                    .chunks_exact(h * w)
                    .map(|s| s.iter().sum::<f32>() / (h * w) as f32)
                    .collect(),
            }
        }
        "Flatten" => {
            let axis = int(n, "axis").unwrap_or(1) as usize;
            let s = &x[0].shape;
            Val {
                shape: vec![s[..axis].iter().product(), s[axis..].iter().product()],
                data: x[0].data.clone(),
            }
        }
        "Gemm" => gemm(n, x),
        other => panic!("unexpected op {other}"),
    }
}

fn broadcast(a: &Val, b: &Val, f: impl Fn(f32, f32) -> f32) -> Val {
    assert_eq!(a.shape.len(), b.shape.len());
    let shape: Vec<usize> = a
        .shape
        .iter()
        .zip(&b.shape)
        .map(|(&p, &q)| p.max(q))
        .collect();
    let index = |s: &[usize], mut flat: usize| {
        // Row-major index into `s` of the output position `flat`, size-1 axes repeated.
        let mut idx = 0;
        let mut stride = 1;
        for d in (0..shape.len()).rev() {
            let pos = flat % shape[d];
            flat /= shape[d];
            if s[d] != 1 {
                assert_eq!(s[d], shape[d], "not broadcastable");
                idx += pos * stride;
            }
            stride *= s[d];
        }
        idx
    };
    let numel = shape.iter().product();
    Val {
        data: (0..numel)
            .map(|i| f(a.data[index(&a.shape, i)], b.data[index(&b.shape, i)]))
            .collect(),
        shape,
    }
}

fn conv(n: &NodeProto, x: &[&Val]) -> Val {
    let (xv, wv) = (x[0], x[1]);
    let [1, c, h, w] = xv.shape[..] else {
        panic!("{}: input {:?}", n.name, xv.shape)
    };
    let [o, cg, kh, kw] = wv.shape[..] else {
        panic!("{}: weight {:?}", n.name, wv.shape)
    };
    let group = int(n, "group").unwrap_or(1) as usize;
    let strides = match ints(n, "strides")[..] {
        [] => [1, 1],
        [a, b] => [a as usize, b as usize],
        ref s => panic!("strides {s:?}"),
    };
    let pads = match ints(n, "pads")[..] {
        [] => [0; 4],
        [a, b, c, d] => [a as usize, b as usize, c as usize, d as usize],
        ref s => panic!("pads {s:?}"),
    };
    let ks = ints(n, "kernel_shape");
    assert!(ks.is_empty() || ks == [kh as i64, kw as i64], "{}", n.name);
    let dil = ints(n, "dilations");
    assert!(dil.is_empty() || dil == [1, 1], "{}", n.name);
    assert_eq!(c, cg * group, "{}: channels vs group", n.name);
    let oh = (h + pads[0] + pads[2] - kh) / strides[0] + 1;
    let ow = (w + pads[1] + pads[3] - kw) / strides[1] + 1;
    let og = o / group;
    let mut y = vec![0f32; o * oh * ow];
    for co in 0..o {
        let gi = co / og;
        let bias = x.get(2).map_or(0.0, |b| b.data[co]);
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = bias;
                for ci in 0..cg {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * strides[0] + ky) as isize - pads[0] as isize;
                            let ix = (ox * strides[1] + kx) as isize - pads[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let xi = ((gi * cg + ci) * h + iy as usize) * w + ix as usize;
                            acc += wv.data[((co * cg + ci) * kh + ky) * kw + kx] * xv.data[xi];
                        }
                    }
                }
                y[(co * oh + oy) * ow + ox] = acc;
            }
        }
    }
    Val {
        shape: vec![1, o, oh, ow],
        data: y,
    }
}

fn gemm(n: &NodeProto, x: &[&Val]) -> Val {
    let (a, b) = (x[0], x[1]);
    assert_eq!(int(n, "transA").unwrap_or(0), 0, "{}", n.name);
    let trans_b = int(n, "transB").unwrap_or(0) == 1;
    let alpha = float(n, "alpha").unwrap_or(1.0);
    let beta = float(n, "beta").unwrap_or(1.0);
    let [m, k] = a.shape[..] else {
        panic!("{}", n.name)
    };
    let nn = if trans_b { b.shape[0] } else { b.shape[1] };
    let bk = if trans_b { b.shape[1] } else { b.shape[0] };
    assert_eq!(k, bk, "{}: inner dimensions", n.name);
    let mut y = vec![0f32; m * nn];
    for i in 0..m {
        for j in 0..nn {
            let dot: f32 = (0..k)
                .map(|p| {
                    let bv = if trans_b {
                        b.data[j * k + p]
                    } else {
                        b.data[p * nn + j]
                    };
                    a.data[i * k + p] * bv
                })
                .sum();
            let c = x.get(2).map_or(0.0, |c| c.data[j % c.data.len()]);
            y[i * nn + j] = alpha * dot + beta * c;
        }
    }
    Val {
        shape: vec![m, nn],
        data: y,
    }
}
