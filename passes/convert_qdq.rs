//! `convert-qdq{calibration=FILE}`: rewrites a prepared, calibrated graph
//! into ONNX's QDQ format (PyTorch's `convert_to_reference`, ONNX Runtime's
//! QDQ conventions):
//! * every observed activation gets one QuantizeLinear → DequantizeLinear
//!   pair right after its producer, shared by all readers;
//! * weights become int8 initializers followed by a DequantizeLinear
//!   (per channel on the output-channel axis where the opset allows it);
//! * Conv/Gemm biases become int32 with scale = input scale × weight scale
//!   and zero point 0; a channel whose bias would overflow int32 gets a
//!   larger weight scale instead (reported);
//! * values that share their input's quantization reuse its qparams.
//!
//! Quantization follows the ONNX operator exactly: q = saturate(round_half_even(x / scale) + zp).

use crate::calib::CalibrationTable;
use crate::observe::{QDtype, QParams};
use crate::prelude::*;
use qdq::{dequantize_node, int_tensor, onnx_dtype, quantize_value};
use std::collections::{BTreeSet, HashMap};

/// Activations whose calibrated range is wider than this stay float.
pub const MAX_ACTIVATION_RANGE: f64 = 1e6;

pub struct ConvertQdq {
    table: CalibrationTable,
    option: Option<String>,
    bias_correction: bool,
}

impl ConvertQdq {
    pub fn new(table: CalibrationTable) -> Self {
        ConvertQdq {
            table,
            option: None,
            bias_correction: true,
        }
    }

    /// Bias correction (on by default): where the table holds the channel means of a
    /// Conv's or Gemm's float input, the mean output shift its weight rounding causes,
    /// `Σ (w − dq(q(w)))·E[x]` per output channel, is added to the bias (one is created
    /// if the layer has none). Nagel et al. 2019; NNCF's fast bias correction.
    pub fn with_bias_correction(mut self, on: bool) -> Self {
        self.bias_correction = on;
        self
    }

    pub fn from_options(mut opts: PassOptions) -> Result<Box<dyn Pass>> {
        let file = opts.take("calibration");
        let bias_correction = match opts.take("bias-correction").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "convert-qdq: bias-correction={other}: true or false"
                )))
            }
        };
        opts.finish(&["calibration", "bias-correction"])?;
        let file = file.ok_or_else(|| {
            Error::invalid("convert-qdq needs calibration=FILE (from `onnxq calibrate`)")
        })?;
        let table = CalibrationTable::read(std::path::Path::new(&file))?;
        Ok(Box::new(ConvertQdq {
            table,
            option: Some(file),
            bias_correction,
        }))
    }
}

impl Pass for ConvertQdq {
    fn name(&self) -> &'static str {
        "convert-qdq"
    }

    fn options(&self) -> Vec<(String, String)> {
        let mut o: Vec<(String, String)> = self
            .option
            .iter()
            .map(|f| ("calibration".to_string(), f.clone()))
            .collect();
        if !self.bias_correction {
            o.push(("bias-correction".into(), "false".into()));
        }
        o
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let opset = model.onnx_opset();
        if opset < 10 {
            return Err(Error::invalid(format!(
                "the model imports opset {opset}; QuantizeLinear/DequantizeLinear need opset ≥ 10 (convert the model first)"
            )));
        }
        let per_axis_ok = opset >= 13;
        // Names of Q/DQ values are unique in the whole model: a branch must not
        // shadow a name of an enclosing graph.
        let mut taken = BTreeSet::new();
        all_value_names(&model.graph, &mut taken);
        let outer = BTreeSet::new();
        self.convert_tree(&mut model.graph, &outer, opset, per_axis_ok, &mut taken, cx)
    }
}

/// Suffixes of the values made for a quantized value `x`: `x_quantized`, ...
const DERIVED: [&str; 6] = [
    "_quantized",
    "_scale",
    "_zero_point",
    "_dequantized",
    "_pending",
    "_float",
];

/// The base for the names derived from value `name`: `name` itself unless one
/// of its derived names is taken anywhere in the model; then `name_1`, ...
fn fresh_base(taken: &mut BTreeSet<String>, name: &str) -> String {
    let free = |b: &str, taken: &BTreeSet<String>| {
        DERIVED.iter().all(|s| !taken.contains(&format!("{b}{s}")))
    };
    let base = if free(name, taken) {
        name.to_string()
    } else {
        (1..)
            .map(|i| format!("{name}_{i}"))
            .find(|b| free(b, taken))
            .expect("unbounded")
    };
    for s in DERIVED {
        taken.insert(format!("{base}{s}"));
    }
    base
}

impl ConvertQdq {
    /// Converts the If branches of `g` (innermost first), then `g`.
    /// `outer_q` names the activations that enclosing graphs quantize: a
    /// branch reading one of them reads its DequantizeLinear output through
    /// the capture and needs no Q/DQ pair of its own.
    fn convert_tree(
        &self,
        g: &mut Graph,
        outer_q: &BTreeSet<String>,
        opset: i64,
        per_axis_ok: bool,
        taken: &mut BTreeSet<String>,
        cx: &mut PassContext,
    ) -> Result<()> {
        let mut here = outer_q.clone();
        for v in g.value_ids() {
            if matches!(
                g.value(v).quant,
                Some(
                    QuantAnnotation::Observe(_)
                        | QuantAnnotation::Fixed { .. }
                        | QuantAnnotation::ShareWith(_)
                )
            ) && g.const_tensor(v).is_none()
            {
                here.insert(g.value(v).name.clone());
            }
        }
        let nodes: Vec<NodeId> = g.node_ids().collect();
        let mut any = false;
        for n in nodes {
            if let Some(op) = g.node_mut(n).op_mut() {
                for a in op.attrs.values_mut() {
                    for sg in a.subgraphs_mut() {
                        self.convert_tree(sg, &here, opset, per_axis_ok, taken, cx)?;
                        any = true;
                    }
                }
            }
        }
        if any {
            g.refresh_captures();
        }
        self.convert_graph(g, outer_q, opset, per_axis_ok, taken, cx)
    }

    fn convert_graph(
        &self,
        g: &mut Graph,
        outer_q: &BTreeSet<String>,
        opset: i64,
        per_axis_ok: bool,
        taken: &mut BTreeSet<String>,
        cx: &mut PassContext,
    ) -> Result<()> {
        // Resolve every annotated value to qparams.
        let annotated: Vec<ValueId> = g
            .value_ids()
            .filter(|&v| g.value(v).quant.is_some())
            .collect();
        let mut qp: HashMap<ValueId, QParams> = HashMap::new();
        for &v in &annotated {
            let mut cur = v;
            let mut hops = 0;
            while let Some(QuantAnnotation::ShareWith(src)) = &g.value(cur).quant {
                cur = *src;
                hops += 1;
                if hops > 64 {
                    return Err(Error::invalid(format!(
                        "value `{}`: qparams sharing loops",
                        g.value(v).name
                    )));
                }
            }
            let name = &g.value(cur).name;
            let p = self
                .table
                .qparams(name)
                .ok_or_else(|| Error::invalid(format!("calibration table has no entry for `{name}` (calibrated with another pipeline?)")))?;
            if self.never_reached(name) {
                // An If branch the calibration data never took: its observers hold no
                // range (their qparams are placeholders), so it stays float.
                if cur == v {
                    cx.note(
                        name.clone(),
                        "kept float: the calibration data never reached it (an If branch it did not take)",
                    );
                }
                continue;
            }
            qp.insert(v, p.clone());
        }

        // Weights (and the biases next to them), node by node.
        let mut weight_scales: HashMap<ValueId, Vec<f32>> = HashMap::new();
        let order = g.topo_order().map_err(|e| Error::invalid(e.to_string()))?;
        for &n in &order {
            let inputs: Vec<Option<ValueId>> = g.node(n).inputs.to_vec();
            for (slot, v) in inputs.iter().enumerate() {
                // (A bias that bias correction replaced is gone.)
                let Some(v) = v.filter(|&v| g.try_value(v).is_some()) else {
                    continue;
                };
                let Some(QuantAnnotation::Weight { axis, .. }) = g.value(v).quant.clone() else {
                    continue;
                };
                if weight_scales.contains_key(&v) {
                    continue;
                }
                let t = g.const_tensor(v).expect("weights are constants").clone();
                let w = t.to_f32_vec().expect("f32 weights");
                let mut p = qp[&v].clone();
                let rank = t.dims.len() as i64;
                let axis = if axis < 0 { axis + rank } else { axis } as usize;
                if p.scale.len() > 1 && !per_axis_ok {
                    // Per-axis DequantizeLinear needs opset 13: fall back to per tensor.
                    let s = p.scale.iter().cloned().fold(0f32, f32::max);
                    p = QParams {
                        scale: vec![s],
                        zero_point: vec![p.zero_point[0]],
                        ch_axis: None,
                        ..p
                    };
                    cx.note(g.value(v).name.clone(), format!("per-tensor weights: opset {opset} < 13 has no per-axis DequantizeLinear"));
                }
                // Bias overflow: widen the weight scale of that channel.
                let channels = p.scale.len();
                let bias = (slot == 1)
                    .then(|| g.node(n).inputs.get(2).copied().flatten())
                    .flatten();
                let x_scale = g
                    .node(n)
                    .inputs
                    .first()
                    .copied()
                    .flatten()
                    .and_then(|x| qp.get(&x))
                    .and_then(|q| q.per_tensor())
                    .map(|q| q.0);
                if let (Some(b), Some(sx)) = (bias, x_scale) {
                    if let Some(bt) = g.const_tensor(b).and_then(|t| t.to_f32_vec()) {
                        for (c, &bc) in bt.iter().enumerate() {
                            let k = if channels == 1 {
                                0
                            } else {
                                c.min(channels - 1)
                            };
                            let limit = (i32::MAX as f64) * 0.5;
                            if (bc as f64 / (sx as f64 * p.scale[k] as f64)).abs() > limit {
                                let needed = (bc.abs() as f64 / (sx as f64 * limit)) as f32;
                                p.scale[k] = p.scale[k].max(needed);
                                cx.warn(g.value(b).name.clone(), format!("channel {c}: bias would overflow int32; weight scale raised to {needed:e}"));
                            }
                        }
                    }
                }
                let inner: usize = t.dims[axis + 1..]
                    .iter()
                    .map(|&d| d as usize)
                    .product::<usize>()
                    .max(1);
                let per_c = t.dims.get(axis).copied().unwrap_or(1) as usize;
                // The quantization channel of element i.
                let channel = |i: usize| {
                    if p.scale.len() == 1 {
                        0
                    } else {
                        (i / inner) % per_c
                    }
                };
                let q: Vec<i64> = w
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| {
                        let c = channel(i);
                        quantize_value(x, p.scale[c], p.zero_point[c], p.quant_min, p.quant_max)
                    })
                    .collect();
                if self.bias_correction {
                    // What DequantizeLinear gives back: (q − zp)·scale.
                    let deq: Vec<f32> = q
                        .iter()
                        .enumerate()
                        .map(|(i, &x)| {
                            let c = channel(i);
                            (x - p.zero_point[c]) as f32 * p.scale[c]
                        })
                        .collect();
                    // Every layer reading this weight (a shared weight is quantized once).
                    let layers: Vec<NodeId> = g
                        .consumers(v)
                        .into_iter()
                        .filter(|&(_, s)| s == Slot::Input(1))
                        .map(|(c, _)| c)
                        .collect();
                    for layer in layers {
                        self.correct_bias(g, layer, &t.dims, &w, &deq, cx);
                    }
                }
                let dt = onnx_dtype(p.dtype);
                let name = fresh_base(taken, &g.value(v).name);
                let qv = g.add_const(
                    &format!("{name}_quantized"),
                    int_tensor(dt, t.dims.clone(), &q),
                );
                let axis_attr = (p.scale.len() > 1).then_some(axis as i64);
                let fused = g
                    .consumers(v)
                    .iter()
                    .any(|&(c, _)| runtime_fuses(g, c, &qp));
                if !fused {
                    // Read by float ops only (a weight-only unit): a form engines fold at
                    // load, so that the op runs at float speed.
                    let w = qdq::decompression_node(g, &name, qv, &p, axis_attr, &t.dims);
                    g.replace_all_uses(v, w);
                    g.remove_if_unused_const(v);
                    cx.count("weights", 1);
                    cx.count("weights for float ops", 1);
                    continue;
                }
                let dq = dequantize_node(g, &name, qv, &p, axis_attr, dt);
                g.replace_all_uses(v, dq);
                g.remove_if_unused_const(v);
                weight_scales.insert(dq, p.scale.clone());
                cx.count("weights", 1);
            }
        }

        // Biases of quantized Conv/Gemm: int32, scale = x_scale × w_scale.
        for &n in &order {
            if g.try_node(n).is_none()
                || !(g.node(n).is_op("Conv")
                    || g.node(n).is_op("Gemm")
                    || g.node(n).is_op("ConvTranspose"))
            {
                continue;
            }
            let ins: Vec<Option<ValueId>> = g.node(n).inputs.to_vec();
            let (Some(Some(x)), Some(Some(w)), Some(Some(b))) =
                (ins.first(), ins.get(1), ins.get(2))
            else {
                continue;
            };
            let (Some(ws), Some(xq)) =
                (weight_scales.get(w), qp.get(x).and_then(|q| q.per_tensor()))
            else {
                continue;
            };
            let Some(bt) = g.const_tensor(*b).and_then(|t| t.to_f32_vec()) else {
                continue;
            };
            let scales: Vec<f32> = (0..bt.len())
                .map(|c| {
                    xq.0 * ws[if ws.len() == 1 {
                        0
                    } else {
                        c.min(ws.len() - 1)
                    }]
                })
                .collect();
            let q: Vec<i64> = bt
                .iter()
                .zip(&scales)
                .map(|(&x, &s)| quantize_value(x, s, 0, i32::MIN as i64, i32::MAX as i64))
                .collect();
            let name = fresh_base(taken, &g.value(*b).name);
            let qv = g.add_const(
                &format!("{name}_quantized"),
                int_tensor(DataType::I32, vec![bt.len() as i64], &q),
            );
            let per_channel = ws.len() > 1;
            let p = QParams {
                scale: if per_channel {
                    scales.clone()
                } else {
                    vec![scales[0]]
                },
                zero_point: vec![0; if per_channel { scales.len() } else { 1 }],
                quant_min: i32::MIN as i64,
                quant_max: i32::MAX as i64,
                dtype: QDtype::Int32,
                qscheme: crate::observe::QScheme::PerChannelSymmetric,
                ch_axis: per_channel.then_some(0),
            };
            let dq = dequantize_node(g, &name, qv, &p, per_channel.then_some(0), DataType::I32);
            let bias_v = *b;
            g.set_input(n, 2, Some(dq));
            g.remove_if_unused_const(bias_v);
            cx.count("biases", 1);
        }

        // Activations: one Q → DQ pair per value, shared by all readers.
        for v in annotated {
            let Some(p) = qp.get(&v).cloned() else {
                continue;
            };
            if g.try_value(v).is_none()
                || matches!(g.value(v).quant, Some(QuantAnnotation::Weight { .. }))
            {
                continue;
            }
            let outer_ref = matches!(g.node(g.producer(v)).kind, NodeKind::OuterRef);
            if outer_ref && outer_q.contains(&g.value(v).name) {
                continue; // quantized where it is computed
            }
            let (s, zp) = p.per_tensor().ok_or_else(|| {
                Error::invalid(format!(
                    "activation `{}` has per-channel qparams",
                    g.value(v).name
                ))
            })?;
            let span = s as f64 * (p.quant_max - p.quant_min) as f64;
            if !span.is_finite() || span > MAX_ACTIVATION_RANGE {
                // Attention masks filled with float-min or -inf, and other
                // huge-range values: 8 bits would erase the signal.
                log::info!("{}: calibrated range spans {span:.3e}", g.value(v).name);
                cx.note(
                    g.value(v).name.clone(),
                    "kept float: calibrated range too wide for 8 bits (mask or huge-range value)",
                );
                continue;
            }
            let dt = onnx_dtype(p.dtype);
            let name = fresh_base(taken, &g.value(v).name);
            if let Some(t) = g.const_tensor(v).cloned() {
                // A constant operand (Add/Mul by a constant): store it quantized.
                let vals = t.to_f32_vec().expect("f32");
                let q: Vec<i64> = vals
                    .iter()
                    .map(|&x| quantize_value(x, s, zp, p.quant_min, p.quant_max))
                    .collect();
                let qv = g.add_const(
                    &format!("{name}_quantized"),
                    int_tensor(dt, t.dims.clone(), &q),
                );
                let dq = dequantize_node(g, &name, qv, &p, None, dt);
                g.value_mut(dq).ty = g.value(v).ty.clone();
                g.replace_all_uses(v, dq);
                g.remove_if_unused_const(v);
                cx.count("constants", 1);
                continue;
            }
            let was_output = g.is_graph_output(v);
            let declared = g.value(v).declared.clone();
            let ty = g.value(v).ty.clone();
            let scale = g.add_const(&format!("{name}_scale"), Tensor::from_f32(vec![], &[s]));
            let zero = g.add_const(&format!("{name}_zero_point"), int_tensor(dt, vec![], &[zp]));
            // Readers switch to the DQ output; then the Q reads the original.
            let placeholder =
                g.add_const(&format!("{name}_pending"), Tensor::from_f32(vec![], &[0.0]));
            g.replace_all_uses(v, placeholder);
            let q = g.add_op(
                &format!("{name}_QuantizeLinear"),
                Op::new("QuantizeLinear"),
                &[Some(v), Some(scale), Some(zero)],
                &[&format!("{name}_quantized")],
            );
            let qv = g.node(q).outputs[0].expect("one output");
            g.value_mut(qv).ty = ValueType::Tensor(TensorType {
                dtype: Some(dt),
                shape: ty.tensor().and_then(|t| t.shape.clone()),
            });
            let dq = g.add_op(
                &format!("{name}_DequantizeLinear"),
                Op::new("DequantizeLinear"),
                &[Some(qv), Some(scale), Some(zero)],
                &[&format!("{name}_dequantized")],
            );
            let dqv = g.node(dq).outputs[0].expect("one output");
            g.value_mut(dqv).ty = ty;
            g.replace_all_uses(placeholder, dqv);
            g.remove_if_unused_const(placeholder);
            if was_output {
                // The graph output keeps its name: the float value is renamed.
                let out_name = g.value(v).name.clone();
                let float_name = g.fresh_name(&format!("{name}_float"));
                g.rename_value(v, &float_name);
                g.value_mut(v).declared = None;
                g.rename_value(dqv, &out_name);
                g.value_mut(dqv).declared = declared;
            }
            cx.count("activations", 1);
        }
        // Annotations are consumed: the graph is plain ONNX again.
        let ids: Vec<ValueId> = g.value_ids().collect();
        for v in ids {
            g.value_mut(v).quant = None;
        }
        Ok(())
    }
}

impl ConvertQdq {
    /// Whether the activation `name` was observed but saw no data.
    fn never_reached(&self, name: &str) -> bool {
        use crate::observe::Observer;
        self.table.entries.get(name).is_some_and(|e| {
            e.role == crate::calib::Role::Activation
                && e.state.as_ref().is_some_and(|s| s.range().is_none())
        })
    }

    /// Bias correction of layer `n` (see [`ConvertQdq::with_bias_correction`]): `w` its
    /// float weight of shape `dims`, `deq` the same dequantized. Does nothing without the
    /// input's channel means or where the layout is not one it knows.
    fn correct_bias(
        &self,
        g: &mut Graph,
        n: NodeId,
        dims: &[i64],
        w: &[f32],
        deq: &[f32],
        cx: &mut PassContext,
    ) {
        let Some((x, _)) = crate::calib::corrected_layer_input(g, n) else {
            return;
        };
        let Some(mean) = self
            .table
            .channel_means
            .get(&g.value(x).name)
            .and_then(|m| m.mean())
        else {
            return;
        };
        if mean.iter().any(|m| !m.is_finite()) {
            return;
        }
        let node = g.node(n);
        let int_attr = |a: &str, d: i64| {
            node.op()
                .and_then(|op| op.attrs.get(a))
                .and_then(|v| v.as_int())
                .unwrap_or(d)
        };
        let float_attr = |a: &str| {
            node.op()
                .and_then(|op| op.attrs.get(a))
                .and_then(|v| v.as_float())
                .unwrap_or(1.0)
        };
        let d: Vec<usize> = dims.iter().map(|&x| x as usize).collect();
        // shift[o] = Σ_k (w − deq)[o, k]·E[x_k], in the layer's output units.
        let shift: Vec<f64> = if node.is_op("Conv") {
            if d.len() < 3 || d[1] == 0 || mean.len() % d[1] != 0 {
                return;
            }
            let (o_n, per_group) = (d[0], d[1]);
            let groups = mean.len() / per_group;
            if groups == 0 || o_n % groups != 0 {
                return;
            }
            let taps: usize = d[2..].iter().product();
            (0..o_n)
                .map(|o| {
                    let base = o / (o_n / groups) * per_group;
                    (0..per_group)
                        .map(|i| {
                            let at = (o * per_group + i) * taps;
                            let e: f64 = (at..at + taps).map(|j| w[j] as f64 - deq[j] as f64).sum();
                            e * mean[base + i]
                        })
                        .sum()
                })
                .collect()
        } else {
            // Gemm: y = alpha·A·B + beta·C, B is [K, N] or, with transB, [N, K].
            let (alpha, beta) = (float_attr("alpha") as f64, float_attr("beta") as f64);
            if d.len() != 2 || beta == 0.0 {
                return;
            }
            let trans_b = int_attr("transB", 0) != 0;
            let (k_n, n_n) = if trans_b { (d[1], d[0]) } else { (d[0], d[1]) };
            if mean.len() != k_n {
                return;
            }
            (0..n_n)
                .map(|o| {
                    (0..k_n)
                        .map(|k| {
                            let j = if trans_b { o * k_n + k } else { k * n_n + o };
                            (w[j] as f64 - deq[j] as f64) * mean[k]
                        })
                        .sum::<f64>()
                        * alpha
                        / beta
                })
                .collect()
        };
        let channels = shift.len();
        let old = g.node(n).inputs.get(2).copied().flatten();
        let bias: Vec<f32> = match old {
            None => vec![0.0; channels],
            Some(b) => match g.const_tensor(b).and_then(|t| t.to_f32_vec()) {
                Some(v) if v.len() == channels => v,
                Some(v) if v.len() == 1 => vec![v[0]; channels],
                // A computed bias, or a Gemm C of shape [M, N]: left as it is.
                _ => return,
            },
        };
        let corrected: Vec<f32> = bias
            .iter()
            .zip(&shift)
            .map(|(&b, &s)| (b as f64 + s) as f32)
            .collect();
        let name = match old {
            Some(b) => g.value(b).name.clone(),
            None => format!("{}_bias", g.display_node_name(n)),
        };
        let fresh = g.fresh_name(&format!("{name}_corrected"));
        let nb = g.add_const(&fresh, Tensor::from_f32(vec![channels as i64], &corrected));
        g.set_input(n, 2, Some(nb));
        match old {
            // The bias read by this layer only keeps its name.
            Some(b) => {
                if g.remove_if_unused_const(b) {
                    g.rename_value(nb, &name);
                }
            }
            None => {
                let free = g.fresh_name(&name);
                g.rename_value(nb, &free);
            }
        }
        cx.count("bias corrections", 1);
    }
}

/// Whether ONNX Runtime fuses `n` into an int8 op (QLinearConv, QGemm, QLinearMatMul...):
/// its input 0 arrives quantized and its output, after at most a single-consumer Relu/Clip
/// chain, is quantized (it has qparams in `qp`: an observer the calibration data never
/// reached gives none). Its weight must then be a DequantizeLinear; otherwise the op runs
/// in float, whatever form its weight has.
fn runtime_fuses(g: &Graph, n: NodeId, qp: &HashMap<ValueId, QParams>) -> bool {
    let observed = |v: ValueId| qp.contains_key(&v);
    g.node(n)
        .inputs
        .first()
        .copied()
        .flatten()
        .is_some_and(observed)
        && qdq::quantized_output(g, n, observed).is_some()
}
