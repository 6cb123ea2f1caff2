//! qnnpack (mobile): u8 asymmetric activations without reduce_range,
//! per-tensor weights (QNNPACK's native form), i32 bias. PyTorch's
//! `get_default_qconfig("qnnpack")`.

use super::{standard_patterns, BackendConfig, DTypeConfig, QDType};

pub(super) fn config() -> BackendConfig {
    let weighted = DTypeConfig {
        activation: QDType::U8,
        weight: Some(QDType::U8),
        bias: Some(QDType::I32),
        weight_per_channel: false,
        reduce_range: false,
    };
    let plain = DTypeConfig {
        weight: None,
        bias: None,
        ..weighted
    };
    BackendConfig {
        name: "qnnpack",
        patterns: standard_patterns(weighted, plain),
    }
}
