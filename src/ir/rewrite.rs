//! Graph rewrites that passes share: bypassing a node, removing dead code,
//! refreshing what subgraphs capture, visiting every (sub)graph.

use super::{Graph, Model, NodeId, NodeKind, ValueId};
use std::collections::BTreeSet;

impl Graph {
    /// Removes a node whose output 0 equals its input `slot` (Identity,
    /// inference Dropout, ...): readers of the output read the input instead.
    /// Returns false (and changes nothing) when the output is a graph output,
    /// whose name must survive, or the input is missing.
    pub fn bypass(&mut self, node: NodeId, slot: usize) -> bool {
        let n = self.node(node);
        let (Some(Some(input)), Some(Some(output))) =
            (n.inputs.get(slot).copied(), n.outputs.first().copied())
        else {
            return false;
        };
        let other_outputs_used = n.outputs.iter().skip(1).flatten().any(|&v| self.is_used(v));
        if self.is_graph_output(output) || other_outputs_used {
            return false;
        }
        self.replace_all_uses(output, input);
        self.remove_node(node);
        true
    }

    /// Whether a value is read by a node, a subgraph or as a graph output.
    pub fn is_used(&self, v: ValueId) -> bool {
        self.is_graph_output(v) || !self.consumers(v).is_empty()
    }

    /// Removes nodes whose outputs nobody reads (and unused constants and
    /// outer references). Graph inputs stay. Returns how many were removed.
    pub fn remove_dead_nodes(&mut self) -> usize {
        let mut removed = 0;
        loop {
            let dead: Vec<NodeId> = self
                .node_ids()
                .filter(|&n| {
                    let node = self.node(n);
                    let is_input = matches!(node.kind, NodeKind::Input)
                        || node
                            .outputs
                            .iter()
                            .flatten()
                            .any(|v| self.inputs.contains(v));
                    !is_input && !node.outputs.iter().flatten().any(|&v| self.is_used(v))
                })
                .collect();
            if dead.is_empty() {
                return removed;
            }
            for n in dead {
                self.remove_node(n);
                removed += 1;
            }
        }
    }

    /// Removes `node` if none of its outputs is read, then its producers
    /// that became unused in turn (a targeted dead-code sweep).
    pub fn remove_dead_nodes_from(&mut self, node: NodeId) {
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            let Some(nd) = self.try_node(n) else { continue };
            let is_input = matches!(nd.kind, NodeKind::Input)
                || nd.outputs.iter().flatten().any(|v| self.inputs.contains(v));
            if is_input || nd.outputs.iter().flatten().any(|&v| self.is_used(v)) {
                continue;
            }
            let producers: Vec<NodeId> = nd
                .inputs
                .iter()
                .flatten()
                .chain(nd.captures.iter())
                .map(|&v| self.producer(v))
                .collect();
            self.remove_node(n);
            stack.extend(producers);
        }
    }

    /// Removes the constant behind `v` if nothing reads it any more (and it
    /// is not a graph input). Returns whether it was removed.
    pub fn remove_if_unused_const(&mut self, v: ValueId) -> bool {
        let Some(val) = self.try_value(v) else {
            return false;
        };
        let p = val.producer.0;
        if self.node(p).as_const().is_some() && !self.is_used(v) && !self.inputs.contains(&v) {
            self.remove_node(p);
            return true;
        }
        false
    }

    /// Names this graph reads from enclosing graphs (its `OuterRef` nodes).
    pub fn outer_refs(&self) -> BTreeSet<String> {
        self.node_ids()
            .filter(|&n| matches!(self.node(n).kind, NodeKind::OuterRef))
            .filter_map(|n| self.node(n).outputs[0].map(|v| self.value(v).name.clone()))
            .collect()
    }

    /// Recomputes the captures of every node with subgraphs from what the
    /// subgraphs read (after a pass edited them). Names not defined here
    /// become outer references of this graph.
    pub fn refresh_captures(&mut self) {
        let nodes: Vec<NodeId> = self.node_ids().collect();
        for n in nodes {
            let Some(op) = self.node(n).op() else {
                continue;
            };
            let mut names = BTreeSet::new();
            for a in op.attrs.values() {
                for sg in a.subgraphs() {
                    names.extend(sg.outer_refs());
                }
            }
            let mut caps = vec![];
            for name in names {
                let v = match self.value_by_name(&name) {
                    Some(v) => v,
                    None => {
                        let r = self
                            .add_node(name.clone(), NodeKind::OuterRef, &[], &[Some(&name)])
                            .expect("new name");
                        self.node(r).outputs[0].expect("one output")
                    }
                };
                caps.push(v);
            }
            if caps != self.node(n).captures.to_vec() {
                self.set_captures(n, &caps);
            }
        }
    }
}

/// Calls `f` on every graph of the model, innermost subgraphs first, then
/// refreshes captures so that the outer graphs see what changed inside.
pub fn for_each_graph_mut<E>(
    model: &mut Model,
    f: &mut impl FnMut(&mut Graph) -> Result<(), E>,
) -> Result<(), E> {
    visit(&mut model.graph, f)
}

fn visit<E>(g: &mut Graph, f: &mut impl FnMut(&mut Graph) -> Result<(), E>) -> Result<(), E> {
    let nodes: Vec<NodeId> = g.node_ids().collect();
    let mut any = false;
    for n in nodes {
        if let Some(op) = g.node_mut(n).op_mut() {
            for a in op.attrs.values_mut() {
                for sg in a.subgraphs_mut() {
                    visit(sg, f)?;
                    any = true;
                }
            }
        }
    }
    if any {
        g.refresh_captures();
    }
    f(g)
}

/// Renames values of subgraphs that shadow a name of an enclosing graph
/// (ONNX requires one definition per name along a scope chain; passes that
/// work graph by graph can create such pairs). The inner value gets a fresh
/// name, unused anywhere in the model. Returns how many were renamed.
pub fn unshadow_names(model: &mut Model) -> usize {
    let mut all = BTreeSet::new();
    all_value_names(&model.graph, &mut all);
    let mut renamed = 0;
    unshadow(&mut model.graph, &BTreeSet::new(), &mut all, &mut renamed);
    renamed
}

/// Every value name of `g` and of its subgraphs, into `out`.
pub fn all_value_names(g: &Graph, out: &mut BTreeSet<String>) {
    visit_graphs(g, &mut |g| {
        out.extend(g.value_ids().map(|v| g.value(v).name.clone()))
    });
}

/// Every node name of `g` and of its subgraphs (empty ones included), into `out`.
pub fn all_node_names(g: &Graph, out: &mut BTreeSet<String>) {
    visit_graphs(g, &mut |g| {
        out.extend(g.node_ids().map(|n| g.node(n).name.clone()))
    });
}

/// Calls `f` on `g`, then on its subgraphs, outermost first.
pub fn visit_graphs(g: &Graph, f: &mut impl FnMut(&Graph)) {
    f(g);
    for n in g.node_ids() {
        if let Some(op) = g.node(n).op() {
            for a in op.attrs.values() {
                for sg in a.subgraphs() {
                    visit_graphs(sg, f);
                }
            }
        }
    }
}

fn unshadow(
    g: &mut Graph,
    outer: &BTreeSet<String>,
    all: &mut BTreeSet<String>,
    renamed: &mut usize,
) {
    let ids: Vec<ValueId> = g.value_ids().collect();
    for v in ids {
        let producer = g.producer(v);
        if matches!(g.node(producer).kind, NodeKind::OuterRef) {
            continue;
        }
        let name = g.value(v).name.clone();
        if outer.contains(&name) {
            let fresh = (1..)
                .map(|i| format!("{name}_{i}"))
                .find(|c| !all.contains(c))
                .expect("unbounded");
            all.insert(fresh.clone());
            g.rename_value(v, &fresh);
            *renamed += 1;
        }
    }
    let mut scope = outer.clone();
    for v in g.value_ids() {
        scope.insert(g.value(v).name.clone());
    }
    let nodes: Vec<NodeId> = g.node_ids().collect();
    for n in nodes {
        if let Some(op) = g.node_mut(n).op_mut() {
            for a in op.attrs.values_mut() {
                for sg in a.subgraphs_mut() {
                    unshadow(sg, &scope, all, renamed);
                }
            }
        }
    }
}
