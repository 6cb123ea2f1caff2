//! Calibration observers: streaming statistics over float tensors that end in
//! quantization parameters (scale, zero point).
//!
//! * [`MinMaxObserver`], [`MovingAverageMinMaxObserver`],
//!   [`PerChannelMinMaxObserver`], [`MovingAveragePerChannelMinMaxObserver`]
//!   and [`HistogramObserver`] port `torch.ao.quantization.observer` (torch
//!   2.15) float op by float op, so their qparams equal PyTorch's.
//! * [`PercentileObserver`] and [`EntropyObserver`] follow ONNX Runtime's
//!   calibrators (`onnxruntime/quantization/calibrate.py`) for the range.
//! * [`MseObserver`] searches the clip range minimising the quantization MSE.
//!
//! All scales and zero points come from one formula ([`calculate_qparams`],
//! torch's `_calculate_qparams`). Histogram-based observers keep histograms
//! only, never raw data, so memory does not grow with the number of samples.
//!
//! Every observer serialises its full state to JSON ([`ObserverState`]) and
//! can [`Observer::merge`] a second partial run; see each `merge` for when that
//! is exact.
//!
//! ```
//! use onnxq::observe::{MinMaxObserver, Observer, ObserverState, QDtype, QScheme, QuantSpec};
//!
//! let mut obs = MinMaxObserver::new(QuantSpec::new(QDtype::QUInt8, QScheme::PerTensorAffine)).unwrap();
//! obs.observe(&[-1.0, 0.5, 2.0, 3.0], &[2, 2]).unwrap();
//! let json = obs.state().to_json();
//! let restored = ObserverState::from_json(&json).unwrap();
//! assert_eq!(restored.qparams().unwrap(), obs.qparams().unwrap());
//! let (scale, zp) = obs.qparams().unwrap().per_tensor().unwrap();
//! assert_eq!(zp, 64);
//! assert!((scale - 4.0 / 255.0).abs() < 1e-7);
//! ```

use std::fmt;

mod channel_mean;
mod histogram;
mod minmax;
mod mse;
mod ort;
mod qparams;
mod state;

pub use channel_mean::ChannelMeanObserver;
pub use histogram::{HistogramObserver, TorchHistogram, DEFAULT_BINS, DEFAULT_UPSAMPLE_RATE};
pub use minmax::{
    MinMaxObserver, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver, PerChannelState, DEFAULT_AVERAGING_CONSTANT,
};
pub use mse::{MseObserver, DEFAULT_MSE_CANDIDATES};
pub use ort::{
    AbsHistogram, EntropyObserver, PercentileHistogram, PercentileObserver, ValueHistogram,
    DEFAULT_ENTROPY_BINS, DEFAULT_ENTROPY_QUANTIZED_BINS, DEFAULT_PERCENTILE,
    DEFAULT_PERCENTILE_BINS,
};
pub use qparams::{
    calculate_qparams, round_half_even, QDtype, QParams, QScheme, QuantSpec, DEFAULT_EPS,
};
pub use state::ObserverState;

/// Errors from observers.
#[derive(Debug, Clone, PartialEq)]
pub enum ObserveError {
    /// The spec is not allowed (mirrors torch's constructor checks).
    InvalidSpec(String),
    /// Data length or shape is inconsistent.
    Shape(String),
    /// The observed statistics are inconsistent (e.g. min > max).
    InvalidState(String),
    /// The two states cannot be merged.
    Merge(String),
    /// A state file could not be read.
    State(String),
}

impl fmt::Display for ObserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObserveError::InvalidSpec(m) => write!(f, "invalid observer spec: {m}"),
            ObserveError::Shape(m) => write!(f, "shape error: {m}"),
            ObserveError::InvalidState(m) => write!(f, "invalid observer state: {m}"),
            ObserveError::Merge(m) => write!(f, "cannot merge observers: {m}"),
            ObserveError::State(m) => write!(f, "bad observer state: {m}"),
        }
    }
}

impl std::error::Error for ObserveError {}

/// A calibration observer.
///
/// `observe` is called once per batch with a row-major tensor and its shape
/// (an empty `shape` means "flat", accepted by per-tensor observers only).
pub trait Observer {
    /// Feeds one tensor.
    fn observe(&mut self, x: &[f32], shape: &[usize]) -> Result<(), ObserveError>;

    /// The calibrated range `(min, max)` (one entry per tensor or channel) that
    /// `qparams` turns into scale/zero point; `None` before any data.
    fn range(&self) -> Option<(Vec<f32>, Vec<f32>)>;

    /// Scale and zero point. Before any data, torch's default `(1.0, 0)`.
    fn qparams(&self) -> Result<QParams, ObserveError>;

    /// The complete state, serialisable with [`ObserverState::to_json`].
    fn state(&self) -> ObserverState;

    /// Folds in the state of a run over other data.
    fn merge(&mut self, other: &Self) -> Result<(), ObserveError>
    where
        Self: Sized;
}

/// Checks that `shape` describes `x` (an empty shape means a flat tensor).
pub(crate) fn check_shape(x: &[f32], shape: &[usize]) -> Result<(), ObserveError> {
    if shape.is_empty() {
        return Ok(());
    }
    let n: usize = shape.iter().product();
    if n != x.len() {
        return Err(ObserveError::Shape(format!(
            "shape {shape:?} has {n} elements but the data has {}",
            x.len()
        )));
    }
    Ok(())
}
