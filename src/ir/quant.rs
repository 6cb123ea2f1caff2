//! Quantization annotations on values: what observer insertion decided, what
//! calibration fills in, what conversion reads.

use super::ValueId;
use crate::qconfig::ObserverConfig;
use std::fmt;

/// How one value will be quantized.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantAnnotation {
    /// An activation observed during calibration.
    Observe(ObserverConfig),
    /// A constant weight; `axis` is the output-channel axis for per-channel schemes.
    Weight { config: ObserverConfig, axis: i64 },
    /// Shares the quantization of another value (no requantization).
    ShareWith(ValueId),
    /// A range fixed by the op's math (Sigmoid → [0, 1], Tanh → [−1, 1]).
    Fixed {
        config: ObserverConfig,
        min: f32,
        max: f32,
    },
}

impl fmt::Display for ObserverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let obs = serde_json::to_value(&self.observer)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let dt = serde_json::to_value(self.dtype)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let qs = serde_json::to_value(self.qscheme)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        write!(f, "{obs} {dt} {qs}")?;
        if self.reduce_range {
            f.write_str(" reduce_range")?;
        }
        Ok(())
    }
}
