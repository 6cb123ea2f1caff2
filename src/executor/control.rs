//! Control flow: `If`, whose branches are planned once, like the main graph, into
//! executors of their own.
//!
//! A branch reads values of the enclosing graph by name (`OuterRef` nodes): the `If`
//! step receives them as extra inputs after the condition (the node's captures), and
//! hands each branch the ones it reads as its graph inputs. Recurrent-state models
//! (silero-style VADs) pick their sample-rate branch this way.

use std::collections::HashMap;

use super::ops::Kernel;
use super::value::Array;
use super::{Executor, ExecutorOptions};
use crate::ir::{AttrValue, Graph, Model, Node};

/// A planned `If`.
struct IfKernel {
    then_branch: Executor,
    else_branch: Executor,
    /// Names of the captured outer values, in the step's input order after the condition.
    captured: Vec<String>,
    n_outputs: usize,
}

impl IfKernel {
    fn branch_inputs(
        &self,
        branch: &Executor,
        inputs: &[Option<&Array>],
    ) -> Result<Vec<(String, Array)>, String> {
        let by_name: HashMap<&str, &Array> = self
            .captured
            .iter()
            .zip(&inputs[1..])
            .filter_map(|(n, a)| a.map(|a| (n.as_str(), a)))
            .collect();
        branch
            .inputs()
            .iter()
            .map(|spec| {
                by_name
                    .get(spec.name.as_str())
                    .map(|a| (spec.name.clone(), (*a).clone()))
                    .ok_or_else(|| {
                        format!("a branch reads `{}`, which is not available", spec.name)
                    })
            })
            .collect()
    }
}

impl Kernel for IfKernel {
    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        self.run_with(inputs, 1)
    }

    fn run_with(&self, inputs: &[Option<&Array>], _threads: usize) -> Result<Vec<Array>, String> {
        let cond = inputs
            .first()
            .copied()
            .flatten()
            .ok_or("missing condition")?;
        if cond.len() != 1 {
            return Err(format!(
                "the condition must hold one element, got shape {:?}",
                cond.shape
            ));
        }
        let taken = cond.data.to_f64_vec()[0] != 0.0;
        let branch = if taken {
            &self.then_branch
        } else {
            &self.else_branch
        };
        let ins = self.branch_inputs(branch, inputs)?;
        let outs = branch
            .run_arrays(ins.iter().map(|(n, a)| (n.as_str(), a.clone())).collect())
            .map_err(|e| format!("{} branch: {e}", if taken { "then" } else { "else" }))?;
        if outs.len() != self.n_outputs {
            return Err(format!(
                "the branch gives {} outputs, the node declares {}",
                outs.len(),
                self.n_outputs
            ));
        }
        Ok(outs.into_iter().map(|(_, a)| a).collect())
    }
}

/// The subgraph attribute `name` of `node`.
fn branch<'a>(node: &'a Node, name: &str) -> Result<&'a Graph, String> {
    match node.op().and_then(|op| op.attr(name)).map(|a| &a.value) {
        Some(AttrValue::Graph(g)) => Ok(g),
        _ => Err(format!("missing subgraph attribute `{name}`")),
    }
}

/// Plans an `If` node of `outer`'s graph: the kernel, and the names of the captured
/// values it expects after the condition (`node.captures`, in order).
pub(super) fn build_if(
    outer: &Model,
    node: &Node,
    options: &ExecutorOptions,
) -> Result<Box<dyn Kernel>, String> {
    let plan = |name: &str| -> Result<Executor, String> {
        let g = branch(node, name)?;
        let model = Model {
            ir_version: outer.ir_version,
            opset_import: outer.opset_import.clone(),
            graph: g.clone(),
            ..Default::default()
        };
        Executor::plan(&model, options.clone(), true).map_err(|e| format!("{name}: {e}"))
    };
    let captured = node
        .captures
        .iter()
        .map(|&v| outer.graph.value(v).name.clone())
        .collect();
    Ok(Box::new(IfKernel {
        then_branch: plan("then_branch")?,
        else_branch: plan("else_branch")?,
        captured,
        n_outputs: node.outputs.len(),
    }))
}
