//! Control flow: `If`, `Loop` and `Scan`, whose subgraphs are planned once, like the
//! main graph, into executors of their own, and run as often as the node says.
//!
//! A subgraph reads values of the enclosing graph by name (`OuterRef` nodes): the step
//! receives them as extra inputs after the node's own (the node's captures), and hands
//! the subgraph the ones it reads as graph inputs, beside its formal inputs (a Loop
//! body's iteration number, condition and carried values; a Scan body's states and
//! scan slices). Recurrent-state models (silero-style VADs) pick their sample-rate
//! branch this way; exported RNN cells and cumulative ops iterate a Loop or a Scan.

use std::collections::HashMap;

use super::ops::Kernel;
use super::value::Array;
use super::value::ArrayData;
use super::{Executor, ExecutorOptions};
use crate::ir::{AttrValue, Graph, Model, Node};

/// A planned `If`: the condition, then the captures.
struct IfKernel {
    then_branch: Body,
    else_branch: Body,
    n_outputs: usize,
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
        let branch = if scalar(cond, "the condition")? != 0 {
            &self.then_branch
        } else {
            &self.else_branch
        };
        let outs = branch.run(vec![], inputs, 1)?;
        if outs.len() != self.n_outputs {
            return Err(format!(
                "the branch gives {} outputs, the node declares {}",
                outs.len(),
                self.n_outputs
            ));
        }
        Ok(outs)
    }
}

/// The subgraph attribute `name` of `node`.
fn branch<'a>(node: &'a Node, name: &str) -> Result<&'a Graph, String> {
    match node.op().and_then(|op| op.attr(name)).map(|a| &a.value) {
        Some(AttrValue::Graph(g)) => Ok(g),
        _ => Err(format!("missing subgraph attribute `{name}`")),
    }
}

/// Plans an `If` node of `outer`'s graph (inputs: the condition, then `node.captures`).
pub(super) fn build_if(
    outer: &Model,
    node: &Node,
    options: &ExecutorOptions,
) -> Result<Box<dyn Kernel>, String> {
    Ok(Box::new(IfKernel {
        then_branch: Body::plan(outer, node, "then_branch", options)?,
        else_branch: Body::plan(outer, node, "else_branch", options)?,
        n_outputs: node.outputs.len(),
    }))
}

/// A planned subgraph with its formal input names (in order) and the captured outer
/// values the step receives after the node's inputs.
struct Body {
    /// The subgraph attribute (`then_branch`, `body`, ...), for errors.
    attr: &'static str,
    exec: Executor,
    formal: Vec<String>,
    captured: Vec<String>,
    /// Per body output: the empty stack of zero iterations, `[0, dims...]` of the declared
    /// element type when the declared shape is fixed, else `[0]` f32.
    empty: Vec<Array>,
}

impl Body {
    fn plan(
        outer: &Model,
        node: &Node,
        attr: &'static str,
        options: &ExecutorOptions,
    ) -> Result<Body, String> {
        let g = branch(node, attr)?;
        let model = Model {
            ir_version: outer.ir_version,
            opset_import: outer.opset_import.clone(),
            graph: g.clone(),
            ..Default::default()
        };
        let exec =
            Executor::plan(&model, options.clone(), true).map_err(|e| format!("{attr}: {e}"))?;
        let empty = g
            .outputs
            .iter()
            .map(|&v| {
                let t = g.value(v).ty.tensor();
                let dims: Option<Vec<usize>> = t.and_then(|t| t.shape.as_ref()).and_then(|s| {
                    s.iter()
                        .map(|d| match d {
                            crate::ir::Dim::Fixed(n) if *n >= 0 => Some(*n as usize),
                            _ => None,
                        })
                        .collect()
                });
                let data = t.and_then(|t| t.dtype).and_then(ArrayData::empty);
                match (dims, data) {
                    (Some(mut dims), Some(data)) => {
                        dims.insert(0, 0);
                        Array::new(dims, data).unwrap_or_else(|_| Array::f32(vec![0], vec![]))
                    }
                    _ => Array::f32(vec![0], vec![]),
                }
            })
            .collect();
        Ok(Body {
            attr,
            exec,
            empty,
            formal: g.inputs.iter().map(|&v| g.value(v).name.clone()).collect(),
            captured: node
                .captures
                .iter()
                .map(|&v| outer.graph.value(v).name.clone())
                .collect(),
        })
    }

    /// Runs the body on its formal inputs (in order) and the captured values (the
    /// step's inputs from `first_capture`), passing only what the body reads.
    fn run(
        &self,
        formal: Vec<Array>,
        step_inputs: &[Option<&Array>],
        first_capture: usize,
    ) -> Result<Vec<Array>, String> {
        if formal.len() != self.formal.len() {
            return Err(format!(
                "the body declares {} inputs, the node gives {}",
                self.formal.len(),
                formal.len()
            ));
        }
        let mut by_name: HashMap<&str, Array> =
            self.formal.iter().map(String::as_str).zip(formal).collect();
        for (n, a) in self
            .captured
            .iter()
            .zip(&step_inputs[first_capture.min(step_inputs.len())..])
        {
            if let Some(a) = a {
                by_name.entry(n.as_str()).or_insert_with(|| (*a).clone());
            }
        }
        let ins = self
            .exec
            .inputs()
            .iter()
            .map(|spec| {
                by_name
                    .remove(spec.name.as_str())
                    .map(|a| (spec.name.as_str(), a))
                    .ok_or_else(|| {
                        format!("the body reads `{}`, which is not available", spec.name)
                    })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let outs = self
            .exec
            .run_arrays(ins)
            .map_err(|e| format!("{}: {e}", self.attr))?;
        Ok(outs.into_iter().map(|(_, a)| a).collect())
    }
}

/// A scalar's value as i64 (the trip count) or bool (a condition).
fn scalar(a: &Array, what: &str) -> Result<i64, String> {
    if a.len() != 1 {
        return Err(format!(
            "{what} must hold one element, got shape {:?}",
            a.shape
        ));
    }
    Ok(a.data.to_i64_vec()[0])
}

/// `a` without axis `axis`, at index `index` of it.
fn slice_axis(a: &Array, axis: usize, index: usize) -> Result<Array, String> {
    let len = a.shape[axis];
    let outer: usize = a.shape[..axis].iter().product();
    let inner: usize = a.shape[axis + 1..].iter().product();
    let mut data = a.data.empty_like(outer * inner);
    for o in 0..outer {
        let start = (o * len + index) * inner;
        data.extend_from(&a.data, start, start + inner)?;
    }
    let mut shape = a.shape.clone();
    shape.remove(axis);
    Array::new(shape, data)
}

/// Stacks equal-shaped `parts` along a new axis `axis`.
fn stack_axis(parts: &[Array], axis: usize) -> Result<Array, String> {
    let first = &parts[0];
    if let Some(p) = parts
        .iter()
        .find(|p| p.shape != first.shape || p.dtype() != first.dtype())
    {
        return Err(format!(
            "scan outputs change shape or type between iterations ({:?} {} vs {:?} {})",
            first.shape,
            first.dtype(),
            p.shape,
            p.dtype()
        ));
    }
    let outer: usize = first.shape[..axis].iter().product();
    let inner: usize = first.shape[axis..].iter().product();
    let mut data = first.data.empty_like(first.len() * parts.len());
    for o in 0..outer {
        for p in parts {
            data.extend_from(&p.data, o * inner, (o + 1) * inner)?;
        }
    }
    let mut shape = first.shape.clone();
    shape.insert(axis, parts.len());
    Array::new(shape, data)
}

/// A planned `Loop`: inputs `M`, `cond`, the carried values, then the captures.
struct LoopKernel {
    body: Body,
    n_carried: usize,
    n_outputs: usize,
}

impl Kernel for LoopKernel {
    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        let n = self.n_carried;
        let trip = match inputs.first().copied().flatten() {
            Some(m) => Some(scalar(m, "the trip count M")?),
            None => None,
        };
        let mut cond = match inputs.get(1).copied().flatten() {
            Some(c) => Some(scalar(c, "the condition")? != 0),
            None => None,
        };
        if trip.is_none() && cond.is_none() {
            return Err("a Loop with neither a trip count nor a condition never ends".into());
        }
        let mut carried: Vec<Array> = (0..n)
            .map(|k| {
                inputs
                    .get(2 + k)
                    .copied()
                    .flatten()
                    .cloned()
                    .ok_or_else(|| format!("missing carried value {k}"))
            })
            .collect::<Result<_, String>>()?;
        let n_scan = self.n_outputs - n;
        let mut scans: Vec<Vec<Array>> = vec![vec![]; n_scan];
        let mut i = 0i64;
        while trip.is_none_or(|m| i < m) && cond.unwrap_or(true) {
            let mut formal = vec![
                Array::i64(vec![], vec![i]),
                Array::new(vec![], ArrayData::Bool(vec![cond.unwrap_or(true)]))?,
            ];
            formal.extend(carried.iter().cloned());
            let mut outs = self
                .body
                .run(formal, inputs, 2 + n)
                .map_err(|e| format!("iteration {i}: {e}"))?;
            if outs.len() != 1 + self.n_outputs {
                return Err(format!(
                    "the body gives {} outputs, the node needs {}",
                    outs.len(),
                    1 + self.n_outputs
                ));
            }
            let rest = outs.split_off(1 + n);
            let c = scalar(&outs[0], "the body's condition")? != 0;
            if cond.is_some() {
                cond = Some(c);
            }
            carried = outs.split_off(1);
            for (k, a) in rest.into_iter().enumerate() {
                scans[k].push(a);
            }
            i += 1;
        }
        let mut out = carried;
        for (k, parts) in scans.into_iter().enumerate() {
            out.push(if parts.is_empty() {
                // No iteration: an empty stack of the declared element shape.
                self.body.empty[1 + n + k].clone()
            } else {
                stack_axis(&parts, 0)?
            });
        }
        Ok(out)
    }
}

/// A planned `Scan` (opset 9+): inputs the initial states, then the scan inputs, then
/// the captures.
struct ScanKernel {
    body: Body,
    n_state: usize,
    n_scan_in: usize,
    in_axes: Vec<i64>,
    in_reverse: Vec<bool>,
    out_axes: Vec<i64>,
    out_reverse: Vec<bool>,
    n_outputs: usize,
}

impl Kernel for ScanKernel {
    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        let get = |k: usize| {
            inputs
                .get(k)
                .copied()
                .flatten()
                .ok_or_else(|| format!("missing input {k}"))
        };
        let mut states: Vec<Array> = (0..self.n_state)
            .map(|k| get(k).cloned())
            .collect::<Result<_, String>>()?;
        let mut seqs = vec![];
        let mut len = None;
        for j in 0..self.n_scan_in {
            let a = get(self.n_state + j)?;
            let axis = norm(self.in_axes.get(j).copied().unwrap_or(0), a.rank())?;
            let t = a.shape[axis];
            if len.is_some_and(|l| l != t) {
                return Err(format!(
                    "scan inputs of different lengths ({} and {t})",
                    len.unwrap_or(0)
                ));
            }
            len = Some(t);
            seqs.push((a, axis, self.in_reverse.get(j).copied().unwrap_or(false)));
        }
        let len = len.ok_or("a Scan without scan inputs")?;
        let n_scan_out = self.n_outputs - self.n_state;
        let mut scans: Vec<Vec<Array>> = vec![vec![]; n_scan_out];
        for t in 0..len {
            let mut formal = std::mem::take(&mut states);
            for &(a, axis, rev) in &seqs {
                formal.push(slice_axis(a, axis, if rev { len - 1 - t } else { t })?);
            }
            let mut outs = self
                .body
                .run(formal, inputs, self.n_state + self.n_scan_in)
                .map_err(|e| format!("iteration {t}: {e}"))?;
            if outs.len() != self.n_outputs {
                return Err(format!(
                    "the body gives {} outputs, the node needs {}",
                    outs.len(),
                    self.n_outputs
                ));
            }
            let rest = outs.split_off(self.n_state);
            states = outs;
            for (k, a) in rest.into_iter().enumerate() {
                scans[k].push(a);
            }
        }
        let mut out = states;
        for (k, mut parts) in scans.into_iter().enumerate() {
            if parts.is_empty() {
                // No iteration: an empty stack of the declared element shape, the zero
                // length on the output axis.
                let e = &self.body.empty[self.n_state + k];
                let mut shape = e.shape[1..].to_vec();
                let axis = norm(self.out_axes.get(k).copied().unwrap_or(0), shape.len() + 1)?;
                shape.insert(axis, 0);
                out.push(Array::new(shape, e.data.clone())?);
                continue;
            }
            if self.out_reverse.get(k).copied().unwrap_or(false) {
                parts.reverse();
            }
            let axis = norm(
                self.out_axes.get(k).copied().unwrap_or(0),
                parts[0].rank() + 1,
            )?;
            out.push(stack_axis(&parts, axis)?);
        }
        Ok(out)
    }
}

/// A possibly negative axis of a rank-`rank` tensor.
fn norm(axis: i64, rank: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if (0..rank as i64).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} out of range for rank {rank}"))
    }
}

/// Plans a `Loop` node (inputs `M`, `cond`, carried values, then `node.captures`).
pub(super) fn build_loop(
    outer: &Model,
    node: &Node,
    options: &ExecutorOptions,
) -> Result<Box<dyn Kernel>, String> {
    let n_carried = node.inputs.len().saturating_sub(2);
    Ok(Box::new(LoopKernel {
        body: Body::plan(outer, node, "body", options)?,
        n_carried,
        n_outputs: node.outputs.len(),
    }))
}

/// Plans a `Scan` node of opset 9 or later (states, scan inputs, then `node.captures`).
pub(super) fn build_scan(
    outer: &Model,
    node: &Node,
    options: &ExecutorOptions,
) -> Result<Box<dyn Kernel>, String> {
    if outer.onnx_opset() < 9 {
        return Err("Scan of opset 8 (batched, with sequence_lens) is not supported".into());
    }
    let op = node.op().ok_or("not an op")?;
    let ints = |name: &str| -> Vec<i64> {
        op.attr(name)
            .and_then(|a| a.as_ints())
            .map(|v| v.to_vec())
            .unwrap_or_default()
    };
    let n_scan_in = op
        .attr("num_scan_inputs")
        .and_then(|a| a.as_int())
        .ok_or("missing num_scan_inputs")? as usize;
    let n_in = node.inputs.len();
    if n_scan_in == 0 || n_scan_in > n_in {
        return Err(format!("num_scan_inputs {n_scan_in} with {n_in} inputs"));
    }
    let n_state = n_in - n_scan_in;
    Ok(Box::new(ScanKernel {
        body: Body::plan(outer, node, "body", options)?,
        n_state,
        n_scan_in,
        in_axes: ints("scan_input_axes"),
        in_reverse: ints("scan_input_directions")
            .iter()
            .map(|&d| d != 0)
            .collect(),
        out_axes: ints("scan_output_axes"),
        out_reverse: ints("scan_output_directions")
            .iter()
            .map(|&d| d != 0)
            .collect(),
        n_outputs: node.outputs.len(),
    }))
}
