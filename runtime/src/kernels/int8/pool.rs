//! Global average pooling of an int8 HWC tensor to one value per channel.

use super::{CHUNK, Mult, Uniform};

/// The variant every target uses for now: [`portable`] (vector variants will
/// keep its signature).
pub use portable as global_avg_pool;

/// Portable int8 global average pool:
/// `out[ch] = sat8(zero_point + requant(sum_p (x[p][ch] - x_zero_point), mult))`.
///
/// `x` is `[pixels][c]` with `c = out.len()`; `mult` is
/// `x_scale / (pixels * y_scale)` (the division by the pixel count is part
/// of the multiplier), `zero_point` the output's. The sums are at most
/// `255 * pixels` in magnitude and fit `i32` (wrapping adds give the
/// oracle's `i64` sum cast `as i32` regardless).
#[inline]
pub fn portable(
    x: &[i8],
    pixels: usize,
    x_zero_point: i32,
    mult: Mult,
    zero_point: i32,
    out: &mut [i8],
) {
    let c = out.len();
    debug_assert_eq!(x.len(), pixels * c);
    debug_assert!((-128..=127).contains(&x_zero_point));
    let u = Uniform::new(mult);
    let mut acc = [0i32; CHUNK];
    for c0 in (0..c).step_by(CHUNK) {
        let n = CHUNK.min(c - c0);
        let acc = &mut acc[..n];
        acc.fill(0);
        for p in 0..pixels {
            let src = &x[p * c + c0..p * c + c0 + n];
            for (a, &v) in acc.iter_mut().zip(src) {
                *a = a.wrapping_add(i32::from(v) - x_zero_point);
            }
        }
        u.apply(acc, zero_point, -128, 127, &mut out[c0..c0 + n]);
    }
}
