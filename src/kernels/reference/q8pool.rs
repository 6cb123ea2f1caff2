//! Reference u8 average pooling and global average pooling (NHWC), fixed-point output stage.
//!
//! `y = clamp(zp_y + round(Σ_{taps}(x − x_zp) · x_scale / (y_scale · count)), qmin, qmax)`,
//! with `count` the number of taps inside the image (`count_include_pad = false`, the ONNX
//! default) or `KH·KW` (`true`; padded taps then contribute `x_zp − x_zp = 0`). The scale for
//! each `count` is converted once with [`Requant::from_scale_f64`] (≤ 1 LSB of the real value),
//! so kernels and reference use identical multipliers.

use super::q8conv::{Nhwc, Window2d};
use super::requant_fixedpoint::{requantize_u8, Q8Output, Requant, RequantError};

/// Quantization of an average pool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Q8PoolQuant {
    pub x_scale: f32,
    pub y_scale: f32,
    pub out: Q8Output,
}

impl Q8PoolQuant {
    /// The fixed-point scale for a window of `count` taps.
    ///
    /// # Errors
    /// If `x_scale / (y_scale · count)` is not representable (see [`Requant`]).
    pub fn requant(&self, count: usize) -> Result<Requant, RequantError> {
        Requant::from_scale_f64(
            f64::from(self.x_scale) / (f64::from(self.y_scale) * count.max(1) as f64),
        )
    }
}

/// Average pooling over window `g` (dilation allowed).
///
/// # Errors
/// If a window scale is not representable.
pub fn q8avgpool(
    g: &Window2d,
    x: &Nhwc<'_>,
    q: &Q8PoolQuant,
    count_include_pad: bool,
    y: &mut [u8],
    y_stride: usize,
) -> Result<(), RequantError> {
    g.validate();
    let (oh, ow, ch) = (g.out_h(), g.out_w(), x.channels);
    let zp = i32::from(x.zp);
    for b in 0..g.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                let opix = (b * oh + oy) * ow + ox;
                let mut count = 0;
                for ky in 0..g.kernel_h {
                    for kx in 0..g.kernel_w {
                        count += usize::from(g.input_at(oy, ox, ky, kx).is_some());
                    }
                }
                let rq = q.requant(if count_include_pad { g.taps() } else { count })?;
                for c in 0..ch {
                    let mut acc = 0i32;
                    for ky in 0..g.kernel_h {
                        for kx in 0..g.kernel_w {
                            if let Some((iy, ix)) = g.input_at(oy, ox, ky, kx) {
                                let p = ((b * g.in_h + iy) * g.in_w + ix) * x.pixel_stride + c;
                                acc += i32::from(x.data[p]) - zp;
                            }
                        }
                    }
                    y[opix * y_stride + c] = requantize_u8(acc, rq, &q.out);
                }
            }
        }
    }
    Ok(())
}

/// Global average pooling: `x` is `batch × pixels × channels` (pixel stride `x.pixel_stride`),
/// `y` is `batch × channels` (row stride `y_stride`).
///
/// # Errors
/// If the scale for `pixels` taps is not representable.
pub fn q8gavgpool(
    x: &Nhwc<'_>,
    batch: usize,
    pixels: usize,
    q: &Q8PoolQuant,
    y: &mut [u8],
    y_stride: usize,
) -> Result<(), RequantError> {
    let rq = q.requant(pixels)?;
    let zp = i32::from(x.zp);
    for b in 0..batch {
        for c in 0..x.channels {
            let mut acc = 0i32;
            for p in 0..pixels {
                acc += i32::from(x.data[(b * pixels + p) * x.pixel_stride + c]) - zp;
            }
            y[b * y_stride + c] = requantize_u8(acc, rq, &q.out);
        }
    }
    Ok(())
}
