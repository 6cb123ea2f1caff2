//! AVX2 depthwise 3×3 (9 taps), 16 channels per block, exact `vpmaddwd` tap pairs; body
//! in [`super::dwconv_avx2`].

use super::dwconv::{DwConvTile, DwConvUkernel, DwLayout};
use super::dwconv_avx2;
use crate::kernels::{Isa, Numerics};

pub static DWCONV_U8S8_3X3_AVX2: DwConvUkernel = DwConvUkernel {
    name: "dwconv_u8s8_3x3_avx2",
    isa: Isa::Avx2,
    kernel: [3, 3],
    numerics: Numerics::Exact,
    layout: DwLayout::C16Pairs,
    run,
};

#[target_feature(enable = "avx2")]
unsafe fn tile(t: &DwConvTile<'_>) {
    // SAFETY: forwarded contract; AVX2 is enabled here.
    unsafe { dwconv_avx2::tile::<9>(t) }
}

/// # Safety
/// See [`DwConvUkernel::run`].
unsafe fn run(t: &DwConvTile<'_>) {
    // SAFETY: the caller guarantees AVX2 and valid pointers.
    unsafe { tile(t) }
}
