//! The intermediate representation: a model holding a petgraph graph of
//! ONNX operations, constants and inputs, with values on the edges.

mod attr;
mod dtype;
mod graph;
pub mod pattern;
pub mod print;
mod quant;
pub mod rewrite;
mod tensor;
mod types;
pub mod verify;

pub use attr::{AttrValue, Attribute};
pub use dtype::DataType;
pub use graph::{
    Const, ConstOrigin, Edge, Graph, GraphError, Node, NodeId, NodeKind, Op, Slot, Value, ValueId,
};
pub use quant::QuantAnnotation;
pub use tensor::{element_count, f16_to_f32, DataSizeMismatch, Fnv64, Tensor, TensorData};
pub use types::{Dim, TensorType, ValueType};

use crate::onnx::pb;

/// An operator set a model imports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpsetImport {
    /// "" (or "ai.onnx") is the default ONNX domain.
    pub domain: String,
    pub version: i64,
}

/// A model: metadata plus the main graph. Parts the IR does not model
/// (functions, training info, device configurations) are kept verbatim.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub ir_version: i64,
    pub opset_import: Vec<OpsetImport>,
    pub producer_name: String,
    pub producer_version: String,
    pub domain: String,
    pub model_version: i64,
    pub doc_string: String,
    pub metadata_props: Vec<(String, String)>,
    pub graph: Graph,
    pub training_info: Vec<pb::TrainingInfoProto>,
    pub functions: Vec<pb::FunctionProto>,
    pub configuration: Vec<pb::DeviceConfigurationProto>,
}

impl Model {
    /// The version of the default ONNX operator set (0 if not imported).
    pub fn onnx_opset(&self) -> i64 {
        self.opset(&["", "ai.onnx"]).unwrap_or(0)
    }

    /// The version imported for one of `domains`.
    pub fn opset(&self, domains: &[&str]) -> Option<i64> {
        self.opset_import
            .iter()
            .find(|o| domains.contains(&o.domain.as_str()))
            .map(|o| o.version)
    }

    /// Sets (or adds) the version of an operator set.
    pub fn set_opset(&mut self, domain: &str, version: i64) {
        match self.opset_import.iter_mut().find(|o| o.domain == domain) {
            Some(o) => o.version = version,
            None => self.opset_import.push(OpsetImport {
                domain: domain.to_string(),
                version,
            }),
        }
    }
}
