//! Shared bodies of the 256-bit (ymm) micro-kernels: `MR × 16` tiles, two ymm of eight i32
//! accumulators per row. The per-ISA files instantiate them inside their own
//! `#[target_feature]` functions; everything here is `#[inline(always)]` so that LLVM compiles
//! it (and the intrinsics it calls) with the caller's features and keeps the accumulator
//! arrays in registers.

use core::arch::x86_64::*;

use super::ukernel::{QGemmTile, TileOutput};

/// Columns per tile.
pub(crate) const NR: usize = 16;

/// The k-quad dot product step: `acc[i] += Σ_{j<4} a[4i+j]·b[4i+j]` (u8·s8) per i32 lane.
pub(crate) trait DotQuad {
    /// # Safety
    /// The host supports the implementing ISA.
    unsafe fn dot(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;
}

/// AVX2 `vpmaddubsw` + `vpmaddwd(1)` + `vpaddd`. Exact only if the u8·s8 pair sums fit i16,
/// which [`super::WeightRange::PairSum128`] guarantees for every u8 activation.
pub(crate) struct Maddubs;

impl DotQuad for Maddubs {
    #[inline(always)]
    unsafe fn dot(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(a, b);
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
}

type Acc<const MR: usize> = [[__m256i; 2]; MR];

/// Accumulators initialised from the packed column bias.
#[inline(always)]
unsafe fn init<const MR: usize>(t: &QGemmTile<'_>) -> Acc<MR> {
    // SAFETY (fn contract): `col_bias` holds NR = 16 values.
    let b0 = _mm256_loadu_si256(t.col_bias.cast());
    let b1 = _mm256_loadu_si256(t.col_bias.add(8).cast());
    [[b0, b1]; MR]
}

/// The k-quad body over direct A (`AFormat::Direct`, `BFormat::I8Quads`).
///
/// # Safety
/// `t` satisfies the `QGemmUkernel::run` contract with `t.m == MR`, and the host supports `D`.
#[inline(always)]
pub(crate) unsafe fn tile_c4<D: DotQuad, const MR: usize>(t: &QGemmTile<'_>) {
    if !t.a_rows.is_null() {
        return tile_c4_indirect::<D, MR>(t);
    }
    let mut acc = init::<MR>(t);
    let lda = t.lda;
    let mut a = t.a;
    let mut bp = t.b.cast::<__m256i>();
    for _ in 0..t.k / 4 {
        // Strips are 64-byte aligned and each group is 64 bytes.
        let b0 = _mm256_load_si256(bp);
        let b1 = _mm256_load_si256(bp.add(1));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let av = _mm256_set1_epi32(a.add(r * lda).cast::<i32>().read_unaligned());
            acc_r[0] = D::dot(acc_r[0], av, b0);
            acc_r[1] = D::dot(acc_r[1], av, b1);
        }
        a = a.add(4);
        bp = bp.add(2);
    }
    let rem = t.k % 4;
    if rem != 0 {
        let b0 = _mm256_load_si256(bp);
        let b1 = _mm256_load_si256(bp.add(1));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let mut quad = [0u8; 4];
            core::ptr::copy_nonoverlapping(a.add(r * lda), quad.as_mut_ptr(), rem);
            let av = _mm256_set1_epi32(i32::from_le_bytes(quad));
            acc_r[0] = D::dot(acc_r[0], av, b0);
            acc_r[1] = D::dot(acc_r[1], av, b1);
        }
    }
    finish::<MR>(t, &mut acc);
}

/// [`tile_c4`] over indirect A: the same k-quad steps, the quads of row `r` read from its
/// pointer's runs (`k / segs` bytes each, a multiple of 4, so a quad never straddles two).
///
/// # Safety
/// As [`tile_c4`], with `a_rows` holding `MR` pointers valid for the runs they describe.
#[inline(always)]
unsafe fn tile_c4_indirect<D: DotQuad, const MR: usize>(t: &QGemmTile<'_>) {
    let mut acc = init::<MR>(t);
    let mut rows = [core::ptr::null::<u8>(); MR];
    for (r, p) in rows.iter_mut().enumerate() {
        *p = *t.a_rows.add(r);
    }
    let quads = t.k / t.segs / 4;
    let mut bp = t.b.cast::<__m256i>();
    for s in 0..t.segs {
        let mut run = rows.map(|p| p.add(s * t.seg_stride));
        for _ in 0..quads {
            let b0 = _mm256_load_si256(bp);
            let b1 = _mm256_load_si256(bp.add(1));
            for (acc_r, a) in acc.iter_mut().zip(run.iter_mut()) {
                let av = _mm256_set1_epi32(a.cast::<i32>().read_unaligned());
                acc_r[0] = D::dot(acc_r[0], av, b0);
                acc_r[1] = D::dot(acc_r[1], av, b1);
                *a = a.add(4);
            }
            bp = bp.add(2);
        }
    }
    finish::<MR>(t, &mut acc);
}

/// The 16-bit body (`AFormat::PackedI16Pairs`, `BFormat::I16Pairs`): `vpmaddwd` of a
/// broadcast (a[2p], a[2p+1]) i16 pair with 16 columns × (w[2p], w[2p+1]) i16 pairs, then
/// `vpaddd`. Every product and pair sum fits i32, so this is exact for all inputs.
///
/// # Safety
/// As [`tile_c4`]; the host supports AVX2.
#[inline(always)]
pub(crate) unsafe fn tile_c2<const MR: usize>(t: &QGemmTile<'_>) {
    let mut acc = init::<MR>(t);
    let lda = t.lda;
    let mut a = t.a;
    let mut bp = t.b.cast::<__m256i>();
    for _ in 0..t.k.div_ceil(2) {
        let b0 = _mm256_load_si256(bp);
        let b1 = _mm256_load_si256(bp.add(1));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let av = _mm256_set1_epi32(a.add(r * lda).cast::<i32>().read_unaligned());
            acc_r[0] = _mm256_add_epi32(acc_r[0], _mm256_madd_epi16(av, b0));
            acc_r[1] = _mm256_add_epi32(acc_r[1], _mm256_madd_epi16(av, b1));
        }
        a = a.add(4);
        bp = bp.add(2);
    }
    finish::<MR>(t, &mut acc);
}

/// Row-sum correction (asymmetric weights) and the fused output stage.
#[inline(always)]
unsafe fn finish<const MR: usize>(t: &QGemmTile<'_>, acc: &mut Acc<MR>) {
    if !t.row_sums.is_null() {
        let z0 = _mm256_loadu_si256(t.b_zp.cast());
        let z1 = _mm256_loadu_si256(t.b_zp.add(8).cast());
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let rs = _mm256_set1_epi32(*t.row_sums.add(r));
            acc_r[0] = _mm256_sub_epi32(acc_r[0], _mm256_mullo_epi32(rs, z0));
            acc_r[1] = _mm256_sub_epi32(acc_r[1], _mm256_mullo_epi32(rs, z1));
        }
    }
    let full = t.n == NR;
    match t.out {
        TileOutput::I32 { c } => {
            for (r, acc_r) in acc.iter().enumerate() {
                let dst = c.add(r * t.ldc);
                if full {
                    _mm256_storeu_si256(dst.cast(), acc_r[0]);
                    _mm256_storeu_si256(dst.add(8).cast(), acc_r[1]);
                } else {
                    let mut tmp = [0i32; NR];
                    _mm256_storeu_si256(tmp.as_mut_ptr().cast(), acc_r[0]);
                    _mm256_storeu_si256(tmp.as_mut_ptr().add(8).cast(), acc_r[1]);
                    core::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, t.n);
                }
            }
        }
        TileOutput::U8 {
            c,
            mult,
            zp,
            qmin,
            qmax,
        } => store_q::<MR, false>(t, acc, c, mult, zp, qmin, qmax),
        TileOutput::I8 {
            c,
            mult,
            zp,
            qmin,
            qmax,
        } => store_q::<MR, true>(t, acc, c.cast(), mult, zp, qmin, qmax),
        TileOutput::F32 { c, scale, bias } => {
            let s0 = _mm256_loadu_ps(scale);
            let s1 = _mm256_loadu_ps(scale.add(8));
            let b0 = _mm256_loadu_ps(bias);
            let b1 = _mm256_loadu_ps(bias.add(8));
            for (r, acc_r) in acc.iter().enumerate() {
                // mul then add: two roundings, like the reference (no FMA).
                let y0 = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc_r[0]), s0), b0);
                let y1 = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc_r[1]), s1), b1);
                let dst = c.add(r * t.ldc);
                if full {
                    _mm256_storeu_ps(dst, y0);
                    _mm256_storeu_ps(dst.add(8), y1);
                } else {
                    let mut tmp = [0f32; NR];
                    _mm256_storeu_ps(tmp.as_mut_ptr(), y0);
                    _mm256_storeu_ps(tmp.as_mut_ptr().add(8), y1);
                    core::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, t.n);
                }
            }
        }
    }
}

/// `f32(acc)·mult`, clamped to `[lo, hi]` in float, `vcvtps2dq` (RNE), `+ zp`.
// [fbconv] pub(crate) (was private): shared with `dwconv_avx2`.
#[inline(always)]
pub(crate) unsafe fn requant8(
    acc: __m256i,
    mult: __m256,
    lo: __m256,
    hi: __m256,
    zp: __m256i,
) -> __m256i {
    let x = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), mult);
    // max first: a NaN `x` becomes `lo`, as `f32::max` does in the reference.
    let x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    _mm256_add_epi32(_mm256_cvtps_epi32(x), zp)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn store_q<const MR: usize, const SIGNED: bool>(
    t: &QGemmTile<'_>,
    acc: &Acc<MR>,
    c: *mut u8,
    mult: *const f32,
    zp: i32,
    qmin: i32,
    qmax: i32,
) {
    let m0 = _mm256_loadu_ps(mult);
    let m1 = _mm256_loadu_ps(mult.add(8));
    let lo = _mm256_set1_ps((qmin - zp) as f32);
    let hi = _mm256_set1_ps((qmax - zp) as f32);
    let vzp = _mm256_set1_epi32(zp);
    for (r, acc_r) in acc.iter().enumerate() {
        let q0 = requant8(acc_r[0], m0, lo, hi, vzp);
        let q1 = requant8(acc_r[1], m1, lo, hi, vzp);
        // Values are already in [qmin, qmax] ⊂ the 8-bit range, so the saturating packs only
        // narrow and reorder.
        let w0 = _mm_packs_epi32(_mm256_castsi256_si128(q0), _mm256_extracti128_si256(q0, 1));
        let w1 = _mm_packs_epi32(_mm256_castsi256_si128(q1), _mm256_extracti128_si256(q1, 1));
        let bytes = if SIGNED {
            _mm_packs_epi16(w0, w1)
        } else {
            _mm_packus_epi16(w0, w1)
        };
        let dst = c.add(r * t.ldc);
        if t.n == NR {
            _mm_storeu_si128(dst.cast(), bytes);
        } else {
            let mut tmp = [0u8; NR];
            _mm_storeu_si128(tmp.as_mut_ptr().cast(), bytes);
            core::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, t.n);
        }
    }
}
