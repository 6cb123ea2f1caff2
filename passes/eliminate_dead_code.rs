//! `eliminate-dead-code`: removes nodes and constants nobody reads.

use crate::prelude::*;

#[derive(Default)]
pub struct EliminateDeadCode;

impl Pass for EliminateDeadCode {
    fn name(&self) -> &'static str {
        "eliminate-dead-code"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            let n = g.remove_dead_nodes();
            cx.count("removed", n as u64);
            Ok(())
        })
    }
}
