//! `pi-bench`: the paper's latency protocol on the embedded model, and with labelled data
//! the full ESFair score.
//!
//! Protocol: 10 iterations, each classifying 100 RGB images end to end (centre crop, bilinear
//! resize, normalization, the network and softmax, single thread) from decoded pixels in
//! memory. L is the mean seconds per 100 images and the latency score is `1 - L / 100`.
//! Without `--data`/`--manifest` the images are generated at ESFair-like sizes; with them, the
//! 100 images are drawn (seeded) from the labelled set, and every labelled image is also
//! classified once for accuracy and fairness.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use derm_runtime::{
    ARENA_LEN, Arena, CENTRE_CROP, CLASS_NAMES, INPUT_H, INPUT_W, Image, MACS, NUM_CLASSES, PARAMS,
    classify,
};
use pi_bench::data::{self, Dataset};
use pi_bench::esfair;
use pi_bench::protocol::{SIZES, Summary, generate_images};

/// The paper's latency protocol and ESFair score of the embedded model.
#[derive(Debug, Parser)]
#[command(name = "pi-bench", version, about)]
struct Args {
    /// Timed iterations (the paper uses 10).
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// Images per iteration (the paper uses 100).
    #[arg(long, default_value_t = 100)]
    images: usize,
    /// Seed of the generated images, or of the draw from labelled data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Untimed warm-up images before the first iteration.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Labelled test images in the ESFair layout `<group>/<class>/*.jpg`.
    #[arg(long, conflicts_with = "manifest")]
    data: Option<PathBuf>,
    /// Labelled test images as a CSV manifest (HAM10000's metadata.csv columns: image_id,
    /// paper_label, group), with `--image-dir`.
    #[arg(long, requires = "image_dir")]
    manifest: Option<PathBuf>,
    /// Folder of the manifest's images (`<image_id>.jpg`).
    #[arg(long)]
    image_dir: Option<PathBuf>,
    /// Groups left out of SPD and the minority choice (comma-separated, e.g. `unknown`).
    #[arg(long, value_delimiter = ',')]
    exclude_groups: Vec<String>,
    /// Make any unusable file or row an error instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// With labelled data: write one CSV row per image (file, true class, predicted class,
    /// group, the logits) to this file.
    #[arg(long)]
    predictions: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.iterations == 0 || args.images == 0 {
        bail!("--iterations and --images must be at least 1");
    }
    let labelled = load(&args)?;
    let images: Vec<(usize, usize, Vec<u8>)> = match &labelled {
        None => generate_images(args.images, args.seed),
        Some(d) => draw(d, args.images, args.seed),
    };
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
    let summary = Summary::new(&per_iteration_s, &mut per_image_ms, args.images);
    print_header(&summary, labelled.is_some());
    summary.print();

    let score = match &labelled {
        None => None,
        Some(d) => {
            let mut items = Vec::with_capacity(d.samples.len());
            let mut rows = String::from("file,true,predicted,group");
            for c in CLASS_NAMES {
                rows.push_str(&format!(",logit_{c}"));
            }
            rows.push('\n');
            for s in &d.samples {
                let p = classify(Image::new(s.width, s.height, &s.pixels)?, &mut arena)
                    .with_context(|| format!("classifying {}", s.path.display()))?;
                items.push((s.class, p.class, s.group));
                rows.push_str(&format!(
                    "{},{},{},{}",
                    s.path.display(),
                    CLASS_NAMES[s.class],
                    p.name,
                    d.groups[s.group]
                ));
                for l in p.logits {
                    rows.push_str(&format!(",{l}"));
                }
                rows.push('\n');
            }
            if let Some(path) = &args.predictions {
                std::fs::write(path, rows)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("predictions: {}", path.display());
            }
            let sc = esfair::score(
                &items,
                &CLASS_NAMES,
                &d.groups,
                &args.exclude_groups,
                summary.l_seconds_per_100,
            );
            sc.print();
            Some(sc)
        }
    };
    if let Some(path) = &args.json {
        let report = serde_json::json!({
            "protocol": {
                "iterations": summary.iterations,
                "images_per_iteration": summary.images,
                "stage": "classify",
                "threads": 1,
                "images": if labelled.is_some() { "labelled (seeded draw)" } else { "generated" },
            },
            "model": model_json(),
            "l_seconds_per_100_images": summary.l_seconds_per_100,
            "latency_score": summary.latency_score,
            "per_image_ms": {"mean": summary.mean_ms, "p50": summary.p50_ms, "p99": summary.p99_ms},
            "predicted_class_counts": CLASS_NAMES.iter().zip(class_counts).map(|(n, c)| (n.to_string(), c)).collect::<std::collections::BTreeMap<_, _>>(),
            "esfair": score,
            "accuracy": score.as_ref().map(|s| s.accuracy),
            "balanced_accuracy": score.as_ref().map(|s| s.balanced_accuracy),
            "fairness": score.as_ref().and_then(|s| s.fairness),
            "overall": score.as_ref().and_then(|s| s.overall),
            "groups": score.as_ref().map(|s| &s.groups),
            "skipped": labelled.as_ref().map(|d| &d.skipped),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report:           {}", path.display());
    }
    Ok(())
}

fn load(args: &Args) -> Result<Option<Dataset>> {
    let d = if let Some(root) = &args.data {
        data::load_folder(root, &CLASS_NAMES, args.strict)
            .with_context(|| format!("labelled folder {}", root.display()))?
    } else if let (Some(csv), Some(dir)) = (&args.manifest, &args.image_dir) {
        data::load_manifest(csv, dir, &CLASS_NAMES, args.strict)?
    } else {
        return Ok(None);
    };
    for s in &d.skipped {
        eprintln!("skipped {}: {}", s.what, s.reason);
    }
    eprintln!(
        "labelled images: {} in {} groups, {} skipped",
        d.samples.len(),
        d.groups.len(),
        d.skipped.len()
    );
    Ok(Some(d))
}

/// `n` images drawn with replacement from the labelled set (xorshift, seeded), as the paper
/// draws 100 random test images.
fn draw(d: &Dataset, n: usize, seed: u64) -> Vec<(usize, usize, Vec<u8>)> {
    let mut state = seed ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let k = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) % d.samples.len() as u64) as usize;
            let s = &d.samples[k];
            (s.width, s.height, s.pixels.clone())
        })
        .collect()
}

fn model_json() -> serde_json::Value {
    serde_json::json!({
        "input": [INPUT_H, INPUT_W],
        "centre_crop": CENTRE_CROP,
        "classes": CLASS_NAMES,
        "params": PARAMS,
        "macs": MACS,
        "arena_bytes": ARENA_LEN * 4,
    })
}

fn print_header(s: &Summary, labelled: bool) {
    println!(
        "model:            {INPUT_W}x{INPUT_H} input, {NUM_CLASSES} classes, {PARAMS} params, {:.1} M MACs, arena {} KiB",
        MACS as f64 / 1e6,
        ARENA_LEN * 4 / 1024
    );
    println!(
        "stage measured:   classify ({}resize + normalize + network + softmax), 1 thread",
        if CENTRE_CROP { "centre crop + " } else { "" }
    );
    if labelled {
        println!("images:           drawn from the labelled set (decoded RGB8 in memory)");
    } else {
        println!("image sizes:      {SIZES:?} (generated RGB8, cycled)");
    }
    println!(
        "protocol:         {} iterations x {} images",
        s.iterations, s.images
    );
}
