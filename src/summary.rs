//! Model summaries for `onnxq inspect`: op histogram, parameters, opsets.

use crate::ir::{Graph, Model, NodeKind};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Counts over a model, subgraphs included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// Operation count per (qualified) op type; `Constant` nodes count as ops.
    pub ops: BTreeMap<String, usize>,
    /// Elements of all constant tensors (weights, biases, shape constants).
    pub parameters: usize,
    /// Bytes of all constant tensors.
    pub weight_bytes: usize,
    pub inputs: usize,
    pub outputs: usize,
    pub subgraphs: usize,
}

impl ModelStats {
    pub fn of(model: &Model) -> ModelStats {
        let mut s = ModelStats {
            inputs: model.graph.inputs.len(),
            outputs: model.graph.outputs.len(),
            ..Default::default()
        };
        s.add_graph(&model.graph);
        s
    }

    fn add_graph(&mut self, g: &Graph) {
        for n in g.node_ids() {
            let node = g.node(n);
            match &node.kind {
                NodeKind::Const(c) => {
                    self.parameters += c.tensor.len();
                    self.weight_bytes += c.tensor.byte_size();
                    if matches!(c.origin, crate::ir::ConstOrigin::ConstantOp(_)) {
                        *self.ops.entry("Constant".into()).or_default() += 1;
                    }
                }
                NodeKind::Op(op) => {
                    *self.ops.entry(op.qualified_name()).or_default() += 1;
                    for a in op.attrs.values() {
                        for sg in a.subgraphs() {
                            self.subgraphs += 1;
                            self.add_graph(sg);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    pub fn op_count(&self) -> usize {
        self.ops.values().sum()
    }
}

/// The human-readable summary printed by `inspect`.
pub fn summary_text(model: &Model) -> String {
    let s = ModelStats::of(model);
    let mut out = String::new();
    let opsets: Vec<String> = model
        .opset_import
        .iter()
        .map(|o| {
            format!(
                "{}={}",
                if o.domain.is_empty() {
                    "ai.onnx"
                } else {
                    &o.domain
                },
                o.version
            )
        })
        .collect();
    let _ = writeln!(out, "opsets: {}", opsets.join(", "));
    let _ = writeln!(out, "ir_version: {}", model.ir_version);
    if !model.producer_name.is_empty() {
        let _ = writeln!(
            out,
            "producer: {} {}",
            model.producer_name, model.producer_version
        );
    }
    let _ = writeln!(
        out,
        "inputs: {}, outputs: {}, subgraphs: {}",
        s.inputs, s.outputs, s.subgraphs
    );
    let _ = writeln!(out, "nodes: {}", s.op_count());
    let _ = writeln!(
        out,
        "parameters: {} ({})",
        s.parameters,
        human_bytes(s.weight_bytes)
    );
    let mut ops: Vec<(&String, &usize)> = s.ops.iter().collect();
    ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let _ = writeln!(out, "op histogram:");
    for (op, n) in ops {
        let _ = writeln!(out, "  {n:>6}  {op}");
    }
    out
}

pub fn human_bytes(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
    } else if b >= 1 << 10 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}
