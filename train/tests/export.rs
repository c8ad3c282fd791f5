//! Export: student -> model file -> `derm_codegen::ir` read-back -> codegen's reference
//! interpreter, which must match the student's tch logits within 1e-4 of the logit range.

use std::path::Path;

use derm_codegen::ir::{Crop, ModelFile, Op};
use derm_codegen::reference;
use derm_train::export::{self, ExportOptions, golden_path};
use derm_train::models::mobilenet_v3::{Arch, Head};
use derm_train::student_file::{Provenance, Student, StudentMeta};

/// A seeded student whose BatchNorms hold random, non-identity statistics and affine
/// parameters, so folding is really exercised.
fn student(arch: Arch, head: Head, size: u32, seed: i64) -> Student {
    let classes = ["BCC", "BKL", "MEL", "NV", "unknown"]
        .map(String::from)
        .to_vec();
    let mut meta = StudentMeta::new(arch, head, classes, Provenance::default());
    meta.input_size = [size, size + 16];
    meta.mean = [0.6, 0.5, 0.4];
    meta.std = [0.2, 0.25, 0.3];
    // Large students stand for models trained on whole photos: the crop must reach the file.
    if arch == Arch::Large {
        meta.crop = Crop::None;
    }
    let s = Student::seeded(meta, seed).unwrap();
    export::perturb_for_parity_tests(&s, seed + 100);
    s
}

fn read_golden(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{n}");
            let data = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (n, v.shape().to_vec(), data)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn check_variant(arch: Arch, head: Head, size: u32, seed: i64) {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("student.safetensors");
    let out = dir.path().join("model.safetensors");
    let s = student(arch, head, size, seed);
    s.save(&ckpt).unwrap();
    let r = export::export(&ckpt, &out, &ExportOptions::default(), 2, seed).unwrap();
    assert_eq!(r.golden_path, golden_path(&out));
    assert!(
        r.fold_error < 1e-5,
        "{arch} {head}: fold error {}",
        r.fold_error
    );

    let model = ModelFile::read(&out).unwrap();
    let g = &model.graph;
    let (h, w) = (size as usize, size as usize + 16);
    assert_eq!(g.input.shape, [1, 3, h, w]);
    assert_eq!(g.preprocess.mean, [0.6, 0.5, 0.4]);
    assert_eq!(g.preprocess.crop, s.meta.crop);
    assert_eq!(g.classes.len(), 5);
    assert_eq!(g.provenance["student"]["head"], head.name());
    let convs = g.ops.iter().filter(|o| matches!(o, Op::Conv2d(_))).count();
    let (want_convs, want_ses, want_adds) = match arch {
        Arch::Small => (34, 9, 6),
        Arch::Large => (46, 8, 10),
    };
    assert_eq!(convs, want_convs, "{arch}");
    let ses = g
        .ops
        .iter()
        .filter(|o| matches!(o, Op::SqueezeExcite(_)))
        .count();
    assert_eq!(ses, want_ses, "{arch}");
    let adds = g.ops.iter().filter(|o| matches!(o, Op::Add(_))).count();
    assert_eq!(adds, want_adds, "{arch}");

    let golden = read_golden(&r.golden_path);
    let get = |n: &str| {
        golden
            .iter()
            .find(|t| t.0 == n)
            .unwrap_or_else(|| panic!("no {n}"))
    };
    let input = get("input");
    let logits = get("logits");
    assert_eq!(input.1, [2, 3, h, w]);
    assert_eq!(logits.1, [2, 5]);
    let layer_names: Vec<&str> = golden
        .iter()
        .filter_map(|t| t.0.strip_prefix("layer."))
        .collect();
    assert_eq!(layer_names.len(), g.ops.len());

    let per = 3 * h * w;
    for n in 0..2 {
        let x = &input.2[n * per..(n + 1) * per];
        let layers = reference::run(&model, x).unwrap();
        let got = &layers.last().unwrap().data;
        let want = &logits.2[n * 5..(n + 1) * 5];
        let range = want.iter().copied().fold(f32::MIN, f32::max)
            - want.iter().copied().fold(f32::MAX, f32::min);
        assert!(range > 1e-3, "{arch} {head}: degenerate logits {want:?}");
        let err = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            err <= 1e-4 * range,
            "{arch} {head} sample {n}: reference {got:?} vs tch {want:?} (err {err}, range {range})"
        );
        // The per-layer goldens are the same values the reference computes, op by op.
        for lo in layers.iter().step_by(7) {
            let gl = get(&format!("layer.{}", lo.name));
            let numel: usize = lo.shape.iter().product();
            assert_eq!(gl.1[1..], lo.shape[..], "{}", lo.name);
            let gv = &gl.2[n * numel..(n + 1) * numel];
            let scale = gv.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            let e = gv
                .iter()
                .zip(&lo.data)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                e <= 1e-4 * scale,
                "{arch} {head} {}: {e} vs scale {scale}",
                lo.name
            );
        }
    }
}

#[test]
fn small_paper_matches_reference() {
    check_variant(Arch::Small, Head::Paper, 64, 1);
}

#[test]
fn small_torchvision_matches_reference() {
    check_variant(Arch::Small, Head::Torchvision, 64, 2);
}

#[test]
fn large_paper_matches_reference() {
    check_variant(Arch::Large, Head::Paper, 48, 3);
}

#[test]
fn large_torchvision_matches_reference() {
    check_variant(Arch::Large, Head::Torchvision, 48, 4);
}

#[test]
fn golden_without_layers_and_bad_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("s.safetensors");
    student(Arch::Small, Head::Paper, 32, 5)
        .save(&ckpt)
        .unwrap();
    let out = dir.path().join("m.safetensors");
    let opts = ExportOptions {
        golden_layers: false,
        ..Default::default()
    };
    export::export(&ckpt, &out, &opts, 1, 0).unwrap();
    let names: Vec<String> = read_golden(&golden_path(&out))
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(names, ["input", "logits"]);

    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"\x08\0\0\0\0\0\0\0{}      ").unwrap();
    let err = export::export(&junk, &out, &opts, 1, 0).unwrap_err();
    assert!(format!("{err:#}").contains("junk.safetensors"), "{err:#}");
}
