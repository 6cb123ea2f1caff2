//! AVX2 elementwise Add (QNNPACK q8vadd semantics): 8 lanes of i32,
//! `(a − a_zp)·a_mult + (b − b_zp)·b_mult` with `vpmulld` (|·| < 2³¹, exact), then the
//! magnitude rounding shift (`vpsrld`, one shift count for all lanes), sign restore, zero
//! point and clamp.

use core::arch::x86_64::*;

use super::ukernel::{Q8AddCall, Q8AddUkernel};
use crate::kernels::reference::q8vadd::q8add_one;
use crate::kernels::reference::requant_fixedpoint::Rounding;
use crate::kernels::{Isa, Numerics};

pub static Q8VADD_AVX2: Q8AddUkernel = Q8AddUkernel {
    name: "q8vadd_avx2",
    isa: Isa::Avx2,
    target: "avx2",
    numerics: Numerics::Exact,
    run,
};

#[target_feature(enable = "avx2")]
unsafe fn body(c: &Q8AddCall<'_>) {
    let p = c.params;
    let za = _mm256_set1_epi32(i32::from(p.a_zp));
    let zb = _mm256_set1_epi32(i32::from(p.b_zp));
    let ma = _mm256_set1_epi32(p.a_mult);
    let mb = _mm256_set1_epi32(p.b_mult);
    let half = _mm256_set1_epi32(1 << (p.shift - 1));
    let low = _mm256_set1_epi32(((1u64 << p.shift) - 1) as u32 as i32);
    let cnt = _mm_cvtsi32_si128(p.shift as i32);
    let even = _mm256_set1_epi32(if p.out.rounding == Rounding::HalfEven {
        -1
    } else {
        0
    });
    let one = _mm256_set1_epi32(1);
    let zy = _mm256_set1_epi16(i16::from(p.out.zp));
    let qmin = _mm_set1_epi8(p.out.qmin as i8);
    let qmax = _mm_set1_epi8(p.out.qmax as i8);
    let q8 = |a: __m128i, b: __m128i| -> __m256i {
        let a = _mm256_sub_epi32(_mm256_cvtepu8_epi32(a), za);
        let b = _mm256_sub_epi32(_mm256_cvtepu8_epi32(b), zb);
        let acc = _mm256_add_epi32(_mm256_mullo_epi32(a, ma), _mm256_mullo_epi32(b, mb));
        let sign = _mm256_srai_epi32::<31>(acc);
        let mag = _mm256_abs_epi32(acc);
        let r = _mm256_srl_epi32(_mm256_add_epi32(mag, half), cnt);
        let tie = _mm256_and_si256(_mm256_cmpeq_epi32(_mm256_and_si256(mag, low), half), even);
        let r = _mm256_sub_epi32(r, _mm256_and_si256(tie, _mm256_and_si256(r, one)));
        _mm256_sub_epi32(_mm256_xor_si256(r, sign), sign)
    };
    let n16 = c.n / 16 * 16;
    let mut i = 0;
    while i < n16 {
        // SAFETY: i + 16 ≤ n, so the 16-byte loads and the store are inside the buffers.
        unsafe {
            let a = _mm_loadu_si128(c.a.add(i).cast());
            let b = _mm_loadu_si128(c.b.add(i).cast());
            let r0 = q8(a, b);
            let r1 = q8(_mm_srli_si128::<8>(a), _mm_srli_si128::<8>(b));
            let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(r0, r1));
            let w = _mm256_adds_epi16(w, zy);
            let v = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
            let v = _mm_min_epu8(_mm_max_epu8(v, qmin), qmax);
            _mm_storeu_si128(c.y.add(i).cast(), v);
        }
        i += 16;
    }
    for j in n16..c.n {
        // SAFETY: j < n.
        unsafe { *c.y.add(j) = q8add_one(*c.a.add(j), *c.b.add(j), p) };
    }
}

/// # Safety
/// See [`Q8AddUkernel::run`].
unsafe fn run(c: &Q8AddCall<'_>) {
    // SAFETY: the caller guarantees AVX2 and `n`-byte buffers.
    unsafe { body(c) }
}
