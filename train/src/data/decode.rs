//! Decoding one image file into the cache's square RGB8 tile.
//!
//! Any input the `image` crate reads (grayscale, CMYK JPEG, 16-bit, alpha)
//! becomes RGB8 after the EXIF orientation is applied; then the centred
//! square of the shorter side ([`Crop::Centre`]: "shorter side to 224 + centre
//! crop 224", done crop-first so the resize touches fewer pixels) or the whole
//! photo ([`Crop::None`]: squashed, the paper's "resize to 224x224") is resized
//! to `size x size`. Decoding runs under explicit [`image::Limits`], so
//! a huge or lying header is an error instead of an absurd allocation.

use std::io::Cursor;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use derm_codegen::ir::Crop;
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

/// Limits for one decode.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest accepted width or height in pixels.
    pub max_side: u32,
    /// Largest decoder allocation in bytes.
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    /// 16384 px a side and 512 MiB: a 6000x4000 RGB image (72 MB decoded)
    /// passes; with rayon's threads decoding at once memory stays bounded by
    /// threads x `max_alloc`.
    fn default() -> Self {
        DecodeLimits {
            max_side: 16_384,
            max_alloc: 512 << 20,
        }
    }
}

/// Decodes the file at `path` into `size * size * 3` bytes (HWC, RGB8).
/// Errors say what is wrong with the file (empty, unknown format, truncated,
/// too large); the caller names the file.
pub fn decode_file(path: &Path, size: u32, crop: Crop, limits: DecodeLimits) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).context("cannot read file")?;
    decode_bytes(&bytes, size, crop, limits)
}

/// [`decode_file`] on bytes already in memory.
pub fn decode_bytes(bytes: &[u8], size: u32, crop: Crop, limits: DecodeLimits) -> Result<Vec<u8>> {
    if size == 0 {
        bail!("output size must be > 0");
    }
    if bytes.is_empty() {
        bail!("empty file (0 bytes)");
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .context("cannot read file")?;
    match reader.format() {
        None => bail!("not an image: unrecognised content (expected JPEG or PNG)"),
        Some(ImageFormat::Jpeg) => check_jpeg_complete(bytes)?,
        Some(_) => {}
    }
    let mut l = Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l.max_alloc = Some(limits.max_alloc);
    reader.limits(l);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| anyhow!("cannot decode: {e}"))?;
    let orientation = decoder
        .orientation()
        .map_err(|e| anyhow!("cannot read EXIF: {e}"))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| anyhow!("cannot decode: {e}"))?;
    img.apply_orientation(orientation);
    Ok(square_resize_dyn(img, size, crop).into_raw())
}

/// Refuses a JPEG cut short. The decoder pads a truncated entropy stream
/// with grey instead of failing, so we look for the end-of-image marker
/// after the first scan: markers are walked by length up to the first SOS
/// (skipping APP segments, which may hold a complete EXIF thumbnail with its
/// own EOI), then `FF D9` must follow; entropy-coded data never contains it
/// (0xFF is stuffed as `FF 00`).
pub fn check_jpeg_complete(bytes: &[u8]) -> Result<()> {
    let truncated = || anyhow!("truncated JPEG (no end-of-image marker)");
    let mut i = 2; // after SOI
    loop {
        // Fill bytes (0xFF runs) may precede a marker.
        while bytes.get(i) == Some(&0xFF) && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(i), bytes.get(i + 1)) else {
            return Err(truncated());
        };
        if marker == 0xD9 {
            bail!("JPEG has no image data (end marker before any scan)");
        }
        let len = match (bytes.get(i + 2), bytes.get(i + 3)) {
            (Some(&a), Some(&b)) => usize::from(a) << 8 | usize::from(b),
            _ => return Err(truncated()),
        };
        if marker == 0xDA {
            let scan = bytes.get(i + 2 + len..).ok_or_else(truncated)?;
            return if scan.windows(2).any(|w| w == [0xFF, 0xD9]) {
                Ok(())
            } else {
                Err(truncated())
            };
        }
        i += 2 + len;
    }
}

/// Centre square crop (or none: the whole image, squashed) + resize on a
/// decoded image of any colour type, converted to RGB8 first. 16-bit samples are scaled (x/257); alpha is
/// dropped rather than composited because dermoscopy images carry no
/// meaningful transparency.
///
/// Works through `DynamicImage` methods, which are compiled (optimized)
/// inside the `image` crate rather than monomorphized here.
fn square_resize_dyn(img: DynamicImage, size: u32, crop: Crop) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let side = w.min(h);
    let img = if w != h && crop == Crop::Centre {
        img.crop_imm((w - side) / 2, (h - side) / 2, side, side)
    } else {
        img
    };
    let (w, h) = (img.width(), img.height());
    let img = if w == size && h == size {
        img
    } else if w.min(h) >= 2 * size {
        // Box averaging is exact enough at >= 2x reduction and far faster
        // than a Triangle filter whose support grows with the ratio.
        img.thumbnail_exact(size, size)
    } else {
        img.resize_exact(size, size, FilterType::Triangle)
    };
    match img {
        DynamicImage::ImageRgb8(i) => i,
        other => other.into_rgb8(),
    }
}

/// Centre square crop of the shorter side (or, with [`Crop::None`], the whole
/// image), resized to `size x size`.
pub fn square_resize(img: &RgbImage, size: u32, crop: Crop) -> RgbImage {
    square_resize_dyn(DynamicImage::ImageRgb8(img.clone()), size, crop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb};

    #[test]
    fn crop_is_centred() {
        // Left and right thirds red, the middle square green: the crop of a
        // 3:1 image must be all green.
        let img = ImageBuffer::from_fn(30, 10, |x, _| {
            if (10..20).contains(&x) {
                Rgb([0, 255, 0])
            } else {
                Rgb([255, 0, 0])
            }
        });
        let out = square_resize(&img, 10, Crop::Centre);
        assert!(out.pixels().all(|p| p.0 == [0, 255, 0]));
        let small = square_resize(&img, 4, Crop::Centre);
        assert!(small.pixels().all(|p| p.0 == [0, 255, 0]));
    }

    #[test]
    fn no_crop_keeps_the_whole_photo() {
        // Thirds red, green, blue: squashed to a square, all three stay, in order.
        let img = ImageBuffer::from_fn(30, 10, |x, _| match x / 10 {
            0 => Rgb([255, 0, 0]),
            1 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        });
        let out = square_resize(&img, 10, Crop::None);
        assert_eq!(out.dimensions(), (10, 10));
        for y in 0..10 {
            assert_eq!(out.get_pixel(0, y).0, [255, 0, 0]);
            assert_eq!(out.get_pixel(4, y).0, [0, 255, 0]);
            assert_eq!(out.get_pixel(5, y).0, [0, 255, 0]);
            assert_eq!(out.get_pixel(9, y).0, [0, 0, 255]);
        }
    }

    #[test]
    fn empty_and_garbage_are_errors() {
        let e = decode_bytes(&[], 8, Crop::Centre, DecodeLimits::default()).unwrap_err();
        assert!(e.to_string().contains("empty"));
        let e = decode_bytes(
            b"hello, not a jpeg",
            8,
            Crop::Centre,
            DecodeLimits::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not an image"), "{e}");
    }
}
