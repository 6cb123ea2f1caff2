//! The output stage fused into the GEMM epilogue, and its scalar implementation.
//!
//! The exact arithmetic is defined in [`crate::kernels::reference::requant`]; every SIMD
//! epilogue performs the same IEEE operations in the same order.

use super::ukernel::{QGemmTile, TileOutput};
use crate::kernels::reference::requant::{dequantize_acc, requantize};

/// What to do with the finished i32 accumulators (`Σ(a−za)(w−zw) + bias`).
#[derive(Clone, Copy, Debug)]
pub enum OutputStage<'a> {
    /// Store them as i32 (`MatMulInteger`, `ConvInteger`). Output buffer: `I32`.
    Raw,
    /// Requantize: `clamp(round_half_even(f32(acc)·mult[n]) + zp, qmin, qmax)`, computed as
    /// documented in `reference::requant`. `mult` has 1 (per tensor) or N (per channel) values,
    /// `mult[n] = a_scale·w_scale[n]/y_scale` in f32. `[qmin, qmax]` must lie within the
    /// output type (u8: 0..=255, i8: −128..=127); fused Relu is `qmin = zp`. Output: `U8`/`I8`.
    Requantize {
        mult: &'a [f32],
        zp: i32,
        qmin: i32,
        qmax: i32,
    },
    /// Dequantize: `f32(acc)·scale[n] + bias[n]`, `scale[n] = a_scale·w_scale[n]` (1 or N
    /// values), optional f32 bias (N values). Output: `F32`.
    Dequantize {
        scale: &'a [f32],
        bias: Option<&'a [f32]>,
    },
}

/// Stores one finished row of a tile with the scalar output stage.
///
/// # Safety
/// `row < t.m`, `acc.len() >= t.n`, and the tile's output pointers are valid as documented on
/// [`QGemmTile`].
pub(crate) unsafe fn store_row_scalar(t: &QGemmTile<'_>, row: usize, acc: &[i32]) {
    let n = t.n;
    let off = row * t.ldc;
    match t.out {
        TileOutput::I32 { c } => {
            for (j, &v) in acc[..n].iter().enumerate() {
                // SAFETY: C is valid for `m` rows × `n` elements at stride `ldc` (contract).
                unsafe { *c.add(off + j) = v };
            }
        }
        TileOutput::U8 {
            c,
            mult,
            zp,
            qmin,
            qmax,
        } => {
            for (j, &v) in acc[..n].iter().enumerate() {
                // SAFETY: `mult` has `nr ≥ n` values, C as above.
                unsafe { *c.add(off + j) = requantize(v, *mult.add(j), zp, qmin, qmax) as u8 };
            }
        }
        TileOutput::I8 {
            c,
            mult,
            zp,
            qmin,
            qmax,
        } => {
            for (j, &v) in acc[..n].iter().enumerate() {
                // SAFETY: `mult` has `nr ≥ n` values, C as above.
                unsafe { *c.add(off + j) = requantize(v, *mult.add(j), zp, qmin, qmax) as i8 };
            }
        }
        TileOutput::F32 { c, scale, bias } => {
            for (j, &v) in acc[..n].iter().enumerate() {
                // SAFETY: `scale`/`bias` have `nr ≥ n` values, C as above.
                unsafe { *c.add(off + j) = dequantize_acc(v, *scale.add(j), *bias.add(j)) };
            }
        }
    }
}
