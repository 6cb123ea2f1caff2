//! Running ONNX models with tract: the reference float engine used for
//! calibration and for cross-checking what onnxq emits.

use crate::error::{Error, Result};
use crate::ir::{DataType, Tensor};
use std::sync::Arc;
use tract_onnx::prelude::{
    DatumType, InferenceFact, InferenceModelExt, IntoRunnable, TValue, TVec, Tensor as TTensor,
    TypedModel, TypedRunnableModel,
};

type Plan = Arc<TypedRunnableModel>;

/// A model loaded in tract, optimised for one set of input shapes.
pub struct TractModel {
    plan: Plan,
    output_names: Vec<String>,
}

impl TractModel {
    /// Loads serialized ONNX and optimises it for these concrete inputs
    /// (graph input order).
    pub fn load(
        onnx: &[u8],
        model_dir: Option<&std::path::Path>,
        inputs: &[Tensor],
    ) -> Result<TractModel> {
        let fw = tract_onnx::onnx();
        let proto = {
            use prost::Message;
            tract_onnx::pb::ModelProto::decode(onnx)
                .map_err(|e| Error::invalid(format!("tract: {e}")))?
        };
        let parsed = fw
            .parse(&proto, model_dir.and_then(|d| d.to_str()))
            .map_err(|e| Error::invalid(format!("tract cannot load the model: {e:#}")))?;
        let mut model = parsed.model;
        for (i, t) in inputs.iter().enumerate() {
            let dt = datum(t.dtype)?;
            let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            model
                .set_input_fact(i, InferenceFact::dt_shape(dt, shape))
                .map_err(|e| Error::invalid(format!("tract: input {i}: {e:#}")))?;
        }
        let output_names = model
            .output_outlets()
            .map_err(|e| Error::invalid(format!("{e:#}")))?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_default()
            })
            .collect();
        let typed: TypedModel = model
            .into_optimized()
            .map_err(|e| Error::invalid(format!("tract cannot optimise the model: {e:#}")))?;
        let plan = typed
            .into_runnable()
            .map_err(|e| Error::invalid(format!("tract: {e:#}")))?;
        Ok(TractModel { plan, output_names })
    }

    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// Runs the model on inputs in graph input order.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let tv: TVec<TValue> = inputs
            .iter()
            .map(to_tract)
            .collect::<Result<TVec<TTensor>>>()?
            .into_iter()
            .map(TValue::from)
            .collect();
        let outs = self
            .plan
            .run(tv)
            .map_err(|e| Error::invalid(format!("tract run failed: {e:#}")))?;
        outs.iter().map(|t| from_tract(t)).collect()
    }
}

/// Convenience: load and run once.
pub fn run_once(
    onnx: &[u8],
    model_dir: Option<&std::path::Path>,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>> {
    TractModel::load(onnx, model_dir, inputs)?.run(inputs)
}

fn datum(dt: DataType) -> Result<DatumType> {
    Ok(match dt {
        DataType::F32 => DatumType::F32,
        DataType::F64 => DatumType::F64,
        DataType::F16 => DatumType::F16,
        DataType::I64 => DatumType::I64,
        DataType::I32 => DatumType::I32,
        DataType::I16 => DatumType::I16,
        DataType::I8 => DatumType::I8,
        DataType::U64 => DatumType::U64,
        DataType::U32 => DatumType::U32,
        DataType::U16 => DatumType::U16,
        DataType::U8 => DatumType::U8,
        DataType::Bool => DatumType::Bool,
        other => return Err(Error::Unsupported(format!("tract inputs of type {other}"))),
    })
}

fn typed<T: tract_onnx::prelude::Datum + Copy, const N: usize>(
    shape: &[usize],
    raw: &[u8],
    f: fn([u8; N]) -> T,
) -> Result<TTensor> {
    let v: Vec<T> = raw
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunk size")))
        .collect();
    TTensor::from_shape(shape, &v).map_err(|e| Error::invalid(format!("{e:#}")))
}

/// IR tensor → tract tensor.
pub fn to_tract(t: &Tensor) -> Result<TTensor> {
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let raw = t
        .raw()
        .ok_or_else(|| Error::Unsupported("string tensors".into()))?;
    match t.dtype {
        DataType::F32 => typed(&shape, raw, f32::from_le_bytes),
        DataType::F64 => typed(&shape, raw, f64::from_le_bytes),
        DataType::I64 => typed(&shape, raw, i64::from_le_bytes),
        DataType::I32 => typed(&shape, raw, i32::from_le_bytes),
        DataType::I16 => typed(&shape, raw, i16::from_le_bytes),
        DataType::U16 => typed(&shape, raw, u16::from_le_bytes),
        DataType::U32 => typed(&shape, raw, u32::from_le_bytes),
        DataType::U64 => typed(&shape, raw, u64::from_le_bytes),
        DataType::I8 => typed(&shape, raw, |b: [u8; 1]| b[0] as i8),
        DataType::U8 => typed(&shape, raw, |b: [u8; 1]| b[0]),
        DataType::Bool => typed(&shape, raw, |b: [u8; 1]| b[0] != 0),
        other => Err(Error::Unsupported(format!("tract tensors of type {other}"))),
    }
}

/// tract tensor → IR tensor.
pub fn from_tract(t: &TTensor) -> Result<Tensor> {
    let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    let dt = match t.datum_type() {
        DatumType::F32 => DataType::F32,
        DatumType::F64 => DataType::F64,
        DatumType::F16 => DataType::F16,
        DatumType::I64 => DataType::I64,
        DatumType::I32 => DataType::I32,
        DatumType::I16 => DataType::I16,
        DatumType::I8 | DatumType::QI8(_) => DataType::I8,
        DatumType::U8 | DatumType::QU8(_) => DataType::U8,
        DatumType::U16 => DataType::U16,
        DatumType::U32 => DataType::U32,
        DatumType::U64 => DataType::U64,
        DatumType::Bool => DataType::Bool,
        DatumType::TDim => {
            let c = t
                .cast_to::<i64>()
                .map_err(|e| Error::invalid(format!("symbolic output: {e:#}")))?;
            return Tensor::from_raw(DataType::I64, dims, c.as_bytes().to_vec())
                .map_err(|e| Error::invalid(e.to_string()));
        }
        other => {
            return Err(Error::Unsupported(format!(
                "tract output of type {other:?}"
            )))
        }
    };
    Tensor::from_raw(dt, dims, t.as_bytes().to_vec()).map_err(|e| Error::invalid(e.to_string()))
}
