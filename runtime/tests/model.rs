//! The embedded model against golden vectors: `<model>.golden.safetensors`
//! (exported with the model). Every test here depends on the embedded model,
//! so `DERM_MODEL=... cargo test -p derm-runtime --test model` checks another
//! model file without rebuilding the synthetic models of `tests/tiny_models.rs`.

mod common;

use common::{assert_close_to_range, boxed_arena, read_tensor};
use derm_runtime::{
    INPUT_H, INPUT_LEN, INPUT_W, Image, NUM_CLASSES, STACK_BYTES, classify, preprocess_input, run,
};

/// Parity bound, relative to each sample's logit range.
const TOL: f32 = 1e-4;

/// The golden vectors exported with the model (`<model>.golden.safetensors`),
/// as snapshotted by the build script together with the model.
fn golden_path() -> String {
    env!("DERM_GOLDEN_PATH").to_owned()
}

#[test]
fn embedded_model_matches_golden_logits() {
    let path = golden_path();
    let (xs, x) = read_tensor(&path, "input");
    let (ys, y) = read_tensor(&path, "logits");
    assert_eq!(xs[1..], [3, INPUT_H, INPUT_W], "{path}: input shape");
    assert_eq!(ys, [xs[0], NUM_CLASSES], "{path}: logits shape");
    assert!(xs[0] > 0, "{path}: no samples");
    let mut arena = boxed_arena();
    for (i, (input, want)) in x
        .chunks_exact(INPUT_LEN)
        .zip(y.chunks_exact(NUM_CLASSES))
        .enumerate()
    {
        let input: &[f32; INPUT_LEN] = input.try_into().unwrap();
        let got = derm_runtime::run(input, &mut arena);
        if derm_runtime::MODEL_PRECISION == "int8" {
            // Integer arithmetic: the golden logits are the int8 oracle's, to the bit.
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(want), "{path} sample {i}");
        } else {
            assert_close_to_range(&got, want, TOL, &format!("{path} sample {i}"));
        }
    }
}

#[test]
fn run_does_not_depend_on_arena_contents() {
    let path = golden_path();
    let (_, x) = read_tensor(&path, "input");
    let input: &[f32; INPUT_LEN] = x[..INPUT_LEN].try_into().unwrap();
    let mut arena = boxed_arena();
    let a = derm_runtime::run(input, &mut arena);
    // A second run on a dirty arena (and after another input) is identical.
    let other = [0.25f32; INPUT_LEN];
    derm_runtime::run(&other, &mut arena);
    let b = derm_runtime::run(input, &mut arena);
    assert_eq!(a, b);
}

#[test]
fn constants_describe_the_embedded_model() {
    assert_eq!(INPUT_LEN, 3 * INPUT_H * INPUT_W);
    assert_eq!(derm_runtime::CLASS_NAMES.len(), NUM_CLASSES);
    const { assert!(derm_runtime::ARENA_LEN >= derm_runtime::PEAK_LIVE_LEN) };
    // The arena holds the input in the model's form: f32, or an int8 model's quantized bytes.
    let int8 = derm_runtime::MODEL_PRECISION == "int8";
    let input_bytes = if int8 { INPUT_LEN } else { 4 * INPUT_LEN };
    assert!(4 * derm_runtime::ARENA_LEN >= input_bytes);
    const { assert!(derm_runtime::PARAMS > 0 && derm_runtime::MACS > 0) };
    assert!(derm_runtime::STD.iter().all(|s| *s != 0.0));
    // An int8 model quantizes its f32 input first.
    let first = if int8 { "int8::quantize" } else { "conv_stem" };
    assert_eq!(derm_runtime::LAYERS[0].1, first);
}

#[test]
fn classify_equals_run_on_the_preprocessed_input_to_the_bit() {
    // `classify` writes the preprocessed image straight into the arena in the model's input
    // form (an int8 model's quantized as it goes); `run` takes the f32 input and stores it
    // itself. Both must reach the same logits, bit for bit, with either model.
    let mut arena = boxed_arena();
    for (w, h) in [(200, 150), (97, 301), (INPUT_W, INPUT_H)] {
        let px = common::image_bytes(w, h);
        let image = Image::new(w, h, &px).unwrap();
        let input = common::preprocessed(image);
        let want = run(input.as_slice().try_into().unwrap(), &mut arena);
        let got = classify(image, &mut arena).unwrap().logits;
        assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits), "{w}x{h}");
    }
}

#[test]
fn classify_and_run_fit_in_stack_bytes() {
    // On a thread with exactly the stack the runtime documents: an overflow aborts this test
    // binary ("has overflowed its stack"), so a kernel or preprocessing change that needs
    // more stack fails here, on each target and with each model the test command builds.
    let px = common::image_bytes(640, 480);
    let mut arena = boxed_arena();
    let mut input = vec![0f32; INPUT_LEN];
    let worker = std::thread::Builder::new()
        .name("stack-bytes".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            let mut class = Vec::new();
            // A reduction, an enlargement and the model's own size.
            for (w, h) in [(640, 480), (97, 61), (INPUT_W, INPUT_H)] {
                let image = Image::new(w, h, &px[..w * h * 3]).unwrap();
                class.push(classify(image, &mut arena).unwrap().class);
                let buf: &mut [f32; INPUT_LEN] = input.as_mut_slice().try_into().unwrap();
                preprocess_input(image, buf).unwrap();
                let logits = run(buf, &mut arena);
                assert!(logits.iter().all(|v| v.is_finite()), "{w}x{h}: {logits:?}");
            }
            class
        })
        .expect("spawning a thread");
    let class = worker.join().expect("the thread panicked");
    assert_eq!(class.len(), 3);
    assert!(class.iter().all(|&c| c < NUM_CLASSES));
}
