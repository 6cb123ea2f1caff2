//! Reference u8 elementwise Add with two input scales (QNNPACK `q8vadd` semantics):
//!
//! ```text
//! acc = (a − a_zp)·a_mult + (b − b_zp)·b_mult            // i32, exact (|acc| < 2·255·2²²)
//! r   = sign(acc) · ((|acc| + 2^(shift−1)) >> shift)     // one rounding; ties per `out.rounding`
//! y   = clamp(r + y_zp, qmin, qmax)
//! ```
//!
//! `a_mult = round(a_scale/y_scale · 2^shift)`, `b_mult` likewise, with `shift` chosen so that
//! the larger multiplier lies in `[2²¹, 2²²)`. The ratios must lie in `[2⁻¹⁰, 2⁸)` (the larger)
//! and the smaller is only required to be ≥ 0; both are rounded to 22-bit precision relative to
//! the larger, so `y` is within 1 LSB of the real `round((a−a_zp)·a_s/y_s + (b−b_zp)·b_s/y_s)`.

use super::requant_fixedpoint::{Q8Output, Rounding};

/// Parameters of [`q8vadd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Q8AddParams {
    pub a_zp: u8,
    pub b_zp: u8,
    pub a_mult: i32,
    pub b_mult: i32,
    /// In `[14, 31]`.
    pub shift: u32,
    pub out: Q8Output,
}

/// The scale ratios of an Add are not representable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddScaleError {
    pub a_ratio: f64,
    pub b_ratio: f64,
}

impl std::fmt::Display for AddScaleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Add scale ratios {} and {} outside [2^-10, 2^8)",
            self.a_ratio, self.b_ratio
        )
    }
}

impl std::error::Error for AddScaleError {}

impl Q8AddParams {
    /// # Errors
    /// If the larger of `a_scale/y_scale`, `b_scale/y_scale` is outside `[2⁻¹⁰, 2⁸)` or a
    /// scale is not positive and finite.
    pub fn new(
        a_scale: f32,
        a_zp: u8,
        b_scale: f32,
        b_zp: u8,
        y_scale: f32,
        out: Q8Output,
    ) -> Result<Q8AddParams, AddScaleError> {
        let ar = f64::from(a_scale) / f64::from(y_scale);
        let br = f64::from(b_scale) / f64::from(y_scale);
        let err = AddScaleError {
            a_ratio: ar,
            b_ratio: br,
        };
        let max = ar.max(br);
        let ok = ar.is_finite() && br.is_finite() && ar > 0.0 && br > 0.0;
        if !(ok && ((-10f64).exp2()..8f64.exp2()).contains(&max)) {
            return Err(err);
        }
        let e = max.log2().floor() as i32;
        // Guard the floor against log2 rounding.
        let e = if (f64::from(e)).exp2() > max {
            e - 1
        } else if (f64::from(e + 1)).exp2() <= max {
            e + 1
        } else {
            e
        };
        let shift = (21 - e) as u32;
        let to_mult = |r: f64| ((r * f64::from(shift).exp2()).round() as i64).min((1 << 22) - 1);
        Ok(Q8AddParams {
            a_zp,
            b_zp,
            a_mult: to_mult(ar) as i32,
            b_mult: to_mult(br) as i32,
            shift,
            out,
        })
    }
}

/// Rounding right shift of an i32 by `shift ∈ [1, 31]`, on the magnitude (symmetric).
#[inline]
pub fn round_shift(acc: i32, shift: u32, rounding: Rounding) -> i32 {
    let mag = acc.unsigned_abs();
    let half = 1u32 << (shift - 1);
    let mut r = (mag + half) >> shift;
    if rounding == Rounding::HalfEven && mag & ((half << 1) - 1) == half && r & 1 == 1 {
        r -= 1;
    }
    let r = r as i32;
    if acc < 0 {
        -r
    } else {
        r
    }
}

/// One element.
#[inline]
pub fn q8add_one(a: u8, b: u8, p: &Q8AddParams) -> u8 {
    let acc = (i32::from(a) - i32::from(p.a_zp)) * p.a_mult
        + (i32::from(b) - i32::from(p.b_zp)) * p.b_mult;
    let r = round_shift(acc, p.shift, p.out.rounding) + i32::from(p.out.zp);
    r.clamp(i32::from(p.out.qmin), i32::from(p.out.qmax)) as u8
}

/// `y[i] = q8add_one(a[i], b[i])`.
pub fn q8vadd(a: &[u8], b: &[u8], p: &Q8AddParams, y: &mut [u8]) {
    assert!(a.len() == b.len() && y.len() == a.len());
    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
        *y = q8add_one(a, b, p);
    }
}
