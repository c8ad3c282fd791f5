//! Image preprocessing: the centred crop with the input's aspect ratio (for a
//! square input, the centred square of the shorter side, as training's
//! `derm-train prepare` and the paper do), an antialiased bilinear resize of its
//! RGB8 pixels to the model's input size (the filter training's loader uses, so a
//! model sees the same pixels in training and in use), then per-channel
//! normalization, written straight into a caller-owned planar (CHW) `f32` buffer.
//! No heap: the filter weights, one strip's vertical sums and one output row live in fixed
//! tables on the stack (about 35 KiB). The vertical pass filters in fixed point
//! ([`vertical`]: the one place the resize's arithmetic is not `f32`).

pub mod vertical;

/// Why an image could not be preprocessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreprocessError {
    /// Width or height is zero.
    EmptyImage,
    /// `pixels.len()` is not `width * height * 3`.
    WrongPixelCount {
        /// `width * height * 3`, saturated.
        expected: usize,
        /// The length that was passed.
        actual: usize,
    },
    /// The crop region is empty or reaches outside the image.
    BadRegion,
    /// The crop is more than about 500 times the output size along an axis (a side of
    /// 64,000 pixels for a 128 px model): more source pixels per output pixel than the
    /// resize's fixed-size weight tables hold.
    TooLarge,
    /// The output buffer is not `3 * out_h * out_w` long.
    WrongOutputLen {
        /// `3 * out_h * out_w`, saturated.
        expected: usize,
        /// The length that was passed.
        actual: usize,
    },
}

impl core::fmt::Display for PreprocessError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PreprocessError::EmptyImage => f.write_str("image has zero width or height"),
            PreprocessError::BadRegion => {
                f.write_str("crop region is empty or reaches outside the image")
            }
            PreprocessError::TooLarge => {
                f.write_str("crop is too large to resize (more than about 500x the output side)")
            }
            PreprocessError::WrongPixelCount { expected, actual } => {
                write!(
                    f,
                    "image needs {expected} bytes (width * height * 3), got {actual}"
                )
            }
            PreprocessError::WrongOutputLen { expected, actual } => {
                write!(
                    f,
                    "output buffer holds {actual} values, expected {expected}"
                )
            }
        }
    }
}

impl core::error::Error for PreprocessError {}

/// A borrowed RGB8 image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` bytes, R G B interleaved.
    pub pixels: &'a [u8],
}

impl<'a> Image<'a> {
    /// Wraps `pixels` after checking the size; zero-sized images are rejected.
    pub fn new(width: usize, height: usize, pixels: &'a [u8]) -> Result<Self, PreprocessError> {
        if width == 0 || height == 0 {
            return Err(PreprocessError::EmptyImage);
        }
        let expected = width.saturating_mul(height).saturating_mul(3);
        if pixels.len() != expected {
            return Err(PreprocessError::WrongPixelCount {
                expected,
                actual: pixels.len(),
            });
        }
        Ok(Self {
            width,
            height,
            pixels,
        })
    }
}

/// A rectangle of an image, in pixels: columns `x..x + width`, rows `y..y + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First column.
    pub x: usize,
    /// First row.
    pub y: usize,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

impl Region {
    /// All of a `width x height` image.
    pub fn whole(width: usize, height: usize) -> Self {
        Region {
            x: 0,
            y: 0,
            width,
            height,
        }
    }
}

/// The largest centred region of a `width x height` image with the aspect ratio of
/// `out_w x out_h` (for a square output: the centred square of the shorter side). This is the
/// crop training uses, so a photo of another aspect ratio is not squashed.
pub fn centre_crop(width: usize, height: usize, out_w: usize, out_h: usize) -> Region {
    // In u128, where a product of two sizes cannot overflow: the C ABI passes on whatever
    // width and height its caller claims, and this runs before the pixel count is checked.
    let (wide, tall) = (width as u128, height as u128);
    let (ow, oh) = (out_w as u128, out_h as u128);
    let (w, h) = if out_w == 0 || out_h == 0 {
        (width, height)
    } else if wide * oh > tall * ow {
        // Wider than the output: keep the full height. The quotient is below `width`, so it
        // fits in a usize.
        (((tall * ow / oh) as usize).clamp(1, width.max(1)), height)
    } else {
        // The quotient is at most `height`.
        (width, ((wide * oh / ow) as usize).clamp(1, height.max(1)))
    };
    // Saturating: an `Image` built by hand may be empty; the resize then reports it.
    Region {
        x: width.saturating_sub(w) / 2,
        y: height.saturating_sub(h) / 2,
        width: w,
        height: h,
    }
}

/// Resizes the whole of `image` to `out_h x out_w` with antialiased bilinear interpolation
/// (PyTorch's `interpolate(mode="bilinear", antialias=True, align_corners=False)`, Pillow's
/// `BILINEAR`: when shrinking, the triangle filter widens by the reduction so every source
/// pixel counts; when enlarging, plain bilinear with half-pixel centres) and writes
/// `(value / 255 - mean[c]) / std[c]` in CHW order into `out`.
pub fn resize_normalize(
    image: Image<'_>,
    out_h: usize,
    out_w: usize,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut [f32],
) -> Result<(), PreprocessError> {
    let all = Region::whole(image.width, image.height);
    crop_resize_normalize(image, all, out_h, out_w, mean, std, out)
}

/// Like [`resize_normalize`], on `region` of `image` only.
pub fn crop_resize_normalize(
    image: Image<'_>,
    region: Region,
    out_h: usize,
    out_w: usize,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut [f32],
) -> Result<(), PreprocessError> {
    crop_resize_normalize_map(image, region, out_h, out_w, mean, std, out, |v, o| {
        o.copy_from_slice(v)
    })
}

/// Like [`crop_resize_normalize`], storing the normalized values through `store(values,
/// out)`, a run of up to 256 values of one channel and output row at a time (`out` as long as
/// `values`): an int8 model's input is written quantized (its `input_values`, the vector
/// quantization `run` uses), so the `f32` image is never held anywhere. `store` sees the same
/// `f32` values, for the same positions, that [`crop_resize_normalize`] writes.
#[allow(clippy::too_many_arguments)] // the arguments of crop_resize_normalize, plus `store`
pub fn crop_resize_normalize_map<T: Copy>(
    image: Image<'_>,
    region: Region,
    out_h: usize,
    out_w: usize,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut [T],
    store: impl Fn(&[f32], &mut [T]),
) -> Result<(), PreprocessError> {
    // Checked: a product that wraps could match a short buffer and send the loops below out
    // of it. A saturated `expected` matches no slice.
    let expected = out_h.checked_mul(out_w).and_then(|n| n.checked_mul(3));
    if expected != Some(out.len()) {
        return Err(PreprocessError::WrongOutputLen {
            expected: expected.unwrap_or(usize::MAX),
            actual: out.len(),
        });
    }
    let image = Image::new(image.width, image.height, image.pixels)?;
    if region.width == 0
        || region.height == 0
        || region.x.saturating_add(region.width) > image.width
        || region.y.saturating_add(region.height) > image.height
    {
        return Err(PreprocessError::BadRegion);
    }
    if out.is_empty() {
        // A zero output side: nothing to write, and the reduction below would be infinite.
        return Ok(());
    }
    // The vertical pass's sums are in units of 1 / vertical::ONE (a power of two: exact).
    let unit = 1.0 / f32::from(vertical::ONE);
    let scale = [
        unit / (255.0 * std[0]),
        unit / (255.0 * std[1]),
        unit / (255.0 * std[2]),
    ];
    let bias = [-mean[0] / std[0], -mean[1] / std[1], -mean[2] / std[2]];
    let sy = region.height as f32 / out_h as f32;
    let sx = region.width as f32 / out_w as f32;
    if taps_needed(sy) > MAX_TAPS || taps_needed(sx) > MAX_TAPS {
        return Err(PreprocessError::TooLarge);
    }
    let r = Resize {
        image,
        region,
        out_h,
        out_w,
        scale,
        bias,
        sy,
        sx,
    };
    // The horizontal pass's SSE code, compiled with AVX2, loads each weight with a
    // broadcast instead of a load and a shuffle (the same operations, so the same bits).
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { resize_avx2(r, out, store) };
        return Ok(());
    }
    resize(r, out, store);
    Ok(())
}

/// What [`crop_resize_normalize_map`] checked and derived, for [`resize`].
#[derive(Clone, Copy)]
struct Resize<'a> {
    image: Image<'a>,
    region: Region,
    out_h: usize,
    out_w: usize,
    /// Per channel, `1 / (255 * std * vertical::ONE)`.
    scale: [f32; 3],
    /// Per channel, `-mean / std`.
    bias: [f32; 3],
    /// Source pixels per output pixel, vertically and horizontally.
    sy: f32,
    sx: f32,
}

/// [`resize`] compiled with AVX2.
///
/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn resize_avx2<T: Copy>(r: Resize<'_>, out: &mut [T], store: impl Fn(&[f32], &mut [T])) {
    resize(r, out, store);
}

/// The resize proper of [`crop_resize_normalize_map`], on arguments it checked.
#[inline(always)]
fn resize<T: Copy>(r: Resize<'_>, out: &mut [T], store: impl Fn(&[f32], &mut [T])) {
    let Resize {
        image,
        region,
        out_h,
        out_w,
        scale,
        bias,
        sy,
        sx,
    } = r;
    let plane = out_h * out_w;
    let (red, rest) = out.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    let row_len = image.width * 3;
    // Separable, vertical pass first. Output columns go in strips; for each output row, the
    // strip's source rows are first filtered vertically into `column_sums` (in fixed point,
    // one contiguous run of bytes per source row: `vertical`), then each output pixel
    // filters that one row horizontally. Each source pixel of the strip is read once per
    // output row whose window holds it (about twice), instead of once per output pixel
    // whose window holds it (about four times when shrinking). A strip's columns, their
    // weights (computed once per strip) and its span of source columns live on the stack; a
    // strip ends early when its weights or its span would overflow their tables, which only
    // happens for large reductions.
    let mut cols = [Column::default(); STRIP];
    let mut wx = [0f32; COLUMN_TABLE];
    let mut wy = [0f32; MAX_TAPS];
    let mut wq = [0u16; MAX_TAPS];
    // One value more than the spans need: the horizontal pass reads it, unused; and the
    // zero-weighted padding taps of the strip's last columns (`FIXED_TAPS`) read up to
    // `FIXED_TAPS - 1` source columns past the span: values that are still finite (zero or an
    // earlier row's sums), so their zero products change nothing.
    let mut column_sums = [0f32; 3 * SPAN_TABLE + 3 * (FIXED_TAPS - 1) + 1];
    // One output row of a strip, per channel, before `store`.
    let mut values = [[0f32; STRIP]; 3];
    let need = taps_needed(sx);
    let mut x_start = 0;
    while x_start < out_w {
        let mut n = 0;
        let mut used = 0;
        let mut span_first = 0;
        let mut span_end = 0;
        while n < STRIP && x_start + n < out_w {
            let Some(w) = wx.get_mut(used..used + need) else {
                break;
            };
            let (first, taps) = triangle_taps(x_start + n, sx, region.width, w);
            if n == 0 {
                span_first = first;
            } else if first + taps - span_first > SPAN_TABLE {
                break;
            }
            // The first column always fits: taps <= need <= MAX_TAPS <= SPAN_TABLE.
            span_end = span_end.max(first + taps);
            cols[n] = Column {
                x0: first - span_first,
                taps,
                w0: used,
            };
            used += taps;
            n += 1;
        }
        // Every column of the strip the same number of taps, the strip's largest, the extra
        // weights zero: then up to FIXED_TAPS the horizontal pass runs with that count known
        // at compile time. Weights move to `j * taps`, from the last column back, so no
        // column's weights are overwritten before they move (`w0 <= j * taps` for each).
        let taps = cols[..n].iter().map(|c| c.taps).max().unwrap_or(1);
        let fixed = if taps <= FIXED_TAPS && n * taps <= wx.len() {
            for (j, col) in cols[..n].iter_mut().enumerate().rev() {
                wx.copy_within(col.w0..col.w0 + col.taps, j * taps);
                wx[j * taps + col.taps..(j + 1) * taps].fill(0.0);
                col.w0 = j * taps;
            }
            taps
        } else {
            0
        };
        let span = 3 * (span_end - span_first);
        for oy in 0..out_h {
            let (first_row, rows) = triangle_taps(oy, sy, region.height, &mut wy);
            let (skip, kept) = vertical::fixed_weights(&wy[..rows], &mut wq);
            let top = (region.y + first_row + skip) * row_len + (region.x + span_first) * 3;
            let src = &image.pixels[top..top + (kept - 1) * row_len + span];
            vertical::vertical(src, row_len, &wq[..kept], &mut column_sums[..span]);
            let at = oy * out_w + x_start;
            let (r, g, b) = (
                &mut red[at..at + n],
                &mut green[at..at + n],
                &mut blue[at..at + n],
            );
            let row = (&column_sums[..], &cols[..n], &wx[..], (scale, bias));
            match fixed {
                1 => horizontal_row::<1>(row, &mut values),
                2 => horizontal_row::<2>(row, &mut values),
                3 => horizontal_row::<3>(row, &mut values),
                4 => horizontal_row::<4>(row, &mut values),
                5 => horizontal_row::<5>(row, &mut values),
                6 => horizontal_row::<6>(row, &mut values),
                7 => horizontal_row::<7>(row, &mut values),
                8 => horizontal_row::<8>(row, &mut values),
                _ => horizontal_row::<0>(row, &mut values),
            }
            store(&values[0][..n], r);
            store(&values[1][..n], g);
            store(&values[2][..n], b);
        }
        x_start += n;
    }
}

/// Output columns per strip of [`resize`] (a multiple of 4: the horizontal pass writes 4
/// columns at a time).
const STRIP: usize = 256;
const _: () = assert!(STRIP.is_multiple_of(4));

/// The most taps per column for which [`horizontal_row`] is compiled with the count fixed
/// (a strip's columns padded with zero weights to its largest count): up to a reduction by
/// about 3 (a 1024x768 photo to 224 px), beyond it the count is read per column.
const FIXED_TAPS: usize = 8;

/// One output row of a strip for [`horizontal_row`]: the row of vertical sums (RGB
/// interleaved, past the span as `resize` documents), the strip's columns, their weights and
/// the normalization (`scale`, `bias` per channel).
type Row<'a> = (&'a [f32], &'a [Column], &'a [f32], ([f32; 3], [f32; 3]));

/// One output column of a strip: its first source column (relative to the strip's span),
/// its number of taps (at least 1) and where its weights start in the strip's table.
#[derive(Clone, Copy, Default)]
struct Column {
    x0: usize,
    taps: usize,
    w0: usize,
}

/// The horizontal pass of one output row of a strip, normalized: for each column `j`,
/// `(sum_t w[t] * sums[(x0 + t) * 3 + c]) * scale[c] + bias[c]` into `values[c][j]`, from one
/// row of vertical sums (RGB interleaved) followed by one spare value. Each channel's
/// products are added in tap order, one rounding per multiply and per add, so every variant
/// gives the same bits (an int8 model quantizes these values).
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
#[inline(always)]
fn horizontal_row<const T: usize>(
    (sums, cols, wx, (scale, bias)): Row<'_>,
    values: &mut [[f32; STRIP]; 3],
) {
    for (j, col) in cols.iter().enumerate() {
        let weights = &wx[col.w0..col.w0 + col.taps];
        let taps = sums[col.x0 * 3..(col.x0 + col.taps) * 3].chunks_exact(3);
        let mut v = [0f32; 3];
        for (px, &w) in taps.zip(weights) {
            v[0] += w * px[0];
            v[1] += w * px[1];
            v[2] += w * px[2];
        }
        for c in 0..3 {
            values[c][j] = v[c] * scale[c] + bias[c];
        }
    }
}

/// [`horizontal_row`] with vectors of four `f32` ([`Quad`]: NEON on aarch64, SSE on x86_64,
/// part of every such CPU): per column, the three channels and the next value (unused) in
/// one vector per tap, multiplied and added separately (not fused), as the portable form
/// rounds; four columns' vectors are then transposed into one vector per channel and
/// normalized together. The first tap's product stands for `0 + product`: weights and sums
/// are never negative, so the product is never `-0` and the two are the same bits.
#[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
#[inline(always)]
fn horizontal_row<const T: usize>(
    (sums, cols, wx, (scale, bias)): Row<'_>,
    values: &mut [[f32; STRIP]; 3],
) {
    let pixel = |col: &Column| {
        // The strip's fixed count (the extra weights zero), or this column's.
        let taps = if T == 0 { col.taps } else { T };
        // Each tap reads 4 values from (x0 + t) * 3: the last ends at (x0 + taps) * 3 + 1.
        assert!(
            taps > 0 && (col.x0 + taps) * 3 < sums.len() && col.w0 + taps <= wx.len(),
            "preprocess: horizontal taps past the row of sums or the weights"
        );
        // SAFETY: the assertion bounds every 4-value load and every weight read.
        unsafe {
            let (p, w) = (sums.as_ptr().add(col.x0 * 3), wx.as_ptr().add(col.w0));
            let mut v = Quad::load(p).mul_n(*w);
            for t in 1..taps {
                v = v.add(Quad::load(p.add(3 * t)).mul_n(*w.add(t)));
            }
            v
        }
    };
    let zero = Quad::zero();
    for j in (0..cols.len()).step_by(4) {
        let at = |k: usize| cols.get(j + k).map_or(zero, pixel);
        let channels = Quad::channels([at(0), at(1), at(2), at(3)]);
        for (c, v) in channels.into_iter().enumerate() {
            let v = v.mul_n(scale[c]).add(Quad::splat(bias[c]));
            // STRIP is a multiple of 4 and j < cols.len() <= STRIP: 4 values from j fit.
            v.store(&mut values[c][j..j + 4]);
        }
    }
}

/// Four `f32` lanes for [`horizontal_row`], in the architecture's vector registers; every
/// operation rounds once, as the scalar one does.
#[cfg(target_arch = "aarch64")]
#[derive(Clone, Copy)]
struct Quad(core::arch::aarch64::float32x4_t);

/// Four `f32` lanes for [`horizontal_row`], in the architecture's vector registers; every
/// operation rounds once, as the scalar one does.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Quad(core::arch::x86_64::__m128);

// SAFETY (every block below): NEON is part of aarch64; the loads and stores are the
// callers' bounds.
#[cfg(target_arch = "aarch64")]
impl Quad {
    /// The 4 values at `p`.
    ///
    /// # Safety
    /// 4 values are readable at `p`.
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Self(unsafe { core::arch::aarch64::vld1q_f32(p) })
    }

    #[inline(always)]
    fn zero() -> Self {
        Self::splat(0.0)
    }

    #[inline(always)]
    fn splat(v: f32) -> Self {
        Self(unsafe { core::arch::aarch64::vdupq_n_f32(v) })
    }

    #[inline(always)]
    fn mul_n(self, w: f32) -> Self {
        Self(unsafe { core::arch::aarch64::vmulq_n_f32(self.0, w) })
    }

    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Self(unsafe { core::arch::aarch64::vaddq_f32(self.0, o.0) })
    }

    /// Into `out[..4]`.
    #[inline(always)]
    fn store(self, out: &mut [f32]) {
        assert!(out.len() >= 4);
        unsafe { core::arch::aarch64::vst1q_f32(out.as_mut_ptr(), self.0) }
    }

    /// Four pixels' `[r, g, b, _]` as `[r0..r3]`, `[g0..g3]`, `[b0..b3]`.
    #[inline(always)]
    fn channels(p: [Self; 4]) -> [Self; 3] {
        use core::arch::aarch64::*;
        unsafe {
            // [r0 r1 b0 b1], [g0 g1 x x], [r2 r3 b2 b3], [g2 g3 x x]
            let (t0, t1) = (vtrn1q_f32(p[0].0, p[1].0), vtrn2q_f32(p[0].0, p[1].0));
            let (t2, t3) = (vtrn1q_f32(p[2].0, p[3].0), vtrn2q_f32(p[2].0, p[3].0));
            let pair = |a: float32x4_t, b: float32x4_t, high: bool| {
                let (a, b) = (vreinterpretq_f64_f32(a), vreinterpretq_f64_f32(b));
                Self(vreinterpretq_f32_f64(if high {
                    vtrn2q_f64(a, b)
                } else {
                    vtrn1q_f64(a, b)
                }))
            };
            [pair(t0, t2, false), pair(t1, t3, false), pair(t0, t2, true)]
        }
    }
}

// SAFETY (every block below): SSE is part of x86_64; the loads and stores are the callers'
// bounds.
#[cfg(target_arch = "x86_64")]
impl Quad {
    /// The 4 values at `p`.
    ///
    /// # Safety
    /// 4 values are readable at `p`.
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Self(unsafe { core::arch::x86_64::_mm_loadu_ps(p) })
    }

    #[inline(always)]
    fn zero() -> Self {
        Self(unsafe { core::arch::x86_64::_mm_setzero_ps() })
    }

    #[inline(always)]
    fn splat(v: f32) -> Self {
        Self(unsafe { core::arch::x86_64::_mm_set1_ps(v) })
    }

    #[inline(always)]
    fn mul_n(self, w: f32) -> Self {
        use core::arch::x86_64::*;
        Self(unsafe { _mm_mul_ps(self.0, _mm_set1_ps(w)) })
    }

    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Self(unsafe { core::arch::x86_64::_mm_add_ps(self.0, o.0) })
    }

    /// Into `out[..4]`.
    #[inline(always)]
    fn store(self, out: &mut [f32]) {
        assert!(out.len() >= 4);
        unsafe { core::arch::x86_64::_mm_storeu_ps(out.as_mut_ptr(), self.0) }
    }

    /// Four pixels' `[r, g, b, _]` as `[r0..r3]`, `[g0..g3]`, `[b0..b3]`.
    #[inline(always)]
    fn channels(p: [Self; 4]) -> [Self; 3] {
        use core::arch::x86_64::*;
        unsafe {
            // [r0 r1 g0 g1], [b0 b1 x x], [r2 r3 g2 g3], [b2 b3 x x]
            let (t0, t1) = (
                _mm_unpacklo_ps(p[0].0, p[1].0),
                _mm_unpackhi_ps(p[0].0, p[1].0),
            );
            let (t2, t3) = (
                _mm_unpacklo_ps(p[2].0, p[3].0),
                _mm_unpackhi_ps(p[2].0, p[3].0),
            );
            [
                Self(_mm_movelh_ps(t0, t2)),
                Self(_mm_movehl_ps(t2, t0)),
                Self(_mm_movelh_ps(t1, t3)),
            ]
        }
    }
}

/// The most source pixels one output pixel reads along one axis: a reduction by `r` reads
/// about `2r + 1`, so this allows reductions up to about 500x (a 64,000 px crop for a 128 px
/// model), far beyond any photo that fits in memory.
const MAX_TAPS: usize = 1024;

/// Weights of one column strip (8 KiB on the stack); a strip holds at least one column.
const COLUMN_TABLE: usize = 2 * MAX_TAPS;

/// Source columns one strip may span (their vertical sums: 12 KiB on the stack); at least
/// [`MAX_TAPS`], so a strip holds at least one column.
const SPAN_TABLE: usize = MAX_TAPS;

/// An upper bound on the taps [`triangle_taps`] uses for a reduction by `scale`.
fn taps_needed(scale: f32) -> usize {
    // Saturating: `as` already saturates a huge or infinite scale to usize::MAX.
    (scale.max(1.0) as usize)
        .saturating_mul(2)
        .saturating_add(3)
}

/// The source indices and normalized weights of output index `o` along an axis of `len`
/// source pixels reduced by `scale` (input / output): the triangle (bilinear) filter widened
/// by the reduction, so every source pixel contributes when shrinking. This is PyTorch's
/// `interpolate(mode="bilinear", antialias=True, align_corners=False)` and Pillow's
/// `BILINEAR` resize, formula for formula, which is what training's loader uses; when
/// enlarging it is ordinary bilinear interpolation with half-pixel centres. Writes the
/// weights to `w` and returns the first source index and the number of taps.
fn triangle_taps(o: usize, scale: f32, len: usize, w: &mut [f32]) -> (usize, usize) {
    let support = scale.max(1.0);
    let inv = 1.0 / support;
    let centre = scale * (o as f32 + 0.5);
    // Truncation toward zero, then clamping, as in PyTorch and Pillow.
    let first = ((centre - support + 0.5) as usize).min(len - 1);
    let end = ((centre + support + 0.5) as usize).clamp(first + 1, len);
    let taps = (end - first).min(w.len());
    let mut total = 0.0;
    for (j, wj) in w[..taps].iter_mut().enumerate() {
        let d = ((first + j) as f32 - centre + 0.5) * inv;
        *wj = (1.0 - d.abs()).max(0.0);
        total += *wj;
    }
    if total > 0.0 {
        for wj in &mut w[..taps] {
            *wj /= total;
        }
    } else {
        // Unreachable for valid sizes; a lone tap keeps the output defined regardless.
        w[0] = 1.0;
        return (first, 1);
    }
    (first, taps)
}
