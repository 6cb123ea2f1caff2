//! Lowering of QDQ node units to the integer kernels.
//!
//! A unit is `DequantizeLinear(x_q) + DequantizeLinear(w_q) [+ DequantizeLinear(bias_i32)] →
//! Conv | Gemm | MatMul [→ Relu | Clip] → QuantizeLinear`, as written by onnxq and by ONNX
//! Runtime's quantizer. It becomes one quantized product reading `x_q` and writing the
//! QuantizeLinear's output directly (weights prepacked, activation fused into the output
//! stage). When the product's output is not quantized again (e.g. it feeds a float Add), the
//! unit stops at the op and the output stage dequantizes to f32.
//!
//! A candidate that does not fit exactly (float bias, Gemm with alpha/beta/transA, weights
//! quantized along the wrong axis, values used elsewhere) is left to the float ops: lowering
//! is an optimisation and never changes what the graph means beyond the requantization
//! rounding documented in [`super::qlinear`].

use std::collections::HashMap;

use super::ops::conv::ConvAttrs;
use super::ops::{Kernel, NodeCtx};
use super::qlinear::{Act, QConv, QMatMul, QOut, QSpec, Src};
use super::value::{norm_axis, Array, ArrayData};
use crate::ir::{DataType, Graph, NodeId, Op, ValueId};
use crate::kernels::qbinary::{self, BinaryOp};

/// A lowered unit: one step replacing several nodes.
pub(crate) struct Lowered {
    pub kernel: Box<dyn Kernel>,
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<Option<ValueId>>,
    /// Nodes after the anchor op that the step computes (the activation and the Q node).
    pub absorbed: Vec<NodeId>,
    /// A short description, e.g. `Conv+Relu→Q (u8)`.
    pub what: String,
}

pub(super) struct Dq<'a> {
    pub x: ValueId,
    pub scale: &'a Array,
    pub zp: Option<&'a Array>,
    axis: i64,
}

impl Dq<'_> {
    /// The scale and zero point when they are per tensor: one f32 scale, and no zero point or
    /// one 8-bit value.
    pub(super) fn per_tensor(&self) -> Option<(f32, i32)> {
        let scale = scalar_f32(Some(self.scale))?;
        match self.zp {
            None => Some((scale, 0)),
            Some(z) if z.len() == 1 && is_8bit(z) => Some((scale, z.data.to_i64_vec()[0] as i32)),
            Some(_) => None,
        }
    }
}

/// The DequantizeLinear producing `v` with constant scale and zero point.
pub(super) fn dq_of<'a>(
    g: &Graph,
    consts: &'a HashMap<ValueId, Array>,
    v: ValueId,
) -> Option<Dq<'a>> {
    let node = g.node(g.producer(v));
    if !node.is_op("DequantizeLinear") {
        return None;
    }
    let op = node.op()?;
    if op.attr("block_size").and_then(|a| a.as_int()).unwrap_or(0) != 0 {
        return None;
    }
    let x = node.inputs.first().copied().flatten()?;
    let scale = consts.get(&node.inputs.get(1).copied().flatten()?)?;
    if scale.dtype() != DataType::F32 || scale.rank() > 1 {
        return None;
    }
    let zp = match node.inputs.get(2).copied().flatten() {
        Some(z) => Some(consts.get(&z)?),
        None => None,
    };
    Some(Dq {
        x,
        scale,
        zp,
        axis: op.attr("axis").and_then(|a| a.as_int()).unwrap_or(1),
    })
}

/// The only consumer of `v` (a single use), unless `v` is a graph output.
pub(super) fn single_use(g: &Graph, v: ValueId) -> Option<NodeId> {
    if g.is_graph_output(v) {
        return None;
    }
    match g.consumers(v).as_slice() {
        [(n, crate::ir::Slot::Input(_))] => Some(*n),
        _ => None,
    }
}

/// `qn` as the QuantizeLinear (with usable parameters) that reads `v` as
/// its input: the node and its output.
pub(super) fn quantize_reading(
    g: &Graph,
    v: ValueId,
    qn: Option<NodeId>,
    consts: &HashMap<ValueId, Array>,
) -> Option<(NodeId, ValueId)> {
    let q = g.node(qn?);
    if q.inputs.first().copied().flatten() != Some(v) || quantize_params(q, consts).is_none() {
        return None;
    }
    Some((qn?, q.outputs.first().copied().flatten()?))
}

fn is_8bit(a: &Array) -> bool {
    matches!(a.data, ArrayData::U8(_) | ArrayData::I8(_))
}

/// The constant at input `slot` of `node`, if that input is a folded constant.
fn const_input<'a>(
    node: &crate::ir::Node,
    slot: usize,
    consts: &'a HashMap<ValueId, Array>,
) -> Option<&'a Array> {
    node.inputs
        .get(slot)
        .copied()
        .flatten()
        .and_then(|v| consts.get(&v))
}

fn scalar_f32(a: Option<&Array>) -> Option<f32> {
    match a {
        Some(Array {
            data: ArrayData::F32(v),
            ..
        }) if v.len() == 1 => Some(v[0]),
        _ => None,
    }
}

/// Tries to lower the unit anchored at `anchor` (a Conv, Gemm or MatMul).
pub(crate) fn try_lower(
    g: &Graph,
    anchor: NodeId,
    consts: &HashMap<ValueId, Array>,
    opset: i64,
    all: bool,
    q8: Option<crate::kernels::qnnpack::Rounding>,
) -> Result<Option<Lowered>, String> {
    let node = g.node(anchor);
    let Some(op) = node.op() else { return Ok(None) };
    let kind = op.op_type.as_str();
    if !(node.is_op("Conv") || node.is_op("Gemm") || node.is_op("MatMul")) {
        return Ok(None);
    }
    let (Some(Some(xin)), Some(Some(win))) = (node.inputs.first(), node.inputs.get(1)) else {
        return Ok(None);
    };
    let (Some(xdq), Some(wdq)) = (dq_of(g, consts, *xin), dq_of(g, consts, *win)) else {
        return Ok(None);
    };
    // Activation: per-tensor 8-bit.
    if xdq.per_tensor().is_none() {
        return Ok(None);
    }
    let Some(yout) = node.outputs.first().copied().flatten() else {
        return Ok(None);
    };
    let int = |name: &str, d: i64| op.attr(name).and_then(|a| a.as_int()).unwrap_or(d);
    let flt = |name: &str, d: f32| op.attr(name).and_then(|a| a.as_float()).unwrap_or(d);

    // Weights: constant 8-bit with per-tensor or per-output-channel parameters, or (MatMul
    // only) a dynamic per-tensor quantized tensor.
    let w_const = consts.get(&wdq.x);
    let trans_b = kind == "Gemm" && int("transB", 0) != 0;
    let mut inputs = vec![Some(xdq.x)];
    let w_src = match w_const {
        Some(w) => {
            if !is_8bit(w) || wdq.zp.is_some_and(|z| z.dtype() != w.dtype()) {
                return Ok(None);
            }
            let (out_axis, n) = match kind {
                "Conv" if w.rank() >= 3 => (0, w.shape[0]),
                "Gemm" | "MatMul" if w.rank() == 2 => {
                    let ax = if trans_b { 0 } else { 1 };
                    (ax, w.shape[ax])
                }
                _ => return Ok(None),
            };
            let per_channel = wdq.scale.len() != 1;
            if per_channel {
                let Ok(ax) = norm_axis(wdq.axis, w.rank(), false) else {
                    return Ok(None);
                };
                if ax != out_axis || wdq.scale.len() != n {
                    return Ok(None);
                }
            }
            if wdq.zp.is_some_and(|z| z.len() != wdq.scale.len()) {
                return Ok(None);
            }
            Src::Const(w.clone())
        }
        None if kind == "MatMul" => {
            if wdq.per_tensor().is_none() {
                return Ok(None);
            }
            inputs.push(Some(wdq.x));
            Src::Input(1)
        }
        None => return Ok(None),
    };

    // Bias: an int32 DequantizeLinear with zero point 0 (its scale is x_scale·w_scale by
    // construction; the int32 values are added as they are, as ONNX Runtime does).
    let mut bias = None;
    if kind != "MatMul" {
        if let Some(Some(bv)) = node.inputs.get(2) {
            let Some(bdq) = dq_of(g, consts, *bv) else {
                return Ok(None);
            };
            let Some(b) = consts.get(&bdq.x) else {
                return Ok(None);
            };
            let zero = bdq
                .zp
                .is_none_or(|z| z.data.to_i64_vec().iter().all(|&v| v == 0));
            if b.dtype() != DataType::I32 || !zero || b.rank() != 1 {
                return Ok(None);
            }
            bias = Some(Src::Const(b.clone()));
        }
    }
    if kind == "Gemm"
        && (int("transA", 0) != 0
            || flt("alpha", 1.0) != 1.0
            || (bias.is_some() && flt("beta", 1.0) != 1.0))
    {
        return Ok(None);
    }

    // Output: [Relu | Clip] → QuantizeLinear, else a float output.
    let mut absorbed = Vec::new();
    let mut act = Act::None;
    let mut out = QOut::Dequant;
    let mut out_value = yout;
    if let Some(next) = single_use(g, yout) {
        let nn = g.node(next);
        let mut cand_act = Act::None;
        if nn.is_op("Relu") {
            cand_act = Act::Relu;
        } else if nn.is_op("Clip") {
            if let Some(c) = clip_bounds(nn.op().expect("op"), &nn.inputs, consts, opset) {
                cand_act = c;
            }
        }
        let mut cand_tail = yout;
        let mut cand_abs = vec![];
        let mut qn = Some(next);
        if cand_act != Act::None {
            match nn.outputs.first().copied().flatten() {
                Some(v) => {
                    cand_tail = v;
                    cand_abs.push(next);
                    qn = single_use(g, v);
                }
                None => qn = None,
            }
        }
        let q = qn.map(|qn| (qn, g.node(qn)));
        if let Some((qn, q)) = q {
            if let Some((range, spec)) = quantize_params(q, consts) {
                let fits = match cand_act {
                    Act::None => true,
                    // By default an activation is fused only where it is redundant with the
                    // output saturation (ONNX Runtime's Relu/Clip-into-Q rule); otherwise
                    // the product stays float (the activation and Q then run as written),
                    // which keeps results bit-identical to the reference semantics.
                    _ if all => true,
                    _ => act_is_redundant(cand_act, range),
                };
                let input_ok = q.inputs.first().copied().flatten() == Some(cand_tail);
                if let (true, true, Some(qout)) =
                    (fits, input_ok, q.outputs.first().copied().flatten())
                {
                    act = if all { cand_act } else { Act::None };
                    absorbed = cand_abs;
                    absorbed.push(qn);
                    out = spec(act);
                    out_value = qout;
                }
            }
        }
    }
    let spec = QSpec {
        x: 0,
        x_scale: Some(Src::Const(xdq.scale.clone())),
        x_zp: xdq.zp.map(|z| Src::Const(z.clone())),
        w: w_src,
        w_scale: Some(Src::Const(wdq.scale.clone())),
        w_zp: wdq.zp.map(|z| Src::Const(z.clone())),
        bias,
        out,
    };
    let requant = matches!(spec.out, QOut::Requant { .. });
    if !requant && !all {
        // The graph keeps this result in float: run the op as written (see `Lowering`).
        return Ok(None);
    }
    // The qnnpack backend: its own kernels, or (said in the description) the fbgemm ones.
    let mut on = String::new();
    let q8_kernel = match q8 {
        Some(rounding) => {
            let ctx = NodeCtx {
                op,
                opset,
                consts: vec![],
                present: vec![],
                n_outputs: 1,
            };
            let attrs = (kind == "Conv")
                .then(|| ConvAttrs::parse(&ctx))
                .transpose()?;
            match super::q8::product(&spec, attrs, trans_b, rounding) {
                Ok((k, uk)) => {
                    on = format!(" on {uk}");
                    Some(k)
                }
                Err(why) => {
                    on = format!(" [fbgemm fallback: {why}]");
                    None
                }
            }
        }
        None => None,
    };
    let kernel: Box<dyn Kernel> = if let Some(k) = q8_kernel {
        k
    } else if kind == "Conv" {
        let ctx = NodeCtx {
            op,
            opset,
            consts: vec![],
            present: vec![],
            n_outputs: 1,
        };
        Box::new(QConv::new(spec, ConvAttrs::parse(&ctx)?)?)
    } else {
        Box::new(QMatMul::new(spec, trans_b)?)
    };
    let what = format!(
        "{kind}{}{}",
        match act {
            Act::None => "",
            Act::Relu => "+Relu",
            Act::Clip(..) => "+Clip",
        },
        if requant { "→Q" } else { "→f32" }
    ) + &on;
    Ok(Some(Lowered {
        kernel,
        inputs,
        outputs: vec![Some(out_value)],
        absorbed,
        what,
    }))
}

/// Constant bounds of a Clip (attributes before opset 11, inputs after).
fn clip_bounds(
    op: &Op,
    inputs: &[Option<ValueId>],
    consts: &HashMap<ValueId, Array>,
    opset: i64,
) -> Option<Act> {
    let (lo, hi) = if opset < 11 {
        (
            op.attr("min")
                .and_then(|a| a.as_float())
                .unwrap_or(f32::NEG_INFINITY),
            op.attr("max")
                .and_then(|a| a.as_float())
                .unwrap_or(f32::INFINITY),
        )
    } else {
        let get = |k: usize, d: f32| -> Option<f32> {
            match inputs.get(k).copied().flatten() {
                Some(v) => scalar_f32(consts.get(&v)),
                None => Some(d),
            }
        };
        (get(1, f32::NEG_INFINITY)?, get(2, f32::INFINITY)?)
    };
    (lo <= hi).then_some(Act::Clip(lo, hi))
}

type QOutFn = Box<dyn FnOnce(Act) -> QOut>;

/// Whether `act` cannot change the result of a quantizer whose real range is `[lo, hi]`
/// (within one f32 epsilon, as ONNX Runtime's ClipQuantFusion / ReluQuantFusion decide).
fn act_is_redundant(act: Act, (lo, hi): (f32, f32)) -> bool {
    let (a, b) = match act {
        Act::None => return true,
        Act::Relu => (0.0, f32::INFINITY),
        Act::Clip(a, b) => (a, b),
    };
    a - lo <= f32::EPSILON && hi - b <= f32::EPSILON
}

/// A per-tensor 8-bit QuantizeLinear with constant parameters: its real range and its
/// output spec.
fn quantize_params(
    q: &crate::ir::Node,
    consts: &HashMap<ValueId, Array>,
) -> Option<((f32, f32), QOutFn)> {
    if !q.is_op("QuantizeLinear") {
        return None;
    }
    let op = q.op()?;
    if op.attr("block_size").and_then(|a| a.as_int()).unwrap_or(0) != 0 {
        return None;
    }
    let scale = consts.get(&q.inputs.get(1).copied().flatten()?)?;
    scalar_f32(Some(scale))?;
    let zp = match q.inputs.get(2).copied().flatten() {
        Some(z) => {
            let z = consts.get(&z)?;
            if z.len() != 1 || !is_8bit(z) {
                return None;
            }
            Some(z.clone())
        }
        None => None,
    };
    let y_type = match op
        .attr("output_dtype")
        .and_then(|a| a.as_int())
        .unwrap_or(0)
    {
        0 => DataType::U8,
        c => match DataType::from_onnx(c as i32)? {
            t @ (DataType::U8 | DataType::I8) => t,
            _ => return None,
        },
    };
    let s = scalar_f32(Some(scale))?;
    let z = zp.as_ref().map_or(0, |z| z.data.to_i64_vec()[0]) as f32;
    let (tmin, tmax) = if y_type == DataType::U8 {
        (0.0, 255.0)
    } else {
        (-128.0, 127.0)
    };
    let range = (s * (tmin - z), s * (tmax - z));
    let scale = scale.clone();
    let spec: QOutFn = Box::new(move |act| QOut::Requant {
        y_scale: Src::Const(scale),
        y_zp: zp.map(Src::Const),
        y_type,
        act,
    });
    Some((range, spec))
}

/// Ops that only move, select or take the maximum of values: between a DequantizeLinear and a
/// QuantizeLinear with the same scale and zero point they commute with both, so they run on the
/// quantized data directly (as ONNX Runtime's QDQ optimiser does). Exact: `Q(DQ(v)) = v` for
/// 8-bit `v`, and the max of dequantized values is the dequantized max.
const TRANSPARENT: &[&str] = &[
    "MaxPool",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Gather",
    "Expand",
    "Identity",
];

/// Runs a float-only op (MaxPool) on 8-bit data through an exact f32 round trip; layout ops
/// are type-generic and run as they are.
struct OnQuantized {
    inner: Box<dyn Kernel>,
    via_f32: bool,
}

impl Kernel for OnQuantized {
    fn run_owned(
        &self,
        first: Array,
        rest: &[Option<&Array>],
        threads: usize,
    ) -> Result<Vec<Array>, String> {
        if self.via_f32 {
            return super::ops::run_borrowing(self, &first, rest, threads);
        }
        self.inner.run_owned(first, rest, threads)
    }

    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        if !self.via_f32 {
            return self.inner.run(inputs);
        }
        let x = super::ops::input(inputs, 0)?;
        let ty = x.dtype();
        let xf = super::ops::elementwise::cast(x, DataType::F32);
        let mut ins = inputs.to_vec();
        ins[0] = Some(&xf);
        let out = self.inner.run(&ins)?;
        Ok(out
            .iter()
            .map(|y| super::ops::elementwise::cast(y, ty))
            .collect())
    }
}

/// Tries to run a [`TRANSPARENT`] op between equal DQ and Q on the quantized values.
pub(crate) fn try_lower_transparent(
    g: &Graph,
    n: NodeId,
    consts: &HashMap<ValueId, Array>,
    opset: i64,
) -> Result<Option<Lowered>, String> {
    let node = g.node(n);
    let Some(op) = node.op() else { return Ok(None) };
    if !TRANSPARENT.iter().any(|t| node.is_op(t)) || node.outputs.len() != 1 {
        return Ok(None);
    }
    let Some(Some(xin)) = node.inputs.first() else {
        return Ok(None);
    };
    let Some(dq) = dq_of(g, consts, *xin) else {
        return Ok(None);
    };
    let Some(yout) = node.outputs[0] else {
        return Ok(None);
    };
    let Some((qn, qout)) = quantize_reading(g, yout, single_use(g, yout), consts) else {
        return Ok(None);
    };
    let q = g.node(qn);
    // Same scale (bit for bit) and zero point (value and type; absent = 0 of u8).
    let q_scale = const_input(q, 1, consts);
    let q_zp = const_input(q, 2, consts);
    let same_scale = match (scalar_f32(Some(dq.scale)), scalar_f32(q_scale)) {
        (Some(a), Some(b)) => a.to_bits() == b.to_bits(),
        _ => false,
    };
    let zp_of =
        |z: Option<&Array>| z.map_or((DataType::U8, 0), |z| (z.dtype(), z.data.to_i64_vec()[0]));
    if !same_scale || dq.per_tensor().is_none() || zp_of(dq.zp) != zp_of(q_zp) {
        return Ok(None);
    }
    let ctx = NodeCtx {
        op,
        opset,
        consts: node
            .inputs
            .iter()
            .map(|v| v.and_then(|v| consts.get(&v)))
            .collect(),
        present: node.inputs.iter().map(Option::is_some).collect(),
        n_outputs: 1,
    };
    let mut inputs = node.inputs.to_vec();
    inputs[0] = Some(dq.x);
    let kernel: Box<dyn Kernel> = if node.is_op("MaxPool") {
        // Its own kernel: it can also pool NHWC inside a layout region.
        super::ops::max_pool_of_codes(&ctx)?
    } else {
        Box::new(OnQuantized {
            inner: super::ops::build(&ctx)?,
            // The data-movement ops move 8-bit codes as they are.
            via_f32: false,
        })
    };
    Ok(Some(Lowered {
        kernel,
        inputs,
        outputs: vec![Some(qout)],
        absorbed: vec![qn],
        what: format!("{} on quantized values", op.op_type),
    }))
}

/// Tries to read a GlobalAveragePool / GlobalMaxPool's input from the 8-bit codes of the
/// per-tensor DequantizeLinear producing it: each code is dequantized where the pool reads it,
/// in the same order, so the result is the two steps' bit for bit without writing the f32
/// tensor (the DQ step goes away when nothing else reads it). Its output stays float, so what
/// reads it (usually a Q) is untouched.
pub(crate) fn try_lower_dq_pool(
    g: &Graph,
    n: NodeId,
    consts: &HashMap<ValueId, Array>,
) -> Result<Option<Lowered>, String> {
    let node = g.node(n);
    let avg = node.is_op("GlobalAveragePool");
    if !(avg || node.is_op("GlobalMaxPool")) || node.outputs.len() != 1 {
        return Ok(None);
    }
    let Some(Some(xin)) = node.inputs.first() else {
        return Ok(None);
    };
    let Some(dq) = dq_of(g, consts, *xin) else {
        return Ok(None);
    };
    let Some((scale, zp)) = dq.per_tensor() else {
        return Ok(None);
    };
    // 8-bit codes: the zero point's type, or the value's own when there is none (an i32
    // bias-like DQ must not get here).
    let typed_8bit = matches!(
        g.value(dq.x).ty.tensor().and_then(|t| t.dtype),
        Some(DataType::U8 | DataType::I8)
    );
    if dq.zp.is_none() && !typed_8bit {
        return Ok(None);
    }
    Ok(Some(Lowered {
        kernel: super::ops::global_pool_of_codes(avg, scale, zp),
        inputs: vec![Some(dq.x)],
        outputs: node.outputs.to_vec(),
        absorbed: vec![],
        what: format!("{} of dequantized codes", node.op_type()),
    }))
}

/// Elementwise float ops of one quantized input (the other inputs constant).
const UNARY: &[&str] = &[
    "Relu",
    "Clip",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "LeakyRelu",
    "Elu",
    "Erf",
    "Gelu",
    "Exp",
    "Sqrt",
    "Neg",
    "Abs",
    "Softplus",
];

/// `Q(f(DQ(x)))` for every 8-bit `x`: a 256-entry table computed at planning time with the
/// same float kernels and quantizer the unfused graph would run, so it is bit-identical to it.
struct Lut {
    table: [u8; 256],
    out_signed: bool,
}

impl Kernel for Lut {
    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        let x = super::ops::input(inputs, 0)?;
        let idx: Vec<u8> = match &x.data {
            ArrayData::U8(v) => v.iter().map(|&b| self.table[b as usize]).collect(),
            ArrayData::I8(v) => v.iter().map(|&b| self.table[b as u8 as usize]).collect(),
            d => return Err(format!("expected 8-bit input, got {}", d.dtype())),
        };
        let data = if self.out_signed {
            ArrayData::I8(idx.into_iter().map(|b| b as i8).collect())
        } else {
            ArrayData::U8(idx)
        };
        Ok(vec![Array::new(x.shape.clone(), data)?])
    }
}

/// Tries to turn `DQ → unary op → Q` (per-tensor parameters) into a lookup table.
pub(crate) fn try_lower_lut(
    g: &Graph,
    n: NodeId,
    consts: &HashMap<ValueId, Array>,
    opset: i64,
) -> Result<Option<Lowered>, String> {
    let node = g.node(n);
    let Some(op) = node.op() else { return Ok(None) };
    if !UNARY.iter().any(|t| node.is_op(t)) || node.outputs.len() != 1 {
        return Ok(None);
    }
    let Some(Some(xin)) = node.inputs.first() else {
        return Ok(None);
    };
    if node.inputs[1..]
        .iter()
        .flatten()
        .any(|v| !consts.contains_key(v))
    {
        return Ok(None);
    }
    let Some(dq) = dq_of(g, consts, *xin) else {
        return Ok(None);
    };
    if dq.per_tensor().is_none() {
        return Ok(None);
    }
    let Some(yout) = node.outputs[0] else {
        return Ok(None);
    };
    let Some((qn, qout)) = quantize_reading(g, yout, single_use(g, yout), consts) else {
        return Ok(None);
    };
    let q = g.node(qn);
    let Some(q_scale) = const_input(q, 1, consts) else {
        return Ok(None);
    };
    let q_zp = const_input(q, 2, consts);
    let out_type = match q_zp {
        Some(z) => z.dtype(),
        None => match q
            .op()
            .and_then(|o| o.attr("output_dtype"))
            .and_then(|a| a.as_int())
        {
            None | Some(0) => DataType::U8,
            Some(c) => match DataType::from_onnx(c as i32) {
                Some(t @ (DataType::U8 | DataType::I8)) => t,
                _ => return Ok(None),
            },
        },
    };
    // The input type follows the DQ zero point (u8 when absent).
    let in_signed = dq.zp.is_some_and(|z| z.dtype() == DataType::I8);
    let codes: ArrayData = if in_signed {
        ArrayData::I8((0..=255u8).map(|b| b as i8).collect())
    } else {
        ArrayData::U8((0..=255u8).collect())
    };
    let codes = Array::new(vec![256], codes)?;
    let xf = super::qlinear::dequantize(&codes, dq.scale, dq.zp, (1, 0))?;
    let ctx = NodeCtx {
        op,
        opset,
        consts: node
            .inputs
            .iter()
            .map(|v| v.and_then(|v| consts.get(&v)))
            .collect(),
        present: node.inputs.iter().map(Option::is_some).collect(),
        n_outputs: 1,
    };
    let kernel = super::ops::build(&ctx)?;
    let mut ins: Vec<Option<&Array>> = node
        .inputs
        .iter()
        .map(|v| v.and_then(|v| consts.get(&v)))
        .collect();
    ins[0] = Some(&xf);
    let yf = kernel.run(&ins)?.remove(0);
    let yq = super::qlinear::quantize(&yf, q_scale, q_zp, (1, 0), out_type)?;
    let bytes: Vec<u8> = match &yq.data {
        ArrayData::U8(v) => v.clone(),
        ArrayData::I8(v) => v.iter().map(|&b| b as u8).collect(),
        _ => return Ok(None),
    };
    let mut table = [0u8; 256];
    table.copy_from_slice(&bytes);
    Ok(Some(Lowered {
        kernel: Box::new(Lut {
            table,
            out_signed: out_type == DataType::I8,
        }),
        inputs: vec![Some(dq.x)],
        outputs: vec![Some(qout)],
        absorbed: vec![qn],
        what: format!("{} as a 256-entry table", op.op_type),
    }))
}

/// One operand of a fused quantized binary op.
enum Operand {
    /// A quantized value (step input `slot`), dequantized as `(x − zp) · scale`.
    Quant { slot: usize, scale: f32, zp: i32 },
    /// A float constant (e.g. a bias whose DequantizeLinear was folded).
    Const(Array),
}

/// `Q(DQ(a) ⊕ DQ(b))` (optionally `Q(relu(…))`) in one kernel, for ⊕ ∈ {Add, Sub, Mul, Div}
/// with numpy broadcasting ([`crate::kernels::qbinary`]).
/// Every element goes through the same f32 operations as the unfused graph (dequantize,
/// operate, divide by the scale and round half to even), so the result is bit-identical; the
/// gain is the intermediate float tensors that are never written.
struct QBinary {
    op: BinaryOp,
    a: Operand,
    b: Operand,
    y_scale: f32,
    y_zp: i32,
    y_signed: bool,
    /// A Relu before the Q: the result is at least the zero point.
    relu: bool,
    /// Set by the layout pass when the step runs on NHWC values: per operand, whether it
    /// keeps an NCHW shape whose bytes are the same in NHWC (a broadcast `[N, C, 1, 1]`, a
    /// constant) and is read channels-last.
    nhwc: Option<[bool; 2]>,
}

/// `shape` (channels first) broadcast to `rank` (left-padded with 1s, as broadcasting
/// aligns shapes) and read channels-last: `[N, C, 1, 1]` → `[N, 1, 1, C]`, `[C, 1, 1]` at
/// rank 4 → `[1, 1, 1, C]`, `[N, C, 1]` at rank 3 → `[N, 1, C]`.
fn channels_last_at(shape: &[usize], rank: usize) -> Vec<usize> {
    let mut v = vec![1; rank.saturating_sub(shape.len())];
    v.extend_from_slice(shape);
    super::qlinear::channels_last(&v)
}

impl QBinary {
    /// The `len` output codes of `rows`.
    fn compute<T: crate::kernels::reference::quantize::QType + Ord>(
        &self,
        a: qbinary::Operand<'_>,
        b: qbinary::Operand<'_>,
        rows: &qbinary::Rows<'_>,
        out: qbinary::QOutput<T>,
        len: usize,
    ) -> Vec<T> {
        let mut y = vec![out.zp; len];
        qbinary::qbinary(self.op, a, b, rows, out, &mut y);
        y
    }

    /// An operand read in place, with its shape.
    fn view<'a>(
        o: &'a Operand,
        inputs: &[Option<&'a Array>],
    ) -> Result<(&'a [usize], qbinary::Operand<'a>), String> {
        match o {
            Operand::Const(a) => Ok((&a.shape, qbinary::Operand::F32(a.as_f32()?))),
            Operand::Quant { slot, scale, zp } => {
                let x = super::ops::input(inputs, *slot)?;
                let v = match &x.data {
                    ArrayData::U8(v) => qbinary::Operand::U8(v, *scale, *zp),
                    ArrayData::I8(v) => qbinary::Operand::I8(v, *scale, *zp),
                    d => return Err(format!("expected 8-bit input, got {}", d.dtype())),
                };
                Ok((&x.shape, v))
            }
        }
    }
}

impl Kernel for QBinary {
    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        let (sa, va) = QBinary::view(&self.a, inputs)?;
        let (sb, vb) = QBinary::view(&self.b, inputs)?;
        // NHWC mode: the operand from outside the region is read channels-last at the rank of
        // the output (a conv's rank).
        let rank = sa.len().max(sb.len());
        let side = |s: &[usize], permute: bool| {
            if permute {
                channels_last_at(s, rank)
            } else {
                s.to_vec()
            }
        };
        let (pa, pb) = self.nhwc.map_or((false, false), |[pa, pb]| (pa, pb));
        let (sa, sb) = (side(sa, pa), side(sb, pb));
        let plan = BroadcastRows::new(&sa, &sb)?;
        // An empty output (a zero dim) has no rows.
        let starts = if plan.len == 0 {
            Vec::new()
        } else {
            plan.starts()
        };
        let rows = qbinary::Rows {
            starts: &starts,
            len: plan.row,
            a_along: plan.a_row,
            b_along: plan.b_row,
        };
        let len = starts.len() * plan.row;
        let (zp, relu, scale) = (self.y_zp, self.relu, self.y_scale);
        let data = if self.y_signed {
            let out = qbinary::QOutput {
                scale,
                zp: zp as i8,
                relu,
            };
            ArrayData::I8(self.compute(va, vb, &rows, out, len))
        } else {
            let out = qbinary::QOutput {
                scale,
                zp: zp as u8,
                relu,
            };
            ArrayData::U8(self.compute(va, vb, &rows, out, len))
        };
        Ok(vec![Array::new(plan.shape, data)?])
    }

    fn layout_role(&mut self) -> Option<super::ops::LayoutRole<'_>> {
        let side = |o: &Operand| -> Option<Option<usize>> {
            match o {
                Operand::Quant { slot, .. } => Some(Some(*slot)),
                // A constant must have the same bytes in both layouts.
                Operand::Const(a) => {
                    let dims: Vec<Option<usize>> = a.shape.iter().map(|&d| Some(d)).collect();
                    super::layout::same_bytes_in_nhwc(&dims).then_some(None)
                }
            }
        };
        let operands = [side(&self.a)?, side(&self.b)?];
        Some(super::ops::LayoutRole::Binary {
            operands,
            nhwc: &mut self.nhwc,
        })
    }
}

/// Two broadcast operands walked as rows: the output is `outer` rows of `row` elements;
/// along a row each operand is either contiguous or one repeated value, and the row starts
/// of each operand are given by mixed-radix counters over the merged outer dimensions.
/// (Adjacent dimensions that broadcast the same way for both operands are merged, so e.g.
/// `[N, C, H, W] ⊙ [N, C, 1, 1]` is `N·C` rows of `H·W`, not `N·C·H` rows of `W`.)
struct BroadcastRows {
    shape: Vec<usize>,
    len: usize,
    /// Merged outer dims: (size, stride in a, stride in b).
    outer: Vec<(usize, usize, usize)>,
    row: usize,
    /// Whether a / b advance along a row (else their value repeats).
    a_row: bool,
    b_row: bool,
}

impl BroadcastRows {
    fn new(sa: &[usize], sb: &[usize]) -> Result<BroadcastRows, String> {
        let shape = super::value::broadcast_shape(sa, sb)?;
        let r = shape.len();
        let pad = |s: &[usize]| -> Vec<usize> {
            let mut v = vec![1; r - s.len()];
            v.extend_from_slice(s);
            v
        };
        let (pa, pb) = (pad(sa), pad(sb));
        // Merged dims, outermost first: (size, a advances, b advances).
        let mut dims: Vec<(usize, bool, bool)> = Vec::new();
        for d in 0..r {
            if shape[d] == 1 {
                continue;
            }
            let (fa, fb) = (pa[d] != 1, pb[d] != 1);
            match dims.last_mut() {
                Some(last) if last.1 == fa && last.2 == fb => last.0 *= shape[d],
                _ => dims.push((shape[d], fa, fb)),
            }
        }
        let (row, a_row, b_row) = dims.pop().unwrap_or((1, true, true));
        // Strides of the outer dims in each operand (elements), innermost last.
        let (mut st_a, mut st_b) = (if a_row { row } else { 1 }, if b_row { row } else { 1 });
        let mut outer = Vec::with_capacity(dims.len());
        for &(size, fa, fb) in dims.iter().rev() {
            outer.push((size, if fa { st_a } else { 0 }, if fb { st_b } else { 0 }));
            if fa {
                st_a *= size;
            }
            if fb {
                st_b *= size;
            }
        }
        outer.reverse();
        let len = shape.iter().product();
        Ok(BroadcastRows {
            shape,
            len,
            outer,
            row,
            a_row,
            b_row,
        })
    }
}

impl BroadcastRows {
    /// Where each output row starts in `a` and in `b` (the outer dims as a mixed-radix
    /// counter, innermost fastest).
    fn starts(&self) -> Vec<(usize, usize)> {
        let n_rows: usize = self.outer.iter().map(|d| d.0).product();
        let mut out = Vec::with_capacity(n_rows);
        let mut pos = vec![0usize; self.outer.len()];
        let (mut oa, mut ob) = (0usize, 0usize);
        for _ in 0..n_rows {
            out.push((oa, ob));
            for (d, &(size, sa, sb)) in self.outer.iter().enumerate().rev() {
                pos[d] += 1;
                oa += sa;
                ob += sb;
                if pos[d] < size {
                    break;
                }
                oa -= sa * size;
                ob -= sb * size;
                pos[d] = 0;
            }
        }
        out
    }
}

/// Tries to fuse `DQ/const → Add|Sub|Mul|Div → Q` (per-tensor parameters).
pub(crate) fn try_lower_binary(
    g: &Graph,
    n: NodeId,
    consts: &HashMap<ValueId, Array>,
) -> Result<Option<Lowered>, String> {
    let node = g.node(n);
    let Some(op) = node.op() else { return Ok(None) };
    let f = match op.op_type.as_str() {
        "Add" if node.is_op("Add") => BinaryOp::Add,
        "Sub" if node.is_op("Sub") => BinaryOp::Sub,
        "Mul" if node.is_op("Mul") => BinaryOp::Mul,
        "Div" if node.is_op("Div") => BinaryOp::Div,
        _ => return Ok(None),
    };
    if node.inputs.len() != 2 || node.outputs.len() != 1 {
        return Ok(None);
    }
    let mut inputs = Vec::new();
    let mut operands = Vec::new();
    let mut quantized = 0;
    for v in node.inputs.iter() {
        let Some(v) = *v else { return Ok(None) };
        if let Some(c) = consts.get(&v) {
            if c.dtype() != DataType::F32 {
                return Ok(None);
            }
            operands.push(Operand::Const(c.clone()));
            continue;
        }
        let Some(dq) = dq_of(g, consts, v) else {
            return Ok(None);
        };
        let Some((scale, zp)) = dq.per_tensor() else {
            return Ok(None);
        };
        operands.push(Operand::Quant {
            slot: inputs.len(),
            scale,
            zp,
        });
        inputs.push(Some(dq.x));
        quantized += 1;
    }
    if quantized == 0 {
        return Ok(None);
    }
    let Some(yout) = node.outputs[0] else {
        return Ok(None);
    };
    let Some(mut qn) = single_use(g, yout) else {
        return Ok(None);
    };
    // A Relu between the op and its Q is fused too: Q is monotonic and Q(0) = zp, so
    // Q(relu(v)) = max(Q(v), zp) exactly.
    let mut absorbed = vec![];
    let mut q_in = yout;
    if g.node(qn).is_op("Relu") {
        let relu = g.node(qn);
        let Some(rout) = relu.outputs.first().copied().flatten() else {
            return Ok(None);
        };
        if relu.outputs.len() != 1 || relu.inputs.len() != 1 {
            return Ok(None);
        }
        let Some(next) = single_use(g, rout) else {
            return Ok(None);
        };
        absorbed.push(qn);
        (qn, q_in) = (next, rout);
    }
    let relu = !absorbed.is_empty();
    let Some((qn, qout)) = quantize_reading(g, q_in, Some(qn), consts) else {
        return Ok(None);
    };
    let q = g.node(qn);
    absorbed.push(qn);
    let Some(y_scale) = scalar_f32(const_input(q, 1, consts)) else {
        return Ok(None);
    };
    let q_zp = const_input(q, 2, consts);
    let y_signed = match q_zp {
        Some(z) => z.dtype() == DataType::I8,
        None => {
            q.op()
                .and_then(|o| o.attr("output_dtype"))
                .and_then(|a| a.as_int())
                == Some(3)
        }
    };
    let y_zp = q_zp.map_or(0, |z| z.data.to_i64_vec()[0] as i32);
    let mut it = operands.into_iter();
    let (a, b) = (
        it.next().expect("two operands"),
        it.next().expect("two operands"),
    );
    Ok(Some(Lowered {
        kernel: Box::new(QBinary {
            op: f,
            a,
            b,
            y_scale,
            y_zp,
            y_signed,
            relu,
            nhwc: None,
        }),
        inputs,
        outputs: vec![Some(qout)],
        absorbed,
        what: format!(
            "{}{} fused with its Q/DQ",
            op.op_type,
            if relu { "+Relu" } else { "" }
        ),
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn channels_last_at_the_output_rank() {
        use super::channels_last_at as cl;
        assert_eq!(cl(&[2, 64, 1, 1], 4), vec![2, 1, 1, 64]);
        assert_eq!(cl(&[64, 1, 1], 4), vec![1, 1, 1, 64]);
        assert_eq!(cl(&[2, 64, 1], 3), vec![2, 1, 64]);
        assert_eq!(cl(&[], 4), vec![1, 1, 1, 1]);
    }
}
