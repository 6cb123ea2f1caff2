//! The shared tester of the qnnpack-style family (QNNPACK `GemmMicrokernelTester` style): one
//! builder, [`Q8Tester`], that generates a case (shape, strides, zero points, data pattern,
//! scales, rounding, clamp), runs it through one micro-kernel via the real drivers (packing,
//! indirection) and asserts a **bit-exact** match with [`crate::kernels::reference`] for
//! `Numerics::Exact` kernels (≤ 1 LSB for `Approx`), and that nothing outside the output window
//! (row/pixel stride gaps, trailing guard) is written.

use crate::kernels::reference::q8conv::{q8conv as ref_conv, Nhwc, Window2d};
use crate::kernels::reference::q8dwconv::{q8dwconv as ref_dwconv, Q8DwWeights};
use crate::kernels::reference::q8gemm::{q8gemm as ref_gemm, Q8Weights};
use crate::kernels::reference::q8pool::{q8avgpool as ref_avgpool, Q8PoolQuant};
use crate::kernels::reference::q8vadd::{q8vadd as ref_vadd, Q8AddParams};
use crate::kernels::reference::requant_fixedpoint::{Q8Output, Requant, Rounding};
use crate::kernels::testing::XorShift;
use crate::kernels::Numerics;

use super::indirection::{ConvIndirection, DwIndirection};
use super::pack::{PackedQ8Dw, PackedQ8Gemm};
use super::ukernel::{Q8AddUkernel, Q8DwUkernel, Q8GemmUkernel, Q8PoolUkernel};

/// Input data pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data {
    /// Full-range random activations and weights.
    Random,
    /// Activations all 255, weights all 0 (extreme |a − a_zp|·|w − w_zp| with zp 0/255).
    Max255x0,
    /// Activations all 255, weights all 255.
    Max255x255,
    /// Activations alternate 255/0, weights alternate 0/255 (by position).
    Alternating,
    /// Random values within ±2 of the zero points (small accumulators; exposes off-by-one
    /// accumulator errors through scales near 1).
    NearZeroPoints,
    /// Activations random from {0, 1, 254, 255}, weights random from {0, 1, 63, 64, 65, 127,
    /// 128, 129, 191, 192, 193, 254, 255} (with zero point 128: the s8 extremes −128/127 next
    /// to each other and the ±64 edges of the `vpmaddubsw` pair bounds).
    Extremes,
}

/// Weight zero point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WZp {
    PerTensor(u8),
    /// Random per output channel (includes 0, 128 and 255).
    PerChannel,
}

/// Output scale choice.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    /// Chosen from the problem size so outputs spread over the u8 range; `per_channel` varies
    /// it ×[0.25, 1.75] per channel.
    Auto { per_channel: bool },
    /// This scale (per tensor), e.g. 0.5 (exact ties) or 3.0 (≥ 1, the `limit` path).
    Fixed(f32),
}

/// Sentinel around output windows.
const SENTINEL: u8 = 0xA5;
const GUARD: usize = 37;

/// One test case. Build with [`Q8Tester::new`] and setters; run with `test_*`.
#[derive(Clone, Debug)]
pub struct Q8Tester {
    // GEMM shape.
    m: usize,
    n: usize,
    k: usize,
    lda: Option<usize>,
    ldc: Option<usize>,
    // Window ops (conv, depthwise, pool).
    window: Window2d,
    channels: usize,
    out_channels: usize,
    x_stride: Option<usize>,
    y_stride: Option<usize>,
    // Quantization.
    a_zp: u8,
    w_zp: WZp,
    bias: bool,
    scale: Scale,
    out: Q8Output,
    count_include_pad: bool,
    data: Data,
    seed: u64,
}

impl Default for Q8Tester {
    fn default() -> Self {
        Q8Tester::new()
    }
}

impl Q8Tester {
    pub fn new() -> Q8Tester {
        Q8Tester {
            m: 1,
            n: 1,
            k: 1,
            lda: None,
            ldc: None,
            window: Window2d::square(3, 3, 3, 3, 1, 0),
            channels: 1,
            out_channels: 1,
            x_stride: None,
            y_stride: None,
            a_zp: 0,
            w_zp: WZp::PerTensor(0),
            bias: false,
            scale: Scale::Auto { per_channel: false },
            out: Q8Output::new(128),
            count_include_pad: false,
            data: Data::Random,
            seed: 1,
        }
    }

    /// GEMM shape.
    pub fn mnk(mut self, m: usize, n: usize, k: usize) -> Self {
        (self.m, self.n, self.k) = (m, n, k);
        self
    }

    /// Row stride of A (default k).
    pub fn lda(mut self, v: usize) -> Self {
        self.lda = Some(v);
        self
    }

    /// Row stride of C (default n).
    pub fn ldc(mut self, v: usize) -> Self {
        self.ldc = Some(v);
        self
    }

    /// Window of conv / depthwise / pool.
    pub fn window(mut self, w: Window2d) -> Self {
        self.window = w;
        self
    }

    /// Input channels (also depthwise/pool channels).
    pub fn channels(mut self, c: usize) -> Self {
        self.channels = c;
        self
    }

    /// Conv output channels.
    pub fn out_channels(mut self, c: usize) -> Self {
        self.out_channels = c;
        self
    }

    /// Input pixel stride (default = channels).
    pub fn x_stride(mut self, s: usize) -> Self {
        self.x_stride = Some(s);
        self
    }

    /// Output pixel stride (default = output channels).
    pub fn y_stride(mut self, s: usize) -> Self {
        self.y_stride = Some(s);
        self
    }

    pub fn a_zp(mut self, z: u8) -> Self {
        self.a_zp = z;
        self
    }

    pub fn w_zp(mut self, z: WZp) -> Self {
        self.w_zp = z;
        self
    }

    pub fn bias(mut self, b: bool) -> Self {
        self.bias = b;
        self
    }

    pub fn scale(mut self, s: Scale) -> Self {
        self.scale = s;
        self
    }

    pub fn out(mut self, o: Q8Output) -> Self {
        self.out = o;
        self
    }

    pub fn rounding(mut self, r: Rounding) -> Self {
        self.out.rounding = r;
        self
    }

    pub fn count_include_pad(mut self, v: bool) -> Self {
        self.count_include_pad = v;
        self
    }

    pub fn data(mut self, d: Data) -> Self {
        self.data = d;
        self
    }

    pub fn seed(mut self, s: u64) -> Self {
        self.seed = s;
        self
    }

    fn rng(&self, salt: u64) -> XorShift {
        XorShift::new(
            self.seed
                ^ salt.wrapping_mul(0x1000_0001)
                ^ ((self.m as u64) << 44 ^ (self.n as u64) << 28 ^ (self.k as u64) << 12)
                ^ (self.channels as u64) << 20,
        )
    }

    /// Activation byte `i` of a buffer (pattern applied only to meaningful positions; padding
    /// bytes stay random).
    fn act(&self, rng: &mut XorShift, i: usize) -> u8 {
        match self.data {
            Data::Random => rng.u8(),
            Data::Max255x0 | Data::Max255x255 => 255,
            Data::Alternating => {
                if i.is_multiple_of(2) {
                    255
                } else {
                    0
                }
            }
            Data::NearZeroPoints => {
                (i32::from(self.a_zp) + rng.range_i32(-2, 2)).clamp(0, 255) as u8
            }
            Data::Extremes => [0, 1, 254, 255][(rng.next_u64() % 4) as usize],
        }
    }

    fn wt(&self, rng: &mut XorShift, i: usize, zp: u8) -> u8 {
        match self.data {
            Data::Random => rng.u8(),
            Data::Max255x0 => 0,
            Data::Max255x255 => 255,
            Data::Alternating => {
                if i.is_multiple_of(2) {
                    0
                } else {
                    255
                }
            }
            Data::NearZeroPoints => (i32::from(zp) + rng.range_i32(-2, 2)).clamp(0, 255) as u8,
            Data::Extremes => {
                const W: [u8; 13] = [0, 1, 63, 64, 65, 127, 128, 129, 191, 192, 193, 254, 255];
                W[(rng.next_u64() % W.len() as u64) as usize]
            }
        }
    }

    fn w_zps(&self, rng: &mut XorShift, n: usize) -> Vec<u8> {
        match self.w_zp {
            WZp::PerTensor(z) => vec![z],
            WZp::PerChannel => (0..n)
                .map(|j| match j % 5 {
                    0 => 0,
                    1 => 128,
                    2 => 255,
                    _ => rng.u8(),
                })
                .collect(),
        }
    }

    /// Scales for `n` channels given the accumulator magnitude estimate `typical`.
    fn requants(&self, rng: &mut XorShift, n: usize, typical: f64) -> Vec<Requant> {
        match self.scale {
            Scale::Fixed(s) => vec![Requant::from_scale(s).expect("fixed scale")],
            Scale::Auto { per_channel } => {
                let base = 60.0 / typical.max(1.0);
                let mk = |f: f64| Requant::from_scale_f64((base * f).min(60_000.0)).unwrap();
                if per_channel {
                    (0..n)
                        .map(|_| mk(0.25 + 1.5 * f64::from(rng.f32())))
                        .collect()
                } else {
                    vec![mk(1.0)]
                }
            }
        }
    }

    /// Typical |acc| for depth `k`.
    fn typical(&self, k: usize) -> f64 {
        match self.data {
            Data::NearZeroPoints => 2.0 * (k as f64).sqrt(),
            _ => 5500.0 * (k as f64).sqrt(),
        }
    }

    fn check(
        &self,
        name: &str,
        numerics: Numerics,
        got: &[u8],
        want: &[u8],
        in_window: impl Fn(usize) -> bool,
    ) {
        let tol = match numerics {
            Numerics::Exact => 0,
            Numerics::Approx => 1,
        };
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            if in_window(i) {
                assert!(
                    (i32::from(g) - i32::from(w)).abs() <= tol,
                    "{name}: y[{i}] = {g}, want {w}: {self:?}"
                );
            } else {
                assert_eq!(
                    g, SENTINEL,
                    "{name}: write outside the window at {i}: {self:?}"
                );
            }
        }
    }

    /// GEMM `m×n×k` through `uk` (driver `q8gemm`).
    pub fn test_gemm(&self, uk: &'static Q8GemmUkernel) {
        let (m, n, k) = (self.m, self.n, self.k);
        let lda = self.lda.unwrap_or(k);
        let ldc = self.ldc.unwrap_or(n);
        let mut rng = self.rng(1);
        let a: Vec<u8> = (0..(m - 1) * lda + k)
            .map(|i| {
                if i % lda < k {
                    self.act(&mut rng, i % lda + i / lda)
                } else {
                    rng.u8()
                }
            })
            .collect();
        let zps = self.w_zps(&mut rng, n);
        let w: Vec<u8> = (0..n * k)
            .map(|i| self.wt(&mut rng, i, zps[if zps.len() == 1 { 0 } else { i / k }]))
            .collect();
        let bias: Option<Vec<i32>> = self
            .bias
            .then(|| (0..n).map(|_| rng.range_i32(-200_000, 200_000)).collect());
        let rq = self.requants(&mut rng, n, self.typical(k));
        let weights = Q8Weights {
            data: &w,
            n,
            k,
            zp: &zps,
            bias: bias.as_deref(),
            requant: &rq,
        };
        let len = (m - 1) * ldc + n + GUARD;
        let mut want = vec![SENTINEL; len];
        ref_gemm(&a, lda, self.a_zp, m, &weights, &self.out, &mut want, ldc);
        let packed = PackedQ8Gemm::new(uk, &weights, 1, self.a_zp);
        let mut got = vec![SENTINEL; len];
        super::ops::q8gemm(&a, lda, m, &packed, &self.out, &mut got, ldc);
        self.check(uk.name, uk.numerics, &got, &want, |i| {
            i / ldc < m && i % ldc < n
        });
    }

    fn input(&self, rng: &mut XorShift) -> (Vec<u8>, usize) {
        let g = &self.window;
        let xs = self.x_stride.unwrap_or(self.channels);
        let pixels = g.batch * g.in_h * g.in_w;
        let x: Vec<u8> = (0..(pixels - 1) * xs + self.channels)
            .map(|i| {
                if i % xs < self.channels {
                    self.act(rng, i % xs + i / xs)
                } else {
                    rng.u8()
                }
            })
            .collect();
        (x, xs)
    }

    /// Conv (groups = 1) through `uk` via the indirection buffer.
    pub fn test_conv(&self, uk: &'static Q8GemmUkernel) {
        let g = &self.window;
        let (ic, oc) = (self.channels, self.out_channels);
        let mut rng = self.rng(2);
        let (x, xs) = self.input(&mut rng);
        let k = g.taps() * ic;
        let zps = self.w_zps(&mut rng, oc);
        let w: Vec<u8> = (0..oc * k)
            .map(|i| self.wt(&mut rng, i, zps[if zps.len() == 1 { 0 } else { i / k }]))
            .collect();
        let bias: Option<Vec<i32>> = self
            .bias
            .then(|| (0..oc).map(|_| rng.range_i32(-200_000, 200_000)).collect());
        let rq = self.requants(&mut rng, oc, self.typical(k));
        let weights = Q8Weights {
            data: &w,
            n: oc,
            k,
            zp: &zps,
            bias: bias.as_deref(),
            requant: &rq,
        };
        let xv = Nhwc {
            data: &x,
            channels: ic,
            pixel_stride: xs,
            zp: self.a_zp,
        };
        let ys = self.y_stride.unwrap_or(oc);
        let len = (g.out_pixels() - 1) * ys + oc + GUARD;
        let mut want = vec![SENTINEL; len];
        ref_conv(g, &xv, &weights, &self.out, &mut want, ys);
        let packed = PackedQ8Gemm::new(uk, &weights, g.taps(), self.a_zp);
        let ind = ConvIndirection::new(g, usize::from(uk.mr));
        let mut got = vec![SENTINEL; len];
        super::ops::q8conv(&xv, &ind, &packed, &self.out, &mut got, ys);
        let pixels = g.out_pixels();
        self.check(uk.name, uk.numerics, &got, &want, |i| {
            i / ys < pixels && i % ys < oc
        });
    }

    /// Depthwise conv through `uk` (whose tap count must match the window).
    pub fn test_dwconv(&self, uk: &'static Q8DwUkernel) {
        let g = &self.window;
        let ch = self.channels;
        let mut rng = self.rng(3);
        let (x, xs) = self.input(&mut rng);
        let taps = g.taps();
        let zps = self.w_zps(&mut rng, ch);
        let w: Vec<u8> = (0..taps * ch)
            .map(|i| self.wt(&mut rng, i, zps[if zps.len() == 1 { 0 } else { i % ch }]))
            .collect();
        let bias: Option<Vec<i32>> = self
            .bias
            .then(|| (0..ch).map(|_| rng.range_i32(-200_000, 200_000)).collect());
        let rq = self.requants(&mut rng, ch, self.typical(taps));
        let weights = Q8DwWeights {
            data: &w,
            channels: ch,
            zp: &zps,
            bias: bias.as_deref(),
            requant: &rq,
        };
        let xv = Nhwc {
            data: &x,
            channels: ch,
            pixel_stride: xs,
            zp: self.a_zp,
        };
        let ys = self.y_stride.unwrap_or(ch);
        let len = (g.out_pixels() - 1) * ys + ch + GUARD;
        let mut want = vec![SENTINEL; len];
        ref_dwconv(g, &xv, &weights, &self.out, &mut want, ys);
        let packed = PackedQ8Dw::new(uk, &weights, g.kernel_h, g.kernel_w, self.a_zp);
        let ind = DwIndirection::new(g);
        let mut got = vec![SENTINEL; len];
        super::ops::q8dwconv(&xv, &ind, &packed, &self.out, &mut got, ys);
        let pixels = g.out_pixels();
        self.check(uk.name, uk.numerics, &got, &want, |i| {
            i / ys < pixels && i % ys < ch
        });
    }

    /// Average pooling through `uk`.
    pub fn test_avgpool(&self, uk: &'static Q8PoolUkernel) {
        let g = &self.window;
        let ch = self.channels;
        let mut rng = self.rng(4);
        let (x, xs) = self.input(&mut rng);
        let xv = Nhwc {
            data: &x,
            channels: ch,
            pixel_stride: xs,
            zp: self.a_zp,
        };
        let y_scale = match self.scale {
            Scale::Fixed(s) => 1.0 / s,
            Scale::Auto { .. } => 0.5 + rng.f32(),
        };
        let q = Q8PoolQuant {
            x_scale: 1.0,
            y_scale,
            out: self.out,
        };
        let ys = self.y_stride.unwrap_or(ch);
        let len = (g.out_pixels() - 1) * ys + ch + GUARD;
        let mut want = vec![SENTINEL; len];
        ref_avgpool(g, &xv, &q, self.count_include_pad, &mut want, ys).unwrap();
        let ind = DwIndirection::new(g);
        let mut got = vec![SENTINEL; len];
        super::ops::q8avgpool(uk, &xv, &ind, &q, self.count_include_pad, &mut got, ys).unwrap();
        let pixels = g.out_pixels();
        self.check(uk.name, uk.numerics, &got, &want, |i| {
            i / ys < pixels && i % ys < ch
        });
    }

    /// Elementwise Add of `n` (from [`Q8Tester::mnk`]) elements with scale ratios `ra`, `rb`
    /// (b's zero point is `255 − a_zp`).
    pub fn test_vadd(&self, uk: &'static Q8AddUkernel, ra: f32, rb: f32) {
        let n = self.n;
        let mut rng = self.rng(5);
        let a: Vec<u8> = (0..n).map(|i| self.act(&mut rng, i)).collect();
        let b: Vec<u8> = (0..n).map(|i| self.act(&mut rng, i + 1)).collect();
        let p = Q8AddParams::new(ra, self.a_zp, rb, 255 - self.a_zp, 1.0, self.out)
            .expect("representable ratios");
        let mut want = vec![SENTINEL; n];
        ref_vadd(&a, &b, &p, &mut want);
        let mut got = vec![SENTINEL; n];
        super::ops::q8vadd(uk, &a, &b, &p, &mut got);
        self.check(uk.name, uk.numerics, &got, &want, |_| true);
    }
}
