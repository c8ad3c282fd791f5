//! Softmax over the logits, the last step of `classify`, with its own `e^x`: `core` has no
//! libm, and the runtime links nothing else.

/// Numerically stable softmax: `e^(l - max)` over the sum, through [`exp`]. All-NaN or
/// infinite logits give the uniform distribution instead of NaNs.
pub fn softmax<const N: usize>(logits: &[f32; N]) -> [f32; N] {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut p = [0f32; N];
    let mut sum = 0.0;
    for (o, &l) in p.iter_mut().zip(logits) {
        *o = exp(l - max);
        sum += *o;
    }
    if sum > 0.0 && sum.is_finite() {
        p.iter_mut().for_each(|v| *v /= sum);
    } else {
        // NaN logits: report a uniform distribution rather than NaNs.
        p = [1.0 / N as f32; N];
    }
    p
}

/// `e^x` for `x <= 0` without libm (`core` has none): `x = n ln2 + y` with
/// integer `n` and `|y| <= ln2 / 2` (Cody-Waite: `ln2` split in two so `y` is
/// exact), `e^x = 2^n e^y` with `2^n` built in the exponent bits and `e^y` a
/// degree-6 Taylor polynomial; relative error about 1e-7.
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75; // few mantissa bits: n * LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6;
    if x.is_nan() {
        return f32::NAN;
    }
    if x < -87.0 {
        return 0.0;
    }
    let t = x * core::f32::consts::LOG2_E;
    let mut n = t as i32;
    let r = t - n as f32;
    if r > 0.5 {
        n += 1;
    } else if r < -0.5 {
        n -= 1;
    }
    let y = (x - n as f32 * LN2_HI) - n as f32 * LN2_LO;
    let poly = 1.0
        + y * (1.0
            + y * (0.5
                + y * (1.0 / 6.0 + y * (1.0 / 24.0 + y * (1.0 / 120.0 + y * (1.0 / 720.0))))));
    f32::from_bits(((n + 127) as u32) << 23) * poly
}
