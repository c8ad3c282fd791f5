//! Batch assembly speed of the data loader: cache read + normalize + flips,
//! optional libtorch resize and noise, per batch. Prints the median over
//! timed batches after warmup batches. Uses a synthetic cache of random
//! pixels (512 samples) written to a temporary folder, or `--cache DIR`.
//!
//! `cargo bench -p derm-train --bench data_loader -- [--cache DIR] [--batch N] [--iters N]`

use std::time::Instant;

use derm_train::data::augment::{Augment, CropRange, Jitter};
use derm_train::data::balance::{BalancePlan, Slot};
use derm_train::data::cache::{Cache, CacheWriter, SampleMeta};
use derm_train::data::loader::{Batches, LoaderOptions};
use derm_train::data::rng::Rng;

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

fn synthetic(dir: &std::path::Path, n: usize, size: usize) -> Cache {
    let mut w = CacheWriter::create(dir, size).expect("cache");
    let mut rng = Rng::new(1);
    let mut px = vec![0u8; size * size * 3];
    for i in 0..n {
        px.iter_mut().for_each(|p| *p = rng.below(256) as u8);
        let meta = SampleMeta {
            id: format!("s{i}"),
            source: String::new(),
            label: i % 6,
            group: i % 4,
            lesion: format!("l{i}"),
        };
        w.push(meta, &px).expect("push");
    }
    let groups = (0..4).map(|g| format!("g{g}")).collect();
    w.finish(groups, vec![], "synthetic".into())
        .expect("finish")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let batch: usize = arg(&args, "--batch", 64);
    let iters: usize = arg(&args, "--iters", 15);
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = match args.iter().position(|a| a == "--cache") {
        Some(i) => Cache::open(&args[i + 1]).expect("open cache"),
        None => synthetic(tmp.path(), 512, 224),
    };
    let s = cache.image_size();
    println!(
        "cache: {} samples at {s}x{s}; batch {batch}; rayon threads {}, torch threads {}",
        cache.len(),
        rayon::current_num_threads(),
        tch::get_num_threads()
    );
    let all: Vec<usize> = (0..cache.len()).collect();
    let plain = BalancePlan::plain(&all);
    let mut noisy = BalancePlan::plain(&all);
    noisy.slots = all
        .iter()
        .map(|&index| Slot { index, noise: true })
        .collect();
    noisy.sigma = 0.05;
    let eval = LoaderOptions::eval(batch);
    let train = LoaderOptions::train(batch, 7);
    let train_128 = LoaderOptions {
        train_size: Some(128),
        ..train
    };
    let flips_128 = LoaderOptions {
        train_size: Some(128),
        ..train
    };
    let all_aug_128 = LoaderOptions {
        augment: Augment {
            dihedral: true,
            crop: Some(CropRange {
                scale: (0.35, 1.0),
                ratio: (0.75, 4.0 / 3.0),
            }),
            jitter: Some(Jitter {
                brightness: 0.1,
                contrast: 0.1,
                saturation: 0.1,
            }),
        },
        ..flips_128
    };
    let cases: [(&str, &BalancePlan, LoaderOptions); 6] = [
        ("eval (normalize only)", &plain, eval),
        ("train: flips", &plain, train),
        ("train: flips + noise on every sample", &noisy, train),
        ("train: flips + resize to 128 + noise", &noisy, train_128),
        ("train: flips + resize to 128", &plain, flips_128),
        ("train: dihedral + crop + jitter, 128", &plain, all_aug_128),
    ];
    for (name, plan, opts) in cases {
        let warmup = 3;
        let mut times = Vec::new();
        let mut epoch = 0;
        'run: loop {
            let mut it = Batches::new(&cache, plan, opts, epoch).expect("loader");
            loop {
                let t0 = Instant::now();
                let Some(b) = it.next() else { break };
                let b = b.expect("batch");
                times.push(t0.elapsed().as_secs_f64());
                assert_eq!(b.images.size()[0] as usize, batch.min(cache.len()));
                if times.len() == warmup + iters {
                    break 'run;
                }
            }
            epoch += 1;
        }
        let times = times.split_off(warmup);
        let m = median(times);
        println!(
            "{name:<40} median {:>7.1} ms/batch  {:>8.0} images/s",
            m * 1e3,
            batch as f64 / m
        );
    }
}
