//! Global average pooling over an HWC tensor.

/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(target_arch = "aarch64")]
pub use neon::global_avg_pool;
/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(not(target_arch = "aarch64"))]
pub use portable as global_avg_pool;

/// Portable global average pool: `input` is `[hw][c]`, `out` is `[c]`.
#[inline]
pub fn portable(input: &[f32], hw: usize, c: usize, out: &mut [f32]) {
    debug_assert_eq!(input.len(), hw * c);
    debug_assert_eq!(out.len(), c);
    out.fill(0.0);
    if c == 0 {
        return;
    }
    for px in input.chunks_exact(c) {
        for (o, &v) in out.iter_mut().zip(px) {
            *o += v;
        }
    }
    let scale = 1.0 / hw as f32;
    for o in out.iter_mut() {
        *o *= scale;
    }
}

/// NEON global average pool for aarch64: 16 channels at a time stay in four
/// accumulators while the pixels stream past.
#[cfg(target_arch = "aarch64")]
pub mod neon {
    use super::super::neon_util::ld1x4_post_by;
    use core::arch::aarch64::*;

    /// NEON global average pool with the contract of [`super::portable`].
    ///
    /// # Panics
    /// If `input` is shorter than `hw * c` or `out` than `c`.
    #[inline]
    pub fn global_avg_pool(input: &[f32], hw: usize, c: usize, out: &mut [f32]) {
        assert!(
            input.len() >= hw * c,
            "global_avg_pool: input shorter than hw * c"
        );
        assert!(out.len() >= c, "global_avg_pool: out shorter than c");
        let scale = 1.0 / hw as f32;
        let mut cb = 0;
        // SAFETY: channel blocks end at cb + 16 <= c (or cb + 4 <= c), so
        // every read input[px * c + cb + j] is below hw * c and every store
        // below c.
        unsafe {
            let x = input.as_ptr();
            let z = vdupq_n_f32(0.0);
            while cb + 16 <= c {
                let mut acc = [z; 4];
                // One `ld1` of the block's four vectors per pixel, stepping to the next.
                let mut p = x.add(cb);
                for _ in 0..hw {
                    let v = ld1x4_post_by(&mut p, c);
                    for (a, v) in acc.iter_mut().zip(v) {
                        *a = vaddq_f32(*a, v);
                    }
                }
                for (j, a) in acc.iter().enumerate() {
                    vst1q_f32(out.as_mut_ptr().add(cb + 4 * j), vmulq_n_f32(*a, scale));
                }
                cb += 16;
            }
            while cb + 4 <= c {
                let mut acc = z;
                for px in 0..hw {
                    acc = vaddq_f32(acc, vld1q_f32(x.add(px * c + cb)));
                }
                vst1q_f32(out.as_mut_ptr().add(cb), vmulq_n_f32(acc, scale));
                cb += 4;
            }
        }
        for ch in cb..c {
            let mut s = 0.0;
            for px in 0..hw {
                s += input[px * c + ch];
            }
            out[ch] = s * scale;
        }
    }
}
