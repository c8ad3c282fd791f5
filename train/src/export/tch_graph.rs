//! [`TchGraph`]: an interpreter of the IR graph in tch.
//!
//! It runs a model file's ops with libtorch, so the same folded network serves as the
//! per-layer golden reference (`golden.rs`) and as pi-bench's libtorch baseline.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use derm_codegen::ir::{self, Graph, ModelFile, Op};
use tch::{Kind, Tensor};

/// A model file's network in tch, weights materialized once: the folded graph that the
/// runtime runs, executed by libtorch (the baseline) or used to compute per-layer goldens.
#[derive(Debug)]
pub struct TchGraph {
    graph: Graph,
    weights: BTreeMap<String, Tensor>,
}

impl TchGraph {
    /// Converts every tensor of `model` (f16 and int8 dequantized to f32).
    pub fn new(model: &ModelFile) -> Result<Self> {
        let mut weights = BTreeMap::new();
        for op in &model.graph.ops {
            for name in op.tensor_names() {
                let v = model.tensor_f32(name)?;
                let shape: Vec<i64> = model.tensors[name]
                    .shape
                    .iter()
                    .map(|&d| d as i64)
                    .collect();
                weights.insert(
                    name.to_owned(),
                    Tensor::from_slice(&v).view(shape.as_slice()),
                );
            }
        }
        Ok(Self {
            graph: model.graph.clone(),
            weights,
        })
    }

    fn w(&self, name: &str) -> Result<&Tensor> {
        self.weights
            .get(name)
            .with_context(|| format!("tensor {name} is not in the model file"))
    }

    /// Runs the ops on a batch `[N, 3, H, W]` (no grad) and returns every op's output in
    /// execution order (`[N, C, H, W]` or `[N, C]`).
    pub fn layers(&self, input: &Tensor) -> Result<Vec<(String, Tensor)>> {
        let act = |x: Tensor, a: ir::Activation| match a {
            ir::Activation::None => x,
            ir::Activation::Relu => x.relu(),
            ir::Activation::Hardswish => x.hardswish(),
        };
        let mut values: BTreeMap<&str, Tensor> = BTreeMap::new();
        values.insert(self.graph.input.name.as_str(), input.shallow_clone());
        let get = |values: &BTreeMap<&str, Tensor>, n: &str| -> Result<Tensor> {
            values
                .get(n)
                .map(Tensor::shallow_clone)
                .with_context(|| format!("value {n} is read before it is written"))
        };
        let mut out = Vec::with_capacity(self.graph.ops.len());
        tch::no_grad(|| -> Result<()> {
            for op in &self.graph.ops {
                let y = match op {
                    Op::Conv2d(c) => {
                        let x = get(&values, &c.input)?;
                        let y = x.conv2d(
                            self.w(&c.weight)?,
                            Some(self.w(&c.bias)?),
                            [c.stride[0] as i64, c.stride[1] as i64],
                            [c.padding[0] as i64, c.padding[1] as i64],
                            [1, 1],
                            c.groups as i64,
                        );
                        act(y, c.activation)
                    }
                    Op::SqueezeExcite(s) => {
                        let x = get(&values, &s.input)?;
                        let (c, q) = (s.channels as i64, s.squeeze_channels as i64);
                        let pooled = x.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
                        let h = pooled
                            .linear(
                                &self.w(&s.fc1_weight)?.view([q, c]),
                                Some(self.w(&s.fc1_bias)?),
                            )
                            .relu();
                        let g = h
                            .linear(
                                &self.w(&s.fc2_weight)?.view([c, q]),
                                Some(self.w(&s.fc2_bias)?),
                            )
                            .hardsigmoid();
                        x * g.view([-1, c, 1, 1])
                    }
                    Op::Add(a) => get(&values, &a.inputs[0])? + get(&values, &a.inputs[1])?,
                    Op::GlobalAvgPool(p) => {
                        get(&values, &p.input)?.mean_dim([2i64, 3].as_slice(), false, Kind::Float)
                    }
                    Op::Linear(l) => {
                        let x = get(&values, &l.input)?;
                        act(
                            x.linear(self.w(&l.weight)?, Some(self.w(&l.bias)?)),
                            l.activation,
                        )
                    }
                };
                values.insert(op.output(), y.shallow_clone());
                out.push((op.name().to_owned(), y));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The logits `[N, C]` of a batch `[N, 3, H, W]` (no grad).
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let mut layers = self.layers(input)?;
        Ok(layers.pop().context("the graph has no ops")?.1)
    }
}
