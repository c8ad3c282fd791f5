//! `derm-codegen`: owns the model-file format and turns a model file into
//! Rust source specialized for its exact shapes.
//!
//! - [`ir`]: the model file (schema, reader, writer, validation).
//! - [`synthetic`]: seeded random MobileNetV3-shaped models for tests.

pub mod ir;
pub mod synthetic;
