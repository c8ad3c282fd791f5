//! Reading and writing the safetensors container.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{SafeTensors, View};

use super::{
    DType, FORMAT_NAME, FORMAT_VERSION, GRAPH_KEY, Graph, IrError, MIN_FORMAT_VERSION, ModelFile,
    Tensor,
};

impl View for &Tensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype.to_safetensors()
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

impl ModelFile {
    /// Validates and serializes the model to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, IrError> {
        self.validate()?;
        let json =
            serde_json::to_string(&self.graph).map_err(|e| IrError::Serialize(e.to_string()))?;
        let meta = HashMap::from([(GRAPH_KEY.to_owned(), json)]);
        safetensors::serialize(self.tensors.iter(), Some(meta))
            .map_err(|e| IrError::Serialize(e.to_string()))
    }

    /// Validates and writes the model to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), IrError> {
        let path = path.as_ref();
        let bytes = self.to_bytes().map_err(|e| e.in_file(path))?;
        std::fs::write(path, bytes).map_err(|source| IrError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads and validates the model file at `path`; errors name the file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, IrError> {
        read_file(path.as_ref(), Self::from_bytes)
    }

    /// Parses and validates a model from safetensors bytes. Never panics,
    /// whatever the bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IrError> {
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| IrError::Safetensors(e.to_string()))?;
        let (_, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| IrError::Safetensors(e.to_string()))?;
        let json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(GRAPH_KEY))
            .ok_or(IrError::MissingGraph)?;
        let graph = parse_graph(json)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.iter() {
            let dtype =
                DType::from_safetensors(view.dtype()).ok_or_else(|| IrError::TensorDtype {
                    context: "file".into(),
                    tensor: name.to_owned(),
                    expected: "f32, f16, i8 or i32".into(),
                    actual: format!("{:?}", view.dtype()),
                })?;
            let tensor = Tensor {
                dtype,
                shape: view.shape().to_vec(),
                data: view.data().to_vec(),
            };
            // safetensors checks offsets against shapes; this keeps the
            // invariant local rather than trusting another crate's version.
            if tensor.numel().and_then(|n| n.checked_mul(dtype.size())) != Some(tensor.data.len()) {
                return Err(IrError::Safetensors(format!(
                    "tensor {name:?}: {} data bytes do not match shape {:?} of {dtype}",
                    tensor.data.len(),
                    tensor.shape
                )));
            }
            tensors.insert(name.to_owned(), tensor);
        }
        let model = ModelFile { graph, tensors };
        model.validate()?;
        Ok(model)
    }
}

/// Checks format and version before the schema, so a file from a newer
/// writer reports its version rather than an unknown field.
fn parse_graph(json: &str) -> Result<Graph, IrError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| IrError::GraphJson(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| IrError::GraphJson("the graph is not a JSON object".into()))?;
    match obj.get("format") {
        Some(serde_json::Value::String(s)) if s == FORMAT_NAME => {}
        Some(other) => {
            return Err(IrError::WrongFormat {
                found: other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_owned),
            });
        }
        None => return Err(IrError::GraphJson("missing field `format`".into())),
    }
    match obj.get("version") {
        Some(v)
            if v.as_u64().is_some_and(|v| {
                (u64::from(MIN_FORMAT_VERSION)..=u64::from(FORMAT_VERSION)).contains(&v)
            }) => {}
        Some(v) => {
            return Err(IrError::UnsupportedVersion {
                found: v.to_string(),
                supported: FORMAT_VERSION,
            });
        }
        None => return Err(IrError::GraphJson("missing field `version`".into())),
    }
    serde_json::from_value(value).map_err(|e| IrError::GraphJson(e.to_string()))
}

/// Reads the file at `path` and parses its bytes with `parse`; every error
/// (I/O or parse) names the file. Shared by the model and golden readers.
pub(crate) fn read_file<T>(
    path: &Path,
    parse: impl FnOnce(&[u8]) -> Result<T, IrError>,
) -> Result<T, IrError> {
    let bytes = std::fs::read(path).map_err(|source| IrError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&bytes).map_err(|e| e.in_file(path))
}
