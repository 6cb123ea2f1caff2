//! Scalar ground truth. Plain, obviously-correct loops with exact ONNX semantics; every SIMD
//! path is tested bit-exact against these functions (see [`crate::kernels::testing`]).

// [fbconv] conv reference (issue 6).
pub mod conv;
// --- qnnpack-style family (u8 × u8, fixed-point requantization) ---
pub mod q8conv;
pub mod q8dwconv;
pub mod q8gemm;
pub mod q8lut;
pub mod q8pool;
pub mod q8vadd;
pub mod requant_fixedpoint;
// --- end qnnpack-style family ---
pub mod qgemm;
pub mod quantize;
pub mod requant;

// [fbconv]
pub use conv::{
    conv_u8s8_nchw, conv_u8s8_nhwc, nchw_to_nhwc, nhwc_to_nchw, ConvGeometry, ConvProblem,
};
pub use qgemm::{qgemm_u8s8, QGemmProblem};
pub use quantize::{dequantize_linear, quantize_linear, QType};
pub use requant::{dequantize_acc, requantize, requantize_matrix};
