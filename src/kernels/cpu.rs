//! Host feature probes (once per process) and the `ONNXQ_ISA` override.
//!
//! - `ONNXQ_ISA=scalar|avx2|avxvnni|avx512vnni|amx` pins [`super::best`] to that ISA.
//! - `ONNXQ_ISA_ENSURE=1` turns a pinned-but-missing (or misspelled) ISA into a hard error
//!   instead of a fallback, so a CI job that is meant to exercise e.g. VNNI fails on a host
//!   without it rather than silently testing something else (matrixmultiply's
//!   `MMTEST_FEATURE` + `MMTEST_ENSUREFEATURE`).
//!
//! The resolution logic is the pure function [`choose`], so it is testable without touching
//! the process environment.

use std::fmt;
use std::sync::OnceLock;

use super::Isa;

/// CPU features relevant to the int8 kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostFeatures {
    pub avx2: bool,
    pub fma: bool,
    pub avxvnni: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vnni: bool,
    /// CPUID AMX-TILE and AMX-INT8 bits. The OS permission (`arch_prctl`) is not requested.
    pub amx_int8: bool,
}

impl HostFeatures {
    /// Probes the running CPU.
    pub fn detect() -> HostFeatures {
        #[cfg(target_arch = "x86_64")]
        {
            HostFeatures {
                avx2: is_x86_feature_detected!("avx2"),
                fma: is_x86_feature_detected!("fma"),
                avxvnni: is_x86_feature_detected!("avxvnni"),
                avx512f: is_x86_feature_detected!("avx512f"),
                avx512bw: is_x86_feature_detected!("avx512bw"),
                avx512vnni: is_x86_feature_detected!("avx512vnni"),
                amx_int8: amx_cpuid(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            HostFeatures::default()
        }
    }

    /// Whether kernels of `isa` can run on this host.
    pub fn supports(&self, isa: Isa) -> bool {
        match isa {
            Isa::Scalar => true,
            Isa::Avx2 => self.avx2,
            Isa::AvxVnni => self.avx2 && self.avxvnni,
            Isa::Avx512Vnni => self.avx512f && self.avx512bw && self.avx512vnni,
            Isa::Amx => self.amx_int8 && self.avx512f,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn amx_cpuid() -> bool {
    use core::arch::x86_64::__cpuid_count;
    // CPUID is always available on x86_64 (the intrinsic is safe); leaf 0 gives the max leaf.
    let max_leaf = __cpuid_count(0, 0).eax;
    if max_leaf < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    let amx_tile = edx & (1 << 24) != 0;
    let amx_int8 = edx & (1 << 25) != 0;
    amx_tile && amx_int8
}

/// The host's features, probed once per process.
pub fn host() -> &'static HostFeatures {
    static HOST: OnceLock<HostFeatures> = OnceLock::new();
    HOST.get_or_init(HostFeatures::detect)
}

/// The parsed environment override.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvOverride {
    /// Raw value of `ONNXQ_ISA` (unset or empty: `None`).
    pub isa: Option<String>,
    /// `ONNXQ_ISA_ENSURE` is set to something other than `""`/`0`.
    pub ensure: bool,
}

impl EnvOverride {
    pub fn from_env() -> EnvOverride {
        let isa = std::env::var("ONNXQ_ISA")
            .ok()
            .filter(|s| !s.trim().is_empty());
        let ensure = std::env::var("ONNXQ_ISA_ENSURE")
            .map(|v| !matches!(v.trim(), "" | "0"))
            .unwrap_or(false);
        EnvOverride { isa, ensure }
    }
}

/// Why a pinned ISA could not be honoured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IsaError {
    Unknown(String),
    Unavailable(Isa),
}

impl fmt::Display for IsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsaError::Unknown(s) => write!(
                f,
                "unknown ISA {s:?} (expected scalar, avx2, avxvnni, avx512vnni or amx)"
            ),
            IsaError::Unavailable(isa) => write!(
                f,
                "ISA {isa} is pinned but this host (or this build) cannot run its kernels"
            ),
        }
    }
}

impl std::error::Error for IsaError {}

/// Resolves the ISA to use. `has_kernels(isa)` says whether a kernel set is compiled in for
/// `isa`. Without a pin: the most capable ISA the host supports and that has kernels. With a
/// pin that cannot be honoured: that fallback, or an error when `ensure` is set.
pub fn choose(
    ovr: &EnvOverride,
    host: &HostFeatures,
    has_kernels: impl Fn(Isa) -> bool,
) -> Result<Isa, IsaError> {
    let usable = |isa: Isa| host.supports(isa) && has_kernels(isa);
    let fallback = Isa::ALL
        .into_iter()
        .rev()
        .find(|&isa| usable(isa))
        .unwrap_or(Isa::Scalar);
    let Some(raw) = &ovr.isa else {
        return Ok(fallback);
    };
    let err = match Isa::parse(raw) {
        Some(isa) if usable(isa) => return Ok(isa),
        Some(isa) => IsaError::Unavailable(isa),
        None => IsaError::Unknown(raw.clone()),
    };
    if ovr.ensure {
        Err(err)
    } else {
        eprintln!("onnxq: ONNXQ_ISA: {err}; falling back to {fallback}");
        Ok(fallback)
    }
}
