//! `sink-constants`: moves a constant that only one subgraph reads into that
//! subgraph.
//!
//! Exporters often keep every weight in the main graph's initializers and let
//! If branches read them by name (silero-VAD's opset-18 export switches
//! between a 16 kHz and an 8 kHz network that way). Inside the branch the
//! weight is then an outer reference, not a constant, and nothing can fold,
//! fuse or quantize it there. Moving it in makes the branch self-contained;
//! the model computes the same thing and stores each tensor once, as before.
//!
//! A constant moves only when exactly one subgraph of one node reads it and
//! nothing else does (not the graph itself, not a sibling branch, not a graph
//! output); overridable initializers (also listed as graph inputs) stay.
//! Nested subgraphs are visited after their parent, so a constant sinks as
//! deep as its single reader.

use crate::prelude::*;

#[derive(Default)]
pub struct SinkConstants;

impl Pass for SinkConstants {
    fn name(&self) -> &'static str {
        "sink-constants"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let moved = sink(&mut model.graph);
        if moved > 0 {
            cx.count("constants moved into subgraphs", moved as u64);
        }
        Ok(())
    }
}

/// Sinks what can be sunk out of `g`, then recurses; returns how many moved.
fn sink(g: &mut Graph) -> usize {
    let mut moved = 0;
    let consts: Vec<NodeId> = g
        .node_ids()
        .filter(|&n| {
            matches!(
                &g.node(n).kind,
                NodeKind::Const(c)
                    if !matches!(c.origin, ConstOrigin::Initializer { is_graph_input: true })
            )
        })
        .collect();
    for c in consts {
        let Some(v) = g.node(c).outputs[0] else {
            continue;
        };
        if g.is_graph_output(v) || g.inputs.contains(&v) {
            continue;
        }
        let readers = g.consumers(v);
        let [(reader, Slot::Capture)] = readers.as_slice() else {
            continue;
        };
        let reader = *reader;
        let name = g.value(v).name.clone();
        // Exactly one of the reader's subgraphs may read it.
        let reading: usize = g
            .node(reader)
            .op()
            .map(|op| {
                op.attrs
                    .values()
                    .flat_map(|a| a.subgraphs())
                    .filter(|sg| sg.outer_refs().contains(&name))
                    .count()
            })
            .unwrap_or(0);
        if reading != 1 {
            continue;
        }
        let NodeKind::Const(konst) = g.node(c).kind.clone() else {
            continue;
        };
        let op = g.node_mut(reader).op_mut().expect("a node with subgraphs");
        let target = op
            .attrs
            .values_mut()
            .flat_map(|a| a.subgraphs_mut())
            .find(|sg| sg.outer_refs().contains(&name))
            .expect("counted above");
        let Some(rv) = target.value_by_name(&name) else {
            continue;
        };
        let r = target.producer(rv);
        let ty = ValueType::Tensor(TensorType::new(
            konst.tensor.dtype,
            konst.tensor.dims.iter().map(|&d| Dim::Fixed(d)).collect(),
        ));
        target.node_mut(r).kind = NodeKind::Const(konst);
        target.set_value_type(rv, ty);
        let caps: Vec<ValueId> = g
            .node(reader)
            .captures
            .iter()
            .copied()
            .filter(|&x| x != v)
            .collect();
        g.set_captures(reader, &caps);
        g.remove_node(c);
        moved += 1;
    }
    let nodes: Vec<NodeId> = g.node_ids().collect();
    for n in nodes {
        if let Some(op) = g.node_mut(n).op_mut() {
            for a in op.attrs.values_mut() {
                for sg in a.subgraphs_mut() {
                    moved += sink(sg);
                }
            }
        }
    }
    moved
}
