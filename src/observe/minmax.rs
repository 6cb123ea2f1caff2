//! Min/max observers: ports of torch's `MinMaxObserver`,
//! `MovingAverageMinMaxObserver`, `PerChannelMinMaxObserver` and
//! `MovingAveragePerChannelMinMaxObserver`.
//!
//! Running statistics are kept in `f32` and updated with the same float32
//! operations torch performs, so the resulting scales are bit-identical.
//!
//! Difference from torch: NaN inputs are skipped (torch propagates NaN into
//! min/max and then produces NaN scales), and `None` stands for torch's
//! `(+inf, -inf)` "not observed yet" buffers so that states serialise to JSON.

use serde::{Deserialize, Serialize};

use super::qparams::{calculate_qparams, QParams, QuantSpec};
use super::{check_shape, ObserveError, Observer, ObserverState};

/// torch's default `averaging_constant`.
pub const DEFAULT_AVERAGING_CONSTANT: f64 = 0.01;

/// Lanes of the chunked min/max reduction (a multiple of every SIMD width).
const LANES: usize = 16;

/// Numeric min and max of the non-NaN values of `x` (`(+inf, -inf)` if there
/// are none) and whether `x` holds a NaN. Written as fixed-width lanes of
/// compare-and-select so that the compiler vectorises it; the sign of a zero
/// result is not meaningful (see [`aminmax`]).
pub(crate) fn lanes_minmax(x: &[f32]) -> (f32, f32, bool) {
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    let mut nan = [false; LANES];
    let chunks = x.chunks_exact(LANES);
    let rem = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            let v = c[j];
            lo[j] = if v < lo[j] { v } else { lo[j] };
            hi[j] = if v > hi[j] { v } else { hi[j] };
            nan[j] |= v.is_nan();
        }
    }
    let (mut l, mut h, mut n) = (f32::INFINITY, f32::NEG_INFINITY, false);
    for j in 0..LANES {
        l = if lo[j] < l { lo[j] } else { l };
        h = if hi[j] > h { hi[j] } else { h };
        n |= nan[j];
    }
    for &v in rem {
        l = if v < l { v } else { l };
        h = if v > h { v } else { h };
        n |= v.is_nan();
    }
    (l, h, n)
}

/// The bits the sequential fold `lo.min(v)` / `hi.max(v)` returns for the
/// extreme value `v`: that fold keeps the first element equal to the extreme,
/// which only matters for zeros (`0.0 == -0.0`).
fn first_equal(x: &[f32], v: f32) -> f32 {
    if v == 0.0 {
        x.iter().copied().find(|&e| e == 0.0).unwrap_or(v)
    } else {
        v
    }
}

/// `torch.aminmax` over the non-NaN values. Bit-identical to the sequential
/// fold `(lo.min(v), hi.max(v))` from the first non-NaN element, including
/// the sign of a zero result.
pub(crate) fn aminmax(x: &[f32]) -> Option<(f32, f32)> {
    let (lo, hi, _) = lanes_minmax(x);
    finish_minmax(x, lo, hi)
}

/// Turns a [`lanes_minmax`] result for `x` into the [`aminmax`] result.
pub(crate) fn finish_minmax(x: &[f32], lo: f32, hi: f32) -> Option<(f32, f32)> {
    // Any non-NaN value v gives lo <= v <= hi.
    // lo and hi are never NaN.
    if lo > hi {
        return None;
    }
    Some((first_equal(x, lo), first_equal(x, hi)))
}

fn per_tensor_only(spec: &QuantSpec, who: &str) -> Result<(), ObserveError> {
    spec.validate()?;
    if spec.qscheme.is_per_channel() {
        return Err(ObserveError::InvalidSpec(format!(
            "{who} supports only per-tensor schemes"
        )));
    }
    Ok(())
}

fn per_channel_only(spec: &QuantSpec, who: &str) -> Result<(), ObserveError> {
    spec.validate()?;
    if !spec.qscheme.is_per_channel() {
        return Err(ObserveError::InvalidSpec(format!(
            "{who} supports only per-channel schemes"
        )));
    }
    Ok(())
}

/// torch refuses `reduce_range` with symmetric quint8 in the min/max observers
/// (the zero point 128 would lie outside 0..=127).
fn no_reduced_symmetric_u8(spec: &QuantSpec) -> Result<(), ObserveError> {
    use super::qparams::QDtype;
    if spec.qscheme.is_symmetric() && spec.reduce_range && spec.dtype == QDtype::QUInt8 {
        return Err(ObserveError::InvalidSpec(
            "cannot reduce range for symmetric quantization for quint8".into(),
        ));
    }
    Ok(())
}

/// Running min and max of everything observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinMaxObserver {
    pub spec: QuantSpec,
    /// `(min, max)` seen so far; `None` before the first non-empty batch.
    pub min_max: Option<(f32, f32)>,
}

impl MinMaxObserver {
    pub fn new(spec: QuantSpec) -> Result<Self, ObserveError> {
        per_tensor_only(&spec, "MinMaxObserver")?;
        no_reduced_symmetric_u8(&spec)?;
        Ok(MinMaxObserver {
            spec,
            min_max: None,
        })
    }
}

impl Observer for MinMaxObserver {
    fn observe(&mut self, x: &[f32], shape: &[usize]) -> Result<(), ObserveError> {
        check_shape(x, shape)?;
        if let Some((lo, hi)) = aminmax(x) {
            self.min_max = Some(match self.min_max {
                None => (lo, hi),
                Some((a, b)) => (lo.min(a), hi.max(b)),
            });
        }
        Ok(())
    }

    fn range(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        self.min_max.map(|(a, b)| (vec![a], vec![b]))
    }

    fn qparams(&self) -> Result<QParams, ObserveError> {
        let (lo, hi) = self.min_max.unwrap_or((f32::INFINITY, f32::NEG_INFINITY));
        calculate_qparams(&self.spec, &[lo], &[hi], None)
    }

    fn state(&self) -> ObserverState {
        ObserverState::MinMax(self.clone())
    }

    /// Exact: min of mins and max of maxes is what one run over both would see.
    fn merge(&mut self, other: &Self) -> Result<(), ObserveError> {
        if self.spec != other.spec {
            return Err(ObserveError::Merge("quantization specs differ".into()));
        }
        self.min_max = match (self.min_max, other.min_max) {
            (None, o) => o,
            (s, None) => s,
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
        };
        Ok(())
    }
}

/// Exponential moving average of per-batch min and max:
/// `min ← min + c·(batch_min − min)`; the first batch initialises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MovingAverageMinMaxObserver {
    pub spec: QuantSpec,
    /// torch keeps it as a Python float and multiplies a float32 tensor by it,
    /// i.e. it is rounded to f32 at use.
    pub averaging_constant: f64,
    pub min_max: Option<(f32, f32)>,
}

impl MovingAverageMinMaxObserver {
    pub fn new(spec: QuantSpec, averaging_constant: f64) -> Result<Self, ObserveError> {
        per_tensor_only(&spec, "MovingAverageMinMaxObserver")?;
        no_reduced_symmetric_u8(&spec)?;
        Ok(MovingAverageMinMaxObserver {
            spec,
            averaging_constant,
            min_max: None,
        })
    }
}

/// One EMA step exactly as torch computes it on float32 tensors.
fn ema(old: f32, cur: f32, c: f64) -> f32 {
    old + (c as f32) * (cur - old)
}

impl Observer for MovingAverageMinMaxObserver {
    fn observe(&mut self, x: &[f32], shape: &[usize]) -> Result<(), ObserveError> {
        check_shape(x, shape)?;
        if let Some((lo, hi)) = aminmax(x) {
            let c = self.averaging_constant;
            self.min_max = Some(match self.min_max {
                None => (lo, hi),
                Some((a, b)) => (ema(a, lo, c), ema(b, hi, c)),
            });
        }
        Ok(())
    }

    fn range(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        self.min_max.map(|(a, b)| (vec![a], vec![b]))
    }

    fn qparams(&self) -> Result<QParams, ObserveError> {
        let (lo, hi) = self.min_max.unwrap_or((f32::INFINITY, f32::NEG_INFINITY));
        calculate_qparams(&self.spec, &[lo], &[hi], None)
    }

    fn state(&self) -> ObserverState {
        ObserverState::MovingAverageMinMax(self.clone())
    }

    /// Refused: an EMA depends on batch order and its state does not keep the
    /// per-batch extrema needed to replay `other`'s batches after ours.
    fn merge(&mut self, _other: &Self) -> Result<(), ObserveError> {
        Err(ObserveError::Merge(
            "moving-average observers cannot be merged: the average is order-dependent".into(),
        ))
    }
}

/// Per-channel reduction of a tensor of `shape` along `axis` (torch permutes
/// `ch_axis` to the front and flattens the rest; the result is the same).
fn per_channel_aminmax(
    x: &[f32],
    shape: &[usize],
    axis: usize,
) -> (Vec<Option<(f32, f32)>>, usize) {
    let c = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut acc: Vec<Option<(f32, f32)>> = vec![None; c];
    if c == 0 || inner == 0 {
        return (acc, c);
    }
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        let ch = (i / inner) % c;
        acc[ch] = Some(match acc[ch] {
            None => (v, v),
            Some((lo, hi)) => (lo.min(v), hi.max(v)),
        });
    }
    (acc, c)
}

fn normalise_axis(ch_axis: i64, ndim: usize) -> Result<usize, ObserveError> {
    let n = ndim as i64;
    let a = if ch_axis < 0 { ch_axis + n } else { ch_axis };
    if a < 0 || a >= n {
        return Err(ObserveError::Shape(format!(
            "ch_axis {ch_axis} out of range for a {ndim}-d tensor"
        )));
    }
    Ok(a as usize)
}

/// Shared state of the two per-channel observers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerChannelState {
    /// Per-channel min; empty before the first batch (torch's size-0 buffers).
    pub min_val: Vec<f32>,
    pub max_val: Vec<f32>,
    /// The normalised channel axis of the first batch.
    pub axis: Option<usize>,
}

impl PerChannelState {
    fn update(
        &mut self,
        x: &[f32],
        shape: &[usize],
        ch_axis: i64,
        step: impl Fn(f32, f32, bool) -> f32,
    ) -> Result<(), ObserveError> {
        check_shape(x, shape)?;
        if x.is_empty() {
            return Ok(());
        }
        let axis = normalise_axis(ch_axis, shape.len())?;
        let (cur, c) = per_channel_aminmax(x, shape, axis);
        if self.min_val.is_empty() {
            // A channel that is all NaN gets (inf, -inf) like an empty reduction.
            self.min_val = cur
                .iter()
                .map(|m| m.map_or(f32::INFINITY, |p| p.0))
                .collect();
            self.max_val = cur
                .iter()
                .map(|m| m.map_or(f32::NEG_INFINITY, |p| p.1))
                .collect();
            self.axis = Some(axis);
            return Ok(());
        }
        if c != self.min_val.len() {
            return Err(ObserveError::Shape(format!(
                "channel count changed from {} to {c}",
                self.min_val.len()
            )));
        }
        for (ch, m) in cur.iter().enumerate() {
            if let Some((lo, hi)) = *m {
                self.min_val[ch] = step(self.min_val[ch], lo, true);
                self.max_val[ch] = step(self.max_val[ch], hi, false);
            }
        }
        Ok(())
    }
}

/// Running per-channel min and max.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerChannelMinMaxObserver {
    pub spec: QuantSpec,
    /// Channel axis; negative counts from the end.
    pub ch_axis: i64,
    pub stats: PerChannelState,
}

impl PerChannelMinMaxObserver {
    pub fn new(spec: QuantSpec, ch_axis: i64) -> Result<Self, ObserveError> {
        per_channel_only(&spec, "PerChannelMinMaxObserver")?;
        no_reduced_symmetric_u8(&spec)?;
        Ok(PerChannelMinMaxObserver {
            spec,
            ch_axis,
            stats: PerChannelState {
                min_val: vec![],
                max_val: vec![],
                axis: None,
            },
        })
    }
}

impl Observer for PerChannelMinMaxObserver {
    fn observe(&mut self, x: &[f32], shape: &[usize]) -> Result<(), ObserveError> {
        self.stats
            .update(x, shape, self.ch_axis, |old, cur, is_min| {
                if is_min {
                    cur.min(old)
                } else {
                    cur.max(old)
                }
            })
    }

    fn range(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        if self.stats.min_val.is_empty() {
            None
        } else {
            Some((self.stats.min_val.clone(), self.stats.max_val.clone()))
        }
    }

    fn qparams(&self) -> Result<QParams, ObserveError> {
        calculate_qparams(
            &self.spec,
            &self.stats.min_val,
            &self.stats.max_val,
            self.stats.axis,
        )
    }

    fn state(&self) -> ObserverState {
        ObserverState::PerChannelMinMax(self.clone())
    }

    /// Exact, channel by channel.
    fn merge(&mut self, other: &Self) -> Result<(), ObserveError> {
        if self.spec != other.spec || self.ch_axis != other.ch_axis {
            return Err(ObserveError::Merge("specs or ch_axis differ".into()));
        }
        if other.stats.min_val.is_empty() {
            return Ok(());
        }
        if self.stats.min_val.is_empty() {
            self.stats = other.stats.clone();
            return Ok(());
        }
        if self.stats.min_val.len() != other.stats.min_val.len() {
            return Err(ObserveError::Merge("channel counts differ".into()));
        }
        for i in 0..self.stats.min_val.len() {
            self.stats.min_val[i] = self.stats.min_val[i].min(other.stats.min_val[i]);
            self.stats.max_val[i] = self.stats.max_val[i].max(other.stats.max_val[i]);
        }
        Ok(())
    }
}

/// Per-channel exponential moving average of min and max.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MovingAveragePerChannelMinMaxObserver {
    pub spec: QuantSpec,
    pub ch_axis: i64,
    pub averaging_constant: f64,
    pub stats: PerChannelState,
}

impl MovingAveragePerChannelMinMaxObserver {
    pub fn new(
        spec: QuantSpec,
        ch_axis: i64,
        averaging_constant: f64,
    ) -> Result<Self, ObserveError> {
        per_channel_only(&spec, "MovingAveragePerChannelMinMaxObserver")?;
        no_reduced_symmetric_u8(&spec)?;
        Ok(MovingAveragePerChannelMinMaxObserver {
            spec,
            ch_axis,
            averaging_constant,
            stats: PerChannelState {
                min_val: vec![],
                max_val: vec![],
                axis: None,
            },
        })
    }
}

impl Observer for MovingAveragePerChannelMinMaxObserver {
    fn observe(&mut self, x: &[f32], shape: &[usize]) -> Result<(), ObserveError> {
        let c = self.averaging_constant;
        self.stats
            .update(x, shape, self.ch_axis, |old, cur, _| ema(old, cur, c))
    }

    fn range(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        if self.stats.min_val.is_empty() {
            None
        } else {
            Some((self.stats.min_val.clone(), self.stats.max_val.clone()))
        }
    }

    fn qparams(&self) -> Result<QParams, ObserveError> {
        calculate_qparams(
            &self.spec,
            &self.stats.min_val,
            &self.stats.max_val,
            self.stats.axis,
        )
    }

    fn state(&self) -> ObserverState {
        ObserverState::MovingAveragePerChannelMinMax(self.clone())
    }

    /// Refused, for the same reason as [`MovingAverageMinMaxObserver::merge`].
    fn merge(&mut self, _other: &Self) -> Result<(), ObserveError> {
        Err(ObserveError::Merge(
            "moving-average observers cannot be merged: the average is order-dependent".into(),
        ))
    }
}
