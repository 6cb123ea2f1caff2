//! Portable average-pool micro-kernel (any window, via the depthwise row indirection).

use super::ukernel::{Q8PoolRow, Q8PoolUkernel};
use crate::kernels::reference::requant_fixedpoint::requantize_u8;
use crate::kernels::{Isa, Numerics};

pub static Q8AVGPOOL_SCALAR: Q8PoolUkernel = Q8PoolUkernel {
    name: "q8avgpool_scalar",
    isa: Isa::Scalar,
    target: "",
    numerics: Numerics::Exact,
    run,
};

/// # Safety
/// See [`Q8PoolUkernel::run`].
unsafe fn run(r: &Q8PoolRow<'_>) {
    let zp = i32::from(r.x_zp);
    // SAFETY: tap pointers readable for `channels` bytes, `requant` has `width` entries,
    // outputs inside the row, per the caller's contract.
    unsafe {
        for px in 0..r.width {
            let taps = r.a.add(px * r.a_step);
            let rq = *r.requant.add(px);
            for c in 0..r.channels {
                let mut acc = 0i32;
                for t in 0..r.taps {
                    acc += i32::from(*(*taps.add(t)).add(c)) - zp;
                }
                *r.c.add(px * r.c_stride + c) = requantize_u8(acc, rq, &r.out);
            }
        }
    }
}
