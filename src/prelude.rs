//! The pass-author API: everything a pass needs, and all that onnxq's own
//! passes use. `use onnxq::prelude::*;` in a custom pass gets the same.

pub use crate::error::{Error, Result};
pub use crate::ir::pattern::{any, constant, op, ops, Match, Pattern};
pub use crate::ir::rewrite::{
    all_node_names, all_value_names, for_each_graph_mut, unshadow_names, visit_graphs,
};
pub use crate::ir::{
    AttrValue, Attribute, Const, ConstOrigin, DataType, Dim, Graph, Model, Node, NodeId, NodeKind,
    Op, QuantAnnotation, Slot, Tensor, TensorType, ValueId, ValueType,
};
pub use crate::observe::{QDtype, QParams, QScheme, QuantSpec};
pub use crate::opset::raise_opset;
pub use crate::pm::{Pass, PassContext, PassManager, PassOptions, PassRegistry};
pub use crate::qdq::{self, QuantizedTensor};
