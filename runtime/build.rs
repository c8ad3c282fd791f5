//! Compiles the model into Rust: runs derm-codegen on `$DERM_MODEL` (absolute,
//! or relative to the workspace root) or on `models/default.safetensors`,
//! writing the module, its weight blob and the model's metadata constants (file name,
//! SHA-256, precision, provenance) to `OUT_DIR`.
//!
//! It also generates a tiny synthetic model (with and without residual
//! fusion) and its reference-interpreter outputs, which the tests use to
//! check the generated code against `derm_codegen::reference`.

use std::path::{Path, PathBuf};

use derm_codegen::metadata::ModelMetadata;
use derm_codegen::synthetic::{
    SplitMix64, SyntheticSpec, int8_channel_grids_of, int8_float_hardswish_of, int8_of,
    smooth_input, tiny_branching,
};
use derm_codegen::{GenOptions, WeightsSource, generate, ir::ModelFile, reference};

fn fail(msg: String) -> ! {
    // Cargo shows a build script's stderr: make the first line the cause.
    eprintln!("error: {msg}");
    std::process::exit(1)
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.parent().unwrap_or(&manifest).to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-env-changed=DERM_MODEL");
    let model_path = match std::env::var_os("DERM_MODEL") {
        Some(p) if !p.is_empty() => root.join(p),
        _ => root.join("models/default.safetensors"),
    };
    println!("cargo:rerun-if-changed={}", model_path.display());
    println!("cargo:rustc-env=DERM_MODEL_PATH={}", model_path.display());
    // Tests compare against the golden vectors exported with the model; a
    // snapshot taken with the model keeps the two consistent even if the
    // files change after this build.
    let golden = golden_path(&model_path);
    println!("cargo:rerun-if-changed={}", golden.display());
    let golden_snapshot = out.join("model.golden.safetensors");
    match std::fs::read(&golden) {
        Ok(bytes) => {
            write(&golden_snapshot, &bytes);
            println!(
                "cargo:rustc-env=DERM_GOLDEN_PATH={}",
                golden_snapshot.display()
            );
        }
        Err(_) => {
            let _ = std::fs::remove_file(&golden_snapshot);
            println!("cargo:rustc-env=DERM_GOLDEN_PATH={}", golden.display());
        }
    }

    // One read for both the model and its fingerprint, so they describe the same bytes.
    let bytes = std::fs::read(&model_path)
        .unwrap_or_else(|e| fail(format!("model file {}: {e}", model_path.display())));
    let model = ModelFile::from_bytes(&bytes)
        .unwrap_or_else(|e| fail(format!("model file {}: {e}", model_path.display())));
    let opts = GenOptions {
        runtime_path: "crate".into(),
        weights: WeightsSource::OutDir("model_weights.bin".into()),
        fuse_residual: true,
        fold_hardswish: true,
        fold_se: true,
    };
    let g =
        generate(&model, &opts).unwrap_or_else(|e| fail(format!("{}: {e}", model_path.display())));
    write(&out.join("model.rs"), g.code.as_bytes());
    write(&out.join("model_weights.bin"), &g.weights);
    let name = model_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let meta = ModelMetadata::new(&model, &name, &bytes)
        .rust_consts()
        .unwrap_or_else(|e| fail(format!("model metadata: {e}")));
    write(&out.join("model_metadata.rs"), meta.as_bytes());

    tiny_fixture(&out);
}

/// `<model>.golden.safetensors` beside `<model>.safetensors`.
fn golden_path(model: &Path) -> PathBuf {
    let name = model
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model.safetensors");
    let stem = name.strip_suffix(".safetensors").unwrap_or(name);
    model.with_file_name(format!("{stem}.golden.safetensors"))
}

fn write(path: &Path, bytes: &[u8]) {
    // Rewriting identical bytes would still bump mtimes and rebuild dependents.
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return;
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
}

/// Test fixtures checked against the reference interpreter:
/// `tiny_model.rs` (residuals fused), `tiny_unfused_model.rs`,
/// `tiny_branching_model.rs` (an SE whose input stays alive), each with its
/// weights, and `<model>_golden.bin` (f32 LE: inputs, then their reference logits);
/// `tiny_int8_model.rs`, the tiny model quantized (int8 kernels), whose golden logits are
/// the int8 oracle's (`tiny_int8_golden.bin`, inputs like the calibration images);
/// `tiny_int8_fhs_model.rs`, the same with every hardswish in `f32` (the float
/// hardswish epilogue in every kernel kind), golden `tiny_int8_fhs_golden.bin`;
/// `tiny_int8_pc_model.rs`, that one with every depthwise input on a grid per channel,
/// golden `tiny_int8_pc_golden.bin`.
fn tiny_fixture(out: &Path) {
    let tiny = SyntheticSpec::tiny(11)
        .build()
        .unwrap_or_else(|e| fail(format!("tiny model: {e}")));
    let branching =
        tiny_branching(12).unwrap_or_else(|e| fail(format!("tiny branching model: {e}")));
    let tiny_int8 = int8_of(&tiny, 4).unwrap_or_else(|e| fail(format!("tiny int8 model: {e}")));
    let tiny_int8_fhs = int8_float_hardswish_of(&tiny, 4)
        .unwrap_or_else(|e| fail(format!("tiny int8 model, float hardswish: {e}")));
    let tiny_int8_pc = int8_channel_grids_of(&tiny, 4)
        .unwrap_or_else(|e| fail(format!("tiny int8 model, per-channel grids: {e}")));
    for (name, model, fuse) in [
        ("tiny", &tiny, true),
        ("tiny_unfused", &tiny, false),
        ("tiny_branching", &branching, true),
        ("tiny_int8", &tiny_int8, true),
        ("tiny_int8_fhs", &tiny_int8_fhs, true),
        ("tiny_int8_pc", &tiny_int8_pc, true),
    ] {
        let opts = GenOptions {
            runtime_path: "::derm_runtime".into(),
            weights: WeightsSource::OutDir(format!("{name}_weights.bin")),
            fuse_residual: fuse,
            // The unfused variant also keeps plain hardswish and squeeze-excite scaling its
            // map, so both forms meet the golden logits.
            fold_hardswish: fuse,
            fold_se: fuse,
        };
        let g = generate(model, &opts).unwrap_or_else(|e| fail(format!("{name}: {e}")));
        write(&out.join(format!("{name}_model.rs")), g.code.as_bytes());
        write(&out.join(format!("{name}_weights.bin")), &g.weights);
    }
    write_golden(&tiny, &out.join("tiny_golden.bin"));
    write_golden(&branching, &out.join("tiny_branching_golden.bin"));
    // Seeds 4.. were not calibrated on; the last input is noise, so some values saturate.
    let mut rng = SplitMix64(9);
    let noise: Vec<f32> = (0..tiny.graph.input.shape.iter().product::<usize>())
        .map(|_| rng.uniform() * 4.0 - 2.0)
        .collect();
    let inputs = [smooth_input(&tiny, 4), smooth_input(&tiny, 5), noise];
    write_golden_of(&tiny_int8, &inputs, &out.join("tiny_int8_golden.bin"));
    write_golden_of(
        &tiny_int8_fhs,
        &inputs,
        &out.join("tiny_int8_fhs_golden.bin"),
    );
    write_golden_of(&tiny_int8_pc, &inputs, &out.join("tiny_int8_pc_golden.bin"));
}

/// Three seeded inputs and their reference logits.
fn write_golden(model: &ModelFile, path: &Path) {
    const SAMPLES: usize = 3;
    let n_in: usize = model.graph.input.shape.iter().product();
    let mut rng = SplitMix64(5);
    let inputs: Vec<Vec<f32>> = (0..SAMPLES)
        .map(|_| (0..n_in).map(|_| rng.uniform() * 2.0).collect())
        .collect();
    write_golden_of(model, &inputs, path);
}

/// `inputs` and their reference logits, as f32 LE.
fn write_golden_of(model: &ModelFile, samples: &[Vec<f32>], path: &Path) {
    let mut inputs = Vec::new();
    let mut logits = Vec::new();
    for x in samples {
        logits.extend(
            reference::logits(model, x).unwrap_or_else(|e| fail(format!("reference: {e}"))),
        );
        inputs.extend_from_slice(x);
    }
    let bytes: Vec<u8> = inputs
        .iter()
        .chain(&logits)
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write(path, &bytes);
}
