//! `pi-bench`: the paper's latency protocol on the embedded model.
//!
//! Protocol: 10 iterations, each classifying 100 RGB images end to end
//! (bilinear resize + normalization + the network + softmax, single thread).
//! L is the mean seconds per 100 images and the latency score is `1 - L / 100`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use derm_runtime::{
    ARENA_LEN, Arena, CLASS_NAMES, INPUT_H, INPUT_W, Image, MACS, NUM_CLASSES, PARAMS, classify,
};

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
    /// Untimed warm-up images before the first iteration.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

// Shared with the libtorch baseline binary, so both engines see the same pixels and are
// summarized by the same formulas.
#[path = "baselines/protocol.rs"]
mod protocol;

use protocol::{SIZES, Summary, generate_images};

/// What one run measured.
struct Report {
    summary: Summary,
    class_counts: [usize; NUM_CLASSES],
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.iterations == 0 || args.images == 0 {
        bail!("--iterations and --images must be at least 1");
    }
    let images = generate_images(args.images, args.seed);
    // Boxed: the arena is ARENA_LEN * 4 bytes.
    let mut arena = Box::new(Arena::new());
    for (w, h, px) in images.iter().cycle().take(args.warmup) {
        classify(Image::new(*w, *h, px)?, &mut arena)?;
    }
    let mut per_image_ms = Vec::with_capacity(args.iterations * args.images);
    let mut per_iteration_s = Vec::with_capacity(args.iterations);
    let mut class_counts = [0usize; NUM_CLASSES];
    for _ in 0..args.iterations {
        let start = Instant::now();
        for (w, h, px) in &images {
            let t = Instant::now();
            let p = classify(Image::new(*w, *h, px)?, &mut arena)?;
            per_image_ms.push(t.elapsed().as_secs_f64() * 1e3);
            class_counts[p.class] += 1;
        }
        per_iteration_s.push(start.elapsed().as_secs_f64());
    }
    let report = Report {
        summary: Summary::new(&per_iteration_s, &mut per_image_ms, args.images),
        class_counts,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, json(&report))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report:           {}", path.display());
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!(
        "model:            {INPUT_W}x{INPUT_H} input, {NUM_CLASSES} classes, {PARAMS} params, {:.1} M MACs, arena {} KiB",
        MACS as f64 / 1e6,
        ARENA_LEN * 4 / 1024
    );
    println!("stage measured:   classify (resize + normalize + network + softmax), 1 thread");
    println!("image sizes:      {SIZES:?} (generated RGB8, cycled)");
    println!(
        "protocol:         {} iterations x {} images",
        r.summary.iterations, r.summary.images
    );
    r.summary.print();
}

/// The report as a JSON object (written by hand: flat and fixed).
fn json(r: &Report) -> String {
    let classes: Vec<String> = CLASS_NAMES
        .iter()
        .zip(&r.class_counts)
        .map(|(n, c)| format!("{n:?}: {c}"))
        .collect();
    format!(
        concat!(
            "{{\n  \"protocol\": {{\"iterations\": {}, \"images_per_iteration\": {}, \"stage\": \"classify\", \"threads\": 1}},\n",
            "  \"model\": {{\"input\": [{}, {}], \"classes\": {}, \"params\": {}, \"macs\": {}, \"arena_bytes\": {}}},\n",
            "  \"l_seconds_per_100_images\": {},\n  \"latency_score\": {},\n",
            "  \"per_image_ms\": {{\"mean\": {}, \"p50\": {}, \"p99\": {}}},\n",
            "  \"predicted_class_counts\": {{{}}}\n}}\n"
        ),
        r.summary.iterations,
        r.summary.images,
        INPUT_H,
        INPUT_W,
        NUM_CLASSES,
        PARAMS,
        MACS,
        ARENA_LEN * 4,
        r.summary.l_seconds_per_100,
        r.summary.latency_score,
        r.summary.mean_ms,
        r.summary.p50_ms,
        r.summary.p99_ms,
        classes.join(", ")
    )
}
