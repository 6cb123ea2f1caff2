//! Weight packing (once, at load time) for the GEMM/conv and depthwise micro-kernels.
//!
//! # GEMM/conv layout ([`PackedQ8Gemm`]), per block of `nr` output channels
//!
//! ```text
//! header (hdr = round_up(18·nr, 16) bytes):
//!   [nr × i32 bias']  bias'[n] = bias[n] − a_zp · Σ_k (w[n,k] − w_zp[n])
//!   [nr × u32 multiplier] [nr × u32 shift] [nr × i32 limit]   (fixed-point requant)
//!   [nr × 2 u8 w_zp, each duplicated]                         (the kzp vector, pair layout)
//! body, for each tap t < ks, for each 8-chunk of kc (kc padded to kc_align = 8 with w_zp):
//!   for each k-pair p < 4: nr columns × (w[n, t·kc + k0+2p], w[n, t·kc + k0+2p+1]) u8
//! ```
//!
//! The kernel zero-extends A and B to i16, subtracts the duplicated w_zp from B (QNNPACK
//! `vxb = b − kzp`) and accumulates `pmaddwd` pair products onto bias'. Since
//! `Σ a·(w − w_zp) = Σ (a − a_zp)(w − w_zp) + a_zp·Σ (w − w_zp)`, folding the second term into
//! the bias makes the activation zero point free (QNNPACK `pack_q8conv_w`). Padded k lanes hold
//! w_zp (product 0, whatever A holds); padded columns hold zeros and `Requant::ZERO`.
//!
//! # GEMM/conv layout for [`Q8GemmLayout::I16Pairs`] kernels
//!
//! Same header (the kzp bytes unused); body, for each tap t < ks, for each k-pair p < kcp/2
//! (kc padded to `kc_align` = 2): nr columns × (w[n, k] − w_zp[n], w[n, k+1] − w_zp[n]) as
//! i16 (in [−255, 255]), padding lanes and columns 0. The driver widens A to i16 (u8 values,
//! zero-extended), so one `vpmaddwd` with a broadcast A pair does 16 exact MACs with no
//! per-tile work on B; bias' is the same as above.
//!
//! # GEMM/conv layout for [`Q8GemmLayout::S8Quads`] kernels (the VNNI flip)
//!
//! Header: the common one, then `nr × i32` `128 − w_zp[n]` and a u32 "row sums needed" flag
//! ([`s8quads_header_bytes`]); body, for each tap, for each k-quad (kc padded to 4): nr
//! columns × 4 bytes `w ^ 0x80` (= `w − 128` as s8; padding 0). `vpdpbusd` (u8 A × s8 B, quads
//! summed into i32, no saturation) gives `Σ a·(w − 128)`; the kernel adds
//! `(128 − w_zp[n])·Σ_k a[m,k]` when the flag is set (never for QNNPACK's usual w_zp = 128,
//! nor for s8 weights shifted to u8). bias' is the same as above.
//!
//! # Depthwise layout ([`PackedQ8Dw`]), per block of `cr` channels
//!
//! ```text
//! [cr × i32 bias'] [cr × u32 multiplier] [cr × u32 shift] [cr × i32 limit]
//! for each tap pair q < ceil(taps/2): cr channels × (w_{2q} − w_zp, w_{2q+1} − w_zp) i16
//! ```
//!
//! Taps are in indirection order `t = kx·KH + ky`; an odd last pair has a zero second weight.
//! The kernel interleaves the activations of the two taps of a pair to u16 pairs and uses one
//! `pmaddwd` per pair (|2·255·255| < 2³¹: exact). bias' = bias − a_zp·Σ_t (w_t − w_zp).
//!
//! The [`Q8DwLayout::Quads`] kernels (`q8dwconv_{3x3,5x5}c32_avx2`, cr = 32) use the same
//! 16·cr-byte header, its per-channel values in the lane order of the fbgemm `c32` kernels
//! (position `8k + 4L + j` for channel `16L + 4k + j`), followed by the fbgemm `c32` weight
//! block of the `w_t − w_zp` ∈ [−255, 255] (`crate::kernels::fbgemm::dwconv`, "The `c32`
//! layout", which also gives the exactness argument).

use crate::kernels::reference::q8dwconv::Q8DwWeights;
use crate::kernels::reference::q8gemm::Q8Weights;
use crate::kernels::reference::requant_fixedpoint::Requant;

use super::ukernel::{Q8DwLayout, Q8DwUkernel, Q8GemmLayout, Q8GemmUkernel};

/// Header bytes of a GEMM block of `nr` columns.
pub const fn gemm_header_bytes(nr: usize) -> usize {
    (18 * nr).div_ceil(16) * 16
}

/// Header bytes of a [`Q8GemmLayout::S8Quads`] block: the common header, then `nr × i32`
/// `128 − w_zp[n]`, then a u32 flag (non-zero when some `w_zp ≠ 128`, i.e. the kernel must
/// add the row-sum term), padded to 32 bytes.
pub const fn s8quads_header_bytes(nr: usize) -> usize {
    gemm_header_bytes(nr) + 4 * nr + 32
}

fn put_i32(buf: &mut [u8], at: usize, v: i32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Weights packed for one GEMM/conv micro-kernel.
#[derive(Clone, Debug)]
pub struct PackedQ8Gemm {
    uk: &'static Q8GemmUkernel,
    /// The blocks start at `data[start]` (64-byte aligned as packed; a clone keeps the
    /// offset, not necessarily the alignment).
    data: Vec<u8>,
    start: usize,
    n: usize,
    kc: usize,
    ks: usize,
    block_bytes: usize,
    a_zp: u8,
}

impl PackedQ8Gemm {
    /// Packs `w` (`[N][ks·kc]`, tap-major then channel) for `uk`, folding activation zero
    /// point `a_zp`.
    ///
    /// # Panics
    /// If `w.k != ks·kc` or the parameter arrays are inconsistent.
    pub fn new(uk: &'static Q8GemmUkernel, w: &Q8Weights<'_>, ks: usize, a_zp: u8) -> Self {
        w.validate();
        assert!(ks >= 1 && w.k.is_multiple_of(ks), "w.k = ks·kc");
        let kc = w.k / ks;
        let (nr, align) = (usize::from(uk.nr), usize::from(uk.kc_align));
        let kcp = kc.div_ceil(align) * align;
        let i16_pairs = uk.layout == Q8GemmLayout::I16Pairs;
        let s8_quads = uk.layout == Q8GemmLayout::S8Quads;
        let hdr = if s8_quads {
            s8quads_header_bytes(nr)
        } else {
            gemm_header_bytes(nr)
        };
        let block_bytes = hdr + ks * kcp * nr * if i16_pairs { 2 } else { 1 };
        let blocks = w.n.div_ceil(nr);
        // Blocks start 64-byte aligned in memory (block_bytes is a multiple of 32 for the
        // 16-column kernels), so the kernels' 32-byte B loads never split a cache line.
        let mut data = vec![0u8; blocks * block_bytes + 63];
        let start = data.as_ptr().align_offset(64);
        for blk in 0..blocks {
            let base = start + blk * block_bytes;
            let buf = &mut data[base..base + block_bytes];
            for j in 0..nr {
                let n = blk * nr + j;
                if n >= w.n {
                    put_i32(buf, 4 * nr + 4 * j, Requant::ZERO.multiplier as i32);
                    put_i32(buf, 8 * nr + 4 * j, Requant::ZERO.shift as i32);
                    put_i32(buf, 12 * nr + 4 * j, Requant::ZERO.limit);
                    continue;
                }
                let zw = w.zp_at(n);
                let wsum: i32 = w.data[n * w.k..(n + 1) * w.k]
                    .iter()
                    .map(|&v| i32::from(v) - i32::from(zw))
                    .sum();
                let bias = w
                    .bias_at(n)
                    .wrapping_sub(i32::from(a_zp).wrapping_mul(wsum));
                let rq = w.requant_at(n);
                put_i32(buf, 4 * j, bias);
                put_i32(buf, 4 * nr + 4 * j, rq.multiplier as i32);
                put_i32(buf, 8 * nr + 4 * j, rq.shift as i32);
                put_i32(buf, 12 * nr + 4 * j, rq.limit);
                buf[16 * nr + 2 * j] = zw;
                buf[16 * nr + 2 * j + 1] = zw;
                if s8_quads {
                    let comp = 128 - i32::from(zw);
                    put_i32(buf, gemm_header_bytes(nr) + 4 * j, comp);
                    if comp != 0 {
                        put_i32(buf, gemm_header_bytes(nr) + 4 * nr, 1);
                    }
                    for t in 0..ks {
                        for kk in 0..kc {
                            // quad → column j → element e; padding stays 0 (= s8 0).
                            let off = hdr + t * kcp * nr + (kk / 4) * 4 * nr + 4 * j + kk % 4;
                            buf[off] = w.data[n * w.k + t * kc + kk] ^ 0x80;
                        }
                    }
                    continue;
                }
                if i16_pairs {
                    for t in 0..ks {
                        for kk in 0..kc {
                            let v = i16::from(w.data[n * w.k + t * kc + kk]) - i16::from(zw);
                            // pair → column j → element e, as i16
                            let off = hdr + 2 * (t * kcp * nr + (kk / 2) * 2 * nr + 2 * j + kk % 2);
                            buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
                        }
                    }
                    continue;
                }
                for t in 0..ks {
                    for kk in 0..kcp {
                        let v = if kk < kc {
                            w.data[n * w.k + t * kc + kk]
                        } else {
                            zw
                        };
                        // chunk of 8 → pair p → column j → element e
                        let (chunk, p, e) = (kk / 8, (kk % 8) / 2, kk % 2);
                        let off = hdr + t * kcp * nr + chunk * 8 * nr + p * 2 * nr + 2 * j + e;
                        buf[off] = v;
                    }
                }
            }
        }
        PackedQ8Gemm {
            uk,
            data,
            start,
            n: w.n,
            kc,
            ks,
            block_bytes,
            a_zp,
        }
    }

    pub fn ukernel(&self) -> &'static Q8GemmUkernel {
        self.uk
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn kc(&self) -> usize {
        self.kc
    }

    pub fn ks(&self) -> usize {
        self.ks
    }

    /// The activation zero point folded into the bias.
    pub fn a_zp(&self) -> u8 {
        self.a_zp
    }

    /// Number of `nr`-column blocks.
    pub fn blocks(&self) -> usize {
        self.n.div_ceil(usize::from(self.uk.nr))
    }

    /// Bytes of one `nr`-column block (header and body).
    pub fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    /// `kc` rounded up to the kernel's `kc_align` (the packed depth per tap).
    pub fn kc_padded(&self) -> usize {
        self.kc.next_multiple_of(usize::from(self.uk.kc_align))
    }

    /// Start of block `b`.
    pub fn block_ptr(&self, b: usize) -> *const u8 {
        assert!(b < self.blocks());
        self.data[self.start + b * self.block_bytes..].as_ptr()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.start + self.blocks() * self.block_bytes]
    }
}

/// Bytes of one depthwise channel block ([`Q8DwLayout::Pairs`]).
pub const fn dw_block_bytes(cr: usize, taps: usize) -> usize {
    16 * cr + taps.div_ceil(2) * cr * 4
}

/// Bytes of one [`Q8DwLayout::Quads`] block (32 channels, `taps = 4G + 1`).
pub const fn dw_quads_block_bytes(taps: usize) -> usize {
    16 * 32 + crate::kernels::fbgemm::dwconv::c32_block_bytes(taps)
}

/// The channel at header position `j` of block `blk` (`None`: padding) and the first channel
/// of the block: Quads blocks follow [`crate::kernels::fbgemm::DwLayout::C32Quads`] (lane
/// order; with ≥ 32 channels the last block overlaps the previous one instead of padding).
fn dw_header_channel(
    layout: Q8DwLayout,
    cr: usize,
    blk: usize,
    j: usize,
    ch: usize,
) -> (Option<usize>, usize) {
    match layout {
        Q8DwLayout::Pairs => {
            let c = blk * cr + j;
            ((c < ch).then_some(c), blk * cr)
        }
        Q8DwLayout::Quads => {
            let l = crate::kernels::fbgemm::DwLayout::C32Quads;
            (l.channel_at(blk * cr + j, ch), l.block_start(blk, ch))
        }
    }
}

/// Weights packed for one depthwise micro-kernel.
#[derive(Clone, Debug)]
pub struct PackedQ8Dw {
    uk: &'static Q8DwUkernel,
    data: Vec<u8>,
    channels: usize,
    kernel_h: usize,
    kernel_w: usize,
    a_zp: u8,
}

impl PackedQ8Dw {
    /// Packs depthwise weights `[KH][KW][C]` for `uk` (whose `taps` must be `KH·KW`).
    ///
    /// # Panics
    /// On a tap-count mismatch or inconsistent parameter arrays.
    pub fn new(
        uk: &'static Q8DwUkernel,
        w: &Q8DwWeights<'_>,
        kernel_h: usize,
        kernel_w: usize,
        a_zp: u8,
    ) -> Self {
        let taps = kernel_h * kernel_w;
        assert_eq!(taps, usize::from(uk.taps), "{}: tap count", uk.name);
        w.validate(taps);
        let (cr, ch) = (usize::from(uk.cr), w.channels);
        let quads = uk.layout == Q8DwLayout::Quads;
        assert!(
            !quads || (cr == 32 && taps % 4 == 1),
            "{}: quads layout",
            uk.name
        );
        let bb = if quads {
            dw_quads_block_bytes(taps)
        } else {
            dw_block_bytes(cr, taps)
        };
        let blocks = ch.div_ceil(cr);
        let mut data = vec![0u8; blocks * bb];
        for blk in 0..blocks {
            let buf = &mut data[blk * bb..(blk + 1) * bb];
            // w_t − w_zp of channel c, tap t = kx·KH + ky (indirection order) ↔ weight
            // [ky][kx][c]; 0 past the taps or the channels.
            let wt_of = |c: usize, t: usize| -> i32 {
                if t >= taps || c >= ch {
                    return 0;
                }
                let (kx, ky) = (t / kernel_h, t % kernel_h);
                i32::from(w.data[(ky * kernel_w + kx) * ch + c]) - i32::from(w.zp_at(c))
            };
            if quads {
                let start = dw_header_channel(uk.layout, cr, blk, 0, ch).1;
                crate::kernels::fbgemm::dwconv::pack_c32_block(
                    &mut buf[16 * cr..],
                    taps,
                    |j, t| wt_of(start + j, t) as i16,
                );
            }
            for j in 0..cr {
                let Some(c) = dw_header_channel(uk.layout, cr, blk, j, ch).0 else {
                    put_i32(buf, 4 * cr + 4 * j, Requant::ZERO.multiplier as i32);
                    put_i32(buf, 8 * cr + 4 * j, Requant::ZERO.shift as i32);
                    put_i32(buf, 12 * cr + 4 * j, Requant::ZERO.limit);
                    continue;
                };
                let wt = |t: usize| wt_of(c, t);
                let wsum: i32 = (0..taps).map(wt).sum();
                let rq = w.requant_at(c);
                put_i32(
                    buf,
                    4 * j,
                    w.bias_at(c)
                        .wrapping_sub(i32::from(a_zp).wrapping_mul(wsum)),
                );
                put_i32(buf, 4 * cr + 4 * j, rq.multiplier as i32);
                put_i32(buf, 8 * cr + 4 * j, rq.shift as i32);
                put_i32(buf, 12 * cr + 4 * j, rq.limit);
                if quads {
                    continue;
                }
                for q in 0..taps.div_ceil(2) {
                    let off = 16 * cr + q * cr * 4 + 4 * j;
                    buf[off..off + 2].copy_from_slice(&(wt(2 * q) as i16).to_le_bytes());
                    buf[off + 2..off + 4].copy_from_slice(&(wt(2 * q + 1) as i16).to_le_bytes());
                }
            }
        }
        PackedQ8Dw {
            uk,
            data,
            channels: ch,
            kernel_h,
            kernel_w,
            a_zp,
        }
    }

    pub fn ukernel(&self) -> &'static Q8DwUkernel {
        self.uk
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    pub fn kernel(&self) -> (usize, usize) {
        (self.kernel_h, self.kernel_w)
    }

    pub fn a_zp(&self) -> u8 {
        self.a_zp
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.data.as_ptr()
    }
}
