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
    if simd && super::cpu::host().avx2 && super::best().isa != super::Isa::Scalar {
        // SAFETY: the host supports AVX2 (checked just above).
        unsafe { body_avx2(a, a_zp, m, k, wd, n, acc) };
        return;
    }
    let _ = simd;
    body(a, a_zp, m, k, wd, n, acc);
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
            }
        }
    }
}
