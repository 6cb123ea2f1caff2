//! Float micro-kernel, 6 rows × 16 columns on AVX2 + FMA: the C tile lives in twelve ymm
//! registers for the whole `k` loop (the i-k-j loop it replaces loaded and stored a C row per
//! `k`). Per output the arithmetic is unchanged: one `vfmadd` per `k`, in increasing `k`, from
//! 0.0, so results are bit-identical to the portable loop.

use std::arch::x86_64::*;

/// Rows of the tile.
pub(super) const MR: usize = 6;
/// Columns of the tile (two ymm registers).
pub(super) const NR: usize = 16;

/// `c[r·ldc + j] = Σ_p a[r·lda + p] · b[p·ldb + j]` for `r < rows ≤ 6` and `j < cols ≤ 16`,
/// each output an FMA chain over `p = 0..k` starting from 0.0. `b` must hold 16 readable
/// columns per row (a packed panel is zero-padded); only `cols` are written to `c`.
///
/// # Panics
/// If `rows`/`cols` exceed the tile or a slice is shorter than its shape.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) fn tile(
    rows: usize,
    cols: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    assert!((1..=MR).contains(&rows) && (1..=NR).contains(&cols) && k > 0);
    assert!(
        a.len() >= (rows - 1) * lda + k
            && b.len() >= (k - 1) * ldb + NR
            && c.len() >= (rows - 1) * ldc + cols,
        "sgemm tile: short slice"
    );
    match rows {
        1 => tile_rows::<1>(cols, k, a, lda, b, ldb, c, ldc),
        2 => tile_rows::<2>(cols, k, a, lda, b, ldb, c, ldc),
        3 => tile_rows::<3>(cols, k, a, lda, b, ldb, c, ldc),
        4 => tile_rows::<4>(cols, k, a, lda, b, ldb, c, ldc),
        5 => tile_rows::<5>(cols, k, a, lda, b, ldb, c, ldc),
        _ => tile_rows::<6>(cols, k, a, lda, b, ldb, c, ldc),
    }
}

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
#[inline]
fn tile_rows<const R: usize>(
    cols: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    for p in 0..k {
        // SAFETY: `tile` checked b.len() ≥ (k-1)·ldb + 16 and a.len() ≥ ·lda + k.
        unsafe {
            let b0 = _mm256_loadu_ps(bp.add(p * ldb));
            let b1 = _mm256_loadu_ps(bp.add(p * ldb + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*ap.add(r * lda + p));
                acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let row = &mut c[r * ldc..r * ldc + cols];
        if cols == NR {
            // SAFETY: the row holds 16 floats (cols == 16).
            unsafe {
                _mm256_storeu_ps(row.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[1]);
            }
        } else {
            let mut t = [0f32; NR];
            // SAFETY: `t` holds 16 floats.
            unsafe {
                _mm256_storeu_ps(t.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(t.as_mut_ptr().add(8), acc[1]);
            }
            row.copy_from_slice(&t[..cols]);
        }
    }
}
