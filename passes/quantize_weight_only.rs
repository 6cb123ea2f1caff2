//! `quantize-weight-only{bits=8|4,block=32,symmetric=true|false,ops=MatMul;Gemm,exclude=NODE;...}`:
//! weight-only quantization. The constant weights of MatMul and Gemm are
//! stored as integers and restored by a `DequantizeLinear` feeding the float
//! op; activations stay float, so no calibration data is needed.
//! * `bits=8` (default): int8, symmetric, one scale per output channel
//!   (axis 1 of a MatMul weight and of a Gemm weight, axis 0 with transB).
//!   Below opset 13 (no per-axis DequantizeLinear) the scales are applied by
//!   a Mul after a unit-scale DequantizeLinear, the same values.
//! * `bits=4`: blocked along the reduction axis (K), `block` elements per
//!   scale, as `DequantizeLinear{axis, block_size}` over INT4 (symmetric, no
//!   zero point) or UINT4 with zero points (`symmetric=false`), packed two
//!   per byte. That needs opset 21: the model's opset is raised where that
//!   keeps every op's meaning ([`crate::opset::raise_opset`]), and the pass
//!   fails naming the op otherwise.

use super::quantize_dynamic::{check_exclusions, option_list};
use crate::ir::rewrite::{for_each_graph_mut, unshadow_names, visit_graphs};
use crate::prelude::*;
use std::collections::BTreeSet;

/// Options of `quantize-weight-only`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightOnlyOptions {
    /// 8 or 4.
    pub bits: u32,
    /// Elements per scale along K for 4 bits: a power of two ≥ 16.
    pub block: usize,
    /// 4 bits: symmetric int4 without zero points (default) or uint4 with.
    pub symmetric: bool,
    /// 8 bits: per output channel (default) or one scale per tensor.
    pub per_channel: bool,
    /// `MatMul`, `Gemm` or both (default).
    pub op_types: BTreeSet<String>,
    /// Node names kept in float.
    pub exclude: BTreeSet<String>,
}

impl Default for WeightOnlyOptions {
    fn default() -> Self {
        WeightOnlyOptions {
            bits: 8,
            block: 32,
            symmetric: true,
            per_channel: true,
            op_types: ["Gemm", "MatMul"].iter().map(|s| s.to_string()).collect(),
            exclude: BTreeSet::new(),
        }
    }
}

pub struct QuantizeWeightOnly {
    pub options: WeightOnlyOptions,
}

impl QuantizeWeightOnly {
    pub fn new(options: WeightOnlyOptions) -> Result<Self> {
        let o = &options;
        if o.bits != 8 && o.bits != 4 {
            return Err(Error::invalid(format!(
                "quantize-weight-only: bits must be 8 or 4, not {}",
                o.bits
            )));
        }
        if o.bits == 4 && (o.block < 16 || !o.block.is_power_of_two()) {
            return Err(Error::invalid(format!(
                "quantize-weight-only: block must be a power of two ≥ 16, not {}",
                o.block
            )));
        }
        if let Some(bad) = o.op_types.iter().find(|t| *t != "MatMul" && *t != "Gemm") {
            return Err(Error::invalid(format!(
                "quantize-weight-only: quantizes MatMul and Gemm weights, not `{bad}`"
            )));
        }
        Ok(QuantizeWeightOnly { options })
    }

    /// Factory for the registry.
    pub fn from_options(mut opts: PassOptions) -> Result<Box<dyn Pass>> {
        let d = WeightOnlyOptions::default();
        let mut o = WeightOnlyOptions {
            bits: opts.take_parsed("bits", d.bits)?,
            block: opts.take_parsed("block", d.block)?,
            symmetric: opts.take_parsed("symmetric", d.symmetric)?,
            per_channel: !opts.take_parsed("per-tensor", false)?,
            ..d
        };
        if let Some(v) = opts.take("ops") {
            o.op_types = option_list(&v);
        }
        if let Some(v) = opts.take("exclude") {
            o.exclude = option_list(&v);
        }
        opts.finish(&["bits", "block", "symmetric", "per-tensor", "ops", "exclude"])?;
        Ok(Box::new(QuantizeWeightOnly::new(o)?))
    }
}

impl Pass for QuantizeWeightOnly {
    fn name(&self) -> &'static str {
        "quantize-weight-only"
    }

    fn options(&self) -> Vec<(String, String)> {
        let d = WeightOnlyOptions::default();
        let o = &self.options;
        let mut v = vec![];
        if o.bits != d.bits {
            v.push(("bits".into(), o.bits.to_string()));
        }
        if o.bits == 4 && o.block != d.block {
            v.push(("block".into(), o.block.to_string()));
        }
        if o.bits == 4 && o.symmetric != d.symmetric {
            v.push(("symmetric".into(), o.symmetric.to_string()));
        }
        if !o.per_channel {
            v.push(("per-tensor".into(), "true".into()));
        }
        let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(";");
        if o.op_types != d.op_types {
            v.push(("ops".into(), join(&o.op_types)));
        }
        if !o.exclude.is_empty() {
            v.push(("exclude".into(), join(&o.exclude)));
        }
        v
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let o = &self.options;
        check_exclusions("quantize-weight-only", &model.graph, &o.exclude)?;
        let opset = model.onnx_opset();
        if opset < 10 {
            return Err(Error::invalid(format!(
                "quantize-weight-only: the model imports opset {opset}; DequantizeLinear needs opset ≥ 10"
            )));
        }
        // Anything to do at all (If branches included)? Decided before anything changes:
        // 4 bits raises the opset first.
        let mut any = false;
        visit_graphs(&model.graph, &mut |g| {
            if let Ok(todo) = self.todo(g, &mut PassContext::new()) {
                any |= !todo.is_empty();
            }
        });
        if !any {
            cx.warn(
                "model",
                "quantize-weight-only: no MatMul/Gemm with a constant 2-D f32 weight; nothing quantized",
            );
            return Ok(());
        }
        if o.bits == 4 {
            for line in crate::opset::raise_opset(model, 21).map_err(|e| {
                Error::Unsupported(format!(
                    "quantize-weight-only{{bits=4}} needs DequantizeLinear with block_size (opset 21): {e}"
                ))
            })? {
                cx.note("opset", format!("raised to 21: {line}"));
            }
        }
        let opset = model.onnx_opset();
        // Every graph on its own, If branches included.
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            let todo = self.todo(g, cx)?;
            self.rewrite(g, todo, opset, cx);
            Ok(())
        })?;
        // A branch and its enclosing graph may both have quantized one value under the
        // same derived name.
        unshadow_names(model);
        Ok(())
    }
}

impl QuantizeWeightOnly {
    /// The nodes of `g` to rewrite (node, weight, output-channel axis); the others
    /// get a note saying why they stay float.
    fn todo(&self, g: &Graph, cx: &mut PassContext) -> Result<Vec<(NodeId, ValueId, usize)>> {
        let o = &self.options;
        let order = g.topo_order().map_err(|e| Error::invalid(e.to_string()))?;
        let mut todo: Vec<(NodeId, ValueId, usize)> = vec![];
        for n in order {
            let node = g.node(n);
            let Some(op) = node.op() else { continue };
            let name = g.display_node_name(n);
            if op.has_subgraphs() && op.op_type != "If" {
                cx.note(
                    name,
                    format!(
                        "stays float, body included: ops inside {} bodies are not quantized",
                        op.op_type
                    ),
                );
                continue;
            }
            let t = op.op_type.as_str();
            if !node.is_op(t) || !o.op_types.contains(t) {
                continue;
            }
            if o.exclude.contains(&node.name) {
                cx.note(name, "stays float: excluded");
                continue;
            }
            let trans_b = t == "Gemm"
                && op
                    .attr("transB")
                    .and_then(|a| a.as_int())
                    .is_some_and(|v| v != 0);
            let Some(w) = node.inputs.get(1).copied().flatten() else {
                continue;
            };
            let why = match g.const_tensor(w) {
                None => Some("its weight is not a constant (activation × activation)".to_string()),
                Some(wt) if wt.dtype != DataType::F32 => Some(format!("weight is {}", wt.dtype)),
                Some(wt) if wt.dims.len() != 2 => Some(format!(
                    "weight has rank {} (2-D weights only)",
                    wt.dims.len()
                )),
                Some(wt)
                    if wt
                        .to_f32_vec()
                        .is_some_and(|v| v.iter().any(|x| !x.is_finite())) =>
                {
                    Some("weight has non-finite values".to_string())
                }
                Some(_) => None,
            };
            if let Some(why) = why {
                cx.note(name, format!("stays float: {why}"));
                continue;
            }
            // Output channels: axis 1 of [K, N], axis 0 of a transposed [N, K].
            // The reduction axis (4-bit blocks) is the other one.
            let out_axis = if trans_b { 0 } else { 1 };
            todo.push((n, w, out_axis));
        }
        Ok(todo)
    }

    /// Stores the weights of `todo` as integers behind a DequantizeLinear.
    fn rewrite(
        &self,
        g: &mut Graph,
        todo: Vec<(NodeId, ValueId, usize)>,
        opset: i64,
        cx: &mut PassContext,
    ) {
        let o = &self.options;
        let spec = qdq::symmetric_weight_spec(o.per_channel, false);
        // A weight read by several nodes (in the same layout) is stored once.
        let mut done: std::collections::HashMap<(ValueId, usize), ValueId> = Default::default();
        for (n, w, out_axis) in todo {
            if let Some(&dq) = done.get(&(w, out_axis)) {
                g.set_input(n, 1, Some(dq));
                g.remove_if_unused_const(w);
                cx.count(g.node(n).op_type().to_string().as_str(), 1);
                continue;
            }
            let t = g.const_tensor(w).expect("checked").clone();
            let dq = if o.bits == 4 {
                let k_axis = 1 - out_axis;
                let bq = qdq::quantize_blockwise_4bit(&t, k_axis, o.block, o.symmetric)
                    .expect("checked finite f32");
                qdq::block_dequantized(g, w, &bq)
            } else {
                let qt =
                    qdq::quantize_tensor(&t, &spec, Some(out_axis)).expect("checked finite f32");
                qdq::weight_dequantized(g, w, &qt, opset)
            };
            done.insert((w, out_axis), dq);
            g.set_input(n, 1, Some(dq));
            g.remove_if_unused_const(w);
            cx.count(g.node(n).op_type().to_string().as_str(), 1);
        }
    }
}
