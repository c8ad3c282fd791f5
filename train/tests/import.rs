//! `derm-train import`: a torchvision `state_dict` trained elsewhere becomes a student file
//! with every tensor as it was, the cache's names and the recorded training size; a file that
//! lacks a tensor or has another head shape is refused with the tensor named.

mod train_support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use derm_train::models::mobilenet_v3::{Arch, Head};
use derm_train::student_file::{self, Provenance, Student, StudentMeta};
use safetensors::tensor::TensorView;
use tch::{Kind, Tensor};
use train_support::ham::ham_cache;

/// A seeded MobileNetV3-Small with the torchvision head, as a torchvision-named state dict
/// (what `scripts/oof_teachers.py train --save-weights` writes), minus `drop` and with
/// `metadata` stored under `derm.torchvision_student`. Returns the tensors by name.
fn write_state_dict(
    path: &Path,
    classes: usize,
    drop: &str,
    metadata: Option<&str>,
) -> HashMap<String, Tensor> {
    let names: Vec<String> = (0..classes).map(|c| format!("c{c}")).collect();
    let meta = StudentMeta::new(Arch::Small, Head::Torchvision, names, Provenance::default());
    let s = Student::seeded(meta, 11).unwrap();
    let vars: HashMap<String, Tensor> =
        s.vs.variables()
            .into_iter()
            .filter(|(k, _)| k != drop)
            // Trained BatchNorm statistics, unlike a fresh network's 0 and 1: an import that
            // kept the defaults would then differ.
            .map(|(k, t)| {
                let t = if k.ends_with("running_var") {
                    t * 2.5 + 0.1
                } else if k.ends_with("running_mean") {
                    t + 0.3
                } else {
                    t
                };
                (k, t)
            })
            .collect();
    let bytes: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = vars
        .iter()
        .map(|(k, t)| {
            let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            let flat = t.flatten(0, -1);
            match t.kind() {
                Kind::Int64 => {
                    let v: Vec<i64> = Vec::try_from(&flat).unwrap();
                    let b = i64_bytes(&v);
                    (k.clone(), b, shape, safetensors::Dtype::I64)
                }
                _ => {
                    let v: Vec<f32> = Vec::try_from(&flat).unwrap();
                    let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    (k.clone(), b, shape, safetensors::Dtype::F32)
                }
            }
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(k, b, shape, d)| (k.clone(), TensorView::new(*d, shape.clone(), b).unwrap()))
        .collect();
    let md =
        metadata.map(|m| HashMap::from([("derm.torchvision_student".to_owned(), m.to_owned())]));
    safetensors::serialize_to_file(views, md, path).unwrap();
    vars
}

fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn import(weights: &Path, cache: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_derm-train"))
        .arg("import")
        .arg(weights)
        .arg("--cache")
        .arg(cache)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn every_tensor_arrives_unchanged_with_the_caches_names_and_the_training_size() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let c = ham_cache(&cache, 1, 32);
    let weights = tmp.path().join("gpu.safetensors");
    let want = write_state_dict(
        &weights,
        6,
        "",
        Some(r#"{"size": 96, "seed": 7, "epochs": 30}"#),
    );
    let out = tmp.path().join("student.safetensors");
    let o = import(&weights, &cache, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = student_file::load(&out).unwrap();
    assert_eq!(s.meta.input_size, [96, 96]);
    assert_eq!(s.meta.class_names, c.class_names());
    assert_eq!(s.meta.group_names, c.group_names());
    assert_eq!(s.meta.head, Head::Torchvision);
    assert!(s.meta.provenance.trained);
    assert_eq!(s.meta.provenance.seed, Some(7));
    assert!(
        s.meta.provenance.notes.contains("\"epochs\":30"),
        "{}",
        s.meta.provenance.notes
    );
    let got = s.vs.variables();
    assert_eq!(got.len(), want.len());
    for (k, t) in &want {
        assert!(got[k].equal(t), "{k} changed on import");
    }
}

#[test]
fn a_missing_tensor_and_another_head_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    ham_cache(&cache, 1, 32);
    let out = tmp.path().join("student.safetensors");

    let missing = tmp.path().join("missing.safetensors");
    write_state_dict(&missing, 6, "classifier.3.bias", Some(r#"{"size": 64}"#));
    let o = import(&missing, &cache, &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("missing in the file (1): classifier.3.bias"),
        "{err}"
    );

    let imagenet = tmp.path().join("imagenet.safetensors");
    write_state_dict(&imagenet, 1000, "", None);
    let o = import(&imagenet, &cache, &out, &["--input-size", "64"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("classifier.3.weight: shape [1000, 1024] in the file, [6, 1024]"),
        "{err}"
    );
    assert!(err.contains("6 classes (the cache's)"), "{err}");

    // No recorded size and none given: refused, naming the flag.
    let unsized_file = tmp.path().join("unsized.safetensors");
    write_state_dict(&unsized_file, 6, "", None);
    let o = import(&unsized_file, &cache, &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("records no training size: give --input-size"),
        "{err}"
    );
    assert!(!out.exists(), "a refused import wrote {}", out.display());
}
