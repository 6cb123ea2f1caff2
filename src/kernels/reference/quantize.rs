//! Reference ONNX `QuantizeLinear` / `DequantizeLinear` for u8 and i8, per tensor or per axis.
//!
//! - QuantizeLinear: `y = saturate(round_half_even(x / y_scale) + y_zero_point)`. Note the
//!   **division** (not a multiply by a reciprocal, which rounds differently), computed in f32 as
//!   the spec's reference implementation does. NaN maps to `zp` (`round` of NaN is NaN, and
//!   Rust's saturating `as i32` casts NaN to 0); ±∞ saturate.
//! - DequantizeLinear: `y = (x − x_zero_point) · x_scale`, the difference in i32 then converted to
//!   f32 (exact) and one f32 multiply.

/// An 8-bit quantized element type.
pub trait QType: Copy + Default + PartialEq + std::fmt::Debug {
    const MIN: i32;
    const MAX: i32;
    fn to_i32(self) -> i32;
    /// Converts a value already in `[MIN, MAX]`.
    fn from_i32(v: i32) -> Self;
}

impl QType for u8 {
    const MIN: i32 = 0;
    const MAX: i32 = 255;
    fn to_i32(self) -> i32 {
        i32::from(self)
    }
    fn from_i32(v: i32) -> Self {
        debug_assert!((0..=255).contains(&v));
        v as u8
    }
}

impl QType for i8 {
    const MIN: i32 = -128;
    const MAX: i32 = 127;
    fn to_i32(self) -> i32 {
        i32::from(self)
    }
    fn from_i32(v: i32) -> Self {
        debug_assert!((-128..=127).contains(&v));
        v as i8
    }
}

/// Index into the parameter arrays for flat element `i` of a tensor of `shape`: 0 per tensor,
/// the coordinate along `axis` per axis.
fn param_index(i: usize, shape: &[usize], axis: Option<usize>) -> usize {
    match axis {
        None => 0,
        Some(ax) => {
            let inner: usize = shape[ax + 1..].iter().product();
            (i / inner) % shape[ax]
        }
    }
}

fn check_params(len_x: usize, shape: &[usize], axis: Option<usize>, n_scale: usize, n_zp: usize) {
    assert_eq!(
        len_x,
        shape.iter().product::<usize>(),
        "shape/length mismatch"
    );
    let expect = axis.map_or(1, |ax| shape[ax]);
    assert_eq!(
        n_scale, expect,
        "scale: 1 value per tensor, shape[axis] per axis"
    );
    assert_eq!(n_zp, expect, "zero point: same count as scale");
}

/// Quantizes one value: `saturate(round_half_even(x / scale) + zp)`.
#[inline]
pub fn quantize_one<T: QType>(x: f32, scale: f32, zp: T) -> T {
    let r = (x / scale).round_ties_even();
    // NaN has no quantized value; map it to the zero point (real 0).
    let r = if r.is_nan() { 0.0 } else { r };
    // `r` is integral; adding a small integer is exact below 2^24 and saturates above.
    let v = (r + zp.to_i32() as f32).clamp(T::MIN as f32, T::MAX as f32);
    T::from_i32(v as i32)
}

/// ONNX QuantizeLinear over a tensor of `shape`; `axis: None` is per tensor.
pub fn quantize_linear<T: QType>(
    x: &[f32],
    shape: &[usize],
    axis: Option<usize>,
    scale: &[f32],
    zp: &[T],
    y: &mut [T],
) {
    check_params(x.len(), shape, axis, scale.len(), zp.len());
    assert_eq!(y.len(), x.len());
    for (i, (yi, &xi)) in y.iter_mut().zip(x).enumerate() {
        let p = param_index(i, shape, axis);
        *yi = quantize_one(xi, scale[p], zp[p]);
    }
}

/// ONNX DequantizeLinear over a tensor of `shape`; `axis: None` is per tensor.
pub fn dequantize_linear<T: QType>(
    x: &[T],
    shape: &[usize],
    axis: Option<usize>,
    scale: &[f32],
    zp: &[T],
    y: &mut [f32],
) {
    check_params(x.len(), shape, axis, scale.len(), zp.len());
    assert_eq!(y.len(), x.len());
    for (i, (yi, &xi)) in y.iter_mut().zip(x).enumerate() {
        let p = param_index(i, shape, axis);
        *yi = (xi.to_i32() - zp[p].to_i32()) as f32 * scale[p];
    }
}
