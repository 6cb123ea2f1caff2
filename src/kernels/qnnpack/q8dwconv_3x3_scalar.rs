//! Portable depthwise 3×3 micro-kernel (any stride/padding/dilation via the indirection
//! buffer), 8 channels per packed block.

use super::ukernel::{Q8DwRow, Q8DwUkernel};
use crate::kernels::{Isa, Numerics};

pub static Q8DWCONV_3X3_SCALAR: Q8DwUkernel = Q8DwUkernel {
    name: "q8dwconv_3x3_scalar",
    isa: Isa::Scalar,
    target: "",
    taps: 9,
    cr: 8,
    numerics: Numerics::Exact,
    layout: super::ukernel::Q8DwLayout::Pairs,
    run,
};

/// # Safety
/// See [`Q8DwUkernel::run`].
unsafe fn run(r: &Q8DwRow<'_>) {
    // SAFETY: forwarded contract.
    unsafe { super::scalar::dw_row::<9, 8>(r) }
}
