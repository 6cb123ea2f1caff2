//! AVX2 6×16 c2 GEMM/conv micro-kernel, the 16-bit widening path in MLAS's u8u8 style
//! ([`Q8GemmLayout::I16Pairs`]): B is packed once as i16 `w − w_zp` k-pairs, A is widened to
//! i16 once per call by the driver (the conv's image once per pixel, not per tap), and per
//! k-pair the
//! kernel loads the two B vectors, then per row broadcasts the A pair (`vpbroadcastd` from
//! memory: a load, no shuffle) and does `vpmaddwd` + `vpaddd` into 12 accumulators
//! (12 + 2 B + 2 temporaries = all 16 ymm). Exact for all inputs: A ∈ [0, 255],
//! `w − w_zp` ∈ [−255, 255], so each pair sum is at most 2·255·255 < 2³¹ and the i32
//! accumulation is the reference's. A's zero point is folded into the packed bias.
//!
//! # Throughput ceiling of exact u8×u8 on AVX2 (no VNNI), and ONNX Runtime
//! Exactness rules out `vpmaddubsw` on full-range data (u8×u8 pair sums reach 130050 > i16):
//! a 7-bit/4-bit operand split needs ≥ 2 `vpmaddubsw` + a `vpmaddwd` per 32 MACs, i.e. ≥ 1.25
//! multiplier-pipe µops per 16 MACs, against exactly 1 for `vpmaddwd` (16 MACs, i16 pairs
//! into i32). So the best exact AVX2 form is 1 `vpmaddwd` + 1 `vpaddd` per 16 MACs. On this
//! Zen 3 (asm loops, best of runs: add chain 3.2 GHz, `vpmaddwd` ymm 2/cycle alone, `vpaddd`
//! 4/cycle alone) the multiplier bound is 32 MAC/cycle ≈ 206 GOPS, but the mixed
//! `vpbroadcastd` + 2×(`vpmaddwd` + `vpaddd`) 6×16 loop peaks at ~150–165 GOPS on the shared
//! VM, and this kernel reaches ~140 GOPS (512³, 1024³, L1) and ~127 (3136×576×64).
//! ONNX Runtime's u8u8 MatMulInteger on AVX2 (`MlasGemmU8U8KernelAvx2`) uses the very same
//! instruction pair (A packed as i16 pairs, `vpmovzxbw` of B, `vpmaddwd` + `vpaddd`) and
//! measures ~137–144 GOPS here (same runs), so both sit at ~90 % of what the instruction mix
//! delivers: an exact kernel can at best gain ~1.1–1.2× (~1.5× against the bare multiplier
//! bound), and the "≥ 2× ORT" is out of reach without VNNI. It assumed the VNNI flip
//! path (`vpdpbusd`: 32 MACs per µop, 2× the MACs per multiplier µop), which needs AVX-VNNI
//! or AVX-512 VNNI hardware (`q8gemm_6x16c4_avxvnni`, `q8gemm_6x16c4_avx512vnni`).

use core::arch::x86_64::*;

use super::avx2::{out16, pack16, rq8_apply, rq8_load, store_n};
use super::pack::gemm_header_bytes;
use super::ukernel::{Q8GemmLayout, Q8GemmTile, Q8GemmUkernel};
use crate::kernels::{Isa, Numerics};

const MR: usize = 6;
const NR: usize = 16;

pub static Q8GEMM_6X16C2_AVX2: Q8GemmUkernel = Q8GemmUkernel {
    name: "q8gemm_6x16c2_avx2",
    isa: Isa::Avx2,
    target: "avx2",
    mr: MR as u8,
    nr: NR as u8,
    kr: 2,
    kc_align: 2,
    layout: Q8GemmLayout::I16Pairs,
    numerics: Numerics::Exact,
    run,
};

type Acc = [[__m256i; 2]; MR];

/// One k-pair: B at `wp` (64 bytes), A pair `q` of each row.
#[inline(always)]
unsafe fn pair(acc: &mut Acc, rows: &[*const i32; MR], q: usize, wp: *const __m256i) {
    // SAFETY (caller): `wp` has 2 vectors, each row has pair `q`.
    unsafe {
        let b0 = _mm256_loadu_si256(wp);
        let b1 = _mm256_loadu_si256(wp.add(1));
        for (acc_r, &row) in acc.iter_mut().zip(rows) {
            let a = _mm256_set1_epi32(row.add(q).read_unaligned());
            acc_r[0] = _mm256_add_epi32(acc_r[0], _mm256_madd_epi16(a, b0));
            acc_r[1] = _mm256_add_epi32(acc_r[1], _mm256_madd_epi16(a, b1));
        }
    }
}

#[target_feature(enable = "avx2")]
unsafe fn tile(t: &Q8GemmTile<'_>) {
    // SAFETY: the `Q8GemmUkernel::run` contract for an `I16Pairs` kernel: each of the ks·MR
    // row pointers points at kcp = kc.div_ceil(2)·2 i16 values, the packed block has ks·kcp/2
    // pairs of 64 bytes after its header, and the m×n window at `c` is writable.
    unsafe {
        let h = t.w;
        let b0 = _mm256_loadu_si256(h.cast());
        let b1 = _mm256_loadu_si256(h.add(32).cast());
        let mut acc: Acc = [[b0, b1]; MR];
        let pairs = t.kc.div_ceil(2);
        let mut wp: *const __m256i = h.add(gemm_header_bytes(NR)).cast();
        for tap in 0..t.ks {
            let rows: [*const i32; MR] = core::array::from_fn(|r| (*t.a.add(tap * MR + r)).cast());
            let mut q = 0;
            while q + 2 <= pairs {
                _mm_prefetch::<_MM_HINT_T0>(wp.add(16).cast());
                pair(&mut acc, &rows, q, wp);
                pair(&mut acc, &rows, q + 1, wp.add(2));
                wp = wp.add(4);
                q += 2;
            }
            if q < pairs {
                pair(&mut acc, &rows, q, wp);
                wp = wp.add(2);
            }
        }
        // One column half at a time (its requant constants stay in registers over the rows).
        let rq0 = rq8_load(h, NR, 0, t.out.rounding);
        // Plain loops, not closures: a closure is a separate function without the caller's
        // target features, where the intrinsics would not inline.
        let mut q0 = [_mm256_setzero_si256(); MR];
        for (q, acc_r) in q0.iter_mut().zip(&acc) {
            *q = rq8_apply(acc_r[0], &rq0);
        }
        let rq1 = rq8_load(h, NR, 8, t.out.rounding);
        let mut q1 = [_mm256_setzero_si256(); MR];
        for (q, acc_r) in q1.iter_mut().zip(&acc) {
            *q = rq8_apply(acc_r[1], &rq1);
        }
        let o = out16(&t.out);
        for r in 0..t.m.min(MR) {
            store_n(t.c.add(r * t.ldc), pack16(q0[r], q1[r], &o), t.n);
        }
    }
}

/// # Safety
/// See [`Q8GemmUkernel::run`].
unsafe fn run(t: &Q8GemmTile<'_>) {
    // SAFETY: the caller guarantees AVX2 and valid pointers.
    unsafe { tile(t) }
}
