//! Port of torch 2.15's `HistogramObserver`.
//!
//! It keeps a fixed number of float32 bins (2048) over the running
//! `[min, max]`; memory does not depend on how much data is observed. When a
//! batch widens the range, the old histogram is split into `upsample_rate`
//! (16) sub-bins, each sub-bin's mass is moved to the new bin holding its
//! midpoint, and the batch is binned with `torch.histc` over the new range
//! (`_combine_histograms` / `_upscale_histogram`). `calculate_qparams` runs
//! `_non_linear_param_search`: it shrinks `[start_bin, end_bin]` greedily in
//! 1e-5 quantile steps and stops as soon as the analytic L2 quantization error
//! grows; the clipped range then goes through the min/max formula.
//!
//! Every float operation follows torch's float32 tensor arithmetic, including
//! `torch.linspace`, which torch's AVX2 CPU kernel evaluates with a fused
//! multiply-add (checked against torch 2.15). Two reductions are not emulated
//! operation by operation: `torch.sum` (we sum in f64 and round to f32) and the
//! error sum in the search. They only matter for near-ties, so in practice the
//! chosen bins, and hence scale and zero point, match torch exactly (see
//! `tests/observe_torch_refs.rs`).

use crate::kernels::histc::HistcBins;
use serde::{Deserialize, Serialize};

use super::minmax::{aminmax, finish_minmax, lanes_minmax};
use super::qparams::{calculate_qparams, QParams, QuantSpec};
use super::{check_shape, ObserveError, Observer, ObserverState};

/// torch's default number of bins.
pub const DEFAULT_BINS: usize = 2048;
/// torch's (hard-coded) upsample rate used when re-binning.
pub const DEFAULT_UPSAMPLE_RATE: usize = 16;

/// `torch.linspace(start, end, steps)` for float32 on CPU: the first half is
/// `start + step*i`, the second `end - step*(steps-1-i)`, each a single fused
/// multiply-add.
pub(crate) fn torch_linspace(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 0 {
        return vec![];
    }
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / ((steps - 1) as f32);
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// Resolves `torch.histc`'s range: an empty range becomes the data's range,
/// then `[lo - 1, hi + 1]` if still empty (computed in f64, like torch's
/// scalar arguments). Returns the f32 ends linspace would produce.
fn histc_range(x: &[f32], lo: f32, hi: f32) -> (f32, f32) {
    let (mut lo, mut hi) = (lo as f64, hi as f64);
    if lo == hi && !x.is_empty() {
        if let Some((a, b)) = aminmax(x) {
            lo = a as f64;
            hi = b as f64;
        }
    }
    if lo == hi {
        lo -= 1.0;
        hi += 1.0;
    }
    // linspace's first and last values are exactly the (f32-rounded) ends.
    (lo as f32, hi as f32)
}

/// Batches above this many values use the float32 reference loop: torch
/// counts in float32, which stops being exact at 2^24.
const EXACT_COUNT_LIMIT: usize = 1 << 24;

/// Values whose bin indices are computed in one vectorised pass.
const INDEX_CHUNK: usize = 256;

thread_local! {
    /// Scratch count buffers for [`histc_counts`], reused across calls.
    static COUNT_SCRATCH: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Per-bin counts of `torch.histc` over the resolved ends `[left, right]`,
/// handed to `counts` (one per bin). Only for `x.len() <
/// EXACT_COUNT_LIMIT`, where integer counts equal torch's float32 ones.
///
/// Each value's bin is `((e - left) * bins / (right - left))` with the same
/// float32 operations in the same order as the reference loop; the indices
/// are computed a chunk at a time (by the host's `kernels::histc` kernel), then counted into four
/// interleaved sub-histograms to break store-to-load dependency chains when
/// many consecutive values fall in the same bin.
fn histc_counts(x: &[f32], bins: usize, left: f32, right: f32, counts: impl FnOnce(&[u32])) {
    debug_assert!(x.len() < EXACT_COUNT_LIMIT);
    // Out-of-range values (and NaN) go to an extra, discarded slot.
    let stride = bins + 1;
    let copies = if x.len() >= 8 * bins { 4 } else { 1 };
    COUNT_SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        scratch.clear();
        scratch.resize(copies * stride, 0);
        let histc = crate::kernels::best().histc;
        let spec = HistcBins {
            left,
            right,
            bins: bins as u32,
        };
        let mut idx = [0u32; INDEX_CHUNK];
        for chunk in x.chunks(INDEX_CHUNK) {
            let idx = &mut idx[..chunk.len()];
            histc.indices(chunk, &spec, idx);
            if copies == 4 {
                let (c0, rest) = scratch.split_at_mut(stride);
                let (c1, rest) = rest.split_at_mut(stride);
                let (c2, c3) = rest.split_at_mut(stride);
                let mut quads = idx.chunks_exact(4);
                for q in &mut quads {
                    c0[q[0] as usize] += 1;
                    c1[q[1] as usize] += 1;
                    c2[q[2] as usize] += 1;
                    c3[q[3] as usize] += 1;
                }
                for &i in quads.remainder() {
                    c0[i as usize] += 1;
                }
            } else {
                for &i in idx.iter() {
                    scratch[i as usize] += 1;
                }
            }
        }
        // Fold the sub-histograms into the first (vectorised adds).
        let (first, rest) = scratch.split_at_mut(stride);
        for k in 1..copies {
            for (a, b) in first.iter_mut().zip(&rest[(k - 1) * stride..k * stride]) {
                *a += b;
            }
        }
        counts(&first[..bins]);
    });
}

/// `torch.histc(x, bins, min=lo, max=hi)` for float32 on CPU (the legacy
/// LINEAR_INTERPOLATION path: no bin-edge correction).
pub(crate) fn torch_histc(x: &[f32], bins: usize, lo: f32, hi: f32) -> Vec<f32> {
    let (left, right) = histc_range(x, lo, hi);
    let mut hist = vec![0.0f32; bins];
    if x.len() < EXACT_COUNT_LIMIT {
        histc_counts(x, bins, left, right, |c| {
            for (h, &c) in hist.iter_mut().zip(c) {
                *h = c as f32;
            }
        });
        return hist;
    }
    let nb = bins as f32;
    for &e in x {
        if !(e >= left && e <= right) {
            continue;
        }
        let mut pos = ((e - left) * nb / (right - left)) as i64;
        if pos >= bins as i64 {
            pos = bins as i64 - 1;
        }
        hist[pos.max(0) as usize] += 1.0;
    }
    hist
}

/// `hist += torch.histc(x, hist.len(), min=lo, max=hi)` without building the
/// intermediate histogram (each bin gets the same single float32 addition).
fn add_torch_histc(hist: &mut [f32], x: &[f32], lo: f32, hi: f32) {
    if x.len() < EXACT_COUNT_LIMIT {
        let (left, right) = histc_range(x, lo, hi);
        histc_counts(x, hist.len(), left, right, |c| {
            for (h, &c) in hist.iter_mut().zip(c) {
                *h += c as f32;
            }
        });
    } else {
        let update = torch_histc(x, hist.len(), lo, hi);
        for (h, u) in hist.iter_mut().zip(&update) {
            *h += u;
        }
    }
}

fn f32_sum(v: &[f32]) -> f32 {
    v.iter().map(|&x| x as f64).sum::<f64>() as f32
}

/// `torch.div(a, b, rounding_mode="floor")` for float32 (`c10::div_floor_floating`).
pub(crate) fn div_floor_f32(a: f32, b: f32) -> f32 {
    if b == 0.0 {
        return a / b;
    }
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div != 0.0 {
        let mut fd = div.floor();
        if div - fd > 0.5 {
            fd += 1.0;
        }
        fd
    } else {
        0.0f32.copysign(a / b)
    }
}

/// The running float32 histogram of torch's `HistogramObserver`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorchHistogram {
    pub bins: usize,
    pub upsample_rate: usize,
    pub histogram: Vec<f32>,
    /// Range covered by `histogram`; `None` before the first batch.
    pub min_max: Option<(f32, f32)>,
}

impl TorchHistogram {
    pub fn new(bins: usize, upsample_rate: usize) -> Self {
        TorchHistogram {
            bins,
            upsample_rate,
            histogram: vec![0.0; bins],
            min_max: None,
        }
    }

    /// `HistogramObserver.forward`. Infinite values are ignored like torch
    /// does; NaNs are ignored too (torch would poison min/max with them).
    pub fn observe(&mut self, x: &[f32]) {
        // One pass finds min/max and whether anything is non-finite.
        let (lo, hi, nan) = lanes_minmax(x);
        let filtered;
        let (x, minmax) = if !nan && lo.is_finite() && hi.is_finite() {
            (x, finish_minmax(x, lo, hi))
        } else if !nan && lo > hi {
            // empty
            return;
        } else {
            filtered = x
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .collect::<Vec<_>>();
            (&filtered[..], aminmax(&filtered))
        };
        let Some((x_min, x_max)) = minmax else {
            return;
        };
        match self.min_max {
            None => {
                self.histogram = torch_histc(x, self.bins, x_min, x_max);
                self.min_max = Some((x_min, x_max));
            }
            Some((cur_min, cur_max)) => {
                let new_min = cur_min.min(x_min);
                let new_max = cur_max.max(x_max);
                if new_min == cur_min && new_max == cur_max {
                    add_torch_histc(&mut self.histogram, x, new_min, new_max);
                } else {
                    let update = torch_histc(x, self.bins, new_min, new_max);
                    self.histogram =
                        self.combine(&self.histogram, cur_min, cur_max, &update, new_min, new_max);
                    self.min_max = Some((new_min, new_max));
                }
            }
        }
    }

    /// `_upscale_histogram`: moves `hist` over `[orig_min, orig_max]` into
    /// the bins of `[update_min, update_max]`.
    pub fn upscale(
        &self,
        hist: &[f32],
        orig_min: f32,
        orig_max: f32,
        update_min: f32,
        update_max: f32,
    ) -> Vec<f32> {
        let up = self.upsample_rate;
        let n_fine = self.bins * up;
        let up_f = up as f32;
        let bin_size = (orig_max - orig_min) / (n_fine as f32);
        let half = 0.5f32 * bin_size;
        // torch_linspace(orig_min, orig_max, n_fine + 1), element by element.
        let steps = n_fine + 1;
        let step = (orig_max - orig_min) / ((steps - 1) as f32);
        let lin_half = steps / 2;
        let fine_edge = |i: usize| -> f32 {
            if i < lin_half {
                step.mul_add(i as f32, orig_min)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, orig_max)
            }
        };
        let boundaries = torch_linspace(update_min, update_max, self.bins + 1);
        let last_bin = self.bins as i64 - 1;
        let mut out = vec![0.0f32; self.bins];
        // On sorted boundaries, `partition_point(|b| b <= mid)` is the number
        // of boundaries <= mid, which a cursor can track in amortised O(1)
        // as the midpoints move (almost always forward).
        let sorted = boundaries.windows(2).all(|w| w[0] <= w[1]);
        let mut p = 0usize;
        for (j, &h) in hist.iter().enumerate().take(self.bins) {
            let w = h / up_f;
            // out[b] only ever holds sums of non-negative weights (never
            // -0.0), so adding +0.0 leaves it unchanged: skip empty bins.
            if w == 0.0 && w.is_sign_positive() {
                continue;
            }
            for i in j * up..(j + 1) * up {
                let mid = fine_edge(i) + half;
                // bucketize(right=True) - 1: index of the last boundary <= mid.
                let pp = if !sorted || mid.is_nan() {
                    boundaries.partition_point(|&b| b <= mid)
                } else {
                    while p < boundaries.len() && boundaries[p] <= mid {
                        p += 1;
                    }
                    while p > 0 && boundaries[p - 1] > mid {
                        p -= 1;
                    }
                    p
                };
                let b = (pp as i64 - 1).clamp(0, last_bin) as usize;
                out[b] += w;
            }
        }
        out
    }

    /// `_combine_histograms`.
    fn combine(
        &self,
        orig_hist: &[f32],
        orig_min: f32,
        orig_max: f32,
        update_hist: &[f32],
        update_min: f32,
        update_max: f32,
    ) -> Vec<f32> {
        if update_min == orig_min && update_max == orig_max {
            return orig_hist
                .iter()
                .zip(update_hist)
                .map(|(a, b)| a + b)
                .collect();
        }
        if orig_min == orig_max {
            let bin_value = f32_sum(orig_hist);
            let t = torch_histc(&[orig_min], self.bins, update_min, update_max);
            return t
                .iter()
                .zip(update_hist)
                .map(|(a, b)| a * bin_value + b)
                .collect();
        }
        let t = self.upscale(orig_hist, orig_min, orig_max, update_min, update_max);
        update_hist.iter().zip(&t).map(|(a, b)| a + b).collect()
    }

    /// `_compute_quantization_error(next_start_bin, next_end_bin)`.
    fn quantization_error(&self, dst_nbins: f64, start: usize, end: usize) -> f64 {
        let (min_val, max_val) = self.min_max.expect("initialised");
        let bins = self.bins;
        // .item() gives Python floats: this part is f64.
        let bin_width = (max_val as f64 - min_val as f64) / bins as f64;
        let dst_bin_width = bin_width * (end as f64 - start as f64 + 1.0) / dst_nbins;
        if dst_bin_width == 0.0 {
            return 0.0;
        }
        // Tensor ops below are float32, with the Python floats cast to f32.
        let bw = bin_width as f32;
        let dbw = dst_bin_width as f32;
        let half_dbw = (dst_bin_width / 2.0) as f32;
        let neg_half_dbw = (-dst_bin_width / 2.0) as f32;
        let max_dst = (dst_nbins - 1.0) as f32;
        let get_norm = |db: f32, de: f32, density: f32| -> f32 {
            let norm = (de * de * de - db * db * db) / 3.0f32;
            density * norm
        };
        let mid_norm_base = {
            // _get_norm(tensor(-dbw/2), tensor(dbw/2), density) without density.
            (half_dbw * half_dbw * half_dbw - neg_half_dbw * neg_half_dbw * neg_half_dbw) / 3.0f32
        };
        let mut total = 0.0f64;
        for (i, &h) in self.histogram.iter().enumerate() {
            let src_begin = ((i as i64 - start as i64) as f32) * bw;
            let src_end = src_begin + bw;
            let dst_begin = div_floor_f32(src_begin, dbw).clamp(0.0, max_dst);
            let dst_begin_center = (dst_begin + 0.5f32) * dbw;
            let dst_end = div_floor_f32(src_end, dbw).clamp(0.0, max_dst);
            let density = h / bw;

            let mut norm = 0.0f32;
            norm += get_norm(src_begin - dst_begin_center, half_dbw, density);
            norm += (dst_end - dst_begin - 1.0f32) * (density * mid_norm_base);
            let dst_end_center = dst_end * dbw + half_dbw;
            norm += get_norm(neg_half_dbw, src_end - dst_end_center, density);
            total += norm as f64;
        }
        total as f32 as f64
    }

    /// `_non_linear_param_search`: returns the clipped `(min, max)`.
    pub fn non_linear_param_search(&self, dst_nbins: f64) -> Option<(f32, f32)> {
        let (min_val, max_val) = self.min_max?;
        let bins = self.bins;
        let bin_width = (max_val - min_val) / bins as f32;
        let total = f32_sum(&self.histogram) as f64;
        // torch.cumsum on CPU accumulates in double and stores float32.
        let mut acc = 0.0f64;
        let csum: Vec<f32> = self
            .histogram
            .iter()
            .map(|&h| {
                acc += h as f64;
                acc as f32
            })
            .collect();

        let stepsize = 1e-5f64;
        let (mut alpha, mut beta) = (0.0f64, 1.0f64);
        let (mut start_bin, mut end_bin) = (0usize, bins - 1);
        let mut norm_min = f64::INFINITY;

        while alpha < beta {
            let next_alpha = alpha + stepsize;
            let next_beta = beta - stepsize;
            // `cSum[l] < next_alpha * total` compares in float32.
            let lo_thr = (next_alpha * total) as f32;
            let hi_thr = (next_beta * total) as f32;
            let mut l = start_bin;
            let mut r = end_bin;
            while l < end_bin && csum[l] < lo_thr {
                l += 1;
            }
            while r > start_bin && csum[r] > hi_thr {
                r -= 1;
            }
            let mut next_start = start_bin;
            let mut next_end = end_bin;
            if (l - start_bin) > (end_bin - r) {
                next_start = l;
                alpha = next_alpha;
            } else {
                next_end = r;
                beta = next_beta;
            }
            if next_start == start_bin && next_end == end_bin {
                continue;
            }
            let norm = self.quantization_error(dst_nbins, next_start, next_end);
            if norm > norm_min {
                break;
            }
            norm_min = norm;
            start_bin = next_start;
            end_bin = next_end;
        }
        let new_min = min_val + bin_width * start_bin as f32;
        let new_max = min_val + bin_width * (end_bin + 1) as f32;
        Some((new_min, new_max))
    }

    /// Adds `other` into `self`. Exact (plain bin-wise addition) when both
    /// cover the same range; otherwise each histogram whose range differs from
    /// the union is re-binned with [`TorchHistogram::upscale`], which is the
    /// same approximation torch applies when a batch widens the range.
    pub fn merge(&mut self, other: &TorchHistogram) -> Result<(), ObserveError> {
        if self.bins != other.bins || self.upsample_rate != other.upsample_rate {
            return Err(ObserveError::Merge("histogram bin counts differ".into()));
        }
        let Some((omin, omax)) = other.min_max else {
            return Ok(());
        };
        let Some((smin, smax)) = self.min_max else {
            *self = other.clone();
            return Ok(());
        };
        let (nmin, nmax) = (smin.min(omin), smax.max(omax));
        let rebin = |h: &TorchHistogram, lo: f32, hi: f32| -> Vec<f32> {
            if lo == nmin && hi == nmax {
                h.histogram.clone()
            } else {
                // Same code path as forward(): combine into an empty update.
                h.combine(&h.histogram, lo, hi, &vec![0.0; h.bins], nmin, nmax)
            }
        };
        let a = rebin(self, smin, smax);
        let b = rebin(other, omin, omax);
        self.histogram = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        self.min_max = Some((nmin, nmax));
        Ok(())
    }
}

/// torch's `HistogramObserver` (per-tensor only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramObserver {
    pub spec: QuantSpec,
    pub hist: TorchHistogram,
}

impl HistogramObserver {
    /// torch's defaults: 2048 bins, upsample rate 16.
    pub fn new(spec: QuantSpec) -> Result<Self, ObserveError> {
        Self::with_bins(spec, DEFAULT_BINS)
    }

    pub fn with_bins(spec: QuantSpec, bins: usize) -> Result<Self, ObserveError> {
        spec.validate()?;
        if spec.qscheme.is_per_channel() {
            return Err(ObserveError::InvalidSpec(
                "HistogramObserver supports only per-tensor schemes".into(),
            ));
        }
        if bins < 2 {
            return Err(ObserveError::InvalidSpec("need at least 2 bins".into()));
        }
        // torch does not reject reduce_range with symmetric quint8 here (unlike
        // MinMaxObserver); neither do we.
        Ok(HistogramObserver {
            spec,
            hist: TorchHistogram::new(bins, DEFAULT_UPSAMPLE_RATE),
        })
    }

    /// `2 ** torch.iinfo(dtype).bits`; note torch ignores `reduce_range` and
    /// custom quant ranges here.
    fn dst_nbins(&self) -> f64 {
        2f64.powi(self.spec.dtype.bits() as i32)
    }
}

impl Observer for HistogramObserver {
    fn observe(&mut self, x: &[f32], shape: &[usize]) -> Result<(), ObserveError> {
        check_shape(x, shape)?;
        self.hist.observe(x);
        Ok(())
    }

    fn range(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        self.hist
            .non_linear_param_search(self.dst_nbins())
            .map(|(a, b)| (vec![a], vec![b]))
    }

    fn qparams(&self) -> Result<QParams, ObserveError> {
        match self.hist.non_linear_param_search(self.dst_nbins()) {
            None => calculate_qparams(&self.spec, &[], &[], None),
            Some((a, b)) => calculate_qparams(&self.spec, &[a], &[b], None),
        }
    }

    fn state(&self) -> ObserverState {
        ObserverState::Histogram(self.clone())
    }

    /// Exact when both runs cover the same `[min, max]` and neither needed
    /// re-binning (their ranges were fixed by their first batches); otherwise
    /// approximate, see [`TorchHistogram::merge`].
    fn merge(&mut self, other: &Self) -> Result<(), ObserveError> {
        if self.spec != other.spec {
            return Err(ObserveError::Merge("quantization specs differ".into()));
        }
        self.hist.merge(&other.hist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn div_floor_matches_python() {
        assert_eq!(div_floor_f32(7.0, 2.0), 3.0);
        assert_eq!(div_floor_f32(-7.0, 2.0), -4.0);
        assert_eq!(div_floor_f32(0.0, 2.0), 0.0);
    }

    #[test]
    fn histc_basic() {
        let h = torch_histc(&[0.0, 0.5, 1.0, 2.0], 4, 0.0, 1.0);
        assert_eq!(h, vec![1.0, 0.0, 1.0, 1.0]);
        // constant input: range widened by +-1
        let h = torch_histc(&[3.0, 3.0], 4, 3.0, 3.0);
        assert_eq!(h, vec![0.0, 0.0, 2.0, 0.0]);
    }

    #[test]
    fn memory_is_fixed() {
        let mut h = TorchHistogram::new(64, 16);
        for k in 0..50 {
            let x: Vec<f32> = (0..1000)
                .map(|i| (i as f32 - 500.0) * (k + 1) as f32)
                .collect();
            h.observe(&x);
            assert_eq!(h.histogram.len(), 64);
        }
        let total: f32 = h.histogram.iter().sum();
        assert!((total - 50_000.0).abs() < 1.0);
    }
}
