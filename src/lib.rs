//! onnxq: a graph-mode INT8 quantization compiler for ONNX.
//!
//! The architecture follows the data: [`import`] reads ONNX into the [`ir`]
//! (a petgraph graph), [`passes`] transform it, and [`emit`] writes ONNX back.

pub mod backend;
pub mod calib;
pub mod data;
pub mod emit;
pub mod error;
pub mod executor;
pub mod import;
pub mod ir;
pub mod kernels;
pub mod modes;
pub mod numeric;
pub mod observe;
pub mod onnx;
pub mod opset;
pub mod pm;
pub mod prelude;
pub mod qconfig;
pub mod qdq;
pub mod quantize;
pub mod summary;
pub mod tract_runner;

/// Graph passes, one per file (mounted from the top-level `passes/` folder).
#[path = "../passes/mod.rs"]
pub mod passes;

pub use error::{Error, Result};
