//! Reference NHWC u8 × u8 convolution (groups = 1) and the shared 2-D window geometry. Direct
//! loops, deliberately independent of the indirection buffer the kernels use; padding
//! contributes `a_zp` (exactly zero after the zero-point correction).

use super::q8gemm::Q8Weights;
use super::requant_fixedpoint::{requantize_u8, Q8Output};

/// A 2-D sliding window over an NHWC tensor (conv, depthwise conv, pooling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window2d {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub pad_bottom: usize,
    pub pad_right: usize,
}

impl Window2d {
    /// A `kh×kw` window, stride `s`, symmetric padding `p`, no dilation, batch 1.
    pub fn square(in_h: usize, in_w: usize, kh: usize, kw: usize, s: usize, p: usize) -> Window2d {
        Window2d {
            batch: 1,
            in_h,
            in_w,
            kernel_h: kh,
            kernel_w: kw,
            stride_h: s,
            stride_w: s,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: p,
            pad_left: p,
            pad_bottom: p,
            pad_right: p,
        }
    }

    pub fn out_h(&self) -> usize {
        let span = self.dilation_h * (self.kernel_h - 1) + 1;
        (self.in_h + self.pad_top + self.pad_bottom).saturating_sub(span) / self.stride_h + 1
    }

    pub fn out_w(&self) -> usize {
        let span = self.dilation_w * (self.kernel_w - 1) + 1;
        (self.in_w + self.pad_left + self.pad_right).saturating_sub(span) / self.stride_w + 1
    }

    /// Output pixels over the batch.
    pub fn out_pixels(&self) -> usize {
        self.batch * self.out_h() * self.out_w()
    }

    pub fn taps(&self) -> usize {
        self.kernel_h * self.kernel_w
    }

    /// The input pixel (image-relative row, column) of output `(oy, ox)` and tap `(ky, kx)`,
    /// or `None` in the padding.
    #[inline]
    pub fn input_at(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let iy = (oy * self.stride_h + ky * self.dilation_h).checked_sub(self.pad_top)?;
        let ix = (ox * self.stride_w + kx * self.dilation_w).checked_sub(self.pad_left)?;
        (iy < self.in_h && ix < self.in_w).then_some((iy, ix))
    }

    /// # Panics
    /// On a zero kernel/stride/dilation, or a window larger than the padded input.
    pub fn validate(&self) {
        assert!(self.kernel_h > 0 && self.kernel_w > 0, "empty kernel");
        assert!(self.stride_h > 0 && self.stride_w > 0, "zero stride");
        assert!(self.dilation_h > 0 && self.dilation_w > 0, "zero dilation");
        assert!(
            self.in_h + self.pad_top + self.pad_bottom > self.dilation_h * (self.kernel_h - 1)
                && self.in_w + self.pad_left + self.pad_right
                    > self.dilation_w * (self.kernel_w - 1),
            "window larger than the padded input"
        );
    }
}

/// An NHWC u8 tensor view: pixels `pixel_stride ≥ channels` bytes apart.
#[derive(Clone, Copy, Debug)]
pub struct Nhwc<'a> {
    pub data: &'a [u8],
    pub channels: usize,
    pub pixel_stride: usize,
    pub zp: u8,
}

/// `y[b,oy,ox,oc] = requant(bias[oc] + Σ_{ky,kx,ic} (x − x_zp)(w[oc,ky,kx,ic] − w_zp[oc]))`.
/// Weights are `[OC][KH][KW][IC]` (`w.k = KH·KW·IC`); `y` pixels are `y_stride ≥ OC` apart.
pub fn q8conv(
    g: &Window2d,
    x: &Nhwc<'_>,
    w: &Q8Weights<'_>,
    out: &Q8Output,
    y: &mut [u8],
    y_stride: usize,
) {
    g.validate();
    w.validate();
    let ic = x.channels;
    assert_eq!(w.k, g.taps() * ic, "w.k = KH·KW·IC");
    let (oh, ow) = (g.out_h(), g.out_w());
    let zp = i32::from(x.zp);
    for b in 0..g.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                let opix = (b * oh + oy) * ow + ox;
                for oc in 0..w.n {
                    let zw = i32::from(w.zp_at(oc));
                    let mut acc = w.bias_at(oc);
                    for ky in 0..g.kernel_h {
                        for kx in 0..g.kernel_w {
                            let px = g
                                .input_at(oy, ox, ky, kx)
                                .map(|(iy, ix)| ((b * g.in_h + iy) * g.in_w + ix) * x.pixel_stride);
                            for c in 0..ic {
                                let xv = px.map_or(zp, |p| i32::from(x.data[p + c]));
                                let wv =
                                    i32::from(w.data[oc * w.k + (ky * g.kernel_w + kx) * ic + c]);
                                acc = acc.wrapping_add((xv - zp) * (wv - zw));
                            }
                        }
                    }
                    y[opix * y_stride + oc] = requantize_u8(acc, w.requant_at(oc), out);
                }
            }
        }
    }
}
