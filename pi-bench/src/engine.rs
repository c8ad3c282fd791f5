//! Other inference engines on pi-bench's protocol (features `libtorch`, `ort`, `tract`): the
//! flags, the timed loop, the logit check against the embedded model and the report that
//! `pi-bench-libtorch`, `pi-bench-ort` and `pi-bench-tract` share, so the engines differ only
//! in the network.
//!
//! Each image goes through the same steps as `pi-bench --mode classify`: the model file's
//! crop, `derm_runtime`'s bilinear resize and normalization into a `[1, 3, H, W]` tensor, the
//! engine's network ([`Network::logits`]), then softmax and argmax. With `--mode model`, as
//! `pi-bench --mode model`, the images are preprocessed before timing and only the network,
//! softmax and argmax are timed. `--threads N` splits each
//! iteration's images among N workers exactly as `pi-bench --threads N` does
//! ([`crate::runner::run_batch`]), each worker with its own engine instance;
//! `--intra-op-threads M` lets one instance use M threads inside one image, where the engine
//! can.
//!
//! Before timing, the first [`PARITY_IMAGES`] images also run through the model embedded in
//! `derm-runtime` when it was built from the same file (same SHA-256 of the file's bytes), and
//! the largest logit difference relative to the logit range must stay within
//! [`PARITY_TOLERANCE`] ([`QDQ_PARITY_TOLERANCE`] for an int8 file, whose ONNX export rounds
//! in float where the runtime rounds in integers); otherwise the run still reports, then
//! exits nonzero.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use derm_codegen::ir::{Crop, ModelFile};
use derm_runtime::preprocess::{Image, Region, centre_crop, crop_resize_normalize};
use serde_json::{Value, json};

use crate::protocol::{SIZES, Summary, generate_images};
use crate::runner::{Mode, run_batch};

/// Images whose logits are compared with the embedded runtime model before timing.
pub const PARITY_IMAGES: usize = 4;

/// Largest accepted `max |logit difference| / logit range` against the embedded model: f32
/// engines that sum in another order differ by about 1e-6 of the range on these networks, a
/// wrong operator by far more than 1e-4.
pub const PARITY_TOLERANCE: f32 = 1e-4;

/// [`PARITY_TOLERANCE`] for an int8 model file. Its ONNX export (QDQ) rounds every
/// activation where the runtime does, on the same grids, but in float (`x / scale`, round
/// half to even) where the runtime multiplies by a fixed-point multiplier, and computes the
/// squeeze-excite gate in float where the runtime uses Q15: a value that lands within a hair
/// of a rounding boundary can go to the other int8 neighbour, and such one-step differences
/// propagate and grow. Measured on trained MobileNetV3-Small int8 files (`scripts/check_onnx.sh`,
/// layer by layer a handful of values one step off): 0.5-2.7% of the logit range at 128 px,
/// 8.6-13% at 224 px; a wrong scale, zero point or operator moves the logits by more than
/// the whole range. `codegen/tests/onnx.rs` checks the QDQ graph layer by layer instead.
pub const QDQ_PARITY_TOLERANCE: f32 = 0.25;

/// The logit tolerance for engines running `model` ([`PARITY_TOLERANCE`] or, for an int8
/// file, [`QDQ_PARITY_TOLERANCE`]).
pub fn parity_tolerance(model: &ModelFile) -> f32 {
    if model.graph.quantization.is_some() {
        QDQ_PARITY_TOLERANCE
    } else {
        PARITY_TOLERANCE
    }
}

/// The flags every engine binary takes (flattened into its own parser).
#[derive(Debug, Clone, Args)]
pub struct ProtocolArgs {
    /// The model file. For the logit check (and a like-for-like comparison) use the one
    /// derm-runtime embeds: build with `DERM_MODEL=<file>`.
    #[arg(long)]
    pub model: PathBuf,
    /// Timed iterations (the paper uses 10).
    #[arg(long, default_value_t = 10)]
    pub iterations: usize,
    /// Images per iteration (the paper uses 100).
    #[arg(long, default_value_t = 100)]
    pub images: usize,
    /// Seed of the generated images (the same generator as pi-bench).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Untimed warm-up images per worker before the first iteration.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Workers, one engine instance each; every iteration's images are split among them (as
    /// `pi-bench --threads`) and L is the iteration's wall time.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Threads one engine instance may use inside one image (intra-op), where the engine
    /// supports it.
    #[arg(long, default_value_t = 1)]
    pub intra_op_threads: usize,
    /// What is timed per image: `classify` (crop, resize and normalize with derm-runtime's
    /// preprocessing, then the network and softmax) or `model` (the network and softmax on
    /// inputs preprocessed before timing), as `pi-bench --mode` (whose `end-to-end`, from JPEG
    /// bytes, the engines do not have).
    #[arg(long, default_value_t = Mode::Classify)]
    pub mode: Mode,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl ProtocolArgs {
    /// Rejects counts the protocol cannot run with, before any engine is built.
    pub fn validate(&self) -> Result<()> {
        if self.iterations == 0 || self.images == 0 || self.threads == 0 {
            bail!("--iterations, --images and --threads must be at least 1");
        }
        if self.intra_op_threads == 0 {
            bail!("--intra-op-threads must be at least 1");
        }
        if self.mode == Mode::EndToEnd {
            bail!(
                "--mode end-to-end is pi-bench's only (JPEG decoding); the engines time `model` or `classify`"
            );
        }
        if self.threads > self.images {
            bail!(
                "--threads {} is more than --images {}: some workers would time nothing",
                self.threads,
                self.images
            );
        }
        Ok(())
    }
}

/// Where an ONNX engine gets its graph: exported in memory from `--model`, or a file.
#[cfg(any(feature = "ort", feature = "tract"))]
#[derive(Debug, Clone, Args)]
pub struct OnnxArgs {
    /// Run this ONNX file instead of exporting `--model` in memory (it must be that model's
    /// export, e.g. by `derm-codegen onnx`, for the logit check to mean anything).
    #[arg(long)]
    pub onnx: Option<PathBuf>,
}

#[cfg(any(feature = "ort", feature = "tract"))]
impl OnnxArgs {
    /// The ONNX bytes, and where they came from for the header.
    pub fn bytes(&self, model: &ModelSource) -> Result<(Vec<u8>, String)> {
        match &self.onnx {
            Some(path) => Ok((
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                path.display().to_string(),
            )),
            None => {
                let bytes = derm_codegen::onnx::to_onnx(&model.file)
                    .with_context(|| format!("exporting {} to ONNX", model.path.display()))?;
                let origin = format!("exported in memory ({} bytes)", bytes.len());
                Ok((bytes, origin))
            }
        }
    }
}

/// The model file an engine runs: its IR, and the SHA-256 of its bytes (what
/// `derm_runtime::MODEL_SHA256` records for the embedded file).
pub struct ModelSource {
    /// The file as given.
    pub path: PathBuf,
    /// Its parsed and validated contents.
    pub file: ModelFile,
    /// SHA-256 of the file's bytes, lowercase hex.
    pub sha256: String,
}

impl ModelSource {
    /// Reads and validates `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses and validates `bytes`, the contents of the file at `path`.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let file = ModelFile::from_bytes(bytes)
            .with_context(|| format!("{} is not a valid model file", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            sha256: derm_codegen::metadata::sha256_hex(bytes),
        })
    }

    /// Whether derm-runtime embeds this very file, so their logits must agree.
    pub fn is_embedded(&self) -> bool {
        self.sha256 == derm_runtime::MODEL_SHA256
    }

    /// `[1, 3, H, W]`: the network input the engines are given.
    pub fn input_shape(&self) -> [usize; 4] {
        let [h, w] = self.file.graph.preprocess.resize;
        [1, 3, h, w]
    }

    /// Logits per image.
    pub fn classes(&self) -> usize {
        self.file.num_classes()
    }

    fn preprocess(&self) -> Preprocess {
        let p = &self.file.graph.preprocess;
        Preprocess {
            h: p.resize[0],
            w: p.resize[1],
            centre: p.crop == Crop::Centre,
            mean: p.mean,
            std: p.std,
        }
    }
}

/// The model file's preprocessing, as `derm_runtime::classify` does it for that file.
#[derive(Debug, Clone, Copy)]
struct Preprocess {
    h: usize,
    w: usize,
    centre: bool,
    mean: [f32; 3],
    std: [f32; 3],
}

impl Preprocess {
    fn run(&self, image: Image<'_>, out: &mut [f32]) -> Result<()> {
        let region = if self.centre {
            centre_crop(image.width, image.height, self.w, self.h)
        } else {
            Region::whole(image.width, image.height)
        };
        crop_resize_normalize(image, region, self.h, self.w, self.mean, self.std, out)
            .map_err(|e| anyhow!("preprocessing: {e}"))
    }
}

/// One engine instance: the network on a normalized `[1, 3, H, W]` input.
pub trait Network: Send {
    /// The logits of one image (`input` is `3 * H * W` values, planar RGB).
    fn logits(&mut self, input: &[f32]) -> Result<Vec<f32>>;
}

/// How an engine names itself in reports.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Short name (`libtorch`, `onnxruntime`, `tract`): the JSON's `engine`.
    pub name: &'static str,
    /// One line for the header: version and how the graph runs.
    pub description: String,
}

/// The logit check against the embedded model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parity {
    /// Images compared.
    pub images: usize,
    /// Largest `|engine - runtime|` over their logits.
    pub max_abs_diff: f32,
    /// Largest per-image `max |difference| / (max - min of the runtime's logits)`.
    pub max_relative_diff: f32,
    /// The largest `max_relative_diff` accepted ([`parity_tolerance`]).
    pub tolerance: f32,
}

impl Parity {
    /// Whether the engine computes the same network (within [`Parity::tolerance`]).
    pub fn ok(&self) -> bool {
        self.max_relative_diff <= self.tolerance
    }
}

/// Compares each image's logits (`engine[k]` against `runtime[k]`), to be accepted within
/// `tolerance`; NaN anywhere fails.
pub fn compare_logits(engine: &[Vec<f32>], runtime: &[Vec<f32>], tolerance: f32) -> Result<Parity> {
    if engine.len() != runtime.len() || engine.is_empty() {
        bail!(
            "logit check: {} engine and {} runtime results",
            engine.len(),
            runtime.len()
        );
    }
    let mut parity = Parity {
        images: engine.len(),
        max_abs_diff: 0.0,
        max_relative_diff: 0.0,
        tolerance,
    };
    for (k, (e, r)) in engine.iter().zip(runtime).enumerate() {
        if e.len() != r.len() {
            bail!(
                "logit check, image {k}: the engine gives {} logits, the runtime {}",
                e.len(),
                r.len()
            );
        }
        let range = r.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            - r.iter().copied().fold(f32::INFINITY, f32::min);
        let diff = e
            .iter()
            .zip(r)
            // NaN must not vanish in `max`: count it as an infinite difference.
            .map(|(a, b)| (a - b).abs())
            .map(|d| if d.is_nan() { f32::INFINITY } else { d })
            .fold(0f32, f32::max);
        let relative = diff / range.max(f32::MIN_POSITIVE);
        parity.max_abs_diff = parity.max_abs_diff.max(diff);
        parity.max_relative_diff = parity.max_relative_diff.max(relative);
    }
    Ok(parity)
}

/// Softmax then the first index of the largest probability, as `derm_runtime::classify`
/// does it (NaN logits give its uniform distribution, so class 0).
pub fn predict(logits: &[f32]) -> usize {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut p: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = p.iter().sum();
    if !(sum > 0.0 && sum.is_finite()) {
        return 0;
    }
    p.iter_mut().for_each(|v| *v /= sum);
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if v.total_cmp(&p[best]).is_gt() {
            best = i;
        }
    }
    best
}

/// One worker: its engine instance and its input buffer.
struct Worker<N> {
    net: N,
    input: Vec<f32>,
}

type Pixels = (usize, usize, Vec<u8>);

fn image(im: &Pixels) -> Result<Image<'_>> {
    let (w, h, px) = im;
    Image::new(*w, *h, px).map_err(|e| anyhow!("image: {e}"))
}

/// Builds `args.threads` engine instances with `make`.
pub fn workers<N>(args: &ProtocolArgs, mut make: impl FnMut() -> Result<N>) -> Result<Vec<N>> {
    (0..args.threads).map(|_| make()).collect()
}

/// Runs the protocol on `nets` (one per worker), prints the report and writes `--json`.
/// Returns failure when the logits disagree with the embedded model built from the same file.
pub fn run<N: Network>(
    args: &ProtocolArgs,
    model: &ModelSource,
    engine: &Engine,
    nets: Vec<N>,
) -> Result<ExitCode> {
    args.validate()?;
    if nets.len() != args.threads {
        bail!(
            "{} engine instances for {} workers",
            nets.len(),
            args.threads
        );
    }
    let pre = model.preprocess();
    let classes = model.classes();
    let mut workers: Vec<Worker<N>> = nets
        .into_iter()
        .map(|net| Worker {
            net,
            input: vec![0f32; 3 * pre.h * pre.w],
        })
        .collect();
    // The engine's logits of one input, checked, as the predicted class.
    let classify = |net: &mut N, input: &[f32]| -> Result<usize> {
        let logits = net.logits(input)?;
        if logits.len() != classes {
            bail!(
                "the engine gave {} logits; the model has {classes} classes",
                logits.len()
            );
        }
        Ok(predict(&logits))
    };

    let images = generate_images(args.images, args.seed);
    let parity = parity(model, &pre, &images, &mut workers[0])?;
    let timed = match args.mode {
        Mode::Model => {
            // Preprocessed once, before timing: the timed work is the network alone.
            let inputs = images
                .iter()
                .map(|im| {
                    let mut x = vec![0f32; 3 * pre.h * pre.w];
                    pre.run(image(im)?, &mut x)?;
                    Ok(x)
                })
                .collect::<Result<Vec<_>>>()?;
            let work = |w: &mut Worker<N>, x: &&Vec<f32>| classify(&mut w.net, x);
            time(
                args,
                &mut workers,
                &inputs.iter().collect::<Vec<_>>(),
                &work,
            )?
        }
        _ => {
            let work = |w: &mut Worker<N>, im: &&Pixels| -> Result<usize> {
                pre.run(image(im)?, &mut w.input)?;
                classify(&mut w.net, &w.input)
            };
            time(
                args,
                &mut workers,
                &images.iter().collect::<Vec<_>>(),
                &work,
            )?
        }
    };
    let (per_iteration_s, mut per_image_ms, outputs) = timed;
    let mut class_counts = vec![0usize; classes];
    for c in outputs {
        class_counts[c] += 1;
    }
    let summary = Summary::new(&per_iteration_s, &mut per_image_ms, args.images);
    print_header(args, model, engine, parity.as_ref());
    summary.print();
    if let Some(path) = &args.json {
        let report = report_json(
            args,
            model,
            engine,
            &summary,
            parity.as_ref(),
            &class_counts,
        );
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report:           {}", path.display());
    }
    match parity {
        Some(p) if !p.ok() => {
            eprintln!(
                "error: the {} logits differ from derm-runtime's by {:.2e} of the logit range (tolerance {:.0e}) on the same model file",
                engine.name, p.max_relative_diff, p.tolerance
            );
            Ok(ExitCode::FAILURE)
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// The protocol's untimed warm-up (`args.warmup` items per worker, cycling through `items`),
/// then `args.iterations` timed passes over `items`: each pass's wall time (s), each item's
/// time (ms) and each item's result.
fn time<I: Sync, N: Network>(
    args: &ProtocolArgs,
    workers: &mut [Worker<N>],
    items: &[I],
    work: &(impl Fn(&mut Worker<N>, &I) -> Result<usize> + Sync),
) -> Result<(Vec<f64>, Vec<f64>, Vec<usize>)> {
    let warm: Vec<&I> = items
        .iter()
        .cycle()
        .take(args.warmup * args.threads)
        .collect();
    run_batch(&warm, workers, &|w: &mut Worker<N>, item: &&I| {
        work(w, item)
    })?;
    let mut per_image_ms = Vec::with_capacity(args.iterations * items.len());
    let mut per_iteration_s = Vec::with_capacity(args.iterations);
    let mut outputs = Vec::with_capacity(args.iterations * items.len());
    for _ in 0..args.iterations {
        let batch = run_batch(items, workers, work)?;
        per_iteration_s.push(batch.wall_s);
        per_image_ms.extend(batch.times.iter().map(|t| t.ms));
        outputs.extend(batch.outputs);
    }
    Ok((per_iteration_s, per_image_ms, outputs))
}

/// The engine's and the embedded model's logits on the first images, when the runtime embeds
/// this file; `None` otherwise.
fn parity<N: Network>(
    model: &ModelSource,
    pre: &Preprocess,
    images: &[Pixels],
    worker: &mut Worker<N>,
) -> Result<Option<Parity>> {
    if !model.is_embedded() {
        return Ok(None);
    }
    let mut arena = Box::new(derm_runtime::Arena::new());
    let (mut engine, mut runtime) = (Vec::new(), Vec::new());
    for im in images.iter().take(PARITY_IMAGES) {
        pre.run(image(im)?, &mut worker.input)?;
        engine.push(worker.net.logits(&worker.input)?);
        let p = derm_runtime::classify(image(im)?, &mut arena)
            .map_err(|e| anyhow!("derm-runtime: {e}"))?;
        runtime.push(p.logits.to_vec());
    }
    compare_logits(&engine, &runtime, parity_tolerance(&model.file)).map(Some)
}

fn print_header(
    args: &ProtocolArgs,
    model: &ModelSource,
    engine: &Engine,
    parity: Option<&Parity>,
) {
    let [_, _, h, w] = model.input_shape();
    println!(
        "model:            {} ({w}x{h} input, {} classes, {} ops), sha256 {}",
        model.path.display(),
        model.classes(),
        model.file.graph.ops.len(),
        model.sha256
    );
    println!("engine:           {}", engine.description);
    println!(
        "threads:          {} worker{} x {} intra-op thread{}{}",
        args.threads,
        if args.threads == 1 { "" } else { "s" },
        args.intra_op_threads,
        if args.intra_op_threads == 1 { "" } else { "s" },
        if args.threads > 1 {
            " (one engine instance each; each iteration's images split among them)"
        } else {
            ""
        }
    );
    let crop = if model.file.graph.preprocess.crop == Crop::Centre {
        "centre crop + "
    } else {
        ""
    };
    match args.mode {
        Mode::Model => println!(
            "stage measured:   preprocessed input tensor in memory ({crop}resize + normalize by derm-runtime, untimed) -> network + softmax"
        ),
        _ => println!(
            "stage measured:   decoded RGB8 in memory -> {crop}resize + normalize (derm-runtime) + network + softmax"
        ),
    }
    println!("image sizes:      {SIZES:?} (generated RGB8, cycled)");
    println!(
        "protocol:         {} iterations x {} images",
        args.iterations, args.images
    );
    match parity {
        Some(p) => println!(
            "vs derm-runtime:  max |logit diff| {:.2e} on {} images = {:.2e} of the logit range (same model file; tolerance {:.0e}){}",
            p.max_abs_diff,
            p.images,
            p.max_relative_diff,
            p.tolerance,
            if p.ok() { "" } else { " FAILED" }
        ),
        None => println!(
            "vs derm-runtime:  not compared (the runtime embeds {}, sha256 {}: another file)",
            derm_runtime::MODEL_NAME,
            derm_runtime::MODEL_SHA256
        ),
    }
}

fn report_json(
    args: &ProtocolArgs,
    model: &ModelSource,
    engine: &Engine,
    s: &Summary,
    parity: Option<&Parity>,
    class_counts: &[usize],
) -> Value {
    json!({
        "engine": engine.name,
        "engine_description": engine.description,
        "mode": args.mode.name(),
        "protocol": {
            "iterations": s.iterations,
            "images_per_iteration": s.images,
            "mode": args.mode.name(),
            "stage": args.mode.call(),
            "threads": args.threads,
            "intra_op_threads": args.intra_op_threads,
            "images": "generated",
        },
        "model": {
            "file": model.path.display().to_string(),
            "sha256": model.sha256,
            "input": [model.input_shape()[2], model.input_shape()[3]],
            "classes": model.file.graph.classes,
        },
        "parity": parity.map(|p| json!({
            "images": p.images,
            "max_abs_diff": p.max_abs_diff,
            "max_relative_diff": p.max_relative_diff,
            "tolerance": p.tolerance,
            "ok": p.ok(),
        })),
        "l_seconds_per_100_images": s.l_seconds_per_100,
        "latency_score": s.latency_score,
        "images_per_second": s.images_per_s,
        "per_image_ms": {
            "mean": s.mean_ms,
            "p50": s.p50_ms,
            "p90": s.p90_ms,
            "p99": s.p99_ms,
        },
        "predicted_class_counts": model.file.graph.classes.iter().zip(class_counts)
            .map(|(n, c)| (n.clone(), json!(c))).collect::<serde_json::Map<String, Value>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        protocol: ProtocolArgs,
    }

    fn parse(args: &[&str]) -> Result<ProtocolArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("engine").chain(args.iter().copied()))
            .map(|c| c.protocol)
    }

    #[test]
    fn flags_default_to_the_paper_protocol_and_bad_counts_are_rejected() {
        let a = parse(&["--model", "m.safetensors"]).unwrap();
        assert_eq!(
            (
                a.iterations,
                a.images,
                a.threads,
                a.intra_op_threads,
                a.warmup
            ),
            (10, 100, 1, 1, 5)
        );
        assert_eq!(a.mode, Mode::Classify);
        a.validate().unwrap();
        let m = parse(&["--model", "m", "--mode", "model"]).unwrap();
        assert_eq!(m.mode, Mode::Model);
        m.validate().unwrap();
        let e = parse(&["--model", "m", "--mode", "end-to-end"]).unwrap();
        let err = e.validate().unwrap_err().to_string();
        assert!(err.contains("end-to-end"), "{err}");
        assert!(parse(&[]).is_err(), "--model is required");
        for bad in [
            &["--threads", "0"][..],
            &["--iterations", "0"],
            &["--images", "0"],
            &["--intra-op-threads", "0"],
            &["--threads", "5", "--images", "4"],
        ] {
            let mut argv = vec!["--model", "m"];
            argv.extend_from_slice(bad);
            let a = parse(&argv).unwrap();
            assert!(a.validate().is_err(), "{bad:?}");
        }
        assert!(parse(&["--model", "m", "--threads", "-1"]).is_err());
    }

    #[test]
    fn parity_is_relative_to_the_runtime_logit_range() {
        let runtime = vec![vec![-1.0, 0.0, 3.0], vec![0.5, 0.5, 1.5]];
        let same = compare_logits(&runtime, &runtime, PARITY_TOLERANCE).unwrap();
        assert_eq!(same.max_abs_diff, 0.0);
        assert!(same.ok());
        // 2e-4 off on a range of 4 is 5e-5 of it: accepted.
        let close = vec![vec![-1.0, 2e-4, 3.0], vec![0.5, 0.5, 1.5]];
        let p = compare_logits(&close, &runtime, PARITY_TOLERANCE).unwrap();
        assert!((p.max_abs_diff - 2e-4).abs() < 1e-7);
        assert!((p.max_relative_diff - 5e-5).abs() < 1e-7, "{p:?}");
        assert!(p.ok());
        // The same 2e-4 on the second image (range 1) is 2e-4 of it: rejected.
        let off = vec![vec![-1.0, 0.0, 3.0], vec![0.5, 0.5002, 1.5]];
        let p = compare_logits(&off, &runtime, PARITY_TOLERANCE).unwrap();
        assert!(!p.ok(), "{p:?}");
        assert_eq!(p.images, 2);
    }

    #[test]
    fn int8_files_get_the_qdq_tolerance() {
        let float = derm_codegen::synthetic::SyntheticSpec::tiny(3)
            .build()
            .unwrap();
        let int8 = derm_codegen::synthetic::int8_of(&float, 2).unwrap();
        assert_eq!(parity_tolerance(&float), PARITY_TOLERANCE);
        assert_eq!(parity_tolerance(&int8), QDQ_PARITY_TOLERANCE);
        // 3% of the range: an int8 engine's rounding, not a float engine's summation order.
        let runtime = vec![vec![0.0, 1.0]];
        let off = vec![vec![0.03, 1.0]];
        assert!(
            compare_logits(&off, &runtime, parity_tolerance(&int8))
                .unwrap()
                .ok()
        );
        assert!(
            !compare_logits(&off, &runtime, parity_tolerance(&float))
                .unwrap()
                .ok()
        );
    }

    #[test]
    fn parity_fails_on_nan_and_mismatched_shapes() {
        let runtime = vec![vec![0.0, 1.0]];
        assert!(
            !compare_logits(&[vec![f32::NAN, 1.0]], &runtime, QDQ_PARITY_TOLERANCE)
                .unwrap()
                .ok()
        );
        assert!(compare_logits(&[vec![0.0, 1.0, 2.0]], &runtime, PARITY_TOLERANCE).is_err());
        assert!(compare_logits(&[], &[], PARITY_TOLERANCE).is_err());
        assert!(compare_logits(&[vec![0.0, 1.0]], &[], PARITY_TOLERANCE).is_err());
    }

    #[test]
    fn predict_picks_the_first_largest_logit() {
        assert_eq!(predict(&[0.1, 2.0, -3.0]), 1);
        assert_eq!(predict(&[1.0, 1.0]), 0);
        assert_eq!(predict(&[0.2, f32::NAN, 0.5]), 0);
        assert_eq!(predict(&[]), 0);
        // Large logits: softmax stays finite.
        assert_eq!(predict(&[1000.0, 1001.0]), 1);
    }

    #[test]
    fn engines_see_the_runtime_preprocessing() {
        let (w, h) = (40usize, 30usize);
        let px: Vec<u8> = (0..w * h * 3).map(|i| (i * 13 % 256) as u8).collect();
        let pre = Preprocess {
            h: derm_runtime::INPUT_H,
            w: derm_runtime::INPUT_W,
            centre: derm_runtime::CENTRE_CROP,
            mean: derm_runtime::MEAN,
            std: derm_runtime::STD,
        };
        let mut input = vec![0f32; derm_runtime::INPUT_LEN];
        pre.run(Image::new(w, h, &px).unwrap(), &mut input).unwrap();
        // Bit for bit what `pi-bench --mode model` feeds derm-runtime.
        let tensor = crate::runner::tensor(w, h, &px).unwrap();
        assert_eq!(&input[..], &tensor[..]);
        assert!(
            pre.run(Image::new(w, h, &px).unwrap(), &mut input[1..])
                .is_err()
        );
    }

    /// The file derm-runtime embeds in this build (its build script reads `DERM_MODEL` too).
    fn embedded() -> ModelSource {
        let path = PathBuf::from(option_env!("DERM_MODEL").unwrap_or(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/default.safetensors"
        )));
        let m = ModelSource::read(&path).unwrap();
        assert!(
            m.is_embedded(),
            "{} is not the embedded file",
            path.display()
        );
        m
    }

    /// derm-runtime itself as an engine, with `skew` added to the last logit.
    struct Runtime {
        arena: Box<derm_runtime::Arena>,
        skew: f32,
    }

    impl Network for Runtime {
        fn logits(&mut self, input: &[f32]) -> Result<Vec<f32>> {
            let x: &[f32; derm_runtime::INPUT_LEN] = input.try_into()?;
            let mut l = derm_runtime::run(x, &mut self.arena).to_vec();
            *l.last_mut().unwrap() += self.skew;
            Ok(l)
        }
    }

    fn args(threads: usize, json: Option<PathBuf>) -> ProtocolArgs {
        ProtocolArgs {
            model: PathBuf::new(),
            iterations: 2,
            images: 5,
            seed: 3,
            warmup: 1,
            threads,
            intra_op_threads: 1,
            mode: Mode::Classify,
            json,
        }
    }

    fn runtime_workers(a: &ProtocolArgs, skew: f32) -> Vec<Runtime> {
        workers(a, || {
            Ok(Runtime {
                arena: Box::new(derm_runtime::Arena::new()),
                skew,
            })
        })
        .unwrap()
    }

    #[test]
    fn the_protocol_reports_and_the_logit_check_gates_the_exit_code() {
        let model = embedded();
        let engine = Engine {
            name: "runtime-as-engine",
            description: "derm-runtime through the engine harness".into(),
        };
        let dir = std::env::temp_dir().join(format!("pi-bench-engine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("r.json");
        let a = args(2, Some(json.clone()));
        let code = run(&a, &model, &engine, runtime_workers(&a, 0.0)).unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(r["engine"], "runtime-as-engine");
        assert_eq!(r["protocol"]["threads"], 2);
        assert_eq!(r["model"]["sha256"], derm_runtime::MODEL_SHA256);
        assert_eq!(r["parity"]["max_abs_diff"], 0.0);
        assert_eq!(r["parity"]["images"], 4);
        assert_eq!(r["parity"]["ok"], true);
        for k in ["mean", "p50", "p90", "p99"] {
            assert!(r["per_image_ms"][k].as_f64().unwrap() > 0.0, "{k}");
        }
        let counted: u64 = r["predicted_class_counts"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(counted, 2 * 5, "every timed image counted once");

        // --mode model: the same images, preprocessed before timing, get the same classes.
        let mut m = args(2, Some(json.clone()));
        m.mode = Mode::Model;
        let code = run(&m, &model, &engine, runtime_workers(&m, 0.0)).unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        let rm: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(
            (&rm["mode"], &rm["protocol"]["stage"]),
            (&json!("model"), &json!("run"))
        );
        assert_eq!(rm["predicted_class_counts"], r["predicted_class_counts"]);
        assert_eq!(r["mode"], "classify");

        // One logit off by a tenth of a logit: reported, then a failing exit code.
        let a = args(1, Some(json.clone()));
        let code = run(&a, &model, &engine, runtime_workers(&a, 0.1)).unwrap();
        assert_eq!(code, ExitCode::FAILURE);
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(r["parity"]["ok"], false);
        assert!(r["parity"]["max_abs_diff"].as_f64().unwrap() > 0.09);

        // Another file than the embedded one: nothing to compare, so no verdict.
        let mut other = embedded();
        other.sha256 = "0".repeat(64);
        let code = run(&a, &other, &engine, runtime_workers(&a, 0.1)).unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert!(r["parity"].is_null());

        // Too few instances, or a network with the wrong number of logits: errors.
        assert!(run(&args(2, None), &model, &engine, runtime_workers(&a, 0.0)).is_err());
        struct Short;
        impl Network for Short {
            fn logits(&mut self, _: &[f32]) -> Result<Vec<f32>> {
                Ok(vec![0.0])
            }
        }
        let mut other = embedded();
        other.sha256 = "0".repeat(64);
        let err = run(&a, &other, &engine, vec![Short]).unwrap_err();
        assert!(format!("{err:#}").contains("1 logits"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_model_file_is_an_error_naming_it() {
        let err = ModelSource::from_bytes(Path::new("x.safetensors"), b"not a model")
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("x.safetensors"), "{err:#}");
        let err = ModelSource::read(Path::new("/nonexistent/m.safetensors"))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("/nonexistent/m.safetensors"));
    }
}
