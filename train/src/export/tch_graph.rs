//! [`TchGraph`]: an interpreter of the IR graph in tch.
//!
//! It runs a model file's ops with libtorch, so the same folded network serves as the
//! per-layer golden reference (`golden.rs`) and as pi-bench's libtorch baseline.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use derm_codegen::ir::{self, Graph, ModelFile, Op};
use tch::{Kind, Tensor};

/// Where an interpretation of the graph differs from plain f32: the weights it reads, and
/// what happens to each value the int8 model would round (the input, every op's output,
/// hardswish pre-activations, squeeze-excite's pooled and hidden vectors). [`TchGraph`]
/// changes nothing; quantization-aware training (`qat.rs`) fake-quantizes them.
pub(crate) trait Values {
    /// The weight tensor `name` as the convolution or linear layer uses it.
    fn weight(&self, name: &str) -> Result<Tensor>;
    /// The bias tensor `name`.
    fn bias(&self, name: &str) -> Result<Tensor>;
    /// A value the int8 model rounds, under its `quant::activation_keys` key.
    fn value(&self, x: Tensor, key: &str) -> Result<Tensor>;
}

impl Values for TchGraph {
    fn weight(&self, name: &str) -> Result<Tensor> {
        self.w(name).map(Tensor::shallow_clone)
    }

    fn bias(&self, name: &str) -> Result<Tensor> {
        self.w(name).map(Tensor::shallow_clone)
    }

    fn value(&self, x: Tensor, _key: &str) -> Result<Tensor> {
        Ok(x)
    }
}

/// Runs the ops of `graph` on a batch `[N, 3, H, W]` with the weights and value hooks of
/// `v`, and returns every op's output in execution order (the logits last). The one
/// interpreter of the IR in tch: the float golden reference and the fake-quantized
/// training graph differ only in `v`.
pub(crate) fn walk(
    graph: &Graph,
    input: &Tensor,
    v: &impl Values,
) -> Result<Vec<(String, Tensor)>> {
    use derm_codegen::quant;
    let act = |name: &str, y: Tensor, a: ir::Activation| -> Result<Tensor> {
        Ok(match a {
            ir::Activation::None => y,
            ir::Activation::Relu => y.relu(),
            ir::Activation::Hardswish => v.value(y, &quant::pre_activation_key(name))?.hardswish(),
        })
    };
    let mut values: BTreeMap<&str, Tensor> = BTreeMap::new();
    values.insert(
        graph.input.name.as_str(),
        v.value(input.shallow_clone(), &graph.input.name)?,
    );
    let get = |values: &BTreeMap<&str, Tensor>, n: &str| -> Result<Tensor> {
        values
            .get(n)
            .map(Tensor::shallow_clone)
            .with_context(|| format!("value {n} is read before it is written"))
    };
    let mut out = Vec::with_capacity(graph.ops.len());
    for op in &graph.ops {
        let y = match op {
            Op::Conv2d(c) => {
                let x = get(&values, &c.input)?;
                let y = x.conv2d(
                    &v.weight(&c.weight)?,
                    Some(v.bias(&c.bias)?),
                    [c.stride[0] as i64, c.stride[1] as i64],
                    [c.padding[0] as i64, c.padding[1] as i64],
                    [1, 1],
                    c.groups as i64,
                );
                act(&c.name, y, c.activation)?
            }
            Op::SqueezeExcite(s) => {
                let x = get(&values, &s.input)?;
                let (c, q) = (s.channels as i64, s.squeeze_channels as i64);
                let pooled = x.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
                let pooled = v.value(pooled, &quant::pooled_key(&s.name))?;
                let h = pooled
                    .linear(
                        &v.weight(&s.fc1_weight)?.view([q, c]),
                        Some(v.bias(&s.fc1_bias)?),
                    )
                    .relu();
                let h = v.value(h, &quant::hidden_key(&s.name))?;
                // The gate stays float: the int8 kernels compute it in Q15.
                let gate = h
                    .linear(
                        &v.weight(&s.fc2_weight)?.view([c, q]),
                        Some(v.bias(&s.fc2_bias)?),
                    )
                    .hardsigmoid();
                x * gate.view([-1, c, 1, 1])
            }
            Op::Add(a) => get(&values, &a.inputs[0])? + get(&values, &a.inputs[1])?,
            Op::GlobalAvgPool(p) => {
                get(&values, &p.input)?.mean_dim([2i64, 3].as_slice(), false, Kind::Float)
            }
            Op::Linear(l) => {
                let x = get(&values, &l.input)?;
                let y = x.linear(&v.weight(&l.weight)?, Some(v.bias(&l.bias)?));
                act(&l.name, y, l.activation)?
            }
        };
        // The graph output stays f32 (the int8 model's logits are f32).
        let y = if op.output() == graph.output {
            y
        } else {
            v.value(y, op.output())?
        };
        values.insert(op.output(), y.shallow_clone());
        out.push((op.name().to_owned(), y));
    }
    Ok(out)
}

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

    /// The graph this interpreter runs.
    pub(crate) fn graph(&self) -> &Graph {
        &self.graph
    }

    fn w(&self, name: &str) -> Result<&Tensor> {
        self.weights
            .get(name)
            .with_context(|| format!("tensor {name} is not in the model file"))
    }

    /// Runs the ops on a batch `[N, 3, H, W]` (no grad) and returns every op's output in
    /// execution order (`[N, C, H, W]` or `[N, C]`).
    pub fn layers(&self, input: &Tensor) -> Result<Vec<(String, Tensor)>> {
        tch::no_grad(|| walk(&self.graph, input, self))
    }

    /// The logits `[N, C]` of a batch `[N, 3, H, W]` (no grad).
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let mut layers = self.layers(input)?;
        Ok(layers.pop().context("the graph has no ops")?.1)
    }
}
