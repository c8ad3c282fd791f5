//! `pi-bench-ort` (feature `ort`): the ONNX export of the embedded model runs in ONNX Runtime
//! and gives derm-runtime's logits. Needs ONNX Runtime: `scripts/setup.sh ort`, then
//! `source scripts/env.sh` (sets `ORT_DYLIB_PATH`); without it these tests fail and say so.

mod engine_cli;

const BIN: &str = env!("CARGO_BIN_EXE_pi-bench-ort");

fn require_ort() {
    let path = std::env::var_os("ORT_DYLIB_PATH").unwrap_or_default();
    assert!(
        std::path::Path::new(&path).is_file(),
        "ONNX Runtime is not installed (ORT_DYLIB_PATH={path:?}): run scripts/setup.sh ort, then source scripts/env.sh"
    );
}

#[test]
fn the_onnx_export_agrees_with_the_embedded_model() {
    require_ort();
    engine_cli::agrees_with_the_embedded_model(BIN, "onnxruntime");
}

#[test]
fn an_onnx_file_of_another_model_runs() {
    require_ort();
    engine_cli::runs_an_onnx_file_of_another_model(BIN, "onnxruntime");
}

#[test]
fn bad_input_fails_cleanly() {
    require_ort();
    engine_cli::bad_input_fails_cleanly(BIN, "onnxruntime");
}

#[test]
fn without_the_library_it_says_how_to_install_it() {
    let model = engine_cli::embedded_model();
    let (ok, _, stderr) = engine_cli::run(
        BIN,
        &["--model", model.to_str().unwrap()],
        &["ORT_DYLIB_PATH"],
    );
    assert!(!ok);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("scripts/setup.sh ort"), "{stderr}");
}
