//! BatchNorm folding and the student -> IR graph builder ([`model_file`]).
//!
//! Everything that turns a `tch` MobileNetV3 into a `derm_codegen::ir` model file lives
//! here: the fold of each BatchNorm into its convolution and the op list of the `export`
//! module docs. Tensors leave this file in f32; storage precision is `precision.rs`'s job.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use derm_codegen::ir::{self, Graph, ModelFile, Op};
use tch::{Kind, Tensor};

use super::{ExportOptions, PRECISION_KEY};
use crate::models::mobilenet_v3::{self, Classifier, ConvBnAct, SqueezeExcite};
use crate::student_file::Student;

/// Name of the graph's input value.
pub const INPUT_NAME: &str = "input";

fn to_f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    let t = t.to_kind(Kind::Float).contiguous().view(-1);
    Ok(Vec::<f32>::try_from(&t)?)
}

fn ir_tensor(t: &Tensor) -> Result<ir::Tensor> {
    let shape = t.size().iter().map(|&d| d as usize).collect();
    Ok(ir::Tensor::from_f32(shape, &to_f32_vec(t)?))
}

fn ir_act(a: mobilenet_v3::Activation) -> ir::Activation {
    match a {
        mobilenet_v3::Activation::None => ir::Activation::None,
        mobilenet_v3::Activation::Relu => ir::Activation::Relu,
        mobilenet_v3::Activation::Hardswish => ir::Activation::Hardswish,
    }
}

/// Folds a conv's BatchNorm (eval statistics) into `(weight, bias)` as f32 tensors.
pub fn fold_conv_bn(layer: &ConvBnAct) -> Result<(Tensor, Tensor)> {
    tch::no_grad(|| {
        let bn = &layer.bn;
        let (Some(gamma), Some(beta)) = (&bn.ws, &bn.bs) else {
            bail!("BatchNorm without affine parameters cannot be folded");
        };
        let d = |t: &Tensor| t.to_kind(Kind::Double);
        let scale = d(gamma) / (d(&bn.running_var) + mobilenet_v3::BN_EPS).sqrt();
        let w = d(&layer.conv.ws) * scale.view([-1, 1, 1, 1]);
        let b = d(beta) - d(&bn.running_mean) * &scale;
        Ok((w.to_kind(Kind::Float), b.to_kind(Kind::Float)))
    })
}

struct Builder {
    ops: Vec<Op>,
    tensors: BTreeMap<String, ir::Tensor>,
    last: String,
}

impl Builder {
    fn conv(&mut self, name: &str, layer: &ConvBnAct) -> Result<String> {
        let (w, b) = fold_conv_bn(layer)?;
        let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
        self.tensors.insert(wn.clone(), ir_tensor(&w)?);
        self.tensors.insert(bn.clone(), ir_tensor(&b)?);
        let k = layer.kernel as usize;
        let (s, p) = (layer.stride as usize, layer.padding as usize);
        self.ops.push(Op::Conv2d(ir::Conv2d {
            name: name.to_owned(),
            input: self.last.clone(),
            output: name.to_owned(),
            weight: wn,
            bias: bn,
            in_channels: layer.cin as usize,
            out_channels: layer.cout as usize,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            groups: layer.groups as usize,
            activation: ir_act(layer.act),
        }));
        self.last = name.to_owned();
        Ok(self.last.clone())
    }

    fn se(&mut self, name: &str, se: &SqueezeExcite) -> Result<()> {
        let mut names = Vec::new();
        for (fc, conv) in [("fc1", &se.fc1), ("fc2", &se.fc2)] {
            let wn = format!("{name}.{fc}.weight");
            let bn = format!("{name}.{fc}.bias");
            self.tensors.insert(wn.clone(), ir_tensor(&conv.ws)?);
            let bias = conv
                .bs
                .as_ref()
                .with_context(|| format!("{name}.{fc} has no bias"))?;
            self.tensors.insert(bn.clone(), ir_tensor(bias)?);
            names.push((wn, bn));
        }
        let [(w1, b1), (w2, b2)] = <[_; 2]>::try_from(names).expect("two fcs");
        self.ops.push(Op::SqueezeExcite(ir::SqueezeExcite {
            name: name.to_owned(),
            input: self.last.clone(),
            output: name.to_owned(),
            channels: se.channels as usize,
            squeeze_channels: se.squeeze as usize,
            fc1_weight: w1,
            fc1_bias: b1,
            fc2_weight: w2,
            fc2_bias: b2,
        }));
        self.last = name.to_owned();
        Ok(())
    }

    fn linear(&mut self, name: &str, fc: &tch::nn::Linear, act: ir::Activation) -> Result<()> {
        let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
        let size = fc.ws.size();
        self.tensors.insert(wn.clone(), ir_tensor(&fc.ws)?);
        let bias = fc
            .bs
            .as_ref()
            .with_context(|| format!("{name} has no bias"))?;
        self.tensors.insert(bn.clone(), ir_tensor(bias)?);
        self.ops.push(Op::Linear(ir::Linear {
            name: name.to_owned(),
            input: self.last.clone(),
            output: name.to_owned(),
            weight: wn,
            bias: bn,
            in_features: size[1] as usize,
            out_features: size[0] as usize,
            activation: act,
        }));
        self.last = name.to_owned();
        Ok(())
    }
}

/// Builds the model file of a student: BatchNorm folded, op list as in the module docs,
/// preprocessing, classes and groups from its metadata, and provenance (the student's,
/// `precision`, then `opts.provenance` over it). Tensors are f32 here whatever
/// `opts.precision` says ([`store_precision`](super::store_precision) converts them), so
/// the fold can be checked on its own. The result has passed `derm_codegen`'s validation.
pub fn model_file(student: &Student, opts: &ExportOptions) -> Result<ModelFile> {
    let m = &student.model;
    let meta = &student.meta;
    let mut b = Builder {
        ops: Vec::new(),
        tensors: BTreeMap::new(),
        last: INPUT_NAME.to_owned(),
    };
    b.conv("features.0.0", &m.stem)?;
    for (i, block) in m.blocks.iter().enumerate() {
        let n = i + 1;
        let block_input = b.last.clone();
        let mut j = 0;
        if let Some(e) = &block.expand {
            b.conv(&format!("features.{n}.block.{j}.0"), e)?;
            j += 1;
        }
        b.conv(&format!("features.{n}.block.{j}.0"), &block.depthwise)?;
        j += 1;
        if let Some(se) = &block.se {
            b.se(&format!("features.{n}.block.{j}"), se)?;
            j += 1;
        }
        let projected = b.conv(&format!("features.{n}.block.{j}.0"), &block.project)?;
        if block.cfg.has_residual() {
            let name = format!("features.{n}.add");
            b.ops.push(Op::Add(ir::Add {
                name: name.clone(),
                inputs: [projected, block_input],
                output: name.clone(),
            }));
            b.last = name;
        }
    }
    b.conv(&format!("features.{}.0", m.blocks.len() + 1), &m.last_conv)?;
    b.ops.push(Op::GlobalAvgPool(ir::GlobalAvgPool {
        name: "avgpool".into(),
        input: b.last.clone(),
        output: "avgpool".into(),
    }));
    b.last = "avgpool".into();
    match &m.classifier {
        Classifier::Paper { fc } => b.linear("classifier.0", fc, ir::Activation::None)?,
        Classifier::Torchvision { fc1, fc2, .. } => {
            b.linear("classifier.0", fc1, ir::Activation::Hardswish)?;
            b.linear("classifier.3", fc2, ir::Activation::None)?;
        }
    }
    let [h, w] = meta.input_size.map(|d| d as usize);
    let mut provenance = match serde_json::to_value(&meta.provenance)? {
        serde_json::Value::Object(o) => o,
        _ => serde_json::Map::new(),
    };
    provenance.insert(
        "student".into(),
        serde_json::json!({
            "arch": format!("mobilenet_v3_{}", meta.arch),
            "head": meta.head.name(),
            "batchnorm": "folded (eval running statistics)",
        }),
    );
    provenance.insert(
        PRECISION_KEY.into(),
        serde_json::Value::String(opts.precision.name().into()),
    );
    provenance.extend(opts.provenance.clone());
    let graph = Graph {
        format: ir::FORMAT_NAME.into(),
        version: ir::MIN_FORMAT_VERSION,
        input: ir::InputSpec {
            name: INPUT_NAME.into(),
            shape: [1, 3, h, w],
            layout: ir::Layout::Nchw,
        },
        output: b.last.clone(),
        preprocess: ir::Preprocess {
            resize: [h, w],
            // The part of the photo the training tiles held (`derm-train prepare --crop`).
            crop: meta.crop,
            mean: meta.mean,
            std: meta.std,
        },
        classes: meta.class_names.clone(),
        groups: meta.group_names.clone(),
        ops: b.ops,
        tensors: BTreeMap::new(),
        provenance,
        quantization: None,
    };
    ModelFile::new(graph, b.tensors).map_err(|e| anyhow::anyhow!("exported graph is invalid: {e}"))
}
