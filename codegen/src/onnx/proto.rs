//! The part of `onnx.proto3` (ONNX's protobuf schema) that the exporter writes, as
//! hand-written [`prost`] messages.
//!
//! Field numbers and types are those of `onnx/onnx.proto3`; fields the exporter never writes
//! are left out, which protobuf allows (a reader skips unknown fields, and a missing field
//! reads as its default). Writing the messages by hand keeps `protoc` and a build script out
//! of the build.

/// A whole model file: versions, producer, metadata and the graph.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// The ONNX IR version the file follows (`onnx.Version`).
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// Operator sets the graph's nodes bind to.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// The tool that wrote the file.
    #[prost(string, tag = "2")]
    pub producer_name: String,
    /// That tool's version.
    #[prost(string, tag = "3")]
    pub producer_version: String,
    /// Reverse-DNS namespace of the model (may be empty).
    #[prost(string, tag = "4")]
    pub domain: String,
    /// Version of the model itself.
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    /// Human-readable description (Markdown).
    #[prost(string, tag = "6")]
    pub doc_string: String,
    /// The computation.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// Named metadata strings; keys are distinct.
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// One operator set the model imports: `("", 17)` is ONNX's default set at version 17.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    /// The operator set's domain; empty for the default `ai.onnx` set.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// The operator set version.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// A key-value string pair (protobuf maps are not used by ONNX).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    /// The key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// The value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// A graph: nodes in topological order, constant tensors, and typed inputs and outputs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    /// Nodes, each after the producers of its inputs.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// The graph's name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Constant tensors (weights), each with a distinct name.
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Human-readable description (Markdown).
    #[prost(string, tag = "10")]
    pub doc_string: String,
    /// Values the caller provides.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// Values the graph returns.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    /// Types and shapes of intermediate values (optional in ONNX).
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

/// One operator application.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    /// Value names read, in the operator's argument order.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Value names written.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// The node's name (for people and error messages).
    #[prost(string, tag = "3")]
    pub name: String,
    /// The operator, for example `Conv`.
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// The operator set domain of `op_type`; empty for `ai.onnx`.
    #[prost(string, tag = "7")]
    pub domain: String,
    /// The operator's attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// Human-readable description (Markdown).
    #[prost(string, tag = "6")]
    pub doc_string: String,
}

/// A named attribute; `type` says which one value field is in use.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    /// The attribute's name, for example `strides`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// In functions only: the parent attribute this one refers to.
    #[prost(string, tag = "21")]
    pub ref_attr_name: String,
    /// Human-readable description (Markdown).
    #[prost(string, tag = "13")]
    pub doc_string: String,
    /// Which value field below holds the value.
    #[prost(enumeration = "attribute_proto::AttributeType", tag = "20")]
    pub r#type: i32,
    /// A `FLOAT` value.
    #[prost(float, tag = "2")]
    pub f: f32,
    /// An `INT` value.
    #[prost(int64, tag = "3")]
    pub i: i64,
    /// A `STRING` value (UTF-8 bytes).
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    /// A `TENSOR` value.
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// A `FLOATS` value.
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    /// An `INTS` value.
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// A `STRINGS` value.
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    /// A `TENSORS` value.
    #[prost(message, repeated, tag = "10")]
    pub tensors: Vec<TensorProto>,
}

/// Nested types of [`AttributeProto`].
pub mod attribute_proto {
    /// Which value field of an attribute is in use (`AttributeProto.AttributeType`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum AttributeType {
        /// Not set (invalid in a model).
        Undefined = 0,
        /// `f`.
        Float = 1,
        /// `i`.
        Int = 2,
        /// `s`.
        String = 3,
        /// `t`.
        Tensor = 4,
        /// `g` (a subgraph; not written by the exporter).
        Graph = 5,
        /// `floats`.
        Floats = 6,
        /// `ints`.
        Ints = 7,
        /// `strings`.
        Strings = 8,
        /// `tensors`.
        Tensors = 9,
        /// `graphs` (not written by the exporter).
        Graphs = 10,
        /// `sparse_tensor` (not written by the exporter).
        SparseTensor = 11,
        /// `sparse_tensors` (not written by the exporter).
        SparseTensors = 12,
        /// `tp` (not written by the exporter).
        TypeProto = 13,
        /// `type_protos` (not written by the exporter).
        TypeProtos = 14,
    }
}

/// A tensor value: element type, shape and data (here always `raw_data`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// The shape.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// A [`tensor_proto::DataType`] value.
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// `FLOAT` data as a packed list (the exporter uses `raw_data` instead).
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// `INT64` data as a packed list.
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    /// The tensor's name: an initializer's name is the value name nodes read.
    #[prost(string, tag = "8")]
    pub name: String,
    /// Human-readable description (Markdown).
    #[prost(string, tag = "12")]
    pub doc_string: String,
    /// The elements, fixed-width little-endian, row-major.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

/// Nested types of [`TensorProto`].
pub mod tensor_proto {
    /// Element types (`TensorProto.DataType`), the ones this crate may meet.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum DataType {
        /// Not set (invalid).
        Undefined = 0,
        /// IEEE 754 binary32.
        Float = 1,
        /// Unsigned 8-bit integer.
        Uint8 = 2,
        /// Signed 8-bit integer.
        Int8 = 3,
        /// Signed 32-bit integer.
        Int32 = 6,
        /// Signed 64-bit integer.
        Int64 = 7,
        /// IEEE 754 binary16.
        Float16 = 10,
        /// IEEE 754 binary64.
        Double = 11,
    }
}

/// A value's name, type and (optionally) shape.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    /// The value name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its type; required for graph inputs and outputs.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    /// Human-readable description (Markdown).
    #[prost(string, tag = "3")]
    pub doc_string: String,
}

/// A value's type; only tensors are used here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    /// Which kind of type this is.
    #[prost(oneof = "type_proto::Value", tags = "1")]
    pub value: Option<type_proto::Value>,
    /// Optional standard denotation of the whole type (for example `TENSOR`).
    #[prost(string, tag = "6")]
    pub denotation: String,
}

/// Nested types of [`TypeProto`].
pub mod type_proto {
    /// A tensor type: element type and shape (`TypeProto.Tensor`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        /// A [`super::tensor_proto::DataType`] value.
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        /// The shape; absent means unknown rank.
        #[prost(message, optional, tag = "2")]
        pub shape: Option<super::TensorShapeProto>,
    }

    /// The kinds of type (`TypeProto.value`); sequences, maps and the rest are left out.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A tensor.
        #[prost(message, tag = "1")]
        TensorType(Tensor),
    }
}

/// A tensor shape: one entry per dimension.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// The dimensions, outermost first.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<tensor_shape_proto::Dimension>,
}

/// Nested types of [`TensorShapeProto`].
pub mod tensor_shape_proto {
    /// One dimension: a number, a symbolic name, or unknown.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        /// The size.
        #[prost(oneof = "dimension::Value", tags = "1, 2")]
        pub value: Option<dimension::Value>,
        /// Optional standard denotation (for example `DATA_BATCH`).
        #[prost(string, tag = "3")]
        pub denotation: String,
    }

    /// Nested types of [`Dimension`].
    pub mod dimension {
        /// A dimension's size (`Dimension.value`).
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            /// A fixed size.
            #[prost(int64, tag = "1")]
            DimValue(i64),
            /// A symbolic size, for example `batch`.
            #[prost(string, tag = "2")]
            DimParam(String),
        }
    }
}
