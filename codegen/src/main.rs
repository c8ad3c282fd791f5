//! `derm-codegen MODEL -o model.rs [--weights-out blob.bin]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use derm_codegen::ir::ModelFile;
use derm_codegen::{GenOptions, WeightsSource, generate};

/// Generate allocation-free Rust for derm-runtime from a derm model file.
#[derive(Debug, Parser)]
#[command(name = "derm-codegen", version, about)]
struct Args {
    /// The model file (.safetensors with a derm.graph entry).
    model: PathBuf,
    /// Where to write the generated Rust module.
    #[arg(short, long)]
    output: PathBuf,
    /// Where to write the weight blob [default: OUTPUT with extension .bin].
    #[arg(long)]
    weights_out: Option<PathBuf>,
    /// Path of the runtime crate in the generated code.
    #[arg(long, default_value = "::derm_runtime")]
    runtime_path: String,
    /// Keep residual adds as separate `add` kernels.
    #[arg(long)]
    no_fuse: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let model = ModelFile::read(&args.model)?;
    let weights_out = args
        .weights_out
        .unwrap_or_else(|| args.output.with_extension("bin"));
    // include_bytes! resolves relative paths against the including file,
    // which the CLI cannot know: embed an absolute path.
    let abs = std::path::absolute(&weights_out)
        .with_context(|| format!("{}: cannot make the path absolute", weights_out.display()))?;
    let opts = GenOptions {
        runtime_path: args.runtime_path,
        weights: WeightsSource::Path(abs.to_string_lossy().into_owned()),
        fuse_residual: !args.no_fuse,
    };
    let g = generate(&model, &opts).with_context(|| format!("{}", args.model.display()))?;
    std::fs::write(&args.output, &g.code)
        .with_context(|| format!("writing {}", args.output.display()))?;
    std::fs::write(&weights_out, &g.weights)
        .with_context(|| format!("writing {}", weights_out.display()))?;
    let r = &g.report;
    println!(
        "{}: {} layers, {} params, {:.1} M MACs; arena {} f32 ({} KiB), peak-live bound {} f32 ({:.1}% over)",
        args.output.display(),
        r.layers.len(),
        r.params,
        r.macs as f64 / 1e6,
        r.arena_len,
        r.arena_len * 4 / 1024,
        r.peak_live_len,
        (r.arena_len as f64 / r.peak_live_len.max(1) as f64 - 1.0) * 100.0
    );
    println!(
        "{}: {} bytes of weights",
        weights_out.display(),
        g.weights.len()
    );
    Ok(())
}
