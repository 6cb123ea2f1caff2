//! Shared body of the 512-bit (zmm) micro-kernels: `MR × 64` tiles, four zmm of sixteen i32
//! accumulators per row (`MR = 6`: 24 accumulators + 4 B + 1 A broadcast of 32 registers; the
//! research note's 6×64 shape, which also covers N = 64 conv layers in one strip).

use core::arch::x86_64::*;

use super::ukernel::{QGemmTile, TileOutput};

/// Columns per tile.
pub(crate) const NR: usize = 64;

type Acc<const MR: usize> = [[__m512i; 4]; MR];

/// The k-quad body with `vpdpbusd` over direct A (`AFormat::Direct`, `BFormat::I8Quads`).
///
/// # Safety
/// `t` satisfies the `QGemmUkernel::run` contract with `t.m == MR`; the host supports
/// AVX-512F/BW and AVX512-VNNI.
#[inline(always)]
pub(crate) unsafe fn tile_c4_vnni<const MR: usize>(t: &QGemmTile<'_>) {
    let mut bias = [_mm512_setzero_si512(); 4];
    for (j, b) in bias.iter_mut().enumerate() {
        *b = _mm512_loadu_si512(t.col_bias.add(16 * j).cast());
    }
    let mut acc: Acc<MR> = [bias; MR];
    let lda = t.lda;
    let mut a = t.a;
    let mut bp = t.b;
    for _ in 0..t.k / 4 {
        let mut b = [_mm512_setzero_si512(); 4];
        for (j, bj) in b.iter_mut().enumerate() {
            *bj = _mm512_loadu_si512(bp.add(64 * j).cast());
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_epi32(a.add(r * lda).cast::<i32>().read_unaligned());
            for (acc_rj, bj) in acc_r.iter_mut().zip(&b) {
                *acc_rj = _mm512_dpbusd_epi32(*acc_rj, av, *bj);
            }
        }
        a = a.add(4);
        bp = bp.add(256);
    }
    let rem = t.k % 4;
    if rem != 0 {
        let mut b = [_mm512_setzero_si512(); 4];
        for (j, bj) in b.iter_mut().enumerate() {
            *bj = _mm512_loadu_si512(bp.add(64 * j).cast());
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let mut quad = [0u8; 4];
            core::ptr::copy_nonoverlapping(a.add(r * lda), quad.as_mut_ptr(), rem);
            let av = _mm512_set1_epi32(i32::from_le_bytes(quad));
            for (acc_rj, bj) in acc_r.iter_mut().zip(&b) {
                *acc_rj = _mm512_dpbusd_epi32(*acc_rj, av, *bj);
            }
        }
    }
    finish::<MR>(t, &mut acc);
}

/// Row-sum correction (asymmetric weights) and the fused output stage.
#[inline(always)]
unsafe fn finish<const MR: usize>(t: &QGemmTile<'_>, acc: &mut Acc<MR>) {
    if !t.row_sums.is_null() {
        for j in 0..4 {
            let z = _mm512_loadu_si512(t.b_zp.add(16 * j).cast());
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let rs = _mm512_set1_epi32(*t.row_sums.add(r));
                acc_r[j] = _mm512_sub_epi32(acc_r[j], _mm512_mullo_epi32(rs, z));
            }
        }
    }
    let full = t.n == NR;
    match t.out {
        TileOutput::I32 { c } => {
            for (r, acc_r) in acc.iter().enumerate() {
                let mut tmp = [0i32; NR];
                let dst = if full {
                    c.add(r * t.ldc)
                } else {
                    tmp.as_mut_ptr()
                };
                for (j, v) in acc_r.iter().enumerate() {
                    _mm512_storeu_si512(dst.add(16 * j).cast(), *v);
                }
                if !full {
                    core::ptr::copy_nonoverlapping(tmp.as_ptr(), c.add(r * t.ldc), t.n);
                }
            }
        }
        TileOutput::U8 {
            c,
            mult,
            zp,
            qmin,
            qmax,
        } => store_q::<MR>(t, acc, c, mult, zp, qmin, qmax),
        TileOutput::I8 {
            c,
            mult,
            zp,
            qmin,
            qmax,
        } => store_q::<MR>(t, acc, c.cast(), mult, zp, qmin, qmax),
        TileOutput::F32 { c, scale, bias } => {
            let mut s = [_mm512_setzero_ps(); 4];
            let mut b = [_mm512_setzero_ps(); 4];
            for j in 0..4 {
                s[j] = _mm512_loadu_ps(scale.add(16 * j));
                b[j] = _mm512_loadu_ps(bias.add(16 * j));
            }
            for (r, acc_r) in acc.iter().enumerate() {
                let mut tmp = [0f32; NR];
                let dst = if full {
                    c.add(r * t.ldc)
                } else {
                    tmp.as_mut_ptr()
                };
                for j in 0..4 {
                    // mul then add: two roundings, like the reference (no FMA).
                    let y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc_r[j]), s[j]), b[j]);
                    _mm512_storeu_ps(dst.add(16 * j), y);
                }
                if !full {
                    core::ptr::copy_nonoverlapping(tmp.as_ptr(), c.add(r * t.ldc), t.n);
                }
            }
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn store_q<const MR: usize>(
    t: &QGemmTile<'_>,
    acc: &Acc<MR>,
    c: *mut u8,
    mult: *const f32,
    zp: i32,
    qmin: i32,
    qmax: i32,
) {
    let mut m = [_mm512_setzero_ps(); 4];
    for (j, mj) in m.iter_mut().enumerate() {
        *mj = _mm512_loadu_ps(mult.add(16 * j));
    }
    let lo = _mm512_set1_ps((qmin - zp) as f32);
    let hi = _mm512_set1_ps((qmax - zp) as f32);
    let vzp = _mm512_set1_epi32(zp);
    let full = t.n == NR;
    for (r, acc_r) in acc.iter().enumerate() {
        let mut tmp = [0u8; NR];
        let dst = if full {
            c.add(r * t.ldc)
        } else {
            tmp.as_mut_ptr()
        };
        for j in 0..4 {
            let x = _mm512_mul_ps(_mm512_cvtepi32_ps(acc_r[j]), m[j]);
            // max first: a NaN `x` becomes `lo`, as `f32::max` does in the reference.
            let x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
            let q = _mm512_add_epi32(_mm512_cvtps_epi32(x), vzp);
            // In [qmin, qmax] ⊂ 8-bit range: the truncating narrow (vpmovdb) is exact for u8
            // and i8 alike.
            _mm_storeu_si128(dst.add(16 * j).cast(), _mm512_cvtepi32_epi8(q));
        }
        if !full {
            core::ptr::copy_nonoverlapping(tmp.as_ptr(), c.add(r * t.ldc), t.n);
        }
    }
}
