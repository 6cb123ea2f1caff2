//! AVX2 6×16 c4 GEMM/conv micro-kernel: the VNNI flip body of `q8gemm_6x16c4_avxvnni`
//! ([`Q8GemmLayout::S8Quads`]: u8 weights stored as s8 `w − 128`, row-sum term for
//! `w_zp ≠ 128`) with `vpdpbusd` emulated exactly on AVX2: each quad's bytes split into the
//! even and odd byte of every 16-bit lane (`a` zero-extended, `b` sign-extended), two
//! `vpmaddwd` give `a0·b0 + a2·b2` and `a1·b1 + a3·b3` per i32 lane (|each| ≤ 2·255·128),
//! added to the accumulator. Slower than `q8gemm_6x16c2_avx2` (an alternate, not preferred);
//! it exists so that the VNNI flip packing, row sums, k tails and padding, shared by the
//! AVX-VNNI and AVX-512 VNNI kernels, are tested bit-exact on AVX2-only hosts too.

use core::arch::x86_64::*;

use super::q8gemm_6x16c4_avxvnni::{body, Dpbusd};
use super::ukernel::{Q8GemmLayout, Q8GemmTile, Q8GemmUkernel};
use crate::kernels::{Isa, Numerics};

pub static Q8GEMM_6X16C4_AVX2: Q8GemmUkernel = Q8GemmUkernel {
    name: "q8gemm_6x16c4_avx2",
    isa: Isa::Avx2,
    target: "avx2",
    mr: 6,
    nr: 16,
    kr: 4,
    kc_align: 4,
    layout: Q8GemmLayout::S8Quads,
    numerics: Numerics::Exact,
    run,
};

/// `vpdpbusd` (u8 × s8 quads into i32, no saturation) from AVX2 instructions.
struct Emulated;

impl Dpbusd for Emulated {
    #[inline(always)]
    unsafe fn dot(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        let a_even = _mm256_and_si256(a, _mm256_set1_epi16(0x00FF));
        let a_odd = _mm256_srli_epi16::<8>(a);
        let b_even = _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(b));
        let b_odd = _mm256_srai_epi16::<8>(b);
        let s = _mm256_add_epi32(
            _mm256_madd_epi16(a_even, b_even),
            _mm256_madd_epi16(a_odd, b_odd),
        );
        _mm256_add_epi32(acc, s)
    }
}

#[target_feature(enable = "avx2")]
unsafe fn tile(t: &Q8GemmTile<'_>) {
    // SAFETY: forwarded contract; AVX2 is enabled here.
    unsafe { body::<Emulated>(t) }
}

/// # Safety
/// See [`Q8GemmUkernel::run`].
unsafe fn run(t: &Q8GemmTile<'_>) {
    // SAFETY: the caller guarantees AVX2 and valid pointers.
    unsafe { tile(t) }
}
