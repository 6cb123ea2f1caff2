//! Depthwise convolution (group = C = M, multiplier 1), NHWC, u8 activations × s8 weights:
//! the micro-kernel interface and the weight packing.
//!
//! # Arithmetic (exact for all inputs)
//! Per channel `c` and tap `t`: `w'[t][c] = w[t][c] − w_zp[c]` ∈ [−255, 255] is stored as i16 at
//! pack time, and the activation zero point is folded into the bias:
//! `bias'[c] = bias[c] − a_zp·Σ_t w'[t][c]`. The kernel then computes
//! `acc[c] = bias'[c] + Σ_t a[t][c]·w'[t][c]` with `a` the raw u8 input (0..=255): every product
//! fits i32, and the SIMD kernels form them with `vpmaddwd` on i16 pairs (two taps of one
//! channel per i32 lane, |pair sum| ≤ 2·255·255 < 2³¹), so nothing saturates and asymmetric
//! (per-tensor or per-channel) weight zero points cost nothing. Padding taps point at a row of
//! `a_zp` bytes, which contributes `a_zp·w'` and is cancelled exactly by the folded bias.
//!
//! # Indirection
//! The driver gives the kernel, per output pixel, `T = KH·KW` pointers (row-major taps), each to
//! channel 0 of an input pixel or of the `a_zp` row. Strides, dilations and padding therefore
//! live entirely in the driver (QNNPACK/XNNPACK `dwconv` style); a kernel is specialised only on
//! the tap count.
//!
//! # Packed weight layout
//! Channels in blocks of [`DW_CB`] = 16 (the last block zero-padded). Inside a block, channel
//! `cc` sits in *lane* `(cc % 2)·8 + cc / 2` ([`dw_lane`]): even channels in lanes 0..8, odd
//! channels in lanes 8..16, so the AVX2 kernel can build its tap pairs with shifts and blends
//! instead of byte shuffles. A block holds `P = ⌈T/2⌉` tap pairs; pair `p` is 16 lanes ×
//! `(w'[2p][c], w'[2p+1][c])` as i16 (32 i16, 64 bytes: one ymm for the even channels, one for
//! the odd ones), the `vpmaddwd` operand for the i16 pairs `(a[2p][c], a[2p+1][c])`. An odd
//! last tap is paired with a zero weight. The folded bias and, per call, the output-stage
//! parameters are stored in the same lane order; outputs are stored in channel order.
//!
//! # The `c32` layout ([`DwLayout::C32Quads`], kernels `dwconv_u8s8_{3x3,5x5}c32_avx2`)
//! Blocks of 32 channels; the kernel byte-interleaves four taps of 32 channels with
//! `vpunpck{l,h}{bw,wd}` into registers `q_k` (`k = 0..4`) whose i32 lane `(L, j)` (128-bit
//! half `L`, dword `j`) holds the four tap bytes of channel `16L + 4k + j`, and multiplies with
//! `vpmaddubsw` (u8 × s8 byte pairs → i16 pair sums) then `vpmaddwd` by 1 or 4 (→ i32 per
//! channel). Exactness of `vpmaddubsw` (saturating i16 pair sums) is decided at pack time per
//! block and 4-tap group:
//! - *direct*: every pair `(w0, w1)` of the group (taps `4g, 4g+1` and `4g+2, 4g+3`) in every
//!   channel of the block is s8 (`w' ≤ 127`; `≥ −128` follows from the next bound) and has
//!   `Σ max(w,0) ≤ 128` and `Σ max(−w,0) ≤ 128`, so a pair sum lies in
//!   `[−255·128, 255·128] = [−32640, 32640]`: exact. The i16 sums are
//!   widened with `vpmaddwd(·, 1)`.
//! - *split*: otherwise `w' = 4·hi + lo` with `hi = w' >> 2` ∈ [−64, 63] and `lo = w' & 3` ∈
//!   [0, 3] (any `w'` in [−256, 255], so every weight zero point works); the `hi` pair sums lie
//!   in `[−32640, 32130]` (exact), widened with `vpmaddwd(·, 4)`; the `lo` pair sums lie in
//!   `[0, 1530]` and are accumulated in i16 over all split groups (at most 6: ≤ 9180) and
//!   widened once per block with `vpmaddwd(·, 1)`.
//!
//! The last tap (`T = 4G + 1` for 3×3 and 5×5) is spread to one byte per i32 lane with
//! `vpshufb` and multiplied with `vpmaddwd` against `(w', 0)` i16 pairs (one product, exact).
//! Block bytes: a 32-byte header (u32 bit mask of the split groups), then per group 4×32 bytes
//! `hi` (or `w'` if direct) and 4×32 bytes `lo` (zero if direct), then 4×32 bytes of `(w', 0)`
//! i16 pairs for the last tap. Bias and output parameters use the lane order of the `q_k`
//! registers ([`DwLayout::channel_at`]): position `8k + 4L + j` for channel `16L + 4k + j` of
//! a block. With at least 32 channels the last block starts at `channels − 32` (overlapping
//! the previous block, whose shared channels it recomputes identically) instead of being
//! padded, so the kernel never copies taps; fewer than 32 channels make one padded block.

use std::marker::PhantomData;

use super::ukernel::TileOutput;
use crate::kernels::{Isa, Numerics};

/// Channels per packed block (of [`DwLayout::C16Pairs`]).
pub const DW_CB: usize = 16;

/// The packed weight layouts (module docs); each micro-kernel reads one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DwLayout {
    /// 16-channel blocks of i16 tap pairs (any `w'` in [−255, 255]).
    C16Pairs,
    /// 32-channel blocks of byte-quad tap groups (any `w'`; `T = 4G + 1` only).
    C32Quads,
}

impl DwLayout {
    /// Channels per block.
    pub fn block(self) -> usize {
        match self {
            DwLayout::C16Pairs => DW_CB,
            DwLayout::C32Quads => 32,
        }
    }

    /// First channel of block `b` of a conv with `channels` channels. C16Pairs: `16·b` (the
    /// last block zero-padded). C32Quads: `32·b`, except that with at least 32 channels the
    /// last block is `channels − 32 ..channels`, overlapping the previous block (its channels
    /// are computed twice, identically), so no block reads past the channels; fewer than 32
    /// channels make one zero-padded block.
    pub fn block_start(self, b: usize, channels: usize) -> usize {
        match self {
            DwLayout::C16Pairs => b * DW_CB,
            DwLayout::C32Quads if channels >= 32 => (b * 32).min(channels - 32),
            DwLayout::C32Quads => 0,
        }
    }

    /// The channel at position `pos` of the packed (per block, lane-ordered) bias and output
    /// parameter arrays, `None` for padding. C32Quads: position `8k + 4L + j` of a block holds
    /// its channel `16L + 4k + j`.
    pub fn channel_at(self, pos: usize, channels: usize) -> Option<usize> {
        let (b, q) = (pos / self.block(), pos % self.block());
        let cc = match self {
            DwLayout::C16Pairs => (q % 8) * 2 + q / 8,
            DwLayout::C32Quads => {
                let (k, l, j) = (q / 8, (q % 8) / 4, q % 4);
                16 * l + 4 * k + j
            }
        };
        let c = self.block_start(b, channels) + cc;
        (c < channels).then_some(c)
    }

    /// Whether the layout can hold `taps` taps (any weights).
    pub fn admits(self, taps: usize) -> bool {
        match self {
            DwLayout::C16Pairs => true,
            DwLayout::C32Quads => taps % 4 == 1,
        }
    }
}

/// Bytes of one C32Quads block with `taps = 4G + 1`.
pub(crate) const fn c32_block_bytes(taps: usize) -> usize {
    32 + taps / 4 * 256 + 128
}

/// Packs one C32Quads block (module docs; also the weight part of the qnnpack `c32` blocks)
/// from `wp(cc, t)` = `w'` of channel `cc < 32` of the block, tap `t` (0 for padding
/// channels), each in [−256, 255].
pub(crate) fn pack_c32_block(blk: &mut [u8], taps: usize, wp: impl Fn(usize, usize) -> i16) {
    assert!(taps % 4 == 1 && blk.len() == c32_block_bytes(taps));
    let groups = taps / 4;
    let mut split_mask = 0u32;
    for g in 0..groups {
        let safe = (0..32).all(|cc| {
            [0, 2].iter().all(|&o| {
                let (w0, w1) = (wp(cc, 4 * g + o), wp(cc, 4 * g + o + 1));
                // s8 (128 alone would pass the sums), and the vpmaddubsw pair bounds.
                w0.max(w1) <= 127
                    && w0.max(0) + w1.max(0) <= 128
                    && (-w0).max(0) + (-w1).max(0) <= 128
            })
        });
        if !safe {
            split_mask |= 1 << g;
        }
        for cc in 0..32 {
            // Channel 16L + 4k + j sits in register k, half L, dword j.
            let (l, k, j) = (cc / 16, (cc % 16) / 4, cc % 4);
            let base = 32 + g * 256 + k * 32 + l * 16 + j * 4;
            for i in 0..4 {
                let w = wp(cc, 4 * g + i);
                debug_assert!((-256..=255).contains(&w));
                // Direct: w' itself (s8 by the pair bounds); split: w' = 4·hi + lo.
                let (hi, lo) = if safe { (w, 0) } else { (w >> 2, w & 3) };
                blk[base + i] = hi as i8 as u8;
                blk[base + 128 + i] = lo as u8;
            }
        }
    }
    blk[..4].copy_from_slice(&split_mask.to_le_bytes());
    for cc in 0..32 {
        let (l, k, j) = (cc / 16, (cc % 16) / 4, cc % 4);
        let base = 32 + groups * 256 + k * 32 + l * 16 + j * 4;
        blk[base..base + 2].copy_from_slice(&wp(cc, taps - 1).to_le_bytes());
    }
}

/// Position of channel `c` in the packed lane order (module docs).
#[inline]
pub fn dw_lane(c: usize) -> usize {
    let cc = c % DW_CB;
    c - cc + (cc % 2) * (DW_CB / 2) + cc / 2
}

/// Arguments of one depthwise micro-kernel call: `pixels` output pixels × all channels.
#[derive(Clone, Copy, Debug)]
pub struct DwConvTile<'a> {
    /// Output pixels to compute.
    pub pixels: usize,
    /// Input pointers, taps row-major, each valid for `channels` bytes: `pixels·T` of them,
    /// pixel-major, when `tap_step` is 0; else pixel 0's `T`, and pixel `p`'s taps are those
    /// plus `p·tap_step` bytes (a run of output pixels whose windows are all inside the
    /// input: the driver builds no pointers per pixel there).
    pub taps: *const *const u8,
    /// Bytes between consecutive pixels' windows, or 0 (see `taps`).
    pub tap_step: usize,
    pub channels: usize,
    /// Packed weights (module docs), `⌈channels/block⌉` blocks of the kernel's layout.
    pub weights: *const i16,
    /// Folded bias, padded to whole blocks, in the layout's lane order
    /// ([`DwLayout::channel_at`]).
    pub bias: *const i32,
    /// Output of pixel 0, channel 0 (stored in channel order); parameter pointers address
    /// per-channel values padded to whole blocks, in the layout's lane order
    /// ([`DwLayout::channel_at`]).
    pub out: TileOutput,
    /// Elements between consecutive output pixels (≥ `channels`).
    pub out_stride: usize,
    pub _lifetime: PhantomData<&'a ()>,
}

impl DwConvTile<'_> {
    /// The `T` tap pointers of pixel `px`.
    ///
    /// # Safety
    /// `px < pixels`, `T` is the kernel's tap count, and the tile is valid as documented.
    #[inline(always)]
    pub(crate) unsafe fn pixel_taps<const T: usize>(&self, px: usize) -> [*const u8; T] {
        if self.tap_step == 0 {
            self.taps
                .add(px * T)
                .cast::<[*const u8; T]>()
                .read_unaligned()
        } else {
            let mut p = self.taps.cast::<[*const u8; T]>().read_unaligned();
            for q in &mut p {
                *q = q.add(px * self.tap_step);
            }
            p
        }
    }
}

/// One depthwise micro-kernel (uniform interface, like [`super::QGemmUkernel`]).
#[derive(Debug)]
pub struct DwConvUkernel {
    /// Same string as the file name, e.g. `dwconv_u8s8_3x3_avx2`.
    pub name: &'static str,
    pub isa: Isa,
    /// `[KH, KW]` the kernel is specialised for.
    pub kernel: [u8; 2],
    pub numerics: Numerics,
    /// The packed weight layout the kernel reads; packing takes the first kernel of the conv's
    /// size whose layout admits the tap count ([`DwLayout::admits`]).
    pub layout: DwLayout,
    /// Computes one tile.
    ///
    /// # Safety
    /// The host supports `isa`; every pointer of the tile is valid as documented on
    /// [`DwConvTile`]; the output covers `pixels` pixels at `out_stride` × `channels` elements.
    pub run: unsafe fn(&DwConvTile<'_>),
}

impl DwConvUkernel {
    pub fn taps(&self) -> usize {
        usize::from(self.kernel[0]) * usize::from(self.kernel[1])
    }
}

/// Packed depthwise weights (see the module docs), with the per-channel sums needed to refold
/// the bias for another activation zero point.
#[derive(Clone, Debug)]
pub struct PackedDw {
    pub(crate) layout: DwLayout,
    pub(crate) taps: usize,
    pub(crate) channels: usize,
    pub(crate) weights: Vec<i16>,
    /// `bias[c]` (0 when absent), padded, lane order ([`DwLayout::channel_at`]).
    raw_bias: Vec<i32>,
    /// `Σ_t w'[t][c]`, padded, lane order.
    wsum: Vec<i32>,
    a_zp: u8,
    /// `raw_bias − a_zp·wsum`.
    col_bias: Vec<i32>,
}

impl PackedDw {
    /// Packs ONNX depthwise weights `[C, 1, KH, KW]` (`taps = KH·KW` per channel), weight zero
    /// points (1 or C values), optional bias (C values), folding `a_zp`, into `layout` (which
    /// must admit them, [`DwLayout::admits`]).
    pub fn new(
        layout: DwLayout,
        weights: &[i8],
        channels: usize,
        taps: usize,
        w_zp: &[i8],
        bias: Option<&[i32]>,
        a_zp: u8,
    ) -> PackedDw {
        assert_eq!(weights.len(), channels * taps);
        assert!(w_zp.len() == 1 || w_zp.len() == channels);
        if layout == DwLayout::C32Quads {
            return PackedDw::new_c32(weights, channels, taps, w_zp, bias, a_zp);
        }
        let blocks = channels.div_ceil(DW_CB);
        let pairs = taps.div_ceil(2);
        let padded = blocks * DW_CB;
        let mut packed = vec![0i16; blocks * pairs * 2 * DW_CB];
        let mut wsum = vec![0i32; padded];
        let mut raw_bias = vec![0i32; padded];
        for c in 0..channels {
            let zw = i16::from(if w_zp.len() == 1 { w_zp[0] } else { w_zp[c] });
            let (b, l) = (c / DW_CB, dw_lane(c) % DW_CB);
            for t in 0..taps {
                let v = i16::from(weights[c * taps + t]) - zw;
                packed[((b * pairs + t / 2) * DW_CB + l) * 2 + t % 2] = v;
                wsum[dw_lane(c)] += i32::from(v);
            }
            raw_bias[dw_lane(c)] = bias.map_or(0, |b| b[c]);
        }
        PackedDw::assemble(layout, taps, channels, packed, raw_bias, wsum, a_zp)
    }

    /// [`PackedDw::new`] for [`DwLayout::C32Quads`] (module docs).
    fn new_c32(
        weights: &[i8],
        channels: usize,
        taps: usize,
        w_zp: &[i8],
        bias: Option<&[i32]>,
        a_zp: u8,
    ) -> PackedDw {
        let layout = DwLayout::C32Quads;
        assert!(layout.admits(taps));
        let cb = layout.block();
        let blocks = channels.div_ceil(cb);
        let padded = blocks * cb;
        let bb = c32_block_bytes(taps);
        let mut bytes = vec![0u8; blocks * bb];
        let mut wsum = vec![0i32; padded];
        let mut raw_bias = vec![0i32; padded];
        // w'[c][t], zero for padding channels.
        let wp = |c: usize, t: usize| -> i16 {
            if c >= channels {
                return 0;
            }
            let zw = i16::from(if w_zp.len() == 1 { w_zp[0] } else { w_zp[c] });
            i16::from(weights[c * taps + t]) - zw
        };
        for pos in 0..padded {
            if let Some(c) = layout.channel_at(pos, channels) {
                wsum[pos] = (0..taps).map(|t| i32::from(wp(c, t))).sum();
                raw_bias[pos] = bias.map_or(0, |b| b[c]);
            }
        }
        for b in 0..blocks {
            let start = layout.block_start(b, channels);
            pack_c32_block(&mut bytes[b * bb..(b + 1) * bb], taps, |cc, t| {
                wp(start + cc, t)
            });
        }
        let packed: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|p| i16::from_le_bytes([p[0], p[1]]))
            .collect();
        PackedDw::assemble(layout, taps, channels, packed, raw_bias, wsum, a_zp)
    }

    /// The packed form with the bias folded for `a_zp`.
    fn assemble(
        layout: DwLayout,
        taps: usize,
        channels: usize,
        weights: Vec<i16>,
        raw_bias: Vec<i32>,
        wsum: Vec<i32>,
        a_zp: u8,
    ) -> PackedDw {
        let mut p = PackedDw {
            layout,
            taps,
            channels,
            weights,
            raw_bias,
            wsum,
            a_zp,
            col_bias: Vec::new(),
        };
        p.col_bias = p.col_bias_for(a_zp);
        p
    }

    /// The folded bias for activation zero point `a_zp`.
    pub(crate) fn col_bias_for(&self, a_zp: u8) -> Vec<i32> {
        self.raw_bias
            .iter()
            .zip(&self.wsum)
            .map(|(&b, &s)| b.wrapping_sub(i32::from(a_zp).wrapping_mul(s)))
            .collect()
    }

    /// Taps per channel (`KH·KW`).
    pub fn taps(&self) -> usize {
        self.taps
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    pub(crate) fn layout(&self) -> DwLayout {
        self.layout
    }

    pub(crate) fn a_zp(&self) -> u8 {
        self.a_zp
    }

    pub(crate) fn col_bias(&self) -> &[i32] {
        &self.col_bias
    }

    /// Channels padded to whole blocks.
    pub(crate) fn padded_channels(&self) -> usize {
        self.raw_bias.len()
    }
}
