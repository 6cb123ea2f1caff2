//! fbgemm (x86 server): u8 activations with reduce_range (the AVX2
//! `vpmaddubsw` path saturates otherwise), s8 symmetric per-channel weights,
//! i32 bias. PyTorch's `get_default_qconfig("fbgemm")`.

use super::{standard_patterns, BackendConfig, DTypeConfig, QDType};

pub(super) fn config() -> BackendConfig {
    let weighted = DTypeConfig {
        activation: QDType::U8,
        weight: Some(QDType::I8),
        bias: Some(QDType::I32),
        weight_per_channel: true,
        reduce_range: true,
    };
    let plain = DTypeConfig {
        weight: None,
        bias: None,
        weight_per_channel: false,
        ..weighted
    };
    BackendConfig {
        name: "fbgemm",
        patterns: standard_patterns(weighted, plain),
    }
}
