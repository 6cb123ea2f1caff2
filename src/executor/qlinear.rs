//! Integer ops on the fbgemm kernels: QuantizeLinear, DequantizeLinear,
//! DynamicQuantizeLinear, and the quantized convolution / matrix product that serve
//! QLinearConv, ConvInteger, QLinearMatMul, MatMulInteger and the lowered QDQ node units.
//!
//! # Semantics
//! - Quantize / dequantize follow the ONNX spec through [`crate::kernels::reference::quantize`]
//!   (division by the scale, round half to even, saturation), per tensor or per axis.
//! - The products accumulate `Σ (x − x_zp)(w − w_zp) + bias` exactly in i32. The requantizing
//!   output stage multiplies by `mult[n] = x_scale · w_scale[n] / y_scale` (in f32, in that
//!   order, as ONNX Runtime's QLinearConv/QLinearMatMul do), rounds half to even, adds the
//!   output zero point and saturates to `[qmin, qmax]`, which also expresses a fused Relu or
//!   Clip (see [`crate::kernels::reference::requant`]).
//! - The kernels take u8 activations and s8 weights. Signed activations are shifted by +128
//!   (with their zero point), unsigned weights by −128: `(x+128) − (zp+128) = x − zp`, so the
//!   result is unchanged.
//! - Convolution kernels work on NHWC; the ONNX tensors are NCHW, converted on the way in and
//!   out of each quantized conv.

use super::ops::conv::{nhw, out_shape, ConvAttrs};
use super::ops::{boxed, input, Kernel, NodeCtx};
use super::value::{norm_axis, Array, ArrayData};
use crate::ir::DataType;
use crate::kernels::fbgemm::{
    qgemm, ConvScratch, ConvWeights, OutputStage, PackedB, PackedConv, QGemmOutput, QWeights,
};
use crate::kernels::quantize::quantize_one;
use crate::kernels::reference::ConvGeometry;

/// Where a parameter of a quantized op comes from: fixed at planning time, or an input of the
/// step (by position).
#[derive(Clone, Debug)]
pub(crate) enum Src {
    Const(Array),
    Input(usize),
}

impl Src {
    /// From node input `k`: its constant value if known, else the input itself.
    pub fn of(ctx: &NodeCtx<'_>, k: usize) -> Option<Src> {
        if !ctx.has(k) {
            return None;
        }
        Some(match ctx.konst(k) {
            Some(a) => Src::Const(a.clone()),
            None => Src::Input(k),
        })
    }
    fn get<'a>(&'a self, inputs: &[Option<&'a Array>]) -> Result<&'a Array, String> {
        match self {
            Src::Const(a) => Ok(a),
            Src::Input(k) => input(inputs, *k),
        }
    }
    fn is_const(&self) -> bool {
        matches!(self, Src::Const(_))
    }
}

fn opt_get<'a>(
    s: &'a Option<Src>,
    inputs: &[Option<&'a Array>],
) -> Result<Option<&'a Array>, String> {
    s.as_ref().map(|s| s.get(inputs)).transpose()
}

/// A fused activation of a lowered unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Act {
    None,
    Relu,
    Clip(f32, f32),
}

/// What the quantized product writes.
#[derive(Clone, Debug)]
pub(crate) enum QOut {
    /// i32 accumulators (ConvInteger, MatMulInteger).
    Raw,
    /// Requantized u8/i8 (`y_type` when `y_zp` is absent).
    Requant {
        y_scale: Src,
        y_zp: Option<Src>,
        y_type: DataType,
        act: Act,
    },
    /// f32 `acc · x_scale · w_scale[n]` (a lowered unit whose output stays float).
    Dequant,
}

/// The parameters of a quantized product.
#[derive(Clone, Debug)]
pub(crate) struct QSpec {
    /// Step input holding the quantized activation.
    pub x: usize,
    pub x_scale: Option<Src>,
    pub x_zp: Option<Src>,
    pub w: Src,
    pub w_scale: Option<Src>,
    pub w_zp: Option<Src>,
    pub bias: Option<Src>,
    pub out: QOut,
}

/// A scalar f32 scale.
fn scalar_f32(a: &Array, what: &str) -> Result<f32, String> {
    match (&a.data, a.len()) {
        (ArrayData::F32(v), 1) => Ok(v[0]),
        (ArrayData::F32(_), n) => Err(format!("{what} must be a scalar, has {n} values")),
        (d, _) => Err(format!("{what} must be f32, is {}", d.dtype())),
    }
}

/// Zero point of an activation as an i32 in the activation's own type, checking the type.
fn act_zp(zp: Option<&Array>, x_type: DataType, what: &str) -> Result<i32, String> {
    match zp {
        None => Ok(0),
        Some(z) if z.len() != 1 => Err(format!("{what} zero point must be a scalar")),
        Some(z) if z.dtype() != x_type => Err(format!(
            "{what} zero point is {}, the tensor is {x_type}",
            z.dtype()
        )),
        Some(z) => Ok(z.data.to_i64_vec()[0] as i32),
    }
}

/// An activation as u8 (signed values shifted by +128) with its zero point in the u8 domain.
fn act_u8(x: &Array, zp: i32) -> Result<(std::borrow::Cow<'_, [u8]>, u8), String> {
    match &x.data {
        ArrayData::U8(v) => Ok((std::borrow::Cow::Borrowed(v), zp as u8)),
        ArrayData::I8(v) => Ok((
            std::borrow::Cow::Owned(v.iter().map(|&e| (e as u8) ^ 0x80).collect()),
            (zp + 128) as u8,
        )),
        d => Err(format!(
            "quantized input must be u8 or i8, is {}",
            d.dtype()
        )),
    }
}

/// Runs `run(k, part)` for every part: inline when there is one, else one scoped thread
/// per part (the callers split outputs by images or rows, as `--threads` asks).
pub(super) fn run_parts<T: Send>(parts: Vec<T>, run: &(impl Fn(usize, T) + Sync)) {
    if parts.len() <= 1 {
        parts.into_iter().for_each(|p| run(0, p));
        return;
    }
    std::thread::scope(|sc| {
        for (k, p) in parts.into_iter().enumerate() {
            sc.spawn(move || run(k, p));
        }
    });
}

/// The output codes a fused activation leaves, `[qmin, qmax]`, for output scale `ys` and
/// zero point `zp` (u8 or, when `signed`, i8 codes).
pub(super) fn act_clamp(act: &Act, ys: f32, zp: i32, signed: bool) -> (i32, i32) {
    let (tmin, tmax) = if signed { (-128, 127) } else { (0, 255) };
    let (mut qmin, mut qmax) = (tmin, tmax);
    match *act {
        Act::None => {}
        Act::Relu => qmin = zp.max(tmin),
        Act::Clip(lo, hi) => {
            // Q(clip(v)) = clamp(Q(v), Q(lo), Q(hi)): quantization is monotonic.
            let q = |v: f32| {
                ((v / ys).round_ties_even() + zp as f32).clamp(tmin as f32, tmax as f32) as i32
            };
            qmin = q(lo).max(tmin);
            qmax = q(hi).min(tmax);
            if qmin > qmax {
                qmax = qmin;
            }
        }
    }
    (qmin, qmax)
}

/// The weight zero points (1, or one per output channel of `n`), checked against the
/// weights' type; 0 when absent.
pub(super) fn weight_zero_points(
    w: &Array,
    zp: Option<&Array>,
    n: usize,
) -> Result<Vec<i64>, String> {
    let zps: Vec<i64> = match zp {
        None => vec![0],
        Some(z) if z.dtype() != w.dtype() => {
            return Err(format!(
                "weight zero point is {}, weights are {}",
                z.dtype(),
                w.dtype()
            ))
        }
        Some(z) => z.data.to_i64_vec(),
    };
    if zps.len() != 1 && zps.len() != n {
        return Err(format!(
            "{} weight zero points for {n} output channels",
            zps.len()
        ));
    }
    Ok(zps)
}

/// Weights as i8 (unsigned shifted by −128) and their zero points (1 or `n` values).
fn weights_i8(w: &Array, zp: Option<&Array>, n: usize) -> Result<(Vec<i8>, Vec<i8>), String> {
    let zps = weight_zero_points(w, zp, n)?;
    match &w.data {
        ArrayData::I8(v) => Ok((v.clone(), zps.iter().map(|&z| z as i8).collect())),
        ArrayData::U8(v) => Ok((
            v.iter().map(|&e| (e ^ 0x80) as i8).collect(),
            zps.iter().map(|&z| (z - 128) as i8).collect(),
        )),
        d => Err(format!("weights must be u8 or i8, are {}", d.dtype())),
    }
}

fn weight_scales(s: Option<&Array>, n: usize) -> Result<Vec<f32>, String> {
    let Some(s) = s else { return Ok(vec![1.0]) };
    let v = s.as_f32().map_err(|e| format!("weight scale: {e}"))?;
    if v.len() != 1 && v.len() != n {
        return Err(format!("{} weight scales for {n} output channels", v.len()));
    }
    Ok(v.to_vec())
}

fn bias_i32(b: Option<&Array>, n: usize) -> Result<Option<Vec<i32>>, String> {
    match b {
        None => Ok(None),
        Some(b) => match &b.data {
            ArrayData::I32(v) if v.len() == n => Ok(Some(v.clone())),
            ArrayData::I32(v) => Err(format!("bias has {} values for {n} channels", v.len())),
            d => Err(format!("bias must be i32, is {}", d.dtype())),
        },
    }
}

/// The run-time output stage parameters.
enum Stage {
    Raw,
    Requant {
        mult: Vec<f32>,
        zp: i32,
        qmin: i32,
        qmax: i32,
        signed: bool,
    },
    Dequant {
        scale: Vec<f32>,
    },
}

impl Stage {
    fn resolve(spec: &QSpec, inputs: &[Option<&Array>], w_scale: &[f32]) -> Result<Stage, String> {
        let x_scale = || -> Result<f32, String> {
            scalar_f32(
                opt_get(&spec.x_scale, inputs)?.ok_or("missing x_scale")?,
                "x_scale",
            )
        };
        match &spec.out {
            QOut::Raw => Ok(Stage::Raw),
            QOut::Dequant => {
                let xs = x_scale()?;
                Ok(Stage::Dequant {
                    scale: w_scale.iter().map(|&w| xs * w).collect(),
                })
            }
            QOut::Requant {
                y_scale,
                y_zp,
                y_type,
                act,
            } => {
                let xs = x_scale()?;
                let ys = scalar_f32(y_scale.get(inputs)?, "y_scale")?;
                let zp_arr = opt_get(y_zp, inputs)?;
                let ty = zp_arr.map_or(*y_type, Array::dtype);
                let signed = match ty {
                    DataType::U8 => false,
                    DataType::I8 => true,
                    t => return Err(format!("output type {t} is not supported (u8/i8)")),
                };
                let zp = act_zp(zp_arr, ty, "output")?;
                let (qmin, qmax) = act_clamp(act, ys, zp, signed);
                if !(ys.is_finite() && ys > 0.0) {
                    return Err(format!("y_scale {ys} must be positive and finite"));
                }
                Ok(Stage::Requant {
                    mult: w_scale.iter().map(|&w| xs * w / ys).collect(),
                    zp,
                    qmin,
                    qmax,
                    signed,
                })
            }
        }
    }

    fn output_stage(&self) -> OutputStage<'_> {
        match self {
            Stage::Raw => OutputStage::Raw,
            Stage::Requant {
                mult,
                zp,
                qmin,
                qmax,
                ..
            } => OutputStage::Requantize {
                mult,
                zp: *zp,
                qmin: *qmin,
                qmax: *qmax,
            },
            Stage::Dequant { scale } => OutputStage::Dequantize { scale, bias: None },
        }
    }

    /// A zeroed output buffer of `n` elements of the stage's type.
    fn buffer(&self, n: usize) -> ArrayData {
        match self {
            Stage::Raw => ArrayData::I32(vec![0; n]),
            Stage::Requant { signed: false, .. } => ArrayData::U8(vec![0; n]),
            Stage::Requant { signed: true, .. } => ArrayData::I8(vec![0; n]),
            Stage::Dequant { .. } => ArrayData::F32(vec![0.0; n]),
        }
    }
}

/// The output buffer cut into consecutive parts of `chunk` elements (the last may be shorter).
fn out_chunks(d: &mut ArrayData, chunk: usize) -> Vec<QGemmOutput<'_>> {
    let chunk = chunk.max(1);
    match d {
        ArrayData::I32(v) => v.chunks_mut(chunk).map(QGemmOutput::I32).collect(),
        ArrayData::U8(v) => v.chunks_mut(chunk).map(QGemmOutput::U8).collect(),
        ArrayData::I8(v) => v.chunks_mut(chunk).map(QGemmOutput::I8).collect(),
        ArrayData::F32(v) => v.chunks_mut(chunk).map(QGemmOutput::F32).collect(),
        _ => unreachable!("Stage::buffer makes only these types"),
    }
}

fn out_view(d: &mut ArrayData, off: usize) -> QGemmOutput<'_> {
    match d {
        ArrayData::I32(v) => QGemmOutput::I32(&mut v[off..]),
        ArrayData::U8(v) => QGemmOutput::U8(&mut v[off..]),
        ArrayData::I8(v) => QGemmOutput::I8(&mut v[off..]),
        ArrayData::F32(v) => QGemmOutput::F32(&mut v[off..]),
        _ => unreachable!("Stage::buffer makes only these types"),
    }
}

// ---------------------------------------------------------------------------------------
// Convolution

/// Weights packed for a conv, with what the output stage needs of them.
struct ConvPrep {
    packed: PackedConv,
    w_scale: Vec<f32>,
}

thread_local! {
    /// The im2col / depthwise working memory of the convolutions run on this thread.
    static CONV_SCRATCH: std::cell::Cell<ConvScratch> = std::cell::Cell::new(ConvScratch::new());
}

pub(crate) struct QConv {
    spec: QSpec,
    attrs: ConvAttrs,
    /// Packed at planning time when the weights and their parameters are constant and the
    /// padding does not depend on the input size.
    prep: Option<ConvPrep>,
    layout: ConvLayout,
}

/// The activation layouts of a quantized conv step. The kernels compute in NHWC; the ONNX
/// tensors are NCHW. Between two quantized convs (the producer's only consumers being convs
/// reading it as their activation) the planner keeps the value NHWC, so neither side
/// transposes: the value then has the NHWC shape `[N, H, W, C]` (channels moved last), which
/// only those convs ever see.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ConvLayout {
    /// Step input holding the activation.
    pub x: usize,
    /// The activation arrives NHWC.
    pub in_nhwc: bool,
    /// The output is left NHWC.
    pub out_nhwc: bool,
}

/// `shape` with dimension 1 (channels) moved last: NCHW → NHWC (any rank ≥ 2).
pub(super) fn channels_last(shape: &[usize]) -> Vec<usize> {
    let mut v = shape.to_vec();
    if v.len() >= 2 {
        let c = v.remove(1);
        v.push(c);
    }
    v
}

/// Inverse of [`channels_last`].
pub(super) fn channels_first(shape: &[usize]) -> Vec<usize> {
    let mut v = shape.to_vec();
    if v.len() >= 2 {
        let c = v.pop().expect("rank ≥ 2");
        v.insert(1, c);
    }
    v
}

impl QConv {
    pub fn new(spec: QSpec, attrs: ConvAttrs) -> Result<QConv, String> {
        let static_pads = matches!(attrs.auto_pad.as_str(), "NOTSET" | "VALID");
        let layout = ConvLayout {
            x: spec.x,
            ..ConvLayout::default()
        };
        let mut k = QConv {
            spec,
            attrs,
            prep: None,
            layout,
        };
        let s = &k.spec;
        let all_const = s.w.is_const()
            && s.w_zp.as_ref().is_none_or(Src::is_const)
            && s.w_scale.as_ref().is_none_or(Src::is_const)
            && s.bias.as_ref().is_none_or(Src::is_const)
            && s.x_zp.as_ref().is_none_or(Src::is_const);
        if all_const && static_pads {
            let w = k.spec.w.get(&[])?;
            // Any input size works for the geometry here: pads are fixed.
            let mut fake = vec![1, w.shape.get(1).copied().unwrap_or(0) * k.attrs.group];
            fake.extend(w.shape.iter().skip(2));
            let geom = k.attrs.geometry(&fake, &w.shape)?;
            k.prep = Some(k.prepare(&[], &geom)?);
        }
        Ok(k)
    }

    fn prepare(&self, inputs: &[Option<&Array>], geom: &ConvGeometry) -> Result<ConvPrep, String> {
        let s = &self.spec;
        let w = s.w.get(inputs)?;
        let m = geom.c_out;
        let (wq, wzp) = weights_i8(w, opt_get(&s.w_zp, inputs)?, m)?;
        let w_scale = weight_scales(opt_get(&s.w_scale, inputs)?, m)?;
        let bias = bias_i32(opt_get(&s.bias, inputs)?, m)?;
        // The activation zero point folded at pack time (u8 domain); another one at run time
        // only costs a bias refold.
        let a_zp = pack_time_zp(opt_get(&s.x_zp, inputs)?);
        let cw = ConvWeights {
            data: &wq,
            zp: &wzp,
            bias: bias.as_deref(),
        };
        let packed = PackedConv::new(geom, &cw, a_zp).map_err(|e| e.to_string())?;
        Ok(ConvPrep { packed, w_scale })
    }
}

impl Kernel for QConv {
    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        self.run_with(inputs, 1)
    }

    fn conv_layout(&mut self) -> Option<&mut ConvLayout> {
        Some(&mut self.layout)
    }

    fn run_with(&self, inputs: &[Option<&Array>], threads: usize) -> Result<Vec<Array>, String> {
        let s = &self.spec;
        let x = input(inputs, s.x)?;
        let w = s.w.get(inputs)?;
        // The logical (NCHW) shape of the activation.
        let x_shape = if self.layout.in_nhwc {
            channels_first(&x.shape)
        } else {
            x.shape.clone()
        };
        let geom = self.attrs.geometry(&x_shape, &w.shape)?;
        let owned;
        let prep = match &self.prep {
            Some(p) if *p.packed.geometry() == geom => p,
            _ => {
                owned = self.prepare(inputs, &geom)?;
                &owned
            }
        };
        let x_zp = act_zp(opt_get(&s.x_zp, inputs)?, x.dtype(), "input")?;
        let (xu, a_zp) = act_u8(x, x_zp)?;
        let (n, h, wd) = nhw(&x_shape);
        let c = geom.c_in;
        let (oh, ow) = geom
            .out_hw(h, wd)
            .ok_or_else(|| format!("conv kernel larger than the padded input {x_shape:?}"))?;
        let m = geom.c_out;
        let nhwc = if self.layout.in_nhwc {
            xu
        } else {
            std::borrow::Cow::Owned(to_nhwc(&xu, n, c, h * wd))
        };
        let stage = Stage::resolve(s, inputs, &prep.w_scale)?;
        let mut out = stage.buffer(n * oh * ow * m);
        // Images are independent: split them among the threads (each with its own scratch).
        let per = n.div_ceil(threads.clamp(1, n.max(1)));
        let (img_in, img_out) = (h * wd * c, oh * ow * m);
        let packed = &prep.packed;
        let stage = &stage;
        let nhwc = &nhwc;
        let run_part = |k: usize, part: QGemmOutput<'_>| {
            let imgs = per.min(n - k * per);
            // Per-thread scratch, kept across runs (no allocation once warm).
            let mut scratch = CONV_SCRATCH.with(|s| s.take());
            packed.run(
                &nhwc[k * per * img_in..],
                imgs,
                h,
                wd,
                a_zp,
                stage.output_stage(),
                part,
                &mut scratch,
            );
            CONV_SCRATCH.with(|s| s.replace(scratch));
        };
        let parts = out_chunks(&mut out, per * img_out);
        run_parts(parts, &run_part);
        let shape = out_shape(&x_shape, m, oh, ow);
        if self.layout.out_nhwc {
            return Ok(vec![Array::new(channels_last(&shape), out)?]);
        }
        let data = match &out {
            ArrayData::U8(v) => ArrayData::U8(per_image_transpose(v, n, oh * ow, m, transpose_u8)),
            _ => super::value::map_same!(&out, v => to_nchw(v, n, oh * ow, m)),
        };
        Ok(vec![Array::new(shape, data)?])
    }
}

fn to_nhwc(x: &[u8], n: usize, c: usize, hw: usize) -> Vec<u8> {
    per_image_transpose(x, n, c, hw, transpose_u8)
}

fn to_nchw<T: Copy + Default>(x: &[T], n: usize, hw: usize, c: usize) -> Vec<T> {
    per_image_transpose(x, n, hw, c, transpose_block)
}

/// Transposes each of the `n` consecutive `rows × cols` matrices of `x` with `tr` (NCHW ↔
/// NHWC). A single row or column is already in the other layout: plain copy.
pub(super) fn per_image_transpose<T: Copy + Default>(
    x: &[T],
    n: usize,
    rows: usize,
    cols: usize,
    tr: fn(&[T], usize, usize, &mut [T]),
) -> Vec<T> {
    let len = n * rows * cols;
    if rows <= 1 || cols <= 1 {
        return x[..len].to_vec();
    }
    let mut out = vec![T::default(); len];
    for (src, dst) in x[..len]
        .chunks_exact(rows * cols)
        .zip(out.chunks_exact_mut(rows * cols))
    {
        tr(src, rows, cols, dst);
    }
    out
}

/// [`transpose_block`] for bytes: the SIMD kernel (16×16 register tiles).
pub(super) fn transpose_u8(src: &[u8], rows: usize, cols: usize, dst: &mut [u8]) {
    crate::kernels::transpose::transpose_u8(src, rows, cols, dst);
}

/// `dst` (`cols × rows`) = transpose of `src` (`rows × cols`): whole 8×8 tiles through a
/// fixed-size local array (no bounds checks in the inner loops), then the ragged edges.
fn transpose_block<T: Copy + Default>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const B: usize = 8;
    let (src, dst) = (&src[..rows * cols], &mut dst[..rows * cols]);
    let (rb, cb) = (rows / B * B, cols / B * B);
    for r0 in (0..rb).step_by(B) {
        for c0 in (0..cb).step_by(B) {
            let mut t = [[T::default(); B]; B];
            for (i, ti) in t.iter_mut().enumerate() {
                let s: &[T; B] = src[(r0 + i) * cols + c0..][..B]
                    .try_into()
                    .expect("a whole tile row");
                *ti = *s;
            }
            for j in 0..B {
                let d: &mut [T; B] = (&mut dst[(c0 + j) * rows + r0..][..B])
                    .try_into()
                    .expect("a whole tile row");
                for (i, v) in d.iter_mut().enumerate() {
                    *v = t[i][j];
                }
            }
        }
    }
    for r in 0..rows {
        let c_from = if r < rb { cb } else { 0 };
        for c in c_from..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

// ---------------------------------------------------------------------------------------
// Matrix product

struct GemmPrep {
    packed: PackedB,
    w_scale: Vec<f32>,
}

/// `Y = X·W` for X `[..., M, K]` and W `[K, N]` (or `[N, K]` with `trans_b`, Gemm), or batched
/// W `[..., K, N]` when W is an input (packed per run and per batch).
pub(crate) struct QMatMul {
    spec: QSpec,
    trans_b: bool,
    prep: Option<GemmPrep>,
}

impl QMatMul {
    pub fn new(spec: QSpec, trans_b: bool) -> Result<QMatMul, String> {
        let mut k = QMatMul {
            spec,
            trans_b,
            prep: None,
        };
        let s = &k.spec;
        let all_const = s.w.is_const()
            && s.w_zp.as_ref().is_none_or(Src::is_const)
            && s.w_scale.as_ref().is_none_or(Src::is_const)
            && s.bias.as_ref().is_none_or(Src::is_const)
            && s.x_zp.as_ref().is_none_or(Src::is_const);
        if all_const && k.spec.w.get(&[])?.rank() == 2 {
            let w = k.spec.w.get(&[])?;
            k.prep = Some(k.prepare(&[], w, 0)?);
        }
        Ok(k)
    }

    /// Packs the 2-D weights `w` (`b_off` is the offset of the batch matrix inside `w`).
    fn prepare(
        &self,
        inputs: &[Option<&Array>],
        w: &Array,
        b_off: usize,
    ) -> Result<GemmPrep, String> {
        let r = w.rank();
        let n = if self.trans_b {
            w.shape.get(r.wrapping_sub(2))
        } else {
            w.shape.last()
        };
        let converted = weights_i8(
            w,
            opt_get(&self.spec.w_zp, inputs)?,
            n.copied().unwrap_or(0),
        )?;
        self.prepare_converted(inputs, w, &converted, b_off)
    }

    /// [`QMatMul::prepare`] with the weights already converted to i8 (done once per run for
    /// batched weights, not once per matrix).
    fn prepare_converted(
        &self,
        inputs: &[Option<&Array>],
        w: &Array,
        (wq, wzp): &(Vec<i8>, Vec<i8>),
        b_off: usize,
    ) -> Result<GemmPrep, String> {
        let s = &self.spec;
        let r = w.rank();
        if r < 2 {
            return Err(format!(
                "weights of shape {:?} must be at least 2-D",
                w.shape
            ));
        }
        let (d0, d1) = (w.shape[r - 2], w.shape[r - 1]);
        let (k, n) = if self.trans_b { (d1, d0) } else { (d0, d1) };
        let w_scale = weight_scales(opt_get(&s.w_scale, inputs)?, n)?;
        let bias = bias_i32(opt_get(&s.bias, inputs)?, n)?;
        let a_zp = pack_time_zp(opt_get(&s.x_zp, inputs)?);
        let qw = QWeights {
            data: &wq[b_off..b_off + k * n],
            k,
            n,
            trans_b: self.trans_b,
            zp: wzp,
            bias: bias.as_deref(),
        };
        let packed = PackedB::new(&qw, a_zp).map_err(|e| e.to_string())?;
        Ok(GemmPrep { packed, w_scale })
    }
}

impl Kernel for QMatMul {
    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        self.run_with(inputs, 1)
    }

    fn run_with(&self, inputs: &[Option<&Array>], threads: usize) -> Result<Vec<Array>, String> {
        let s = &self.spec;
        let x = input(inputs, s.x)?;
        let w = s.w.get(inputs)?;
        if x.rank() < 1 || w.rank() < 2 {
            return Err(format!(
                "quantized MatMul of shapes {:?} and {:?} is not supported",
                x.shape, w.shape
            ));
        }
        let x_zp = act_zp(opt_get(&s.x_zp, inputs)?, x.dtype(), "A")?;
        let (xu, a_zp) = act_u8(x, x_zp)?;
        let r = w.rank();
        let (k, n) = if self.trans_b {
            (w.shape[r - 1], w.shape[r - 2])
        } else {
            (w.shape[r - 2], w.shape[r - 1])
        };
        let xk = *x.shape.last().expect("rank ≥ 1");
        if xk != k {
            return Err(format!(
                "MatMul: A {:?} and B {:?} do not match",
                x.shape, w.shape
            ));
        }
        let x_rows = x.len() / k.max(1);
        if r == 2 {
            // One weight matrix: every row of X is a GEMM row.
            let owned;
            let prep = match &self.prep {
                Some(p) => p,
                None => {
                    owned = self.prepare(inputs, w, 0)?;
                    &owned
                }
            };
            let stage = Stage::resolve(s, inputs, &prep.w_scale)?;
            let mut out = stage.buffer(x_rows * n);
            if k == 0 {
                return Err("MatMul with K = 0 is not supported".into());
            }
            // Rows are independent: split them among the threads (at least 16 rows each).
            let per = x_rows.div_ceil(threads.clamp(1, (x_rows / 16).max(1)));
            let (packed, stage, xu) = (&prep.packed, &stage, &xu);
            let run_part = |t: usize, part: QGemmOutput<'_>| {
                let rows = per.min(x_rows - t * per);
                qgemm(
                    &xu[t * per * k..],
                    k,
                    a_zp,
                    rows,
                    packed,
                    stage.output_stage(),
                    part,
                    n,
                );
            };
            let parts = out_chunks(&mut out, per * n);
            run_parts(parts, &run_part);
            let mut shape = x.shape.clone();
            *shape.last_mut().expect("rank ≥ 1") = n;
            if x.rank() == 1 {
                shape = vec![n];
            }
            return Ok(vec![Array::new(shape, out)?]);
        }
        // Batched weights (e.g. attention scores): broadcast the batch dims, pack per matrix.
        if x.rank() < 2 || self.trans_b {
            return Err("batched quantized MatMul needs A of rank ≥ 2".into());
        }
        let m = x.shape[x.rank() - 2];
        let xb = &x.shape[..x.rank() - 2];
        let wb = &w.shape[..r - 2];
        let batch = super::value::broadcast_shape(xb, wb)?;
        let ia = super::value::broadcast_index(xb, &batch);
        let ib = super::value::broadcast_index(wb, &batch);
        let nb: usize = batch.iter().product();
        if k == 0 {
            return Err("MatMul with K = 0 is not supported".into());
        }
        let w_scale = weight_scales(opt_get(&s.w_scale, inputs)?, n)?;
        let stage = Stage::resolve(s, inputs, &w_scale)?;
        let mut out = stage.buffer(nb * m * n);
        let converted = weights_i8(w, opt_get(&s.w_zp, inputs)?, n)?;
        if m <= SMALL_M && s.bias.is_none() {
            // Few rows per matrix (attention over short sequences): packing each B would
            // cost more than the product itself; accumulate directly (same exact integer
            // sums, same output stage arithmetic as the kernels' reference).
            let (wq, wzp) = &converted;
            let mut wd = vec![0i32; k * n];
            // u8 requantized output (the usual case): the fused kernel, no accumulators.
            let mrow: Vec<f32>;
            let fused = match &stage {
                Stage::Requant {
                    mult,
                    zp,
                    qmin,
                    qmax,
                    ..
                } if matches!(out, ArrayData::U8(_))
                    && (0..=255).contains(qmin)
                    && qmax <= &255 =>
                {
                    mrow = (0..n)
                        .map(|j| if mult.len() == 1 { mult[0] } else { mult[j] })
                        .collect();
                    Some(crate::kernels::small_qgemm::RequantU8 {
                        mult: &mrow,
                        zp: *zp,
                        lo: *qmin,
                        hi: *qmax,
                    })
                }
                _ => None,
            };
            let mut acc = if fused.is_some() {
                vec![]
            } else {
                vec![0i32; m * n]
            };
            // Per-column zero points, spread to a row once.
            let zrow: Vec<i32> = (0..n)
                .map(|j| i32::from(if wzp.len() == 1 { wzp[0] } else { wzp[j] }))
                .collect();
            for bi in 0..nb {
                let wb = &wq[ib[bi] * k * n..(ib[bi] + 1) * k * n];
                for (drow, wrow) in wd.chunks_exact_mut(n).zip(wb.chunks_exact(n)) {
                    for ((d, &v), &z) in drow.iter_mut().zip(wrow).zip(&zrow) {
                        *d = i32::from(v) - z;
                    }
                }
                let a = &xu[ia[bi] * m * k..];
                if let (Some(rq), ArrayData::U8(o)) = (&fused, &mut out) {
                    let o = &mut o[bi * m * n..(bi + 1) * m * n];
                    crate::kernels::small_qgemm::small_qgemm_u8(a, a_zp, m, k, &wd, n, rq, o, true);
                    continue;
                }
                crate::kernels::small_qgemm::small_qgemm_acc(a, a_zp, m, k, &wd, n, &mut acc, true);
                write_stage(&stage, &acc, n, &mut out, bi * m * n);
            }
            let mut shape = batch;
            shape.extend([m, n]);
            return Ok(vec![Array::new(shape, out)?]);
        }
        for bi in 0..nb {
            let prep = self.prepare_converted(inputs, w, &converted, ib[bi] * k * n)?;
            qgemm(
                &xu[ia[bi] * m * k..],
                k,
                a_zp,
                m,
                &prep.packed,
                stage.output_stage(),
                out_view(&mut out, bi * m * n),
                n,
            );
        }
        let mut shape = batch;
        shape.extend([m, n]);
        Ok(vec![Array::new(shape, out)?])
    }
}

/// Rows per matrix up to which a batched quantized MatMul skips packing.
const SMALL_M: usize = 16;

/// The output stage over `m×n` accumulators (reference arithmetic, as the kernels' epilogue)
/// into `out` at element offset `off`.
fn write_stage(stage: &Stage, acc: &[i32], n: usize, out: &mut ArrayData, off: usize) {
    use crate::kernels::reference::dequantize_acc;
    // Per-column parameter j (1 value: per tensor).
    let per = |v: &[f32], j: usize| if v.len() == 1 { v[0] } else { v[j] };
    // `reference::requantize`, branch-free so that it vectorizes: the multipliers spread to
    // a row once, and its `round_ties_even` (a libm call on baseline x86-64) replaced by
    // adding and subtracting 2^23 with the value's sign, exact here since the clamped
    // value is within ±255 (never NaN: `max` drops it).
    fn requant<T>(acc: &[i32], n: usize, mult: &[f32], zp: i32, lo: i32, hi: i32, o: &mut [T])
    where
        T: crate::kernels::reference::QType,
    {
        const TWO23: f32 = 8_388_608.0;
        let (flo, fhi) = ((lo - zp) as f32, (hi - zp) as f32);
        let mrow: Vec<f32> = (0..n)
            .map(|j| if mult.len() == 1 { mult[0] } else { mult[j] })
            .collect();
        for (orow, arow) in o.chunks_exact_mut(n).zip(acc.chunks_exact(n)) {
            for ((y, &a), &m) in orow.iter_mut().zip(arow).zip(&mrow) {
                let x = ((a as f32) * m).max(flo).min(fhi);
                let c = TWO23.copysign(x);
                *y = T::from_i32(((x + c) - c) as i32 + zp);
            }
        }
    }
    let len = acc.len();
    match (stage, out) {
        (Stage::Raw, ArrayData::I32(o)) => o[off..off + len].copy_from_slice(acc),
        (
            Stage::Requant {
                mult,
                zp,
                qmin,
                qmax,
                ..
            },
            ArrayData::U8(o),
        ) => requant(acc, n, mult, *zp, *qmin, *qmax, &mut o[off..off + len]),
        (
            Stage::Requant {
                mult,
                zp,
                qmin,
                qmax,
                ..
            },
            ArrayData::I8(o),
        ) => requant(acc, n, mult, *zp, *qmin, *qmax, &mut o[off..off + len]),
        (Stage::Dequant { scale }, ArrayData::F32(o)) => {
            for (orow, arow) in o[off..off + len]
                .chunks_exact_mut(n)
                .zip(acc.chunks_exact(n))
            {
                for (j, (y, &a)) in orow.iter_mut().zip(arow).enumerate() {
                    *y = dequantize_acc(a, per(scale, j), 0.0);
                }
            }
        }
        _ => unreachable!("Stage::buffer makes the matching type"),
    }
}

// ---------------------------------------------------------------------------------------
// QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear and the QLinear* ops

/// Which scale / zero point applies to each element of a Q/DQ input.
enum ParamLayout {
    PerTensor,
    /// Per axis: `(i / inner) % dim`.
    PerAxis {
        dim: usize,
        inner: usize,
    },
    /// Blocked (opset 21): one parameter per `block` consecutive elements along the axis;
    /// the parameters have the input's rank. Indices precomputed.
    Blocked(Vec<usize>),
}

impl ParamLayout {
    /// Checks the parameter shape against the input's and the attributes.
    fn new(x: &Array, scale: &Array, axis: i64, block: i64) -> Result<ParamLayout, String> {
        if block < 0 {
            return Err(format!("block_size {block} must be ≥ 0"));
        }
        if block == 0 {
            if scale.len() == 1 && scale.rank() <= 1 {
                return Ok(ParamLayout::PerTensor);
            }
            let a = norm_axis(axis, x.rank(), false)?;
            if scale.rank() != 1 || x.shape[a] != scale.len() {
                return Err(format!(
                    "scale of shape {:?} for axis {a} of an input of shape {:?}",
                    scale.shape, x.shape
                ));
            }
            return Ok(ParamLayout::PerAxis {
                dim: x.shape[a],
                inner: x.shape[a + 1..].iter().product(),
            });
        }
        let a = norm_axis(axis, x.rank(), false)?;
        let b = block as usize;
        let ok = scale.rank() == x.rank()
            && (0..x.rank()).all(|d| {
                if d == a {
                    scale.shape[d] == x.shape[d].div_ceil(b)
                } else {
                    scale.shape[d] == x.shape[d]
                }
            });
        if !ok {
            return Err(format!(
                "blocked scale of shape {:?} does not match input {:?} with block_size {b} on axis {a}",
                scale.shape, x.shape
            ));
        }
        let xs = super::value::strides(&x.shape);
        let ss = super::value::strides(&scale.shape);
        let idx = (0..x.len())
            .map(|i| {
                (0..x.rank())
                    .map(|d| {
                        let c = (i / xs[d]) % x.shape[d];
                        (if d == a { c / b } else { c }) * ss[d]
                    })
                    .sum()
            })
            .collect();
        Ok(ParamLayout::Blocked(idx))
    }

    #[inline]
    fn at(&self, i: usize) -> usize {
        match self {
            ParamLayout::PerTensor => 0,
            ParamLayout::PerAxis { dim, inner } => (i / inner) % dim,
            ParamLayout::Blocked(v) => v[i],
        }
    }
}

/// The zero points (as i64, `0` when absent) of a Q/DQ, checking their count.
fn zero_points(scale: &Array, zp: Option<&Array>) -> Result<Vec<i64>, String> {
    match zp {
        None => Ok(vec![0; scale.len()]),
        Some(z) if z.shape != scale.shape && !(z.len() == 1 && scale.len() == 1) => Err(format!(
            "zero point of shape {:?}, scale of shape {:?}",
            z.shape, scale.shape
        )),
        Some(z) => Ok(z.data.to_i64_vec()),
    }
}

pub(crate) fn quantize(
    x: &Array,
    scale: &Array,
    zp: Option<&Array>,
    (axis, block): (i64, i64),
    out_type: DataType,
) -> Result<Array, String> {
    let xv = x.as_f32().map_err(|_| {
        format!(
            "QuantizeLinear input {} is not supported (f32 only)",
            x.dtype()
        )
    })?;
    let sv = scale.as_f32().map_err(|e| format!("scale: {e}"))?;
    let ty = zp.map_or(out_type, Array::dtype);
    let zpv = zero_points(scale, zp)?;
    let layout = ParamLayout::new(x, scale, axis, block)?;
    if let ParamLayout::PerTensor = layout {
        let data = match ty {
            DataType::U8 => {
                let mut y = vec![0u8; xv.len()];
                crate::kernels::quantize::quantize_slice(xv, sv[0], zpv[0] as u8, &mut y);
                ArrayData::U8(y)
            }
            DataType::I8 => {
                let mut y = vec![0i8; xv.len()];
                crate::kernels::quantize::quantize_slice(xv, sv[0], zpv[0] as i8, &mut y);
                ArrayData::I8(y)
            }
            t => return Err(format!("QuantizeLinear to {t} is not supported (u8/i8)")),
        };
        return Array::new(x.shape.clone(), data);
    }
    let p = |i: usize| layout.at(i);
    let data = match ty {
        DataType::U8 => ArrayData::U8(
            xv.iter()
                .enumerate()
                .map(|(i, &v)| quantize_one::<u8>(v, sv[p(i)], zpv[p(i)] as u8))
                .collect(),
        ),
        DataType::I8 => ArrayData::I8(
            xv.iter()
                .enumerate()
                .map(|(i, &v)| quantize_one::<i8>(v, sv[p(i)], zpv[p(i)] as i8))
                .collect(),
        ),
        t => return Err(format!("QuantizeLinear to {t} is not supported (u8/i8)")),
    };
    Array::new(x.shape.clone(), data)
}

pub(crate) fn dequantize(
    x: &Array,
    scale: &Array,
    zp: Option<&Array>,
    (axis, block): (i64, i64),
) -> Result<Array, String> {
    let sv = scale.as_f32().map_err(|e| format!("scale: {e}"))?;
    if let Some(z) = zp {
        if z.dtype() != x.dtype() {
            return Err(format!(
                "zero point is {}, input is {}",
                z.dtype(),
                x.dtype()
            ));
        }
    }
    let zpv = zero_points(scale, zp)?;
    let xv: Vec<i64> = match &x.data {
        ArrayData::U8(_) | ArrayData::I8(_) => vec![],
        ArrayData::I32(_) => x.data.to_i64_vec(),
        d => {
            return Err(format!(
                "DequantizeLinear of {} is not supported (u8/i8/i32)",
                d.dtype()
            ))
        }
    };
    let layout = ParamLayout::new(x, scale, axis, block)?;
    if let ParamLayout::PerTensor = layout {
        // The common case, without the index computation (same arithmetic).
        let (z, s) = (zpv[0] as i32, sv[0]);
        let out = match &x.data {
            ArrayData::U8(v) => crate::kernels::quantize::dequantize_vec(v, s, z as u8),
            ArrayData::I8(v) => crate::kernels::quantize::dequantize_vec(v, s, z as i8),
            _ => xv
                .iter()
                .map(|&e| ((e as i32).wrapping_sub(z)) as f32 * s)
                .collect(),
        };
        return Ok(Array::f32(x.shape.clone(), out));
    }
    let xv = if xv.is_empty() {
        x.data.to_i64_vec()
    } else {
        xv
    };
    let out = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let k = layout.at(i);
            // The difference in i32 (exact for 8-bit; i32 inputs wrap as in ONNX Runtime).
            ((v as i32).wrapping_sub(zpv[k] as i32)) as f32 * sv[k]
        })
        .collect();
    Ok(Array::f32(x.shape.clone(), out))
}

/// ONNX DynamicQuantizeLinear (u8): scale and zero point from the data range including 0.
fn dynamic_quantize(x: &Array) -> Result<Vec<Array>, String> {
    let v = x.as_f32()?;
    let min = v.iter().copied().fold(0f32, f32::min);
    let max = v.iter().copied().fold(0f32, f32::max);
    let scale = (max - min) / 255.0;
    let (zp, y) = if scale == 0.0 || !scale.is_finite() {
        (0u8, vec![0u8; v.len()])
    } else {
        let zp = (0.0 - min / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        (
            zp,
            v.iter()
                .map(|&e| quantize_one::<u8>(e, scale, zp))
                .collect(),
        )
    };
    Ok(vec![
        Array::new(x.shape.clone(), ArrayData::U8(y))?,
        Array::f32(vec![], vec![scale]),
        Array::new(vec![], ArrayData::U8(vec![zp]))?,
    ])
}

/// Builds the integer ops of the default domain.
pub(crate) fn build(t: &str, ctx: &NodeCtx<'_>) -> Result<Option<Box<dyn Kernel>>, String> {
    Ok(Some(match t {
        "QuantizeLinear" => {
            check_q_attrs(ctx)?;
            let axis = (ctx.int("axis", 1), ctx.int("block_size", 0));
            let out_type = match ctx.int("output_dtype", 0) {
                0 => DataType::U8,
                c => match DataType::from_onnx(c as i32) {
                    Some(t @ (DataType::U8 | DataType::I8)) => t,
                    Some(t) => {
                        return Err(format!("QuantizeLinear to {t} is not supported (u8/i8)"))
                    }
                    None => return Err(format!("unknown output_dtype {c}")),
                },
            };
            boxed(move |i| {
                Ok(vec![quantize(
                    input(i, 0)?,
                    input(i, 1)?,
                    i.get(2).copied().flatten(),
                    axis,
                    out_type,
                )?])
            })
        }
        "DequantizeLinear" => {
            check_q_attrs(ctx)?;
            let axis = (ctx.int("axis", 1), ctx.int("block_size", 0));
            boxed(move |i| {
                Ok(vec![dequantize(
                    input(i, 0)?,
                    input(i, 1)?,
                    i.get(2).copied().flatten(),
                    axis,
                )?])
            })
        }
        "DynamicQuantizeLinear" => boxed(|i| dynamic_quantize(input(i, 0)?)),
        "QLinearConv" => {
            let spec = QSpec {
                x: 0,
                x_scale: Src::of(ctx, 1),
                x_zp: Src::of(ctx, 2),
                w: Src::of(ctx, 3).ok_or("missing w")?,
                w_scale: Src::of(ctx, 4),
                w_zp: Src::of(ctx, 5),
                bias: Src::of(ctx, 8),
                out: QOut::Requant {
                    y_scale: Src::of(ctx, 6).ok_or("missing y_scale")?,
                    y_zp: Src::of(ctx, 7),
                    y_type: DataType::U8,
                    act: Act::None,
                },
            };
            Box::new(QConv::new(spec, ConvAttrs::parse(ctx)?)?)
        }
        "ConvInteger" => {
            let spec = QSpec {
                x: 0,
                x_scale: None,
                x_zp: Src::of(ctx, 2),
                w: Src::of(ctx, 1).ok_or("missing w")?,
                w_scale: None,
                w_zp: Src::of(ctx, 3),
                bias: None,
                out: QOut::Raw,
            };
            Box::new(QConv::new(spec, ConvAttrs::parse(ctx)?)?)
        }
        "QLinearMatMul" => {
            let spec = QSpec {
                x: 0,
                x_scale: Src::of(ctx, 1),
                x_zp: Src::of(ctx, 2),
                w: Src::of(ctx, 3).ok_or("missing b")?,
                w_scale: Src::of(ctx, 4),
                w_zp: Src::of(ctx, 5),
                bias: None,
                out: QOut::Requant {
                    y_scale: Src::of(ctx, 6).ok_or("missing y_scale")?,
                    y_zp: Src::of(ctx, 7),
                    y_type: DataType::U8,
                    act: Act::None,
                },
            };
            Box::new(QMatMul::new(spec, false)?)
        }
        "MatMulInteger" => {
            let spec = QSpec {
                x: 0,
                x_scale: None,
                x_zp: Src::of(ctx, 2),
                w: Src::of(ctx, 1).ok_or("missing b")?,
                w_scale: None,
                w_zp: Src::of(ctx, 3),
                bias: None,
                out: QOut::Raw,
            };
            Box::new(QMatMul::new(spec, false)?)
        }
        _ => return Ok(None),
    }))
}

fn check_q_attrs(ctx: &NodeCtx<'_>) -> Result<(), String> {
    if ctx.int("saturate", 1) != 1 {
        return Err("saturate=0 applies to float8 only, which is not supported".into());
    }
    Ok(())
}

/// The activation zero point folded into packed weights, in the u8 domain
/// (an s8 zero point shifted by 128); 0 when absent or not a scalar.
fn pack_time_zp(z: Option<&Array>) -> u8 {
    match z.map(|z| &z.data) {
        Some(ArrayData::U8(v)) if v.len() == 1 => v[0],
        Some(ArrayData::I8(v)) if v.len() == 1 => (v[0] as u8) ^ 0x80,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::requantize;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
        fn q(&mut self, signed: bool, n: usize) -> ArrayData {
            let v: Vec<u8> = (0..n).map(|_| self.next(256) as u8).collect();
            if signed {
                ArrayData::I8(v.into_iter().map(|b| b as i8).collect())
            } else {
                ArrayData::U8(v)
            }
        }
    }

    fn arr(shape: Vec<usize>, data: ArrayData) -> Array {
        Array::new(shape, data).unwrap()
    }

    /// QLinearConv through the fbgemm drivers equals the definition (i32 sum + the reference
    /// output stage), for every mix of signed/unsigned activations, weights and outputs,
    /// per-tensor and per-channel weights, groups, depthwise, strides, pads and dilations.
    #[test]
    fn byte_transpose_matches_the_generic_one() {
        for (rows, cols) in [
            (8, 8),
            (16, 64),
            (64, 16),
            (3, 17),
            (17, 9),
            (9, 40),
            (1, 5),
        ] {
            let src: Vec<u8> = (0..rows * cols).map(|i| (i * 37 % 251) as u8).collect();
            let (mut a, mut b) = (vec![0u8; rows * cols], vec![0u8; rows * cols]);
            transpose_u8(&src, rows, cols, &mut a);
            transpose_block(&src, rows, cols, &mut b);
            assert_eq!(a, b, "{rows}×{cols}");
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(a[c * rows + r], src[r * cols + c]);
                }
            }
        }
    }

    #[test]
    fn qconv_matches_the_definition() {
        let mut r = Rng(7);
        for case in 0..96 {
            let (xs_, ws_, ys_) = (case % 2 == 1, (case / 2) % 2 == 1, (case / 4) % 2 == 1);
            let depthwise = case % 3 == 0;
            let group = if depthwise {
                1 + r.next(8) as usize
            } else {
                1 + r.next(2) as usize
            };
            let (cg, mg) = if depthwise {
                (1, 1)
            } else {
                (1 + r.next(5) as usize, 1 + r.next(6) as usize)
            };
            let (c, m) = (group * cg, group * mg);
            let k = [1, 3, 5][r.next(3) as usize];
            let (s, d) = (1 + r.next(2) as usize, 1 + r.next(2) as usize);
            let p: Vec<usize> = (0..4).map(|_| r.next(3) as usize).collect();
            let (n, h, w) = (
                1 + r.next(2) as usize,
                (k - 1) * d + 1 + r.next(5) as usize,
                (k - 1) * d + 1 + r.next(5) as usize,
            );
            let x = arr(vec![n, c, h, w], r.q(xs_, n * c * h * w));
            let wt = arr(vec![m, cg, k, k], r.q(ws_, m * cg * k * k));
            let per_ch = case % 5 != 0;
            let nq = if per_ch { m } else { 1 };
            let x_zp = arr(vec![], r.q(xs_, 1));
            let w_zp = arr(vec![nq], r.q(ws_, nq));
            let w_scale = Array::f32(
                vec![nq],
                (0..nq).map(|_| 0.001 + r.next(100) as f32 * 1e-4).collect(),
            );
            let bias = arr(
                vec![m],
                ArrayData::I32((0..m).map(|_| r.next(20000) as i32 - 10000).collect()),
            );
            let y_zp = arr(vec![], r.q(ys_, 1));
            let (x_scale, y_scale) = (
                Array::f32(vec![], vec![0.02]),
                Array::f32(vec![], vec![0.05 + r.next(10) as f32 * 0.01]),
            );
            let spec = QSpec {
                x: 0,
                x_scale: Some(Src::Const(x_scale.clone())),
                x_zp: Some(Src::Const(x_zp.clone())),
                w: Src::Const(wt.clone()),
                w_scale: Some(Src::Const(w_scale.clone())),
                w_zp: Some(Src::Const(w_zp.clone())),
                bias: Some(Src::Const(bias.clone())),
                out: QOut::Requant {
                    y_scale: Src::Const(y_scale.clone()),
                    y_zp: Some(Src::Const(y_zp.clone())),
                    y_type: DataType::U8,
                    act: Act::None,
                },
            };
            let attrs = ConvAttrs {
                group,
                auto_pad: "NOTSET".into(),
                pads: Some(p.iter().map(|&v| v as i64).collect()),
                strides: Some(vec![s as i64; 2]),
                dilations: Some(vec![d as i64; 2]),
                kernel_shape: None,
            };
            let conv = QConv::new(spec, attrs).unwrap();
            let got = conv.run(&[Some(&x)]).unwrap().remove(0);
            assert_eq!(conv.run_with(&[Some(&x)], 3).unwrap()[0], got, "threads");
            // The definition.
            let xv = x.data.to_i64_vec();
            let wv = wt.data.to_i64_vec();
            let (xz, wz, yz) = (
                x_zp.data.to_i64_vec()[0],
                w_zp.data.to_i64_vec(),
                y_zp.data.to_i64_vec()[0] as i32,
            );
            let oh = (h + p[0] + p[2] - (k - 1) * d - 1) / s + 1;
            let ow = (w + p[1] + p[3] - (k - 1) * d - 1) / s + 1;
            assert_eq!(got.shape, vec![n, m, oh, ow]);
            let (tmin, tmax) = if ys_ { (-128, 127) } else { (0, 255) };
            let gv = got.data.to_i64_vec();
            for img in 0..n {
                for oc in 0..m {
                    let g = oc / mg;
                    let q = if per_ch { oc } else { 0 };
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut acc = bias.data.to_i64_vec()[oc];
                            for ci in 0..cg {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let iy = (oy * s + ky * d) as i64 - p[0] as i64;
                                        let ix = (ox * s + kx * d) as i64 - p[1] as i64;
                                        if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                            continue;
                                        }
                                        let xi = xv[((img * c + g * cg + ci) * h + iy as usize)
                                            * w
                                            + ix as usize];
                                        let wi = wv[((oc * cg + ci) * k + ky) * k + kx];
                                        acc += (xi - xz) * (wi - wz[q]);
                                    }
                                }
                            }
                            let mult = 0.02f32 * w_scale.as_f32().unwrap()[q]
                                / y_scale.as_f32().unwrap()[0];
                            let want = requantize(acc as i32, mult, yz, tmin, tmax) as i64;
                            let at = ((img * m + oc) * oh + oy) * ow + ox;
                            assert_eq!(gv[at], want, "case {case} at {at}");
                        }
                    }
                }
            }
        }
    }

    /// QLinearMatMul with signed inputs and batched dynamic B equals the definition.
    #[test]
    fn batched_qmatmul_matches_the_definition() {
        let mut r = Rng(11);
        for case in 0..16 {
            let signed = case % 2 == 1;
            let (b, m, k, n) = (
                1 + r.next(3) as usize,
                1 + r.next(7) as usize,
                1 + r.next(40) as usize,
                1 + r.next(20) as usize,
            );
            let a = arr(vec![b, m, k], r.q(signed, b * m * k));
            let w = arr(vec![b, k, n], r.q(!signed, b * k * n));
            let (az, wz, yz) = (
                arr(vec![], r.q(signed, 1)),
                arr(vec![], r.q(!signed, 1)),
                arr(vec![], r.q(signed, 1)),
            );
            let spec = QSpec {
                x: 0,
                x_scale: Some(Src::Const(Array::f32(vec![], vec![0.03]))),
                x_zp: Some(Src::Const(az.clone())),
                w: Src::Input(1),
                w_scale: Some(Src::Const(Array::f32(vec![], vec![0.02]))),
                w_zp: Some(Src::Const(wz.clone())),
                bias: None,
                out: QOut::Requant {
                    y_scale: Src::Const(Array::f32(vec![], vec![0.7])),
                    y_zp: Some(Src::Const(yz.clone())),
                    y_type: DataType::U8,
                    act: Act::None,
                },
            };
            let got = QMatMul::new(spec, false)
                .unwrap()
                .run(&[Some(&a), Some(&w)])
                .unwrap()
                .remove(0);
            assert_eq!(got.shape, vec![b, m, n]);
            let (av, wv, gv) = (
                a.data.to_i64_vec(),
                w.data.to_i64_vec(),
                got.data.to_i64_vec(),
            );
            let (azv, wzv, yzv) = (
                az.data.to_i64_vec()[0],
                wz.data.to_i64_vec()[0],
                yz.data.to_i64_vec()[0] as i32,
            );
            let (tmin, tmax) = if signed { (-128, 127) } else { (0, 255) };
            for bi in 0..b {
                for i in 0..m {
                    for j in 0..n {
                        let acc: i64 = (0..k)
                            .map(|p| {
                                (av[(bi * m + i) * k + p] - azv) * (wv[(bi * k + p) * n + j] - wzv)
                            })
                            .sum();
                        let want =
                            requantize(acc as i32, 0.03f32 * 0.02 / 0.7, yzv, tmin, tmax) as i64;
                        assert_eq!(gv[(bi * m + i) * n + j], want, "case {case}");
                    }
                }
            }
        }
    }
}
