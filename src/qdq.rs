//! Building blocks shared by the quantization passes (`convert-qdq`,
//! `quantize-dynamic`, `quantize-weight-only`, `convert-qoperator`):
//! quantizing constants exactly as ONNX's QuantizeLinear does, packing
//! 4-bit integers, and adding DequantizeLinear nodes.
//!
//! Quantization is `q = saturate(round_half_even(x / scale) + zero_point)`,
//! the ONNX operator's definition, computed in f32 like the operator.

use crate::ir::{DataType, Dim, Graph, NodeId, Op, Tensor, TensorType, ValueId, ValueType};
use crate::observe::{calculate_qparams, QDtype, QParams, QScheme, QuantSpec};

/// The ONNX element type of a quantized dtype.
pub fn onnx_dtype(d: QDtype) -> DataType {
    match d {
        QDtype::QUInt8 | QDtype::UInt8 => DataType::U8,
        QDtype::QInt8 | QDtype::Int8 => DataType::I8,
        QDtype::UInt16 => DataType::U16,
        QDtype::Int16 => DataType::I16,
        QDtype::Int32 => DataType::I32,
    }
}

/// An integer tensor of `dtype` from i64 values that are already saturated
/// to its range. 4-bit types are packed two per byte, the first element in
/// the low nibble (ONNX's INT4/UINT4 layout).
pub fn int_tensor(dtype: DataType, dims: Vec<i64>, v: &[i64]) -> Tensor {
    let raw: Vec<u8> = match dtype {
        DataType::U8 => v.iter().map(|&x| x as u8).collect(),
        DataType::I8 => v.iter().map(|&x| x as i8 as u8).collect(),
        DataType::U16 => v.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect(),
        DataType::I16 => v.iter().flat_map(|&x| (x as i16).to_le_bytes()).collect(),
        DataType::I4 | DataType::U4 => v
            .chunks(2)
            .map(|p| {
                let lo = (p[0] as u8) & 0x0f;
                let hi = p.get(1).map_or(0, |&x| (x as u8) & 0x0f);
                lo | (hi << 4)
            })
            .collect(),
        DataType::I32 => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
        other => panic!("int_tensor: {other} is not an integer type onnxq quantizes to"),
    };
    Tensor::from_raw(dtype, dims, raw).expect("sizes match")
}

/// ONNX QuantizeLinear of one value.
pub fn quantize_value(x: f32, scale: f32, zp: i64, qmin: i64, qmax: i64) -> i64 {
    let q = ((x / scale).round_ties_even() as i64).saturating_add(zp);
    q.clamp(qmin, qmax)
}

/// Symmetric weight quantization: the range onnxq (and ONNX Runtime) uses
/// for int8 weights, [-127, 127] so that zero is exact and the range is
/// symmetric; `reduce_range` gives [-64, 64] (7 bits, for AVX2 without VNNI).
pub fn symmetric_weight_spec(per_channel: bool, reduce_range: bool) -> QuantSpec {
    let scheme = if per_channel {
        QScheme::PerChannelSymmetric
    } else {
        QScheme::PerTensorSymmetric
    };
    let spec = QuantSpec::new(QDtype::QInt8, scheme);
    if reduce_range {
        spec.with_range(-64, 64)
    } else {
        spec.with_range(-127, 127)
    }
}

/// A quantized constant: its integer values (row-major, same shape as the
/// float tensor) and the qparams they were computed with.
#[derive(Clone, Debug)]
pub struct QuantizedTensor {
    pub dims: Vec<i64>,
    pub values: Vec<i64>,
    pub params: QParams,
}

/// Quantizes a float constant with min/max statistics, per tensor or per
/// channel along `axis` (torch's min/max observer formula, ONNX rounding).
/// `None` when the tensor is not real-valued.
pub fn quantize_tensor(
    t: &Tensor,
    spec: &QuantSpec,
    axis: Option<usize>,
) -> Option<QuantizedTensor> {
    let w = t.to_f32_vec()?;
    if !t.dtype.is_float() || w.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let dims = t.dims.clone();
    let axis = axis.filter(|_| spec.qscheme.is_per_channel());
    let (channels, inner) = match axis {
        Some(a) if a < dims.len() => (
            dims[a] as usize,
            dims[a + 1..].iter().map(|&d| d as usize).product::<usize>(),
        ),
        _ => (1, w.len().max(1)),
    };
    let mut lo = vec![f32::INFINITY; channels];
    let mut hi = vec![f32::NEG_INFINITY; channels];
    for (i, &x) in w.iter().enumerate() {
        let c = (i / inner.max(1)) % channels;
        lo[c] = lo[c].min(x);
        hi[c] = hi[c].max(x);
    }
    for c in 0..channels {
        if lo[c] > hi[c] {
            lo[c] = 0.0;
            hi[c] = 0.0;
        }
    }
    let params = calculate_qparams(spec, &lo, &hi, axis).ok()?;
    let values = w
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let c = if params.scale.len() == 1 {
                0
            } else {
                (i / inner.max(1)) % channels
            };
            quantize_value(
                x,
                params.scale[c],
                params.zero_point[c],
                params.quant_min,
                params.quant_max,
            )
        })
        .collect();
    Some(QuantizedTensor {
        dims,
        values,
        params,
    })
}

/// The same symmetric quantization stored as uint8: every value and zero
/// point shifted by +128 (`q_u8 − 128 = q_i8`), which u8×u8 kernels run
/// without the 16-bit saturation of u8×s8 AVX2 kernels.
pub fn shift_to_uint8(mut qt: QuantizedTensor) -> QuantizedTensor {
    debug_assert!(matches!(qt.params.dtype, QDtype::QInt8 | QDtype::Int8));
    for v in qt.values.iter_mut() {
        *v += 128;
    }
    for z in qt.params.zero_point.iter_mut() {
        *z += 128;
    }
    qt.params.quant_min += 128;
    qt.params.quant_max += 128;
    qt.params.dtype = QDtype::QUInt8;
    qt
}

/// A tensor quantized in blocks along one axis (DequantizeLinear-21's
/// blocked quantization): one scale (and zero point) per `block` consecutive
/// elements along `axis`; the scale has the tensor's shape with that axis
/// shrunk to `ceil(dim / block)`.
#[derive(Clone, Debug)]
pub struct BlockQuantized {
    /// `I4` (symmetric, no zero point) or `U4` (asymmetric, with zero points).
    pub dtype: DataType,
    pub dims: Vec<i64>,
    pub values: Vec<i64>,
    pub scale_dims: Vec<i64>,
    pub scale: Vec<f32>,
    /// `None` for symmetric quantization (zero point 0, input omitted).
    pub zero_point: Option<Vec<i64>>,
    pub axis: usize,
    pub block: usize,
}

/// 4-bit blocked quantization of a float constant along `axis`.
/// Symmetric: int4 in [-7, 7], scale = max|x| / 7 per block, zero point 0.
/// Asymmetric: uint4 in [0, 15] with a zero point per block (torch's
/// min/max formula). `None` when the tensor is not real-valued and finite.
pub fn quantize_blockwise_4bit(
    t: &Tensor,
    axis: usize,
    block: usize,
    symmetric: bool,
) -> Option<BlockQuantized> {
    let w = t.to_f32_vec()?;
    if !t.dtype.is_float() || axis >= t.dims.len() || block == 0 || w.iter().any(|x| !x.is_finite())
    {
        return None;
    }
    let dims = t.dims.clone();
    let d = dims[axis] as usize;
    let inner: usize = dims[axis + 1..].iter().map(|&x| x as usize).product();
    let nb = d.div_ceil(block);
    let mut scale_dims = dims.clone();
    scale_dims[axis] = nb as i64;
    let n_scales: usize = scale_dims.iter().map(|&x| x as usize).product();
    // Element i = (outer·d + a)·inner + r belongs to block (outer·nb + a/block)·inner + r.
    let block_of = |i: usize| {
        let r = i % inner;
        let a = (i / inner) % d;
        let outer = i / (inner * d);
        (outer * nb + a / block) * inner + r
    };
    let mut lo = vec![0f32; n_scales];
    let mut hi = vec![0f32; n_scales];
    for (i, &x) in w.iter().enumerate() {
        let b = block_of(i);
        lo[b] = lo[b].min(x);
        hi[b] = hi[b].max(x);
    }
    let spec = if symmetric {
        QuantSpec::new(QDtype::QInt8, QScheme::PerChannelSymmetric).with_range(-7, 7)
    } else {
        QuantSpec::new(QDtype::QUInt8, QScheme::PerChannelAffine).with_range(0, 15)
    };
    let p = calculate_qparams(&spec, &lo, &hi, Some(axis)).ok()?;
    let values = w
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let b = block_of(i);
            quantize_value(x, p.scale[b], p.zero_point[b], p.quant_min, p.quant_max)
        })
        .collect();
    Some(BlockQuantized {
        dtype: if symmetric {
            DataType::I4
        } else {
            DataType::U4
        },
        dims,
        values,
        scale_dims,
        scale: p.scale,
        zero_point: (!symmetric).then_some(p.zero_point),
        axis,
        block,
    })
}

/// Adds the 4-bit initializer and `DequantizeLinear{axis, block_size}`
/// (opset 21) that restores a weight; returns the float value.
pub fn block_dequantized(g: &mut Graph, w: ValueId, bq: &BlockQuantized) -> ValueId {
    let name = g.value(w).name.clone();
    let ty = g.value(w).ty.clone();
    let qv = g.add_const(
        &format!("{name}_quantized"),
        int_tensor(bq.dtype, bq.dims.clone(), &bq.values),
    );
    let s = g.add_const(
        &format!("{name}_scale"),
        Tensor::from_f32(bq.scale_dims.clone(), &bq.scale),
    );
    let z = bq.zero_point.as_ref().map(|zp| {
        g.add_const(
            &format!("{name}_zero_point"),
            int_tensor(bq.dtype, bq.scale_dims.clone(), zp),
        )
    });
    let mut inputs = vec![Some(qv), Some(s)];
    if z.is_some() {
        inputs.push(z);
    }
    let op = Op::new("DequantizeLinear")
        .with_attr("axis", bq.axis as i64)
        .with_attr("block_size", bq.block as i64);
    let n = g.add_op(
        &format!("{name}_DequantizeLinear"),
        op,
        &inputs,
        &[&format!("{name}_dequantized")],
    );
    let out = g.node(n).outputs[0].expect("one output");
    g.value_mut(out).ty = ty;
    out
}

/// Adds `DequantizeLinear(q, scale, zero_point[, axis])` and returns its
/// output. Per-tensor params give scalar scale and zero point; per-axis ones
/// 1-D tensors. The zero point of a constant int32 input (a bias) is left
/// out when it is 0, the default.
pub fn dequantize_node(
    g: &mut Graph,
    name: &str,
    q: ValueId,
    p: &QParams,
    axis: Option<i64>,
    dt: DataType,
) -> ValueId {
    let (scale, zero) = if p.scale.len() == 1 && axis.is_none() {
        (
            Tensor::from_f32(vec![], &[p.scale[0]]),
            int_tensor(dt, vec![], &[p.zero_point[0]]),
        )
    } else {
        let n = p.scale.len() as i64;
        (
            Tensor::from_f32(vec![n], &p.scale),
            int_tensor(dt, vec![n], &p.zero_point),
        )
    };
    let s = g.add_const(&format!("{name}_scale"), scale);
    // An int32 bias (zero points all 0 by construction) needs no zero-point
    // input: its default is 0 of the input's type. Dropping it saves 4 bytes
    // per output channel. Weight zero points stay, even when 0: ONNX Runtime
    // fuses DQ → Gemm/MatMul → Q into QGemm/QLinearMatMul only when the weight's
    // DequantizeLinear has one (measured with onnxruntime 1.23).
    let implicit_zero =
        dt == DataType::I32 && g.const_tensor(q).is_some() && p.zero_point.iter().all(|&z| z == 0);
    let z = (!implicit_zero).then(|| g.add_const(&format!("{name}_zero_point"), zero));
    let mut op = Op::new("DequantizeLinear");
    if let Some(a) = axis {
        op = op.with_attr("axis", a);
    }
    let inputs: Vec<Option<ValueId>> = match z {
        Some(z) => vec![Some(q), Some(s), Some(z)],
        None => vec![Some(q), Some(s)],
    };
    let n = g.add_op(
        &format!("{name}_DequantizeLinear"),
        op,
        &inputs,
        &[&format!("{name}_dequantized")],
    );
    let out = g.node(n).outputs[0].expect("one output");
    // Float with the integer tensor's shape, when it is a constant.
    if let Some(dims) = g.const_tensor(q).map(|t| t.dims.clone()) {
        g.value_mut(out).ty = crate::ir::ValueType::Tensor(crate::ir::TensorType::new(
            DataType::F32,
            dims.into_iter().map(crate::ir::Dim::Fixed).collect(),
        ));
    }
    out
}

/// The value where the output of `n` is quantized, if it is: its output, or the end of a
/// chain of single-consumer Relu/Clip after it (what ONNX Runtime's QDQ selectors look
/// through), for which `quantized` holds. `None` when the output stays float.
pub fn quantized_output(
    g: &Graph,
    n: NodeId,
    quantized: impl Fn(ValueId) -> bool,
) -> Option<ValueId> {
    let mut v = g.node(n).outputs.first().copied().flatten()?;
    loop {
        if quantized(v) {
            return Some(v);
        }
        let consumers = g.consumers(v);
        let [(c, _)] = consumers.as_slice() else {
            return None;
        };
        if g.is_graph_output(v) || !matches!(g.node(*c).op_type(), "Relu" | "Clip") {
            return None;
        }
        v = g.node(*c).outputs.first().copied().flatten()?;
    }
}

/// The float weight `(q − zero_point)·scale` of integer constant `q` (dims `dims`), as
/// `Cast` → (`Sub`) → `Mul` of constants instead of a DequantizeLinear: the same values bit
/// for bit (the difference of two small integers is exact in f32, then one rounding of the
/// product, as DequantizeLinear does), but engines constant-fold it when they load the model.
/// ONNX Runtime keeps a DequantizeLinear of a constant in the graph (it is how its QDQ
/// fusions find int8 weights) and dequantizes it on every run: for a weight whose op runs
/// in float anyway, that is pure cost (a BERT with 11 float Gemms: 16.6 ms with
/// DequantizeLinear weights, 12.0 ms with this form). NNCF's compressed weights for
/// OpenVINO take this form.
pub fn decompression_node(
    g: &mut Graph,
    name: &str,
    q: ValueId,
    p: &QParams,
    axis: Option<i64>,
    dims: &[i64],
) -> ValueId {
    // Scale and zero point broadcast along `axis` of the weight.
    let shape = |n: usize| -> Vec<i64> {
        match axis {
            Some(a) if n > 1 => (0..dims.len() as i64)
                .map(|d| if d == a { n as i64 } else { 1 })
                .collect(),
            _ => vec![],
        }
    };
    let n = p.scale.len();
    let cast = g.add_op(
        &format!("{name}_Cast"),
        Op::new("Cast").with_attr("to", DataType::F32.onnx_code() as i64),
        &[Some(q)],
        &[&format!("{name}_cast")],
    );
    let mut x = g.node(cast).outputs[0].expect("one output");
    if p.zero_point.iter().any(|&z| z != 0) {
        let zp: Vec<f32> = p.zero_point.iter().map(|&z| z as f32).collect();
        let z = g.add_const(
            &format!("{name}_zero_point"),
            Tensor::from_f32(shape(n), &zp),
        );
        let sub = g.add_op(
            &format!("{name}_Sub"),
            Op::new("Sub"),
            &[Some(x), Some(z)],
            &[&format!("{name}_centered")],
        );
        x = g.node(sub).outputs[0].expect("one output");
    }
    let s = g.add_const(
        &format!("{name}_scale"),
        Tensor::from_f32(shape(n), &p.scale),
    );
    let mul = g.add_op(
        &format!("{name}_Mul"),
        Op::new("Mul"),
        &[Some(x), Some(s)],
        &[&format!("{name}_dequantized")],
    );
    let out = g.node(mul).outputs[0].expect("one output");
    g.value_mut(out).ty = ValueType::Tensor(TensorType::new(
        DataType::F32,
        dims.iter().map(|&d| Dim::Fixed(d)).collect(),
    ));
    out
}

/// Replaces a float weight constant by an integer initializer and the
/// DequantizeLinear that restores it, for the readers `readers` only
/// (others keep the float constant). With per-channel params and an opset
/// below 13 (no per-axis DequantizeLinear), the DequantizeLinear has scale 1
/// and a Mul by the per-channel scales follows, which computes the same
/// `q × scale[c]`. Returns the float value that now replaces the weight.
pub fn weight_dequantized(g: &mut Graph, w: ValueId, qt: &QuantizedTensor, opset: i64) -> ValueId {
    let name = g.value(w).name.clone();
    let ty = g.value(w).ty.clone();
    let p = &qt.params;
    let dt = onnx_dtype(p.dtype);
    let qv = g.add_const(
        &format!("{name}_quantized"),
        int_tensor(dt, qt.dims.clone(), &qt.values),
    );
    let out = match p.ch_axis {
        Some(axis) if p.scale.len() > 1 && opset < 13 => {
            let unit = QParams {
                scale: vec![1.0],
                zero_point: vec![p.zero_point[0]],
                ch_axis: None,
                ..p.clone()
            };
            let dq = dequantize_node(g, &name, qv, &unit, None, dt);
            g.value_mut(dq).ty = ty.clone();
            let mut shape = vec![1i64; qt.dims.len()];
            shape[axis] = p.scale.len() as i64;
            let s = g.add_const(
                &format!("{name}_channel_scale"),
                Tensor::from_f32(shape, &p.scale),
            );
            let m = g.add_op(
                &format!("{name}_rescale"),
                Op::new("Mul"),
                &[Some(dq), Some(s)],
                &[&format!("{name}_rescaled")],
            );
            g.node(m).outputs[0].expect("one output")
        }
        Some(axis) if p.scale.len() > 1 => dequantize_node(g, &name, qv, p, Some(axis as i64), dt),
        _ => dequantize_node(g, &name, qv, p, None, dt),
    };
    g.value_mut(out).ty = ty;
    out
}

/// A tensor type with a new element type and the same shape.
pub fn retyped(ty: &ValueType, dtype: DataType) -> ValueType {
    ValueType::Tensor(TensorType {
        dtype: Some(dtype),
        shape: ty.tensor().and_then(|t| t.shape.clone()),
    })
}

/// A tensor type of `dtype` and a fixed shape.
pub fn fixed_type(dtype: DataType, dims: &[i64]) -> ValueType {
    ValueType::Tensor(TensorType::new(
        dtype,
        dims.iter().map(|&d| Dim::Fixed(d)).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_packs_low_nibble_first() {
        let t = int_tensor(DataType::I4, vec![3], &[-1, 7, -8]);
        assert_eq!(t.raw().unwrap(), &[0x7f, 0x08]);
        let t = int_tensor(DataType::U4, vec![2], &[1, 15]);
        assert_eq!(t.raw().unwrap(), &[0xf1]);
    }

    #[test]
    fn quantization_rounds_half_to_even_and_saturates() {
        assert_eq!(quantize_value(2.5, 1.0, 0, -128, 127), 2);
        assert_eq!(quantize_value(3.5, 1.0, 0, -128, 127), 4);
        assert_eq!(quantize_value(-2.5, 1.0, 0, -128, 127), -2);
        assert_eq!(quantize_value(1e9, 1.0, 0, -127, 127), 127);
        assert_eq!(quantize_value(-1e9, 1.0, 3, 0, 255), 0);
        assert_eq!(quantize_value(f32::INFINITY, 0.1, 3, 0, 255), 255);
        assert_eq!(quantize_value(f32::NEG_INFINITY, 0.1, 3, 0, 255), 0);
    }

    #[test]
    fn blockwise_4bit() {
        // [K=5, N=2] blocked along K by 2: blocks rows {0,1}, {2,3}, {4}.
        let v: Vec<f32> = (0..10).map(|i| i as f32 - 4.0).collect();
        let t = Tensor::from_f32(vec![5, 2], &v);
        let q = quantize_blockwise_4bit(&t, 0, 2, true).unwrap();
        assert_eq!(q.scale_dims, vec![3, 2]);
        assert_eq!(q.dtype, DataType::I4);
        // Block (0, col 0) holds -4, -2: scale 4/7.
        assert_eq!(q.scale[0], 4.0 / 7.0);
        assert_eq!(q.values[0], -7);
        assert!(q.values.iter().all(|&x| (-7..=7).contains(&x)));
        let a = quantize_blockwise_4bit(&t, 0, 2, false).unwrap();
        assert_eq!(a.dtype, DataType::U4);
        assert!(a.values.iter().all(|&x| (0..=15).contains(&x)));
        // Dequantized values stay within half a step of the input.
        for (i, &x) in v.iter().enumerate() {
            let b = (i / 2 / 2) * 2 + i % 2;
            let zp = a.zero_point.as_ref().unwrap()[b];
            let y = (a.values[i] - zp) as f32 * a.scale[b];
            assert!((x - y).abs() <= a.scale[b] / 2.0 + 1e-6, "{i}: {x} vs {y}");
        }
    }

    #[test]
    fn per_channel_symmetric_weights() {
        // Two output channels on axis 1 of a [2, 2] MatMul weight.
        let t = Tensor::from_f32(vec![2, 2], &[1.0, -0.5, -2.0, 0.25]);
        let q = quantize_tensor(&t, &symmetric_weight_spec(true, false), Some(1)).unwrap();
        assert_eq!(q.params.scale, vec![2.0 / 127.0, 0.5 / 127.0]);
        assert_eq!(q.params.zero_point, vec![0, 0]);
        assert_eq!(q.values, vec![64, -127, -127, 64]);
        // An all-zero channel gets the smallest scale, not a division by zero.
        let z = Tensor::from_f32(vec![2], &[0.0, 0.0]);
        let q = quantize_tensor(&z, &symmetric_weight_spec(false, false), None).unwrap();
        assert!(q.params.scale[0] > 0.0);
        assert_eq!(q.values, vec![0, 0]);
    }
}
