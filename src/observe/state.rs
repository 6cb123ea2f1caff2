//! Serialisable observer state and a type-erased observer.
//!
//! The JSON is the observer struct itself, tagged with `"kind"`. serde_json
//! writes floats with the shortest representation that parses back to the same
//! value, so every `f32` (counts, min/max, edges) restores bit-exactly.
//! Infinite values cannot appear in JSON; "not observed yet" is `null`.

use serde::{Deserialize, Serialize};

use super::channel_mean::ChannelMeanObserver;
use super::histogram::HistogramObserver;
use super::minmax::{
    MinMaxObserver, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
};
use super::mse::MseObserver;
use super::ort::{EntropyObserver, PercentileObserver};
use super::qparams::QParams;
use super::{ObserveError, Observer};

/// The state of any observer; also usable as an observer itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ObserverState {
    MinMax(MinMaxObserver),
    MovingAverageMinMax(MovingAverageMinMaxObserver),
    PerChannelMinMax(PerChannelMinMaxObserver),
    MovingAveragePerChannelMinMax(MovingAveragePerChannelMinMaxObserver),
    Histogram(HistogramObserver),
    Percentile(PercentileObserver),
    Entropy(EntropyObserver),
    Mse(MseObserver),
    /// Not a range observer: the per-channel mean bias correction needs.
    ChannelMean(ChannelMeanObserver),
}

/// State file format version, written next to the state.
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Envelope {
    version: u32,
    state: ObserverState,
}

impl ObserverState {
    /// Compact JSON: `{"version":1,"state":{"kind":...}}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Envelope {
            version: FORMAT_VERSION,
            state: self.clone(),
        })
        .expect("observer state is always serialisable")
    }

    pub fn from_json(s: &str) -> Result<Self, ObserveError> {
        let env: Envelope =
            serde_json::from_str(s).map_err(|e| ObserveError::State(e.to_string()))?;
        if env.version != FORMAT_VERSION {
            return Err(ObserveError::State(format!(
                "unsupported state version {}",
                env.version
            )));
        }
        Ok(env.state)
    }

    /// The observer kind as written in the JSON `"kind"` field.
    pub fn kind(&self) -> &'static str {
        match self {
            ObserverState::MinMax(_) => "min_max",
            ObserverState::MovingAverageMinMax(_) => "moving_average_min_max",
            ObserverState::PerChannelMinMax(_) => "per_channel_min_max",
            ObserverState::MovingAveragePerChannelMinMax(_) => "moving_average_per_channel_min_max",
            ObserverState::Histogram(_) => "histogram",
            ObserverState::Percentile(_) => "percentile",
            ObserverState::Entropy(_) => "entropy",
            ObserverState::Mse(_) => "mse",
            ObserverState::ChannelMean(_) => "channel_mean",
        }
    }
}

macro_rules! dispatch {
    ($self:expr, $o:ident => $e:expr) => {
        match $self {
            ObserverState::MinMax($o) => $e,
            ObserverState::MovingAverageMinMax($o) => $e,
            ObserverState::PerChannelMinMax($o) => $e,
            ObserverState::MovingAveragePerChannelMinMax($o) => $e,
            ObserverState::Histogram($o) => $e,
            ObserverState::Percentile($o) => $e,
            ObserverState::Entropy($o) => $e,
            ObserverState::Mse($o) => $e,
            ObserverState::ChannelMean($o) => $e,
        }
    };
}

impl Observer for ObserverState {
    fn observe(&mut self, x: &[f32], shape: &[usize]) -> Result<(), ObserveError> {
        dispatch!(self, o => o.observe(x, shape))
    }

    fn range(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        dispatch!(self, o => o.range())
    }

    fn qparams(&self) -> Result<QParams, ObserveError> {
        dispatch!(self, o => o.qparams())
    }

    fn state(&self) -> ObserverState {
        self.clone()
    }

    /// Merges two states of the same kind (errors otherwise).
    fn merge(&mut self, other: &Self) -> Result<(), ObserveError> {
        use ObserverState as S;
        match (self, other) {
            (S::MinMax(a), S::MinMax(b)) => a.merge(b),
            (S::MovingAverageMinMax(a), S::MovingAverageMinMax(b)) => a.merge(b),
            (S::PerChannelMinMax(a), S::PerChannelMinMax(b)) => a.merge(b),
            (S::MovingAveragePerChannelMinMax(a), S::MovingAveragePerChannelMinMax(b)) => {
                a.merge(b)
            }
            (S::Histogram(a), S::Histogram(b)) => a.merge(b),
            (S::Percentile(a), S::Percentile(b)) => a.merge(b),
            (S::Entropy(a), S::Entropy(b)) => a.merge(b),
            (S::Mse(a), S::Mse(b)) => a.merge(b),
            (S::ChannelMean(a), S::ChannelMean(b)) => a.merge(b),
            (a, b) => Err(ObserveError::Merge(format!(
                "different observer kinds: {} and {}",
                a.kind(),
                b.kind()
            ))),
        }
    }
}

impl ObserverState {
    /// The mean square error E[(x − fq(x))²] of quantizing what this
    /// observer saw with per-tensor `qparams`: rounding (Δ²/12) inside the
    /// range, the distance to the bound outside it (clipping), from the
    /// histogram. Min/max observers clip nothing: Δ²/12.
    pub fn quant_noise(&self, qparams: &QParams) -> Option<f64> {
        let (&scale, &zp) = (qparams.scale.first()?, qparams.zero_point.first()?);
        if qparams.scale.len() != 1 {
            return None;
        }
        let delta = scale as f64;
        let lo = (qparams.quant_min - zp) as f64 * delta;
        let hi = (qparams.quant_max - zp) as f64 * delta;
        let err = |x: f64| {
            if x < lo {
                (lo - x).powi(2)
            } else if x > hi {
                (x - hi).powi(2)
            } else {
                delta * delta / 12.0
            }
        };
        match self.histogram_mean(err) {
            Some(m) => m,
            None => Some(delta * delta / 12.0),
        }
    }

    /// The mean square E[x²] of everything observed, from the histogram of a
    /// histogram-based observer (bin centres; within one bin width of the
    /// truth). `None` for min/max observers, which keep no distribution, and
    /// before any data.
    pub fn mean_square(&self) -> Option<f64> {
        self.histogram_mean(|x| x * x).flatten()
    }

    /// E[f(x)] over the histogram of a histogram-based observer, each bin at
    /// its centre: `None` for observers without a histogram, `Some(None)`
    /// before any data.
    fn histogram_mean(&self, f: impl Fn(f64) -> f64) -> Option<Option<f64>> {
        let uniform = |h: &[f32], (lo, hi): (f32, f32)| -> Option<f64> {
            let n: f64 = h.iter().map(|&c| c as f64).sum();
            if n <= 0.0 || hi.partial_cmp(&lo).is_none_or(|o| o.is_lt()) {
                return None;
            }
            let w = (hi as f64 - lo as f64) / h.len() as f64;
            let s: f64 = h
                .iter()
                .enumerate()
                .map(|(i, &c)| c as f64 * f(lo as f64 + (i as f64 + 0.5) * w))
                .sum();
            Some(s / n)
        };
        Some(match self {
            ObserverState::Histogram(o) => {
                o.hist.min_max.and_then(|m| uniform(&o.hist.histogram, m))
            }
            ObserverState::Mse(o) => o.hist.min_max.and_then(|m| uniform(&o.hist.histogram, m)),
            ObserverState::Entropy(o) => {
                let h = &o.hist;
                let n: f64 = h.hist.iter().sum();
                if n <= 0.0 || h.edges.len() != h.hist.len() + 1 {
                    None
                } else {
                    let s: f64 = h
                        .hist
                        .iter()
                        .enumerate()
                        .map(|(i, &c)| c * f(0.5 * (h.edges[i] as f64 + h.edges[i + 1] as f64)))
                        .sum();
                    Some(s / n)
                }
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod mean_square_tests {
    use crate::observe::{HistogramObserver, Observer, QDtype, QScheme, QuantSpec};

    #[test]
    fn histogram_mean_square_is_close_to_the_data() {
        let spec = QuantSpec::new(QDtype::QUInt8, QScheme::PerTensorAffine);
        let mut o = HistogramObserver::new(spec).unwrap();
        let x: Vec<f32> = (0..10_000)
            .map(|i| ((i % 200) as f32 - 100.0) / 10.0)
            .collect();
        o.observe(&x, &[x.len()]).unwrap();
        let want = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64;
        let got = o.state().mean_square().unwrap();
        assert!((got - want).abs() / want < 0.01, "{got} vs {want}");
        let mm = crate::observe::MinMaxObserver::new(spec).unwrap();
        assert!(mm.state().mean_square().is_none());
    }
}
