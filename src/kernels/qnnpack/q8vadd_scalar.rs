//! Portable elementwise Add (QNNPACK q8vadd semantics).

use super::ukernel::{Q8AddCall, Q8AddUkernel};
use crate::kernels::reference::q8vadd::q8add_one;
use crate::kernels::{Isa, Numerics};

pub static Q8VADD_SCALAR: Q8AddUkernel = Q8AddUkernel {
    name: "q8vadd_scalar",
    isa: Isa::Scalar,
    target: "",
    numerics: Numerics::Exact,
    run,
};

/// # Safety
/// See [`Q8AddUkernel::run`].
unsafe fn run(c: &Q8AddCall<'_>) {
    for i in 0..c.n {
        // SAFETY: `a`, `b`, `y` hold `n` bytes (caller contract).
        unsafe { *c.y.add(i) = q8add_one(*c.a.add(i), *c.b.add(i), c.params) };
    }
}
