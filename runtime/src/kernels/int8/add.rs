//! Residual addition of two int8 tensors with different scales (TFLite's
//! form).

use super::{CHUNK, Mult, Uniform};
use crate::kernels::requant::{Dispatch, Row};

/// The variant this target uses: [`portable`].
#[cfg(not(target_arch = "x86_64"))]
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
    // SAFETY: the dispatching row function needs no CPU feature.
    unsafe { body::<Dispatch>(a, b, p, out) }
}

/// [`portable`]'s computation with the row function `R`: the one source of
/// every variant (they differ in the features they are compiled with).
///
/// # Safety
/// `R`'s CPU features are present.
#[inline(always)]
unsafe fn body<R: Row>(a: &[i8], b: &[i8], p: &AddParams, out: &mut [i8]) {
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
        // SAFETY: R's features are the caller's contract.
        unsafe { u.apply_with::<R>(acc, p.out_zero_point, -128, 127, out) };
    }
}

/// x86_64: [`portable`]'s source compiled with AVX-512 (F, VL, DQ: the
/// per-value 64-bit rescales vectorize) and the AVX-512 row requantization.
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::{AddParams, body};
    use crate::kernels::requant;

    /// AVX-512 int8 residual addition with the contract of
    /// [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support everything [`crate::kernels::has_avx512_vnni`]
    /// checks (the AVX-512 row functions assume it).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub unsafe fn add(a: &[i8], b: &[i8], p: &AddParams, out: &mut [i8]) {
        // SAFETY: the features are this function's contract.
        unsafe { body::<requant::Avx512>(a, b, p, out) }
    }
}

/// The variant this target uses: [`avx512`] when the CPU has AVX-512
/// ([`crate::kernels::has_avx512_vnni`]), else [`portable`].
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn add(a: &[i8], b: &[i8], p: &AddParams, out: &mut [i8]) {
    if crate::kernels::has_avx512_vnni() {
        // SAFETY: the CPU supports AVX-512 (checked just above).
        unsafe { avx512::add(a, b, p, out) }
    } else {
        portable(a, b, p, out)
    }
}
