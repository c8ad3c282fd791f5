//! `pi-bench-ort`: the latency protocol of `pi-bench` on ONNX Runtime (built with the `ort`
//! feature), for the same model file the runtime embeds.
//!
//! The model file is exported to ONNX in memory (`derm_codegen::onnx`, or `--onnx FILE`) and
//! run by ONNX Runtime's CPU execution provider with every graph optimization, sequential
//! execution and `--intra-op-threads` intra-op threads (1 by default), one session per worker.
//! ONNX Runtime is loaded at run time from `ORT_DYLIB_PATH` (`scripts/setup.sh ort` installs
//! 1.31.1; `scripts/env.sh` sets the variable). Preprocessing, softmax, the timed loop, the
//! logit check against the embedded model and the report are `pi_bench::engine`'s.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use pi_bench::engine::{self, Engine, ModelSource, Network, OnnxArgs, ProtocolArgs};

/// Time a model file in ONNX Runtime with pi-bench's protocol.
#[derive(Debug, Parser)]
#[command(name = "pi-bench-ort", version, about)]
struct Args {
    #[command(flatten)]
    protocol: ProtocolArgs,
    #[command(flatten)]
    onnx: OnnxArgs,
}

/// One ONNX Runtime session and the input's shape.
struct OnnxRuntime {
    session: Session,
    shape: [usize; 4],
}

impl Network for OnnxRuntime {
    fn logits(&mut self, input: &[f32]) -> Result<Vec<f32>> {
        let x = TensorRef::from_array_view((self.shape, input))
            .map_err(|e| anyhow!("ONNX Runtime input: {e}"))?;
        let outputs = self
            .session
            .run(ort::inputs![x])
            .map_err(|e| anyhow!("ONNX Runtime: {e}"))?;
        let logits = outputs
            .values()
            .next()
            .context("ONNX Runtime: the graph has no output")?;
        let (_, data) = logits
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow!("ONNX Runtime output: {e}"))?;
        Ok(data.to_vec())
    }
}

/// The library `ORT_DYLIB_PATH` names; an error that says how to install it otherwise.
fn library() -> Result<PathBuf> {
    let path = match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => bail!(
            "ONNX Runtime is not installed: ORT_DYLIB_PATH is not set (run scripts/setup.sh ort, then source scripts/env.sh)"
        ),
    };
    if !path.is_file() {
        bail!(
            "ONNX Runtime library {} (ORT_DYLIB_PATH) does not exist (run scripts/setup.sh ort, then source scripts/env.sh)",
            path.display()
        );
    }
    Ok(path)
}

/// The library's version for the header: from its real file name (`libonnxruntime.so.1.31.1`,
/// what the wheel ships), else from the build-info string's `git-branch=rel-X`; with the
/// build's commit when the build info names it.
fn version(library: &Path, info: &str) -> String {
    let field = |key: &str| {
        info.split(',')
            .map(|kv| kv.trim().trim_start_matches("ORT Build Info:").trim())
            .find_map(|kv| kv.strip_prefix(key))
    };
    let file = std::fs::canonicalize(library).unwrap_or_else(|_| library.to_owned());
    let version = file
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libonnxruntime.so."))
        .filter(|v| v.contains('.'))
        .map(str::to_owned)
        .or_else(|| field("git-branch=rel-").map(str::to_owned))
        .unwrap_or_else(|| "(version unknown)".to_owned());
    match field("git-commit-id=") {
        Some(commit) => format!("{version} (commit {commit})"),
        None => version,
    }
}

fn session(env: &Environment, onnx: &[u8], intra: usize) -> Result<Session> {
    let fail = |e: ort::Error<_>| anyhow!("ONNX Runtime session: {e}");
    Session::builder(env)
        .map_err(|e| anyhow!("ONNX Runtime session: {e}"))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(fail)?
        .with_intra_threads(intra)
        .map_err(fail)?
        .with_inter_threads(1)
        .map_err(fail)?
        .with_parallel_execution(false)
        .map_err(fail)?
        .commit_from_memory(onnx)
        .map_err(|e| anyhow!("ONNX Runtime could not load the ONNX graph: {e}"))
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    let protocol = &args.protocol;
    protocol.validate()?;
    let model = ModelSource::read(&protocol.model)?;
    let (onnx, origin) = args.onnx.bytes(&model)?;
    let lib = library()?;
    let env = ort::init_from(&lib)
        .map_err(|e| anyhow!("loading ONNX Runtime: {e}"))?
        .with_name("pi-bench")
        .with_telemetry(false)
        .build()
        .map_err(|e| anyhow!("ONNX Runtime environment: {e}"))?;
    let shape = model.input_shape();
    let nets = engine::workers(protocol, || {
        Ok(OnnxRuntime {
            session: session(&env, &onnx, protocol.intra_op_threads)
                .with_context(|| format!("ONNX graph {origin}"))?,
            shape,
        })
    })?;
    let engine = Engine {
        name: "onnxruntime",
        description: format!(
            "ONNX Runtime {} via ort 2.0.0-rc.15 (CPU, all graph optimizations, sequential), ONNX {origin}",
            version(&lib, ort::info())
        ),
    };
    engine::run(protocol, &model, &engine, nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_the_file_name_or_the_build_info() {
        let info =
            "ORT Build Info: git-branch=rel-1.30.0, git-commit-id=6af1a93, build type=Release";
        let named = Path::new("/nonexistent/libonnxruntime.so.1.31.1");
        assert_eq!(version(named, info), "1.31.1 (commit 6af1a93)");
        let plain = Path::new("/nonexistent/libonnxruntime.so");
        assert_eq!(version(plain, info), "1.30.0 (commit 6af1a93)");
        assert_eq!(
            version(plain, "ORT Build Info: git-branch=HEAD"),
            "(version unknown)"
        );
    }
}
