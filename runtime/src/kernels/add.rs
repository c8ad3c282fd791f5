//! Elementwise addition, for graphs whose residual add is not fused into a
//! convolution.

/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(target_arch = "aarch64")]
pub use neon::add;
/// The variant this target uses: NEON on aarch64, [`portable`] elsewhere.
#[cfg(not(target_arch = "aarch64"))]
pub use portable as add;

/// Portable elementwise addition; the three slices have the same length.
#[inline]
pub fn portable(a: &[f32], b: &[f32], out: &mut [f32]) {
    debug_assert_eq!(a.len(), out.len());
    debug_assert_eq!(b.len(), out.len());
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// NEON elementwise addition for aarch64, 16 values per iteration.
#[cfg(target_arch = "aarch64")]
pub mod neon {
    use core::arch::aarch64::*;

    /// NEON addition with the contract of [`super::portable`].
    ///
    /// # Panics
    /// If `a` or `b` is shorter than `out`.
    #[inline]
    pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
        let len = out.len();
        assert!(
            a.len() >= len && b.len() >= len,
            "add: inputs shorter than out"
        );
        let mut i = 0;
        // SAFETY: i + 16 <= len and both inputs hold at least len values.
        unsafe {
            while i + 16 <= len {
                for j in (0..16).step_by(4) {
                    let v = vaddq_f32(
                        vld1q_f32(a.as_ptr().add(i + j)),
                        vld1q_f32(b.as_ptr().add(i + j)),
                    );
                    vst1q_f32(out.as_mut_ptr().add(i + j), v);
                }
                i += 16;
            }
        }
        for j in i..len {
            out[j] = a[j] + b[j];
        }
    }
}
