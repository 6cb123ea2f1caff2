//! Scalar ground truth. Plain, obviously-correct loops with exact ONNX semantics; every SIMD
//! path is tested bit-exact against these functions (see [`crate::kernels::testing`]).

pub mod qgemm;
pub mod quantize;
pub mod requant;

pub use qgemm::{qgemm_u8s8, QGemmProblem};
pub use quantize::{dequantize_linear, quantize_linear, QType};
pub use requant::{dequantize_acc, requantize, requantize_matrix};
