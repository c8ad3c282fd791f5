//! Training throughput of each model on this CPU: images per second for forward + backward +
//! optimizer step (AdamW) on random inputs, at 224x224 and 128x128. Prints the median over
//! timed iterations after warmup iterations.
//!
//! `cargo bench -p derm-train --bench train_throughput -- [--threads N] [--iters N] [--batch N] [--only NAME]`

use std::time::Instant;

use derm_train::models::mobilenet_v3::{Arch, Head, MobileNetV3, MobileNetV3Config};
use derm_train::models::swin_v2::{SwinV2, SwinV2Config};
use derm_train::train::loss::cross_entropy;
use derm_train::train::optim::{OptimConfig, Optimizer};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn measure(
    name: &str,
    size: i64,
    batch: i64,
    iters: usize,
    build: &dyn Fn(&nn::Path<'_>) -> Box<dyn ModuleT>,
) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = build(&vs.root());
    let mut opt = Optimizer::new(&vs, OptimConfig::adamw()).expect("optimizer");
    let x = Tensor::randn([batch, 3, size, size], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(6, [batch], (Kind::Int64, Device::Cpu));
    let mut step = || {
        let t = Instant::now();
        let loss = cross_entropy(&net.forward_t(&x, true), &y, None);
        opt.zero_grad();
        loss.backward();
        opt.step(1e-4);
        t.elapsed().as_secs_f64()
    };
    for _ in 0..2 {
        step();
    }
    let times: Vec<f64> = (0..iters).map(|_| step()).collect();
    let m = median(times.clone());
    let (lo, hi) = (
        times.iter().cloned().fold(f64::MAX, f64::min),
        times.iter().cloned().fold(0.0, f64::max),
    );
    println!(
        "{name:<24} {size:>3}x{size:<3} batch {batch:>3}: median {:>7.1} images/s ({:.3} s/step, min {:.3}, max {:.3}, {iters} steps)",
        batch as f64 / m,
        m,
        lo,
        hi
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(t) = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
    {
        tch::set_num_threads(t);
    }
    let iters: usize = arg(&args, "--iters", 5);
    let batch: i64 = arg(&args, "--batch", 16);
    let only: String = arg(&args, "--only", String::new());
    println!("libtorch threads: {}", tch::get_num_threads());
    for size in [224, 128] {
        if only.is_empty() || only == "swin_v2_t" {
            measure("swin_v2_t", size, batch, iters, &|p| {
                Box::new(SwinV2::new(p, SwinV2Config::swin_v2_t(6)).expect("swin"))
            });
        }
        for (arch, label) in [
            (Arch::Small, "mobilenet_v3_small"),
            (Arch::Large, "mobilenet_v3_large"),
        ] {
            if only.is_empty() || only == label {
                measure(label, size, batch, iters, &|p| {
                    Box::new(
                        MobileNetV3::new(p, MobileNetV3Config::new(arch, Head::Paper, 6))
                            .expect("mobilenet"),
                    )
                });
            }
        }
    }
}
