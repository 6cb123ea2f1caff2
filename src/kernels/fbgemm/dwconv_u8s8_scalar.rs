//! Portable depthwise kernels (3×3 and 5×5 instantiations of one tap-generic body): the same
//! packed weights and indirection as the SIMD kernels, plain i32 loops. Exact.

use super::dwconv::{dw_lane, DwConvTile, DwConvUkernel, DwLayout, DW_CB};
use super::ukernel::TileOutput;
use crate::kernels::reference::requant::{dequantize_acc, requantize};
use crate::kernels::{Isa, Numerics};

pub static DWCONV_U8S8_3X3_SCALAR: DwConvUkernel = DwConvUkernel {
    name: "dwconv_u8s8_3x3_scalar",
    isa: Isa::Scalar,
    kernel: [3, 3],
    numerics: Numerics::Exact,
    layout: DwLayout::C16Pairs,
    run: run::<9>,
};

pub static DWCONV_U8S8_5X5_SCALAR: DwConvUkernel = DwConvUkernel {
    name: "dwconv_u8s8_5x5_scalar",
    isa: Isa::Scalar,
    kernel: [5, 5],
    numerics: Numerics::Exact,
    layout: DwLayout::C16Pairs,
    run: run::<25>,
};

/// Stores `acc` for channel `c` at element offset `off` with the scalar output stage.
///
/// # Safety
/// `off` is inside the output; parameter pointers cover channel `c`.
#[inline]
pub(crate) unsafe fn store_one(out: &TileOutput, off: usize, c: usize, acc: i32) {
    // SAFETY: (all arms) forwarded contract.
    unsafe {
        match *out {
            TileOutput::I32 { c: dst } => *dst.add(off) = acc,
            TileOutput::U8 {
                c: dst,
                mult,
                zp,
                qmin,
                qmax,
            } => *dst.add(off) = requantize(acc, *mult.add(c), zp, qmin, qmax) as u8,
            TileOutput::I8 {
                c: dst,
                mult,
                zp,
                qmin,
                qmax,
            } => *dst.add(off) = requantize(acc, *mult.add(c), zp, qmin, qmax) as i8,
            TileOutput::F32 {
                c: dst,
                scale,
                bias,
            } => *dst.add(off) = dequantize_acc(acc, *scale.add(c), *bias.add(c)),
        }
    }
}

/// # Safety
/// See [`DwConvUkernel::run`].
unsafe fn run<const T: usize>(t: &DwConvTile<'_>) {
    let pairs = T.div_ceil(2);
    for px in 0..t.pixels {
        // SAFETY: px < pixels and T is this kernel's tap count.
        let taps: [*const u8; T] = unsafe { t.pixel_taps::<T>(px) };
        for c in 0..t.channels {
            let (b, lane) = (c / DW_CB, dw_lane(c));
            // SAFETY: bias is padded to whole blocks, c < channels.
            let mut acc = unsafe { *t.bias.add(lane) };
            for (tap, &p) in taps.iter().enumerate() {
                let wi = ((b * pairs + tap / 2) * DW_CB + lane % DW_CB) * 2 + tap % 2;
                // SAFETY: each tap pointer is valid for `channels` bytes; `wi` is inside block b.
                let (a, w) = unsafe { (*p.add(c), *t.weights.add(wi)) };
                acc = acc.wrapping_add(i32::from(a) * i32::from(w));
            }
            // SAFETY: pixel px, channel c is inside the output window.
            unsafe { store_one(&t.out, px * t.out_stride + c, lane, acc) };
        }
    }
}
