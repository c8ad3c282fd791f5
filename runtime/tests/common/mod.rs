//! Helpers shared by the model tests.

#![allow(dead_code)]

use derm_runtime::{Arena, INPUT_LEN, Image, preprocess_input};

/// A zeroed arena on the heap without building it on the stack first (it is
/// larger than a test thread's stack).
pub fn boxed_arena() -> Box<Arena> {
    let layout = std::alloc::Layout::new::<Arena>();
    // SAFETY: Arena is a plain array of f32, for which all-zero bytes are
    // valid; the layout is Arena's own, so Box may free it.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout).cast::<Arena>();
        assert!(!p.is_null(), "out of memory allocating the arena");
        Box::from_raw(p)
    }
}

/// A `w` x `h` RGB8 image of well-mixed pixel values (a multiplicative hash of the index).
pub fn image_bytes(w: usize, h: usize) -> Vec<u8> {
    (0..w * h * 3)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Reads an f32 tensor from a safetensors file: (shape, values).
pub fn read_tensor(path: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (golden vectors missing?)"));
    let st =
        safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{path}: tensor {name:?}: {e}"));
    assert_eq!(
        t.dtype(),
        safetensors::Dtype::F32,
        "{path}: {name} must be f32"
    );
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (t.shape().to_vec(), v)
}

/// Splits a build-script golden file (`<name>_golden.bin`: every input, then
/// every logit row, as little-endian `f32`) into (inputs, logits), for a
/// model with `input_len` inputs and `num_classes` logits per sample.
pub fn split_golden(bytes: &[u8], input_len: usize, num_classes: usize) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(bytes.len() % 4, 0, "golden file: not whole f32s");
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let n = v.len() / (input_len + num_classes);
    assert_eq!(
        v.len(),
        n * (input_len + num_classes),
        "golden file: not whole samples"
    );
    let (x, y) = v.split_at(n * input_len);
    (x.to_vec(), y.to_vec())
}

/// Asserts `got` is within `tol` of `want`'s range (max - min) everywhere.
pub fn assert_close_to_range(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let max = want.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = want.iter().copied().fold(f32::INFINITY, f32::min);
    let bound = tol * (max - min);
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= bound,
        "{what}: max |diff| {worst:e} > {tol} x logit range {} \n got  {got:?}\n want {want:?}",
        max - min
    );
}

/// The embedded model's `f32` input for `image`, as `classify` builds it.
pub fn preprocessed(image: Image<'_>) -> Vec<f32> {
    let mut input = vec![0f32; INPUT_LEN];
    let buf: &mut [f32; INPUT_LEN] = input.as_mut_slice().try_into().unwrap();
    preprocess_input(image, buf)
        .unwrap_or_else(|e| panic!("{}x{}: {e}", image.width, image.height));
    input
}
