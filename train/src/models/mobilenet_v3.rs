//! MobileNetV3 Small and Large, the student, with torchvision's architecture and
//! parameter names.
//!
//! Mirrors `torchvision/models/mobilenetv3.py` (torchvision 0.15-0.21, unchanged since
//! the model was added): the inverted-residual tables of `_mobilenet_v3_conf` with
//! `width_mult = 1.0`, squeeze-excite with `_make_divisible(expanded / 4, 8)` squeeze
//! channels and a hard-sigmoid gate, BatchNorm with `eps = 0.001, momentum = 0.01`.
//! A torchvision `state_dict` therefore loads by name ([`load_torchvision_weights`]) and a
//! student saved here loads into PyTorch with `strict=True`.
//!
//! Keys follow torchvision exactly:
//! - `features.0.{0,1}`: the 3x3 stride-2 stem (conv, BatchNorm), hardswish;
//! - `features.N.block.M.{0,1}`: inverted-residual block N, its conv+BN layers in order
//!   (expand 1x1 if the block expands, depthwise kxk, projection 1x1), and
//!   `features.N.block.M.{fc1,fc2}` for its squeeze-excite;
//! - `features.L.{0,1}`: the last 1x1 conv to 576 (Small) or 960 (Large), hardswish;
//! - the classifier after global average pooling, which depends on the [`Head`].
//!
//! Every BatchNorm also holds torchvision's `num_batches_tracked` (an int64 scalar buffer)
//! so the state dict has the same key set as PyTorch's (244 tensors for Small).

use std::str::FromStr;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// BatchNorm epsilon of torchvision's MobileNetV3.
pub const BN_EPS: f64 = 0.001;
/// BatchNorm running-statistics momentum of torchvision's MobileNetV3.
pub const BN_MOMENTUM: f64 = 0.01;
/// Dropout before the last Linear of the torchvision head.
pub const DEFAULT_DROPOUT: f64 = 0.2;

/// Which MobileNetV3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// `mobilenet_v3_small`: 11 inverted residuals, 576 features.
    Small,
    /// `mobilenet_v3_large`: 15 inverted residuals, 960 features.
    Large,
}

impl Arch {
    /// The lowercase name used on the command line and in files (`small`, `large`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Small => "small",
            Arch::Large => "large",
        }
    }

    /// The inverted-residual table (torchvision's `_mobilenet_v3_conf`, width 1.0).
    pub fn blocks(self) -> Vec<BlockConfig> {
        // (input, kernel, expanded, out, use_se, use_hs, stride), as in torchvision.
        #[rustfmt::skip]
        let rows: &[(i64, i64, i64, i64, bool, bool, i64)] = match self {
            Arch::Small => &[
                (16, 3, 16, 16, true, false, 2),
                (16, 3, 72, 24, false, false, 2),
                (24, 3, 88, 24, false, false, 1),
                (24, 5, 96, 40, true, true, 2),
                (40, 5, 240, 40, true, true, 1),
                (40, 5, 240, 40, true, true, 1),
                (40, 5, 120, 48, true, true, 1),
                (48, 5, 144, 48, true, true, 1),
                (48, 5, 288, 96, true, true, 2),
                (96, 5, 576, 96, true, true, 1),
                (96, 5, 576, 96, true, true, 1),
            ],
            Arch::Large => &[
                (16, 3, 16, 16, false, false, 1),
                (16, 3, 64, 24, false, false, 2),
                (24, 3, 72, 24, false, false, 1),
                (24, 5, 72, 40, true, false, 2),
                (40, 5, 120, 40, true, false, 1),
                (40, 5, 120, 40, true, false, 1),
                (40, 3, 240, 80, false, true, 2),
                (80, 3, 200, 80, false, true, 1),
                (80, 3, 184, 80, false, true, 1),
                (80, 3, 184, 80, false, true, 1),
                (80, 3, 480, 112, true, true, 1),
                (112, 3, 672, 112, true, true, 1),
                (112, 5, 672, 160, true, true, 2),
                (160, 5, 960, 160, true, true, 1),
                (160, 5, 960, 160, true, true, 1),
            ],
        };
        rows.iter()
            .map(
                |&(input, kernel, expanded, out, use_se, use_hs, stride)| BlockConfig {
                    input: make_divisible(input as f64, 8),
                    kernel,
                    expanded: make_divisible(expanded as f64, 8),
                    out: make_divisible(out as f64, 8),
                    use_se,
                    use_hs,
                    stride,
                },
            )
            .collect()
    }

    /// Channels after the last 1x1 conv, i.e. the pooled feature size (576 or 960).
    pub fn feature_channels(self) -> i64 {
        6 * self.blocks().last().map_or(0, |b| b.out)
    }

    /// Hidden width of the torchvision head (1024 or 1280).
    pub fn hidden_channels(self) -> i64 {
        match self {
            Arch::Small => make_divisible(1024.0, 8),
            Arch::Large => make_divisible(1280.0, 8),
        }
    }
}

impl FromStr for Arch {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "small" | "mobilenet_v3_small" => Ok(Arch::Small),
            "large" | "mobilenet_v3_large" => Ok(Arch::Large),
            _ => bail!("unknown MobileNetV3 architecture {s:?} (expected small or large)"),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The classifier after global average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Head {
    /// One `Linear(576|960 -> C)` named `classifier.0`: what the paper's 6.04 MB student used.
    /// In PyTorch this is `model.classifier = nn.Sequential(nn.Linear(576, C))`, so the
    /// key stays torchvision-compatible; it never loads torchvision's `classifier.0`
    /// (that one is `[1024, 576]`), so skip `classifier` when initializing from ImageNet.
    Paper,
    /// torchvision's own: `Linear(576|960 -> 1024|1280)` (`classifier.0`) - Hardswish -
    /// Dropout (`classifier.2`, no parameters) - `Linear(-> C)` (`classifier.3`).
    Torchvision,
}

impl Head {
    /// The lowercase name used on the command line and in files (`paper`, `torchvision`).
    pub fn name(self) -> &'static str {
        match self {
            Head::Paper => "paper",
            Head::Torchvision => "torchvision",
        }
    }
}

impl FromStr for Head {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "paper" => Ok(Head::Paper),
            "torchvision" => Ok(Head::Torchvision),
            _ => bail!("unknown classifier head {s:?} (expected paper or torchvision)"),
        }
    }
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One inverted-residual block (torchvision's `InvertedResidualConfig`, dilation 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockConfig {
    /// Input channels.
    pub input: i64,
    /// Depthwise kernel size (3 or 5).
    pub kernel: i64,
    /// Channels after the expansion (equal to `input` when the block does not expand).
    pub expanded: i64,
    /// Output channels.
    pub out: i64,
    /// Whether the block has a squeeze-excite after the depthwise conv.
    pub use_se: bool,
    /// Hardswish (true) or ReLU (false) after the expand and depthwise convs.
    pub use_hs: bool,
    /// Depthwise stride (1 or 2).
    pub stride: i64,
}

impl BlockConfig {
    /// Whether the block adds its input to its output (stride 1, same channels).
    pub fn has_residual(&self) -> bool {
        self.stride == 1 && self.input == self.out
    }

    /// Squeeze-excite hidden channels: `_make_divisible(expanded // 4, 8)`.
    pub fn squeeze_channels(&self) -> i64 {
        make_divisible((self.expanded / 4) as f64, 8)
    }
}

/// torchvision's `_make_divisible(v, divisor)`: round to a multiple of `divisor`, at least
/// `divisor`, never more than 10% below `v`.
pub fn make_divisible(v: f64, divisor: i64) -> i64 {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0) as i64) / divisor * divisor).max(divisor);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

/// The whole student configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MobileNetV3Config {
    /// Small or Large.
    pub arch: Arch,
    /// Paper or torchvision classifier.
    pub head: Head,
    /// Number of output classes (any positive number).
    pub num_classes: i64,
    /// Dropout probability of the torchvision head (ignored by the paper head).
    pub dropout: f64,
}

impl MobileNetV3Config {
    /// A configuration with torchvision's default dropout.
    pub fn new(arch: Arch, head: Head, num_classes: i64) -> Self {
        Self {
            arch,
            head,
            num_classes,
            dropout: DEFAULT_DROPOUT,
        }
    }
}

/// Activation fused after a conv or linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    /// Identity.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `x * relu6(x + 3) / 6`.
    Hardswish,
}

impl Activation {
    fn apply(self, xs: Tensor) -> Tensor {
        match self {
            Activation::None => xs,
            Activation::Relu => xs.relu(),
            Activation::Hardswish => xs.hardswish(),
        }
    }
}

/// torchvision's `Conv2dNormActivation`: bias-free conv (`.0`), BatchNorm (`.1`), activation.
#[derive(Debug)]
pub struct ConvBnAct {
    /// The convolution (no bias).
    pub conv: nn::Conv2D,
    /// Its BatchNorm.
    pub bn: nn::BatchNorm,
    /// The BatchNorm's `num_batches_tracked` buffer (int64 scalar).
    pub num_batches_tracked: Tensor,
    /// Activation after the BatchNorm.
    pub act: Activation,
    /// Input channels.
    pub cin: i64,
    /// Output channels.
    pub cout: i64,
    /// Square kernel size.
    pub kernel: i64,
    /// Stride (both axes).
    pub stride: i64,
    /// Symmetric zero padding, `(kernel - 1) / 2`.
    pub padding: i64,
    /// Groups (`cin` for a depthwise conv, else 1).
    pub groups: i64,
}

impl ConvBnAct {
    /// Creates the conv at `path.0` and its BatchNorm at `path.1`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: &nn::Path<'_>,
        cin: i64,
        cout: i64,
        kernel: i64,
        stride: i64,
        groups: i64,
        act: Activation,
    ) -> Self {
        let padding = (kernel - 1) / 2;
        let conv_cfg = nn::ConvConfig {
            stride,
            padding,
            groups,
            bias: false,
            // torchvision: kaiming_normal_(mode="fan_out").
            ws_init: Init::Kaiming {
                dist: nn::init::NormalOrUniform::Normal,
                fan: nn::init::FanInOut::FanOut,
                non_linearity: nn::init::NonLinearity::ReLU,
            },
            ..Default::default()
        };
        let conv = nn::conv2d(path / "0", cin, cout, kernel, conv_cfg);
        let (bn, num_batches_tracked) = batch_norm(&(path / "1"), cout);
        Self {
            conv,
            bn,
            num_batches_tracked,
            act,
            cin,
            cout,
            kernel,
            stride,
            padding,
            groups,
        }
    }

    /// Conv, BatchNorm (batch statistics when `train`), activation.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        if train {
            count_batch(&self.num_batches_tracked);
        }
        let ys = xs.apply(&self.conv).apply_t(&self.bn, train);
        self.act.apply(ys)
    }
}

/// A BatchNorm2d with torchvision's eps/momentum and init, plus its `num_batches_tracked`.
fn batch_norm(path: &nn::Path<'_>, channels: i64) -> (nn::BatchNorm, Tensor) {
    let cfg = nn::BatchNormConfig {
        eps: BN_EPS,
        momentum: BN_MOMENTUM,
        ws_init: Init::Const(1.0),
        bs_init: Init::Const(0.0),
        ..Default::default()
    };
    let bn = nn::batch_norm2d(path, channels, cfg);
    let nbt = path.add(
        "num_batches_tracked",
        Tensor::zeros([], (Kind::Int64, path.device())),
        false,
    );
    (bn, nbt)
}

fn count_batch(num_batches_tracked: &Tensor) {
    tch::no_grad(|| {
        let mut n = num_batches_tracked.shallow_clone();
        let _ = n.g_add_scalar_(1);
    });
}

/// torchvision's `SqueezeExcitation` with a hard-sigmoid gate: `fc1`, `fc2` are 1x1 convs
/// with bias.
#[derive(Debug)]
pub struct SqueezeExcite {
    /// `fc1`: channels -> squeeze.
    pub fc1: nn::Conv2D,
    /// `fc2`: squeeze -> channels.
    pub fc2: nn::Conv2D,
    /// Block channels.
    pub channels: i64,
    /// Hidden (squeeze) channels.
    pub squeeze: i64,
}

impl SqueezeExcite {
    /// Creates `path.fc1` and `path.fc2`.
    pub fn new(path: &nn::Path<'_>, channels: i64, squeeze: i64) -> Self {
        let cfg = nn::ConvConfig {
            ws_init: Init::Kaiming {
                dist: nn::init::NormalOrUniform::Normal,
                fan: nn::init::FanInOut::FanOut,
                non_linearity: nn::init::NonLinearity::ReLU,
            },
            bs_init: Init::Const(0.0),
            ..Default::default()
        };
        Self {
            fc1: nn::conv2d(path / "fc1", channels, squeeze, 1, cfg),
            fc2: nn::conv2d(path / "fc2", squeeze, channels, 1, cfg),
            channels,
            squeeze,
        }
    }

    /// `x * hardsigmoid(fc2(relu(fc1(mean_hw(x)))))`.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let s = xs
            .adaptive_avg_pool2d([1, 1])
            .apply(&self.fc1)
            .relu()
            .apply(&self.fc2)
            .hardsigmoid();
        xs * s
    }
}

/// torchvision's `InvertedResidual` (`features.N`): its layers live in `features.N.block.M`.
#[derive(Debug)]
pub struct InvertedResidual {
    /// The block's configuration.
    pub cfg: BlockConfig,
    /// 1x1 expansion (absent when `expanded == input`).
    pub expand: Option<ConvBnAct>,
    /// kxk depthwise conv.
    pub depthwise: ConvBnAct,
    /// Squeeze-excite after the depthwise conv.
    pub se: Option<SqueezeExcite>,
    /// 1x1 projection, no activation.
    pub project: ConvBnAct,
}

impl InvertedResidual {
    /// Creates the block under `path` (torchvision's `features.N`).
    pub fn new(path: &nn::Path<'_>, cfg: BlockConfig) -> Self {
        let block = path / "block";
        let act = if cfg.use_hs {
            Activation::Hardswish
        } else {
            Activation::Relu
        };
        let mut m = 0;
        let mut next = || {
            let p = &block / m;
            m += 1;
            p
        };
        let expand = (cfg.expanded != cfg.input)
            .then(|| ConvBnAct::new(&next(), cfg.input, cfg.expanded, 1, 1, 1, act));
        let depthwise = ConvBnAct::new(
            &next(),
            cfg.expanded,
            cfg.expanded,
            cfg.kernel,
            cfg.stride,
            cfg.expanded,
            act,
        );
        let se = cfg
            .use_se
            .then(|| SqueezeExcite::new(&next(), cfg.expanded, cfg.squeeze_channels()));
        let project = ConvBnAct::new(&next(), cfg.expanded, cfg.out, 1, 1, 1, Activation::None);
        Self {
            cfg,
            expand,
            depthwise,
            se,
            project,
        }
    }

    /// Expand, depthwise, SE, project, plus the input when the block is residual.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = match &self.expand {
            Some(e) => e.forward_t(xs, train),
            None => xs.shallow_clone(),
        };
        ys = self.depthwise.forward_t(&ys, train);
        if let Some(se) = &self.se {
            ys = se.forward(&ys);
        }
        ys = self.project.forward_t(&ys, train);
        if self.cfg.has_residual() { ys + xs } else { ys }
    }
}

/// The classifier after pooling.
#[derive(Debug)]
pub enum Classifier {
    /// `classifier.0`: features -> classes.
    Paper {
        /// `classifier.0`.
        fc: nn::Linear,
    },
    /// `classifier.0` - Hardswish - Dropout - `classifier.3`.
    Torchvision {
        /// `classifier.0`: features -> hidden.
        fc1: nn::Linear,
        /// Dropout probability between the two Linears.
        dropout: f64,
        /// `classifier.3`: hidden -> classes.
        fc2: nn::Linear,
    },
}

/// torchvision's `nn.Linear` init in MobileNetV3: weight ~ N(0, 0.01), bias 0.
fn linear(path: nn::Path<'_>, cin: i64, cout: i64) -> nn::Linear {
    let cfg = nn::LinearConfig {
        ws_init: Init::Randn {
            mean: 0.0,
            stdev: 0.01,
        },
        bs_init: Some(Init::Const(0.0)),
        bias: true,
    };
    nn::linear(path, cin, cout, cfg)
}

/// MobileNetV3 with torchvision's names (see the module docs).
#[derive(Debug)]
pub struct MobileNetV3 {
    /// The configuration it was built from.
    pub cfg: MobileNetV3Config,
    /// `features.0`: 3x3 stride-2 conv 3 -> 16, hardswish.
    pub stem: ConvBnAct,
    /// `features.1 ..= features.B`.
    pub blocks: Vec<InvertedResidual>,
    /// `features.B+1`: 1x1 conv to 576 or 960, hardswish.
    pub last_conv: ConvBnAct,
    /// The classifier after global average pooling.
    pub classifier: Classifier,
}

impl MobileNetV3 {
    /// Creates every variable under `path` (normally the VarStore root), initialized as
    /// torchvision does. Fails on a non-positive class count or dropout outside [0, 1).
    pub fn new(path: &nn::Path<'_>, cfg: MobileNetV3Config) -> Result<Self> {
        if cfg.num_classes < 1 {
            bail!("num_classes must be at least 1, got {}", cfg.num_classes);
        }
        if !(0.0..1.0).contains(&cfg.dropout) {
            bail!("dropout must be in [0, 1), got {}", cfg.dropout);
        }
        let features = path / "features";
        let block_cfgs = cfg.arch.blocks();
        let first = block_cfgs[0].input;
        let stem = ConvBnAct::new(&(&features / 0), 3, first, 3, 2, 1, Activation::Hardswish);
        let blocks: Vec<_> = block_cfgs
            .iter()
            .enumerate()
            .map(|(i, b)| InvertedResidual::new(&(&features / (i + 1)), *b))
            .collect();
        let last_in = block_cfgs.last().map_or(first, |b| b.out);
        let last_conv = ConvBnAct::new(
            &(&features / (block_cfgs.len() + 1)),
            last_in,
            cfg.arch.feature_channels(),
            1,
            1,
            1,
            Activation::Hardswish,
        );
        let classifier_path = path / "classifier";
        let feats = cfg.arch.feature_channels();
        let classifier = match cfg.head {
            Head::Paper => Classifier::Paper {
                fc: linear(&classifier_path / 0, feats, cfg.num_classes),
            },
            Head::Torchvision => {
                let hidden = cfg.arch.hidden_channels();
                Classifier::Torchvision {
                    fc1: linear(&classifier_path / 0, feats, hidden),
                    dropout: cfg.dropout,
                    fc2: linear(&classifier_path / 3, hidden, cfg.num_classes),
                }
            }
        };
        Ok(Self {
            cfg,
            stem,
            blocks,
            last_conv,
            classifier,
        })
    }

    /// Pooled features `[N, 576|960]` of an `[N, 3, H, W]` batch (normalized input).
    pub fn forward_features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = self.stem.forward_t(xs, train);
        for b in &self.blocks {
            ys = b.forward_t(&ys, train);
        }
        self.last_conv
            .forward_t(&ys, train)
            .adaptive_avg_pool2d([1, 1])
            .flatten(1, -1)
    }

    /// Logits `[N, num_classes]` of an `[N, 3, H, W]` batch (normalized input).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let f = self.forward_features_t(xs, train);
        match &self.classifier {
            Classifier::Paper { fc } => f.apply(fc),
            Classifier::Torchvision { fc1, dropout, fc2 } => {
                f.apply(fc1).hardswish().dropout(*dropout, train).apply(fc2)
            }
        }
    }
}

impl nn::ModuleT for MobileNetV3 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        MobileNetV3::forward_t(self, xs, train)
    }
}

/// Builds a fresh MobileNetV3 in a new CPU VarStore, seeding libtorch's generator first so
/// the same seed gives the same weights.
pub fn seeded(cfg: MobileNetV3Config, seed: i64) -> Result<(nn::VarStore, MobileNetV3)> {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let model = MobileNetV3::new(&vs.root(), cfg)?;
    Ok((vs, model))
}

/// Number of trainable parameters (what torchvision's published counts measure).
pub fn trainable_parameters(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(Tensor::numel)
        .sum::<usize>() as i64
}

/// Options for [`load_torchvision_weights`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Keys to leave as initialized, by dotted prefix: `classifier.3` skips
    /// `classifier.3.weight` and `classifier.3.bias` (in the file and in the model).
    pub skip: Vec<String>,
}

fn skipped(key: &str, skip: &[String]) -> bool {
    skip.iter().any(|p| {
        key == p
            || key
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Copies every tensor of a torchvision `state_dict` saved as safetensors into `vs`, by
/// name. All problems are collected into one error: keys the model has but the file lacks,
/// keys the file has but the model lacks, and shape or dtype mismatches, each named.
/// Keys under a prefix in `opts.skip` are ignored on both sides. Returns how many tensors
/// were copied.
pub fn load_torchvision_weights(
    vs: &mut nn::VarStore,
    file: &std::path::Path,
    opts: &LoadOptions,
) -> Result<usize> {
    let bytes = std::fs::read(file)
        .map_err(|e| anyhow::anyhow!("cannot read weights {}: {e}", file.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", file.display()))?;
    load_tensors(vs, &st, &opts.skip, &file.display().to_string())
}

/// Loads the named tensors of `st` into `vs` (strict, except `skip`); see
/// [`load_torchvision_weights`]. `what` names the source in errors.
pub(crate) fn load_tensors(
    vs: &mut nn::VarStore,
    st: &safetensors::SafeTensors<'_>,
    skip: &[String],
    what: &str,
) -> Result<usize> {
    let vars = vs.variables();
    let mut problems = Vec::new();
    let mut names: Vec<&String> = vars.keys().filter(|k| !skipped(k, skip)).collect();
    names.sort();
    let mut file_names: Vec<String> = st
        .names()
        .into_iter()
        .filter(|k| !skipped(k, skip))
        .map(str::to_owned)
        .collect();
    file_names.sort();
    let missing: Vec<&str> = names
        .iter()
        .filter(|k| st.tensor(k).is_err())
        .map(|k| k.as_str())
        .collect();
    let extra: Vec<&str> = file_names
        .iter()
        .filter(|k| !vars.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "missing in the file ({}): {}",
            missing.len(),
            missing.join(", ")
        ));
    }
    if !extra.is_empty() {
        problems.push(format!(
            "not in the model ({}): {}",
            extra.len(),
            extra.join(", ")
        ));
    }
    let mut pending = Vec::new();
    for name in names {
        let Ok(view) = st.tensor(name) else { continue };
        let var = &vars[name];
        let want: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
        let (kind, elem) = match view.dtype() {
            safetensors::Dtype::F32 => (Kind::Float, 4),
            safetensors::Dtype::I64 => (Kind::Int64, 8),
            other => {
                problems.push(format!("{name}: dtype {other:?} (expected F32 or I64)"));
                continue;
            }
        };
        if view.shape() != want.as_slice() {
            problems.push(format!(
                "{name}: shape {:?} in the file, {:?} in the model",
                view.shape(),
                want
            ));
            continue;
        }
        if kind != var.kind() {
            problems.push(format!(
                "{name}: dtype {:?} in the file, {:?} in the model",
                view.dtype(),
                var.kind()
            ));
            continue;
        }
        debug_assert_eq!(
            view.data().len(),
            view.shape().iter().product::<usize>() * elem
        );
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::from_data_size(view.data(), &shape, kind);
        pending.push((var.shallow_clone(), t));
    }
    if !problems.is_empty() {
        bail!("cannot load {what}:\n  {}", problems.join("\n  "));
    }
    let n = pending.len();
    tch::no_grad(|| {
        for (mut var, t) in pending {
            var.copy_(&t);
        }
    });
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_matches_torchvision() {
        // Values from torchvision's `_make_divisible(v, 8)`.
        assert_eq!(make_divisible(16.0 / 4.0, 8), 8);
        assert_eq!(make_divisible(72.0, 8), 72);
        assert_eq!(make_divisible(88.0 / 4.0, 8), 24);
        assert_eq!(make_divisible(96.0 / 4.0, 8), 24);
        assert_eq!(make_divisible(240.0 / 4.0, 8), 64);
        assert_eq!(make_divisible(120.0 / 4.0, 8), 32);
        assert_eq!(make_divisible(144.0 / 4.0, 8), 40);
        assert_eq!(make_divisible(960.0 / 4.0, 8), 240);
        assert_eq!(make_divisible(672.0 / 4.0, 8), 168);
    }

    #[test]
    fn skip_matches_whole_components_only() {
        let skip = vec!["classifier.3".to_string()];
        assert!(skipped("classifier.3.weight", &skip));
        assert!(skipped("classifier.3", &skip));
        assert!(!skipped("classifier.30.weight", &skip));
        assert!(!skipped("classifier.0.weight", &skip));
    }
}
