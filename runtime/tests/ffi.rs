//! The C ABI agrees with the Rust API and rejects bad arguments with codes.

mod common;

use std::ffi::CStr;

use derm_runtime::ffi::*;
use derm_runtime::{Arena, CLASS_NAMES, INPUT_LEN, Image, NUM_CLASSES, STACK_BYTES, classify, run};

#[test]
fn sizes_and_names() {
    assert_eq!(derm_arena_size(), size_of::<Arena>());
    assert_eq!(derm_arena_align(), 64);
    assert_eq!(derm_num_classes(), NUM_CLASSES);
    assert_eq!(derm_input_len(), INPUT_LEN);
    assert_eq!(derm_stack_size(), STACK_BYTES);
    for (i, name) in CLASS_NAMES.iter().enumerate() {
        // SAFETY: derm_class_name returns a static NUL-terminated string.
        let c = unsafe { CStr::from_ptr(derm_class_name(i)) };
        assert_eq!(c.to_str().unwrap(), *name);
    }
    assert!(derm_class_name(NUM_CLASSES).is_null());
}

#[test]
fn classify_and_run_match_the_rust_api() {
    let mut arena = common::boxed_arena();
    let mut c_arena = common::boxed_arena();
    let arena_ptr = (&mut *c_arena as *mut Arena).cast::<u8>();
    let (w, h) = (97, 61);
    let px: Vec<u8> = (0..w * h * 3).map(|i| (i * 13 % 256) as u8).collect();
    let want = classify(Image::new(w, h, &px).unwrap(), &mut arena).unwrap();
    let mut class = usize::MAX;
    let mut probs = [0f32; NUM_CLASSES];
    // SAFETY: every pointer is valid for the lengths passed.
    let rc = unsafe {
        derm_classify(
            px.as_ptr(),
            px.len(),
            w,
            h,
            arena_ptr,
            derm_arena_size(),
            &mut class,
            probs.as_mut_ptr(),
        )
    };
    assert_eq!(rc, DERM_OK);
    assert_eq!(class, want.class);
    assert_eq!(probs, want.probabilities);

    let input = vec![0.3f32; INPUT_LEN];
    let want = run(input.as_slice().try_into().unwrap(), &mut arena);
    let mut logits = [0f32; NUM_CLASSES];
    // SAFETY: as above.
    let rc = unsafe {
        derm_run(
            input.as_ptr(),
            INPUT_LEN,
            arena_ptr,
            derm_arena_size(),
            logits.as_mut_ptr(),
            NUM_CLASSES,
        )
    };
    assert_eq!(rc, DERM_OK);
    assert_eq!(logits, want);
}

#[test]
fn bad_arguments_return_codes() {
    let mut c_arena = common::boxed_arena();
    let arena_ptr = (&mut *c_arena as *mut Arena).cast::<u8>();
    let px = [0u8; 12];
    let mut class = 0usize;
    let size = derm_arena_size();
    // SAFETY: pointers are valid or null, as each case states.
    unsafe {
        let call = |rgb: *const u8, len, w, h, arena: *mut u8, bytes, out: *mut usize| {
            derm_classify(rgb, len, w, h, arena, bytes, out, std::ptr::null_mut())
        };
        assert_eq!(
            call(std::ptr::null(), 12, 2, 2, arena_ptr, size, &mut class),
            DERM_ERR_NULL
        );
        assert_eq!(
            call(
                px.as_ptr(),
                12,
                2,
                2,
                std::ptr::null_mut(),
                size,
                &mut class
            ),
            DERM_ERR_NULL
        );
        assert_eq!(
            call(px.as_ptr(), 12, 2, 2, arena_ptr, size - 1, &mut class),
            DERM_ERR_ARENA
        );
        assert_eq!(
            call(
                px.as_ptr(),
                12,
                2,
                2,
                arena_ptr.add(4),
                size - 64,
                &mut class
            ),
            DERM_ERR_ARENA
        );
        assert_eq!(
            call(px.as_ptr(), 0, 0, 2, arena_ptr, size, &mut class),
            DERM_ERR_EMPTY_IMAGE
        );
        assert_eq!(
            call(px.as_ptr(), 11, 2, 2, arena_ptr, size, &mut class),
            DERM_ERR_LENGTH
        );
        // Sizes whose products overflow (the centre crop used to multiply them unchecked).
        assert_eq!(
            call(
                px.as_ptr(),
                12,
                usize::MAX - 36,
                usize::MAX - 2,
                arena_ptr,
                size,
                &mut class
            ),
            DERM_ERR_LENGTH
        );
        let mut logits = [0f32; NUM_CLASSES];
        let x = [0f32; 4];
        assert_eq!(
            derm_run(
                x.as_ptr(),
                4,
                arena_ptr,
                size,
                logits.as_mut_ptr(),
                NUM_CLASSES
            ),
            DERM_ERR_LENGTH
        );
    }
}
