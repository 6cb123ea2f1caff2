//! Shared SSE2 pieces: fixed-point requantization of 4 i32 lanes (no `pabsd`, `pminsd`,
//! `pcmpeqq` or variable shifts in SSE2, so those are emulated) and the u8 packing.

use core::arch::x86_64::*;

use crate::kernels::reference::requant_fixedpoint::{Q8Output, Requant, Rounding};

#[derive(Clone, Copy)]
pub(crate) struct Rq4 {
    mult_e: __m128i,
    mult_o: __m128i,
    /// Shift counts of lanes 0..4, each in the low qword (for `psrlq`).
    sh: [__m128i; 4],
    rnd_e: __m128i,
    rnd_o: __m128i,
    low_e: __m128i,
    low_o: __m128i,
    lim: __m128i,
    nlim: __m128i,
    even: __m128i,
}

#[inline(always)]
pub(crate) unsafe fn rq4(rq: [Requant; 4], rounding: Rounding) -> Rq4 {
    let m = |j: usize| rq[j].multiplier as i32;
    let rnd = |j: usize| 1i64 << (rq[j].shift - 1);
    Rq4 {
        mult_e: _mm_setr_epi32(m(0), 0, m(2), 0),
        mult_o: _mm_setr_epi32(m(1), 0, m(3), 0),
        sh: core::array::from_fn(|j| _mm_cvtsi32_si128(rq[j].shift as i32)),
        rnd_e: _mm_set_epi64x(rnd(2), rnd(0)),
        rnd_o: _mm_set_epi64x(rnd(3), rnd(1)),
        low_e: _mm_set_epi64x(2 * rnd(2) - 1, 2 * rnd(0) - 1),
        low_o: _mm_set_epi64x(2 * rnd(3) - 1, 2 * rnd(1) - 1),
        lim: _mm_setr_epi32(rq[0].limit, rq[1].limit, rq[2].limit, rq[3].limit),
        nlim: _mm_setr_epi32(!rq[0].limit, !rq[1].limit, !rq[2].limit, !rq[3].limit),
        even: _mm_set1_epi32(if rounding == Rounding::HalfEven {
            -1
        } else {
            0
        }),
    }
}

/// Lanes `j0..j0+4` of a header with `width`-entry arrays.
///
/// # Safety
/// The header is readable.
#[inline(always)]
pub(crate) unsafe fn rq4_load(h: *const u8, width: usize, j0: usize, rounding: Rounding) -> Rq4 {
    // SAFETY (fn contract).
    unsafe {
        rq4(
            core::array::from_fn(|j| super::scalar::rd_requant(h, width, j0 + j)),
            rounding,
        )
    }
}

#[inline(always)]
unsafe fn select(mask: __m128i, a: __m128i, b: __m128i) -> __m128i {
    _mm_or_si128(_mm_and_si128(mask, a), _mm_andnot_si128(mask, b))
}

/// Lane 0 (low qword) of `x`, lane 1 (high qword) of `y`.
#[inline(always)]
unsafe fn merge(x: __m128i, y: __m128i) -> __m128i {
    _mm_castpd_si128(_mm_move_sd(_mm_castsi128_pd(y), _mm_castsi128_pd(x)))
}

/// 64-bit lane equality from 32-bit compares.
#[inline(always)]
unsafe fn eq64(a: __m128i, b: __m128i) -> __m128i {
    let c = _mm_cmpeq_epi32(a, b);
    _mm_and_si128(c, _mm_shuffle_epi32::<0b10_11_00_01>(c))
}

#[inline(always)]
pub(crate) unsafe fn rq4_apply(acc: __m128i, p: &Rq4) -> __m128i {
    let one = _mm_set_epi64x(1, 1);
    let a = select(_mm_cmpgt_epi32(acc, p.lim), p.lim, acc);
    let a = select(_mm_cmpgt_epi32(p.nlim, a), p.nlim, a);
    let sign = _mm_srai_epi32::<31>(a);
    let mag = _mm_sub_epi32(_mm_xor_si128(a, sign), sign);
    let pe = _mm_mul_epu32(mag, p.mult_e);
    let po = _mm_mul_epu32(_mm_srli_epi64::<32>(mag), p.mult_o);
    let xe = _mm_add_epi64(pe, p.rnd_e);
    let xo = _mm_add_epi64(po, p.rnd_o);
    let re = merge(_mm_srl_epi64(xe, p.sh[0]), _mm_srl_epi64(xe, p.sh[2]));
    let ro = merge(_mm_srl_epi64(xo, p.sh[1]), _mm_srl_epi64(xo, p.sh[3]));
    let tie_e = _mm_and_si128(eq64(_mm_and_si128(pe, p.low_e), p.rnd_e), p.even);
    let tie_o = _mm_and_si128(eq64(_mm_and_si128(po, p.low_o), p.rnd_o), p.even);
    let re = _mm_sub_epi64(re, _mm_and_si128(tie_e, _mm_and_si128(re, one)));
    let ro = _mm_sub_epi64(ro, _mm_and_si128(tie_o, _mm_and_si128(ro, one)));
    let r = _mm_or_si128(
        _mm_and_si128(re, _mm_set_epi64x(0xFFFF_FFFF, 0xFFFF_FFFF)),
        _mm_slli_epi64::<32>(ro),
    );
    _mm_sub_epi32(_mm_xor_si128(r, sign), sign)
}

#[derive(Clone, Copy)]
pub(crate) struct Out8 {
    zp: __m128i,
    qmin: __m128i,
    qmax: __m128i,
}

#[inline(always)]
pub(crate) unsafe fn out8(o: &Q8Output) -> Out8 {
    Out8 {
        zp: _mm_set1_epi16(i16::from(o.zp)),
        qmin: _mm_set1_epi8(o.qmin as i8),
        qmax: _mm_set1_epi8(o.qmax as i8),
    }
}

/// 8 signed q values → u8 in the low 8 bytes (`clamp(q + zp, qmin, qmax)`).
#[inline(always)]
pub(crate) unsafe fn pack8(q0: __m128i, q1: __m128i, o: &Out8) -> __m128i {
    let w = _mm_adds_epi16(_mm_packs_epi32(q0, q1), o.zp);
    let b = _mm_packus_epi16(w, w);
    _mm_min_epu8(_mm_max_epu8(b, o.qmin), o.qmax)
}

/// Stores the first `n ≤ 16` bytes of `v`.
///
/// # Safety
/// `dst` is writable for `n` bytes.
#[inline(always)]
pub(crate) unsafe fn store_n(dst: *mut u8, v: __m128i, n: usize) {
    // SAFETY (fn contract).
    unsafe {
        let mut tmp = [0u8; 16];
        _mm_storeu_si128(tmp.as_mut_ptr().cast(), v);
        core::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, n.min(16));
    }
}

/// Channels per depthwise block.
pub(crate) const DW_CR: usize = 8;

/// # Safety
/// `taps[t]` readable for 8 bytes, the block whole.
#[inline(always)]
unsafe fn dw_block<const TAPS: usize>(taps: &[*const u8; TAPS], h: *const u8) -> [__m128i; 2] {
    // SAFETY (fn contract).
    unsafe {
        let z = _mm_setzero_si128();
        let mut acc0 = _mm_loadu_si128(h.cast());
        let mut acc1 = _mm_loadu_si128(h.add(16).cast());
        let mut wq = h.add(16 * DW_CR);
        for q in 0..TAPS.div_ceil(2) {
            let x0 = _mm_loadl_epi64(taps[2 * q].cast());
            let x1 = _mm_loadl_epi64(taps[(2 * q + 1).min(TAPS - 1)].cast());
            let il = _mm_unpacklo_epi8(x0, x1);
            let lo = _mm_unpacklo_epi8(il, z);
            let hi = _mm_unpackhi_epi8(il, z);
            acc0 = _mm_add_epi32(acc0, _mm_madd_epi16(lo, _mm_loadu_si128(wq.cast())));
            acc1 = _mm_add_epi32(acc1, _mm_madd_epi16(hi, _mm_loadu_si128(wq.add(16).cast())));
            wq = wq.add(4 * DW_CR);
        }
        [acc0, acc1]
    }
}

/// The depthwise row body (see the AVX2 one), `cr = 8`.
///
/// # Safety
/// The `Q8DwUkernel::run` contract, packed with `cr = 8`.
#[inline(always)]
pub(crate) unsafe fn dw_row<const TAPS: usize>(r: &super::ukernel::Q8DwRow<'_>) {
    let bb = super::pack::dw_block_bytes(DW_CR, TAPS);
    // SAFETY (fn contract): as in the AVX2 body.
    unsafe {
        let o = out8(&r.out);
        let full = r.channels / DW_CR;
        for blk in 0..r.channels.div_ceil(DW_CR) {
            let h = r.w.add(blk * bb);
            let c0 = blk * DW_CR;
            let rq0 = rq4_load(h, DW_CR, 0, r.out.rounding);
            let rq1 = rq4_load(h, DW_CR, 4, r.out.rounding);
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
                let v = pack8(rq4_apply(acc[0], &rq0), rq4_apply(acc[1], &rq1), &o);
                store_n(dst, v, (r.channels - c0).min(DW_CR));
            }
        }
    }
}
