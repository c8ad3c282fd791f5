//! The model reader and code generator never panic, whatever the bytes.
//!
//! Inputs starting with `{` are used as the graph JSON of an otherwise valid
//! file (the tiny synthetic model's tensors, or its int8 version's when the
//! JSON has `quantization`), which reaches validation and
//! code generation far more often than mutated safetensors bytes; anything
//! else is read as a whole file.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use derm_codegen::ir::ModelFile;
use derm_codegen::synthetic::SyntheticSpec;
use derm_codegen::{GenOptions, generate};
use libfuzzer_sys::fuzz_target;

fn tiny() -> &'static ModelFile {
    static M: OnceLock<ModelFile> = OnceLock::new();
    M.get_or_init(|| SyntheticSpec::tiny(1).build().expect("tiny model builds"))
}

/// The tiny model quantized to int8 (i8 weights, their scales, i32 biases).
fn tiny_int8() -> &'static ModelFile {
    static M: OnceLock<ModelFile> = OnceLock::new();
    M.get_or_init(|| derm_codegen::synthetic::int8_of(tiny(), 8).expect("tiny model quantizes"))
}

fn with_graph(json: &str) -> Option<Vec<u8>> {
    // A graph with int8 fields is given the int8 tensors, so mutations of the quantization
    // parameters reach validation instead of failing on the tensor table.
    let m = if json.contains("\"quantization\"") {
        tiny_int8()
    } else {
        tiny()
    };
    let views = m.tensors.iter().map(|(k, t)| {
        let dt = t.dtype.to_safetensors();
        (
            k.clone(),
            safetensors::tensor::TensorView::new(dt, t.shape.clone(), &t.data).expect("valid view"),
        )
    });
    let meta = HashMap::from([("derm.graph".to_owned(), json.to_owned())]);
    safetensors::serialize(views, Some(meta)).ok()
}

fuzz_target!(|data: &[u8]| {
    let file;
    let bytes = if data.first() == Some(&b'{') {
        let Ok(json) = std::str::from_utf8(data) else {
            return;
        };
        let Some(b) = with_graph(json) else { return };
        file = b;
        &file[..]
    } else {
        data
    };
    if let Ok(model) = ModelFile::from_bytes(bytes) {
        let _ = generate(&model, &GenOptions::default());
        // A model that reads back must also write and read back identically.
        let again = model.to_bytes().expect("a valid model serializes");
        assert_eq!(ModelFile::from_bytes(&again).expect("round trip"), model);
    }
});
