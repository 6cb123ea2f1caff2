//! `convert-qoperator`: rewrites the QDQ node units that `convert-qdq`
//! produced into ONNX's QOperator form, standard ONNX domain only:
//! * `DQ(x) → Conv(·, DQ(W), DQ(B)) [→ Relu | Clip] → Q` becomes
//!   `QLinearConv(x_q, …, W_q, …, y_scale, y_zp, B_int32)`;
//! * `DQ(a) → MatMul(·, DQ(b)) → Q` becomes `QLinearMatMul` (b a constant
//!   weight, per tensor or per column, or a quantized activation);
//! * `DQ(x) → Gemm(·, DQ(W), DQ(C)) [→ Relu | Clip] → Q` (a 2-D x, alpha =
//!   beta = 1, no transA) becomes a 1×1 `QLinearConv` over the rows laid
//!   out as the spatial axis (`Transpose` + `Reshape` of the u8 tensor, and
//!   back): the same integer product, int32 bias and requantization, where
//!   `QLinearMatMul` has no bias input.
//!
//! A Relu or Clip between the op and its QuantizeLinear folds away only
//! where that is exact: when the clip range covers everything the output's
//! quantization can represent. The int32 bias must carry scale = x_scale ×
//! w_scale with zero point 0 (what `convert-qdq` writes). Every unit that
//! does not match stays QDQ, and the notes say why. QuantizeLinear /
//! DequantizeLinear remain at the boundaries of the QOperator regions.

use crate::prelude::*;

#[derive(Default)]
pub struct ConvertQOperator;

impl Pass for ConvertQOperator {
    fn name(&self) -> &'static str {
        "convert-qoperator"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        if model.onnx_opset() < 10 {
            return Ok(());
        }
        let g = &mut model.graph;
        materialize_zero_points(g);
        let order = g.topo_order().map_err(|e| Error::invalid(e.to_string()))?;
        for n in order {
            let Some(node) = g.try_node(n) else { continue };
            let op_type = node.op_type().to_string();
            if !(node.is_op("Conv") || node.is_op("MatMul") || node.is_op("Gemm")) {
                continue;
            }
            // Only units in QDQ form are candidates: some input comes from a DequantizeLinear.
            let in_qdq = node
                .inputs
                .iter()
                .flatten()
                .any(|&v| g.node(g.producer(v)).is_op("DequantizeLinear"));
            if !in_qdq {
                continue;
            }
            let name = g.display_node_name(n);
            match convert(g, n) {
                Ok(new_op) => cx.count(new_op, 1),
                Err(why) => cx.note(name, format!("{op_type} stays QDQ: {why}")),
            }
        }
        Ok(())
    }
}

type R<T> = std::result::Result<T, String>;

/// A DequantizeLinear feeding a unit: its quantized input, scale, zero point.
struct Dq {
    q: ValueId,
    scale: ValueId,
    zero: ValueId,
    axis: Option<i64>,
}

fn dq_input(g: &Graph, v: ValueId, what: &str) -> R<Dq> {
    let p = g.producer(v);
    let node = g.node(p);
    if !node.is_op("DequantizeLinear") || node.inputs.len() < 3 {
        return Err(format!(
            "its {what} `{}` does not come from a DequantizeLinear with a zero point",
            g.value(v).name
        ));
    }
    let (Some(q), Some(scale), Some(zero)) = (node.inputs[0], node.inputs[1], node.inputs[2])
    else {
        return Err(format!("the {what} DequantizeLinear lacks an input"));
    };
    if g.const_tensor(scale).is_none() || g.const_tensor(zero).is_none() {
        return Err(format!("the {what} scale or zero point is not a constant"));
    }
    let op = node.op().expect("op");
    if op.attr("block_size").is_some() {
        return Err(format!("the {what} is block-quantized"));
    }
    Ok(Dq {
        q,
        scale,
        zero,
        axis: op.attr("axis").and_then(|a| a.as_int()),
    })
}

fn scalar(g: &Graph, v: ValueId) -> bool {
    g.const_tensor(v).is_some_and(|t| t.len() == 1)
}

fn f32s(g: &Graph, v: ValueId) -> Vec<f32> {
    g.const_tensor(v)
        .and_then(|t| t.to_f32_vec())
        .unwrap_or_default()
}

fn ints(g: &Graph, v: ValueId) -> Vec<i64> {
    g.const_tensor(v)
        .and_then(|t| t.to_i64_vec())
        .unwrap_or_default()
}

fn out0(g: &Graph, n: NodeId) -> ValueId {
    g.node(n).outputs[0].expect("one output")
}

/// The only reader of `v`, if `v` has exactly one and is not a graph output.
fn single_reader(g: &Graph, v: ValueId) -> Option<NodeId> {
    let c = g.consumers(v);
    (c.len() == 1 && !g.is_graph_output(v)).then(|| c[0].0)
}

/// The output QuantizeLinear of the unit starting at `n`, through an
/// optional Relu/Clip that folds exactly. Returns (activation node, Q node).
fn output_quantize(g: &Graph, n: NodeId) -> R<(Option<NodeId>, NodeId)> {
    let y = out0(g, n);
    let next = single_reader(g, y).ok_or("its output has other readers than one QuantizeLinear")?;
    let (act, q) = if g.node(next).is_op("QuantizeLinear") {
        (None, next)
    } else if g.node(next).is_op("Relu") || g.node(next).is_op("Clip") {
        let a = out0(g, next);
        let q = single_reader(g, a).ok_or("the activation has other readers")?;
        (Some(next), q)
    } else {
        return Err(format!(
            "its output goes to {} rather than a QuantizeLinear",
            g.node(next).op_type()
        ));
    };
    let qn = g.node(q);
    if !qn.is_op("QuantizeLinear") {
        return Err("the activation does not feed a QuantizeLinear".into());
    }
    let (Some(s), Some(z)) = (
        qn.inputs.get(1).copied().flatten(),
        qn.inputs.get(2).copied().flatten(),
    ) else {
        return Err("the output QuantizeLinear has no zero point".into());
    };
    if !scalar(g, s) || !scalar(g, z) {
        return Err("the output quantization is not per tensor".into());
    }
    if let Some(a) = act {
        // Folding the activation is exact when its range covers all the
        // output quantization can represent.
        let zt = g.const_tensor(z).expect("const");
        let (qmin, qmax) = match zt.dtype {
            DataType::U8 => (0i64, 255i64),
            DataType::I8 => (-128, 127),
            d => return Err(format!("output quantized to {d}")),
        };
        let (ys, yz) = (f32s(g, s)[0], ints(g, z)[0]);
        let (lo, hi) = if g.node(a).is_op("Relu") {
            (0.0f32, f32::INFINITY)
        } else {
            // Clip-6 has `min`/`max` attributes, Clip-11 inputs.
            let attrs = g.node(a).op().expect("op");
            let bound = |i: usize, d: f32| -> R<f32> {
                let key = if i == 1 { "min" } else { "max" };
                if let Some(v) = attrs.attr(key).and_then(|x| x.as_float()) {
                    return Ok(v);
                }
                match g.node(a).inputs.get(i).copied().flatten() {
                    None => Ok(d),
                    Some(v) => match g.const_tensor(v).and_then(|t| t.to_f32_vec()) {
                        Some(x) if x.len() == 1 => Ok(x[0]),
                        _ => Err("Clip bounds are not constant scalars".to_string()),
                    },
                }
            };
            (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)
        };
        // QuantizeLinear is monotonic: Q(clip(y, lo, hi)) = Q(y) for every y
        // exactly when Q(lo) and Q(hi) are already the saturation limits.
        let q = |v: f32| qdq::quantize_value(v, ys, yz, qmin, qmax);
        let (qlo, qhi) = (q(lo), q(hi));
        if lo.is_nan() || hi.is_nan() || qlo != qmin || qhi != qmax {
            return Err(format!(
                "the {} would not fold exactly (its range [{lo}, {hi}] quantizes to [{qlo}, {qhi}], not the full [{qmin}, {qmax}])",
                g.node(a).op_type()
            ));
        }
    }
    Ok((act, q))
}

/// Checks that the int32 bias DQ has scale x_scale × w_scale and zero point 0.
fn check_bias(g: &Graph, b: &Dq, x: &Dq, w: &Dq, channels: usize) -> R<()> {
    let bt = g.const_tensor(b.q).ok_or("the bias is not a constant")?;
    if bt.dtype != DataType::I32 || bt.dims != [channels as i64] {
        return Err(format!("the bias is not int32 [{channels}]"));
    }
    let xs = f32s(g, x.scale)[0];
    let ws = f32s(g, w.scale);
    let bs = f32s(g, b.scale);
    let ok_scale = (0..channels).all(|c| {
        let w = ws[if ws.len() == 1 { 0 } else { c }];
        let s = bs[if bs.len() == 1 { 0 } else { c }];
        s == xs * w
    });
    if !ok_scale || (bs.len() != 1 && bs.len() != channels) {
        return Err("the bias scale is not x_scale × w_scale".into());
    }
    if ints(g, b.zero).iter().any(|&z| z != 0) {
        return Err("the bias zero point is not 0".into());
    }
    Ok(())
}

/// Checks a weight DQ: constant int8/uint8, per tensor or per channel on
/// `axis`, with one shared zero point value (what ONNX Runtime's QLinear
/// kernels accept).
fn check_weight(g: &Graph, w: &Dq, axis: usize, channels: usize) -> R<()> {
    let t = g.const_tensor(w.q).ok_or("the weight is not a constant")?;
    if !matches!(t.dtype, DataType::I8 | DataType::U8) {
        return Err(format!("the weight is {}", t.dtype));
    }
    let n = g.const_tensor(w.scale).expect("const").len();
    if n != 1 {
        let rank = t.dims.len() as i64;
        let a = w.axis.unwrap_or(1);
        let a = if a < 0 { a + rank } else { a };
        if a != axis as i64 || n != channels {
            return Err(format!(
                "the weight is quantized per channel on axis {a}, not per output channel"
            ));
        }
    }
    let z = ints(g, w.zero);
    if z.iter().any(|&v| v != z[0]) {
        return Err("the weight zero points differ between channels".into());
    }
    Ok(())
}

fn check_activation(g: &Graph, x: &Dq) -> R<()> {
    if !scalar(g, x.scale) || !scalar(g, x.zero) {
        return Err("the input is not quantized per tensor".into());
    }
    Ok(())
}

/// Rewrites the unit at `n`; returns the QOperator op type used.
fn convert(g: &mut Graph, n: NodeId) -> R<&'static str> {
    let node = g.node(n);
    let ins: Vec<Option<ValueId>> = node.inputs.to_vec();
    let op = node.op().expect("op").clone();
    let (Some(xv), Some(wv)) = (
        ins.first().copied().flatten(),
        ins.get(1).copied().flatten(),
    ) else {
        return Err("missing inputs".into());
    };
    let x = dq_input(g, xv, "input")?;
    check_activation(g, &x)?;
    let w = dq_input(g, wv, "weight")?;
    let bias = match ins.get(2).copied().flatten() {
        Some(b) => Some(dq_input(g, b, "bias")?),
        None => None,
    };
    let (act, q) = output_quantize(g, n)?;
    let (ys, yz) = {
        let qn = g.node(q);
        (
            qn.inputs[1].expect("checked"),
            qn.inputs[2].expect("checked"),
        )
    };
    let base = if g.node(n).name.is_empty() {
        g.value(out0(g, n)).name.clone()
    } else {
        g.node(n).name.clone()
    };
    let qout_ty = g.value(out0(g, q)).ty.clone();
    let new_out = match op.op_type.as_str() {
        "Conv" => {
            let wt = g.const_tensor(w.q).ok_or("the weight is not a constant")?;
            let m = wt.dims[0] as usize;
            check_weight(g, &w, 0, m)?;
            if let Some(b) = &bias {
                check_bias(g, b, &x, &w, m)?;
            }
            let mut qop = Op::new("QLinearConv");
            for a in [
                "auto_pad",
                "dilations",
                "group",
                "kernel_shape",
                "pads",
                "strides",
            ] {
                if let Some(v) = op.attr(a) {
                    qop.attrs.insert(a.to_string(), v.clone());
                }
            }
            let mut inputs = vec![
                Some(x.q),
                Some(x.scale),
                Some(x.zero),
                Some(w.q),
                Some(w.scale),
                Some(w.zero),
                Some(ys),
                Some(yz),
            ];
            if let Some(b) = &bias {
                inputs.push(Some(b.q));
            }
            let c = g.add_op(
                &format!("{base}_QLinearConv"),
                qop,
                &inputs,
                &[&format!("{base}_quantized")],
            );
            out0(g, c)
        }
        "MatMul" => {
            if act.is_some() {
                return Err("an activation after a MatMul does not fold".into());
            }
            check_activation_or_weight_b(g, &w)?;
            let c = g.add_op(
                &format!("{base}_QLinearMatMul"),
                Op::new("QLinearMatMul"),
                &[
                    Some(x.q),
                    Some(x.scale),
                    Some(x.zero),
                    Some(w.q),
                    Some(w.scale),
                    Some(w.zero),
                    Some(ys),
                    Some(yz),
                ],
                &[&format!("{base}_quantized")],
            );
            out0(g, c)
        }
        _ => gemm_as_conv(g, &op, &x, &w, bias.as_ref(), (ys, yz), &qout_ty, &base)?,
    };
    g.value_mut(new_out).ty = qout_ty;
    let op_name: &'static str = if op.op_type == "MatMul" {
        "QLinearMatMul"
    } else {
        "QLinearConv"
    };
    g.retire(q, new_out);
    g.remove_dead_nodes_from(act.unwrap_or(n));
    if act.is_some() {
        g.remove_dead_nodes_from(n);
    }
    Ok(op_name)
}

/// QLinearMatMul's b: a quantized activation (per tensor) or a constant 2-D
/// weight, per tensor or per column with one zero point value.
fn check_activation_or_weight_b(g: &Graph, b: &Dq) -> R<()> {
    match g.const_tensor(b.q) {
        None => check_activation(g, b),
        Some(t) if t.dims.len() == 2 => check_weight(g, b, 1, t.dims[1] as usize),
        Some(t) => {
            if scalar(g, b.scale) && scalar(g, b.zero) {
                Ok(())
            } else {
                Err(format!(
                    "the weight has rank {} and per-channel scales",
                    t.dims.len()
                ))
            }
        }
    }
}

/// Gemm → Transpose, Reshape [1, K, M, 1] → 1×1 QLinearConv → Reshape [N, M], Transpose.
#[allow(clippy::too_many_arguments)]
fn gemm_as_conv(
    g: &mut Graph,
    op: &Op,
    x: &Dq,
    w: &Dq,
    bias: Option<&Dq>,
    (ys, yz): (ValueId, ValueId),
    out_ty: &ValueType,
    base: &str,
) -> R<ValueId> {
    let attr_f = |k: &str| op.attr(k).and_then(|a| a.as_float()).unwrap_or(1.0);
    let attr_i = |k: &str| op.attr(k).and_then(|a| a.as_int()).unwrap_or(0);
    if attr_i("transA") != 0 || attr_f("alpha") != 1.0 || (bias.is_some() && attr_f("beta") != 1.0)
    {
        return Err("transA, alpha or beta differ from the plain x·W + C".into());
    }
    if g.value(x.q)
        .ty
        .tensor()
        .and_then(|t| t.rank())
        .is_some_and(|r| r != 2)
    {
        return Err("the input is not 2-D".into());
    }
    let wt = g
        .const_tensor(w.q)
        .ok_or("the weight is not a constant")?
        .clone();
    if wt.dims.len() != 2 {
        return Err("the weight is not 2-D".into());
    }
    let trans_b = attr_i("transB") != 0;
    // Output channels: rows of a transposed [N, K] weight, columns of [K, N].
    let (nout, k) = if trans_b {
        (wt.dims[0], wt.dims[1])
    } else {
        (wt.dims[1], wt.dims[0])
    };
    check_weight(g, w, if trans_b { 0 } else { 1 }, nout as usize)?;
    if let Some(b) = bias {
        check_bias(g, b, x, w, nout as usize)?;
    }
    let raw = wt.raw().ok_or("weight data")?;
    let data: Vec<u8> = if trans_b {
        raw.to_vec()
    } else {
        let (r, c) = (k as usize, nout as usize);
        let mut out = vec![0u8; raw.len()];
        for i in 0..r {
            for j in 0..c {
                out[j * r + i] = raw[i * c + j];
            }
        }
        out
    };
    let w4 = Tensor::from_raw(wt.dtype, vec![nout, k, 1, 1], data).map_err(|e| e.to_string())?;
    let w4v = g.add_const(&format!("{base}_weight_1x1"), w4);
    // The batch becomes the spatial axis, so that the 1×1 convolution is one
    // GEMM over all rows: x_q [M, K] → [K, M] → [1, K, M, 1].
    let x_ty = g.value(x.q).ty.clone();
    let dt = x_ty.dtype();
    let m_dim = x_ty
        .tensor()
        .and_then(|t| t.shape.as_ref())
        .and_then(|s| s.first().cloned())
        .unwrap_or(Dim::Unknown);
    let ty = |dims: Vec<Dim>| {
        ValueType::Tensor(TensorType {
            dtype: dt,
            shape: Some(dims),
        })
    };
    let add = |g: &mut Graph, op: Op, ins: &[Option<ValueId>], out: &str, t: ValueType| {
        let n = g.add_op(
            &format!("{base}_{out}_{}", op.op_type),
            op,
            ins,
            &[&format!("{base}_{out}")],
        );
        let v = out0(g, n);
        g.value_mut(v).ty = t;
        v
    };
    let perm = || Op::new("Transpose").with_attr("perm", vec![1i64, 0]);
    let xt = add(
        g,
        perm(),
        &[Some(x.q)],
        "input_t",
        ty(vec![Dim::Fixed(k), m_dim.clone()]),
    );
    let s4 = g.add_const(
        &format!("{base}_shape_4d"),
        Tensor::from_i64(vec![4], &[1, k, -1, 1]),
    );
    let x4 = add(
        g,
        Op::new("Reshape"),
        &[Some(xt), Some(s4)],
        "input_4d",
        ty(vec![
            Dim::Fixed(1),
            Dim::Fixed(k),
            m_dim.clone(),
            Dim::Fixed(1),
        ]),
    );
    let mut inputs = vec![
        Some(x4),
        Some(x.scale),
        Some(x.zero),
        Some(w4v),
        Some(w.scale),
        Some(w.zero),
        Some(ys),
        Some(yz),
    ];
    if let Some(b) = bias {
        inputs.push(Some(b.q));
    }
    let out_dt = out_ty.dtype();
    let oty = |dims: Vec<Dim>| {
        ValueType::Tensor(TensorType {
            dtype: out_dt,
            shape: Some(dims),
        })
    };
    let c = add(
        g,
        Op::new("QLinearConv").with_attr("kernel_shape", vec![1i64, 1]),
        &inputs,
        "quantized_4d",
        oty(vec![
            Dim::Fixed(1),
            Dim::Fixed(nout),
            m_dim.clone(),
            Dim::Fixed(1),
        ]),
    );
    let s2 = g.add_const(
        &format!("{base}_shape_2d"),
        Tensor::from_i64(vec![2], &[nout, -1]),
    );
    let c2 = add(
        g,
        Op::new("Reshape"),
        &[Some(c), Some(s2)],
        "quantized_t",
        oty(vec![Dim::Fixed(nout), m_dim.clone()]),
    );
    Ok(add(
        g,
        perm(),
        &[Some(c2)],
        "quantized",
        oty(vec![m_dim, Dim::Fixed(nout)]),
    ))
}

/// QLinearConv and QLinearMatMul take every zero point as an input: a
/// DequantizeLinear of a constant that leaves its zero point implicit (0, of
/// the input's type) gets an explicit one (unused ones go with dead code).
fn materialize_zero_points(g: &mut Graph) {
    let dqs: Vec<NodeId> = g
        .node_ids()
        .filter(|&n| g.node(n).is_op("DequantizeLinear") && g.node(n).inputs.len() == 2)
        .collect();
    for n in dqs {
        let (Some(q), Some(s)) = (g.node(n).inputs[0], g.node(n).inputs[1]) else {
            continue;
        };
        let (Some(qt), Some(st)) = (g.const_tensor(q), g.const_tensor(s)) else {
            continue;
        };
        let (dt, dims) = (qt.dtype, st.dims.clone());
        let count = st.len();
        let zero = qdq::int_tensor(dt, dims, &vec![0; count]);
        let name = format!(
            "{}_zero_point",
            g.value(q).name.trim_end_matches("_quantized")
        );
        let z = g.add_const(&name, zero);
        g.set_input(n, 2, Some(z));
    }
}
