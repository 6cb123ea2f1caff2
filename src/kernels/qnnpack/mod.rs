//! qnnpack-style int8 kernels: u8 activations × u8 weights, both zero points, fixed-point
//! requantization, convolution through an indirection buffer, specialised depthwise kernels.
//!
//! Semantics (kept here, next to the family; habit 21):
//! - `acc[m,n] = bias[n] + Σ_k (A[m,k] − a_zp)(W[n,k] − w_zp[n])` in i32 (per-tensor or
//!   per-channel `w_zp`), then `y = clamp(requant(acc, s[n]) + y_zp, qmin, qmax)` with the
//!   single-rounding fixed-point requantization of
//!   [`crate::kernels::reference::requant_fixedpoint`] (int32 multiplier + shift per channel;
//!   ties away from zero, or to even with [`Rounding::HalfEven`]).
//! - The micro-kernels widen both operands to 16 bit (QNNPACK: `punpcklbw`/`vpmovzxbw`),
//!   subtract the weight zero point from B, and use `pmaddwd`/`vpmaddwd`: every pair sum is at
//!   most 2·255·255 < 2³¹, so they are **exact for all inputs** (no saturation, unlike
//!   `vpmaddubsw`). The activation zero point is folded into the packed bias at pack time
//!   ([`pack`]), so padding taps point at a row filled with `a_zp` and contribute exactly 0.
//!   The preferred AVX2 kernel (`q8gemm_6x16c2_avx2`, [`Q8GemmLayout::I16Pairs`]) packs B once
//!   as i16 `w − w_zp` and has the driver widen A once per call (MLAS u8u8 style); on VNNI
//!   hosts `q8gemm_6x16c4_avxvnni` / `_avx512vnni` ([`Q8GemmLayout::S8Quads`]) flip u8 weights
//!   to s8 `w − 128` at pack time and use `vpdpbusd`, adding `(128 − w_zp)·Σa` when
//!   `w_zp ≠ 128` (same i32 accumulators, exact).
//! - Convolution never materialises im2col: an [`indirection`] buffer of input pixel indices,
//!   built once per input shape, feeds `ks × MR` row pointers per tile to the same GEMM
//!   micro-kernel (a plain GEMM is `ks = 1`).
//! - Depthwise 3×3 and 5×5 have dedicated kernels (tap-pair `pmaddwd`, channels in blocks of
//!   `cr`; on AVX2 first the `c32` ones: byte quads of four taps and `vpmaddubsw`, exact by a
//!   pack-time direct/split choice per tap group), average pooling shares their row indirection, Add follows QNNPACK `q8vadd`, unary
//!   ops are 256-entry tables ([`ops::Q8Lut`]).
//!
//! Every micro-kernel has a scalar version and SSE2/AVX2 versions, one file each named by tile
//! and ISA, all checked bit-exact against [`crate::kernels::reference`] by the shared tester
//! in [`testing`]. On aarch64 only the scalar kernels are compiled (NEON versions: not written,
//! the layouts are ready for them: 8-byte k chunks, i16 tap pairs).

pub mod indirection;
pub mod ops;
pub mod pack;
pub mod testing;
pub mod ukernel;

pub mod q8avgpool_scalar;
pub mod q8dwconv_3x3_scalar;
pub mod q8dwconv_5x5_scalar;
pub mod q8gemm_4x4c2_scalar;
pub mod q8vadd_scalar;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod q8avgpool_avx2;
#[cfg(target_arch = "x86_64")]
pub mod q8dwconv_3x3_avx2;
#[cfg(target_arch = "x86_64")]
pub mod q8dwconv_3x3_sse2;
#[cfg(target_arch = "x86_64")]
pub mod q8dwconv_3x3c32_avx2;
#[cfg(target_arch = "x86_64")]
pub mod q8dwconv_5x5_avx2;
#[cfg(target_arch = "x86_64")]
pub mod q8dwconv_5x5_sse2;
#[cfg(target_arch = "x86_64")]
pub mod q8dwconv_5x5c32_avx2;
#[cfg(target_arch = "x86_64")]
pub mod q8gemm_4x16c2_avx2;
#[cfg(target_arch = "x86_64")]
pub mod q8gemm_4x4c2_sse2;
#[cfg(target_arch = "x86_64")]
pub mod q8gemm_6x16c2_avx2;
#[cfg(target_arch = "x86_64")]
pub mod q8gemm_6x16c4_avx2;
#[cfg(target_arch = "x86_64")]
pub mod q8gemm_6x16c4_avx512vnni;
#[cfg(target_arch = "x86_64")]
pub mod q8gemm_6x16c4_avxvnni;
#[cfg(target_arch = "x86_64")]
pub mod q8vadd_avx2;
#[cfg(target_arch = "x86_64")]
mod sse2;

pub use crate::kernels::reference::requant_fixedpoint::{Q8Output, Requant, Rounding};
pub use indirection::{ConvIndirection, DwIndirection};
pub use ops::{q8avgpool, q8conv, q8dwconv, q8gavgpool, q8gemm, q8vadd, Q8Lut};
pub use pack::{PackedQ8Dw, PackedQ8Gemm};
pub use ukernel::{
    Q8AddUkernel, Q8DwRow, Q8DwUkernel, Q8GemmLayout, Q8GemmTile, Q8GemmUkernel, Q8PoolRow,
    Q8PoolUkernel,
};

/// The qnnpack-style kernels of one dispatch tier; in each list the first entry is preferred,
/// the others are alternates (tested, selectable with `PackedQ8Gemm::new(uk, …)`).
#[derive(Debug)]
pub struct QnnpackKernels {
    pub q8gemm: &'static [&'static Q8GemmUkernel],
    pub q8dwconv_3x3: &'static [&'static Q8DwUkernel],
    pub q8dwconv_5x5: &'static [&'static Q8DwUkernel],
    pub q8avgpool: &'static [&'static Q8PoolUkernel],
    pub q8vadd: &'static [&'static Q8AddUkernel],
}

impl QnnpackKernels {
    /// The preferred depthwise kernel for a `kh×kw` window, if one exists (3×3, 5×5).
    pub fn dwconv(&self, kh: usize, kw: usize) -> Option<&'static Q8DwUkernel> {
        match (kh, kw) {
            (3, 3) => self.q8dwconv_3x3.first().copied(),
            (5, 5) => self.q8dwconv_5x5.first().copied(),
            _ => None,
        }
    }
}

pub static SCALAR: QnnpackKernels = QnnpackKernels {
    q8gemm: &[&q8gemm_4x4c2_scalar::Q8GEMM_4X4C2_SCALAR],
    q8dwconv_3x3: &[&q8dwconv_3x3_scalar::Q8DWCONV_3X3_SCALAR],
    q8dwconv_5x5: &[&q8dwconv_5x5_scalar::Q8DWCONV_5X5_SCALAR],
    q8avgpool: &[&q8avgpool_scalar::Q8AVGPOOL_SCALAR],
    q8vadd: &[&q8vadd_scalar::Q8VADD_SCALAR],
};

/// AVX2 first, SSE2 alternates (SSE2 is baseline on x86_64 but has no rung of its own in
/// [`crate::kernels::Isa`]).
#[cfg(target_arch = "x86_64")]
pub static AVX2: QnnpackKernels = QnnpackKernels {
    q8gemm: &[
        &q8gemm_6x16c2_avx2::Q8GEMM_6X16C2_AVX2,
        &q8gemm_4x16c2_avx2::Q8GEMM_4X16C2_AVX2,
        &q8gemm_4x4c2_sse2::Q8GEMM_4X4C2_SSE2,
        &q8gemm_6x16c4_avx2::Q8GEMM_6X16C4_AVX2,
    ],
    q8dwconv_3x3: &[
        &q8dwconv_3x3c32_avx2::Q8DWCONV_3X3C32_AVX2,
        &q8dwconv_3x3_avx2::Q8DWCONV_3X3_AVX2,
        &q8dwconv_3x3_sse2::Q8DWCONV_3X3_SSE2,
    ],
    q8dwconv_5x5: &[
        &q8dwconv_5x5c32_avx2::Q8DWCONV_5X5C32_AVX2,
        &q8dwconv_5x5_avx2::Q8DWCONV_5X5_AVX2,
        &q8dwconv_5x5_sse2::Q8DWCONV_5X5_SSE2,
    ],
    q8avgpool: &[&q8avgpool_avx2::Q8AVGPOOL_AVX2],
    q8vadd: &[&q8vadd_avx2::Q8VADD_AVX2],
};

/// The AVX-VNNI tier: the VNNI flip GEMM kernel first (u8 weights stored as s8 `w − 128`,
/// `vpdpbusd`), then the AVX2 ones; the other kernel kinds are the AVX2 set's.
#[cfg(target_arch = "x86_64")]
pub static AVXVNNI: QnnpackKernels = QnnpackKernels {
    q8gemm: &[
        &q8gemm_6x16c4_avxvnni::Q8GEMM_6X16C4_AVXVNNI,
        &q8gemm_6x16c2_avx2::Q8GEMM_6X16C2_AVX2,
        &q8gemm_4x16c2_avx2::Q8GEMM_4X16C2_AVX2,
        &q8gemm_4x4c2_sse2::Q8GEMM_4X4C2_SSE2,
    ],
    q8dwconv_3x3: AVX2.q8dwconv_3x3,
    q8dwconv_5x5: AVX2.q8dwconv_5x5,
    q8avgpool: AVX2.q8avgpool,
    q8vadd: AVX2.q8vadd,
};

/// The AVX-512 VNNI tier: the same with the EVEX `vpdpbusd ymm` twin (VNNI hosts without the
/// VEX AVX-VNNI encoding).
#[cfg(target_arch = "x86_64")]
pub static AVX512VNNI: QnnpackKernels = QnnpackKernels {
    q8gemm: &[
        &q8gemm_6x16c4_avx512vnni::Q8GEMM_6X16C4_AVX512VNNI,
        &q8gemm_6x16c2_avx2::Q8GEMM_6X16C2_AVX2,
        &q8gemm_4x16c2_avx2::Q8GEMM_4X16C2_AVX2,
        &q8gemm_4x4c2_sse2::Q8GEMM_4X4C2_SSE2,
    ],
    q8dwconv_3x3: AVX2.q8dwconv_3x3,
    q8dwconv_5x5: AVX2.q8dwconv_5x5,
    q8avgpool: AVX2.q8avgpool,
    q8vadd: AVX2.q8vadd,
};

/// Whether the host can run code compiled for `target` ("" = portable).
pub fn host_has(target: &str) -> bool {
    match target {
        "" => true,
        #[cfg(target_arch = "x86_64")]
        "sse2" => true,
        #[cfg(target_arch = "x86_64")]
        "avx2" => crate::kernels::cpu::host().avx2,
        #[cfg(target_arch = "x86_64")]
        "avxvnni" => {
            let h = crate::kernels::cpu::host();
            h.avx2 && h.avxvnni
        }
        #[cfg(target_arch = "x86_64")]
        "avx512vnni" => {
            let h = crate::kernels::cpu::host();
            h.avx2 && h.avx512f && h.avx512vnni && std::arch::is_x86_feature_detected!("avx512vl")
        }
        _ => false,
    }
}

/// Every distinct qnnpack-style kernel set of the available tiers, least capable first
/// (several tiers share the AVX2 set).
pub fn available() -> impl Iterator<Item = &'static QnnpackKernels> {
    let mut seen: Vec<*const QnnpackKernels> = Vec::new();
    crate::kernels::available()
        .iter()
        .map(|k| k.qnnpack)
        .filter(move |q| {
            let p: *const QnnpackKernels = *q;
            let new = !seen.contains(&p);
            seen.push(p);
            new
        })
}

/// Every GEMM/conv micro-kernel of [`available`] sets (for the shared tester).
pub fn available_q8gemm() -> impl Iterator<Item = &'static Q8GemmUkernel> {
    available().flat_map(|k| k.q8gemm.iter().copied())
}

/// Every depthwise micro-kernel of [`available`] sets.
pub fn available_q8dwconv() -> impl Iterator<Item = &'static Q8DwUkernel> {
    available().flat_map(|k| k.q8dwconv_3x3.iter().chain(k.q8dwconv_5x5).copied())
}

/// Every average-pool micro-kernel of [`available`] sets.
pub fn available_q8avgpool() -> impl Iterator<Item = &'static Q8PoolUkernel> {
    available().flat_map(|k| k.q8avgpool.iter().copied())
}

/// Every Add micro-kernel of [`available`] sets.
pub fn available_q8vadd() -> impl Iterator<Item = &'static Q8AddUkernel> {
    available().flat_map(|k| k.q8vadd.iter().copied())
}
