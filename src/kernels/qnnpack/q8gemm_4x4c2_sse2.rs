//! SSE2 4×4 c2 GEMM/conv micro-kernel (QNNPACK `q8gemm_ukernel_4x4c2__sse2` /
//! `q8conv_ukernel_4x4c2__sse2`): `punpcklbw` with zero widens A and B, B minus w_zp, k-pairs
//! broadcast with `pshufd`, `pmaddwd` + `paddd`. Exact for all inputs.

use core::arch::x86_64::*;

use super::pack::gemm_header_bytes;
use super::sse2::{out8, pack8, rq4_apply, rq4_load, store_n};
use super::ukernel::{Q8GemmLayout, Q8GemmTile, Q8GemmUkernel};
use crate::kernels::{Isa, Numerics};

const MR: usize = 4;
const NR: usize = 4;

pub static Q8GEMM_4X4C2_SSE2: Q8GemmUkernel = Q8GemmUkernel {
    name: "q8gemm_4x4c2_sse2",
    isa: Isa::Avx2,
    target: "sse2",
    mr: MR as u8,
    nr: NR as u8,
    kr: 2,
    kc_align: 8,
    layout: Q8GemmLayout::U8Chunk8,
    numerics: Numerics::Exact,
    run,
};

#[inline(always)]
unsafe fn pair<const IMM: i32>(
    acc: &mut [__m128i; MR],
    aw: &[__m128i; MR],
    wp: *const u8,
    kz: __m128i,
) {
    // SAFETY (caller): `wp..wp+8` is inside the packed block.
    let b = unsafe {
        _mm_sub_epi16(
            _mm_unpacklo_epi8(_mm_loadl_epi64(wp.cast()), _mm_setzero_si128()),
            kz,
        )
    };
    for (acc_r, &a) in acc.iter_mut().zip(aw) {
        *acc_r = _mm_add_epi32(*acc_r, _mm_madd_epi16(_mm_shuffle_epi32::<IMM>(a), b));
    }
}

#[inline(always)]
unsafe fn chunk(acc: &mut [__m128i; MR], rows: [*const u8; MR], wp: *const u8, kz: __m128i) {
    // SAFETY (caller): rows readable for 8 bytes, `wp` for 32.
    unsafe {
        let aw: [__m128i; MR] = core::array::from_fn(|r| {
            _mm_unpacklo_epi8(_mm_loadl_epi64(rows[r].cast()), _mm_setzero_si128())
        });
        pair::<0x00>(acc, &aw, wp, kz);
        pair::<0x55>(acc, &aw, wp.add(8), kz);
        pair::<0xAA>(acc, &aw, wp.add(16), kz);
        pair::<0xFF>(acc, &aw, wp.add(24), kz);
    }
}

#[target_feature(enable = "sse2")]
unsafe fn tile(t: &Q8GemmTile<'_>) {
    // SAFETY: the `Q8GemmUkernel::run` contract (see the AVX2 kernel).
    unsafe {
        let h = t.w;
        let mut acc = [_mm_loadu_si128(h.cast()); MR];
        let kz = _mm_unpacklo_epi8(_mm_loadl_epi64(h.add(16 * NR).cast()), _mm_setzero_si128());
        let mut wp = h.add(gemm_header_bytes(NR));
        let (full, rem) = (t.kc / 8, t.kc % 8);
        for tap in 0..t.ks {
            let rows: [*const u8; MR] = core::array::from_fn(|r| *t.a.add(tap * MR + r));
            for k8 in 0..full {
                chunk(&mut acc, rows.map(|p| p.add(8 * k8)), wp, kz);
                wp = wp.add(8 * NR);
            }
            if rem != 0 {
                let mut tails = [[0u8; 8]; MR];
                for (tl, &p) in tails.iter_mut().zip(&rows) {
                    core::ptr::copy_nonoverlapping(p.add(8 * full), tl.as_mut_ptr(), rem);
                }
                chunk(
                    &mut acc,
                    core::array::from_fn(|r| tails[r].as_ptr()),
                    wp,
                    kz,
                );
                wp = wp.add(8 * NR);
            }
        }
        let rq = rq4_load(h, NR, 0, t.out.rounding);
        let o = out8(&t.out);
        for (r, &acc_r) in acc.iter().enumerate().take(t.m) {
            let q = rq4_apply(acc_r, &rq);
            store_n(t.c.add(r * t.ldc), pack8(q, q, &o), t.n);
        }
    }
}

/// # Safety
/// See [`Q8GemmUkernel::run`].
unsafe fn run(t: &Q8GemmTile<'_>) {
    // SAFETY: SSE2 is baseline on x86_64; pointers per the caller's contract.
    unsafe { tile(t) }
}
