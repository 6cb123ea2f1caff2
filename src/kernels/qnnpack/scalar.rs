//! Shared bodies of the portable kernels (the same packed layouts as the SIMD ones).

use crate::kernels::reference::requant_fixedpoint::{requantize_u8, Requant};

use super::pack::gemm_header_bytes;
use super::ukernel::{Q8DwRow, Q8GemmTile};

#[inline(always)]
pub(crate) unsafe fn rd_i32(p: *const u8, i: usize) -> i32 {
    // SAFETY (fn contract): `p + 4i .. p + 4i + 4` is readable.
    unsafe { p.add(4 * i).cast::<i32>().read_unaligned() }
}

/// Requant parameters of lane `j` from a header whose arrays are `width` entries long
/// (bias at 0, multiplier at `4·width`, shift at `8·width`, limit at `12·width`).
#[inline(always)]
pub(crate) unsafe fn rd_requant(h: *const u8, width: usize, j: usize) -> Requant {
    // SAFETY (fn contract): the header is whole.
    unsafe {
        Requant {
            multiplier: rd_i32(h, width + j) as u32,
            shift: rd_i32(h, 2 * width + j) as u32,
            limit: rd_i32(h, 3 * width + j),
        }
    }
}

/// Generic MR×NR c2 tile over the packed GEMM layout.
///
/// # Safety
/// The `Q8GemmUkernel::run` contract with this MR/NR.
pub(crate) unsafe fn gemm_tile<const MR: usize, const NR: usize>(t: &Q8GemmTile<'_>) {
    // SAFETY: all reads are inside the packed block / row pointers (kc bytes each) and all
    // writes inside the m×n output window, per the caller's contract.
    unsafe {
        let h = t.w;
        let body = h.add(gemm_header_bytes(NR));
        let kcp = t.kc.next_multiple_of(8);
        let mut acc = [[0i32; NR]; MR];
        for row in acc.iter_mut() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = rd_i32(h, j);
            }
        }
        let zw: [i32; NR] = core::array::from_fn(|j| i32::from(*h.add(16 * NR + 2 * j)));
        for tap in 0..t.ks {
            let wt = body.add(tap * kcp * NR);
            for (r, row) in acc.iter_mut().enumerate() {
                let a = *t.a.add(tap * MR + r);
                for kk in 0..t.kc {
                    let av = i32::from(*a.add(kk));
                    let off = (kk / 8) * 8 * NR + ((kk % 8) / 2) * 2 * NR + kk % 2;
                    for (j, v) in row.iter_mut().enumerate() {
                        let wv = i32::from(*wt.add(off + 2 * j)) - zw[j];
                        *v = v.wrapping_add(av * wv);
                    }
                }
            }
        }
        for (r, row) in acc.iter().enumerate().take(t.m) {
            for (j, &v) in row.iter().enumerate().take(t.n) {
                *t.c.add(r * t.ldc + j) = requantize_u8(v, rd_requant(h, NR, j), &t.out);
            }
        }
    }
}

/// Generic depthwise row over the packed depthwise layout (`cr` channels per block).
///
/// # Safety
/// The `Q8DwUkernel::run` contract with these TAPS/CR.
pub(crate) unsafe fn dw_row<const TAPS: usize, const CR: usize>(r: &Q8DwRow<'_>) {
    let pairs = TAPS.div_ceil(2);
    let bb = super::pack::dw_block_bytes(CR, TAPS);
    // SAFETY: tap pointers readable for `channels` bytes, packed blocks whole, outputs inside
    // the row, per the caller's contract.
    unsafe {
        for px in 0..r.width {
            let taps = r.a.add(px * r.a_step);
            let dst = r.c.add(px * r.c_stride);
            for c in 0..r.channels {
                let (blk, j) = (c / CR, c % CR);
                let h = r.w.add(blk * bb);
                let mut acc = rd_i32(h, j);
                for q in 0..pairs {
                    let wp = h.add(16 * CR + q * CR * 4 + 4 * j);
                    let w0 = i32::from(wp.cast::<i16>().read_unaligned());
                    let w1 = i32::from(wp.add(2).cast::<i16>().read_unaligned());
                    let a0 = i32::from(*(*taps.add(2 * q)).add(c));
                    let t1 = if 2 * q + 1 < TAPS { 2 * q + 1 } else { 2 * q };
                    let a1 = i32::from(*(*taps.add(t1)).add(c));
                    acc = acc.wrapping_add(a0 * w0 + a1 * w1);
                }
                *dst.add(c) = requantize_u8(acc, rd_requant(h, CR, j), &r.out);
            }
        }
    }
}
