//! Unpacked integer GEMM for tiny products (attention scores over short sequences, where
//! packing B per call costs more than the product): `acc[i][j] = Σ_p (a[i][p] − a_zp)·wd[p][j]`
//! with `wd` the zero-point-adjusted weights as i32.
//!
//! Exact in i32 for any K up to 2^15 (|terms| ≤ 255·255). One portable body; on AVX2 hosts the
//! same body is compiled with AVX2 (`vpmulld` on 8 lanes; baseline SSE2 has no 32-bit
//! multiply), selected once per process. Integer arithmetic: both give the same values.

#[inline(always)]
fn body(a: &[u8], a_zp: u8, m: usize, k: usize, wd: &[i32], n: usize, acc: &mut [i32]) {
    let z = i32::from(a_zp);
    for (i, row) in acc[..m * n].chunks_exact_mut(n).enumerate() {
        row.fill(0);
        for (p, &av) in a[i * k..(i + 1) * k].iter().enumerate() {
            let av = i32::from(av) - z;
            for (r, &w) in row.iter_mut().zip(&wd[p * n..(p + 1) * n]) {
                *r += av * w;
            }
        }
    }
}

/// The AVX2 bodies run when allowed (`simd`), the host has AVX2 and no scalar ISA is pinned.
#[cfg(target_arch = "x86_64")]
fn use_avx2(simd: bool) -> bool {
    simd && super::cpu::host().avx2 && super::best().isa != super::Isa::Scalar
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn body_avx2(a: &[u8], a_zp: u8, m: usize, k: usize, wd: &[i32], n: usize, acc: &mut [i32]) {
    body(a, a_zp, m, k, wd, n, acc);
}

/// `acc` (`m×n`, overwritten) `= (a − a_zp)·wd` for `a: m×k` u8 and `wd: k×n` i32, dense
/// row-major. `simd: false` forces the portable body (tests).
///
/// # Panics
/// If a slice is shorter than its shape, or `k ≥ 2^15`.
#[allow(clippy::too_many_arguments)]
pub fn small_qgemm_acc(
    a: &[u8],
    a_zp: u8,
    m: usize,
    k: usize,
    wd: &[i32],
    n: usize,
    acc: &mut [i32],
    simd: bool,
) {
    assert!(a.len() >= m * k && wd.len() >= k * n && acc.len() >= m * n && k < 1 << 15);
    #[cfg(target_arch = "x86_64")]
    if use_avx2(simd) {
        // SAFETY: the host supports AVX2 (checked just above).
        unsafe { body_avx2(a, a_zp, m, k, wd, n, acc) };
        return;
    }
    let _ = simd;
    body(a, a_zp, m, k, wd, n, acc);
}

/// Requantization of [`small_qgemm_u8`]'s output, per column: `q = clamp(round_half_even(
/// f32(acc)·mult[j]) + zp, lo, hi)` as [`super::reference::requantize`] computes it.
pub struct RequantU8<'a> {
    /// One multiplier per output column (`n` values).
    pub mult: &'a [f32],
    pub zp: i32,
    /// Output range, within `[0, 255]`.
    pub lo: i32,
    pub hi: i32,
}

/// One row's columns `from..n`, as the reference computes them.
#[allow(clippy::too_many_arguments)]
fn row_portable(
    a: &[u8],
    a_zp: u8,
    k: usize,
    wd: &[i32],
    n: usize,
    rq: &RequantU8<'_>,
    from: usize,
    out: &mut [u8],
) {
    let z = i32::from(a_zp);
    for j in from..n {
        let acc: i32 = (0..k).map(|p| (i32::from(a[p]) - z) * wd[p * n + j]).sum();
        let q = super::reference::requantize(acc, rq.mult[j], rq.zp, rq.lo, rq.hi);
        out[j] = q as u8;
    }
}

/// `out` (`m×n` u8) `=` requantized `(a − a_zp)·wd` (see [`small_qgemm_acc`]), without an
/// accumulator buffer: the AVX2 body keeps 8 columns of a row in a register, then applies
/// the output stage (`vcvtps2dq` rounds half to even under the default MXCSR, as
/// `round_ties_even` does). `simd: false` forces the portable body (tests).
///
/// # Panics
/// If a slice is shorter than its shape, `mult` does not hold `n` values, the output range
/// is not within `[0, 255]`, or `k ≥ 2^15`.
#[allow(clippy::too_many_arguments)]
pub fn small_qgemm_u8(
    a: &[u8],
    a_zp: u8,
    m: usize,
    k: usize,
    wd: &[i32],
    n: usize,
    rq: &RequantU8<'_>,
    out: &mut [u8],
    simd: bool,
) {
    assert!(a.len() >= m * k && wd.len() >= k * n && out.len() >= m * n && k < 1 << 15);
    assert!(rq.mult.len() == n && 0 <= rq.lo && rq.lo <= rq.hi && rq.hi <= 255);
    #[cfg(target_arch = "x86_64")]
    if use_avx2(simd) {
        // SAFETY: the host supports AVX2 (checked just above); the shapes were checked.
        unsafe { u8_avx2(a, a_zp, m, k, wd, n, rq, out) };
        return;
    }
    let _ = simd;
    for i in 0..m {
        let o = &mut out[i * n..(i + 1) * n];
        row_portable(&a[i * k..(i + 1) * k], a_zp, k, wd, n, rq, 0, o);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn u8_avx2(
    a: &[u8],
    a_zp: u8,
    m: usize,
    k: usize,
    wd: &[i32],
    n: usize,
    rq: &RequantU8<'_>,
    out: &mut [u8],
) {
    use std::arch::x86_64::*;
    let z = i32::from(a_zp);
    let flo = _mm256_set1_ps((rq.lo - rq.zp) as f32);
    let fhi = _mm256_set1_ps((rq.hi - rq.zp) as f32);
    let vzp = _mm256_set1_epi32(rq.zp);
    for i in 0..m {
        let arow = &a[i * k..(i + 1) * k];
        let orow = &mut out[i * n..(i + 1) * n];
        let mut j = 0;
        while j + 8 <= n {
            let mut acc = _mm256_setzero_si256();
            for (p, &av) in arow.iter().enumerate() {
                let w = &wd[p * n + j..p * n + j + 8];
                // SAFETY: `w` holds 8 i32 (sliced just above); unaligned load.
                let wv = unsafe { _mm256_loadu_si256(w.as_ptr().cast()) };
                let av = _mm256_set1_epi32(i32::from(av) - z);
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(av, wv));
            }
            let mult = &rq.mult[j..j + 8];
            // SAFETY: `mult` holds 8 f32 (sliced just above); unaligned load.
            let mv = unsafe { _mm256_loadu_ps(mult.as_ptr()) };
            let x = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), mv);
            // max then min, as the reference's `x.max(lo).min(hi)` (no NaN: finite inputs).
            let x = _mm256_min_ps(_mm256_max_ps(x, flo), fhi);
            let q = _mm256_add_epi32(_mm256_cvtps_epi32(x), vzp);
            // Within [0, 255]: the saturating packs keep the values; each 128-bit lane
            // ends with its 4 bytes first.
            let p16 = _mm256_packus_epi32(q, q);
            let p8 = _mm256_packus_epi16(p16, p16);
            let lo4 = _mm_cvtsi128_si32(_mm256_castsi256_si128(p8)) as u32;
            let hi4 = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(p8)) as u32;
            let bytes = (u64::from(hi4) << 32 | u64::from(lo4)).to_le_bytes();
            orow[j..j + 8].copy_from_slice(&bytes);
            j += 8;
        }
        row_portable(arow, a_zp, k, wd, n, rq, j, orow);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_the_naive_sum() {
        let mut seed = 3u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 17, 3),
            (17, 3, 255),
            (16, 255, 17),
            (1, 64, 8),
            (16, 8, 16),
            (16, 16, 8),
            (5, 9, 24),
        ] {
            for a_zp in [0u8, 1, 127, 128, 255] {
                let a: Vec<u8> = (0..m * k)
                    .map(|i| if i % 5 == 0 { 255 } else { rnd() as u8 })
                    .collect();
                let wd: Vec<i32> = (0..k * n)
                    .map(|i| {
                        if i % 7 == 0 {
                            -255
                        } else {
                            (rnd() % 511) as i32 - 255
                        }
                    })
                    .collect();
                let mut want = vec![0i32; m * n];
                for i in 0..m {
                    for j in 0..n {
                        want[i * n + j] = (0..k)
                            .map(|p| (i32::from(a[i * k + p]) - i32::from(a_zp)) * wd[p * n + j])
                            .sum();
                    }
                }
                for simd in [false, true] {
                    let mut got = vec![7i32; m * n];
                    small_qgemm_acc(&a, a_zp, m, k, &wd, n, &mut got, simd);
                    assert_eq!(got, want, "{m}×{k}×{n} zp {a_zp} simd {simd}");
                }
                // The fused output stage: the reference requantization of those sums, with
                // per-column multipliers spanning clamped, exact-tie and in-range values.
                let mult: Vec<f32> = (0..n)
                    .map(|j| [1.0, 0.5, 1e-3, 3e-5, 2.0 / 3.0][j % 5] * (1 + rnd() % 4) as f32)
                    .collect();
                for (zp, lo, hi) in [(0, 0, 255), (128, 0, 255), (255, 0, 255), (3, 3, 200)] {
                    let rq = RequantU8 {
                        mult: &mult,
                        zp,
                        lo,
                        hi,
                    };
                    let want_q: Vec<u8> = (0..m * n)
                        .map(|e| {
                            let j = e % n;
                            crate::kernels::reference::requantize(want[e], mult[j], zp, lo, hi)
                                as u8
                        })
                        .collect();
                    for simd in [false, true] {
                        let mut got = vec![9u8; m * n];
                        small_qgemm_u8(&a, a_zp, m, k, &wd, n, &rq, &mut got, simd);
                        assert_eq!(got, want_q, "{m}×{k}×{n} zp {a_zp}/{zp} simd {simd}");
                    }
                }
            }
        }
    }
}
