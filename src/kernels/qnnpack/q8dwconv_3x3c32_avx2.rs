//! AVX2 depthwise 3×3 micro-kernel, 32 channels per block: `vpmaddubsw` on byte quads of
//! four taps against the `w − w_zp` quads, made exact by the pack-time direct/split choice per
//! tap group (the fbgemm `c32` body, shared); fixed-point requant epilogue. Body in
//! [`super::avx2::dw_row_c32`].

use super::ukernel::{Q8DwLayout, Q8DwRow, Q8DwUkernel};
use crate::kernels::{Isa, Numerics};

pub static Q8DWCONV_3X3C32_AVX2: Q8DwUkernel = Q8DwUkernel {
    name: "q8dwconv_3x3c32_avx2",
    isa: Isa::Avx2,
    target: "avx2",
    taps: 9,
    cr: 32,
    numerics: Numerics::Exact,
    layout: Q8DwLayout::Quads,
    run,
};

#[target_feature(enable = "avx2")]
unsafe fn row(r: &Q8DwRow<'_>) {
    // SAFETY: forwarded contract; the feature is enabled here.
    unsafe { super::avx2::dw_row_c32::<9>(r) }
}

/// # Safety
/// See [`Q8DwUkernel::run`].
unsafe fn run(r: &Q8DwRow<'_>) {
    // SAFETY: the caller guarantees the target feature and valid pointers.
    unsafe { row(r) }
}
