//! Type and shape inference of intermediate values, delegated to tract's
//! analyser. Whatever tract cannot infer stays unknown; declared types from
//! the file always win over inferred ones.
//!
//! tract analyses the main graph only. Element types inside subgraphs (If
//! branches, Loop and Scan bodies), and any main-graph value tract left open,
//! are then filled by [`propagate_dtypes`]: values read from an enclosing graph
//! take its type, and each op's output type follows from its inputs by the
//! op's type constraint. Shapes are not inferred there.

use crate::ir::{DataType, Dim, Graph, Model, NodeId, NodeKind, TensorType, ValueId, ValueType};
use prost::Message;
use std::path::Path;
use tract_onnx::prelude::{DatumType, TDim};
use tract_onnx::tract_hir::infer::{Factoid, GenericFactoid, InferenceModelExt};

pub(super) fn infer_types(model: &mut Model, bytes: &[u8], model_dir: Option<&Path>) {
    if let Some(parsed) = analyse_with_tract(bytes, model_dir) {
        fill_from_tract(&mut model.graph, &parsed);
    }
    propagate_dtypes(&mut model.graph, &[]);
}

/// tract's analysis of the model, as far as it goes.
fn analyse_with_tract(
    bytes: &[u8],
    model_dir: Option<&Path>,
) -> Option<tract_onnx::model::ParseResult> {
    let proto = match tract_onnx::pb::ModelProto::decode(bytes) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("type inference: tract cannot decode the model: {e}");
            return None;
        }
    };
    let onnx = tract_onnx::onnx();
    let dir = model_dir.and_then(Path::to_str);
    let mut parsed = match onnx.parse(&proto, dir) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("type inference: tract cannot load the model: {e:#}");
            return None;
        }
    };
    if let Err(e) = parsed.model.analyse(false) {
        log::info!("type inference incomplete (values left unknown): {e:#}");
    }
    Some(parsed)
}

fn fill_from_tract(g: &mut crate::ir::Graph, parsed: &tract_onnx::model::ParseResult) {
    let ids: Vec<_> = g.value_ids().collect();
    for v in ids {
        let val = g.value(v);
        if val.declared.is_some() || val.value_info.is_some() {
            // Fill only what the declaration left open.
            if !matches!(&val.ty, ValueType::Tensor(t) if t.dtype.is_none() || t.shape.is_none()) {
                continue;
            }
        }
        if matches!(g.node(val.producer.0).kind, NodeKind::OuterRef) {
            continue;
        }
        let Some(&outlet) = parsed.outlets_by_name.get(&val.name) else {
            continue;
        };
        let Ok(fact) = parsed.model.outlet_fact(outlet) else {
            continue;
        };
        let dtype = match fact.datum_type.concretize() {
            Some(dt) => datum_to_dtype(dt),
            None => None,
        };
        let shape = if fact.shape.is_open() {
            None
        } else {
            Some(
                fact.shape
                    .dims()
                    .map(|d| match d {
                        GenericFactoid::Only(d) => tdim_to_dim(d),
                        GenericFactoid::Any => Dim::Unknown,
                    })
                    .collect(),
            )
        };
        let inferred = TensorType { dtype, shape };
        let val = g.value_mut(v);
        val.ty = match std::mem::take(&mut val.ty) {
            ValueType::Tensor(mut declared) => {
                if declared.dtype.is_none() {
                    declared.dtype = inferred.dtype;
                }
                if declared.shape.is_none() {
                    declared.shape = inferred.shape;
                }
                ValueType::Tensor(declared)
            }
            ValueType::Unknown if inferred.dtype.is_some() || inferred.shape.is_some() => {
                ValueType::Tensor(inferred)
            }
            other => other,
        };
    }
}

/// Fills unknown element types of `g` (whose enclosing graphs, innermost last,
/// are `outer`) and of its subgraphs, in topological order.
pub(crate) fn propagate_dtypes(g: &mut Graph, outer: &[&Graph]) {
    let Ok(order) = g.topo_order() else {
        return;
    };
    for n in order {
        match &g.node(n).kind {
            NodeKind::OuterRef => {
                let Some(v) = g.node(n).outputs[0] else {
                    continue;
                };
                let name = g.value(v).name.clone();
                let dt = outer
                    .iter()
                    .rev()
                    .find_map(|og| og.value_by_name(&name).map(|ov| og.value(ov).ty.dtype()));
                if let Some(Some(dt)) = dt {
                    set_dtype(g, v, dt);
                }
            }
            NodeKind::Const(c) => {
                let (dt, dims) = (c.tensor.dtype, c.tensor.dims.clone());
                let Some(v) = g.node(n).outputs[0] else {
                    continue;
                };
                if g.value(v).ty.dtype().is_none() {
                    let ty = TensorType::new(dt, dims.into_iter().map(Dim::Fixed).collect());
                    g.value_mut(v).ty = ValueType::Tensor(ty);
                }
            }
            NodeKind::Op(_) => {
                // Subgraphs first: an If's outputs are its branches' outputs.
                let mut branch_out: Vec<Option<DataType>> = vec![];
                if g.node(n).op().is_some_and(|op| op.has_subgraphs()) {
                    let mut op = g.node(n).op().expect("an op").clone();
                    {
                        let mut scopes: Vec<&Graph> = outer.to_vec();
                        scopes.push(g);
                        for a in op.attrs.values_mut() {
                            for sg in a.subgraphs_mut() {
                                propagate_dtypes(sg, &scopes);
                                if branch_out.is_empty() {
                                    branch_out = sg
                                        .outputs
                                        .iter()
                                        .map(|&o| sg.value(o).ty.dtype())
                                        .collect();
                                }
                            }
                        }
                    }
                    *g.node_mut(n).op_mut().expect("an op") = op;
                }
                let outs: Vec<Option<ValueId>> = g.node(n).outputs.to_vec();
                for (i, o) in outs.iter().enumerate() {
                    let Some(o) = *o else { continue };
                    if g.value(o).ty.dtype().is_some() {
                        continue;
                    }
                    let dt = if g.node(n).is_op("If") {
                        branch_out.get(i).copied().flatten()
                    } else {
                        output_dtype(g, n, i)
                    };
                    if let Some(dt) = dt {
                        set_dtype(g, o, dt);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Sets the element type of `v`, keeping what is known of its shape.
fn set_dtype(g: &mut Graph, v: ValueId, dt: DataType) {
    let val = g.value_mut(v);
    match &mut val.ty {
        ValueType::Tensor(t) if t.dtype.is_none() => t.dtype = Some(dt),
        ValueType::Unknown => {
            val.ty = ValueType::Tensor(TensorType {
                dtype: Some(dt),
                shape: None,
            })
        }
        _ => {}
    }
}

/// Output `i`'s element type of op node `n` from its inputs and attributes
/// (ONNX's type constraints), where the op is common enough to know.
fn output_dtype(g: &Graph, n: NodeId, i: usize) -> Option<DataType> {
    let node = g.node(n);
    let op = node.op()?;
    if !op.domain.is_empty() && op.domain != "ai.onnx" {
        return None;
    }
    let input = |k: usize| {
        node.inputs
            .get(k)
            .copied()
            .flatten()
            .and_then(|v| g.value(v).ty.dtype())
    };
    let int_attr = |k: &str| op.attr(k).and_then(|a| a.as_int());
    Some(match op.op_type.as_str() {
        "Equal" | "Greater" | "Less" | "GreaterOrEqual" | "LessOrEqual" | "And" | "Or" | "Xor"
        | "Not" | "IsNaN" | "IsInf" => DataType::Bool,
        "Shape" | "Size" | "NonZero" | "ArgMax" | "ArgMin" => DataType::I64,
        "TopK" if i == 1 => DataType::I64,
        "Cast" => DataType::from_onnx(int_attr("to")? as i32)?,
        "CastLike" => input(1)?,
        "Constant" => return None,
        "ConstantOfShape" => match op.attr("value").and_then(|a| a.as_tensor()) {
            Some(t) => t.dtype,
            None => DataType::F32,
        },
        "EyeLike" | "RandomNormalLike" | "RandomUniformLike" => match int_attr("dtype") {
            Some(d) => DataType::from_onnx(d as i32)?,
            None => input(0)?,
        },
        "DequantizeLinear" => DataType::F32,
        "DynamicQuantizeLinear" if i == 1 => DataType::F32,
        "DynamicQuantizeLinear" => DataType::U8,
        "Dropout" if i == 1 => DataType::Bool,
        "QuantizeLinear" => input(2).unwrap_or(DataType::U8),
        "Where" => input(1).or_else(|| input(2))?,
        "Gather" | "GatherElements" | "GatherND" | "Slice" | "Reshape" | "Expand" | "Tile"
        | "Squeeze" | "Unsqueeze" | "Transpose" | "Flatten" | "Identity" | "Pad" | "Resize"
        | "Split" | "Concat" | "ScatterND" | "ScatterElements" | "DepthToSpace"
        | "SpaceToDepth" | "TopK" => input(0)?,
        "Add"
        | "Sub"
        | "Mul"
        | "Div"
        | "Pow"
        | "Mod"
        | "Max"
        | "Min"
        | "Sum"
        | "Mean"
        | "Neg"
        | "Abs"
        | "Relu"
        | "LeakyRelu"
        | "PRelu"
        | "Elu"
        | "Selu"
        | "Sigmoid"
        | "HardSigmoid"
        | "HardSwish"
        | "Tanh"
        | "Softmax"
        | "LogSoftmax"
        | "Exp"
        | "Log"
        | "Sqrt"
        | "Reciprocal"
        | "Erf"
        | "Gelu"
        | "Floor"
        | "Ceil"
        | "Round"
        | "Sign"
        | "Sin"
        | "Cos"
        | "Clip"
        | "MatMul"
        | "Gemm"
        | "Conv"
        | "ConvTranspose"
        | "MaxPool"
        | "AveragePool"
        | "GlobalAveragePool"
        | "GlobalMaxPool"
        | "BatchNormalization"
        | "InstanceNormalization"
        | "LayerNormalization"
        | "ReduceMean"
        | "ReduceSum"
        | "ReduceMax"
        | "ReduceMin"
        | "ReduceProd"
        | "ReduceL2"
        | "ReduceSumSquare"
        | "CumSum"
        | "LSTM"
        | "GRU"
        | "RNN"
        | "Softplus"
        | "Dropout"
        | "Einsum"
        | "Range" => input(0)?,
        _ => return None,
    })
}

fn tdim_to_dim(d: &TDim) -> Dim {
    match d.to_i64() {
        Ok(v) => Dim::Fixed(v),
        Err(_) => Dim::Sym(d.to_string()),
    }
}

fn datum_to_dtype(dt: DatumType) -> Option<DataType> {
    Some(match dt {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::U8,
        DatumType::U16 => DataType::U16,
        DatumType::U32 => DataType::U32,
        DatumType::U64 => DataType::U64,
        DatumType::I8 => DataType::I8,
        DatumType::I16 => DataType::I16,
        DatumType::I32 => DataType::I32,
        DatumType::I64 | DatumType::TDim => DataType::I64,
        DatumType::F16 => DataType::F16,
        DatumType::F32 => DataType::F32,
        DatumType::F64 => DataType::F64,
        DatumType::String => DataType::String,
        DatumType::QU8(_) => DataType::U8,
        DatumType::QI8(_) => DataType::I8,
        DatumType::QI32(_) => DataType::I32,
        _ => return None,
    })
}
