//! Preprocessing alone, single thread: centre crop, antialiased resize to the model's input
//! and normalization, for the photo sizes `pi-bench` generates (a 1024x768 camera frame, 640x480,
//! HAM10000's 600x450 and its 200x150 tiles).
//!
//! `cargo bench -p derm-runtime --bench preprocess`.

use criterion::{Criterion, criterion_group, criterion_main};
use derm_runtime::preprocess::{Image, centre_crop, crop_resize_normalize};
use derm_runtime::{INPUT_H, INPUT_LEN, INPUT_W, MEAN, STD};
use std::hint::black_box;

fn preprocess(c: &mut Criterion) {
    let mut out = vec![0f32; INPUT_LEN];
    for (w, h) in [(1024, 768), (640, 480), (600, 450), (200, 150)] {
        // Varied bytes, so no pass can take a constant-input shortcut.
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let image = match Image::new(w, h, &pixels) {
            Ok(image) => image,
            Err(e) => panic!("a {w}x{h} image is valid: {e:?}"),
        };
        let region = centre_crop(w, h, INPUT_W, INPUT_H);
        c.bench_function(&format!("crop_resize_{w}x{h}"), |b| {
            b.iter(|| {
                crop_resize_normalize(
                    black_box(image),
                    region,
                    INPUT_H,
                    INPUT_W,
                    MEAN,
                    STD,
                    &mut out,
                )
            })
        });
    }
}

criterion_group!(benches, preprocess);
criterion_main!(benches);
