//! `smooth-quant{alpha=0.5}`: SmoothQuant (Xiao et al., 2023) for the MatMul/Gemm inputs
//! that float ops make: a LayerNormalization, a Gelu, a Softmax (as ops or decomposed).
//!
//! Such an input has a few channels 10–20× wider than the median one (a LayerNorm's gain
//! makes them), so the per-tensor int8 grid the MatMul needs rounds the narrow channels
//! coarsely. The pass divides channel `c` of the input by
//! `s_c = max|X_c|^α / max|W_c|^(1−α)` and multiplies row `c` of the weights by `s_c`:
//! the product is unchanged, the input's channels are flatter, and the weights, quantized
//! per output channel, take part of the spread.
//!
//! The division is a `Div` by a constant vector right before the quantized input, on the
//! float side: the ops above stay float, so nothing was rounded before it (folded into an
//! int8 op instead, it would be rounded by that op's per-tensor grid first). Inputs that
//! int8 ops make are left alone. The pass needs the inputs' per-channel `max|X_c|`
//! ([`SmoothQuant::with_stats`]); `quantize --smooth-quant` computes them with one float
//! pass over the calibration data ([`crate::quantize::smooth_quant`]).

use crate::backend::composite::find_composites;
use crate::prelude::*;
use std::collections::BTreeMap;

/// Ops whose output stays float by default, and makes the MatMul inputs worth smoothing.
const FLOAT_PRODUCERS: &[&str] = &["LayerNormalization", "Gelu", "Softmax"];

/// Data movement between the producer and the MatMul (the last axis is kept or merged).
const PASS_THROUGH: &[&str] = &["Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"];

/// Channel-scale ratios beyond this are clamped: a dead channel must not blow up a weight row.
const MAX_RATIO: f32 = 1e4;

/// An input to smooth and the MatMul/Gemm nodes reading it (one scale vector for all).
#[derive(Clone, Debug)]
pub struct SmoothGroup {
    pub input: ValueId,
    pub consumers: Vec<NodeId>,
}

pub struct SmoothQuant {
    /// Migration strength: 0 leaves the input as is, 1 moves all of its spread to the weights.
    pub alpha: f32,
    /// `max|X_c|` per input value name, over the calibration data.
    pub stats: BTreeMap<String, Vec<f32>>,
}

impl SmoothQuant {
    pub fn with_stats(alpha: f32, stats: BTreeMap<String, Vec<f32>>) -> Self {
        SmoothQuant { alpha, stats }
    }

    /// Refuses a migration strength outside [0, 1] (before any data is read for it).
    pub fn check_alpha(alpha: f32) -> Result<()> {
        if (0.0..=1.0).contains(&alpha) {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "smooth-quant: alpha {alpha} is not in [0, 1]"
            )))
        }
    }
}

/// The row (input channel) of element `i` of a `[K, N]` weight, or of a `[N, K]` one
/// (`trans_b`), with `k` rows.
fn weight_row(i: usize, k: usize, trans_b: bool, len: usize) -> usize {
    if trans_b {
        i % k
    } else {
        i / (len / k)
    }
}

/// The MatMul/Gemm weight of `n` as `(value, rows = K, transposed)` when `n` can be
/// smoothed: its input 0 is a signal, its weight a 2-D float constant, no transA.
fn smoothable(g: &Graph, n: NodeId) -> Option<(ValueId, usize, bool)> {
    let node = g.node(n);
    let int = |k: &str| {
        node.op()
            .and_then(|o| o.attr(k))
            .and_then(|a| a.as_int())
            .unwrap_or(0)
    };
    let trans_b = match node.op_type() {
        "MatMul" => false,
        "Gemm" if int("transA") == 0 => int("transB") != 0,
        _ => return None,
    };
    let w = node.inputs.get(1).copied().flatten()?;
    let t = g.const_tensor(w)?;
    if t.dtype != DataType::F32 || t.dims.len() != 2 {
        return None;
    }
    let k = if trans_b { t.dims[1] } else { t.dims[0] };
    Some((w, k as usize, trans_b))
}

/// Whether `v` is made by a float producer ([`FLOAT_PRODUCERS`], or the last node of a
/// decomposed LayerNormalization / Gelu), through data movement only.
fn made_by_float_op(g: &Graph, v: ValueId, composite_ends: &BTreeMap<NodeId, &str>) -> bool {
    let mut v = v;
    for _ in 0..8 {
        let p = g.producer(v);
        let node = g.node(p);
        if node.op().is_none() {
            return false;
        }
        if composite_ends
            .get(&p)
            .is_some_and(|t| matches!(*t, "LayerNormalization" | "Gelu"))
            || FLOAT_PRODUCERS.contains(&node.op_type())
        {
            return true;
        }
        if !PASS_THROUGH.contains(&node.op_type()) {
            return false;
        }
        match node.inputs.first().copied().flatten() {
            Some(x) => v = x,
            None => return false,
        }
    }
    false
}

/// The inputs of `g` (main graph) worth smoothing, with their readers.
pub fn smooth_groups(g: &Graph) -> Vec<SmoothGroup> {
    let composite_ends: BTreeMap<NodeId, &str> = find_composites(g)
        .into_iter()
        .filter_map(|c| c.nodes.last().map(|&n| (n, c.op_type)))
        .collect();
    let mut groups: BTreeMap<ValueId, Vec<NodeId>> = BTreeMap::new();
    let Ok(order) = g.topo_order() else {
        return vec![];
    };
    for n in order {
        let Some(x) = g.node(n).inputs.first().copied().flatten() else {
            continue;
        };
        if smoothable(g, n).is_none()
            || g.const_tensor(x).is_some()
            || g.value(x).ty.dtype().is_some_and(|d| d != DataType::F32)
        {
            continue;
        }
        groups.entry(x).or_default().push(n);
    }
    groups
        .into_iter()
        .filter(|(x, _)| made_by_float_op(g, *x, &composite_ends))
        .map(|(input, consumers)| SmoothGroup { input, consumers })
        .collect()
}

/// `s_c = a_c^α / w_c^(1−α)`, normalised to a geometric mean of 1 and clamped to
/// [`MAX_RATIO`] around it; 1 where a channel is dead or unknown.
pub fn smoothing_scales(alpha: f32, act_max: &[f32], weight_max: &[f32]) -> Vec<f32> {
    let raw: Vec<Option<f64>> = act_max
        .iter()
        .zip(weight_max)
        .map(|(&a, &w)| {
            (a.is_finite() && w.is_finite() && a > 0.0 && w > 0.0)
                .then(|| (a as f64).powf(alpha as f64) / (w as f64).powf(1.0 - alpha as f64))
        })
        .collect();
    let logs: Vec<f64> = raw.iter().flatten().map(|s| s.ln()).collect();
    if logs.is_empty() {
        return vec![1.0; act_max.len()];
    }
    let mean = (logs.iter().sum::<f64>() / logs.len() as f64).exp();
    let limit = (MAX_RATIO as f64).sqrt();
    raw.iter()
        .map(|s| s.map_or(1.0, |s| (s / mean).clamp(1.0 / limit, limit) as f32))
        .collect()
}

impl Pass for SmoothQuant {
    fn name(&self) -> &'static str {
        "smooth-quant"
    }

    fn options(&self) -> Vec<(String, String)> {
        vec![("alpha".into(), self.alpha.to_string())]
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        SmoothQuant::check_alpha(self.alpha)?;
        let g = &mut model.graph;
        for group in smooth_groups(g) {
            let x_name = g.value(group.input).name.clone();
            let Some(act) = self.stats.get(&x_name) else {
                continue;
            };
            let weights: Vec<(NodeId, ValueId, usize, bool)> = group
                .consumers
                .iter()
                .filter_map(|&n| smoothable(g, n).map(|(w, k, t)| (n, w, k, t)))
                .collect();
            if weights.iter().any(|&(_, _, k, _)| k != act.len()) {
                cx.note(
                    x_name.as_str(),
                    format!(
                        "not smoothed: {} channels observed on its last axis, but its MatMul weights have another row count",
                        act.len()
                    ),
                );
                continue;
            }
            // max|W_c| over every reader's row c.
            let mut wmax = vec![0f32; act.len()];
            let mut values: Vec<Vec<f32>> = vec![];
            for &(_, w, _, trans_b) in &weights {
                let t = g.const_tensor(w).expect("checked constant");
                let v = t.to_f32_vec().expect("f32 constant");
                for (i, &e) in v.iter().enumerate() {
                    let c = weight_row(i, act.len(), trans_b, v.len());
                    wmax[c] = wmax[c].max(e.abs());
                }
                values.push(v);
            }
            let s = smoothing_scales(self.alpha, act, &wmax);
            if s.iter().all(|&s| s == 1.0) {
                continue;
            }
            // x / s right before the readers; the readers' weights times s (new constants:
            // a weight shared with another node keeps its values there).
            let inv = g.add_const(
                &format!("{x_name}_smooth_scale"),
                Tensor::from_f32(vec![s.len() as i64], &s),
            );
            let div = g.add_op(
                &format!("{x_name}_smooth"),
                Op::new("Div"),
                &[Some(group.input), Some(inv)],
                &[&format!("{x_name}_smoothed")],
            );
            let y = g.node(div).outputs[0].expect("one output");
            let ty = g.value(group.input).ty.clone();
            g.value_mut(y).ty = ty;
            for (&(n, w, _, trans_b), mut v) in weights.iter().zip(values) {
                let len = v.len();
                for (i, e) in v.iter_mut().enumerate() {
                    *e *= s[weight_row(i, act.len(), trans_b, len)];
                }
                let t = g.const_tensor(w).expect("checked constant");
                let scaled = Tensor::from_f32(t.dims.clone(), &v);
                let w_name = g.value(w).name.clone();
                let w_ty = g.value(w).ty.clone();
                let nw = g.add_const(&format!("{w_name}_smoothed"), scaled);
                g.value_mut(nw).ty = w_ty;
                g.set_input(n, 0, Some(y));
                g.set_input(n, 1, Some(nw));
                g.remove_if_unused_const(w);
            }
            let readers: Vec<String> = weights
                .iter()
                .map(|&(n, ..)| g.display_node_name(n))
                .collect();
            let spread = |v: &[f32]| {
                let max = v.iter().cloned().fold(0f32, f32::max);
                let mut sorted: Vec<f32> = v.to_vec();
                sorted.sort_by(f32::total_cmp);
                max / sorted[sorted.len() / 2].max(f32::MIN_POSITIVE)
            };
            let after: Vec<f32> = act.iter().zip(&s).map(|(a, s)| a / s).collect();
            cx.note(
                x_name.as_str(),
                format!(
                    "smoothed for {}: channel range spread (max/median) {:.1} -> {:.1}",
                    readers.join(", "),
                    spread(act),
                    spread(&after)
                ),
            );
            cx.count("smoothed inputs", 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_balance_activation_and_weight_ranges() {
        let s = smoothing_scales(0.5, &[16.0, 1.0, 0.0], &[1.0, 1.0, 2.0]);
        // sqrt(16/1) = 4 and sqrt(1/1) = 1, normalised to a geometric mean of 1; the dead
        // channel keeps 1.
        assert!((s[0] / s[1] - 4.0).abs() < 1e-5, "{s:?}");
        assert!((s[0] * s[1] - 1.0).abs() < 1e-5, "{s:?}");
        assert_eq!(s[2], 1.0);
        // alpha 0: only the weights' ranges count (1/w), alpha 1: only the activations'.
        let w = smoothing_scales(0.0, &[16.0, 1.0], &[4.0, 1.0]);
        assert!((w[1] / w[0] - 4.0).abs() < 1e-5, "{w:?}");
        let a = smoothing_scales(1.0, &[16.0, 1.0], &[4.0, 1.0]);
        assert!((a[0] / a[1] - 16.0).abs() < 1e-4, "{a:?}");
    }

    #[test]
    fn extreme_ratios_are_clamped() {
        let s = smoothing_scales(1.0, &[1e9, 1e-9], &[1.0, 1.0]);
        assert!(s[0] / s[1] <= MAX_RATIO * 1.0001, "{s:?}");
    }
}
