//! `derm-codegen MODEL -o model.rs [--weights-out blob.bin]`: Rust for derm-runtime.
//! `derm-codegen onnx MODEL -o model.onnx [--golden-json FILE]`: the model as ONNX.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use derm_codegen::golden::Golden;
use derm_codegen::ir::ModelFile;
use derm_codegen::metadata::ModelMetadata;
use derm_codegen::onnx::{self, ExportOptions};
use derm_codegen::{GenOptions, WeightsSource, generate};
use prost::Message;

/// Reads a derm model file and generates specialized, allocation-free Rust for derm-runtime
/// (`derm-codegen MODEL -o model.rs`), or exports it to ONNX (`derm-codegen onnx MODEL -o
/// model.onnx`).
#[derive(Debug, Parser)]
#[command(
    name = "derm-codegen",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "\
Examples:
  derm-codegen models/default.safetensors -o /tmp/model.rs     # Rust module + /tmp/model.bin
  derm-codegen onnx models/default.safetensors -o /tmp/model.onnx \\
      --golden-json /tmp/model.golden.json                    # ONNX + golden vectors as JSON"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    rust: RustArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Export the model file to ONNX (opset 17, f32 weights): input "input" float
    /// [1, 3, H, W] (already preprocessed), output "logits" float [1, classes]; the
    /// preprocessing and class names are in the ONNX metadata_props.
    Onnx(OnnxArgs),
}

/// Without a subcommand: generate the Rust module and its weight blob.
#[derive(Debug, Args)]
struct RustArgs {
    /// The model file (.safetensors with a derm.graph entry).
    #[arg(required = true)]
    model: Option<PathBuf>,
    /// Where to write the generated Rust module.
    #[arg(short, long, required = true)]
    output: Option<PathBuf>,
    /// Where to write the weight blob [default: OUTPUT with extension .bin].
    #[arg(long)]
    weights_out: Option<PathBuf>,
    /// Path of the runtime crate in the generated code.
    #[arg(long, default_value = "::derm_runtime")]
    runtime_path: String,
    /// Keep residual adds as separate `add` kernels.
    #[arg(long)]
    no_fuse: bool,
    /// Keep every hardswish as hardswish (no 1/6 folded into the weights that read it).
    #[arg(long)]
    no_fold_hardswish: bool,
    /// Keep every squeeze-excite scaling its map (no gates folded into the next 1x1
    /// convolution's weights).
    #[arg(long)]
    no_fold_se: bool,
}

#[derive(Debug, Args)]
struct OnnxArgs {
    /// The model file (.safetensors with a derm.graph entry).
    model: PathBuf,
    /// Where to write the ONNX model.
    #[arg(short, long)]
    output: PathBuf,
    /// Also write the model's golden inputs and expected logits as JSON here
    /// ({"input_shape", "inputs", "logits"}), for checking the ONNX file in another engine
    /// (scripts/check_onnx.py).
    #[arg(long)]
    golden_json: Option<PathBuf>,
    /// The golden vectors to read for --golden-json [default: MODEL's
    /// <stem>.golden.safetensors].
    #[arg(long, requires = "golden_json")]
    golden: Option<PathBuf>,
    /// For an int8 model file: export the float network of its dequantized weights instead
    /// of the QDQ form (int8 weights, every activation rounded where the runtime rounds it).
    #[arg(long)]
    dequantize: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Onnx(args)) => export_onnx(args),
        None => generate_rust(cli.rust),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn generate_rust(args: RustArgs) -> Result<()> {
    // clap requires both when no subcommand is given; this only keeps the types honest.
    let (Some(model_path), Some(output)) = (args.model, args.output) else {
        anyhow::bail!("MODEL and --output are required");
    };
    let model = ModelFile::read(&model_path)?;
    let weights_out = args
        .weights_out
        .unwrap_or_else(|| output.with_extension("bin"));
    // include_bytes! resolves relative paths against the including file,
    // which the CLI cannot know: embed an absolute path.
    let abs = std::path::absolute(&weights_out)
        .with_context(|| format!("{}: cannot make the path absolute", weights_out.display()))?;
    let opts = GenOptions {
        runtime_path: args.runtime_path,
        weights: WeightsSource::Path(abs.to_string_lossy().into_owned()),
        fuse_residual: !args.no_fuse,
        fold_hardswish: !args.no_fold_hardswish,
        fold_se: !args.no_fold_se,
    };
    let g = generate(&model, &opts).with_context(|| format!("{}", model_path.display()))?;
    std::fs::write(&output, &g.code).with_context(|| format!("writing {}", output.display()))?;
    std::fs::write(&weights_out, &g.weights)
        .with_context(|| format!("writing {}", weights_out.display()))?;
    let r = &g.report;
    println!(
        "{}: {} layers, {} params, {:.1} M MACs; arena {} f32 ({} KiB), peak-live bound {} f32 ({:.1}% over)",
        output.display(),
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

fn export_onnx(args: OnnxArgs) -> Result<()> {
    // One read for both the parse and the hash, so the recorded SHA-256 is of what was parsed.
    let bytes =
        std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let model = ModelFile::from_bytes(&bytes).map_err(|e| e.in_file(&args.model))?;
    let file_name = args
        .model
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let opts = ExportOptions {
        source: Some(ModelMetadata::new(&model, &file_name, &bytes)),
        dequantize: args.dequantize,
    };
    // Golden vectors are read before anything is written, so a bad golden file leaves no
    // half-finished output behind.
    let golden = match &args.golden_json {
        Some(_) => {
            let path = args
                .golden
                .clone()
                .unwrap_or_else(|| Golden::path_for(&args.model));
            let g = Golden::read(&path)?;
            g.check(&model).map_err(|e| e.in_file(&path))?;
            Some(g)
        }
        None => None,
    };
    let proto =
        onnx::model_proto(&model, &opts).with_context(|| format!("{}", args.model.display()))?;
    let encoded = proto.encode_to_vec();
    write(&args.output, &encoded)?;
    let graph = proto.graph.unwrap_or_default();
    let weight_bytes: usize = graph.initializer.iter().map(|t| t.raw_data.len()).sum();
    let form = if model.graph.quantization.is_some() && !args.dequantize {
        "QDQ int8"
    } else {
        "f32"
    };
    println!(
        "{}: {form}, {} nodes, {} initializers ({weight_bytes} bytes), {} bytes; opset {}, input {:?} {:?}, output {:?} [1, {}]",
        args.output.display(),
        graph.node.len(),
        graph.initializer.len(),
        encoded.len(),
        onnx::OPSET_VERSION,
        onnx::INPUT_NAME,
        [1, 3, model.graph.input.shape[2], model.graph.input.shape[3]],
        onnx::OUTPUT_NAME,
        model.num_classes(),
    );
    if let (Some(path), Some(g)) = (&args.golden_json, golden) {
        let json = serde_json::to_vec(&g.to_json()).context("serializing the golden vectors")?;
        write(path, &json)?;
        println!("{}: {} golden samples", path.display(), g.samples());
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
