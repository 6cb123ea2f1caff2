//! AVX2 6×16 k-quad micro-kernel: per k-quad, two 32-byte B loads, one `vpbroadcastd` of A per
//! row, then `vpmaddubsw` + `vpmaddwd(1)` + `vpaddd` (FBGEMM acc32). 12 ymm accumulators.
//!
//! `vpmaddubsw` saturates its i16 pair sums, so this kernel admits only
//! [`WeightRange::PairSum128`] weights (checked at pack time); for anything else the AVX2 set
//! falls back to `gemm_u8s8_6x16c2_avx2`.

use super::ukernel::{AFormat, BFormat, QGemmTile, QGemmUkernel, WeightRange};
use super::ymm::{self, Maddubs};
use crate::kernels::{Isa, Numerics};

const MR: usize = 6;

pub static GEMM_U8S8_6X16C4_AVX2: QGemmUkernel = QGemmUkernel {
    name: "gemm_u8s8_6x16c4_avx2",
    isa: Isa::Avx2,
    mr: MR as u8,
    nr: ymm::NR as u8,
    kr: 4,
    numerics: Numerics::Exact,
    a_format: AFormat::Direct,
    b_format: BFormat::I8Quads,
    weights: WeightRange::PairSum128,
    indirect: true,
    run,
};

#[target_feature(enable = "avx2")]
unsafe fn tile<const M: usize>(t: &QGemmTile<'_>) {
    // SAFETY: forwarded contract; AVX2 is enabled here.
    unsafe { ymm::tile_c4::<Maddubs, M>(t) }
}

/// # Safety
/// See [`QGemmUkernel::run`].
unsafe fn run(t: &QGemmTile<'_>) {
    // SAFETY: the caller guarantees AVX2 and valid pointers; `t.m` selects the instantiation.
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
