//! Scalar reference of the bin indices (see the module docs).

use super::{HistcBins, HistcUkernel};
use crate::kernels::Isa;

pub static HISTC_SCALAR: HistcUkernel = HistcUkernel {
    name: "histc_scalar",
    isa: Isa::Scalar,
    run,
};

/// The index of one value. torch truncates with `as int64`, clamps to
/// `bins - 1`, then to 0; done here in float: NaN (inf/inf on a range wider
/// than f32::MAX) and negatives give 0, +inf and anything ≥ bins - 1 give
/// bins - 1, and truncating a value in [0, bins - 1] equals the integer clamp.
#[inline(always)]
pub fn bin_of(e: f32, b: &HistcBins) -> u32 {
    let last = (b.bins - 1) as f32;
    let q = (e - b.left) * b.bins as f32 / b.width();
    let q = if q >= 0.0 { q } else { 0.0 };
    let q = if q < last { q } else { last };
    if e >= b.left && e <= b.right {
        q as u32
    } else {
        b.bins
    }
}

unsafe fn run(x: &[f32], b: &HistcBins, out: &mut [u32]) {
    for (o, &e) in out.iter_mut().zip(x) {
        *o = bin_of(e, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bin_of` equals torch's integer formulation: `(e - left) * bins /
    /// width` truncated `as int64`, then clamped to `bins - 1` and to 0.
    #[test]
    fn float_clamp_equals_torch_integer_clamp() {
        let torch = |e: f32, b: &HistcBins| -> u32 {
            if !(e >= b.left && e <= b.right) {
                return b.bins;
            }
            let mut pos = ((e - b.left) * b.bins as f32 / b.width()) as i64;
            if pos >= b.bins as i64 {
                pos = b.bins as i64 - 1;
            }
            pos.max(0) as u32
        };
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for &(left, right) in &[
            (-1.0f32, 1.0f32),
            (f32::MIN, f32::MAX),
            (0.5, 0.5),
            (-3.0, 1e30),
        ] {
            for bins in [1u32, 2, 17, 2048, 1 << 24] {
                let b = HistcBins { left, right, bins };
                for _ in 0..2000 {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    let e = if s.is_multiple_of(3) {
                        f32::from_bits((s >> 32) as u32)
                    } else {
                        let t = (s >> 40) as f32 / (1u64 << 24) as f32;
                        left + (right - left) * t
                    };
                    assert_eq!(
                        bin_of(e, &b),
                        torch(e, &b),
                        "{e} in [{left}, {right}] / {bins}"
                    );
                }
                for e in [left, right, f32::NAN, 0.0] {
                    assert_eq!(
                        bin_of(e, &b),
                        torch(e, &b),
                        "{e} in [{left}, {right}] / {bins}"
                    );
                }
            }
        }
    }
}
