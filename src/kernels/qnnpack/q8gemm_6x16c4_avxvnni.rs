//! AVX-VNNI 6×16 c4 GEMM/conv micro-kernel: the VNNI flip of the u8×u8 product
//! ([`Q8GemmLayout::S8Quads`]). u8 weights are stored as s8 `w − 128` at pack time, so one
//! VEX `vpdpbusd` (u8 A quad × s8 B quad, summed straight into i32, never saturating: 4·255·128
//! < 2³¹) does 32 MACs; `Σ a·(w − w_zp) = Σ a·(w − 128) + (128 − w_zp)·Σ a`, the second term
//! from per-row sums (`vpsadbw` pre-pass) only when some `w_zp ≠ 128` (a header flag). Exact:
//! the same i32 accumulators as the reference. A's zero point is folded into the packed bias.
//! 12 ymm accumulators + 2 B + 1 A broadcast; the k tail (kc mod 4) is copied into a zeroed
//! quad (padding weights are 0 and padding activations 0, so neither term sees them).
//!
//! Dispatch: listed first in the AVX-VNNI tier's qnnpack set ([`super::AVXVNNI`]), picked when
//! the host has AVX-VNNI (checked once per process by `kernels::cpu`); the AVX-512 VNNI tier
//! uses the EVEX twin `q8gemm_6x16c4_avx512vnni` (same body). On hosts without it
//! (this project's AMD EPYC CI machine) it is compiled but neither run nor tested: the shared
//! tester only iterates the available sets, as for `fbgemm::gemm_u8s8_6x16c4_avxvnni`.

use core::arch::x86_64::*;

use super::avx2::{out16, pack16, rq8_apply, rq8_load, store_n};
use super::pack::{gemm_header_bytes, s8quads_header_bytes};
use super::ukernel::{Q8GemmLayout, Q8GemmTile, Q8GemmUkernel};
use crate::kernels::{Isa, Numerics};

const MR: usize = 6;
const NR: usize = 16;

pub static Q8GEMM_6X16C4_AVXVNNI: Q8GemmUkernel = Q8GemmUkernel {
    name: "q8gemm_6x16c4_avxvnni",
    isa: Isa::AvxVnni,
    target: "avxvnni",
    mr: MR as u8,
    nr: NR as u8,
    kr: 4,
    kc_align: 4,
    layout: Q8GemmLayout::S8Quads,
    numerics: Numerics::Exact,
    run,
};

type Acc = [[__m256i; 2]; MR];

/// The u8×s8 quad dot product into i32 lanes (VEX AVX-VNNI here; EVEX AVX-512 VNNI in
/// `q8gemm_6x16c4_avx512vnni`, which shares this body).
pub(crate) trait Dpbusd {
    /// # Safety
    /// The host has the instruction (the caller's `target_feature`).
    unsafe fn dot(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;
}

struct Vex;

impl Dpbusd for Vex {
    #[inline(always)]
    unsafe fn dot(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(acc, a, b)
    }
}

/// One k-quad: the 4 A bytes of each row at `rows[r]`, B (64 bytes) at `wp`.
#[inline(always)]
unsafe fn quad<D: Dpbusd>(acc: &mut Acc, rows: &[*const u8; MR], wp: *const __m256i) {
    // SAFETY (caller): 4 readable bytes per row, 2 vectors at `wp`.
    unsafe {
        let b0 = _mm256_loadu_si256(wp);
        let b1 = _mm256_loadu_si256(wp.add(1));
        for (acc_r, &row) in acc.iter_mut().zip(rows) {
            let a = _mm256_set1_epi32(row.cast::<i32>().read_unaligned());
            acc_r[0] = D::dot(acc_r[0], a, b0);
            acc_r[1] = D::dot(acc_r[1], a, b1);
        }
    }
}

/// Σ of `kc` bytes at `p` (exact in i32 for kc < 2²³).
#[inline(always)]
unsafe fn row_sum(p: *const u8, kc: usize) -> i32 {
    // SAFETY (caller): `p` is readable for `kc` bytes.
    unsafe {
        let mut s = _mm256_setzero_si256();
        let mut k = 0;
        while k + 32 <= kc {
            let v = _mm256_loadu_si256(p.add(k).cast());
            s = _mm256_add_epi64(s, _mm256_sad_epu8(v, _mm256_setzero_si256()));
            k += 32;
        }
        let mut lanes = [0i64; 4];
        _mm256_storeu_si256(lanes.as_mut_ptr().cast(), s);
        let mut total = (lanes[0] + lanes[1] + lanes[2] + lanes[3]) as i32;
        while k < kc {
            total += i32::from(*p.add(k));
            k += 1;
        }
        total
    }
}

#[target_feature(enable = "avx2,avxvnni")]
unsafe fn tile(t: &Q8GemmTile<'_>) {
    // SAFETY: forwarded contract; AVX2 and AVX-VNNI are enabled here.
    unsafe { body::<Vex>(t) }
}

/// The whole tile, for a `Dpbusd` the caller's `target_feature` provides (with AVX2).
///
/// # Safety
/// The `Q8GemmUkernel::run` contract for an `S8Quads` kernel; AVX2 and `D`'s instruction.
#[inline(always)]
pub(crate) unsafe fn body<D: Dpbusd>(t: &Q8GemmTile<'_>) {
    // SAFETY: ks·MR row pointers readable for kc bytes (full quads read inside them, the tail
    // is copied), the packed block is whole, the m×n window at `c` is writable.
    unsafe {
        let h = t.w;
        let b0 = _mm256_loadu_si256(h.cast());
        let b1 = _mm256_loadu_si256(h.add(32).cast());
        let mut acc: Acc = [[b0, b1]; MR];
        let comp = h.add(gemm_header_bytes(NR));
        let needs_sums = comp.add(4 * NR).cast::<u32>().read_unaligned() != 0;
        let mut sums = [0i32; MR];
        let mut wp: *const __m256i = h.add(s8quads_header_bytes(NR)).cast();
        let (full, rem) = (t.kc / 4, t.kc % 4);
        for tap in 0..t.ks {
            let rows: [*const u8; MR] = core::array::from_fn(|r| *t.a.add(tap * MR + r));
            if needs_sums {
                for (s, &p) in sums.iter_mut().zip(&rows) {
                    *s += row_sum(p, t.kc);
                }
            }
            for q in 0..full {
                quad::<D>(&mut acc, &rows.map(|p| p.add(4 * q)), wp);
                wp = wp.add(2);
            }
            if rem != 0 {
                let mut tails = [[0u8; 4]; MR];
                for (tl, &p) in tails.iter_mut().zip(&rows) {
                    core::ptr::copy_nonoverlapping(p.add(4 * full), tl.as_mut_ptr(), rem);
                }
                quad::<D>(&mut acc, &core::array::from_fn(|r| tails[r].as_ptr()), wp);
                wp = wp.add(2);
            }
        }
        if needs_sums {
            let c0 = _mm256_loadu_si256(comp.cast());
            let c1 = _mm256_loadu_si256(comp.add(32).cast());
            for (acc_r, &s) in acc.iter_mut().zip(&sums) {
                let sv = _mm256_set1_epi32(s);
                acc_r[0] = _mm256_add_epi32(acc_r[0], _mm256_mullo_epi32(c0, sv));
                acc_r[1] = _mm256_add_epi32(acc_r[1], _mm256_mullo_epi32(c1, sv));
            }
        }
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
    // SAFETY: the caller guarantees AVX2 + AVX-VNNI and valid pointers.
    unsafe { tile(t) }
}
