//! The int8 requantization rule has two implementations on purpose: the
//! oracle's (`derm_codegen::quant::requant`, `i128`) and the kernels'
//! (`derm_runtime::kernels::requant`, every SIMD variant behind
//! `requant_i8`). With the constants codegen derives from real multipliers
//! (`Multiplier::from_real`), they agree bit for bit.

use derm_codegen::quant::{Multiplier, requant as oracle};
use derm_runtime::kernels::{requant, requant_i8};

/// A small LCG: the same values on every machine.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 16
    }
}

#[test]
fn codegen_constants_through_the_runtime_rule_match_the_oracle() {
    let mut r = Lcg(42);
    let mut checked = 0;
    // Real multipliers as int8 models produce them: about 1e-6 to 10.
    for _ in 0..2000 {
        let exp = (r.next() % 24) as i32 - 20;
        let real = 2f64.powi(exp) * (1.0 + (r.next() % 1000) as f64 / 1000.0);
        let m = Multiplier::from_real(real).expect("in range");
        let n = 1 + (r.next() % 40) as usize;
        let acc: Vec<i32> = (0..n)
            .map(|_| match r.next() % 3 {
                0 => r.next() as i32,
                1 => (r.next() % 2_000_001) as i32 - 1_000_000,
                _ => (r.next() % 20_001) as i32 - 10_000,
            })
            .collect();
        let zp = (r.next() % 256) as i32 - 128;
        let relu = r.next().is_multiple_of(2);
        let min = if relu { zp as i8 } else { -128 };
        let mult = vec![m.m; n];
        let shift = vec![m.shift as u8; n];
        let mut out = vec![0i8; n];
        requant_i8(&acc, &mult, &shift, zp, min, 127, &mut out);
        for (i, &a) in acc.iter().enumerate() {
            assert_eq!(requant(a, m.m, m.shift), oracle(a, m), "{a} * {real}");
            let want = (i64::from(zp) + i64::from(oracle(a, m))).clamp(i64::from(min), 127);
            assert_eq!(
                i64::from(out[i]),
                want,
                "{a} * {real}, zp {zp}, relu {relu}"
            );
            checked += 1;
        }
    }
    assert!(checked > 20_000, "{checked}");
}
