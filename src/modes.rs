//! Library entry points of the quantization modes beyond static QDQ, for
//! `onnxq quantize --mode dynamic|weight-only` and `--format qoperator`.
//! Each runs a fixed pipeline on the model in place and records statistics
//! and notes (what stayed float, and why) in the [`PassContext`].

use crate::error::Result;
use crate::ir::Model;
use crate::passes::{
    ConvertQOperator, DynamicOptions, EliminateDeadCode, QuantizeDynamic, QuantizeWeightOnly,
    SinkConstants, WeightOnlyOptions, OPTIMIZE,
};
use crate::pm::{PassContext, PassManager, PassRegistry};

/// The float graph optimisations every mode starts from ([`OPTIMIZE`]).
fn optimize(model: &mut Model, cx: &mut PassContext) -> Result<String> {
    let mut pm = PassManager::parse(OPTIMIZE, &PassRegistry::builtin())?;
    pm.run(model, cx)?;
    Ok(pm.pipeline_text())
}

/// Dynamic quantization (no calibration data): [`OPTIMIZE`], then
/// `sink-constants` (If-branch weights become constants of their branch),
/// `quantize-dynamic` with `options`, then dead-code elimination. Returns
/// the pipeline text that ran.
pub fn quantize_dynamic(
    model: &mut Model,
    options: DynamicOptions,
    cx: &mut PassContext,
) -> Result<String> {
    let first = optimize(model, cx)?;
    let mut pm = PassManager::new();
    pm.add(SinkConstants)
        .add(QuantizeDynamic::new(options)?)
        .add(EliminateDeadCode);
    pm.run(model, cx)?;
    Ok(format!("{first},{}", pm.pipeline_text()))
}

/// Weight-only quantization (no calibration data): [`OPTIMIZE`], then
/// `sink-constants` (If-branch weights become constants of their branch),
/// `quantize-weight-only` with `options`, then dead-code elimination.
/// `bits: 4` raises the opset to 21 or fails naming the op that forbids it.
/// Returns the pipeline text that ran.
pub fn quantize_weight_only(
    model: &mut Model,
    options: WeightOnlyOptions,
    cx: &mut PassContext,
) -> Result<String> {
    let first = optimize(model, cx)?;
    let mut pm = PassManager::new();
    pm.add(SinkConstants)
        .add(QuantizeWeightOnly::new(options)?)
        .add(EliminateDeadCode);
    pm.run(model, cx)?;
    Ok(format!("{first},{}", pm.pipeline_text()))
}

/// The QOperator format: run on a model `convert-qdq` has produced (static
/// QDQ), it rewrites the Conv/MatMul/Gemm units into QLinearConv /
/// QLinearMatMul (`convert-qoperator`), then removes what became dead.
/// Units that cannot be expressed stay QDQ (notes say why). Returns the
/// pipeline text that ran.
pub fn convert_to_qoperator(model: &mut Model, cx: &mut PassContext) -> Result<String> {
    let mut pm = PassManager::new();
    pm.add(ConvertQOperator).add(EliminateDeadCode);
    pm.run(model, cx)?;
    Ok(pm.pipeline_text())
}
