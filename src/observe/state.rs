//! Serialisable observer state and a type-erased observer.
//!
//! The JSON is the observer struct itself, tagged with `"kind"`. serde_json
//! writes floats with the shortest representation that parses back to the same
//! value, so every `f32` (counts, min/max, edges) restores bit-exactly.
//! Infinite values cannot appear in JSON; "not observed yet" is `null`.

use serde::{Deserialize, Serialize};

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
            (a, b) => Err(ObserveError::Merge(format!(
                "different observer kinds: {} and {}",
                a.kind(),
                b.kind()
            ))),
        }
    }
}
