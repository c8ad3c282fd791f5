//! `derm-codegen`: owns the model-file format and turns a model file into
//! Rust source specialized for its exact shapes.
