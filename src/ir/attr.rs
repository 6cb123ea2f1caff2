//! Node attributes.

use super::graph::Graph;
use super::tensor::Tensor;
use crate::onnx::pb;

/// The value of one attribute. Kinds the IR does not look into (sparse tensors,
/// type protos) are kept as protobuf so that they survive a round trip.
#[derive(Clone, Debug)]
pub enum AttrValue {
    Float(f32),
    Int(i64),
    String(Vec<u8>),
    Tensor(Tensor),
    Graph(Box<Graph>),
    SparseTensor(Box<pb::SparseTensorProto>),
    TypeProto(Box<pb::TypeProto>),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<Vec<u8>>),
    Tensors(Vec<Tensor>),
    Graphs(Vec<Graph>),
    SparseTensors(Vec<pb::SparseTensorProto>),
    TypeProtos(Vec<pb::TypeProto>),
    /// An attribute of a function body that refers to the caller's attribute.
    Ref {
        name: String,
        kind: i32,
    },
}

/// One attribute: its value plus the fields ONNX carries beside it.
#[derive(Clone, Debug)]
pub struct Attribute {
    pub value: AttrValue,
    pub doc_string: String,
}

impl Attribute {
    pub fn new(value: AttrValue) -> Self {
        Attribute {
            value,
            doc_string: String::new(),
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self.value {
            AttrValue::Int(i) => Some(i),
            _ => None,
        }
    }
    pub fn as_float(&self) -> Option<f32> {
        match self.value {
            AttrValue::Float(f) => Some(f),
            _ => None,
        }
    }
    pub fn as_ints(&self) -> Option<&[i64]> {
        match &self.value {
            AttrValue::Ints(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_floats(&self) -> Option<&[f32]> {
        match &self.value {
            AttrValue::Floats(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            AttrValue::String(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match &self.value {
            AttrValue::Tensor(t) => Some(t),
            _ => None,
        }
    }
    /// Subgraphs held by this attribute (If branches, Loop/Scan bodies).
    pub fn subgraphs(&self) -> Vec<&Graph> {
        match &self.value {
            AttrValue::Graph(g) => vec![&**g],
            AttrValue::Graphs(gs) => gs.iter().collect(),
            _ => vec![],
        }
    }
    pub fn subgraphs_mut(&mut self) -> Vec<&mut Graph> {
        match &mut self.value {
            AttrValue::Graph(g) => vec![&mut **g],
            AttrValue::Graphs(gs) => gs.iter_mut().collect(),
            _ => vec![],
        }
    }
}

impl From<i64> for Attribute {
    fn from(v: i64) -> Self {
        Attribute::new(AttrValue::Int(v))
    }
}
impl From<f32> for Attribute {
    fn from(v: f32) -> Self {
        Attribute::new(AttrValue::Float(v))
    }
}
impl From<Vec<i64>> for Attribute {
    fn from(v: Vec<i64>) -> Self {
        Attribute::new(AttrValue::Ints(v))
    }
}
impl From<&str> for Attribute {
    fn from(v: &str) -> Self {
        Attribute::new(AttrValue::String(v.as_bytes().to_vec()))
    }
}
impl From<Tensor> for Attribute {
    fn from(v: Tensor) -> Self {
        Attribute::new(AttrValue::Tensor(v))
    }
}
