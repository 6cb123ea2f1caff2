//! Reference fixed-point requantization of the qnnpack-style family: an int32 accumulator times
//! a per-channel real scale, as **one** rounding of a 64-bit product (QNNPACK `precise`,
//! XNNPACK `rndnu`), never gemmlowp's double rounding.
//!
//! # The exact definition (what every SIMD epilogue reproduces bit for bit)
//!
//! A scale is stored as [`Requant`] `{ multiplier, shift, limit }` with `multiplier` in
//! `[2³⁰, 2³¹)` (or 0), `shift` in `[15, 62]`, so the represented scale is
//! `s = multiplier · 2^−shift`. For an accumulator `acc`:
//!
//! ```text
//! a   = clamp(acc, !limit, limit)          // !limit = −limit−1; a no-op when limit = i32::MAX
//! P   = |a| · multiplier                   // exact, u64 (< 2⁶²)          (pmuludq / vpmuludq)
//! r   = (P + 2^(shift−1)) >> shift         // one rounding: half away from zero
//! if Rounding::HalfEven and P mod 2^shift == 2^(shift−1) and r is odd: r −= 1
//! q   = sign(a) · r                        // i32
//! y   = clamp(q + out_zp, qmin, qmax)      // u8
//! ```
//!
//! - Working on `|a|` and restoring the sign makes the rounding symmetric. `HalfAway` rounds
//!   ties away from zero (QNNPACK `precise`: cheapest on SSE2/AVX2, which have no 64-bit
//!   arithmetic shift). `HalfEven` adds a sticky-bit tie test so that ties go to even, i.e.
//!   ONNX `QuantizeLinear` semantics; it costs ~5 extra vector ops in the epilogue only.
//! - With [`Requant::from_scale`] (an f32 scale) the multiplier is the f32 mantissa shifted
//!   left by 7, so `s` **equals** the f32 scale: `HalfEven` returns exactly
//!   `round_half_even(acc · scale)` of the exact rational product ("precise"), and `HalfAway`
//!   differs from it only on exact ties (by 1). With [`Requant::from_scale_f64`] the multiplier
//!   is rounded to 31 bits (relative error ≤ 2⁻³¹), so the result is within 1 LSB of
//!   `round_half_even(acc · scale)` for every output that is not saturated (|acc·scale| < 2¹⁵;
//!   the residual error there is < 2⁻¹⁵ LSB) — tested densely in
//!   `tests/kernels_qnnpack_requant.rs`.
//! - Scales ≥ 1 (up to 2¹⁶) are supported: then `limit = 512`. Any |acc| ≥ 512 gives
//!   |q| ≥ 512, which saturates every u8 output whatever the zero point, so clamping first
//!   changes nothing and keeps `r` inside i32. Scales below 2⁻³² round every i32 to 0 and are
//!   stored as `multiplier = 0`.

use std::fmt;

/// Tie rule of the single rounding step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// Ties away from zero (QNNPACK `precise`). The fixed-point default.
    HalfAway,
    /// Ties to even (ONNX `QuantizeLinear`; "precise" in this crate's tests).
    HalfEven,
}

/// A real scale in fixed point: `multiplier · 2^−shift`, plus the pre-clamp `limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Requant {
    /// In `[2³⁰, 2³¹)`, or 0 for scales below 2⁻³².
    pub multiplier: u32,
    /// In `[15, 62]`.
    pub shift: u32,
    /// Accumulators are clamped to `[!limit, limit]` first: `i32::MAX` for scales < 1, 512
    /// for scales ≥ 1.
    pub limit: i32,
}

/// Why a scale cannot be represented.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RequantError {
    /// NaN, ±∞, zero or negative.
    NotPositiveFinite(f64),
    /// ≥ 2¹⁶.
    TooLarge(f64),
}

impl fmt::Display for RequantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequantError::NotPositiveFinite(s) => {
                write!(f, "requantization scale {s} is not positive and finite")
            }
            RequantError::TooLarge(s) => write!(f, "requantization scale {s} is ≥ 2^16"),
        }
    }
}

impl std::error::Error for RequantError {}

/// Smallest shift (scales just below 2¹⁶).
pub const MIN_SHIFT: u32 = 15;
/// Largest shift (scale 2⁻³²).
pub const MAX_SHIFT: u32 = 62;

impl Requant {
    /// The identity-like placeholder for padded channels: always 0.
    pub const ZERO: Requant = Requant {
        multiplier: 0,
        shift: 31,
        limit: i32::MAX,
    };

    /// From the exponent/mantissa form `scale = m · 2^(e − 30)` with `m ∈ [2³⁰, 2³¹)`, i.e.
    /// `scale ∈ [2^e, 2^(e+1))`.
    fn from_parts(multiplier: u64, e: i32, scale: f64) -> Result<Requant, RequantError> {
        debug_assert!((1 << 30..1 << 31).contains(&multiplier));
        if e >= 16 {
            return Err(RequantError::TooLarge(scale));
        }
        if e < -32 {
            return Ok(Requant::ZERO);
        }
        let shift = (30 - e) as u32;
        debug_assert!((MIN_SHIFT..=MAX_SHIFT).contains(&shift));
        Ok(Requant {
            multiplier: multiplier as u32,
            shift,
            limit: if e >= 0 { 512 } else { i32::MAX },
        })
    }

    /// Exact conversion of an f32 scale (the multiplier is the 24-bit mantissa `<< 7`, so
    /// `self.scale() == scale as f64`).
    ///
    /// # Errors
    /// If `scale` is not positive and finite, or ≥ 2¹⁶.
    pub fn from_scale(scale: f32) -> Result<Requant, RequantError> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(RequantError::NotPositiveFinite(f64::from(scale)));
        }
        let bits = scale.to_bits();
        let exp = ((bits >> 23) & 0xFF) as i32;
        if exp == 0 {
            // Subnormal: far below 2^-32.
            return Ok(Requant::ZERO);
        }
        let mantissa = u64::from((bits & 0x7F_FFFF) | 0x80_0000);
        Requant::from_parts(mantissa << 7, exp - 127, f64::from(scale))
    }

    /// Conversion of an f64 scale, the multiplier rounded to 31 bits (≤ 1 LSB; see the module
    /// documentation). Use it when the scale is computed in f64 (`a_scale·w_scale/y_scale`).
    ///
    /// # Errors
    /// If `scale` is not positive and finite, or ≥ 2¹⁶.
    pub fn from_scale_f64(scale: f64) -> Result<Requant, RequantError> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(RequantError::NotPositiveFinite(scale));
        }
        let bits = scale.to_bits();
        let exp = ((bits >> 52) & 0x7FF) as i32;
        if exp == 0 {
            return Ok(Requant::ZERO);
        }
        let mantissa = (bits & ((1 << 52) - 1)) | (1 << 52); // [2^52, 2^53)
                                                             // Round to 31 significant bits, ties away (the choice is immaterial to the bound).
        let mut m = (mantissa + (1 << 21)) >> 22;
        let mut e = exp - 1023;
        if m == 1 << 31 {
            m = 1 << 30;
            e += 1;
        }
        Requant::from_parts(m, e, scale)
    }

    /// The represented scale, `multiplier · 2^−shift` (exact in f64).
    pub fn scale(&self) -> f64 {
        f64::from(self.multiplier) * (-f64::from(self.shift)).exp2()
    }
}

/// `acc` times the scale, rounded once (the signed `q` of the module documentation, before the
/// output zero point).
#[inline]
pub fn requantize_fixedpoint(acc: i32, rq: Requant, rounding: Rounding) -> i32 {
    let a = acc.clamp(!rq.limit, rq.limit);
    let p = u64::from(a.unsigned_abs()) * u64::from(rq.multiplier);
    let half = 1u64 << (rq.shift - 1);
    let mut r = (p + half) >> rq.shift;
    if rounding == Rounding::HalfEven && p & ((half << 1) - 1) == half && r & 1 == 1 {
        r -= 1;
    }
    // r < 2^31: for scales < 1 since |a|·s < 2^31 − 1/2; for scales ≥ 1 since |a| ≤ 512.
    let r = r as i32;
    if a < 0 {
        -r
    } else {
        r
    }
}

/// The output parameters shared by every qnnpack-style kernel (QNNPACK
/// `qnnp_conv_quantization_params`): output zero point, clamp and tie rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Q8Output {
    pub zp: u8,
    /// Fused Relu is `qmin = zp`; Clip maps to `[qmin, qmax]`.
    pub qmin: u8,
    pub qmax: u8,
    pub rounding: Rounding,
}

impl Q8Output {
    /// Full u8 range, ties away from zero.
    pub fn new(zp: u8) -> Q8Output {
        Q8Output {
            zp,
            qmin: 0,
            qmax: 255,
            rounding: Rounding::HalfAway,
        }
    }
}

/// `clamp(requantize_fixedpoint(acc) + zp, qmin, qmax)`.
#[inline]
pub fn requantize_u8(acc: i32, rq: Requant, out: &Q8Output) -> u8 {
    let q = i64::from(requantize_fixedpoint(acc, rq, out.rounding)) + i64::from(out.zp);
    q.clamp(i64::from(out.qmin), i64::from(out.qmax)) as u8
}

/// The exact real-valued ground truth: `round(acc · scale)` computed on the exact rational
/// value of the f64 `scale` (i128 arithmetic), with the given tie rule. Used by the tests to
/// bound the fixed-point error; not a kernel.
pub fn round_exact(acc: i32, scale: f64, rounding: Rounding) -> i64 {
    assert!(scale.is_finite() && scale > 0.0);
    let bits = scale.to_bits();
    let exp = ((bits >> 52) & 0x7FF) as i32;
    let (mant, e) = if exp == 0 {
        (bits & ((1 << 52) - 1), -1074)
    } else {
        ((bits & ((1 << 52) - 1)) | (1 << 52), exp - 1075)
    };
    // acc·scale = acc·mant·2^e exactly.
    let x = i128::from(acc) * i128::from(mant);
    if e >= 0 {
        return (x << e.min(60)) as i64;
    }
    let sh = (-e) as u32;
    if sh >= 120 {
        return 0;
    }
    let mag = x.unsigned_abs();
    let q = mag >> sh;
    let rem = mag - (q << sh);
    let half = 1u128 << (sh - 1);
    let up = match rem.cmp(&half) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => match rounding {
            Rounding::HalfAway => true,
            Rounding::HalfEven => q & 1 == 1,
        },
    };
    let r = (q + u128::from(up)) as i64;
    if x < 0 {
        -r
    } else {
        r
    }
}
