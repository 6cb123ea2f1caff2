//! Reference output stage of the fbgemm-style GEMM: int32 accumulator → u8/i8 (requantize) or
//! → f32 (dequantize).
//!
//! # The exact definition (what every SIMD epilogue reproduces bit for bit)
//!
//! Requantize, with `mult = a_scale·b_scale[n] / y_scale` precomputed **in f32 by the caller**
//! (per tensor: one value; per channel: one per output column):
//!
//! ```text
//! x   = f32(acc)                       // i32 → f32, round to nearest even   (vcvtdq2ps)
//! x   = x · mult                       // one f32 multiply, RNE               (vmulps)
//! x   = min(max(x, qmin − zp), qmax − zp)   // clamp in float                 (vmaxps, vminps)
//! q   = round_half_even(x)             // f32 → i32, RNE                      (vcvtps2dq)
//! y   = q + zp                         // in [qmin, qmax]                     (vpaddd, pack)
//! ```
//!
//! - `f32(acc)` is exact for |acc| ≤ 2²⁴ and rounds to nearest-even above; the scalar
//!   reference uses `acc as f32`, which is the same IEEE conversion, so the rounding is the
//!   same, not merely "close". The multiply is a single rounding; no FMA is used anywhere (Rust
//!   never contracts `a * b + c`, and the SIMD code uses separate mul/add), with the default
//!   MXCSR (RNE, no FTZ/DAZ).
//! - Clamping before rounding equals clamping after rounding, because the bounds are integers
//!   and rounding is monotonic; doing it in float also keeps `vcvtps2dq` in range (it returns
//!   `i32::MIN` on overflow). A NaN (only possible with a non-finite `mult`) becomes `qmin`:
//!   `vmaxps(x, lo)` returns `lo` when `x` is NaN, as does `f32::max`.
//! - `[qmin, qmax]` expresses fused `Relu` (`qmin = zp`) and `Clip` exactly.
//! - This is the fp32 path of ONNX Runtime's `MlasRequantizeOutput` (float clamp, `cvtps`
//!   RNE) and FBGEMM's `ReQuantizeOutput` (`lrintf`). Against the ONNX graph semantics
//!   (DequantizeLinear → op in f32 → QuantizeLinear, which divides by `y_scale`) it can differ by
//!   1 LSB, because the three scales are folded into one f32 multiplier.
//!
//! Dequantize (output f32, e.g. `MatMulInteger` + `Mul`, or the last layer):
//! `y = f32(acc) · scale[n] + bias[n]` with `scale[n] = a_scale·b_scale[n]` precomputed in f32,
//! a multiply and a separate add (two roundings, no FMA).

/// Requantizes one accumulator (see the module documentation for the exact definition).
#[inline]
pub fn requantize(acc: i32, mult: f32, out_zp: i32, qmin: i32, qmax: i32) -> i32 {
    let lo = (qmin - out_zp) as f32;
    let hi = (qmax - out_zp) as f32;
    let x = (acc as f32) * mult;
    let x = x.max(lo).min(hi);
    x.round_ties_even() as i32 + out_zp
}

/// Dequantizes one accumulator: `f32(acc)·scale + bias`.
#[inline]
pub fn dequantize_acc(acc: i32, scale: f32, bias: f32) -> f32 {
    (acc as f32) * scale + bias
}

/// Requantizes an `m×n` block of accumulators (row stride `ldacc`) into `out` (row stride
/// `ldo`) as i32 values in `[qmin, qmax]`. `mult` holds 1 (per tensor) or `n` (per column)
/// multipliers.
#[allow(clippy::too_many_arguments)]
pub fn requantize_matrix(
    acc: &[i32],
    m: usize,
    n: usize,
    ldacc: usize,
    mult: &[f32],
    out_zp: i32,
    qmin: i32,
    qmax: i32,
    out: &mut [i32],
    ldo: usize,
) {
    assert!(mult.len() == 1 || mult.len() == n, "mult: 1 or n values");
    for i in 0..m {
        for j in 0..n {
            let s = if mult.len() == 1 { mult[0] } else { mult[j] };
            out[i * ldo + j] = requantize(acc[i * ldacc + j], s, out_zp, qmin, qmax);
        }
    }
}
