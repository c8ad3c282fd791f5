//! int8 quantization, the compile-time half: the conventions of quantized
//! model files, the requantization constants, the lookup tables, and
//! post-training quantization ([`ptq`]) with optional cross-layer equalization
//! ([`equalize`]).
//!
//! `docs/int8.md` is the specification; every formula below is stated there.
//! The run-time half of the one requantization rule is
//! `derm_runtime::kernels::requant` (`runtime/src/kernels/requant.rs`): the
//! kernels apply it with the [`Multiplier`]s derived here, and
//! [`requant`] below is the oracle's copy of it (written with `i128`, so it
//! cannot overflow), which every kernel variant must match bit for bit.
//!
//! - activations: per-tensor affine int8, `real = scale * (q - zero_point)`
//!   ([`QParams`]), one entry per key of [`activation_keys`]; the feature maps that
//!   depthwise convolutions read may have one scale per channel with the zero point
//!   shared ([`channel_grid`], [`depthwise_inputs`]);
//! - weights: per-output-channel symmetric int8 in `[-127, 127]` (zero point
//!   0); biases: `i32` in accumulator units (`input scale * weight scale`);
//! - every rescale is `requant(x, m, s) = (x * m + 2^(s-1)) >> s` with
//!   `m` in `[2^30, 2^31)` and `s` in `[1, 62]`, saturated to `i32`.

pub mod equalize;
pub mod plan;
pub mod ptq;

pub use plan::{AddPlan, ConvOutput, ConvPlan, OpPlan, PoolPlan, QuantPlan, SePlan};

use crate::ir::{Activation, Graph, Op, QParams};

/// Inputs of a residual add are shifted left by this many bits before they
/// are brought to a common scale, so the rescaling keeps 20 bits of fraction
/// (TFLite's choice; `(q - z) << 20` stays below `2^28`).
pub const ADD_SHIFT: u32 = 20;
/// Fraction bits of the squeeze-excite gate: `gate = round(hardsigmoid * 2^15)`
/// in `[0, 2^15]`.
pub const GATE_BITS: u32 = 15;
/// The gate's value for 1.0.
pub const GATE_ONE: i32 = 1 << GATE_BITS;
/// Largest weight magnitude: `-128` is excluded so that two products of
/// int8 values always fit an `i16` sum (the NEON `SMLAL` pairing).
pub const WEIGHT_MAX: i32 = 127;

/// A real multiplier `r ~ m * 2^-shift` in the form the kernels apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multiplier {
    /// In `[2^30, 2^31)`.
    pub m: i32,
    /// In `[1, 62]`.
    pub shift: u32,
}

impl Multiplier {
    /// `m = round(r * 2^shift)` (ties to even) with `shift` chosen so that
    /// `m` is in `[2^30, 2^31)`; `None` when `r` is not positive and finite or
    /// the shift falls outside `[1, 62]` (`r` outside about `[2^-32, 2^29]`).
    pub fn from_real(r: f64) -> Option<Self> {
        if !(r > 0.0 && r.is_normal()) {
            return None;
        }
        // r = 1.f * 2^e exactly, from the bits (log2 could round across a power of two).
        let e = ((r.to_bits() >> 52) & 0x7ff) as i32 - 1023;
        let mut shift = 30 - e;
        if !(1..=62).contains(&shift) {
            return None;
        }
        // Scaling by a power of two is exact in f64.
        let mut m = (r * 2f64.powi(shift)).round_ties_even();
        if m >= 2f64.powi(31) {
            m = 2f64.powi(30);
            shift -= 1;
            if shift < 1 {
                return None;
            }
        }
        Some(Self {
            m: m as i32,
            shift: shift as u32,
        })
    }

    /// The real value `m * 2^-shift`.
    pub fn real(self) -> f64 {
        f64::from(self.m) * 2f64.powi(-(self.shift as i32))
    }
}

/// The requantization rule: `(x * m + 2^(shift-1)) >> shift` (arithmetic
/// shift: round to nearest, ties toward +infinity), saturated to `i32`.
pub fn requant(x: i32, mul: Multiplier) -> i32 {
    let v = (i128::from(x) * i128::from(mul.m) + (1i128 << (mul.shift - 1))) >> mul.shift;
    v.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32
}

/// Saturates to int8.
pub fn sat8(v: i64) -> i8 {
    v.clamp(-128, 127) as i8
}

/// `1 / scale` as the `f32` every input-quantizing kernel multiplies by.
pub fn inv_scale(p: QParams) -> f32 {
    (1.0 / f64::from(p.scale)) as f32
}

/// The model's first step: `q = clamp(zp + round_ties_even(clamp(x * inv_scale, -1024, 1024)), -128, 127)`,
/// with `x * inv_scale` one `f32` multiply; a NaN product gives the zero point.
pub fn quantize_input(x: f32, inv_scale: f32, zero_point: i32) -> i8 {
    let v = x * inv_scale;
    let v = if v.is_nan() {
        0.0
    } else {
        v.clamp(-1024.0, 1024.0)
    };
    sat8(i64::from(zero_point) + v.round_ties_even() as i64)
}

/// The float hardswish epilogue of an op listed in
/// [`crate::ir::Quantization::float_hardswish`], one accumulator `acc` of a channel
/// whose real scale is `scale` (`f32(x_scale * w_scale[c])`), into an output with
/// `inv_scale = f32(1 / (6 * y_scale))` and zero point `zero_point`:
/// `f = f32(acc) * scale`, `h = f * clamp(f + 3, 0, 6)`, then
/// [`quantize_input`]`(h, inv_scale, zero_point)`. Each step is one IEEE `f32`
/// operation with round-to-nearest-even, in this order and never fused, so every
/// machine computes the same bits.
pub fn float_hardswish(acc: i32, scale: f32, inv_scale: f32, zero_point: i32) -> i8 {
    let f = acc as f32 * scale;
    let h = f * (f + 3.0).clamp(0.0, 6.0);
    quantize_input(h, inv_scale, zero_point)
}

/// `f32(1 / (6 * out_scale))`: the multiplier of [`float_hardswish`], which folds
/// hardswish's division by 6 into the output's scale.
pub fn float_hardswish_inv_scale(out_scale: f32) -> f32 {
    (1.0 / (6.0 * f64::from(out_scale))) as f32
}

/// The 256-entry hardswish table of an int8 activation: entry `q + 128` is
/// `clamp(out.zp + round_ties_even(hardswish(pre.scale * (q - pre.zp)) / out.scale), -128, 127)`,
/// computed in `f64` at build time, so every machine uses the same bytes.
pub fn hardswish_table(pre: QParams, out: QParams) -> [i8; 256] {
    let mut t = [0i8; 256];
    for (i, e) in t.iter_mut().enumerate() {
        let x = f64::from(pre.scale) * f64::from(i as i32 - 128 - pre.zero_point);
        let h = x * (x + 3.0).clamp(0.0, 6.0) / 6.0;
        let q = (h / f64::from(out.scale)).round_ties_even();
        *e = sat8(i64::from(out.zero_point) + q.clamp(-1024.0, 1024.0) as i64);
    }
    t
}

/// Key of the parameters of a hardswish op's output before the activation.
pub fn pre_activation_key(op: &str) -> String {
    format!("{op}:pre_activation")
}

/// Key of a squeeze-excite op's pooled vector.
pub fn pooled_key(op: &str) -> String {
    format!("{op}:pooled")
}

/// Key of a squeeze-excite op's hidden (post-ReLU) vector.
pub fn hidden_key(op: &str) -> String {
    format!("{op}:hidden")
}

/// Every key a quantized graph's `quantization.activations` must have, in
/// execution order: the input, each op's intermediates, each op's output
/// except the graph output (the logits are `f32`). The ops that `g`'s
/// quantization lists under `float_hardswish` have no pre-activation key.
pub fn activation_keys(g: &Graph) -> Vec<String> {
    let float = g
        .quantization
        .as_ref()
        .map(|q| q.float_hardswish.as_slice())
        .unwrap_or_default();
    activation_keys_with(g, float)
}

/// [`activation_keys`] of `g` as it will be quantized with the hardswish of the
/// ops in `float_hardswish` in `f32` (what calibration and quantization-aware
/// training of a float graph need).
pub fn activation_keys_with(g: &Graph, float_hardswish: &[String]) -> Vec<String> {
    let is_float = |name: &str| float_hardswish.iter().any(|n| n == name);
    let mut keys = vec![g.input.name.clone()];
    for op in &g.ops {
        match op {
            Op::Conv2d(c) if c.activation == Activation::Hardswish && !is_float(&c.name) => {
                keys.push(pre_activation_key(&c.name))
            }
            Op::Linear(l) if l.activation == Activation::Hardswish && !is_float(&l.name) => {
                keys.push(pre_activation_key(&l.name))
            }
            Op::SqueezeExcite(s) => {
                keys.push(pooled_key(&s.name));
                keys.push(hidden_key(&s.name));
            }
            _ => {}
        }
        if op.output() != g.output {
            keys.push(op.output().to_owned());
        }
    }
    keys
}

/// The narrowest activation range quantization uses. A tensor that was (nearly) constant
/// zero on every calibration image, such as the hidden vector of a squeeze-excite whose
/// ReLU never fired, would otherwise get a scale so small that the next layer's bias,
/// stored in units of `x_scale * w_scale`, no longer fits `i32`.
pub const MIN_SPAN: f32 = 1.0 / 64.0;

/// Affine parameters covering `[lo, hi]` (widened to contain 0, so real 0 is
/// exact): `scale = (hi - lo) / 255`, `zero_point = round(-128 - lo / scale)`. A span
/// below [`MIN_SPAN`] is widened to it.
pub fn params_for_range(lo: f32, hi: f32) -> QParams {
    let (lo, hi) = (f64::from(lo.min(0.0)), f64::from(hi.max(0.0)));
    let span = (hi - lo).max(f64::from(MIN_SPAN));
    let scale = (span / 255.0) as f32;
    let zp = (-128.0 - lo / f64::from(scale)).round_ties_even();
    QParams {
        scale,
        zero_point: zp.clamp(-128.0, 127.0) as i32,
    }
}

/// One grid per channel with a shared zero point, for channels whose ranges are `ranges`
/// (each widened to hold 0, as [`params_for_range`] widens a tensor's): the zero point
/// `z = k - 128` and the scales `s[c] = max(hi[c] / (255 - k), -lo[c] / k)` (at least
/// [`MIN_SPAN`]` / 255`) with `k` in `0..=255` chosen to minimise `sum s[c]^2`, the
/// rounding noise summed over the channels (ties: the smallest `k`). Every channel's
/// range fits its grid. Returns the tensor's [`QParams`] (the shared zero point and the
/// largest scale) and the scales.
///
/// A shared zero point is what lets a depthwise convolution read the grid with no kernel
/// change (the zero point is subtracted, and the padding is filled, per tensor). For
/// ReLU outputs (`lo = 0`) it costs nothing: `k = 0` is every channel's own choice.
pub fn channel_grid(ranges: &[(f32, f32)]) -> (QParams, Vec<f32>) {
    let floor = f64::from(MIN_SPAN) / 255.0;
    let ranges: Vec<(f64, f64)> = ranges
        .iter()
        .map(|&(lo, hi)| (-f64::from(lo.min(0.0)), f64::from(hi.max(0.0))))
        .collect();
    // The scale of one channel with `k` steps below the zero point (infinite when the
    // channel has values on a side with no steps).
    let scale = |k: u32, (neg, pos): (f64, f64)| -> f64 {
        let below = if neg > 0.0 { neg / f64::from(k) } else { 0.0 };
        let above = if pos > 0.0 {
            pos / f64::from(255 - k)
        } else {
            0.0
        };
        below.max(above).max(floor)
    };
    let cost = |k: u32| -> f64 { ranges.iter().map(|&r| scale(k, r).powi(2)).sum() };
    let mut best = (0u32, f64::INFINITY);
    for k in 0..=255u32 {
        let c = cost(k);
        if c < best.1 {
            best = (k, c);
        }
    }
    let k = best.0;
    // Rounded up to the next f32, so the f32 scale still covers the channel's range.
    let scales: Vec<f32> = ranges
        .iter()
        .map(|&r| {
            let v = scale(k, r);
            let f = v as f32;
            if f64::from(f) < v { f.next_up() } else { f }
        })
        .collect();
    let largest = scales.iter().copied().fold(f32::MIN_POSITIVE, f32::max);
    (
        QParams {
            scale: largest,
            zero_point: k as i32 - 128,
        },
        scales,
    )
}

/// The feature maps of `g` that can be on a per-channel grid
/// ([`crate::ir::Quantization::channel_scales`]), in execution order: each is written by a
/// convolution and read only by depthwise convolutions (in MobileNetV3: the stem's output
/// and every expansion's). `quant::plan` checks the rest (the writer's activation).
pub fn depthwise_inputs(g: &Graph) -> Vec<String> {
    let is_depthwise = |op: &Op| matches!(op, Op::Conv2d(c) if c.groups > 1 && c.groups == c.in_channels && c.groups == c.out_channels);
    g.ops
        .iter()
        .filter(|op| matches!(op, Op::Conv2d(_)) && op.output() != g.output)
        .map(|op| op.output())
        .filter(|v| {
            let readers: Vec<&Op> = g.ops.iter().filter(|o| o.inputs().contains(v)).collect();
            !readers.is_empty() && readers.iter().all(|o| is_depthwise(o))
        })
        .map(str::to_owned)
        .collect()
}

/// Widens `ranges[c]`, channel `c`'s smallest and largest value so far, to hold the finite
/// values of channel `c` of `data`, a value of `channels` contiguous channel planes
/// (`[C, ...]`). `ranges` grows to `channels` entries; a channel that has seen no finite
/// value is `(inf, -inf)`. Calibration (per-channel grids) and equalization both read it.
pub(crate) fn widen_channel_ranges(ranges: &mut Vec<(f32, f32)>, channels: usize, data: &[f32]) {
    ranges.resize(channels, (f32::INFINITY, f32::NEG_INFINITY));
    let plane = data.len() / channels.max(1);
    if plane == 0 {
        return;
    }
    for (r, values) in ranges.iter_mut().zip(data.chunks(plane)) {
        for &v in values.iter().filter(|v| v.is_finite()) {
            r.0 = r.0.min(v);
            r.1 = r.1.max(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every channel's range fits its grid; ReLU channels get their own exact grids; the
    /// shared zero point is the rounding noise's minimum; degenerate channels get the floor.
    #[test]
    fn channel_grid_fits_every_channel_with_one_zero_point() {
        // ReLU outputs: zero point -128, each channel its own span / 255.
        let (p, s) = channel_grid(&[(0.0, 1.0), (0.0, 10.0), (0.0, 0.5)]);
        assert_eq!(p.zero_point, -128);
        for (got, want) in s.iter().zip([1.0f32, 10.0, 0.5]) {
            assert!((got * 255.0 - want).abs() <= want * 1e-6, "{s:?}");
        }
        assert_eq!(p.scale, s[1]);
        // Hardswish outputs: every channel dips to -0.375, their tops differ 40-fold.
        let ranges = [(-0.375, 0.5), (-0.375, 2.0), (-0.375, 20.0), (-0.2, 6.0)];
        let (p, s) = channel_grid(&ranges);
        let k = p.zero_point + 128;
        assert!((1..255).contains(&k), "{p:?}");
        for (&(lo, hi), &sc) in ranges.iter().zip(&s) {
            assert!(
                f64::from(-lo) <= f64::from(sc) * f64::from(k),
                "{lo} {sc} {k}"
            );
            assert!(
                f64::from(hi) <= f64::from(sc) * f64::from(255 - k),
                "{hi} {sc} {k}"
            );
        }
        // The small channels are far finer than one grid for the tensor would be.
        let one = params_for_range(-0.375, 20.0).scale;
        assert!(s[0] < one / 4.0, "{s:?} vs {one}");
        // And the chosen zero point beats its neighbours on the summed squared steps.
        let cost = |k: i32| -> f64 {
            ranges
                .iter()
                .map(|&(lo, hi)| {
                    let v = (f64::from(-lo) / f64::from(k)).max(f64::from(hi) / f64::from(255 - k));
                    v * v
                })
                .sum()
        };
        assert!(cost(k) <= cost(k - 1) && cost(k) <= cost(k + 1));
        // A channel that never fired gets the narrowest grid, not a zero scale.
        let (_, s) = channel_grid(&[(0.0, 0.0), (0.0, 3.0)]);
        assert!(s[0] >= MIN_SPAN / 255.0 && s[0].is_normal(), "{s:?}");
    }

    #[test]
    fn multipliers_round_trip_and_reject_out_of_range() {
        for r in [1e-9, 0.001, 0.25, 0.5, 0.7, 1.0, 3.5, 1000.0, 5e8] {
            let m = Multiplier::from_real(r).unwrap();
            assert!((1 << 30..=i32::MAX).contains(&m.m), "{r}: {m:?}");
            assert!((1..=62).contains(&m.shift), "{r}: {m:?}");
            assert!((m.real() - r).abs() <= r * 2f64.powi(-30), "{r}: {m:?}");
        }
        assert_eq!(
            Multiplier::from_real(0.5),
            Some(Multiplier {
                m: 1 << 30,
                shift: 31
            })
        );
        // Just below a power of two rounds up to it: m must stay below 2^31.
        let m = Multiplier::from_real(1.0 - 1e-12).unwrap();
        assert_eq!(
            m,
            Multiplier {
                m: 1 << 30,
                shift: 30
            }
        );
        for bad in [
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            1e-12,
            2f64.powi(30),
            1e300,
        ] {
            assert_eq!(Multiplier::from_real(bad), None, "{bad}");
        }
    }

    #[test]
    fn requant_rounds_half_up_and_saturates() {
        let half = Multiplier {
            m: 1 << 30,
            shift: 31,
        };
        assert_eq!(requant(1, half), 1); // 0.5 -> 1
        assert_eq!(requant(-1, half), 0); // -0.5 -> 0
        assert_eq!(requant(-3, half), -1); // -1.5 -> -1
        assert_eq!(requant(1000, Multiplier::from_real(0.25).unwrap()), 250);
        let big = Multiplier::from_real(4.0).unwrap();
        assert_eq!(requant(i32::MAX, big), i32::MAX);
        assert_eq!(requant(i32::MIN, big), i32::MIN);
    }

    #[test]
    fn input_quantization_and_tables() {
        assert_eq!(quantize_input(0.5, 2.0, 0), 1);
        assert_eq!(quantize_input(2.5 / 2.0, 2.0, 0), 2); // 2.5 ties to even
        assert_eq!(quantize_input(1e30, 1.0, 5), 127);
        assert_eq!(quantize_input(f32::NAN, 1.0, -7), -7);
        let p = QParams {
            scale: 0.05,
            zero_point: 10,
        };
        let t = hardswish_table(p, p);
        // Real 0 maps to the zero point; large inputs are identity.
        assert_eq!(t[(10 + 128) as usize], 10);
        assert_eq!(t[255], 127);
        // hardswish(-3) = 0 and below.
        assert_eq!(t[0], 10);
        let r = params_for_range(0.0, 6.0);
        assert_eq!(r.zero_point, -128);
        // A dead (all-zero) tensor gets the narrowest range, not a vanishing scale.
        assert_eq!(
            params_for_range(0.0, 0.0).scale,
            (f64::from(MIN_SPAN) / 255.0) as f32
        );
        let s = params_for_range(-1.0, 1.0);
        // -128 - lo / scale is -0.5 up to the rounding of the f32 scale.
        assert!(
            (s.scale - 2.0 / 255.0).abs() < 1e-9 && (-1..=0).contains(&s.zero_point),
            "{s:?}"
        );
    }
}
