//! Portable 4×4 c2 GEMM/conv micro-kernel over the shared packed layout (the scalar tier and
//! the ground truth for the layout itself).

use super::ukernel::{Q8GemmLayout, Q8GemmTile, Q8GemmUkernel};
use crate::kernels::{Isa, Numerics};

pub static Q8GEMM_4X4C2_SCALAR: Q8GemmUkernel = Q8GemmUkernel {
    name: "q8gemm_4x4c2_scalar",
    isa: Isa::Scalar,
    target: "",
    mr: 4,
    nr: 4,
    kr: 2,
    kc_align: 8,
    layout: Q8GemmLayout::U8Chunk8,
    numerics: Numerics::Exact,
    run,
};

/// # Safety
/// See [`Q8GemmUkernel::run`].
unsafe fn run(t: &Q8GemmTile<'_>) {
    // SAFETY: forwarded contract.
    unsafe { super::scalar::gemm_tile::<4, 4>(t) }
}
