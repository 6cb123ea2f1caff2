//! Types and shapes of values.

use super::dtype::DataType;
use crate::onnx::pb;
use std::fmt;

/// One dimension of a shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(i64),
    /// A symbolic dimension (`batch`, `seq`, or an expression such as `2*seq`).
    Sym(String),
    /// Unknown (no value and no name in the file, or inference gave up).
    Unknown,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(d) => write!(f, "{d}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// What is known of a tensor value.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TensorType {
    pub dtype: Option<DataType>,
    /// `None` when even the rank is unknown.
    pub shape: Option<Vec<Dim>>,
}

impl TensorType {
    pub fn new(dtype: DataType, shape: Vec<Dim>) -> Self {
        TensorType {
            dtype: Some(dtype),
            shape: Some(shape),
        }
    }
    /// The shape as plain integers, if every dim is known.
    pub fn concrete_shape(&self) -> Option<Vec<i64>> {
        self.shape
            .as_ref()?
            .iter()
            .map(|d| match d {
                Dim::Fixed(v) => Some(*v),
                _ => None,
            })
            .collect()
    }
    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }
}

/// The type of a value.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum ValueType {
    #[default]
    Unknown,
    Tensor(TensorType),
    /// Sequence, map, optional or sparse tensor types, kept as protobuf.
    Other(Box<pb::TypeProto>),
}

impl ValueType {
    pub fn tensor(&self) -> Option<&TensorType> {
        match self {
            ValueType::Tensor(t) => Some(t),
            _ => None,
        }
    }
    pub fn dtype(&self) -> Option<DataType> {
        self.tensor().and_then(|t| t.dtype)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            Some(dt) => write!(f, "{dt}")?,
            None => f.write_str("?")?,
        }
        match &self.shape {
            Some(s) => {
                f.write_str("[")?;
                for (i, d) in s.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{d}")?;
                }
                f.write_str("]")
            }
            None => f.write_str("[..]"),
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::Unknown => f.write_str("?"),
            ValueType::Tensor(t) => write!(f, "{t}"),
            ValueType::Other(tp) => match &tp.value {
                Some(pb::type_proto::Value::SequenceType(_)) => f.write_str("seq"),
                Some(pb::type_proto::Value::MapType(_)) => f.write_str("map"),
                Some(pb::type_proto::Value::OptionalType(_)) => f.write_str("optional"),
                Some(pb::type_proto::Value::SparseTensorType(_)) => f.write_str("sparse"),
                _ => f.write_str("?"),
            },
        }
    }
}
