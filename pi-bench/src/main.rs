//! `pi-bench`: the paper's latency protocol on the embedded model, and with labelled data
//! the full ESFair score.
//!
//! Protocol: 10 iterations, each running 100 images through the embedded model from memory.
//! `--mode` says what one image's timed work is: `model` (the network on a preprocessed
//! tensor, as the paper times it), `classify` (the default: centre crop, bilinear resize,
//! normalization, the network and softmax from decoded pixels) or `end-to-end` (JPEG decode,
//! then `classify`). `--threads N` splits each iteration's images among N workers, one arena
//! each. L is the mean wall time of an iteration scaled to seconds per 100 images and the
//! latency score is `1 - L / 100`. Without `--data`/`--manifest` the images are generated at
//! ESFair-like sizes; with them, the images are drawn (seeded) from the labelled set, and
//! every labelled image is also classified once for accuracy and fairness.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use derm_runtime::{Arena, CLASS_NAMES, Image, NUM_CLASSES, classify};
use pi_bench::data::{self, Dataset};
use pi_bench::protocol::{SIZES, Summary, generate_images};
use pi_bench::runner::{GENERATED_JPEG_QUALITY, Input, Mode, run_batch};
use pi_bench::{esfair, model_info, plot};

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
    /// What is timed per image: `model` (the network alone on preprocessed tensors in memory,
    /// as the paper), `classify` (from decoded RGB8 pixels: crop, resize, normalize, network,
    /// softmax) or `end-to-end` (from the JPEG bytes: decode, then classify).
    #[arg(long, default_value_t = Mode::default())]
    mode: Mode,
    /// Worker threads, one arena each; every iteration's images are split among them and L is
    /// the iteration's wall time.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seed of the generated images, or of the draw from labelled data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Untimed warm-up images per worker before the first iteration.
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
    /// Also write the report as JSON to this file; with labelled data, confusion-matrix PNGs
    /// (`<stem>.confusion_all.png`, one per group) go beside it.
    #[arg(long)]
    json: Option<PathBuf>,
    /// With labelled data: write one CSV row per image (file, true class, predicted class,
    /// group, the logits) to this file.
    #[arg(long)]
    predictions: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.iterations == 0 || args.images == 0 || args.threads == 0 {
        bail!("--iterations, --images and --threads must be at least 1");
    }
    if args.threads > args.images {
        bail!(
            "--threads {} is more than --images {}: some workers would time nothing",
            args.threads,
            args.images
        );
    }
    let labelled = load(&args)?;
    let inputs = prepare(&args, labelled.as_ref())?;
    // Boxed: the arena is ARENA_LEN * 4 bytes. One per worker: an arena serves one
    // inference at a time.
    let mut arenas: Vec<Box<Arena>> = (0..args.threads).map(|_| Box::new(Arena::new())).collect();
    let work = |arena: &mut Box<Arena>, input: &&Input| input.work(arena);
    // Warm-up through the same workers: `warmup` images each.
    let warm: Vec<&Input> = inputs
        .iter()
        .cycle()
        .take(args.warmup * args.threads)
        .collect();
    run_batch(&warm, &mut arenas, &work)?;

    let timed: Vec<&Input> = inputs.iter().collect();
    let mut per_image_ms = Vec::with_capacity(args.iterations * args.images);
    let mut per_iteration_s = Vec::with_capacity(args.iterations);
    let mut class_counts = [0usize; NUM_CLASSES];
    for _ in 0..args.iterations {
        let batch = run_batch(&timed, &mut arenas, &work)?;
        per_iteration_s.push(batch.wall_s);
        per_image_ms.extend(batch.times.iter().map(|t| t.ms));
        for class in batch.outputs {
            class_counts[class] += 1;
        }
    }
    let summary = Summary::new(&per_iteration_s, &mut per_image_ms, args.images);
    print_header(&args, &summary, labelled.is_some());
    summary.print();

    let score = match &labelled {
        None => None,
        Some(d) => Some(score(&args, d, &mut arenas[0], summary.l_seconds_per_100)?),
    };
    let mut pngs = Vec::new();
    if let (Some(sc), Some(json)) = (&score, &args.json) {
        let dir = json.parent().filter(|p| !p.as_os_str().is_empty());
        let stem = json
            .file_stem()
            .map_or_else(|| "pi-bench".into(), |s| s.to_string_lossy().into_owned());
        pngs = plot::confusion_pngs(dir.unwrap_or(Path::new(".")), &format!("{stem}."), sc)?;
        println!(
            "confusion PNGs:   {} ({} files)",
            pngs.first()
                .map_or(String::new(), |p| p.display().to_string()),
            pngs.len()
        );
    }
    if let Some(path) = &args.json {
        let report = serde_json::json!({
            "mode": args.mode.name(),
            "protocol": {
                "iterations": summary.iterations,
                "images_per_iteration": summary.images,
                "mode": args.mode.name(),
                "stage": args.mode.call(),
                "timed": args.mode.stage(),
                "threads": args.threads,
                "images": if labelled.is_some() { "labelled (seeded draw)" } else { "generated" },
            },
            "model": model_info::json(),
            "l_seconds_per_100_images": summary.l_seconds_per_100,
            "latency_score": summary.latency_score,
            "images_per_second": summary.images_per_s,
            "per_image_ms": {
                "mean": summary.mean_ms,
                "p50": summary.p50_ms,
                "p90": summary.p90_ms,
                "p99": summary.p99_ms,
            },
            "predicted_class_counts": CLASS_NAMES.iter().zip(class_counts).map(|(n, c)| (n.to_string(), c)).collect::<std::collections::BTreeMap<_, _>>(),
            "esfair": score,
            "accuracy": score.as_ref().map(|s| s.accuracy),
            "balanced_accuracy": score.as_ref().map(|s| s.balanced_accuracy),
            "fairness": score.as_ref().and_then(|s| s.fairness),
            "overall": score.as_ref().and_then(|s| s.overall),
            "groups": score.as_ref().map(|s| &s.groups),
            "confusion_pngs": pngs,
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

/// The timed images, ready for `--mode`: generated, or drawn from the labelled set (for
/// `end-to-end`, with the files' own bytes).
fn prepare(args: &Args, labelled: Option<&Dataset>) -> Result<Vec<Input>> {
    match labelled {
        None => generate_images(args.images, args.seed)
            .into_iter()
            .map(|(w, h, px)| Input::prepare(args.mode, w, h, px, None))
            .collect(),
        Some(d) => draw(d.samples.len(), args.images, args.seed)
            .into_iter()
            .map(|k| {
                let s = &d.samples[k];
                let encoded = match args.mode {
                    Mode::EndToEnd => Some(
                        std::fs::read(&s.path)
                            .with_context(|| format!("reading {}", s.path.display()))?,
                    ),
                    _ => None,
                };
                Input::prepare(args.mode, s.width, s.height, s.pixels.clone(), encoded)
                    .with_context(|| format!("preparing {}", s.path.display()))
            })
            .collect(),
    }
}

/// `n` indices drawn with replacement from `0..len` (xorshift, seeded), as the paper draws
/// 100 random test images.
fn draw(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) % len.max(1) as u64) as usize
        })
        .collect()
}

/// Classifies every labelled image once (untimed), writes `--predictions` and prints the
/// ESFair table.
fn score(args: &Args, d: &Dataset, arena: &mut Arena, l: f64) -> Result<esfair::Score> {
    let mut items = Vec::with_capacity(d.samples.len());
    let mut rows = String::from("file,true,predicted,group");
    for c in CLASS_NAMES {
        rows.push_str(&format!(",logit_{c}"));
    }
    rows.push('\n');
    for s in &d.samples {
        let p = classify(Image::new(s.width, s.height, &s.pixels)?, arena)
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
        std::fs::write(path, rows).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("predictions: {}", path.display());
    }
    let sc = esfair::score(&items, &CLASS_NAMES, &d.groups, &args.exclude_groups, l);
    sc.print();
    Ok(sc)
}

fn print_header(args: &Args, s: &Summary, labelled: bool) {
    for (label, text) in model_info::header_lines() {
        println!("{:<18}{text}", format!("{label}:"));
    }
    println!("mode:             {} ({})", args.mode, args.mode.stage());
    if args.threads == 1 {
        println!("threads:          1");
    } else {
        println!(
            "threads:          {} (one arena each; each iteration's images split among them)",
            args.threads
        );
    }
    match (labelled, args.mode) {
        (true, Mode::EndToEnd) => {
            println!("images:           drawn from the labelled set (their files' bytes in memory)")
        }
        (true, _) => println!("images:           drawn from the labelled set (decoded in memory)"),
        (false, Mode::EndToEnd) => println!(
            "image sizes:      {SIZES:?} (generated RGB8 noise as JPEG quality {GENERATED_JPEG_QUALITY}, cycled; noise decodes slower than photos)"
        ),
        (false, _) => println!("image sizes:      {SIZES:?} (generated RGB8, cycled)"),
    }
    println!(
        "protocol:         {} iterations x {} images",
        s.iterations, s.images
    );
}
