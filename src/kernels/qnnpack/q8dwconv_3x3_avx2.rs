//! AVX2 depthwise 3×3 micro-kernel (NHWC, per-channel weights; stride, padding and
//! dilation come from the indirection buffer). 16 channels per block; each pair of taps is
//! interleaved to u16 pairs (`punpcklbw` of the two taps' bytes, then zero-extension) and
//! multiplied with the pre-subtracted i16 weight pairs by one `pmaddwd` (exact). Fixed-point
//! requant epilogue.

use super::ukernel::{Q8DwRow, Q8DwUkernel};
use crate::kernels::{Isa, Numerics};

pub static Q8DWCONV_3X3_AVX2: Q8DwUkernel = Q8DwUkernel {
    name: "q8dwconv_3x3_avx2",
    isa: Isa::Avx2,
    target: "avx2",
    taps: 9,
    cr: super::avx2::DW_CR as u8,
    numerics: Numerics::Exact,
    layout: super::ukernel::Q8DwLayout::Pairs,
    run,
};

#[target_feature(enable = "avx2")]
unsafe fn row(r: &Q8DwRow<'_>) {
    // SAFETY: forwarded contract; the feature is enabled here.
    unsafe { super::avx2::dw_row::<9>(r) }
}

/// # Safety
/// See [`Q8DwUkernel::run`].
unsafe fn run(r: &Q8DwRow<'_>) {
    // SAFETY: the caller guarantees the target feature and valid pointers.
    unsafe { row(r) }
}
