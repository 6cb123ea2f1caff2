//! Reference NHWC u8 × u8 depthwise convolution (depth multiplier 1), per-channel weight zero
//! points and scales. Padding contributes `x_zp`.

use super::q8conv::{Nhwc, Window2d};
use super::requant_fixedpoint::{requantize_u8, Q8Output, Requant};

/// Depthwise weights `[KH][KW][C]`.
#[derive(Clone, Copy, Debug)]
pub struct Q8DwWeights<'a> {
    pub data: &'a [u8],
    pub channels: usize,
    /// 1 or `channels` zero points.
    pub zp: &'a [u8],
    pub bias: Option<&'a [i32]>,
    /// 1 or `channels` scales.
    pub requant: &'a [Requant],
}

impl Q8DwWeights<'_> {
    pub fn zp_at(&self, c: usize) -> u8 {
        self.zp[if self.zp.len() == 1 { 0 } else { c }]
    }

    pub fn requant_at(&self, c: usize) -> Requant {
        self.requant[if self.requant.len() == 1 { 0 } else { c }]
    }

    pub fn bias_at(&self, c: usize) -> i32 {
        self.bias.map_or(0, |b| b[c])
    }

    /// # Panics
    /// On inconsistent lengths.
    pub fn validate(&self, taps: usize) {
        assert!(self.data.len() >= taps * self.channels, "weights: taps·C");
        assert!(self.zp.len() == 1 || self.zp.len() == self.channels);
        assert!(self.requant.len() == 1 || self.requant.len() == self.channels);
        if let Some(b) = self.bias {
            assert_eq!(b.len(), self.channels);
        }
    }
}

/// `y[b,oy,ox,c] = requant(bias[c] + Σ_{ky,kx} (x − x_zp)(w[ky,kx,c] − w_zp[c]))`.
pub fn q8dwconv(
    g: &Window2d,
    x: &Nhwc<'_>,
    w: &Q8DwWeights<'_>,
    out: &Q8Output,
    y: &mut [u8],
    y_stride: usize,
) {
    g.validate();
    w.validate(g.taps());
    let ch = x.channels;
    assert_eq!(w.channels, ch);
    let (oh, ow) = (g.out_h(), g.out_w());
    let zp = i32::from(x.zp);
    for b in 0..g.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                let opix = (b * oh + oy) * ow + ox;
                for c in 0..ch {
                    let zw = i32::from(w.zp_at(c));
                    let mut acc = w.bias_at(c);
                    for ky in 0..g.kernel_h {
                        for kx in 0..g.kernel_w {
                            let xv = g.input_at(oy, ox, ky, kx).map_or(zp, |(iy, ix)| {
                                i32::from(
                                    x.data[((b * g.in_h + iy) * g.in_w + ix) * x.pixel_stride + c],
                                )
                            });
                            let wv = i32::from(w.data[(ky * g.kernel_w + kx) * ch + c]);
                            acc = acc.wrapping_add((xv - zp) * (wv - zw));
                        }
                    }
                    y[opix * y_stride + c] = requantize_u8(acc, w.requant_at(c), out);
                }
            }
        }
    }
}
