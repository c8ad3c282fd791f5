//! Images of every shape in the ESFair range (1x1 to 6000x4000) classify
//! without panicking; empty or inconsistent ones are errors.

mod common;

use derm_runtime::preprocess::{centre_crop, resize_normalize};
use derm_runtime::{
    Error, Image, MEAN, MODEL_PRECISION, NUM_CLASSES, PreprocessError, STD, classify,
};

#[test]
fn every_shape_classifies() {
    let mut arena = common::boxed_arena();
    // Extremes, the model size and its neighbours, odd and skewed shapes.
    // Each inference is a whole network, so the sample is small enough for qemu.
    let shapes = [
        (1, 1),
        (1, 6000),
        (6000, 1),
        (2, 3),
        (223, 225),
        (224, 224),
        (600, 450),
        (1023, 767),
        (4000, 6000),
        (6000, 4000),
    ];
    for (w, h) in shapes {
        let px = common::image_bytes(w, h);
        let p = classify(Image::new(w, h, &px).unwrap(), &mut arena)
            .unwrap_or_else(|e| panic!("{w}x{h}: {e}"));
        assert!(p.class < NUM_CLASSES, "{w}x{h}");
        let sum: f32 = p.probabilities.iter().sum();
        assert!(
            (sum - 1.0).abs() < 1e-4,
            "{w}x{h}: probabilities sum to {sum}"
        );
        assert!(
            p.logits.iter().all(|v| v.is_finite()),
            "{w}x{h}: {:?}",
            p.logits
        );
    }
}

#[test]
fn constant_images_of_many_sizes_give_one_answer() {
    // Resizing a constant image is exact up to float rounding, so the size cannot change the
    // network's input, nor a float model's result. An int8 model quantizes that input: a
    // last-bit difference can fall on the other side of a rounding boundary, and in a
    // constant image it moves every pixel at once, so for int8 the f32 input is what is
    // compared.
    let mut arena = common::boxed_arena();
    let mut first = None;
    let mut first_input = None;
    for (w, h) in [(1, 1), (3, 700), (224, 224), (1500, 2)] {
        let px = vec![90u8; w * h * 3];
        let image = Image::new(w, h, &px).unwrap();
        let input = common::preprocessed(image);
        let f_in = first_input.get_or_insert_with(|| input.clone());
        for (a, b) in input.iter().zip(f_in.iter()) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{w}x{h}: input {a} vs {b}"
            );
        }
        let p = classify(image, &mut arena).unwrap();
        if MODEL_PRECISION == "int8" {
            continue;
        }
        let f = *first.get_or_insert(p.logits);
        for (a, b) in p.logits.iter().zip(&f) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{w}x{h}: {:?} vs {f:?}",
                p.logits
            );
        }
    }
}

#[test]
fn empty_and_inconsistent_images_are_errors() {
    let mut arena = common::boxed_arena();
    for (w, h) in [(0, 0), (0, 5), (5, 0), (0, 6000)] {
        let img = Image {
            width: w,
            height: h,
            pixels: &[],
        };
        assert_eq!(
            classify(img, &mut arena),
            Err(Error::Image(PreprocessError::EmptyImage))
        );
        assert!(Image::new(w, h, &[]).is_err());
    }
    let px = [0u8; 11];
    let img = Image {
        width: 2,
        height: 2,
        pixels: &px,
    };
    assert!(matches!(
        classify(img, &mut arena),
        Err(Error::Image(PreprocessError::WrongPixelCount {
            expected: 12,
            actual: 11
        }))
    ));
    // Sizes whose product overflows are rejected, not wrapped.
    let img = Image {
        width: usize::MAX,
        height: 3,
        pixels: &px,
    };
    assert!(classify(img, &mut arena).is_err());
}

#[test]
fn absurd_sizes_are_errors_not_overflows() {
    // Sizes as a C caller may claim them: the centre crop's products of these overflowed
    // (a panic where overflow checks are on, as in this test profile).
    let mut arena = common::boxed_arena();
    let img = Image {
        width: usize::MAX - 36,
        height: usize::MAX - 2,
        pixels: &[],
    };
    assert_eq!(
        classify(img, &mut arena),
        Err(Error::Image(PreprocessError::WrongPixelCount {
            expected: usize::MAX,
            actual: 0
        }))
    );
    let r = centre_crop(usize::MAX, usize::MAX / 2, 4, 4);
    assert_eq!((r.width, r.height), (usize::MAX / 2, usize::MAX / 2));

    // An output size whose element count wraps to the buffer's length (here 0) was accepted,
    // and the resize then indexed past the buffer even without overflow checks.
    let px = [7u8; 3 * 4 * 4];
    let img = Image::new(4, 4, &px).unwrap();
    assert_eq!(
        resize_normalize(img, usize::MAX / 2 + 1, 2, MEAN, STD, &mut []),
        Err(PreprocessError::WrongOutputLen {
            expected: usize::MAX,
            actual: 0
        })
    );
    // A zero output side has nothing to write (its reduction factor is infinite).
    assert_eq!(resize_normalize(img, 0, 5, MEAN, STD, &mut []), Ok(()));
    assert_eq!(resize_normalize(img, 5, 0, MEAN, STD, &mut []), Ok(()));
}

/// FNV-1a over the bits of `values`.
fn bits_hash(values: &[f32]) -> u64 {
    values.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
        (h ^ u64::from(v.to_bits())).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn preprocessing_gives_the_same_bits_on_every_target() {
    // An int8 model quantizes these values, so one rounding difference between the SSE
    // horizontal pass (x86_64) and the NEON one (aarch64) could move a quantized input and
    // with it the logits that must match to the bit everywhere. The pinned hash was taken
    // on x86_64; this test runs on both targets (aarch64 under qemu).
    let (mean, std) = ([0.764, 0.538, 0.563], [0.138, 0.159, 0.176]);
    let mut state = 7u32;
    let mut all = Vec::new();
    // A reduction by 3.4, one by 2, an enlargement, and a strong reduction whose strips end
    // early on the span table.
    for (w, h, out) in [
        (1024, 768, 224),
        (600, 450, 224),
        (200, 150, 224),
        (3000, 300, 10),
    ] {
        let px: Vec<u8> = (0..w * h * 3)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        let mut values = vec![0f32; 3 * out * out];
        let region = centre_crop(w, h, out, out);
        let image = derm_runtime::Image::new(w, h, &px).expect("a valid image");
        derm_runtime::preprocess::crop_resize_normalize(
            image,
            region,
            out,
            out,
            mean,
            std,
            &mut values,
        )
        .expect("preprocessing");
        all.extend(values);
    }
    assert_eq!(format!("{:016x}", bits_hash(&all)), "5d169eaf6e492631");
}
