//! The int8 requantization rule ([`kernels::requant`]) against a plain
//! `i128` implementation, and every [`kernels::requant_i8`] variant against
//! it element-wise. All results must be bit-identical (`assert_eq!`): int8
//! kernels on the Pi and on the host have to agree exactly.

use derm_runtime::kernels::{self, requant};

/// Smallest allowed multiplier, `2^30`.
const M_MIN: i32 = 1 << 30;
/// Largest allowed multiplier, `2^31 - 1`.
const M_MAX: i32 = i32::MAX;

/// The rule written out with `i128` and floor division: no shifts, no
/// overflow to think about.
fn reference(x: i32, m: i32, s: u32) -> i32 {
    let num = x as i128 * m as i128 + (1i128 << (s - 1));
    let v = num.div_euclid(1i128 << s);
    v.clamp(i32::MIN as i128, i32::MAX as i128) as i32
}

/// [`reference`] plus zero point and clamp, for one output element.
fn reference_i8(x: i32, m: i32, s: u8, zero_point: i32, min: i8, max: i8) -> i8 {
    let v = reference(x, m, s as u32) as i128 + zero_point as i128;
    v.clamp(min as i128, max as i128) as i8
}

/// A 64-bit LCG (Knuth's MMIX constants), high bits only: fixed and
/// portable, so host and qemu runs see the same cases.
struct Lcg(u64);

impl Lcg {
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 32) as u32
    }
    /// Uniform in `lo..=hi` (up to a negligible modulo bias).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi - lo + 1) as u64;
        let r = ((self.next_u32() as u64) << 32) | self.next_u32() as u64;
        lo + (r % span) as i64
    }
    fn i32(&mut self) -> i32 {
        self.next_u32() as i32
    }
    /// A multiplier in `[2^30, 2^31)`.
    fn mult(&mut self) -> i32 {
        self.range(M_MIN as i64, M_MAX as i64) as i32
    }
    /// A shift in `[1, 62]`, mostly realistic (`[20, 40]`), with the extremes
    /// well represented.
    fn shift(&mut self) -> u8 {
        match self.range(0, 9) {
            0..=6 => self.range(20, 40) as u8,
            7 => self.range(1, 62) as u8,
            _ => [1, 2, 61, 62][self.range(0, 3) as usize],
        }
    }
}

// ---------------------------------------------------------------- scalar rule

/// `x` values at the edges: 0, ±1, the `i32` limits and every ±2^k.
fn edge_xs() -> Vec<i32> {
    let mut xs = vec![0, 1, -1, i32::MIN, i32::MAX, i32::MIN + 1, i32::MAX - 1];
    for k in 1..31 {
        xs.push(1 << k);
        xs.push(-(1 << k));
        xs.push((1 << k) - 1);
        xs.push(-(1 << k) + 1);
    }
    xs
}

#[test]
fn scalar_rule_matches_reference_on_edges() {
    let mut rng = Lcg(1);
    let mut ms = vec![M_MIN, M_MAX, M_MIN + 1, M_MAX - 1, 3 << 29];
    ms.extend((0..4).map(|_| rng.mult()));
    let mut checked = 0;
    for &x in &edge_xs() {
        for &m in &ms {
            // Every shift, which includes the named edges 1, 2, 31, 32, 61, 62.
            for s in 1..=62 {
                assert_eq!(requant(x, m, s), reference(x, m, s), "x={x} m={m} s={s}");
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000);
}

#[test]
fn scalar_rule_matches_reference_on_random_values() {
    let mut rng = Lcg(2);
    for _ in 0..200_000 {
        let x = match rng.range(0, 2) {
            0 => rng.i32(),
            1 => rng.range(-1000, 1000) as i32,
            _ => rng.i32() >> rng.range(0, 31),
        };
        let (m, s) = (rng.mult(), rng.shift() as u32);
        assert_eq!(requant(x, m, s), reference(x, m, s), "x={x} m={m} s={s}");
    }
}

/// Exact ties `x * m = (2k + 1) * 2^(s - 1)` round toward +infinity, for
/// positive and negative values alike.
#[test]
fn ties_round_toward_positive_infinity() {
    // One half: 0.5 -> 1, -0.5 -> 0.
    assert_eq!(requant(1, M_MIN, 31), 1);
    assert_eq!(requant(-1, M_MIN, 31), 0);
    // 1.5 -> 2, -1.5 -> -1, 2.5 -> 3, -2.5 -> -2.
    assert_eq!(requant(3, M_MIN, 31), 2);
    assert_eq!(requant(-3, M_MIN, 31), -1);
    assert_eq!(requant(5, M_MIN, 31), 3);
    assert_eq!(requant(-5, M_MIN, 31), -2);

    // m = 2^30, s = 31 + j, x = (2k + 1) * 2^j: x * m / 2^s = k + 1/2.
    for j in 0..=31u32 {
        for k in [-1_000_000i64, -3, -2, -1, 0, 1, 2, 1_000_000] {
            let x = (2 * k + 1) << j;
            let Ok(x) = i32::try_from(x) else { continue };
            assert_eq!(
                requant(x, M_MIN, 31 + j),
                (k + 1) as i32,
                "x={x} s={}",
                31 + j
            );
        }
    }

    // Odd x and odd m with s = 1: x * m / 2 is always a tie, -> (x * m + 1) / 2.
    let mut rng = Lcg(3);
    for _ in 0..10_000 {
        let x = rng.i32() | 1;
        let m = rng.mult() | 1;
        let want = (x as i64 * m as i64 + 1) / 2; // exact: x * m + 1 is even
        assert_eq!(
            requant(x, m, 1) as i64,
            want.clamp(i32::MIN as i64, i32::MAX as i64)
        );
    }
}

/// Values computed by hand from real multipliers, with `(m, s)` derived as
/// codegen does: `s = 30 - floor(log2 r)`, `m = round(r * 2^s)`.
#[test]
fn pinned_values() {
    // r = 0.25: s = 32, m = 2^30. 1000 * 0.25 = 250.
    assert_eq!(requant(1000, M_MIN, 32), 250);
    assert_eq!(requant(-1000, M_MIN, 32), -250);
    // r = 0.5: s = 31, m = 2^30. -3 * 0.5 = -1.5 -> -1.
    assert_eq!(requant(-3, M_MIN, 31), -1);
    // r = 0.1: s = 34, m = round(0.1 * 2^34) = 1717986918 (slightly below 0.1).
    // 1000 * r = 99.99999997 -> 100; 25 * r = 2.4999999993 -> 2;
    // -25 * r = -2.4999999993 -> -2; -35 * r = -3.49999999 -> -3.
    let (m, s) = (1_717_986_918, 34);
    assert_eq!(requant(1000, m, s), 100);
    assert_eq!(requant(25, m, s), 2);
    assert_eq!(requant(-25, m, s), -2);
    assert_eq!(requant(-35, m, s), -3);
    // r = 4: s = 28, m = 2^30. Real multipliers > 1 saturate to i32.
    assert_eq!(requant(1000, M_MIN, 28), 4000);
    assert_eq!(requant(i32::MAX, M_MIN, 28), i32::MAX);
    assert_eq!(requant(i32::MIN, M_MIN, 28), i32::MIN);
    assert_eq!(requant(1 << 29, M_MIN, 28), i32::MAX);
    // The largest products, at the smallest real multiplier:
    // (-2^31) * (2^31 - 1) / 2^62 = -0.9999999995 -> -1,
    // (2^31 - 1)^2 / 2^62 = 0.9999999991 -> 1; with m = 2^30,
    // (2^31 - 1) / 2^32 = 0.4999999998 -> 0 and -2^31 / 2^32 = -0.5 -> 0 (a tie).
    assert_eq!(requant(i32::MIN, M_MAX, 62), -1);
    assert_eq!(requant(i32::MAX, M_MAX, 62), 1);
    assert_eq!(requant(i32::MAX, M_MIN, 62), 0);
    assert_eq!(requant(i32::MIN, M_MIN, 62), 0);
    // r ~ 2^29 with s = 1: saturates.
    assert_eq!(requant(-2, M_MAX, 1), i32::MIN + 1);
    assert_eq!(requant(-3, M_MAX, 1), i32::MIN);
}

/// Out-of-range arguments are caught in debug builds.
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "requant: multiplier outside")]
fn shift_zero_is_rejected_in_debug() {
    requant(std::hint::black_box(1), M_MIN, std::hint::black_box(0));
}

/// Out-of-range arguments are caught in debug builds.
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "requant: multiplier outside")]
fn small_multiplier_is_rejected_in_debug() {
    requant(std::hint::black_box(1), std::hint::black_box(M_MIN - 1), 31);
}

// ---------------------------------------------------------------- requant_i8

type RequantFn = fn(&[i32], &[i32], &[u8], i32, i8, i8, &mut [i8]);

fn requant_i8_variants() -> Vec<(&'static str, RequantFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, RequantFn)> = vec![
        ("dispatch", kernels::requant_i8),
        ("portable", kernels::requant::portable),
        #[cfg(target_arch = "aarch64")]
        ("neon", kernels::requant::neon::requant_i8),
    ];
    // The 32-bit form for rows whose shifts all exceed 31 (given `31 - s` as codegen writes
    // it); other rows go to the plain NEON row, as the epilogue does without that form.
    #[cfg(target_arch = "aarch64")]
    v.push(("neon high", |a, m, s, zp, lo, hi, o| {
        if s[..o.len()].iter().all(|&s| s > 31) {
            let t: Vec<i32> = s.iter().map(|&s| 31 - i32::from(s)).collect();
            kernels::requant::neon::requant_i8_high(a, m, s, &t, zp, lo, hi, o)
        } else {
            kernels::requant::neon::requant_i8(a, m, s, zp, lo, hi, o)
        }
    }));
    #[cfg(target_arch = "x86_64")]
    if kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (and FMA).
        v.push(("avx2", |a, m, s, zp, lo, hi, o| unsafe {
            kernels::requant::avx2::requant_i8(a, m, s, zp, lo, hi, o)
        }));
    }
    #[cfg(target_arch = "x86_64")]
    if kernels::has_avx512_vnni() {
        // SAFETY: the CPU supports AVX-512 F and VL (and AVX2).
        v.push(("avx512", |a, m, s, zp, lo, hi, o| unsafe {
            kernels::requant::avx512::requant_i8(a, m, s, zp, lo, hi, o)
        }));
        // The 32-bit form, as for NEON above.
        v.push(("avx512 high", |a, m, s, zp, lo, hi, o| {
            if s[..o.len()].iter().all(|&s| s > 31) {
                let t: Vec<i32> = s.iter().map(|&s| 31 - i32::from(s)).collect();
                // SAFETY: the CPU supports AVX-512 F, BW and VL (and AVX2).
                unsafe { kernels::requant::avx512::requant_i8_high(a, m, s, &t, zp, lo, hi, o) }
            } else {
                // SAFETY: as above.
                unsafe { kernels::requant::avx512::requant_i8(a, m, s, zp, lo, hi, o) }
            }
        }));
    }
    v
}

/// How a row's accumulators are drawn.
#[derive(Clone, Copy, Debug)]
enum Flavor {
    /// Uniform over all of `i32` (mostly saturating outputs).
    Full,
    /// Uniform in `±2^k` for a random `k` per element.
    Small,
    /// Near `y * 2^s / m` for `y` in [-300, 300]: outputs around the int8
    /// range, so the clamp boundaries and rounding are exercised.
    Targeted,
    /// `m = 2^30`, `s = 31 + j`, `acc = (2k + 1) * 2^j`: every element an
    /// exact tie.
    Ties,
    /// As `Targeted`, with every shift in `[32, 62]` (as in conv layers),
    /// which vector variants may compute in 32-bit lanes.
    WideShifts,
    /// Exact ties with every shift in `[32, 54]`: `m = 2^30` and
    /// accumulators that make `x * m` an odd multiple of `2^(s - 1)`, or
    /// one off it.
    WideTies,
}

struct Row {
    acc: Vec<i32>,
    mult: Vec<i32>,
    shift: Vec<u8>,
    zero_point: i32,
}

fn random_row(rng: &mut Lcg, len: usize, flavor: Flavor) -> Row {
    let mut row = Row {
        acc: Vec::with_capacity(len),
        mult: Vec::with_capacity(len),
        shift: Vec::with_capacity(len),
        zero_point: rng.range(-128, 127) as i32,
    };
    for _ in 0..len {
        let (mut m, mut s) = (rng.mult(), rng.shift());
        let x = match flavor {
            Flavor::Full => rng.i32(),
            Flavor::Small => {
                let k = rng.range(0, 31);
                rng.range(-(1 << k), (1 << k) - 1) as i32
            }
            Flavor::Targeted => {
                let y = rng.range(-300, 300) as i128;
                let x = (y << s) / m as i128 + rng.range(-2, 2) as i128;
                x.clamp(i32::MIN as i128, i32::MAX as i128) as i32
            }
            Flavor::WideShifts => {
                s = match rng.range(0, 3) {
                    0 => rng.range(32, 62) as u8,
                    _ => rng.range(32, 47) as u8,
                };
                let y = rng.range(-300, 300) as i128;
                let x = (y << s) / m as i128 + rng.range(-2, 2) as i128;
                x.clamp(i32::MIN as i128, i32::MAX as i128) as i32
            }
            Flavor::WideTies => {
                // x * 2^30 = (2k + 1) * 2^(s - 1) for x = (2k + 1) * 2^(s - 31),
                // then nudged by -1, 0 or +1 (m = 2^30 keeps it a tie when not nudged).
                let j = rng.range(1, 24) as u32;
                (m, s) = (M_MIN, 31 + j as u8);
                let kmax = ((1i64 << (30 - j)) - 1).min(200);
                (((rng.range(-kmax, kmax) * 2 + 1) << j) + rng.range(-1, 1)) as i32
            }
            Flavor::Ties => {
                let j = rng.range(0, 24) as u32;
                (m, s) = (M_MIN, 31 + j as u8);
                // |2k + 1| < 2^(31 - j) keeps acc inside i32.
                let kmax = ((1i64 << (30 - j)) - 1).min(200);
                ((rng.range(-kmax, kmax) * 2 + 1) << j) as i32
            }
        };
        row.acc.push(x);
        row.mult.push(m);
        row.shift.push(s);
    }
    row
}

/// Every variant equals the `i128` reference element-wise on rows of every
/// tail length, every accumulator flavor, both clamp modes.
#[test]
fn requant_i8_variants_match_reference() {
    const LENS: [usize; 12] = [0, 1, 3, 7, 9, 33, 8, 16, 5, 57, 96, 250];
    const FLAVORS: [Flavor; 6] = [
        Flavor::Full,
        Flavor::Small,
        Flavor::Targeted,
        Flavor::Ties,
        Flavor::WideShifts,
        Flavor::WideTies,
    ];
    let variants = requant_i8_variants();
    let mut rng = Lcg(4);
    let (mut elements, mut rows, mut in_range) = (0, 0, 0);
    while elements < 15_000 {
        let len = LENS[rows % LENS.len()];
        let flavor = FLAVORS[(rows / LENS.len()) % FLAVORS.len()];
        let row = random_row(&mut rng, len, flavor);
        let zp = row.zero_point;
        // Plain int8 saturation, fused ReLU (min = zero point), and bounds
        // inside int8 on both sides (variants may leave [-128, 127] to their
        // saturating narrows, so tighter bounds take a separate step).
        for (min, max) in [(-128i8, 127i8), (zp as i8, 127), (-100, 90)] {
            let want: Vec<i8> = (0..len)
                .map(|i| reference_i8(row.acc[i], row.mult[i], row.shift[i], zp, min, max))
                .collect();
            in_range += want.iter().filter(|&&v| v > min && v < max).count();
            for (name, f) in &variants {
                // Start from values that differ from the expected ones, so an
                // element a variant forgot to write shows up.
                let mut out: Vec<i8> = want.iter().map(|&v| !v).collect();
                f(&row.acc, &row.mult, &row.shift, zp, min, max, &mut out);
                for i in 0..len {
                    assert_eq!(
                        out[i], want[i],
                        "{name} row {rows} ({flavor:?}, len {len}) element {i}: \
                         acc={} m={} s={} zp={zp} min={min} max={max}",
                        row.acc[i], row.mult[i], row.shift[i]
                    );
                }
            }
        }
        elements += len;
        rows += 1;
    }
    // The targeted and tie rows must really land inside the clamp range
    // often, or the test would only check saturation.
    assert!(in_range > 2_000, "only {in_range} unclamped outputs");
}

/// The scalar rule and the row function agree on the hand-computed values
/// too (single-element rows go through the tails, 8-element rows through the
/// vector bodies).
#[test]
fn requant_i8_pinned_values() {
    for (name, f) in requant_i8_variants() {
        for len in [1, 8, 16] {
            let acc = vec![1000; len];
            let mult = vec![M_MIN; len];
            let shift = vec![32; len];
            let mut out = vec![0i8; len];
            // 1000 * 0.25 = 250, - 128 = 122.
            f(&acc, &mult, &shift, -128, -128, 127, &mut out);
            assert_eq!(out, vec![122; len], "{name} len {len}");
            // -3 * 0.5 = -1.5 -> -1, + 5 = 4; ReLU at zero point 5 keeps 4 -> 5.
            let acc = vec![-3; len];
            let shift = vec![31; len];
            f(&acc, &mult, &shift, 5, -128, 127, &mut out);
            assert_eq!(out, vec![4; len], "{name} len {len}");
            f(&acc, &mult, &shift, 5, 5, 127, &mut out);
            assert_eq!(out, vec![5; len], "{name} len {len}");
            // Saturated i32 plus a negative zero point still clamps to 127.
            let acc = vec![i32::MAX; len];
            let shift = vec![1; len];
            f(&acc, &mult, &shift, -128, -128, 127, &mut out);
            assert_eq!(out, vec![127; len], "{name} len {len}");
        }
    }
}

/// On aarch64 the function codegen calls must be the NEON kernel, never the
/// portable fallback.
#[cfg(target_arch = "aarch64")]
#[test]
fn top_level_requant_i8_is_the_neon_variant() {
    let name = core::any::type_name_of_val(&kernels::requant_i8);
    assert!(name.contains("::neon::"), "{name} is not a NEON kernel");
}
