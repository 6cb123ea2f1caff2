//! `store-weights-fp16{only=NODE;...}`: the float weights of ops that stay float (Conv,
//! ConvTranspose, Gemm, MatMul, LSTM, GRU, RNN) are stored as float16 and widened back to
//! float by a `Cast`. It halves what a float unit weighs in the file. Engines fold the
//! Cast of a constant when they load the model: ONNX Runtime's constant folding, tract's
//! declutter, and onnxq's executor. So they still compute in f32, with the weights
//! rounded to 11 significant bits.
//!
//! A weight is any constant f32 input of rank ≥ 2; biases stay f32. A weight stays f32
//! when:
//! - anything other than the chosen nodes reads it (it would be stored twice);
//! - it has a value beyond f16's range (|w| > 65504);
//! - f16 rounding would cost it more than 60 dB of SQNR. Values below f16's normal range
//!   lose bits: a tensor of tiny weights would lose all of them.
//!
//! Without `only`, every such node of every graph is rewritten (If branches included).

use super::quantize_dynamic::option_list;
use crate::prelude::*;
use std::collections::{BTreeSet, HashMap};

/// Ops whose rank ≥ 2 constant inputs are weights.
pub const WEIGHT_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "LSTM",
    "GRU",
    "RNN",
];

/// The least SQNR (dB) f16 rounding may leave a weight with. Normal f16 values round with
/// a relative error of at most 2^-11, which keeps a tensor near 70 dB or above.
const MIN_SQNR_DB: f64 = 60.0;

#[derive(Default)]
pub struct StoreWeightsFp16 {
    /// Node names whose weights are stored in f16; empty: every weight op.
    pub only: BTreeSet<String>,
}

impl StoreWeightsFp16 {
    /// Factory for the registry.
    pub fn from_options(mut opts: PassOptions) -> Result<Box<dyn Pass>> {
        let only = opts
            .take("only")
            .map(|v| option_list(&v))
            .unwrap_or_default();
        opts.finish(&["only"])?;
        Ok(Box::new(StoreWeightsFp16 { only }))
    }

    fn chosen(&self, node: &Node) -> bool {
        WEIGHT_OPS.iter().any(|t| node.is_op(t))
            && (self.only.is_empty() || self.only.contains(&node.name))
    }

    /// Rewrites the weights of the chosen nodes of one graph; returns (weights stored
    /// in f16, bytes saved).
    fn rewrite(&self, g: &mut Graph, cx: &mut PassContext) -> (usize, usize) {
        let mut weights: Vec<ValueId> = vec![];
        let mut seen = BTreeSet::new();
        let order = g.topo_order().unwrap_or_default();
        for &n in &order {
            let node = g.node(n);
            if !self.chosen(node) {
                continue;
            }
            for v in node.inputs.iter().flatten() {
                let is_weight = g
                    .const_tensor(*v)
                    .is_some_and(|t| t.dtype == DataType::F32 && t.dims.len() >= 2);
                if is_weight && seen.insert(*v) {
                    weights.push(*v);
                }
            }
        }
        let mut stored = 0;
        let mut saved = 0;
        let mut done: HashMap<ValueId, ValueId> = HashMap::new();
        for w in weights {
            let name = g.value(w).name.clone();
            let shared = g.is_graph_output(w)
                || g.consumers(w)
                    .iter()
                    .any(|&(c, slot)| !matches!(slot, Slot::Input(_)) || !self.chosen(g.node(c)));
            if shared {
                cx.note(
                    name.as_str(),
                    "stays f32: read by nodes whose weights are not stored in f16",
                );
                continue;
            }
            let t = g.const_tensor(w).expect("a constant");
            let Some(values) = t.to_f32_vec() else {
                continue;
            };
            let Some(half) = to_f16(&values) else {
                cx.note(
                    name.as_str(),
                    format!(
                        "stays f32: float16 would not hold it (a value beyond ±65504, or an SQNR under {MIN_SQNR_DB} dB)"
                    ),
                );
                continue;
            };
            let dims = t.dims.clone();
            let ty = g.value(w).ty.clone();
            let raw: Vec<u8> = half.iter().flat_map(|h| h.to_le_bytes()).collect();
            saved += raw.len();
            let tensor = Tensor::from_raw(DataType::F16, dims, raw).expect("2 bytes per value");
            let c = g.add_const(&format!("{name}_fp16"), tensor);
            let cast = g.add_op(
                &format!("{name}_from_fp16"),
                Op::new("Cast").with_attr("to", DataType::F32.onnx_code() as i64),
                &[Some(c)],
                &[&format!("{name}_from_fp16")],
            );
            let out = g.node(cast).outputs[0].expect("one output");
            g.value_mut(out).ty = ty;
            done.insert(w, out);
            stored += 1;
        }
        for (w, out) in done {
            g.replace_all_uses(w, out);
            g.remove_if_unused_const(w);
        }
        (stored, saved)
    }
}

/// `values` rounded to f16 (as bits), or `None` when f16 cannot hold them.
fn to_f16(values: &[f32]) -> Option<Vec<u16>> {
    let mut signal = 0f64;
    let mut noise = 0f64;
    let mut out = Vec::with_capacity(values.len());
    for &x in values {
        if !x.is_finite() {
            return None;
        }
        let h = half::f16::from_f32(x);
        if h.is_infinite() {
            return None;
        }
        let e = (h.to_f32() - x) as f64;
        signal += (x as f64) * (x as f64);
        noise += e * e;
        out.push(h.to_bits());
    }
    let ok = noise == 0.0 || 10.0 * (signal / noise).log10() >= MIN_SQNR_DB;
    ok.then_some(out)
}

impl Pass for StoreWeightsFp16 {
    fn name(&self) -> &'static str {
        "store-weights-fp16"
    }

    fn options(&self) -> Vec<(String, String)> {
        if self.only.is_empty() {
            return vec![];
        }
        let only: Vec<String> = self.only.iter().cloned().collect();
        vec![("only".into(), only.join(";"))]
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let mut names = BTreeSet::new();
        all_node_names(&model.graph, &mut names);
        if let Some(bad) = self.only.iter().find(|n| !names.contains(n.as_str())) {
            return Err(Error::invalid(format!(
                "store-weights-fp16: the model has no node named `{bad}`"
            )));
        }
        let mut stored = 0;
        let mut saved = 0;
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            let (n, b) = self.rewrite(g, cx);
            stored += n;
            saved += b;
            Ok(())
        })?;
        unshadow_names(model);
        cx.count("weights", stored as u64);
        if stored > 0 {
            cx.note(
                "store-weights-fp16",
                format!("{stored} float weights stored as float16 ({saved} bytes saved)"),
            );
        }
        Ok(())
    }
}
