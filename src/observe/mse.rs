//! MSE calibration: pick the clipping range that minimises the expected
//! quantize-dequantize squared error over the observed histogram.
//!
//! This is the `mse` method of NVIDIA's pytorch-quantization / ModelOpt
//! histogram calibrator (error evaluated at bin centres, candidates on a
//! uniform grid of the observed magnitude), generalised to affine schemes:
//!
//! * symmetric: one search over `t = amax·k/K`, range `[-t, t]`;
//! * affine: coordinate descent, first over the upper end `max⁺·k/K` with
//!   the lower end fixed, then over the lower end `min⁻·k/K`, twice. The
//!   two tails of skewed data get independent clip points, which a
//!   proportional shrink of `[min, max]` would not allow.
//!
//! The error of a candidate uses the exact scale and zero point that
//! [`calculate_qparams`] would produce for it, so zero-point rounding and
//! `reduce_range` are accounted for. The histogram is torch's running
//! histogram ([`TorchHistogram`], fixed memory).
//!
//! MSE is not outlier-robust by construction: clipping `k` outliers at
//! distance `d` costs `k·d²`, keeping them costs about `N·d²/(12·L²)` for `N`
//! samples over `L` levels, so it clips only when `k` is small relative to
//! `N/(12·L²)`-scaled counts (e.g. a handful of outliers among a million
//! values at 8 bits).

use serde::{Deserialize, Serialize};

use super::histogram::{TorchHistogram, DEFAULT_BINS, DEFAULT_UPSAMPLE_RATE};
use super::qparams::{calculate_qparams, QParams, QuantSpec};
use super::{check_shape, ObserveError, Observer, ObserverState};

/// Default number of candidate clip points per search.
pub const DEFAULT_MSE_CANDIDATES: usize = 512;

/// Histogram-based MSE-minimising calibrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MseObserver {
    pub spec: QuantSpec,
    pub num_candidates: usize,
    pub hist: TorchHistogram,
}

impl MseObserver {
    pub fn new(spec: QuantSpec) -> Result<Self, ObserveError> {
        Self::with_params(spec, DEFAULT_BINS, DEFAULT_MSE_CANDIDATES)
    }

    pub fn with_params(
        spec: QuantSpec,
        bins: usize,
        num_candidates: usize,
    ) -> Result<Self, ObserveError> {
        spec.validate()?;
        if spec.qscheme.is_per_channel() {
            return Err(ObserveError::InvalidSpec(
                "MSE calibration is per-tensor".into(),
            ));
        }
        if bins < 2 || num_candidates < 1 {
            return Err(ObserveError::InvalidSpec(
                "need >= 2 bins and >= 1 candidate".into(),
            ));
        }
        Ok(MseObserver {
            spec,
            num_candidates,
            hist: TorchHistogram::new(bins, DEFAULT_UPSAMPLE_RATE),
        })
    }

    /// Expected squared error (sum over bins, at bin centres) of quantizing
    /// with the qparams of `[lo, hi]`.
    fn error(&self, centres: &[(f64, f64)], lo: f32, hi: f32) -> f64 {
        let Ok(qp) = calculate_qparams(&self.spec, &[lo], &[hi], None) else {
            return f64::INFINITY;
        };
        let (scale, zp) = (qp.scale[0] as f64, qp.zero_point[0] as f64);
        let (qmin, qmax) = (qp.quant_min as f64, qp.quant_max as f64);
        centres
            .iter()
            .map(|&(c, n)| {
                let q = ((c / scale).round_ties_even() + zp).clamp(qmin, qmax);
                let d = c - (q - zp) * scale;
                n * d * d
            })
            .sum()
    }

    /// The MSE-optimal `(min, max)`.
    pub fn best_range(&self) -> Option<(f32, f32)> {
        let (mn, mx) = self.hist.min_max?;
        let w = (mx as f64 - mn as f64) / self.hist.bins as f64;
        let centres: Vec<(f64, f64)> = self
            .hist
            .histogram
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0.0)
            .map(|(i, &n)| (mn as f64 + (i as f64 + 0.5) * w, n as f64))
            .collect();
        let k = self.num_candidates;
        let frac = |j: usize| j as f64 / k as f64;
        let lo0 = mn.min(0.0) as f64;
        let hi0 = mx.max(0.0) as f64;
        if self.spec.qscheme.is_symmetric() {
            let amax = lo0.abs().max(hi0);
            let mut best = (f64::INFINITY, amax as f32);
            for j in 1..=k {
                let t = (amax * frac(j)) as f32;
                let e = self.error(&centres, -t, t);
                if e < best.0 {
                    best = (e, t);
                }
            }
            // Report the one-sided ends actually needed (the formula
            // symmetrises them again).
            let t = best.1;
            Some((mn.max(-t), mx.min(t)))
        } else {
            let (mut lo, mut hi) = (lo0 as f32, hi0 as f32);
            for _round in 0..2 {
                let mut best = (self.error(&centres, lo, hi), hi);
                for j in 1..=k {
                    let h = (hi0 * frac(j)) as f32;
                    let e = self.error(&centres, lo, h);
                    if e < best.0 {
                        best = (e, h);
                    }
                }
                hi = best.1;
                let mut best = (self.error(&centres, lo, hi), lo);
                for j in 1..=k {
                    let l = (lo0 * frac(j)) as f32;
                    let e = self.error(&centres, l, hi);
                    if e < best.0 {
                        best = (e, l);
                    }
                }
                lo = best.1;
            }
            Some((lo.max(mn), hi.min(mx)))
        }
    }
}

impl Observer for MseObserver {
    fn observe(&mut self, x: &[f32], shape: &[usize]) -> Result<(), ObserveError> {
        check_shape(x, shape)?;
        self.hist.observe(x);
        Ok(())
    }

    fn range(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        self.best_range().map(|(a, b)| (vec![a], vec![b]))
    }

    fn qparams(&self) -> Result<QParams, ObserveError> {
        match self.best_range() {
            None => calculate_qparams(&self.spec, &[], &[], None),
            Some((a, b)) => calculate_qparams(&self.spec, &[a], &[b], None),
        }
    }

    fn state(&self) -> ObserverState {
        ObserverState::Mse(self.clone())
    }

    /// Same exactness rules as [`super::HistogramObserver::merge`].
    fn merge(&mut self, other: &Self) -> Result<(), ObserveError> {
        if self.spec != other.spec || self.num_candidates != other.num_candidates {
            return Err(ObserveError::Merge("specs differ".into()));
        }
        self.hist.merge(&other.hist)
    }
}
