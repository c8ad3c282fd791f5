//! `derm-train distill --teacher-logits` with logits computed elsewhere (another resolution,
//! another tool): accepted whatever size the teacher saw, recorded in the report, and refused
//! with the missing sample named when a training row was never computed.

mod train_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use derm_train::train::teacher_file::{LogitsMeta, save_logits};
use train_support::ham::ham_cache;

fn distill(cache: &Path, logits: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_derm-train"))
        .arg("distill")
        .arg("--cache")
        .arg(cache)
        .arg("--teacher-logits")
        .arg(logits)
        .arg("--out")
        .arg(out)
        .args([
            "--k",
            "3",
            "--fold",
            "0",
            "--train-size",
            "32",
            "--epochs",
            "1",
        ])
        .args(["--batch-size", "4", "--threads", "1", "--quiet"])
        .output()
        .unwrap()
}

/// A logits file for every sample of `cache`, "computed" at `input_size` px; rows whose
/// `present` entry is false are zero.
fn write_logits(path: &Path, samples: usize, input_size: usize, present: &[bool]) {
    let values: Vec<f32> = (0..samples * 6)
        .map(|i| {
            if present[i / 6] {
                (i % 7) as f32 - 3.0
            } else {
                0.0
            }
        })
        .collect();
    let t = tch::Tensor::from_slice(&values).reshape([samples as i64, 6]);
    let meta = LogitsMeta {
        teacher: "a 224 px teacher trained elsewhere".into(),
        cache: "tiny".into(),
        samples,
        computed: present.iter().filter(|&&p| p).count(),
        input_size,
        seconds: 0.0,
    };
    save_logits(path, &t, present, &meta).unwrap();
}

/// A temp folder holding a 32 px cache of 4 real images per class; its path and size.
fn tiny_cache() -> (tempfile::TempDir, PathBuf, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let n = ham_cache(&dir, 4, 32).len();
    (tmp, dir, n)
}

#[test]
fn logits_from_a_teacher_at_another_size_are_used_and_recorded() {
    let (tmp, cache_dir, n) = tiny_cache();
    let logits = tmp.path().join("tl224.safetensors");
    write_logits(&logits, n, 224, &vec![true; n]);
    let out = tmp.path().join("run");
    let o = distill(&cache_dir, &logits, &out);
    assert!(
        o.status.success(),
        "distill failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let text = report.to_string();
    assert!(
        text.contains("\"teacher_source\":\"cached logits\""),
        "{text}"
    );
    assert!(text.contains("\"input_size\":224"), "{text}");
    assert!(out.join("student.safetensors").exists());
}

#[test]
fn a_training_row_without_logits_is_named() {
    let (tmp, cache_dir, n) = tiny_cache();
    let logits = tmp.path().join("empty.safetensors");
    write_logits(&logits, n, 32, &vec![false; n]);
    let o = distill(&cache_dir, &logits, &tmp.path().join("run"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no cached teacher logits for cache sample"),
        "{err}"
    );
}
