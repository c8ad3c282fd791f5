//! Inference over a cache with any model file: ensembles average logits, test-time
//! augmentation averages the dihedral views, and bad files are named.

mod train_support;

use std::collections::HashSet;

use derm_codegen::ir::Crop;
use derm_train::data::balance::BalancePlan;
use derm_train::data::cache::Cache;
use derm_train::data::loader::{Batches, LoaderOptions};
use derm_train::infer::{self, InferOptions, LoadedModel, Tta};
use derm_train::models::mobilenet_v3::{Arch, Head};
use derm_train::student_file::{Provenance, Student, StudentMeta};
use derm_train::train::fit::InputMap;
use tch::{Kind, Tensor};

const SIZE: u32 = 32;

/// A seeded Small student for the tiny cache's classes, saved to `dir`, and loaded back
/// through [`infer::load_model`] (so the file-kind detection is exercised too).
fn student(dir: &std::path::Path, cache: &Cache, seed: i64) -> (Student, LoadedModel) {
    let mut meta = StudentMeta::new(
        Arch::Small,
        Head::Paper,
        cache.class_names().to_vec(),
        Provenance::default(),
    );
    meta.input_size = [SIZE; 2];
    meta.mean = [0.5; 3];
    meta.std = [0.25; 3];
    let s = Student::seeded(meta, seed).unwrap();
    // Non-trivial BatchNorm statistics, so eval mode is not an identity on them.
    let _ = s
        .model
        .forward_t(&Tensor::randn([8, 3, 32, 32], tch::kind::FLOAT_CPU), true);
    // torchvision's head init (std 0.01, zero bias) gives logits near 1e-4 on these tiny
    // images; a larger head makes the seeds' and the views' logits clearly different.
    tch::no_grad(|| {
        for (name, t) in s.vs.variables() {
            if name.starts_with("classifier") {
                t.shallow_clone().copy_(&(&t * 1000.0 + 0.1 * seed as f64));
            }
        }
    });
    let path = dir.join(format!("student{seed}.safetensors"));
    s.save(&path).unwrap();
    let loaded = infer::load_model(&path).unwrap();
    (s, loaded)
}

fn opts(tta: Tta) -> InferOptions {
    InferOptions {
        batch_size: 5,
        size: None,
        tta,
        progress: false,
    }
}

/// Logits of `s` on `rows`, computed directly: loader, input map, forward, one view.
fn direct(s: &Student, cache: &Cache, rows: &[usize], v: (bool, bool, bool)) -> Tensor {
    let plan = BalancePlan::plain(rows);
    let mut lo = LoaderOptions::eval(64);
    lo.train_size = Some(SIZE as usize);
    let b = Batches::new(cache, &plan, lo, 0)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let x = InputMap::new(cache.mean(), cache.std(), s.meta.mean, s.meta.std).apply(&b.images);
    tch::no_grad(|| s.model.forward_t(&infer::view(&x, v), false)).to_kind(Kind::Float)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn dihedral_views_are_the_eight_symmetries() {
    let x = Tensor::arange(9, tch::kind::FLOAT_CPU).view([1, 1, 3, 3]);
    let seen: HashSet<Vec<i64>> = Tta::Dihedral
        .views()
        .iter()
        .map(|&v| {
            Vec::<i64>::try_from(infer::view(&x, v).flatten(0, -1).to_kind(Kind::Int64)).unwrap()
        })
        .collect();
    assert_eq!(seen.len(), 8, "the 8 views must be distinct arrangements");
    assert_eq!(Tta::None.views(), &[(false, false, false)]);
    assert_eq!(Tta::Flip.views().len(), 2);
    // The identity view leaves the batch unchanged.
    assert!(infer::view(&x, Tta::None.views()[0]).equal(&x));
}

#[test]
fn ensemble_and_tta_average_logits_in_row_order() {
    let dir = tempfile::tempdir().unwrap();
    let cache = train_support::tiny_cache(&dir.path().join("cache"), 12);
    let (s1, m1) = student(dir.path(), &cache, 1);
    let (s2, m2) = student(dir.path(), &cache, 2);
    // Rows deliberately out of order: row i of the result must be sample rows[i].
    let rows = vec![7, 2, 11, 0, 5, 3, 9];

    let one =
        infer::ensemble_logits(std::slice::from_ref(&m1), &cache, &rows, &opts(Tta::None)).unwrap();
    let want1 = direct(&s1, &cache, &rows, (false, false, false));
    assert!(
        max_diff(&one, &want1) < 1e-4,
        "single model: {}",
        max_diff(&one, &want1)
    );

    let both = infer::ensemble_logits(&[m1, m2], &cache, &rows, &opts(Tta::None)).unwrap();
    let want2 = direct(&s2, &cache, &rows, (false, false, false));
    let mean = (&want1 + &want2) / 2.0;
    assert!(
        max_diff(&both, &mean) < 1e-4,
        "ensemble: {}",
        max_diff(&both, &mean)
    );
    assert!(
        max_diff(&want1, &want2) > 1e-3,
        "the two seeds must differ for this to test"
    );

    let (s3, m3) = student(dir.path(), &cache, 3);
    let tta = infer::ensemble_logits(&[m3], &cache, &rows, &opts(Tta::Dihedral)).unwrap();
    let views: Vec<Tensor> = Tta::Dihedral
        .views()
        .iter()
        .map(|&v| direct(&s3, &cache, &rows, v))
        .collect();
    let want3 = Tensor::stack(&views, 0).mean_dim(0, false, Kind::Float);
    assert!(
        max_diff(&tta, &want3) < 1e-4,
        "TTA: {}",
        max_diff(&tta, &want3)
    );
    assert!(
        max_diff(&views[0], &views[4]) > 0.0 && max_diff(&views[0], &views[1]) > 0.0,
        "the views must give different logits for the mean to be tested"
    );
}

#[test]
fn bad_model_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a model").unwrap();
    let e = infer::load_model(&junk).unwrap_err().to_string();
    assert!(e.contains("junk.safetensors"), "{e}");

    let cache = train_support::tiny_cache(&dir.path().join("cache"), 6);
    // The error of running a seeded student with `classes` and `crop` on the cache.
    let refused = |name: &str, classes: Vec<String>, crop: Crop| {
        let mut meta = StudentMeta::new(Arch::Small, Head::Paper, classes, Provenance::default());
        meta.input_size = [SIZE; 2];
        meta.crop = crop;
        let path = dir.path().join(name);
        Student::seeded(meta, 1).unwrap().save(&path).unwrap();
        let m = infer::load_model(&path).unwrap();
        assert_eq!(m.crop, crop);
        infer::ensemble_logits(&[m], &cache, &[0, 1], &opts(Tta::None))
            .unwrap_err()
            .to_string()
    };
    let e = refused(
        "two-class.safetensors",
        vec!["a".into(), "b".into()],
        Crop::Centre,
    );
    assert!(
        e.contains("two-class.safetensors") && e.contains("classes"),
        "{e}"
    );
    // A student trained on whole photos is refused on a cache of centre squares.
    let e = refused(
        "whole-photo.safetensors",
        cache.class_names().to_vec(),
        Crop::None,
    );
    assert!(
        e.contains("whole-photo.safetensors") && e.contains("crop"),
        "{e}"
    );
}
