//! Reference u8 × s8 → i32 GEMM with zero points (ONNX `MatMulInteger` / the integer part of
//! `QLinearMatMul` and `QLinearConv`).

/// One GEMM problem: `C[m,n] = Σ_k (A[m,k] − a_zp)·(B[k,n] − b_zp[n]) + bias[n]`.
///
/// All arithmetic is `i32` and wrapping (two's complement mod 2³²), like the SIMD kernels, so
/// the reference and the zero-point-expanded kernels agree even if a pathological K overflows.
/// In practice the sum fits: |(a−za)(w−zw)| ≤ 255·255, so K < 33 025 never overflows.
#[derive(Clone, Copy, Debug)]
pub struct QGemmProblem<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Row-major `M×K`, row stride `lda ≥ k`.
    pub a: &'a [u8],
    pub lda: usize,
    pub a_zp: u8,
    /// Row-major `K×N` with row stride `ldb ≥ n`, or, when `trans_b`, row-major `N×K` with row
    /// stride `ldb ≥ k` (ONNX `Gemm` `transB=1`, and conv weights `[OC, IC·KH·KW]`).
    pub b: &'a [i8],
    pub ldb: usize,
    pub trans_b: bool,
    /// Weight zero point: one value (per tensor) or `n` values (per output channel).
    pub b_zp: &'a [i8],
    /// Optional int32 bias, `n` values (QLinearConv bias, scale `a_scale·b_scale[n]`).
    pub bias: Option<&'a [i32]>,
}

impl QGemmProblem<'_> {
    /// `B[k, n]` as stored.
    pub fn b_at(&self, k: usize, n: usize) -> i8 {
        if self.trans_b {
            self.b[n * self.ldb + k]
        } else {
            self.b[k * self.ldb + n]
        }
    }

    /// Zero point of column `n`.
    pub fn b_zp_at(&self, n: usize) -> i8 {
        if self.b_zp.len() == 1 {
            self.b_zp[0]
        } else {
            self.b_zp[n]
        }
    }
}

/// Computes `C = (A − a_zp)(B − b_zp) + bias` into `c` (row stride `ldc ≥ n`).
///
/// # Panics
/// If a slice is too short for its shape and stride, or `b_zp` has neither 1 nor `n` values.
pub fn qgemm_u8s8(p: &QGemmProblem<'_>, c: &mut [i32], ldc: usize) {
    assert!(
        p.b_zp.len() == 1 || p.b_zp.len() == p.n,
        "b_zp: 1 or n values"
    );
    if let Some(bias) = p.bias {
        assert_eq!(bias.len(), p.n, "bias: n values");
    }
    for i in 0..p.m {
        for j in 0..p.n {
            let zw = i32::from(p.b_zp_at(j));
            let mut acc = p.bias.map_or(0, |b| b[j]);
            for kk in 0..p.k {
                let a = i32::from(p.a[i * p.lda + kk]) - i32::from(p.a_zp);
                let w = i32::from(p.b_at(kk, j)) - zw;
                acc = acc.wrapping_add(a * w);
            }
            c[i * ldc + j] = acc;
        }
    }
}
