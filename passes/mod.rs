//! Built-in passes, one per file. They use only `crate::prelude`, the same
//! API a user embedding onnxq's pass manager has.

mod batchnorm_to_mul_add;
mod convert_qdq;
mod convert_qoperator;
mod dedup_constants;
mod eliminate_dead_code;
mod fold_batchnorm;
mod fold_constants;
mod fuse_activations;
mod fuse_matmul_add;
mod insert_observers;
mod quantize_dynamic;
mod quantize_embeddings;
mod quantize_weight_only;
mod remove_identity;
mod sink_constants;
mod smooth_quant;
mod store_weights_fp16;
mod strip_metadata;
mod upgrade_opset;

pub use batchnorm_to_mul_add::BatchNormToMulAdd;
pub use convert_qdq::ConvertQdq;
pub use convert_qoperator::ConvertQOperator;
pub use dedup_constants::DedupConstants;
pub use eliminate_dead_code::EliminateDeadCode;
pub use fold_batchnorm::FoldBatchNorm;
pub use fold_constants::FoldConstants;
pub use fuse_activations::FuseActivations;
pub use fuse_matmul_add::FuseMatMulAdd;
pub use insert_observers::InsertObservers;
pub use quantize_dynamic::{DynamicOptions, QuantizeDynamic, DEFAULT_DYNAMIC_OPS, DYNAMIC_OPS};
pub use quantize_embeddings::{is_embedding_lookup, QuantizeEmbeddings};
pub use quantize_weight_only::{QuantizeWeightOnly, WeightOnlyOptions};
pub use remove_identity::RemoveIdentity;
pub use sink_constants::SinkConstants;
pub use smooth_quant::{smooth_groups, smoothing_scales, SmoothGroup, SmoothQuant};
pub use store_weights_fp16::{StoreWeightsFp16, WEIGHT_OPS as FP16_WEIGHT_OPS};
pub use strip_metadata::StripMetadata;
pub use upgrade_opset::UpgradeOpset;

use crate::prelude::PassRegistry;

/// Canonicalization: what every later stage expects.
pub const CANONICALIZE: &str = "remove-identity,fold-constants,dedup-constants,eliminate-dead-code";

/// The float graph optimisations run before quantization (`onnxq optimize`'s default):
/// canonicalization, then module fusion.
pub const OPTIMIZE: &str = "remove-identity,fold-constants,fold-batchnorm,batchnorm-to-mul-add,fuse-matmul-add,dedup-constants,eliminate-dead-code";

/// What quantization starts from: [`OPTIMIZE`] with constants read by one subgraph
/// moved into it (so that If-branch weights are constants there), then marking the
/// fused units.
pub const FUSE: &str = "remove-identity,fold-constants,sink-constants,fold-batchnorm,batchnorm-to-mul-add,fuse-matmul-add,dedup-constants,eliminate-dead-code,fuse-activations";

/// PyTorch's `prepare_fx`: [`FUSE`], then observer insertion.
pub const PREPARE: &str = "remove-identity,fold-constants,sink-constants,fold-batchnorm,batchnorm-to-mul-add,fuse-matmul-add,dedup-constants,eliminate-dead-code,fuse-activations,insert-observers";

/// Registers every built-in pass.
pub fn register_builtin(r: &mut PassRegistry) {
    r.register_simple::<RemoveIdentity>(
        "remove-identity",
        "remove Identity, and Dropout as inference runs it",
    );
    r.register_simple::<FoldConstants>(
        "fold-constants",
        "evaluate nodes with constant inputs and known shape queries",
    );
    r.register_simple::<SinkConstants>(
        "sink-constants",
        "move constants that only one subgraph reads into that subgraph (If-branch weights)",
    );
    r.register_simple::<DedupConstants>("dedup-constants", "share identical constant tensors");
    r.register_simple::<StripMetadata>(
        "strip-metadata",
        "drop per-node doc strings and metadata_props (exporters' stack traces)",
    );
    r.register_simple::<EliminateDeadCode>(
        "eliminate-dead-code",
        "remove nodes and constants nobody reads",
    );
    r.register_simple::<FoldBatchNorm>(
        "fold-batchnorm",
        "fold BatchNormalization into the Conv/ConvTranspose/Gemm/MatMul before it",
    );
    r.register_simple::<BatchNormToMulAdd>(
        "batchnorm-to-mul-add",
        "turn a lone BatchNormalization into Mul + Add",
    );
    r.register(
        "fuse-activations",
        "mark Conv/Gemm/MatMul + Relu/Clip(0,max)/LeakyRelu and Conv + Add + Relu as fused units",
        FuseActivations::from_options,
    );
    r.register("insert-observers", "decide which values are observed during calibration (backend, observer, weight-observer, per-tensor, qconfig)", InsertObservers::from_options);
    r.register(
        "convert-qdq",
        "rewrite a calibrated graph into QuantizeLinear/DequantizeLinear form (calibration=FILE)",
        ConvertQdq::from_options,
    );
    r.register(
        "store-weights-fp16",
        "store the weights of float Conv/ConvTranspose/Gemm/MatMul/LSTM/GRU/RNN as float16 + Cast (only=NODE;...)",
        StoreWeightsFp16::from_options,
    );
    r.register(
        "upgrade-opset",
        "raise the ONNX opset import (from 11+) to=N, rewriting ops whose definition changed",
        UpgradeOpset::from_options,
    );
    r.register(
        "quantize-dynamic",
        "int8 weights + run-time activation quantization: DynamicQuantizeLinear → MatMulInteger/ConvInteger → float rescale; LSTM/GRU/RNN weights int8 + DequantizeLinear (per-tensor, reduce-range, ops, exclude)",
        QuantizeDynamic::from_options,
    );
    r.register(
        "quantize-weight-only",
        "MatMul/Gemm weights to int8 per channel or int4 blockwise (opset 21) + DequantizeLinear; activations stay float (bits, block, symmetric, per-tensor, ops, exclude)",
        QuantizeWeightOnly::from_options,
    );
    r.register(
        "quantize-embeddings",
        "embedding lookups (Gather in a large float table): int8 rows with one scale each, dequantized after the lookup (exclude)",
        QuantizeEmbeddings::from_options,
    );
    r.register_simple::<ConvertQOperator>(
        "convert-qoperator",
        "after convert-qdq: rewrite Conv/MatMul/Gemm QDQ units into QLinearConv/QLinearMatMul (standard ONNX); the rest stays QDQ",
    );
    r.register_simple::<FuseMatMulAdd>(
        "fuse-matmul-add",
        "fuse MatMul + Add of a bias into Gemm where Gemm's 2-D rule allows",
    );
}
