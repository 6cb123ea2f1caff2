//! AVX-VNNI 6×16 k-quad micro-kernel: the `gemm_u8s8_6x16c4_avx2` body with the dot step
//! replaced by one VEX `vpdpbusd` (u8·s8 quads summed straight into i32: never saturates).
//! 12 ymm accumulators + 2 B + 1 A broadcast.

use core::arch::x86_64::*;

use super::ukernel::{AFormat, BFormat, QGemmTile, QGemmUkernel, WeightRange};
use super::ymm::{self, DotQuad};
use crate::kernels::{Isa, Numerics};

const MR: usize = 6;

pub static GEMM_U8S8_6X16C4_AVXVNNI: QGemmUkernel = QGemmUkernel {
    name: "gemm_u8s8_6x16c4_avxvnni",
    isa: Isa::AvxVnni,
    mr: MR as u8,
    nr: ymm::NR as u8,
    kr: 4,
    numerics: Numerics::Exact,
    a_format: AFormat::Direct,
    b_format: BFormat::I8Quads,
    weights: WeightRange::Full,
    indirect: true,
    run,
};

struct VnniYmm;

impl DotQuad for VnniYmm {
    #[inline(always)]
    unsafe fn dot(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(acc, a, b)
    }
}

#[target_feature(enable = "avx2,avxvnni")]
unsafe fn tile<const M: usize>(t: &QGemmTile<'_>) {
    // SAFETY: forwarded contract; AVX2 and AVX-VNNI are enabled here.
    unsafe { ymm::tile_c4::<VnniYmm, M>(t) }
}

/// # Safety
/// See [`QGemmUkernel::run`].
unsafe fn run(t: &QGemmTile<'_>) {
    // SAFETY: the caller guarantees AVX-VNNI and valid pointers; `t.m` picks the instantiation.
    unsafe {
        match t.m {
            1 => tile::<1>(t),
            2 => tile::<2>(t),
            3 => tile::<3>(t),
            4 => tile::<4>(t),
            5 => tile::<5>(t),
            _ => tile::<MR>(t),
        }
    }
}
