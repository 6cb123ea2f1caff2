//! Portable depthwise 5×5 micro-kernel (any stride/padding/dilation via the indirection
//! buffer), 8 channels per packed block.

use super::ukernel::{Q8DwRow, Q8DwUkernel};
use crate::kernels::{Isa, Numerics};

pub static Q8DWCONV_5X5_SCALAR: Q8DwUkernel = Q8DwUkernel {
    name: "q8dwconv_5x5_scalar",
    isa: Isa::Scalar,
    target: "",
    taps: 25,
    cr: 8,
    numerics: Numerics::Exact,
    layout: super::ukernel::Q8DwLayout::Pairs,
    run,
};

/// # Safety
/// See [`Q8DwUkernel::run`].
unsafe fn run(r: &Q8DwRow<'_>) {
    // SAFETY: forwarded contract.
    unsafe { super::scalar::dw_row::<25, 8>(r) }
}
