//! `quantize-dynamic{per-tensor=true,reduce-range=true,weight-type=uint8|int8,ops=MatMul;Gemm;...,exclude=NODE;...}`:
//! dynamic quantization (PyTorch's `quantize_dynamic`, ONNX Runtime's
//! `quantize_dynamic`). Weights become int8 constants ahead of time,
//! symmetric and per output channel; activations are quantized at run time
//! by `DynamicQuantizeLinear` (u8, asymmetric, range from the tensor itself),
//! so no calibration data is needed:
//! * weights are stored as uint8 with zero point 128 by default (see
//!   [`DynamicOptions::unsigned_weights`]), `weight-type=int8` for int8;
//! * `MatMul(x, W)` with a constant 2-D W, and `Gemm(x, W, C)`:
//!   `DynamicQuantizeLinear(x)` → `MatMulInteger(x_q, W_q, x_zp, W_zp)` →
//!   `Cast` to float → `Mul` by `x_scale × W_scale` (one scale per output
//!   column) → `Add` of `beta × C` for Gemm;
//! * `Conv(x, W, B)`: the same with `ConvInteger` (its weight zero point is
//!   one scalar, which symmetric weights allow even with per-channel scales);
//! * `LSTM`, `GRU`, `RNN`: standard ONNX has no integer recurrent op, so
//!   their W and R become int8 initializers + `DequantizeLinear` (per gate
//!   row) feeding the float op.
//!
//! Everything else stays float, including a MatMul of two activations
//! (attention scores): the notes say why, node by node. One
//! `DynamicQuantizeLinear` serves every quantized reader of a value.
//! Subgraphs (If/Loop/Scan bodies) stay float.

use crate::prelude::*;
use std::collections::{BTreeSet, HashMap};

/// The op types `quantize-dynamic` rewrites by default.
pub const DYNAMIC_OPS: &[&str] = &["Conv", "GRU", "Gemm", "LSTM", "MatMul", "RNN"];

/// What dynamic mode quantizes unless told otherwise: PyTorch's
/// `quantize_dynamic` set (linear layers and recurrent cells). Conv is
/// opt-in (`ops=Conv;...`): ConvInteger with a run-time activation scale is
/// slower than float convolution in ONNX Runtime (3× on digits_cnn).
pub const DEFAULT_DYNAMIC_OPS: &[&str] = &["GRU", "Gemm", "LSTM", "MatMul", "RNN"];

/// Options of `quantize-dynamic`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicOptions {
    /// One weight scale per output channel (default) or per tensor.
    pub per_channel: bool,
    /// 7-bit weights ([-64, 64]), for u8×s8 kernels that could saturate
    /// (AVX2 without VNNI).
    pub reduce_range: bool,
    /// Store MatMulInteger/ConvInteger weights as uint8 with zero point 128
    /// (the same symmetric int8 values, shifted) rather than int8. The
    /// default: u8×u8 kernels are exact everywhere, while ONNX Runtime's
    /// u8×s8 kernels on AVX2 without VNNI saturate 16-bit pair sums (on the
    /// bundled MLP, 25 dB instead of 53 dB). `weight-type=int8` is faster on
    /// VNNI machines.
    pub unsigned_weights: bool,
    /// Op types to quantize (a subset of [`DYNAMIC_OPS`]).
    pub op_types: BTreeSet<String>,
    /// Node names kept in float.
    pub exclude: BTreeSet<String>,
}

impl Default for DynamicOptions {
    fn default() -> Self {
        DynamicOptions {
            per_channel: true,
            reduce_range: false,
            unsigned_weights: true,
            op_types: DEFAULT_DYNAMIC_OPS.iter().map(|s| s.to_string()).collect(),
            exclude: BTreeSet::new(),
        }
    }
}

/// Splits a `;`-separated option list.
pub(crate) fn option_list(v: &str) -> BTreeSet<String> {
    v.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Checks that every excluded node exists in the main graph.
pub(crate) fn check_exclusions(pass: &str, g: &Graph, exclude: &BTreeSet<String>) -> Result<()> {
    let mut names = BTreeSet::new();
    all_node_names(g, &mut names);
    for e in exclude {
        if !names.contains(e.as_str()) {
            return Err(Error::invalid(format!(
                "{pass}: cannot exclude `{e}`: the model has no node of that name"
            )));
        }
    }
    Ok(())
}

pub struct QuantizeDynamic {
    pub options: DynamicOptions,
}

impl QuantizeDynamic {
    pub fn new(options: DynamicOptions) -> Result<Self> {
        if let Some(bad) = options
            .op_types
            .iter()
            .find(|o| !DYNAMIC_OPS.contains(&o.as_str()))
        {
            return Err(Error::invalid(format!(
                "quantize-dynamic: cannot quantize op type `{bad}` dynamically (supported: {})",
                DYNAMIC_OPS.join(", ")
            )));
        }
        Ok(QuantizeDynamic { options })
    }

    /// Factory for the registry.
    pub fn from_options(mut opts: PassOptions) -> Result<Box<dyn Pass>> {
        let mut o = DynamicOptions {
            per_channel: !opts.take_parsed("per-tensor", false)?,
            reduce_range: opts.take_parsed("reduce-range", false)?,
            ..Default::default()
        };
        match opts.take("weight-type").as_deref() {
            None => {}
            Some("int8") => o.unsigned_weights = false,
            Some("uint8") => o.unsigned_weights = true,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "quantize-dynamic: weight-type must be int8 or uint8, not `{other}`"
                )))
            }
        }
        if let Some(v) = opts.take("ops") {
            o.op_types = option_list(&v);
        }
        if let Some(v) = opts.take("exclude") {
            o.exclude = option_list(&v);
        }
        opts.finish(&[
            "per-tensor",
            "reduce-range",
            "weight-type",
            "ops",
            "exclude",
        ])?;
        Ok(Box::new(QuantizeDynamic::new(o)?))
    }
}

impl Pass for QuantizeDynamic {
    fn name(&self) -> &'static str {
        "quantize-dynamic"
    }

    fn options(&self) -> Vec<(String, String)> {
        let d = DynamicOptions::default();
        let o = &self.options;
        let mut v = vec![];
        if !o.per_channel {
            v.push(("per-tensor".into(), "true".into()));
        }
        if o.reduce_range {
            v.push(("reduce-range".into(), "true".into()));
        }
        if o.unsigned_weights != d.unsigned_weights {
            let t = if o.unsigned_weights { "uint8" } else { "int8" };
            v.push(("weight-type".into(), t.into()));
        }
        if o.op_types != d.op_types {
            v.push(("ops".into(), join(&o.op_types)));
        }
        if !o.exclude.is_empty() {
            v.push(("exclude".into(), join(&o.exclude)));
        }
        v
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let opset = model.onnx_opset();
        if opset < 11 {
            return Err(Error::invalid(format!(
                "quantize-dynamic: the model imports opset {opset}; DynamicQuantizeLinear needs opset ≥ 11"
            )));
        }
        check_exclusions("quantize-dynamic", &model.graph, &self.options.exclude)?;
        let spec = qdq::symmetric_weight_spec(self.options.per_channel, self.options.reduce_range);
        // Recurrent weights that branches compute from an enclosing graph's constant.
        let recurrent: BTreeSet<String> = self
            .options
            .op_types
            .iter()
            .filter(|t| RECURRENT_OPS.contains(&t.as_str()))
            .cloned()
            .collect();
        if !recurrent.is_empty() {
            for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
                outer_recurrent_weights(g, &recurrent, &self.options.exclude, &spec, opset, cx);
                Ok(())
            })?;
        }
        // Every graph on its own, If branches included (innermost first).
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            let mut rw = Rewriter {
                spec,
                unsigned: self.options.unsigned_weights,
                opset,
                dql: HashMap::new(),
                dequantized: HashMap::new(),
            };
            let order = g.topo_order().map_err(|e| Error::invalid(e.to_string()))?;
            for n in order {
                let Some(op) = g.try_node(n).and_then(|node| node.op()) else {
                    continue;
                };
                let op_type = op.op_type.clone();
                let name = g.display_node_name(n);
                if op.has_subgraphs() && op_type != "If" {
                    cx.note(
                        name,
                        format!("stays float, body included: ops inside {op_type} bodies are not quantized"),
                    );
                    continue;
                }
                if !g.node(n).is_op(&op_type) || !self.options.op_types.contains(&op_type) {
                    continue;
                }
                if self.options.exclude.contains(&g.node(n).name) {
                    cx.note(name, "stays float: excluded");
                    continue;
                }
                let r = match op_type.as_str() {
                    "MatMul" => rw.matmul(g, n),
                    "Gemm" => rw.gemm(g, n),
                    "Conv" => rw.conv(g, n),
                    _ => rw.recurrent(g, n),
                };
                match r {
                    Ok(()) => cx.count(&op_type, 1),
                    Err(why) => cx.note(name, format!("stays float: {why}")),
                }
            }
            Ok(())
        })?;
        // A branch and its enclosing graph may both have quantized one value
        // under the same derived name.
        unshadow_names(model);
        Ok(())
    }
}

const RECURRENT_OPS: &[&str] = &["GRU", "LSTM", "RNN"];

/// Ops that only move or select elements of a weight on its way to a recurrent layer
/// (PyTorch's export reorders the gates with Slice + Concat, then Unsqueeze).
const WEIGHT_PLUMBING: &[&str] = &[
    "Concat",
    "Gather",
    "Identity",
    "Reshape",
    "Slice",
    "Split",
    "Squeeze",
    "Transpose",
    "Unsqueeze",
];

/// Whether every use of `v` in `g` leads, through [`WEIGHT_PLUMBING`] only, to the W or R
/// input of a recurrent op of `ops` not excluded; and at least one does.
fn feeds_only_recurrent_weights(
    g: &Graph,
    v: ValueId,
    ops: &BTreeSet<String>,
    exclude: &BTreeSet<String>,
) -> bool {
    let mut stack = vec![v];
    let mut reached = false;
    let mut seen = std::collections::HashSet::new();
    while let Some(x) = stack.pop() {
        if g.is_graph_output(x) {
            return false;
        }
        if !seen.insert(x) {
            continue;
        }
        for (n, slot) in g.consumers(x) {
            let node = g.node(n);
            let op_type = node.op_type();
            match slot {
                Slot::Input(i) if ops.contains(op_type) && (i == 1 || i == 2) => {
                    if exclude.contains(&node.name) {
                        return false;
                    }
                    reached = true;
                }
                // The data input of a plumbing op (not its indices or shape).
                Slot::Input(0) if WEIGHT_PLUMBING.contains(&op_type) => {
                    stack.extend(node.outputs.iter().flatten().copied())
                }
                Slot::Input(_) if op_type == "Concat" => {
                    stack.extend(node.outputs.iter().flatten().copied())
                }
                _ => return false,
            }
        }
    }
    reached
}

/// A constant of `g` that subgraphs read (captured) and that every reading subgraph only
/// slices, reorders and reshapes into the W or R input of its LSTM/GRU/RNN (silero-VAD's
/// export: both branches of an If build their LSTM weights from the same initializers) is
/// stored int8, one scale per row (axis 0: the gate rows of PyTorch's `[gates × hidden,
/// ·]` layout), behind a DequantizeLinear in `g` whose output keeps the branches' view.
fn outer_recurrent_weights(
    g: &mut Graph,
    ops: &BTreeSet<String>,
    exclude: &BTreeSet<String>,
    spec: &QuantSpec,
    opset: i64,
    cx: &mut PassContext,
) {
    let candidates: Vec<ValueId> = g
        .value_ids()
        .filter(|&v| {
            g.const_tensor(v)
                .is_some_and(|t| t.dtype == DataType::F32 && t.dims.len() == 2)
                && !g.is_graph_output(v)
                && !g.inputs.contains(&v)
        })
        .collect();
    for v in candidates {
        let readers = g.consumers(v);
        if readers.is_empty() || readers.iter().any(|(_, s)| *s != Slot::Capture) {
            continue;
        }
        let name = g.value(v).name.clone();
        let all_recurrent = readers.iter().all(|(n, _)| {
            g.node(*n).op().is_some_and(|op| {
                op.attrs
                    .values()
                    .flat_map(|a| a.subgraphs())
                    .filter_map(|sg| sg.value_by_name(&name).map(|x| (sg, x)))
                    .all(|(sg, x)| feeds_only_recurrent_weights(sg, x, ops, exclude))
            })
        });
        if !all_recurrent {
            continue;
        }
        let t = g.const_tensor(v).expect("a constant").clone();
        let Some(wq) = qdq::quantize_tensor(&t, spec, Some(0)) else {
            continue;
        };
        let dq = qdq::weight_dequantized(g, v, &wq, opset);
        g.replace_all_uses(v, dq);
        g.remove_if_unused_const(v);
        cx.note(
            name,
            "recurrent weight built inside subgraphs: stored int8 per row behind a DequantizeLinear",
        );
    }
}

fn join(s: &BTreeSet<String>) -> String {
    s.iter().cloned().collect::<Vec<_>>().join(";")
}

struct Rewriter {
    spec: QuantSpec,
    unsigned: bool,
    opset: i64,
    /// `DynamicQuantizeLinear` outputs (q, scale, zero point) per value.
    dql: HashMap<ValueId, [ValueId; 3]>,
    /// Dequantized recurrent weights, per float weight (shared weights once).
    dequantized: HashMap<ValueId, ValueId>,
}

type Why = std::result::Result<(), String>;

/// The float activation input of a weighted op, checked.
fn activation(g: &Graph, x: Option<ValueId>) -> std::result::Result<ValueId, String> {
    let x = x.ok_or("no data input")?;
    if g.const_tensor(x).is_some() {
        return Err("its data input is a constant (run fold-constants first)".into());
    }
    match g.value(x).ty.dtype() {
        Some(DataType::F32) => Ok(x),
        Some(d) => Err(format!("input `{}` is {d}, not f32", g.value(x).name)),
        // MatMul, Gemm and Conv tie their input's type to the weight's,
        // which is checked to be f32.
        None => Ok(x),
    }
}

/// A constant f32 weight of the given rank.
fn weight(
    g: &Graph,
    w: Option<ValueId>,
    rank: std::ops::RangeInclusive<usize>,
) -> std::result::Result<(ValueId, &Tensor), String> {
    let w = w.ok_or("no weight input")?;
    let Some(t) = g.const_tensor(w) else {
        return Err(
            "its weight is not a constant (activation × activation; dynamic mode quantizes constant weights only)"
                .to_string(),
        );
    };
    if t.dtype != DataType::F32 {
        return Err(format!(
            "weight `{}` is {}, not f32",
            g.value(w).name,
            t.dtype
        ));
    }
    if !rank.contains(&t.dims.len()) {
        return Err(format!(
            "weight `{}` has rank {} (expected {:?})",
            g.value(w).name,
            t.dims.len(),
            rank
        ));
    }
    Ok((w, t))
}

fn out0(g: &Graph, n: NodeId) -> ValueId {
    g.node(n).outputs[0].expect("one output")
}

fn attr_f32(g: &Graph, n: NodeId, name: &str, default: f32) -> f32 {
    g.node(n)
        .op()
        .and_then(|o| o.attr(name))
        .and_then(|a| a.as_float())
        .unwrap_or(default)
}

fn attr_i64(g: &Graph, n: NodeId, name: &str, default: i64) -> i64 {
    g.node(n)
        .op()
        .and_then(|o| o.attr(name))
        .and_then(|a| a.as_int())
        .unwrap_or(default)
}

/// Transposes a 2-D f32 tensor.
fn transpose2(t: &Tensor) -> Tensor {
    let (r, c) = (t.dims[0] as usize, t.dims[1] as usize);
    let v = t.to_f32_vec().expect("f32");
    let mut out = vec![0f32; v.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    Tensor::from_f32(vec![c as i64, r as i64], &out)
}

impl Rewriter {
    /// `DynamicQuantizeLinear(x)`, one per value.
    fn dynamic_quantize(&mut self, g: &mut Graph, x: ValueId) -> [ValueId; 3] {
        if let Some(v) = self.dql.get(&x) {
            return *v;
        }
        let name = g.value(x).name.clone();
        let ty = g.value(x).ty.clone();
        let n = g.add_op(
            &format!("{name}_DynamicQuantizeLinear"),
            Op::new("DynamicQuantizeLinear"),
            &[Some(x)],
            &[
                &format!("{name}_quantized"),
                &format!("{name}_scale"),
                &format!("{name}_zero_point"),
            ],
        );
        let o: Vec<ValueId> = g
            .node(n)
            .outputs
            .iter()
            .map(|v| v.expect("output"))
            .collect();
        g.value_mut(o[0]).ty = qdq::retyped(&ty, DataType::U8);
        g.value_mut(o[1]).ty = qdq::fixed_type(DataType::F32, &[]);
        g.value_mut(o[2]).ty = qdq::fixed_type(DataType::U8, &[]);
        let v = [o[0], o[1], o[2]];
        self.dql.insert(x, v);
        v
    }

    fn quantize(
        &self,
        g: &Graph,
        w: ValueId,
        t: &Tensor,
        axis: usize,
    ) -> std::result::Result<QuantizedTensor, String> {
        qdq::quantize_tensor(t, &self.spec, Some(axis))
            .ok_or_else(|| format!("weight `{}` has non-finite values", g.value(w).name))
    }

    /// A weight for MatMulInteger / ConvInteger, in the configured dtype.
    fn quantize_integer(
        &self,
        g: &Graph,
        w: ValueId,
        t: &Tensor,
        axis: usize,
    ) -> std::result::Result<QuantizedTensor, String> {
        let q = self.quantize(g, w, t, axis)?;
        Ok(if self.unsigned {
            qdq::shift_to_uint8(q)
        } else {
            q
        })
    }

    /// The integer product and its float rescale: returns
    /// `Cast(int_op(x_q, W_q, x_zp, W_zp)) × (x_scale × scale)`, where
    /// `scale` has the shape that broadcasts over the output channels.
    #[allow(clippy::too_many_arguments)]
    fn integer_op(
        &mut self,
        g: &mut Graph,
        n: NodeId,
        op: Op,
        x: ValueId,
        wq: &QuantizedTensor,
        w_zp: Tensor,
        scale: Tensor,
    ) -> ValueId {
        let [xq, xs, xz] = self.dynamic_quantize(g, x);
        let out = out0(g, n);
        let oname = g.value(out).name.clone();
        let ty = g.value(out).ty.clone();
        let node_name = g.node(n).name.clone();
        let base = if node_name.is_empty() {
            oname.clone()
        } else {
            node_name
        };
        let op_type = op.op_type.clone();
        let wname = format!("{base}_weight_quantized");
        let wdt = qdq::onnx_dtype(wq.params.dtype);
        let wv = g.add_const(&wname, qdq::int_tensor(wdt, wq.dims.clone(), &wq.values));
        let zv = g.add_const(&format!("{base}_weight_zero_point"), w_zp);
        let i = g.add_op(
            &format!("{base}_{op_type}"),
            op,
            &[Some(xq), Some(wv), Some(xz), Some(zv)],
            &[&format!("{oname}_int32")],
        );
        let iv = out0(g, i);
        g.value_mut(iv).ty = qdq::retyped(&ty, DataType::I32);
        let c = g.add_op(
            &format!("{base}_Cast"),
            Op::new("Cast").with_attr("to", DataType::F32.onnx_code() as i64),
            &[Some(iv)],
            &[&format!("{oname}_float")],
        );
        let cv = out0(g, c);
        g.value_mut(cv).ty = ty.clone();
        let sdims = scale.dims.clone();
        let sv = g.add_const(&format!("{base}_weight_scale"), scale);
        let m = g.add_op(
            &format!("{base}_scale_Mul"),
            Op::new("Mul"),
            &[Some(xs), Some(sv)],
            &[&format!("{oname}_scale")],
        );
        let mv = out0(g, m);
        g.value_mut(mv).ty = qdq::fixed_type(DataType::F32, &sdims);
        let y = g.add_op(
            &format!("{base}_rescale"),
            Op::new("Mul"),
            &[Some(cv), Some(mv)],
            &[&format!("{oname}_rescaled")],
        );
        let yv = out0(g, y);
        g.value_mut(yv).ty = ty;
        yv
    }

    /// `x @ W` for a [K, N] weight already quantized per column (axis 1).
    fn integer_matmul(
        &mut self,
        g: &mut Graph,
        n: NodeId,
        x: ValueId,
        wq: &QuantizedTensor,
        alpha: f32,
    ) -> ValueId {
        let p = &wq.params;
        let cols = wq.dims[1];
        let wdt = qdq::onnx_dtype(p.dtype);
        let (zp, scale) = if p.scale.len() > 1 {
            (
                qdq::int_tensor(wdt, vec![cols], &p.zero_point),
                Tensor::from_f32(
                    vec![cols],
                    &p.scale.iter().map(|s| s * alpha).collect::<Vec<_>>(),
                ),
            )
        } else {
            (
                qdq::int_tensor(wdt, vec![], &p.zero_point[..1]),
                Tensor::from_f32(vec![], &[p.scale[0] * alpha]),
            )
        };
        self.integer_op(g, n, Op::new("MatMulInteger"), x, wq, zp, scale)
    }

    fn matmul(&mut self, g: &mut Graph, n: NodeId) -> Why {
        let ins = g.node(n).inputs.clone();
        let x = activation(g, ins[0])?;
        let (w, t) = weight(g, ins.get(1).copied().flatten(), 2..=2)?;
        let wq = self.quantize_integer(g, w, t, 1)?;
        let y = self.integer_matmul(g, n, x, &wq, 1.0);
        g.retire(n, y);
        g.remove_if_unused_const(w);
        Ok(())
    }

    fn gemm(&mut self, g: &mut Graph, n: NodeId) -> Why {
        if attr_i64(g, n, "transA", 0) != 0 {
            return Err("transA=1 (MatMulInteger has no transposed input)".into());
        }
        let ins = g.node(n).inputs.clone();
        let x = activation(g, ins[0])?;
        let (w, t) = weight(g, ins.get(1).copied().flatten(), 2..=2)?;
        let t = if attr_i64(g, n, "transB", 0) != 0 {
            transpose2(t)
        } else {
            t.clone()
        };
        let (alpha, beta) = (attr_f32(g, n, "alpha", 1.0), attr_f32(g, n, "beta", 1.0));
        let c = ins.get(2).copied().flatten();
        if let Some(c) = c {
            if g.value(c).ty.dtype().is_some_and(|d| d != DataType::F32) {
                return Err(format!("bias `{}` is not f32", g.value(c).name));
            }
        }
        let wq = self.quantize_integer(g, w, &t, 1)?;
        let mut y = self.integer_matmul(g, n, x, &wq, alpha);
        let base = g.value(out0(g, n)).name.clone();
        let ty = g.value(out0(g, n)).ty.clone();
        if let (Some(c), true) = (c, beta != 0.0) {
            let bias = match g
                .const_tensor(c)
                .and_then(|t| t.to_f32_vec().map(|v| (t.dims.clone(), v)))
            {
                Some((dims, v)) if beta != 1.0 => {
                    let scaled: Vec<f32> = v.iter().map(|b| b * beta).collect();
                    let name = format!("{}_beta", g.value(c).name);
                    g.add_const(&name, Tensor::from_f32(dims, &scaled))
                }
                None if beta != 1.0 => {
                    let b = g.add_const(&format!("{base}_beta"), Tensor::from_f32(vec![], &[beta]));
                    let m = g.add_op(
                        &format!("{base}_beta_Mul"),
                        Op::new("Mul"),
                        &[Some(c), Some(b)],
                        &[&format!("{base}_bias")],
                    );
                    out0(g, m)
                }
                _ => c,
            };
            y = add_bias(g, &base, y, bias, ty);
        }
        g.retire(n, y);
        g.remove_if_unused_const(w);
        if let Some(c) = c {
            g.remove_if_unused_const(c);
        }
        Ok(())
    }

    fn conv(&mut self, g: &mut Graph, n: NodeId) -> Why {
        let ins = g.node(n).inputs.clone();
        let x = activation(g, ins[0])?;
        let (w, t) = weight(g, ins.get(1).copied().flatten(), 3..=5)?;
        let rank = t.dims.len();
        let m = t.dims[0];
        let b = ins.get(2).copied().flatten();
        let bias = match b {
            None => None,
            Some(b) => match g.const_tensor(b) {
                Some(bt) if bt.dtype == DataType::F32 && bt.len() as i64 == m => {
                    Some(bt.to_f32_vec().expect("f32"))
                }
                _ => {
                    return Err(format!(
                        "bias `{}` is not a constant f32 [{m}]",
                        g.value(b).name
                    ))
                }
            },
        };
        let wq = self.quantize_integer(g, w, t, 0)?;
        let p = &wq.params;
        let mut shape = vec![1i64; rank - 1];
        shape[0] = m;
        let scale = if p.scale.len() > 1 {
            Tensor::from_f32(shape.clone(), &p.scale)
        } else {
            Tensor::from_f32(vec![], &p.scale)
        };
        // ONNX Runtime's ConvInteger takes one weight zero point; symmetric
        // weights share theirs (0, or 128 as uint8), so per-channel scales
        // still work.
        debug_assert!(p.zero_point.iter().all(|&z| z == p.zero_point[0]));
        let zp = qdq::int_tensor(qdq::onnx_dtype(p.dtype), vec![], &p.zero_point[..1]);
        let mut op = Op::new("ConvInteger");
        for a in [
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "pads",
            "strides",
        ] {
            if let Some(v) = g.node(n).op().and_then(|o| o.attr(a)).cloned() {
                op.attrs.insert(a.to_string(), v);
            }
        }
        let mut y = self.integer_op(g, n, op, x, &wq, zp, scale);
        if let Some(bias) = bias {
            let base = g.value(out0(g, n)).name.clone();
            let ty = g.value(out0(g, n)).ty.clone();
            let bname = format!("{}_channels", g.value(b.expect("bias")).name);
            let bv = g.add_const(&bname, Tensor::from_f32(shape, &bias));
            y = add_bias(g, &base, y, bv, ty);
        }
        g.retire(n, y);
        g.remove_if_unused_const(w);
        if let Some(b) = b {
            g.remove_if_unused_const(b);
        }
        Ok(())
    }

    /// LSTM / GRU / RNN: W (input 1) and R (input 2) become int8 + DequantizeLinear.
    fn recurrent(&mut self, g: &mut Graph, n: NodeId) -> Why {
        let ins = g.node(n).inputs.clone();
        let mut todo = vec![];
        for slot in [1usize, 2] {
            let (w, t) = weight(g, ins.get(slot).copied().flatten(), 3..=3)?;
            // [num_directions, gates × hidden, ·]: one scale per gate row.
            todo.push((slot, w, self.quantize(g, w, t, 1)?));
        }
        for (slot, w, wq) in todo {
            let dq = match self.dequantized.get(&w) {
                Some(&dq) => dq,
                None => {
                    let dq = qdq::weight_dequantized(g, w, &wq, self.opset);
                    self.dequantized.insert(w, dq);
                    dq
                }
            };
            g.set_input(n, slot, Some(dq));
            g.remove_if_unused_const(w);
        }
        Ok(())
    }
}

/// `y + bias` as an Add named after the original output `base`, typed `ty`.
fn add_bias(g: &mut Graph, base: &str, y: ValueId, bias: ValueId, ty: ValueType) -> ValueId {
    let a = g.add_op(
        &format!("{base}_bias_Add"),
        Op::new("Add"),
        &[Some(y), Some(bias)],
        &[&format!("{base}_biased")],
    );
    let out = out0(g, a);
    g.value_mut(out).ty = ty;
    out
}
