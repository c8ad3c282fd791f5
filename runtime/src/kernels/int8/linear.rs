//! Fully connected int8 layer (GEMV): to int8, or to the `f32` logits when
//! it produces the graph output.
//!
//! Every variant runs the same source (`body`, over the shared
//! `gemv_acc` with `i16` products); on x86_64 it is
//! compiled once more with AVX2 and with AVX-512 and chosen at run time,
//! like the squeeze-excite layer's. The sums are the same integers modulo
//! `2^32` whatever the vector width, so every variant gives the oracle's
//! bits.

use super::{CHUNK, Epilogue, gemv_acc};
use crate::kernels::requant::{self, Row};

/// The variant this target uses: [`portable`].
#[cfg(not(target_arch = "x86_64"))]
pub use portable as linear;
/// The variant every target uses: [`portable_logits`] (the logits layer has a handful of
/// outputs; its time does not show in a profile).
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
    // SAFETY: the dispatching row function needs no CPU feature.
    unsafe { body::<requant::Dispatch>(x, k, w, bias, e, out) }
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
    assert!(
        x.len() == k && w.len() == n * k && bias.len() == n && scale.len() == n,
        "int8 linear: x, w, bias or scale does not match k = {k}, n = {n}"
    );
    let mut acc = [0i32; CHUNK];
    for j0 in (0..n).step_by(CHUNK) {
        let m = CHUNK.min(n - j0);
        let acc = &mut acc[..m];
        acc.copy_from_slice(&bias[j0..j0 + m]);
        gemv_acc(&w[j0 * k..(j0 + m) * k], k, x, i16::from, acc);
        for ((o, &a), &sc) in out[j0..j0 + m].iter_mut().zip(acc.iter()).zip(&scale[j0..]) {
            *o = a as f32 * sc;
        }
    }
}

/// [`portable`]'s loop, with `R`'s requantization rows.
///
/// # Safety
/// `R`'s CPU features are present.
#[inline(always)]
unsafe fn body<R: Row>(
    x: &[i8],
    k: usize,
    w: &[i8],
    bias: &[i32],
    e: Epilogue<'_>,
    out: &mut [i8],
) {
    let n = out.len();
    assert!(
        x.len() == k && w.len() == n * k && bias.len() == n,
        "int8 linear: x, w or bias does not match k = {k}, n = {n}"
    );
    debug_assert_eq!(e.channels(), n);
    let mut acc = [0i32; CHUNK];
    for j0 in (0..n).step_by(CHUNK) {
        let m = CHUNK.min(n - j0);
        let acc = &mut acc[..m];
        acc.copy_from_slice(&bias[j0..j0 + m]);
        gemv_acc(&w[j0 * k..(j0 + m) * k], k, x, i16::from, acc);
        // SAFETY: R's features are the caller's contract.
        unsafe {
            e.slice(j0..j0 + m)
                .apply_with::<R>(acc, &mut out[j0..j0 + m])
        };
    }
}

/// x86_64: [`portable`]'s source compiled with AVX2 (the GEMV in
/// `vpmaddwd`) and the AVX2 requantization rows.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::{Epilogue, body};
    use crate::kernels::requant;

    /// AVX2 int8 linear layer with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`crate::kernels::has_avx2_fma`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn linear(
        x: &[i8],
        k: usize,
        w: &[i8],
        bias: &[i32],
        e: Epilogue<'_>,
        out: &mut [i8],
    ) {
        // SAFETY: AVX2 is this function's contract.
        unsafe { body::<requant::Avx2>(x, k, w, bias, e, out) }
    }
}

/// x86_64: [`portable`]'s source compiled with AVX-512 (F, BW, VL: the
/// GEMV in 512-bit `vpmaddwd`) and the AVX-512 requantization rows.
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::{Epilogue, body};
    use crate::kernels::requant;

    /// AVX-512 int8 linear layer with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support everything [`crate::kernels::has_avx512_vnni`]
    /// checks (the AVX-512 row functions assume it).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub unsafe fn linear(
        x: &[i8],
        k: usize,
        w: &[i8],
        bias: &[i32],
        e: Epilogue<'_>,
        out: &mut [i8],
    ) {
        // SAFETY: the features are this function's contract.
        unsafe { body::<requant::Avx512>(x, k, w, bias, e, out) }
    }
}

/// The variant this target uses: [`avx512`] when the CPU has AVX-512
/// ([`crate::kernels::has_avx512_vnni`]), else [`avx2`] when it has AVX2
/// ([`crate::kernels::has_avx2_fma`]), else [`portable`].
///
/// # Panics
/// If `x`, `w` or `bias` does not match `k` and `out.len()`.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn linear(x: &[i8], k: usize, w: &[i8], bias: &[i32], e: Epilogue<'_>, out: &mut [i8]) {
    if crate::kernels::has_avx512_vnni() {
        // SAFETY: the CPU supports AVX-512 (checked just above).
        unsafe { avx512::linear(x, k, w, bias, e, out) }
    } else if crate::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { avx2::linear(x, k, w, bias, e, out) }
    } else {
        portable(x, k, w, bias, e, out)
    }
}
