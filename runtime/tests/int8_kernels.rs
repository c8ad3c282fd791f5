//! The portable int8 kernels ([`int8`]) against reimplementations written
//! directly from the formulas of `docs/int8.md` (the oracle's semantics),
//! with `i64`/`i128` arithmetic and no shared code: seeded random shapes,
//! inputs and multipliers (built like codegen's `Multiplier::from_real`),
//! plus hand-computed cases for the rounding, clamping and lookup rules.
//! Every output byte must be equal (`assert_eq!`): int8 kernels have to agree
//! exactly with the oracle on every machine.

use derm_runtime::kernels::int8::{
    self, AddParams, ConvShape, DepthwiseShape, Epilogue, Mult, PointwiseShape, SeParams, SeShape,
    add::ADD_SHIFT, squeeze_excite::GATE_ONE,
};

/// xorshift64*: fixed and portable, so host and qemu runs see the same cases.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `lo..=hi` (up to a negligible modulo bias).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }
    /// Uniform in `[lo, hi)`.
    fn real(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Any int8 value (activations).
    fn act(&mut self) -> i8 {
        self.range(-128, 127) as i8
    }
    /// A weight, in `[-127, 127]`.
    fn weight(&mut self) -> i8 {
        self.range(-127, 127) as i8
    }
    /// A zero point, in `[-128, 127]`.
    fn zp(&mut self) -> i32 {
        self.range(-128, 127) as i32
    }
    fn acts(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.act()).collect()
    }
    fn weights(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.weight()).collect()
    }
    fn biases(&mut self, n: usize, max: i64) -> Vec<i32> {
        (0..n).map(|_| self.range(-max, max) as i32).collect()
    }
    /// `pixels x c` activations whose channels have different means, so
    /// channel statistics (pooling) spread over the int8 range.
    fn channel_acts(&mut self, pixels: usize, c: usize) -> Vec<i8> {
        let means: Vec<i64> = (0..c).map(|_| self.range(-100, 100)).collect();
        (0..pixels * c)
            .map(|i| (means[i % c] + self.range(-27, 27)) as i8)
            .collect()
    }
}

/// Codegen's constants for a real multiplier: `shift = 30 - floor(log2 r)`,
/// `m = round_ties_even(r * 2^shift)`, and `m = 2^31` becomes `2^30` with one
/// shift less.
fn from_real(r: f64) -> Mult {
    assert!(r > 0.0 && r.is_normal(), "{r}");
    let e = ((r.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let mut shift = 30 - e;
    let mut m = (r * 2f64.powi(shift)).round_ties_even();
    if m >= 2f64.powi(31) {
        m = 2f64.powi(30);
        shift -= 1;
    }
    assert!((1..=62).contains(&shift), "{r}: shift {shift}");
    Mult {
        m: m as i32,
        shift: shift as u8,
    }
}

/// `saturate_i32(floor((x * m + 2^(s - 1)) / 2^s))` in `i128`, with floor
/// division (no shifts); `x` must be a value the oracle's `i32` holds.
fn rq(x: i64, m: i32, s: u8) -> i64 {
    assert!(
        i32::try_from(x).is_ok(),
        "accumulator {x} outside i32: the test broke codegen's contract"
    );
    let num = x as i128 * m as i128 + (1i128 << (s - 1));
    num.div_euclid(1i128 << s)
        .clamp(i32::MIN as i128, i32::MAX as i128) as i64
}

fn rqm(x: i64, m: Mult) -> i64 {
    rq(x, m.m, m.shift)
}

fn sat8(v: i64) -> i8 {
    v.clamp(-128, 127) as i8
}

/// Fails when an output is degenerate (almost all one value or saturated),
/// so that a random case really exercises the arithmetic.
fn assert_spread(out: &[i8], what: &str) {
    if out.len() < 64 {
        return;
    }
    let mut seen = [false; 256];
    for &v in out {
        seen[(v as i32 + 128) as usize] = true;
    }
    let distinct = seen.iter().filter(|&&s| s).count();
    assert!(distinct >= 8, "{what}: only {distinct} distinct outputs");
}

/// The fused activation of a convolution or linear layer.
#[derive(Clone, Copy, Debug)]
enum Kind {
    None,
    Relu,
    Hardswish,
    /// The hardswish in `f32` from the accumulator (`Epilogue::float_hardswish`).
    FloatHardswish,
}

const KINDS: [Kind; 4] = [
    Kind::None,
    Kind::Relu,
    Kind::Hardswish,
    Kind::FloatHardswish,
];

/// An owned epilogue and its reference.
struct Epi {
    kind: Kind,
    mult: Vec<i32>,
    shift: Vec<u8>,
    /// `31 - shift` when every shift exceeds 31 (codegen then gives it to the epilogue);
    /// kernels are checked with both forms of the shifts ([`Epi::forms`]).
    high_shift: Option<Vec<i32>>,
    zero_point: i32,
    table: Box<[i8; 256]>,
    /// [`Kind::FloatHardswish`]: the accumulator's real scale per channel, and
    /// `1 / (6 * output scale)` per channel (as a per-channel output grid has it).
    scale: Vec<f32>,
    inv_scale: Vec<f32>,
}

impl Epi {
    /// Per-channel multipliers fitted to `acc` (element `i` in channel
    /// `i % channels`), so outputs spread over the int8 range with a few
    /// saturated; a random zero point and table.
    fn fit(rng: &mut Rng, kind: Kind, acc: &[i64], channels: usize) -> Self {
        let mut max = vec![1i64; channels];
        for (i, &a) in acc.iter().enumerate() {
            max[i % channels] = max[i % channels].max(a.abs());
        }
        Self::new(rng, kind, &max)
    }

    /// Multipliers for channels whose accumulators reach `max[c]` in
    /// magnitude: `max[c]` maps to 60..200 output steps.
    fn new(rng: &mut Rng, kind: Kind, max: &[i64]) -> Self {
        let (mult, shift): (Vec<i32>, Vec<u8>) = max
            .iter()
            .map(|&mx| {
                let m = from_real(rng.real(60.0, 200.0) / mx.max(1) as f64);
                (m.m, m.shift)
            })
            .unzip();
        let mut table = Box::new([0i8; 256]);
        for t in table.iter_mut() {
            *t = rng.act();
        }
        // A ReLU's output zero point is its range's bottom in practice;
        // a high one would leave only a few possible outputs.
        let zero_point = match kind {
            Kind::Relu => rng.range(-128, 0) as i32,
            _ => rng.zp(),
        };
        let high = shift.iter().all(|&s| s > 31);
        let high_shift = high.then(|| shift.iter().map(|&s| 31 - i32::from(s)).collect());
        // Float hardswish: `max[c]` maps to a pre-activation of 4..9 in magnitude (both
        // sides of hardswish's bends at -3 and 3); a unit of `h` is 6..16 output steps,
        // so typical accumulators spread over many outputs and the largest saturate.
        let scale = max
            .iter()
            .map(|&mx| (rng.real(4.0, 9.0) / mx.max(1) as f64) as f32)
            .collect();
        let inv_scale = max.iter().map(|_| rng.real(6.0, 16.0) as f32).collect();
        Self {
            kind,
            mult,
            shift,
            high_shift,
            zero_point,
            table,
            scale,
            inv_scale,
        }
    }

    /// The epilogue without and, where the shifts allow, with the high form of the shifts:
    /// the two must give the same bits, and kernels take different paths for them.
    fn forms(&self) -> Vec<(&'static str, Epilogue<'_>)> {
        if let Kind::FloatHardswish = self.kind {
            return vec![("float", self.get_plain())];
        }
        let mut v = vec![("plain shifts", self.get_plain())];
        if let Some(t) = &self.high_shift {
            v.push(("high shifts", self.get_plain().with_high_shifts(t)));
        }
        v
    }

    fn get_plain(&self) -> Epilogue<'_> {
        match self.kind {
            Kind::None | Kind::Relu => Epilogue::requant(
                &self.mult,
                &self.shift,
                self.zero_point,
                match self.kind {
                    Kind::Relu => self.zero_point as i8,
                    _ => -128,
                },
            ),
            Kind::Hardswish => {
                Epilogue::hardswish(&self.mult, &self.shift, self.zero_point, &self.table)
            }
            Kind::FloatHardswish => {
                Epilogue::float_hardswish(&self.scale, &self.inv_scale, self.zero_point)
            }
        }
    }

    /// The output for accumulator `acc` of channel `c`.
    fn reference(&self, acc: i64, c: usize) -> i8 {
        if let Kind::FloatHardswish = self.kind {
            return float_hardswish_ref(
                acc as i32,
                self.scale[c],
                self.inv_scale[c],
                self.zero_point,
            );
        }
        let v = self.zero_point as i64 + rq(acc, self.mult[c], self.shift[c]);
        match self.kind {
            Kind::None => sat8(v),
            Kind::Relu => v.clamp(self.zero_point as i64, 127) as i8,
            Kind::Hardswish => self.table[(sat8(v) as i64 + 128) as usize],
            Kind::FloatHardswish => unreachable!("returned above"),
        }
    }

    fn expected(&self, acc: &[i64], channels: usize) -> Vec<i8> {
        acc.iter()
            .enumerate()
            .map(|(i, &a)| self.reference(a, i % channels))
            .collect()
    }
}

/// The float hardswish epilogue as `docs/int8.md` states it, one `f32` operation at a
/// time: `f = f32(acc) * scale`, `h = f * clamp(f + 3, 0, 6)`, then the input
/// quantization rule on `h * inv_scale`.
fn float_hardswish_ref(acc: i32, scale: f32, inv_scale: f32, zero_point: i32) -> i8 {
    let f = acc as f32 * scale;
    let h = f * (f + 3.0).clamp(0.0, 6.0);
    quantize_ref(h, inv_scale, zero_point)
}

/// `(len + 2 * pad - k) / stride + 1`.
fn out_len(len: usize, k: usize, stride: usize, pad: usize) -> usize {
    (len + 2 * pad - k) / stride + 1
}

// ---------------------------------------------------------------- quantize

fn quantize_ref(x: f32, inv: f32, zp: i32) -> i8 {
    let v = x * inv;
    let v = if v.is_nan() {
        0.0
    } else {
        v.clamp(-1024.0, 1024.0)
    };
    sat8(zp as i64 + v.round_ties_even() as i64)
}

#[test]
fn quantize_rounds_ties_to_even_and_saturates() {
    let inv = 1.0;
    let cases: &[(f32, i32, i8)] = &[
        (0.5, 0, 0),
        (1.5, 0, 2),
        (2.5, 0, 2),
        (3.5, 0, 4),
        (-0.5, 0, 0),
        (-1.5, 0, -2),
        (-2.5, 0, -2),
        (0.499_999_97, 0, 0),
        (0.500_000_06, 0, 1),
        (-0.0, 9, 9),
        (126.5, 0, 126),
        (127.5, 0, 127),
        (-127.5, 0, -128),
        (100.5, 20, 120),
        (-100.5, -20, -120),
        // Beyond +-1024 the clamp applies before the zero point.
        (2000.0, -128, 127),
        (-2000.0, 127, -128),
        (1e30, 5, 127),
        (-1e30, 5, -128),
        (f32::INFINITY, -128, 127),
        (f32::NEG_INFINITY, 127, -128),
        (f32::NAN, -7, -7),
        (-f32::NAN, 100, 100),
    ];
    let xs: Vec<f32> = cases.iter().map(|c| c.0).collect();
    for (i, &(x, zp, want)) in cases.iter().enumerate() {
        let mut out = [0i8; 1];
        int8::quantize(&xs[i..=i], inv, zp, &mut out);
        assert_eq!(out[0], want, "quantize({x}, {inv}, {zp})");
        assert_eq!(quantize_ref(x, inv, zp), want, "reference({x})");
        assert_eq!(int8::quantize_one(x, inv, zp), want, "quantize_one({x})");
        // The same value in every lane of the vector variants, and in their tails.
        let mut out = [0i8; 37];
        int8::quantize(&[x; 37], inv, zp, &mut out);
        assert_eq!(out, [want; 37], "quantize([{x}; 37], {inv}, {zp})");
    }
    // Zero points outside int8 (no model file has one, the rule still defines them): the
    // clamp to [-1024, 1024] comes before the zero point.
    for (x, zp) in [
        (-2000.0, 1100),
        (2000.0, -1100),
        (0.0, 5000),
        (-1e30, 1100),
        (f32::NAN, 999),
    ] {
        let mut out = [0i8; 19];
        int8::quantize(&[x; 19], inv, zp, &mut out);
        assert_eq!(
            out,
            [quantize_ref(x, inv, zp); 19],
            "quantize({x}, zero point {zp})"
        );
    }
    // docs/int8.md's examples: 0.5 * 2 = 1, 1.25 * 2 = 2.5 -> 2.
    let mut out = [0i8; 2];
    int8::quantize(&[0.5, 1.25], 2.0, 0, &mut out);
    assert_eq!(out, [1, 2]);
    // The NaN comes from the product: 0 * inf.
    int8::quantize(&[0.0, 1.0], f32::INFINITY, 3, &mut out);
    assert_eq!(out, [3, 127]);
}

#[test]
fn quantize_matches_reference_on_every_quarter_and_random_values() {
    // Every multiple of 1/4 (all ties included) in [-300, 300], seen
    // through zero points that shift the whole window into range.
    let xs: Vec<f32> = (-1200..=1200).map(|n| n as f32 / 4.0).collect();
    for zp in [-128, -40, 0, 77, 127] {
        let mut out = vec![0i8; xs.len()];
        int8::quantize(&xs, 1.0, zp, &mut out);
        let want: Vec<i8> = xs.iter().map(|&x| quantize_ref(x, 1.0, zp)).collect();
        assert_eq!(out, want, "zero point {zp}");
    }
    let mut rng = Rng(0x5eed_0001);
    for round in 0..20 {
        // Even rounds: a power-of-two inverse scale, so that inputs
        // (n + 1/2) / inv are exact ties of the product.
        let inv = match round % 2 {
            0 => (4 << (round % 8 / 2)) as f32,
            _ => rng.real(5.0, 60.0) as f32,
        };
        let zp = rng.zp();
        let xs: Vec<f32> = (0..3 * 17 * 13)
            .map(|i| match (round % 2, i % 3) {
                (0, 0) => (rng.range(-200, 200) as f32 + 0.5) / inv,
                _ => rng.real(-4.0, 4.0) as f32,
            })
            .collect();
        let mut out = vec![0i8; xs.len()];
        int8::quantize(&xs, inv, zp, &mut out);
        let want: Vec<i8> = xs.iter().map(|&x| quantize_ref(x, inv, zp)).collect();
        assert_eq!(out, want, "inv {inv} zp {zp}");
        assert_spread(&out, "quantize");
    }
}

// ---------------------------------------------------------------- conv_stem

fn conv_stem_ref(x: &[i8], s: ConvShape, zx: i32, w: &[i8], bias: &[i32]) -> Vec<i64> {
    let mut acc = vec![0i64; s.oh * s.ow * s.cout];
    for oy in 0..s.oh {
        for ox in 0..s.ow {
            for co in 0..s.cout {
                let mut a = bias[co] as i64;
                for ky in 0..s.kh {
                    for kx in 0..s.kw {
                        let iy = (oy * s.stride + ky) as i64 - s.pad as i64;
                        let ix = (ox * s.stride + kx) as i64 - s.pad as i64;
                        if iy < 0 || ix < 0 || iy >= s.ih as i64 || ix >= s.iw as i64 {
                            continue;
                        }
                        for ci in 0..s.cin {
                            let xv = x[ci * s.ih * s.iw + iy as usize * s.iw + ix as usize];
                            let wv = w[((ky * s.kw + kx) * s.cin + ci) * s.cout + co];
                            a += wv as i64 * (xv as i64 - zx as i64);
                        }
                    }
                }
                acc[(oy * s.ow + ox) * s.cout + co] = a;
            }
        }
    }
    acc
}

#[allow(clippy::too_many_arguments)]
fn conv_shape(
    ih: usize,
    iw: usize,
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
) -> ConvShape {
    ConvShape {
        ih,
        iw,
        cin,
        cout,
        kh,
        kw,
        stride,
        pad,
        oh: out_len(ih, kh, stride, pad),
        ow: out_len(iw, kw, stride, pad),
    }
}

type StemFn = fn(&[i8], ConvShape, i32, &[i8], &[i32], Epilogue<'_>, &mut [i8]);

/// Every stem variant this machine can run.
fn conv_stem_variants() -> Vec<(&'static str, StemFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, StemFn)> = vec![
        ("dispatch", int8::conv_stem),
        ("portable", int8::conv_stem::portable),
    ];
    #[cfg(target_arch = "x86_64")]
    if derm_runtime::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2.
        v.push(("avx2", |x, s, z, w, b, e, o| unsafe {
            int8::conv_stem::avx2::conv_stem(x, s, z, w, b, e, o)
        }));
    }
    #[cfg(target_arch = "x86_64")]
    if derm_runtime::kernels::has_avx512_vnni() {
        // SAFETY: the CPU supports AVX-512.
        v.push(("avx512", |x, s, z, w, b, e, o| unsafe {
            int8::conv_stem::avx512::conv_stem(x, s, z, w, b, e, o)
        }));
    }
    v
}

#[test]
fn conv_stem_matches_reference() {
    let mut rng = Rng(0x5eed_0002);
    let shapes = [
        conv_shape(9, 7, 3, 70, 3, 3, 2, 1),
        conv_shape(8, 8, 3, 13, 5, 5, 1, 2),
        conv_shape(6, 5, 3, 16, 3, 3, 1, 1),
        conv_shape(11, 10, 3, 130, 3, 3, 2, 1),
        conv_shape(4, 4, 2, 64, 5, 5, 1, 2),
        conv_shape(7, 8, 3, 20, 3, 5, 1, 2),
        conv_shape(5, 6, 3, 3, 3, 3, 1, 0),
        // 7 x 7 x 3 = 147 window values: more than the gathered patch
        // holds, so the tap-by-tap path.
        conv_shape(10, 9, 3, 24, 7, 7, 2, 3),
        // Rows wide enough for aarch64's vector gather of interior windows (8 bytes from a
        // window's first column), beside edge windows that take the scalar gather.
        conv_shape(13, 24, 3, 16, 3, 3, 2, 1),
        conv_shape(9, 20, 3, 8, 5, 5, 1, 2),
    ];
    for s in shapes {
        for kind in KINDS {
            let zx = rng.zp();
            let x = rng.acts(s.cin * s.ih * s.iw);
            let w = rng.weights(s.kh * s.kw * s.cin * s.cout);
            let bias = rng.biases(s.cout, 1 << 16);
            let acc = conv_stem_ref(&x, s, zx, &w, &bias);
            let e = Epi::fit(&mut rng, kind, &acc, s.cout);
            let want = e.expected(&acc, s.cout);
            for (name, f) in conv_stem_variants() {
                for (form, ep) in e.forms() {
                    let mut out = vec![0i8; s.oh * s.ow * s.cout];
                    f(&x, s, zx, &w, &bias, ep, &mut out);
                    assert_eq!(out, want, "{name} {s:?} {kind:?} {form}");
                    assert_spread(&out, "conv_stem");
                }
            }
        }
    }
}

// ---------------------------------------------------------------- depthwise

fn depthwise_ref(x: &[i8], s: DepthwiseShape, zx: i32, w: &[i8], bias: &[i32]) -> Vec<i64> {
    let mut acc = vec![0i64; s.oh * s.ow * s.c];
    for oy in 0..s.oh {
        for ox in 0..s.ow {
            for ch in 0..s.c {
                let mut a = bias[ch] as i64;
                for ky in 0..s.k {
                    for kx in 0..s.k {
                        let iy = (oy * s.stride + ky) as i64 - s.pad as i64;
                        let ix = (ox * s.stride + kx) as i64 - s.pad as i64;
                        if iy < 0 || ix < 0 || iy >= s.ih as i64 || ix >= s.iw as i64 {
                            continue;
                        }
                        let xv = x[(iy as usize * s.iw + ix as usize) * s.c + ch];
                        let wv = w[(ky * s.k + kx) * s.c + ch];
                        a += wv as i64 * (xv as i64 - zx as i64);
                    }
                }
                acc[(oy * s.ow + ox) * s.c + ch] = a;
            }
        }
    }
    acc
}

fn dw_shape(ih: usize, iw: usize, c: usize, k: usize, stride: usize, pad: usize) -> DepthwiseShape {
    DepthwiseShape {
        ih,
        iw,
        c,
        k,
        stride,
        pad,
        oh: out_len(ih, k, stride, pad),
        ow: out_len(iw, k, stride, pad),
    }
}

type DepthwiseFn = fn(&[i8], DepthwiseShape, i32, &[i8], &[i32], Epilogue<'_>, &mut [i8]);

/// Every depthwise variant this machine can run.
fn depthwise_variants() -> Vec<(&'static str, DepthwiseFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, DepthwiseFn)> = vec![
        ("dispatch", int8::depthwise),
        ("portable", int8::depthwise::portable),
    ];
    #[cfg(target_arch = "x86_64")]
    if derm_runtime::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2.
        v.push(("avx2", |x, s, z, w, b, e, o| unsafe {
            int8::depthwise::avx2::depthwise(x, s, z, w, b, e, o)
        }));
    }
    #[cfg(target_arch = "x86_64")]
    if derm_runtime::kernels::has_avx512_vnni() {
        // SAFETY: the CPU supports AVX-512.
        v.push(("avx512", |x, s, z, w, b, e, o| unsafe {
            int8::depthwise::avx512::depthwise(x, s, z, w, b, e, o)
        }));
    }
    v
}

#[test]
fn depthwise_matches_reference() {
    let mut rng = Rng(0x5eed_0003);
    let shapes = [
        dw_shape(7, 9, 3, 3, 1, 1),
        dw_shape(8, 8, 13, 3, 2, 1),
        dw_shape(9, 7, 70, 5, 1, 2),
        dw_shape(10, 11, 70, 5, 2, 2),
        dw_shape(5, 5, 130, 3, 2, 0),
        dw_shape(4, 4, 13, 5, 1, 2),
        dw_shape(3, 3, 8, 5, 2, 2),
        // Larger maps that still fit the AVX-512 variant's padded copy (up to 96 KiB
        // padded; its blocks keep their weights in registers for 3x3 and 5x5 kernels)...
        dw_shape(40, 40, 32, 3, 1, 1),
        dw_shape(30, 30, 48, 5, 2, 2),
        // ... and inputs too large for it: their border pixels take the tap-by-tap rows,
        // the others the VNNI form.
        dw_shape(58, 58, 32, 3, 1, 1),
        dw_shape(50, 50, 40, 5, 2, 2),
        // ... among them MobileNetV3-Small's first two at 224x224 in miniature: 16
        // channels (one half-filled block) and 72 (a last block of 8), 3x3 stride 2.
        dw_shape(80, 80, 16, 3, 2, 1),
        dw_shape(40, 40, 72, 3, 2, 1),
        // Channels a multiple of 8 but not of 16 (MobileNetV3's 24, 72, 88, 120): the
        // aarch64 interior form's blocks of 16 and its last block of 8, both kernel sizes.
        dw_shape(9, 9, 24, 3, 1, 1),
        dw_shape(11, 11, 72, 5, 2, 2),
        // No padding (the aarch64 form reads the input in place, pixels in pairs with one
        // left over), and a 7x7 kernel (its general tap count).
        dw_shape(9, 8, 24, 3, 1, 0),
        dw_shape(12, 11, 40, 7, 2, 3),
    ];
    for s in shapes {
        for kind in KINDS {
            let zx = rng.zp();
            let x = rng.acts(s.ih * s.iw * s.c);
            let w = rng.weights(s.k * s.k * s.c);
            let bias = rng.biases(s.c, 1 << 15);
            let acc = depthwise_ref(&x, s, zx, &w, &bias);
            let e = Epi::fit(&mut rng, kind, &acc, s.c);
            let want = e.expected(&acc, s.c);
            for (name, f) in depthwise_variants() {
                for (form, ep) in e.forms() {
                    let mut out = vec![0i8; s.oh * s.ow * s.c];
                    f(&x, s, zx, &w, &bias, ep, &mut out);
                    assert_eq!(out, want, "{name} {s:?} {kind:?} {form}");
                    assert_spread(&out, "depthwise");
                }
            }
        }
    }
}

// ---------------------------------------------------- pointwise and linear

/// `b[j] + sum_i w[j][i] * (x[p][i] - zx)`: the oracle's form, without the
/// folded bias the kernels take.
fn gemm_ref(x: &[i8], pixels: usize, k: usize, zx: i32, w: &[i8], b: &[i32]) -> Vec<i64> {
    let n = b.len();
    let mut acc = vec![0i64; pixels * n];
    for p in 0..pixels {
        for j in 0..n {
            acc[p * n + j] = b[j] as i64
                + (0..k)
                    .map(|i| w[j * k + i] as i64 * (x[p * k + i] as i64 - zx as i64))
                    .sum::<i64>();
        }
    }
    acc
}

/// Codegen's folding of the input zero point into the bias:
/// `b[j] - zx * sum_i w[j][i]`.
fn fold(b: &[i32], w: &[i8], k: usize, zx: i32) -> Vec<i32> {
    b.iter()
        .enumerate()
        .map(|(j, &bj)| {
            let sw: i64 = w[j * k..(j + 1) * k].iter().map(|&v| v as i64).sum();
            i32::try_from(bj as i64 - zx as i64 * sw).expect("folded bias fits i32")
        })
        .collect()
}

type PointwiseFn = fn(&[i8], PointwiseShape, &[i8], &[i32], Epilogue<'_>, &mut [i8]);

/// Every pointwise variant this machine can run.
fn pointwise_variants() -> Vec<(&'static str, PointwiseFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, PointwiseFn)> = vec![
        ("dispatch", int8::pointwise),
        ("portable", int8::pointwise::portable),
        #[cfg(target_arch = "aarch64")]
        ("neon", int8::pointwise::neon::pointwise),
    ];
    #[cfg(target_arch = "x86_64")]
    if derm_runtime::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2.
        v.push(("avx2", |x, s, w, b, e, o| unsafe {
            int8::pointwise::avx2::pointwise(x, s, w, b, e, o)
        }));
    }
    #[cfg(target_arch = "x86_64")]
    if derm_runtime::kernels::has_avx512_vnni() {
        // SAFETY: the CPU supports AVX-512 VNNI.
        v.push(("avx512vnni", |x, s, w, b, e, o| unsafe {
            int8::pointwise::avx512vnni::pointwise(x, s, w, b, e, o)
        }));
    }
    v
}

#[test]
fn pointwise_matches_reference_with_folded_bias() {
    let mut rng = Rng(0x5eed_0004);
    // k covers the vector variants' 16-channel steps, their 8-channel tail
    // and the scalar rest (77 = 4 * 16 + 8 + 5); pixels and n cover full
    // tiles and both edges.
    let shapes = [
        (1, 3, 3),
        (5, 13, 70),
        (7, 70, 13),
        (13, 64, 130),
        (30, 16, 64),
        (9, 24, 10),
        (6, 40, 19),
        (5, 77, 9),
        (4, 144, 8),
        // Many pixels (the AVX-512 VNNI variant's packed form: at least 16
        // pixels, k a multiple of 4 up to 1024, blocks of 16 channels with a
        // tail, tiles of 8 pixels with a rest), and its neighbours.
        (70, 16, 72),
        (64, 24, 40),
        (100, 96, 19),
        (65, 128, 16),
        (64, 132, 8),
        (64, 18, 20),
        // More pixels than the packed form's chunk of input sums (4096), and
        // k past 576 with a tail below 64 bytes.
        (4100, 4, 20),
        (17, 580, 18),
    ];
    let variants = pointwise_variants();
    for (pixels, k, n) in shapes {
        let s = PointwiseShape { pixels, k, n };
        for kind in KINDS {
            let zx = rng.zp();
            let x = rng.acts(pixels * k);
            let w = rng.weights(n * k);
            let b = rng.biases(n, 1 << 15);
            let acc = gemm_ref(&x, pixels, k, zx, &w, &b);
            let e = Epi::fit(&mut rng, kind, &acc, n);
            let want = e.expected(&acc, n);
            let folded = fold(&b, &w, k, zx);
            for (name, f) in &variants {
                for (form, ep) in e.forms() {
                    let mut out = vec![0i8; pixels * n];
                    f(&x, s, &w, &folded, ep, &mut out);
                    assert_eq!(out, want, "{name} {s:?} {kind:?} {form}");
                    assert_spread(&out, "pointwise");
                }
            }
        }
    }
}

type LinearFn = fn(&[i8], usize, &[i8], &[i32], Epilogue<'_>, &mut [i8]);

/// Every linear variant this machine can run.
fn linear_variants() -> Vec<(&'static str, LinearFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, LinearFn)> = vec![
        ("dispatch", int8::linear),
        ("portable", int8::linear::portable),
    ];
    #[cfg(target_arch = "x86_64")]
    if derm_runtime::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2.
        v.push(("avx2", |x, k, w, b, e, o| unsafe {
            int8::linear::avx2::linear(x, k, w, b, e, o)
        }));
    }
    #[cfg(target_arch = "x86_64")]
    if derm_runtime::kernels::has_avx512_vnni() {
        // SAFETY: the CPU supports AVX-512.
        v.push(("avx512", |x, k, w, b, e, o| unsafe {
            int8::linear::avx512::linear(x, k, w, b, e, o)
        }));
    }
    v
}

#[test]
fn linear_matches_reference_with_folded_bias() {
    let mut rng = Rng(0x5eed_0005);
    let variants = linear_variants();
    // k covers one 256-input chunk of the GEMV, several and a rest; n
    // covers one 64-channel chunk, several and a rest.
    for (k, n) in [(1, 3), (13, 64), (70, 65), (576, 200), (1024, 7)] {
        for kind in KINDS {
            let zx = rng.zp();
            let x = rng.acts(k);
            let w = rng.weights(n * k);
            let b = rng.biases(n, 1 << 15);
            let acc = gemm_ref(&x, 1, k, zx, &w, &b);
            // One accumulator per channel: multipliers fitted to the whole
            // row keep the outputs spread.
            let mx = acc.iter().map(|a| a.abs()).max().unwrap();
            let e = Epi::new(&mut rng, kind, &vec![mx; n]);
            let want = e.expected(&acc, n);
            for (name, f) in &variants {
                for (form, ep) in e.forms() {
                    let mut out = vec![0i8; n];
                    f(&x, k, &w, &fold(&b, &w, k, zx), ep, &mut out);
                    assert_eq!(out, want, "{name} k {k} n {n} {kind:?} {form}");
                    assert_spread(&out, "linear");
                }
            }
        }
    }
}

#[test]
fn linear_logits_match_reference() {
    let mut rng = Rng(0x5eed_0006);
    for (k, n) in [(1, 3), (13, 7), (576, 8), (1024, 70)] {
        let zx = rng.zp();
        let x = rng.acts(k);
        let w = rng.weights(n * k);
        // Accumulators beyond 2^24, so the i32 -> f32 conversion rounds.
        let b = rng.biases(n, 1 << 30);
        let scale: Vec<f32> = (0..n).map(|_| rng.real(1e-5, 1e-2) as f32).collect();
        let acc = gemm_ref(&x, 1, k, zx, &w, &b);
        let mut out = vec![0f32; n];
        int8::linear_logits(&x, k, &w, &fold(&b, &w, k, zx), &scale, &mut out);
        for j in 0..n {
            let want = acc[j] as i32 as f32 * scale[j];
            assert_eq!(out[j].to_bits(), want.to_bits(), "k {k} n {n} j {j}");
        }
    }
    // One rounding in the conversion (2^24 + 1 and 2^24 + 3 tie to even),
    // one in the multiply: 16777220 * 3 is exact in f32, while the exact
    // 16777219 * 3 = 50331657 would round to 50331656.
    let mut out = [0f32; 4];
    int8::linear_logits(
        &[5],
        1,
        &[0, 0, 2, 0],
        &[16_777_217, -3, 1, 16_777_219],
        &[1.0, 0.5, 0.1, 3.0],
        &mut out,
    );
    assert_eq!(out, [16_777_216.0, -1.5, 11.0 * 0.1f32, 50_331_660.0]);
}

#[test]
fn accumulators_wrap_like_the_oracles_i64_sum_cast() {
    // A partial sum of 140,000 products 127 * 127 leaves i32 (2.26e9), the
    // next 140,000 products 127 * -128 bring the total back to -1,820,000:
    // wrapping i32 adds give that total exactly, in any order, as the
    // oracle's i64 sum `as i32` does (and no overflow panic in debug
    // builds). This k is beyond what codegen accepts; it only shows the
    // arithmetic.
    let half = 140_000;
    let x: Vec<i8> = (0..2 * half)
        .map(|i| if i < half { 127 } else { -128 })
        .collect();
    let w = vec![127i8; 2 * half];
    let mut out = [0f32; 1];
    int8::linear_logits(&x, 2 * half, &w, &[5], &[1.0], &mut out);
    assert_eq!(out[0], (5 - 140_000 * 127) as f32);
}

#[test]
fn epilogue_rounding_relu_floor_and_hardswish_index() {
    let half = from_real(0.5);
    assert_eq!(
        half,
        Mult {
            m: 1 << 30,
            shift: 31
        }
    );
    // w = 0, so acc = bias: requant(acc, 1/2) rounds ties toward +inf.
    let bias = [0, 2, -2, 1, -1, -3, 3, 1000, -1000];
    let n = bias.len();
    let w = vec![0i8; n];
    let mult = vec![half.m; n];
    let shift = vec![half.shift; n];
    let mut out = vec![0i8; n];
    let plain = Epilogue::requant(&mult, &shift, 5, -128);
    int8::linear(&[9], 1, &w, &bias, plain, &mut out);
    assert_eq!(out, [5, 6, 4, 6, 5, 4, 7, 127, -128]);
    // ReLU: the floor is the zero point (real 0).
    let relu = Epilogue::requant(&mult, &shift, 17, 17);
    int8::linear(&[9], 1, &w, &bias, relu, &mut out);
    assert_eq!(out, [17, 18, 17, 18, 17, 17, 19, 127, 17]);
    // Hardswish: a = sat8(5 + requant) = [5, 6, 4, 6, 5, 4, 7, 127, -128],
    // looked up at a + 128.
    let mut table = [0i8; 256];
    for (i, t) in table.iter_mut().enumerate() {
        *t = ((i * 37 + 11) % 256) as u8 as i8;
    }
    let hs = Epilogue::hardswish(&mult, &shift, 5, &table);
    int8::linear(&[9], 1, &w, &bias, hs, &mut out);
    let idx = [133, 134, 132, 134, 133, 132, 135, 255, 0];
    let want: Vec<i8> = idx.iter().map(|&i| table[i]).collect();
    assert_eq!(out, want);
    // Epilogue::apply and slice directly: channel c uses mult[c].
    let m = [from_real(1.0).m, from_real(0.25).m];
    let sh = [from_real(1.0).shift, from_real(0.25).shift];
    let e = Epilogue::requant(&m, &sh, 0, -128);
    let mut o = [0i8; 2];
    e.apply(&[10, 10], &mut o);
    assert_eq!(o, [10, 3]); // 10 / 4 = 2.5 -> 3
    let mut o1 = [0i8; 1];
    e.slice(1..2).apply(&[-10], &mut o1);
    assert_eq!(o1, [-2]); // -2.5 -> -2
    // The second form of shifts above 31 (`31 - s`) gives the same bits, also sliced, on
    // rows long enough for the vector bodies: 0.25 has shift 32.
    let quarter = from_real(0.25);
    let m = vec![quarter.m; 19];
    let sh = vec![quarter.shift; 19];
    let t = vec![31 - i32::from(quarter.shift); 19];
    let acc: Vec<i32> = (0..19).map(|i| i * 37 - 300).collect();
    let (mut plain, mut high) = ([0i8; 19], [0i8; 19]);
    Epilogue::requant(&m, &sh, 3, -128).apply(&acc, &mut plain);
    let e = Epilogue::requant(&m, &sh, 3, -128).with_high_shifts(&t);
    e.apply(&acc, &mut high);
    assert_eq!(plain, high);
    let want: Vec<i8> = acc
        .iter()
        .map(|&a| sat8(3 + rq(i64::from(a), m[0], sh[0])))
        .collect();
    assert_eq!(high.to_vec(), want);
    let mut part = [0i8; 11];
    e.slice(8..19).apply(&acc[8..], &mut part);
    assert_eq!(part, high[8..]);
}

// ---------------------------------------------------------------- pool

#[test]
fn global_avg_pool_matches_reference() {
    let mut rng = Rng(0x5eed_0007);
    for (pixels, c) in [(1, 3), (7, 13), (49, 70), (50, 130), (3, 64)] {
        let zx = rng.zp();
        let zy = rng.zp();
        let x = rng.channel_acts(pixels, c);
        let mult = from_real(rng.real(0.3, 1.0) / pixels as f64);
        let mut out = vec![0i8; c];
        int8::global_avg_pool(&x, pixels, zx, mult, zy, &mut out);
        let want: Vec<i8> = (0..c)
            .map(|ch| {
                let sum: i64 = (0..pixels).map(|p| x[p * c + ch] as i64 - zx as i64).sum();
                sat8(zy as i64 + rqm(sum, mult))
            })
            .collect();
        assert_eq!(out, want, "pixels {pixels} c {c}");
        assert_spread(&out, "pool");
    }
    // Mean of [1, 2] with an exact 1/2: 1.5 rounds up; of [-1, -2]: -1.5 -> -1.
    let mut out = [0i8; 2];
    int8::global_avg_pool(&[1, -1, 2, -2], 2, 0, from_real(0.5), 0, &mut out);
    assert_eq!(out, [2, -1]);
}

// ---------------------------------------------------------------- add

fn add_ref(a: i8, b: i8, p: &AddParams) -> i8 {
    let sa = rqm(
        (a as i64 - p.zero_points[0] as i64) << ADD_SHIFT,
        p.mults[0],
    );
    let sb = rqm(
        (b as i64 - p.zero_points[1] as i64) << ADD_SHIFT,
        p.mults[1],
    );
    sat8(p.out_zero_point as i64 + rqm(sa + sb, p.out_mult))
}

#[test]
fn add_matches_reference() {
    let mut rng = Rng(0x5eed_0008);
    for len in [1, 7, 63, 64, 65, 200, 1000] {
        let (sa, sb) = (rng.real(0.01, 0.1), rng.real(0.01, 0.1));
        // An output scale like calibration's: the sum's range is about both
        // inputs' ranges together.
        let sy = (sa + sb) * rng.real(0.6, 1.2);
        let big = 2.0 * sa.max(sb);
        let p = AddParams {
            zero_points: [rng.zp(), rng.zp()],
            mults: [from_real(sa / big), from_real(sb / big)],
            out_mult: from_real(big / (2f64.powi(20) * sy)),
            out_zero_point: rng.zp(),
        };
        let a = rng.acts(len);
        let b = rng.acts(len);
        let mut out = vec![0i8; len];
        int8::add(&a, &b, &p, &mut out);
        let want: Vec<i8> = a.iter().zip(&b).map(|(&u, &v)| add_ref(u, v, &p)).collect();
        assert_eq!(out, want, "len {len} {p:?}");
        // The portable source beside the variant the dispatch chose.
        let mut portable = vec![0i8; len];
        int8::add::portable(&a, &b, &p, &mut portable);
        assert_eq!(portable, want, "portable, len {len} {p:?}");
        assert_spread(&out, "add");
    }
}

#[test]
fn add_of_equal_scales_is_the_integer_sum() {
    // s_a = s_b = s_y: the inputs get 1/2 (exact), the output 2^-19 (exact),
    // so y = sat8(zy + (a - za) + (b - zb)) with no rounding at all.
    let p = AddParams {
        zero_points: [3, -5],
        mults: [from_real(0.5), from_real(0.5)],
        out_mult: from_real(2f64.powi(-19)),
        out_zero_point: 10,
    };
    assert_eq!(
        p.out_mult,
        Mult {
            m: 1 << 30,
            shift: 49
        }
    );
    let a = [3, 0, 50, -128, 127, 100, -60, 13];
    let b = [-5, 0, 20, -128, 127, 100, 30, -20];
    let mut out = [0i8; 8];
    int8::add(&a, &b, &p, &mut out);
    assert_eq!(out, [10, 12, 82, -128, 127, 127, -18, 5]);
    for (i, (&u, &v)) in a.iter().zip(&b).enumerate() {
        assert_eq!(out[i], add_ref(u, v, &p));
    }
}

// ---------------------------------------------------------------- squeeze-excite

/// Owned constants of one squeeze-excite block.
struct Se {
    zx: i32,
    pool_mult: Mult,
    zp: i32,
    w1: Vec<i8>,
    b1: Vec<i32>,
    m1: Vec<Mult>,
    zh: i32,
    w2: Vec<i8>,
    b2: Vec<i32>,
    mg: Vec<Mult>,
    out_mult: Mult,
    zy: i32,
}

/// Split multipliers, as the kernel takes them.
struct SeSplit {
    m1: Vec<i32>,
    s1: Vec<u8>,
    mg: Vec<i32>,
    sg: Vec<u8>,
}

impl Se {
    fn split(&self) -> SeSplit {
        SeSplit {
            m1: self.m1.iter().map(|m| m.m).collect(),
            s1: self.m1.iter().map(|m| m.shift).collect(),
            mg: self.mg.iter().map(|m| m.m).collect(),
            sg: self.mg.iter().map(|m| m.shift).collect(),
        }
    }

    fn params<'a>(&'a self, s: &'a SeSplit) -> SeParams<'a> {
        SeParams {
            x_zero_point: self.zx,
            pool_mult: self.pool_mult,
            pooled_zero_point: self.zp,
            fc1_weight: &self.w1,
            fc1_bias: &self.b1,
            fc1_mult: &s.m1,
            fc1_shift: &s.s1,
            hidden_zero_point: self.zh,
            fc2_weight: &self.w2,
            fc2_bias: &self.b2,
            gate_mult: &s.mg,
            gate_shift: &s.sg,
            out_mult: self.out_mult,
            out_zero_point: self.zy,
        }
    }

    /// `p[c] - zp` of docs/int8.md.
    fn pooled(&self, x: &[i8], s: SeShape) -> Vec<i64> {
        (0..s.c)
            .map(|ch| {
                let sum: i64 = (0..s.pixels)
                    .map(|p| x[p * s.c + ch] as i64 - self.zx as i64)
                    .sum();
                sat8(self.zp as i64 + rqm(sum, self.pool_mult)) as i64 - self.zp as i64
            })
            .collect()
    }

    /// fc1's accumulators.
    fn acc1(&self, pooled: &[i64], s: SeShape) -> Vec<i64> {
        (0..s.squeeze)
            .map(|j| {
                self.b1[j] as i64
                    + (0..s.c)
                        .map(|i| self.w1[j * s.c + i] as i64 * pooled[i])
                        .sum::<i64>()
            })
            .collect()
    }

    /// `h[j] - zh`.
    fn hidden(&self, acc1: &[i64]) -> Vec<i64> {
        let zh = self.zh as i64;
        acc1.iter()
            .zip(&self.m1)
            .map(|(&a, &m)| (zh + rqm(a, m)).clamp(zh, 127) - zh)
            .collect()
    }

    /// fc2's accumulators.
    fn acc2(&self, hidden: &[i64], s: SeShape) -> Vec<i64> {
        (0..s.c)
            .map(|ch| {
                self.b2[ch] as i64
                    + (0..s.squeeze)
                        .map(|j| self.w2[ch * s.squeeze + j] as i64 * hidden[j])
                        .sum::<i64>()
            })
            .collect()
    }

    fn gate(&self, acc2: &[i64]) -> Vec<i64> {
        acc2.iter()
            .zip(&self.mg)
            .map(|(&a, &m)| (rqm(a, m) + GATE_ONE as i64 / 2).clamp(0, GATE_ONE as i64))
            .collect()
    }

    fn output(&self, x: &[i8], gate: &[i64], s: SeShape) -> Vec<i8> {
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let prod = (v as i64 - self.zx as i64) * gate[i % s.c];
                sat8(self.zy as i64 + rqm(prod, self.out_mult))
            })
            .collect()
    }

    fn reference(&self, x: &[i8], s: SeShape) -> Vec<i8> {
        let hidden = self.hidden(&self.acc1(&self.pooled(x, s), s));
        self.output(x, &self.gate(&self.acc2(&hidden, s)), s)
    }

    /// Runs every variant this machine can run on a copy of `x` with a
    /// scratch of `2c + squeeze` (plus `extra`) values filled with junk;
    /// asserts that they agree and returns their output.
    fn run(&self, x: &[i8], s: SeShape, extra: usize) -> Vec<i8> {
        let split = self.split();
        let mut outs = Vec::new();
        for (name, f) in se_variants() {
            let mut y = x.to_vec();
            let mut scratch = vec![0x5a5a_5a5a_i32; 2 * s.c + s.squeeze + extra];
            f(&mut y, s, &self.params(&split), &mut scratch);
            outs.push((name, y));
        }
        for (name, y) in &outs[1..] {
            assert_eq!(y, &outs[0].1, "{name} against {} {s:?}", outs[0].0);
        }
        outs.swap_remove(0).1
    }
}

type SeFn = fn(&mut [i8], SeShape, &SeParams<'_>, &mut [i32]);

/// Every squeeze-and-excite variant this machine can run.
fn se_variants() -> Vec<(&'static str, SeFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, SeFn)> = vec![
        ("dispatch", int8::squeeze_excite),
        ("portable", int8::squeeze_excite::portable),
    ];
    #[cfg(target_arch = "x86_64")]
    if derm_runtime::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA.
        v.push(("avx2", |x, s, p, t| unsafe {
            int8::squeeze_excite::avx2::squeeze_excite(x, s, p, t)
        }));
    }
    #[cfg(target_arch = "x86_64")]
    if derm_runtime::kernels::has_avx512_vnni() {
        // SAFETY: the CPU supports AVX-512.
        v.push(("avx512", |x, s, p, t| unsafe {
            int8::squeeze_excite::avx512::squeeze_excite(x, s, p, t)
        }));
    }
    v
}

/// Random constants with each stage's multipliers fitted to the previous
/// stage's values, so every stage's outputs spread.
fn random_se(rng: &mut Rng, x: &[i8], s: SeShape) -> Se {
    let mut se = Se {
        zx: rng.zp(),
        pool_mult: from_real(rng.real(0.4, 1.0) / s.pixels as f64),
        zp: rng.zp(),
        w1: rng.weights(s.squeeze * s.c),
        b1: rng.biases(s.squeeze, 5000),
        m1: Vec::new(),
        zh: rng.range(-128, 0) as i32,
        w2: rng.weights(s.c * s.squeeze),
        b2: rng.biases(s.c, 5000),
        mg: Vec::new(),
        out_mult: from_real(rng.real(0.5, 1.0) / GATE_ONE as f64),
        zy: rng.zp(),
    };
    let acc1 = se.acc1(&se.pooled(x, s), s);
    let mx = acc1.iter().map(|a| a.abs()).max().unwrap().max(1) as f64;
    se.m1 = (0..s.squeeze)
        .map(|_| from_real(rng.real(100.0, 250.0) / mx))
        .collect();
    let acc2 = se.acc2(&se.hidden(&acc1), s);
    let mx = acc2.iter().map(|a| a.abs()).max().unwrap().max(1) as f64;
    se.mg = (0..s.c)
        .map(|_| from_real(rng.real(0.5, 1.5) * GATE_ONE as f64 / mx))
        .collect();
    se
}

#[test]
fn squeeze_excite_matches_reference() {
    let mut rng = Rng(0x5eed_0009);
    let shapes = [
        (1, 3, 2),
        (7, 13, 5),
        (10, 70, 18),
        (49, 130, 33),
        (6, 80, 66),
        // More pixels than the aarch64 pooling sums in 16-bit lanes at once (255).
        (300, 40, 8),
    ];
    for (pixels, c, squeeze) in shapes {
        let s = SeShape { pixels, c, squeeze };
        for extra in [0, 3] {
            let x = rng.channel_acts(pixels, c);
            let se = random_se(&mut rng, &x, s);
            let gate = se.gate(&se.acc2(&se.hidden(&se.acc1(&se.pooled(&x, s), s)), s));
            if c >= 64 {
                // The gate really varies (not all 0 or all GATE_ONE).
                let inside = gate.iter().filter(|&&g| g > 0 && g < GATE_ONE as i64);
                assert!(inside.count() >= c / 4, "{s:?}: gate {gate:?}");
            }
            let y = se.run(&x, s, extra);
            assert_eq!(y, se.reference(&x, s), "{s:?}");
            assert_spread(&y, "squeeze_excite");
        }
    }
}

/// Pooling at the extremes: 600 pixels of -128 and of 127 (the aarch64 pooling's 16-bit
/// partial sums of up to 255 pixels reach -32,640 and 32,385).
#[test]
fn squeeze_excite_pools_extreme_values() {
    let mut rng = Rng(0x5eed_000b);
    let s = SeShape {
        pixels: 600,
        c: 24,
        squeeze: 4,
    };
    for v in [-128i8, 127] {
        let mut x = vec![v; s.pixels * s.c];
        // One channel varies, so the gate is not the same everywhere.
        for (p, row) in x.chunks_exact_mut(s.c).enumerate() {
            row[5] = (p % 256) as u8 as i8;
        }
        let se = random_se(&mut rng, &x, s);
        assert_eq!(se.run(&x, s, 0), se.reference(&x, s), "{v}");
    }
}

#[test]
fn squeeze_excite_gate_saturates_at_zero_and_one() {
    let mut rng = Rng(0x5eed_000a);
    let s = SeShape {
        pixels: 5,
        c: 6,
        squeeze: 2,
    };
    let zx = 7;
    // Channel ch of pixel p is zx + offs[ch] + p.
    let offs = [3, -3, 1, -1, 20, -3];
    let x: Vec<i8> = (0..s.pixels * s.c)
        .map(|i| (zx + offs[i % s.c] + (i / s.c) as i32) as i8)
        .collect();
    let one = from_real(1.0);
    let se = Se {
        zx,
        pool_mult: from_real(1.0 / s.pixels as f64),
        zp: rng.zp(),
        w1: rng.weights(s.squeeze * s.c),
        b1: rng.biases(s.squeeze, 5000),
        m1: vec![from_real(0.01); s.squeeze],
        zh: -128,
        // fc2 ignores the hidden vector: the gate is requant(bias) + 2^14.
        w2: vec![0; s.c * s.squeeze],
        b2: vec![-1_000_000, 1_000_000, 0, 40_000, -20_000, 0],
        mg: vec![one; s.c],
        // 2^-15: y = zy + (x - zx) * gate / 2^15.
        out_mult: from_real(1.0 / GATE_ONE as f64),
        zy: zx,
    };
    assert_eq!(
        se.gate(&se.acc2(&[0, 0], s)),
        [
            0,
            GATE_ONE as i64,
            GATE_ONE as i64 / 2,
            GATE_ONE as i64,
            0,
            GATE_ONE as i64 / 2
        ]
    );
    let y = se.run(&x, s, 0);
    assert_eq!(y, se.reference(&x, s));
    for p in 0..s.pixels {
        let row = &y[p * s.c..(p + 1) * s.c];
        let d = p as i32;
        // gate 0: the zero point; gate 1: x itself; gate 1/2: (x - zx) / 2
        // rounded half toward +inf (-1.5 -> -1, -0.5 -> 0, 0.5 -> 1).
        let half = |v: i32| (v + 1).div_euclid(2);
        let want = [
            zx,
            zx - 3 + d,
            zx + half(1 + d),
            zx - 1 + d,
            zx,
            zx + half(-3 + d),
        ];
        let want: Vec<i8> = want.iter().map(|&v| v as i8).collect();
        assert_eq!(row, &want[..], "pixel {p}");
    }
}
