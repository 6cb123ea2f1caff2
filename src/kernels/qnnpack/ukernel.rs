//! The uniform micro-kernel interfaces of the qnnpack-style family: plain metadata structs plus
//! a function pointer (QNNPACK `q8conv_parameters`), one per kernel kind.

use std::marker::PhantomData;

use crate::kernels::reference::requant_fixedpoint::Q8Output;
use crate::kernels::{Isa, Numerics};

/// Arguments of one GEMM/conv micro-kernel call: an `m×n` output tile (`m ≤ mr`, `n ≤ nr`)
/// over `ks` taps of `kc` channels each (QNNPACK `q8conv`; a plain GEMM is `ks = 1`).
#[derive(Clone, Copy, Debug)]
pub struct Q8GemmTile<'a> {
    /// Rows to store, `1..=mr` (all `mr` rows are computed: the row pointers of rows `≥ m`
    /// repeat a valid row).
    pub m: usize,
    /// Columns to store, `1..=nr`.
    pub n: usize,
    /// Channels per tap (the GEMM depth when `ks = 1`).
    pub kc: usize,
    /// Taps, ≥ 1.
    pub ks: usize,
    /// `ks × mr` row pointers, tap-major; each is readable for `kc` bytes
    /// ([`Q8GemmLayout::U8Chunk8`]), or, for [`Q8GemmLayout::I16Pairs`] kernels, points at
    /// `kcp` i16 values (`kc` rounded up to `kc_align`: A already widened by the driver).
    pub a: *const *const u8,
    /// One packed block of `nr` output channels (see [`super::pack`]).
    pub w: *const u8,
    /// Top-left output byte; rows are `ldc` bytes apart.
    pub c: *mut u8,
    pub ldc: usize,
    pub out: Q8Output,
    pub _lifetime: PhantomData<&'a ()>,
}

/// How a GEMM micro-kernel wants its operands (see [`super::pack`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Q8GemmLayout {
    /// B as u8 k-pairs in 8-k chunks with the weight zero point in the header; A read through
    /// the `ks × mr` row pointers (QNNPACK).
    U8Chunk8,
    /// B as i16 `w − w_zp` k-pairs; A widened to i16 once per call by the driver (the GEMM's
    /// A matrix, or the conv's input image, so each pixel once however many taps read it) and
    /// read through the row pointers (MLAS u8u8 style, with the indirection of QNNPACK).
    I16Pairs,
    /// The VNNI flip: u8 weights stored as s8 `w − 128` k-quads (for `vpdpbusd`), the
    /// per-column `128 − w_zp` and a row-sum flag after the header; A read as u8 through the
    /// row pointers. `Σ a·(w − w_zp) = Σ a·(w − 128) + (128 − w_zp)·Σ a`, both exact.
    S8Quads,
}

/// One GEMM/conv micro-kernel (u8 × u8, 16-bit widening, fixed-point epilogue).
#[derive(Debug)]
pub struct Q8GemmUkernel {
    /// Same string as the file name, e.g. `q8gemm_4x4c2_sse2`.
    pub name: &'static str,
    /// The dispatch tier whose kernel set lists it (SSE2 kernels sit in the AVX2 tier: the
    /// `Isa` ladder has no SSE2 rung).
    pub isa: Isa,
    /// The `target_feature` the body is compiled for ("" for portable code).
    pub target: &'static str,
    pub mr: u8,
    pub nr: u8,
    /// Consecutive k per column in the packed layout (2: `pmaddwd` pairs).
    pub kr: u8,
    /// Each tap's `kc` is padded (with the weight zero point) to a multiple of this.
    pub kc_align: u8,
    pub layout: Q8GemmLayout,
    pub numerics: Numerics,
    /// # Safety
    /// The host supports `target`; every pointer in the tile is valid as documented there.
    pub run: unsafe fn(&Q8GemmTile<'_>),
}

/// Arguments of one depthwise micro-kernel call: `width` output pixels of one row.
#[derive(Clone, Copy, Debug)]
pub struct Q8DwRow<'a> {
    pub channels: usize,
    pub width: usize,
    /// Tap pointers of the first pixel (`taps` of them, order `kx·KH + ky`); pixel `i` uses
    /// `a + i·a_step`. Each pointer is readable for `channels` bytes.
    pub a: *const *const u8,
    pub a_step: usize,
    /// The whole packed weight buffer (see [`super::pack::PackedQ8Dw`]).
    pub w: *const u8,
    /// First output pixel; pixels are `c_stride` bytes apart, each written for `channels`.
    pub c: *mut u8,
    pub c_stride: usize,
    pub out: Q8Output,
    pub _lifetime: PhantomData<&'a ()>,
}

/// The packed block layout a depthwise micro-kernel reads ([`super::pack`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Q8DwLayout {
    /// `cr` channels of i16 tap pairs.
    Pairs,
    /// 32 channels of byte-quad tap groups (`taps = 4G + 1`), the fbgemm `c32` weight block.
    Quads,
}

/// One depthwise micro-kernel for a fixed tap count.
#[derive(Debug)]
pub struct Q8DwUkernel {
    pub name: &'static str,
    pub isa: Isa,
    pub target: &'static str,
    /// 9 (3×3) or 25 (5×5).
    pub taps: u8,
    /// Channels per packed block.
    pub cr: u8,
    pub numerics: Numerics,
    pub layout: Q8DwLayout,
    /// # Safety
    /// The host supports `target`; pointers valid as documented on [`Q8DwRow`].
    pub run: unsafe fn(&Q8DwRow<'_>),
}

/// Arguments of one elementwise-add micro-kernel call.
#[derive(Clone, Copy, Debug)]
pub struct Q8AddCall<'a> {
    pub n: usize,
    pub a: *const u8,
    pub b: *const u8,
    pub y: *mut u8,
    pub params: &'a crate::kernels::reference::q8vadd::Q8AddParams,
}

/// One elementwise-add micro-kernel (QNNPACK `q8vadd`).
#[derive(Debug)]
pub struct Q8AddUkernel {
    pub name: &'static str,
    pub isa: Isa,
    pub target: &'static str,
    pub numerics: Numerics,
    /// # Safety
    /// The host supports `target`; `a`, `b` readable and `y` writable for `n` bytes.
    pub run: unsafe fn(&Q8AddCall<'_>),
}

/// Arguments of one average-pool micro-kernel call (`width` output pixels of one row, same
/// indirection layout as [`Q8DwRow`]; `taps` per pixel).
#[derive(Clone, Copy, Debug)]
pub struct Q8PoolRow<'a> {
    pub channels: usize,
    pub width: usize,
    pub taps: usize,
    pub a: *const *const u8,
    pub a_step: usize,
    /// Per output pixel of the row: its fixed-point scale (valid-tap count already applied).
    pub requant: *const crate::kernels::reference::requant_fixedpoint::Requant,
    pub x_zp: u8,
    pub c: *mut u8,
    pub c_stride: usize,
    pub out: Q8Output,
    pub _lifetime: PhantomData<&'a ()>,
}

/// One average-pool micro-kernel (any tap count, multipass over taps).
#[derive(Debug)]
pub struct Q8PoolUkernel {
    pub name: &'static str,
    pub isa: Isa,
    pub target: &'static str,
    pub numerics: Numerics,
    /// # Safety
    /// The host supports `target`; pointers valid as documented on [`Q8PoolRow`]; padding
    /// taps point at a buffer of `x_zp` bytes.
    pub run: unsafe fn(&Q8PoolRow<'_>),
}
