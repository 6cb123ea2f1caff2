//! `fold-constants`: evaluates operations whose inputs are all constants,
//! and shape queries whose answer is already known (`Shape` of a value with
//! a concrete shape; `Gather` of fixed dimensions out of a `Shape`, the
//! chains torch exports feed to Reshape). Evaluation runs the single node in
//! tract, so every op tract knows folds the way an engine would compute it.

use crate::prelude::*;

/// Ops never folded: random, or with side effects on determinism.
const NEVER: &[&str] = &[
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
];
/// Results larger than this many elements (and larger than the inputs) stay
/// computed at run time rather than stored in the file.
const MAX_NEW_ELEMENTS: usize = 1 << 16;

#[derive(Default)]
pub struct FoldConstants;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let opsets = model.opset_import.clone();
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            let order = g.topo_order().map_err(|e| Error::invalid(e.to_string()))?;
            for n in order {
                let Some(op) = g.node(n).op() else { continue };
                if !(op.domain.is_empty() || op.domain == "ai.onnx")
                    || op.has_subgraphs()
                    || NEVER.contains(&op.op_type.as_str())
                {
                    continue;
                }
                if g.node(n)
                    .outputs
                    .iter()
                    .flatten()
                    .any(|&v| g.is_graph_output(v))
                {
                    continue;
                }
                let folded = match op.op_type.as_str() {
                    "Shape" => fold_shape(g, n),
                    "Gather" => fold_gather_of_shape(g, n).or_else(|| evaluate(g, n, &opsets, cx)),
                    _ => evaluate(g, n, &opsets, cx),
                };
                let Some(tensors) = folded else { continue };
                replace_with_constants(g, n, tensors);
                cx.count("folded", 1);
            }
            Ok(())
        })
    }
}

fn replace_with_constants(g: &mut Graph, n: NodeId, tensors: Vec<Tensor>) {
    // Results come in the order of the outputs that exist.
    let outs: Vec<ValueId> = g.node(n).outputs.iter().flatten().copied().collect();
    for (out, t) in outs.into_iter().zip(tensors) {
        let name = g.value(out).name.clone();
        let c = g.add_const(&format!("{name}_folded"), t);
        let ty = ValueType::Tensor(TensorType {
            dtype: Some(g.const_tensor(c).expect("const").dtype),
            shape: Some(
                g.const_tensor(c)
                    .expect("const")
                    .dims
                    .iter()
                    .map(|&d| Dim::Fixed(d))
                    .collect(),
            ),
        });
        g.value_mut(c).ty = ty;
        g.replace_all_uses(out, c);
    }
    g.remove_dead_nodes_from(n);
}

/// `Shape(x)` when x's shape is fully known (opset 15 `start`/`end` too).
fn fold_shape(g: &Graph, n: NodeId) -> Option<Vec<Tensor>> {
    let node = g.node(n);
    let dims = g
        .value(node.inputs.first().copied().flatten()?)
        .ty
        .tensor()?
        .shape
        .clone()?;
    let rank = dims.len() as i64;
    let op = node.op()?;
    let clamp = |v: i64| {
        if v < 0 {
            (v + rank).max(0)
        } else {
            v.min(rank)
        }
    };
    let start = clamp(op.attr("start").and_then(|a| a.as_int()).unwrap_or(0)) as usize;
    let end = clamp(op.attr("end").and_then(|a| a.as_int()).unwrap_or(rank)) as usize;
    let vals: Option<Vec<i64>> = dims
        .get(start..end.max(start))?
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => Some(*v),
            _ => None,
        })
        .collect();
    let vals = vals?;
    Some(vec![Tensor::from_i64(vec![vals.len() as i64], &vals)])
}

/// `Gather(Shape(x), const indices)` when the gathered dims are fixed, even
/// if other dims of x are symbolic.
fn fold_gather_of_shape(g: &Graph, n: NodeId) -> Option<Vec<Tensor>> {
    let node = g.node(n);
    let data = node.inputs.first().copied().flatten()?;
    let idx = g.const_tensor(node.inputs.get(1).copied().flatten()?)?;
    let shape_node = g.node(g.producer(data));
    if !shape_node.is_op("Shape")
        || shape_node.op()?.attrs.contains_key("start")
        || shape_node.op()?.attrs.contains_key("end")
    {
        return None;
    }
    if node
        .op()?
        .attr("axis")
        .and_then(|a| a.as_int())
        .unwrap_or(0)
        != 0
    {
        return None;
    }
    let dims = g
        .value(shape_node.inputs.first().copied().flatten()?)
        .ty
        .tensor()?
        .shape
        .clone()?;
    let rank = dims.len() as i64;
    let picked: Option<Vec<i64>> = idx
        .to_i64_vec()?
        .into_iter()
        .map(|i| {
            let i = if i < 0 { i + rank } else { i };
            match dims.get(usize::try_from(i).ok()?)? {
                Dim::Fixed(v) => Some(*v),
                _ => None,
            }
        })
        .collect();
    Some(vec![Tensor::from_i64(idx.dims.clone(), &picked?)])
}

/// Runs the node alone in tract on its constant inputs.
fn evaluate(
    g: &Graph,
    n: NodeId,
    opsets: &[crate::ir::OpsetImport],
    cx: &mut PassContext,
) -> Option<Vec<Tensor>> {
    let node = g.node(n);
    // Nodes without inputs (random generators, ...) are not folded.
    node.inputs.iter().flatten().next()?;
    let mut inputs = vec![];
    for v in node.inputs.iter() {
        match v {
            None => inputs.push(None),
            Some(v) => inputs.push(Some(g.const_tensor(*v)?.clone())),
        }
    }
    if inputs.iter().flatten().any(|t| t.dtype == DataType::String) {
        return None;
    }
    let in_elems: usize = inputs.iter().flatten().map(Tensor::len).sum();
    let mut mini = Graph::new("fold");
    let ins: Vec<Option<ValueId>> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.map(|t| mini.add_const(&format!("in{i}"), t)))
        .collect();
    let outs: Vec<String> = (0..node.outputs.len()).map(|i| format!("out{i}")).collect();
    let out_refs: Vec<Option<&str>> = node
        .outputs
        .iter()
        .zip(&outs)
        .map(|(o, name)| o.map(|_| name.as_str()))
        .collect();
    let id = mini
        .add_node(node.name.clone(), node.kind.clone(), &ins, &out_refs)
        .ok()?;
    mini.outputs = mini.node(id).outputs.iter().flatten().copied().collect();
    let m = Model {
        ir_version: 8,
        opset_import: opsets.to_vec(),
        graph: mini,
        ..Default::default()
    };
    let bytes = crate::emit::to_bytes(&m);
    match crate::tract_runner::run_once(&bytes, None, &[]) {
        Ok(ts) => {
            if ts.iter().map(Tensor::len).sum::<usize>() > MAX_NEW_ELEMENTS.max(in_elems) {
                cx.note(
                    g.display_node_name(n),
                    "not folded: result is larger than its inputs",
                );
                return None;
            }
            Some(ts)
        }
        Err(e) => {
            cx.note(g.display_node_name(n), format!("not folded: {e}"));
            None
        }
    }
}
