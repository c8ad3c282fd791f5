//! Checks every ONNX engine binary passes (`tests/ort_cli.rs`, `tests/tract_cli.rs`): the
//! model file's ONNX export runs in the engine and gives derm-runtime's logits; an ONNX file
//! from disk and a model other than the embedded one run too; bad input fails without a panic.

use std::path::{Path, PathBuf};

use derm_codegen::synthetic::SyntheticSpec;
use serde_json::Value;

#[path = "../common/mod.rs"]
mod common;
pub use common::{out_dir, run};

/// The file derm-runtime embeds in this build (its build script reads `DERM_MODEL` too).
pub fn embedded_model() -> PathBuf {
    let path = PathBuf::from(option_env!("DERM_MODEL").unwrap_or(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/default.safetensors"
    )));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        derm_codegen::metadata::sha256_hex(&bytes),
        derm_runtime::MODEL_SHA256,
        "{} is not the embedded model",
        path.display()
    );
    path
}

fn report(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn counted(r: &Value) -> u64 {
    r["predicted_class_counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

/// The embedded model exported in memory, two workers: the logit check passes and the
/// report holds every timed image.
pub fn agrees_with_the_embedded_model(bin: &str, engine: &str) {
    let model = embedded_model();
    let dir = out_dir(&format!("{engine}-embedded"));
    let json = dir.join("r.json");
    let (ok, stdout, stderr) = run(
        bin,
        &[
            "--model",
            model.to_str().unwrap(),
            "--iterations",
            "2",
            "--images",
            "6",
            "--warmup",
            "1",
            "--threads",
            "2",
            "--json",
            json.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("exported in memory"), "{stdout}");
    assert!(
        stdout.contains("vs derm-runtime:  max |logit diff|"),
        "{stdout}"
    );
    assert!(stdout.contains("threads:          2 workers"), "{stdout}");
    let r = report(&json);
    assert_eq!(r["engine"], engine);
    assert_eq!(r["model"]["sha256"], derm_runtime::MODEL_SHA256);
    assert_eq!(r["parity"]["ok"], true, "{r}");
    assert_eq!(r["parity"]["images"], 4);
    let rel = r["parity"]["max_relative_diff"].as_f64().unwrap();
    assert!((0.0..=1e-4).contains(&rel), "{rel}");
    assert_eq!(r["protocol"]["threads"], 2);
    assert_eq!(counted(&r), 2 * 6, "every timed image counted once");
    for k in ["mean", "p50", "p90", "p99"] {
        assert!(r["per_image_ms"][k].as_f64().unwrap() > 0.0, "{k}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Another model than the embedded one (a tiny seeded network, 3 classes, 32 px), its ONNX
/// export read from a file: it runs, and nothing is compared.
pub fn runs_an_onnx_file_of_another_model(bin: &str, engine: &str) {
    let dir = out_dir(&format!("{engine}-file"));
    let (model, onnx, json) = (
        dir.join("tiny.safetensors"),
        dir.join("tiny.onnx"),
        dir.join("r.json"),
    );
    let tiny = SyntheticSpec::tiny(7).build().unwrap();
    tiny.write(&model).unwrap();
    std::fs::write(&onnx, derm_codegen::onnx::to_onnx(&tiny).unwrap()).unwrap();
    let (ok, stdout, stderr) = run(
        bin,
        &[
            "--model",
            model.to_str().unwrap(),
            "--onnx",
            onnx.to_str().unwrap(),
            "--iterations",
            "1",
            "--images",
            "3",
            "--json",
            json.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains(onnx.to_str().unwrap()), "{stdout}");
    assert!(
        stdout.contains("vs derm-runtime:  not compared"),
        "{stdout}"
    );
    let r = report(&json);
    assert!(r["parity"].is_null());
    assert_eq!(r["model"]["input"], serde_json::json!([32, 32]));
    let classes: Vec<&String> = r["predicted_class_counts"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(classes, ["a", "b", "c"]);
    assert_eq!(counted(&r), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A file that is not ONNX, a missing model file and bad counts: errors naming the culprit,
/// never a panic.
pub fn bad_input_fails_cleanly(bin: &str, engine: &str) {
    let model = embedded_model();
    let dir = out_dir(&format!("{engine}-bad"));
    let garbage = dir.join("garbage.onnx");
    std::fs::write(&garbage, b"not an onnx file").unwrap();
    let m = model.to_str().unwrap();
    let g = garbage.to_str().unwrap();
    for (args, expect) in [
        (vec!["--model", m, "--onnx", g], g),
        (
            vec!["--model", "/nonexistent/m.safetensors"],
            "/nonexistent/m.safetensors",
        ),
        (
            vec!["--model", m, "--onnx", "/nonexistent/m.onnx"],
            "/nonexistent/m.onnx",
        ),
        (vec!["--model", m, "--threads", "0"], "--threads"),
        (
            vec!["--model", m, "--images", "2", "--threads", "3"],
            "--threads 3",
        ),
    ] {
        let (ok, stdout, stderr) = run(bin, &args, &[]);
        assert!(!ok, "{args:?} should fail: {stdout}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
