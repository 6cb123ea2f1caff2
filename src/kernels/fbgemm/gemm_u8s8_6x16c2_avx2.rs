//! AVX2 6×16 k-pair micro-kernel, exact for all u8 × s8 inputs (the QNNPACK way): A is packed
//! per 6-row panel as zero-extended i16 pairs, B is prepacked as sign-extended i16 pairs, and
//! each step is `vpmaddwd` (two i16 products summed into i32: |·| ≤ 2·255·128, no saturation)
//! + `vpaddd`. 12 ymm accumulators + 2 B + 1 A broadcast + 1 product = 16 registers.
//!
//! Same multiplier-port cost per MAC as the `vpmaddubsw` sequence (one multiply µop per 16
//! MACs in both), at twice the B bandwidth.

use super::ukernel::{AFormat, BFormat, QGemmTile, QGemmUkernel, WeightRange};
use super::ymm;
use crate::kernels::{Isa, Numerics};

const MR: usize = 6;

pub static GEMM_U8S8_6X16C2_AVX2: QGemmUkernel = QGemmUkernel {
    name: "gemm_u8s8_6x16c2_avx2",
    isa: Isa::Avx2,
    mr: MR as u8,
    nr: ymm::NR as u8,
    kr: 2,
    numerics: Numerics::Exact,
    a_format: AFormat::PackedI16Pairs,
    b_format: BFormat::I16Pairs,
    weights: WeightRange::Full,
    indirect: false,
    run,
};

#[target_feature(enable = "avx2")]
unsafe fn tile<const M: usize>(t: &QGemmTile<'_>) {
    // SAFETY: forwarded contract; AVX2 is enabled here.
    unsafe { ymm::tile_c2::<M>(t) }
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
