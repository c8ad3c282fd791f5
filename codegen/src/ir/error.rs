//! What can be wrong with a model file.

use std::path::PathBuf;

/// A model file was unreadable or invalid; the message names the op, tensor,
/// value or field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IrError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An error in a named file.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<IrError>,
    },
    /// Not a well-formed safetensors file (truncated, garbled header, offsets).
    #[error("not a valid safetensors file: {0}")]
    Safetensors(String),
    /// The safetensors header has no `derm.graph` metadata entry.
    #[error("no \"derm.graph\" entry in the safetensors metadata: not a derm model file")]
    MissingGraph,
    /// The graph JSON does not parse or does not match the schema.
    #[error("graph JSON: {0}")]
    GraphJson(String),
    /// `format` is not `derm-model`.
    #[error("graph format is {found:?}, expected \"derm-model\"")]
    WrongFormat {
        /// The value found.
        found: String,
    },
    /// `version` is not one this reader supports.
    #[error(
        "graph version {found} is not supported (this reader supports versions 1 to {supported})"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: String,
        /// The newest version this reader understands.
        supported: u32,
    },
    /// A top-level field (input, output, preprocess, classes) is invalid.
    #[error("{field}: {reason}")]
    BadField {
        /// The field, for example `input.shape`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// An op parameter is invalid.
    #[error("op {op:?}: {reason}")]
    BadOp {
        /// The op name.
        op: String,
        /// What is wrong.
        reason: String,
    },
    /// An op reads a value no earlier op (or the input) defines.
    #[error("op {op:?} reads value {value:?}, which is not defined before it")]
    UndefinedValue {
        /// The op name.
        op: String,
        /// The value name.
        value: String,
    },
    /// Two ops (or an op and the input) define the same value or op name.
    #[error("op {op:?}: name {value:?} is already defined")]
    Duplicate {
        /// The op name.
        op: String,
        /// The repeated name.
        value: String,
    },
    /// A value has the wrong shape for the op reading it.
    #[error("op {op:?}: value {value:?} has shape {actual:?}, expected {expected}")]
    ValueShape {
        /// The op name.
        op: String,
        /// The value name.
        value: String,
        /// What the op needs.
        expected: String,
        /// The inferred shape.
        actual: Vec<usize>,
    },
    /// A tensor named by an op or by a table entry is not stored.
    #[error("{}tensor {tensor:?} is missing", op.as_ref().map(|o| format!("op {o:?}: ")).unwrap_or_default())]
    MissingTensor {
        /// The op that needs it, if any.
        op: Option<String>,
        /// The tensor name.
        tensor: String,
    },
    /// A stored tensor is not listed in the graph's tensor table.
    #[error("tensor {tensor:?} is stored but not listed in the graph's tensor table")]
    UnlistedTensor {
        /// The tensor name.
        tensor: String,
    },
    /// A tensor has the wrong shape.
    #[error("{context}: tensor {tensor:?} has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        /// The op or table entry that disagrees.
        context: String,
        /// The tensor name.
        tensor: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The stored shape.
        actual: Vec<usize>,
    },
    /// A tensor has the wrong element type.
    #[error("{context}: tensor {tensor:?} has dtype {actual}, expected {expected}")]
    TensorDtype {
        /// The op or table entry that disagrees.
        context: String,
        /// The tensor name.
        tensor: String,
        /// The expected dtype(s).
        expected: String,
        /// The stored dtype.
        actual: String,
    },
    /// Quantization parameters are missing or inconsistent.
    #[error("tensor {tensor:?}: quantization: {reason}")]
    BadQuant {
        /// The quantized tensor.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// Serializing failed (for example a header too large).
    #[error("cannot serialize the model file: {0}")]
    Serialize(String),
}

impl IrError {
    /// Wraps the error with the file it came from.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        IrError::InFile {
            path: path.into(),
            source: Box::new(self),
        }
    }
}
