//! Global average pooling over an HWC tensor.

/// `out[c] = mean over pixels of input[p][c]`; see [`portable`].
#[inline]
pub fn global_avg_pool(input: &[f32], hw: usize, c: usize, out: &mut [f32]) {
    portable(input, hw, c, out)
}

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
