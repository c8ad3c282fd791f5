//! `--precision f16` and `int8`: the same student exported as f32, f16 and int8. The f16 file is about half
//! the size, stores every weight as F16, passes derm-codegen's validation, computes logits
//! within 1e-2 of the logit range of the f32 export's, and its golden logits are its own
//! (the widened weights'), not the student's. `derm-train quantize` turns an f32 file into int8.

mod train_support;

use std::path::Path;
use std::process::Command;

use derm_codegen::ir::{DType, ModelFile};
use derm_codegen::{metadata, reference};
use derm_train::export::{self, ExportOptions, Precision, golden_path};
use derm_train::models::mobilenet_v3::{Arch, Head};
use derm_train::student_file::{Provenance, Student, StudentMeta};

/// A seeded Small student with non-identity BatchNorms (as `tests/export.rs` builds it).
fn student(seed: i64) -> Student {
    let classes = ["BCC", "BKL", "MEL", "NV", "unknown"]
        .map(String::from)
        .to_vec();
    let mut meta = StudentMeta::new(Arch::Small, Head::Paper, classes, Provenance::default());
    meta.input_size = [32, 48];
    meta.mean = [0.6, 0.5, 0.4];
    meta.std = [0.2, 0.25, 0.3];
    let s = Student::seeded(meta, seed).unwrap();
    export::perturb_for_parity_tests(&s, seed + 100);
    s
}

fn golden_f32(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// libtorch's random generator is one per process, and these tests seed it and draw from it
/// (seeded students, golden inputs); two tests at once would interleave their draws, and the
/// exports that must see the same inputs would not. Every test holds this lock.
static TCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tch_rng() -> std::sync::MutexGuard<'static, ()> {
    TCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// `student(seed)` at a square 32x32 input (calibration and fine-tuning resize cached
/// images to a square), exported as f32 to `dir/m32.safetensors` with `golden` golden inputs.
fn square_f32_file(dir: &Path, seed: i64, golden: i64) -> std::path::PathBuf {
    let mut s = student(seed);
    s.meta.input_size = [32, 32];
    let p32 = dir.join("m32.safetensors");
    export::export_student(
        &s,
        &p32,
        &ExportOptions {
            golden_layers: false,
            ..Default::default()
        },
        golden,
        5,
    )
    .unwrap();
    p32
}

fn range(v: &[f32]) -> f32 {
    v.iter().copied().fold(f32::MIN, f32::max) - v.iter().copied().fold(f32::MAX, f32::min)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn f16_export_is_half_the_size_and_close_to_f32() {
    let _rng = tch_rng();
    let dir = tempfile::tempdir().unwrap();
    let s = student(7);
    let (p32, p16) = (
        dir.path().join("m32.safetensors"),
        dir.path().join("m16.safetensors"),
    );
    let opts = |precision| ExportOptions {
        golden_layers: false,
        precision,
        ..Default::default()
    };
    let r32 = export::export_student(&s, &p32, &opts(Precision::F32), 2, 3).unwrap();
    let r16 = export::export_student(&s, &p16, &opts(Precision::F16), 2, 3).unwrap();
    assert_eq!(r32.precision_error, r32.fold_error);
    assert!(
        r16.precision_error > r16.fold_error && r16.precision_error < 1e-2,
        "f16 vs student {} (fold {})",
        r16.precision_error,
        r16.fold_error
    );

    let (b32, b16) = (
        std::fs::metadata(&p32).unwrap().len() as f64,
        std::fs::metadata(&p16).unwrap().len() as f64,
    );
    let ratio = b16 / b32;
    assert!(
        (0.45..=0.56).contains(&ratio),
        "f16 file {b16} B is {ratio:.3} of the f32 file {b32} B"
    );

    let m32 = ModelFile::read(&p32).unwrap();
    let m16 = ModelFile::read(&p16).unwrap();
    assert_eq!(m16.graph.ops, m32.graph.ops);
    assert_eq!(m16.tensors.len(), m32.tensors.len());
    for (name, t) in &m16.tensors {
        assert_eq!(t.dtype, DType::F16, "{name}");
        assert_eq!(m16.graph.tensors[name].dtype, DType::F16, "{name}");
        assert_eq!(t.shape, m32.tensors[name].shape, "{name}");
    }
    assert_eq!(metadata::precision(&m16), "f16");
    assert_eq!(metadata::precision(&m32), "f32");
    assert_eq!(m16.graph.provenance["precision"], "f16");
    assert_eq!(m32.graph.provenance["precision"], "f32");

    // Same seed, same inputs: the golden files differ only in their logits.
    let input = golden_f32(&golden_path(&p16), "input");
    assert_eq!(input, golden_f32(&golden_path(&p32), "input"));
    let want32 = golden_f32(&golden_path(&p32), "logits");
    let want16 = golden_f32(&golden_path(&p16), "logits");
    let (per, c) = (3 * 32 * 48, 5);
    for n in 0..2 {
        let x = &input[n * per..(n + 1) * per];
        let l32 = &want32[n * c..(n + 1) * c];
        let l16 = &want16[n * c..(n + 1) * c];
        let r = range(l32);
        assert!(r > 1e-3, "degenerate logits {l32:?}");
        let got16 = reference::logits(&m16, x).unwrap();
        // The f16 golden logits are what the f16 file computes (the runtime's 1e-4 check) ...
        let own = max_abs_diff(&got16, l16);
        assert!(
            own <= 1e-4 * range(l16),
            "sample {n}: {got16:?} vs golden {l16:?}"
        );
        // ... which is close to, but not exactly, the f32 model: the weights were rounded.
        let err = max_abs_diff(&got16, l32);
        assert!(
            err > 0.0 && err <= 1e-2 * r,
            "sample {n}: f16 {got16:?} vs f32 {l32:?} (err {err}, range {r})"
        );
    }
}

#[test]
fn f16_rounds_to_nearest_even_and_rejects_overflow() {
    let _rng = tch_rng();
    let s = student(8);
    let m = export::model_file(&s, &ExportOptions::default()).unwrap();
    let name = "classifier.0.bias".to_owned();
    let patch = |values: &[f32]| {
        let mut m = m.clone();
        let t = m.tensors.get_mut(&name).unwrap();
        for (i, v) in values.iter().enumerate() {
            t.data[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        m
    };
    // Halfway between neighbours of spacing 2^-10 near 1: ties go to the even mantissa.
    let tie_down = 1.0 + 2f32.powi(-11);
    let tie_up = 1.0 + 3.0 * 2f32.powi(-11);
    let h = export::store_precision(&patch(&[tie_down, tie_up, -70000.0 / 2.0]), Precision::F16)
        .unwrap();
    let v = h.tensors[&name].to_f32().unwrap();
    assert_eq!(&v[..3], &[1.0, 1.0 + 2f32.powi(-9), -35008.0]);

    let err = export::store_precision(&patch(&[70000.0]), Precision::F16).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&name) && msg.contains("70000"),
        "error should name the tensor and value: {msg}"
    );
}

#[test]
fn int8_export_is_a_quarter_of_the_size_and_its_golden_is_the_reference() {
    let _rng = tch_rng();
    let dir = tempfile::tempdir().unwrap();
    let s = student(11);
    let (p32, p8) = (
        dir.path().join("m32.safetensors"),
        dir.path().join("m8.safetensors"),
    );
    let base = ExportOptions {
        golden_layers: false,
        ..Default::default()
    };
    export::export_student(&s, &p32, &base, 3, 5).unwrap();
    // Calibration images: seeded uniform pixels, as golden inputs (other seed).
    let cal = export::golden_inputs(&s, 32, 99);
    let flat = Vec::<f32>::try_from(cal.contiguous().view(-1)).unwrap();
    let per = 3 * 32 * 48;
    let inputs: Vec<Vec<f32>> = flat.chunks(per).map(<[f32]>::to_vec).collect();
    // int8 without calibration is a named error, not a silent float export.
    let e = export::export_student(
        &s,
        &p8,
        &ExportOptions {
            precision: Precision::Int8,
            ..base.clone()
        },
        3,
        5,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("calibration"), "{e}");
    let r8 = export::export_student(
        &s,
        &p8,
        &ExportOptions {
            precision: Precision::Int8,
            calibration: Some(export::Calibrate {
                inputs,
                range: export::RangeMethod::MinMax,
                progress: false,
                equalize: false,
                float_hardswish: Vec::new(),
                bias_correction: false,
                channel_grids: false,
            }),
            ..base
        },
        3,
        5,
    )
    .unwrap();
    // Random weights through ~50 int8 layers: a few percent of the logit range.
    assert!(
        r8.precision_error < 0.15,
        "int8 vs student {}",
        r8.precision_error
    );

    let m32 = ModelFile::read(&p32).unwrap();
    let m8 = ModelFile::read(&p8).unwrap();
    assert_eq!(m8.graph.version, 2);
    assert_eq!(metadata::precision(&m8), "int8");
    assert_eq!(m8.graph.provenance["precision"], "int8");
    assert_eq!(m8.graph.ops, m32.graph.ops);
    let weight_bytes = |m: &ModelFile| {
        m.graph
            .ops
            .iter()
            .flat_map(|o| o.tensor_names())
            .map(|t| m.tensors[t].data.len())
            .sum::<usize>() as f64
    };
    let ratio = weight_bytes(&m8) / weight_bytes(&m32);
    assert!(
        ratio < 0.3,
        "int8 weights and biases are {ratio:.3} of f32's"
    );

    // The golden logits are exactly what the int8 reference computes from the file.
    let input = golden_f32(&golden_path(&p8), "input");
    assert_eq!(input, golden_f32(&golden_path(&p32), "input"));
    let want8 = golden_f32(&golden_path(&p8), "logits");
    let want32 = golden_f32(&golden_path(&p32), "logits");
    for n in 0..3 {
        let x = &input[n * per..(n + 1) * per];
        let got = reference::logits(&m8, x).unwrap();
        assert_eq!(got, want8[n * 5..(n + 1) * 5], "sample {n}");
        let err = max_abs_diff(&got, &want32[n * 5..(n + 1) * 5]);
        assert!(err > 0.0, "sample {n}: int8 equals f32 exactly");
    }
}

/// `derm-train quantize` on a real f32 file: the int8 file it writes is the int8 reference's
/// (golden logits equal `reference::logits` on the f32 file's golden inputs, bit for bit),
/// records its command, and the command's refusals name the file at fault.
#[test]
fn quantize_command_turns_an_f32_file_into_an_int8_one() {
    let _rng = tch_rng();
    let dir = tempfile::tempdir().unwrap();
    let p32 = square_f32_file(dir.path(), 12, 3);
    let p8 = dir.path().join("m8.safetensors");
    let cache = dir.path().join("cache");
    train_support::ham::ham_cache(&cache, 2, 40);
    let quantize = |model: &Path, out: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_derm-train"))
            .arg("quantize")
            .arg(model)
            .arg("-o")
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    let cal = cache.to_str().unwrap();
    let o = quantize(
        &p32,
        &p8,
        &[
            "--calibration-cache",
            cal,
            "--calibration-images",
            "8",
            "--quiet",
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "quantize failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("calibrated on 8 images"), "{stdout}");
    assert!(
        stdout.contains("int8 keeps the f32 top-1 on")
            && stdout.contains("of 8 calibration images"),
        "{stdout}"
    );

    let m8 = ModelFile::read(&p8).unwrap();
    assert_eq!(metadata::precision(&m8), "int8");
    let q = &m8.graph.provenance["quantize"];
    assert_eq!(q["calibration_images"], 8);
    let kept = &q["calibration_agreement"];
    assert_eq!(kept["images"], 8, "{q}");
    assert!(kept["top1_kept"].as_u64().unwrap() <= 8, "{q}");
    assert!(
        q["command"]
            .as_str()
            .unwrap()
            .starts_with("derm-train quantize"),
        "{q}"
    );
    let input = golden_f32(&golden_path(&p8), "input");
    assert_eq!(input, golden_f32(&golden_path(&p32), "input"));
    let want = golden_f32(&golden_path(&p8), "logits");
    let per = 3 * 32 * 32;
    assert_eq!(input.len(), 3 * per);
    for n in 0..3 {
        let got = reference::logits(&m8, &input[n * per..(n + 1) * per]).unwrap();
        assert_eq!(got, want[n * 5..(n + 1) * 5], "sample {n}");
    }

    // Refusals: an int8 input file, and a missing calibration cache, each named.
    let again = dir.path().join("again.safetensors");
    let o = quantize(&p8, &again, &["--calibration-cache", cal]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("already an int8 model"), "{err}");
    let o = quantize(&p32, &again, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("--calibration-cache"), "{err}");
    assert!(
        !again.exists(),
        "a refused quantize wrote {}",
        again.display()
    );
}

/// The fake-quantized forward of `derm-train qat` models the int8 network: on a real
/// exported student, every op's output equals the int8 oracle's (dequantized) but for a few
/// values at most three quanta away (a float sum landing on the other side of a rounding
/// boundary than the exact integer sum, then carried into the next layers), so the
/// rounding it trains against is the runtime's. The same holds with the stem's hardswish
/// in f32 (`--float-hardswish stem`), where the fake-quantized graph leaves the stem's
/// pre-activation unrounded, and with the depthwise inputs on per-channel grids
/// (`--channel-grids`), each channel compared in its own quanta.
#[test]
fn qat_forward_tracks_the_int8_oracle() {
    let _rng = tch_rng();
    use derm_codegen::quant::ptq::{RangeMethod, quantize_with};
    use derm_train::export::qat::{QatGraph, activation_grid};
    use derm_train::export::{Calibrate, calibrate, channel_grid_ops, float_hardswish_ops};

    let dir = tempfile::tempdir().unwrap();
    let p32 = square_f32_file(dir.path(), 21, 8);
    let model = ModelFile::read(&p32).unwrap();
    let input = golden_f32(&golden_path(&p32), "input");
    let per = 3 * 32 * 32;
    let inputs: Vec<Vec<f32>> = input.chunks_exact(per).map(<[f32]>::to_vec).collect();
    let cal = Calibrate {
        inputs: inputs.clone(),
        range: RangeMethod::MinMax,
        progress: false,
        equalize: false,
        float_hardswish: Vec::new(),
        bias_correction: false,
        channel_grids: false,
    };
    let observed = calibrate(&model, &cal).unwrap();
    let stem = float_hardswish_ops(&model, &["stem".to_owned()]).unwrap();
    assert_eq!(stem, [model.graph.ops[0].name().to_owned()]);
    for (float, per_channel) in [(Vec::new(), false), (stem.clone(), false), (stem, true)] {
        let (float, grids) = channel_grid_ops(&model, float, per_channel);
        assert_eq!(grids.is_empty(), !per_channel);
        let q = quantize_with(&model, &observed, RangeMethod::MinMax, &float, &grids).unwrap();
        let version = match (float.is_empty(), per_channel) {
            (_, true) => 4,
            (true, false) => 2,
            (false, false) => 3,
        };
        assert_eq!(q.graph.version, version);
        let mut grid = activation_grid(&model, &observed, RangeMethod::MinMax, &float).unwrap();
        let scales = observed
            .channel_grids(&grids, RangeMethod::MinMax, &mut grid)
            .unwrap();
        // The graph rounds on exactly the file's grids.
        let file = q.graph.quantization.as_ref().unwrap();
        assert_eq!(file.channel_scales, scales);
        assert_eq!(file.activations, grid);
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let g = QatGraph::new(&model, grid, &float, &vs.root())
            .unwrap()
            .with_channel_scales(&scales)
            .unwrap();
        qat_tracks_oracle(
            &q,
            &g,
            &inputs,
            &format!("float hardswish {float:?}, per-channel grids {grids:?}"),
        );
    }
}

/// The fake-quantized graph `g` against the int8 oracle of `q`, the file written on the
/// grids `g` rounds on (each caller checks that): every value within three of its tensor's
/// quanta, fewer than 5% more than half a quantum of its own grid apart, the same argmax.
fn qat_tracks_oracle(
    q: &ModelFile,
    g: &derm_train::export::qat::QatGraph,
    inputs: &[Vec<f32>],
    what: &str,
) {
    let (mut values, mut off, mut worst) = (0usize, 0usize, 0f32);
    let quant = q.graph.quantization.as_ref().unwrap();
    let (grid, channel_scales) = (&quant.activations, &quant.channel_scales);
    for x in inputs {
        let want = reference::run(q, x).unwrap();
        let t = tch::Tensor::from_slice(x).view([1, 3, 32, 32]);
        let got = g.layers(&t).unwrap();
        assert_eq!(got.len(), want.len());
        // The logits (f32 in both) are compared through the argmax below.
        for (w, (name, y)) in want.iter().zip(&got).take(want.len() - 1) {
            let y = Vec::<f32>::try_from(y.detach().contiguous().view(-1)).unwrap();
            let channels = channel_scales.get(&w.name);
            let plane = y.len() / channels.map_or(1, Vec::len);
            for (i, (a, b)) in w.data.iter().zip(&y).enumerate() {
                // At most three of the tensor's quanta apart (for a per-channel grid, its
                // largest channel's: a finer channel grid magnifies, in its own quanta, the
                // one-quantum differences of the values it is computed from), and rarely
                // more than half a quantum of the value's own grid (its channel's).
                let quantum = grid[&w.name].scale;
                let own = channels.map_or(quantum, |s| s[i / plane]);
                let d = (a - b).abs() / quantum;
                assert!(
                    d <= 3.0,
                    "{what}: {name}[{i}]: fake-quantized {b}, int8 oracle {a} (quantum {quantum})"
                );
                off += usize::from((a - b).abs() / own > 0.5);
                worst = worst.max(d);
            }
            values += y.len();
        }
        let (li, lq) = (&want[want.len() - 1].data, &got[got.len() - 1].1);
        let lq = Vec::<f32>::try_from(lq.detach().view(-1)).unwrap();
        let argmax = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
        assert_eq!(argmax(li), argmax(&lq), "{what}: logits {li:?} vs {lq:?}");
    }
    eprintln!("{what}: {off} of {values} values off the int8 oracle, at most {worst} quanta");
    assert!(
        off * 20 < values,
        "{what}: {off} of {values} values off the int8 oracle"
    );
}

/// With `scale_lr` the grids' scales train too, and the int8 file written on the trained
/// grids is the network the fake-quantized graph computed: the int8 oracle follows it as
/// closely as it follows the fixed-grid graph (`qat_tracks_oracle`).
#[test]
fn learned_scales_move_and_the_int8_file_uses_them() {
    let _rng = tch_rng();
    use derm_codegen::quant::ptq::{RangeMethod, quantize_on_grid};
    use derm_train::export::qat::{QatOptions, QatTrainer, activation_grid};
    use derm_train::export::{Calibrate, calibrate};

    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let p32 = square_f32_file(dir.path(), 33, 4);
    let model = ModelFile::read(&p32).unwrap();
    let input = golden_f32(&golden_path(&p32), "input");
    let per = 3 * 32 * 32;
    let inputs: Vec<Vec<f32>> = input.chunks_exact(per).map(<[f32]>::to_vec).collect();
    let cal = Calibrate {
        inputs: inputs.clone(),
        range: RangeMethod::MinMax,
        progress: false,
        equalize: false,
        float_hardswish: Vec::new(),
        bias_correction: false,
        channel_grids: false,
    };
    let grid = activation_grid(
        &model,
        &calibrate(&model, &cal).unwrap(),
        RangeMethod::MinMax,
        &[],
    )
    .unwrap();
    let opts = QatOptions {
        lr: 1e-4,
        temperature: 1.0,
        scale_lr: Some(0.05),
    };
    let mut trainer = QatTrainer::new(&model, grid.clone(), &[], opts).unwrap();
    let batch = tch::Tensor::from_slice(&input).view([-1, 3, 32, 32]);
    for _ in 0..3 {
        trainer.step(&batch).unwrap();
    }
    let learned = trainer.grid().unwrap();
    assert_eq!(
        learned.keys().collect::<Vec<_>>(),
        grid.keys().collect::<Vec<_>>()
    );
    let moved = learned
        .iter()
        .filter(|(k, p)| p.scale != grid[*k].scale)
        .count();
    assert!(
        moved * 2 > grid.len(),
        "{moved} of {} scales moved",
        grid.len()
    );
    for (k, p) in &learned {
        assert_eq!(p.zero_point, grid[k].zero_point, "{k}");
        // Three steps of at most about 0.05 each on the logarithm.
        let r = f64::from(p.scale / grid[k].scale);
        assert!((0.8..1.25).contains(&r), "{k}: {r}");
    }
    let tuned = trainer.graph().to_model_file(&model).unwrap();
    let q = quantize_on_grid(&tuned, learned.clone(), Default::default(), &[]).unwrap();
    assert_eq!(q.graph.quantization.as_ref().unwrap().activations, learned);
    qat_tracks_oracle(&q, trainer.graph(), &inputs, "learned scales");
}

/// A fine-tuning run saved after one step and resumed in a fresh trainer ends with the
/// same weights, to the bit, as the run that was never interrupted (what `qat --resume`
/// relies on after each epoch).
#[test]
fn qat_resumed_from_a_checkpoint_matches_the_uninterrupted_run() {
    let _rng = tch_rng();
    use derm_codegen::quant::ptq::RangeMethod;
    use derm_train::export::qat::{QatOptions, QatTrainer, activation_grid};
    use derm_train::export::{Calibrate, calibrate};

    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let p32 = square_f32_file(dir.path(), 33, 4);
    let model = ModelFile::read(&p32).unwrap();
    let input = golden_f32(&golden_path(&p32), "input");
    let per = 3 * 32 * 32;
    let cal = Calibrate {
        inputs: input.chunks_exact(per).map(<[f32]>::to_vec).collect(),
        range: RangeMethod::MinMax,
        progress: false,
        equalize: false,
        float_hardswish: Vec::new(),
        bias_correction: false,
        channel_grids: false,
    };
    let grid = activation_grid(
        &model,
        &calibrate(&model, &cal).unwrap(),
        RangeMethod::MinMax,
        &[],
    )
    .unwrap();
    let batch = |i: usize| {
        tch::Tensor::from_slice(&input[2 * i * per..2 * (i + 1) * per]).view([2, 3, 32, 32])
    };
    let opts = QatOptions {
        lr: 1e-3,
        temperature: 2.0,
        scale_lr: None,
    };
    let weights = |m: &ModelFile| -> Vec<(String, Vec<u8>)> {
        m.tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.data.clone()))
            .collect()
    };

    let mut straight = QatTrainer::new(&model, grid.clone(), &[], opts).unwrap();
    let l0 = straight.step(&batch(0)).unwrap();
    let l1 = straight.step(&batch(1)).unwrap();
    let want = weights(&straight.finish(&model).unwrap());

    let ck = dir.path().join("qat.ckpt.safetensors");
    let mut first = QatTrainer::new(&model, grid.clone(), &[], opts).unwrap();
    assert_eq!(first.step(&batch(0)).unwrap(), l0);
    first.save(&ck, &7u32).unwrap();
    drop(first);
    let mut second = QatTrainer::new(&model, grid, &[], opts).unwrap();
    assert_eq!(second.resume::<u32>(&ck).unwrap(), 7);
    assert_eq!(second.step(&batch(1)).unwrap(), l1);
    let got = weights(&second.finish(&model).unwrap());
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "resumed weights differ from the uninterrupted run's"
    );
    // The two steps changed the weights (so the comparison above means something).
    assert!(weights(&model) != want);
}

/// `derm-train qat` end to end on cached real images: it fine-tunes, writes an int8 file
/// whose golden logits are the int8 oracle's bit for bit, records how it was made, and
/// refuses an int8 input by name.
#[test]
fn qat_command_writes_an_int8_file_that_the_oracle_reproduces() {
    let _rng = tch_rng();
    let dir = tempfile::tempdir().unwrap();
    let p32 = square_f32_file(dir.path(), 14, 3);
    let p8 = dir.path().join("qat8.safetensors");
    let cache = dir.path().join("cache");
    train_support::ham::ham_cache(&cache, 2, 40);
    let qat = |model: &Path, out: &Path| qat_short(model, &cache, out, &[]);
    let o = qat(&p32, &p8);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "qat failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("quantization-aware, 1 epochs on 8 images"),
        "{stdout}"
    );

    let m8 = ModelFile::read(&p8).unwrap();
    assert_eq!(metadata::precision(&m8), "int8");
    let q = &m8.graph.provenance["qat"];
    assert_eq!(q["epochs"], 1);
    assert_eq!(q["training_images"], 8);
    assert_eq!(q["calibration_images"], 8);
    assert!(q["final_loss"].as_f64().unwrap().is_finite(), "{q}");
    let input = golden_f32(&golden_path(&p8), "input");
    let want = golden_f32(&golden_path(&p8), "logits");
    let per = 3 * 32 * 32;
    for n in 0..3 {
        let got = reference::logits(&m8, &input[n * per..(n + 1) * per]).unwrap();
        assert_eq!(got, want[n * 5..(n + 1) * 5], "sample {n}");
    }

    // A finished run leaves no checkpoint; a left-over one is neither ignored nor
    // overwritten, and --resume without one is refused, each naming the file.
    let ck = dir.path().join("qat8.qat-checkpoint.safetensors");
    assert!(!ck.exists(), "a finished run left {}", ck.display());
    let resumed = qat_short(&p32, &cache, &p8, &["--resume"]);
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(!resumed.status.success());
    assert!(
        err.contains("no checkpoint") && err.contains("qat8.qat-checkpoint"),
        "{err}"
    );
    std::fs::write(&ck, b"left over").unwrap();
    let o = qat(&p32, &p8);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--resume") && err.contains("qat8.qat-checkpoint"),
        "{err}"
    );
    assert_eq!(std::fs::read(&ck).unwrap(), b"left over");

    let again = dir.path().join("again.safetensors");
    let o = qat(&p8, &again);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("already an int8 model"), "{err}");
    assert!(!again.exists(), "a refused qat wrote {}", again.display());
}

/// `qat --bias-correction`: `before` starts the fine-tuning from the corrected network (its
/// loss differs from a plain run's), `after` corrects only the result (the same weights as a
/// plain run, other biases); each records what its correction did, and the golden logits
/// are still the int8 oracle's.
#[test]
fn qat_bias_correction_before_and_after_fine_tuning() {
    let _rng = tch_rng();
    let dir = tempfile::tempdir().unwrap();
    let p32 = square_f32_file(dir.path(), 19, 3);
    let cache = dir.path().join("cache");
    train_support::ham::ham_cache(&cache, 2, 40);
    let qat = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let o = qat_short(&p32, &cache, &out, extra);
        assert!(
            o.status.success(),
            "qat {extra:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let m = ModelFile::read(&out).unwrap();
        let input = golden_f32(&golden_path(&out), "input");
        let want = golden_f32(&golden_path(&out), "logits");
        let per = 3 * 32 * 32;
        for n in 0..3 {
            let got = reference::logits(&m, &input[n * per..(n + 1) * per]).unwrap();
            assert_eq!(got, want[n * 5..(n + 1) * 5], "{name}: sample {n}");
        }
        m
    };
    let plain = qat("plain.safetensors", &[]);
    let before = qat("before.safetensors", &["--bias-correction", "before"]);
    let after = qat("after.safetensors", &["--bias-correction", "after"]);
    let q = |m: &ModelFile| m.graph.provenance["qat"].clone();
    assert!(q(&plain)["bias_correction"].is_null());
    assert_eq!(q(&plain)["bias_corrections"], serde_json::json!({}));
    let corrected_means = |r: &serde_json::Value| {
        let (b, a) = (
            r["mean_logit_shift_before"].as_f64().unwrap(),
            r["mean_logit_shift_after"].as_f64().unwrap(),
        );
        assert!(b > 1e-3 && a < 1e-4, "{r}");
    };
    assert_eq!(q(&before)["bias_correction"], "before");
    corrected_means(&q(&before)["bias_corrections"]["before"]);
    assert!(q(&before)["bias_corrections"]["after"].is_null());
    assert_ne!(q(&before)["final_loss"], q(&plain)["final_loss"]);
    assert_eq!(q(&after)["bias_correction"], "after");
    corrected_means(&q(&after)["bias_corrections"]["after"]);
    assert_eq!(q(&after)["final_loss"], q(&plain)["final_loss"]);
    let mut changed = 0;
    for (name, t) in &plain.tensors {
        if name.ends_with(".bias") {
            changed += usize::from(t != &after.tensors[name]);
        } else {
            assert_eq!(t, &after.tensors[name], "{name} is not a bias but changed");
        }
    }
    assert!(changed > 0);
}

/// `qat --dihedral --crop-scale --jitter` trains on augmented views: the int8 file records
/// the augmentation, the training loss differs from the same run without it (the flags reach
/// the loader), a run without them records none (so its settings, and old checkpoints, stay
/// as they were), and a bad range is refused by name before any work.
#[test]
fn qat_augmentation_reaches_the_loader_and_the_provenance() {
    let _rng = tch_rng();
    let dir = tempfile::tempdir().unwrap();
    let p32 = square_f32_file(dir.path(), 15, 3);
    let cache = dir.path().join("cache");
    train_support::ham::ham_cache(&cache, 2, 40);
    let qat = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let o = Command::new(env!("CARGO_BIN_EXE_derm-train"))
            .arg("qat")
            .arg(&p32)
            .arg("-o")
            .arg(&out)
            .args(["--cache", cache.to_str().unwrap(), "--max-train", "8"])
            .args(["--calibration-images", "8", "--batch-size", "4"])
            .args(["--epochs", "1", "--lr", "1e-3", "--quiet"])
            .args(extra)
            .output()
            .unwrap();
        (out, o)
    };
    let provenance = |out: &Path| ModelFile::read(out).unwrap().graph.provenance["qat"].clone();

    let (plain, o) = qat("plain.safetensors", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (aug, o) = qat(
        "aug.safetensors",
        &[
            "--dihedral",
            "--crop-scale",
            "0.5,1",
            "--jitter",
            "0.1,0.1,0.1",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (p, a) = (provenance(&plain), provenance(&aug));
    assert!(p.get("augment").is_none(), "{p}");
    assert_eq!(a["augment"]["dihedral"], true, "{a}");
    assert_eq!(
        a["augment"]["crop"]["scale"],
        serde_json::json!([0.5, 1.0]),
        "{a}"
    );
    assert!(
        a["augment"]["jitter"]["contrast"].as_f64().unwrap() > 0.09,
        "{a}"
    );
    let (lp, la) = (
        p["final_loss"].as_f64().unwrap(),
        a["final_loss"].as_f64().unwrap(),
    );
    assert!(lp.is_finite() && la.is_finite() && lp != la, "{lp} vs {la}");

    let (bad, o) = qat("bad.safetensors", &["--crop-scale", "0,1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("crop scale 0..1"), "{err}");
    assert!(!bad.exists(), "a refused qat wrote {}", bad.display());
}

/// `derm-train qat P32 -o OUT` for one short epoch on 8 images of `cache` (calibrated on 8),
/// with `extra` arguments.
fn qat_short(p32: &Path, cache: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_derm-train"))
        .arg("qat")
        .arg(p32)
        .arg("-o")
        .arg(out)
        .args(["--cache", cache.to_str().unwrap(), "--max-train", "8"])
        .args(["--calibration-images", "8", "--batch-size", "8"])
        .args(["--epochs", "1", "--lr", "1e-3", "--quiet"])
        .args(extra)
        .output()
        .unwrap()
}

/// Runs `derm-train quantize` on `p32` into `out` with calibration images of `cache` (at most
/// `images`) and `extra` flags; panics with its output unless it succeeds, else returns its
/// stdout.
fn quantize_ok(p32: &Path, cache: &Path, out: &Path, images: &str, extra: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_derm-train"))
        .arg("quantize")
        .arg(p32)
        .arg("-o")
        .arg(out)
        .args(["--calibration-cache", cache.to_str().unwrap()])
        .args(["--calibration-images", images, "--quiet"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "quantize failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

/// `quantize --equalize` rescales the ReLU-joined channels before calibrating: the int8 file
/// records the rescaled connections, its golden logits are still the int8 oracle's bit for
/// bit, and its weights differ from plain quantization's (the rescaling really happened).
#[test]
fn quantize_equalize_records_the_rescaled_connections() {
    let _rng = tch_rng();
    let dir = tempfile::tempdir().unwrap();
    let p32 = square_f32_file(dir.path(), 16, 3);
    let cache = dir.path().join("cache");
    train_support::ham::ham_cache(&cache, 2, 40);
    let quantize = |out: &Path, extra: &[&str]| quantize_ok(&p32, &cache, out, "8", extra);
    let (plain, eq) = (
        dir.path().join("plain.safetensors"),
        dir.path().join("eq.safetensors"),
    );
    quantize(&plain, &[]);
    let stdout = quantize(&eq, &["--equalize"]);
    assert!(stdout.contains("cross-layer equalization"), "{stdout}");
    let (mp, me) = (
        ModelFile::read(&plain).unwrap(),
        ModelFile::read(&eq).unwrap(),
    );
    assert!(!mp.graph.provenance.contains_key("equalization"));
    let links = me.graph.provenance["equalization"].as_array().unwrap();
    // The Small student has six ReLU-joined connections (blocks 1-3), one through the
    // squeeze-excite of block 1.
    assert_eq!(links.len(), 6, "{links:?}");
    assert_eq!(
        links
            .iter()
            .filter(|l| !l["squeeze_excite"].is_null())
            .count(),
        1
    );
    assert!(
        links
            .iter()
            .any(|l| l["largest_factor"].as_f64().unwrap() > 1.0)
    );
    assert_ne!(
        mp.tensors["features.2.block.0.0.weight"],
        me.tensors["features.2.block.0.0.weight"]
    );
    let input = golden_f32(&golden_path(&eq), "input");
    let want = golden_f32(&golden_path(&eq), "logits");
    let per = 3 * 32 * 32;
    for n in 0..3 {
        let got = reference::logits(&me, &input[n * per..(n + 1) * per]).unwrap();
        assert_eq!(got, want[n * 5..(n + 1) * 5], "sample {n}");
    }

    // `--float-hardswish stem`: the first convolution listed, version 3, golden logits
    // from the oracle of that file; a name that is not a hardswish op is refused by name.
    let fhs = dir.path().join("fhs.safetensors");
    quantize(&fhs, &["--equalize", "--float-hardswish", "stem"]);
    let mf = ModelFile::read(&fhs).unwrap();
    let q = mf.graph.quantization.as_ref().unwrap();
    assert_eq!(q.float_hardswish, ["features.0.0"]);
    assert_eq!(mf.graph.version, 3);
    assert!(!q.activations.contains_key("features.0.0:pre_activation"));
    let want = golden_f32(&golden_path(&fhs), "logits");
    for n in 0..3 {
        let got = reference::logits(&mf, &input[n * per..(n + 1) * per]).unwrap();
        assert_eq!(got, want[n * 5..(n + 1) * 5], "sample {n}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_derm-train"))
        .arg("quantize")
        .arg(&p32)
        .arg("-o")
        .arg(dir.path().join("bad.safetensors"))
        .args(["--calibration-cache", cache.to_str().unwrap()])
        .args(["--calibration-images", "8", "--quiet"])
        .args(["--float-hardswish", "features.1.block.0.0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--float-hardswish features.1.block.0.0") && err.contains("features.0.0"),
        "{err}"
    );
}

/// `quantize --bias-correction` on cached real images: only the biases differ from plain
/// quantization's, the provenance records that the rounded network's mean logits on the
/// calibration images moved to the float network's, and the golden logits are still the
/// int8 oracle's bit for bit.
#[test]
fn quantize_bias_correction_changes_only_the_biases() {
    let _rng = tch_rng();
    let dir = tempfile::tempdir().unwrap();
    let p32 = square_f32_file(dir.path(), 18, 3);
    let cache = dir.path().join("cache");
    train_support::ham::ham_cache(&cache, 2, 40);
    let quantize = |out: &Path, extra: &[&str]| quantize_ok(&p32, &cache, out, "16", extra);
    let (plain, bc) = (
        dir.path().join("plain.safetensors"),
        dir.path().join("bc.safetensors"),
    );
    quantize(&plain, &[]);
    let stdout = quantize(&bc, &["--bias-correction"]);
    assert!(stdout.contains("bias correction: "), "{stdout}");
    let (mp, mb) = (
        ModelFile::read(&plain).unwrap(),
        ModelFile::read(&bc).unwrap(),
    );
    assert!(!mp.graph.provenance.contains_key("bias_correction"));
    let r = &mb.graph.provenance["bias_correction"];
    // The cache's training images, all of them (fewer than the 16 asked for).
    let images = &mb.graph.provenance["quantize"]["calibration_images"];
    assert!(images.as_u64().unwrap() > 4, "{images}");
    assert_eq!(&r["images"], images, "{r}");
    let (before, after) = (
        r["mean_logit_shift_before"].as_f64().unwrap(),
        r["mean_logit_shift_after"].as_f64().unwrap(),
    );
    assert!(before > 1e-3 && after < 1e-4, "{r}");
    // Every conv, linear and squeeze-excite layer has one bias; each is corrected.
    let biases: Vec<&String> = mp.tensors.keys().filter(|n| n.ends_with(".bias")).collect();
    assert_eq!(r["biases"], biases.len(), "{r}");
    let mut changed = 0;
    for (name, t) in &mp.tensors {
        if name.ends_with(".bias") {
            changed += usize::from(t != &mb.tensors[name]);
        } else {
            assert_eq!(t, &mb.tensors[name], "{name} is not a bias but changed");
        }
    }
    assert!(
        changed > biases.len() / 2,
        "{changed} of {} biases",
        biases.len()
    );
    let input = golden_f32(&golden_path(&bc), "input");
    let want = golden_f32(&golden_path(&bc), "logits");
    let per = 3 * 32 * 32;
    for n in 0..3 {
        let got = reference::logits(&mb, &input[n * per..(n + 1) * per]).unwrap();
        assert_eq!(got, want[n * 5..(n + 1) * 5], "sample {n}");
    }
}

/// `derm-train quant-sensitivity` on cached real images: the float row agrees with itself,
/// every activation is scored alone and left out, every weight tensor alone, and the report
/// says so in JSON.
#[test]
fn quant_sensitivity_scores_every_activation_alone_and_left_out() {
    let _rng = tch_rng();
    let dir = tempfile::tempdir().unwrap();
    let p32 = square_f32_file(dir.path(), 17, 3);
    let cache = dir.path().join("cache");
    train_support::ham::ham_cache(&cache, 2, 40);
    let out = dir.path().join("sens");
    let o = Command::new(env!("CARGO_BIN_EXE_derm-train"))
        .arg("quant-sensitivity")
        .arg(&p32)
        .args(["--cache", cache.to_str().unwrap(), "--out"])
        .arg(&out)
        .args(["--calibration-images", "8", "--top", "3", "--quiet"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "quant-sensitivity failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("Rounded alone"), "{stdout}");
    let text = std::fs::read_to_string(out.join("sensitivity.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = v["result"]["rows"].as_array().unwrap();
    let model = ModelFile::read(&p32).unwrap();
    let keys = derm_codegen::quant::activation_keys(&model.graph);
    let weights = rows.iter().filter(|r| r["kind"] == "weight_alone").count();
    // Every conv and linear layer has one weight tensor, every squeeze-excite two.
    let want_weights: usize = model
        .graph
        .ops
        .iter()
        .map(|op| match op {
            derm_codegen::ir::Op::Conv2d(_) | derm_codegen::ir::Op::Linear(_) => 1,
            derm_codegen::ir::Op::SqueezeExcite(_) => 2,
            _ => 0,
        })
        .sum();
    assert_eq!(weights, want_weights);
    assert_eq!(rows.len(), 4 + 2 * keys.len() + want_weights);
    let float = &rows[0];
    assert_eq!(float["name"], "float");
    assert_eq!(float["agreement"], 1.0);
    assert_eq!(float["kl"], 0.0);
    for kind in ["alone", "left_out"] {
        let names: Vec<&str> = rows
            .iter()
            .filter(|r| r["kind"] == kind)
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, keys.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let all = rows.iter().find(|r| r["name"] == "all").unwrap();
    assert!(all["kl"].as_f64().unwrap() > 0.0, "{all}");
    assert_eq!(v["result"]["images"], 12, "2 images of each of 6 classes");
}

/// `--channel-grids` on `quantize` and `qat`: the file is version 4, the eleven feature
/// maps that depthwise convolutions read (the stem's and each expansion's output) have one
/// scale per channel (their writers' hardswish in f32), nothing else changes grid, the
/// golden logits are the int8 oracle's bit for bit, and `qat` records the setting; learned
/// grid scales, which are per tensor, are refused with it by name.
#[test]
fn channel_grids_put_the_depthwise_inputs_on_per_channel_grids() {
    let _rng = tch_rng();
    let dir = tempfile::tempdir().unwrap();
    let p32 = square_f32_file(dir.path(), 23, 3);
    let cache = dir.path().join("cache");
    train_support::ham::ham_cache(&cache, 2, 40);
    let model = ModelFile::read(&p32).unwrap();
    let depthwise_inputs = derm_codegen::quant::depthwise_inputs(&model.graph);
    assert_eq!(depthwise_inputs.len(), 11, "{depthwise_inputs:?}");
    let check = |out: &Path, what: &str| -> ModelFile {
        let m = ModelFile::read(out).unwrap();
        assert_eq!(m.graph.version, 4, "{what}");
        let q = m.graph.quantization.as_ref().unwrap();
        let mut keys: Vec<&String> = q.channel_scales.keys().collect();
        let mut want: Vec<&String> = depthwise_inputs.iter().collect();
        keys.sort();
        want.sort();
        assert_eq!(keys, want, "{what}");
        // The stem and the eight expansions with a hardswish compute it in f32.
        assert_eq!(
            q.float_hardswish.len(),
            9,
            "{what}: {:?}",
            q.float_hardswish
        );
        let input = golden_f32(&golden_path(out), "input");
        let logits = golden_f32(&golden_path(out), "logits");
        let per = 3 * 32 * 32;
        for n in 0..3 {
            let got = reference::logits(&m, &input[n * per..(n + 1) * per]).unwrap();
            assert_eq!(got, logits[n * 5..(n + 1) * 5], "{what}: sample {n}");
        }
        m
    };
    let (plain, grids) = (
        dir.path().join("plain.safetensors"),
        dir.path().join("grids.safetensors"),
    );
    quantize_ok(&p32, &cache, &plain, "8", &[]);
    quantize_ok(&p32, &cache, &grids, "8", &["--channel-grids"]);
    let m = check(&grids, "quantize");
    // Every other activation keeps the grid plain quantization gives it.
    let (a, b) = (
        &ModelFile::read(&plain).unwrap().graph.quantization.unwrap(),
        m.graph.quantization.as_ref().unwrap(),
    );
    for (k, p) in &b.activations {
        if !b.channel_scales.contains_key(k) {
            assert_eq!(a.activations.get(k), Some(p), "{k}");
        }
    }

    let qat = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec!["--channel-grids"];
        args.extend_from_slice(extra);
        let o = qat_short(&p32, &cache, &out, &args);
        (out, o)
    };
    let (out, o) = qat("qat.safetensors", &[]);
    assert!(
        o.status.success(),
        "qat --channel-grids failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m = check(&out, "qat");
    assert_eq!(m.graph.provenance["qat"]["channel_grids"], true);
    let (out, o) = qat("learned.safetensors", &["--scale-lr", "1e-3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !out.exists());
    assert!(
        err.contains("--scale-lr") && err.contains("--channel-grids"),
        "{err}"
    );
}
