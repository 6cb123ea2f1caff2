//! Float Conv (1-D and 2-D, groups, pads/auto_pad, strides, dilations) by im2col + sgemm,
//! and the attribute parsing shared with the quantized convolutions.

use super::{boxed, input, sgemm, Kernel, NodeCtx};
use crate::executor::value::Array;
use crate::kernels::reference::ConvGeometry;

/// Conv attributes as written on the node; spatial geometry is resolved per input shape
/// (auto_pad depends on it).
#[derive(Clone, Debug)]
pub(crate) struct ConvAttrs {
    pub group: usize,
    pub auto_pad: String,
    pub pads: Option<Vec<i64>>,
    pub strides: Option<Vec<i64>>,
    pub dilations: Option<Vec<i64>>,
    pub kernel_shape: Option<Vec<i64>>,
}

impl ConvAttrs {
    pub fn parse(ctx: &NodeCtx<'_>) -> Result<ConvAttrs, String> {
        let auto_pad = ctx.string("auto_pad", "NOTSET");
        if !matches!(
            auto_pad.as_str(),
            "NOTSET" | "VALID" | "SAME_UPPER" | "SAME_LOWER"
        ) {
            return Err(format!("auto_pad `{auto_pad}`"));
        }
        let group = ctx.int("group", 1);
        if group < 1 {
            return Err(format!("group {group}"));
        }
        Ok(ConvAttrs {
            group: group as usize,
            auto_pad,
            pads: ctx.ints("pads"),
            strides: ctx.ints("strides"),
            dilations: ctx.ints("dilations"),
            kernel_shape: ctx.ints("kernel_shape"),
        })
    }

    /// The 2-D geometry for input `x_shape` (`[N, C, H(, W)]`) and weights `w_shape`
    /// (`[M, C/group, KH(, KW)]`); 1-D convs become `H = 1` 2-D ones.
    pub fn geometry(&self, x_shape: &[usize], w_shape: &[usize]) -> Result<ConvGeometry, String> {
        let sp = x_shape
            .len()
            .checked_sub(2)
            .ok_or("conv input needs rank ≥ 3")?;
        if !(1..=2).contains(&sp) || w_shape.len() != x_shape.len() {
            return Err(format!(
                "only 1-D and 2-D convolutions are supported (input {x_shape:?}, weights {w_shape:?})"
            ));
        }
        let kernel: Vec<usize> = w_shape[2..].to_vec();
        if let Some(ks) = &self.kernel_shape {
            if ks.iter().map(|&v| v as usize).ne(kernel.iter().copied()) {
                return Err(format!(
                    "kernel_shape {ks:?} does not match weights {w_shape:?}"
                ));
            }
        }
        let get = |v: &Option<Vec<i64>>, n: usize, d: i64| -> Result<Vec<usize>, String> {
            let v = v.clone().unwrap_or_else(|| vec![d; n]);
            if v.len() != n || v.iter().any(|&e| e < 0) {
                return Err(format!("bad conv attribute {v:?}"));
            }
            Ok(v.iter().map(|&e| e as usize).collect())
        };
        let strides = get(&self.strides, sp, 1)?;
        let dil = get(&self.dilations, sp, 1)?;
        let input = &x_shape[2..];
        let pads: Vec<usize> = match self.auto_pad.as_str() {
            "NOTSET" => get(&self.pads, 2 * sp, 0)?,
            "VALID" => vec![0; 2 * sp],
            mode => {
                let mut p = vec![0; 2 * sp];
                for d in 0..sp {
                    let out = input[d].div_ceil(strides[d].max(1));
                    let need = ((out.max(1) - 1) * strides[d] + (kernel[d] - 1) * dil[d] + 1)
                        .saturating_sub(input[d]);
                    let small = need / 2;
                    let (b, e) = if mode == "SAME_UPPER" {
                        (small, need - small)
                    } else {
                        (need - small, small)
                    };
                    p[d] = b;
                    p[d + sp] = e;
                }
                p
            }
        };
        let c_in = x_shape[1];
        let geom = if sp == 2 {
            ConvGeometry {
                c_in,
                c_out: w_shape[0],
                group: self.group,
                kernel: [kernel[0], kernel[1]],
                strides: [strides[0], strides[1]],
                pads: [pads[0], pads[1], pads[2], pads[3]],
                dilations: [dil[0], dil[1]],
            }
        } else {
            ConvGeometry {
                c_in,
                c_out: w_shape[0],
                group: self.group,
                kernel: [1, kernel[0]],
                strides: [1, strides[0]],
                pads: [0, pads[0], 0, pads[1]],
                dilations: [1, dil[0]],
            }
        };
        geom.validate()?;
        if w_shape[1] * self.group != c_in {
            return Err(format!(
                "weights {w_shape:?} with group {} do not match {c_in} input channels",
                self.group
            ));
        }
        Ok(geom)
    }
}

/// `(N, H, W)` of an NCHW (or NCW) input.
pub(crate) fn nhw(x_shape: &[usize]) -> (usize, usize, usize) {
    if x_shape.len() == 4 {
        (x_shape[0], x_shape[2], x_shape[3])
    } else {
        (x_shape[0], 1, x_shape[2])
    }
}

/// Output shape in the input's rank.
pub(crate) fn out_shape(x_shape: &[usize], m: usize, oh: usize, ow: usize) -> Vec<usize> {
    if x_shape.len() == 4 {
        vec![x_shape[0], m, oh, ow]
    } else {
        vec![x_shape[0], m, ow]
    }
}

pub(super) fn build(t: &str, ctx: &NodeCtx<'_>) -> Result<Option<Box<dyn Kernel>>, String> {
    if t != "Conv" {
        return Ok(None);
    }
    let attrs = ConvAttrs::parse(ctx)?;
    Ok(Some(boxed(move |i| {
        let (x, w) = (input(i, 0)?, input(i, 1)?);
        let g = attrs.geometry(&x.shape, &w.shape)?;
        let bias = i
            .get(2)
            .copied()
            .flatten()
            .map(|b| b.as_f32())
            .transpose()?;
        if bias.is_some_and(|b| b.len() != g.c_out) {
            return Err("Conv bias must have M values".into());
        }
        let (n, h, wd) = nhw(&x.shape);
        let (oh, ow) = g
            .out_hw(h, wd)
            .ok_or("conv kernel larger than the padded input")?;
        let out = conv2d_f32(x.as_f32()?, w.as_f32()?, bias, &g, n, h, wd, oh, ow);
        Ok(vec![Array::f32(out_shape(&x.shape, g.c_out, oh, ow), out)])
    })))
}

#[allow(clippy::too_many_arguments)]
fn conv2d_f32(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    n: usize,
    h: usize,
    wd: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    let (c, m) = (g.c_in, g.c_out);
    let (cg, mg) = (g.cg_in(), g.cg_out());
    let [kh, kw] = g.kernel;
    let k = cg * kh * kw;
    let pix = oh * ow;
    let mut out = vec![0f32; n * m * pix];
    if cg == 1 && mg == 1 {
        // Depthwise: a direct loop, same arithmetic as the im2col path below (fused
        // multiply-adds over the taps in (ky, kx) order from 0, then the bias).
        let mut scratch = vec![];
        for img in 0..n {
            for ch in 0..c {
                let plane = &x[(img * c + ch) * h * wd..][..h * wd];
                let wk = &w[ch * kh * kw..(ch + 1) * kh * kw];
                let o = &mut out[(img * m + ch) * pix..][..pix];
                crate::kernels::sgemm::depthwise_plane_padded(
                    plane,
                    wk,
                    h,
                    wd,
                    oh,
                    ow,
                    g,
                    o,
                    &mut scratch,
                );
                if let Some(b) = bias {
                    o.iter_mut().for_each(|v| *v += b[ch]);
                }
            }
        }
        return out;
    }
    if kh == 1 && kw == 1 && g.strides == [1, 1] && g.pads == [0; 4] {
        // 1×1, stride 1, unpadded: the input planes already are the im2col matrix.
        for img in 0..n {
            for grp in 0..g.group {
                let xg = &x[(img * c + grp * cg) * pix..][..cg * pix];
                let wg = &w[grp * mg * k..(grp + 1) * mg * k];
                let og = &mut out[(img * m + grp * mg) * pix..(img * m + (grp + 1) * mg) * pix];
                sgemm(mg, pix, k, wg, xg, og);
                if let Some(b) = bias {
                    for (j, row) in og.chunks_mut(pix.max(1)).enumerate() {
                        let bv = b[grp * mg + j];
                        row.iter_mut().for_each(|v| *v += bv);
                    }
                }
            }
        }
        return out;
    }
    let mut col = vec![0f32; k * pix];
    for img in 0..n {
        for grp in 0..g.group {
            // col[(ci, ky, kx), (oy, ox)] = x[img, grp·Cg + ci, iy, ix] (0 outside).
            for ci in 0..cg {
                let plane = &x[(img * c + grp * cg + ci) * h * wd..][..h * wd];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let row = &mut col[((ci * kh + ky) * kw + kx) * pix..][..pix];
                        // Output columns whose tap lies inside the input: [lo, hi).
                        let off = (kx * g.dilations[1]) as isize - g.pads[1] as isize;
                        let sw = g.strides[1] as isize;
                        let lo = if off >= 0 {
                            0
                        } else {
                            ((-off + sw - 1) / sw) as usize
                        }
                        .min(ow);
                        let hi = if (wd as isize) <= off {
                            0
                        } else {
                            (((wd as isize - off + sw - 1) / sw) as usize).min(ow)
                        }
                        .max(lo);
                        for oy in 0..oh {
                            let iy = (oy * g.strides[0] + ky * g.dilations[0]) as isize
                                - g.pads[0] as isize;
                            let dst = &mut row[oy * ow..(oy + 1) * ow];
                            if iy < 0 || iy as usize >= h {
                                dst.fill(0.0);
                                continue;
                            }
                            let src = &plane[iy as usize * wd..(iy as usize + 1) * wd];
                            dst[..lo].iter_mut().for_each(|d| *d = 0.0);
                            dst[hi..].iter_mut().for_each(|d| *d = 0.0);
                            if sw == 1 && hi > lo {
                                // Stride 1: one run of the input row.
                                let s0 = (lo as isize + off) as usize;
                                dst[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
                                continue;
                            }
                            for (ox, d) in dst[lo..hi].iter_mut().enumerate() {
                                *d = src[((ox + lo) as isize * sw + off) as usize];
                            }
                        }
                    }
                }
            }
            let wg = &w[grp * mg * k..(grp + 1) * mg * k];
            let og = &mut out[(img * m + grp * mg) * pix..(img * m + (grp + 1) * mg) * pix];
            sgemm(mg, pix, k, wg, &col, og);
            if let Some(b) = bias {
                for (j, row) in og.chunks_mut(pix.max(1)).enumerate() {
                    let bv = b[grp * mg + j];
                    row.iter_mut().for_each(|v| *v += bv);
                }
            }
        }
    }
    out
}
