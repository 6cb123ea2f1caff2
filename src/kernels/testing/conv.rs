//! The shared conv tester: one builder that runs a conv problem through a kernel set and an
//! algorithm ([`PackedConv::with_algo`] + [`PackedConv::run`]) and asserts a **bit-exact**
//! match with [`crate::kernels::reference::conv_u8s8_nhwc`] followed by the reference output
//! stage, for every output kind (raw i32, u8/i8 requantize incl. fused Relu/Clip windows, f32
//! dequantize). It also checks that nothing past the output tensor is written and that the
//! same packed weights give the same result on a second call (scratch reuse).

use super::{Data, Out, WZp, XorShift, EXTREME_ACTS, EXTREME_WEIGHTS};
use crate::kernels::fbgemm::{
    ConvAlgo, ConvScratch, ConvWeights, DwConvUkernel, OutputStage, PackedConv, QGemmOutput,
};
use crate::kernels::reference::{
    conv_u8s8_nhwc, dequantize_acc, requantize, ConvGeometry, ConvProblem,
};
use crate::kernels::{Kernels, Numerics};

/// Sentinel elements after the output tensor.
const GUARD: usize = 37;

/// A conv test case. Build with [`ConvTester::new`] and the setters, then call
/// [`ConvTester::test`] (one algorithm) or [`ConvTester::test_all`] (every applicable one).
#[derive(Clone, Debug)]
pub struct ConvTester {
    geom: ConvGeometry,
    n: usize,
    h: usize,
    w: usize,
    a_zp: u8,
    pack_a_zp: Option<u8>,
    w_zp: WZp,
    bias: bool,
    out: Out,
    data: Data,
    seed: u64,
    dw_ukernel: Option<&'static DwConvUkernel>,
}

impl ConvTester {
    /// Batch `n`, input `h×w`, and the conv geometry.
    pub fn new(geom: ConvGeometry, n: usize, h: usize, w: usize) -> ConvTester {
        ConvTester {
            geom,
            n,
            h,
            w,
            a_zp: 0,
            pack_a_zp: None,
            w_zp: WZp::Zero,
            bias: false,
            out: Out::I32,
            data: Data::Random,
            seed: 1,
            dw_ukernel: None,
        }
    }

    pub fn a_zp(mut self, z: u8) -> Self {
        self.a_zp = z;
        self
    }

    /// Pack with this activation zero point and run with `a_zp` (exercises the bias refold).
    pub fn pack_a_zp(mut self, z: u8) -> Self {
        self.pack_a_zp = Some(z);
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

    pub fn out(mut self, o: Out) -> Self {
        self.out = o;
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

    /// Runs [`ConvAlgo::Depthwise`] with exactly `uk` instead of the preferred kernel.
    pub fn dw_ukernel(mut self, uk: &'static DwConvUkernel) -> Self {
        self.dw_ukernel = Some(uk);
        self
    }

    /// Runs [`ConvAlgo::Depthwise`] with every depthwise kernel of `kernels` that can run
    /// the geometry (the preferred one first); returns the kernel names run.
    pub fn test_dw_all(&self, kernels: &Kernels) -> Vec<&'static str> {
        PackedConv::dw_ukernels(kernels, &self.geom)
            .into_iter()
            .map(|uk| {
                self.clone()
                    .dw_ukernel(uk)
                    .test(kernels, ConvAlgo::Depthwise)
            })
            .collect()
    }

    /// Whether the padded input fits the dilated kernel.
    pub fn valid(&self) -> bool {
        self.geom.validate().is_ok() && self.geom.out_hw(self.h, self.w).is_some()
    }

    /// Multiply-accumulates of the problem.
    pub fn macs(&self) -> usize {
        let (oh, ow) = self.geom.out_hw(self.h, self.w).unwrap_or((0, 0));
        self.n * oh * ow * self.geom.c_out * self.geom.k_per_out()
    }

    /// Runs every algorithm `kernels` offers for this geometry, the depthwise one with every
    /// applicable kernel; returns the kernel names run.
    pub fn test_all(&self, kernels: &Kernels) -> Vec<&'static str> {
        PackedConv::algos(kernels, &self.geom)
            .into_iter()
            .flat_map(|a| match a {
                ConvAlgo::Depthwise => self.test_dw_all(kernels),
                _ => vec![self.test(kernels, a)],
            })
            .collect()
    }

    /// Runs the case with exactly `algo`; returns the micro-kernel name that ran.
    pub fn test(&self, kernels: &Kernels, algo: ConvAlgo) -> &'static str {
        let g = self.geom;
        let (n, h, w) = (self.n, self.h, self.w);
        let (c, m) = (g.c_in, g.c_out);
        let kpo = g.k_per_out();
        let mut rng = XorShift::new(
            self.seed ^ ((c as u64) << 40 ^ (m as u64) << 24 ^ (h as u64) << 12 ^ w as u64),
        );
        let input: Vec<u8> = (0..n * h * w * c)
            .map(|i| match self.data {
                Data::Random | Data::RandomSmallWeights => rng.u8(),
                Data::Extremes => EXTREME_ACTS[usize::from(rng.u8()) % EXTREME_ACTS.len()],
                Data::MinWeights | Data::MaxWeights | Data::PairBoundary => 255,
                Data::Alternating => {
                    if i % 2 == 0 {
                        255
                    } else {
                        0
                    }
                }
            })
            .collect();
        const BOUNDARY: [i8; 12] = [127, 1, -128, 0, 64, 64, -64, -64, 1, 127, 0, -128];
        let weights: Vec<i8> = (0..m * kpo)
            .map(|i| match self.data {
                Data::Random => rng.i8(),
                Data::RandomSmallWeights => rng.range_i32(-64, 64) as i8,
                Data::Extremes => {
                    EXTREME_WEIGHTS[(rng.next_u64() % EXTREME_WEIGHTS.len() as u64) as usize]
                }
                Data::MinWeights => -128,
                Data::MaxWeights => 127,
                Data::Alternating => {
                    if (i / 2) % 2 == 0 {
                        -128
                    } else {
                        127
                    }
                }
                Data::PairBoundary => BOUNDARY[i % BOUNDARY.len()],
            })
            .collect();
        let w_zp: Vec<i8> = match self.w_zp {
            WZp::Zero => vec![0],
            WZp::PerTensor(z) => vec![z],
            WZp::PerChannel => (0..m)
                .map(|j| if j % 3 == 1 { 0 } else { rng.i8() | 1 })
                .collect(),
        };
        let bias: Option<Vec<i32>> = self
            .bias
            .then(|| (0..m).map(|_| rng.range_i32(-100_000, 100_000)).collect());

        let prob = ConvProblem {
            geom: g,
            n,
            h,
            w,
            input: &input,
            a_zp: self.a_zp,
            weights: &weights,
            w_zp: &w_zp,
            bias: bias.as_deref(),
        };
        let len = prob.out_len();
        let mut acc = vec![0i32; len];
        conv_u8s8_nhwc(&prob, &mut acc);

        let cw = ConvWeights {
            data: &weights,
            zp: &w_zp,
            bias: bias.as_deref(),
        };
        let pack_zp = self.pack_a_zp.unwrap_or(self.a_zp);
        let packed = match (algo, self.dw_ukernel) {
            (ConvAlgo::Depthwise, Some(uk)) => {
                PackedConv::with_dw_ukernel(kernels, uk, &g, &cw, pack_zp)
            }
            _ => PackedConv::with_algo(kernels, algo, &g, &cw, pack_zp),
        }
        .unwrap_or_else(|e| panic!("pack failed: {e}: {self:?}"));
        // Indirect falls back to im2col where the weights need row sums or a kernel that
        // reads contiguous A (documented on `ConvAlgo::Indirect`).
        let fallback = algo == ConvAlgo::Indirect && packed.algo() == ConvAlgo::Im2col;
        assert!(
            packed.algo() == algo || fallback,
            "{:?} for {algo:?}",
            packed.algo()
        );
        let name = packed.ukernel_name();
        let ctx = |what: String| format!("{what}: {algo:?} {name} isa {}, {self:?}", kernels.isa);
        let mut scratch = ConvScratch::new();

        let (lo, hi) = acc
            .iter()
            .fold((i32::MAX, i32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let span = (i64::from(hi) - i64::from(lo)).max(1) as f32;
        let per_col = |per_channel: bool, rng: &mut XorShift, base: f32| -> Vec<f32> {
            if per_channel {
                (0..m).map(|_| base * (0.25 + 1.5 * rng.f32())).collect()
            } else {
                vec![base]
            }
        };
        let at = |v: &[f32], j: usize| if v.len() == 1 { v[0] } else { v[j] };
        // Runs twice (fresh and reused scratch) and compares each element with `want(i)`.
        macro_rules! check {
            ($variant:ident, $ty:ty, $sentinel:expr, $stage:expr, $want:expr, $eq:expr) => {{
                for round in 0..2 {
                    let mut out: Vec<$ty> = vec![$sentinel; len + GUARD];
                    packed.run(
                        &input,
                        n,
                        h,
                        w,
                        self.a_zp,
                        $stage,
                        QGemmOutput::$variant(&mut out),
                        &mut scratch,
                    );
                    for (i, &got) in out.iter().enumerate() {
                        if i < len {
                            let want = $want(i);
                            assert!(
                                $eq(got, want),
                                "{}",
                                ctx(format!(
                                    "round {round}: out[{i}] (pixel {}, channel {}) = {got:?}, want {want:?} (acc {})",
                                    i / m,
                                    i % m,
                                    acc[i]
                                ))
                            );
                        } else {
                            assert!(
                                $eq(got, $sentinel),
                                "{}",
                                ctx(format!("write past the output at {i}"))
                            );
                        }
                    }
                }
            }};
        }
        let tol = match packed.numerics() {
            Numerics::Exact => 0,
            Numerics::Approx => 1,
        };
        match self.out {
            Out::I32 => check!(
                I32,
                i32,
                i32::MIN + 7,
                OutputStage::Raw,
                |i: usize| acc[i],
                |a: i32, b: i32| a == b
            ),
            Out::Quant {
                signed,
                zp,
                qmin,
                qmax,
                per_channel,
                mult,
            } => {
                let base = mult.unwrap_or(250.0 / span);
                let mults = if mult.is_some() && !per_channel {
                    vec![base]
                } else {
                    per_col(per_channel, &mut rng, base)
                };
                let stage = OutputStage::Requantize {
                    mult: &mults,
                    zp,
                    qmin,
                    qmax,
                };
                let want = |i: usize| requantize(acc[i], at(&mults, i % m), zp, qmin, qmax);
                if signed {
                    check!(
                        I8,
                        i8,
                        0x5A,
                        stage,
                        |i: usize| want(i) as i8,
                        |a: i8, b: i8| (i32::from(a) - i32::from(b)).abs() <= tol
                    )
                } else {
                    check!(
                        U8,
                        u8,
                        0x5A,
                        stage,
                        |i: usize| want(i) as u8,
                        |a: u8, b: u8| (i32::from(a) - i32::from(b)).abs() <= tol
                    )
                }
            }
            Out::F32 { per_channel, bias } => {
                let scales = per_col(per_channel, &mut rng, 1.0 / span);
                let fbias: Option<Vec<f32>> =
                    bias.then(|| (0..m).map(|_| rng.f32() * 8.0 - 4.0).collect());
                let stage = OutputStage::Dequantize {
                    scale: &scales,
                    bias: fbias.as_deref(),
                };
                let sentinel = f32::from_bits(0x7FC0_1234);
                check!(
                    F32,
                    f32,
                    sentinel,
                    stage,
                    |i: usize| dequantize_acc(
                        acc[i],
                        at(&scales, i % m),
                        fbias.as_ref().map_or(0.0, |b| b[i % m])
                    ),
                    |a: f32, b: f32| a.to_bits() == b.to_bits()
                )
            }
        }
        name
    }
}
