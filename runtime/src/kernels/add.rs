//! Elementwise addition, for graphs whose residual add is not fused into a
//! convolution.

/// `out[i] = a[i] + b[i]`; see [`portable`].
#[inline]
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    portable(a, b, out)
}

/// Portable elementwise addition; the three slices have the same length.
#[inline]
pub fn portable(a: &[f32], b: &[f32], out: &mut [f32]) {
    debug_assert_eq!(a.len(), out.len());
    debug_assert_eq!(b.len(), out.len());
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}
