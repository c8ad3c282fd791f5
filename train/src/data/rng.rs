//! A small, seedable, version-stable random generator.
//!
//! Splits, balancing plans, shuffles, flips and noise must be reproducible
//! from `(seed, epoch, position)` across crate upgrades (a resumed run must
//! draw exactly what the uninterrupted one drew), so we own the algorithm
//! (xoshiro256++ seeded through SplitMix64) instead of depending on `rand`'s
//! unspecified `StdRng`. Gaussian noise comes from `rand_distr`'s sampler fed by
//! this generator (Cargo.lock pins its version, hence its values).

/// xoshiro256++ generator.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator seeded from one 64-bit value.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        Rng { s }
    }

    /// A generator for one stream identified by several values (for example
    /// `[seed, epoch, position, purpose]`); different tuples give independent
    /// streams.
    pub fn from_parts(parts: &[u64]) -> Self {
        let mut x = 0x243F_6A88_85A3_08D3u64;
        for &p in parts {
            x ^= p;
            x = splitmix64(&mut x);
        }
        Rng::new(x)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (Lemire's method, unbiased). `n` must be > 0.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        let n = n as u64;
        let mut m = (self.next_u64() as u128) * (n as u128);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = (self.next_u64() as u128) * (n as u128);
            }
        }
        (m >> 64) as usize
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// Fills `out` with independent N(0, sigma^2) samples: `rand_distr`'s ziggurat
    /// sampler driven by this generator, so the noise of a slot is still a pure function
    /// of the stream's parts (a resumed run draws the same noise without storing state).
    pub fn fill_normal(&mut self, out: &mut [f32], sigma: f32) {
        use rand_distr::Distribution;
        for v in out {
            let z: f32 = rand_distr::StandardNormal.sample(self);
            *v = z * sigma;
        }
    }
}

/// Lets `rand_distr`'s distributions draw from our generator.
impl rand::RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        (Rng::next_u64(self) >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        Rng::next_u64(self)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let bytes = Rng::next_u64(self).to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut r = Rng::new(7);
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[r.below(5)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map(|_| Rng::from_parts(&[1, 2]).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::from_parts(&[1, 2]).next_u64(),
            Rng::from_parts(&[2, 1]).next_u64()
        );
    }

    #[test]
    fn normal_has_requested_moments() {
        let mut r = Rng::new(3);
        let mut v = vec![0f32; 200_001];
        r.fill_normal(&mut v, 0.05);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.0005, "mean {mean}");
        assert!((var.sqrt() - 0.05).abs() < 0.0005, "std {}", var.sqrt());
        let kurt = v.iter().map(|&x| (x as f64 - mean).powi(4)).sum::<f64>() / n / (var * var);
        assert!((kurt - 3.0).abs() < 0.06, "kurtosis {kurt}");
        let within_1sd = v.iter().filter(|&&x| (x as f64).abs() < 0.05).count() as f64 / n;
        assert!(
            (within_1sd - 0.6827).abs() < 0.005,
            "P(|x| < sigma) = {within_1sd}"
        );
    }
}
