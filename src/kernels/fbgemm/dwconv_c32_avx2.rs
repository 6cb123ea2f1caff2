//! Shared AVX2 body of the `c32` depthwise kernels (`dwconv_u8s8_3x3c32_avx2`,
//! `dwconv_u8s8_5x5c32_avx2`): 32 channels per block, byte quads of four taps, `vpmaddubsw`
//! made exact by the pack-time direct/split choice per 4-tap group (layout and exactness
//! argument in [`super::dwconv`], "The `c32` layout"). Everything is `#[inline(always)]` so
//! it compiles with the caller's `#[target_feature]`.
//!
//! Per output pixel and block: four `vpunpck{l,h}bw` + four `vpunpck{l,h}wd` per 4-tap group
//! (1 shuffle per 16 MACs), `vpmaddubsw` + `vpmaddwd` (by 1, or 4 for split groups) per register, plus one `vpmaddubsw` and
//! one i16 add per register for split groups; four `vpshufb` + `vpmaddwd` for the last tap. The
//! accumulators `acc[k]` hold channels `16L + 4k + j` (half `L`, dword `j`), so the u8/i8
//! output packs (`vpackssdw` ×2, `vpack{us,ss}wb`) land in channel order with no permute; i32
//! and f32 outputs take one `vperm2i128` per 8 channels.

use core::arch::x86_64::*;

use super::dwconv::{DwConvTile, DwLayout};
use super::ukernel::TileOutput;
use super::ymm::requant8;

/// Channels per block.
const CB: usize = 32;

/// Accumulators: register `k` holds channels `16L + 4k + j`.
pub(crate) type Acc = [__m256i; 4];

/// Masks spreading bytes `4k..4k+4` of each 128-bit half to one byte per dword (zero-extended).
#[inline(always)]
pub(crate) unsafe fn spread_mask(k: i8) -> __m256i {
    let b = 4 * k;
    let z = -128i8; // 0x80: zero byte
    _mm256_setr_epi8(
        b,
        z,
        z,
        z,
        b + 1,
        z,
        z,
        z,
        b + 2,
        z,
        z,
        z,
        b + 3,
        z,
        z,
        z,
        b,
        z,
        z,
        z,
        b + 1,
        z,
        z,
        z,
        b + 2,
        z,
        z,
        z,
        b + 3,
        z,
        z,
        z,
    )
}

/// The dot products of one 32-channel block at channel offset `c0` of every tap pointer.
///
/// # Safety
/// AVX2; every pointer is valid for `c0 + 32` bytes; `w` is the block's packed bytes and
/// `bias` holds 32 values (lane order).
#[inline(always)]
pub(crate) unsafe fn block<const T: usize>(
    ptrs: &[*const u8; T],
    c0: usize,
    w: *const u8,
    bias: *const i32,
    masks: &[__m256i; 4],
) -> Acc {
    let ones = _mm256_set1_epi16(1);
    let fours = _mm256_set1_epi16(4);
    // No closures (`array::from_fn`) in the SIMD code: a closure does not inherit the caller's
    // `#[target_feature]`, and an outlined one turns every intrinsic into a call.
    let mut acc: Acc = [
        _mm256_loadu_si256(bias.cast()),
        _mm256_loadu_si256(bias.add(8).cast()),
        _mm256_loadu_si256(bias.add(16).cast()),
        _mm256_loadu_si256(bias.add(24).cast()),
    ];
    let split = w.cast::<u32>().read_unaligned();
    let mut lo = [_mm256_setzero_si256(); 4];
    let groups = T / 4;
    let mut g = 0;
    while g < groups {
        let y0 = _mm256_loadu_si256(ptrs[4 * g].add(c0).cast());
        let y1 = _mm256_loadu_si256(ptrs[4 * g + 1].add(c0).cast());
        let y2 = _mm256_loadu_si256(ptrs[4 * g + 2].add(c0).cast());
        let y3 = _mm256_loadu_si256(ptrs[4 * g + 3].add(c0).cast());
        let p01l = _mm256_unpacklo_epi8(y0, y1);
        let p01h = _mm256_unpackhi_epi8(y0, y1);
        let p23l = _mm256_unpacklo_epi8(y2, y3);
        let p23h = _mm256_unpackhi_epi8(y2, y3);
        let q = [
            _mm256_unpacklo_epi16(p01l, p23l),
            _mm256_unpackhi_epi16(p01l, p23l),
            _mm256_unpacklo_epi16(p01h, p23h),
            _mm256_unpackhi_epi16(p01h, p23h),
        ];
        let wg = w.add(32 + g * 256);
        if split & (1 << g) == 0 {
            for k in 0..4 {
                let h = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256(wg.add(32 * k).cast()));
                acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(h, ones));
            }
        } else {
            for k in 0..4 {
                let h = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256(wg.add(32 * k).cast()));
                acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(h, fours));
                let l = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256(wg.add(128 + 32 * k).cast()));
                lo[k] = _mm256_add_epi16(lo[k], l);
            }
        }
        g += 1;
    }
    let y = _mm256_loadu_si256(ptrs[T - 1].add(c0).cast());
    let wl = w.add(32 + groups * 256);
    for k in 0..4 {
        let x = _mm256_shuffle_epi8(y, masks[k]);
        acc[k] = _mm256_add_epi32(
            acc[k],
            _mm256_madd_epi16(x, _mm256_loadu_si256(wl.add(32 * k).cast())),
        );
    }
    if split != 0 {
        for k in 0..4 {
            acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(lo[k], ones));
        }
    }
    acc
}

/// Accumulators → channels `0..8, 8..16, 16..24, 24..32`.
#[inline(always)]
unsafe fn to_channel_order(a: &Acc) -> Acc {
    [
        _mm256_permute2x128_si256::<0x20>(a[0], a[1]),
        _mm256_permute2x128_si256::<0x20>(a[2], a[3]),
        _mm256_permute2x128_si256::<0x31>(a[0], a[1]),
        _mm256_permute2x128_si256::<0x31>(a[2], a[3]),
    ]
}

/// Stores 32 lanes of `v` (channel order, 4 × 8 elements of 4 bytes) or the first `n`.
#[inline(always)]
unsafe fn store32<E: Copy + Default>(dst: *mut E, v: &Acc, n: usize) {
    if n == CB {
        for (k, &x) in v.iter().enumerate() {
            _mm256_storeu_si256(dst.add(8 * k).cast(), x);
        }
    } else {
        let mut tmp = [E::default(); CB];
        for (k, &x) in v.iter().enumerate() {
            _mm256_storeu_si256(tmp.as_mut_ptr().add(8 * k).cast(), x);
        }
        core::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, n);
    }
}

/// Stores the first `n ≤ 32` channels of one block at element offset `off`; the block's
/// output parameters sit at position `c0` of the parameter arrays.
///
/// # Safety
/// AVX2; the output holds `n` elements at `off`; parameter pointers cover `c0 + 32` lanes.
#[inline(always)]
unsafe fn store(out: &TileOutput, off: usize, c0: usize, acc: &Acc, n: usize) {
    match *out {
        TileOutput::I32 { c } => store32(c.add(off), &to_channel_order(acc), n),
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
            let mut y = *acc;
            for (k, v) in y.iter_mut().enumerate() {
                *v = _mm256_castps_si256(_mm256_add_ps(
                    _mm256_mul_ps(_mm256_cvtepi32_ps(*v), _mm256_loadu_ps(s.add(8 * k))),
                    _mm256_loadu_ps(b.add(8 * k)),
                ));
            }
            store32(c.add(off), &to_channel_order(&y), n);
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
    let mut q = *acc;
    for (k, v) in q.iter_mut().enumerate() {
        *v = requant8(*v, _mm256_loadu_ps(mult.add(8 * k)), lo, hi, vzp);
    }
    // Values are in [qmin, qmax] ⊂ the 8-bit range: the saturating packs only narrow. Per half
    // L: packs(q0, q1) = channels 16L + 0..8, packs(q2, q3) = 16L + 8..16, then the byte pack
    // gives 16L + 0..16: channel order.
    let w01 = _mm256_packs_epi32(q[0], q[1]);
    let w23 = _mm256_packs_epi32(q[2], q[3]);
    let bytes = if SIGNED {
        _mm256_packs_epi16(w01, w23)
    } else {
        _mm256_packus_epi16(w01, w23)
    };
    if n == CB {
        _mm256_storeu_si256(dst.cast(), bytes);
    } else {
        let mut tmp = [0u8; CB];
        _mm256_storeu_si256(tmp.as_mut_ptr().cast(), bytes);
        core::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, n);
    }
}

/// The whole tile: every pixel; with ≥ 32 channels every block straight from the input (the
/// last block overlaps the previous one, [`DwLayout::block_start`]), with fewer one block
/// through a zero-padded stack copy (so no load reads past a pixel's `channels` bytes).
///
/// # Safety
/// AVX2 and the [`super::DwConvUkernel::run`] contract for `T = 4G + 1` taps, weights packed
/// in [`DwLayout::C32Quads`].
#[inline(always)]
pub(crate) unsafe fn tile<const T: usize>(t: &DwConvTile<'_>) {
    const { assert!(T % 4 == 1) };
    let block_len = super::dwconv::c32_block_bytes(T);
    debug_assert_eq!(DwLayout::C32Quads.block(), CB);
    let masks = [
        spread_mask(0),
        spread_mask(1),
        spread_mask(2),
        spread_mask(3),
    ];
    let ch = t.channels;
    let blocks = ch.div_ceil(CB);
    let w0 = t.weights.cast::<u8>();
    for px in 0..t.pixels {
        let ptrs: [*const u8; T] = t.pixel_taps::<T>(px);
        let off = px * t.out_stride;
        if ch < CB {
            let mut local = [[0u8; CB]; T];
            for (dst, &src) in local.iter_mut().zip(&ptrs) {
                core::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), ch);
            }
            let lp: [*const u8; T] = core::array::from_fn(|i| local[i].as_ptr());
            let acc = block::<T>(&lp, 0, w0, t.bias, &masks);
            store(&t.out, off, 0, &acc, ch);
            continue;
        }
        for b in 0..blocks {
            // Block b covers channels c0..c0 + 32 (the last one may overlap b − 1); its bias
            // and parameters sit at positions 32·b.
            let c0 = (b * CB).min(ch - CB);
            let p = b * CB;
            let acc = block::<T>(&ptrs, c0, w0.add(b * block_len), t.bias.add(p), &masks);
            store(&t.out, off + c0, p, &acc, CB);
        }
    }
}
