//! Float ConvTranspose (1-D and 2-D; groups, strides, dilations, pads, auto_pad,
//! output_padding, output_shape) as a GEMM and a col2im scatter.
//!
//! For one image and group, `col = Wᵀ · X` with `Wᵀ: (M/g·KH·KW) × C/g` and
//! `X: C/g × (H·W)` gives every input pixel's contribution to every tap; col2im then adds
//! each `col[(m, ky, kx), (iy, ix)]` at output row `iy·sh − pad_top + ky·dh`, column
//! `ix·sw − pad_left + kx·dw`, when that lies inside the output. This is the transpose of
//! the im2col convolution, as in Caffe and ONNX Runtime.

use super::{boxed, input, sgemm, Kernel, NodeCtx};
use crate::executor::value::Array;

#[derive(Clone, Debug)]
struct Attrs {
    group: usize,
    auto_pad: String,
    pads: Option<Vec<i64>>,
    strides: Option<Vec<i64>>,
    dilations: Option<Vec<i64>>,
    output_padding: Option<Vec<i64>>,
    output_shape: Option<Vec<i64>>,
}

/// Resolved 2-D geometry (1-D ConvTranspose uses `H = 1`, kernel height 1).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Geometry {
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    /// Padding removed at the start of each spatial axis (may be negative: added).
    pad_begin: [isize; 2],
    out: [usize; 2],
}

fn spatial(v: &Option<Vec<i64>>, sp: usize, default: i64, what: &str) -> Result<Vec<i64>, String> {
    match v {
        None => Ok(vec![default; sp]),
        Some(v) if v.len() == sp => Ok(v.clone()),
        Some(v) => Err(format!(
            "{what} has {} values for {sp} spatial axes",
            v.len()
        )),
    }
}

impl Attrs {
    fn geometry(&self, in_hw: &[usize], kernel: &[usize]) -> Result<Geometry, String> {
        let sp = in_hw.len();
        let strides = spatial(&self.strides, sp, 1, "strides")?;
        let dilations = spatial(&self.dilations, sp, 1, "dilations")?;
        let out_pad = spatial(&self.output_padding, sp, 0, "output_padding")?;
        if strides.iter().chain(&dilations).any(|&v| v < 1) || out_pad.iter().any(|&v| v < 0) {
            return Err("strides and dilations must be ≥ 1, output_padding ≥ 0".into());
        }
        let mut pad_begin = vec![0isize; sp];
        let mut out = vec![0usize; sp];
        for i in 0..sp {
            // Output size with no padding removed.
            let full = strides[i] * (in_hw[i] as i64 - 1)
                + out_pad[i]
                + (kernel[i] as i64 - 1) * dilations[i]
                + 1;
            let target = match (&self.output_shape, self.auto_pad.as_str()) {
                (Some(s), _) => {
                    // output_shape may list N and C too (older exporters).
                    let s = &s[s.len().saturating_sub(sp)..];
                    Some(s[i])
                }
                (None, "SAME_UPPER" | "SAME_LOWER") => Some(in_hw[i] as i64 * strides[i]),
                _ => None,
            };
            let (begin, size) = match target {
                Some(t) => {
                    let total = full - t;
                    // The spec: SAME_UPPER puts the odd element at the end;
                    // SAME_LOWER and an explicit output_shape at the start.
                    let begin = if self.auto_pad == "SAME_UPPER" {
                        total / 2
                    } else {
                        total - total / 2
                    };
                    (begin, t)
                }
                None => {
                    let pads = match &self.pads {
                        None => vec![0; 2 * sp],
                        Some(p) if p.len() == 2 * sp => p.clone(),
                        Some(p) => return Err(format!("pads has {} values", p.len())),
                    };
                    (pads[i], full - pads[i] - pads[i + sp])
                }
            };
            if size < 1 {
                return Err(format!("output size {size} on spatial axis {i}"));
            }
            pad_begin[i] = begin as isize;
            out[i] = size as usize;
        }
        let two = |v: &[i64]| -> [usize; 2] {
            if sp == 2 {
                [v[0] as usize, v[1] as usize]
            } else {
                [1, v[0] as usize]
            }
        };
        Ok(Geometry {
            kernel: if sp == 2 {
                [kernel[0], kernel[1]]
            } else {
                [1, kernel[0]]
            },
            strides: two(&strides),
            dilations: two(&dilations),
            pad_begin: if sp == 2 {
                [pad_begin[0], pad_begin[1]]
            } else {
                [0, pad_begin[0]]
            },
            out: if sp == 2 {
                [out[0], out[1]]
            } else {
                [1, out[0]]
            },
        })
    }
}

pub(super) fn build(t: &str, ctx: &NodeCtx<'_>) -> Result<Option<Box<dyn Kernel>>, String> {
    if t != "ConvTranspose" {
        return Ok(None);
    }
    // The attributes ConvTranspose shares with Conv, checked the same way.
    let conv = super::conv::ConvAttrs::parse(ctx)?;
    let attrs = Attrs {
        group: conv.group,
        auto_pad: conv.auto_pad,
        pads: conv.pads,
        strides: conv.strides,
        dilations: conv.dilations,
        output_padding: ctx.ints("output_padding"),
        output_shape: ctx.ints("output_shape"),
    };
    let kernel_shape = conv.kernel_shape;
    Ok(Some(boxed(move |i| {
        let (x, w) = (input(i, 0)?, input(i, 1)?);
        let sp = x.shape.len().checked_sub(2).ok_or("input needs rank ≥ 3")?;
        if !(1..=2).contains(&sp) || w.shape.len() != x.shape.len() {
            return Err(format!(
                "only 1-D and 2-D ConvTranspose is supported (input {:?}, weights {:?})",
                x.shape, w.shape
            ));
        }
        let (n, c) = (x.shape[0], x.shape[1]);
        let g = attrs.group;
        if w.shape[0] != c || c % g != 0 {
            return Err(format!(
                "weights {:?} do not match {c} input channels in {g} groups",
                w.shape
            ));
        }
        if let Some(ks) = &kernel_shape {
            if ks
                .iter()
                .map(|&v| v as usize)
                .ne(w.shape[2..].iter().copied())
            {
                return Err(format!(
                    "kernel_shape {ks:?} does not match weights {:?}",
                    w.shape
                ));
            }
        }
        let geo = attrs.geometry(&x.shape[2..], &w.shape[2..])?;
        let mg = w.shape[1];
        let m = mg * g;
        let bias = i
            .get(2)
            .copied()
            .flatten()
            .map(|b| b.as_f32())
            .transpose()?;
        if bias.is_some_and(|b| b.len() != m) {
            return Err("ConvTranspose bias must have M values".into());
        }
        let (h, wd) = if sp == 2 {
            (x.shape[2], x.shape[3])
        } else {
            (1, x.shape[2])
        };
        let out = conv_transpose2d_f32(x.as_f32()?, w.as_f32()?, bias, &geo, n, c, g, mg, h, wd);
        let mut shape = vec![n, m];
        if sp == 2 {
            shape.extend(geo.out);
        } else {
            shape.push(geo.out[1]);
        }
        Ok(vec![Array::f32(shape, out)])
    })))
}

#[allow(clippy::too_many_arguments)]
fn conv_transpose2d_f32(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    geo: &Geometry,
    n: usize,
    c: usize,
    group: usize,
    mg: usize,
    h: usize,
    wd: usize,
) -> Vec<f32> {
    let cg = c / group;
    let m = mg * group;
    let [kh, kw] = geo.kernel;
    let [oh, ow] = geo.out;
    let taps = kh * kw;
    let rows = mg * taps;
    let pix = h * wd;
    // Wᵀ per group: [(m, ky, kx), ci] from W[ci, m, ky, kx].
    let mut wt = vec![0f32; group * rows * cg];
    for grp in 0..group {
        for ci in 0..cg {
            for r in 0..rows {
                wt[(grp * rows + r) * cg + ci] = w[((grp * cg + ci) * mg) * taps + r];
            }
        }
    }
    let mut out = vec![0f32; n * m * oh * ow];
    let mut col = vec![0f32; rows * pix];
    for img in 0..n {
        for grp in 0..group {
            let xg = &x[(img * c + grp * cg) * pix..][..cg * pix];
            sgemm(
                rows,
                pix,
                cg,
                &wt[grp * rows * cg..][..rows * cg],
                xg,
                &mut col,
            );
            for mi in 0..mg {
                let plane = &mut out[(img * m + grp * mg + mi) * oh * ow..][..oh * ow];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let src = &col[((mi * kh + ky) * kw + kx) * pix..][..pix];
                        for iy in 0..h {
                            let oy = (iy * geo.strides[0] + ky * geo.dilations[0]) as isize
                                - geo.pad_begin[0];
                            if oy < 0 || oy as usize >= oh {
                                continue;
                            }
                            let dst = &mut plane[oy as usize * ow..][..ow];
                            for ix in 0..wd {
                                let ox = (ix * geo.strides[1] + kx * geo.dilations[1]) as isize
                                    - geo.pad_begin[1];
                                if ox >= 0 && (ox as usize) < ow {
                                    dst[ox as usize] += src[iy * wd + ix];
                                }
                            }
                        }
                    }
                }
                if let Some(b) = bias {
                    let bv = b[grp * mg + mi];
                    plane.iter_mut().for_each(|v| *v += bv);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: every input pixel scatters its weighted kernel.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        w: &[f32],
        geo: &Geometry,
        n: usize,
        c: usize,
        group: usize,
        mg: usize,
        h: usize,
        wd: usize,
    ) -> Vec<f32> {
        let cg = c / group;
        let m = mg * group;
        let [oh, ow] = geo.out;
        let [kh, kw] = geo.kernel;
        let mut out = vec![0f32; n * m * oh * ow];
        for img in 0..n {
            for ci in 0..c {
                let grp = ci / cg;
                for mi in 0..mg {
                    for iy in 0..h {
                        for ix in 0..wd {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let oy = (iy * geo.strides[0] + ky * geo.dilations[0]) as isize
                                        - geo.pad_begin[0];
                                    let ox = (ix * geo.strides[1] + kx * geo.dilations[1]) as isize
                                        - geo.pad_begin[1];
                                    if oy < 0 || ox < 0 || oy as usize >= oh || ox as usize >= ow {
                                        continue;
                                    }
                                    let wv = w[((ci * mg + mi) * kh + ky) * kw + kx];
                                    out[((img * m + grp * mg + mi) * oh + oy as usize) * ow
                                        + ox as usize] +=
                                        wv * x[((img * c + ci) * h + iy) * wd + ix];
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_on_awkward_geometries() {
        let mut seed = 7u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for &(c, g, mg, h, wd, k, s, d, pad, opad) in &[
            (1, 1, 1, 1, 1, 1, 1, 1, 0, 0),
            (3, 1, 2, 5, 4, 3, 2, 1, 1, 1),
            (4, 2, 3, 3, 7, 2, 2, 1, 0, 0),
            (4, 4, 1, 6, 5, 4, 2, 1, 1, 0),
            (2, 1, 17, 3, 3, 3, 3, 2, 2, 2),
            (8, 1, 4, 8, 8, 2, 2, 1, 0, 0),
        ] {
            let attrs = Attrs {
                group: g,
                auto_pad: "NOTSET".into(),
                pads: Some(vec![pad; 4]),
                strides: Some(vec![s; 2]),
                dilations: Some(vec![d; 2]),
                output_padding: Some(vec![opad; 2]),
                output_shape: None,
            };
            let geo = attrs.geometry(&[h, wd], &[k, k]).unwrap();
            let n = 2;
            let x: Vec<f32> = (0..n * c * h * wd).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..c * mg * k * k).map(|_| rnd()).collect();
            let got = conv_transpose2d_f32(&x, &w, None, &geo, n, c, g, mg, h, wd);
            let want = naive(&x, &w, &geo, n, c, g, mg, h, wd);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn output_shape_and_same_padding() {
        let attrs = Attrs {
            group: 1,
            auto_pad: "SAME_UPPER".into(),
            pads: None,
            strides: Some(vec![2, 2]),
            dilations: None,
            output_padding: None,
            output_shape: None,
        };
        let geo = attrs.geometry(&[5, 6], &[3, 3]).unwrap();
        assert_eq!(geo.out, [10, 12]);
        // full = 2·4 + 3 = 11 → total 1: SAME_UPPER removes it at the end.
        assert_eq!(geo.pad_begin, [0, 0]);
        let lower = Attrs {
            auto_pad: "SAME_LOWER".into(),
            ..attrs.clone()
        };
        assert_eq!(lower.geometry(&[5, 6], &[3, 3]).unwrap().pad_begin, [1, 1]);
        let explicit = Attrs {
            auto_pad: "NOTSET".into(),
            output_shape: Some(vec![1, 8, 10, 11]),
            ..attrs
        };
        let geo = explicit.geometry(&[5, 6], &[3, 3]).unwrap();
        assert_eq!(geo.out, [10, 11]);
        assert_eq!(geo.pad_begin, [1, 1]);
    }
}
