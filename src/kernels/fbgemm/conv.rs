//! The convolution driver of the fbgemm family: ONNX `Conv` geometry (group, strides,
//! begin/end pads, dilations, any kernel size) over **NHWC** u8 activations, s8 weights in the
//! ONNX layout `[M, C/group, KH, KW]` packed once into a [`PackedConv`], and the fused
//! [`OutputStage`] of the GEMM (requantize with per-channel multipliers and `qmin`/`qmax` for
//! fused Relu/Clip, dequantize to f32, or raw i32).
//!
//! Algorithms ([`ConvAlgo`], picked at pack time, overridable for tests):
//! - [`ConvAlgo::Direct1x1`]: 1×1, stride 1, no padding. The NHWC input *is* the GEMM's A
//!   (`M = N·H·W` rows, row stride `C`), so each group is one [`qgemm`] call with no copy.
//! - [`ConvAlgo::Im2col`]: anything. Per image and group, chunks of output pixels are unrolled
//!   into a reusable scratch buffer ([`ConvScratch`], sized to stay in L2; padding filled with
//!   `a_zp`), then multiplied by the packed group weights with the fused output stage.
//! - [`ConvAlgo::Indirect`]: one group, no dilation. The input is copied with its padding filled
//!   in (a group of images at a time, within the im2col chunk budget); the micro-kernel then reads each output pixel's window in place through a row
//!   pointer, `KH` runs of `KW·C` bytes (no im2col copy, which cost as much as the GEMM on
//!   convs with 16–32 channels).
//! - [`ConvAlgo::Depthwise`]: group = C = M with a dedicated kernel for the kernel size (3×3 and
//!   5×5 ship). Per-pixel tap pointers (indirection) go to the input or to an `a_zp` row, so
//!   every stride, dilation and padding is handled by the driver; see [`super::dwconv`].
//!
//! Zero points: weights may be symmetric (per-channel scales, zp 0: no row sums) or asymmetric
//! (per-tensor or per-channel zp). The GEMM paths then use the existing row-sum correction
//! (the im2col padding holds `a_zp`, so row sums and the folded column bias stay consistent);
//! depthwise subtracts the weight zp at pack time. The activation zp folded at pack time can be
//! overridden per call (O(M) bias refold), as with [`qgemm`].
//!
//! Threading: single-threaded and re-entrant; `PackedConv` is immutable and `Sync`. To split
//! work, give threads disjoint images (and their own [`ConvScratch`]).

use std::marker::PhantomData;

use super::dwconv::{DwConvTile, DwConvUkernel, DwLayout, PackedDw};
use super::gemm::{qgemm, qgemm_indirect, QGemmOutput};
use super::im2col::{im2col_rows, pad_image};
use super::output::OutputStage;
use super::pack::{PackError, PackedB, QWeights};
use super::ukernel::TileOutput;
use crate::kernels::reference::ConvGeometry;
use crate::kernels::{best, Kernels, Numerics};

/// Target size of one im2col chunk (rows·K bytes): with the group's packed weights it stays in
/// L2 while the GEMM consumes it.
const IM2COL_CHUNK_BYTES: usize = 192 * 1024;

/// Conv weights as they come from the graph.
#[derive(Clone, Copy, Debug)]
pub struct ConvWeights<'a> {
    /// ONNX layout `[M, C/group, KH, KW]`, dense.
    pub data: &'a [i8],
    /// 1 value (per tensor) or `M` values (per output channel).
    pub zp: &'a [i8],
    /// Optional i32 bias (`M` values, scale `a_scale·w_scale[m]`).
    pub bias: Option<&'a [i32]>,
}

/// How a [`PackedConv`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgo {
    /// 1×1 stride-1 unpadded: GEMM straight on the NHWC input.
    Direct1x1,
    /// im2col into scratch, then the packed GEMM.
    Im2col,
    /// One group, no dilation: the GEMM reads the input in place through row pointers, one
    /// run of `KW·C` bytes per kernel row ([`qgemm_indirect`]), from a copy of the input with
    /// its padding filled in. Needs `KW·C` a multiple of 4, symmetric weights and a kernel
    /// that reads indirect A; otherwise it packs as [`ConvAlgo::Im2col`].
    Indirect,
    /// Dedicated depthwise kernel (group = C = M, kernel size with a micro-kernel).
    Depthwise,
}

/// Reusable per-thread working memory of [`PackedConv::run`] (grows to the largest use).
#[derive(Debug, Default)]
pub struct ConvScratch {
    im2col: Vec<u8>,
    /// The padded image region im2col copies from.
    padded: Vec<u8>,
    zero: Vec<u8>,
}

impl ConvScratch {
    pub fn new() -> ConvScratch {
        ConvScratch::default()
    }
}

/// Convolution weights packed once for one kernel set and algorithm.
#[derive(Debug)]
pub struct PackedConv {
    geom: ConvGeometry,
    algo: ConvAlgo,
    /// One packed B (`K = KH·KW·Cg` × `Mg`) per group, for the GEMM algorithms.
    gemm: Vec<PackedB>,
    /// Depthwise kernel and weights.
    dw: Option<(&'static DwConvUkernel, PackedDw)>,
}

impl PackedConv {
    /// Packs for the [`best`] kernel set with the preferred algorithm.
    pub fn new(
        geom: &ConvGeometry,
        w: &ConvWeights<'_>,
        a_zp: u8,
    ) -> Result<PackedConv, PackError> {
        PackedConv::for_kernels(best(), geom, w, a_zp)
    }

    /// Packs for `kernels` with the preferred algorithm: depthwise if a kernel exists, else
    /// direct 1×1 if applicable, else im2col.
    pub fn for_kernels(
        kernels: &Kernels,
        geom: &ConvGeometry,
        w: &ConvWeights<'_>,
        a_zp: u8,
    ) -> Result<PackedConv, PackError> {
        let algo = PackedConv::algos(kernels, geom)[0];
        PackedConv::with_algo(kernels, algo, geom, w, a_zp)
    }

    /// The algorithms applicable to `geom` with `kernels`, preferred first (never empty:
    /// [`ConvAlgo::Im2col`] always applies).
    pub fn algos(kernels: &Kernels, geom: &ConvGeometry) -> Vec<ConvAlgo> {
        let mut v = Vec::new();
        if dw_ukernels(kernels, geom).next().is_some() {
            v.push(ConvAlgo::Depthwise);
        }
        if geom.kernel == [1, 1] && geom.strides == [1, 1] && geom.pads == [0; 4] {
            v.push(ConvAlgo::Direct1x1);
        } else if geom.group == 1
            && geom.dilations == [1, 1]
            && (geom.kernel[1] * geom.c_in).is_multiple_of(4)
        {
            v.push(ConvAlgo::Indirect);
        }
        v.push(ConvAlgo::Im2col);
        v
    }

    /// Packs for exactly `algo` (fails with [`PackError::Shape`] if it does not apply).
    pub fn with_algo(
        kernels: &Kernels,
        algo: ConvAlgo,
        geom: &ConvGeometry,
        w: &ConvWeights<'_>,
        a_zp: u8,
    ) -> Result<PackedConv, PackError> {
        PackedConv::build(kernels, algo, None, geom, w, a_zp)
    }

    /// The depthwise micro-kernels of `kernels` that can run `geom`, preferred first (empty
    /// unless [`ConvAlgo::Depthwise`] applies). [`PackedConv::with_algo`] takes the first.
    pub fn dw_ukernels(kernels: &Kernels, geom: &ConvGeometry) -> Vec<&'static DwConvUkernel> {
        let taps = geom.kernel[0] * geom.kernel[1];
        dw_ukernels(kernels, geom)
            .filter(|uk| uk.layout.admits(taps))
            .collect()
    }

    /// Packs the depthwise algorithm for exactly `uk`, one of
    /// [`PackedConv::dw_ukernels`]`(kernels, geom)` (tests and benches compare variants).
    pub fn with_dw_ukernel(
        kernels: &Kernels,
        uk: &'static DwConvUkernel,
        geom: &ConvGeometry,
        w: &ConvWeights<'_>,
        a_zp: u8,
    ) -> Result<PackedConv, PackError> {
        if !PackedConv::dw_ukernels(kernels, geom)
            .iter()
            .any(|k| core::ptr::eq(*k, uk))
        {
            return Err(PackError::Shape(format!("{} cannot run {geom:?}", uk.name)));
        }
        PackedConv::build(kernels, ConvAlgo::Depthwise, Some(uk), geom, w, a_zp)
    }

    fn build(
        kernels: &Kernels,
        algo: ConvAlgo,
        dw_uk: Option<&'static DwConvUkernel>,
        geom: &ConvGeometry,
        w: &ConvWeights<'_>,
        a_zp: u8,
    ) -> Result<PackedConv, PackError> {
        geom.validate().map_err(PackError::Shape)?;
        let (m, kpo) = (geom.c_out, geom.k_per_out());
        if w.data.len() != m * kpo {
            return Err(PackError::Shape(format!(
                "conv weights hold {} values, M·(C/group)·KH·KW = {}",
                w.data.len(),
                m * kpo
            )));
        }
        if w.zp.len() != 1 && w.zp.len() != m {
            return Err(PackError::Shape(format!(
                "{} weight zero points for M = {m}",
                w.zp.len()
            )));
        }
        if w.bias.is_some_and(|b| b.len() != m) {
            return Err(PackError::Shape(format!("bias: expected M = {m} values")));
        }
        if !PackedConv::algos(kernels, geom).contains(&algo) {
            return Err(PackError::Shape(format!(
                "{algo:?} does not apply to {geom:?}"
            )));
        }
        let mut packed = PackedConv {
            geom: *geom,
            algo,
            gemm: Vec::new(),
            dw: None,
        };
        if algo == ConvAlgo::Depthwise {
            let taps = geom.kernel[0] * geom.kernel[1];
            let uk = dw_uk.unwrap_or_else(|| PackedConv::dw_ukernels(kernels, geom)[0]);
            let pd = PackedDw::new(uk.layout, w.data, geom.c_in, taps, w.zp, w.bias, a_zp);
            packed.dw = Some((uk, pd));
            return Ok(packed);
        }
        // GEMM paths: B of group g is N×K (trans_b) with column k = (ky·KW + kx)·Cg + ci,
        // matching the im2col row order (and, for 1×1, the input channels).
        let [kh, kw] = geom.kernel;
        let (cg, mg) = (geom.cg_in(), geom.cg_out());
        let k = kpo;
        let mut b = vec![0i8; mg * k];
        for g in 0..geom.group {
            for j in 0..mg {
                let oc = g * mg + j;
                for ci in 0..cg {
                    for t in 0..kh * kw {
                        b[j * k + t * cg + ci] = w.data[(oc * cg + ci) * kh * kw + t];
                    }
                }
            }
            let zp = if w.zp.len() == 1 {
                w.zp
            } else {
                &w.zp[g * mg..(g + 1) * mg]
            };
            let qw = QWeights {
                data: &b,
                k,
                n: mg,
                trans_b: true,
                zp,
                bias: w.bias.map(|bb| &bb[g * mg..(g + 1) * mg]),
            };
            packed.gemm.push(PackedB::for_kernels(kernels, &qw, a_zp)?);
        }
        if algo == ConvAlgo::Indirect
            && packed
                .gemm
                .iter()
                .any(|pb| !pb.ukernel().indirect || pb.b_zp_padded().is_some())
        {
            // The weights went to a kernel that needs packed or contiguous A (wide weights
            // on AVX2), or need row sums: same packing, im2col instead.
            packed.algo = ConvAlgo::Im2col;
        }
        Ok(packed)
    }

    pub fn geometry(&self) -> &ConvGeometry {
        &self.geom
    }

    pub fn algo(&self) -> ConvAlgo {
        self.algo
    }

    /// Name of the micro-kernel that runs (the GEMM's or the depthwise one).
    pub fn ukernel_name(&self) -> &'static str {
        match &self.dw {
            Some((uk, _)) => uk.name,
            None => self.gemm[0].ukernel().name,
        }
    }

    /// Numerics of the micro-kernel that runs.
    pub fn numerics(&self) -> Numerics {
        match &self.dw {
            Some((uk, _)) => uk.numerics,
            None => self.gemm[0].ukernel().numerics,
        }
    }

    /// NHWC output shape `[N, OH, OW, M]` for an `N×H×W` input (`None` if the kernel does not
    /// fit the padded input).
    pub fn output_shape(&self, n: usize, h: usize, w: usize) -> Option<[usize; 4]> {
        let (oh, ow) = self.geom.out_hw(h, w)?;
        Some([n, oh, ow, self.geom.c_out])
    }

    /// Runs the conv on NHWC `input` (`n·h·w·C` u8, zero point `a_zp`) into NHWC `out`
    /// (`N·OH·OW·M` elements, type matching `stage`; per-channel stage parameters have `M`
    /// values).
    ///
    /// # Panics
    /// On a too-short input or output, an output type that does not match the stage, an
    /// invalid stage (as [`qgemm`]), or a kernel larger than the padded input.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        input: &[u8],
        n: usize,
        h: usize,
        w: usize,
        a_zp: u8,
        stage: OutputStage<'_>,
        mut out: QGemmOutput<'_>,
        scratch: &mut ConvScratch,
    ) {
        let g = &self.geom;
        let (oh, ow) = g
            .out_hw(h, w)
            .expect("conv kernel larger than the padded input");
        let (c, m) = (g.c_in, g.c_out);
        assert!(input.len() >= n * h * w * c, "input shorter than N·H·W·C");
        assert!(
            out_len(&out) >= n * oh * ow * m,
            "output shorter than N·OH·OW·M"
        );
        if n == 0 {
            return;
        }
        match self.algo {
            ConvAlgo::Direct1x1 => {
                let (cg, mg) = (g.cg_in(), g.cg_out());
                for (grp, pb) in self.gemm.iter().enumerate() {
                    qgemm(
                        &input[grp * cg..],
                        c,
                        a_zp,
                        n * h * w,
                        pb,
                        group_stage(&stage, grp * mg, mg),
                        sub_out(&mut out, grp * mg),
                        m,
                    );
                }
            }
            ConvAlgo::Im2col => {
                let (mg, k) = (g.cg_out(), g.k_per_out());
                let pixels = oh * ow;
                let chunk = (IM2COL_CHUNK_BYTES / k / 12 * 12).clamp(12, (n * pixels).max(12));
                let buf = &mut scratch.im2col;
                if buf.len() < chunk * k {
                    buf.resize(chunk * k, 0);
                }
                // Chunks run over the output pixels of all images together (the NHWC output
                // rows of consecutive images are consecutive), so small images share one
                // GEMM call instead of paying its fixed cost once per image.
                let total = n * pixels;
                for r0 in (0..total).step_by(chunk) {
                    let rows = chunk.min(total - r0);
                    for (grp, pb) in self.gemm.iter().enumerate() {
                        let mut done = 0;
                        while done < rows {
                            let (img, m0) = ((r0 + done) / pixels, (r0 + done) % pixels);
                            let part = (pixels - m0).min(rows - done);
                            let img_in = &input[img * h * w * c..(img + 1) * h * w * c];
                            im2col_rows(
                                g,
                                img_in,
                                h,
                                w,
                                ow,
                                grp,
                                m0,
                                part,
                                a_zp,
                                &mut buf[done * k..],
                                &mut scratch.padded,
                            );
                            done += part;
                        }
                        qgemm(
                            buf,
                            k,
                            a_zp,
                            rows,
                            pb,
                            group_stage(&stage, grp * mg, mg),
                            sub_out(&mut out, r0 * m + grp * mg),
                            m,
                        );
                    }
                }
            }
            ConvAlgo::Indirect => {
                let [kh, kw] = g.kernel;
                let [sh, sw] = g.strides;
                let (ph, pw) = ((oh - 1) * sh + kh, (ow - 1) * sw + kw);
                let img_p = ph * pw * c;
                // Images in groups whose padded copies fit the L2 budget (small images share
                // one GEMM call; a large one gets its own, so memory stays about one image).
                let per = (IM2COL_CHUNK_BYTES / img_p.max(1)).clamp(1, n);
                let mut rows: Vec<*const u8> = Vec::with_capacity(per * oh * ow);
                for i0 in (0..n).step_by(per) {
                    let imgs = per.min(n - i0);
                    let padded = &mut scratch.padded;
                    if padded.len() < imgs * img_p {
                        padded.resize(imgs * img_p, 0);
                    }
                    for (i, dst) in padded[..imgs * img_p].chunks_exact_mut(img_p).enumerate() {
                        let img = i0 + i;
                        let src = &input[img * h * w * c..(img + 1) * h * w * c];
                        pad_image(src, h, w, c, g.pads[0], g.pads[1], 0, pw, a_zp, dst);
                    }
                    // Row pointers: each output pixel's window, top-left; run `ky` is `ky`
                    // padded rows further.
                    let base = padded.as_ptr();
                    rows.clear();
                    for i in 0..imgs {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let off = i * img_p + (oy * sh * pw + ox * sw) * c;
                                rows.push(base.wrapping_add(off));
                            }
                        }
                    }
                    let part = sub_out(&mut out, i0 * oh * ow * m);
                    // SAFETY: pointer `(i, oy, ox)` plus run `ky < KH` of `KW·C` bytes stays
                    // in padded image `i` (rows `oy·sh + ky < ph`, columns `ox·sw + KW ≤
                    // pw`), which outlives the call and is not written during it.
                    unsafe {
                        qgemm_indirect(&rows, kh, pw * c, a_zp, &self.gemm[0], stage, part, m);
                    }
                }
            }
            ConvAlgo::Depthwise => {
                let (uk, pd) = self.dw.as_ref().expect("depthwise weights");
                self.run_dw(uk, pd, input, n, h, w, a_zp, stage, out, scratch);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_dw(
        &self,
        uk: &'static DwConvUkernel,
        pd: &PackedDw,
        input: &[u8],
        n: usize,
        h: usize,
        w: usize,
        a_zp: u8,
        stage: OutputStage<'_>,
        mut out: QGemmOutput<'_>,
        scratch: &mut ConvScratch,
    ) {
        let g = &self.geom;
        let (oh, ow) = g.out_hw(h, w).expect("checked by run");
        let c = g.c_in;
        let cp = pd.padded_channels();
        let layout = pd.layout();
        debug_assert_eq!(layout, uk.layout);
        debug_assert_eq!(cp, c.div_ceil(layout.block()) * layout.block());
        let mut params = StageParams::new(&stage, &out, c, cp);
        params.permute_to_lanes(layout, c);
        let refolded;
        let bias = if a_zp == pd.a_zp() {
            pd.col_bias()
        } else {
            refolded = pd.col_bias_for(a_zp);
            &refolded[..]
        };
        scratch.zero.clear();
        scratch.zero.resize(c, a_zp);
        let zero = scratch.zero.as_ptr();
        let [kh, kw] = g.kernel;
        let [sh, sw] = g.strides;
        let [dh, dw] = g.dilations;
        let (pt, pl) = (g.pads[0], g.pads[1]);
        let taps = kh * kw;
        debug_assert_eq!(taps, uk.taps());
        let mut ind: Vec<*const u8> = vec![zero; ow * taps];
        // Byte offsets of the taps from the window's top-left pixel, and the output columns
        // whose whole window is inside the input horizontally (their pointers are
        // `base + toff[t]`, no bounds logic).
        let toff: Vec<usize> = (0..taps)
            .map(|t| ((t / kw) * dh * w + (t % kw) * dw) * c)
            .collect();
        let ox_lo = pl.div_ceil(sw).min(ow);
        let ox_hi = ((w + pl).checked_sub((kw - 1) * dw + 1))
            .map_or(0, |last| last / sw + 1)
            .clamp(ox_lo, ow);
        let out_ptr = out_base(&mut out);
        let run = |pixels: usize, taps: *const *const u8, tap_step: usize, off: usize| {
            let tile = DwConvTile {
                pixels,
                taps,
                tap_step,
                channels: c,
                weights: pd.weights.as_ptr(),
                bias: bias.as_ptr(),
                out: params.tile_output(out_ptr, off),
                out_stride: c,
                _lifetime: PhantomData,
            };
            // SAFETY: the kernel's ISA is available (it came from an available kernel set);
            // every tap pointer (with `tap_step`, of every pixel of the run: their windows
            // lie inside the image) addresses `c` bytes of the input image or of the `a_zp`
            // row; weights/bias/parameters are padded to whole blocks of the layout; the
            // output holds `pixels` pixels × `c` at `off` (asserted length N·OH·OW·M, M = C).
            unsafe { (uk.run)(&tile) };
        };
        for img in 0..n {
            let img_in = &input[img * h * w * c..(img + 1) * h * w * c];
            for oy in 0..oh {
                let iy0 = (oy * sh).wrapping_sub(pt);
                let row_inside = iy0 < h && iy0 + (kh - 1) * dh < h;
                // Columns whose windows are all inside: one run with a pointer step.
                let (lo, hi) = if row_inside { (ox_lo, ox_hi) } else { (ow, ow) };
                for ox in (0..lo).chain(hi..ow) {
                    let p = &mut ind[ox * taps..(ox + 1) * taps];
                    for ky in 0..kh {
                        let iy = (oy * sh + ky * dh).wrapping_sub(pt);
                        for kx in 0..kw {
                            let ix = (ox * sw + kx * dw).wrapping_sub(pl);
                            p[ky * kw + kx] = if iy < h && ix < w {
                                img_in[(iy * w + ix) * c..].as_ptr()
                            } else {
                                zero
                            };
                        }
                    }
                }
                let off = ((img * oh + oy) * ow) * c;
                if lo > 0 {
                    run(lo, ind.as_ptr(), 0, off);
                }
                if lo < hi {
                    let base = img_in[(iy0 * w + lo * sw - pl) * c..].as_ptr();
                    let first = &mut ind[lo * taps..(lo + 1) * taps];
                    for (q, &o) in first.iter_mut().zip(&toff) {
                        *q = base.wrapping_add(o);
                    }
                    run(hi - lo, first.as_ptr(), sw * c, off + lo * c);
                }
                if hi < ow {
                    run(ow - hi, ind[hi * taps..].as_ptr(), 0, off + hi * c);
                }
            }
        }
    }
}

/// The depthwise micro-kernels of `kernels` for `geom` in preference order (none unless it is
/// a depthwise conv with a shipped kernel size).
fn dw_ukernels<'k>(
    kernels: &'k Kernels,
    geom: &ConvGeometry,
) -> impl Iterator<Item = &'static DwConvUkernel> + 'k {
    let dw = geom.group == geom.c_in && geom.c_out == geom.c_in;
    let kernel = geom.kernel;
    kernels
        .dwconv_u8s8
        .iter()
        .copied()
        .filter(move |uk| dw && [usize::from(uk.kernel[0]), usize::from(uk.kernel[1])] == kernel)
}

fn out_len(out: &QGemmOutput<'_>) -> usize {
    match out {
        QGemmOutput::I32(s) => s.len(),
        QGemmOutput::U8(s) => s.len(),
        QGemmOutput::I8(s) => s.len(),
        QGemmOutput::F32(s) => s.len(),
    }
}

/// The output from element `off` on.
fn sub_out<'b>(out: &'b mut QGemmOutput<'_>, off: usize) -> QGemmOutput<'b> {
    match out {
        QGemmOutput::I32(s) => QGemmOutput::I32(&mut s[off..]),
        QGemmOutput::U8(s) => QGemmOutput::U8(&mut s[off..]),
        QGemmOutput::I8(s) => QGemmOutput::I8(&mut s[off..]),
        QGemmOutput::F32(s) => QGemmOutput::F32(&mut s[off..]),
    }
}

/// The stage restricted to output channels `c0..c0 + len` (per-tensor values stay as they are).
fn group_stage<'a>(stage: &OutputStage<'a>, c0: usize, len: usize) -> OutputStage<'a> {
    let pick = |v: &'a [f32]| if v.len() == 1 { v } else { &v[c0..c0 + len] };
    match *stage {
        OutputStage::Raw => OutputStage::Raw,
        OutputStage::Requantize {
            mult,
            zp,
            qmin,
            qmax,
        } => OutputStage::Requantize {
            mult: pick(mult),
            zp,
            qmin,
            qmax,
        },
        OutputStage::Dequantize { scale, bias } => OutputStage::Dequantize {
            scale: pick(scale),
            bias: bias.map(|b| &b[c0..c0 + len]),
        },
    }
}

/// Raw pointer to the output's first element.
fn out_base(out: &mut QGemmOutput<'_>) -> *mut u8 {
    match out {
        QGemmOutput::I32(s) => s.as_mut_ptr().cast(),
        QGemmOutput::U8(s) => s.as_mut_ptr(),
        QGemmOutput::I8(s) => s.as_mut_ptr().cast(),
        QGemmOutput::F32(s) => s.as_mut_ptr().cast(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    I32,
    U8,
    I8,
    F32,
}

/// An output stage checked against the output type, with per-channel parameters padded to
/// whole blocks (GEMM panels or depthwise blocks).
struct StageParams {
    kind: Kind,
    p1: Vec<f32>,
    p2: Vec<f32>,
    zp: i32,
    qmin: i32,
    qmax: i32,
}

fn padded(values: &[f32], n: usize, n_padded: usize, what: &str) -> Vec<f32> {
    assert!(
        values.len() == 1 || values.len() == n,
        "{what}: expected 1 or M = {n} values, got {}",
        values.len()
    );
    let mut v = vec![0f32; n_padded];
    if values.len() == 1 {
        v[..n].fill(values[0]);
    } else {
        v[..n].copy_from_slice(values);
    }
    v
}

impl StageParams {
    fn new(stage: &OutputStage<'_>, out: &QGemmOutput<'_>, n: usize, n_padded: usize) -> Self {
        let mut s = StageParams {
            kind: Kind::I32,
            p1: Vec::new(),
            p2: Vec::new(),
            zp: 0,
            qmin: 0,
            qmax: 0,
        };
        match (stage, out) {
            (OutputStage::Raw, QGemmOutput::I32(_)) => {}
            (
                OutputStage::Requantize {
                    mult,
                    zp,
                    qmin,
                    qmax,
                },
                QGemmOutput::U8(_) | QGemmOutput::I8(_),
            ) => {
                let signed = matches!(out, QGemmOutput::I8(_));
                let (tmin, tmax) = if signed { (-128, 127) } else { (0, 255) };
                assert!(
                    tmin <= *qmin && qmin <= qmax && *qmax <= tmax,
                    "qmin/qmax {qmin}..={qmax} outside the output type {tmin}..={tmax}"
                );
                assert!(
                    (tmin..=tmax).contains(zp),
                    "zero point {zp} outside the output type"
                );
                s.kind = if signed { Kind::I8 } else { Kind::U8 };
                (s.zp, s.qmin, s.qmax) = (*zp, *qmin, *qmax);
                s.p1 = padded(mult, n, n_padded, "mult");
            }
            (OutputStage::Dequantize { scale, bias }, QGemmOutput::F32(_)) => {
                s.kind = Kind::F32;
                s.p1 = padded(scale, n, n_padded, "scale");
                s.p2 = match bias {
                    Some(b) => {
                        assert_eq!(b.len(), n, "f32 bias: M values");
                        padded(b, n, n_padded, "bias")
                    }
                    None => vec![0f32; n_padded],
                };
            }
            _ => panic!("output buffer type does not match the output stage"),
        }
        s
    }

    /// Permutes the per-channel parameters of `channels` channels into the depthwise lane
    /// order of `layout` ([`DwLayout::channel_at`]).
    fn permute_to_lanes(&mut self, layout: DwLayout, channels: usize) {
        for v in [&mut self.p1, &mut self.p2] {
            if !v.is_empty() {
                *v = (0..v.len())
                    .map(|pos| layout.channel_at(pos, channels).map_or(0.0, |c| v[c]))
                    .collect();
            }
        }
    }

    /// The tile output at element offset `off` of the buffer at `base`.
    fn tile_output(&self, base: *mut u8, off: usize) -> TileOutput {
        match self.kind {
            Kind::I32 => TileOutput::I32 {
                c: base.cast::<i32>().wrapping_add(off),
            },
            Kind::U8 => TileOutput::U8 {
                c: base.wrapping_add(off),
                mult: self.p1.as_ptr(),
                zp: self.zp,
                qmin: self.qmin,
                qmax: self.qmax,
            },
            Kind::I8 => TileOutput::I8 {
                c: base.cast::<i8>().wrapping_add(off),
                mult: self.p1.as_ptr(),
                zp: self.zp,
                qmin: self.qmin,
                qmax: self.qmax,
            },
            Kind::F32 => TileOutput::F32 {
                c: base.cast::<f32>().wrapping_add(off),
                scale: self.p1.as_ptr(),
                bias: self.p2.as_ptr(),
            },
        }
    }
}
