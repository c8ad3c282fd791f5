//! `derm-train student --resume` after `kill -9`: a run killed while it trains (and writes
//! checkpoints every step) and then resumed ends with the same tensors as an uninterrupted
//! run with the same flags.

mod train_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use train_support::ham::ham_cache;

fn student(cache: &Path, out: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_derm-train"));
    c.args(["student", "--cache"])
        .arg(cache)
        .arg("--out")
        .arg(out);
    c.args([
        "--k",
        "3",
        "--fold",
        "0",
        "--train-size",
        "32",
        "--epochs",
        "8",
        "--batch-size",
        "4",
    ]);
    c.args([
        "--lr",
        "1e-3",
        "--checkpoint-every",
        "1",
        "--bn-batches",
        "2",
        "--threads",
        "1",
        "--quiet",
    ]);
    c.args(["--class-weights", "auto"]);
    if resume {
        c.arg("--resume");
    }
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// The model tensors of a checkpoint, by name.
fn model_tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n.starts_with("model/"))
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

#[test]
fn kill_9_then_resume_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cache_dir = tmp.path().join("cache");
    ham_cache(&cache_dir, 4, 32);

    let a = tmp.path().join("a");
    assert!(student(&cache_dir, &a, false).status().unwrap().success());

    let b = tmp.path().join("b");
    let mut child = student(&cache_dir, &b, false).spawn().unwrap();
    let ckpt = b.join("checkpoint.safetensors");
    let t0 = Instant::now();
    // Kill right after the first few checkpoints exist: mid-run, possibly mid-write.
    while !ckpt.exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(150));
    let _ = child.kill(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the run finished before it could be killed; make it longer"
    );
    assert!(!b.join("report.json").exists());

    assert!(student(&cache_dir, &b, true).status().unwrap().success());
    let (ta, tb) = (
        model_tensors(&a.join("checkpoint.safetensors")),
        model_tensors(&ckpt),
    );
    assert!(!ta.is_empty());
    assert_eq!(ta.len(), tb.len());
    for ((na, da), (nb, db)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        assert!(
            da == db,
            "{na} differs between the uninterrupted and the killed+resumed run"
        );
    }
}
