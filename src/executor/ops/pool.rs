//! Pooling (MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool; 1-D and 2-D) and Resize
//! (nearest / linear, separable per axis).

use super::conv::{nhw, out_shape, ConvAttrs};
use super::{boxed, input, Kernel, NodeCtx};
use crate::executor::value::{strides, Array, ArrayData};

pub(super) fn build(t: &str, ctx: &NodeCtx<'_>) -> Result<Option<Box<dyn Kernel>>, String> {
    Ok(Some(match t {
        "GlobalAveragePool" | "GlobalMaxPool" => Box::new(GlobalPool {
            avg: t == "GlobalAveragePool",
            nhwc: false,
            dq: None,
        }),
        "MaxPool" | "AveragePool" => {
            let pa = PoolAttrs::parse(t, ctx)?;
            let include_pad = ctx.int("count_include_pad", 0) != 0;
            let max = t == "MaxPool";
            // 8-bit input (a uint8/int8 MaxPool, as QOperator models have): the codes kernel,
            // NCHW.
            let codes = max.then(|| MaxPoolCodes {
                pa: pa.clone(),
                nhwc: false,
            });
            boxed(move |i| {
                let x = input(i, 0)?;
                if let Some(k) = &codes {
                    if matches!(x.data, ArrayData::U8(_) | ArrayData::I8(_)) {
                        return k.run(i);
                    }
                }
                let (g, oh, ow) = pa.geometry(&x.shape)?;
                let (n, h, w) = nhw(&x.shape);
                let c = g.c_in;
                let v = x.as_f32()?;
                let mut out = Vec::with_capacity(n * c * oh * ow);
                if windows_inside(&g, h, w, oh, ow) {
                    let planes = &v[..n * c * h * w];
                    let out = if max {
                        pool_inside(planes, h, w, oh, ow, &g, f32::NEG_INFINITY, f32::max, |m| m)
                    } else {
                        let cnt = (g.kernel[0] * g.kernel[1]).max(1) as f32;
                        pool_inside(planes, h, w, oh, ow, &g, 0.0, |a, b| a + b, |s| s / cnt)
                    };
                    return Ok(vec![Array::f32(out_shape(&x.shape, c, oh, ow), out)]);
                }
                for plane in 0..n * c {
                    let p = &v[plane * h * w..(plane + 1) * h * w];
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let (mut acc, mut cnt, mut padded) =
                                (if max { f32::NEG_INFINITY } else { 0.0 }, 0usize, 0usize);
                            // Column sums first, then across columns: the summation order of
                            // ONNX Runtime's pooling, so that averages of quantized values
                            // (often exact ties for a following quantizer) round the same way.
                            for kx in 0..g.kernel[1] {
                                let ix = (ox * g.strides[1] + kx * g.dilations[1]) as isize
                                    - g.pads[1] as isize;
                                let mut col = if max { f32::NEG_INFINITY } else { 0.0 };
                                for ky in 0..g.kernel[0] {
                                    let iy = (oy * g.strides[0] + ky * g.dilations[0]) as isize
                                        - g.pads[0] as isize;
                                    let in_pad = iy < (h + g.pads[2]) as isize
                                        && ix < (w + g.pads[3]) as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w
                                    {
                                        let e = p[iy as usize * w + ix as usize];
                                        if max {
                                            col = col.max(e);
                                        } else {
                                            col += e;
                                        }
                                        cnt += 1;
                                        padded += 1;
                                    } else if in_pad {
                                        padded += 1;
                                    }
                                }
                                if max {
                                    acc = acc.max(col);
                                } else {
                                    acc += col;
                                }
                            }
                            out.push(if max {
                                acc
                            } else {
                                acc / (if include_pad { padded } else { cnt }).max(1) as f32
                            });
                        }
                    }
                }
                Ok(vec![Array::f32(out_shape(&x.shape, c, oh, ow), out)])
            })
        }
        _ => return Ok(None),
    }))
}

/// The attributes of a MaxPool / AveragePool, parsed once.
#[derive(Clone)]
struct PoolAttrs {
    attrs: ConvAttrs,
    ks: Vec<i64>,
    ceil: bool,
}

impl PoolAttrs {
    fn parse(t: &str, ctx: &NodeCtx<'_>) -> Result<PoolAttrs, String> {
        let attrs = ConvAttrs::parse(ctx)?;
        let ks = attrs
            .kernel_shape
            .clone()
            .ok_or("pooling needs kernel_shape")?;
        if t == "MaxPool" && ctx.int("storage_order", 0) != 0 {
            return Err("MaxPool storage_order=1 is not supported".into());
        }
        if t == "MaxPool" && ctx.n_outputs > 1 {
            return Err("MaxPool Indices output is not supported".into());
        }
        Ok(PoolAttrs {
            attrs,
            ks,
            ceil: ctx.int("ceil_mode", 0) != 0,
        })
    }

    /// The window geometry (as a depthwise conv's) and the output's `(OH, OW)` for an NCHW
    /// input shape (rank 3 or 4).
    fn geometry(
        &self,
        x_shape: &[usize],
    ) -> Result<(crate::kernels::reference::ConvGeometry, usize, usize), String> {
        // The geometry helper wants weight dims: [C, 1, k..] with group = C.
        let mut wshape = vec![x_shape.get(1).copied().unwrap_or(0), 1];
        wshape.extend(self.ks.iter().map(|&k| k.max(1) as usize));
        let mut a = self.attrs.clone();
        a.group = wshape[0].max(1);
        a.kernel_shape = None;
        let g = a.geometry(x_shape, &wshape)?;
        let (_, h, w) = nhw(x_shape);
        let od = |len: usize, d: usize| -> Result<usize, String> {
            let (k, s, dl) = (g.kernel[d], g.strides[d], g.dilations[d]);
            let span = len + g.pads[d] + g.pads[d + 2];
            let eff = (k - 1) * dl + 1;
            if span < eff {
                return Err("pooling window larger than the padded input".into());
            }
            let mut o = if self.ceil {
                (span - eff).div_ceil(s) + 1
            } else {
                (span - eff) / s + 1
            };
            // A window may not start in the end padding.
            if self.ceil && (o - 1) * s >= len + g.pads[d] {
                o -= 1;
            }
            Ok(o)
        };
        let (oh, ow) = (od(h, 0)?, od(w, 1)?);
        Ok((g, oh, ow))
    }
}

/// MaxPool on 8-bit codes (between a DequantizeLinear and a QuantizeLinear of the same
/// parameters: max commutes with the monotonic dequantization, so the codes are pooled
/// directly). NCHW, or NHWC (`[N, H, W, C]` in and out) when the layout pass keeps its
/// values so: per output pixel, the channel vectors of the window's pixels, maxed.
struct MaxPoolCodes {
    pa: PoolAttrs,
    nhwc: bool,
}

/// A MaxPool kernel for 8-bit codes (see [`MaxPoolCodes`]).
pub(crate) fn max_pool_of_codes(ctx: &NodeCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    Ok(Box::new(MaxPoolCodes {
        pa: PoolAttrs::parse("MaxPool", ctx)?,
        nhwc: false,
    }))
}

impl Kernel for MaxPoolCodes {
    fn run(&self, i: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        let x = input(i, 0)?;
        if !matches!(x.rank(), 3 | 4) {
            return Err("pooling needs rank 3 or 4".into());
        }
        let nchw = if self.nhwc {
            super::super::qlinear::channels_first(&x.shape)
        } else {
            x.shape.clone()
        };
        let (g, oh, ow) = self.pa.geometry(&nchw)?;
        let (n, h, w) = nhw(&nchw);
        let c = g.c_in;
        let mut shape = out_shape(&nchw, c, oh, ow);
        if self.nhwc {
            shape = super::super::qlinear::channels_last(&shape);
        }
        let data = match (&x.data, self.nhwc) {
            (ArrayData::U8(v), false) => {
                ArrayData::U8(max_pool_codes(v, n * c, h, w, oh, ow, &g, 0u8))
            }
            (ArrayData::I8(v), false) => {
                ArrayData::I8(max_pool_codes(v, n * c, h, w, oh, ow, &g, i8::MIN))
            }
            (ArrayData::U8(v), true) => {
                ArrayData::U8(max_pool_codes_nhwc(v, [n, h, w, c], oh, ow, &g, 0u8))
            }
            (ArrayData::I8(v), true) => {
                ArrayData::I8(max_pool_codes_nhwc(v, [n, h, w, c], oh, ow, &g, i8::MIN))
            }
            (d, _) => return Err(format!("expected 8-bit codes, got {}", d.dtype())),
        };
        Ok(vec![Array::new(shape, data)?])
    }

    fn layout_role(&mut self) -> Option<super::LayoutRole<'_>> {
        Some(super::LayoutRole::Pool(&mut self.nhwc))
    }
}

/// [`max_pool_codes`] on NHWC images (`dims = [N, H, W, C]`), output `[N, OH, OW, C]`:
/// the same maxima (max is exact in any order).
fn max_pool_codes_nhwc<T: Copy + Ord>(
    v: &[T],
    dims: [usize; 4],
    oh: usize,
    ow: usize,
    g: &crate::kernels::reference::ConvGeometry,
    lowest: T,
) -> Vec<T> {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::quantize::avx2() {
        // SAFETY: the host supports AVX2 (checked by avx2()).
        return unsafe { max_pool_codes_nhwc_avx2(v, dims, oh, ow, g, lowest) };
    }
    max_pool_codes_nhwc_body(v, dims, oh, ow, g, lowest)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn max_pool_codes_nhwc_avx2<T: Copy + Ord>(
    v: &[T],
    dims: [usize; 4],
    oh: usize,
    ow: usize,
    g: &crate::kernels::reference::ConvGeometry,
    lowest: T,
) -> Vec<T> {
    max_pool_codes_nhwc_body(v, dims, oh, ow, g, lowest)
}

#[inline(always)]
fn max_pool_codes_nhwc_body<T: Copy + Ord>(
    v: &[T],
    [n, h, w, c]: [usize; 4],
    oh: usize,
    ow: usize,
    g: &crate::kernels::reference::ConvGeometry,
    lowest: T,
) -> Vec<T> {
    let ys = window_taps(oh, g.kernel[0], g.strides[0], g.dilations[0], g.pads[0], h);
    let xs = window_taps(ow, g.kernel[1], g.strides[1], g.dilations[1], g.pads[1], w);
    let mut out = vec![lowest; n * oh * ow * c];
    for (img, o_img) in v[..n * h * w * c]
        .chunks_exact(h * w * c)
        .zip(out.chunks_exact_mut(oh * ow * c))
    {
        for (ty, o_row) in ys.iter().zip(o_img.chunks_exact_mut(ow * c)) {
            for (tx, o) in xs.iter().zip(o_row.chunks_exact_mut(c)) {
                for &iy in ty {
                    for &ix in tx {
                        let px = &img[(iy * w + ix) * c..(iy * w + ix + 1) * c];
                        for (a, &b) in o.iter_mut().zip(px) {
                            *a = (*a).max(b);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Per output coordinate along one axis, the input positions of its window taps that lie
/// inside the input (`len`), with pooling stride `s`, dilation `d` and leading pad `p`.
fn window_taps(outs: usize, k: usize, s: usize, d: usize, p: usize, len: usize) -> Vec<Vec<usize>> {
    (0..outs)
        .map(|o| {
            (0..k)
                .filter_map(|t| (o * s + t * d).checked_sub(p).filter(|&i| i < len))
                .collect()
        })
        .collect()
}

/// GlobalAveragePool / GlobalMaxPool. NCHW: one plane per (n, c), averaged in
/// [`crate::kernels::vmath::lane_sum`]'s order. NHWC (the layout pass's `nhwc`, input
/// `[N, spatial…, C]`): the same per-channel order with the channels side by side, so the bits
/// are those of the NCHW path. With `dq` (a DequantizeLinear fused in front, per tensor) the
/// input is 8-bit codes, each dequantized as DequantizeLinear does (`(x − zp) as f32 · scale`)
/// where the sum or max reads it: the same values in the same order, so the same bits as the
/// two steps, without writing the f32 tensor.
struct GlobalPool {
    avg: bool,
    nhwc: bool,
    dq: Option<(f32, i32)>,
}

/// A global pool of the DequantizeLinear (per-tensor `scale`, `zp`) of 8-bit codes.
pub(crate) fn global_pool_of_codes(avg: bool, scale: f32, zp: i32) -> Box<dyn Kernel> {
    Box::new(GlobalPool {
        avg,
        nhwc: false,
        dq: Some((scale, zp)),
    })
}

impl GlobalPool {
    /// The pooled values, `n · c` of them, from `v` mapped through `f` (`[N, C, inner]`, or
    /// `[N, inner, C]` when NHWC). Compiled for AVX2 where the host has it (plain IEEE adds
    /// and maxes in the same order: the same bits).
    fn pool<T: Copy>(
        &self,
        v: &[T],
        dims: (usize, usize, usize),
        f: impl Fn(T) -> f32 + Copy,
    ) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::quantize::avx2() {
            // SAFETY: the host supports AVX2 (checked by avx2()).
            return unsafe { self.pool_avx2(v, dims, f) };
        }
        self.pool_body(v, dims, f)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn pool_avx2<T: Copy>(
        &self,
        v: &[T],
        dims: (usize, usize, usize),
        f: impl Fn(T) -> f32 + Copy,
    ) -> Vec<f32> {
        self.pool_body(v, dims, f)
    }

    #[inline(always)]
    fn pool_body<T: Copy>(
        &self,
        v: &[T],
        (n, c, inner): (usize, usize, usize),
        f: impl Fn(T) -> f32 + Copy,
    ) -> Vec<f32> {
        if inner == 0 {
            return vec![f32::NAN; n * c];
        }
        if !self.nhwc {
            return v
                .chunks(inner)
                .map(|r| {
                    if self.avg {
                        // In 8 lanes (a sequential sum is one dependent add per element).
                        crate::kernels::vmath::lane_sum_map(r, f) / inner as f32
                    } else {
                        r.iter().fold(f32::NEG_INFINITY, |m, &e| m.max(f(e)))
                    }
                })
                .collect();
        }
        let mut out = Vec::with_capacity(n * c);
        for img in v.chunks_exact(inner * c) {
            if self.avg {
                out.extend(
                    lane_sums_nhwc(img, inner, c, f)
                        .iter()
                        .map(|s| s / inner as f32),
                );
            } else {
                let mut m = vec![f32::NEG_INFINITY; c];
                for px in img.chunks_exact(c) {
                    for (a, &e) in m.iter_mut().zip(px) {
                        *a = a.max(f(e));
                    }
                }
                out.extend(m);
            }
        }
        out
    }
}

impl Kernel for GlobalPool {
    fn run(&self, i: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        let x = input(i, 0)?;
        if x.rank() < 3 {
            return Err("global pooling needs rank ≥ 3".into());
        }
        let dims = if self.nhwc {
            let r = x.rank();
            (
                x.shape[0],
                x.shape[r - 1],
                x.shape[1..r - 1].iter().product::<usize>(),
            )
        } else {
            (
                x.shape[0],
                x.shape[1],
                x.shape[2..].iter().product::<usize>(),
            )
        };
        let out = match (self.dq, &x.data) {
            (None, _) => self.pool(x.as_f32()?, dims, |e| e),
            (Some((s, z)), ArrayData::U8(v)) => {
                self.pool(v, dims, move |e| (i32::from(e) - z) as f32 * s)
            }
            (Some((s, z)), ArrayData::I8(v)) => {
                self.pool(v, dims, move |e| (i32::from(e) - z) as f32 * s)
            }
            (Some(_), d) => return Err(format!("expected 8-bit codes, got {}", d.dtype())),
        };
        let mut shape = if self.nhwc {
            super::super::qlinear::channels_first(&x.shape)
        } else {
            x.shape.clone()
        };
        shape[2..].iter_mut().for_each(|d| *d = 1);
        Ok(vec![Array::f32(shape, out)])
    }

    fn layout_role(&mut self) -> Option<super::LayoutRole<'_>> {
        Some(super::LayoutRole::GlobalPool(&mut self.nhwc))
    }
}

/// Per channel of an NHWC image (`pixels` × `c`), the sum over pixels of `f(x)` in
/// [`crate::kernels::vmath::lane_sum`]'s order: eight lanes over whole groups of eight
/// pixels, the lanes added as a tree, then the remaining pixels in order.
#[inline(always)]
fn lane_sums_nhwc<T: Copy>(img: &[T], pixels: usize, c: usize, f: impl Fn(T) -> f32) -> Vec<f32> {
    let mut acc = vec![0f32; 8 * c];
    let full = pixels / 8 * 8;
    for (p, px) in img[..full * c].chunks_exact(c).enumerate() {
        let lane = &mut acc[(p % 8) * c..(p % 8 + 1) * c];
        for (a, &e) in lane.iter_mut().zip(px) {
            *a += f(e);
        }
    }
    let lane = |l: usize, ch: usize| acc[l * c + ch];
    let mut sums: Vec<f32> = (0..c)
        .map(|ch| {
            ((lane(0, ch) + lane(1, ch)) + (lane(2, ch) + lane(3, ch)))
                + ((lane(4, ch) + lane(5, ch)) + (lane(6, ch) + lane(7, ch)))
        })
        .collect();
    for px in img[full * c..pixels * c].chunks_exact(c) {
        for (s, &e) in sums.iter_mut().zip(px) {
            *s += f(e);
        }
    }
    sums
}

/// Whether every pooling window lies inside the `h × w` input (no leading padding reached).
fn windows_inside(
    g: &crate::kernels::reference::ConvGeometry,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> bool {
    let ([kh, kw], [sh, sw], [dh, dw]) = (g.kernel, g.strides, g.dilations);
    g.pads[0] == 0
        && g.pads[1] == 0
        && oh > 0
        && ow > 0
        && (oh - 1) * sh + (kh - 1) * dh < h
        && (ow - 1) * sw + (kw - 1) * dw < w
}

/// Pooling over NCHW planes when every window lies inside the input ([`windows_inside`]):
/// per output row, the column reductions of its KH input rows over the whole row (a
/// vectorisable pass), then the KW taps of each window, each reduction from `start` with
/// `op`, and `finish` on the result. That is the general loops' order (column reductions,
/// then across columns), so the bits are the same. 2×2 / stride 2 over even planes runs as
/// one flat loop: the planes' rows pair up across the whole tensor (small planes, e.g. 8×8,
/// spent most of their time in per-row set-up).
#[allow(clippy::too_many_arguments)]
fn pool_inside<T: Copy, U: Copy>(
    v: &[T],
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    g: &crate::kernels::reference::ConvGeometry,
    start: T,
    op: impl Fn(T, T) -> T,
    finish: impl Fn(T) -> U,
) -> Vec<U> {
    let ([kh, kw], [sh, sw], [dh, dw]) = (g.kernel, g.strides, g.dilations);
    let planes = v.len().checked_div(h * w).unwrap_or(0);
    let mut out = vec![finish(start); planes * oh * ow];
    if [kh, kw, sh, sw, dh, dw] == [2, 2, 2, 2, 1, 1] && h == 2 * oh && w == 2 * ow {
        for (pair, orow) in v[..planes * h * w]
            .chunks_exact(2 * w)
            .zip(out.chunks_exact_mut(ow))
        {
            let (r0, r1) = pair.split_at(w);
            for ((y, a), b) in orow
                .iter_mut()
                .zip(r0.chunks_exact(2))
                .zip(r1.chunks_exact(2))
            {
                let (c0, c1) = (op(op(start, a[0]), b[0]), op(op(start, a[1]), b[1]));
                *y = finish(op(op(start, c0), c1));
            }
        }
        return out;
    }
    let mut col = vec![start; w];
    for (p, o) in v.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for (oy, orow) in o.chunks_exact_mut(ow).enumerate() {
            col.fill(start);
            for ky in 0..kh {
                let row = &p[(oy * sh + ky * dh) * w..][..w];
                for (t, &e) in col.iter_mut().zip(row) {
                    *t = op(*t, e);
                }
            }
            for (ox, y) in orow.iter_mut().enumerate() {
                let mut acc = start;
                for kx in 0..kw {
                    acc = op(acc, col[ox * sw + kx * dw]);
                }
                *y = finish(acc);
            }
        }
    }
    out
}

/// MaxPool over `planes` NCHW planes of integer codes; windows are clipped to the input
/// (padding never wins a max). `lowest` is the type's minimum.
#[allow(clippy::too_many_arguments)]
fn max_pool_codes<T: Copy + Ord>(
    v: &[T],
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    g: &crate::kernels::reference::ConvGeometry,
    lowest: T,
) -> Vec<T> {
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.strides;
    let [dh, dw] = g.dilations;
    let (pt, pl) = (g.pads[0], g.pads[1]);
    if windows_inside(g, h, w, oh, ow) {
        return pool_inside(&v[..planes * h * w], h, w, oh, ow, g, lowest, T::max, |m| m);
    }
    let mut out = Vec::with_capacity(planes * oh * ow);
    // Per output coordinate, the input taps inside the image (same for every plane).
    let ys = window_taps(oh, kh, sh, dh, pt, h);
    let xs = window_taps(ow, kw, sw, dw, pl, w);
    for p in v[..planes * h * w].chunks_exact(h * w) {
        for ty in &ys {
            for tx in &xs {
                let mut m = lowest;
                for &iy in ty {
                    let row = &p[iy * w..(iy + 1) * w];
                    for &ix in tx {
                        m = m.max(row[ix]);
                    }
                }
                out.push(m);
            }
        }
    }
    out
}

/// ONNX Resize, modes `nearest` and `linear` (any rank, separable per axis).
pub(super) fn resize(ctx: &NodeCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let mode = ctx.string("mode", "nearest");
    let ctm = ctx.string(
        "coordinate_transformation_mode",
        if ctx.opset >= 11 {
            "half_pixel"
        } else {
            "asymmetric"
        },
    );
    let nearest_mode = ctx.string("nearest_mode", "round_prefer_floor");
    if !matches!(mode.as_str(), "nearest" | "linear") {
        return Err(format!("Resize mode `{mode}` is not supported"));
    }
    if !matches!(
        ctm.as_str(),
        "half_pixel" | "asymmetric" | "align_corners" | "pytorch_half_pixel"
    ) {
        return Err(format!(
            "Resize coordinate_transformation_mode `{ctm}` is not supported"
        ));
    }
    ctx.refuse_attr("axes", "only full-rank scales/sizes")?;
    if ctx.int("antialias", 0) != 0 {
        return Err("Resize antialias=1 is not supported".into());
    }
    let opset = ctx.opset;
    Ok(boxed(move |i| {
        let x = input(i, 0)?;
        let r = x.rank();
        let (scales_in, sizes_in) = if opset < 11 {
            (Some(input(i, 1)?), None)
        } else {
            (i.get(2).copied().flatten(), i.get(3).copied().flatten())
        };
        let (scales, out): (Vec<f32>, Vec<usize>) = match (sizes_in, scales_in) {
            (Some(s), _) if !s.is_empty() => {
                let sz: Vec<usize> = s.ints()?.iter().map(|&d| d.max(0) as usize).collect();
                if sz.len() != r {
                    return Err(format!("Resize sizes {sz:?} for rank {r}"));
                }
                (
                    sz.iter()
                        .zip(&x.shape)
                        .map(|(&o, &n)| o as f32 / n as f32)
                        .collect(),
                    sz,
                )
            }
            (_, Some(s)) if !s.is_empty() => {
                let sc = s.as_f32()?.to_vec();
                if sc.len() != r {
                    return Err(format!("Resize scales {sc:?} for rank {r}"));
                }
                let out = sc
                    .iter()
                    .zip(&x.shape)
                    .map(|(&f, &n)| (n as f32 * f).floor() as usize)
                    .collect();
                (sc, out)
            }
            _ => return Err("Resize needs scales or sizes".into()),
        };
        if x.shape.contains(&0) || out.iter().product::<usize>() > 1 << 31 {
            return Err(format!(
                "Resize of {:?} to {out:?} is not supported",
                x.shape
            ));
        }
        let mut cur = x.as_f32()?.to_vec();
        let mut shape = x.shape.clone();
        for d in 0..r {
            if out[d] == shape[d] && scales[d] == 1.0 {
                continue;
            }
            let (len, olen) = (shape[d], out[d]);
            let src = |o: usize| -> f32 {
                let (o, s) = (o as f32, scales[d]);
                match ctm.as_str() {
                    "asymmetric" => o / s,
                    "align_corners" => {
                        if olen > 1 {
                            o * (len as f32 - 1.0) / (olen as f32 - 1.0)
                        } else {
                            0.0
                        }
                    }
                    "pytorch_half_pixel" => {
                        if olen > 1 {
                            (o + 0.5) / s - 0.5
                        } else {
                            0.0
                        }
                    }
                    _ => (o + 0.5) / s - 0.5,
                }
            };
            let st = strides(&shape);
            let (outer, inner) = (shape[..d].iter().product::<usize>(), st[d]);
            let mut next = Vec::with_capacity(outer * olen * inner);
            for o in 0..outer {
                for k in 0..olen {
                    let xs = src(k);
                    let base = o * len * inner;
                    if mode == "nearest" {
                        let fl = xs.floor();
                        let idx = match nearest_mode.as_str() {
                            "floor" => fl,
                            "ceil" => xs.ceil(),
                            "round_prefer_ceil" => (xs + 0.5).floor(),
                            _ => {
                                if xs - fl == 0.5 {
                                    fl
                                } else {
                                    xs.round()
                                }
                            }
                        };
                        let idx = (idx.max(0.0) as usize).min(len - 1);
                        next.extend_from_slice(&cur[base + idx * inner..base + (idx + 1) * inner]);
                    } else {
                        let xs = xs.clamp(0.0, (len - 1) as f32);
                        let lo = xs.floor() as usize;
                        let hi = (lo + 1).min(len - 1);
                        let f = xs - lo as f32;
                        for e in 0..inner {
                            let (a, b) = (cur[base + lo * inner + e], cur[base + hi * inner + e]);
                            next.push(a * (1.0 - f) + b * f);
                        }
                    }
                }
            }
            shape[d] = olen;
            cur = next;
        }
        Ok(vec![Array::f32(shape, cur)])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::ConvGeometry;

    /// `pool_inside` (both its paths) against a window scan in the documented order
    /// (column reductions from the start value, then across columns from the start value),
    /// bit for bit, for max and average, with signed zeros and NaNs in the data.
    #[test]
    fn pool_inside_equals_a_window_scan() {
        for (h, w) in [(4usize, 4usize), (8, 8), (7, 9), (5, 17), (1, 3)] {
            let planes = 3usize;
            let v: Vec<f32> = (0..planes * h * w)
                .map(|i| match i % 29 {
                    0 => -0.0,
                    1 if i % 3 == 0 => f32::NAN,
                    _ => ((i * 37 % 101) as f32 - 50.0) * 0.173,
                })
                .collect();
            for (k, s, d) in [
                ([2, 2], [2, 2], [1, 1]),
                ([1, 3], [1, 1], [1, 1]),
                ([1, 2], [1, 2], [1, 1]),
                ([1, 1], [1, 1], [1, 1]),
            ] {
                if k[0] > h || (k[1] - 1) * d[1] + 1 > w {
                    continue;
                }
                let g = ConvGeometry {
                    c_in: planes,
                    c_out: planes,
                    group: planes,
                    kernel: k,
                    strides: s,
                    pads: [0; 4],
                    dilations: d,
                };
                let oh = (h - (k[0] - 1) * d[0] - 1) / s[0] + 1;
                let ow = (w - (k[1] - 1) * d[1] - 1) / s[1] + 1;
                for max in [false, true] {
                    let got = if max {
                        pool_inside(&v, h, w, oh, ow, &g, f32::NEG_INFINITY, f32::max, |m| m)
                    } else {
                        let cnt = (k[0] * k[1]) as f32;
                        pool_inside(&v, h, w, oh, ow, &g, 0.0, |a, b| a + b, |s| s / cnt)
                    };
                    let start = if max { f32::NEG_INFINITY } else { 0.0 };
                    let op = |a: f32, b: f32| if max { a.max(b) } else { a + b };
                    let mut want = Vec::new();
                    for p in 0..planes {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let mut acc = start;
                                for kx in 0..k[1] {
                                    let mut col = start;
                                    for ky in 0..k[0] {
                                        let (iy, ix) =
                                            (oy * s[0] + ky * d[0], ox * s[1] + kx * d[1]);
                                        col = op(col, v[p * h * w + iy * w + ix]);
                                    }
                                    acc = op(acc, col);
                                }
                                want.push(if max { acc } else { acc / (k[0] * k[1]) as f32 });
                            }
                        }
                    }
                    let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{h}x{w} k{k:?} s{s:?} max {max}");
                }
            }
        }
    }

    /// The NHWC global pools equal the NCHW ones bit for bit (lane order kept), for pixel
    /// counts around the 8-lane groups.
    #[test]
    fn global_pool_nhwc_equals_nchw() {
        for (h, w) in [(1usize, 1usize), (2, 3), (4, 4), (3, 5), (7, 7), (8, 9)] {
            let (n, c) = (2usize, 5usize);
            let nchw: Vec<f32> = (0..n * c * h * w)
                .map(|i| ((i * 7919 % 1009) as f32 - 500.0) * 0.0137)
                .collect();
            let mut nhwc = vec![0f32; nchw.len()];
            for img in 0..n {
                for ch in 0..c {
                    for p in 0..h * w {
                        nhwc[(img * h * w + p) * c + ch] = nchw[(img * c + ch) * h * w + p];
                    }
                }
            }
            for avg in [true, false] {
                let a = Array::f32(vec![n, c, h, w], nchw.clone());
                let b = Array::f32(vec![n, h, w, c], nhwc.clone());
                let ka = GlobalPool {
                    avg,
                    nhwc: false,
                    dq: None,
                };
                let kb = GlobalPool {
                    avg,
                    nhwc: true,
                    dq: None,
                };
                let (ya, yb) = (ka.run(&[Some(&a)]).unwrap(), kb.run(&[Some(&b)]).unwrap());
                assert_eq!(ya[0].shape, vec![n, c, 1, 1]);
                assert_eq!(ya[0].shape, yb[0].shape);
                let bits = |x: &Array| {
                    x.as_f32()
                        .unwrap()
                        .iter()
                        .map(|f| f.to_bits())
                        .collect::<Vec<_>>()
                };
                assert_eq!(bits(&ya[0]), bits(&yb[0]), "{h}x{w} avg {avg}");
            }
        }
    }

    /// A global pool of codes with its DequantizeLinear fused equals DequantizeLinear then the
    /// float pool, bit for bit: NCHW and NHWC, u8 and i8, average and max, pixel counts
    /// around the 8-lane groups.
    #[test]
    fn global_pool_of_codes_equals_dequantize_then_pool() {
        use crate::kernels::quantize::dequantize_vec;
        for (h, w) in [(1usize, 1usize), (2, 3), (4, 4), (3, 5), (7, 7), (8, 9)] {
            let (n, c) = (2usize, 5usize);
            let len = n * c * h * w;
            let u: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8).collect();
            let s: Vec<i8> = u.iter().map(|&b| b as i8).collect();
            for nhwc in [false, true] {
                let shape = if nhwc {
                    vec![n, h, w, c]
                } else {
                    vec![n, c, h, w]
                };
                for avg in [true, false] {
                    let float = GlobalPool {
                        avg,
                        nhwc,
                        dq: None,
                    };
                    let codes = |scale: f32, zp: i32| GlobalPool {
                        avg,
                        nhwc,
                        dq: Some((scale, zp)),
                    };
                    let bits = |x: &Array| {
                        x.as_f32()
                            .unwrap()
                            .iter()
                            .map(|f| f.to_bits())
                            .collect::<Vec<_>>()
                    };
                    let (su, zu, si, zi) = (0.0371f32, 131u8, 0.0123f32, -7i8);
                    let fu = Array::f32(shape.clone(), dequantize_vec(&u, su, zu));
                    let fi = Array::f32(shape.clone(), dequantize_vec(&s, si, zi));
                    let cu = Array::new(shape.clone(), ArrayData::U8(u.clone())).unwrap();
                    let ci = Array::new(shape.clone(), ArrayData::I8(s.clone())).unwrap();
                    let want_u = float.run(&[Some(&fu)]).unwrap();
                    let got_u = codes(su, i32::from(zu)).run(&[Some(&cu)]).unwrap();
                    assert_eq!(want_u[0].shape, got_u[0].shape);
                    assert_eq!(bits(&want_u[0]), bits(&got_u[0]), "u8 {h}x{w} {nhwc} {avg}");
                    let want_i = float.run(&[Some(&fi)]).unwrap();
                    let got_i = codes(si, i32::from(zi)).run(&[Some(&ci)]).unwrap();
                    assert_eq!(bits(&want_i[0]), bits(&got_i[0]), "i8 {h}x{w} {nhwc} {avg}");
                }
            }
        }
    }

    /// `max_pool_codes` (both its paths) against a direct window scan.
    #[test]
    fn max_pool_codes_equals_a_window_scan() {
        for (h, w) in [(7usize, 9usize), (8, 8), (5, 32), (9, 17), (6, 10)] {
            max_pool_codes_equals_a_window_scan_on(h, w);
        }
    }

    fn max_pool_codes_equals_a_window_scan_on(h: usize, w: usize) {
        let planes = 3usize;
        let v: Vec<u8> = (0..planes * h * w).map(|i| (i * 97 % 251) as u8).collect();
        for (k, s, d, pads) in [
            ([2, 2], [2, 2], [1, 1], [0, 0, 0, 0]),
            ([3, 3], [1, 1], [1, 1], [0, 0, 0, 0]),
            ([3, 2], [2, 1], [2, 1], [0, 0, 0, 0]),
            ([3, 3], [2, 2], [1, 1], [1, 1, 1, 1]),
            ([2, 3], [1, 2], [1, 2], [0, 2, 1, 0]),
        ] {
            let g = ConvGeometry {
                c_in: planes,
                c_out: planes,
                group: planes,
                kernel: k,
                strides: s,
                pads,
                dilations: d,
            };
            let oh = (h + pads[0] + pads[2] - (k[0] - 1) * d[0] - 1) / s[0] + 1;
            let ow = (w + pads[1] + pads[3] - (k[1] - 1) * d[1] - 1) / s[1] + 1;
            let got = max_pool_codes(&v, planes, h, w, oh, ow, &g, 0u8);
            let mut want = Vec::new();
            for p in 0..planes {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut m = 0u8;
                        for ky in 0..k[0] {
                            for kx in 0..k[1] {
                                let iy = (oy * s[0] + ky * d[0]) as isize - pads[0] as isize;
                                let ix = (ox * s[1] + kx * d[1]) as isize - pads[1] as isize;
                                if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                    m = m.max(v[p * h * w + iy as usize * w + ix as usize]);
                                }
                            }
                        }
                        want.push(m);
                    }
                }
            }
            assert_eq!(
                got, want,
                "{h}x{w}: kernel {k:?} strides {s:?} dil {d:?} pads {pads:?}"
            );
            // NHWC (the planes as the channels of one image, and as 17 channels of two
            // images with i8 codes): the same maxima, channels last.
            let nhwc: Vec<u8> = (0..h * w)
                .flat_map(|px| (0..planes).map(move |p| (p, px)))
                .map(|(p, px)| v[p * h * w + px])
                .collect();
            let got = max_pool_codes_nhwc(&nhwc, [1, h, w, planes], oh, ow, &g, 0u8);
            for (j, &m) in got.iter().enumerate() {
                let (px, p) = (j / planes, j % planes);
                assert_eq!(
                    m,
                    want[p * oh * ow + px],
                    "NHWC {h}x{w} k {k:?} pads {pads:?}"
                );
            }
            let (n, c) = (2usize, 17usize);
            let codes: Vec<i8> = (0..n * h * w * c)
                .map(|i| (i * 89 % 256) as u8 as i8)
                .collect();
            let g17 = ConvGeometry {
                c_in: c,
                c_out: c,
                group: c,
                ..g
            };
            let got = max_pool_codes_nhwc(&codes, [n, h, w, c], oh, ow, &g17, i8::MIN);
            let planar: Vec<i8> = (0..n * c * h * w)
                .map(|i| {
                    let (img, ch, px) = (i / (c * h * w), i / (h * w) % c, i % (h * w));
                    codes[(img * h * w + px) * c + ch]
                })
                .collect();
            let want = max_pool_codes(&planar, n * c, h, w, oh, ow, &g17, i8::MIN);
            for (j, &m) in got.iter().enumerate() {
                let (img, px, ch) = (j / (oh * ow * c), j / c % (oh * ow), j % c);
                assert_eq!(
                    m,
                    want[(img * c + ch) * oh * ow + px],
                    "i8 NHWC {h}x{w} k {k:?}"
                );
            }
        }
    }
}
