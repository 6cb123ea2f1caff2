//! Reference quantized 2-D convolution (the integer part of ONNX `QLinearConv` /
//! `ConvInteger`), u8 activations × s8 weights → i32 accumulators, plus the NCHW ↔ NHWC layout
//! helpers.
//!
//! # Layouts
//! - ONNX tensors are **NCHW** (`X: [N, C, H, W]`, `Y: [N, M, OH, OW]`). The kernels work on
//!   **NHWC** (channels last: `X: [N, H, W, C]`, `Y: [N, OH, OW, M]`), where one pixel's channels
//!   are contiguous. That makes a 1×1 stride-1 conv a plain GEMM over the input with no copy, an
//!   im2col row a concatenation of whole pixel slices, and depthwise vectorisable over channels.
//!   The executor converts at the graph boundary with [`nchw_to_nhwc`] / [`nhwc_to_nchw`] (or
//!   keeps activations NHWC between conv-like ops).
//! - Weights stay in the ONNX layout `W: [M, C/group, KH, KW]` everywhere; packing reorders them.
//!
//! # Semantics (ONNX `Conv`, 2-D)
//! `Y[n, oy, ox, m] = bias[m] + Σ_{ci, ky, kx} (X[n, iy, ix, g·Cg + ci] − a_zp)·(W[m, ci, ky, kx] − w_zp[m])`
//! with `g = m / (M/group)`, `Cg = C/group`, `iy = oy·stride_h − pad_top + ky·dil_h`,
//! `ix = ox·stride_w − pad_left + kx·dil_w`. Taps outside the input contribute nothing (they
//! are padding with the value `a_zp`, i.e. real zero). `OH = ⌊(H + pad_top + pad_bottom −
//! dil_h·(KH−1) − 1) / stride_h⌋ + 1`, likewise `OW`. Arithmetic is wrapping i32, like
//! [`super::qgemm_u8s8`].

/// Shape attributes of a 2-D convolution (ONNX `Conv` attributes plus channel counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels `C`.
    pub c_in: usize,
    /// Output channels `M`.
    pub c_out: usize,
    /// ONNX `group`; divides both `c_in` and `c_out`.
    pub group: usize,
    /// `[KH, KW]`.
    pub kernel: [usize; 2],
    /// `[stride_h, stride_w]`, ≥ 1.
    pub strides: [usize; 2],
    /// ONNX `pads` order: `[top, left, bottom, right]` (x1_begin, x2_begin, x1_end, x2_end).
    pub pads: [usize; 4],
    /// `[dil_h, dil_w]`, ≥ 1.
    pub dilations: [usize; 2],
}

impl ConvGeometry {
    /// A conv with unit strides/dilations and no padding.
    pub fn new(c_in: usize, c_out: usize, kh: usize, kw: usize) -> ConvGeometry {
        ConvGeometry {
            c_in,
            c_out,
            group: 1,
            kernel: [kh, kw],
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
        }
    }

    /// Input channels per group.
    pub fn cg_in(&self) -> usize {
        self.c_in / self.group
    }

    /// Output channels per group.
    pub fn cg_out(&self) -> usize {
        self.c_out / self.group
    }

    /// Weights per output channel: `Cg·KH·KW` (the GEMM depth K of one group).
    pub fn k_per_out(&self) -> usize {
        self.cg_in() * self.kernel[0] * self.kernel[1]
    }

    /// Checks the attribute invariants.
    pub fn validate(&self) -> Result<(), String> {
        let [kh, kw] = self.kernel;
        if self.group == 0
            || !self.c_in.is_multiple_of(self.group)
            || !self.c_out.is_multiple_of(self.group)
        {
            return Err(format!(
                "group {} must divide C = {} and M = {}",
                self.group, self.c_in, self.c_out
            ));
        }
        if self.c_in == 0 || self.c_out == 0 || kh == 0 || kw == 0 {
            return Err("empty channels or kernel".into());
        }
        if self.strides.contains(&0) || self.dilations.contains(&0) {
            return Err("strides and dilations must be ≥ 1".into());
        }
        Ok(())
    }

    /// `(OH, OW)` for an `H×W` input, or `None` if the (padded) input is smaller than the
    /// dilated kernel.
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let oh = out_dim(
            h,
            self.kernel[0],
            self.strides[0],
            self.pads[0],
            self.pads[2],
            self.dilations[0],
        )?;
        let ow = out_dim(
            w,
            self.kernel[1],
            self.strides[1],
            self.pads[1],
            self.pads[3],
            self.dilations[1],
        )?;
        Some((oh, ow))
    }
}

/// ONNX output size of one spatial axis (`None` when the dilated kernel exceeds the padded
/// input).
pub fn out_dim(
    input: usize,
    kernel: usize,
    stride: usize,
    pad_begin: usize,
    pad_end: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    let padded = input + pad_begin + pad_end;
    (padded >= span).then(|| (padded - span) / stride + 1)
}

/// One convolution problem for the reference.
#[derive(Clone, Copy, Debug)]
pub struct ConvProblem<'a> {
    pub geom: ConvGeometry,
    /// Batch `N`.
    pub n: usize,
    /// Input height `H` and width `W`.
    pub h: usize,
    pub w: usize,
    /// Input activations, `N·H·W·C` (NHWC for [`conv_u8s8_nhwc`], NCHW for [`conv_u8s8_nchw`]).
    pub input: &'a [u8],
    pub a_zp: u8,
    /// ONNX layout `[M, C/group, KH, KW]`.
    pub weights: &'a [i8],
    /// 1 value (per tensor) or `M` values (per output channel).
    pub w_zp: &'a [i8],
    /// Optional i32 bias, `M` values.
    pub bias: Option<&'a [i32]>,
}

impl ConvProblem<'_> {
    /// `(OH, OW)`; panics on an invalid problem.
    pub fn out_hw(&self) -> (usize, usize) {
        self.geom
            .out_hw(self.h, self.w)
            .expect("kernel larger than padded input")
    }

    /// Output elements `N·OH·OW·M`.
    pub fn out_len(&self) -> usize {
        let (oh, ow) = self.out_hw();
        self.n * oh * ow * self.geom.c_out
    }

    fn check(&self) {
        let g = &self.geom;
        g.validate().expect("invalid conv geometry");
        assert_eq!(
            self.input.len(),
            self.n * self.h * self.w * g.c_in,
            "input length"
        );
        assert_eq!(
            self.weights.len(),
            g.c_out * g.k_per_out(),
            "weights length M·(C/group)·KH·KW"
        );
        assert!(
            self.w_zp.len() == 1 || self.w_zp.len() == g.c_out,
            "w_zp: 1 or M values"
        );
        if let Some(b) = self.bias {
            assert_eq!(b.len(), g.c_out, "bias: M values");
        }
    }

    /// The accumulator of output `(n, oy, ox, m)`; `x_at(n, iy, ix, c)` reads the input.
    fn acc(
        &self,
        n: usize,
        oy: usize,
        ox: usize,
        m: usize,
        x_at: impl Fn(usize, usize, usize, usize) -> u8,
    ) -> i32 {
        let g = &self.geom;
        let [kh, kw] = g.kernel;
        let (cg, grp) = (g.cg_in(), m / g.cg_out());
        let zw = i32::from(if self.w_zp.len() == 1 {
            self.w_zp[0]
        } else {
            self.w_zp[m]
        });
        let mut acc = self.bias.map_or(0, |b| b[m]);
        for ci in 0..cg {
            for ky in 0..kh {
                let iy = (oy * g.strides[0] + ky * g.dilations[0]) as isize - g.pads[0] as isize;
                if iy < 0 || iy >= self.h as isize {
                    continue;
                }
                for kx in 0..kw {
                    let ix =
                        (ox * g.strides[1] + kx * g.dilations[1]) as isize - g.pads[1] as isize;
                    if ix < 0 || ix >= self.w as isize {
                        continue;
                    }
                    let a = i32::from(x_at(n, iy as usize, ix as usize, grp * cg + ci))
                        - i32::from(self.a_zp);
                    let w = i32::from(self.weights[((m * cg + ci) * kh + ky) * kw + kx]) - zw;
                    acc = acc.wrapping_add(a * w);
                }
            }
        }
        acc
    }
}

/// Reference conv on NHWC input; writes `N·OH·OW·M` i32 accumulators, NHWC.
pub fn conv_u8s8_nhwc(p: &ConvProblem<'_>, out: &mut [i32]) {
    p.check();
    let (oh, ow) = p.out_hw();
    let (c, m_all) = (p.geom.c_in, p.geom.c_out);
    assert_eq!(out.len(), p.out_len(), "output length");
    let x_at =
        |n: usize, y: usize, x: usize, ch: usize| p.input[((n * p.h + y) * p.w + x) * c + ch];
    for n in 0..p.n {
        for oy in 0..oh {
            for ox in 0..ow {
                for m in 0..m_all {
                    out[((n * oh + oy) * ow + ox) * m_all + m] = p.acc(n, oy, ox, m, x_at);
                }
            }
        }
    }
}

/// Reference conv on NCHW input (the ONNX layout); writes NCHW i32 accumulators. Used to check
/// that NHWC kernels plus the layout helpers implement the ONNX operator.
pub fn conv_u8s8_nchw(p: &ConvProblem<'_>, out: &mut [i32]) {
    p.check();
    let (oh, ow) = p.out_hw();
    let (c, m_all) = (p.geom.c_in, p.geom.c_out);
    assert_eq!(out.len(), p.out_len(), "output length");
    let x_at =
        |n: usize, y: usize, x: usize, ch: usize| p.input[((n * c + ch) * p.h + y) * p.w + x];
    for n in 0..p.n {
        for m in 0..m_all {
            for oy in 0..oh {
                for ox in 0..ow {
                    out[((n * m_all + m) * oh + oy) * ow + ox] = p.acc(n, oy, ox, m, x_at);
                }
            }
        }
    }
}

/// `[N, C, H, W]` → `[N, H, W, C]`.
pub fn nchw_to_nhwc<T: Copy>(x: &[T], n: usize, c: usize, h: usize, w: usize) -> Vec<T> {
    assert_eq!(x.len(), n * c * h * w);
    let mut y = Vec::with_capacity(x.len());
    for b in 0..n {
        for yy in 0..h {
            for xx in 0..w {
                y.extend((0..c).map(|ch| x[((b * c + ch) * h + yy) * w + xx]));
            }
        }
    }
    y
}

/// `[N, H, W, C]` → `[N, C, H, W]`.
pub fn nhwc_to_nchw<T: Copy>(x: &[T], n: usize, c: usize, h: usize, w: usize) -> Vec<T> {
    assert_eq!(x.len(), n * c * h * w);
    let mut y = Vec::with_capacity(x.len());
    for b in 0..n {
        for ch in 0..c {
            for yy in 0..h {
                y.extend((0..w).map(|xx| x[((b * h + yy) * w + xx) * c + ch]));
            }
        }
    }
    y
}
