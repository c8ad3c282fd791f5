//! MobileNetV3 student: torchvision's parameter counts and names, ImageNet weight loading,
//! and the student weight file round trip.

use std::path::{Path, PathBuf};

use derm_train::models::mobilenet_v3::{
    self, Arch, Head, LoadOptions, MobileNetV3Config, load_torchvision_weights,
    trainable_parameters,
};
use derm_train::student_file::{self, Provenance, Student, StudentMeta};
use tch::{Kind, Tensor};

/// Where the ImageNet MobileNetV3-Small weights are when `../shared` sits beside the workspace.
const IMAGENET_WEIGHTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/weights/mobilenet_v3_small_imagenet.safetensors"
);

/// The ImageNet MobileNetV3-Small weights beside the workspace; on a fresh clone without them,
/// a stand-in with the same 244 torchvision names and shapes (a seeded, untrained network),
/// written once under `target/tmp`. [`have_imagenet`] tells which one a test got.
fn imagenet_weights() -> PathBuf {
    let p = Path::new(IMAGENET_WEIGHTS);
    if p.exists() {
        return p.to_path_buf();
    }
    static STAND_IN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    STAND_IN
        .get_or_init(|| {
            let cfg = MobileNetV3Config::new(Arch::Small, Head::Torchvision, 1000);
            let (vs, _) = mobilenet_v3::seeded(cfg, 1234).unwrap();
            // Under the target folder (cargo's scratch space for integration tests), not the
            // system temp folder, which would keep a 6 MB copy per test run. A process
            // writing it while another reads only ever replaces it whole (written beside it,
            // then renamed); no test depends on its values (tests running beside this one
            // draw from the same global generator). `save` picks the format from the
            // extension, so the partial file keeps `.safetensors`.
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
            let path = dir.join("mobilenet_v3_small_stand_in.safetensors");
            let partial = dir.join(format!(
                "mobilenet_v3_small_stand_in.{}.part.safetensors",
                std::process::id()
            ));
            vs.save(&partial).unwrap();
            std::fs::rename(&partial, &path).unwrap();
            eprintln!(
                "{} is missing: using a seeded stand-in with torchvision's names, {}",
                p.display(),
                path.display()
            );
            path
        })
        .clone()
}

/// Whether the real ImageNet weights are there (only they make trained-network claims true).
fn have_imagenet() -> bool {
    Path::new(IMAGENET_WEIGHTS).exists()
}

/// A fixed RGB-in-[0,1] batch scaled with mean = std = 0.5, as the ImageNet weights expect.
fn batch(n: i64, size: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let rgb = Tensor::rand([n, 3, size, size], (Kind::Float, tch::Device::Cpu));
    (rgb - 0.5) / 0.5
}

#[test]
fn parameter_counts_match_torchvision() {
    // torchvision's published counts (1000 classes, its own head).
    for (arch, want) in [(Arch::Small, 2_542_856), (Arch::Large, 5_483_032)] {
        let (vs, _) =
            mobilenet_v3::seeded(MobileNetV3Config::new(arch, Head::Torchvision, 1000), 0).unwrap();
        assert_eq!(trainable_parameters(&vs), want, "{arch}");
    }
    // Paper head: one Linear(576 -> 6) replaces 576*1024+1024 + 1024*1000+1000.
    let (vs, _) =
        mobilenet_v3::seeded(MobileNetV3Config::new(Arch::Small, Head::Paper, 6), 0).unwrap();
    assert_eq!(
        trainable_parameters(&vs),
        2_542_856 - (576 * 1024 + 1024 + 1024 * 1000 + 1000) + 576 * 6 + 6
    );
}

#[test]
fn names_and_shapes_are_torchvisions() {
    let (vs, _) = mobilenet_v3::seeded(
        MobileNetV3Config::new(Arch::Small, Head::Torchvision, 1000),
        0,
    )
    .unwrap();
    let vars = vs.variables();
    let shape = |k: &str| {
        vars.get(k)
            .map(|t| t.size())
            .unwrap_or_else(|| panic!("no {k}"))
    };
    assert_eq!(shape("features.0.0.weight"), [16, 3, 3, 3]);
    assert_eq!(shape("features.1.block.0.0.weight"), [16, 1, 3, 3]);
    assert_eq!(shape("features.1.block.1.fc1.weight"), [8, 16, 1, 1]);
    assert_eq!(shape("features.4.block.2.fc2.bias"), [96]);
    assert_eq!(shape("features.9.block.1.0.weight"), [288, 1, 5, 5]);
    assert_eq!(shape("features.12.0.weight"), [576, 96, 1, 1]);
    assert_eq!(shape("features.12.1.running_var"), [576]);
    assert_eq!(
        shape("features.12.1.num_batches_tracked"),
        Vec::<i64>::new()
    );
    assert_eq!(shape("classifier.0.weight"), [1024, 576]);
    assert_eq!(shape("classifier.3.weight"), [1000, 1024]);
    // 34 conv+BN x 6 entries + 9 SE x 4 + 2 Linear x 2, as torchvision's state_dict.
    assert_eq!(vars.len(), 244);

    let (vs, _) =
        mobilenet_v3::seeded(MobileNetV3Config::new(Arch::Large, Head::Paper, 6), 0).unwrap();
    let vars = vs.variables();
    assert_eq!(vars["features.16.0.weight"].size(), [960, 160, 1, 1]);
    assert_eq!(
        vars["features.13.block.2.fc1.weight"].size(),
        [168, 672, 1, 1]
    );
    assert_eq!(vars["classifier.0.weight"].size(), [6, 960]);
    assert!(!vars.contains_key("classifier.3.weight"));
}

#[test]
fn forward_shapes_and_eval_determinism() {
    for head in [Head::Paper, Head::Torchvision] {
        for arch in [Arch::Small, Arch::Large] {
            let (_vs, m) = mobilenet_v3::seeded(MobileNetV3Config::new(arch, head, 5), 1).unwrap();
            let x = batch(2, 64, 3);
            let a = tch::no_grad(|| m.forward_t(&x, false));
            assert_eq!(a.size(), [2, 5], "{arch} {head}");
            let b = tch::no_grad(|| m.forward_t(&x, false));
            assert!(a.equal(&b), "{arch} {head}: eval mode is not deterministic");
            assert_eq!(
                m.forward_features_t(&x, false).size()[1],
                arch.feature_channels()
            );
        }
    }
}

#[test]
fn bad_configs_are_errors() {
    let e =
        mobilenet_v3::seeded(MobileNetV3Config::new(Arch::Small, Head::Paper, 0), 0).unwrap_err();
    assert!(e.to_string().contains("num_classes"), "{e}");
    assert!("medium".parse::<Arch>().is_err());
    assert!("linear".parse::<Head>().is_err());
}

#[test]
fn imagenet_weights_load_and_give_finite_deterministic_logits() {
    let path = imagenet_weights();
    let cfg = MobileNetV3Config::new(Arch::Small, Head::Torchvision, 1000);
    let (mut vs, m) = mobilenet_v3::seeded(cfg, 0).unwrap();
    let n = load_torchvision_weights(&mut vs, &path, &LoadOptions::default()).unwrap();
    assert_eq!(n, 244, "every tensor of the state dict loads");
    // The file's stem weight is not the seeded init.
    let (vs0, _) = mobilenet_v3::seeded(cfg, 0).unwrap();
    let k = "features.0.0.weight";
    assert!(!vs.variables()[k].equal(&vs0.variables()[k]));

    let x = batch(2, 224, 7);
    let a = tch::no_grad(|| m.forward_t(&x, false));
    let b = tch::no_grad(|| m.forward_t(&x, false));
    assert_eq!(a.size(), [2, 1000]);
    assert!(a.equal(&b));
    assert!(
        bool::try_from(a.isfinite().all()).unwrap(),
        "non-finite logits"
    );
    // Every tensor of the file landed, bit for bit, in the variable of its name (a name
    // mapped to the wrong tensor, a transposed copy or a tensor left at its seed-0 init would
    // not); the BatchNorm statistics are variables too.
    let file = Tensor::read_safetensors(&path).unwrap();
    let vars = vs.variables();
    assert_eq!(file.len(), vars.len());
    for (name, t) in &file {
        let v = vars
            .get(name)
            .unwrap_or_else(|| panic!("{name}: no such variable"));
        assert!(
            v.equal(t),
            "{name}: the loaded variable differs from the file's tensor"
        );
    }
    // A trained network spreads its logits; a zeroed or broken one would not.
    let spread = f64::try_from(a.std(false)).unwrap();
    if have_imagenet() {
        assert!(spread > 0.1, "logit std {spread}");
    } else {
        // The seeded stand-in's logits spread by only about 2e-10 (an untrained network with
        // placeholder BatchNorm statistics): "not all zero" is what holds for it. The
        // tensor-by-tensor check above is the one that means the same with either file.
        assert!(spread > 0.0, "stand-in logit std {spread}");
        eprintln!(
            "stand-in weights: logit std {spread}; the trained spread check needs the ImageNet file"
        );
    }
}

#[test]
fn imagenet_weights_into_a_six_class_student_need_the_skip() {
    let path = imagenet_weights();
    for head in [Head::Paper, Head::Torchvision] {
        let (mut vs, _) =
            mobilenet_v3::seeded(MobileNetV3Config::new(Arch::Small, head, 6), 0).unwrap();
        let err = load_torchvision_weights(&mut vs, &path, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("classifier.3.weight: shape [1000, 1024] in the file, [6, 1024]")
                || err.contains("not in the model (2): classifier.3.bias, classifier.3.weight"),
            "{head}: {err}"
        );
        let skip = match head {
            Head::Paper => "classifier",
            Head::Torchvision => "classifier.3",
        };
        let n = load_torchvision_weights(
            &mut vs,
            &path,
            &LoadOptions {
                skip: vec![skip.into()],
            },
        )
        .unwrap();
        assert_eq!(n, if head == Head::Paper { 240 } else { 242 });
    }
}

#[test]
fn a_large_model_rejects_small_weights_with_named_keys() {
    let (mut vs, _) = mobilenet_v3::seeded(
        MobileNetV3Config::new(Arch::Large, Head::Torchvision, 1000),
        0,
    )
    .unwrap();
    let err = load_torchvision_weights(&mut vs, &imagenet_weights(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing in the file"), "{err}");
    assert!(err.contains("features.16.0.weight"), "{err}");
    assert!(
        err.contains(
            "features.2.block.0.0.weight: shape [72, 16, 1, 1] in the file, [64, 16, 1, 1]"
        ),
        "{err}"
    );
    let missing = Path::new("/nonexistent/weights.safetensors");
    let err = load_torchvision_weights(&mut vs, missing, &LoadOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/weights.safetensors"),
        "{err}"
    );
}

#[test]
fn student_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("student.safetensors");
    let classes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let mut meta = StudentMeta::new(
        Arch::Small,
        Head::Torchvision,
        classes,
        Provenance {
            command: "test".into(),
            seed: Some(5),
            ..Default::default()
        },
    );
    meta.input_size = [96, 96];
    meta.group_names = vec!["light".into(), "dark".into()];
    let s = Student::seeded(meta.clone(), 5).unwrap();
    // Make the running statistics non-trivial so the round trip covers them.
    let x = batch(4, 96, 1);
    let _ = s.model.forward_t(&x, true);
    s.save(&path).unwrap();

    let back = student_file::load(&path).unwrap();
    assert_eq!(back.meta, meta);
    assert_eq!(student_file::read_meta(&path).unwrap(), meta);
    let vars = s.vs.variables();
    let back_vars = back.vs.variables();
    assert_eq!(vars.len(), back_vars.len());
    for (k, v) in &vars {
        assert!(v.equal(&back_vars[k]), "{k} differs after the round trip");
    }
    assert_eq!(
        i64::try_from(&back_vars["features.0.1.num_batches_tracked"]).unwrap(),
        1
    );
    let y = tch::no_grad(|| s.model.forward_t(&x, false));
    let y2 = tch::no_grad(|| back.model.forward_t(&x, false));
    assert!(y.equal(&y2));
}

#[test]
fn student_file_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let mut meta = StudentMeta::new(
        Arch::Small,
        Head::Paper,
        vec!["x".into(), "y".into()],
        Provenance::default(),
    );
    meta.num_classes = 3;
    let s = mobilenet_v3::seeded(meta.config(), 0).unwrap();
    let path = dir.path().join("bad.safetensors");
    let err = student_file::save(&path, &s.0, &meta).unwrap_err();
    assert!(
        format!("{err:#}").contains("num_classes is 3 but class_names has 2"),
        "{err:#}"
    );
    // A torchvision state dict is not a student file.
    let err = student_file::load(&imagenet_weights()).unwrap_err();
    assert!(format!("{err:#}").contains("not a student file"), "{err:#}");
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors").unwrap();
    let err = student_file::load(&junk).unwrap_err();
    assert!(format!("{err:#}").contains("junk.safetensors"), "{err:#}");
}
