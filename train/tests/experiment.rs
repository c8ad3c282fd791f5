//! `derm-train experiment` on a tiny real grid (the HAM10000 fixture at 32 px, 1 thread):
//! two shards in two processes give the same report as one unsharded run; a run killed with
//! SIGKILL during a cell resumes that cell from its checkpoint and leaves finished cells
//! alone; a cell whose lock another process holds is not trained.

mod train_support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use derm_train::experiment::lock::CellLock;
use serde_json::Value;
use train_support::ham::ham_cache;

/// `derm-train experiment` on `cache` into `out` with tiny settings plus `extra`.
fn experiment(cache: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_derm-train"));
    c.arg("experiment")
        .arg("--cache")
        .arg(cache)
        .arg("--out")
        .arg(out);
    c.args(["--k", "3", "--models", "student", "--train-size", "32"]);
    c.args(["--batch-size", "4", "--bn-batches", "2", "--threads", "1"]);
    c.args([
        "--class-weights",
        "auto",
        "--checkpoint-every",
        "1",
        "--quiet",
    ]);
    c.args(extra);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn check(o: Output) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "experiment failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

fn report(dir: &Path) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_derm-train"))
        .arg("experiment-report")
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    let table = check(o);
    assert!(table.contains("| setting"), "{table}");
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

fn cell_json(dir: &Path, name: &str) -> Value {
    let p = dir.join("cells").join(name).join("cell.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

#[test]
fn two_shards_in_two_processes_report_what_one_run_does() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    ham_cache(&cache, 4, 32);
    // Two cells: S1 and S4 (targets scaled down to a few images per class and group).
    let grid = ["--settings", "S1,S4", "--scale", "0.002", "--folds", "0"];
    let grid = [&grid[..], &["--epochs", "1"]].concat();

    let sharded = tmp.path().join("sharded");
    let with = |shard: &'static str| [&grid[..], &["--shard", shard]].concat();
    let a = experiment(&cache, &sharded, &with("0/2")).spawn().unwrap();
    let b = experiment(&cache, &sharded, &with("1/2")).spawn().unwrap();
    let (out_a, out_b) = (
        check(a.wait_with_output().unwrap()),
        check(b.wait_with_output().unwrap()),
    );
    assert_eq!(out_a.trim(), "S1-student-f0: trained", "{out_a}");
    assert_eq!(out_b.trim(), "S4-student-f0: trained", "{out_b}");

    let single = tmp.path().join("single");
    check(experiment(&cache, &single, &grid).output().unwrap());

    let (rs, r1) = (report(&sharded), report(&single));
    assert_eq!(rs["cells"], 2);
    let rows = rs["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rs}");
    assert_eq!(
        (rows[0]["setting"].as_str(), rows[1]["setting"].as_str()),
        (Some("S1"), Some("S4"))
    );
    assert!(rows[0]["accuracy"]["mean"].as_f64().is_some(), "{rs}");
    assert_eq!(rs["rows"], r1["rows"], "sharded and single runs differ");
    // The S4 cell really balanced: noise copies on top of the originals.
    let s4 = cell_json(&single, "S4-student-f0");
    assert_eq!(s4["spec"]["balance"]["balance"], "S4");
    let s4_report: Value = serde_json::from_str(
        &std::fs::read_to_string(single.join("cells/S4-student-f0/report.json")).unwrap(),
    )
    .unwrap();
    assert!(
        s4_report["result"]["data"]["noise_copies"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(s4_report["result"]["spec"], s4["spec"]);
    for f in [
        "report.md",
        "fig6_overall.png",
        "confusion/S1-student/confusion_all.png",
    ] {
        assert!(single.join(f).is_file(), "{f} missing");
    }
}

#[test]
fn sigkill_during_a_cell_then_rerun_resumes_it_and_keeps_finished_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    ham_cache(&cache, 4, 32);
    let out = tmp.path().join("exp");
    let args = ["--settings", "S1", "--folds", "0,1", "--epochs", "4"];

    let mut child = experiment(&cache, &out, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = out.join("cells/S1-student-f1/checkpoint.safetensors");
    let t0 = Instant::now();
    while !ckpt.exists() && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    let _ = child.kill(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the run finished before it could be killed; make it longer"
    );
    let first = out.join("cells/S1-student-f0/cell.json");
    assert!(first.is_file(), "the first cell should have finished");
    assert!(!out.join("cells/S1-student-f1/cell.json").exists());
    let (bytes, mtime) = (
        std::fs::read(&first).unwrap(),
        std::fs::metadata(&first).unwrap().modified().unwrap(),
    );

    // The kernel released the dead process's lock: the rerun is not blocked.
    let stdout = check(experiment(&cache, &out, &args).output().unwrap());
    assert!(
        stdout.contains("S1-student-f0: already finished"),
        "{stdout}"
    );
    assert!(
        stdout.contains("S1-student-f1: trained (resumed at step"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(&first).unwrap(), bytes);
    assert_eq!(
        std::fs::metadata(&first).unwrap().modified().unwrap(),
        mtime
    );

    let resumed = cell_json(&out, "S1-student-f1");
    let step = resumed["resumed_from_step"].as_u64().expect("resumed");
    let total = resumed["total_steps"].as_u64().unwrap();
    assert!(step > 0 && step < total, "resumed at {step} of {total}");
    assert_eq!(resumed["epochs"].as_array().unwrap().len(), 4);
    assert_eq!(
        cell_json(&out, "S1-student-f0")["resumed_from_step"],
        Value::Null
    );
}

#[test]
fn a_cell_locked_by_another_process_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    ham_cache(&cache, 4, 32);
    let out = tmp.path().join("exp");
    let dir = out.join("cells/S1-student-f0");
    std::fs::create_dir_all(&dir).unwrap();
    let _held = CellLock::try_acquire(&dir.join("cell.lock"))
        .unwrap()
        .unwrap();
    let args = ["--settings", "S1", "--folds", "0", "--epochs", "1"];
    let stdout = check(experiment(&cache, &out, &args).output().unwrap());
    assert_eq!(
        stdout.trim(),
        "S1-student-f0: being trained by another process"
    );
    assert!(!dir.join("cell.json").exists());
    assert!(!dir.join("checkpoint.safetensors").exists());
}
