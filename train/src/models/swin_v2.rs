//! Swin Transformer V2 (the teacher), mirroring torchvision's `swin_v2_t`
//! (torchvision/models/swin_transformer.py, v0.15+) layer for layer, so a
//! torchvision `state_dict` converted to safetensors loads by name.
//!
//! Layout of the parameter tree (torchvision's names):
//! - `features.0.0` patch-embedding conv, `features.0.2` its LayerNorm;
//! - `features.{1,3,5,7}.{i}` Swin V2 blocks (`norm1`, `attn.{qkv,proj,logit_scale,cpb_mlp.{0,2}}`,
//!   `norm2`, `mlp.{0,3}`), with the buffers `attn.relative_coords_table` and
//!   `attn.relative_position_index` registered as non-trainable variables;
//! - `features.{2,4,6}` patch merging V2 (`reduction`, then `norm`);
//! - `norm`, `head`.
//!
//! Inputs are NCHW f32. Like torchvision, the window size stays fixed: a feature map that is
//! not a multiple of the window is zero-padded before partitioning, and the cyclic shift is
//! dropped along any axis where the (padded) map is no larger than the window. At 128x128 the
//! four stages see 32, 16, 8 and 4 (padded to 8) pixels a side, so the last two stages attend
//! over one unshifted window.

use anyhow::{Result, bail};
use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

/// `ln(100)`: the ceiling of the learned attention logit scale (Swin V2, eq. 2).
const LOGIT_SCALE_MAX: f64 = 4.605_170_185_988_092;

/// Hyper-parameters of a Swin V2 network.
#[derive(Debug, Clone, PartialEq)]
pub struct SwinV2Config {
    /// Side of the square patches cut by the embedding conv.
    pub patch_size: i64,
    /// Channels after patch embedding; doubles at each patch merging.
    pub embed_dim: i64,
    /// Blocks per stage.
    pub depths: Vec<i64>,
    /// Attention heads per stage.
    pub num_heads: Vec<i64>,
    /// Side of the square attention windows.
    pub window_size: i64,
    /// Hidden width of each block's MLP relative to its input width.
    pub mlp_ratio: f64,
    /// Stochastic-depth probability of the last block; earlier blocks scale linearly from 0.
    pub stochastic_depth_prob: f64,
    /// Width of the classification head.
    pub num_classes: i64,
}

impl SwinV2Config {
    /// torchvision's `swin_v2_t`: patch 4, embed 96, depths `[2,2,6,2]`, heads `[3,6,12,24]`,
    /// window 8, MLP ratio 4, stochastic depth 0.2.
    pub fn swin_v2_t(num_classes: i64) -> Self {
        Self {
            patch_size: 4,
            embed_dim: 96,
            depths: vec![2, 2, 6, 2],
            num_heads: vec![3, 6, 12, 24],
            window_size: 8,
            mlp_ratio: 4.0,
            stochastic_depth_prob: 0.2,
            num_classes,
        }
    }

    /// The factor by which input sides must be divisible: patch size times one halving per
    /// patch merging.
    pub fn input_multiple(&self) -> i64 {
        self.patch_size * (1_i64 << (self.depths.len().saturating_sub(1)))
    }

    /// Rejects an input size the network cannot take without silently cropping.
    pub fn check_input_size(&self, height: i64, width: i64) -> Result<()> {
        let m = self.input_multiple();
        if height <= 0 || width <= 0 || height % m != 0 || width % m != 0 {
            bail!("swin_v2 input {height}x{width}: both sides must be positive multiples of {m}");
        }
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        if self.depths.is_empty() || self.depths.len() != self.num_heads.len() {
            bail!(
                "swin_v2 config: {} depths vs {} head counts (need the same non-zero number)",
                self.depths.len(),
                self.num_heads.len()
            );
        }
        for (i, &h) in self.num_heads.iter().enumerate() {
            let dim = self.embed_dim << i;
            if h <= 0 || dim % h != 0 {
                bail!("swin_v2 config: stage {i} width {dim} is not divisible by {h} heads");
            }
        }
        if self.window_size < 2 {
            bail!(
                "swin_v2 config: window size {} must be at least 2",
                self.window_size
            );
        }
        if self.num_classes <= 0 {
            bail!(
                "swin_v2 config: num_classes {} must be positive",
                self.num_classes
            );
        }
        if !(0.0..1.0).contains(&self.stochastic_depth_prob) {
            bail!(
                "swin_v2 config: stochastic depth {} must be in [0, 1)",
                self.stochastic_depth_prob
            );
        }
        Ok(())
    }
}

/// torchvision initializes every Linear with `trunc_normal_(std=0.02)` (cut at +-2, i.e. at
/// 100 sigma, so a plain normal) and zero bias.
fn linear_cfg(bias: bool) -> nn::LinearConfig {
    nn::LinearConfig {
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
        bs_init: Some(nn::Init::Const(0.0)),
        bias,
    }
}

fn layer_norm(p: nn::Path<'_>, dim: i64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![dim], Default::default())
}

/// Per-sample ("row") stochastic depth, as torchvision.ops.StochasticDepth.
fn stochastic_depth(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p == 0.0 {
        return x.shallow_clone();
    }
    let survival = 1.0 - p;
    let mut shape = vec![1_i64; x.dim()];
    shape[0] = x.size()[0];
    let keep = Tensor::rand(&shape, (Kind::Float, x.device()))
        .lt(survival)
        .to_kind(x.kind());
    x * keep / survival
}

/// Python's `a[start:end]` over `0..len`, negative indices counting from the end.
fn py_range(start: i64, end: Option<i64>, len: i64) -> std::ops::Range<i64> {
    let fix = |i: i64| if i < 0 { (len + i).max(0) } else { i.min(len) };
    let s = fix(start);
    let e = end.map_or(len, fix);
    s..e.max(s)
}

/// The shifted-window attention mask, built exactly as torchvision builds it: regions of the
/// rolled map get ids, and pairs of tokens from different regions get -100.
fn shift_mask(ph: i64, pw: i64, ws: i64, shift: [i64; 2]) -> Tensor {
    let mut ids = vec![0_f32; (ph * pw) as usize];
    let h_slices = [(0, Some(-ws)), (-ws, Some(-shift[0])), (-shift[0], None)];
    let w_slices = [(0, Some(-ws)), (-ws, Some(-shift[1])), (-shift[1], None)];
    let mut count = 0.0_f32;
    for &(h0, h1) in &h_slices {
        for &(w0, w1) in &w_slices {
            // A zero shift gives torchvision's `[-0:]` and `[-ws:-0]`, i.e. everything and
            // nothing; py_range reads them the same way.
            for r in py_range(h0, h1, ph) {
                for c in py_range(w0, w1, pw) {
                    ids[(r * pw + c) as usize] = count;
                }
            }
            count += 1.0;
        }
    }
    let nw = (ph / ws) * (pw / ws);
    let m = Tensor::from_slice(&ids)
        .view([ph / ws, ws, pw / ws, ws])
        .permute([0, 2, 1, 3])
        .reshape([nw, ws * ws]);
    let diff = m.unsqueeze(1) - m.unsqueeze(2);
    let zeros = diff.zeros_like();
    zeros.masked_fill(&diff.ne(0.0), -100.0)
}

/// `ShiftedWindowAttentionV2`: scaled cosine attention with a learned per-head logit scale and
/// a continuous relative-position bias from a small MLP over log-spaced coordinates.
#[derive(Debug)]
struct WindowAttentionV2 {
    qkv: nn::Linear,
    proj: nn::Linear,
    logit_scale: Tensor,
    cpb1: nn::Linear,
    cpb2: nn::Linear,
    relative_coords_table: Tensor,
    relative_position_index: Tensor,
    window: i64,
    shift: i64,
    heads: i64,
}

impl WindowAttentionV2 {
    fn new(p: nn::Path<'_>, dim: i64, window: i64, shift: i64, heads: i64) -> Self {
        let qkv = nn::linear(&p / "qkv", dim, dim * 3, linear_cfg(true));
        let proj = nn::linear(&p / "proj", dim, dim, linear_cfg(true));
        let logit_scale = p.var("logit_scale", &[heads, 1, 1], nn::Init::Const(10f64.ln()));
        let cpb = &p / "cpb_mlp";
        let cpb1 = nn::linear(&cpb / "0", 2, 512, linear_cfg(true));
        let cpb2 = nn::linear(&cpb / "2", 512, heads, linear_cfg(false));

        // Log-spaced relative coordinates in [-8, 8] -> sign * log2(|x| + 1) / 3.
        let side = 2 * window - 1;
        let mut table = Vec::with_capacity((side * side * 2) as usize);
        for dh in -(window - 1)..window {
            for dw in -(window - 1)..window {
                for (d, w) in [(dh, window), (dw, window)] {
                    let v = d as f32 / (w - 1) as f32 * 8.0;
                    table.push(v.signum() * (v.abs() + 1.0).log2() / 3.0);
                }
            }
        }
        let table = Tensor::from_slice(&table)
            .view([1, side, side, 2])
            .to_device(p.device());
        let relative_coords_table = p.add("relative_coords_table", table, false);

        let n = window * window;
        let mut index = Vec::with_capacity((n * n) as usize);
        for i in 0..n {
            for j in 0..n {
                let (hi, wi) = (i / window, i % window);
                let (hj, wj) = (j / window, j % window);
                let dh = hi - hj + window - 1;
                let dw = wi - wj + window - 1;
                index.push(dh * (2 * window - 1) + dw);
            }
        }
        let index = Tensor::from_slice(&index).to_device(p.device());
        let relative_position_index = p.add("relative_position_index", index, false);

        Self {
            qkv,
            proj,
            logit_scale,
            cpb1,
            cpb2,
            relative_coords_table,
            relative_position_index,
            window,
            shift,
            heads,
        }
    }

    /// `[1, heads, N, N]` with N = window^2: 16 * sigmoid(cpb_mlp(table)[index]).
    fn relative_position_bias(&self) -> Tensor {
        let n = self.window * self.window;
        let t = self
            .cpb2
            .forward(&self.cpb1.forward(&self.relative_coords_table).relu());
        let t = t
            .view([-1, self.heads])
            .index_select(0, &self.relative_position_index);
        let t = t
            .view([n, n, self.heads])
            .permute([2, 0, 1])
            .contiguous()
            .unsqueeze(0);
        t.sigmoid() * 16.0
    }

    /// `x`: `[B, H, W, C]`, returns the same shape.
    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, h, w, c) = x.size4().expect("swin attention takes [B, H, W, C]");
        let ws = self.window;
        let pad_r = (ws - w % ws) % ws;
        let pad_b = (ws - h % ws) % ws;
        let x = if pad_r > 0 || pad_b > 0 {
            x.constant_pad_nd([0, 0, 0, pad_r, 0, pad_b])
        } else {
            x.shallow_clone()
        };
        let (ph, pw) = (h + pad_b, w + pad_r);
        let shift = [
            if ws >= ph { 0 } else { self.shift },
            if ws >= pw { 0 } else { self.shift },
        ];
        let shifted = shift[0] + shift[1] > 0;
        let x = if shifted {
            x.roll([-shift[0], -shift[1]], [1, 2])
        } else {
            x
        };

        let nw = (ph / ws) * (pw / ws);
        let n = ws * ws;
        let x = x
            .view([b, ph / ws, ws, pw / ws, ws, c])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([b * nw, n, c]);

        // Swin V2 has no key bias: torchvision zeroes the middle third on every call.
        let bias = self.qkv.bs.as_ref().map(|bs| {
            Tensor::cat(
                &[
                    bs.narrow(0, 0, c),
                    bs.narrow(0, c, c).zeros_like(),
                    bs.narrow(0, 2 * c, c),
                ],
                0,
            )
        });
        let qkv = x.linear(&self.qkv.ws, bias.as_ref());
        let qkv = qkv
            .reshape([b * nw, n, 3, self.heads, c / self.heads])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let normalize = |t: &Tensor| t / t.norm_scalaropt_dim(2, [-1_i64], true).clamp_min(1e-12);
        let attn = normalize(&q).matmul(&normalize(&k).transpose(-2, -1));
        let attn = attn * self.logit_scale.clamp_max(LOGIT_SCALE_MAX).exp();
        let mut attn = attn + self.relative_position_bias();

        if shifted {
            let mask = shift_mask(ph, pw, ws, shift)
                .to_device(attn.device())
                .to_kind(attn.kind());
            attn = (attn.view([b, nw, self.heads, n, n]) + mask.unsqueeze(1).unsqueeze(0))
                .view([-1, self.heads, n, n]);
        }
        let attn = attn.softmax(-1, attn.kind());
        let x = attn.matmul(&v).transpose(1, 2).reshape([b * nw, n, c]);
        let x = self.proj.forward(&x);

        let x = x
            .view([b, ph / ws, pw / ws, ws, ws, c])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([b, ph, pw, c]);
        let x = if shifted {
            x.roll([shift[0], shift[1]], [1, 2])
        } else {
            x
        };
        if pad_r > 0 || pad_b > 0 {
            x.narrow(1, 0, h).narrow(2, 0, w).contiguous()
        } else {
            x
        }
    }
}

/// `SwinTransformerBlockV2`: res-post-norm, `x + sd(norm1(attn(x)))`, `x + sd(norm2(mlp(x)))`.
#[derive(Debug)]
struct BlockV2 {
    norm1: nn::LayerNorm,
    attn: WindowAttentionV2,
    norm2: nn::LayerNorm,
    mlp0: nn::Linear,
    mlp3: nn::Linear,
    sd_prob: f64,
}

impl BlockV2 {
    fn new(
        p: nn::Path<'_>,
        dim: i64,
        heads: i64,
        window: i64,
        shift: i64,
        mlp_ratio: f64,
        sd_prob: f64,
    ) -> Self {
        let hidden = (dim as f64 * mlp_ratio) as i64;
        let mlp = &p / "mlp";
        Self {
            norm1: layer_norm(&p / "norm1", dim),
            attn: WindowAttentionV2::new(&p / "attn", dim, window, shift, heads),
            norm2: layer_norm(&p / "norm2", dim),
            mlp0: nn::linear(&mlp / "0", dim, hidden, linear_cfg(true)),
            mlp3: nn::linear(&mlp / "3", hidden, dim, linear_cfg(true)),
            sd_prob,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let a = self.norm1.forward(&self.attn.forward(x));
        let x = x + stochastic_depth(&a, self.sd_prob, train);
        let m = self.mlp3.forward(&self.mlp0.forward(&x).gelu("none"));
        let m = self.norm2.forward(&m);
        &x + stochastic_depth(&m, self.sd_prob, train)
    }
}

/// `PatchMergingV2`: 2x2 neighbourhoods concatenated (x0, x1, x2, x3 order), Linear(4C -> 2C,
/// no bias), then LayerNorm (V2 normalizes after the reduction).
#[derive(Debug)]
struct PatchMergingV2 {
    reduction: nn::Linear,
    norm: nn::LayerNorm,
}

impl PatchMergingV2 {
    fn new(p: nn::Path<'_>, dim: i64) -> Self {
        Self {
            reduction: nn::linear(&p / "reduction", 4 * dim, 2 * dim, linear_cfg(false)),
            norm: layer_norm(&p / "norm", 2 * dim),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (_, h, w, _) = x.size4().expect("patch merging takes [B, H, W, C]");
        let x = if h % 2 == 1 || w % 2 == 1 {
            x.constant_pad_nd([0, 0, 0, w % 2, 0, h % 2])
        } else {
            x.shallow_clone()
        };
        let (h2, w2) = ((h + h % 2) / 2, (w + w % 2) / 2);
        let pick = |r: i64, c: i64| {
            x.slice(1, r, None, 2)
                .slice(2, c, None, 2)
                .narrow(1, 0, h2)
                .narrow(2, 0, w2)
        };
        let x = Tensor::cat(&[pick(0, 0), pick(1, 0), pick(0, 1), pick(1, 1)], -1);
        self.norm.forward(&self.reduction.forward(&x))
    }
}

#[derive(Debug)]
enum Feature {
    Stage(Vec<BlockV2>),
    Merge(PatchMergingV2),
}

/// A Swin Transformer V2 classifier with torchvision's parameter names.
#[derive(Debug)]
pub struct SwinV2 {
    config: SwinV2Config,
    patch_conv: nn::Conv2D,
    patch_norm: nn::LayerNorm,
    features: Vec<Feature>,
    norm: nn::LayerNorm,
    head: nn::Linear,
}

impl SwinV2 {
    /// Builds the network under `p` (use `vs.root()` for torchvision's key names).
    pub fn new(p: &nn::Path<'_>, config: SwinV2Config) -> Result<Self> {
        config.validate()?;
        let f = p / "features";
        let conv_cfg = nn::ConvConfig {
            stride: config.patch_size,
            ..Default::default()
        };
        let patch_conv = nn::conv2d(
            &f / "0" / "0",
            3,
            config.embed_dim,
            config.patch_size,
            conv_cfg,
        );
        let patch_norm = layer_norm(&f / "0" / "2", config.embed_dim);

        let total: i64 = config.depths.iter().sum();
        let mut block_id = 0_i64;
        let mut features = Vec::new();
        let mut idx = 1;
        for (stage, (&depth, &heads)) in config.depths.iter().zip(&config.num_heads).enumerate() {
            let dim = config.embed_dim << stage;
            let sp = &f / idx.to_string();
            let mut blocks = Vec::with_capacity(depth as usize);
            for i in 0..depth {
                let sd = if total > 1 {
                    config.stochastic_depth_prob * block_id as f64 / (total - 1) as f64
                } else {
                    0.0
                };
                let shift = if i % 2 == 0 {
                    0
                } else {
                    config.window_size / 2
                };
                blocks.push(BlockV2::new(
                    &sp / i.to_string(),
                    dim,
                    heads,
                    config.window_size,
                    shift,
                    config.mlp_ratio,
                    sd,
                ));
                block_id += 1;
            }
            features.push(Feature::Stage(blocks));
            idx += 1;
            if stage + 1 < config.depths.len() {
                features.push(Feature::Merge(PatchMergingV2::new(
                    &f / idx.to_string(),
                    dim,
                )));
                idx += 1;
            }
        }
        let num_features = config.embed_dim << (config.depths.len() - 1);
        let norm = layer_norm(p / "norm", num_features);
        let head = nn::linear(
            p / "head",
            num_features,
            config.num_classes,
            linear_cfg(true),
        );
        Ok(Self {
            config,
            patch_conv,
            patch_norm,
            features,
            norm,
            head,
        })
    }

    /// The configuration this network was built from.
    pub fn config(&self) -> &SwinV2Config {
        &self.config
    }

    /// Pooled features before the head, `[B, embed_dim * 2^(stages-1)]`.
    pub fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let x = self.patch_conv.forward(xs).permute([0, 2, 3, 1]);
        let mut x = self.patch_norm.forward(&x);
        for f in &self.features {
            x = match f {
                Feature::Stage(blocks) => blocks.iter().fold(x, |x, b| b.forward_t(&x, train)),
                Feature::Merge(m) => m.forward(&x),
            };
        }
        // torchvision: norm -> permute to NCHW -> AdaptiveAvgPool2d(1) -> flatten.
        self.norm
            .forward(&x)
            .mean_dim([1_i64, 2].as_slice(), false, x.kind())
    }
}

impl ModuleT for SwinV2 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head.forward(&self.features_t(xs, train))
    }
}

/// Number of trainable scalars in a var store (what torchvision's
/// `sum(p.numel() for p in model.parameters())` counts; buffers excluded).
pub fn trainable_parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_slices() {
        assert_eq!(py_range(0, Some(-8), 16), 0..8);
        assert_eq!(py_range(-8, Some(-4), 16), 8..12);
        assert_eq!(py_range(-4, None, 16), 12..16);
        assert_eq!(py_range(-8, Some(0), 16), 8..8);
        assert_eq!(py_range(0, None, 16), 0..16);
    }

    #[test]
    fn shift_mask_separates_regions() {
        // A 16x16 map, window 8, shift 4: the bottom-right window mixes four regions.
        let m = shift_mask(16, 16, 8, [4, 4]);
        assert_eq!(m.size(), [4, 64, 64]);
        // The top-left window holds one region only: no masking.
        assert_eq!(m.get(0).abs().sum(Kind::Float).double_value(&[]), 0.0);
        // Last window: token (0,0) (region 4) vs token (7,7) (region 8) is masked.
        assert_eq!(m.get(3).double_value(&[0, 63]), -100.0);
        assert_eq!(m.get(3).double_value(&[0, 1]), 0.0);
    }
}
