//! `pi-bench-libtorch`: the latency protocol of `pi-bench` on libtorch (built with the
//! `libtorch` feature), for the same model file the runtime embeds.
//!
//! The model file's folded graph runs in tch (eval semantics, no grad, 1 intra-op and 1
//! inter-op thread) with its weights materialized once. Each image goes through the same
//! step as `pi-bench`: `derm_runtime`'s bilinear resize + normalization, then the network
//! (here `Tensor::from_slice` + libtorch), then softmax and argmax. Only the network differs.
//!
//! As a check that both engines run the same network, the first image's logits are also
//! computed by the embedded runtime model when it has the file's input size, classes and
//! parameter count (build with `DERM_MODEL=<file>`), and the largest difference is printed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use derm_codegen::ir::ModelFile;
use derm_runtime::preprocess::{Image, centre_crop, crop_resize_normalize, resize_normalize};
use derm_train::export::TchGraph;
use tch::{Kind, Tensor};

use pi_bench::protocol;

/// Time a model file in libtorch with pi-bench's protocol.
#[derive(Debug, Parser)]
#[command(name = "pi-bench-libtorch", version, about)]
struct Args {
    /// The model file (for a like-for-like comparison, the one derm-runtime embeds:
    /// build with `DERM_MODEL=<file>`).
    #[arg(long)]
    model: PathBuf,
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

fn main() -> Result<()> {
    let args = Args::parse();
    if args.iterations == 0 || args.images == 0 {
        bail!("--iterations and --images must be at least 1");
    }
    let path = args.model.clone();
    let model = ModelFile::read(&path).with_context(|| format!("reading {}", path.display()))?;
    tch::set_num_threads(1);
    tch::set_num_interop_threads(1);
    let net = TchGraph::new(&model)?;
    let [h, w] = model.graph.preprocess.resize;
    let (mean, std) = (model.graph.preprocess.mean, model.graph.preprocess.std);
    let classes = model.num_classes();
    let centre = model.graph.preprocess.crop == derm_codegen::ir::Crop::Centre;
    let mut input = vec![0f32; 3 * h * w];
    let mut classify = |img: Image<'_>| -> Result<(usize, Vec<f32>)> {
        // The same crop as the runtime's `classify` for this file.
        let pre = if centre {
            let r = centre_crop(img.width, img.height, w, h);
            crop_resize_normalize(img, r, h, w, mean, std, &mut input)
        } else {
            resize_normalize(img, h, w, mean, std, &mut input)
        };
        pre.map_err(|e| anyhow::anyhow!("preprocessing: {e}"))?;
        let x = Tensor::from_slice(&input).view([1, 3, h as i64, w as i64]);
        let logits = net.forward(&x)?;
        let probs = logits.softmax(-1, Kind::Float);
        let class = i64::try_from(probs.argmax(-1, false).squeeze())? as usize;
        Ok((class, Vec::<f32>::try_from(logits.view(-1))?))
    };

    let images = protocol::generate_images(args.images, args.seed);

    let (_, first_logits) = classify(img(&images[0])?)?;
    let parity = runtime_parity(&model, &images[0], &first_logits)?;
    for im in images.iter().cycle().take(args.warmup) {
        classify(img(im)?)?;
    }
    let mut per_image_ms = Vec::with_capacity(args.iterations * args.images);
    let mut per_iteration_s = Vec::with_capacity(args.iterations);
    let mut class_counts = vec![0usize; classes];
    for _ in 0..args.iterations {
        let start = Instant::now();
        for im in &images {
            let t = Instant::now();
            let (c, _) = classify(img(im)?)?;
            per_image_ms.push(t.elapsed().as_secs_f64() * 1e3);
            class_counts[c] += 1;
        }
        per_iteration_s.push(start.elapsed().as_secs_f64());
    }
    let r = protocol::Summary::new(&per_iteration_s, &mut per_image_ms, args.images);
    println!(
        "model:            {} ({}x{} input, {} classes, {} ops)",
        path.display(),
        w,
        h,
        classes,
        model.graph.ops.len()
    );
    println!(
        "engine:           libtorch {} via tch (folded graph, eval, no grad), 1 thread",
        tch_version()
    );
    println!("stage measured:   classify (resize + normalize + network + softmax)");
    println!(
        "image sizes:      {:?} (generated RGB8, cycled)",
        protocol::SIZES
    );
    println!(
        "protocol:         {} iterations x {} images",
        args.iterations, args.images
    );
    match parity {
        Some((d, range)) => println!(
            "vs derm-runtime:  max |logit diff| {d:.2e} on image 0 = {:.2e} of the logit range (same model)",
            d / range.max(f32::MIN_POSITIVE)
        ),
        None => println!("vs derm-runtime:  not compared (the runtime embeds another model)"),
    }
    r.print();
    if let Some(json) = &args.json {
        std::fs::write(json, r.json("libtorch", &path.display().to_string()))
            .with_context(|| format!("writing {}", json.display()))?;
        println!("report:           {}", json.display());
    }
    Ok(())
}

fn tch_version() -> String {
    // tch pins its libtorch; the version is a build-time fact of the binding.
    "2.13 (tch 0.26)".to_owned()
}

/// Largest logit difference between libtorch and the embedded runtime model on one image,
/// and libtorch's logit range, if the runtime embeds a model of the same shape and size.
fn runtime_parity(
    model: &ModelFile,
    image: &(usize, usize, Vec<u8>),
    tch_logits: &[f32],
) -> Result<Option<(f32, f32)>> {
    let params: usize = model
        .tensors
        .values()
        .filter_map(derm_codegen::ir::Tensor::numel)
        .sum();
    let [h, w] = model.graph.preprocess.resize;
    let same = params == derm_runtime::PARAMS
        && model.num_classes() == derm_runtime::NUM_CLASSES
        && (h, w) == (derm_runtime::INPUT_H, derm_runtime::INPUT_W);
    if !same {
        return Ok(None);
    }
    let mut arena = Box::new(derm_runtime::Arena::new());
    let (iw, ih, px) = image;
    let p = derm_runtime::classify(
        Image::new(*iw, *ih, px).map_err(|e| anyhow::anyhow!("image: {e}"))?,
        &mut arena,
    )
    .map_err(|e| anyhow::anyhow!("runtime: {e}"))?;
    let diff = p
        .logits
        .iter()
        .zip(tch_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let max = tch_logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = tch_logits.iter().copied().fold(f32::INFINITY, f32::min);
    Ok(Some((diff, max - min)))
}

fn img(im: &(usize, usize, Vec<u8>)) -> Result<Image<'_>> {
    let (w, h, px) = im;
    Image::new(*w, *h, px).map_err(|e| anyhow::anyhow!("image: {e}"))
}
