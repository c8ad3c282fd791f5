//! Per-layer kernel timings at MobileNetV3-Small's real shapes (224x224,
//! torchvision's configuration, 6-class paper head), single thread:
//! `cargo bench -p derm-runtime --bench kernels`. The same layers are
//! counted in aarch64 instructions by `scripts/icount.sh layers`.

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::Duration;

fn layers(c: &mut Criterion) {
    let mut group = c.benchmark_group("mobilenet_v3_small");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(700));
    let mut all = common::layers(6);
    group.bench_function("all-layers", |b| {
        b.iter(|| {
            for layer in &mut all {
                layer.run();
            }
        })
    });
    for mut layer in common::layers(6) {
        let name = layer.name.clone();
        group.bench_function(name, |b| b.iter(|| layer.run()));
    }
    group.finish();
}

criterion_group!(benches, layers);
criterion_main!(benches);
