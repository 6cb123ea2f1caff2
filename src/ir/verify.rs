//! Structural checks of the IR: what every pass must preserve.

use super::{Graph, NodeKind, Slot};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::HashSet;

/// Checks the graph (and its subgraphs): acyclic; every input, capture and
/// output refers to a live value; petgraph edges mirror node inputs and
/// captures exactly; every value's producer lists it; names are unique.
/// Returns the first problem found, naming the node or value.
pub fn verify_graph(g: &Graph) -> Result<(), String> {
    g.topo_order().map_err(|e| e.to_string())?;
    let mut names = HashSet::new();
    for v in g.value_ids() {
        let val = g.value(v);
        if !names.insert(val.name.as_str()) {
            return Err(format!("value name `{}` is defined twice", val.name));
        }
        let (p, i) = val.producer;
        let ok = g
            .try_node(p)
            .and_then(|n| n.outputs.get(i).copied().flatten())
            == Some(v);
        if !ok {
            return Err(format!("value `{}` does not match its producer", val.name));
        }
        if g.value_by_name(&val.name) != Some(v) {
            return Err(format!(
                "value `{}` is missing from the name index",
                val.name
            ));
        }
    }
    for n in g.node_ids() {
        let node = g.node(n);
        let who = || format!("node `{}` ({})", g.display_node_name(n), node.op_type());
        let mut expected: Vec<(u32, Slot)> = vec![];
        for (slot, inp) in node.inputs.iter().enumerate() {
            if let Some(v) = inp {
                if g.try_value(*v).is_none() {
                    return Err(format!("{} reads a removed value at input {slot}", who()));
                }
                expected.push((v.0, Slot::Input(slot as u32)));
            }
        }
        for v in &node.captures {
            if g.try_value(*v).is_none() {
                return Err(format!("{} captures a removed value", who()));
            }
            expected.push((v.0, Slot::Capture));
        }
        let mut actual: Vec<(u32, Slot)> = g
            .petgraph()
            .edges_directed(n, Direction::Incoming)
            .map(|e| {
                let w = e.weight();
                (w.value.0, w.slot)
            })
            .collect();
        for e in g.petgraph().edges_directed(n, Direction::Incoming) {
            if g.producer(e.weight().value) != e.source() {
                return Err(format!(
                    "{}: an edge does not start at its value's producer",
                    who()
                ));
            }
        }
        expected.sort();
        actual.sort();
        if expected != actual {
            return Err(format!("{}: edges do not match its inputs", who()));
        }
        if let NodeKind::Op(op) = &node.kind {
            for (k, a) in &op.attrs {
                for sg in a.subgraphs() {
                    verify_graph(sg).map_err(|e| format!("{}, subgraph `{k}`: {e}", who()))?;
                }
            }
        }
    }
    for &v in g.inputs.iter().chain(&g.outputs) {
        if g.try_value(v).is_none() {
            return Err("a graph input or output refers to a removed value".to_string());
        }
    }
    Ok(())
}
