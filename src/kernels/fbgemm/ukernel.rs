//! The uniform micro-kernel interface: a plain struct of metadata plus a function pointer
//! (QNNPACK `q8conv_parameters`, tract `DynKernel`).

use std::marker::PhantomData;

use crate::kernels::{Isa, Numerics};

/// How the micro-kernel reads A.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AFormat {
    /// Straight from the caller's row-major u8 matrix: `m` rows at stride `lda`, reading bytes
    /// `0..k` of each row and nothing beyond.
    Direct,
    /// From a panel the driver packs per `m`-row block: each row zero-extended to u16
    /// (k padded with 0 to even), rows `lda` bytes apart, so a little-endian `u32` at byte
    /// `4p` of a row is the i16 pair `(a[2p], a[2p+1])`.
    PackedI16Pairs,
}

/// Element format of a packed B strip (`nr` columns): groups of `kr` consecutive k per column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BFormat {
    /// s8, `kr = 4`: for each k-quad, `nr` columns × 4 bytes (the `vpdpbusd` lane layout).
    I8Quads,
    /// i16, `kr = 2`: for each k-pair, `nr` columns × 2 little-endian i16 (`vpmaddwd` layout).
    I16Pairs,
}

impl BFormat {
    pub fn kr(self) -> usize {
        match self {
            BFormat::I8Quads => 4,
            BFormat::I16Pairs => 2,
        }
    }

    pub fn elem_bytes(self) -> usize {
        match self {
            BFormat::I8Quads => 1,
            BFormat::I16Pairs => 2,
        }
    }
}

/// Which weights a kernel is exact for; enforced by [`super::PackedB::with_ukernel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightRange {
    /// Any s8 weights.
    Full,
    /// For every column and every aligned k-pair `(w[2j], w[2j+1])`: the positive parts sum to
    /// ≤ 128 and the negative parts to ≥ −128. Then `a0·w0 + a1·w1` lies in
    /// `[−255·128, 255·128] ⊂ i16` for all u8 `a`, so `vpmaddubsw` cannot saturate. Implied by
    /// `|w| ≤ 64` (the "7-bit weights" remedy).
    PairSum128,
}

impl WeightRange {
    /// Whether a k-pair of one column is admitted.
    pub fn admits_pair(self, w0: i8, w1: i8) -> bool {
        match self {
            WeightRange::Full => true,
            WeightRange::PairSum128 => {
                let (w0, w1) = (i32::from(w0), i32::from(w1));
                w0.max(0) + w1.max(0) <= 128 && w0.min(0) + w1.min(0) >= -128
            }
        }
    }
}

/// Output of one tile. Pointers address the tile's top-left element; rows are `ldc` elements
/// apart. Parameter pointers address `nr` values for the tile's columns (padded by the driver).
#[derive(Clone, Copy, Debug)]
pub enum TileOutput {
    I32 {
        c: *mut i32,
    },
    U8 {
        c: *mut u8,
        mult: *const f32,
        zp: i32,
        qmin: i32,
        qmax: i32,
    },
    I8 {
        c: *mut i8,
        mult: *const f32,
        zp: i32,
        qmin: i32,
        qmax: i32,
    },
    F32 {
        c: *mut f32,
        scale: *const f32,
        bias: *const f32,
    },
}

/// Arguments of one micro-kernel call: an `m×n` tile (`m ≤ mr`, `n ≤ nr`) over depth `k`.
#[derive(Clone, Copy, Debug)]
pub struct QGemmTile<'a> {
    /// Rows to compute and store, `1..=mr`.
    pub m: usize,
    /// Columns to store, `1..=nr` (the kernel always computes `nr`; B is padded).
    pub n: usize,
    /// Logical depth (unpadded).
    pub k: usize,
    /// A, in the kernel's [`AFormat`].
    pub a: *const u8,
    /// Row stride of A in bytes (of the caller's matrix, or of the packed panel).
    pub lda: usize,
    /// Indirect A (kernels with `indirect: true`; null otherwise): `m` row pointers; row
    /// `r`'s K bytes are `segs` runs of `k / segs` bytes, run `s` at `a_rows[r] + s·seg_stride`
    /// (`a` and `lda` are then unused). A conv reads its NHWC input this way, one run per
    /// kernel row, with no im2col copy. `k / segs` is a multiple of 4.
    pub a_rows: *const *const u8,
    pub segs: usize,
    pub seg_stride: usize,
    /// The packed B strip (`ceil(k/kr)` groups × `nr` × `kr` elements).
    pub b: *const u8,
    /// `nr` initial accumulator values (bias with folded zero-point terms).
    pub col_bias: *const i32,
    /// `m` row sums of A, or null when all weight zero points are 0.
    pub row_sums: *const i32,
    /// `nr` weight zero points (read only when `row_sums` is non-null).
    pub b_zp: *const i32,
    pub out: TileOutput,
    /// Row stride of the output in elements.
    pub ldc: usize,
    pub _lifetime: PhantomData<&'a ()>,
}

/// One GEMM micro-kernel.
#[derive(Debug)]
pub struct QGemmUkernel {
    /// Same string as the file name, e.g. `gemm_u8s8_6x16c2_avx2`.
    pub name: &'static str,
    pub isa: Isa,
    pub mr: u8,
    pub nr: u8,
    pub kr: u8,
    pub numerics: Numerics,
    pub a_format: AFormat,
    pub b_format: BFormat,
    pub weights: WeightRange,
    /// Reads indirect A ([`QGemmTile::a_rows`]).
    pub indirect: bool,
    /// Computes one tile.
    ///
    /// # Safety
    /// The host supports `isa`; every pointer in the tile is valid for the reads/writes the
    /// formats above describe (A: `m` rows × `k` bytes, or the packed panel; B: a whole padded
    /// strip; parameter arrays: `nr` values; C: `m` rows × `n` elements at stride `ldc`).
    pub run: unsafe fn(&QGemmTile<'_>),
}
