//! AVX2 average-pool micro-kernel (any window, via the depthwise row indirection): 16 channels
//! per step, u8 taps summed in u16 lanes (`vpmovzxbw` + `vpaddw`, up to 256 taps per partial
//! sum, so no overflow), widened to i32, minus `taps·x_zp`, then the per-pixel fixed-point
//! scale (the valid-tap count is already in it).

use core::arch::x86_64::*;

use super::avx2::{out16, pack16, rq8_apply, rq8_splat, store_n};
use super::ukernel::{Q8PoolRow, Q8PoolUkernel};
use crate::kernels::{Isa, Numerics};

pub static Q8AVGPOOL_AVX2: Q8PoolUkernel = Q8PoolUkernel {
    name: "q8avgpool_avx2",
    isa: Isa::Avx2,
    target: "avx2",
    numerics: Numerics::Exact,
    run,
};

/// Σ over taps of 16 channels at offset `c0` (`rem` < 16 reads through a stack copy).
#[inline(always)]
unsafe fn sum16(taps: *const *const u8, n: usize, c0: usize, rem: usize) -> [__m256i; 2] {
    // SAFETY (caller): `n` tap pointers, each readable at `c0..c0 + min(rem, 16)`.
    unsafe {
        let mut s0 = _mm256_setzero_si256();
        let mut s1 = _mm256_setzero_si256();
        let mut t0 = 0;
        while t0 < n {
            let t1 = (t0 + 256).min(n);
            let mut w = _mm256_setzero_si256();
            for t in t0..t1 {
                let p = (*taps.add(t)).add(c0);
                let x = if rem >= 16 {
                    _mm_loadu_si128(p.cast())
                } else {
                    let mut b = [0u8; 16];
                    core::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), rem);
                    _mm_loadu_si128(b.as_ptr().cast())
                };
                w = _mm256_add_epi16(w, _mm256_cvtepu8_epi16(x));
            }
            s0 = _mm256_add_epi32(s0, _mm256_cvtepu16_epi32(_mm256_castsi256_si128(w)));
            s1 = _mm256_add_epi32(s1, _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(w)));
            t0 = t1;
        }
        [s0, s1]
    }
}

#[target_feature(enable = "avx2")]
unsafe fn row(r: &Q8PoolRow<'_>) {
    // SAFETY: the `Q8PoolUkernel::run` contract.
    unsafe {
        let o = out16(&r.out);
        let bias = _mm256_set1_epi32(-(r.taps as i32) * i32::from(r.x_zp));
        for px in 0..r.width {
            let taps = r.a.add(px * r.a_step);
            let rq = rq8_splat(*r.requant.add(px), r.out.rounding);
            let dst = r.c.add(px * r.c_stride);
            for c0 in (0..r.channels).step_by(16) {
                let rem = r.channels - c0;
                let [s0, s1] = sum16(taps, r.taps, c0, rem);
                let q0 = rq8_apply(_mm256_add_epi32(s0, bias), &rq);
                let q1 = rq8_apply(_mm256_add_epi32(s1, bias), &rq);
                store_n(dst.add(c0), pack16(q0, q1, &o), rem.min(16));
            }
        }
    }
}

/// # Safety
/// See [`Q8PoolUkernel::run`].
unsafe fn run(r: &Q8PoolRow<'_>) {
    // SAFETY: the caller guarantees AVX2 and valid pointers.
    unsafe { row(r) }
}
