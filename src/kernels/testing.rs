//! The shared tester (QNNPACK `GemmMicrokernelTester` style): one builder that runs a GEMM
//! problem through a chosen micro-kernel (via [`PackedB::with_ukernel`] and the driver) or a
//! kernel set (via [`PackedB::for_kernels`]) and asserts a **bit-exact** match with
//! [`crate::kernels::reference`] for `Numerics::Exact` kernels (≤ 1 LSB for `Approx`). It also
//! checks that nothing outside the `m×n` output window is written.
//!
//! Public so that `tests/kernels_*.rs` (and later the executor's tests) share it.

// [fbconv] the conv tester (`testing/conv.rs`).
pub mod conv;

use super::fbgemm::{qgemm, OutputStage, PackError, PackedB, QGemmOutput, QWeights};
use super::reference::{dequantize_acc, qgemm_u8s8, requantize, QGemmProblem};
use super::{Kernels, Numerics, QGemmUkernel};

/// Tiny deterministic RNG (xorshift64*), so tests need no dependencies.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn u8(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }

    pub fn i8(&mut self) -> i8 {
        self.u8() as i8
    }

    /// Uniform in `[lo, hi]`.
    pub fn range_i32(&mut self, lo: i32, hi: i32) -> i32 {
        let span = (i64::from(hi) - i64::from(lo) + 1) as u64;
        (i64::from(lo) + (self.next_u64() % span) as i64) as i32
    }

    /// Uniform in `[0, 1)`.
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Input data pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data {
    /// Full-range random A and B.
    Random,
    /// Random A, random B in `[−64, 64]` (admitted by every kernel, incl. `vpmaddubsw`).
    RandomSmallWeights,
    /// Adversarial: A all 255, B all −128 (`vpmaddubsw` pair sum −65 280 would saturate).
    MinWeights,
    /// Adversarial: A all 255, B all 127.
    MaxWeights,
    /// Adversarial: A alternating 255/0 by k and row, B alternating −128/127 by k and column.
    Alternating,
    /// A all 255, B k-pairs cycling through the `PairSum128` boundary: (127, 1), (−128, 0),
    /// (64, 64), (−64, −64), (1, 127), (0, −128).
    PairBoundary,
    /// A random from the extremes {0, 1, 254, 255}, B random from
    /// [`EXTREME_WEIGHTS`] (−128 next to 127, the ±64 split edges, ±1, 0).
    Extremes,
}

/// Weight values of [`Data::Extremes`].
pub const EXTREME_WEIGHTS: [i8; 13] = [-128, -127, -65, -64, -63, -1, 0, 1, 63, 64, 65, 126, 127];

/// Activation values of [`Data::Extremes`].
pub const EXTREME_ACTS: [u8; 4] = [0, 1, 254, 255];

/// Weight zero point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WZp {
    Zero,
    PerTensor(i8),
    /// Random per column (never all zero for N ≥ 1).
    PerChannel,
}

/// Output stage under test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Out {
    I32,
    /// Requantize to u8 (`signed = false`) or i8.
    Quant {
        signed: bool,
        zp: i32,
        qmin: i32,
        qmax: i32,
        per_channel: bool,
        /// `None`: multipliers chosen from the accumulator range so outputs spread over the
        /// whole type; `Some(m)`: that multiplier (e.g. 0.5 to hit exact .5 ties).
        mult: Option<f32>,
    },
    F32 {
        per_channel: bool,
        bias: bool,
    },
}

impl Out {
    /// u8 requantization with zero point `zp`, no clamp beyond the type.
    pub fn u8(zp: i32, per_channel: bool) -> Out {
        Out::Quant {
            signed: false,
            zp,
            qmin: 0,
            qmax: 255,
            per_channel,
            mult: None,
        }
    }

    /// i8 requantization with zero point `zp`.
    pub fn i8(zp: i32, per_channel: bool) -> Out {
        Out::Quant {
            signed: true,
            zp,
            qmin: -128,
            qmax: 127,
            per_channel,
            mult: None,
        }
    }
}

/// Result of [`GemmTester::test_ukernel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    /// Ran and matched the reference.
    Passed,
    /// The kernel refused the weights at pack time (and the tester confirmed they are
    /// outside its `WeightRange`).
    Rejected,
}

/// A GEMM test case. Build with [`GemmTester::new`] and the setters, then call
/// [`GemmTester::test_ukernel`] or [`GemmTester::test_kernels`].
#[derive(Clone, Debug)]
pub struct GemmTester {
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ldc: usize,
    a_zp: u8,
    /// `a_zp` folded at pack time (defaults to `a_zp`).
    pack_a_zp: Option<u8>,
    w_zp: WZp,
    trans_b: bool,
    bias: bool,
    out: Out,
    data: Data,
    seed: u64,
}

/// Sentinel written around the output window.
const GUARD: usize = 67;

impl GemmTester {
    pub fn new(m: usize, n: usize, k: usize) -> GemmTester {
        GemmTester {
            m,
            n,
            k,
            lda: k,
            ldc: n,
            a_zp: 0,
            pack_a_zp: None,
            w_zp: WZp::Zero,
            trans_b: false,
            bias: false,
            out: Out::I32,
            data: Data::Random,
            seed: 1,
        }
    }

    /// Row stride of A (≥ k).
    pub fn lda(mut self, lda: usize) -> Self {
        self.lda = lda;
        self
    }

    /// Row stride of C (≥ n).
    pub fn ldc(mut self, ldc: usize) -> Self {
        self.ldc = ldc;
        self
    }

    pub fn a_zp(mut self, z: u8) -> Self {
        self.a_zp = z;
        self
    }

    /// Pack with this activation zero point and call with `a_zp` (exercises the re-fold).
    pub fn pack_a_zp(mut self, z: u8) -> Self {
        self.pack_a_zp = Some(z);
        self
    }

    pub fn w_zp(mut self, z: WZp) -> Self {
        self.w_zp = z;
        self
    }

    pub fn trans_b(mut self, t: bool) -> Self {
        self.trans_b = t;
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

    fn describe(&self) -> String {
        format!("{self:?}")
    }

    /// A (`m` rows at stride `lda`, padding bytes random) and B as `K×N` (or `N×K`).
    fn inputs(&self, rng: &mut XorShift) -> (Vec<u8>, Vec<i8>) {
        let (m, n, k) = (self.m, self.n, self.k);
        let mut a = vec![0u8; (m.max(1) - 1) * self.lda + k];
        let mut b = vec![0i8; k * n];
        for v in a.iter_mut() {
            *v = rng.u8();
        }
        const BOUNDARY: [(i8, i8); 6] = [
            (127, 1),
            (-128, 0),
            (64, 64),
            (-64, -64),
            (1, 127),
            (0, -128),
        ];
        for i in 0..m {
            for kk in 0..k {
                let v = &mut a[i * self.lda + kk];
                *v = match self.data {
                    Data::Random | Data::RandomSmallWeights => *v,
                    Data::MinWeights | Data::MaxWeights | Data::PairBoundary => 255,
                    Data::Extremes => EXTREME_ACTS[usize::from(*v) % EXTREME_ACTS.len()],
                    Data::Alternating => {
                        if (i + kk) % 2 == 0 {
                            255
                        } else {
                            0
                        }
                    }
                };
            }
        }
        for kk in 0..k {
            for j in 0..n {
                let w = match self.data {
                    Data::Random => rng.i8(),
                    Data::RandomSmallWeights => rng.range_i32(-64, 64) as i8,
                    Data::Extremes => {
                        EXTREME_WEIGHTS[(rng.next_u64() % EXTREME_WEIGHTS.len() as u64) as usize]
                    }
                    Data::MinWeights => -128,
                    Data::MaxWeights => 127,
                    Data::Alternating => {
                        if (kk / 2 + j) % 2 == 0 {
                            -128
                        } else {
                            127
                        }
                    }
                    Data::PairBoundary => {
                        let (w0, w1) = BOUNDARY[(kk / 2 + j) % BOUNDARY.len()];
                        if kk % 2 == 0 {
                            w0
                        } else {
                            w1
                        }
                    }
                };
                let idx = if self.trans_b { j * k + kk } else { kk * n + j };
                b[idx] = w;
            }
        }
        (a, b)
    }

    /// Runs the case through exactly `uk`.
    pub fn test_ukernel(&self, uk: &'static QGemmUkernel) -> Checked {
        self.run(|w, a_zp| PackedB::with_ukernel(uk, w, a_zp), Some(uk))
    }

    /// Runs the case through the kernel a set picks for these weights.
    pub fn test_kernels(&self, kernels: &Kernels) {
        let r = self.run(|w, a_zp| PackedB::for_kernels(kernels, w, a_zp), None);
        assert_eq!(r, Checked::Passed, "{}", self.describe());
    }

    fn run(
        &self,
        pack: impl FnOnce(&QWeights<'_>, u8) -> Result<PackedB, PackError>,
        uk: Option<&'static QGemmUkernel>,
    ) -> Checked {
        let (m, n, k) = (self.m, self.n, self.k);
        let mut rng = XorShift::new(self.seed ^ ((m as u64) << 40 ^ (n as u64) << 20 ^ k as u64));
        let (a, b) = self.inputs(&mut rng);
        let w_zp: Vec<i8> = match self.w_zp {
            WZp::Zero => vec![0],
            WZp::PerTensor(z) => vec![z],
            WZp::PerChannel => (0..n)
                .map(|j| if j % 3 == 1 { 0 } else { rng.i8() | 1 })
                .collect(),
        };
        let bias: Option<Vec<i32>> = self
            .bias
            .then(|| (0..n).map(|_| rng.range_i32(-100_000, 100_000)).collect());

        // Reference accumulators.
        let prob = QGemmProblem {
            m,
            n,
            k,
            a: &a,
            lda: self.lda,
            a_zp: self.a_zp,
            b: &b,
            ldb: if self.trans_b { k } else { n },
            trans_b: self.trans_b,
            b_zp: &w_zp,
            bias: bias.as_deref(),
        };
        let mut acc = vec![0i32; m * n];
        qgemm_u8s8(&prob, &mut acc, n);

        let weights = QWeights {
            data: &b,
            k,
            n,
            trans_b: self.trans_b,
            zp: &w_zp,
            bias: bias.as_deref(),
        };
        let packed = match pack(&weights, self.pack_a_zp.unwrap_or(self.a_zp)) {
            Ok(p) => p,
            Err(PackError::WeightsOutOfRange { kernel, range }) => {
                assert!(
                    !weights.admitted_by(range) && !independent_admits(&weights, range),
                    "{kernel} rejected admissible weights: {}",
                    self.describe()
                );
                return Checked::Rejected;
            }
            Err(e) => panic!("pack failed: {e}: {}", self.describe()),
        };
        if let Some(uk) = uk {
            assert_eq!(packed.ukernel().name, uk.name);
        }
        let numerics = packed.ukernel().numerics;
        let name = packed.ukernel().name;
        let ctx = || format!("kernel {name}, {}", self.describe());

        let c_len = (m.max(1) - 1) * self.ldc + n + GUARD;
        let (lo, hi) = acc
            .iter()
            .fold((i32::MAX, i32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let span = (i64::from(hi) - i64::from(lo)).max(1) as f32;
        let per_col = |per_channel: bool, rng: &mut XorShift, base: f32| -> Vec<f32> {
            if per_channel {
                (0..n).map(|_| base * (0.25 + 1.5 * rng.f32())).collect()
            } else {
                vec![base]
            }
        };
        let tol = match numerics {
            Numerics::Exact => 0,
            Numerics::Approx => 1,
        };
        let in_window = |idx: usize| idx / self.ldc < m && idx % self.ldc < n;
        match self.out {
            Out::I32 => {
                let mut c = vec![i32::MIN + 7; c_len];
                qgemm(
                    &a,
                    self.lda,
                    self.a_zp,
                    m,
                    &packed,
                    OutputStage::Raw,
                    QGemmOutput::I32(&mut c),
                    self.ldc,
                );
                for (idx, &got) in c.iter().enumerate() {
                    if in_window(idx) {
                        let want = acc[(idx / self.ldc) * n + idx % self.ldc];
                        assert_eq!(
                            got,
                            want,
                            "C[{},{}] {}",
                            idx / self.ldc,
                            idx % self.ldc,
                            ctx()
                        );
                    } else {
                        assert_eq!(
                            got,
                            i32::MIN + 7,
                            "write outside the window at {idx}: {}",
                            ctx()
                        );
                    }
                }
            }
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
                let mult_at = |j: usize| if mults.len() == 1 { mults[0] } else { mults[j] };
                let sentinel = 0x5Au8;
                let mut c8 = vec![sentinel; c_len];
                if signed {
                    let mut ci = vec![sentinel as i8; c_len];
                    qgemm(
                        &a,
                        self.lda,
                        self.a_zp,
                        m,
                        &packed,
                        stage,
                        QGemmOutput::I8(&mut ci),
                        self.ldc,
                    );
                    for (d, s) in c8.iter_mut().zip(&ci) {
                        *d = *s as u8;
                    }
                } else {
                    qgemm(
                        &a,
                        self.lda,
                        self.a_zp,
                        m,
                        &packed,
                        stage,
                        QGemmOutput::U8(&mut c8),
                        self.ldc,
                    );
                }
                for (idx, &got) in c8.iter().enumerate() {
                    if in_window(idx) {
                        let (i, j) = (idx / self.ldc, idx % self.ldc);
                        let want = requantize(acc[i * n + j], mult_at(j), zp, qmin, qmax);
                        let got = if signed {
                            i32::from(got as i8)
                        } else {
                            i32::from(got)
                        };
                        assert!(
                            (got - want).abs() <= tol,
                            "C[{i},{j}] = {got}, want {want} (acc {}, mult {}): {}",
                            acc[i * n + j],
                            mult_at(j),
                            ctx()
                        );
                    } else {
                        assert_eq!(
                            got,
                            sentinel,
                            "write outside the window at {idx}: {}",
                            ctx()
                        );
                    }
                }
            }
            Out::F32 { per_channel, bias } => {
                let scales = per_col(per_channel, &mut rng, 1.0 / span);
                let fbias: Option<Vec<f32>> =
                    bias.then(|| (0..n).map(|_| rng.f32() * 8.0 - 4.0).collect());
                let stage = OutputStage::Dequantize {
                    scale: &scales,
                    bias: fbias.as_deref(),
                };
                let sentinel = f32::from_bits(0x7FC0_1234);
                let mut c = vec![sentinel; c_len];
                qgemm(
                    &a,
                    self.lda,
                    self.a_zp,
                    m,
                    &packed,
                    stage,
                    QGemmOutput::F32(&mut c),
                    self.ldc,
                );
                for (idx, &got) in c.iter().enumerate() {
                    if in_window(idx) {
                        let (i, j) = (idx / self.ldc, idx % self.ldc);
                        let s = if scales.len() == 1 {
                            scales[0]
                        } else {
                            scales[j]
                        };
                        let want =
                            dequantize_acc(acc[i * n + j], s, fbias.as_ref().map_or(0.0, |b| b[j]));
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "C[{i},{j}] = {got}, want {want}: {}",
                            ctx()
                        );
                    } else {
                        assert_eq!(
                            got.to_bits(),
                            sentinel.to_bits(),
                            "write outside the window at {idx}: {}",
                            ctx()
                        );
                    }
                }
            }
        }
        Checked::Passed
    }
}

/// The tester's own check of a `WeightRange` (worst case over all u8 activations, computed
/// directly rather than through `WeightRange::admits_pair`).
fn independent_admits(w: &QWeights<'_>, range: super::WeightRange) -> bool {
    if range == super::WeightRange::Full {
        return true;
    }
    let at = |k: usize, n: usize| -> i32 {
        if k >= w.k {
            0
        } else if w.trans_b {
            i32::from(w.data[n * w.k + k])
        } else {
            i32::from(w.data[k * w.n + n])
        }
    };
    (0..w.n).all(|n| {
        (0..w.k).step_by(2).all(|k| {
            let (w0, w1) = (at(k, n), at(k + 1, n));
            // Extremes of a0·w0 + a1·w1 over a0, a1 ∈ {0, 255}.
            [(0, 0), (0, 255), (255, 0), (255, 255)]
                .iter()
                .all(|&(a0, a1)| (-32768..=32767).contains(&(a0 * w0 + a1 * w1)))
        })
    })
}

/// Seconds for `reps` calls of `uk` alone on one full `mr×nr` tile of depth `k` (L1-resident
/// A and B, raw i32 output): the micro-kernel ceiling, without driver overhead.
pub fn time_ukernel_l1(uk: &'static QGemmUkernel, k: usize, reps: usize) -> f64 {
    use super::fbgemm::{QGemmTile, TileOutput};
    let (mr, nr) = (usize::from(uk.mr), usize::from(uk.nr));
    let mut rng = XorShift::new(7);
    let w: Vec<i8> = (0..k * nr).map(|_| rng.range_i32(-64, 64) as i8).collect();
    let packed = PackedB::with_ukernel(
        uk,
        &QWeights {
            data: &w,
            k,
            n: nr,
            trans_b: false,
            zp: &[0],
            bias: None,
        },
        0,
    )
    .expect("small weights are admitted by every kernel");
    let a: Vec<u8> = (0..mr * k).map(|_| rng.u8()).collect();
    // The 16-bit kernels read a packed panel: rows zero-extended to u16, K even.
    let ld = k.div_ceil(2) * 2;
    let mut panel = vec![0u16; mr * ld];
    for r in 0..mr {
        for kk in 0..k {
            panel[r * ld + kk] = u16::from(a[r * k + kk]);
        }
    }
    let mut c = vec![0i32; mr * nr];
    let tile = QGemmTile {
        m: mr,
        n: nr,
        k,
        a: match uk.a_format {
            super::fbgemm::AFormat::Direct => a.as_ptr(),
            super::fbgemm::AFormat::PackedI16Pairs => panel.as_ptr().cast(),
        },
        lda: match uk.a_format {
            super::fbgemm::AFormat::Direct => k,
            super::fbgemm::AFormat::PackedI16Pairs => 2 * ld,
        },
        a_rows: std::ptr::null(),
        segs: 1,
        seg_stride: 0,
        b: packed.strip_ptr(0),
        col_bias: packed.col_bias().as_ptr(),
        row_sums: std::ptr::null(),
        b_zp: std::ptr::null(),
        out: TileOutput::I32 { c: c.as_mut_ptr() },
        ldc: nr,
        _lifetime: std::marker::PhantomData,
    };
    assert!(
        super::for_isa(uk.isa).is_some(),
        "{} cannot run on this host",
        uk.name
    );
    let t0 = std::time::Instant::now();
    for _ in 0..reps {
        // SAFETY: the host supports `uk.isa` (asserted); A/panel, the packed strip, the
        // column bias (nr values) and C (mr×nr) all outlive the call and have the sizes the
        // tile describes.
        unsafe { (uk.run)(std::hint::black_box(&tile)) };
    }
    let dt = t0.elapsed().as_secs_f64();
    std::hint::black_box(&c);
    dt
}
