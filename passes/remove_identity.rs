//! `remove-identity`: drops Identity nodes, and Dropout nodes as inference
//! runs them (output = input; the mask output must be unused).

use crate::prelude::*;

#[derive(Default)]
pub struct RemoveIdentity;

impl Pass for RemoveIdentity {
    fn name(&self) -> &'static str {
        "remove-identity"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            for m in g.find_matches(&ops(&["Identity", "Dropout"])) {
                let n = m.anchor;
                let name = g.display_node_name(n);
                if g.node(n).is_op("Dropout") && !dropout_is_identity(g, n) {
                    cx.note(name, "Dropout in training mode is kept");
                    continue;
                }
                if g.bypass(n, 0) {
                    cx.count("removed", 1);
                } else {
                    cx.note(
                        name,
                        "kept: its output is a graph output or its other outputs are read",
                    );
                }
            }
            Ok(())
        })
    }
}

/// Dropout is the identity unless `training_mode` is a true constant or a
/// runtime value.
fn dropout_is_identity(g: &Graph, n: NodeId) -> bool {
    match g.node(n).inputs.get(2).copied().flatten() {
        None => true,
        Some(v) => g
            .const_tensor(v)
            .and_then(|t| t.to_i64_vec())
            .is_some_and(|b| b.iter().all(|&x| x == 0)),
    }
}
