//! `derm_runtime::classify` and the preprocessing it uses never panic, whatever the image
//! claims to be, and what they return is right.
//!
//! The first byte picks what is driven; the rest decodes into sizes (a tag byte makes a size
//! small, 16-bit, any 64-bit value or within 255 of `usize::MAX`, so zero, 1xN, very wide and
//! absurd claims all come up) and pixel bytes:
//!
//! - `classify` on an `Image` built with `Image::new`, its height fitted to the data so most
//!   inputs are valid images;
//! - `classify` on an `Image` built field by field, as the C ABI does: any width and height
//!   against any buffer (huge dimension claims with short buffers);
//! - `crop_resize_normalize` with any crop region, output size and output buffer length;
//! - `centre_crop` with any four sizes.
//!
//! Properties: nothing panics (overflow checks are on: `scripts/fuzz.sh` builds with debug
//! assertions); on `Ok`, probabilities are finite, in [0, 1], sum to 1 within 1e-4 and `class`
//! is their argmax, and the result does not depend on what the arena held before (the same image
//! through a NaN-filled arena gives the same bits); on `Err`, it is the documented variant for
//! the input (empty image, wrong pixel count with the saturated expected length, a crop beyond
//! about 500x the output). Resized values are convex combinations of the region's pixels, so
//! they stay within the normalized channel's min and max there; a centre crop lies inside the
//! image, keeps one full side, is centred and has the output's aspect ratio to within one pixel.
//!
//! The runtime is built for this target with a tiny synthetic model (`DERM_MODEL`, written by
//! `scripts/fuzz.sh` from `SyntheticSpec::tiny`: 32x32 input, 3 classes, the same op kinds as
//! MobileNetV3-Small). That is enough: the input handling (sizes, crop, resize, normalization)
//! depends only on the image and the input size, the kernels are the same functions for every
//! model, and the tiny model's shapes are still real shapes planned by the same code generator,
//! while one inference costs microseconds instead of the 128 px network's milliseconds, so a
//! million runs take minutes.
#![no_main]

use std::sync::Mutex;

use derm_runtime::preprocess::{centre_crop, crop_resize_normalize};
use derm_runtime::{
    Arena, CLASS_NAMES, Error, INPUT_H, INPUT_W, Image, MEAN, NUM_CLASSES, PreprocessError, Region,
    STD, classify,
};
use libfuzzer_sys::fuzz_target;

mod common;
use common::{Bytes, boxed_arena, repeat};

/// Largest pixel buffer a run builds by repeating its bytes: enough for very wide (87,381 x 1)
/// or tall images and for 500x reductions, small enough to keep runs fast.
const MAX_FILL: usize = 256 * 1024;

/// Largest output buffer `crop_resize_normalize` gets (3 x 64 x 64).
const MAX_OUT: usize = 3 * 64 * 64;

/// The arena reused across runs (so it holds the previous run's values) and a second one that
/// is filled with NaN before each use.
struct Arenas {
    dirty: Box<Arena>,
    nan: Box<Arena>,
}

static ARENAS: Mutex<Option<Arenas>> = Mutex::new(None);

fn fill_nan(arena: &mut Arena) {
    // SAFETY: Arena is `repr(C)` around an array of f32; viewing it as f32s is exact.
    let floats = unsafe {
        std::slice::from_raw_parts_mut(
            (arena as *mut Arena).cast::<f32>(),
            size_of::<Arena>() / size_of::<f32>(),
        )
    };
    floats.fill(f32::NAN);
}

/// `w * h * 3` when it is at most `cap`.
fn image_len(w: usize, h: usize, cap: usize) -> Option<usize> {
    w.checked_mul(h)?.checked_mul(3).filter(|&n| n <= cap)
}

/// The error `Image::new` must give for these sizes, if any.
fn image_error(w: usize, h: usize, len: usize) -> Option<PreprocessError> {
    if w == 0 || h == 0 {
        return Some(PreprocessError::EmptyImage);
    }
    let expected = w.saturating_mul(h).saturating_mul(3);
    (len != expected).then_some(PreprocessError::WrongPixelCount {
        expected,
        actual: len,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    match input.u8() % 4 {
        0 => checked_image(&mut input),
        1 => claimed_image(&mut input),
        2 => crop_resize(&mut input),
        _ => crop_geometry(&mut input),
    }
});

/// A valid image most of the time: the width comes from the input, the height from how many
/// whole rows the remaining bytes hold (or from the input, with the bytes repeated to fill).
fn checked_image(input: &mut Bytes<'_>) {
    let mode = input.u8();
    let w = input.size();
    let pixels = if mode & 1 == 0 {
        let rest = input.rest();
        let h = match w.checked_mul(3) {
            Some(row) if row > 0 => rest.len() / row,
            _ => 0,
        };
        let px = rest[..image_len(w, h, usize::MAX).unwrap_or(0)].to_vec();
        (h, px)
    } else {
        let h = input.size();
        let Some(len) = image_len(w, h, MAX_FILL) else {
            return;
        };
        (h, repeat(input.rest(), len))
    };
    let (h, px) = pixels;
    match Image::new(w, h, &px) {
        Ok(image) => check_classify(image),
        Err(e) => assert_eq!(Some(e), image_error(w, h, px.len()), "{w}x{h}"),
    }
}

/// Any width and height claimed for whatever bytes there are, bypassing `Image::new`.
fn claimed_image(input: &mut Bytes<'_>) {
    let w = input.size();
    let h = input.size();
    let px = input.rest();
    check_classify(Image {
        width: w,
        height: h,
        pixels: px,
    });
}

fn check_classify(image: Image<'_>) {
    let (w, h, len) = (image.width, image.height, image.pixels.len());
    let mut guard = ARENAS.lock().unwrap_or_else(|e| e.into_inner());
    let arenas = guard.get_or_insert_with(|| Arenas {
        dirty: boxed_arena(),
        nan: boxed_arena(),
    });
    let got = classify(image, &mut arenas.dirty);
    let p = match got {
        Ok(p) => p,
        Err(Error::Image(e)) => {
            match image_error(w, h, len) {
                Some(want) => assert_eq!(e, want, "{w}x{h}, {len} bytes"),
                // A valid image fails only when its centre crop is beyond the resize's limit:
                // more than about 500x the input size along both sides (the crop is square).
                None => {
                    assert_eq!(e, PreprocessError::TooLarge, "{w}x{h}");
                    assert!(w.min(h) >= 510 * INPUT_W.min(INPUT_H), "{w}x{h}: {e}");
                }
            }
            return;
        }
    };
    assert_eq!(
        image_error(w, h, len),
        None,
        "{w}x{h}, {len} bytes classified"
    );
    let sum: f32 = p.probabilities.iter().sum();
    assert!((sum - 1.0).abs() <= 1e-4, "{w}x{h}: sum {sum}");
    for (i, &q) in p.probabilities.iter().enumerate() {
        assert!(
            q.is_finite() && (0.0..=1.0).contains(&q),
            "{w}x{h}: p[{i}] = {q}"
        );
        assert!(
            q <= p.probabilities[p.class],
            "{w}x{h}: class {} is not argmax",
            p.class
        );
    }
    assert!(p.class < NUM_CLASSES);
    assert_eq!(p.name, CLASS_NAMES[p.class]);
    // Every arena value the model reads must be written first in this run.
    fill_nan(&mut arenas.nan);
    let again = classify(image, &mut arenas.nan).expect("the same image classifies again");
    let bits = |v: &[f32; NUM_CLASSES]| v.map(f32::to_bits);
    assert_eq!(
        bits(&again.logits),
        bits(&p.logits),
        "{w}x{h}: depends on old arena contents"
    );
}

/// `crop_resize_normalize` on any region of an image, to any output size and buffer length.
fn crop_resize(input: &mut Bytes<'_>) {
    let mode = input.u8();
    let (w, h) = (input.size(), input.size());
    let region = Region {
        x: input.size(),
        y: input.size(),
        width: input.size(),
        height: input.size(),
    };
    let (out_h, out_w) = (input.size(), input.size());
    // The exact length when it fits, else the wrapped product when that is small (so an
    // overflowing size that wraps to a plausible length is tried), else a short buffer.
    let exact = out_h.checked_mul(out_w).and_then(|n| n.checked_mul(3));
    let wrapped = out_h.wrapping_mul(out_w).wrapping_mul(3);
    let out_len = match exact {
        Some(n) if n <= MAX_OUT && mode & 2 == 0 => n,
        _ if wrapped <= MAX_OUT && mode & 4 == 0 => wrapped,
        _ => usize::from(input.u8()),
    };
    let (mean, std) = if mode & 8 == 0 {
        (MEAN, STD)
    } else {
        let mut f = || f32::from_bits(input.le(4) as u32);
        ([f(), f(), f()], [f(), f(), f()])
    };
    let Some(len) = image_len(w, h, MAX_FILL) else {
        return;
    };
    let px = repeat(input.rest(), len);
    let image = Image {
        width: w,
        height: h,
        pixels: &px,
    };
    let mut out = vec![f32::NAN; out_len];
    let got = crop_resize_normalize(image, region, out_h, out_w, mean, std, &mut out);

    let want_err = if exact != Some(out_len) {
        Some(PreprocessError::WrongOutputLen {
            expected: exact.unwrap_or(usize::MAX),
            actual: out_len,
        })
    } else if let Some(e) = image_error(w, h, len) {
        Some(e)
    } else if region.width == 0
        || region.height == 0
        || region.x.checked_add(region.width).is_none_or(|e| e > w)
        || region.y.checked_add(region.height).is_none_or(|e| e > h)
    {
        Some(PreprocessError::BadRegion)
    } else {
        None
    };
    let ctx = format!("{w}x{h} {region:?} -> {out_w}x{out_h}, out {out_len}");
    match (got, want_err) {
        (Err(PreprocessError::WrongOutputLen { expected, actual }), Some(want)) => {
            // The expected length of an output size that overflows is not a length anyone can
            // pass; only say that it differs.
            assert!(
                matches!(want, PreprocessError::WrongOutputLen { .. }),
                "{ctx}: got WrongOutputLen, want {want:?}"
            );
            assert_eq!(actual, out_len, "{ctx}");
            if let Some(n) = exact {
                assert_eq!(expected, n, "{ctx}");
            } else {
                assert_ne!(expected, out_len, "{ctx}");
            }
        }
        (Err(e), Some(want)) => assert_eq!(e, want, "{ctx}"),
        (Ok(()), Some(want)) => panic!("{ctx}: Ok, want {want:?}"),
        (Err(PreprocessError::TooLarge), None) => {
            // Only reductions beyond about 500x are refused.
            let beyond = |src: usize, dst: usize| src as u128 >= 510 * dst as u128;
            assert!(
                beyond(region.height, out_h) || beyond(region.width, out_w),
                "{ctx}: TooLarge"
            );
        }
        (Err(e), None) => panic!("{ctx}: unexpected {e:?}"),
        (Ok(()), None) => {
            let within = |src: usize, dst: usize| (src as u128) < 512 * dst as u128;
            assert!(
                out_h == 0
                    || out_w == 0
                    || (within(region.height, out_h) && within(region.width, out_w)),
                "{ctx}: a reduction beyond 512x must be TooLarge"
            );
            if mode & 8 == 0 {
                check_convex(&px, w, region, &out, mean, std, &ctx);
            }
        }
    }
}

/// Every output value lies between the normalized minimum and maximum of its channel over the
/// crop region (the filter's weights are non-negative and sum to 1).
fn check_convex(
    px: &[u8],
    w: usize,
    region: Region,
    out: &[f32],
    mean: [f32; 3],
    std: [f32; 3],
    ctx: &str,
) {
    let mut lo = [u8::MAX; 3];
    let mut hi = [u8::MIN; 3];
    for y in region.y..region.y + region.height {
        let row = &px[(y * w + region.x) * 3..(y * w + region.x + region.width) * 3];
        for p in row.chunks_exact(3) {
            for c in 0..3 {
                lo[c] = lo[c].min(p[c]);
                hi[c] = hi[c].max(p[c]);
            }
        }
    }
    let plane = out.len() / 3;
    for c in 0..3 {
        let norm = |v: u8| (f32::from(v) / 255.0 - mean[c]) / std[c];
        let (a, b) = (norm(lo[c]), norm(hi[c]));
        let slack = 1e-4 * (1.0 + a.abs().max(b.abs()));
        for (i, &v) in out[c * plane..(c + 1) * plane].iter().enumerate() {
            assert!(
                v.is_finite() && v >= a - slack && v <= b + slack,
                "{ctx}: channel {c} value {i} = {v} outside [{a}, {b}]"
            );
        }
    }
}

/// `centre_crop` with any sizes: inside the image, one full side, centred, the output's aspect.
fn crop_geometry(input: &mut Bytes<'_>) {
    let (w, h, out_w, out_h) = (input.size(), input.size(), input.size(), input.size());
    let r = centre_crop(w, h, out_w, out_h);
    if w == 0 || h == 0 {
        return;
    }
    let ctx = format!("centre_crop({w}, {h}, {out_w}, {out_h}) = {r:?}");
    assert!(r.width >= 1 && r.height >= 1, "{ctx}");
    assert!(r.x.checked_add(r.width).is_some_and(|e| e <= w), "{ctx}");
    assert!(r.y.checked_add(r.height).is_some_and(|e| e <= h), "{ctx}");
    assert_eq!((r.x, r.y), ((w - r.width) / 2, (h - r.height) / 2), "{ctx}");
    if out_w == 0 || out_h == 0 {
        assert_eq!((r.width, r.height), (w, h), "{ctx}");
        return;
    }
    assert!(r.width == w || r.height == h, "{ctx}");
    let skew = (r.width as u128 * out_h as u128).abs_diff(r.height as u128 * out_w as u128);
    assert!(
        skew < out_w.max(out_h) as u128,
        "{ctx}: aspect off by {skew}"
    );
}
