//! The resize's vertical pass in fixed point: one output row's filter over the source rows
//! of a strip, `out[i] = sum_k w[k] * src[k * stride + i]`, with the row weights `w` integers
//! that sum to exactly [`ONE`] and the products summed in 32-bit integers.
//!
//! The pass weighs every source byte of the crop about twice (once per output row whose
//! window holds it): in `f32` each byte took a conversion, a multiply and an add, and on
//! aarch64 two widenings first. In integers the bytes widen to 16 bits once and go through
//! widening multiply-adds: `umlal` on aarch64 (8 products per two instructions),
//! `vpmaddwd` / `vpdpwssd` on x86_64 (two rows' products summed per 32-bit lane), the
//! accumulators staying in registers over all the rows of a chunk of values. Integer sums
//! are exact, so every variant gives the same values on every target; the sums (at most
//! `255 * ONE`, below `2^24`) become `f32` without rounding.
//!
//! The weights' rounding is the only difference from the `f32` filter: each weight is within
//! one unit of `2^-15` of its real value and the rounding errors telescope (see
//! [`fixed_weights`]), so an output differs from the exact filter by at most about
//! `(taps - 1) / 2` units of `255 / 2^15` intensity levels (the tests allow `0.51 (taps - 1)`
//! for the `f32` rounding of the running sums): 0.03 levels for the 3.4x reduction of a
//! 1024x768 photo to 224 px, and in practice much less.

/// The fixed-point one: the row weights of an output row are integers summing to exactly this
/// (`2^15`: weights below one fit the signed 16-bit lanes of `vpmaddwd`; a weight of exactly
/// one only occurs alone, see [`fixed_weights`]).
pub const ONE: u16 = 1 << 15;

/// Rounds the normalized `f32` weights `w` (non-negative, summing to about 1) to integers in
/// `q` that sum to exactly [`ONE`], and drops zero weights at both ends. Returns the index of
/// the first weight kept and the number kept (at least 1).
///
/// Weight `j` is `round(ONE * C_j) - round(ONE * C_(j-1))`, with `C_j` the running sum of
/// the first `j + 1` weights scaled so that the last is 1: the rounding errors do not
/// accumulate, the sum is exact, and a constant row stays exactly constant. A weight of
/// [`ONE`] leaves every other weight zero, so it is always alone after the trim.
pub fn fixed_weights(w: &[f32], q: &mut [u16]) -> (usize, usize) {
    let n = w.len().min(q.len());
    let total: f32 = w[..n].iter().sum();
    let mut cumulative = 0.0f32;
    let mut previous = 0u32;
    for (j, (&wj, qj)) in w[..n].iter().zip(q.iter_mut()).enumerate() {
        cumulative += wj;
        let at = if j + 1 == n || total <= 0.0 {
            u32::from(ONE)
        } else {
            // Non-negative and at most ONE + 0.5: `as` truncates, so + 0.5 rounds.
            (((cumulative / total) * f32::from(ONE) + 0.5) as u32).clamp(previous, u32::from(ONE))
        };
        // At most ONE, since `at` never decreases and never passes ONE.
        *qj = (at - previous) as u16;
        previous = at;
    }
    let first = q[..n].iter().position(|&v| v != 0).unwrap_or(0);
    let last = q[..n].iter().rposition(|&v| v != 0).unwrap_or(first);
    q.copy_within(first..=last, 0);
    (first, last + 1 - first)
}

/// The vertical pass of one output row: `out[i] = sum_k w[k] * src[k * stride + i]` (exact,
/// as `f32`), for `i < out.len()`, in the fastest variant the CPU has.
///
/// # Panics
/// If `w` is empty or `src` is shorter than `(w.len() - 1) * stride + out.len()`.
#[inline(always)]
pub fn vertical(src: &[u8], stride: usize, w: &[u16], out: &mut [f32]) {
    let n = out.len();
    assert!(
        !w.is_empty() && (w.len() - 1) * stride + n <= src.len(),
        "preprocess: the vertical pass reads past its rows"
    );
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: the assertion above bounds every row's n bytes; NEON is part of aarch64.
        unsafe { neon::vertical(src.as_ptr(), stride, w, out) }
    }
    #[cfg(target_arch = "x86_64")]
    {
        // `vpmaddwd` multiplies signed 16-bit lanes: a lone weight of ONE (a row copied)
        // takes the portable form.
        if w.len() > 1 && crate::kernels::has_avx512_vnni() {
            // SAFETY: as above; the CPU has AVX-512 F, BW and VNNI (checked just now), and
            // with more than one weight each is below ONE (`fixed_weights`).
            unsafe { x86::avx512(src.as_ptr(), stride, w, out) }
        } else if w.len() > 1 && crate::kernels::has_avx2_fma() {
            // SAFETY: as above, with AVX2.
            unsafe { x86::avx2(src.as_ptr(), stride, w, out) }
        } else {
            portable(src, stride, w, out)
        }
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
    portable(src, stride, w, out)
}

/// [`vertical`] in plain Rust, a chunk of 64 values at a time (rows outer, so the compiler
/// vectorizes the inner loop); also the short tails of the vector variants.
pub fn portable(src: &[u8], stride: usize, w: &[u16], out: &mut [f32]) {
    const CHUNK: usize = 64;
    let n = out.len();
    let mut i = 0;
    while i < n {
        let m = CHUNK.min(n - i);
        let mut acc = [0u32; CHUNK];
        for (k, &wk) in w.iter().enumerate() {
            let row = &src[k * stride + i..k * stride + i + m];
            for (a, &p) in acc[..m].iter_mut().zip(row) {
                *a += u32::from(wk) * u32::from(p);
            }
        }
        for (o, &a) in out[i..i + m].iter_mut().zip(&acc[..m]) {
            // At most 255 * ONE < 2^24: exact.
            *o = a as f32;
        }
        i += m;
    }
}

/// Runs `chunk(i)` for the chunks of `C` values that cover `0..n`: the last one moved back
/// to end at `n` (it overlaps the one before, and writes the same values again), or, when
/// `n < C`, `short()` instead.
#[inline(always)]
fn chunks<const C: usize>(n: usize, mut chunk: impl FnMut(usize), short: impl FnOnce()) {
    if n < C {
        return short();
    }
    let mut i = 0;
    while i + C <= n {
        chunk(i);
        i += C;
    }
    if i < n {
        chunk(n - C);
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{chunks, portable};
    use core::arch::aarch64::*;

    /// [`super::vertical`] in NEON: 32 values a chunk in eight `u32x4` accumulators, per
    /// source row two 16-byte loads, four widenings to 16 bits and eight `umlal` / `umlal2`
    /// by the row's weight.
    ///
    /// # Safety
    /// `(w.len() - 1) * stride + out.len()` bytes are readable at `src`.
    #[inline(always)]
    pub(super) unsafe fn vertical(src: *const u8, stride: usize, w: &[u16], out: &mut [f32]) {
        let n = out.len();
        let o = out.as_mut_ptr();
        // SAFETY: every chunk reads 32 bytes at i + k * stride for i + 32 <= n (the asm's
        // loads, w.len() >= 1 rows) and writes out[i..i + 32]; the caller's contract bounds
        // both. The asm writes no memory and only its declared registers.
        let chunk = |i: usize| unsafe {
            let mut acc = [vdupq_n_u32(0); 8];
            let [a0, a1, a2, a3, a4, a5, a6, a7] = &mut acc;
            // Per row: the weight into lane 0 of a register, two 16-byte loads, four
            // widenings to 16 bits, eight `umlal` / `umlal2` by that lane. Written out because
            // LLVM loaded the weight into four lanes and moved each high half down with an
            // `ext` (21 instructions per row instead of 17).
            core::arch::asm!(
                "2:",
                "ldr {w:h}, [{wp}], #2",
                "ldp {b0:q}, {b1:q}, [{p}]",
                "add {p}, {p}, {stride}",
                "ushll {h0:v}.8h, {b0:v}.8b, #0",
                "ushll2 {h1:v}.8h, {b0:v}.16b, #0",
                "ushll {h2:v}.8h, {b1:v}.8b, #0",
                "ushll2 {h3:v}.8h, {b1:v}.16b, #0",
                "umlal {a0:v}.4s, {h0:v}.4h, {w:v}.h[0]",
                "umlal2 {a1:v}.4s, {h0:v}.8h, {w:v}.h[0]",
                "umlal {a2:v}.4s, {h1:v}.4h, {w:v}.h[0]",
                "umlal2 {a3:v}.4s, {h1:v}.8h, {w:v}.h[0]",
                "umlal {a4:v}.4s, {h2:v}.4h, {w:v}.h[0]",
                "umlal2 {a5:v}.4s, {h2:v}.8h, {w:v}.h[0]",
                "umlal {a6:v}.4s, {h3:v}.4h, {w:v}.h[0]",
                "umlal2 {a7:v}.4s, {h3:v}.8h, {w:v}.h[0]",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                wp = inout(reg) w.as_ptr() => _,
                p = inout(reg) src.add(i) => _,
                n = inout(reg) w.len() => _,
                stride = in(reg) stride,
                w = out(vreg_low16) _,
                b0 = out(vreg) _,
                b1 = out(vreg) _,
                h0 = out(vreg) _,
                h1 = out(vreg) _,
                h2 = out(vreg) _,
                h3 = out(vreg) _,
                a0 = inout(vreg) *a0,
                a1 = inout(vreg) *a1,
                a2 = inout(vreg) *a2,
                a3 = inout(vreg) *a3,
                a4 = inout(vreg) *a4,
                a5 = inout(vreg) *a5,
                a6 = inout(vreg) *a6,
                a7 = inout(vreg) *a7,
                options(nostack, readonly),
            );
            for (j, a) in acc.iter().enumerate() {
                vst1q_f32(o.add(i + 4 * j), vcvtq_f32_u32(*a));
            }
        };
        // SAFETY: the caller's contract, for the slice the short form reads.
        chunks::<32>(n, chunk, || unsafe {
            let len = (w.len() - 1) * stride + n;
            portable(core::slice::from_raw_parts(src, len), stride, w, out)
        });
    }
}

#[cfg(target_arch = "x86_64")]
/// The AVX2 and AVX-512 variants of [`vertical`], which picks one at run time; public so the
/// tests can compare each with [`portable`] on a CPU that has both.
pub mod x86 {
    use super::{chunks, portable};
    use core::arch::x86_64::*;

    /// Rows `k` and `k + 1`'s weights as one 32-bit lane of two 16-bit weights, the pair
    /// `vpmaddwd` multiplies each lane of interleaved pixels by; an odd last row is paired
    /// with itself at weight zero.
    #[inline(always)]
    fn pair(w: &[u16], k: usize) -> (i32, usize) {
        let w1 = if k + 1 < w.len() { w[k + 1] } else { 0 };
        let next = if k + 1 < w.len() { 1 } else { 0 };
        (i32::from(w[k]) | (i32::from(w1) << 16), next)
    }

    /// [`super::vertical`] in AVX2: 32 values a chunk in four `i32x8` accumulators, two source
    /// rows a step: each row's 16-byte halves widened to 16 bits, the two rows interleaved
    /// (`vpunpcklwd`, `vpunpckhwd`) and multiplied by the pair of weights (`vpmaddwd`). The
    /// interleave works within 128-bit lanes, so the accumulators hold values `0-3, 8-11` and
    /// `4-7, 12-15` of each half; `vperm2i128` puts them back in order once per chunk.
    ///
    /// # Safety
    /// The CPU has AVX2; every weight is below `2^15` (or alone: no pair is formed);
    /// `(w.len() - 1) * stride + out.len()` bytes are readable at `src`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn avx2(src: *const u8, stride: usize, w: &[u16], out: &mut [f32]) {
        let n = out.len();
        let o = out.as_mut_ptr();
        // SAFETY: every chunk reads 32 bytes at i + k * stride (k < w.len()) for i + 32 <= n
        // and writes out[i..i + 32]; the caller's contract bounds both.
        let chunk = |i: usize| unsafe {
            let mut acc = [_mm256_setzero_si256(); 4];
            let mut k = 0;
            while k < w.len() {
                let (wp, next) = pair(w, k);
                let wv = _mm256_set1_epi32(wp);
                let (p0, p1) = (src.add(i + k * stride), src.add(i + (k + next) * stride));
                for h in 0..2 {
                    let a = _mm256_cvtepu8_epi16(_mm_loadu_si128(p0.add(16 * h).cast()));
                    let b = _mm256_cvtepu8_epi16(_mm_loadu_si128(p1.add(16 * h).cast()));
                    let lo = _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), wv);
                    let hi = _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), wv);
                    acc[2 * h] = _mm256_add_epi32(acc[2 * h], lo);
                    acc[2 * h + 1] = _mm256_add_epi32(acc[2 * h + 1], hi);
                }
                k += 2;
            }
            for h in 0..2 {
                let (lo, hi) = (acc[2 * h], acc[2 * h + 1]);
                let first = _mm256_permute2x128_si256::<0x20>(lo, hi);
                let second = _mm256_permute2x128_si256::<0x31>(lo, hi);
                _mm256_storeu_ps(o.add(i + 16 * h), _mm256_cvtepi32_ps(first));
                _mm256_storeu_ps(o.add(i + 16 * h + 8), _mm256_cvtepi32_ps(second));
            }
        };
        // SAFETY: the caller's contract, for the slice the short form reads.
        chunks::<32>(n, chunk, || unsafe {
            let len = (w.len() - 1) * stride + n;
            portable(core::slice::from_raw_parts(src, len), stride, w, out)
        });
    }

    /// [`super::vertical`] in AVX-512: the [`avx2`] scheme over 64 values a chunk (each row's
    /// 32-byte halves widened into one 512-bit vector), the products added by `vpdpwssd`;
    /// `vpermt2q` restores the order of each 16 values. Chunks shorter than 64 values take
    /// [`avx2`].
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI and AVX2; as [`avx2`] otherwise.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
    pub unsafe fn avx512(src: *const u8, stride: usize, w: &[u16], out: &mut [f32]) {
        let n = out.len();
        let o = out.as_mut_ptr();
        // SAFETY: every chunk reads 64 bytes at i + k * stride (k < w.len()) for i + 64 <= n
        // and writes out[i..i + 64]; the caller's contract bounds both.
        let chunk = |i: usize| unsafe {
            let mut acc = [_mm512_setzero_si512(); 4];
            let mut k = 0;
            while k < w.len() {
                let (wp, next) = pair(w, k);
                let wv = _mm512_set1_epi32(wp);
                let (p0, p1) = (src.add(i + k * stride), src.add(i + (k + next) * stride));
                for h in 0..2 {
                    let a = _mm512_cvtepu8_epi16(_mm256_loadu_si256(p0.add(32 * h).cast()));
                    let b = _mm512_cvtepu8_epi16(_mm256_loadu_si256(p1.add(32 * h).cast()));
                    acc[2 * h] = _mm512_dpwssd_epi32(acc[2 * h], _mm512_unpacklo_epi16(a, b), wv);
                    acc[2 * h + 1] =
                        _mm512_dpwssd_epi32(acc[2 * h + 1], _mm512_unpackhi_epi16(a, b), wv);
                }
                k += 2;
            }
            // Lane L of `lo` holds values 8L..8L+3 of the half, lane L of `hi` 8L+4..8L+7.
            let first = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
            let second = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
            for h in 0..2 {
                let (lo, hi) = (acc[2 * h], acc[2 * h + 1]);
                let a = _mm512_permutex2var_epi64(lo, first, hi);
                let b = _mm512_permutex2var_epi64(lo, second, hi);
                _mm512_storeu_ps(o.add(i + 32 * h), _mm512_cvtepi32_ps(a));
                _mm512_storeu_ps(o.add(i + 32 * h + 16), _mm512_cvtepi32_ps(b));
            }
        };
        // SAFETY: the caller's contract (AVX2 is part of this function's features).
        chunks::<64>(n, chunk, || unsafe { avx2(src, stride, w, out) });
    }
}
