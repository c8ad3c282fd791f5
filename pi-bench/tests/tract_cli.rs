//! `pi-bench-tract` (feature `tract`): the ONNX export of the embedded model runs in tract and
//! gives derm-runtime's logits.

mod engine_cli;

const BIN: &str = env!("CARGO_BIN_EXE_pi-bench-tract");

#[test]
fn the_onnx_export_agrees_with_the_embedded_model() {
    engine_cli::agrees_with_the_embedded_model(BIN, "tract");
}

#[test]
fn an_onnx_file_of_another_model_runs() {
    engine_cli::runs_an_onnx_file_of_another_model(BIN, "tract");
}

#[test]
fn bad_input_fails_cleanly() {
    engine_cli::bad_input_fails_cleanly(BIN, "tract");
}

#[test]
fn intra_op_threads_are_refused() {
    let model = engine_cli::embedded_model();
    let (ok, _, stderr) = engine_cli::run(
        BIN,
        &[
            "--model",
            model.to_str().unwrap(),
            "--intra-op-threads",
            "2",
        ],
        &[],
    );
    assert!(!ok);
    assert!(stderr.contains("--intra-op-threads 2"), "{stderr}");
}
