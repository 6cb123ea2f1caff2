//! Values that 8-bit steps destroy, whatever the exporter's spelling.
//!
//! [`super::composite`] recognises the common decompositions by shape; this
//! module catches the rest by what the nodes compute, so that a Flax
//! LayerNorm (`E[x²] − E[x]²`, `Sqrt` + `Reciprocal`), a hand-written
//! softmax (`ReduceMax`, `Sub`, `Exp`, `ReduceSum`, `Div`) or a polynomial
//! Gelu (`x·x·x`) stays float even when no pattern matches it:
//!
//! * **powers of a signal**: a product of two functions of the same value
//!   through polynomial ops only (`x·x`, `x·(c·x)`, `Pow(x, 2)`), and every
//!   polynomial op fed by one. `x²` spans twice the dynamic range of `x` in
//!   log scale, so a shared 8-bit grid rounds the small half to zero.
//! * **statistics**: the output of a reduction over a signal (`ReduceMean`,
//!   `ReduceSum`, `ReduceMax`, ...) and everything computed from statistics
//!   and constants alone (variance, `1/√(var+ε)`, `Σexp`). A quantized
//!   variance near zero is zero, and its reciprocal square root explodes.
//! * **ops applying a statistic to a signal** elementwise (`x − mean`,
//!   `(x − mean)·rstd`, `exp / Σexp`): ONNX Runtime has no int8 kernel that
//!   could take a float statistic, and quantizing the statistic is the
//!   error above.
//!
//! Reductions feeding a Conv, Gemm or MatMul (global pooling written as
//! `ReduceMean`) are not statistics of this kind: only elementwise ops
//! propagate the property. Gates computed through a Conv (squeeze-excitation)
//! are signals again.

use std::collections::{BTreeMap, BTreeSet};

use crate::ir::{DataType, Graph, NodeId, ValueId};

/// Elementwise ops through which a statistic stays a statistic.
const ELEMENTWISE: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Neg",
    "Abs",
    "Exp",
    "Log",
    "Max",
    "Min",
    "Clip",
    "Relu",
    "Tanh",
    "Sigmoid",
    "Erf",
    "Identity",
    "Cast",
    // Data movement keeps values (broadcasting a mean over the signal).
    "Reshape",
    "Expand",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Flatten",
    "Tile",
];

/// Ops whose output is a polynomial in their inputs.
const POLYNOMIAL: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Neg",
    "Identity",
    "Reshape",
    "Expand",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Flatten",
];

/// Reductions whose output is a statistic of their input.
const REDUCTIONS: &[&str] = &[
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSum",
    "ReduceLogSumExp",
];

/// f32, or of a type import could not infer.
fn real(g: &Graph, v: ValueId) -> bool {
    g.value(v).ty.dtype().is_none_or(|d| d == DataType::F32)
}

/// Nodes of `g` (not of subgraphs) that must stay float, with the reason.
pub fn fragile_nodes(g: &Graph) -> BTreeMap<NodeId, String> {
    let mut out = BTreeMap::new();
    let Ok(order) = g.topo_order() else {
        return out;
    };
    let mut statistic: BTreeSet<ValueId> = BTreeSet::new();
    let mut power: BTreeSet<ValueId> = BTreeSet::new();
    // For each value, the signals it is a polynomial of (itself if it is
    // not the output of a polynomial op).
    let mut poly: BTreeMap<ValueId, BTreeSet<ValueId>> = BTreeMap::new();
    for n in order {
        let node = g.node(n);
        let Some(op) = node.op() else { continue };
        let op_type = op.op_type.as_str();
        let Some(y) = node.outputs.first().copied().flatten() else {
            continue;
        };
        // Real-valued, non-constant operands.
        let data: Vec<ValueId> = node
            .inputs
            .iter()
            .flatten()
            .copied()
            .filter(|&v| g.const_tensor(v).is_none())
            .filter(|&v| real(g, v))
            .collect();
        let signal_out = real(g, y);
        if data.is_empty() || !signal_out {
            continue;
        }
        if REDUCTIONS.contains(&op_type) {
            statistic.insert(y);
            continue;
        }
        if !ELEMENTWISE.contains(&op_type) {
            continue;
        }
        let stats = data.iter().filter(|v| statistic.contains(v)).count();
        if stats == data.len() {
            statistic.insert(y);
            out.insert(
                n,
                "computes a normalization statistic (a mean, variance or sum from a reduction): 8-bit steps on it explode after 1/√·".into(),
            );
            continue;
        }
        if stats > 0 {
            out.insert(
                n,
                "applies a normalization statistic to the signal (x − mean, ·1/√var, ÷Σ): no int8 kernel takes a float statistic".into(),
            );
            continue;
        }
        // Powers.
        let sources = |v: ValueId| -> BTreeSet<ValueId> {
            poly.get(&v).cloned().unwrap_or_else(|| [v].into())
        };
        let is_power = match op_type {
            "Mul" if data.len() == 2 => {
                let (a, b) = (sources(data[0]), sources(data[1]));
                a.intersection(&b).next().is_some()
            }
            "Pow" => node
                .inputs
                .get(1)
                .copied()
                .flatten()
                .and_then(|e| g.const_tensor(e))
                .and_then(|t| t.to_f32_vec())
                .is_some_and(|e| e.iter().any(|&e| e.abs() >= 2.0)),
            _ => false,
        };
        let reads_power = data.iter().any(|v| power.contains(v));
        if is_power || reads_power {
            if POLYNOMIAL.contains(&op_type) || op_type == "Pow" {
                power.insert(y);
            }
            out.insert(
                n,
                if is_power {
                    "raises a signal to a power (x·x, x³): its range is the square of the signal's, too wide for 8 bits".into()
                } else {
                    "reads a power of a signal (x·x, x³), which stays float".into()
                },
            );
        }
        if POLYNOMIAL.contains(&op_type) {
            let mut s = BTreeSet::new();
            for &v in &data {
                s.extend(sources(v));
            }
            poly.insert(y, s);
        }
    }
    out
}
