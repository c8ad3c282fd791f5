//! The C ABI (`derm_runtime::ffi`, declared in `runtime/include/derm_runtime.h`) answers every
//! argument a C caller can legally pass with the documented code, never a panic or an abort.
//!
//! Each run makes one call the way a C program could get it wrong without undefined behaviour:
//! every non-null pointer points at a live buffer at least as long as the length passed with it,
//! but pointers may be NULL, lengths may disagree with the model, the arena may be short or
//! start 1..63 bytes past an aligned address, width and height may be zero, small, huge or
//! inconsistent with the pixel count, and class indices may be anything. (The API has no
//! stride or pixel format argument: rows are packed RGB8.)
//!
//! Properties:
//! - the return code is `DERM_OK` exactly when no documented error applies, and otherwise one of
//!   the errors that apply (`DERM_ERR_NULL` for a NULL required pointer, `DERM_ERR_ARENA` for a
//!   short or misaligned arena, `DERM_ERR_EMPTY_IMAGE` for a zero side, `DERM_ERR_LENGTH` for a
//!   length that does not match);
//! - on an error nothing is written to the outputs;
//! - on success `derm_classify`'s probabilities are finite, in [0, 1], sum to 1 within 1e-4, the
//!   class is their argmax, and both equal what the Rust `classify` gives; `derm_run`'s logits
//!   equal the Rust `run`'s bit for bit (and are finite for inputs in the normalized range);
//! - `derm_class_name` returns the class's name for an index in range and NULL otherwise; the
//!   size functions agree with the Rust constants.
//!
//! Like the `classify` target, this runs on the runtime built with the tiny synthetic model
//! (`scripts/fuzz.sh`): argument checking does not depend on the model, whose shapes are still
//! real ones, and each inference costs microseconds.
#![no_main]

use std::ffi::CStr;
use std::sync::Mutex;

use derm_runtime::ffi::*;
use derm_runtime::{
    Arena, CLASS_NAMES, INPUT_H, INPUT_LEN, INPUT_W, Image, NUM_CLASSES, classify, run,
};
use libfuzzer_sys::fuzz_target;

mod common;
use common::{Bytes, boxed_arena, repeat};

/// Largest pixel buffer a run builds (by repeating its bytes).
const MAX_RGB: usize = 64 * 1024;

/// What an output holds before the call: a NaN no kernel produces, to see whether it was written.
const UNTOUCHED: f32 = f32::from_bits(0x7fc0_d3a1);

/// Caller memory for the C arena (`derm_arena_size() + 64` bytes from a 64-aligned address, so
/// a full-size arena fits at every offset 0..64) and a Rust arena for the reference results.
struct Memory {
    c_arena: *mut u8,
    rust: Box<Arena>,
}

// SAFETY: the raw buffer is owned by this struct alone and only used under the mutex.
unsafe impl Send for Memory {}

static MEMORY: Mutex<Option<Memory>> = Mutex::new(None);

fn c_arena_layout() -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(size_of::<Arena>() + 64, 64).expect("valid layout")
}

fn memory() -> std::sync::MutexGuard<'static, Option<Memory>> {
    let mut guard = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    guard.get_or_insert_with(|| {
        // SAFETY: the layout has non-zero size. The C arena lives for the whole process.
        let c_arena = unsafe { std::alloc::alloc_zeroed(c_arena_layout()) };
        assert!(!c_arena.is_null(), "out of memory");
        Memory {
            c_arena,
            rust: boxed_arena(),
        }
    });
    guard
}

/// The arena argument: NULL, or an address 0..63 bytes past the aligned buffer with a byte
/// count no larger than what is really there. Returns the pointer, the byte count and the code
/// the arena alone must produce (`None` when it is acceptable).
fn arena_arg(input: &mut Bytes<'_>, base: *mut u8) -> (*mut u8, usize, Option<i32>) {
    let mode = input.u8();
    if mode & 0x80 != 0 {
        return (std::ptr::null_mut(), input.size(), Some(DERM_ERR_NULL));
    }
    let need = size_of::<Arena>();
    let offset = if mode & 0x40 != 0 {
        usize::from(input.u8() % 64)
    } else {
        0
    };
    let available = need + 64 - offset;
    let bytes = match mode & 3 {
        0 => need,
        1 => need - 1 - usize::from(input.u8()).min(need - 1),
        2 => input.size() % (available + 1),
        _ => available,
    };
    // SAFETY: offset < 64 stays inside the `need + 64`-byte allocation.
    let ptr = unsafe { base.add(offset) };
    let bad = bytes < need || offset != 0;
    (ptr, bytes, bad.then_some(DERM_ERR_ARENA))
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    match input.u8() % 3 {
        0 => c_classify(&mut input),
        1 => c_run(&mut input),
        _ => names_and_sizes(&mut input),
    }
});

fn assert_code(rc: i32, errors: &[i32], ctx: &str) {
    if errors.is_empty() {
        assert_eq!(rc, DERM_OK, "{ctx}: no error applies");
    } else {
        assert!(
            errors.contains(&rc),
            "{ctx}: returned {rc}, applicable {errors:?}"
        );
    }
}

fn c_classify(input: &mut Bytes<'_>) {
    let flags = input.u8();
    let (w, h) = (input.size(), input.size());
    let mut guard = memory();
    let mem = guard.as_mut().expect("initialized");
    let (arena, arena_bytes, arena_err) = arena_arg(input, mem.c_arena);
    let declared = w.saturating_mul(h).saturating_mul(3);
    let rgb_len = match flags & 3 {
        0 if declared <= MAX_RGB => declared,
        1 => usize::from(input.u8()),
        2 => input.size() % (MAX_RGB + 1),
        _ => declared.min(MAX_RGB) ^ usize::from(input.u8() & 1),
    };
    let seed = input.rest();
    let rgb = repeat(seed, rgb_len);
    let rgb_ptr = if flags & 4 != 0 {
        std::ptr::null()
    } else {
        rgb.as_ptr()
    };
    let mut class = usize::MAX;
    let class_ptr: *mut usize = if flags & 8 != 0 {
        std::ptr::null_mut()
    } else {
        &mut class
    };
    let mut probs = [UNTOUCHED; NUM_CLASSES];
    let probs_ptr = if flags & 16 != 0 {
        std::ptr::null_mut()
    } else {
        probs.as_mut_ptr()
    };

    let mut errors = Vec::new();
    if rgb_ptr.is_null() || class_ptr.is_null() {
        errors.push(DERM_ERR_NULL);
    }
    errors.extend(arena_err);
    if w == 0 || h == 0 {
        errors.push(DERM_ERR_EMPTY_IMAGE);
    }
    if rgb_len != declared {
        errors.push(DERM_ERR_LENGTH);
    }
    // SAFETY: every non-null pointer is valid for the length passed with it (rgb: rgb_len bytes;
    // arena: arena_bytes bytes; class: one usize; probabilities: NUM_CLASSES floats), and
    // nothing else uses them during the call.
    let rc = unsafe {
        derm_classify(
            rgb_ptr,
            rgb_len,
            w,
            h,
            arena,
            arena_bytes,
            class_ptr,
            probs_ptr,
        )
    };
    let ctx = format!(
        "derm_classify(rgb {}, len {rgb_len}, {w}x{h}, arena +{} {arena_bytes} bytes, class {}, probs {})",
        if rgb_ptr.is_null() { "NULL" } else { "ok" },
        (arena as usize) % 64,
        if class_ptr.is_null() { "NULL" } else { "ok" },
        if probs_ptr.is_null() { "NULL" } else { "ok" },
    );
    assert_code(rc, &errors, &ctx);
    let untouched = probs.map(f32::to_bits) == [UNTOUCHED.to_bits(); NUM_CLASSES];
    if rc != DERM_OK {
        assert_eq!(class, usize::MAX, "{ctx}: class written on error {rc}");
        assert!(untouched, "{ctx}: probabilities written on error {rc}");
        return;
    }
    let want = classify(
        Image::new(w, h, &rgb).expect("a valid image"),
        &mut mem.rust,
    )
    .expect("the Rust API classifies what the C ABI did");
    assert_eq!(class, want.class, "{ctx}");
    if probs_ptr.is_null() {
        assert!(
            untouched,
            "{ctx}: NULL probabilities, yet the buffer changed"
        );
        return;
    }
    assert_eq!(
        probs.map(f32::to_bits),
        want.probabilities.map(f32::to_bits),
        "{ctx}"
    );
    let sum: f32 = probs.iter().sum();
    assert!((sum - 1.0).abs() <= 1e-4, "{ctx}: sum {sum}");
    for &p in &probs {
        assert!(
            p.is_finite() && (0.0..=1.0).contains(&p),
            "{ctx}: {probs:?}"
        );
        assert!(
            p <= probs[class],
            "{ctx}: class {class} is not the argmax of {probs:?}"
        );
    }
}

fn c_run(input: &mut Bytes<'_>) {
    let flags = input.u8();
    let input_len = match flags & 3 {
        0 | 1 => INPUT_LEN,
        2 => INPUT_LEN ^ usize::from(input.u8()),
        _ => input.size() % (2 * INPUT_LEN),
    };
    let logits_len = match (flags >> 2) & 3 {
        0 | 1 => NUM_CLASSES,
        _ => usize::from(input.u8() % 64),
    };
    let mut guard = memory();
    let mem = guard.as_mut().expect("initialized");
    let (arena, arena_bytes, arena_err) = arena_arg(input, mem.c_arena);
    // Raw bit patterns (NaN, infinities, subnormals) or values in the normalized range.
    let raw = flags & 16 != 0;
    let seed = input.rest();
    let x: Vec<f32> = if seed.is_empty() {
        vec![0.0; input_len]
    } else if raw {
        let words: Vec<u32> = seed
            .chunks(4)
            .map(|c| c.iter().rev().fold(0u32, |v, &b| v << 8 | u32::from(b)))
            .collect();
        words
            .iter()
            .cycle()
            .take(input_len)
            .map(|&b| f32::from_bits(b))
            .collect()
    } else {
        seed.iter()
            .cycle()
            .take(input_len)
            .map(|&b| f32::from(b) / 40.0 - 3.2)
            .collect()
    };
    let x_ptr = if flags & 32 != 0 {
        std::ptr::null()
    } else {
        x.as_ptr()
    };
    let mut logits = vec![UNTOUCHED; logits_len];
    let logits_ptr = if flags & 64 != 0 {
        std::ptr::null_mut()
    } else {
        logits.as_mut_ptr()
    };

    let mut errors = Vec::new();
    if x_ptr.is_null() || logits_ptr.is_null() {
        errors.push(DERM_ERR_NULL);
    }
    errors.extend(arena_err);
    if input_len != INPUT_LEN || logits_len != NUM_CLASSES {
        errors.push(DERM_ERR_LENGTH);
    }
    // SAFETY: every non-null pointer is valid for the length passed with it (input: input_len
    // floats; arena: arena_bytes bytes; logits: logits_len floats).
    let rc = unsafe { derm_run(x_ptr, input_len, arena, arena_bytes, logits_ptr, logits_len) };
    let ctx = format!(
        "derm_run(input {}, len {input_len}, arena +{} {arena_bytes} bytes, logits {}, len {logits_len})",
        if x_ptr.is_null() { "NULL" } else { "ok" },
        (arena as usize) % 64,
        if logits_ptr.is_null() { "NULL" } else { "ok" },
    );
    assert_code(rc, &errors, &ctx);
    if rc != DERM_OK {
        assert!(
            logits.iter().all(|v| v.to_bits() == UNTOUCHED.to_bits()),
            "{ctx}: logits written on error {rc}"
        );
        return;
    }
    let x: &[f32; INPUT_LEN] = x.as_slice().try_into().expect("INPUT_LEN floats");
    let want = run(x, &mut mem.rust);
    assert_eq!(
        logits.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.map(f32::to_bits),
        "{ctx}"
    );
    if !raw {
        assert!(logits.iter().all(|v| v.is_finite()), "{ctx}: {logits:?}");
    }
}

fn names_and_sizes(input: &mut Bytes<'_>) {
    assert_eq!(derm_arena_size(), size_of::<Arena>());
    let align = derm_arena_align();
    assert!(align.is_power_of_two() && align >= 64 && align == align_of::<Arena>());
    assert_eq!(derm_num_classes(), NUM_CLASSES);
    assert_eq!(CLASS_NAMES.len(), NUM_CLASSES);
    assert_eq!(derm_input_len(), INPUT_LEN);
    assert_eq!(INPUT_LEN, 3 * INPUT_H * INPUT_W);
    let index = input.size();
    let name = derm_class_name(index);
    match CLASS_NAMES.get(index) {
        Some(want) => {
            assert!(!name.is_null(), "derm_class_name({index}) is NULL");
            // SAFETY: a non-null result is a static NUL-terminated string.
            let got = unsafe { CStr::from_ptr(name) };
            assert_eq!(got.to_str(), Ok(*want), "derm_class_name({index})");
        }
        None => assert!(
            name.is_null(),
            "derm_class_name({index}) out of range is not NULL"
        ),
    }
}
