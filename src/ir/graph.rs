//! The graph IR: a petgraph `StableDiGraph` of nodes, with values (named
//! tensors) flowing along the edges.
//!
//! Every value has exactly one producer: a graph input, a constant, an
//! operation, or (inside a subgraph) a reference to a value of an enclosing
//! graph. A node's ordered inputs live on the node; the petgraph edges mirror
//! them (plus the values a node's subgraphs capture) so that graph algorithms
//! (topological order, cycle detection, neighbours) work on petgraph directly.
//! Every mutation goes through [`Graph`]'s methods, which keep both in sync;
//! the verifier checks it.

use super::attr::Attribute;
use super::tensor::Tensor;
use super::types::ValueType;
use crate::onnx::pb;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use smallvec::SmallVec;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// Index of a node in its [`Graph`]. Never printed: dumps renumber.
pub type NodeId = NodeIndex<u32>;

/// Index of a value in its [`Graph`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub(crate) u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where a value enters a node.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// The i-th ONNX input.
    Input(u32),
    /// Read by one of the node's subgraphs (If/Loop/Scan bodies) by name.
    Capture,
}

/// Edge weight: which value flows and into which slot of the consumer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub value: ValueId,
    pub slot: Slot,
}

/// A value: a named tensor (or sequence/map/optional) with one producer.
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    /// What is known of the type: declared in the file, else inferred.
    pub ty: ValueType,
    /// The `ValueInfoProto` the file declared for it as a graph input or
    /// output, written back verbatim unless the type is changed.
    pub declared: Option<Box<pb::ValueInfoProto>>,
    /// Its entry in the file's `value_info` list, with the list position.
    pub value_info: Option<(u64, Box<pb::ValueInfoProto>)>,
    /// Producer node and output index.
    pub producer: (NodeId, usize),
    /// How it will be quantized (set by observer insertion).
    pub quant: Option<super::quant::QuantAnnotation>,
}

/// How a constant was written in the file, so that export can write it back
/// the same way.
#[derive(Clone, Debug)]
pub enum ConstOrigin {
    /// A graph initializer. `is_graph_input` when the name is also listed in
    /// `graph.input` (IR < 4 style, or an overridable default).
    Initializer { is_graph_input: bool },
    /// A `Constant` operation with these attributes (value, value_float, ...).
    ConstantOp(Op),
}

/// A constant tensor node.
#[derive(Clone, Debug)]
pub struct Const {
    pub tensor: Tensor,
    pub origin: ConstOrigin,
}

/// An ONNX operation.
#[derive(Clone, Debug, Default)]
pub struct Op {
    pub op_type: String,
    /// "" is the default ONNX domain (`ai.onnx`).
    pub domain: String,
    pub overload: String,
    /// Attributes, sorted by name.
    pub attrs: BTreeMap<String, Attribute>,
    pub doc_string: String,
    pub metadata_props: Vec<(String, String)>,
    pub device_configurations: Vec<pb::NodeDeviceConfigurationProto>,
}

impl Op {
    pub fn new(op_type: impl Into<String>) -> Op {
        Op {
            op_type: op_type.into(),
            ..Default::default()
        }
    }
    pub fn with_attr(mut self, name: &str, value: impl Into<Attribute>) -> Op {
        self.attrs.insert(name.to_string(), value.into());
        self
    }
    pub fn attr(&self, name: &str) -> Option<&Attribute> {
        self.attrs.get(name)
    }
    pub fn has_subgraphs(&self) -> bool {
        self.attrs.values().any(|a| !a.subgraphs().is_empty())
    }
    /// `domain::OpType`, or just `OpType` in the default domain.
    pub fn qualified_name(&self) -> String {
        if self.domain.is_empty() || self.domain == "ai.onnx" {
            self.op_type.clone()
        } else {
            format!("{}::{}", self.domain, self.op_type)
        }
    }
}

/// What a node is.
#[derive(Clone, Debug)]
pub enum NodeKind {
    /// A graph input (output 0 is the value).
    Input,
    /// A constant tensor (output 0 is the value).
    Const(Const),
    /// A sparse initializer, kept as protobuf (output 0 is the value).
    SparseConst(Box<pb::SparseTensorProto>),
    /// Inside a subgraph: a value of an enclosing graph, read by name.
    OuterRef,
    /// An operation.
    Op(Op),
}

/// A node of the graph.
#[derive(Clone, Debug)]
pub struct Node {
    /// ONNX node name (may be empty); for inputs and constants, the value name.
    pub name: String,
    pub kind: NodeKind,
    /// Ordered inputs; `None` is an omitted optional input (`""` in ONNX).
    pub inputs: SmallVec<[Option<ValueId>; 4]>,
    /// Ordered outputs; `None` is an omitted optional output.
    pub outputs: SmallVec<[Option<ValueId>; 2]>,
    /// Values of this graph read by the node's subgraphs.
    pub captures: SmallVec<[ValueId; 2]>,
    /// Tie-breaker of the deterministic topological order: the position in
    /// the file for imported nodes, increasing for nodes added later.
    pub(crate) order: u64,
    /// The fused quantization unit this node belongs to, if any: no Q/DQ is
    /// inserted inside a unit, and kernels run it as one op (the activation
    /// in the output stage). Not written to ONNX.
    pub unit: Option<FusedUnit>,
}

/// Membership of a node in a fused quantization unit (e.g. Conv + Relu).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusedUnit {
    /// Shared by all nodes of one unit, unique in the graph.
    pub id: u32,
    /// The backend pattern that formed it, e.g. `weighted-relu`.
    pub pattern: String,
}

impl Node {
    pub fn op(&self) -> Option<&Op> {
        match &self.kind {
            NodeKind::Op(op) => Some(op),
            _ => None,
        }
    }
    pub fn op_mut(&mut self) -> Option<&mut Op> {
        match &mut self.kind {
            NodeKind::Op(op) => Some(op),
            _ => None,
        }
    }
    pub fn as_const(&self) -> Option<&Const> {
        match &self.kind {
            NodeKind::Const(c) => Some(c),
            _ => None,
        }
    }
    /// The op type, or `Input` / `Const` / `SparseConst` / `OuterRef`.
    pub fn op_type(&self) -> &str {
        match &self.kind {
            NodeKind::Op(op) => &op.op_type,
            NodeKind::Input => "Input",
            NodeKind::Const(_) => "Const",
            NodeKind::SparseConst(_) => "SparseConst",
            NodeKind::OuterRef => "OuterRef",
        }
    }
    pub fn is_op(&self, op_type: &str) -> bool {
        matches!(&self.kind, NodeKind::Op(op) if op.op_type == op_type && (op.domain.is_empty() || op.domain == "ai.onnx"))
    }
    /// The sort key used for deterministic ordering.
    pub fn order(&self) -> u64 {
        self.order
    }
}

/// A graph: the main graph of a model, or a subgraph attribute.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    pub doc_string: String,
    pub metadata_props: Vec<(String, String)>,
    /// `GraphProto.quantization_annotation`, kept verbatim.
    pub quantization_annotation: Vec<pb::TensorAnnotation>,
    /// Graph inputs in file order (including initializers listed as inputs).
    pub inputs: Vec<ValueId>,
    /// Graph outputs in file order.
    pub outputs: Vec<ValueId>,
    pub(crate) dag: StableDiGraph<Node, Edge>,
    values: Vec<Option<Value>>,
    by_name: HashMap<String, ValueId>,
    next_order: u64,
    next_unit: u32,
}

/// Errors of graph mutation.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum GraphError {
    #[error("value name `{0}` is already defined")]
    DuplicateName(String),
    #[error("node has no output {0}")]
    NoSuchOutput(usize),
    #[error("the graph has a cycle through node `{0}`")]
    Cycle(String),
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    // ---- reading -------------------------------------------------------

    pub fn node(&self, id: NodeId) -> &Node {
        &self.dag[id]
    }
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.dag[id]
    }
    pub fn try_node(&self, id: NodeId) -> Option<&Node> {
        self.dag.node_weight(id)
    }
    pub fn value(&self, id: ValueId) -> &Value {
        self.values[id.index()].as_ref().expect("value was removed")
    }
    pub fn try_value(&self, id: ValueId) -> Option<&Value> {
        self.values.get(id.index()).and_then(|v| v.as_ref())
    }
    pub fn value_mut(&mut self, id: ValueId) -> &mut Value {
        self.values[id.index()].as_mut().expect("value was removed")
    }
    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.by_name.get(name).copied()
    }
    /// All node ids, in unspecified order. Use [`Graph::topo_order`] for a stable one.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.dag.node_indices()
    }
    /// All live values, in creation order.
    pub fn value_ids(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_some())
            .map(|(i, _)| ValueId(i as u32))
    }
    pub fn node_count(&self) -> usize {
        self.dag.node_count()
    }
    /// The node producing `v`.
    pub fn producer(&self, v: ValueId) -> NodeId {
        self.value(v).producer.0
    }
    /// The constant tensor behind `v`, if `v` is produced by a constant node.
    pub fn const_tensor(&self, v: ValueId) -> Option<&Tensor> {
        self.node(self.producer(v)).as_const().map(|c| &c.tensor)
    }
    /// Nodes reading `v`, with the slot, sorted by consumer order then slot.
    pub fn consumers(&self, v: ValueId) -> Vec<(NodeId, Slot)> {
        let p = self.producer(v);
        let mut out: Vec<(NodeId, Slot)> = self
            .dag
            .edges_directed(p, Direction::Outgoing)
            .filter(|e| e.weight().value == v)
            .map(|e| (e.target(), e.weight().slot))
            .collect();
        out.sort_by_key(|&(n, s)| (self.dag[n].order, s));
        out
    }
    pub fn is_graph_output(&self, v: ValueId) -> bool {
        self.outputs.contains(&v)
    }
    /// The read-only petgraph view, for graph algorithms.
    pub fn petgraph(&self) -> &StableDiGraph<Node, Edge> {
        &self.dag
    }

    /// Nodes in a deterministic topological order: Kahn's algorithm, ties
    /// broken by the node's order key (file position for imported nodes).
    pub fn topo_order(&self) -> Result<Vec<NodeId>, GraphError> {
        let mut indeg: HashMap<NodeId, usize> = HashMap::with_capacity(self.dag.node_count());
        for n in self.dag.node_indices() {
            indeg.insert(n, self.dag.edges_directed(n, Direction::Incoming).count());
        }
        let mut ready: BinaryHeap<std::cmp::Reverse<(u64, u32)>> = indeg
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&n, _)| std::cmp::Reverse((self.dag[n].order, n.index() as u32)))
            .collect();
        let mut out = Vec::with_capacity(indeg.len());
        while let Some(std::cmp::Reverse((_, ix))) = ready.pop() {
            let n = NodeIndex::new(ix as usize);
            out.push(n);
            for e in self.dag.edges_directed(n, Direction::Outgoing) {
                let t = e.target();
                let d = indeg.get_mut(&t).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.push(std::cmp::Reverse((self.dag[t].order, t.index() as u32)));
                }
            }
        }
        if out.len() != indeg.len() {
            let stuck = indeg
                .iter()
                .filter(|(_, &d)| d > 0)
                .map(|(&n, _)| n)
                .min_by_key(|&n| self.dag[n].order)
                .expect("some node is left");
            return Err(GraphError::Cycle(self.display_node_name(stuck)));
        }
        Ok(out)
    }

    /// A name for messages: the node name, else its first output's name.
    pub fn display_node_name(&self, n: NodeId) -> String {
        let node = &self.dag[n];
        if !node.name.is_empty() {
            return node.name.clone();
        }
        match node.outputs.iter().flatten().next() {
            Some(&v) => format!("{} -> {}", node.op_type(), self.value(v).name),
            None => node.op_type().to_string(),
        }
    }

    // ---- building ------------------------------------------------------

    /// A value name not used yet in this graph, derived from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        if !self.by_name.contains_key(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !self.by_name.contains_key(n))
            .expect("unbounded")
    }

    fn new_order(&mut self) -> u64 {
        self.next_order += 1;
        self.next_order
    }

    /// Adds a node with the given inputs and one output value per name in
    /// `outputs` (`None` for an omitted optional output). Returns the node
    /// id; the output values are in `graph.node(id).outputs`.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        kind: NodeKind,
        inputs: &[Option<ValueId>],
        outputs: &[Option<&str>],
    ) -> Result<NodeId, GraphError> {
        for n in outputs.iter().flatten() {
            if self.by_name.contains_key(*n) {
                return Err(GraphError::DuplicateName(n.to_string()));
            }
        }
        let order = self.new_order();
        let id = self.dag.add_node(Node {
            name: name.into(),
            kind,
            inputs: SmallVec::new(),
            outputs: SmallVec::new(),
            captures: SmallVec::new(),
            order,
            unit: None,
        });
        for (i, out) in outputs.iter().enumerate() {
            let v = out.map(|n| self.new_value(n, id, i));
            self.dag[id].outputs.push(v);
        }
        for (slot, &input) in inputs.iter().enumerate() {
            self.dag[id].inputs.push(None);
            self.set_input(id, slot, input);
        }
        Ok(id)
    }

    /// Appends an output named `name` (made fresh) to `node`; returns the new value.
    pub fn add_node_output(&mut self, node: NodeId, name: &str) -> ValueId {
        let name = self.fresh_name(name);
        let index = self.dag[node].outputs.len();
        let v = self.new_value(&name, node, index);
        self.dag[node].outputs.push(Some(v));
        v
    }

    /// Adds an operation node; output value names are made fresh from `outputs`.
    pub fn add_op(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[Option<ValueId>],
        outputs: &[&str],
    ) -> NodeId {
        let names: Vec<String> = outputs.iter().map(|o| self.fresh_name(o)).collect();
        let refs: Vec<Option<&str>> = names.iter().map(|s| Some(s.as_str())).collect();
        self.add_node(name, NodeKind::Op(op), inputs, &refs)
            .expect("names are fresh")
    }

    /// Adds a constant initializer; the value name is made fresh from `name`.
    pub fn add_const(&mut self, name: &str, tensor: Tensor) -> ValueId {
        let name = self.fresh_name(name);
        let kind = NodeKind::Const(Const {
            tensor,
            origin: ConstOrigin::Initializer {
                is_graph_input: false,
            },
        });
        let id = self
            .add_node(name.clone(), kind, &[], &[Some(&name)])
            .expect("name is fresh");
        self.dag[id].outputs[0].expect("one output")
    }

    fn new_value(&mut self, name: &str, producer: NodeId, index: usize) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(Some(Value {
            name: name.to_string(),
            ty: ValueType::Unknown,
            declared: None,
            value_info: None,
            producer: (producer, index),
            quant: None,
        }));
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// Connects `value` (or nothing) to input `slot` of `node`, growing the
    /// input list if needed.
    pub fn set_input(&mut self, node: NodeId, slot: usize, value: Option<ValueId>) {
        while self.dag[node].inputs.len() <= slot {
            self.dag[node].inputs.push(None);
        }
        let s = Slot::Input(slot as u32);
        if let Some(e) = self.find_edge_into(node, s, None) {
            self.dag.remove_edge(e);
        }
        self.dag[node].inputs[slot] = value;
        if let Some(v) = value {
            let p = self.producer(v);
            self.dag.add_edge(p, node, Edge { value: v, slot: s });
        }
    }

    /// Sets the values captured by `node`'s subgraphs.
    pub fn set_captures(&mut self, node: NodeId, captures: &[ValueId]) {
        while let Some(e) = self.find_edge_into(node, Slot::Capture, None) {
            self.dag.remove_edge(e);
        }
        self.dag[node].captures = captures.iter().copied().collect();
        for &v in captures {
            let p = self.producer(v);
            self.dag.add_edge(
                p,
                node,
                Edge {
                    value: v,
                    slot: Slot::Capture,
                },
            );
        }
    }

    fn find_edge_into(
        &self,
        node: NodeId,
        slot: Slot,
        value: Option<ValueId>,
    ) -> Option<EdgeIndex> {
        self.dag
            .edges_directed(node, Direction::Incoming)
            .find(|e| e.weight().slot == slot && value.is_none_or(|v| e.weight().value == v))
            .map(|e| e.id())
    }

    /// Makes every reader of `old` (node inputs, captures, graph outputs)
    /// read `new` instead.
    pub fn replace_all_uses(&mut self, old: ValueId, new: ValueId) {
        for (n, slot) in self.consumers(old) {
            match slot {
                Slot::Input(i) => self.set_input(n, i as usize, Some(new)),
                Slot::Capture => {
                    let caps: Vec<ValueId> = self.dag[n]
                        .captures
                        .iter()
                        .map(|&c| if c == old { new } else { c })
                        .collect();
                    let old_name = self.value(old).name.clone();
                    let new_name = self.value(new).name.clone();
                    self.set_captures(n, &caps);
                    if let Some(op) = self.dag[n].op_mut() {
                        for a in op.attrs.values_mut() {
                            for g in a.subgraphs_mut() {
                                g.rename_outer_ref(&old_name, &new_name);
                            }
                        }
                    }
                }
            }
        }
        for o in self.outputs.iter_mut() {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Renames the outer reference `old` to `new` in this subgraph and its
    /// nested subgraphs.
    pub fn rename_outer_ref(&mut self, old: &str, new: &str) {
        if old == new {
            return;
        }
        let ids: Vec<NodeId> = self.dag.node_indices().collect();
        for n in ids {
            if !self.dag.contains_node(n) {
                continue;
            }
            if matches!(self.dag[n].kind, NodeKind::OuterRef) {
                if let Some(v) = self.dag[n].outputs[0] {
                    if self.value(v).name == old {
                        // The graph may read `new` already (two identical outer constants
                        // merged into one): its readers of `old` read that one.
                        let existing = self.by_name.get(new).copied().filter(|&e| {
                            e != v && matches!(self.dag[self.producer(e)].kind, NodeKind::OuterRef)
                        });
                        match existing {
                            Some(e) => {
                                self.replace_all_uses(v, e);
                                self.remove_node(n);
                                continue;
                            }
                            None => self.rename_value(v, new),
                        }
                    }
                }
            }
            if let Some(op) = self.dag[n].op_mut() {
                for a in op.attrs.values_mut() {
                    for g in a.subgraphs_mut() {
                        g.rename_outer_ref(old, new);
                    }
                }
            }
        }
    }

    /// Renames a value (the caller keeps names unique), including where
    /// subgraphs read it by name.
    pub fn rename_value(&mut self, v: ValueId, new: &str) {
        let old_name = self.value(v).name.clone();
        for (n, slot) in self.consumers(v) {
            if slot == Slot::Capture {
                if let Some(op) = self.dag[n].op_mut() {
                    for a in op.attrs.values_mut() {
                        for g in a.subgraphs_mut() {
                            g.rename_outer_ref(&old_name, new);
                        }
                    }
                }
            }
        }
        let old = std::mem::replace(&mut self.value_mut(v).name, new.to_string());
        self.by_name.remove(&old);
        self.by_name.insert(new.to_string(), v);
        let val = self.value_mut(v);
        if let Some(d) = val.declared.as_mut() {
            d.name = new.to_string();
        }
        if let Some((_, d)) = val.value_info.as_mut() {
            d.name = new.to_string();
        }
    }

    /// Sets a value's type; a declaration from the file no longer applies and
    /// is rewritten from `ty` at export.
    pub fn set_value_type(&mut self, v: ValueId, ty: ValueType) {
        let val = self.value_mut(v);
        val.ty = ty;
        if let Some(d) = val.declared.as_mut() {
            d.r#type = None;
        }
        if let Some((_, d)) = val.value_info.as_mut() {
            d.r#type = None;
        }
    }

    /// Replaces what `node` computes (its output 0) by `replacement` and
    /// removes the node. If the output was a graph output, its name and
    /// declaration survive: `replacement` takes them when it can, else an
    /// Identity keeps the name.
    pub fn retire(&mut self, node: NodeId, replacement: ValueId) {
        let out = self.dag[node].outputs[0].expect("node has an output");
        let was_output = self.is_graph_output(out);
        let name = self.value(out).name.clone();
        let declared = self.value(out).declared.clone();
        let positions: Vec<usize> = (0..self.outputs.len())
            .filter(|&i| self.outputs[i] == out)
            .collect();
        self.replace_all_uses(out, replacement);
        self.remove_node(node);
        if !was_output {
            return;
        }
        let producer_is_op = matches!(self.dag[self.producer(replacement)].kind, NodeKind::Op(_));
        let shared = self.outputs.iter().filter(|&&o| o == replacement).count() > 1;
        if producer_is_op && !shared && !self.inputs.contains(&replacement) {
            self.rename_value(replacement, &name);
            self.value_mut(replacement).declared = declared;
        } else {
            let id = self.add_node(
                format!("{name}_identity"),
                NodeKind::Op(Op::new("Identity")),
                &[Some(replacement)],
                &[Some(&name)],
            );
            let id = id.expect("name was freed");
            let v = self.dag[id].outputs[0].expect("one output");
            self.value_mut(v).declared = declared;
            self.value_mut(v).ty = self.value(replacement).ty.clone();
            for i in positions {
                self.outputs[i] = v;
            }
        }
    }

    /// Marks `nodes` as one fused unit formed by `pattern`; returns its id.
    pub fn mark_unit(&mut self, nodes: &[NodeId], pattern: &str) -> u32 {
        let id = self.next_unit;
        self.next_unit += 1;
        for &n in nodes {
            self.dag[n].unit = Some(FusedUnit {
                id,
                pattern: pattern.to_string(),
            });
        }
        id
    }

    /// The nodes of unit `id`, in topological order.
    pub fn unit_nodes(&self, id: u32) -> Vec<NodeId> {
        let order = self.topo_order().unwrap_or_default();
        order
            .into_iter()
            .filter(|&n| self.dag[n].unit.as_ref().is_some_and(|u| u.id == id))
            .collect()
    }

    /// Removes a node and its output values. Its outputs must be unused.
    pub fn remove_node(&mut self, id: NodeId) {
        let node = self.dag.remove_node(id).expect("node exists");
        for v in node.outputs.into_iter().flatten() {
            if let Some(val) = self.values[v.index()].take() {
                self.by_name.remove(&val.name);
            }
            self.inputs.retain(|&i| i != v);
        }
    }

    /// The highest order key in use (the importer reserves file positions).
    pub(crate) fn set_order(&mut self, n: NodeId, order: u64) {
        self.dag[n].order = order;
        self.next_order = self.next_order.max(order);
    }
}
