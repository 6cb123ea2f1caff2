//! AVX-512 VNNI (EVEX, ymm) 6×16 c4 GEMM/conv micro-kernel: `q8gemm_6x16c4_avxvnni`'s VNNI
//! flip body with the EVEX `vpdpbusd ymm` (AVX512-VNNI + AVX512-VL), for AVX-512 VNNI hosts
//! without the VEX AVX-VNNI encoding (Cascade Lake, Ice Lake). Exact (see that file).
//! Not runnable on this project's AVX2-only CI machine: compiled, and tested by the shared
//! tester wherever the AVX-512 VNNI tier is available.

use core::arch::x86_64::*;

use super::q8gemm_6x16c4_avxvnni::{body, Dpbusd};
use super::ukernel::{Q8GemmLayout, Q8GemmTile, Q8GemmUkernel};
use crate::kernels::{Isa, Numerics};

pub static Q8GEMM_6X16C4_AVX512VNNI: Q8GemmUkernel = Q8GemmUkernel {
    name: "q8gemm_6x16c4_avx512vnni",
    isa: Isa::Avx512Vnni,
    target: "avx512vnni",
    mr: 6,
    nr: 16,
    kr: 4,
    kc_align: 4,
    layout: Q8GemmLayout::S8Quads,
    numerics: Numerics::Exact,
    run,
};

struct Evex;

impl Dpbusd for Evex {
    #[inline(always)]
    unsafe fn dot(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, a, b)
    }
}

#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
unsafe fn tile(t: &Q8GemmTile<'_>) {
    // SAFETY: forwarded contract; AVX2, AVX512-VL and AVX512-VNNI are enabled here.
    unsafe { body::<Evex>(t) }
}

/// # Safety
/// See [`Q8GemmUkernel::run`].
unsafe fn run(t: &Q8GemmTile<'_>) {
    // SAFETY: the caller guarantees AVX512-VNNI + VL and valid pointers.
    unsafe { tile(t) }
}
