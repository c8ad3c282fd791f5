//! The `pi-bench` binary on the 48 real HAM10000 images of `train/tests/fixtures/ham10000`
//! (the in-repo fixture, so the test runs the same on a fresh clone): every mode, several
//! threads, the JSON fields and the confusion PNGs beside the JSON.

use std::path::PathBuf;

mod common;

fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../train/tests/fixtures/ham10000"
    ))
}

fn out_dir(name: &str) -> PathBuf {
    common::out_dir(&format!("cli-{name}"))
}

fn pi_bench(args: &[&str]) -> (bool, String, String) {
    common::run(env!("CARGO_BIN_EXE_pi-bench"), args, &[])
}

#[test]
fn labelled_run_writes_json_and_confusion_pngs() {
    let data = fixture();
    let dir = out_dir("labelled");
    let json = dir.join("report.json");
    for (mode, stage) in [
        ("model", "run"),
        ("classify", "classify"),
        ("end-to-end", "decode + classify"),
    ] {
        let (ok, stdout, stderr) = pi_bench(&[
            "--manifest",
            data.join("metadata.csv").to_str().unwrap(),
            "--image-dir",
            data.join("images").to_str().unwrap(),
            "--iterations",
            "2",
            "--images",
            "6",
            "--warmup",
            "1",
            "--threads",
            "3",
            "--mode",
            mode,
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(ok, "{mode}: {stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("mode:             {mode} (")),
            "{stdout}"
        );
        assert!(stdout.contains("threads:          3"), "{stdout}");
        assert!(stdout.contains(derm_runtime::MODEL_SHA256), "{stdout}");
        assert!(stdout.contains("per image p90:"), "{stdout}");

        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["mode"], mode);
        assert_eq!(report["protocol"]["threads"], 3);
        assert_eq!(report["protocol"]["stage"], stage);
        assert_eq!(report["model"]["sha256"], derm_runtime::MODEL_SHA256);
        assert_eq!(report["model"]["file"], derm_runtime::MODEL_NAME);
        assert_eq!(report["model"]["precision"], derm_runtime::MODEL_PRECISION);
        assert!(report["model"]["provenance"].is_object());
        for k in ["mean", "p50", "p90", "p99"] {
            assert!(report["per_image_ms"][k].as_f64().unwrap() > 0.0, "{k}");
        }
        assert!(report["images_per_second"].as_f64().unwrap() > 0.0);
        let counted: u64 = report["predicted_class_counts"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(counted, 2 * 6, "every timed image counted once");
        assert_eq!(report["esfair"]["n"], 48);

        // One PNG for all images and one per group with images, each a readable picture.
        let groups: Vec<&str> = report["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["n"].as_u64().unwrap() > 0)
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert!(groups.len() >= 2, "{groups:?}");
        let pngs: Vec<PathBuf> = report["confusion_pngs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| PathBuf::from(p.as_str().unwrap()))
            .collect();
        assert_eq!(pngs.len(), groups.len() + 1, "{pngs:?}");
        assert_eq!(pngs[0], dir.join("report.confusion_all.png"));
        for g in &groups {
            assert!(
                pngs.contains(&dir.join(format!("report.confusion_{g}.png"))),
                "{g}"
            );
        }
        for p in &pngs {
            let img = image::open(p).unwrap();
            assert!(img.width() > 100 && img.height() > 100, "{}", p.display());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn generated_images_in_every_mode_and_bad_flags() {
    for mode in ["model", "classify", "end-to-end"] {
        let (ok, stdout, stderr) = pi_bench(&[
            "--iterations",
            "1",
            "--images",
            "4",
            "--warmup",
            "0",
            "--threads",
            "2",
            "--mode",
            mode,
        ]);
        assert!(ok, "{mode}: {stdout}\n{stderr}");
        assert!(stdout.contains("L (s / 100 img):"), "{stdout}");
        assert!(stdout.contains("images / s:"), "{stdout}");
    }
    for bad in [
        &["--mode", "network"][..],
        &["--threads", "0"],
        &["--threads", "5", "--images", "4"],
        &["--threads", "-1"],
    ] {
        let (ok, _, stderr) = pi_bench(bad);
        assert!(!ok, "{bad:?} should fail");
        assert!(!stderr.contains("panicked"), "{bad:?}: {stderr}");
    }
    let (_, _, stderr) = pi_bench(&["--mode", "network"]);
    assert!(stderr.contains("model, classify, end-to-end"), "{stderr}");
}
