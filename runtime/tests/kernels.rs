//! Every kernel variant against a naive reference written from PyTorch's
//! definitions (NCHW index math, PyTorch weight layouts, f64 accumulation).
//!
//! The test converts PyTorch-layout tensors into the kernel layouts itself, so
//! it also checks the layout contract that `derm-codegen` relies on.
//!
//! Tolerance: an output that sums terms `a_i * w_i` plus a bias must be within
//! `TOL * (sum |a_i * w_i| + |bias| + |residual|)` of the reference; f32
//! accumulation in any order stays far below that (about `k * 2^-24`
//! relative), while an indexing mistake is off by a whole term.

use derm_runtime::kernels::{self, Activation};

/// Relative error bound (see the module docs).
const TOL: f64 = 1e-5;

/// splitmix64: a fixed, portable generator, so host and qemu runs see the
/// same cases.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

const ACTS: [Activation; 4] = [
    Activation::None,
    Activation::Relu,
    Activation::Hardswish,
    Activation::ScaledHardswish,
];

fn act_f64(act: Activation, x: f64) -> f64 {
    match act {
        Activation::None => x,
        Activation::Relu => x.max(0.0),
        Activation::Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        Activation::ScaledHardswish => x + x * x.clamp(-1.0, 1.0),
    }
}

fn hardsigmoid_f64(x: f64) -> f64 {
    (x + 3.0).clamp(0.0, 6.0) / 6.0
}

/// A reference value and the magnitude its error bound scales with.
#[derive(Clone, Copy, Debug)]
struct Ref {
    value: f64,
    mag: f64,
}

fn check(what: &str, got: &[f32], want: &[Ref]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w.value).abs();
        let bound = TOL * (w.mag + 1e-3);
        assert!(
            err <= bound,
            "{what}: element {i}: got {g}, want {} (error {err:e} > bound {bound:e})",
            w.value
        );
    }
}

/// PyTorch `conv2d` (NCHW, batch 1) with `groups`, weight `[cout][cin/groups][kh][kw]`,
/// then the activation; output `[cout][oh][ow]`.
#[allow(clippy::too_many_arguments)]
fn conv2d_ref(
    input: &[f32],
    cin: usize,
    ih: usize,
    iw: usize,
    weight: &[f32],
    bias: &[f32],
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    groups: usize,
    act: Activation,
) -> (usize, usize, Vec<Ref>) {
    let oh = (ih + 2 * pad - kh) / stride + 1;
    let ow = (iw + 2 * pad - kw) / stride + 1;
    let cpg_in = cin / groups;
    let cpg_out = cout / groups;
    let mut out = Vec::with_capacity(cout * oh * ow);
    for co in 0..cout {
        let g = co / cpg_out;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = bias[co] as f64;
                let mut mag = (bias[co] as f64).abs();
                for ci in 0..cpg_in {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy < 0 || ix < 0 || iy >= ih as isize || ix >= iw as isize {
                                continue;
                            }
                            let a =
                                input[((g * cpg_in + ci) * ih + iy as usize) * iw + ix as usize];
                            let w = weight[((co * cpg_in + ci) * kh + ky) * kw + kx];
                            acc += a as f64 * w as f64;
                            mag += (a as f64 * w as f64).abs();
                        }
                    }
                }
                out.push(Ref {
                    value: act_f64(act, acc),
                    mag,
                });
            }
        }
    }
    (oh, ow, out)
}

/// `[c][h][w]` -> `[h][w][c]`.
fn chw_to_hwc<T: Copy>(x: &[T], c: usize, hw: usize) -> Vec<T> {
    (0..hw * c).map(|i| x[(i % c) * hw + i / c]).collect()
}

/// `[h][w][c]` -> `[c][h][w]`.
fn hwc_to_chw(x: &[f32], c: usize, hw: usize) -> Vec<f32> {
    (0..hw * c).map(|i| x[(i % hw) * c + i / hw]).collect()
}

/// PyTorch `[n][k]` (Linear or 1x1 conv) -> the kernels' NR-panel packing.
fn pack(wt: &[f32], k: usize, n: usize) -> Vec<f32> {
    let mut packed = vec![0.0; kernels::packed_len(k, n)];
    for j in 0..n {
        for i in 0..k {
            packed[(j / 8) * k * 8 + i * 8 + j % 8] = wt[j * k + i];
        }
    }
    packed
}

// ---------------------------------------------------------------- pointwise

type PointwiseFn =
    fn(&[f32], kernels::PointwiseShape, &[f32], &[f32], Activation, Option<&[f32]>, &mut [f32]);

/// The shape of a pointwise layer of `p` pixels, `k` inputs and `n` outputs.
fn pw(p: usize, k: usize, n: usize) -> kernels::PointwiseShape {
    kernels::PointwiseShape { pixels: p, k, n }
}

fn pointwise_variants() -> Vec<(&'static str, PointwiseFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, PointwiseFn)> = vec![
        ("dispatch", kernels::pointwise),
        ("portable", kernels::pointwise::portable),
        #[cfg(target_arch = "aarch64")]
        ("neon", kernels::pointwise::neon::pointwise),
    ];
    #[cfg(target_arch = "x86_64")]
    if kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA.
        v.push(("avx2", |a, s, w, b, act, r, o| unsafe {
            kernels::pointwise::avx2::pointwise(a, s, w, b, act, r, o)
        }));
    }
    v
}

fn pointwise_case(rng: &mut Rng, p: usize, k: usize, n: usize) {
    let x_chw = rng.vec(k * p);
    let wt = rng.vec(n * k);
    let bias = rng.vec(n);
    let residual = rng.vec(p * n);
    let x = chw_to_hwc(&x_chw, k, p);
    let packed = pack(&wt, k, n);
    for act in ACTS {
        let (_, _, want_chw) = conv2d_ref(&x_chw, k, 1, p, &wt, &bias, n, 1, 1, 1, 0, 1, act);
        let want = chw_to_hwc(&want_chw, n, p);
        let want_res: Vec<Ref> = want
            .iter()
            .zip(&residual)
            .map(|(r, &s)| Ref {
                value: r.value + s as f64,
                mag: r.mag + (s as f64).abs(),
            })
            .collect();
        for (name, f) in pointwise_variants() {
            let mut out = vec![f32::NAN; p * n];
            f(&x, pw(p, k, n), &packed, &bias, act, None, &mut out);
            check(
                &format!("pointwise {name} p={p} k={k} n={n} {act:?}"),
                &out,
                &want,
            );
            let mut out = vec![f32::NAN; p * n];
            f(
                &x,
                pw(p, k, n),
                &packed,
                &bias,
                act,
                Some(&residual),
                &mut out,
            );
            check(
                &format!("pointwise+res {name} p={p} k={k} n={n} {act:?}"),
                &out,
                &want_res,
            );
        }
    }
}

#[test]
fn pointwise_random_shapes_with_tails() {
    let mut rng = Rng(1);
    for _ in 0..60 {
        let p = rng.range(1, 27);
        let k = rng.range(1, 37);
        let n = rng.range(1, 35);
        pointwise_case(&mut rng, p, k, n);
    }
}

#[test]
fn pointwise_mobilenet_like_shapes() {
    let mut rng = Rng(2);
    // Channel counts of MobileNetV3-Small on a few pixels (the kernels see
    // the same channel loops as at 224x224).
    for (p, k, n) in [
        (13, 16, 72),
        (9, 72, 24),
        (10, 96, 40),
        (7, 240, 40),
        (5, 576, 6),
        (3, 288, 96),
        // Seven-pixel tiles over rows too far apart for a pair store (the epilogue's
        // `st1` form on aarch64).
        (14, 48, 144),
        // Seven-pixel tiles whose k loop is written out four 8-channel steps per iteration
        // on aarch64: 8, 5, 11 and 7 steps (every entry point), and 5 steps then a tail of 4.
        (7, 64, 16),
        (14, 40, 24),
        (21, 88, 24),
        (7, 56, 8),
        (7, 44, 16),
        // 16 and 24 input channels, held in registers across panels on aarch64 (tiles of 4
        // and 3 pixels, then single pixels; a partial last panel).
        (10, 24, 88),
        (9, 16, 20),
        (7, 24, 28),
        // MobileNetV3-Large's channel counts that Small lacks (its whole-network aarch64
        // parity is `scripts/parity-large.sh`, outside the test command): the first block's
        // 16 -> 16 projection, then 64, 120, 200, 184, 480, 672 and 960.
        (12, 16, 16),
        (9, 16, 64),
        (8, 64, 24),
        (6, 40, 120),
        (6, 120, 40),
        (5, 80, 200),
        (5, 200, 80),
        (5, 80, 184),
        (5, 184, 80),
        (4, 80, 480),
        (4, 480, 112),
        (4, 112, 672),
        (3, 672, 160),
        (3, 160, 960),
        (3, 960, 160),
    ] {
        pointwise_case(&mut rng, p, k, n);
    }
}

// ---------------------------------------------------------------- depthwise

type DepthwiseFn = fn(&[f32], kernels::DepthwiseShape, &[f32], &[f32], Activation, &mut [f32]);

fn depthwise_variants() -> Vec<(&'static str, DepthwiseFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, DepthwiseFn)> = vec![
        ("dispatch", kernels::depthwise),
        ("portable", kernels::depthwise::portable),
        #[cfg(target_arch = "aarch64")]
        ("neon", kernels::depthwise::neon::depthwise),
    ];
    #[cfg(target_arch = "x86_64")]
    if kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA.
        v.push(("avx2", |a, s, w, b, act, o| unsafe {
            kernels::depthwise::avx2::depthwise(a, s, w, b, act, o)
        }));
    }
    v
}

#[allow(clippy::too_many_arguments)]
fn depthwise_case(
    rng: &mut Rng,
    ih: usize,
    iw: usize,
    c: usize,
    k: usize,
    stride: usize,
    pad: usize,
) {
    let x_chw = rng.vec(c * ih * iw);
    let wt = rng.vec(c * k * k); // [c][1][k][k]
    let bias = rng.vec(c);
    let x = chw_to_hwc(&x_chw, c, ih * iw);
    // [c][k][k] -> [k][k][c]
    let w = chw_to_hwc(&wt, c, k * k);
    for act in ACTS {
        let (oh, ow, want_chw) =
            conv2d_ref(&x_chw, c, ih, iw, &wt, &bias, c, k, k, stride, pad, c, act);
        let want = chw_to_hwc(&want_chw, c, oh * ow);
        for (name, f) in depthwise_variants() {
            let mut out = vec![f32::NAN; oh * ow * c];
            let s = kernels::DepthwiseShape {
                ih,
                iw,
                c,
                k,
                stride,
                pad,
                oh,
                ow,
            };
            f(&x, s, &w, &bias, act, &mut out);
            check(
                &format!("depthwise {name} {ih}x{iw}x{c} k={k} s={stride} pad={pad} {act:?}"),
                &out,
                &want,
            );
        }
    }
}

#[test]
fn depthwise_random_shapes_with_tails() {
    let mut rng = Rng(3);
    for _ in 0..80 {
        let k = [3, 5][rng.range(0, 1)];
        let stride = rng.range(1, 2);
        // Mostly "same" padding as MobileNetV3, sometimes none or partial.
        let pad = [k / 2, k / 2, 0, 1][rng.range(0, 3)];
        let min = (k - 2 * pad).max(1);
        let ih = rng.range(min, 15);
        let iw = rng.range(min, 15);
        let c = rng.range(1, 21);
        depthwise_case(&mut rng, ih, iw, c, k, stride, pad);
    }
}

#[test]
fn depthwise_mobilenet_like_shapes() {
    let mut rng = Rng(4);
    for (hw, c, k, s) in [
        (16, 16, 3, 2),
        (14, 72, 3, 2),
        (7, 88, 3, 1),
        (13, 96, 5, 2),
        (7, 240, 5, 1),
        (4, 576, 5, 1),
        // 3x3 stride 2 with 8-channel blocks on aarch64 (even width, a multiple of 4 out).
        (16, 72, 3, 2),
        (8, 24, 3, 2),
        // Rows of 9 to 14 pixels at 5x5, stride 1, go as one group on aarch64.
        (14, 24, 5, 1),
        (10, 12, 5, 1),
        (9, 8, 5, 1),
        // 3x3 stride 1 and 5x5 stride 2 in 8-channel blocks and groups of 7 pixels on
        // aarch64 (MobileNetV3-Small's at 224x224: both padding ends, middle groups).
        (28, 88, 3, 1),
        (28, 96, 5, 2),
        (14, 288, 5, 2),
        // Every depthwise layer of MobileNetV3-Large at 224x224 (the stride-1 first block on
        // the stem's 112x112 map, then 64 to 960 channels).
        (112, 16, 3, 1),
        (112, 64, 3, 2),
        (56, 72, 3, 1),
        (56, 72, 5, 2),
        (28, 120, 5, 1),
        (28, 240, 3, 2),
        (14, 200, 3, 1),
        (14, 184, 3, 1),
        (14, 480, 3, 1),
        (14, 672, 3, 1),
        (14, 672, 5, 2),
        (7, 960, 5, 1),
    ] {
        depthwise_case(&mut rng, hw, hw, c, k, s, k / 2);
    }
}

#[test]
fn depthwise_padding_taps_read_no_input() {
    // A NaN in the first input row reaches only the outputs whose windows hold that row:
    // padding taps add nothing and read nothing (multiplying some input by a zero weight
    // for them would turn the bottom rows' outputs into NaN too).
    let (ih, iw, c) = (6, 9, 8);
    for (k, s) in [(3, 1), (3, 2), (5, 1), (5, 2)] {
        let pad = k / 2;
        let (oh, ow) = ((ih + 2 * pad - k) / s + 1, (iw + 2 * pad - k) / s + 1);
        let mut x = vec![0.5f32; ih * iw * c];
        x[..iw * c].fill(f32::NAN);
        let w = vec![0.25f32; k * k * c];
        let bias = vec![0.0f32; c];
        for (name, f) in depthwise_variants() {
            let mut out = vec![0.0f32; oh * ow * c];
            let shape = kernels::DepthwiseShape {
                ih,
                iw,
                c,
                k,
                stride: s,
                pad,
                oh,
                ow,
            };
            f(&x, shape, &w, &bias, Activation::None, &mut out);
            for oy in 0..oh {
                // Input row 0 is in the window of output row oy when oy * s <= pad.
                let holds_row0 = oy * s <= pad;
                let row = &out[oy * ow * c..(oy + 1) * ow * c];
                assert_eq!(
                    row.iter().all(|v| v.is_nan()),
                    holds_row0,
                    "depthwise {name} k={k} s={s}: output row {oy}"
                );
                assert!(holds_row0 || row.iter().all(|v| v.is_finite()));
            }
        }
    }
}

#[test]
fn depthwise_wide_rows() {
    // Rows wide enough for the NEON kernel's middle groups of 8 pixels, with each
    // remainder (1-7 pixels) and each count of padding columns at the row's end, at both
    // strides and kernel sizes.
    let mut rng = Rng(5);
    for iw in [17, 19, 21, 22, 23, 28, 31, 34, 41] {
        for (k, s) in [(3, 1), (3, 2), (5, 1), (5, 2)] {
            depthwise_case(&mut rng, 5, iw, 8, k, s, k / 2);
        }
    }
}

// ---------------------------------------------------------------- stem

type StemFn = fn(&[f32], kernels::ConvShape, &[f32], &[f32], Activation, &mut [f32]);

fn stem_variants() -> Vec<(&'static str, StemFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, StemFn)> = vec![
        ("dispatch", kernels::conv_stem),
        ("portable", kernels::conv_stem::portable),
        #[cfg(target_arch = "aarch64")]
        ("neon", kernels::conv_stem::neon::conv_stem),
    ];
    #[cfg(target_arch = "x86_64")]
    if kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA.
        v.push(("avx2", |a, s, w, b, act, o| unsafe {
            kernels::conv_stem::avx2::conv_stem(a, s, w, b, act, o)
        }));
    }
    v
}

#[allow(clippy::too_many_arguments)]
fn stem_case(
    rng: &mut Rng,
    ih: usize,
    iw: usize,
    cin: usize,
    cout: usize,
    kk: usize,
    stride: usize,
    pad: usize,
) {
    let x = rng.vec(cin * ih * iw);
    let wt = rng.vec(cout * cin * kk * kk); // [cout][cin][kh][kw]
    let bias = rng.vec(cout);
    // -> [kh][kw][cin][cout]
    let mut w = vec![0.0; wt.len()];
    for co in 0..cout {
        for ci in 0..cin {
            for t in 0..kk * kk {
                w[(t * cin + ci) * cout + co] = wt[(co * cin + ci) * kk * kk + t];
            }
        }
    }
    for act in ACTS {
        let (oh, ow, want_chw) = conv2d_ref(
            &x, cin, ih, iw, &wt, &bias, cout, kk, kk, stride, pad, 1, act,
        );
        let want = chw_to_hwc(&want_chw, cout, oh * ow);
        for (name, f) in stem_variants() {
            let mut out = vec![f32::NAN; oh * ow * cout];
            let s = kernels::ConvShape {
                ih,
                iw,
                cin,
                cout,
                kh: kk,
                kw: kk,
                stride,
                pad,
                oh,
                ow,
            };
            f(&x, s, &w, &bias, act, &mut out);
            check(
                &format!(
                    "conv_stem {name} {cin}x{ih}x{iw}->{cout} k={kk} s={stride} pad={pad} {act:?}"
                ),
                &out,
                &want,
            );
        }
    }
}

#[test]
fn conv_stem_random_shapes_with_tails() {
    let mut rng = Rng(5);
    // MobileNetV3's stem: 3 -> 16, 3x3, stride 2, pad 1, on odd and even sizes.
    for (ih, iw) in [(224, 224), (17, 17), (9, 12), (1, 1), (2, 3)] {
        stem_case(&mut rng, ih, iw, 3, 16, 3, 2, 1);
    }
    // Two blocks of 16 channels, and one with a 4-channel tail, through the first row and
    // column (whose windows start in the padding).
    stem_case(&mut rng, 17, 18, 3, 32, 3, 2, 1);
    stem_case(&mut rng, 16, 17, 3, 20, 3, 2, 1);
    for _ in 0..30 {
        let kk = [1, 3, 5][rng.range(0, 2)];
        let stride = rng.range(1, 2);
        let pad = rng.range(0, kk / 2);
        let ih = rng.range(kk - 2 * pad, 19);
        let iw = rng.range(kk - 2 * pad, 19);
        let cin = rng.range(1, 4);
        let cout = rng.range(1, 37);
        stem_case(&mut rng, ih, iw, cin, cout, kk, stride, pad);
    }
}

// ---------------------------------------------------------------- linear

type LinearFn = fn(&[f32], usize, usize, &[f32], &[f32], Activation, &mut [f32]);

fn linear_variants() -> Vec<(&'static str, LinearFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, LinearFn)> = vec![
        ("dispatch", kernels::linear),
        ("portable", kernels::linear::portable),
        #[cfg(target_arch = "aarch64")]
        ("neon", kernels::linear::neon::linear),
    ];
    #[cfg(target_arch = "x86_64")]
    if kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA.
        v.push(("avx2", |x, k, n, w, b, a, o| unsafe {
            kernels::linear::avx2::linear(x, k, n, w, b, a, o)
        }));
    }
    v
}

fn linear_ref(
    x: &[f32],
    wt: &[f32],
    bias: &[f32],
    k: usize,
    n: usize,
    act: Activation,
) -> Vec<Ref> {
    (0..n)
        .map(|j| {
            let mut acc = bias[j] as f64;
            let mut mag = acc.abs();
            for i in 0..k {
                let t = x[i] as f64 * wt[j * k + i] as f64;
                acc += t;
                mag += t.abs();
            }
            Ref {
                value: act_f64(act, acc),
                mag,
            }
        })
        .collect()
}

#[test]
fn linear_random_shapes_with_tails() {
    let mut rng = Rng(6);
    let mut shapes: Vec<(usize, usize)> = vec![
        (576, 6),
        (576, 1024),
        (1024, 6),
        // MobileNetV3-Large's heads.
        (960, 1280),
        (1280, 6),
        (960, 6),
        (16, 8),
        (1, 1),
    ];
    for _ in 0..60 {
        shapes.push((rng.range(1, 70), rng.range(1, 40)));
    }
    for (k, n) in shapes {
        let x = rng.vec(k);
        let wt = rng.vec(n * k);
        let bias = rng.vec(n);
        let packed = pack(&wt, k, n);
        for act in ACTS {
            let want = linear_ref(&x, &wt, &bias, k, n, act);
            for (name, f) in linear_variants() {
                let mut out = vec![f32::NAN; n];
                f(&x, k, n, &packed, &bias, act, &mut out);
                check(&format!("linear {name} k={k} n={n} {act:?}"), &out, &want);
            }
        }
    }
}

// ---------------------------------------------------------------- squeeze-excite

type SeFn = fn(&mut [f32], kernels::SeShape, &[f32], &[f32], &[f32], &[f32], &mut [f32]);

fn se_variants() -> Vec<(&'static str, SeFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, SeFn)> = vec![
        ("dispatch", kernels::squeeze_excite),
        ("portable", kernels::squeeze_excite::portable),
        #[cfg(target_arch = "aarch64")]
        ("neon", kernels::squeeze_excite::neon::squeeze_excite),
    ];
    #[cfg(target_arch = "x86_64")]
    if kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA.
        v.push(("avx2", |x, s, w1, b1, w2, b2, t| unsafe {
            kernels::squeeze_excite::avx2::squeeze_excite(x, s, w1, b1, w2, b2, t)
        }));
    }
    v
}

/// torchvision `SqueezeExcitation` (fc1/fc2 are 1x1 convs with bias, ReLU,
/// Hardsigmoid) on a `[c][h*w]` input; returns `[c][h*w]`.
#[allow(clippy::too_many_arguments)]
fn se_ref(
    x_chw: &[f32],
    hw: usize,
    c: usize,
    csq: usize,
    w1: &[f32],
    b1: &[f32],
    w2: &[f32],
    b2: &[f32],
) -> Vec<Ref> {
    let gate = se_gates_ref(x_chw, hw, c, csq, w1, b1, w2, b2);
    (0..c * hw)
        .map(|i| {
            let g = &gate[i / hw];
            let x = x_chw[i] as f64;
            Ref {
                value: x * g.value,
                mag: x.abs() * g.mag,
            }
        })
        .collect()
}

/// The gates of [`se_ref`] (hardsigmoid applied), each with the magnitude its error
/// bound scales with.
#[allow(clippy::too_many_arguments)]
fn se_gates_ref(
    x_chw: &[f32],
    hw: usize,
    c: usize,
    csq: usize,
    w1: &[f32],
    b1: &[f32],
    w2: &[f32],
    b2: &[f32],
) -> Vec<Ref> {
    let mean: Vec<f32> = (0..c)
        .map(|ch| {
            (x_chw[ch * hw..(ch + 1) * hw]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>()
                / hw as f64) as f32
        })
        .collect();
    let hidden: Vec<f32> = linear_ref(&mean, w1, b1, c, csq, Activation::Relu)
        .iter()
        .map(|r| r.value as f32)
        .collect();
    // The gate's own error (bounded through fc2's magnitude and the 1/6 slope of
    // hardsigmoid) scales whatever it multiplies.
    linear_ref(&hidden, w2, b2, csq, c, Activation::None)
        .iter()
        .map(|g| Ref {
            value: hardsigmoid_f64(g.value),
            mag: 1.0 + g.mag,
        })
        .collect()
}

#[test]
fn squeeze_excite_random_shapes_with_tails() {
    let mut rng = Rng(7);
    let mut shapes: Vec<(usize, usize, usize)> =
        vec![(56 * 56, 16, 8), (49, 96, 24), (49, 576, 144), (1, 1, 1)];
    // MobileNetV3-Large's widest.
    shapes.extend([(28 * 28, 120, 32), (14 * 14, 672, 168), (49, 960, 240)]);
    for _ in 0..40 {
        shapes.push((rng.range(1, 30), rng.range(1, 50), rng.range(1, 20)));
    }
    for (hw, c, csq) in shapes {
        let x_chw = rng.vec(c * hw);
        let w1 = rng.vec(csq * c);
        let b1 = rng.vec(csq);
        // Wider fc2 values push gates across both hardsigmoid saturation points.
        let w2: Vec<f32> = rng.vec(c * csq).iter().map(|v| v * 3.0).collect();
        let b2: Vec<f32> = rng.vec(c).iter().map(|v| v * 3.0).collect();
        let want = chw_to_hwc(&se_ref(&x_chw, hw, c, csq, &w1, &b1, &w2, &b2), c, hw);
        let (p1, p2) = (pack(&w1, c, csq), pack(&w2, csq, c));
        for (name, f) in se_variants() {
            let mut x = chw_to_hwc(&x_chw, c, hw);
            let mut scratch = vec![f32::NAN; c + csq];
            let s = kernels::SeShape {
                pixels: hw,
                c,
                squeeze: csq,
            };
            f(&mut x, s, &p1, &b1, &p2, &b2, &mut scratch);
            check(
                &format!("squeeze_excite {name} hw={hw} c={c} csq={csq}"),
                &x,
                &want,
            );
        }
    }
}

type SeWeightsFn = fn(&[f32], kernels::SeShape, [&[f32]; 4], &[f32], &mut [f32], &mut [f32]);

fn se_weights_variants() -> Vec<(&'static str, SeWeightsFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, SeWeightsFn)> = vec![
        ("dispatch", kernels::squeeze_excite_weights),
        ("portable", kernels::squeeze_excite::portable_weights),
        #[cfg(target_arch = "aarch64")]
        (
            "neon",
            kernels::squeeze_excite::neon::squeeze_excite_weights,
        ),
    ];
    #[cfg(target_arch = "x86_64")]
    if kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA.
        v.push(("avx2", |x, s, fc, proj, t, out| unsafe {
            kernels::squeeze_excite::avx2::squeeze_excite_weights(x, s, fc, proj, t, out)
        }));
    }
    v
}

/// The gates folded into the next 1x1 convolution's packed weights: row `ch` of every
/// panel times gate `ch` (float64 reference), the map itself left as it was.
#[test]
fn squeeze_excite_weights_scale_each_panel_row_by_its_gate() {
    let mut rng = Rng(11);
    let mut shapes: Vec<(usize, usize, usize, usize)> = vec![
        (56 * 56, 16, 8, 16),
        (196, 240, 64, 40),
        (196, 120, 32, 48),
        (3, 6, 2, 5),
        // MobileNetV3-Large's at 224x224 (gates folded into the projection's weights).
        (28 * 28, 72, 24, 40),
        (28 * 28, 120, 32, 40),
        (14 * 14, 480, 120, 112),
        (14 * 14, 672, 168, 112),
        (7 * 7, 672, 168, 160),
        (7 * 7, 960, 240, 160),
    ];
    for _ in 0..20 {
        shapes.push((
            rng.range(1, 30),
            rng.range(1, 50),
            rng.range(1, 20),
            rng.range(1, 20),
        ));
    }
    for (hw, c, csq, n) in shapes {
        let x_chw = rng.vec(c * hw);
        let w1 = rng.vec(csq * c);
        let b1 = rng.vec(csq);
        let w2: Vec<f32> = rng.vec(c * csq).iter().map(|v| v * 3.0).collect();
        let b2: Vec<f32> = rng.vec(c).iter().map(|v| v * 3.0).collect();
        let gates = se_gates_ref(&x_chw, hw, c, csq, &w1, &b1, &w2, &b2);
        let proj = pack(&rng.vec(n * c), c, n);
        let want: Vec<Ref> = proj
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let g = &gates[i / kernels::NR % c];
                Ref {
                    value: v as f64 * g.value,
                    mag: (v as f64).abs() * g.mag,
                }
            })
            .collect();
        let (p1, p2) = (pack(&w1, c, csq), pack(&w2, csq, c));
        let x = chw_to_hwc(&x_chw, c, hw);
        for (name, f) in se_weights_variants() {
            let mut scratch = vec![f32::NAN; c + csq];
            let mut out = vec![f32::NAN; proj.len()];
            let s = kernels::SeShape {
                pixels: hw,
                c,
                squeeze: csq,
            };
            f(&x, s, [&p1, &b1, &p2, &b2], &proj, &mut scratch, &mut out);
            check(
                &format!("squeeze_excite_weights {name} hw={hw} c={c} csq={csq} n={n}"),
                &out,
                &want,
            );
        }
    }
}

// ---------------------------------------------------------------- pool, add

type PoolFn = fn(&[f32], usize, usize, &mut [f32]);

fn pool_variants() -> Vec<(&'static str, PoolFn)> {
    let v: Vec<(&'static str, PoolFn)> = vec![
        ("dispatch", kernels::global_avg_pool),
        ("portable", kernels::pool::portable),
        #[cfg(target_arch = "aarch64")]
        ("neon", kernels::pool::neon::global_avg_pool),
    ];
    v
}

#[test]
fn global_avg_pool_random_shapes() {
    let mut rng = Rng(8);
    let mut shapes = vec![(49, 576), (1, 3), (3, 1)];
    for _ in 0..40 {
        shapes.push((rng.range(1, 60), rng.range(1, 40)));
    }
    for (hw, c) in shapes {
        let x_chw = rng.vec(c * hw);
        let want: Vec<Ref> = (0..c)
            .map(|ch| {
                let s = &x_chw[ch * hw..(ch + 1) * hw];
                Ref {
                    value: s.iter().map(|&v| v as f64).sum::<f64>() / hw as f64,
                    mag: s.iter().map(|&v| (v as f64).abs()).sum::<f64>() / hw as f64,
                }
            })
            .collect();
        let x = chw_to_hwc(&x_chw, c, hw);
        for (name, f) in pool_variants() {
            let mut out = vec![f32::NAN; c];
            f(&x, hw, c, &mut out);
            check(
                &format!("global_avg_pool {name} hw={hw} c={c}"),
                &out,
                &want,
            );
        }
    }
}

type AddFn = fn(&[f32], &[f32], &mut [f32]);

fn add_variants() -> Vec<(&'static str, AddFn)> {
    let v: Vec<(&'static str, AddFn)> = vec![
        ("dispatch", kernels::add),
        ("portable", kernels::add::portable),
        #[cfg(target_arch = "aarch64")]
        ("neon", kernels::add::neon::add),
    ];
    v
}

#[test]
fn add_is_exact() {
    let mut rng = Rng(9);
    for len in [0, 1, 3, 4, 7, 8, 15, 16, 17, 100, 56 * 56 * 24] {
        let a = rng.vec(len);
        let b = rng.vec(len);
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        for (name, f) in add_variants() {
            let mut out = vec![f32::NAN; len];
            f(&a, &b, &mut out);
            assert_eq!(out, want, "add {name} len={len}");
        }
    }
}

// ---------------------------------------------------------------- activations

/// Hardswish/hardsigmoid at and around their breakpoints, through the scalar
/// helpers and through every variant's fused epilogue.
#[test]
fn activations_at_breakpoints() {
    let xs: [f32; 12] = [
        -4.0, -3.0, -2.999, -1.5, -0.001, 0.0, 0.001, 1.5, 2.999, 3.0, 3.001, 4.0,
    ];
    for &x in &xs {
        let want_hs = act_f64(Activation::Hardswish, x as f64);
        let want_sig = hardsigmoid_f64(x as f64);
        assert!(
            (kernels::hardswish(x) as f64 - want_hs).abs() <= 1e-6 * (1.0 + want_hs.abs()),
            "hardswish({x})"
        );
        assert!(
            (kernels::hardsigmoid(x) as f64 - want_sig).abs() <= 1e-7,
            "hardsigmoid({x})"
        );
        // The scaled form on a third of the input is two thirds of hardswish.
        let scaled = kernels::scaled_hardswish(x / 3.0) as f64;
        assert!(
            (scaled - want_hs * 2.0 / 3.0).abs() <= 1e-6 * (1.0 + want_hs.abs()),
            "scaled_hardswish({x} / 3) = {scaled}, want 2/3 of {want_hs}"
        );
    }
    assert_eq!(kernels::hardswish(-3.0), 0.0);
    assert_eq!(kernels::hardswish(0.0), 0.0);
    assert_eq!(kernels::hardswish(3.0), 3.0);
    // scaled_hardswish(x / 3) = 2/3 hardswish(x): 0 at x = -3, 2 at x = 3, -0.25 at -1.5.
    assert_eq!(kernels::scaled_hardswish(-1.0), 0.0);
    assert_eq!(kernels::scaled_hardswish(1.0), 2.0);
    assert_eq!(kernels::scaled_hardswish(-0.5), -0.25);
    assert_eq!(kernels::scaled_hardswish(-7.0), 0.0);
    assert_eq!(kernels::hardsigmoid(-3.0), 0.0);
    assert_eq!(kernels::hardsigmoid(0.0), 0.5);
    assert_eq!(kernels::hardsigmoid(3.0), 1.0);
    assert_eq!(kernels::hardsigmoid(-100.0), 0.0);
    assert_eq!(kernels::hardsigmoid(100.0), 1.0);

    // Identity 1x1 conv: output channel j copies input channel j, so each
    // variant's epilogue sees exactly the breakpoint values.
    let n = xs.len();
    let mut eye = vec![0.0; n * n];
    for j in 0..n {
        eye[j * n + j] = 1.0;
    }
    let packed = pack(&eye, n, n);
    let bias = vec![0.0; n];
    for act in ACTS {
        let want: Vec<f32> = xs.iter().map(|&x| act_f64(act, x as f64) as f32).collect();
        for (name, f) in pointwise_variants() {
            let mut out = vec![f32::NAN; n];
            f(&xs, pw(1, n, n), &packed, &bias, act, None, &mut out);
            for (i, (&g, &w)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
                    "pointwise {name} {act:?}({}) = {g}, want {w}",
                    xs[i]
                );
            }
        }
        for (name, f) in linear_variants() {
            let mut out = vec![f32::NAN; n];
            f(&xs, n, n, &packed, &bias, act, &mut out);
            for (i, (&g, &w)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
                    "linear {name} {act:?}({}) = {g}, want {w}",
                    xs[i]
                );
            }
        }
    }

    // Inputs near zero keep their relative precision through every epilogue (hardswish(x)
    // is about x / 2 there, and the scaled form z + z c about z): nothing may round them
    // against a constant.
    let tiny: [f32; 8] = [1e-3, -1e-3, 1e-6, -1e-6, 1e-12, -1e-12, 1e-30, -1e-30];
    let m = tiny.len();
    let mut eye_m = vec![0.0; m * m];
    for j in 0..m {
        eye_m[j * m + j] = 1.0;
    }
    let packed_m = pack(&eye_m, m, m);
    for act in [Activation::Hardswish, Activation::ScaledHardswish] {
        let want: Vec<f64> = tiny.iter().map(|&x| act_f64(act, x as f64)).collect();
        for (i, &x) in tiny.iter().enumerate() {
            let g = act.apply(x) as f64;
            assert!(
                (g - want[i]).abs() <= 1e-6 * want[i].abs(),
                "{act:?}.apply({x}) = {g}, want {}",
                want[i]
            );
        }
        for (name, f) in pointwise_variants() {
            let mut out = vec![f32::NAN; m];
            f(
                &tiny,
                pw(1, m, m),
                &packed_m,
                &vec![0.0; m],
                act,
                None,
                &mut out,
            );
            for (i, &g) in out.iter().enumerate() {
                assert!(
                    (g as f64 - want[i]).abs() <= 1e-6 * want[i].abs(),
                    "pointwise {name} {act:?}({}) = {g}, want {}",
                    tiny[i],
                    want[i]
                );
            }
        }
    }

    // SE with fc2 weights zero: each gate is hardsigmoid(b2[ch]) exactly.
    let c = n;
    let w1 = pack(&vec![0.5; c], c, 1);
    let w2 = pack(&vec![0.0; c], 1, c);
    let b2 = xs.to_vec();
    for (name, f) in se_variants() {
        let mut x = vec![2.0f32; c];
        let mut scratch = vec![f32::NAN; c + 1];
        let s = kernels::SeShape {
            pixels: 1,
            c,
            squeeze: 1,
        };
        f(&mut x, s, &w1, &[0.25], &w2, &b2, &mut scratch);
        for (ch, &g) in x.iter().enumerate() {
            let w = 2.0 * hardsigmoid_f64(xs[ch] as f64) as f32;
            assert!(
                (g - w).abs() <= 1e-6,
                "squeeze_excite {name} gate({}) = {}, want {}",
                xs[ch],
                g / 2.0,
                w / 2.0
            );
        }
    }
}

/// On aarch64 the functions codegen calls must be the NEON kernels, never the
/// portable fallback (a silent fallback would cost the Pi 4 its speed).
#[cfg(target_arch = "aarch64")]
#[test]
fn top_level_kernels_are_the_neon_variants() {
    let names = [
        core::any::type_name_of_val(&kernels::pointwise),
        core::any::type_name_of_val(&kernels::depthwise),
        core::any::type_name_of_val(&kernels::conv_stem),
        core::any::type_name_of_val(&kernels::squeeze_excite),
        core::any::type_name_of_val(&kernels::linear),
        core::any::type_name_of_val(&kernels::global_avg_pool),
        core::any::type_name_of_val(&kernels::add),
    ];
    for name in names {
        assert!(name.contains("::neon::"), "{name} is not a NEON kernel");
    }
}

/// On x86_64 the AVX2 detection agrees with std's, so hosts with AVX2 + FMA
/// really run the AVX2 kernels.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_detection_matches_std() {
    let std_says =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    assert_eq!(kernels::has_avx2_fma(), std_says);
}

/// The test's own layout helpers round-trip (the reference relies on them).
#[test]
fn layout_helpers_round_trip() {
    let x: Vec<f32> = (0..24).map(|v| v as f32).collect();
    assert_eq!(hwc_to_chw(&chw_to_hwc(&x, 4, 6), 4, 6), x);
    assert_eq!(chw_to_hwc(&x, 4, 6)[1], 6.0);
}

/// The runtime's own `e^x` (no libm in `core`) within 5e-7 relative of std's over the range
/// softmax uses (`l - max <= 0`), exact at 0 and flushed to 0 below -87.
#[test]
fn exp_matches_std_over_the_softmax_range() {
    let mut x = -87.0f32;
    while x <= 0.0 {
        let (got, want) = (kernels::softmax::exp(x), x.exp());
        assert!(
            (got - want).abs() <= want * 5e-7,
            "exp({x}) = {got}, want {want}"
        );
        x += 0.013;
    }
    assert_eq!(kernels::softmax::exp(0.0), 1.0);
    assert_eq!(kernels::softmax::exp(-100.0), 0.0);
}

/// Softmax sums to one, keeps the logits' order, survives logits far beyond `exp`'s range
/// (it subtracts the maximum) and turns NaN logits into the uniform distribution.
#[test]
fn softmax_sums_to_one_and_orders_like_logits() {
    let mut l = [0f32; 6];
    for (i, v) in l.iter_mut().enumerate() {
        *v = i as f32 * 0.7 - 1.0;
    }
    let p = kernels::softmax(&l);
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert!(p.windows(2).all(|w| w[0] < w[1]));
    let p = kernels::softmax(&[1000.0f32, 999.0]);
    let want = 1.0 / (1.0 + (-1.0f32).exp());
    assert!((p[0] - want).abs() < 1e-6, "{p:?}");
    assert_eq!(kernels::softmax(&[f32::NAN; 4]), [0.25; 4]);
}

/// Runs `f` and returns its panic message, or `None` if it returned.
fn panic_message(f: impl FnOnce()) -> Option<String> {
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).err()?;
    Some(
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    )
}

/// Every variant refuses a slice one value shorter than its shape needs, with a panic before
/// any access (the vector variants read and write through raw pointers, so a missed check
/// would be memory unsafety, not a panic). The vector variants name the op and the lengths
/// (`ConvShape::assert_fits` and its siblings); the portable ones panic on their indexing.
#[test]
fn a_short_slice_panics_in_every_variant() {
    let check = |op: &str, variant: &str, what: &str, msg: Option<String>| {
        let msg = msg.unwrap_or_else(|| panic!("{op} {variant}: a short {what} was accepted"));
        if variant != "portable" {
            assert!(
                msg.contains(op) && msg.contains("a slice is too short for"),
                "{op} {variant}, short {what}: {msg}"
            );
        }
    };
    let a = vec![0.5f32; 4096];
    let mut o = vec![0f32; 4096];
    let act = Activation::Relu;

    let s = pw(9, 16, 24);
    let wl = kernels::packed_len(16, 24);
    for (name, f) in pointwise_variants() {
        let m = panic_message(|| f(&a[..9 * 16 - 1], s, &a[..wl], &a[..24], act, None, &mut o));
        check("pointwise", name, "input", m);
        let m = panic_message(|| f(&a[..9 * 16], s, &a[..wl - 1], &a[..24], act, None, &mut o));
        check("pointwise", name, "weights", m);
        let m = panic_message(|| {
            f(
                &a[..9 * 16],
                s,
                &a[..wl],
                &a[..24],
                act,
                None,
                &mut o[..215],
            )
        });
        check("pointwise", name, "out", m);
        let r = Some(&a[..215]);
        let m = panic_message(|| f(&a[..9 * 16], s, &a[..wl], &a[..24], act, r, &mut o[..216]));
        check("pointwise", name, "residual", m);
    }

    let s = kernels::DepthwiseShape {
        ih: 7,
        iw: 7,
        c: 16,
        k: 3,
        stride: 2,
        pad: 1,
        oh: 4,
        ow: 4,
    };
    for (name, f) in depthwise_variants() {
        let m = panic_message(|| f(&a[..7 * 7 * 16 - 1], s, &a[..144], &a[..16], act, &mut o));
        check("depthwise", name, "input", m);
        let m = panic_message(|| f(&a[..7 * 7 * 16], s, &a[..144], &a[..15], act, &mut o));
        check("depthwise", name, "bias", m);
        let m = panic_message(|| f(&a[..7 * 7 * 16], s, &a[..144], &a[..16], act, &mut o[..255]));
        check("depthwise", name, "out", m);
    }

    let s = kernels::ConvShape {
        ih: 9,
        iw: 9,
        cin: 3,
        cout: 16,
        kh: 3,
        kw: 3,
        stride: 2,
        pad: 1,
        oh: 5,
        ow: 5,
    };
    for (name, f) in stem_variants() {
        let m = panic_message(|| f(&a[..3 * 81], s, &a[..431], &a[..16], act, &mut o));
        check("conv_stem", name, "weights", m);
        let m = panic_message(|| f(&a[..3 * 81], s, &a[..432], &a[..16], act, &mut o[..399]));
        check("conv_stem", name, "out", m);
    }

    let wl = kernels::packed_len(40, 6);
    for (name, f) in linear_variants() {
        let m = panic_message(|| f(&a[..39], 40, 6, &a[..wl], &a[..6], act, &mut o));
        check("linear", name, "input", m);
        let m = panic_message(|| f(&a[..40], 40, 6, &a[..wl], &a[..6], act, &mut o[..5]));
        check("linear", name, "out", m);
    }
}
