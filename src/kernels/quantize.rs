//! Fast QuantizeLinear for the executor, bit-identical to
//! [`crate::kernels::reference::quantize::quantize_one`].
//!
//! The reference rounds with `f32::round_ties_even`, which on the x86-64 baseline (SSE2, no
//! `roundss`) is a call to libm's `rintf` per element. Here rounding uses the classic exact
//! trick instead: for `|r| < 2^23`, `(r + c) − c` with `c = ±2^23` rounds `r` to an integer,
//! ties to even, in the default rounding mode (the sum lies where the float spacing is 1, and
//! the subtraction is exact); larger magnitudes are already integers. No FMA contraction or
//! fast-math applies in Rust, so the compiler keeps both operations.

use crate::kernels::reference::quantize::QType;

/// `round_half_even(x)` for any f32 (NaN stays NaN; the sign of a zero result may differ,
/// which no caller can observe after adding a zero point).
#[inline(always)]
pub fn round_half_even(x: f32) -> f32 {
    const TWO23: f32 = 8_388_608.0;
    if x.abs() < TWO23 {
        let c = TWO23.copysign(x);
        (x + c) - c
    } else {
        x
    }
}

/// `saturate(round_half_even(x / scale) + zp)`; NaN maps to `zp` (as the reference).
#[inline(always)]
pub fn quantize_one<T: QType>(x: f32, scale: f32, zp: T) -> T {
    let r = round_half_even(x / scale);
    let r = if r.is_nan() { 0.0 } else { r };
    let v = (r + zp.to_i32() as f32).clamp(T::MIN as f32, T::MAX as f32);
    T::from_i32(v as i32)
}

/// [`quantize_one`] over a slice with one scale and zero point. The portable body is written
/// without branches so that it vectorises (a division, a rounding and a clamp per element); on
/// hosts with AVX2, [`super::quantize_avx2`] does the same in registers, 32 lanes per step
/// (the same values: tested against the portable body).
pub fn quantize_slice<T: QType>(x: &[f32], scale: f32, zp: T, y: &mut [T]) {
    assert_eq!(x.len(), y.len(), "quantize_slice: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the host supports AVX2 (checked by avx2()); the lengths are equal (asserted).
        unsafe { super::quantize_avx2::quantize_slice(x, scale, zp, y) };
        return;
    }
    quantize_slice_body(x, scale, zp, y);
}

/// DequantizeLinear with one scale and zero point, `(x − zp) as f32 · scale` per element (the
/// reference's arithmetic), into a new vector; compiled for AVX2 where the host has it.
pub fn dequantize_vec<T: QType>(x: &[T], scale: f32, zp: T) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the host supports AVX2 (checked by avx2()).
        return unsafe { dequantize_vec_avx2(x, scale, zp) };
    }
    dequantize_vec_body(x, scale, zp)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dequantize_vec_avx2<T: QType>(x: &[T], scale: f32, zp: T) -> Vec<f32> {
    dequantize_vec_body(x, scale, zp)
}

#[inline(always)]
fn dequantize_vec_body<T: QType>(x: &[T], scale: f32, zp: T) -> Vec<f32> {
    let z = zp.to_i32();
    x.iter().map(|&e| (e.to_i32() - z) as f32 * scale).collect()
}

/// Whether the AVX2 bodies may run (once per process; `ONNXQ_ISA=scalar` pins the portable
/// ones).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| super::cpu::host().avx2 && super::best().isa != super::Isa::Scalar)
}

/// The portable body of [`quantize_slice`] (also its reference in the tests).
#[inline(always)]
pub fn quantize_slice_body<T: QType>(x: &[f32], scale: f32, zp: T, y: &mut [T]) {
    const TWO23: f32 = 8_388_608.0;
    let (lo, hi) = (T::MIN as f32, T::MAX as f32);
    let z = zp.to_i32() as f32;
    for (o, &v) in y.iter_mut().zip(x) {
        let r = v / scale;
        let c = TWO23.copysign(r);
        let rr = if r.abs() < TWO23 { (r + c) - c } else { r };
        // NaN → 0 (then the zero point); the comparisons below are false for NaN.
        let rr = if rr.is_nan() { 0.0 } else { rr };
        let q = rr + z;
        let q = if q < lo { lo } else { q };
        let q = if q > hi { hi } else { q };
        // SAFETY: `q` is an integral value in [T::MIN, T::MAX] ⊂ i32 (clamped, NaN removed).
        *o = T::from_i32(unsafe { q.to_int_unchecked::<i32>() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::quantize::quantize_one as reference;

    #[test]
    fn rounding_equals_round_ties_even() {
        // Every half-integer and its neighbours up to 2^24, plus specials.
        let mut xs = vec![
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            1e-45,
        ];
        for k in (0..(1 << 24)).step_by(97) {
            let h = k as f32 + 0.5;
            xs.extend([
                h,
                -h,
                f32::from_bits(h.to_bits() + 1),
                f32::from_bits(h.to_bits() - 1),
            ]);
        }
        for x in xs {
            let (a, b) = (round_half_even(x), x.round_ties_even());
            assert!(a == b || (a.is_nan() && b.is_nan()), "{x}: {a} vs {b}");
        }
        assert!(round_half_even(f32::NAN).is_nan());
    }

    #[test]
    fn dequantize_vec_equals_the_definition() {
        let u: Vec<u8> = (0..=255u8).chain(0..17).collect();
        let i: Vec<i8> = (-128..=127i8).chain(0..17).collect();
        for (scale, zu, zi) in [
            (0.0371f32, 131u8, -3i8),
            (1e-30, 0, 127),
            (3.5e30, 255, -128),
        ] {
            let want: Vec<u32> = u
                .iter()
                .map(|&e| ((i32::from(e) - i32::from(zu)) as f32 * scale).to_bits())
                .collect();
            let got: Vec<u32> = dequantize_vec(&u, scale, zu)
                .iter()
                .map(|f| f.to_bits())
                .collect();
            assert_eq!(got, want);
            let want: Vec<u32> = i
                .iter()
                .map(|&e| ((i32::from(e) - i32::from(zi)) as f32 * scale).to_bits())
                .collect();
            let got: Vec<u32> = dequantize_vec(&i, scale, zi)
                .iter()
                .map(|f| f.to_bits())
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn quantize_slice_equals_quantize_one() {
        for n in [1usize, 3, 17, 255, 1000] {
            let x: Vec<f32> = (0..n)
                .map(|i| (i as f32 - n as f32 / 2.0) * 0.37 + if i % 7 == 0 { 0.5 } else { 0.0 })
                .chain([f32::NAN, f32::INFINITY, -1e30])
                .collect();
            for (s, z) in [(0.1f32, 128u8), (1.0, 0), (0.05, 255)] {
                let mut y = vec![0u8; x.len()];
                quantize_slice(&x, s, z, &mut y);
                let want: Vec<u8> = x.iter().map(|&v| reference::<u8>(v, s, z)).collect();
                assert_eq!(y, want, "n={n} s={s} z={z}");
                let mut yi = vec![0i8; x.len()];
                quantize_slice(&x, s, z as i8, &mut yi);
                let want: Vec<i8> = x.iter().map(|&v| reference::<i8>(v, s, z as i8)).collect();
                assert_eq!(yi, want, "i8 n={n} s={s} z={z}");
            }
        }
    }

    /// Exact ties with odd and even zero points (rounding must happen before the zero point is
    /// added), both types, every length up to 40 (the 32-lane steps and the partial groups).
    #[test]
    fn quantize_slice_ties_with_every_zero_point_parity() {
        let x: Vec<f32> = (-300..300).map(|k| k as f32 + 0.5).collect();
        for len in (1..=40).chain([600]) {
            let x = &x[..len.min(x.len())];
            for z in [0u8, 1, 127, 128, 255] {
                let mut y = vec![0u8; x.len()];
                quantize_slice(x, 1.0, z, &mut y);
                let want: Vec<u8> = x.iter().map(|&v| reference::<u8>(v, 1.0, z)).collect();
                assert_eq!(y, want, "u8 len {len} z {z}");
            }
            for z in [-128i8, -1, 0, 1, 127] {
                let mut y = vec![0i8; x.len()];
                quantize_slice(x, 1.0, z, &mut y);
                let want: Vec<i8> = x.iter().map(|&v| reference::<i8>(v, 1.0, z)).collect();
                assert_eq!(y, want, "i8 len {len} z {z}");
            }
        }
    }

    #[test]
    fn quantize_equals_the_reference() {
        let scales = [1.0f32, 0.1, 0.0078125, 0.3333, 7.5e-3, 1e-6, 123.0];
        let mut seed = 1u64;
        for i in 0..400_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let s = scales[i % scales.len()];
            // Values on and near the rounding boundaries of the scale, and random ones.
            let x = match i % 3 {
                0 => (((seed >> 40) as i64 - (1 << 23)) as f32 * 0.5) * s,
                1 => f32::from_bits((seed >> 32) as u32),
                _ => ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 600.0 * s,
            };
            let zu = (seed >> 24) as u8;
            let zi = zu as i8;
            assert_eq!(
                quantize_one::<u8>(x, s, zu),
                reference::<u8>(x, s, zu),
                "{x} {s} {zu}"
            );
            assert_eq!(
                quantize_one::<i8>(x, s, zi),
                reference::<i8>(x, s, zi),
                "{x} {s} {zi}"
            );
        }
    }
}
