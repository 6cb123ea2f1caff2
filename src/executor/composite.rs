//! Decomposed LayerNormalization and Gelu (what torch < 2, TF and Paddle
//! exports contain: nine and five elementwise nodes) run as one step each.
//!
//! The fused step computes the very same float operations, in the same order,
//! as the node-by-node path (the same row folds as ReduceMean, `d·d` as Pow(d, 2)
//! does, the same erf kernel), so the outputs are bit-identical to running the
//! nodes one at a time: what changes is that no intermediate tensor is
//! allocated and one step replaces many. A match is used only when every
//! intermediate value is read inside it (and is not a graph output), the
//! reduction is over the last axis with `keepdims`, and the affine and Gelu
//! constants are scalars or vectors along that axis.

use std::collections::HashMap;

use super::ops::{boxed, Kernel};
use super::value::{Array, ArrayData};
use crate::backend::composite::find_composites;
use crate::ir::{Graph, NodeId, ValueId};
use crate::kernels::vmath;

/// A composite that runs as one step.
pub(crate) struct Fused {
    pub kernel: Box<dyn Kernel>,
    pub input: ValueId,
    pub output: ValueId,
    /// Every node of the match (the first is the anchor the planner meets first).
    pub nodes: Vec<NodeId>,
    pub what: &'static str,
}

/// The fusable composites of `g`, by their first node in topological order.
pub(crate) fn find(g: &Graph, consts: &HashMap<ValueId, Array>) -> HashMap<NodeId, Fused> {
    let Ok(order) = g.topo_order() else {
        return HashMap::new();
    };
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut out = HashMap::new();
    for c in find_composites(g) {
        let fused = match c.op_type {
            "LayerNormalization" => layer_norm(g, &c.nodes, consts),
            "Gelu" => gelu(g, &c.nodes, consts),
            _ => None,
        };
        let Some(f) = fused else { continue };
        if !self_contained(g, &f.nodes, f.output) {
            continue;
        }
        let first = *f.nodes.iter().min_by_key(|n| pos[n]).expect("non-empty");
        out.insert(first, f);
    }
    out
}

/// Every value made inside `nodes`, but `output`, is read only inside them.
fn self_contained(g: &Graph, nodes: &[NodeId], output: ValueId) -> bool {
    nodes.iter().all(|&n| {
        g.node(n).outputs.iter().flatten().all(|&v| {
            v == output
                || (!g.is_graph_output(v) && g.consumers(v).iter().all(|(c, _)| nodes.contains(c)))
        })
    })
}

fn out0(g: &Graph, n: NodeId) -> Option<ValueId> {
    g.node(n).outputs.first().copied().flatten()
}

fn in_(g: &Graph, n: NodeId, k: usize) -> Option<ValueId> {
    g.node(n).inputs.get(k).copied().flatten()
}

/// The operand of binary node `n` that is not `v`.
fn other(g: &Graph, n: NodeId, v: ValueId) -> Option<ValueId> {
    match (in_(g, n, 0), in_(g, n, 1)) {
        (Some(a), Some(b)) if a == v => Some(b),
        (Some(a), Some(b)) if b == v => Some(a),
        _ => None,
    }
}

/// A constant f32 operand, as values along the last axis: a scalar, or a
/// tensor whose only non-1 dim is its last.
fn last_axis_const(consts: &HashMap<ValueId, Array>, v: ValueId) -> Option<Vec<f32>> {
    let a = consts.get(&v)?;
    let vals = a.as_f32().ok()?.to_vec();
    let leading_ones = a.shape.iter().rev().skip(1).all(|&d| d == 1);
    (leading_ones && !vals.is_empty()).then_some(vals)
}

fn scalar_const(consts: &HashMap<ValueId, Array>, v: ValueId) -> Option<f32> {
    let a = consts.get(&v)?;
    let vals = a.as_f32().ok()?;
    (vals.len() == 1).then(|| vals[0])
}

/// A ReduceMean over the last axis only, keeping it.
fn mean_over_last_axis(g: &Graph, n: NodeId, consts: &HashMap<ValueId, Array>) -> bool {
    let op = g.node(n).op().expect("an op");
    if op.attr("keepdims").and_then(|a| a.as_int()).unwrap_or(1) != 1 {
        return false;
    }
    let axes: Option<Vec<i64>> = match in_(g, n, 1) {
        Some(v) => consts.get(&v).and_then(|a| a.ints().ok()),
        None => op
            .attr("axes")
            .and_then(|a| a.as_ints())
            .map(<[i64]>::to_vec),
    };
    let rank = in_(g, n, 0).and_then(|x| g.value(x).ty.tensor().and_then(|t| t.rank()));
    match axes.as_deref() {
        Some([-1]) => true,
        Some([a]) => rank.is_some_and(|r| *a == r as i64 - 1),
        _ => false,
    }
}

/// `[mean, sub, square, var, add_eps, sqrt, div, (mul), (add)]` of
/// [`find_composites`].
fn layer_norm(g: &Graph, nodes: &[NodeId], consts: &HashMap<ValueId, Array>) -> Option<Fused> {
    let [mean, _sub, _square, var, add_eps, _sqrt, div, rest @ ..] = nodes else {
        return None;
    };
    if !mean_over_last_axis(g, *mean, consts) || !mean_over_last_axis(g, *var, consts) {
        return None;
    }
    let x = in_(g, *mean, 0)?;
    let eps = scalar_const(consts, other(g, *add_eps, out0(g, *var)?)?)?;
    let mut gamma = None;
    let mut beta = None;
    let mut last = *div;
    if let Some(&mul) = rest.first() {
        gamma = Some(last_axis_const(consts, other(g, mul, out0(g, last)?)?)?);
        last = mul;
    }
    if let Some(&add) = rest.get(1) {
        beta = Some(last_axis_const(consts, other(g, add, out0(g, last)?)?)?);
        last = add;
    }
    let output = out0(g, last)?;
    let kernel = boxed(move |i| {
        let x = i.first().copied().flatten().ok_or("missing input")?;
        let v = x.as_f32()?;
        let d = *x.shape.last().ok_or("LayerNorm of a scalar")?;
        for (what, p) in [("scale", &gamma), ("bias", &beta)] {
            if let Some(p) = p {
                if p.len() != 1 && p.len() != d {
                    return Err(format!(
                        "LayerNorm {what} has {} values for a last axis of {d}",
                        p.len()
                    ));
                }
            }
        }
        let mut y = vec![0f32; v.len()];
        // Scale and bias spread over the row once, so that the row loops vectorise.
        let spread = |p: &Option<Vec<f32>>| {
            p.as_ref().map(|p| {
                if p.len() == 1 {
                    vec![p[0]; d]
                } else {
                    p.clone()
                }
            })
        };
        let (gamma, beta) = (spread(&gamma), spread(&beta));
        if d > 0 {
            for (row, out) in v.chunks(d).zip(y.chunks_mut(d)) {
                // As ReduceMean: the row sum (in `lane_sum`'s order), then divide by the count.
                let m = vmath::lane_sum(row) / d as f32;
                for (o, &xv) in out.iter_mut().zip(row) {
                    *o = xv - m;
                }
                let var = vmath::lane_sum_sq(out) / d as f32;
                let s = (var + eps).sqrt();
                out.iter_mut().for_each(|o| *o /= s);
                if let Some(g) = &gamma {
                    out.iter_mut().zip(g).for_each(|(o, &g)| *o *= g);
                }
                if let Some(b) = &beta {
                    out.iter_mut().zip(b).for_each(|(o, &b)| *o += b);
                }
            }
        }
        Ok(vec![Array {
            shape: x.shape.clone(),
            data: ArrayData::F32(y),
        }])
    });
    Some(Fused {
        kernel,
        input: x,
        output,
        nodes: nodes.to_vec(),
        what: "LayerNormalization (decomposed, fused)",
    })
}

/// `[(half), scale, erf, add, mul, (half)]` of [`find_composites`] (erf form).
fn gelu(g: &Graph, nodes: &[NodeId], consts: &HashMap<ValueId, Array>) -> Option<Fused> {
    let erf_at = nodes.iter().position(|&n| g.node(n).is_op("Erf"))?;
    if erf_at == 0 {
        return None;
    }
    let scale = nodes[erf_at - 1];
    let add = *nodes.get(erf_at + 1)?;
    let mul = *nodes.get(erf_at + 2)?;
    let x = in_(g, scale, 0)?;
    let c = scalar_const(consts, in_(g, scale, 1)?)?;
    let divide = g.node(scale).is_op("Div");
    let one = scalar_const(consts, other(g, add, out0(g, nodes[erf_at])?)?)?;
    let half_before = erf_at == 2;
    let half_node = if half_before {
        nodes[0]
    } else {
        *nodes.get(erf_at + 3)?
    };
    let half = scalar_const(
        consts,
        other(g, half_node, if half_before { x } else { out0(g, mul)? })?,
    )?;
    let output = out0(g, *nodes.last()?)?;
    let kernel = boxed(move |i| {
        let x = i.first().copied().flatten().ok_or("missing input")?;
        let v = x.as_f32()?;
        let mut t: Vec<f32> = if divide {
            v.iter().map(|&a| a / c).collect()
        } else {
            v.iter().map(|&a| a * c).collect()
        };
        crate::kernels::vmath::erf_slice(&mut t);
        for (o, &a) in t.iter_mut().zip(v) {
            let e1 = *o + one;
            *o = if half_before {
                (a * half) * e1
            } else {
                (a * e1) * half
            };
        }
        Ok(vec![Array {
            shape: x.shape.clone(),
            data: ArrayData::F32(t),
        }])
    });
    Some(Fused {
        kernel,
        input: x,
        output,
        nodes: nodes.to_vec(),
        what: "Gelu (decomposed, fused)",
    })
}
