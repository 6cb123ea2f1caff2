//! Indirection buffers (QNNPACK `indirection.c`, XNNPACK `a_offset`): built **once per input
//! shape** (and micro-kernel MR), stored as input pixel indices so that one buffer serves every
//! inference whatever the input's base address; the driver turns them into pointers per call,
//! with [`ZERO`] entries pointing at a buffer filled with the input zero point.

use crate::kernels::reference::q8conv::Window2d;

/// Marks a padding tap.
pub const ZERO: usize = usize::MAX;

/// Conv (implicit GEMM) indirection: for each tile of `mr` output pixels, for each tap
/// `t = ky·KW + kx`, `mr` input pixel indices (batch-flattened NHWC pixel numbers). The last
/// tile repeats the last output pixel, so the kernel never branches on M.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvIndirection {
    window: Window2d,
    mr: usize,
    offsets: Vec<usize>,
}

impl ConvIndirection {
    pub fn new(g: &Window2d, mr: usize) -> ConvIndirection {
        g.validate();
        let (oh, ow, ks) = (g.out_h(), g.out_w(), g.taps());
        let pixels = g.out_pixels();
        let tiles = pixels.div_ceil(mr);
        let mut offsets = vec![ZERO; tiles * ks * mr];
        for tile in 0..tiles {
            for r in 0..mr {
                let p = (tile * mr + r).min(pixels - 1);
                let (b, oy, ox) = (p / (oh * ow), (p / ow) % oh, p % ow);
                for ky in 0..g.kernel_h {
                    for kx in 0..g.kernel_w {
                        let t = ky * g.kernel_w + kx;
                        offsets[(tile * ks + t) * mr + r] = g
                            .input_at(oy, ox, ky, kx)
                            .map_or(ZERO, |(iy, ix)| (b * g.in_h + iy) * g.in_w + ix);
                    }
                }
            }
        }
        ConvIndirection {
            window: *g,
            mr,
            offsets,
        }
    }

    pub fn window(&self) -> &Window2d {
        &self.window
    }

    pub fn mr(&self) -> usize {
        self.mr
    }

    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }
}

/// Depthwise / pooling indirection, one row of pointers per output row (QNNPACK
/// `qnnp_indirection_init_dwconv2d`): output pixel `ox` uses entries
/// `ox·step + kx·KH + ky`. With dilation_w = 1, `step = stride_w·KH` and horizontally
/// neighbouring pixels share `KH·(KW − stride_w)` entries; otherwise `step = KW·KH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DwIndirection {
    window: Window2d,
    step: usize,
    row_len: usize,
    offsets: Vec<usize>,
    /// Per output column: taps inside the image, per output row (`rows × ow`).
    valid_taps: Vec<u16>,
}

impl DwIndirection {
    pub fn new(g: &Window2d) -> DwIndirection {
        g.validate();
        let (oh, ow, kh, kw) = (g.out_h(), g.out_w(), g.kernel_h, g.kernel_w);
        let step = if g.dilation_w == 1 {
            g.stride_w * kh
        } else {
            kw * kh
        };
        let row_len = (ow - 1) * step + kw * kh;
        let rows = g.batch * oh;
        let mut offsets = vec![ZERO; rows * row_len];
        let mut valid_taps = vec![0u16; rows * ow];
        for row in 0..rows {
            let (b, oy) = (row / oh, row % oh);
            for ox in 0..ow {
                for kx in 0..kw {
                    for ky in 0..kh {
                        let e = g.input_at(oy, ox, ky, kx);
                        valid_taps[row * ow + ox] += u16::from(e.is_some());
                        offsets[row * row_len + ox * step + kx * kh + ky] =
                            e.map_or(ZERO, |(iy, ix)| (b * g.in_h + iy) * g.in_w + ix);
                    }
                }
            }
        }
        DwIndirection {
            window: *g,
            step,
            row_len,
            offsets,
            valid_taps,
        }
    }

    pub fn window(&self) -> &Window2d {
        &self.window
    }

    /// Entries between consecutive output pixels of a row.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Entries per output row.
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Taps inside the image for each output pixel (rows × ow).
    pub fn valid_taps(&self) -> &[u16] {
        &self.valid_taps
    }
}

/// Turns indirection entries into pointers: `base + idx·pixel_stride`, or `zero`.
pub(crate) fn to_pointers(
    offsets: &[usize],
    base: &[u8],
    pixel_stride: usize,
    channels: usize,
    zero: *const u8,
    out: &mut Vec<*const u8>,
) {
    out.clear();
    out.extend(offsets.iter().map(|&o| {
        if o == ZERO {
            zero
        } else {
            // Bounds: every pointer must be readable for `channels` bytes.
            assert!(o * pixel_stride + channels <= base.len(), "input too short");
            base[o * pixel_stride..].as_ptr()
        }
    }));
}
