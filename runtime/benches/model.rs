//! The embedded model end to end, single thread: `run` on a preprocessed
//! input and `classify` on a 640x480 RGB8 image (resize + normalize + run +
//! softmax). `cargo bench -p derm-runtime --bench model`.

use criterion::{Criterion, criterion_group, criterion_main};
#[path = "../examples/common/mod.rs"]
mod fixed_input;

use derm_runtime::{Arena, Image, classify, run};
use std::hint::black_box;

fn model(c: &mut Criterion) {
    let mut arena = Box::new(Arena::new());
    let input = fixed_input::fixed_input();
    c.bench_function("run", |b| b.iter(|| run(black_box(&input), &mut arena)));

    let (w, h) = (640, 480);
    let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
    let image = match Image::new(w, h, &pixels) {
        Ok(image) => image,
        Err(e) => panic!("a 640x480 image is valid: {e:?}"),
    };
    c.bench_function("classify_640x480", |b| {
        b.iter(|| classify(black_box(image), &mut arena))
    });
}

criterion_group!(benches, model);
criterion_main!(benches);
