//! `pi-bench-tract`: the latency protocol of `pi-bench` on tract (built with the `tract`
//! feature), for the same model file the runtime embeds.
//!
//! The model file is exported to ONNX in memory (`derm_codegen::onnx`, or `--onnx FILE`),
//! loaded by tract-onnx with the input fixed to `[1, 3, H, W]`, decluttered and optimized once,
//! and run with one plan state per worker, reused across images. tract runs one thread per
//! image here (its multithreaded matrix products are behind a feature this build leaves off),
//! so `--intra-op-threads` must be 1. Preprocessing, softmax, the timed loop, the logit check
//! against the embedded model and the report are `pi_bench::engine`'s.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use pi_bench::engine::{self, Engine, ModelSource, Network, OnnxArgs, ProtocolArgs};
use tract_onnx::prelude::*;

/// Time a model file in tract with pi-bench's protocol.
#[derive(Debug, Parser)]
#[command(name = "pi-bench-tract", version, about)]
struct Args {
    #[command(flatten)]
    protocol: ProtocolArgs,
    #[command(flatten)]
    onnx: OnnxArgs,
}

/// One worker's run state of the shared plan, and the input's shape.
struct Tract {
    state: TypedSimpleState,
    shape: [usize; 4],
}

impl Network for Tract {
    fn logits(&mut self, input: &[f32]) -> Result<Vec<f32>> {
        let x = Tensor::from_shape(&self.shape, input).map_err(|e| anyhow!("tract input: {e}"))?;
        let outputs = self
            .state
            .run(tvec!(x.into()))
            .map_err(|e| anyhow!("tract: {e:#}"))?;
        let logits = outputs.first().context("tract: the graph has no output")?;
        let view = logits
            .try_as_plain_ram()
            .map_err(|e| anyhow!("tract output: {e}"))?;
        Ok(view
            .as_slice::<f32>()
            .map_err(|e| anyhow!("tract output: {e}"))?
            .to_vec())
    }
}

/// Loads, types and optimizes the ONNX graph for a fixed `[1, 3, H, W]` input.
fn plan(onnx: &[u8], shape: [usize; 4]) -> Result<Arc<TypedRunnableModel>> {
    tract_onnx::onnx()
        .model_for_read(&mut &onnx[..])
        .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| anyhow!("tract could not load the ONNX graph: {e:#}"))
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    let protocol = &args.protocol;
    protocol.validate()?;
    if protocol.intra_op_threads != 1 {
        bail!(
            "--intra-op-threads {}: tract runs one thread per image in this build; use --threads for more workers",
            protocol.intra_op_threads
        );
    }
    let model = ModelSource::read(&protocol.model)?;
    let (onnx, origin) = args.onnx.bytes(&model)?;
    let shape = model.input_shape();
    // The optimized plan is immutable and shared; each worker keeps one run state, reused
    // from image to image as a serving loop would.
    let shared = plan(&onnx, shape).with_context(|| format!("ONNX graph {origin}"))?;
    let nets = engine::workers(protocol, || {
        Ok(Tract {
            state: shared
                .spawn()
                .map_err(|e| anyhow!("tract run state: {e:#}"))?,
            shape,
        })
    })?;
    let engine = Engine {
        name: "tract",
        description: format!("tract-onnx 0.23.9 (optimized plan), ONNX {origin}"),
    };
    engine::run(protocol, &model, &engine, nets)
}
