//! The qnnpack backend of the executor: lowered QDQ units on the qnnpack-style kernels of
//! [`crate::kernels::qnnpack`] (u8 activations × u8 weights, fixed-point requantization,
//! convolution through an indirection buffer, depthwise 3×3 / 5×5, u8 Add and average pools).
//!
//! # Semantics
//! - Everything runs in the u8 domain. s8 activations are shifted by +128 together with their
//!   zero point, s8 weights likewise at pack time (`w + 128`, `zp + 128`): the differences
//!   `x − x_zp`, `w − w_zp` and hence the i32 accumulators are unchanged. An s8 output is
//!   produced as u8 with zero point `zp + 128` and shifted back.
//! - Requantization multiplies by `mult[n] = x_scale · w_scale[n] / y_scale`, computed in f32
//!   in the same order as the fbgemm backend and ONNX Runtime, converted **exactly** to a
//!   fixed-point `multiplier · 2^−shift` ([`Requant::from_scale`]); the single rounding step
//!   then gives `round(acc · mult)` of the exact rational product. With
//!   [`Rounding::HalfEven`] (the default, "precise") this is ONNX's round-half-even of the real
//!   product; ONNX Runtime rounds the f32 product `f32(acc · mult)` instead, so the two differ
//!   only where that f32 rounding moves the value across a half-integer (rare, ≤ 1 LSB).
//!   [`Rounding::HalfAway`] is QNNPACK's native tie rule (differs from ONNX on exact ties).
//! - Add: QNNPACK `q8vadd` (two 22-bit multipliers and one rounding shift, ≤ 1 LSB from the
//!   real value); average pools: one fixed-point scale per tap count
//!   ([`crate::kernels::reference::q8pool`], ≤ 1 LSB). ONNX Runtime computes these in float,
//!   so they may disagree by 1 LSB on some elements.
//!
//! # What is not covered (explicit fallback)
//! A unit this backend cannot run (a dequantizing output stage, non-constant weights or
//! quantization parameters, a requantization scale ≥ 2¹⁶) runs on the fbgemm kernels instead,
//! and the unit's description in [`super::Executor::lowered_units`] says so
//! (`… [fbgemm fallback: why]`). Ops outside QDQ units run on the float ops as with every
//! backend. The result is always computed; the fallback only changes which integer kernels
//! do it. A broadcasting Add, a ceil-mode pool and the like simply stay with the generic
//! (backend-independent) lowering.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use super::ops::conv::{nhw, out_shape, ConvAttrs};
use super::ops::{input, Kernel};
use super::qlinear::{channels_first, channels_last, Act, ConvLayout, QOut, QSpec, Src};
use super::value::{Array, ArrayData};
use crate::ir::DataType;
use crate::kernels::qnnpack::{
    q8avgpool, q8conv, q8dwconv, q8gavgpool, q8gemm, q8vadd, ConvIndirection, DwIndirection,
    PackedQ8Dw, PackedQ8Gemm, Q8Output, QnnpackKernels, Requant, Rounding,
};
use crate::kernels::reference::q8conv::{Nhwc, Window2d};
use crate::kernels::reference::q8dwconv::Q8DwWeights;
use crate::kernels::reference::q8gemm::Q8Weights;
use crate::kernels::reference::q8pool::Q8PoolQuant;
use crate::kernels::reference::q8vadd::Q8AddParams;
use crate::kernels::reference::ConvGeometry;

/// The qnnpack kernel set of the process's dispatch tier (`ONNXQ_ISA` pins it; `scalar` gives
/// the portable reference-equal kernels).
fn kernels() -> &'static QnnpackKernels {
    crate::kernels::best().qnnpack
}

fn konst<'a>(s: &'a Option<Src>, what: &str) -> Result<Option<&'a Array>, String> {
    match s {
        None => Ok(None),
        Some(Src::Const(a)) => Ok(Some(a)),
        Some(Src::Input(_)) => Err(format!("{what} is not a constant")),
    }
}

fn scalar_f32(a: &Array, what: &str) -> Result<f32, String> {
    match (&a.data, a.len()) {
        (ArrayData::F32(v), 1) => Ok(v[0]),
        _ => Err(format!("{what} must be one f32")),
    }
}

/// An activation's zero point in the u8 domain, given the activation's type.
fn zp_u8(zp: Option<&Array>, ty: DataType, what: &str) -> Result<u8, String> {
    match zp.map(|z| (&z.data, z.len())) {
        None => Ok(if ty == DataType::I8 { 128 } else { 0 }),
        Some((_, n)) if n != 1 => Err(format!("{what} zero point must be a scalar")),
        Some((d, _)) if d.dtype() != ty => Err(format!(
            "{what} zero point is {}, the tensor is {ty}",
            d.dtype()
        )),
        Some((ArrayData::U8(v), _)) => Ok(v[0]),
        Some((ArrayData::I8(v), _)) => Ok((v[0] as u8) ^ 0x80),
        Some((d, _)) => Err(format!("{what} zero point must be 8-bit, is {}", d.dtype())),
    }
}

/// The zero point's own type (the activation type it implies; u8 when absent).
fn zp_type(zp: Option<&Array>) -> DataType {
    zp.map_or(DataType::U8, Array::dtype)
}

/// An 8-bit activation in the u8 domain (s8 shifted by +128).
fn act_u8(x: &Array) -> Result<Cow<'_, [u8]>, String> {
    match &x.data {
        ArrayData::U8(v) => Ok(Cow::Borrowed(v)),
        ArrayData::I8(v) => Ok(Cow::Owned(v.iter().map(|&e| (e as u8) ^ 0x80).collect())),
        d => Err(format!(
            "quantized input must be u8 or i8, is {}",
            d.dtype()
        )),
    }
}

/// A u8-domain result as an array of the output type.
fn output(shape: Vec<usize>, y: Vec<u8>, signed: bool) -> Result<Array, String> {
    let data = if signed {
        ArrayData::I8(y.into_iter().map(|b| (b ^ 0x80) as i8).collect())
    } else {
        ArrayData::U8(y)
    };
    Array::new(shape, data)
}

/// Weights in the u8 domain (s8 shifted by +128) with 1 or `n` zero points.
fn weights_u8(w: &Array, zp: Option<&Array>, n: usize) -> Result<(Vec<u8>, Vec<u8>), String> {
    let zps = super::qlinear::weight_zero_points(w, zp, n)?;
    match &w.data {
        ArrayData::U8(v) => Ok((v.clone(), zps.iter().map(|&z| z as u8).collect())),
        ArrayData::I8(v) => Ok((
            v.iter().map(|&e| (e as u8) ^ 0x80).collect(),
            zps.iter().map(|&z| ((z as i8) as u8) ^ 0x80).collect(),
        )),
        d => Err(format!("weights must be u8 or i8, are {}", d.dtype())),
    }
}

/// The output stage of a requantizing unit, fixed at planning time.
#[derive(Clone, Debug)]
struct OutSpec {
    out: Q8Output,
    signed: bool,
    y_scale: f32,
}

/// `QOut::Requant` with constant parameters → the u8-domain output stage (clamp of a fused
/// Relu/Clip computed as the fbgemm backend does, `Q(clip(v)) = clamp(Q(v), Q(lo), Q(hi))`).
fn out_spec(out: &QOut, rounding: Rounding) -> Result<OutSpec, String> {
    let QOut::Requant {
        y_scale,
        y_zp,
        y_type,
        act,
    } = out
    else {
        return Err("the output stays in float (dequantizing output stage)".into());
    };
    let Src::Const(ys) = y_scale else {
        return Err("y_scale is not a constant".into());
    };
    let ys = scalar_f32(ys, "y_scale")?;
    if !(ys.is_finite() && ys > 0.0) {
        return Err(format!("y_scale {ys} must be positive and finite"));
    }
    let zp_arr = konst(y_zp, "output zero point")?;
    let ty = zp_arr.map_or(*y_type, Array::dtype);
    let signed = match ty {
        DataType::U8 => false,
        DataType::I8 => true,
        t => return Err(format!("output type {t} is not supported (u8/i8)")),
    };
    let zp = match zp_arr {
        None => 0,
        Some(z) => z.data.to_i64_vec()[0] as i32,
    };
    let (qmin, qmax) = super::qlinear::act_clamp(act, ys, zp, signed);
    let shift = if signed { 128 } else { 0 };
    Ok(OutSpec {
        out: Q8Output {
            zp: (zp + shift) as u8,
            qmin: (qmin + shift) as u8,
            qmax: (qmax + shift) as u8,
            rounding,
        },
        signed,
        y_scale: ys,
    })
}

/// Per-channel fixed-point scales `x_scale · w_scale[n] / y_scale` (f32, as fbgemm/ORT).
fn requants(x_scale: f32, w_scale: &[f32], y_scale: f32) -> Result<Vec<Requant>, String> {
    w_scale
        .iter()
        .map(|&w| Requant::from_scale(x_scale * w / y_scale).map_err(|e| e.to_string()))
        .collect()
}

/// The constant parts of a quantized product, in the u8 domain.
struct Consts {
    /// Activation zero point (u8 domain) folded into the packed bias, and the activation type
    /// it was derived from.
    a_zp: u8,
    x_type: DataType,
    wq: Vec<u8>,
    wzp: Vec<u8>,
    bias: Option<Vec<i32>>,
    rq: Vec<Requant>,
    out: OutSpec,
}

fn consts(spec: &QSpec, n: usize, rounding: Rounding) -> Result<Consts, String> {
    let out = out_spec(&spec.out, rounding)?;
    let Src::Const(w) = &spec.w else {
        return Err("the weights are not a constant".into());
    };
    let xs = scalar_f32(
        konst(&spec.x_scale, "x_scale")?.ok_or("missing x_scale")?,
        "x_scale",
    )?;
    let x_zp = konst(&spec.x_zp, "input zero point")?;
    let x_type = zp_type(x_zp);
    let a_zp = zp_u8(x_zp, x_type, "input")?;
    let (wq, wzp) = weights_u8(w, konst(&spec.w_zp, "weight zero point")?, n)?;
    let ws = match konst(&spec.w_scale, "weight scale")? {
        None => vec![1.0],
        Some(s) => s.as_f32()?.to_vec(),
    };
    if ws.len() != 1 && ws.len() != n {
        return Err(format!(
            "{} weight scales for {n} output channels",
            ws.len()
        ));
    }
    let bias = match konst(&spec.bias, "bias")? {
        None => None,
        Some(b) => match &b.data {
            ArrayData::I32(v) if v.len() == n => Some(v.clone()),
            _ => return Err(format!("bias must be {n} i32 values")),
        },
    };
    let rq = requants(xs, &ws, out.y_scale)?;
    Ok(Consts {
        a_zp,
        x_type,
        wq,
        wzp,
        bias,
        rq,
        out,
    })
}

/// Checks that the run-time activation has the type the packed zero point was derived from.
fn check_x(x: &Array, c: &Consts) -> Result<(), String> {
    if x.dtype() != c.x_type {
        return Err(format!(
            "quantized input is {}, its zero point is {}",
            x.dtype(),
            c.x_type
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Convolution

enum ConvPack {
    /// One packed GEMM per group (groups = 1 is the plain conv).
    Gemm(Vec<PackedQ8Gemm>),
    /// Fewer than 8 input channels (groups = 1): the micro-kernel pads every tap's channels to
    /// 8, so a 3×3 conv of one channel would do 72 MACs for 9. An im2col copy (tiny at these
    /// channel counts) and one GEMM over `K = taps·C` padded once does 16.
    Im2col(PackedQ8Gemm),
    /// Depthwise 3×3 / 5×5 (group = C = M).
    Dw(PackedQ8Dw),
}

enum Indirection {
    Gemm(ConvIndirection),
    Dw(DwIndirection),
}

/// Conv, QLinearConv-like, on qnnpack kernels.
pub(crate) struct Q8Conv {
    attrs: ConvAttrs,
    x_slot: usize,
    w_shape: Vec<usize>,
    c: Consts,
    pack: ConvPack,
    /// The indirection buffers of the last few input shapes (built once per shape and
    /// reused; a threaded run has up to two part sizes).
    ind: Mutex<Vec<Arc<Indirection>>>,
    /// NHWC in/out between quantized convs (set by the planner, as for the fbgemm backend).
    layout: ConvLayout,
}

impl Q8Conv {
    /// # Errors
    /// The reason the unit cannot run on this backend (the caller falls back).
    pub fn new(spec: &QSpec, attrs: ConvAttrs, rounding: Rounding) -> Result<Q8Conv, String> {
        let w_shape = match &spec.w {
            Src::Const(w) => w.shape.clone(),
            Src::Input(_) => return Err("the weights are not a constant".into()),
        };
        if !(3..=4).contains(&w_shape.len()) {
            return Err(format!("weights of shape {w_shape:?}"));
        }
        let m = w_shape[0];
        let c = consts(spec, m, rounding)?;
        let group = attrs.group.max(1);
        if m % group != 0 {
            return Err(format!("{m} output channels in {group} groups"));
        }
        let cg_in = w_shape[1];
        let (kh, kw) = if w_shape.len() == 4 {
            (w_shape[2], w_shape[3])
        } else {
            (1, w_shape[2])
        };
        let taps = kh * kw;
        let cg_out = m / group;
        let ks = kernels();
        let pack = match ks.dwconv(kh, kw) {
            Some(uk) if cg_in == 1 && cg_out == 1 => {
                // [C][1][KH][KW] → [KH][KW][C].
                let mut dw = vec![0u8; taps * m];
                for ch in 0..m {
                    for t in 0..taps {
                        dw[t * m + ch] = c.wq[ch * taps + t];
                    }
                }
                let w = Q8DwWeights {
                    data: &dw,
                    channels: m,
                    zp: &c.wzp,
                    bias: c.bias.as_deref(),
                    requant: &c.rq,
                };
                ConvPack::Dw(PackedQ8Dw::new(uk, &w, kh, kw, c.a_zp))
            }
            _ if group == 1 && cg_in < 8 && taps > 1 => {
                let uk = ks.q8gemm.first().copied().ok_or("no q8gemm kernel")?;
                let k = taps * cg_in;
                // [OC][IC][KH][KW] → [OC][KH·KW][IC], the im2col row order.
                let mut wg = vec![0u8; m * k];
                for o in 0..m {
                    for ic in 0..cg_in {
                        for t in 0..taps {
                            wg[o * k + t * cg_in + ic] = c.wq[o * k + ic * taps + t];
                        }
                    }
                }
                let w = Q8Weights {
                    data: &wg,
                    n: m,
                    k,
                    zp: &c.wzp,
                    bias: c.bias.as_deref(),
                    requant: &c.rq,
                };
                ConvPack::Im2col(PackedQ8Gemm::new(uk, &w, 1, c.a_zp))
            }
            _ => {
                let uk = ks.q8gemm.first().copied().ok_or("no q8gemm kernel")?;
                let k = taps * cg_in;
                let mut packs = Vec::with_capacity(group);
                for g in 0..group {
                    // [OC][IC][KH][KW] → [OC][KH·KW][IC] (tap-major, then channel).
                    let mut wg = vec![0u8; cg_out * k];
                    for o in 0..cg_out {
                        let src = &c.wq[(g * cg_out + o) * k..][..k];
                        for ic in 0..cg_in {
                            for t in 0..taps {
                                wg[o * k + t * cg_in + ic] = src[ic * taps + t];
                            }
                        }
                    }
                    let sel = |v: &[u8]| -> Vec<u8> {
                        if v.len() == 1 {
                            v.to_vec()
                        } else {
                            v[g * cg_out..(g + 1) * cg_out].to_vec()
                        }
                    };
                    let zp = sel(&c.wzp);
                    let rq: Vec<Requant> = if c.rq.len() == 1 {
                        c.rq.clone()
                    } else {
                        c.rq[g * cg_out..(g + 1) * cg_out].to_vec()
                    };
                    let bias = c
                        .bias
                        .as_ref()
                        .map(|b| b[g * cg_out..(g + 1) * cg_out].to_vec());
                    let w = Q8Weights {
                        data: &wg,
                        n: cg_out,
                        k,
                        zp: &zp,
                        bias: bias.as_deref(),
                        requant: &rq,
                    };
                    packs.push(PackedQ8Gemm::new(uk, &w, taps, c.a_zp));
                }
                ConvPack::Gemm(packs)
            }
        };
        Ok(Q8Conv {
            attrs,
            x_slot: spec.x,
            w_shape,
            c,
            pack,
            ind: Mutex::new(Vec::new()),
            layout: ConvLayout {
                x: spec.x,
                ..ConvLayout::default()
            },
        })
    }

    /// Which kernels run this conv (for the unit's description).
    pub fn kernel_family(&self) -> &'static str {
        match self.pack {
            ConvPack::Gemm(_) => "q8conv",
            ConvPack::Im2col(_) => "im2col + q8gemm",
            ConvPack::Dw(_) => "q8dwconv",
        }
    }

    fn indirection(&self, win: &Window2d) -> Arc<Indirection> {
        const KEEP: usize = 4;
        let mut cache = self.ind.lock().unwrap_or_else(|e| e.into_inner());
        let found = cache.iter().find(|ind| match &***ind {
            Indirection::Gemm(i) => i.window() == win,
            Indirection::Dw(i) => i.window() == win,
        });
        if let Some(ind) = found {
            return ind.clone();
        }
        let ind = Arc::new(match &self.pack {
            ConvPack::Gemm(p) => {
                Indirection::Gemm(ConvIndirection::new(win, usize::from(p[0].ukernel().mr)))
            }
            ConvPack::Dw(_) => Indirection::Dw(DwIndirection::new(win)),
            ConvPack::Im2col(_) => unreachable!("no indirection for the im2col path"),
        });
        if cache.len() == KEEP {
            cache.remove(0);
        }
        cache.push(ind.clone());
        ind
    }
}

fn window(geom: &ConvGeometry, n: usize, h: usize, w: usize) -> Window2d {
    Window2d {
        batch: n,
        in_h: h,
        in_w: w,
        kernel_h: geom.kernel[0],
        kernel_w: geom.kernel[1],
        stride_h: geom.strides[0],
        stride_w: geom.strides[1],
        dilation_h: geom.dilations[0],
        dilation_w: geom.dilations[1],
        pad_top: geom.pads[0],
        pad_left: geom.pads[1],
        pad_bottom: geom.pads[2],
        pad_right: geom.pads[3],
    }
}

impl Kernel for Q8Conv {
    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        self.run_with(inputs, 1)
    }

    fn conv_layout(&mut self) -> Option<&mut ConvLayout> {
        Some(&mut self.layout)
    }

    fn run_with(&self, inputs: &[Option<&Array>], threads: usize) -> Result<Vec<Array>, String> {
        let x = input(inputs, self.x_slot)?;
        check_x(x, &self.c)?;
        // The logical (NCHW) shape of the activation.
        let x_shape = if self.layout.in_nhwc {
            channels_first(&x.shape)
        } else {
            x.shape.clone()
        };
        let geom = self.attrs.geometry(&x_shape, &self.w_shape)?;
        let (n, h, wd) = nhw(&x_shape);
        let (oh, ow) = geom
            .out_hw(h, wd)
            .ok_or_else(|| format!("conv kernel larger than the padded input {x_shape:?}"))?;
        let (c, m) = (geom.c_in, geom.c_out);
        let xu = act_u8(x)?;
        let nhwc = if self.layout.in_nhwc {
            xu
        } else {
            Cow::Owned(per_image_transpose(&xu, n, c, h * wd))
        };
        let mut y = vec![0u8; n * oh * ow * m];
        // Images are independent: split them among the threads (as the fbgemm backend does).
        let per = n.div_ceil(threads.clamp(1, n.max(1))).max(1);
        let (img_in, img_out) = (h * wd * c, oh * ow * m);
        let run_part = |k: usize, yp: &mut [u8]| {
            let imgs = yp.len() / img_out.max(1);
            let win = window(&geom, imgs, h, wd);
            let xp = &nhwc[k * per * img_in..(k * per + imgs) * img_in];
            if let ConvPack::Im2col(p) = &self.pack {
                let a = im2col(&win, xp, c, self.c.a_zp);
                q8gemm(
                    &a,
                    win.taps() * c,
                    win.out_pixels(),
                    p,
                    &self.c.out.out,
                    yp,
                    m,
                );
            } else {
                self.run_indirect(&win, &geom, xp, yp);
            }
        };
        if img_out > 0 {
            let parts: Vec<&mut [u8]> = y.chunks_mut(per * img_out).collect();
            super::qlinear::run_parts(parts, &run_part);
        }
        let shape = out_shape(&x_shape, m, oh, ow);
        if self.layout.out_nhwc {
            return Ok(vec![output(channels_last(&shape), y, self.c.out.signed)?]);
        }
        let y = per_image_transpose(&y, n, oh * ow, m);
        Ok(vec![output(shape, y, self.c.out.signed)?])
    }
}

/// The `P × (taps·C)` patch matrix of an NHWC input (padding taps hold the zero point).
/// Per output row and tap, the valid output columns form one range (computed once), so the
/// inner loop is a strided copy without per-element padding tests.
fn im2col(win: &Window2d, x: &[u8], c: usize, zp: u8) -> Vec<u8> {
    let (oh, ow, taps) = (win.out_h(), win.out_w(), win.taps());
    let k = taps * c;
    let mut a = vec![zp; win.out_pixels() * k];
    // Valid output columns of tap column kx: ix = ox·s + kx·d − pad_left ∈ [0, in_w).
    let cols: Vec<(usize, usize)> = (0..win.kernel_w)
        .map(|kx| {
            let off = kx * win.dilation_w;
            let lo = win.pad_left.saturating_sub(off).div_ceil(win.stride_w);
            let hi = (win.in_w + win.pad_left)
                .checked_sub(off + 1)
                .map_or(0, |v| (v / win.stride_w + 1).min(ow));
            (lo.min(hi), hi)
        })
        .collect();
    for b in 0..win.batch {
        for oy in 0..oh {
            let rows = &mut a[(b * oh + oy) * ow * k..][..ow * k];
            for ky in 0..win.kernel_h {
                let Some(iy) = (oy * win.stride_h + ky * win.dilation_h).checked_sub(win.pad_top)
                else {
                    continue;
                };
                if iy >= win.in_h {
                    continue;
                }
                let src_row = &x[(b * win.in_h + iy) * win.in_w * c..][..win.in_w * c];
                for (kx, &(lo, hi)) in cols.iter().enumerate() {
                    let t = ky * win.kernel_w + kx;
                    for ox in lo..hi {
                        let ix = ox * win.stride_w + kx * win.dilation_w - win.pad_left;
                        rows[ox * k + t * c..][..c].copy_from_slice(&src_row[ix * c..][..c]);
                    }
                }
            }
        }
    }
    a
}

impl Q8Conv {
    /// The indirection-buffer paths (conv per group, depthwise) into NHWC `y`.
    fn run_indirect(&self, win: &Window2d, geom: &ConvGeometry, nhwc: &[u8], y: &mut [u8]) {
        let (c, m) = (geom.c_in, geom.c_out);
        let ind = self.indirection(win);
        let out = &self.c.out.out;
        match (&self.pack, &*ind) {
            (ConvPack::Dw(p), Indirection::Dw(ind)) => {
                let xv = Nhwc {
                    data: nhwc,
                    channels: c,
                    pixel_stride: c,
                    zp: self.c.a_zp,
                };
                q8dwconv(&xv, ind, p, out, y, m);
            }
            (ConvPack::Gemm(packs), Indirection::Gemm(ind)) => {
                let (cg_in, cg_out) = (geom.cg_in(), geom.cg_out());
                for (g, p) in packs.iter().enumerate() {
                    let xv = Nhwc {
                        data: &nhwc[g * cg_in..],
                        channels: cg_in,
                        pixel_stride: c,
                        zp: self.c.a_zp,
                    };
                    q8conv(&xv, ind, p, out, &mut y[g * cg_out..], m);
                }
            }
            _ => unreachable!("the indirection follows the packing"),
        }
    }
}

/// Per image, the `rows × cols` matrix transposed (NCHW ↔ NHWC), with the fbgemm backend's
/// 8×8 in-register byte transpose.
fn per_image_transpose(x: &[u8], n: usize, rows: usize, cols: usize) -> Vec<u8> {
    super::qlinear::per_image_transpose(x, n, rows, cols, super::qlinear::transpose_u8)
}

// ---------------------------------------------------------------------------------------
// Matrix product

/// Packs `K×N` weights (`[K][N]`, or `[N][K]` with `trans_b`) in the u8 domain.
#[allow(clippy::too_many_arguments)]
fn pack_gemm(
    wq: &[u8],
    k: usize,
    n: usize,
    trans_b: bool,
    zp: &[u8],
    bias: Option<&[i32]>,
    rq: &[Requant],
    a_zp: u8,
) -> Result<PackedQ8Gemm, String> {
    // Q8Weights is [N][K].
    let wt: Cow<'_, [u8]> = if trans_b {
        Cow::Borrowed(&wq[..k * n])
    } else {
        let mut t = vec![0u8; k * n];
        for kk in 0..k {
            for (j, &v) in wq[kk * n..(kk + 1) * n].iter().enumerate() {
                t[j * k + kk] = v;
            }
        }
        Cow::Owned(t)
    };
    let w = Q8Weights {
        data: &wt,
        n,
        k,
        zp,
        bias,
        requant: rq,
    };
    let uk = kernels()
        .q8gemm
        .first()
        .copied()
        .ok_or("no q8gemm kernel")?;
    Ok(PackedQ8Gemm::new(uk, &w, 1, a_zp))
}

enum MatW {
    /// Constant 2-D weights, packed at planning time.
    Packed(PackedQ8Gemm),
    /// Weights that are a step input (`X·Y` of two activations, per-tensor parameters):
    /// `[..., K, N]`, packed per run and per batch matrix.
    Dynamic {
        slot: usize,
        zp: Option<Array>,
        w_type: DataType,
        rq: Requant,
    },
}

/// MatMul / Gemm on the q8gemm kernels: `[..., M, K] × [K, N]` (constant weights), or
/// `[..., M, K] × [..., K, N]` with numpy broadcasting of the batch dimensions.
pub(crate) struct Q8MatMul {
    x_slot: usize,
    /// K of constant weights (dynamic ones: read at run time).
    k: usize,
    a_zp: u8,
    x_type: DataType,
    out: OutSpec,
    w: MatW,
}

impl Q8MatMul {
    /// # Errors
    /// The reason the unit cannot run on this backend (the caller falls back).
    pub fn new(spec: &QSpec, trans_b: bool, rounding: Rounding) -> Result<Q8MatMul, String> {
        if let Src::Input(slot) = spec.w {
            if trans_b {
                return Err("transposed non-constant weights".into());
            }
            let out = out_spec(&spec.out, rounding)?;
            let xs = scalar_f32(
                konst(&spec.x_scale, "x_scale")?.ok_or("missing x_scale")?,
                "x_scale",
            )?;
            let x_zp = konst(&spec.x_zp, "input zero point")?;
            let x_type = zp_type(x_zp);
            let ws = match konst(&spec.w_scale, "weight scale")? {
                None => 1.0,
                Some(s) => scalar_f32(s, "weight scale")?,
            };
            let w_zp = konst(&spec.w_zp, "weight zero point")?;
            if spec.bias.is_some() {
                return Err("a bias with non-constant weights".into());
            }
            return Ok(Q8MatMul {
                x_slot: spec.x,
                k: 0,
                a_zp: zp_u8(x_zp, x_type, "input")?,
                x_type,
                w: MatW::Dynamic {
                    slot,
                    zp: w_zp.cloned(),
                    w_type: zp_type(w_zp),
                    rq: requants(xs, &[ws], out.y_scale)?[0],
                },
                out,
            });
        }
        let w_shape = match &spec.w {
            Src::Const(w) if w.rank() == 2 => w.shape.clone(),
            Src::Const(w) => return Err(format!("weights of shape {:?}", w.shape)),
            Src::Input(_) => unreachable!("handled above"),
        };
        let (k, n) = if trans_b {
            (w_shape[1], w_shape[0])
        } else {
            (w_shape[0], w_shape[1])
        };
        if k == 0 {
            return Err("K = 0".into());
        }
        let c = consts(spec, n, rounding)?;
        let packed = pack_gemm(
            &c.wq,
            k,
            n,
            trans_b,
            &c.wzp,
            c.bias.as_deref(),
            &c.rq,
            c.a_zp,
        )?;
        Ok(Q8MatMul {
            x_slot: spec.x,
            k,
            a_zp: c.a_zp,
            x_type: c.x_type,
            out: c.out,
            w: MatW::Packed(packed),
        })
    }
}

impl Kernel for Q8MatMul {
    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        self.run_with(inputs, 1)
    }

    fn run_with(&self, inputs: &[Option<&Array>], threads: usize) -> Result<Vec<Array>, String> {
        let x = input(inputs, self.x_slot)?;
        if x.dtype() != self.x_type {
            return Err(format!(
                "quantized input is {}, its zero point is {}",
                x.dtype(),
                self.x_type
            ));
        }
        let xu = act_u8(x)?;
        let out = &self.out.out;
        let (slot, zp, w_type, rq) = match &self.w {
            MatW::Packed(packed) => {
                if x.rank() < 1 || x.shape[x.rank() - 1] != self.k {
                    return Err(format!(
                        "MatMul: A {:?} does not have K = {}",
                        x.shape, self.k
                    ));
                }
                let rows = x.len() / self.k;
                let n = packed.n();
                let mut y = vec![0u8; rows * n];
                // Rows are independent: split them among the threads (at least 16 rows each).
                let per = rows.div_ceil(threads.clamp(1, (rows / 16).max(1))).max(1);
                let k = self.k;
                let run_part = |t: usize, yp: &mut [u8]| {
                    let r = yp.len() / n.max(1);
                    q8gemm(&xu[t * per * k..], k, r, packed, out, yp, n);
                };
                if n > 0 {
                    let parts: Vec<&mut [u8]> = y.chunks_mut(per * n).collect();
                    super::qlinear::run_parts(parts, &run_part);
                }
                let mut shape = x.shape.clone();
                *shape.last_mut().expect("rank ≥ 1") = n;
                return Ok(vec![output(shape, y, self.out.signed)?]);
            }
            MatW::Dynamic {
                slot,
                zp,
                w_type,
                rq,
            } => (*slot, zp, *w_type, *rq),
        };
        let w = input(inputs, slot)?;
        if w.dtype() != w_type {
            return Err(format!("B is {}, its zero point is {w_type}", w.dtype()));
        }
        let (xr, wr) = (x.rank(), w.rank());
        if xr < 2 || wr < 2 || x.shape[xr - 1] != w.shape[wr - 2] {
            return Err(format!(
                "quantized MatMul of shapes {:?} and {:?} is not supported",
                x.shape, w.shape
            ));
        }
        let (m, k, n) = (x.shape[xr - 2], x.shape[xr - 1], w.shape[wr - 1]);
        if k == 0 {
            return Err("MatMul with K = 0 is not supported".into());
        }
        let (wq, wzp) = weights_u8(w, zp.as_ref(), 1)?;
        let batch = super::value::broadcast_shape(&x.shape[..xr - 2], &w.shape[..wr - 2])?;
        let xi = super::value::broadcast_index(&x.shape[..xr - 2], &batch);
        let wi = super::value::broadcast_index(&w.shape[..wr - 2], &batch);
        let nb: usize = batch.iter().product();
        let mut y = vec![0u8; nb * m * n];
        for b in 0..nb {
            let packed = pack_gemm(
                &wq[wi[b] * k * n..],
                k,
                n,
                false,
                &wzp,
                None,
                &[rq],
                self.a_zp,
            )?;
            q8gemm(
                &xu[xi[b] * m * k..],
                k,
                m,
                &packed,
                out,
                &mut y[b * m * n..(b + 1) * m * n],
                n,
            );
        }
        let mut shape = batch;
        shape.extend([m, n]);
        Ok(vec![output(shape, y, self.out.signed)?])
    }
}

/// A planned qnnpack kernel and the micro-kernel family it runs on (for the unit's description).
pub(crate) type Q8Kernel = (Box<dyn Kernel>, &'static str);

/// The qnnpack kernel for a lowered Conv / Gemm / MatMul unit, or why there is none.
pub(crate) fn product(
    spec: &QSpec,
    conv: Option<ConvAttrs>,
    trans_b: bool,
    rounding: Rounding,
) -> Result<Q8Kernel, String> {
    Ok(match conv {
        Some(attrs) => {
            let k = Q8Conv::new(spec, attrs, rounding)?;
            let what = k.kernel_family();
            (Box::new(k), what)
        }
        None => (Box::new(Q8MatMul::new(spec, trans_b, rounding)?), "q8gemm"),
    })
}

// ---------------------------------------------------------------------------------------
// Add, average pools

/// An 8-bit operand's parameters: scale, zero point (u8 domain) and type.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QParam {
    pub scale: f32,
    pub zp: u8,
    pub ty: DataType,
}

impl QParam {
    /// From constant scale / zero point arrays (per tensor).
    pub fn new(scale: &Array, zp: Option<&Array>) -> Result<QParam, String> {
        let ty = zp_type(zp);
        Ok(QParam {
            scale: scalar_f32(scale, "scale")?,
            zp: zp_u8(zp, ty, "")?,
            ty,
        })
    }

    fn check(&self, x: &Array) -> Result<(), String> {
        if x.dtype() != self.ty {
            return Err(format!(
                "quantized input is {}, expected {}",
                x.dtype(),
                self.ty
            ));
        }
        Ok(())
    }

    fn out(&self, relu: bool, rounding: Rounding) -> Q8Output {
        Q8Output {
            zp: self.zp,
            qmin: if relu { self.zp } else { 0 },
            qmax: 255,
            rounding,
        }
    }
}

/// `Q(DQ(a) + DQ(b))` (optionally through a Relu) for same-shape operands: QNNPACK q8vadd.
pub(crate) struct Q8Add {
    a: QParam,
    b: QParam,
    y: QParam,
    params: Q8AddParams,
}

impl Q8Add {
    /// # Errors
    /// If the scale ratios are not representable.
    pub fn new(
        a: QParam,
        b: QParam,
        y: QParam,
        relu: bool,
        rounding: Rounding,
    ) -> Result<Q8Add, String> {
        let params = Q8AddParams::new(a.scale, a.zp, b.scale, b.zp, y.scale, y.out(relu, rounding))
            .map_err(|e| e.to_string())?;
        Ok(Q8Add { a, b, y, params })
    }
}

impl Kernel for Q8Add {
    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        self.a.check(a)?;
        self.b.check(b)?;
        if a.shape != b.shape {
            return Err(format!(
                "Add of shapes {:?} and {:?}: the planned kernel needs equal shapes",
                a.shape, b.shape
            ));
        }
        let (au, bu) = (act_u8(a)?, act_u8(b)?);
        let mut y = vec![0u8; a.len()];
        let uk = kernels()
            .q8vadd
            .first()
            .copied()
            .ok_or("no q8vadd kernel")?;
        q8vadd(uk, &au, &bu, &self.params, &mut y);
        Ok(vec![output(a.shape.clone(), y, self.y.ty == DataType::I8)?])
    }
}

/// AveragePool (2-D, floor mode) or GlobalAveragePool on u8 data.
pub(crate) struct Q8AvgPool {
    x: QParam,
    y: QParam,
    rounding: Rounding,
    /// `None`: global.
    window: Option<PoolWindow>,
    ind: Mutex<Option<Arc<DwIndirection>>>,
}

/// The attributes of a 2-D AveragePool (floor mode).
#[derive(Clone, Debug)]
pub(crate) struct PoolWindow {
    pub attrs: ConvAttrs,
    pub kernel: [usize; 2],
    pub count_include_pad: bool,
}

impl Q8AvgPool {
    pub fn new(x: QParam, y: QParam, window: Option<PoolWindow>, rounding: Rounding) -> Q8AvgPool {
        Q8AvgPool {
            x,
            y,
            rounding,
            window,
            ind: Mutex::new(None),
        }
    }
}

impl Kernel for Q8AvgPool {
    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        let x = input(inputs, 0)?;
        self.x.check(x)?;
        if x.rank() != 4 {
            return Err(format!("pooling input {:?} must be NCHW", x.shape));
        }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        let xu = act_u8(x)?;
        let nhwc = per_image_transpose(&xu, n, c, h * w);
        let q = Q8PoolQuant {
            x_scale: self.x.scale,
            y_scale: self.y.scale,
            out: self.y.out(false, self.rounding),
        };
        let xv = Nhwc {
            data: &nhwc,
            channels: c,
            pixel_stride: c,
            zp: self.x.zp,
        };
        let signed = self.y.ty == DataType::I8;
        let Some(pw) = &self.window else {
            let mut y = vec![0u8; n * c];
            q8gavgpool(&xv, n, h * w, &q, &mut y, c).map_err(|e| e.to_string())?;
            return Ok(vec![output(vec![n, c, 1, 1], y, signed)?]);
        };
        // The conv geometry helper resolves auto_pad: weights [C, 1, KH, KW], group C.
        let mut a = pw.attrs.clone();
        a.group = c.max(1);
        a.kernel_shape = None;
        let geom = a.geometry(&x.shape, &[c, 1, pw.kernel[0], pw.kernel[1]])?;
        geom.out_hw(h, w)
            .ok_or_else(|| format!("pool window larger than the padded input {:?}", x.shape))?;
        let win = window(&geom, n, h, w);
        let ind = {
            let mut slot = self.ind.lock().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref() {
                Some(i) if *i.window() == win => i.clone(),
                _ => {
                    let i = Arc::new(DwIndirection::new(&win));
                    *slot = Some(i.clone());
                    i
                }
            }
        };
        let (oh, ow) = (win.out_h(), win.out_w());
        let mut y = vec![0u8; n * oh * ow * c];
        let uk = kernels()
            .q8avgpool
            .first()
            .copied()
            .ok_or("no q8avgpool kernel")?;
        q8avgpool(uk, &xv, &ind, &q, pw.count_include_pad, &mut y, c).map_err(|e| e.to_string())?;
        let y = per_image_transpose(&y, n, oh * ow, c);
        Ok(vec![output(vec![n, c, oh, ow], y, signed)?])
    }
}

// ---------------------------------------------------------------------------------------
// Lowering of the units only this backend runs on integer kernels

use super::lower::{dq_of, quantize_reading, single_use, Lowered};
use super::ops::NodeCtx;
use crate::ir::{Dim, Graph, NodeId, ValueId};
use std::collections::HashMap;

/// Fully known and equal shapes (or equal symbols) of two values.
fn same_static_shape(g: &Graph, a: ValueId, b: ValueId) -> bool {
    let shape = |v: ValueId| g.value(v).ty.tensor().and_then(|t| t.shape.clone());
    match (shape(a), shape(b)) {
        (Some(x), Some(y)) => x == y && !x.iter().any(|d| matches!(d, Dim::Unknown)),
        _ => false,
    }
}

fn rank_of(g: &Graph, v: ValueId) -> Option<usize> {
    g.value(v)
        .ty
        .tensor()
        .and_then(|t| t.shape.as_ref())
        .map(Vec::len)
}

/// The per-tensor 8-bit parameters of the DequantizeLinear producing `v`, and its input.
fn dq_param(g: &Graph, consts: &HashMap<ValueId, Array>, v: ValueId) -> Option<(ValueId, QParam)> {
    let dq = dq_of(g, consts, v)?;
    if dq.scale.len() != 1 || dq.zp.is_some_and(|z| z.len() != 1) {
        return None;
    }
    let p = QParam::new(dq.scale, dq.zp).ok()?;
    matches!(p.ty, DataType::U8 | DataType::I8).then_some((dq.x, p))
}

/// The QuantizeLinear reading `v` (single use): its node, output and parameters.
fn q_param(
    g: &Graph,
    consts: &HashMap<ValueId, Array>,
    v: ValueId,
    qn: Option<NodeId>,
) -> Option<(NodeId, ValueId, QParam)> {
    let (qn, qout) = quantize_reading(g, v, qn, consts)?;
    let q = g.node(qn);
    let get = |k: usize| {
        q.inputs
            .get(k)
            .copied()
            .flatten()
            .and_then(|v| consts.get(&v))
    };
    let zp = get(2);
    let ty = match zp {
        Some(z) => z.dtype(),
        None => match q
            .op()
            .and_then(|o| o.attr("output_dtype"))
            .and_then(|a| a.as_int())
        {
            None | Some(0) => DataType::U8,
            Some(3) => DataType::I8,
            Some(_) => return None,
        },
    };
    if !matches!(ty, DataType::U8 | DataType::I8) {
        return None;
    }
    let scale = scalar_f32(get(1)?, "scale").ok()?;
    Some((
        qn,
        qout,
        QParam {
            scale,
            zp: zp_u8(zp, ty, "output").ok()?,
            ty,
        },
    ))
}

/// Lowers `DQ, DQ → Add [→ Relu] → Q` (same shapes) to q8vadd and `DQ → AveragePool |
/// GlobalAveragePool → Q` to the u8 pools. `Ok(None)`: not such a unit (the generic lowering
/// or the float ops take it).
pub(crate) fn try_lower(
    g: &Graph,
    n: NodeId,
    consts: &HashMap<ValueId, Array>,
    opset: i64,
    rounding: Rounding,
) -> Result<Option<Lowered>, String> {
    let node = g.node(n);
    let Some(op) = node.op() else { return Ok(None) };
    let (Some(&Some(x0)), Some(&Some(yout))) = (node.inputs.first(), node.outputs.first()) else {
        return Ok(None);
    };
    if node.outputs.len() != 1 {
        return Ok(None);
    }
    if node.is_op("Add") {
        let Some(&Some(x1)) = node.inputs.get(1) else {
            return Ok(None);
        };
        let (Some((a, pa)), Some((b, pb))) = (dq_param(g, consts, x0), dq_param(g, consts, x1))
        else {
            return Ok(None);
        };
        if !same_static_shape(g, x0, x1) {
            return Ok(None);
        }
        let Some(mut next) = single_use(g, yout) else {
            return Ok(None);
        };
        let (mut absorbed, mut q_in) = (vec![], yout);
        if g.node(next).is_op("Relu") {
            let relu = g.node(next);
            let Some(&Some(rout)) = relu.outputs.first() else {
                return Ok(None);
            };
            let Some(after) = single_use(g, rout) else {
                return Ok(None);
            };
            absorbed.push(next);
            (next, q_in) = (after, rout);
        }
        let relu = !absorbed.is_empty();
        let Some((qn, qout, py)) = q_param(g, consts, q_in, Some(next)) else {
            return Ok(None);
        };
        absorbed.push(qn);
        let Ok(k) = Q8Add::new(pa, pb, py, relu, rounding) else {
            return Ok(None); // scale ratios outside q8vadd's range: the generic lowering
        };
        return Ok(Some(Lowered {
            kernel: Box::new(k),
            inputs: vec![Some(a), Some(b)],
            outputs: vec![Some(qout)],
            absorbed,
            what: format!("Add{}→Q on q8vadd", if relu { "+Relu" } else { "" }),
        }));
    }
    let global = node.is_op("GlobalAveragePool");
    if !(global || node.is_op("AveragePool")) {
        return Ok(None);
    }
    let Some((x, px)) = dq_param(g, consts, x0) else {
        return Ok(None);
    };
    if rank_of(g, x0) != Some(4) {
        return Ok(None);
    }
    let Some((qn, qout, py)) = q_param(g, consts, yout, single_use(g, yout)) else {
        return Ok(None);
    };
    let window = if global {
        None
    } else {
        let ctx = NodeCtx {
            op,
            opset,
            consts: vec![],
            present: vec![true],
            n_outputs: 1,
        };
        let attrs = ConvAttrs::parse(&ctx)?;
        let ks = attrs.kernel_shape.clone().unwrap_or_default();
        if ks.len() != 2 || ks.iter().any(|&k| k < 1) || ctx.int("ceil_mode", 0) != 0 {
            return Ok(None);
        }
        Some(PoolWindow {
            kernel: [ks[0] as usize, ks[1] as usize],
            count_include_pad: ctx.int("count_include_pad", 0) != 0,
            attrs,
        })
    };
    Ok(Some(Lowered {
        kernel: Box::new(Q8AvgPool::new(px, py, window, rounding)),
        inputs: vec![Some(x)],
        outputs: vec![Some(qout)],
        absorbed: vec![qn],
        what: format!("{}→Q on q8 pooling", op.op_type),
    }))
}

/// QLinearConv / QLinearMatMul (QOperator models) on the qnnpack kernels: `Ok(None)` for other
/// ops, `Err(why)` when the node's parameters do not fit (the caller then builds the fbgemm
/// kernel and says so). Returns the kernel and the micro-kernel family it runs on.
pub(crate) fn qoperator(ctx: &NodeCtx<'_>, rounding: Rounding) -> Result<Option<Q8Kernel>, String> {
    let t = ctx.op.op_type.as_str();
    let default_domain = matches!(ctx.op.domain.as_str(), "" | "ai.onnx");
    if !default_domain || !matches!(t, "QLinearConv" | "QLinearMatMul") {
        return Ok(None);
    }
    let conv = t == "QLinearConv";
    // QLinearMatMul: a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp.
    // QLinearConv: x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B.
    let src = |k: usize| -> Option<Src> {
        ctx.has(k).then(|| match ctx.konst(k) {
            Some(a) => Src::Const(a.clone()),
            None => Src::Input(k),
        })
    };
    let spec = QSpec {
        x: 0,
        x_scale: src(1),
        x_zp: src(2),
        w: src(3).ok_or("missing weights")?,
        w_scale: src(4),
        w_zp: src(5),
        bias: if conv { src(8) } else { None },
        out: QOut::Requant {
            y_scale: src(6).ok_or("missing y_scale")?,
            y_zp: src(7),
            y_type: DataType::U8,
            act: Act::None,
        },
    };
    if matches!(spec.w, Src::Input(_)) && !conv {
        // Two activations: per-tensor B only (the dynamic path).
        if ctx.konst(4).is_none_or(|s| s.len() != 1) {
            return Err("non-constant or per-column B parameters".into());
        }
    }
    let attrs = if conv {
        Some(ConvAttrs::parse(ctx)?)
    } else {
        None
    };
    product(&spec, attrs, false, rounding).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The range-based im2col equals the direct definition on awkward windows.
    #[test]
    fn im2col_matches_the_window_definition() {
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..300 {
            let (kh, kw) = (1 + next(5), 1 + next(5));
            let win = Window2d {
                batch: 1 + next(2),
                in_h: 1 + next(9),
                in_w: 1 + next(9),
                kernel_h: kh,
                kernel_w: kw,
                stride_h: 1 + next(3),
                stride_w: 1 + next(3),
                dilation_h: 1 + next(2),
                dilation_w: 1 + next(2),
                pad_top: next(3),
                pad_left: next(3),
                pad_bottom: next(3),
                pad_right: next(3),
            };
            let span = |k: usize, d: usize| d * (k - 1) + 1;
            if win.in_h + win.pad_top + win.pad_bottom < span(kh, win.dilation_h)
                || win.in_w + win.pad_left + win.pad_right < span(kw, win.dilation_w)
            {
                continue;
            }
            let c = 1 + next(4);
            let x: Vec<u8> = (0..win.batch * win.in_h * win.in_w * c)
                .map(|_| next(256) as u8)
                .collect();
            let got = im2col(&win, &x, c, 77);
            let (oh, ow, k) = (win.out_h(), win.out_w(), win.taps() * c);
            for b in 0..win.batch {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                for ch in 0..c {
                                    let want =
                                        win.input_at(oy, ox, ky, kx).map_or(77, |(iy, ix)| {
                                            x[((b * win.in_h + iy) * win.in_w + ix) * c + ch]
                                        });
                                    let at =
                                        ((b * oh + oy) * ow + ox) * k + (ky * kw + kx) * c + ch;
                                    assert_eq!(got[at], want, "{win:?} c={c}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
