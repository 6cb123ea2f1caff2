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

use std::marker::PhantomData;

use super::ukernel::TileOutput;
use crate::kernels::{Isa, Numerics};

/// Channels per packed block.
pub const DW_CB: usize = 16;

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
    /// `pixels·T` input pointers, pixel-major, taps row-major; each is valid for `channels`
    /// bytes.
    pub taps: *const *const u8,
    pub channels: usize,
    /// Packed weights (module docs), `⌈channels/16⌉` blocks.
    pub weights: *const i16,
    /// Folded bias, padded to a multiple of 16 channels, in lane order.
    pub bias: *const i32,
    /// Output of pixel 0, channel 0 (stored in channel order); parameter pointers address
    /// per-channel values padded to a multiple of 16, in lane order ([`dw_lane`]).
    pub out: TileOutput,
    /// Elements between consecutive output pixels (≥ `channels`).
    pub out_stride: usize,
    pub _lifetime: PhantomData<&'a ()>,
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
    pub(crate) taps: usize,
    pub(crate) channels: usize,
    pub(crate) weights: Vec<i16>,
    /// `bias[c]` (0 when absent), padded, lane order.
    raw_bias: Vec<i32>,
    /// `Σ_t w'[t][c]`, padded, lane order.
    wsum: Vec<i32>,
    a_zp: u8,
    /// `raw_bias − a_zp·wsum`.
    col_bias: Vec<i32>,
}

impl PackedDw {
    /// Packs ONNX depthwise weights `[C, 1, KH, KW]` (`taps = KH·KW` per channel), weight zero
    /// points (1 or C values), optional bias (C values), folding `a_zp`.
    pub fn new(
        weights: &[i8],
        channels: usize,
        taps: usize,
        w_zp: &[i8],
        bias: Option<&[i32]>,
        a_zp: u8,
    ) -> PackedDw {
        assert_eq!(weights.len(), channels * taps);
        assert!(w_zp.len() == 1 || w_zp.len() == channels);
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
        let mut p = PackedDw {
            taps,
            channels,
            weights: packed,
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
