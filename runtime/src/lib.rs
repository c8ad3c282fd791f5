//! `derm-runtime`: a `no_std`, allocation-free skin-lesion classifier for the
//! Raspberry Pi 4 (Cortex-A72) and any other target, with the model compiled
//! in.
//!
//! # Integrating
//!
//! The model is fixed at build time: `build.rs` runs `derm-codegen` on
//! `models/default.safetensors` of the workspace, or on the file named by the
//! `DERM_MODEL` environment variable (absolute, or relative to the workspace
//! root), and compiles its shapes, memory plan and weights into this crate.
//! Nothing is parsed or allocated at run time. The model file format is
//! described in `docs/model-format.md`.
//!
//! You provide two things:
//! - an [`Arena`] ([`ARENA_LEN`] `f32`, 64-byte aligned): working memory for
//!   one inference at a time. Put it in a `static`, on the stack (it is
//!   `ARENA_LEN * 4` bytes, about 1.4 MB for MobileNetV3-Small at 224x224) or
//!   in a `Box`;
//! - an RGB8 image of any size as an [`Image`]: `width * height * 3` bytes,
//!   row-major, R G B interleaved.
//!
//! [`classify`] crops the centred square (as training does; see
//! [`CENTRE_CROP`]), resizes (bilinear) and normalizes the image into the arena,
//! runs the network and returns the most probable class with all
//! probabilities. [`run`] is the lower-level entry point taking an already
//! preprocessed input (`[3][INPUT_H][INPUT_W]` planar, normalized with
//! [`MEAN`] and [`STD`]) and returning the logits; [`preprocess_input`] builds
//! that input from an [`Image`] exactly as `classify` does.
//!
//! ```
//! use derm_runtime::{Arena, Image, classify, CLASS_NAMES, NUM_CLASSES};
//! use std::sync::Mutex;
//!
//! // One arena for the program, in static memory: it is too large for a thread's stack
//! // (`Box::new(Arena::new())` may build it on the stack first), and `Arena::new` is const.
//! static ARENA: Mutex<Arena> = Mutex::new(Arena::new());
//!
//! // A 640x480 photo; real code would decode a JPEG into this buffer.
//! let (w, h) = (640, 480);
//! let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
//! let image = Image::new(w, h, &pixels)?;
//!
//! let mut arena = ARENA.lock().unwrap();
//! let prediction = classify(image, &mut arena)?;
//! assert_eq!(prediction.name, CLASS_NAMES[prediction.class]);
//! assert_eq!(prediction.probabilities.len(), NUM_CLASSES);
//! println!("{} ({:.1}%)", prediction.name, 100.0 * prediction.probabilities[prediction.class]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Errors are values: a zero-sized image or a pixel buffer of the wrong
//! length is an [`Error`], never a panic. From C, use the functions in
//! [`ffi`] (header `include/derm_runtime.h`).
//!
//! # Performance
//!
//! Every layer is a direct call of a kernel in [`kernels`] with constant
//! shapes (NEON on aarch64, portable Rust elsewhere). [`LAYERS`] lists the
//! kernel chosen for each layer, [`MACS`] and [`PARAMS`] size the model.
//!
//! # Which model
//!
//! [`MODEL_NAME`], [`MODEL_SHA256`] (of the file's bytes, computed at build time),
//! [`MODEL_PRECISION`] and [`MODEL_PROVENANCE_JSON`] (how the file was made and its recorded
//! evaluation) identify the embedded model file, so results can name exactly what ran.
#![no_std]

pub mod ffi;
pub mod kernels;
mod model;
pub mod preprocess;

pub use model::{
    ARENA_LEN, Arena, CENTRE_CROP, CLASS_NAMES, Error, INPUT_H, INPUT_LEN, INPUT_W, LAYERS, MACS,
    MEAN, NUM_CLASSES, PARAMS, PEAK_LIVE_LEN, Prediction, STACK_BYTES, STD, classify,
    preprocess_input, run,
};
pub use preprocess::{Image, PreprocessError, Region};

/// The embedded model file's identity, written by `build.rs` with
/// `derm_codegen::metadata` (each constant carries its own documentation).
mod metadata {
    include!(concat!(env!("OUT_DIR"), "/model_metadata.rs"));
}

pub use metadata::{MODEL_NAME, MODEL_PRECISION, MODEL_PROVENANCE_JSON, MODEL_SHA256};

/// Items the generated model code refers to; not part of the API.
#[doc(hidden)]
pub mod __codegen {
    pub use bytemuck;
}
