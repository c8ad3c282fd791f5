//! C ABI: the same two entry points as the Rust API, over raw pointers.
//! Declared in `include/derm_runtime.h`; every function returns an error
//! code instead of panicking on bad arguments.
//!
//! The arena is caller memory of [`derm_arena_size`] bytes aligned to
//! [`derm_arena_align`] (for example `aligned_alloc(derm_arena_align(),
//! derm_arena_size())`).

use core::ffi::{c_char, c_int};

use crate::model::{Arena, CLASS_NAMES_C, Error, classify, run};
use crate::preprocess::{Image, PreprocessError};
use crate::{INPUT_LEN, NUM_CLASSES, STACK_BYTES};

/// Success.
pub const DERM_OK: c_int = 0;
/// A required pointer is null.
pub const DERM_ERR_NULL: c_int = -1;
/// The arena is too small or misaligned.
pub const DERM_ERR_ARENA: c_int = -2;
/// Width or height is zero.
pub const DERM_ERR_EMPTY_IMAGE: c_int = -3;
/// A length argument does not match what the model needs.
pub const DERM_ERR_LENGTH: c_int = -4;

/// Bytes the arena needs.
#[unsafe(no_mangle)]
pub extern "C" fn derm_arena_size() -> usize {
    size_of::<Arena>()
}

/// Alignment the arena needs, in bytes.
#[unsafe(no_mangle)]
pub extern "C" fn derm_arena_align() -> usize {
    align_of::<Arena>()
}

/// Bytes of stack `derm_classify` and `derm_run` need at most ([`STACK_BYTES`]): a thread
/// that calls them needs at least this much beyond its own frames.
#[unsafe(no_mangle)]
pub extern "C" fn derm_stack_size() -> usize {
    STACK_BYTES
}

/// Number of classes (length of the probability output).
#[unsafe(no_mangle)]
pub extern "C" fn derm_num_classes() -> usize {
    NUM_CLASSES
}

/// Number of `float`s `derm_run` reads (3 x height x width, planar).
#[unsafe(no_mangle)]
pub extern "C" fn derm_input_len() -> usize {
    INPUT_LEN
}

/// Name of class `index` as a static NUL-terminated string, or NULL when out of range.
#[unsafe(no_mangle)]
pub extern "C" fn derm_class_name(index: usize) -> *const c_char {
    CLASS_NAMES_C
        .get(index)
        .map_or(core::ptr::null(), |s| s.as_ptr())
}

/// Checks and borrows the caller's arena.
///
/// # Safety
/// `arena` must be null or valid for writes of `arena_bytes` bytes, not
/// used elsewhere during the borrow.
unsafe fn arena_from<'a>(arena: *mut u8, arena_bytes: usize) -> Result<&'a mut Arena, c_int> {
    if arena.is_null() {
        return Err(DERM_ERR_NULL);
    }
    if arena_bytes < size_of::<Arena>() || !(arena as usize).is_multiple_of(align_of::<Arena>()) {
        return Err(DERM_ERR_ARENA);
    }
    // SAFETY: non-null, aligned and large enough (checked above); the caller
    // guarantees exclusive access; any bit pattern is a valid array of f32.
    Ok(unsafe { &mut *arena.cast::<Arena>() })
}

/// Classifies an RGB8 image (`width * height * 3` bytes, row-major).
/// Writes the class index to `*class_out` and `num_classes` probabilities to
/// `probabilities_out` (which may be NULL). Returns `DERM_OK` or an error code.
///
/// # Safety
/// `rgb` must be readable for `rgb_len` bytes, `arena` writable for
/// `arena_bytes` bytes, `class_out` writable, and `probabilities_out` null or
/// writable for `derm_num_classes()` floats; nothing else may use them during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn derm_classify(
    rgb: *const u8,
    rgb_len: usize,
    width: usize,
    height: usize,
    arena: *mut u8,
    arena_bytes: usize,
    class_out: *mut usize,
    probabilities_out: *mut f32,
) -> c_int {
    if rgb.is_null() || class_out.is_null() {
        return DERM_ERR_NULL;
    }
    // SAFETY: the caller guarantees the arena contract.
    let arena = match unsafe { arena_from(arena, arena_bytes) } {
        Ok(a) => a,
        Err(e) => return e,
    };
    // SAFETY: non-null; the caller guarantees `rgb_len` readable bytes.
    let pixels = unsafe { core::slice::from_raw_parts(rgb, rgb_len) };
    let image = Image {
        width,
        height,
        pixels,
    };
    match classify(image, arena) {
        Ok(p) => {
            // SAFETY: non-null and writable per the caller's contract.
            unsafe { class_out.write(p.class) };
            if !probabilities_out.is_null() {
                // SAFETY: the caller guarantees NUM_CLASSES writable floats.
                let out =
                    unsafe { core::slice::from_raw_parts_mut(probabilities_out, NUM_CLASSES) };
                out.copy_from_slice(&p.probabilities);
            }
            DERM_OK
        }
        Err(Error::Image(PreprocessError::EmptyImage)) => DERM_ERR_EMPTY_IMAGE,
        Err(Error::Image(_)) => DERM_ERR_LENGTH,
    }
}

/// Runs the network on a preprocessed input (`input_len` must equal
/// `derm_input_len()`) and writes `logits_len` (= `derm_num_classes()`) logits.
///
/// # Safety
/// `input` readable for `input_len` floats, `arena` writable for
/// `arena_bytes` bytes, `logits_out` writable for `logits_len` floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn derm_run(
    input: *const f32,
    input_len: usize,
    arena: *mut u8,
    arena_bytes: usize,
    logits_out: *mut f32,
    logits_len: usize,
) -> c_int {
    if input.is_null() || logits_out.is_null() {
        return DERM_ERR_NULL;
    }
    if input_len != INPUT_LEN || logits_len != NUM_CLASSES {
        return DERM_ERR_LENGTH;
    }
    // SAFETY: the caller guarantees the arena contract.
    let arena = match unsafe { arena_from(arena, arena_bytes) } {
        Ok(a) => a,
        Err(e) => return e,
    };
    // SAFETY: non-null, INPUT_LEN readable floats per the caller; f32 has no
    // alignment above what a `const float*` already guarantees.
    let input = unsafe { &*input.cast::<[f32; INPUT_LEN]>() };
    let logits = run(input, arena);
    // SAFETY: NUM_CLASSES writable floats per the caller.
    unsafe { core::slice::from_raw_parts_mut(logits_out, NUM_CLASSES) }.copy_from_slice(&logits);
    DERM_OK
}
