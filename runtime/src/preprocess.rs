//! Image preprocessing: the centred crop with the input's aspect ratio (for a
//! square input, the centred square of the shorter side, as training's
//! `derm-train prepare` and the paper do), bilinear resize of its RGB8 pixels
//! to the model's input size, then per-channel normalization, written straight
//! into a caller-owned planar (CHW) `f32` buffer.

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
    /// The output buffer is not `3 * out_h * out_w` long.
    WrongOutputLen {
        /// `3 * out_h * out_w`.
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
    let (w, h) = if out_w == 0 || out_h == 0 {
        (width, height)
    } else if width.saturating_mul(out_h) > height.saturating_mul(out_w) {
        // Wider than the output: keep the full height.
        ((height * out_w / out_h).clamp(1, width.max(1)), height)
    } else {
        (width, (width * out_h / out_w).clamp(1, height.max(1)))
    };
    // Saturating: an `Image` built by hand may be empty; the resize then reports it.
    Region {
        x: width.saturating_sub(w) / 2,
        y: height.saturating_sub(h) / 2,
        width: w,
        height: h,
    }
}

/// Resizes the whole of `image` to `out_h x out_w` with bilinear interpolation (half-pixel
/// centers, as PyTorch's `align_corners=False`) and writes
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
    let expected = 3 * out_h * out_w;
    if out.len() != expected {
        return Err(PreprocessError::WrongOutputLen {
            expected,
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
    let scale = [
        1.0 / (255.0 * std[0]),
        1.0 / (255.0 * std[1]),
        1.0 / (255.0 * std[2]),
    ];
    let bias = [-mean[0] / std[0], -mean[1] / std[1], -mean[2] / std[2]];
    let sy = region.height as f32 / out_h as f32;
    let sx = region.width as f32 / out_w as f32;
    let plane = out_h * out_w;
    let (red, rest) = out.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    let row_len = image.width * 3;
    // Column strips: each strip's source columns and weights are computed
    // once (on the stack) instead of once per output row.
    const STRIP: usize = 64;
    let mut cols = [(0usize, 0usize, 0f32); STRIP];
    for x_start in (0..out_w).step_by(STRIP) {
        let n = STRIP.min(out_w - x_start);
        for (j, col) in cols[..n].iter_mut().enumerate() {
            let (x0, x1, fx) = source_coords(x_start + j, sx, region.width);
            *col = ((region.x + x0) * 3, (region.x + x1) * 3, fx);
        }
        for oy in 0..out_h {
            let (y0, y1, fy) = source_coords(oy, sy, region.height);
            let (y0, y1) = (region.y + y0, region.y + y1);
            let row0 = &image.pixels[y0 * row_len..(y0 + 1) * row_len];
            let row1 = &image.pixels[y1 * row_len..(y1 + 1) * row_len];
            let at = oy * out_w + x_start;
            let (r, g, b) = (
                &mut red[at..at + n],
                &mut green[at..at + n],
                &mut blue[at..at + n],
            );
            for (j, &(x0, x1, fx)) in cols[..n].iter().enumerate() {
                let mut v = [0f32; 3];
                for (c, v) in v.iter_mut().enumerate() {
                    let p00 = f32::from(row0[x0 + c]);
                    let p01 = f32::from(row0[x1 + c]);
                    let p10 = f32::from(row1[x0 + c]);
                    let p11 = f32::from(row1[x1 + c]);
                    let top = p00 + (p01 - p00) * fx;
                    let bottom = p10 + (p11 - p10) * fx;
                    *v = (top + (bottom - top) * fy) * scale[c] + bias[c];
                }
                r[j] = v[0];
                g[j] = v[1];
                b[j] = v[2];
            }
        }
    }
    Ok(())
}

/// Maps output index `o` to the two source indices and the weight of the
/// second, clamping at the borders like PyTorch's bilinear `interpolate`.
fn source_coords(o: usize, scale: f32, len: usize) -> (usize, usize, f32) {
    let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (src as usize).min(len - 1);
    let i1 = (i0 + 1).min(len - 1);
    (i0, i1, src - i0 as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_normalizes_to_constant() {
        let pixels = [[10u8, 128, 250]; 5 * 7].concat();
        let img = Image::new(7, 5, &pixels).unwrap();
        let mut out = [0f32; 3 * 4 * 4];
        let mean = [0.1, 0.5, 0.9];
        let std = [0.2, 0.25, 0.3];
        resize_normalize(img, 4, 4, mean, std, &mut out).unwrap();
        for (c, px) in [10.0f32, 128.0, 250.0].iter().enumerate() {
            let want = (px / 255.0 - mean[c]) / std[c];
            for v in &out[c * 16..(c + 1) * 16] {
                assert!((v - want).abs() < 1e-5, "channel {c}: {v} vs {want}");
            }
        }
    }

    #[test]
    fn downscale_by_two_averages_pixel_pairs() {
        // A 4x1 ramp to 2x1: half-pixel centers land between pixels 0,1 and 2,3.
        let pixels: [u8; 12] = [0, 0, 0, 100, 100, 100, 200, 200, 200, 250, 250, 250];
        let img = Image::new(4, 1, &pixels).unwrap();
        let mut out = [0f32; 6];
        resize_normalize(img, 1, 2, [0.0; 3], [1.0 / 255.0; 3], &mut out).unwrap();
        assert_eq!(&out[..2], &[50.0, 225.0]);
    }

    /// The straightforward per-pixel loop the strip version must equal.
    fn naive(image: Image<'_>, out_h: usize, out_w: usize, out: &mut [f32]) {
        let (sy, sx) = (
            image.height as f32 / out_h as f32,
            image.width as f32 / out_w as f32,
        );
        for oy in 0..out_h {
            let (y0, y1, fy) = source_coords(oy, sy, image.height);
            for ox in 0..out_w {
                let (x0, x1, fx) = source_coords(ox, sx, image.width);
                for c in 0..3 {
                    let px =
                        |y: usize, x: usize| f32::from(image.pixels[(y * image.width + x) * 3 + c]);
                    let top = px(y0, x0) + (px(y0, x1) - px(y0, x0)) * fx;
                    let bottom = px(y1, x0) + (px(y1, x1) - px(y1, x0)) * fx;
                    let v = top + (bottom - top) * fy;
                    out[c * out_h * out_w + oy * out_w + ox] =
                        v * (1.0 / (255.0 * 0.25)) + (-0.5 / 0.25);
                }
            }
        }
    }

    #[test]
    fn strips_equal_the_per_pixel_loop() {
        let mut state = 7u32;
        let mut pixels = [0u8; 3 * 97 * 131];
        for p in pixels.iter_mut() {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *p = (state >> 24) as u8;
        }
        // Up- and down-scaling, widths below, at and across strip boundaries.
        for (w, h, ow, oh) in [
            (97, 131, 150, 7),
            (97, 131, 64, 64),
            (5, 3, 129, 2),
            (97, 131, 1, 1),
        ] {
            let img = Image::new(w, h, &pixels[..w * h * 3]).unwrap();
            let mut got = [0f32; 3 * 150 * 64];
            let mut want = [0f32; 3 * 150 * 64];
            let n = 3 * ow * oh;
            resize_normalize(img, oh, ow, [0.5; 3], [0.25; 3], &mut got[..n]).unwrap();
            naive(img, oh, ow, &mut want[..n]);
            assert_eq!(got[..n], want[..n], "{w}x{h} -> {ow}x{oh}");
        }
    }

    #[test]
    fn centre_crop_keeps_the_middle_square() {
        assert_eq!(
            centre_crop(200, 150, 128, 128),
            Region {
                x: 25,
                y: 0,
                width: 150,
                height: 150
            }
        );
        assert_eq!(
            centre_crop(3, 700, 4, 4),
            Region {
                x: 0,
                y: 348,
                width: 3,
                height: 3
            }
        );
        assert_eq!(centre_crop(1, 6000, 224, 224).height, 1);
        assert_eq!(centre_crop(640, 480, 4, 3).width, 640);
        // Empty images do not underflow (the resize rejects them).
        assert_eq!(centre_crop(0, 5, 4, 4).x, 0);
        assert_eq!(centre_crop(5, 0, 4, 4).y, 0);
    }

    #[test]
    fn crop_equals_resizing_the_cut_out_pixels() {
        let mut pixels = [0u8; 20 * 10 * 3];
        for (i, p) in pixels.iter_mut().enumerate() {
            *p = (i * 37 % 251) as u8;
        }
        let img = Image::new(20, 10, &pixels).unwrap();
        let r = centre_crop(20, 10, 6, 6);
        let mut cut = [0u8; 10 * 10 * 3];
        let row = r.width * 3;
        for y in 0..r.height {
            let src = ((r.y + y) * 20 + r.x) * 3;
            cut[y * row..(y + 1) * row].copy_from_slice(&pixels[src..src + row]);
        }
        let cut = &cut[..r.height * row];
        let mut a = [0f32; 3 * 36];
        let mut b = [0f32; 3 * 36];
        crop_resize_normalize(img, r, 6, 6, [0.5; 3], [0.25; 3], &mut a).unwrap();
        let cut_img = Image::new(r.width, r.height, cut).unwrap();
        resize_normalize(cut_img, 6, 6, [0.5; 3], [0.25; 3], &mut b).unwrap();
        assert_eq!(a, b);
        let outside = Region {
            x: 15,
            y: 0,
            width: 10,
            height: 10,
        };
        assert_eq!(
            crop_resize_normalize(img, outside, 6, 6, [0.5; 3], [0.25; 3], &mut a),
            Err(PreprocessError::BadRegion)
        );
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert_eq!(
            Image::new(0, 3, &[]).unwrap_err(),
            PreprocessError::EmptyImage
        );
        assert_eq!(
            Image::new(2, 2, &[0; 11]).unwrap_err(),
            PreprocessError::WrongPixelCount {
                expected: 12,
                actual: 11
            }
        );
        let img = Image::new(1, 1, &[1, 2, 3]).unwrap();
        let mut out = [0f32; 5];
        assert_eq!(
            resize_normalize(img, 2, 2, [0.0; 3], [1.0; 3], &mut out).unwrap_err(),
            PreprocessError::WrongOutputLen {
                expected: 12,
                actual: 5
            }
        );
    }
}
