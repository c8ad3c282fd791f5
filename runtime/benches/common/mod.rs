//! MobileNetV3-Small's layers at 224x224 (torchvision's configuration, BN
//! folded, paper head), run through the kernels alone with seeded weights.
//!
//! Shared by `benches/kernels.rs` and `examples/kernel_icount.rs` so the
//! host timings and the aarch64 instruction counts use the same shapes.
#![allow(dead_code)]

use derm_runtime::kernels::{self, Activation};

/// One layer of the network, with the sizes the kernels see.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// 3x3 stride-2 conv from the CHW image.
    Stem { ih: usize, cout: usize },
    /// 1x1 conv over `hw` pixels.
    Pointwise {
        hw: usize,
        k: usize,
        n: usize,
        act: Activation,
        residual: bool,
    },
    /// kxk depthwise conv on an `h x h x c` input.
    Depthwise {
        h: usize,
        c: usize,
        k: usize,
        stride: usize,
        act: Activation,
    },
    /// Squeeze-and-excitation.
    SqueezeExcite { hw: usize, c: usize, csq: usize },
    /// Global average pool.
    Pool { hw: usize, c: usize },
    /// Classifier.
    Linear { k: usize, n: usize },
}

impl Op {
    /// Multiply-accumulates of the layer.
    pub fn macs(&self) -> usize {
        match *self {
            Op::Stem { ih, cout } => (ih / 2) * (ih / 2) * cout * 27,
            Op::Pointwise { hw, k, n, .. } => hw * k * n,
            Op::Depthwise {
                h, c, k, stride, ..
            } => (h / stride) * (h / stride) * c * k * k,
            Op::SqueezeExcite { c, csq, .. } => 2 * c * csq,
            Op::Pool { .. } => 0,
            Op::Linear { k, n } => k * n,
        }
    }
}

/// `torchvision.models.mobilenet_v3_small` at 224x224 with a
/// `Linear(576 -> classes)` head, as `(name, op)` in execution order.
pub fn mobilenet_v3_small(classes: usize) -> Vec<(String, Op)> {
    use Activation::{Hardswish as HS, None as NO, Relu as RE};
    // input, kernel, expanded, out, SE, activation, stride (torchvision's table)
    let cfg: [(usize, usize, usize, usize, bool, Activation, usize); 11] = [
        (16, 3, 16, 16, true, RE, 2),
        (16, 3, 72, 24, false, RE, 2),
        (24, 3, 88, 24, false, RE, 1),
        (24, 5, 96, 40, true, HS, 2),
        (40, 5, 240, 40, true, HS, 1),
        (40, 5, 240, 40, true, HS, 1),
        (40, 5, 120, 48, true, HS, 1),
        (48, 5, 144, 48, true, HS, 1),
        (48, 5, 288, 96, true, HS, 2),
        (96, 5, 576, 96, true, HS, 1),
        (96, 5, 576, 96, true, HS, 1),
    ];
    let mut ops = vec![("stem".to_string(), Op::Stem { ih: 224, cout: 16 })];
    let mut h = 112;
    for (b, &(cin, k, exp, cout, se, act, stride)) in cfg.iter().enumerate() {
        let b = b + 1;
        if exp != cin {
            ops.push((
                format!("b{b}.expand"),
                Op::Pointwise {
                    hw: h * h,
                    k: cin,
                    n: exp,
                    act,
                    residual: false,
                },
            ));
        }
        ops.push((
            format!("b{b}.dw{k}x{k}s{stride}"),
            Op::Depthwise {
                h,
                c: exp,
                k,
                stride,
                act,
            },
        ));
        h /= stride;
        if se {
            // torchvision: _make_divisible(exp // 4, 8)
            let csq = ((exp / 4 + 4) / 8 * 8).max(8);
            ops.push((
                format!("b{b}.se"),
                Op::SqueezeExcite {
                    hw: h * h,
                    c: exp,
                    csq,
                },
            ));
        }
        let residual = stride == 1 && cin == cout;
        ops.push((
            format!("b{b}.project"),
            Op::Pointwise {
                hw: h * h,
                k: exp,
                n: cout,
                act: NO,
                residual,
            },
        ));
    }
    ops.push((
        "last".to_string(),
        Op::Pointwise {
            hw: 49,
            k: 96,
            n: 576,
            act: HS,
            residual: false,
        },
    ));
    ops.push(("pool".to_string(), Op::Pool { hw: 49, c: 576 }));
    ops.push(("classifier".to_string(), Op::Linear { k: 576, n: classes }));
    ops
}

/// splitmix64 values in [-scale, scale).
fn seeded(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// One layer with its weights and its own input/output buffers.
pub struct Layer {
    /// Name, e.g. `b5.dw5x5s1`.
    pub name: String,
    /// Shape.
    pub op: Op,
    w: Vec<f32>,
    b: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    input: Vec<f32>,
    residual: Vec<f32>,
    out: Vec<f32>,
}

impl Layer {
    /// Builds the layer with seeded weights (scaled by 1/sqrt(fan-in) so
    /// values stay in the normal f32 range) and a seeded input.
    pub fn new(name: &str, op: Op, seed: u64) -> Self {
        let fan = |k: usize| 1.0 / (k as f32).sqrt();
        let (w, b, w2, b2, in_len, out_len) = match op {
            Op::Stem { ih, cout } => (
                seeded(27 * cout, seed, fan(27)),
                seeded(cout, seed + 1, 0.1),
                vec![],
                vec![],
                3 * ih * ih,
                (ih / 2) * (ih / 2) * cout,
            ),
            Op::Pointwise { hw, k, n, .. } => (
                seeded(kernels::packed_len(k, n), seed, fan(k)),
                seeded(n, seed + 1, 0.1),
                vec![],
                vec![],
                hw * k,
                hw * n,
            ),
            Op::Depthwise {
                h, c, k, stride, ..
            } => (
                seeded(k * k * c, seed, fan(k * k)),
                seeded(c, seed + 1, 0.1),
                vec![],
                vec![],
                h * h * c,
                (h / stride) * (h / stride) * c,
            ),
            Op::SqueezeExcite { hw, c, csq } => (
                seeded(kernels::packed_len(c, csq), seed, fan(c)),
                seeded(csq, seed + 1, 0.1),
                seeded(kernels::packed_len(csq, c), seed + 2, fan(csq)),
                // fc2's bias pushes every gate into hardsigmoid's saturation
                // (exactly 1), so repeated in-place runs keep the values, and
                // their cost, unchanged (shrinking values would reach
                // denormals, which are slow on x86).
                seeded(c, seed + 3, 0.1).iter().map(|v| v + 20.0).collect(),
                hw * c,
                c + csq,
            ),
            Op::Pool { hw, c } => (vec![], vec![], vec![], vec![], hw * c, c),
            Op::Linear { k, n } => (
                seeded(kernels::packed_len(k, n), seed, fan(k)),
                seeded(n, seed + 1, 0.1),
                vec![],
                vec![],
                k,
                n,
            ),
        };
        let residual = if let Op::Pointwise { residual: true, .. } = op {
            seeded(out_len, seed + 5, 1.0)
        } else {
            vec![]
        };
        Layer {
            name: name.to_string(),
            op,
            w,
            b,
            w2,
            b2,
            input: seeded(in_len, seed + 4, 1.0),
            residual,
            out: vec![0.0; out_len],
        }
    }

    /// Runs the layer once (SE scales its input in place, using `out` as
    /// scratch).
    #[inline(never)]
    pub fn run(&mut self) {
        match self.op {
            Op::Stem { ih, cout } => {
                let o = ih / 2;
                let s = kernels::ConvShape {
                    ih,
                    iw: ih,
                    cin: 3,
                    cout,
                    kh: 3,
                    kw: 3,
                    stride: 2,
                    pad: 1,
                    oh: o,
                    ow: o,
                };
                kernels::conv_stem(
                    &self.input,
                    s,
                    &self.w,
                    &self.b,
                    Activation::Hardswish,
                    &mut self.out,
                )
            }
            Op::Pointwise {
                hw,
                k,
                n,
                act,
                residual,
            } => {
                let res = if residual {
                    Some(&self.residual[..])
                } else {
                    None
                };
                kernels::pointwise(
                    &self.input,
                    kernels::PointwiseShape { pixels: hw, k, n },
                    &self.w,
                    &self.b,
                    act,
                    res,
                    &mut self.out,
                )
            }
            Op::Depthwise {
                h,
                c,
                k,
                stride,
                act,
            } => {
                let o = h / stride;
                let s = kernels::DepthwiseShape {
                    ih: h,
                    iw: h,
                    c,
                    k,
                    stride,
                    pad: k / 2,
                    oh: o,
                    ow: o,
                };
                kernels::depthwise(&self.input, s, &self.w, &self.b, act, &mut self.out)
            }
            Op::SqueezeExcite { hw, c, csq } => kernels::squeeze_excite(
                &mut self.input,
                kernels::SeShape {
                    pixels: hw,
                    c,
                    squeeze: csq,
                },
                &self.w,
                &self.b,
                &self.w2,
                &self.b2,
                &mut self.out,
            ),
            Op::Pool { hw, c } => kernels::global_avg_pool(&self.input, hw, c, &mut self.out),
            Op::Linear { k, n } => kernels::linear(
                &self.input,
                k,
                n,
                &self.w,
                &self.b,
                Activation::None,
                &mut self.out,
            ),
        }
    }
}

/// Every layer of the network, each with its own buffers.
pub fn layers(classes: usize) -> Vec<Layer> {
    mobilenet_v3_small(classes)
        .into_iter()
        .enumerate()
        .map(|(i, (name, op))| Layer::new(&name, op, 1000 * i as u64))
        .collect()
}
