//! Weight prepacking: s8 weights into one micro-kernel's strip layout, plus the folded
//! per-column bias.
//!
//! Layout: the `N` columns are cut into strips of `nr` (the last one zero-padded); each strip
//! holds `ceil(K/kr)` groups, and each group holds, for each of the `nr` columns, `kr`
//! consecutive k values (zero-padded past K). With `kr = 4` one group of 16 columns is one
//! 64-byte row: exactly the `vpdpbusd`/`vpmaddubsw` operand for a broadcast k-quad of A
//! (FBGEMM `PackBMatrix` with ROW_INTERLEAVE = 4). Zero padding is neutral: padded k
//! contribute `a·0`, padded columns are computed and never stored.

use std::fmt;

use super::ukernel::{BFormat, QGemmUkernel, WeightRange};
use crate::kernels::{best, Kernels};

/// Bytes of one cache line; strips start on this boundary.
const ALIGN: usize = 64;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; ALIGN]);

/// s8 weights with their quantization parameters, as they come from the graph.
#[derive(Clone, Copy, Debug)]
pub struct QWeights<'a> {
    /// `K×N` row-major (ONNX MatMul/Gemm B), or `N×K` when `trans_b` (Gemm `transB=1`, conv
    /// weights `[OC, IC·KH·KW]`). Dense: row stride = N (resp. K).
    pub data: &'a [i8],
    pub k: usize,
    pub n: usize,
    pub trans_b: bool,
    /// Weight zero point: 1 value (per tensor) or `n` values (per output channel).
    pub zp: &'a [i8],
    /// Optional int32 bias, `n` values.
    pub bias: Option<&'a [i32]>,
}

impl QWeights<'_> {
    fn at(&self, k: usize, n: usize) -> i8 {
        if self.trans_b {
            self.data[n * self.k + k]
        } else {
            self.data[k * self.n + n]
        }
    }

    fn zp_at(&self, n: usize) -> i32 {
        i32::from(if self.zp.len() == 1 {
            self.zp[0]
        } else {
            self.zp[n]
        })
    }

    fn validate(&self) -> Result<(), PackError> {
        if self.data.len() != self.k * self.n {
            return Err(PackError::Shape(format!(
                "weights hold {} values, K·N = {}",
                self.data.len(),
                self.k * self.n
            )));
        }
        if self.zp.len() != 1 && self.zp.len() != self.n {
            return Err(PackError::Shape(format!(
                "{} weight zero points for N = {}",
                self.zp.len(),
                self.n
            )));
        }
        if let Some(b) = self.bias {
            if b.len() != self.n {
                return Err(PackError::Shape(format!(
                    "{} bias values for N = {}",
                    b.len(),
                    self.n
                )));
            }
        }
        Ok(())
    }

    /// Whether every column/k-pair is admitted by `range`.
    pub fn admitted_by(&self, range: WeightRange) -> bool {
        if range == WeightRange::Full {
            return true;
        }
        (0..self.n).all(|n| {
            (0..self.k).step_by(2).all(|k| {
                let w1 = if k + 1 < self.k { self.at(k + 1, n) } else { 0 };
                range.admits_pair(self.at(k, n), w1)
            })
        })
    }
}

/// Why weights could not be packed for a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackError {
    Shape(String),
    /// The kernel is not exact for these weights (e.g. `vpmaddubsw` could saturate).
    WeightsOutOfRange {
        kernel: &'static str,
        range: WeightRange,
    },
    /// No kernel of the set admits the weights (cannot happen with the shipped sets, whose
    /// last kernel admits [`WeightRange::Full`]).
    NoKernel,
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackError::Shape(s) => write!(f, "bad weight shape: {s}"),
            PackError::WeightsOutOfRange { kernel, range } => {
                write!(f, "kernel {kernel} requires weights in {range:?}")
            }
            PackError::NoKernel => f.write_str("no kernel admits these weights"),
        }
    }
}

impl std::error::Error for PackError {}

/// Weights packed for one micro-kernel, with the folded per-column bias. Immutable and
/// `Sync`: share it between threads that split M.
pub struct PackedB {
    ukernel: &'static QGemmUkernel,
    k: usize,
    n: usize,
    /// Padded N (multiple of nr).
    n_padded: usize,
    /// Bytes between consecutive strips.
    strip_bytes: usize,
    data: Vec<Line>,
    /// `bias[n]` (0 when absent), padded to `n_padded`.
    bias: Vec<i32>,
    /// FBGEMM's column offsets `Σ_k W[k,n] − K·w_zp[n]`, padded.
    col_off: Vec<i32>,
    /// The `a_zp` folded into `col_bias`.
    a_zp: u8,
    /// `bias[n] − a_zp·col_off[n]`: the accumulator init for `a_zp`, padded.
    col_bias: Vec<i32>,
    /// Weight zero points, padded; `None` when all are 0 (then no row sums are needed).
    b_zp: Option<Vec<i32>>,
}

impl fmt::Debug for PackedB {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedB")
            .field("ukernel", &self.ukernel.name)
            .field("k", &self.k)
            .field("n", &self.n)
            .field("a_zp", &self.a_zp)
            .field("asymmetric_weights", &self.b_zp.is_some())
            .finish_non_exhaustive()
    }
}

impl PackedB {
    /// Packs for the [`best`] kernel set (honouring `ONNXQ_ISA`).
    ///
    /// `a_zp` is the activation zero point folded into the bias (static in QDQ graphs);
    /// [`super::qgemm`] accepts another `a_zp` at run time at the cost of an O(N) fix-up.
    pub fn new(w: &QWeights<'_>, a_zp: u8) -> Result<PackedB, PackError> {
        PackedB::for_kernels(best(), w, a_zp)
    }

    /// Packs for the first kernel of `kernels` that is exact for `w` (for AVX2: the fast
    /// `vpmaddubsw` kernel when the weights are pair-safe, else the 16-bit one).
    pub fn for_kernels(
        kernels: &Kernels,
        w: &QWeights<'_>,
        a_zp: u8,
    ) -> Result<PackedB, PackError> {
        w.validate()?;
        let uk = kernels
            .gemm_u8s8
            .iter()
            .find(|uk| w.admitted_by(uk.weights))
            .ok_or(PackError::NoKernel)?;
        // Admission was just checked: pack without scanning the weights a second time.
        Ok(PackedB::pack_admitted(uk, w, a_zp))
    }

    /// Packs for exactly `uk`; fails if `uk` is not exact for these weights.
    pub fn with_ukernel(
        uk: &'static QGemmUkernel,
        w: &QWeights<'_>,
        a_zp: u8,
    ) -> Result<PackedB, PackError> {
        w.validate()?;
        if !w.admitted_by(uk.weights) {
            return Err(PackError::WeightsOutOfRange {
                kernel: uk.name,
                range: uk.weights,
            });
        }
        Ok(PackedB::pack_admitted(uk, w, a_zp))
    }

    /// Packs valid weights `w` that `uk` admits (checked by the callers).
    fn pack_admitted(uk: &'static QGemmUkernel, w: &QWeights<'_>, a_zp: u8) -> PackedB {
        let (k, n) = (w.k, w.n);
        let nr = usize::from(uk.nr);
        let kr = uk.b_format.kr();
        debug_assert_eq!(kr, usize::from(uk.kr));
        let eb = uk.b_format.elem_bytes();
        let groups = k.div_ceil(kr);
        let n_padded = n.div_ceil(nr) * nr;
        let strips = n_padded / nr;
        let strip_bytes = (groups * nr * kr * eb).div_ceil(ALIGN) * ALIGN;
        let mut bytes = vec![0u8; strips * strip_bytes];
        for s in 0..strips {
            let strip = &mut bytes[s * strip_bytes..(s + 1) * strip_bytes];
            for g in 0..groups {
                for j in 0..nr {
                    let col = s * nr + j;
                    for i in 0..kr {
                        let kk = g * kr + i;
                        let v = if col < n && kk < k { w.at(kk, col) } else { 0 };
                        let off = ((g * nr + j) * kr + i) * eb;
                        match uk.b_format {
                            BFormat::I8Quads => strip[off] = v as u8,
                            BFormat::I16Pairs => {
                                strip[off..off + 2].copy_from_slice(&i16::from(v).to_le_bytes())
                            }
                        }
                    }
                }
            }
        }
        let mut data = vec![Line([0; ALIGN]); bytes.len() / ALIGN];
        for (line, chunk) in data.iter_mut().zip(bytes.chunks_exact(ALIGN)) {
            line.0.copy_from_slice(chunk);
        }

        let mut bias = vec![0i32; n_padded];
        let mut col_off = vec![0i32; n_padded];
        let mut b_zp = vec![0i32; n_padded];
        for col in 0..n {
            let sum = (0..k).fold(0i32, |s, kk| s.wrapping_add(i32::from(w.at(kk, col))));
            let zw = w.zp_at(col);
            b_zp[col] = zw;
            col_off[col] = sum.wrapping_sub((k as i32).wrapping_mul(zw));
            bias[col] = w.bias.map_or(0, |b| b[col]);
        }
        let b_zp = b_zp.iter().any(|&z| z != 0).then_some(b_zp);
        let mut packed = PackedB {
            ukernel: uk,
            k,
            n,
            n_padded,
            strip_bytes,
            data,
            bias,
            col_off,
            a_zp,
            col_bias: Vec::new(),
            b_zp,
        };
        packed.col_bias = packed.col_bias_for(a_zp);
        packed
    }

    /// `bias[n] − a_zp·col_off[n]` for every (padded) column.
    pub(crate) fn col_bias_for(&self, a_zp: u8) -> Vec<i32> {
        self.bias
            .iter()
            .zip(&self.col_off)
            .map(|(&b, &c)| b.wrapping_sub(i32::from(a_zp).wrapping_mul(c)))
            .collect()
    }

    pub fn ukernel(&self) -> &'static QGemmUkernel {
        self.ukernel
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// The activation zero point folded at pack time.
    pub fn a_zp(&self) -> u8 {
        self.a_zp
    }

    /// Whether some weight zero point is non-zero (row sums of A are then computed per call).
    pub fn asymmetric(&self) -> bool {
        self.b_zp.is_some()
    }

    /// Size of the packed weights in bytes.
    pub fn packed_bytes(&self) -> usize {
        self.data.len() * ALIGN
    }

    pub(crate) fn n_padded(&self) -> usize {
        self.n_padded
    }

    pub(crate) fn col_bias(&self) -> &[i32] {
        &self.col_bias
    }

    pub(crate) fn b_zp_padded(&self) -> Option<&[i32]> {
        self.b_zp.as_deref()
    }

    /// Pointer to strip `s` (columns `s·nr ..`), valid for `strip_bytes` bytes.
    pub(crate) fn strip_ptr(&self, s: usize) -> *const u8 {
        let bytes = self.data.as_ptr().cast::<u8>();
        debug_assert!((s + 1) * self.strip_bytes <= self.data.len() * ALIGN);
        bytes.wrapping_add(s * self.strip_bytes)
    }
}
