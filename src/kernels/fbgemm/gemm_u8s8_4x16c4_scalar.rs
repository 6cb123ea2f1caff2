//! Portable micro-kernel: 4×16 tile over k-quad packed s8 weights, direct A. The fallback on
//! every architecture, and the packing-layout twin of the SIMD kernels.

use super::output::store_row_scalar;
use super::ukernel::{AFormat, BFormat, QGemmTile, QGemmUkernel, WeightRange};
use crate::kernels::{Isa, Numerics};

const MR: usize = 4;
const NR: usize = 16;
const KR: usize = 4;

pub static GEMM_U8S8_4X16C4_SCALAR: QGemmUkernel = QGemmUkernel {
    name: "gemm_u8s8_4x16c4_scalar",
    isa: Isa::Scalar,
    mr: MR as u8,
    nr: NR as u8,
    kr: KR as u8,
    numerics: Numerics::Exact,
    a_format: AFormat::Direct,
    b_format: BFormat::I8Quads,
    weights: WeightRange::Full,
    indirect: false,
    run,
};

/// # Safety
/// See [`QGemmUkernel::run`].
unsafe fn run(t: &QGemmTile<'_>) {
    let groups = t.k.div_ceil(KR);
    // SAFETY: the packed strip holds `groups·NR·KR` bytes (contract).
    let b = unsafe { std::slice::from_raw_parts(t.b.cast::<i8>(), groups * NR * KR) };
    // SAFETY: `col_bias` holds NR values (contract).
    let bias = unsafe { std::slice::from_raw_parts(t.col_bias, NR) };
    let mut rows: [&[u8]; MR] = [&[]; MR];
    for (r, row) in rows.iter_mut().enumerate().take(t.m) {
        // SAFETY: A row `r < m` is valid for `k` bytes at offset `r·lda` (contract).
        *row = unsafe { std::slice::from_raw_parts(t.a.add(r * t.lda), t.k) };
    }
    let mut acc = [[0i32; NR]; MR];
    for row_acc in acc.iter_mut().take(t.m) {
        row_acc.copy_from_slice(bias);
    }
    for (g, bq) in b.chunks_exact(NR * KR).enumerate() {
        for (row, row_acc) in rows.iter().zip(acc.iter_mut()).take(t.m) {
            let mut q = [0i32; KR];
            for (i, qi) in q.iter_mut().enumerate() {
                *qi = row.get(g * KR + i).map_or(0, |&v| i32::from(v));
            }
            for (acc, w) in row_acc.iter_mut().zip(bq.chunks_exact(KR)) {
                // |Σ of 4 products| ≤ 4·255·128: no overflow before the wrapping add.
                let dot: i32 = q.iter().zip(w).map(|(&a, &w)| a * i32::from(w)).sum();
                *acc = acc.wrapping_add(dot);
            }
        }
    }
    for (r, row_acc) in acc.iter_mut().enumerate().take(t.m) {
        if !t.row_sums.is_null() {
            // SAFETY: with row sums present, `row_sums` has `m` values and `b_zp` NR (contract).
            let (rs, zp) = unsafe { (*t.row_sums.add(r), std::slice::from_raw_parts(t.b_zp, NR)) };
            for (acc, &z) in row_acc.iter_mut().zip(zp) {
                *acc = acc.wrapping_sub(rs.wrapping_mul(z));
            }
        }
        // SAFETY: `r < m`, `acc` has NR ≥ n values, output pointers per contract.
        unsafe { store_row_scalar(t, r, row_acc) };
    }
}
