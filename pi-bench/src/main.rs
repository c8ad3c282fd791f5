//! `pi-bench`: the paper's latency protocol on the embedded runtime.
//!
//! Protocol: 10 iterations, each timing 100 images end to end; L is the mean
//! seconds per 100 images and the latency score is `1 - L / 100`.

use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use derm_runtime::preprocess::{Image, resize_normalize};

/// Reproduce the paper's latency measurement on this machine.
#[derive(Debug, Parser)]
#[command(name = "pi-bench", version, about)]
struct Args {
    /// Timed iterations (the paper uses 10).
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// Images per iteration (the paper uses 100).
    #[arg(long, default_value_t = 100)]
    images: usize,
    /// Seed of the generated images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// ESFair-like photo sizes (width, height): phone and dermatoscope shots.
const SIZES: [(usize, usize); 4] = [(600, 450), (1024, 768), (640, 480), (200, 150)];

fn main() -> Result<()> {
    let args = Args::parse();
    let images = generate_images(args.images, args.seed);
    let mut input = vec![0f32; 3 * 224 * 224];
    let mut per_image_ms = Vec::with_capacity(args.iterations * args.images);
    let mut per_iteration_s = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        let start = Instant::now();
        for (w, h, px) in &images {
            let t = Instant::now();
            let img = Image::new(*w, *h, px).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            resize_normalize(img, 224, 224, [0.5; 3], [0.5; 3], &mut input)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            per_image_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        per_iteration_s.push(start.elapsed().as_secs_f64());
    }
    let l = per_iteration_s.iter().sum::<f64>() / per_iteration_s.len() as f64;
    per_image_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| per_image_ms[((per_image_ms.len() - 1) as f64 * p).round() as usize];
    println!("stage measured:   preprocessing (resize to 224x224 + normalize)");
    println!(
        "protocol:         {} iterations x {} images",
        args.iterations, args.images
    );
    println!("L (s / 100 img):  {:.4}", l * 100.0 / args.images as f64);
    println!(
        "latency score:    {:.5}",
        1.0 - (l * 100.0 / args.images as f64) / 100.0
    );
    println!("per image p50:    {:.3} ms", pct(0.5));
    println!("per image p99:    {:.3} ms", pct(0.99));
    Ok(())
}

/// Deterministic pseudo-random RGB8 images cycling through [`SIZES`].
fn generate_images(n: usize, seed: u64) -> Vec<(usize, usize, Vec<u8>)> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|i| {
            let (w, h) = SIZES[i % SIZES.len()];
            let px = (0..w * h * 3)
                .map(|_| {
                    // xorshift64*: cheap and reproducible across platforms.
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
                })
                .collect();
            (w, h, px)
        })
        .collect()
}
