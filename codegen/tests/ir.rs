//! The model file: round trip, and bad files rejected with errors that name
//! the problem.

use derm_codegen::ir::{
    DType, FORMAT_VERSION, IrError, MIN_FORMAT_VERSION, ModelFile, Op, Quant, Tensor, TensorSpec,
};
use derm_codegen::synthetic::SyntheticSpec;

fn tiny() -> ModelFile {
    SyntheticSpec::tiny(3).build().unwrap()
}

/// Rewrites the graph JSON inside valid bytes (header re-serialized).
fn with_graph_json(model: &ModelFile, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v = serde_json::to_value(&model.graph).unwrap();
    edit(&mut v);
    let meta = std::collections::HashMap::from([("derm.graph".to_owned(), v.to_string())]);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = model
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

fn err_of(bytes: &[u8]) -> String {
    ModelFile::from_bytes(bytes).unwrap_err().to_string()
}

#[test]
fn round_trip_through_bytes_and_file() {
    let m = tiny();
    let bytes = m.to_bytes().unwrap();
    assert_eq!(ModelFile::from_bytes(&bytes).unwrap(), m);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    m.write(&path).unwrap();
    assert_eq!(ModelFile::read(&path).unwrap(), m);
}

#[test]
fn shapes_are_inferred_for_every_value() {
    let m = tiny();
    let shapes = m.validate().unwrap();
    assert_eq!(shapes["input"], [3, 32, 32]);
    assert_eq!(shapes["features.0.0"], [8, 16, 16]);
    assert_eq!(shapes["avgpool"], [52]);
    assert_eq!(shapes["logits"], [3]);
    assert_eq!(shapes.len(), m.graph.ops.len() + 1);
}

#[test]
fn truncated_file_is_rejected_at_every_length() {
    let bytes = tiny().to_bytes().unwrap();
    for len in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
        let e = err_of(&bytes[..len]);
        assert!(e.contains("not a valid safetensors file"), "len {len}: {e}");
    }
}

#[test]
fn missing_file_names_the_path() {
    let e = ModelFile::read("/nonexistent/model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/model.safetensors"), "{e}");
}

#[test]
fn wrong_version_is_named() {
    let next = FORMAT_VERSION + 1;
    let bytes = with_graph_json(&tiny(), |v| v["version"] = next.into());
    let e = ModelFile::from_bytes(&bytes).unwrap_err();
    assert!(matches!(e, IrError::UnsupportedVersion { .. }), "{e}");
    assert!(e.to_string().contains(&format!("version {next}")), "{e}");
    let zero = with_graph_json(&tiny(), |v| v["version"] = 0.into());
    assert!(matches!(
        ModelFile::from_bytes(&zero).unwrap_err(),
        IrError::UnsupportedVersion { .. }
    ));
    // Every version up to the current one reads float files (later ones only add int8
    // fields).
    for version in MIN_FORMAT_VERSION..=FORMAT_VERSION {
        let file = with_graph_json(&tiny(), |v| v["version"] = version.into());
        assert!(ModelFile::from_bytes(&file).is_ok(), "version {version}");
    }
}

#[test]
fn wrong_format_and_missing_graph_are_named() {
    let bytes = with_graph_json(&tiny(), |v| v["format"] = "onnx".into());
    assert!(err_of(&bytes).contains("\"onnx\""));
    let plain = safetensors::serialize(
        [(
            "x",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0, 0, 0, 0])
                .unwrap(),
        )],
        None,
    )
    .unwrap();
    assert!(err_of(&plain).contains("derm.graph"));
}

#[test]
fn bad_tensor_shape_names_op_tensor_and_shapes() {
    let mut m = tiny();
    let t = m.tensors.get_mut("features.0.0.weight").unwrap();
    *t = Tensor::from_f32(vec![8, 3, 3, 2], &[0.0; 8 * 3 * 3 * 2]);
    m.graph
        .tensors
        .get_mut("features.0.0.weight")
        .unwrap()
        .shape = vec![8, 3, 3, 2];
    let e = m.to_bytes().unwrap_err().to_string();
    assert!(e.contains("features.0.0"), "{e}");
    assert!(
        e.contains("[8, 3, 3, 2]") && e.contains("[8, 3, 3, 3]"),
        "{e}"
    );
}

#[test]
fn bad_op_params_are_named() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 5] = [
        ("kernel", |op| op["kernel"] = serde_json::json!([0, 3])),
        ("stride", |op| op["stride"] = serde_json::json!([0, 2])),
        ("groups", |op| op["groups"] = 2.into()),
        ("padding", |op| op["padding"] = serde_json::json!([3, 3])),
        ("unknown field", |op| op["dilation"] = 2.into()),
    ];
    for (what, edit) in cases {
        let bytes = with_graph_json(&tiny(), |v| edit(&mut v["ops"][0]));
        let e = err_of(&bytes);
        assert!(
            e.contains(what) || e.contains("features.0.0"),
            "{what}: {e}"
        );
        if what != "unknown field" {
            assert!(e.contains("features.0.0"), "{what}: {e}");
        } else {
            assert!(e.contains("dilation"), "{e}");
        }
    }
}

#[test]
fn undefined_value_and_bad_output_are_named() {
    let bytes = with_graph_json(&tiny(), |v| v["ops"][1]["input"] = "nope".into());
    let e = err_of(&bytes);
    assert!(
        e.contains("nope") && e.contains("features.1.block.0.0"),
        "{e}"
    );
    let bytes = with_graph_json(&tiny(), |v| v["output"] = "avgpool".into());
    let e = err_of(&bytes);
    assert!(e.contains("avgpool") && e.contains("[52]"), "{e}");
}

#[test]
fn add_of_different_shapes_is_rejected() {
    let mut m = tiny();
    let idx = m
        .graph
        .ops
        .iter()
        .position(|o| matches!(o, Op::Add(_)))
        .unwrap();
    if let Op::Add(a) = &mut m.graph.ops[idx] {
        a.inputs[1] = "features.0.0".into();
    }
    let e = m.validate().unwrap_err().to_string();
    assert!(
        e.contains("features.3.add") && e.contains("[8, 16, 16]"),
        "{e}"
    );
}

#[test]
fn unlisted_and_missing_tensors_are_named() {
    let mut m = tiny();
    m.tensors
        .insert("stray".into(), Tensor::from_f32(vec![1], &[1.0]));
    assert!(m.validate().unwrap_err().to_string().contains("stray"));
    let mut m = tiny();
    m.tensors.remove("classifier.0.bias");
    let e = m.validate().unwrap_err().to_string();
    assert!(
        e.contains("classifier.0.bias") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn int8_with_per_channel_quant_round_trips_and_dequantizes() {
    let mut m = tiny();
    let name = "classifier.0.weight";
    let (n, k) = (3, 52);
    let q: Vec<i8> = (0..n * k).map(|i| (i % 200) as i8).collect();
    m.tensors
        .insert(name.into(), Tensor::from_i8(vec![n, k], &q));
    m.tensors.insert(
        "cls.scale".into(),
        Tensor::from_f32(vec![n], &[0.5, 0.25, 2.0]),
    );
    m.tensors
        .insert("cls.zp".into(), Tensor::from_i8(vec![n], &[0, 1, -1]));
    m.graph.tensors.insert(
        name.into(),
        TensorSpec {
            dtype: DType::I8,
            shape: vec![n, k],
            quant: Some(Quant {
                scale: "cls.scale".into(),
                zero_point: "cls.zp".into(),
                axis: 0,
            }),
        },
    );
    let m = ModelFile::new(m.graph, m.tensors).unwrap();
    let back = ModelFile::from_bytes(&m.to_bytes().unwrap()).unwrap();
    let w = back.tensor_f32(name).unwrap();
    assert_eq!(w[0], 0.5 * f32::from(q[0]));
    assert_eq!(w[k + 5], 0.25 * (f32::from(q[k + 5]) - 1.0));
    assert_eq!(w[2 * k + 7], 2.0 * (f32::from(q[2 * k + 7]) + 1.0));

    // An i8 tensor without parameters is an error naming it.
    let mut g = back.graph.clone();
    g.tensors.get_mut(name).unwrap().quant = None;
    let e = ModelFile::new(g, back.tensors.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains(name) && e.contains("quant"), "{e}");
}

#[test]
fn garbled_bytes_never_panic() {
    let bytes = tiny().to_bytes().unwrap();
    let mut state = 1u64;
    for i in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..1 + i % 4 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pos = (state >> 33) as usize % b.len().min(4096);
            b[pos] = (state >> 24) as u8;
        }
        let _ = ModelFile::from_bytes(&b);
    }
}
