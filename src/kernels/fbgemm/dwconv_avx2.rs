//! Shared AVX2 body of the depthwise kernels (instantiated per tap count by
//! `dwconv_u8s8_3x3_avx2` and `dwconv_u8s8_5x5_avx2`). Everything is `#[inline(always)]` so it
//! compiles with the caller's `#[target_feature]`.
//!
//! Per output pixel and 16-channel block, for each tap pair `(t, t+1)`: two `vpmovzxbw` loads
//! widen 16 channels of each tap to i16, then `vpslld`/`vpsrld` + `vpblendw` form the i16 pairs
//! `(a[t][c], a[t+1][c])`, even channels in one ymm and odd channels in the other (the packed
//! lane order, see [`super::dwconv`]), and `vpmaddwd` against the packed weight pairs gives one
//! exact i32 per channel: no `vpmaddubsw`, so no saturation for any u8 × s8 input, and only two
//! cross-lane shuffles per tap pair. An odd last tap is paired with a zero weight. The fused
//! output stage is the one of the GEMM (`ymm::requant8`), run on the even/odd halves; one
//! `vpunpck{l,h}dq` restores channel order before the store, so results are bit-exact with the
//! reference.

use core::arch::x86_64::*;

use super::dwconv::{DwConvTile, DW_CB};
use super::ukernel::TileOutput;
use super::ymm::requant8;

/// Two accumulators: even channels `c0, c0+2, …, c0+14` and odd channels `c0+1, …, c0+15`.
type Acc = [__m256i; 2];

/// The dot products of one 16-channel block at channel offset `c0` of every tap pointer.
///
/// # Safety
/// AVX2; every pointer is valid for `c0 + 16` bytes; `w` is the block's packed weights and
/// `bias` holds 16 values (lane order).
#[inline(always)]
unsafe fn block<const T: usize>(
    ptrs: &[*const u8; T],
    c0: usize,
    w: *const i16,
    bias: *const i32,
) -> Acc {
    let mut even = _mm256_loadu_si256(bias.cast());
    let mut odd = _mm256_loadu_si256(bias.add(8).cast());
    let mut p = 0;
    while p + 1 < T {
        let a = _mm256_cvtepu8_epi16(_mm_loadu_si128(ptrs[p].add(c0).cast()));
        let b = _mm256_cvtepu8_epi16(_mm_loadu_si128(ptrs[p + 1].add(c0).cast()));
        // i32 lane j: (a[2j], b[2j]) and (a[2j+1], b[2j+1]).
        let pe = _mm256_blend_epi16::<0xAA>(a, _mm256_slli_epi32::<16>(b));
        let po = _mm256_blend_epi16::<0xAA>(_mm256_srli_epi32::<16>(a), b);
        let wp = w.add(p / 2 * 2 * DW_CB);
        even = _mm256_add_epi32(even, _mm256_madd_epi16(pe, _mm256_loadu_si256(wp.cast())));
        odd = _mm256_add_epi32(
            odd,
            _mm256_madd_epi16(po, _mm256_loadu_si256(wp.add(DW_CB).cast())),
        );
        p += 2;
    }
    if T % 2 == 1 {
        let a = _mm256_cvtepu8_epi16(_mm_loadu_si128(ptrs[T - 1].add(c0).cast()));
        // The pair partner's weight is 0, so the odd channel in the high half of `a` is
        // ignored for the even lanes.
        let po = _mm256_srli_epi32::<16>(a);
        let wp = w.add((T - 1) / 2 * 2 * DW_CB);
        even = _mm256_add_epi32(even, _mm256_madd_epi16(a, _mm256_loadu_si256(wp.cast())));
        odd = _mm256_add_epi32(
            odd,
            _mm256_madd_epi16(po, _mm256_loadu_si256(wp.add(DW_CB).cast())),
        );
    }
    [even, odd]
}

/// Even/odd halves → channels `0..8` and `8..16`.
#[inline(always)]
unsafe fn to_channel_order(e: __m256i, o: __m256i) -> [__m256i; 2] {
    let x = _mm256_unpacklo_epi32(e, o); // channels 0..4 | 8..12
    let y = _mm256_unpackhi_epi32(e, o); // channels 4..8 | 12..16
    [
        _mm256_permute2x128_si256::<0x20>(x, y),
        _mm256_permute2x128_si256::<0x31>(x, y),
    ]
}

/// Stores channels `c0..c0+n` (`n ≤ 16`) of one pixel at element offset `off`.
///
/// # Safety
/// AVX2; the output holds `n` elements at `off`; parameter pointers cover `c0 + 16` lanes.
#[inline(always)]
unsafe fn store(out: &TileOutput, off: usize, c0: usize, acc: &Acc, n: usize) {
    match *out {
        TileOutput::I32 { c } => {
            let v = to_channel_order(acc[0], acc[1]);
            let dst = c.add(off);
            if n == DW_CB {
                _mm256_storeu_si256(dst.cast(), v[0]);
                _mm256_storeu_si256(dst.add(8).cast(), v[1]);
            } else {
                let mut tmp = [0i32; DW_CB];
                _mm256_storeu_si256(tmp.as_mut_ptr().cast(), v[0]);
                _mm256_storeu_si256(tmp.as_mut_ptr().add(8).cast(), v[1]);
                core::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, n);
            }
        }
        TileOutput::U8 {
            c,
            mult,
            zp,
            qmin,
            qmax,
        } => store_q::<false>(c.add(off), mult.add(c0), zp, qmin, qmax, acc, n),
        TileOutput::I8 {
            c,
            mult,
            zp,
            qmin,
            qmax,
        } => store_q::<true>(c.add(off).cast(), mult.add(c0), zp, qmin, qmax, acc, n),
        TileOutput::F32 { c, scale, bias } => {
            let (s, b) = (scale.add(c0), bias.add(c0));
            // mul then add: two roundings, like the reference (no FMA).
            let ye = _mm256_add_ps(
                _mm256_mul_ps(_mm256_cvtepi32_ps(acc[0]), _mm256_loadu_ps(s)),
                _mm256_loadu_ps(b),
            );
            let yo = _mm256_add_ps(
                _mm256_mul_ps(_mm256_cvtepi32_ps(acc[1]), _mm256_loadu_ps(s.add(8))),
                _mm256_loadu_ps(b.add(8)),
            );
            let v = to_channel_order(_mm256_castps_si256(ye), _mm256_castps_si256(yo));
            let dst = c.add(off);
            if n == DW_CB {
                _mm256_storeu_si256(dst.cast(), v[0]);
                _mm256_storeu_si256(dst.add(8).cast(), v[1]);
            } else {
                let mut tmp = [0f32; DW_CB];
                _mm256_storeu_si256(tmp.as_mut_ptr().cast(), v[0]);
                _mm256_storeu_si256(tmp.as_mut_ptr().add(8).cast(), v[1]);
                core::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, n);
            }
        }
    }
}

#[inline(always)]
unsafe fn store_q<const SIGNED: bool>(
    dst: *mut u8,
    mult: *const f32,
    zp: i32,
    qmin: i32,
    qmax: i32,
    acc: &Acc,
    n: usize,
) {
    let lo = _mm256_set1_ps((qmin - zp) as f32);
    let hi = _mm256_set1_ps((qmax - zp) as f32);
    let vzp = _mm256_set1_epi32(zp);
    let qe = requant8(acc[0], _mm256_loadu_ps(mult), lo, hi, vzp);
    let qo = requant8(acc[1], _mm256_loadu_ps(mult.add(8)), lo, hi, vzp);
    // Values are in [qmin, qmax] ⊂ the 8-bit range: the saturating packs only narrow.
    // unpack{lo,hi}: channels 0..4 | 8..12 and 4..8 | 12..16; packs → i16 channels 0..8 | 8..16.
    let w = _mm256_packs_epi32(_mm256_unpacklo_epi32(qe, qo), _mm256_unpackhi_epi32(qe, qo));
    let (w0, w1) = (_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
    let bytes = if SIGNED {
        _mm_packs_epi16(w0, w1)
    } else {
        _mm_packus_epi16(w0, w1)
    };
    if n == DW_CB {
        _mm_storeu_si128(dst.cast(), bytes);
    } else {
        let mut tmp = [0u8; DW_CB];
        _mm_storeu_si128(tmp.as_mut_ptr().cast(), bytes);
        core::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, n);
    }
}

/// The whole tile: every pixel, full 16-channel blocks straight from the input, the channel
/// tail through a zero-padded stack copy (so no load reads past a pixel's `channels` bytes).
///
/// # Safety
/// AVX2 and the [`super::DwConvUkernel::run`] contract for `T` taps.
#[inline(always)]
pub(crate) unsafe fn tile<const T: usize>(t: &DwConvTile<'_>) {
    let block_len = T.div_ceil(2) * 2 * DW_CB;
    let ch = t.channels;
    let full = ch / DW_CB * DW_CB;
    for px in 0..t.pixels {
        let ptrs: [*const u8; T] = t.pixel_taps::<T>(px);
        let off = px * t.out_stride;
        let mut c0 = 0;
        let mut w = t.weights;
        while c0 < full {
            let acc = block::<T>(&ptrs, c0, w, t.bias.add(c0));
            store(&t.out, off + c0, c0, &acc, DW_CB);
            c0 += DW_CB;
            w = w.add(block_len);
        }
        if c0 < ch {
            let rem = ch - c0;
            let mut local = [[0u8; DW_CB]; T];
            for (dst, &src) in local.iter_mut().zip(&ptrs) {
                core::ptr::copy_nonoverlapping(src.add(c0), dst.as_mut_ptr(), rem);
            }
            let lp: [*const u8; T] = core::array::from_fn(|i| local[i].as_ptr());
            let acc = block::<T>(&lp, 0, w, t.bias.add(c0));
            store(&t.out, off + c0, c0, &acc, rem);
        }
    }
}
