//! `pi-bench-libtorch`: the latency protocol of `pi-bench` on libtorch (built with the
//! `libtorch` feature), for the same model file the runtime embeds.
//!
//! The model file's folded graph runs in tch (eval semantics, no grad, one inter-op thread,
//! `--intra-op-threads` intra-op threads, 1 by default) with its weights materialized once per
//! worker. Preprocessing, softmax, the timed loop, the logit check against the embedded model
//! and the report are `pi_bench::engine`'s, shared with the other engines.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use derm_train::export::TchGraph;
use pi_bench::engine::{self, Engine, ModelSource, Network, ProtocolArgs};
use tch::Tensor;

/// Time a model file in libtorch with pi-bench's protocol.
#[derive(Debug, Parser)]
#[command(name = "pi-bench-libtorch", version, about)]
struct Args {
    #[command(flatten)]
    protocol: ProtocolArgs,
}

/// The folded graph in tch, and the input's shape.
struct Libtorch {
    graph: TchGraph,
    shape: [i64; 4],
}

impl Network for Libtorch {
    fn logits(&mut self, input: &[f32]) -> Result<Vec<f32>> {
        let x = Tensor::from_slice(input).view(self.shape);
        let logits = self.graph.forward(&x)?;
        Ok(Vec::<f32>::try_from(logits.view(-1))?)
    }
}

fn main() -> Result<ExitCode> {
    let args = Args::parse().protocol;
    args.validate()?;
    let model = ModelSource::read(&args.model)?;
    // Global in libtorch: every worker's graph runs with these.
    tch::set_num_threads(i32::try_from(args.intra_op_threads)?);
    tch::set_num_interop_threads(1);
    let shape = model.input_shape().map(|d| d as i64);
    let nets = engine::workers(&args, || {
        Ok(Libtorch {
            graph: TchGraph::new(&model.file)?,
            shape,
        })
    })?;
    let engine = Engine {
        name: "libtorch",
        // tch pins its libtorch; the version is a build-time fact of the binding.
        description: "libtorch 2.13 via tch 0.26 (folded graph, eval, no grad)".into(),
    };
    engine::run(&args, &model, &engine, nets)
}
