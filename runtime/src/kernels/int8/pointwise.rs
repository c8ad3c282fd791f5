//! 1x1 int8 convolution (a GEMM over pixels) on HWC tensors.

use super::{CHUNK, Epilogue, dot};

/// The variant every target uses for now: [`portable`] (vector variants will
/// keep its signature).
pub use portable as pointwise;

/// Shape of a pointwise convolution: `pixels` input rows of `k` channels,
/// `n` output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointwiseShape {
    /// Pixels (`h * w`).
    pub pixels: usize,
    /// Input channels.
    pub k: usize,
    /// Output channels.
    pub n: usize,
}

/// Portable int8 pointwise convolution:
/// `acc[p][j] = bias[j] + sum_i w[j][i] * x[p][i]`, then `e` maps each row.
///
/// `x` is `[pixels][k]`, `w` is `[n][k]` row-major (unpacked), `bias` is
/// `[n]`, `out` is `[pixels][n]`, and `e` has `n` channels.
///
/// `bias` has the input zero point folded in by codegen:
/// `bias[j] = b[j] - x_zero_point * sum_i w[j][i]`. A pointwise convolution
/// has no padding, so every term of the oracle's
/// `b[j] + sum_i w[j][i] * (x[p][i] - x_zero_point)` is present and the two
/// forms are the same integer; with wrapping `i32` arithmetic they are the
/// same modulo `2^32`, hence the same bits after the oracle's `as i32`, even
/// where the folded bias and the raw sum are individually large.
#[inline]
pub fn portable(
    x: &[i8],
    s: PointwiseShape,
    w: &[i8],
    bias: &[i32],
    e: Epilogue<'_>,
    out: &mut [i8],
) {
    debug_assert_eq!(x.len(), s.pixels * s.k);
    debug_assert_eq!(w.len(), s.n * s.k);
    debug_assert_eq!(bias.len(), s.n);
    debug_assert_eq!(e.channels(), s.n);
    debug_assert_eq!(out.len(), s.pixels * s.n);
    let (k, n) = (s.k, s.n);
    let mut acc = [0i32; CHUNK];
    for p in 0..s.pixels {
        let row = &x[p * k..(p + 1) * k];
        for j0 in (0..n).step_by(CHUNK) {
            let m = CHUNK.min(n - j0);
            for (jj, a) in acc[..m].iter_mut().enumerate() {
                let j = j0 + jj;
                *a = bias[j].wrapping_add(dot(&w[j * k..(j + 1) * k], row));
            }
            e.slice(j0..j0 + m)
                .apply(&acc[..m], &mut out[p * n + j0..p * n + j0 + m]);
        }
    }
}
