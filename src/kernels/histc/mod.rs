//! Histogram bin indices for the calibration observers (`torch.histc`'s
//! binning), the one per-element hot loop of histogram calibration.
//!
//! A value `e` in `[left, right]` goes to bin `(e - left) * bins / width`
//! (float32, in that order, as torch computes it), truncated and clamped to
//! `[0, bins - 1]`; anything outside (and NaN) goes to the extra slot `bins`,
//! which callers discard. Every ISA computes the same float32 operations in
//! the same order, so the indices are bit-identical to the scalar reference.

#[cfg(target_arch = "x86_64")]
pub mod histc_avx2;
pub mod histc_scalar;

use crate::kernels::Isa;

/// The binning of one `histc` call.
#[derive(Clone, Copy, Debug)]
pub struct HistcBins {
    pub left: f32,
    pub right: f32,
    /// Number of bins (at most 2^24, so that `bins as f32` is exact).
    pub bins: u32,
}

impl HistcBins {
    pub fn width(&self) -> f32 {
        self.right - self.left
    }
}

/// Bin index kernel: writes `out[i]` for `x[i]` (`out.len() == x.len()`).
pub struct HistcUkernel {
    pub name: &'static str,
    pub isa: Isa,
    /// Safe to call only where [`Isa`] is available (the kernel sets of
    /// [`crate::kernels::available`] guarantee it).
    pub run: unsafe fn(x: &[f32], bins: &HistcBins, out: &mut [u32]),
}

impl std::fmt::Debug for HistcUkernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl HistcUkernel {
    /// Bin indices of `x` into `out`.
    ///
    /// # Panics
    /// If `out.len() != x.len()` or `bins.bins` is 0 or above 2^24.
    pub fn indices(&self, x: &[f32], bins: &HistcBins, out: &mut [u32]) {
        assert_eq!(x.len(), out.len(), "histc: one index per value");
        assert!(
            bins.bins > 0 && bins.bins <= 1 << 24,
            "histc: 1 to 2^24 bins"
        );
        // SAFETY: kernels are only reachable through kernel sets this host supports.
        unsafe { (self.run)(x, bins, out) }
    }
}

#[cfg(test)]
mod tests {
    use super::histc_scalar::HISTC_SCALAR;
    use super::HistcBins;
    use crate::kernels;

    /// Every available ISA's indices equal the scalar reference, on awkward
    /// lengths, ranges (degenerate, huge, negative) and special values.
    #[test]
    fn matches_scalar_reference() {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let specials = [
            0.0f32,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-45,
        ];
        let ranges = [
            (-1.0f32, 1.0f32),
            (0.0, 1e-30),
            (f32::MIN, f32::MAX),
            (f32::MIN, 3.0),
            (-7.25, -7.25),
            (2.0, 2.0000002),
        ];
        for k in kernels::available() {
            let ker = k.histc;
            for &(left, right) in &ranges {
                for bins in [1u32, 3, 17, 255, 2048] {
                    for n in [0usize, 1, 3, 7, 8, 9, 17, 255, 1000] {
                        let x: Vec<f32> = (0..n)
                            .map(|i| {
                                let r = next();
                                if r.is_multiple_of(13) {
                                    specials[(r >> 8) as usize % specials.len()]
                                } else if r.is_multiple_of(5) {
                                    f32::from_bits((r >> 16) as u32)
                                } else {
                                    let t = (r >> 40) as f32 / (1u64 << 24) as f32;
                                    left + (right - left) * (t * 1.2 - 0.1) + i as f32 * 0.0
                                }
                            })
                            .collect();
                        let b = HistcBins { left, right, bins };
                        let mut want = vec![0u32; n];
                        let mut got = vec![7u32; n];
                        HISTC_SCALAR.indices(&x, &b, &mut want);
                        ker.indices(&x, &b, &mut got);
                        assert_eq!(
                            got, want,
                            "{} bins={bins} n={n} [{left}, {right}]",
                            ker.name
                        );
                        assert!(want.iter().all(|&i| i <= bins));
                    }
                }
            }
        }
    }
}
