//! The `derm-codegen` command: writes code and weights for a valid model,
//! and names the file and the problem for a bad one.

use std::process::Command;

use derm_codegen::synthetic::SyntheticSpec;

fn codegen(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_derm-codegen"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `derm-codegen` with `args`, which must fail; returns its stderr.
fn codegen_fails(args: &[&std::ffi::OsStr]) -> String {
    let o = codegen(args);
    assert!(!o.status.success());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn writes_code_and_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.safetensors");
    SyntheticSpec::tiny(4)
        .build()
        .unwrap()
        .write(&model)
        .unwrap();
    let out = dir.path().join("model.rs");
    let blob = dir.path().join("blob.bin");
    let o = codegen(&[
        model.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--weights-out".as_ref(),
        blob.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let code = std::fs::read_to_string(&out).unwrap();
    assert!(
        code.contains(&*blob.to_string_lossy()),
        "the code must include the blob it wrote"
    );
    assert!(std::fs::metadata(&blob).unwrap().len() > 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("arena"));
}

#[test]
fn bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.rs");
    let missing = dir.path().join("missing.safetensors");
    let err = codegen_fails(&[missing.as_os_str(), "-o".as_ref(), out.as_os_str()]);
    assert!(err.contains("missing.safetensors"), "{err}");

    let truncated = dir.path().join("truncated.safetensors");
    let bytes = SyntheticSpec::tiny(4).build().unwrap().to_bytes().unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = codegen_fails(&[truncated.as_os_str(), "-o".as_ref(), out.as_os_str()]);
    assert!(
        err.contains("truncated.safetensors") && err.contains("not a valid safetensors file"),
        "{err}"
    );
    assert!(!out.exists(), "no output for a bad model");
}

/// The tiny model at `dir/tiny.safetensors` with two golden samples beside it (inputs in
/// [-1, 1], logits from the reference interpreter); returns the model path and the golden
/// (inputs, logits).
fn tiny_with_golden(dir: &std::path::Path) -> (std::path::PathBuf, Vec<f32>, Vec<f32>) {
    use safetensors::tensor::TensorView;
    let m = SyntheticSpec::tiny(4).build().unwrap();
    let path = dir.join("tiny.safetensors");
    m.write(&path).unwrap();
    let n_in = 3 * 32 * 32;
    let x: Vec<f32> = (0..2 * n_in)
        .map(|i| ((i * 7919 % 2001) as f32 / 1000.0) - 1.0)
        .collect();
    let y: Vec<f32> = x
        .chunks(n_in)
        .flat_map(|s| derm_codegen::reference::logits(&m, s).unwrap())
        .collect();
    let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let yb: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = [
        (
            "input",
            TensorView::new(safetensors::Dtype::F32, vec![2, 3, 32, 32], &xb).unwrap(),
        ),
        (
            "logits",
            TensorView::new(safetensors::Dtype::F32, vec![2, 3], &yb).unwrap(),
        ),
    ];
    let golden = dir.join("tiny.golden.safetensors");
    std::fs::write(&golden, safetensors::serialize(views, None).unwrap()).unwrap();
    (path, x, y)
}

#[test]
fn onnx_subcommand_writes_the_model_and_golden_json() {
    use derm_codegen::onnx::proto::ModelProto;
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let (model, x, y) = tiny_with_golden(dir.path());
    let out = dir.path().join("tiny.onnx");
    let json = dir.path().join("golden.json");
    let o = codegen(&[
        "onnx".as_ref(),
        model.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--golden-json".as_ref(),
        json.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let p = ModelProto::decode(bytes.as_slice()).unwrap();
    let g = p.graph.as_ref().unwrap();
    let summary = format!(
        "{} nodes, {} initializers",
        g.node.len(),
        g.initializer.len()
    );
    assert!(stdout.contains(&summary), "{stdout}");
    assert!(
        stdout.contains(&format!("{} bytes", bytes.len())),
        "{stdout}"
    );
    // The ONNX file names the exact model file it came from.
    let sha = derm_codegen::metadata::sha256_hex(&std::fs::read(&model).unwrap());
    assert!(
        p.metadata_props
            .iter()
            .any(|e| e.key == "derm.source_sha256" && e.value == sha)
    );
    // The golden JSON holds the golden vectors bit for bit.
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(j["input_shape"], serde_json::json!([2, 3, 32, 32]));
    let flat = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|s| {
                s.as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_f64().unwrap() as f32)
            })
            .collect()
    };
    assert_eq!(flat(&j["inputs"]), x);
    assert_eq!(flat(&j["logits"]), y);

    // Without --golden-json only the model is written, and the Rust form still works.
    let out2 = dir.path().join("plain.onnx");
    let o = codegen(&[
        "onnx".as_ref(),
        model.as_os_str(),
        "-o".as_ref(),
        out2.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&out2).unwrap(),
        bytes,
        "export is deterministic"
    );
}

#[test]
fn onnx_errors_name_the_file_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.onnx");
    let json = dir.path().join("golden.json");
    let missing = dir.path().join("missing.safetensors");
    let err = codegen_fails(&[
        "onnx".as_ref(),
        missing.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert!(err.contains("missing.safetensors"), "{err}");

    // A model without its golden file, when --golden-json asks for it.
    let model = dir.path().join("lonely.safetensors");
    SyntheticSpec::tiny(4)
        .build()
        .unwrap()
        .write(&model)
        .unwrap();
    let err = codegen_fails(&[
        "onnx".as_ref(),
        model.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--golden-json".as_ref(),
        json.as_os_str(),
    ]);
    assert!(err.contains("lonely.golden.safetensors"), "{err}");
    assert!(!out.exists() && !json.exists(), "nothing written on error");

    // Golden vectors of another model size are refused, naming the golden file.
    let (tiny, _, _) = tiny_with_golden(dir.path());
    let big = dir.path().join("small.safetensors");
    SyntheticSpec::mobilenet_v3_small(&["a", "b", "c"], 1)
        .build()
        .unwrap()
        .write(&big)
        .unwrap();
    let golden = dir.path().join("tiny.golden.safetensors");
    let err = codegen_fails(&[
        "onnx".as_ref(),
        big.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--golden-json".as_ref(),
        json.as_os_str(),
        "--golden".as_ref(),
        golden.as_os_str(),
    ]);
    assert!(
        err.contains("tiny.golden.safetensors") && err.contains("224"),
        "{err}"
    );
    assert!(!out.exists() && !json.exists());
    assert!(tiny.exists());
}

#[test]
fn help_explains_both_forms() {
    let o = codegen(&["--help".as_ref()]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("derm-codegen [OPTIONS] --output <OUTPUT> <MODEL>"),
        "{help}"
    );
    assert!(help.contains("onnx"), "{help}");
    let o = codegen(&["onnx".as_ref(), "--help".as_ref()]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("--golden-json"), "{help}");
}
