//! Exports four seeded students (MobileNetV3 Small/Large x paper/torchvision heads) with
//! `derm-train` into `OUT_DIR`, with random BatchNorm statistics so the fold is exercised,
//! and compiles each through `derm_codegen::generate` for `::derm_runtime`:
//! `<variant>.rs`, `<variant>_weights.bin` and the tch golden vectors
//! `<variant>.golden.safetensors` (2 inputs, eval logits).

use std::path::{Path, PathBuf};

use derm_codegen::{GenOptions, WeightsSource, generate, ir::ModelFile};
use derm_train::export::{self, ExportOptions};
use derm_train::models::mobilenet_v3::{Arch, Head};
use derm_train::student_file::{DEFAULT_CLASSES, Provenance, Student, StudentMeta};

/// (module name, arch, head, seed). The test's `variant!` list must match.
const VARIANTS: [(&str, Arch, Head, i64); 4] = [
    ("small_paper", Arch::Small, Head::Paper, 1),
    ("small_torchvision", Arch::Small, Head::Torchvision, 2),
    ("large_paper", Arch::Large, Head::Paper, 3),
    ("large_torchvision", Arch::Large, Head::Torchvision, 4),
];

fn fail(msg: String) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    for (name, arch, head, seed) in VARIANTS {
        build(&out, name, arch, head, seed).unwrap_or_else(|e| fail(format!("{name}: {e:#}")));
    }
}

fn build(out: &Path, name: &str, arch: Arch, head: Head, seed: i64) -> anyhow::Result<()> {
    let classes = DEFAULT_CLASSES.map(String::from).to_vec();
    let provenance = Provenance {
        command: "derm-tests build.rs".into(),
        seed: Some(seed),
        notes: "seeded, BatchNorm perturbed for parity tests".into(),
        ..Default::default()
    };
    let mut meta = StudentMeta::new(arch, head, classes, provenance);
    meta.mean = [0.7640, 0.5382, 0.5630];
    meta.std = [0.1378, 0.1585, 0.1759];
    let student = Student::seeded(meta, seed)?;
    export::perturb_for_parity_tests(&student, seed + 1000);
    let model_path = out.join(format!("{name}.safetensors"));
    let opts = ExportOptions {
        golden_layers: false,
        ..Default::default()
    };
    export::export_student(&student, &model_path, &opts, 2, seed)?;
    let model = ModelFile::read(&model_path)?;
    let g = generate(
        &model,
        &GenOptions {
            runtime_path: "::derm_runtime".into(),
            weights: WeightsSource::OutDir(format!("{name}_weights.bin")),
            fuse_residual: true,
            fold_hardswish: true,
            fold_se: true,
        },
    )?;
    write(&out.join(format!("{name}.rs")), g.code.as_bytes())?;
    write(&out.join(format!("{name}_weights.bin")), &g.weights)?;
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    // Identical bytes keep their mtime, so the test crate is not rebuilt for nothing.
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
