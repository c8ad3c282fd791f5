//! Image preprocessing: bilinear resize of RGB8 pixels to the model's input
//! size, then per-channel normalization, written straight into a caller-owned
//! planar (CHW) `f32` buffer.

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

/// Resizes `image` to `out_h x out_w` with bilinear interpolation (half-pixel
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
    let expected = 3 * out_h * out_w;
    if out.len() != expected {
        return Err(PreprocessError::WrongOutputLen {
            expected,
            actual: out.len(),
        });
    }
    let image = Image::new(image.width, image.height, image.pixels)?;
    let scale = [
        1.0 / (255.0 * std[0]),
        1.0 / (255.0 * std[1]),
        1.0 / (255.0 * std[2]),
    ];
    let bias = [-mean[0] / std[0], -mean[1] / std[1], -mean[2] / std[2]];
    let sy = image.height as f32 / out_h as f32;
    let sx = image.width as f32 / out_w as f32;
    let plane = out_h * out_w;
    for oy in 0..out_h {
        let (y0, y1, fy) = source_coords(oy, sy, image.height);
        let row0 = &image.pixels[y0 * image.width * 3..(y0 + 1) * image.width * 3];
        let row1 = &image.pixels[y1 * image.width * 3..(y1 + 1) * image.width * 3];
        for ox in 0..out_w {
            let (x0, x1, fx) = source_coords(ox, sx, image.width);
            for c in 0..3 {
                let p00 = f32::from(row0[x0 * 3 + c]);
                let p01 = f32::from(row0[x1 * 3 + c]);
                let p10 = f32::from(row1[x0 * 3 + c]);
                let p11 = f32::from(row1[x1 * 3 + c]);
                let top = p00 + (p01 - p00) * fx;
                let bottom = p10 + (p11 - p10) * fx;
                let v = top + (bottom - top) * fy;
                out[c * plane + oy * out_w + ox] = v * scale[c] + bias[c];
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
