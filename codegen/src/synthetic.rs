//! Seeded synthetic models with random weights, in pure Rust: a
//! MobileNetV3-Small-shaped graph for tests and benchmarks that do not need
//! a trained network (or libtorch).
//!
//! Names follow torchvision's `mobilenet_v3_small` (`features.N.block.M...`)
//! so a synthetic file looks like an export with BatchNorm already folded.

use std::collections::BTreeMap;

use crate::ir::{
    Activation, Add, Conv2d, Crop, FORMAT_NAME, GlobalAvgPool, Graph, InputSpec, IrError, Layout,
    Linear, MIN_FORMAT_VERSION, ModelFile, Op, Preprocess, SqueezeExcite, Tensor,
};

/// One inverted-residual block (torchvision's `InvertedResidualConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Expanded channels.
    pub expand: usize,
    /// Output channels.
    pub out: usize,
    /// Whether the block has squeeze-and-excite.
    pub se: bool,
    /// Activation of the expand and depthwise convs.
    pub act: Activation,
    /// Depthwise stride.
    pub stride: usize,
}

/// What to build.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    /// Square input size.
    pub input_size: usize,
    /// Stem output channels (3x3 stride-2 conv, hardswish).
    pub stem: usize,
    /// The blocks in order.
    pub blocks: Vec<Block>,
    /// Channels of the last 1x1 conv before pooling.
    pub last_channels: usize,
    /// Class names; the head is one Linear (the paper's head).
    pub classes: Vec<String>,
    /// RNG seed; the same spec and seed give the same bytes.
    pub seed: u64,
}

const fn blk(
    kernel: usize,
    expand: usize,
    out: usize,
    se: bool,
    act: Activation,
    stride: usize,
) -> Block {
    Block {
        kernel,
        expand,
        out,
        se,
        act,
        stride,
    }
}

/// ISIC/HAM10000-style diagnosis names used by the default synthetic model.
pub const DEFAULT_CLASSES: [&str; 6] = ["akiec", "bcc", "bkl", "df", "mel", "nv"];

impl SyntheticSpec {
    /// torchvision's `mobilenet_v3_small` at 224x224 with the paper's head
    /// (pooling, then one `Linear(576 -> classes)`).
    pub fn mobilenet_v3_small(classes: &[&str], seed: u64) -> Self {
        use Activation::{Hardswish as HS, Relu as RE};
        Self {
            input_size: 224,
            stem: 16,
            blocks: vec![
                blk(3, 16, 16, true, RE, 2),
                blk(3, 72, 24, false, RE, 2),
                blk(3, 88, 24, false, RE, 1),
                blk(5, 96, 40, true, HS, 2),
                blk(5, 240, 40, true, HS, 1),
                blk(5, 240, 40, true, HS, 1),
                blk(5, 120, 48, true, HS, 1),
                blk(5, 144, 48, true, HS, 1),
                blk(5, 288, 96, true, HS, 2),
                blk(5, 576, 96, true, HS, 1),
                blk(5, 576, 96, true, HS, 1),
            ],
            last_channels: 576,
            classes: classes.iter().map(|s| (*s).to_owned()).collect(),
            seed,
        }
    }

    /// A small network (32x32 input, four blocks) with every op kind,
    /// odd channel counts (tails of the 8-wide weight panels), both kernel
    /// sizes, both strides and residual adds: fast enough for any test.
    pub fn tiny(seed: u64) -> Self {
        use Activation::{Hardswish as HS, Relu as RE};
        Self {
            input_size: 32,
            stem: 8,
            blocks: vec![
                blk(3, 8, 8, true, RE, 2),
                blk(3, 36, 12, false, RE, 2),
                blk(5, 44, 12, true, HS, 1),
                blk(5, 60, 20, true, HS, 2),
            ],
            last_channels: 52,
            classes: vec!["a".into(), "b".into(), "c".into()],
            seed,
        }
    }

    /// Builds the model file.
    pub fn build(&self) -> Result<ModelFile, IrError> {
        let mut b = Builder {
            rng: SplitMix64(self.seed),
            ops: Vec::new(),
            tensors: BTreeMap::new(),
        };
        let mut x = "input".to_owned();
        let mut c = 3;
        x = b.conv(
            "features.0.0",
            &x,
            c,
            self.stem,
            3,
            2,
            1,
            Activation::Hardswish,
        );
        c = self.stem;
        for (i, blk) in self.blocks.iter().enumerate() {
            let p = format!("features.{}.block", i + 1);
            let block_in = x.clone();
            let mut j = 0;
            if blk.expand != c {
                x = b.conv(&format!("{p}.{j}.0"), &x, c, blk.expand, 1, 1, 1, blk.act);
                j += 1;
            }
            x = b.conv(
                &format!("{p}.{j}.0"),
                &x,
                blk.expand,
                blk.expand,
                blk.kernel,
                blk.stride,
                blk.expand,
                blk.act,
            );
            j += 1;
            if blk.se {
                x = b.se(
                    &format!("{p}.{j}"),
                    &x,
                    blk.expand,
                    make_divisible(blk.expand / 4, 8),
                );
                j += 1;
            }
            x = b.conv(
                &format!("{p}.{j}.0"),
                &x,
                blk.expand,
                blk.out,
                1,
                1,
                1,
                Activation::None,
            );
            if blk.stride == 1 && c == blk.out {
                let name = format!("features.{}.add", i + 1);
                b.ops.push(Op::Add(Add {
                    name: name.clone(),
                    inputs: [x, block_in],
                    output: name.clone(),
                }));
                x = name;
            }
            c = blk.out;
        }
        let last = format!("features.{}.0", self.blocks.len() + 1);
        x = b.conv(
            &last,
            &x,
            c,
            self.last_channels,
            1,
            1,
            1,
            Activation::Hardswish,
        );
        b.ops.push(Op::GlobalAvgPool(GlobalAvgPool {
            name: "avgpool".into(),
            input: x,
            output: "avgpool".into(),
        }));
        let n = self.classes.len();
        let k = self.last_channels;
        b.weight("classifier.0.weight", vec![n, k], k);
        b.bias("classifier.0.bias", n);
        b.ops.push(Op::Linear(Linear {
            name: "classifier.0".into(),
            input: "avgpool".into(),
            output: "logits".into(),
            weight: "classifier.0.weight".into(),
            bias: "classifier.0.bias".into(),
            in_features: k,
            out_features: n,
            activation: Activation::None,
        }));
        let mut provenance = serde_json::Map::new();
        provenance.insert("synthetic".into(), true.into());
        provenance.insert("generator".into(), "derm_codegen::synthetic".into());
        provenance.insert("seed".into(), self.seed.into());
        provenance.insert(
            "note".into(),
            "random weights, not trained: for tests and benchmarks only".into(),
        );
        let s = self.input_size;
        let graph = Graph {
            format: FORMAT_NAME.into(),
            version: MIN_FORMAT_VERSION,
            input: InputSpec {
                name: "input".into(),
                shape: [1, 3, s, s],
                layout: Layout::Nchw,
            },
            output: "logits".into(),
            preprocess: Preprocess {
                resize: [s, s],
                crop: Crop::Centre,
                mean: [0.5; 3],
                std: [0.5; 3],
            },
            classes: self.classes.clone(),
            groups: vec![],
            ops: b.ops,
            tensors: BTreeMap::new(),
            provenance,
            quantization: None,
        };
        ModelFile::new(graph, b.tensors)
    }
}

/// The tiny model with one extra branch: the first squeeze-excite's input is
/// also added to its output, so that input stays alive after the SE and the
/// in-place SE kernel must work on a copy. No MobileNetV3 has this shape;
/// it exists so the copy path of the code generator is exercised.
pub fn tiny_branching(seed: u64) -> Result<ModelFile, IrError> {
    let m = SyntheticSpec::tiny(seed).build()?;
    let mut g = m.graph;
    let se = g
        .ops
        .iter()
        .position(|o| matches!(o, Op::SqueezeExcite(_)))
        .ok_or_else(|| IrError::BadField {
            field: "ops".into(),
            reason: "the tiny model has no squeeze-excite".into(),
        })?;
    let (se_in, se_out) = match &g.ops[se] {
        Op::SqueezeExcite(s) => (s.input.clone(), s.output.clone()),
        _ => unreachable!("position() matched a squeeze-excite"),
    };
    let branch = format!("{se_out}.branch");
    for op in &mut g.ops[se + 1..] {
        if let Op::Conv2d(c) = op
            && c.input == se_out
        {
            c.input = branch.clone();
        }
    }
    g.ops.insert(
        se + 1,
        Op::Add(Add {
            name: branch.clone(),
            inputs: [se_out, se_in],
            output: branch,
        }),
    );
    ModelFile::new(g, m.tensors)
}

/// Smooth, image-like inputs in the normalized range for `model`, from a
/// seed: a few frequencies and a phase per seed, so different seeds come from
/// one distribution (calibration and test inputs of synthetic int8 models).
pub fn smooth_input(model: &ModelFile, seed: u64) -> Vec<f32> {
    let [_, c, h, w] = model.graph.input.shape;
    let (a, b, phase) = (
        (seed % 5) as f32 * 3.0 + 1.0,
        (seed % 3) as f32 * 4.0 + 2.0,
        seed as f32 * 0.7,
    );
    (0..c * h * w)
        .map(|i| {
            let (ch, y, x) = (i / (h * w), (i / w) % h, i % w);
            let t = a * y as f32 / h as f32 + b * x as f32 / w as f32 + ch as f32 * 0.3 + phase;
            t.sin() * 1.5
        })
        .collect()
}

/// `model` quantized to int8 by post-training quantization (min/max ranges)
/// calibrated on `n` [`smooth_input`]s (seeds `0..n`).
pub fn int8_of(model: &ModelFile, n: u64) -> Result<ModelFile, IrError> {
    int8_with(model, n, &[], &[])
}

/// [`int8_of`] with the hardswish of every op that has one computed in `f32`
/// (`quantization.float_hardswish`, format version 3): a fixture that takes the
/// float epilogue through every int8 kernel kind.
pub fn int8_float_hardswish_of(model: &ModelFile, n: u64) -> Result<ModelFile, IrError> {
    int8_with(model, n, &hardswish_ops(model), &[])
}

/// [`int8_float_hardswish_of`] with every feature map that depthwise convolutions read
/// on one grid scale per channel (`quantization.channel_scales`, format version 4):
/// the per-channel multipliers and inverse scales through the kernels that write and
/// read such maps.
pub fn int8_channel_grids_of(model: &ModelFile, n: u64) -> Result<ModelFile, IrError> {
    let grids = crate::quant::depthwise_inputs(&model.graph);
    int8_with(model, n, &hardswish_ops(model), &grids)
}

/// The ops of `model` with a hardswish.
fn hardswish_ops(model: &ModelFile) -> Vec<String> {
    model
        .graph
        .ops
        .iter()
        .filter(|op| match op {
            Op::Conv2d(c) => c.activation == Activation::Hardswish,
            Op::Linear(l) => l.activation == Activation::Hardswish,
            _ => false,
        })
        .map(|op| op.name().to_owned())
        .collect()
}

fn int8_with(
    model: &ModelFile,
    n: u64,
    float_hardswish: &[String],
    channel_grids: &[String],
) -> Result<ModelFile, IrError> {
    let mut cal = crate::quant::ptq::Calibration::new();
    for s in 0..n {
        cal.observe(model, &smooth_input(model, s))?;
    }
    crate::quant::ptq::quantize_with(
        model,
        &cal,
        crate::quant::ptq::RangeMethod::MinMax,
        float_hardswish,
        channel_grids,
    )
}

/// torchvision's `_make_divisible`: round to a multiple of `d`, never more
/// than 10% below `v`.
fn make_divisible(v: usize, d: usize) -> usize {
    let mut n = d.max((v + d / 2) / d * d);
    if (n as f64) < 0.9 * v as f64 {
        n += d;
    }
    n
}

struct Builder {
    rng: SplitMix64,
    ops: Vec<Op>,
    tensors: BTreeMap<String, Tensor>,
}

impl Builder {
    /// He-uniform weights keep activations O(1) through the depth of the
    /// network, so logits are neither vanishing nor saturated.
    fn weight(&mut self, name: &str, shape: Vec<usize>, fan_in: usize) {
        let a = (6.0 / fan_in as f64).sqrt() as f32;
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.rng.uniform() * a).collect();
        self.tensors
            .insert(name.to_owned(), Tensor::from_f32(shape, &v));
    }

    fn bias(&mut self, name: &str, n: usize) {
        let v: Vec<f32> = (0..n).map(|_| self.rng.uniform() * 0.1).collect();
        self.tensors
            .insert(name.to_owned(), Tensor::from_f32(vec![n], &v));
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        input: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
        activation: Activation,
    ) -> String {
        let (w, b) = (format!("{name}.weight"), format!("{name}.bias"));
        self.weight(&w, vec![cout, cin / groups, k, k], cin / groups * k * k);
        self.bias(&b, cout);
        self.ops.push(Op::Conv2d(Conv2d {
            name: name.to_owned(),
            input: input.to_owned(),
            output: name.to_owned(),
            weight: w,
            bias: b,
            in_channels: cin,
            out_channels: cout,
            kernel: [k, k],
            stride: [stride, stride],
            padding: [(k - 1) / 2, (k - 1) / 2],
            groups,
            activation,
        }));
        name.to_owned()
    }

    fn se(&mut self, name: &str, input: &str, c: usize, q: usize) -> String {
        let t = |s: &str| format!("{name}.{s}");
        self.weight(&t("fc1.weight"), vec![q, c, 1, 1], c);
        self.bias(&t("fc1.bias"), q);
        self.weight(&t("fc2.weight"), vec![c, q, 1, 1], q);
        self.bias(&t("fc2.bias"), c);
        self.ops.push(Op::SqueezeExcite(SqueezeExcite {
            name: name.to_owned(),
            input: input.to_owned(),
            output: name.to_owned(),
            channels: c,
            squeeze_channels: q,
            fc1_weight: t("fc1.weight"),
            fc1_bias: t("fc1.bias"),
            fc2_weight: t("fc2.weight"),
            fc2_bias: t("fc2.bias"),
        }));
        name.to_owned()
    }
}

/// SplitMix64: tiny, seedable and identical on every platform.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_matches_torchvision() {
        // Squeeze widths of torchvision's mobilenet_v3_small.
        let got: Vec<usize> = [16, 96, 240, 120, 144, 288, 576]
            .iter()
            .map(|&e| make_divisible(e / 4, 8))
            .collect();
        assert_eq!(got, [8, 24, 64, 32, 40, 72, 144]);
    }

    #[test]
    fn small_has_torchvision_parameter_count() {
        let m = SyntheticSpec::mobilenet_v3_small(&DEFAULT_CLASSES, 1)
            .build()
            .unwrap();
        let params: usize = m.tensors.values().map(|t| t.numel().unwrap()).sum();
        // torchvision mobilenet_v3_small has 927,008 parameters in `features`
        // (BatchNorm weights+biases count 2 per channel and fold into one
        // bias here, so subtract one per conv output channel that has BN),
        // plus the paper head 576*6 + 6.
        let features_folded = 927_008 - bn_channels();
        assert_eq!(params, features_folded + 576 * 6 + 6);
    }

    /// Output channels of every BatchNorm in torchvision's small features.
    fn bn_channels() -> usize {
        let spec = SyntheticSpec::mobilenet_v3_small(&DEFAULT_CLASSES, 1);
        let mut c = spec.stem;
        let mut n = spec.stem;
        for b in &spec.blocks {
            if b.expand != c {
                n += b.expand;
            }
            n += b.expand + b.out;
            c = b.out;
        }
        n + spec.last_channels
    }

    #[test]
    fn same_seed_same_bytes() {
        let a = SyntheticSpec::tiny(7).build().unwrap().to_bytes().unwrap();
        let b = SyntheticSpec::tiny(7).build().unwrap().to_bytes().unwrap();
        let c = SyntheticSpec::tiny(8).build().unwrap().to_bytes().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
