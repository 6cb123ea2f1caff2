//! Percentile and entropy (KL) calibrators, ported from ONNX Runtime 1.32's
//! `onnxruntime/quantization/calibrate.py` (`HistogramCollector`), which is
//! where most users meet these methods. PyTorch has neither.
//!
//! * [`PercentileObserver`]: symmetric → histogram of `|x|`
//!   (`collect_absolute_value`), threshold at the `p`-th percentile of `|x|`;
//!   affine → histogram of `x` over `[-amax, amax]` (`collect_value`), cutting
//!   `(100-p)/2` percent from each tail. ORT's defaults: 2048 bins, p = 99.999.
//! * [`EntropyObserver`]: TensorRT's KL-divergence threshold search
//!   (`get_entropy_threshold`) on the `collect_value` histogram. ORT defaults
//!   to `num_bins = 128, num_quantized_bins = 128`; with those the search has a
//!   single candidate (the full range) until the histogram has grown, so our
//!   default follows TensorRT instead: 2048 bins, 128 quantized bins. Pass
//!   ORT's values to reproduce ORT.
//!
//! Both keep only the histogram (ORT itself keeps every batch's raw tensor
//! before histogramming, the root of its calibration OOMs). Streaming is the
//! same as calling ORT's `collect()` once per batch. Bins never shrink: the
//! bin count grows when a batch exceeds the range (ORT's scheme, keeping
//! counts exact), so memory grows with the range ratio, not the sample count.
//!
//! The arithmetic mirrors numpy float32 semantics (`np.histogram` edges and
//! bin assignment, `np.arange` growth, float32 floor division). The KL sums use
//! numpy's pairwise float32 summation; `np.log` is replaced by a correctly
//! rounded `ln`, which can differ from numpy's SIMD `logf` in the last bit.
//!
//! Only the calibrated *range* follows ORT; scale and zero point then come from
//! the torch formula in [`super::qparams`] like every other observer.

use serde::{Deserialize, Serialize};

use super::minmax::aminmax;
use super::qparams::{calculate_qparams, QParams, QuantSpec};
use super::{check_shape, ObserveError, Observer, ObserverState};

/// numpy's float32 `floor_divide` (`npy_divmodf`); same as torch's.
fn np_floor_divide_f32(a: f32, b: f32) -> f32 {
    super::histogram::div_floor_f32(a, b)
}

/// `np.linspace(first, last, n + 1)` in float32 as `np.histogram` builds edges.
fn np_edges(first: f32, last: f32, n: usize) -> Vec<f32> {
    let step = (last - first) / n as f32;
    let mut e: Vec<f32> = (0..=n).map(|i| (i as f32) * step + first).collect();
    e[n] = last;
    e
}

/// `np.histogram(a, n, range=(first, last))` with float32 data and edges.
fn np_histogram_uniform(a: &[f32], n: usize, first: f32, last: f32) -> (Vec<f64>, Vec<f32>) {
    let (first, last) = if first == last {
        (first - 0.5, last + 0.5)
    } else {
        (first, last)
    };
    let edges = np_edges(first, last, n);
    let denom = last - first;
    let nf = n as f32;
    let mut hist = vec![0.0f64; n];
    for &v in a {
        if !(v >= first && v <= last) {
            continue;
        }
        let mut idx = (((v - first) / denom) * nf) as i64;
        if idx == n as i64 {
            idx -= 1;
        }
        let mut idx = idx.clamp(0, n as i64 - 1) as usize;
        if v < edges[idx] {
            idx -= 1;
        }
        if v >= edges[idx + 1] && idx != n - 1 {
            idx += 1;
        }
        hist[idx] += 1.0;
    }
    (hist, edges)
}

/// `np.histogram(a, bins=edges)`: bins `[e_i, e_{i+1})`, the last one closed;
/// values outside `[e_0, e_n]` are dropped.
fn np_histogram_edges(a: &[f32], edges: &[f32]) -> Vec<f64> {
    let n = edges.len() - 1;
    let mut hist = vec![0.0f64; n];
    let last = edges[n];
    for &v in a {
        if !(v >= edges[0] && v <= last) {
            continue;
        }
        let idx = if v == last {
            // searchsorted(.., 'right') on the last edge: always the last bin.
            n - 1
        } else {
            edges.partition_point(|&e| e <= v) - 1
        };
        hist[idx] += 1.0;
    }
    hist
}

/// `np.arange(start, stop, step)` with float32 scalars (length from the
/// float32 quotient; `buffer[1] = start + step`, then `start + i*delta`).
fn np_arange_f32(start: f32, stop: f32, step: f32) -> Vec<f32> {
    let len = ((stop - start) / step) as f64;
    let len = len.ceil();
    if len.is_nan() || len <= 0.0 {
        return vec![];
    }
    let len = len as usize;
    let mut out = Vec::with_capacity(len);
    out.push(start);
    if len == 1 {
        return out;
    }
    let next = start + step;
    out.push(next);
    let delta = next - start;
    for i in 2..len {
        out.push(start + (i as f32) * delta);
    }
    out
}

/// numpy's pairwise float32 sum (`np.sum` on a contiguous float32 array).
pub(crate) fn np_pairwise_sum_f32(a: &[f32]) -> f32 {
    fn rec(a: &[f32]) -> f32 {
        let n = a.len();
        if n < 8 {
            let mut res = -0.0f32;
            for &v in a {
                res += v;
            }
            res
        } else if n <= 128 {
            let mut r = [0.0f32; 8];
            r.copy_from_slice(&a[..8]);
            let mut i = 8;
            while i < n - (n % 8) {
                for j in 0..8 {
                    r[j] += a[i + j];
                }
                i += 8;
            }
            let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
            while i < n {
                res += a[i];
                i += 1;
            }
            res
        } else {
            let mut n2 = n / 2;
            n2 -= n2 % 8;
            rec(&a[..n2]) + rec(&a[n2..])
        }
    }
    0.0f32 + rec(a)
}

fn finite_only(x: &[f32]) -> Vec<f32> {
    x.iter().copied().filter(|v| v.is_finite()).collect()
}

/// ORT's histogram of raw values over a symmetric `[-threshold, threshold]`
/// (`collect_value` / `merge_histogram`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueHistogram {
    pub num_bins: usize,
    /// Counts (integers, stored as f64 so re-binned merges can hold fractions).
    pub hist: Vec<f64>,
    pub edges: Vec<f32>,
    /// `(min, max, threshold)`; `None` before the first batch.
    pub min_max_threshold: Option<(f32, f32, f32)>,
}

impl ValueHistogram {
    pub fn new(num_bins: usize) -> Self {
        ValueHistogram {
            num_bins,
            hist: vec![],
            edges: vec![],
            min_max_threshold: None,
        }
    }

    pub fn observe(&mut self, x: &[f32]) {
        let x = finite_only(x);
        let Some((mn, mx)) = aminmax(&x) else {
            return;
        };
        let thr = mn.abs().max(mx.abs());
        match self.min_max_threshold {
            None => {
                let (h, e) = np_histogram_uniform(&x, self.num_bins, -thr, thr);
                self.hist = h;
                self.edges = e;
                self.min_max_threshold = Some((mn, mx, thr));
            }
            Some((omin, omax, othr)) => {
                let nmin = omin.min(mn);
                let nmax = omax.max(mx);
                if thr <= othr {
                    let (h, _) = np_histogram_uniform(&x, self.hist.len(), -othr, othr);
                    for (a, b) in self.hist.iter_mut().zip(&h) {
                        *a += b;
                    }
                    self.min_max_threshold = Some((nmin, nmax, othr));
                } else if othr == 0.0 {
                    let (mut h, e) = np_histogram_uniform(&x, self.hist.len(), -thr, thr);
                    for (a, b) in h.iter_mut().zip(&self.hist) {
                        *a += b;
                    }
                    self.hist = h;
                    self.edges = e;
                    self.min_max_threshold = Some((nmin, nmax, thr));
                } else {
                    let (half, new_thr) = growth(self.hist.len(), othr, thr);
                    let new_n = self.hist.len() + 2 * half;
                    let (mut h, e) = np_histogram_uniform(&x, new_n, -new_thr, new_thr);
                    for (i, b) in self.hist.iter().enumerate() {
                        h[half + i] += b;
                    }
                    self.hist = h;
                    self.edges = e;
                    self.min_max_threshold = Some((nmin, nmax, new_thr));
                }
            }
        }
    }

    /// Combines two partial runs. Exact when the two histograms share the old
    /// bin stride and one's bins are a centred sub-range of the other's (e.g.
    /// both runs started from the same first-batch threshold); otherwise
    /// `other` is re-binned proportionally (approximate).
    pub fn merge(&mut self, other: &ValueHistogram) {
        let Some((omin, omax, othr)) = other.min_max_threshold else {
            return;
        };
        let Some((smin, smax, sthr)) = self.min_max_threshold else {
            *self = other.clone();
            return;
        };
        let (big, small) = if othr > sthr {
            (other.clone(), self.clone())
        } else {
            (self.clone(), other.clone())
        };
        let mut out = big.clone();
        let extra = out.hist.len() as i64 - small.hist.len() as i64;
        let aligned = extra >= 0
            && extra % 2 == 0
            && small.edges.first() == out.edges.get((extra / 2) as usize)
            && small.edges.last() == out.edges.get((extra / 2) as usize + small.hist.len());
        if aligned {
            let off = (extra / 2) as usize;
            for (i, c) in small.hist.iter().enumerate() {
                out.hist[off + i] += c;
            }
        } else {
            rebin_into(&mut out.hist, &out.edges, &small.hist, &small.edges);
        }
        out.min_max_threshold = Some((
            smin.min(omin),
            smax.max(omax),
            big.min_max_threshold.unwrap().2,
        ));
        *self = out;
    }
}

/// ORT's growth rule: whole old-stride bins are added on both sides.
fn growth(old_bins: usize, old_thr: f32, new_thr: f32) -> (usize, f32) {
    let old_stride = 2.0f32 * old_thr / old_bins as f32;
    let half = (np_floor_divide_f32(new_thr - old_thr, old_stride) + 1.0f32) as i64;
    let half = half.max(0) as usize;
    let thr = (half as f32) * old_stride + old_thr;
    (half, thr)
}

/// Adds histogram `src` (over `src_edges`) into `dst` (over `dst_edges`),
/// spreading each source bin uniformly over 16 sub-bins assigned by midpoint.
fn rebin_into(dst: &mut [f64], dst_edges: &[f32], src: &[f64], src_edges: &[f32]) {
    const SUB: usize = 16;
    let n = dst.len();
    for (i, &c) in src.iter().enumerate() {
        if c == 0.0 {
            continue;
        }
        let (a, b) = (src_edges[i] as f64, src_edges[i + 1] as f64);
        for k in 0..SUB {
            let mid = (a + (b - a) * (k as f64 + 0.5) / SUB as f64) as f32;
            let idx = dst_edges
                .partition_point(|&e| e <= mid)
                .saturating_sub(1)
                .min(n - 1);
            dst[idx] += c / SUB as f64;
        }
    }
}

/// ORT's histogram of `|x|` (`collect_absolute_value`). The first batch's
/// `[min|x|, max|x|]` fixes the bin width and the lower edge; later batches
/// append bins of the same width when `max|x|` grows. Like ORT, later values
/// below the first lower edge are dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbsHistogram {
    pub num_bins: usize,
    pub hist: Vec<f64>,
    pub edges: Vec<f32>,
    /// Signed `(min, max)` of the raw data.
    pub min_max: Option<(f32, f32)>,
}

impl AbsHistogram {
    pub fn new(num_bins: usize) -> Self {
        AbsHistogram {
            num_bins,
            hist: vec![],
            edges: vec![],
            min_max: None,
        }
    }

    pub fn observe(&mut self, x: &[f32]) {
        let x = finite_only(x);
        let Some((mn, mx)) = aminmax(&x) else {
            return;
        };
        let abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        match self.min_max {
            None => {
                let (amin, amax) = aminmax(&abs).expect("non-empty");
                let (h, e) = np_histogram_uniform(&abs, self.num_bins, amin, amax);
                self.hist = h;
                self.edges = e;
                self.min_max = Some((mn, mx));
            }
            Some((omin, omax)) => {
                let (_, amax) = aminmax(&abs).expect("non-empty");
                self.extend_to(amax);
                let mut h = np_histogram_edges(&abs, &self.edges);
                // `hist[:len(old_hist)] += old_hist`
                for (a, b) in h.iter_mut().zip(&self.hist) {
                    *a += b;
                }
                self.hist = h;
                self.min_max = Some((omin.min(mn), omax.max(mx)));
            }
        }
    }

    fn extend_to(&mut self, amax: f32) {
        let last = *self.edges.last().expect("edges");
        if amax > last {
            let width = self.edges[1] - self.edges[0];
            let more = np_arange_f32(last + width, amax + width, width);
            self.edges.extend(more);
            self.hist.resize(self.edges.len() - 1, 0.0);
        }
    }

    /// Exact when the two runs' edges agree (one is a prefix of the other,
    /// e.g. both started from the same first batch range); otherwise `other`
    /// is re-binned proportionally (approximate).
    pub fn merge(&mut self, other: &AbsHistogram) {
        let Some((omin, omax)) = other.min_max else {
            return;
        };
        let Some((smin, smax)) = self.min_max else {
            *self = other.clone();
            return;
        };
        let (mut big, small) = if other.edges.len() > self.edges.len() {
            (other.clone(), self.clone())
        } else {
            (self.clone(), other.clone())
        };
        if big.edges[..small.edges.len()] == small.edges[..] {
            for (a, b) in big.hist.iter_mut().zip(&small.hist) {
                *a += b;
            }
        } else {
            big.extend_to(*small.edges.last().unwrap());
            let edges = big.edges.clone();
            rebin_into(&mut big.hist, &edges, &small.hist, &small.edges);
        }
        big.min_max = Some((smin.min(omin), smax.max(omax)));
        *self = big;
    }
}

/// `np.searchsorted(cdf, v)` (side='left').
fn searchsorted_left(cdf: &[f64], v: f64) -> usize {
    cdf.partition_point(|&c| c < v)
}

fn cdf_of(hist: &[f64]) -> Vec<f64> {
    let total: f64 = hist.iter().sum();
    let mut acc = 0.0f64;
    hist.iter()
        .map(|&h| {
            acc += h / total;
            acc
        })
        .collect()
}

/// The histogram a [`PercentileObserver`] keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PercentileHistogram {
    Abs(AbsHistogram),
    Value(ValueHistogram),
}

/// Percentile calibration (ORT's `PercentileCalibrater` semantics).
///
/// Symmetric specs histogram `|x|` and take the `percentile`-th percentile as
/// `±t`; affine specs histogram `x` and cut `(100 - percentile)/2` percent from
/// each tail. Either way the result is clamped to the observed `[min, max]`.
/// The percentile is taken at a bin *edge* (`hist_edges[searchsorted(cdf, p)]`)
/// like ORT, so the result moves in steps of one bin width.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PercentileObserver {
    pub spec: QuantSpec,
    /// In percent, e.g. 99.999 (ORT's default) or 99.99 (ModelOpt's).
    pub percentile: f64,
    pub hist: PercentileHistogram,
}

/// ORT's default percentile.
pub const DEFAULT_PERCENTILE: f64 = 99.999;
/// ORT's default bin count for percentile calibration.
pub const DEFAULT_PERCENTILE_BINS: usize = 2048;

impl PercentileObserver {
    pub fn new(spec: QuantSpec, percentile: f64, num_bins: usize) -> Result<Self, ObserveError> {
        spec.validate()?;
        if spec.qscheme.is_per_channel() {
            return Err(ObserveError::InvalidSpec(
                "percentile calibration is per-tensor".into(),
            ));
        }
        if !(0.0..=100.0).contains(&percentile) {
            return Err(ObserveError::InvalidSpec(
                "percentile must be in [0, 100]".into(),
            ));
        }
        if num_bins < 2 {
            return Err(ObserveError::InvalidSpec("need at least 2 bins".into()));
        }
        let hist = if spec.qscheme.is_symmetric() {
            PercentileHistogram::Abs(AbsHistogram::new(num_bins))
        } else {
            PercentileHistogram::Value(ValueHistogram::new(num_bins))
        };
        Ok(PercentileObserver {
            spec,
            percentile,
            hist,
        })
    }

    /// ORT's `compute_percentile`, giving the clipped `(min, max)`.
    pub fn threshold(&self) -> Option<(f32, f32)> {
        let p = self.percentile;
        let (mut lo, mut hi, mn, mx) = match &self.hist {
            PercentileHistogram::Abs(h) => {
                let (mn, mx) = h.min_max?;
                let cdf = cdf_of(&h.hist);
                let idx = searchsorted_left(&cdf, p / 100.0);
                let t = h.edges[idx];
                (-t, t, mn, mx)
            }
            PercentileHistogram::Value(h) => {
                let (mn, mx, _) = h.min_max_threshold?;
                let cdf = cdf_of(&h.hist);
                let cut = (100.0 - p) / 200.0;
                let r = searchsorted_left(&cdf, 1.0 - cut);
                let l = searchsorted_left(&cdf, cut);
                (h.edges[l], h.edges[r], mn, mx)
            }
        };
        if lo < mn {
            lo = mn;
        }
        if hi > mx {
            hi = mx;
        }
        Some(uninvert(lo, hi, mn, mx))
    }
}

/// A threshold pair inverted by the clamping to the data range happens on
/// (nearly) constant data, whose histogram edges straddle the one value:
/// ONNX Runtime would then quantize over [0, hi] and clip the value; the
/// data range itself is used instead.
fn uninvert(lo: f32, hi: f32, mn: f32, mx: f32) -> (f32, f32) {
    if lo > hi {
        (mn, mx)
    } else {
        (lo, hi)
    }
}

/// ORT's histograms grow by bins of the first batch's width; a range that
/// jumps by orders of magnitude (a float-min mask after small activations)
/// would need billions of bins. Above this many, observing is an error.
pub const MAX_HISTOGRAM_BINS: usize = 1 << 20;

/// Bins an ORT-style histogram of stride `width` needs to reach `amax`.
fn bins_to_reach(width: f32, amax: f32) -> f64 {
    if width.is_nan() || width <= 0.0 {
        return 0.0;
    }
    (amax as f64 / width as f64).abs()
}

fn check_growth(bins: f64, amax: f32) -> Result<(), ObserveError> {
    if bins > MAX_HISTOGRAM_BINS as f64 {
        return Err(ObserveError::InvalidState(format!(
            "the observed range grew to {amax:e}, which this histogram (fixed bin width, ONNX Runtime's scheme) \
             would need {bins:.3e} bins to cover; use the histogram or minmax observer for this value, or keep it float"
        )));
    }
    Ok(())
}

fn finite_absmax(x: &[f32]) -> f32 {
    x.iter()
        .filter(|v| v.is_finite())
        .fold(0f32, |a, &v| a.max(v.abs()))
}

impl ValueHistogram {
    /// Bins the next batch would need (before observing it).
    fn bins_needed(&self, x: &[f32]) -> f64 {
        match self.min_max_threshold {
            Some((_, _, othr)) if othr > 0.0 && !self.hist.is_empty() => {
                bins_to_reach(2.0 * othr / self.hist.len() as f32, 2.0 * finite_absmax(x))
            }
            _ => 0.0,
        }
    }
}

impl AbsHistogram {
    /// Bins the next batch would need (before observing it).
    fn bins_needed(&self, x: &[f32]) -> f64 {
        if self.edges.len() < 2 {
            return 0.0;
        }
        bins_to_reach(self.edges[1] - self.edges[0], finite_absmax(x))
    }
}

impl Observer for PercentileObserver {
    fn observe(&mut self, x: &[f32], shape: &[usize]) -> Result<(), ObserveError> {
        check_shape(x, shape)?;
        let needed = match &self.hist {
            PercentileHistogram::Abs(h) => h.bins_needed(x),
            PercentileHistogram::Value(h) => h.bins_needed(x),
        };
        check_growth(needed, finite_absmax(x))?;
        match &mut self.hist {
            PercentileHistogram::Abs(h) => h.observe(x),
            PercentileHistogram::Value(h) => h.observe(x),
        }
        Ok(())
    }

    fn range(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        self.threshold().map(|(a, b)| (vec![a], vec![b]))
    }

    fn qparams(&self) -> Result<QParams, ObserveError> {
        match self.threshold() {
            None => calculate_qparams(&self.spec, &[], &[], None),
            Some((a, b)) => calculate_qparams(&self.spec, &[a], &[b], None),
        }
    }

    fn state(&self) -> ObserverState {
        ObserverState::Percentile(self.clone())
    }

    fn merge(&mut self, other: &Self) -> Result<(), ObserveError> {
        if self.spec != other.spec || self.percentile != other.percentile {
            return Err(ObserveError::Merge("specs or percentiles differ".into()));
        }
        match (&mut self.hist, &other.hist) {
            (PercentileHistogram::Abs(a), PercentileHistogram::Abs(b)) => a.merge(b),
            (PercentileHistogram::Value(a), PercentileHistogram::Value(b)) => a.merge(b),
            _ => return Err(ObserveError::Merge("histogram kinds differ".into())),
        }
        Ok(())
    }
}

/// `smooth_distribution(p, eps=0.0001)` from ORT's `quant_utils`.
fn smooth_distribution(p: &[i64]) -> Option<Vec<f32>> {
    const EPS: f64 = 0.0001;
    let is_zeros: Vec<f32> = p.iter().map(|&v| (v == 0) as i32 as f32).collect();
    let n_zeros = np_pairwise_sum_f32(&is_zeros);
    let n_nonzeros = p.len() as f32 - n_zeros;
    if n_nonzeros == 0.0 {
        return None;
    }
    let eps1 = EPS * n_zeros as f64 / n_nonzeros as f64;
    let (e, e1) = (EPS as f32, (-eps1) as f32);
    Some(
        p.iter()
            .zip(&is_zeros)
            .map(|(&v, &z)| (v as f32) + (e * z + e1 * (1.0 - z)))
            .collect(),
    )
}

/// ORT's `entropy(pk, qk)`: KL(p‖q) in float32.
fn kl_entropy(p: &[f32], q: &[f32]) -> f32 {
    let ps = np_pairwise_sum_f32(p);
    let qs = np_pairwise_sum_f32(q);
    let vec: Vec<f32> = p
        .iter()
        .zip(q)
        .map(|(&a, &b)| {
            let pk = 1.0f32 * a / ps;
            let qk = 1.0f32 * b / qs;
            // rel_entr: entries with pk == 0 end up +inf too (ORT sets
            // res[~(pk > 0 & qk > 0)] = inf after zeroing them).
            if pk > 0.0 && qk > 0.0 {
                pk * ((pk / qk) as f64).ln() as f32
            } else {
                f32::INFINITY
            }
        })
        .collect();
    np_pairwise_sum_f32(&vec)
}

/// ORT's `get_entropy_threshold` (TensorRT's KL calibration as ORT ports it):
/// returns the `(lo, hi)` edges of the best candidate, before clamping.
fn entropy_threshold(hist: &[f64], edges: &[f32], num_quantized_bins: usize) -> (f32, f32) {
    let num_bins = hist.len();
    let zero_bin = num_bins / 2;
    let half_q = num_quantized_bins / 2;
    let hist: Vec<i64> = hist.iter().map(|&v| v as i64).collect();
    let mut best: Option<(f64, (f32, f32))> = None;
    if zero_bin < half_q {
        return (edges[0], edges[num_bins]);
    }
    for i in half_q..=zero_bin {
        let start = zero_bin - i;
        let end = (zero_bin + i + 1).min(num_bins);
        let thr = (edges[start], edges[end]);
        let sliced = &hist[start..end];
        let mut p = sliced.to_vec();
        let left: i64 = hist[..start].iter().sum();
        let right: i64 = hist[end..].iter().sum();
        p[0] += left;
        let plen = p.len();
        p[plen - 1] += right;
        let nonzeros: Vec<i64> = p.iter().map(|&v| (v != 0) as i64).collect();
        let merged = sliced.len() / num_quantized_bins;
        let mut qb = vec![0i64; num_quantized_bins];
        for (idx, q) in qb.iter_mut().enumerate() {
            let s = idx * merged;
            *q = sliced[s..s + merged].iter().sum();
        }
        qb[num_quantized_bins - 1] += sliced[num_quantized_bins * merged..].iter().sum::<i64>();
        let mut q = vec![0i64; plen];
        for (idx, &qv) in qb.iter().enumerate() {
            let s = idx * merged;
            let e = s + merged;
            let norm: i64 = nonzeros[s..e].iter().sum();
            if norm != 0 {
                // int64 array assignment of a float quotient truncates.
                let v = (qv as f64 / norm as f64) as i64;
                q[s..e].iter_mut().for_each(|x| *x = v);
            }
        }
        let div = match (smooth_distribution(&p), smooth_distribution(&q)) {
            (Some(ps), Some(qs)) => kl_entropy(&ps, &qs) as f64,
            _ => f64::INFINITY,
        };
        // np.argmin: the first minimum.
        if best.is_none_or(|(b, _)| div < b) {
            best = Some((div, thr));
        }
    }
    best.map(|b| b.1).unwrap_or((edges[0], edges[num_bins]))
}

/// Entropy (KL-divergence) calibration, ORT/TensorRT style.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntropyObserver {
    pub spec: QuantSpec,
    pub num_quantized_bins: usize,
    pub hist: ValueHistogram,
}

/// TensorRT's bin counts (ORT's defaults are 128/128, see the module docs).
pub const DEFAULT_ENTROPY_BINS: usize = 2048;
pub const DEFAULT_ENTROPY_QUANTIZED_BINS: usize = 128;

impl EntropyObserver {
    pub fn new(
        spec: QuantSpec,
        num_bins: usize,
        num_quantized_bins: usize,
    ) -> Result<Self, ObserveError> {
        spec.validate()?;
        if spec.qscheme.is_per_channel() {
            return Err(ObserveError::InvalidSpec(
                "entropy calibration is per-tensor".into(),
            ));
        }
        if num_quantized_bins < 2 || num_bins < 2 {
            return Err(ObserveError::InvalidSpec("need at least 2 bins".into()));
        }
        Ok(EntropyObserver {
            spec,
            num_quantized_bins,
            hist: ValueHistogram::new(num_bins),
        })
    }

    /// The clipped `(min, max)` (ORT's `get_entropy_threshold`, clamped to the
    /// observed range).
    pub fn threshold(&self) -> Option<(f32, f32)> {
        let (mn, mx, _) = self.hist.min_max_threshold?;
        let (mut lo, mut hi) =
            entropy_threshold(&self.hist.hist, &self.hist.edges, self.num_quantized_bins);
        if lo < mn {
            lo = mn;
        }
        if hi > mx {
            hi = mx;
        }
        Some(uninvert(lo, hi, mn, mx))
    }
}

impl Observer for EntropyObserver {
    fn observe(&mut self, x: &[f32], shape: &[usize]) -> Result<(), ObserveError> {
        check_shape(x, shape)?;
        check_growth(self.hist.bins_needed(x), finite_absmax(x))?;
        self.hist.observe(x);
        Ok(())
    }

    fn range(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        self.threshold().map(|(a, b)| (vec![a], vec![b]))
    }

    fn qparams(&self) -> Result<QParams, ObserveError> {
        match self.threshold() {
            None => calculate_qparams(&self.spec, &[], &[], None),
            Some((a, b)) => calculate_qparams(&self.spec, &[a], &[b], None),
        }
    }

    fn state(&self) -> ObserverState {
        ObserverState::Entropy(self.clone())
    }

    fn merge(&mut self, other: &Self) -> Result<(), ObserveError> {
        if self.spec != other.spec || self.num_quantized_bins != other.num_quantized_bins {
            return Err(ObserveError::Merge("specs differ".into()));
        }
        self.hist.merge(&other.hist);
        Ok(())
    }
}
