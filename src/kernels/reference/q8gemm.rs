//! Reference u8 × u8 GEMM of the qnnpack-style family (both zero points, per-tensor or
//! per-channel weight zero points and scales) with the fixed-point output stage of
//! [`super::requant_fixedpoint`].

use super::requant_fixedpoint::{requantize_u8, Q8Output, Requant};

/// Weights of one qnnpack-style GEMM/conv: `n` output channels × `k` values each (row-major
/// `[N][K]`, i.e. ONNX conv weights `[OC][KH][KW][IC]` once transposed to NHWC order).
#[derive(Clone, Copy, Debug)]
pub struct Q8Weights<'a> {
    pub data: &'a [u8],
    pub n: usize,
    pub k: usize,
    /// 1 (per tensor) or `n` (per channel) zero points.
    pub zp: &'a [u8],
    /// Optional int32 bias (scale `a_scale·w_scale[n]`), `n` values.
    pub bias: Option<&'a [i32]>,
    /// 1 or `n` output scales `a_scale·w_scale[n]/y_scale`.
    pub requant: &'a [Requant],
}

impl Q8Weights<'_> {
    /// Checks the slice lengths.
    ///
    /// # Panics
    /// If a parameter array has neither 1 nor `n` values, or `data` is shorter than `n·k`.
    pub fn validate(&self) {
        assert!(self.data.len() >= self.n * self.k, "weights: n·k values");
        assert!(
            self.zp.len() == 1 || self.zp.len() == self.n,
            "weight zero point: 1 or n values"
        );
        assert!(
            self.requant.len() == 1 || self.requant.len() == self.n,
            "requant: 1 or n values"
        );
        if let Some(b) = self.bias {
            assert_eq!(b.len(), self.n, "bias: n values");
        }
    }

    pub fn zp_at(&self, j: usize) -> u8 {
        self.zp[if self.zp.len() == 1 { 0 } else { j }]
    }

    pub fn requant_at(&self, j: usize) -> Requant {
        self.requant[if self.requant.len() == 1 { 0 } else { j }]
    }

    pub fn bias_at(&self, j: usize) -> i32 {
        self.bias.map_or(0, |b| b[j])
    }
}

/// `acc[m,n] = bias[n] + Σ_k (A[m,k] − a_zp)(W[n,k] − w_zp[n])` (wrapping i32).
pub fn q8gemm_acc(a: &[u8], lda: usize, a_zp: u8, m: usize, w: &Q8Weights<'_>) -> Vec<i32> {
    w.validate();
    let mut acc = vec![0i32; m * w.n];
    for i in 0..m {
        for j in 0..w.n {
            let zw = i32::from(w.zp_at(j));
            let mut s = w.bias_at(j);
            for kk in 0..w.k {
                let av = i32::from(a[i * lda + kk]) - i32::from(a_zp);
                let wv = i32::from(w.data[j * w.k + kk]) - zw;
                s = s.wrapping_add(av * wv);
            }
            acc[i * w.n + j] = s;
        }
    }
    acc
}

/// `C[m,n] = requantize_u8(acc[m,n], requant[n], out)`, C row stride `ldc ≥ n`.
#[allow(clippy::too_many_arguments)]
pub fn q8gemm(
    a: &[u8],
    lda: usize,
    a_zp: u8,
    m: usize,
    w: &Q8Weights<'_>,
    out: &Q8Output,
    c: &mut [u8],
    ldc: usize,
) {
    let acc = q8gemm_acc(a, lda, a_zp, m, w);
    for i in 0..m {
        for j in 0..w.n {
            c[i * ldc + j] = requantize_u8(acc[i * w.n + j], w.requant_at(j), out);
        }
    }
}
