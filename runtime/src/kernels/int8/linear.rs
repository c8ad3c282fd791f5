//! Fully connected int8 layer (GEMV): to int8, or to the `f32` logits when
//! it produces the graph output.

use super::{CHUNK, Epilogue, dot};

/// The variant every target uses for now: [`portable`] (vector variants will
/// keep its signature).
pub use portable as linear;
/// The variant every target uses for now: [`portable_logits`] (vector
/// variants will keep its signature).
pub use portable_logits as linear_logits;

/// Portable int8 linear layer:
/// `acc[j] = bias[j] + sum_i w[j][i] * x[i]`, then `e` maps the row into
/// `out`.
///
/// `x` is `[k]`, `w` is `[n][k]` row-major (unpacked), `bias` is `[n]`,
/// `out` is `[n]` with `n = out.len()`, and `e` has `n` channels. As in
/// [`pointwise`](super::pointwise::portable), `bias` has the input zero point
/// folded in (`bias[j] = b[j] - x_zero_point * sum_i w[j][i]`), which equals
/// the oracle's `b[j] + sum_i w[j][i] * (x[i] - x_zero_point)` modulo `2^32`.
#[inline]
pub fn portable(x: &[i8], k: usize, w: &[i8], bias: &[i32], e: Epilogue<'_>, out: &mut [i8]) {
    let n = out.len();
    debug_assert_eq!(x.len(), k);
    debug_assert_eq!(w.len(), n * k);
    debug_assert_eq!(bias.len(), n);
    debug_assert_eq!(e.channels(), n);
    let mut acc = [0i32; CHUNK];
    for j0 in (0..n).step_by(CHUNK) {
        let m = CHUNK.min(n - j0);
        for (jj, a) in acc[..m].iter_mut().enumerate() {
            let j = j0 + jj;
            *a = bias[j].wrapping_add(dot(&w[j * k..(j + 1) * k], x));
        }
        e.slice(j0..j0 + m).apply(&acc[..m], &mut out[j0..j0 + m]);
    }
}

/// Portable int8 linear layer producing the `f32` logits:
/// `out[j] = (acc[j] as f32) * scale[j]` with `acc` as in [`portable`]
/// (zero point folded into `bias` the same way).
///
/// `x` is `[k]`, `w` is `[n][k]`, `bias` and `scale` are `[n]`, `out` is
/// `[n]` with `n = out.len()`; `scale[j]` is `f32(x_scale * w_scale[j])`.
/// One correctly rounded conversion and one correctly rounded multiply, so
/// every IEEE machine gives the same bits.
#[inline]
pub fn portable_logits(x: &[i8], k: usize, w: &[i8], bias: &[i32], scale: &[f32], out: &mut [f32]) {
    let n = out.len();
    debug_assert_eq!(x.len(), k);
    debug_assert_eq!(w.len(), n * k);
    debug_assert_eq!(bias.len(), n);
    debug_assert_eq!(scale.len(), n);
    for (j, (o, (&b, &sc))) in out.iter_mut().zip(bias.iter().zip(scale)).enumerate() {
        let acc = b.wrapping_add(dot(&w[j * k..(j + 1) * k], x));
        *o = acc as f32 * sc;
    }
}
