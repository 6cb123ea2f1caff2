//! Type and shape inference of intermediate values, delegated to tract's
//! analyser. Whatever tract cannot infer stays unknown; declared types from
//! the file always win over inferred ones.

use crate::ir::{DataType, Dim, Model, NodeKind, TensorType, ValueType};
use prost::Message;
use std::path::Path;
use tract_onnx::prelude::{DatumType, TDim};
use tract_onnx::tract_hir::infer::{Factoid, GenericFactoid, InferenceModelExt};

pub(super) fn infer_types(model: &mut Model, bytes: &[u8], model_dir: Option<&Path>) {
    let proto = match tract_onnx::pb::ModelProto::decode(bytes) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("type inference skipped: tract cannot decode the model: {e}");
            return;
        }
    };
    let onnx = tract_onnx::onnx();
    let dir = model_dir.and_then(Path::to_str);
    let mut parsed = match onnx.parse(&proto, dir) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("type inference skipped: tract cannot load the model: {e:#}");
            return;
        }
    };
    if let Err(e) = parsed.model.analyse(false) {
        log::info!("type inference incomplete (values left unknown): {e:#}");
    }
    let g = &mut model.graph;
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
