//! AVX2 depthwise 5×5 (25 taps), 32 channels per block, `vpmaddubsw` on byte quads of
//! four taps, exact by the pack-time direct/split choice per tap group (weights with every
//! `w − w_zp` in s8 only; otherwise packing falls back to `dwconv_u8s8_5x5_avx2`); body in
//! [`super::dwconv_c32_avx2`].

use super::dwconv::{DwConvTile, DwConvUkernel, DwLayout};
use super::dwconv_c32_avx2;
use crate::kernels::{Isa, Numerics};

pub static DWCONV_U8S8_5X5C32_AVX2: DwConvUkernel = DwConvUkernel {
    name: "dwconv_u8s8_5x5c32_avx2",
    isa: Isa::Avx2,
    kernel: [5, 5],
    numerics: Numerics::Exact,
    layout: DwLayout::C32Quads,
    run,
};

#[target_feature(enable = "avx2")]
unsafe fn tile(t: &DwConvTile<'_>) {
    // SAFETY: forwarded contract; AVX2 is enabled here.
    unsafe { dwconv_c32_avx2::tile::<25>(t) }
}

/// # Safety
/// See [`DwConvUkernel::run`].
unsafe fn run(t: &DwConvTile<'_>) {
    // SAFETY: the caller guarantees AVX2, valid pointers and C32Quads weights.
    unsafe { tile(t) }
}
