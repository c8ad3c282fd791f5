//! 1x1 int8 convolution (a GEMM over pixels) on HWC tensors.
//!
//! Every variant runs the same driver (`drive`): pixels in tiles of `MR`
//! rows, output channels in chunks of [`CHUNK`] and, inside a chunk, in
//! tiles of `NR` channels; a `DotTile` computes the `MR x NR` dot
//! products of a tile over the whole `k`, then the bias is added and the
//! epilogue maps each pixel's chunk to int8. The variants differ only in the
//! tile:
//! - `portable`: scalar `i32` arithmetic;
//! - `neon` (aarch64, ARMv8.0): SMULL/SMLAL of 8 int8 pairs into int16
//!   (two products of `|w| <= 127`, `|x| <= 128` stay within int16), then
//!   SADALP into int32 lanes, 16 input channels per step, as `docs/int8.md`
//!   describes for the Cortex-A72;
//! - `avx2` (x86_64, chosen at run time): 16 input channels widened to
//!   int16 and multiplied pairwise into int32 with `vpmaddwd`;
//! - `avx512vnni` (x86_64 with AVX-512 VNNI, chosen at run time first): for
//!   16 pixels or more and `k` a multiple of 4 (every MobileNetV3 layer), a
//!   packed form whose accumulators hold 16 output channels in their lanes:
//!   one `vpdpbusd` per four input channels and pixel, the activations
//!   broadcast from memory against sign-flipped weights packed on the stack;
//!   otherwise 32 input channels per step in 256-bit registers, four
//!   products summed into each 32-bit lane by one `vpdpbusd`, the row's tail
//!   read through a byte mask.
//!
//! All of them sum the same products modulo `2^32` (see the module docs of
//! [`super`]), so every variant gives the same bits as the oracle whatever
//! the order of the additions.

use super::{CHUNK, Epilogue};

pub use crate::kernels::shape::PointwiseShape;

/// The dot products of one tile: `R` input rows against `C` weight rows.
trait DotTile {
    /// The requantization row function compiled with the same features.
    type Row: crate::kernels::requant::Row;

    /// `out[r][c] = sum_{i < k} x[r * k + i] * w[c * k + i]`, wrapping.
    ///
    /// # Safety
    /// `x` holds `R * k` values and `w` holds `C * k` values; the variant's
    /// CPU features are present.
    unsafe fn tile<const R: usize, const C: usize>(
        x: *const i8,
        w: *const i8,
        k: usize,
    ) -> [[i32; C]; R];

    /// Every output of the `MR` pixels whose rows start at `x` (dot products, bias,
    /// requantization and activation, stored at `out` with row stride `s.n`), if the
    /// variant has a fused path for this shape and epilogue; `false` leaves the pixels to
    /// [`drive`]'s generic path. The results must be the same bits either way.
    ///
    /// # Safety
    /// `x` holds `MR * s.k` values, `w` and `bias` the whole layer's (`s.n * s.k`, `s.n`),
    /// `out` `MR * s.n`; the variant's CPU features are present.
    #[inline(always)]
    unsafe fn rows_fused<const MR: usize>(
        _x: *const i8,
        _s: PointwiseShape,
        _w: &[i8],
        _bias: &[i32],
        _e: &Epilogue<'_>,
        _out: *mut i8,
    ) -> bool {
        false
    }
}

/// The loops every variant shares (see the module docs), with `MR x NR`
/// tiles from `D` and narrower tiles at the edges.
///
/// # Safety
/// `D`'s CPU features are present.
///
/// # Panics
/// If a slice is shorter than `s` says (checked before any raw read).
#[inline(always)]
// Tile coordinates index several arrays and pointers at once.
#[allow(clippy::needless_range_loop)]
unsafe fn drive<D: DotTile, const MR: usize, const NR: usize>(
    x: &[i8],
    s: PointwiseShape,
    w: &[i8],
    bias: &[i32],
    e: Epilogue<'_>,
    out: &mut [i8],
) {
    let (pixels, k, n) = (s.pixels, s.k, s.n);
    // The contract of `PointwiseShape::assert_fits`, written out: through that call the int8
    // pointwise layers of MobileNetV3-Small executed 14 k more aarch64 instructions per image
    // (7.435 M against 7.421 M, `scripts/icount.sh` on models/default-int8.safetensors), a
    // change in LLVM's register choices in the tile loops, not in the check.
    assert!(
        x.len() >= pixels * k && w.len() >= n * k && bias.len() >= n && out.len() >= pixels * n,
        "int8 pointwise: a slice is shorter than the shape {s:?}"
    );
    debug_assert_eq!(e.channels(), n);
    let mut acc = [[0i32; CHUNK]; MR];
    let mut p0 = 0;
    while p0 < pixels {
        let rows = MR.min(pixels - p0);
        let xp = x[p0 * k..].as_ptr();
        // SAFETY: rows == MR pixels from p0 lie inside the asserted lengths of x and out;
        // D's features are the caller's contract.
        if rows == MR
            && unsafe { D::rows_fused::<MR>(xp, s, w, bias, &e, out[p0 * n..].as_mut_ptr()) }
        {
            p0 += rows;
            continue;
        }
        for j0 in (0..n).step_by(CHUNK) {
            let m = CHUNK.min(n - j0);
            let mut j = 0;
            while j < m {
                let cols = NR.min(m - j);
                let wp = w[(j0 + j) * k..].as_ptr();
                // SAFETY: rows <= pixels - p0 rows of x from p0 and cols <=
                // n - j0 - j rows of w from j0 + j lie inside the asserted
                // lengths; D's features are the caller's contract.
                unsafe {
                    let b = &bias[j0 + j..j0 + j + cols];
                    if rows == MR && cols == NR {
                        put(&mut acc, j, D::tile::<MR, NR>(xp, wp, k), b);
                    } else {
                        for r in 0..rows {
                            for c in 0..cols {
                                let t = D::tile::<1, 1>(xp.add(r * k), wp.add(c * k), k);
                                acc[r][j + c] = t[0][0].wrapping_add(b[c]);
                            }
                        }
                    }
                }
                j += cols;
            }
            for (r, a) in acc.iter_mut().enumerate().take(rows) {
                let a = &a[..m];
                let o = (p0 + r) * n + j0;
                // SAFETY: D::Row has D's features, the caller's contract.
                unsafe {
                    e.slice(j0..j0 + m)
                        .apply_with::<D::Row>(a, &mut out[o..o + m])
                };
            }
        }
        p0 += rows;
    }
}

/// Stores a tile's sums plus the bias of its columns (`bias`, `C` values)
/// into the chunk accumulators at column `j`: adding the bias as the tile
/// is stored costs one add per row of the tile, where a pass over each
/// accumulator row cost a load, an add and a store per four outputs.
#[inline(always)]
fn put<const MR: usize, const R: usize, const C: usize>(
    acc: &mut [[i32; CHUNK]; MR],
    j: usize,
    t: [[i32; C]; R],
    bias: &[i32],
) {
    let bias: &[i32; C] = match bias.try_into() {
        Ok(b) => b,
        Err(_) => unreachable!("a tile's bias has C values"),
    };
    for (r, row) in t.iter().enumerate() {
        for (c, (a, &v)) in acc[r][j..j + C].iter_mut().zip(row).enumerate() {
            *a = v.wrapping_add(bias[c]);
        }
    }
}

/// Scalar tiles.
struct Scalar;

impl DotTile for Scalar {
    type Row = crate::kernels::requant::Dispatch;

    #[inline(always)]
    unsafe fn tile<const R: usize, const C: usize>(
        x: *const i8,
        w: *const i8,
        k: usize,
    ) -> [[i32; C]; R] {
        let mut out = [[0i32; C]; R];
        for i in 0..k {
            for c in 0..C {
                // SAFETY: i < k, c < C, r < R: inside the contract's lengths.
                let wv = i32::from(unsafe { *w.add(c * k + i) });
                for (r, row) in out.iter_mut().enumerate() {
                    let xv = i32::from(unsafe { *x.add(r * k + i) });
                    row[c] = row[c].wrapping_add(wv * xv);
                }
            }
        }
        out
    }
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
///
/// # Panics
/// If a slice is shorter than `s` says.
#[inline]
pub fn portable(
    x: &[i8],
    s: PointwiseShape,
    w: &[i8],
    bias: &[i32],
    e: Epilogue<'_>,
    out: &mut [i8],
) {
    // SAFETY: the scalar tiles need no CPU feature.
    unsafe { drive::<Scalar, 4, 2>(x, s, w, bias, e, out) }
}

/// NEON (ARMv8.0: no SDOT) pointwise convolution.
#[cfg(target_arch = "aarch64")]
pub mod neon {
    use super::{DotTile, PointwiseShape, drive};
    use crate::kernels::int8::{Epilogue, NeonEpilogue, QuadEpilogue};
    use core::arch::aarch64::*;

    /// NEON int8 pointwise convolution with the contract of [`super::portable`].
    ///
    /// # Panics
    /// If a slice is shorter than `s` says.
    #[inline]
    pub fn pointwise(
        x: &[i8],
        s: PointwiseShape,
        w: &[i8],
        bias: &[i32],
        e: Epilogue<'_>,
        out: &mut [i8],
    ) {
        // SAFETY: NEON is part of every aarch64 target.
        unsafe { drive::<Neon, 4, 4>(x, s, w, bias, e, out) }
    }

    struct Neon;

    impl DotTile for Neon {
        type Row = crate::kernels::requant::Dispatch;

        /// Four pixels at a time, four channels per tile, the epilogue on the tile's
        /// registers ([`NeonEpilogue`]): the 16 sums of a 4x4 tile plus the bias are
        /// requantized, narrowed to one vector of 16 int8 values, looked up in the hardswish
        /// table at once, and stored 4 bytes per pixel. The generic path stores the sums to
        /// a row buffer and runs the epilogue over it in a second pass, which for
        /// MobileNetV3's small `k` costs as much as the dot products. Taken when
        /// `n % 4 == 0`, `k % 8 == 0` (the tile's sums then come out as one vector per pixel)
        /// and the epilogue has a register form.
        #[inline(always)]
        unsafe fn rows_fused<const MR: usize>(
            x: *const i8,
            s: PointwiseShape,
            w: &[i8],
            bias: &[i32],
            e: &Epilogue<'_>,
            out: *mut i8,
        ) -> bool {
            let (k, n) = (s.k, s.n);
            if MR != 4 || n % 4 != 0 || k % 8 != 0 {
                return false;
            }
            let Some(epi) = NeonEpilogue::new(e, n) else {
                return false;
            };
            assert!(
                bias.len() >= n && w.len() >= n * k,
                "int8 pointwise: bias or weights shorter than n"
            );
            // SAFETY: j + 4 <= n for every bias load, epilogue quad and weight row j..j + 4
            // (lengths asserted); the caller guarantees 4 rows of x and out. NEON is part of
            // every aarch64 target.
            unsafe {
                let mut j = 0;
                while j < n {
                    let sums = Self::tile::<4, 4>(x, w.as_ptr().add(j * k), k);
                    let b = vld1q_s32(bias.as_ptr().add(j));
                    let q = core::array::from_fn(|r| {
                        epi.quad(vaddq_s32(vld1q_s32(sums[r].as_ptr()), b), j)
                    });
                    let v = vreinterpretq_u32_s8(epi.bytes(q));
                    let at = out.add(j);
                    core::ptr::write_unaligned(at.cast::<u32>(), vgetq_lane_u32::<0>(v));
                    core::ptr::write_unaligned(at.add(n).cast::<u32>(), vgetq_lane_u32::<1>(v));
                    core::ptr::write_unaligned(at.add(2 * n).cast::<u32>(), vgetq_lane_u32::<2>(v));
                    core::ptr::write_unaligned(at.add(3 * n).cast::<u32>(), vgetq_lane_u32::<3>(v));
                    j += 4;
                }
            }
            true
        }

        #[inline(always)]
        // Tile coordinates index several arrays and pointers at once.
        #[allow(clippy::needless_range_loop)]
        unsafe fn tile<const R: usize, const C: usize>(
            x: *const i8,
            w: *const i8,
            k: usize,
        ) -> [[i32; C]; R] {
            // SAFETY: every load reads i..i + 16 or i..i + 8 with that end
            // at most k, inside rows of k values (the trait's contract).
            unsafe {
                let mut acc = [[vdupq_n_s32(0); C]; R];
                let mut i = 0;
                while i + 16 <= k {
                    let mut xv = [vdupq_n_s8(0); R];
                    for (r, v) in xv.iter_mut().enumerate() {
                        *v = vld1q_s8(x.add(r * k + i));
                    }
                    for c in 0..C {
                        let wv = vld1q_s8(w.add(c * k + i));
                        for r in 0..R {
                            // |w| <= 127, |x| <= 128: the two products
                            // summed in int16 stay below 2^15.
                            let p = vmull_s8(vget_low_s8(xv[r]), vget_low_s8(wv));
                            let p = vmlal_high_s8(p, xv[r], wv);
                            acc[r][c] = vpadalq_s16(acc[r][c], p);
                        }
                    }
                    i += 16;
                }
                if i + 8 <= k {
                    for c in 0..C {
                        let wv = vld1_s8(w.add(c * k + i));
                        for r in 0..R {
                            let p = vmull_s8(vld1_s8(x.add(r * k + i)), wv);
                            acc[r][c] = vpadalq_s16(acc[r][c], p);
                        }
                    }
                    i += 8;
                }
                let mut out = [[0i32; C]; R];
                if C == 4 && i == k {
                    // Four columns' sums at once: two rounds of pairwise
                    // adds reduce the four accumulators of a row into one
                    // vector (3 ADDP instead of 4 ADDV and 4 lane moves).
                    for r in 0..R {
                        let s01 = vpaddq_s32(acc[r][0], acc[r][1]);
                        let s23 = vpaddq_s32(acc[r][2], acc[r][3]);
                        vst1q_s32(out[r].as_mut_ptr(), vpaddq_s32(s01, s23));
                    }
                    return out;
                }
                for r in 0..R {
                    for c in 0..C {
                        let mut s = vaddvq_s32(acc[r][c]);
                        for t in i..k {
                            let p = i32::from(*x.add(r * k + t)) * i32::from(*w.add(c * k + t));
                            s = s.wrapping_add(p);
                        }
                        out[r][c] = s;
                    }
                }
                out
            }
        }
    }
}

/// AVX2 pointwise convolution (x86_64, chosen at run time).
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::{DotTile, PointwiseShape, drive};
    use crate::kernels::int8::Epilogue;
    use core::arch::x86_64::*;

    /// AVX2 int8 pointwise convolution with the contract of [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX2 ([`crate::kernels::has_avx2_fma`]).
    ///
    /// # Panics
    /// If a slice is shorter than `s` says.
    #[target_feature(enable = "avx2")]
    pub unsafe fn pointwise(
        x: &[i8],
        s: PointwiseShape,
        w: &[i8],
        bias: &[i32],
        e: Epilogue<'_>,
        out: &mut [i8],
    ) {
        // SAFETY: AVX2 is this function's contract.
        unsafe { drive::<Avx2, 2, 4>(x, s, w, bias, e, out) }
    }

    struct Avx2;

    /// The sum of the eight `i32` lanes, wrapping (also used by the
    /// `avx512vnni` tiles).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn hsum(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    impl DotTile for Avx2 {
        type Row = crate::kernels::requant::Avx2;

        #[inline(always)]
        // Tile coordinates index several arrays and pointers at once.
        #[allow(clippy::needless_range_loop)]
        unsafe fn tile<const R: usize, const C: usize>(
            x: *const i8,
            w: *const i8,
            k: usize,
        ) -> [[i32; C]; R] {
            // SAFETY: every load reads i..i + 16 or i..i + 8 with that end
            // at most k, inside rows of k values; AVX2 is the caller's
            // contract (only `avx2::pointwise` instantiates this).
            unsafe {
                let mut acc = [[_mm256_setzero_si256(); C]; R];
                let mut i = 0;
                while i + 16 <= k {
                    let mut xv = [_mm256_setzero_si256(); R];
                    for (r, v) in xv.iter_mut().enumerate() {
                        *v = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(r * k + i).cast()));
                    }
                    for c in 0..C {
                        let wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.add(c * k + i).cast()));
                        for r in 0..R {
                            // Pairs of int16 products summed into int32:
                            // exact (at most 2 * 128 * 128).
                            acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(xv[r], wv));
                        }
                    }
                    i += 16;
                }
                if i + 8 <= k {
                    for c in 0..C {
                        let wv = _mm_cvtepi8_epi16(_mm_loadl_epi64(w.add(c * k + i).cast()));
                        for r in 0..R {
                            let xv = _mm_cvtepi8_epi16(_mm_loadl_epi64(x.add(r * k + i).cast()));
                            let p = _mm256_zextsi128_si256(_mm_madd_epi16(xv, wv));
                            acc[r][c] = _mm256_add_epi32(acc[r][c], p);
                        }
                    }
                    i += 8;
                }
                let mut out = [[0i32; C]; R];
                for r in 0..R {
                    for c in 0..C {
                        let mut s = hsum(acc[r][c]);
                        for t in i..k {
                            let p = i32::from(*x.add(r * k + t)) * i32::from(*w.add(c * k + t));
                            s = s.wrapping_add(p);
                        }
                        out[r][c] = s;
                    }
                }
                out
            }
        }
    }
}

/// AVX-512 VNNI pointwise convolution (x86_64, chosen at run time).
///
/// `vpdpbusd` multiplies unsigned bytes by signed ones, so the int8 inputs
/// go in with their sign bit flipped (`x ^ 0x80` read as `u8` is `x + 128`)
/// and the tile subtracts `128 * sum_i w[c][i]`, which it accumulates with
/// the same instruction from a vector of 128s. Both sums are exact modulo
/// `2^32` (four products of at most `255 * 128` per lane and step, then
/// wrapping adds), so the difference is the dot product's bits.
#[cfg(target_arch = "x86_64")]
pub mod avx512vnni {
    use super::avx2::hsum;
    use super::{DotTile, PointwiseShape, drive};
    use crate::kernels::int8::{Epilogue, Epilogue16};
    use core::arch::x86_64::*;

    /// AVX-512 VNNI int8 pointwise convolution with the contract of
    /// [`super::portable`].
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW, VL, VBMI and VNNI, AVX2 and FMA
    /// ([`crate::kernels::has_avx512_vnni`]).
    ///
    /// # Panics
    /// If a slice is shorter than `s` says.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
    pub unsafe fn pointwise(
        x: &[i8],
        s: PointwiseShape,
        w: &[i8],
        bias: &[i32],
        e: Epilogue<'_>,
        out: &mut [i8],
    ) {
        if s.k.is_multiple_of(4) && s.k <= PACKED_K && s.pixels >= PACKED_PIXELS {
            // SAFETY: the features are this function's contract; k is a
            // multiple of 4 no larger than PACKED_K.
            unsafe { packed(x, s, w, bias, e, out) }
        } else {
            // SAFETY: the features are this function's contract.
            unsafe { drive::<Vnni, 4, 4>(x, s, w, bias, e, out) }
        }
    }

    /// The largest `k` the packed form takes: its block of weights lives on
    /// the stack (`NB * PACKED_K` bytes; MobileNetV3's widest input has 576
    /// channels). Beyond it the dot-product tiles serve.
    const PACKED_K: usize = 1024;

    /// The fewest pixels for the packed form: its packing of each block of
    /// weights is spread over the pixels that use it.
    const PACKED_PIXELS: usize = 16;

    /// Output channels per block of the packed form (one 512-bit vector).
    const NB: usize = 16;

    /// Pixel rows per tile of the packed form.
    const PR: usize = 8;

    /// Pixels whose input sums [`packed`] keeps at a time (16 KiB on the stack). Each chunk
    /// packs the weights again, so it covers every pointwise layer of MobileNetV3-Small at
    /// 224x224 (at most 56x56 pixels) in one.
    const CHUNK_PIXELS: usize = 4096;

    /// The packed form: output channels in blocks of [`NB`], whose weights
    /// are packed on the stack as `[k / 4][NB][4]` bytes with the sign bit
    /// flipped (`w + 128`, the unsigned operand of `vpdpbusd`). One
    /// `vpdpbusd` then multiplies four input channels of one pixel, read
    /// straight from memory and broadcast to every lane as the signed
    /// operand, with the packed vector, adding four products into each of
    /// the block's 16 output channels: the accumulators hold output channels
    /// in their lanes, so there is no reduction, and the loop is one
    /// instruction per 64 multiply-adds and row.
    ///
    /// `sum_i (w[c][i] + 128) * x[p][i] = sum_i w[c][i] * x[p][i] + 128 *
    /// sum_i x[p][i]`: each pixel's accumulators start at the bias minus 128
    /// times its input sum (computed once per pixel for all blocks), so the
    /// result is the oracle's sum modulo `2^32`.
    ///
    /// # Safety
    /// The CPU features of [`pointwise`]; `s.k` is a multiple of 4 and at
    /// most [`PACKED_K`].
    ///
    /// # Panics
    /// If a slice is shorter than `s` says.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
    unsafe fn packed(
        x: &[i8],
        s: PointwiseShape,
        w: &[i8],
        bias: &[i32],
        e: Epilogue<'_>,
        out: &mut [i8],
    ) {
        let (pixels, k, n) = (s.pixels, s.k, s.n);
        s.assert_fits("int8 pointwise", x, (w, n * k), bias, out, None);
        debug_assert!(k % 4 == 0 && k <= PACKED_K);
        debug_assert_eq!(e.channels(), n);
        let groups = k / 4;
        // [k / 4][NB] groups of 4 flipped weights, as u32 (little-endian bytes).
        let mut wp = [0u32; NB * PACKED_K / 4];
        // 128 * sum_i x[p][i] for the chunk's pixels (wrapping).
        let mut corr = [0i32; CHUNK_PIXELS];
        for c0 in (0..pixels).step_by(CHUNK_PIXELS) {
            let cp = CHUNK_PIXELS.min(pixels - c0);
            // SAFETY: each masked load reads bytes i..min(i + 64, k) of a row
            // below `pixels`; the features are the contract.
            unsafe {
                let ones = _mm512_set1_epi8(1);
                for (r, cr) in corr.iter_mut().enumerate().take(cp) {
                    let row = x.as_ptr().add((c0 + r) * k);
                    let mut acc = _mm512_setzero_si512();
                    let mut i = 0;
                    while i < k {
                        let mask: __mmask64 = if k - i >= 64 {
                            !0
                        } else {
                            (1u64 << (k - i)) - 1
                        };
                        acc = _mm512_dpbusd_epi32(
                            acc,
                            ones,
                            _mm512_maskz_loadu_epi8(mask, row.add(i)),
                        );
                        i += 64;
                    }
                    *cr = _mm512_reduce_add_epi32(acc).wrapping_mul(128);
                }
            }
            for j0 in (0..n).step_by(NB) {
                let m = NB.min(n - j0);
                // SAFETY: j0 + m <= n rows of w (asserted above); the features are the
                // contract.
                unsafe { pack_block(w, k, j0, m, &mut wp) };
                let mut init = [0i32; NB];
                init[..m].copy_from_slice(&bias[j0..j0 + m]);
                // SAFETY: the packed block holds groups * NB values, read as
                // groups vectors of 16; every x read is 4 bytes at 4 * g < k
                // of a row below `pixels`; each masked store writes only the m
                // bytes of `out[o..o + m]`; the features are the contract.
                unsafe {
                    let tiles = Tiles {
                        x: x.as_ptr().add(c0 * k),
                        pixels: cp,
                        k,
                        wv: wp.as_ptr().cast::<__m512i>(),
                        groups,
                        init: _mm512_loadu_si512(init.as_ptr().cast()),
                        corr: &corr[..cp],
                    };
                    // The block's epilogue in registers when the shifts allow
                    // (see `Epilogue16`), else through the row function.
                    let e16 = e.avx512_16(j0, m);
                    let e = e.slice(j0..j0 + m);
                    // Two pixel loops, so that the common one (every conv layer of the
                    // shipped models, `Tiles::store16`) has its epilogue inlined: as a call
                    // per pixel through one closure with both branches, its prologue, the
                    // reload of the epilogue's constants and `vzeroupper` cost about as
                    // much as the requantization itself.
                    match &e16 {
                        Some(e16) => tiles.store16(e16, &mut out[c0 * n..], n, j0, m),
                        None => tiles.each(|r, a| {
                            let o = (c0 + r) * n + j0;
                            let mut t = [0i32; NB];
                            _mm512_storeu_si512(t.as_mut_ptr().cast(), a);
                            e.apply_with::<crate::kernels::requant::Avx512>(
                                &t[..m],
                                &mut out[o..o + m],
                            );
                        }),
                    }
                }
            }
        }
    }

    /// Packs output channels `j0..j0 + m` (`m <= NB`) of `w` (`[n][k]`, `k` a multiple of 4)
    /// as [`packed`] reads them: `wp[g * NB + c]` holds the four bytes `w[j0 + c][4 g..4 g +
    /// 4]` with their sign bits flipped, for every group `g < k / 4`, and channels `c >= m`
    /// hold weight 0 (`0x80` bytes once flipped). Sixteen groups at a time: one masked
    /// 64-byte load per channel, a 16 x 16 transpose of 32-bit values ([`transpose16`]), one
    /// store per group. A scalar loop with one iteration per 4 bytes took about a tenth of
    /// the layers' time (`perf`), since every call packs all its weights.
    ///
    /// # Safety
    /// The features of [`pointwise`].
    ///
    /// # Panics
    /// If `w` holds fewer than `(j0 + m) * k` values, `m > NB`, or `wp` is shorter than
    /// `k / 4 * NB`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
    unsafe fn pack_block(w: &[i8], k: usize, j0: usize, m: usize, wp: &mut [u32]) {
        let groups = k / 4;
        assert!(
            m <= NB && w.len() >= (j0 + m) * k && wp.len() >= groups * NB,
            "int8 pointwise: weights shorter than the block"
        );
        let flip = _mm512_set1_epi8(i8::MIN);
        let mut g0 = 0;
        while g0 < groups {
            let gm = (groups - g0).min(16);
            let mask: __mmask64 = if gm == 16 { !0 } else { (1u64 << (4 * gm)) - 1 };
            // SAFETY: each masked load reads bytes 4 g0..4 (g0 + gm) <= k of a row below
            // j0 + m; each store writes the NB values of a group below `groups` (asserted
            // above); the features are the contract.
            unsafe {
                let rows: [__m512i; 16] = core::array::from_fn(|c| {
                    if c < m {
                        _mm512_maskz_loadu_epi8(mask, w.as_ptr().add((j0 + c) * k + 4 * g0))
                    } else {
                        _mm512_setzero_si512()
                    }
                });
                let cols = transpose16(rows);
                for (g, v) in cols.iter().enumerate().take(gm) {
                    let at = wp.as_mut_ptr().add((g0 + g) * NB);
                    _mm512_storeu_si512(at.cast(), _mm512_xor_si512(*v, flip));
                }
            }
            g0 += 16;
        }
    }

    /// The transpose of a 16 x 16 matrix of 32-bit values, row `i` in `r[i]`: column `g`
    /// of the input becomes `out[g]`. 32-bit and then 64-bit interleaves inside 128-bit
    /// lanes leave `u[4 i + j]`'s lane `L` holding rows `4 i..4 i + 4` of column `4 L + j`;
    /// two rounds of 128-bit shuffles gather each column's four lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
        let t: [__m512i; 16] = core::array::from_fn(|x| {
            let (a, b) = (r[x & !1], r[x | 1]);
            if x % 2 == 0 {
                _mm512_unpacklo_epi32(a, b)
            } else {
                _mm512_unpackhi_epi32(a, b)
            }
        });
        let u: [__m512i; 16] = core::array::from_fn(|x| {
            let (i, j) = (x / 4, x % 4);
            let (a, b) = (t[4 * i + j / 2], t[4 * i + 2 + j / 2]);
            if j % 2 == 0 {
                _mm512_unpacklo_epi64(a, b)
            } else {
                _mm512_unpackhi_epi64(a, b)
            }
        });
        let mut out = [_mm512_setzero_si512(); 16];
        for j in 0..4 {
            let (a, b, c, d) = (u[j], u[4 + j], u[8 + j], u[12 + j]);
            let x0 = _mm512_shuffle_i32x4::<0x44>(a, b);
            let x1 = _mm512_shuffle_i32x4::<0xEE>(a, b);
            let y0 = _mm512_shuffle_i32x4::<0x44>(c, d);
            let y1 = _mm512_shuffle_i32x4::<0xEE>(c, d);
            out[j] = _mm512_shuffle_i32x4::<0x88>(x0, y0);
            out[4 + j] = _mm512_shuffle_i32x4::<0xDD>(x0, y0);
            out[8 + j] = _mm512_shuffle_i32x4::<0x88>(x1, y1);
            out[12 + j] = _mm512_shuffle_i32x4::<0xDD>(x1, y1);
        }
        out
    }

    /// The pixel rows of [`packed`] against one packed block of weights.
    struct Tiles<'a> {
        /// `[pixels][k]` input bytes.
        x: *const i8,
        pixels: usize,
        k: usize,
        /// The block's `groups` packed weight vectors.
        wv: *const __m512i,
        groups: usize,
        /// Each channel's bias.
        init: __m512i,
        /// Each pixel's `128 * sum_i x[p][i]`.
        corr: &'a [i32],
    }

    impl Tiles<'_> {
        /// Every pixel's sums through `e16`, stored to `out` (pixel `r`'s `m` channels at `r *
        /// n + j0`): as [`Self::each`], but each full tile's pixels go through the epilogue
        /// four at a time ([`Epilogue16::apply4`], pixel `j` of four in 128-bit lane `j`), the
        /// pixels of a last, shorter tile one at a time. Written out rather than as a closure
        /// passed to [`Self::each`]: such a closure with both cases was not inlined, and its
        /// call per four pixels spilled the epilogue's registers.
        ///
        /// # Safety
        /// As [`Self::each`].
        ///
        /// # Panics
        /// If `out` holds fewer than `(pixels - 1) * n + j0 + m` values.
        #[inline(always)]
        unsafe fn store16(&self, e16: &Epilogue16, out: &mut [i8], n: usize, j0: usize, m: usize) {
            const { assert!(PR.is_multiple_of(4)) };
            let k: __mmask16 = if m == NB { !0 } else { (1u16 << m) - 1 };
            let mut p0 = 0;
            // SAFETY: rows p0..p0 + rows lie below `pixels`; each store is masked to the m
            // bytes of a bounds-checked `out[o..o + m]`; the rest is the caller's contract.
            unsafe {
                while p0 < self.pixels {
                    let rows = PR.min(self.pixels - p0);
                    if rows == PR {
                        let t = block::<PR>(self, p0);
                        for q in 0..PR / 4 {
                            let v = e16.apply4(core::array::from_fn(|j| t[4 * q + j]));
                            let lanes = [
                                _mm512_castsi512_si128(v),
                                _mm512_extracti32x4_epi32::<1>(v),
                                _mm512_extracti32x4_epi32::<2>(v),
                                _mm512_extracti32x4_epi32::<3>(v),
                            ];
                            for (j, b) in lanes.into_iter().enumerate() {
                                let o = (p0 + 4 * q + j) * n + j0;
                                _mm_mask_storeu_epi8(out[o..o + m].as_mut_ptr(), k, b);
                            }
                        }
                    } else {
                        for r in 0..rows {
                            let [a] = block::<1>(self, p0 + r);
                            let o = (p0 + r) * n + j0;
                            _mm_mask_storeu_epi8(out[o..o + m].as_mut_ptr(), k, e16.apply(a));
                        }
                    }
                    p0 += rows;
                }
            }
        }

        /// Calls `finish(pixel, sums)` for every pixel, computing them [`PR`] rows at a
        /// time ([`block`]).
        ///
        /// # Safety
        /// The fields describe live buffers as [`block`] requires; the features of
        /// [`pointwise`].
        #[inline(always)]
        unsafe fn each(&self, mut finish: impl FnMut(usize, __m512i)) {
            let mut p0 = 0;
            // SAFETY: rows p0..p0 + rows lie below `pixels`; the rest is the caller's
            // contract.
            unsafe {
                while p0 < self.pixels {
                    let rows = PR.min(self.pixels - p0);
                    if rows == PR {
                        let t = block::<PR>(self, p0);
                        for (r, a) in t.into_iter().enumerate() {
                            finish(p0 + r, a);
                        }
                    } else {
                        for r in 0..rows {
                            let [a] = block::<1>(self, p0 + r);
                            finish(p0 + r, a);
                        }
                    }
                    p0 += rows;
                }
            }
        }
    }

    /// `init[c] - corr[p] + sum_g dot4(w[g][c] + 128, x[p][4g..4g + 4])` for
    /// the `R` pixels `p = p0 + r` of `t` against its packed block, one vector
    /// of 16 channels per pixel.
    ///
    /// # Safety
    /// `p0 + R <= t.pixels`, and `t` describes live buffers; the features of
    /// [`pointwise`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2,fma")]
    unsafe fn block<const R: usize>(t: &Tiles<'_>, p0: usize) -> [__m512i; R] {
        // SAFETY: the caller's contract.
        unsafe {
            let mut a: [__m512i; R] = core::array::from_fn(|r| {
                _mm512_sub_epi32(t.init, _mm512_set1_epi32(*t.corr.get_unchecked(p0 + r)))
            });
            let x = t.x.add(p0 * t.k);
            for g in 0..t.groups {
                let w = _mm512_loadu_si512(t.wv.add(g).cast());
                for (r, ar) in a.iter_mut().enumerate() {
                    let q = x.add(r * t.k + 4 * g).cast::<i32>().read_unaligned();
                    *ar = _mm512_dpbusd_epi32(*ar, w, _mm512_set1_epi32(q));
                }
            }
            a
        }
    }

    struct Vnni;

    /// The lane sums of four accumulators, `[sum a, sum b, sum c, sum d]`:
    /// two rounds of interleave-and-add leave each 128-bit half holding its
    /// partial sums of all four, then the halves are added.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum4(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m128i {
        let ab = _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
        let cd = _mm256_add_epi32(_mm256_unpacklo_epi32(c, d), _mm256_unpackhi_epi32(c, d));
        let s = _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
        _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s))
    }

    impl DotTile for Vnni {
        type Row = crate::kernels::requant::Avx512;

        #[inline(always)]
        // Tile coordinates index several arrays and pointers at once.
        #[allow(clippy::needless_range_loop)]
        unsafe fn tile<const R: usize, const C: usize>(
            x: *const i8,
            w: *const i8,
            k: usize,
        ) -> [[i32; C]; R] {
            // SAFETY: every load is masked to the bytes i..min(i + 32, k)
            // of a row of k values (masked-off bytes are neither read nor
            // faulted on, and load as 0); the features are the caller's
            // contract (only `avx512vnni::pointwise` instantiates this).
            unsafe {
                let flip = _mm256_set1_epi8(i8::MIN);
                let mut acc = [[_mm256_setzero_si256(); C]; R];
                let mut corr = [_mm256_setzero_si256(); C];
                let mut i = 0;
                while i < k {
                    let rest = k - i;
                    let mask: __mmask32 = if rest >= 32 { !0 } else { (1u32 << rest) - 1 };
                    let mut xv = [flip; R];
                    for (r, v) in xv.iter_mut().enumerate() {
                        // Masked-off bytes become 0x80 (u8 128), against
                        // weights loaded as 0: no product.
                        *v =
                            _mm256_xor_si256(_mm256_maskz_loadu_epi8(mask, x.add(r * k + i)), flip);
                    }
                    for c in 0..C {
                        let wv = _mm256_maskz_loadu_epi8(mask, w.add(c * k + i));
                        corr[c] = _mm256_dpbusd_epi32(corr[c], flip, wv);
                        for r in 0..R {
                            acc[r][c] = _mm256_dpbusd_epi32(acc[r][c], xv[r], wv);
                        }
                    }
                    i += 32;
                }
                let mut out = [[0i32; C]; R];
                if C == 4 {
                    let corr = hsum4(corr[0], corr[1], corr[2], corr[3]);
                    for r in 0..R {
                        let v = hsum4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
                        _mm_storeu_si128(out[r].as_mut_ptr().cast(), _mm_sub_epi32(v, corr));
                    }
                    return out;
                }
                for c in 0..C {
                    let corr = hsum(corr[c]);
                    for r in 0..R {
                        out[r][c] = hsum(acc[r][c]).wrapping_sub(corr);
                    }
                }
                out
            }
        }
    }
}

/// The variant this target uses: NEON.
#[cfg(target_arch = "aarch64")]
pub use neon::pointwise;

/// The variant this target uses: [`avx512vnni`] when the CPU has AVX-512
/// VNNI ([`crate::kernels::has_avx512_vnni`]), else AVX2 when it has that
/// (with FMA, as [`crate::kernels::has_avx2_fma`] reports for every AVX2
/// kernel), else [`portable`] (checked once, then one cached load per call).
///
/// # Panics
/// If a slice is shorter than `s` says.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn pointwise(
    x: &[i8],
    s: PointwiseShape,
    w: &[i8],
    bias: &[i32],
    e: Epilogue<'_>,
    out: &mut [i8],
) {
    if crate::kernels::has_avx512_vnni() {
        // SAFETY: the CPU supports AVX-512 VNNI (checked just above).
        unsafe { avx512vnni::pointwise(x, s, w, bias, e, out) }
    } else if crate::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { avx2::pointwise(x, s, w, bias, e, out) }
    } else {
        portable(x, s, w, bias, e, out)
    }
}

/// The variant this target uses: [`portable`].
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
pub use portable as pointwise;
