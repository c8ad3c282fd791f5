//! Residual addition of two int8 tensors with different scales (TFLite's
//! form).

use super::{CHUNK, Mult, Uniform};

/// The variant every target uses for now: [`portable`] (vector variants will
/// keep its signature).
pub use portable as add;

/// Bits of headroom: both inputs, minus their zero points, are shifted left
/// by this much before they are brought to a common scale, so the rescaling
/// keeps 20 fraction bits (TFLite's choice; `(q - z) << 20` stays below
/// `2^28` in magnitude, so the shifted values and their sum fit `i32`).
pub const ADD_SHIFT: u32 = 20;

/// The constants of one residual add.
#[derive(Clone, Copy, Debug)]
pub struct AddParams {
    /// Zero points of the two inputs, each in `[-128, 127]`.
    pub zero_points: [i32; 2],
    /// `scale_i / (2 * max(scale_a, scale_b))`, bringing each input to the
    /// common scale.
    pub mults: [Mult; 2],
    /// `2 * max(scale_a, scale_b) / (2^20 * y_scale)`, from the common scale
    /// to the output's.
    pub out_mult: Mult,
    /// Output zero point, in `[-128, 127]`.
    pub out_zero_point: i32,
}

/// Portable int8 residual add, element-wise over `out.len()` values:
///
/// ```text
/// sa  = requant((a - za) << ADD_SHIFT, mults[0])
/// sb  = requant((b - zb) << ADD_SHIFT, mults[1])
/// out = sat8(out_zero_point + requant(sa + sb, out_mult))
/// ```
///
/// `a`, `b` and `out` have the same length (any layout, the same for all
/// three).
#[inline]
pub fn portable(a: &[i8], b: &[i8], p: &AddParams, out: &mut [i8]) {
    debug_assert_eq!(a.len(), out.len());
    debug_assert_eq!(b.len(), out.len());
    debug_assert!(p.zero_points.iter().all(|z| (-128..=127).contains(z)));
    let [za, zb] = p.zero_points;
    let [ma, mb] = p.mults;
    let u = Uniform::new(p.out_mult);
    let mut acc = [0i32; CHUNK];
    for ((a, b), out) in a
        .chunks(CHUNK)
        .zip(b.chunks(CHUNK))
        .zip(out.chunks_mut(CHUNK))
    {
        let acc = &mut acc[..out.len()];
        for ((s, &x), &y) in acc.iter_mut().zip(a).zip(b) {
            let sa = ma.requant((i32::from(x) - za) << ADD_SHIFT);
            let sb = mb.requant((i32::from(y) - zb) << ADD_SHIFT);
            // The oracle adds the two i32 values in i64 and casts the sum
            // `as i32`, i.e. keeps it modulo 2^32: exactly wrapping_add (and
            // with multipliers below 1 no wrap can happen anyway).
            *s = sa.wrapping_add(sb);
        }
        u.apply(acc, p.out_zero_point, -128, 127, out);
    }
}
