//! fbgemm-style int8 GEMM: u8 activations × s8 weights → i32, with a fused output stage.
//!
//! Semantics (kept here, next to the family; habit 21):
//! - `C[m,n] = Σ_k (A[m,k] − a_zp)(W[k,n] − w_zp[n]) + bias[n]`, i32 accumulation (wrapping).
//! - Weights are packed once ([`PackedB`]) into the layout of one micro-kernel. Every static
//!   zero-point term is folded into a packed per-column int32 bias at pack time:
//!   `col_bias[n] = bias[n] − a_zp·(Σ_k W[k,n] − K·w_zp[n])`, so for symmetric weights the
//!   micro-kernel is a pure MAC loop starting from `col_bias`. Only when some `w_zp[n] ≠ 0`
//!   does the driver compute per-row sums of A, and the epilogue subtracts
//!   `w_zp[n]·Σ_k A[m,k]`.
//! - The output stage ([`OutputStage`]) runs in the micro-kernel epilogue: raw i32, requantize
//!   to u8/i8 (per-tensor or per-channel f32 multiplier, zero point, `[qmin, qmax]` clamp that
//!   also expresses fused Relu/Clip), or dequantize to f32. Its exact definition is in
//!   [`crate::kernels::reference::requant`].
//! - AVX2 exactness: `vpmaddubsw` saturates its i16 pair sums (2·255·(−128) < −32768). The
//!   `6x16c4` AVX2 kernel uses it only for weights proven safe at pack time
//!   ([`WeightRange::PairSum128`]); otherwise packing picks the `6x16c2` kernel, which widens
//!   to 16 bit and uses `vpmaddwd` (exact for all inputs). `vpdpbusd` (VNNI) never saturates.

// [fbconv] convolution (issue 6): driver, im2col, depthwise interface and kernels.
pub mod conv;
pub mod dwconv;
#[cfg(target_arch = "x86_64")]
mod dwconv_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod dwconv_c32_avx2; // its block body is shared with the qnnpack c32 kernels
#[cfg(target_arch = "x86_64")]
pub mod dwconv_u8s8_3x3_avx2;
#[cfg(target_arch = "x86_64")]
pub mod dwconv_u8s8_3x3c32_avx2;
#[cfg(target_arch = "x86_64")]
pub mod dwconv_u8s8_5x5_avx2;
#[cfg(target_arch = "x86_64")]
pub mod dwconv_u8s8_5x5c32_avx2;
pub mod dwconv_u8s8_scalar;
mod im2col;
// [/fbconv]
pub mod gemm;
pub mod output;
pub mod pack;
pub mod ukernel;

pub mod gemm_u8s8_4x16c4_scalar;
#[cfg(target_arch = "x86_64")]
pub mod gemm_u8s8_6x16c2_avx2;
#[cfg(target_arch = "x86_64")]
pub mod gemm_u8s8_6x16c4_avx2;
#[cfg(target_arch = "x86_64")]
pub mod gemm_u8s8_6x16c4_avxvnni;
#[cfg(target_arch = "x86_64")]
pub mod gemm_u8s8_6x64c4_avx512vnni;
#[cfg(target_arch = "x86_64")]
mod ymm;
#[cfg(target_arch = "x86_64")]
mod zmm;

// [fbconv]
pub use conv::{ConvAlgo, ConvScratch, ConvWeights, PackedConv};
pub use dwconv::{DwConvTile, DwConvUkernel, DwLayout, PackedDw};
pub use gemm::{qgemm, QGemmOutput};
pub use output::OutputStage;
pub use pack::{PackError, PackedB, QWeights};
pub use ukernel::{AFormat, BFormat, QGemmTile, QGemmUkernel, TileOutput, WeightRange};
