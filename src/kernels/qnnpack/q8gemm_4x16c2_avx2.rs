//! AVX2 4×16 c2 GEMM/conv micro-kernel, the QNNPACK 16-bit widening path on ymm:
//! per 8-k chunk, each A row is loaded once (8 bytes, `vpmovzxbw`, both 128-bit halves equal)
//! and each k-pair is broadcast with `vpshufd`; B is `vpmovzxbw` + `vpsubw w_zp`; then
//! `vpmaddwd` + `vpaddd` (pair sums ≤ 2·255·255: exact for all inputs). 8 accumulators,
//! 4 widened A rows, 2 B registers (LLVM spills a few accumulators; a `vpbroadcastw` +
//! `vpmovzxbw` per-pair A variant avoids the spills but measured ~7 % slower: 85 vs 91 GOPS).
//! Fixed-point requant epilogue (`avx2::rq8_apply`).

use core::arch::x86_64::*;

use super::avx2::{out16, pack16, rq8_apply, rq8_load, store_n};
use super::pack::gemm_header_bytes;
use super::ukernel::{Q8GemmLayout, Q8GemmTile, Q8GemmUkernel};
use crate::kernels::{Isa, Numerics};

const MR: usize = 4;
const NR: usize = 16;

pub static Q8GEMM_4X16C2_AVX2: Q8GemmUkernel = Q8GemmUkernel {
    name: "q8gemm_4x16c2_avx2",
    isa: Isa::Avx2,
    target: "avx2",
    mr: MR as u8,
    nr: NR as u8,
    kr: 2,
    kc_align: 8,
    layout: Q8GemmLayout::U8Chunk8,
    numerics: Numerics::Exact,
    run,
};

type Acc = [[__m256i; 2]; MR];

/// One k-pair (`IMM` selects it in the widened A rows) of a chunk whose B pair is at `wp`.
#[inline(always)]
unsafe fn pair<const IMM: i32>(
    acc: &mut Acc,
    aw: &[__m256i; MR],
    wp: *const u8,
    kz: &[__m256i; 2],
) {
    // SAFETY (caller): `wp..wp+32` is inside the packed block.
    let (b0, b1) = unsafe {
        (
            _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(wp.cast())), kz[0]),
            _mm256_sub_epi16(
                _mm256_cvtepu8_epi16(_mm_loadu_si128(wp.add(16).cast())),
                kz[1],
            ),
        )
    };
    for (acc_r, &a) in acc.iter_mut().zip(aw) {
        let av = _mm256_shuffle_epi32::<IMM>(a);
        acc_r[0] = _mm256_add_epi32(acc_r[0], _mm256_madd_epi16(av, b0));
        acc_r[1] = _mm256_add_epi32(acc_r[1], _mm256_madd_epi16(av, b1));
    }
}
/// A full 8-k chunk: `rows[r]` point at 8 readable bytes, `wp` at 128 bytes of B.
#[inline(always)]
unsafe fn chunk(acc: &mut Acc, rows: [*const u8; MR], wp: *const u8, kz: &[__m256i; 2]) {
    // SAFETY (caller): as documented.
    unsafe {
        let aw: [__m256i; MR] = core::array::from_fn(|r| {
            let x = _mm_loadl_epi64(rows[r].cast());
            _mm256_cvtepu8_epi16(_mm_unpacklo_epi64(x, x))
        });
        pair::<0x00>(acc, &aw, wp, kz);
        pair::<0x55>(acc, &aw, wp.add(32), kz);
        pair::<0xAA>(acc, &aw, wp.add(64), kz);
        pair::<0xFF>(acc, &aw, wp.add(96), kz);
    }
}
#[target_feature(enable = "avx2")]
unsafe fn tile(t: &Q8GemmTile<'_>) {
    // SAFETY: the `Q8GemmUkernel::run` contract: row pointers readable for kc bytes (full
    // chunks read inside them, the tail is copied), the packed block is whole, the m×n window
    // at `c` is writable.
    unsafe {
        let h = t.w;
        let b0 = _mm256_loadu_si256(h.cast());
        let b1 = _mm256_loadu_si256(h.add(32).cast());
        let mut acc: Acc = [[b0, b1]; MR];
        let kz = [
            _mm256_cvtepu8_epi16(_mm_loadu_si128(h.add(16 * NR).cast())),
            _mm256_cvtepu8_epi16(_mm_loadu_si128(h.add(16 * NR + 16).cast())),
        ];
        let mut wp = h.add(gemm_header_bytes(NR));
        let (full, rem) = (t.kc / 8, t.kc % 8);
        for tap in 0..t.ks {
            let rows: [*const u8; MR] = core::array::from_fn(|r| *t.a.add(tap * MR + r));
            for k8 in 0..full {
                chunk(&mut acc, rows.map(|p| p.add(8 * k8)), wp, &kz);
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
                    &kz,
                );
                wp = wp.add(8 * NR);
            }
        }
        let rq0 = rq8_load(h, NR, 0, t.out.rounding);
        let rq1 = rq8_load(h, NR, 8, t.out.rounding);
        let o = out16(&t.out);
        for (r, acc_r) in acc.iter().enumerate().take(t.m) {
            let v = pack16(rq8_apply(acc_r[0], &rq0), rq8_apply(acc_r[1], &rq1), &o);
            store_n(t.c.add(r * t.ldc), v, t.n);
        }
    }
}

/// # Safety
/// See [`Q8GemmUkernel::run`].
unsafe fn run(t: &Q8GemmTile<'_>) {
    // SAFETY: the caller guarantees AVX2 and valid pointers.
    unsafe { tile(t) }
}
