//! The embedded model: generated at build time by `derm-codegen` from
//! `models/default.safetensors` (or `$DERM_MODEL`), with every shape a
//! constant, weights in flash and one caller-owned arena.

use crate::preprocess::{
    Image, PreprocessError, Region, centre_crop, crop_resize_normalize, crop_resize_normalize_map,
};

// The generated module is a complete model API; this crate re-exports
// the parts its own API promises, so some items stay unused here.
#[allow(dead_code)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}

pub(crate) use generated::CLASS_NAMES_C;
pub use generated::{
    ARENA_LEN, CENTRE_CROP, CLASS_NAMES, INPUT_H, INPUT_LEN, INPUT_W, LAYERS, MACS, MEAN,
    NUM_CLASSES, PARAMS, PEAK_LIVE_LEN, STD,
};

/// Bytes of stack that [`classify`], [`run`] and [`preprocess_input`] need at most with the
/// embedded model, beyond their caller's own frame: give a thread that calls them at least
/// this much (Rust's spawned threads get 2 MiB, a Linux main thread 8 MiB).
///
/// The runtime allocates nothing, so its scratch space is the arena and the stack. On the
/// stack live the resize's column tables (about 75 KiB, sized for reductions up to about 500x)
/// and, in an int8 model, the depthwise kernels' padded copy of their input (up to 96 KiB,
/// so that border pixels take the fast form) and, on x86_64, their repacked weights.
///
/// Measured on release builds (`classify` on a thread of a given stack size, 16 KiB steps
/// down until it overflows): the 224 px f32 default needs 80 KiB on x86_64 and fits
/// aarch64's smallest thread stack (glibc's 128 KiB); the int8 file in `models/` (128 px)
/// needs 192 KiB on x86_64 and 160 KiB on aarch64. The stack buffers have fixed sizes: they
/// do not grow with the input size or the channel count. The runtime's model test runs all three calls on a thread
/// of exactly `STACK_BYTES`, on x86_64 and on aarch64, for each model the test command builds.
pub const STACK_BYTES: usize = if is_int8(crate::MODEL_PRECISION) {
    256 * 1024
} else {
    128 * 1024
};

/// Whether the model computes in integers: `derm_codegen::metadata::precision` names such a
/// model `int8`, never joined with another type (an `i8`-stored float model computes in `f32`).
const fn is_int8(precision: &str) -> bool {
    matches!(precision.as_bytes(), b"int8")
}

/// Working memory of one inference: every activation and scratch buffer at
/// the offsets planned by `derm-codegen` (`ARENA_LEN` `f32`, 64-byte aligned).
///
/// The caller owns it: a `static`, a local (mind the stack size: it is
/// `ARENA_LEN * 4` bytes) or a heap box. One arena serves one inference at a
/// time; threads each need their own.
#[repr(C, align(64))]
pub struct Arena {
    buf: [f32; ARENA_LEN],
}

impl Arena {
    /// A zeroed arena, usable in `static` initializers.
    pub const fn new() -> Self {
        Self {
            buf: [0.0; ARENA_LEN],
        }
    }
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`classify`] returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Index of the most probable class (into [`CLASS_NAMES`]).
    pub class: usize,
    /// `CLASS_NAMES[class]`.
    pub name: &'static str,
    /// Softmax of the logits, in class order; sums to 1.
    pub probabilities: [f32; NUM_CLASSES],
    /// The raw logits.
    pub logits: [f32; NUM_CLASSES],
}

/// Why [`classify`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The image is empty or its pixel buffer does not match its size.
    Image(PreprocessError),
}

impl From<PreprocessError> for Error {
    fn from(e: PreprocessError) -> Self {
        Error::Image(e)
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Image(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for Error {}

/// Classifies an RGB8 photo of any size: with [`CENTRE_CROP`] (what
/// `derm-train export` writes) the centred crop with the input's aspect ratio,
/// i.e. the centred square of the shorter side as in training, otherwise the
/// whole photo; bilinear resize to `INPUT_H x INPUT_W` and normalization
/// straight into the arena (an int8 model's input quantized as it is
/// written), the network, then softmax. Allocates nothing.
pub fn classify(image: Image<'_>, arena: &mut Arena) -> Result<Prediction, Error> {
    let region = input_region(image);
    // Straight into the arena in the model's input form: an int8 model's values are
    // quantized as they are written, exactly as `run` quantizes an f32 input.
    crop_resize_normalize_map(
        image,
        region,
        INPUT_H,
        INPUT_W,
        MEAN,
        STD,
        generated::input_mut(&mut arena.buf),
        generated::input_values,
    )?;
    generated::forward(&mut arena.buf);
    let logits = generated::logits(&arena.buf);
    let probabilities = crate::kernels::softmax(&logits);
    let mut class = 0;
    for (i, p) in probabilities.iter().enumerate() {
        if p.total_cmp(&probabilities[class]).is_gt() {
            class = i;
        }
    }
    Ok(Prediction {
        class,
        name: CLASS_NAMES[class],
        probabilities,
        logits,
    })
}

/// The part of `image` the model reads: with [`CENTRE_CROP`] its centred crop
/// with the input's aspect ratio, otherwise the whole image.
fn input_region(image: Image<'_>) -> Region {
    if CENTRE_CROP {
        centre_crop(image.width, image.height, INPUT_W, INPUT_H)
    } else {
        Region::whole(image.width, image.height)
    }
}

/// The network input [`classify`] builds from `image` (crop, bilinear resize,
/// normalization with [`MEAN`] and [`STD`]), written to `input` as `f32`, for
/// [`run`]: `run` on it gives `classify`'s logits, to the bit.
pub fn preprocess_input(image: Image<'_>, input: &mut [f32; INPUT_LEN]) -> Result<(), Error> {
    let region = input_region(image);
    crop_resize_normalize(image, region, INPUT_H, INPUT_W, MEAN, STD, input)?;
    Ok(())
}

/// Runs the network on an already preprocessed input (planar CHW `[3][H][W]`,
/// normalized with [`MEAN`] and [`STD`]) and returns the logits.
pub fn run(input: &[f32; INPUT_LEN], arena: &mut Arena) -> [f32; NUM_CLASSES] {
    generated::run(input, &mut arena.buf)
}
