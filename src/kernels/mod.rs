//! Int8 compute kernels of the native executor.
//!
//! Layout (see `research/style.md`, habits 17–21):
//! - [`reference`]: scalar ground truth with exact ONNX semantics. Every SIMD path is tested
//!   bit-exact against it by the shared tester in [`testing`].
//! - [`fbgemm`]: u8 activations × s8 (per-channel) weights, weights prepacked once, all static
//!   zero-point terms folded into a packed per-column bias, a fused output stage in the
//!   micro-kernel epilogue.
//! - [`cpu`]: feature detection (once per process) and the `ONNXQ_ISA` / `ONNXQ_ISA_ENSURE`
//!   override.
//!
//! Dispatch: [`available`] lists one [`Kernels`] set per ISA the host can run (tests iterate over
//! it), [`for_isa`] pins one, [`best`] is what the executor uses (the best host ISA, or the one
//! pinned by `ONNXQ_ISA`).

pub mod cpu;
pub mod fbgemm;
pub mod heap; // heap thresholds: freed buffers stay mapped between runs
pub mod histc; // histogram binning of the calibration observers
pub mod qbinary; // quantized elementwise Add/Sub/Mul/Div (dequantize, op, quantize)
#[cfg(target_arch = "x86_64")]
mod qbinary_avx2;
pub mod qnnpack; // qnnpack-style family (u8×u8, fixed-point requant, indirection conv)
pub mod quantize;
#[cfg(target_arch = "x86_64")]
mod quantize_avx2;
pub mod reference;
pub mod sgemm;
pub mod small_qgemm;
pub mod testing;
pub mod transpose;
pub mod vmath;

use std::fmt;
use std::sync::OnceLock;

pub use cpu::{HostFeatures, IsaError};
pub use fbgemm::dwconv::DwConvUkernel; // [fbconv]
pub use fbgemm::ukernel::{QGemmTile, QGemmUkernel, TileOutput, WeightRange};

/// Instruction-set level of a kernel. Ordered from least to most capable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, no `core::arch`. Always available; also the fallback.
    Scalar,
    /// AVX2 (`vpmaddubsw`/`vpmaddwd` paths).
    Avx2,
    /// AVX-VNNI: VEX-encoded `vpdpbusd` on ymm (Alder Lake, Sapphire Rapids, Zen 5).
    AvxVnni,
    /// AVX-512F/BW + AVX512-VNNI: `vpdpbusd` on zmm.
    Avx512Vnni,
    /// AMX-INT8 tiles. Detected and nameable, but no kernel ships yet.
    Amx,
}

impl Isa {
    /// Every ISA, least capable first.
    pub const ALL: [Isa; 5] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::AvxVnni,
        Isa::Avx512Vnni,
        Isa::Amx,
    ];

    /// The spelling used by `ONNXQ_ISA`.
    pub fn as_str(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Amx => "amx",
        }
    }

    /// Parses the `ONNXQ_ISA` spelling (case-insensitive).
    pub fn parse(s: &str) -> Option<Isa> {
        let s = s.trim().to_ascii_lowercase();
        Isa::ALL.into_iter().find(|isa| isa.as_str() == s)
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a kernel's results relate to the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Numerics {
    /// Bit-exact with [`reference`] for every input the kernel accepts.
    Exact,
    /// Within 1 LSB of the reference (reserved; no kernel uses it yet).
    Approx,
}

/// The kernels of one ISA, in preference order where a family has several variants.
#[derive(Debug)]
pub struct Kernels {
    pub isa: Isa,
    /// fbgemm-style u8×s8 GEMM micro-kernels. The first one whose [`WeightRange`] admits the
    /// weights is chosen at pack time (see [`fbgemm::PackedB::new`]).
    pub gemm_u8s8: &'static [&'static QGemmUkernel],
    // [fbconv]
    /// Depthwise conv micro-kernels, in preference order: packing takes the first one of the
    /// conv's kernel size whose weight layout admits the weights (see
    /// [`fbgemm::conv::PackedConv`]).
    pub dwconv_u8s8: &'static [&'static DwConvUkernel],
    /// qnnpack-style u8×u8 kernels (GEMM/conv, depthwise, pooling, Add) of this tier.
    pub qnnpack: &'static qnnpack::QnnpackKernels,
    /// Histogram bin indices (calibration's histogram observers).
    pub histc: &'static histc::HistcUkernel,
}

static SCALAR: Kernels = Kernels {
    isa: Isa::Scalar,
    gemm_u8s8: &[&fbgemm::gemm_u8s8_4x16c4_scalar::GEMM_U8S8_4X16C4_SCALAR],
    // [fbconv]
    dwconv_u8s8: &[
        &fbgemm::dwconv_u8s8_scalar::DWCONV_U8S8_3X3_SCALAR,
        &fbgemm::dwconv_u8s8_scalar::DWCONV_U8S8_5X5_SCALAR,
    ],
    qnnpack: &qnnpack::SCALAR,
    histc: &histc::histc_scalar::HISTC_SCALAR,
};

// [fbconv] AVX2 depthwise kernels, also used by the VNNI sets (no VNNI-specific ones yet).
#[cfg(target_arch = "x86_64")]
static DWCONV_AVX2: [&DwConvUkernel; 4] = [
    &fbgemm::dwconv_u8s8_3x3c32_avx2::DWCONV_U8S8_3X3C32_AVX2,
    &fbgemm::dwconv_u8s8_5x5c32_avx2::DWCONV_U8S8_5X5C32_AVX2,
    &fbgemm::dwconv_u8s8_3x3_avx2::DWCONV_U8S8_3X3_AVX2,
    &fbgemm::dwconv_u8s8_5x5_avx2::DWCONV_U8S8_5X5_AVX2,
];

#[cfg(target_arch = "x86_64")]
static AVX2: Kernels = Kernels {
    isa: Isa::Avx2,
    gemm_u8s8: &[
        &fbgemm::gemm_u8s8_6x16c4_avx2::GEMM_U8S8_6X16C4_AVX2,
        &fbgemm::gemm_u8s8_6x16c2_avx2::GEMM_U8S8_6X16C2_AVX2,
    ],
    dwconv_u8s8: &DWCONV_AVX2, // [fbconv]
    qnnpack: &qnnpack::AVX2,
    histc: &histc::histc_avx2::HISTC_AVX2,
};

#[cfg(target_arch = "x86_64")]
static AVXVNNI: Kernels = Kernels {
    isa: Isa::AvxVnni,
    gemm_u8s8: &[&fbgemm::gemm_u8s8_6x16c4_avxvnni::GEMM_U8S8_6X16C4_AVXVNNI],
    dwconv_u8s8: &DWCONV_AVX2,  // [fbconv]
    qnnpack: &qnnpack::AVXVNNI, // the VNNI-flip q8gemm, then the AVX2 kernels
    histc: &histc::histc_avx2::HISTC_AVX2,
};

#[cfg(target_arch = "x86_64")]
static AVX512VNNI: Kernels = Kernels {
    isa: Isa::Avx512Vnni,
    gemm_u8s8: &[&fbgemm::gemm_u8s8_6x64c4_avx512vnni::GEMM_U8S8_6X64C4_AVX512VNNI],
    dwconv_u8s8: &DWCONV_AVX2,     // [fbconv]
    qnnpack: &qnnpack::AVX512VNNI, // the VNNI-flip q8gemm (EVEX ymm), then the AVX2 kernels
    histc: &histc::histc_avx2::HISTC_AVX2,
};

/// The kernel set of `isa`, whether or not this host can run it (`None` if none is compiled in,
/// e.g. AMX, or x86 ISAs on other architectures).
pub fn compiled(isa: Isa) -> Option<&'static Kernels> {
    match isa {
        Isa::Scalar => Some(&SCALAR),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(&AVX2),
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => Some(&AVXVNNI),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Some(&AVX512VNNI),
        _ => None,
    }
}

/// Every kernel set this host can run, least capable first. Tests iterate over this.
pub fn available() -> &'static [&'static Kernels] {
    static AVAILABLE: OnceLock<Vec<&'static Kernels>> = OnceLock::new();
    AVAILABLE.get_or_init(|| {
        let host = cpu::host();
        Isa::ALL
            .into_iter()
            .filter(|&isa| host.supports(isa))
            .filter_map(compiled)
            .collect()
    })
}

/// Every micro-kernel of [`available`] sets, flattened (for the shared tester).
pub fn available_gemm_u8s8() -> impl Iterator<Item = &'static QGemmUkernel> {
    available().iter().flat_map(|k| k.gemm_u8s8.iter().copied())
}

/// The kernel set of `isa` if this host can run it.
pub fn for_isa(isa: Isa) -> Option<&'static Kernels> {
    available().iter().copied().find(|k| k.isa == isa)
}

/// The kernel set the executor uses: `ONNXQ_ISA` if set (falling back to the best available
/// set when the pinned ISA is missing, unless `ONNXQ_ISA_ENSURE=1`, which panics instead),
/// otherwise the most capable available set.
///
/// # Panics
/// With `ONNXQ_ISA_ENSURE=1` when the pinned ISA is unknown or unavailable, or when
/// `ONNXQ_ISA` cannot be parsed.
pub fn best() -> &'static Kernels {
    static BEST: OnceLock<&'static Kernels> = OnceLock::new();
    BEST.get_or_init(|| {
        let choice = cpu::choose(&cpu::EnvOverride::from_env(), cpu::host(), |isa| {
            for_isa(isa).is_some()
        });
        match choice {
            Ok(isa) => for_isa(isa).expect("cpu::choose returns an available ISA"),
            Err(e) => panic!("ONNXQ_ISA: {e}"),
        }
    })
}
