//! Shared AVX2 pieces: the fixed-point requantization of 8 i32 lanes and the u8 packing.
//! Everything is `#[inline(always)]` so it compiles with the calling kernel's
//! `#[target_feature(enable = "avx2")]`; callers guarantee AVX2.

use core::arch::x86_64::*;

use crate::kernels::reference::requant_fixedpoint::{Q8Output, Requant, Rounding};

/// Per-lane requantization constants for 8 channels (see `reference::requant_fixedpoint`).
#[derive(Clone, Copy)]
pub(crate) struct Rq8 {
    mult_e: __m256i,
    mult_o: __m256i,
    sh_e: __m256i,
    sh_o: __m256i,
    /// `2^(shift−1) − 1` for ties-to-even (the `+1` comes from the quotient's low bit),
    /// `2^(shift−1)` for ties-away.
    rnd_e: __m256i,
    rnd_o: __m256i,
    lim: __m256i,
    nlim: __m256i,
    /// 1 in every 64-bit lane for ties-to-even, 0 for ties-away.
    odd: __m256i,
}

/// From 8 multipliers, shifts and limits (one per i32 lane).
#[inline(always)]
pub(crate) unsafe fn rq8(mult: __m256i, sh: __m256i, lim: __m256i, rounding: Rounding) -> Rq8 {
    let one = _mm256_set1_epi64x(1);
    let even = rounding == Rounding::HalfEven;
    let sh_e = _mm256_and_si256(sh, _mm256_set1_epi64x(0xFFFF_FFFF));
    let sh_o = _mm256_srli_epi64::<32>(sh);
    let dec = _mm256_set1_epi64x(i64::from(even));
    let rnd_e = _mm256_sub_epi64(_mm256_sllv_epi64(one, _mm256_sub_epi64(sh_e, one)), dec);
    let rnd_o = _mm256_sub_epi64(_mm256_sllv_epi64(one, _mm256_sub_epi64(sh_o, one)), dec);
    Rq8 {
        mult_e: mult,
        mult_o: _mm256_srli_epi64::<32>(mult),
        sh_e,
        sh_o,
        rnd_e,
        rnd_o,
        lim,
        nlim: _mm256_xor_si256(lim, _mm256_set1_epi32(-1)),
        odd: dec,
    }
}

/// Lanes `j0..j0+8` of a header whose parameter arrays are `width` entries long (multiplier at
/// byte `4·width`, shift at `8·width`, limit at `12·width`).
///
/// # Safety
/// The header is readable; AVX2.
#[inline(always)]
pub(crate) unsafe fn rq8_load(h: *const u8, width: usize, j0: usize, rounding: Rounding) -> Rq8 {
    // SAFETY (fn contract): the three 32-byte ranges lie inside the header.
    unsafe {
        let ld = |i: usize| _mm256_loadu_si256(h.add(4 * (i * width + j0)).cast());
        rq8(ld(1), ld(2), ld(3), rounding)
    }
}

/// The same scale in every lane.
#[inline(always)]
pub(crate) unsafe fn rq8_splat(rq: Requant, rounding: Rounding) -> Rq8 {
    rq8(
        _mm256_set1_epi32(rq.multiplier as i32),
        _mm256_set1_epi32(rq.shift as i32),
        _mm256_set1_epi32(rq.limit),
        rounding,
    )
}

/// `requantize_fixedpoint` on 8 lanes (the signed q, before the output zero point).
///
/// With `P = |a|·multiplier = q·2^s + f`, ties-to-even is `(P + 2^(s−1) − 1 + (q & 1)) >> s`:
/// below the tie the sum stays under `(q+1)·2^s`, above it reaches it, and on the tie it adds
/// exactly the low bit of `q` (one `vpsrlvq` + `vpand` instead of a tie compare).
#[inline(always)]
pub(crate) unsafe fn rq8_apply(acc: __m256i, p: &Rq8) -> __m256i {
    let a = _mm256_max_epi32(_mm256_min_epi32(acc, p.lim), p.nlim);
    let sign = _mm256_srai_epi32::<31>(a);
    let mag = _mm256_abs_epi32(a); // i32::MIN is clamped away unless limit = i32::MAX; then
                                   // 0x8000_0000 read as u32 is the right magnitude.
    let pe = _mm256_mul_epu32(mag, p.mult_e);
    let po = _mm256_mul_epu32(_mm256_srli_epi64::<32>(mag), p.mult_o);
    let be = _mm256_and_si256(_mm256_srlv_epi64(pe, p.sh_e), p.odd);
    let bo = _mm256_and_si256(_mm256_srlv_epi64(po, p.sh_o), p.odd);
    let re = _mm256_srlv_epi64(_mm256_add_epi64(_mm256_add_epi64(pe, p.rnd_e), be), p.sh_e);
    let ro = _mm256_srlv_epi64(_mm256_add_epi64(_mm256_add_epi64(po, p.rnd_o), bo), p.sh_o);
    let r = _mm256_blend_epi32::<0b1010_1010>(re, _mm256_slli_epi64::<32>(ro));
    _mm256_sub_epi32(_mm256_xor_si256(r, sign), sign)
}

/// Output constants: zero point (i16 lanes) and the u8 clamp.
#[derive(Clone, Copy)]
pub(crate) struct Out16 {
    zp: __m256i,
    qmin: __m128i,
    qmax: __m128i,
}

#[inline(always)]
pub(crate) unsafe fn out16(o: &Q8Output) -> Out16 {
    Out16 {
        zp: _mm256_set1_epi16(i16::from(o.zp)),
        qmin: _mm_set1_epi8(o.qmin as i8),
        qmax: _mm_set1_epi8(o.qmax as i8),
    }
}

/// 16 signed q values (lanes 0–7 in `q0`, 8–15 in `q1`) → `clamp(q + zp, qmin, qmax)` as u8.
/// The saturating packs/add preserve the clamp because the final range lies inside u8.
#[inline(always)]
pub(crate) unsafe fn pack16(q0: __m256i, q1: __m256i, o: &Out16) -> __m128i {
    let w = _mm256_packs_epi32(q0, q1);
    let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(w);
    let w = _mm256_adds_epi16(w, o.zp);
    let b = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
    _mm_min_epu8(_mm_max_epu8(b, o.qmin), o.qmax)
}

/// Stores the first `n ≤ 16` bytes of `v` at `dst`.
///
/// # Safety
/// `dst` is writable for `n` bytes.
#[inline(always)]
pub(crate) unsafe fn store_n(dst: *mut u8, v: __m128i, n: usize) {
    // SAFETY (fn contract).
    unsafe {
        if n >= 16 {
            _mm_storeu_si128(dst.cast(), v);
        } else {
            let mut tmp = [0u8; 16];
            _mm_storeu_si128(tmp.as_mut_ptr().cast(), v);
            core::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, n);
        }
    }
}

/// Channels per depthwise block.
pub(crate) const DW_CR: usize = 16;

/// One 16-channel depthwise block for one pixel: `taps[t]` point at the block's 16 channels,
/// `h` at the packed block.
///
/// # Safety
/// AVX2; `taps[t]` readable for 16 bytes, the block whole.
#[inline(always)]
unsafe fn dw_block<const TAPS: usize>(taps: &[*const u8; TAPS], h: *const u8) -> [__m256i; 2] {
    // SAFETY (fn contract).
    unsafe {
        let mut acc0 = _mm256_loadu_si256(h.cast());
        let mut acc1 = _mm256_loadu_si256(h.add(32).cast());
        let mut wq = h.add(16 * DW_CR);
        for q in 0..TAPS.div_ceil(2) {
            let x0 = _mm_loadu_si128(taps[2 * q].cast());
            // An odd last pair re-reads tap 2q; its packed second weight is 0.
            let x1 = _mm_loadu_si128(taps[(2 * q + 1).min(TAPS - 1)].cast());
            let lo = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(x0, x1));
            let hi = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(x0, x1));
            let w0 = _mm256_loadu_si256(wq.cast());
            let w1 = _mm256_loadu_si256(wq.add(32).cast());
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(lo, w0));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(hi, w1));
            wq = wq.add(4 * DW_CR);
        }
        [acc0, acc1]
    }
}

/// The depthwise row body: channel blocks outer (requant constants loaded once per block),
/// pixels inner; the last partial block copies its taps into a stack buffer.
///
/// # Safety
/// AVX2 and the `Q8DwUkernel::run` contract, packed with `cr = 16`.
#[inline(always)]
pub(crate) unsafe fn dw_row<const TAPS: usize>(r: &super::ukernel::Q8DwRow<'_>) {
    let bb = super::pack::dw_block_bytes(DW_CR, TAPS);
    // SAFETY (fn contract): full blocks read 16 bytes at channel offset c + 16 ≤ channels of
    // each tap row; partial blocks read only `rem` bytes; outputs stay inside each pixel.
    unsafe {
        let o = out16(&r.out);
        let full = r.channels / DW_CR;
        for blk in 0..r.channels.div_ceil(DW_CR) {
            let h = r.w.add(blk * bb);
            let c0 = blk * DW_CR;
            let rq0 = rq8_load(h, DW_CR, 0, r.out.rounding);
            let rq1 = rq8_load(h, DW_CR, 8, r.out.rounding);
            for px in 0..r.width {
                let a = r.a.add(px * r.a_step);
                let dst = r.c.add(px * r.c_stride + c0);
                let acc = if blk < full {
                    let taps: [*const u8; TAPS] = core::array::from_fn(|t| (*a.add(t)).add(c0));
                    dw_block::<TAPS>(&taps, h)
                } else {
                    let rem = r.channels - c0;
                    let mut buf = [[0u8; DW_CR]; TAPS];
                    for (t, b) in buf.iter_mut().enumerate() {
                        core::ptr::copy_nonoverlapping((*a.add(t)).add(c0), b.as_mut_ptr(), rem);
                    }
                    let taps: [*const u8; TAPS] = core::array::from_fn(|t| buf[t].as_ptr());
                    dw_block::<TAPS>(&taps, h)
                };
                let v = pack16(rq8_apply(acc[0], &rq0), rq8_apply(acc[1], &rq1), &o);
                store_n(dst, v, (r.channels - c0).min(DW_CR));
            }
        }
    }
}

/// Widens `rows` rows of `kc` bytes (`src_stride` bytes apart) to i16 rows of `kcp` values
/// (`kc..kcp` zero) at `dst`: the A operand of the `I16Pairs` GEMM kernels.
///
/// # Safety
/// AVX2; `src + i·src_stride` readable for `kc` bytes and `dst` writable for `rows·kcp` values.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn widen_rows(
    src: *const u8,
    src_stride: usize,
    rows: usize,
    kc: usize,
    kcp: usize,
    dst: *mut i16,
) {
    // SAFETY (fn contract): 16-byte loads stay below `kc`, the tail is copied byte by byte;
    // stores stay inside row `i`'s `kcp` values.
    unsafe {
        for i in 0..rows {
            let (s, d) = (src.add(i * src_stride), dst.add(i * kcp));
            let mut k = 0;
            while k + 16 <= kc {
                let v = _mm256_cvtepu8_epi16(_mm_loadu_si128(s.add(k).cast()));
                _mm256_storeu_si256(d.add(k).cast(), v);
                k += 16;
            }
            while k < kc {
                *d.add(k) = i16::from(*s.add(k));
                k += 1;
            }
            while k < kcp {
                *d.add(k) = 0;
                k += 1;
            }
        }
    }
}

/// The `c32` depthwise row body ([`super::ukernel::Q8DwLayout::Quads`]): channel blocks of
/// 32 outer (requant constants loaded once per block, in the fbgemm `c32` lane order),
/// pixels inner; the block's dot products are the fbgemm `c32` body's
/// ([`crate::kernels::fbgemm::dwconv_c32_avx2::block`], exact for every `w − w_zp`), whose
/// accumulator order makes the i32 → u8 packs land in channel order. With ≥ 32 channels the
/// last block overlaps the previous one (packed so, see `fbgemm::DwLayout::block_start`);
/// fewer than 32 channels make one block through a zero-padded stack copy of the taps.
///
/// # Safety
/// AVX2 and the `Q8DwUkernel::run` contract, packed with the quads layout (`TAPS = 4G + 1`).
#[inline(always)]
pub(crate) unsafe fn dw_row_c32<const TAPS: usize>(r: &super::ukernel::Q8DwRow<'_>) {
    use crate::kernels::fbgemm::dwconv_c32_avx2::{block, spread_mask};
    const CR: usize = 32;
    let bb = super::pack::dw_quads_block_bytes(TAPS);
    // SAFETY (fn contract): with ≥ 32 channels blocks read 32 bytes at channel offset
    // c0 ≤ channels − 32 of each tap row; otherwise only `channels` bytes are copied; outputs
    // stay inside each pixel.
    unsafe {
        // No closures around intrinsics (a closure does not inherit `#[target_feature]`).
        let masks = [
            spread_mask(0),
            spread_mask(1),
            spread_mask(2),
            spread_mask(3),
        ];
        let zp = _mm256_set1_epi16(i16::from(r.out.zp));
        let (qmin, qmax) = (
            _mm256_set1_epi8(r.out.qmin as i8),
            _mm256_set1_epi8(r.out.qmax as i8),
        );
        let ch = r.channels;
        for blk in 0..ch.div_ceil(CR) {
            let h = r.w.add(blk * bb);
            let c0 = if ch >= CR { (blk * CR).min(ch - CR) } else { 0 };
            let rq = [
                rq8_load(h, CR, 0, r.out.rounding),
                rq8_load(h, CR, 8, r.out.rounding),
                rq8_load(h, CR, 16, r.out.rounding),
                rq8_load(h, CR, 24, r.out.rounding),
            ];
            let wq = h.add(16 * CR);
            for px in 0..r.width {
                let a = r.a.add(px * r.a_step);
                let dst = r.c.add(px * r.c_stride + c0);
                let acc = if ch >= CR {
                    let taps: [*const u8; TAPS] = core::array::from_fn(|t| *a.add(t));
                    block::<TAPS>(&taps, c0, wq, h.cast(), &masks)
                } else {
                    let mut buf = [[0u8; CR]; TAPS];
                    for (t, b) in buf.iter_mut().enumerate() {
                        core::ptr::copy_nonoverlapping(*a.add(t), b.as_mut_ptr(), ch);
                    }
                    let taps: [*const u8; TAPS] = core::array::from_fn(|t| buf[t].as_ptr());
                    block::<TAPS>(&taps, 0, wq, h.cast(), &masks)
                };
                let q = [
                    rq8_apply(acc[0], &rq[0]),
                    rq8_apply(acc[1], &rq[1]),
                    rq8_apply(acc[2], &rq[2]),
                    rq8_apply(acc[3], &rq[3]),
                ];
                // Per half L: packs(q0, q1) = channels 16L + 0..8, packs(q2, q3) = 16L + 8..16;
                // the saturating zp add and byte pack keep the clamp (final range inside u8).
                let w01 = _mm256_adds_epi16(_mm256_packs_epi32(q[0], q[1]), zp);
                let w23 = _mm256_adds_epi16(_mm256_packs_epi32(q[2], q[3]), zp);
                let v = _mm256_packus_epi16(w01, w23);
                let v = _mm256_min_epu8(_mm256_max_epu8(v, qmin), qmax);
                let n = ch.min(CR);
                if n == CR {
                    _mm256_storeu_si256(dst.cast(), v);
                } else {
                    let mut tmp = [0u8; CR];
                    _mm256_storeu_si256(tmp.as_mut_ptr().cast(), v);
                    core::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, n);
                }
            }
        }
    }
}
