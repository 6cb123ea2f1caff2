//! Save/restore and merge of observer states.

mod observe_common;

use observe_common::{batches, load, Batch};
use onnxq::observe::{
    EntropyObserver, HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver, MseObserver, Observer, ObserverState,
    PerChannelMinMaxObserver, PercentileObserver, QDtype, QScheme, QuantSpec,
};

fn spec(s: QScheme) -> QuantSpec {
    QuantSpec::new(QDtype::QInt8, s)
}

fn all_observers() -> Vec<ObserverState> {
    use QScheme::*;
    vec![
        ObserverState::MinMax(MinMaxObserver::new(spec(PerTensorAffine)).unwrap()),
        ObserverState::MovingAverageMinMax(
            MovingAverageMinMaxObserver::new(spec(PerTensorSymmetric), 0.01).unwrap(),
        ),
        ObserverState::PerChannelMinMax(
            PerChannelMinMaxObserver::new(spec(PerChannelSymmetric), 0).unwrap(),
        ),
        ObserverState::MovingAveragePerChannelMinMax(
            MovingAveragePerChannelMinMaxObserver::new(spec(PerChannelAffine), 1, 0.01).unwrap(),
        ),
        ObserverState::Histogram(HistogramObserver::new(spec(PerTensorAffine)).unwrap()),
        ObserverState::Percentile(
            PercentileObserver::new(spec(PerTensorSymmetric), 99.99, 2048).unwrap(),
        ),
        ObserverState::Percentile(
            PercentileObserver::new(spec(PerTensorAffine), 99.99, 2048).unwrap(),
        ),
        ObserverState::Entropy(EntropyObserver::new(spec(PerTensorAffine), 2048, 128).unwrap()),
        ObserverState::Mse(MseObserver::new(spec(PerTensorAffine)).unwrap()),
    ]
}

fn weights() -> Vec<Batch> {
    batches(&load("observer_refs.json"), "gauss_weights")
}

#[test]
fn save_restore_is_exact_for_every_observer() {
    for mut obs in all_observers() {
        // Before any data, too.
        let empty = ObserverState::from_json(&obs.state().to_json()).unwrap();
        assert_eq!(empty, obs);
        for (x, shape) in weights() {
            obs.observe(&x, &shape).unwrap();
        }
        let json = obs.state().to_json();
        let back = ObserverState::from_json(&json).unwrap();
        assert_eq!(back, obs, "{}", obs.kind());
        let (a, b) = (obs.qparams().unwrap(), back.qparams().unwrap());
        assert_eq!(a, b);
        assert_eq!(
            a.scale.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
            b.scale.iter().map(|s| s.to_bits()).collect::<Vec<_>>()
        );
        // Resuming after a restore continues exactly like the original.
        let mut resumed = back;
        let (x, shape) = &weights()[0];
        resumed.observe(x, shape).unwrap();
        obs.observe(x, shape).unwrap();
        assert_eq!(resumed, obs, "{}", obs.kind());
    }
}

#[test]
fn f32_values_round_trip_through_json() {
    // xorshift over raw bit patterns: normals, subnormals, extremes.
    let mut s = 0x9E3779B97F4A7C15u64;
    let mut vals = vec![
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
        f32::EPSILON,
        1e-45,
        -0.0,
        0.1,
        1.0 / 3.0,
    ];
    for _ in 0..20000 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let v = f32::from_bits(s as u32);
        if v.is_finite() {
            vals.push(v);
        }
    }
    let json = serde_json::to_string(&vals).unwrap();
    let back: Vec<f32> = serde_json::from_str(&json).unwrap();
    for (a, b) in vals.iter().zip(&back) {
        assert_eq!(a.to_bits(), b.to_bits(), "{a:e}");
    }
}

fn run(mut obs: ObserverState, data: &[Batch]) -> ObserverState {
    for (x, shape) in data {
        obs.observe(x, shape).unwrap();
    }
    obs
}

#[test]
fn minmax_and_per_channel_merge_exactly() {
    let data = batches(&load("observer_refs.json"), "relu_act");
    for obs in all_observers().into_iter().take(4) {
        let full = run(obs.clone(), &data);
        let mut a = run(obs.clone(), &data[..1]);
        let b = run(obs.clone(), &data[1..]);
        let merged = a.merge(&b);
        if obs.kind().starts_with("moving_average") {
            // Order-dependent averages are refused rather than approximated.
            assert!(merged.is_err());
            continue;
        }
        merged.unwrap();
        assert_eq!(a, full, "{}", obs.kind());
        assert_eq!(a.qparams().unwrap(), full.qparams().unwrap());
    }
}

/// Histogram merge is exact when each partial run's first batch already spans
/// the final `[min, max]` (no re-binning anywhere): then both runs bin every
/// value over the same edges and the counts simply add.
#[test]
fn histogram_merge_exact_when_ranges_agree() {
    let mut data = batches(&load("observer_refs.json"), "gauss_outliers");
    let mut more = batches(&load("observer_refs.json"), "growing");
    // Put the global extremes into the first batch of each half.
    let all: Vec<f32> = data
        .iter()
        .chain(&more)
        .flat_map(|(x, _)| x.clone())
        .collect();
    let (lo, hi) = all
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    data[0].0[0] = lo;
    data[0].0[1] = hi;
    more[0].0[0] = lo;
    more[0].0[1] = hi;
    let spec = spec(QScheme::PerTensorAffine);
    let mk = || ObserverState::Histogram(HistogramObserver::new(spec).unwrap());
    let full = run(mk(), &data.iter().chain(&more).cloned().collect::<Vec<_>>());
    let mut a = run(mk(), &data);
    let b = run(mk(), &more);
    a.merge(&b).unwrap();
    assert_eq!(a, full);
    assert_eq!(a.qparams().unwrap(), full.qparams().unwrap());

    // Same for the MSE observer, which shares the histogram.
    let mk = || ObserverState::Mse(MseObserver::new(spec).unwrap());
    let full = run(mk(), &data.iter().chain(&more).cloned().collect::<Vec<_>>());
    let mut a = run(mk(), &data);
    a.merge(&run(mk(), &more)).unwrap();
    assert_eq!(a, full);
}

/// With different ranges the merge re-bins (approximate), like torch does when
/// a batch widens the range. The result stays close to a single run.
#[test]
fn histogram_merge_rebins_when_ranges_differ() {
    let data = batches(&load("observer_refs.json"), "growing");
    let spec = spec(QScheme::PerTensorAffine);
    let mk = || ObserverState::Histogram(HistogramObserver::new(spec).unwrap());
    let full = run(mk(), &data);
    let mut a = run(mk(), &data[..2]);
    a.merge(&run(mk(), &data[2..])).unwrap();
    let (fs, fz) = full.qparams().unwrap().per_tensor().unwrap();
    let (ms, mz) = a.qparams().unwrap().per_tensor().unwrap();
    assert!((fs - ms).abs() / fs < 0.05, "{fs} vs {ms}");
    assert!((fz - mz).abs() <= 3, "{fz} vs {mz}");
    let total = |o: &ObserverState| match o {
        ObserverState::Histogram(h) => h.hist.histogram.iter().map(|&v| v as f64).sum::<f64>(),
        _ => unreachable!(),
    };
    assert!((total(&a) - 4000.0).abs() < 1e-3);
}

/// ORT-style histograms merge exactly when the runs share the first-batch
/// range (their bins line up); the result equals one streamed run.
#[test]
fn percentile_and_entropy_merge_exact_when_bins_align() {
    let data = batches(&load("observer_refs.json"), "gauss_outliers");
    let first = data[0].clone();
    let second = vec![first.clone(), data[1].clone()];
    for obs in all_observers().into_iter().skip(5).take(3) {
        let full = run(
            obs.clone(),
            &[first.clone(), first.clone(), data[1].clone()],
        );
        let mut a = run(obs.clone(), std::slice::from_ref(&first));
        a.merge(&run(obs.clone(), &second)).unwrap();
        assert_eq!(a.range(), full.range(), "{}", obs.kind());
        assert_eq!(a.qparams().unwrap(), full.qparams().unwrap());
    }
}

#[test]
fn merging_different_kinds_fails() {
    let obs = all_observers();
    let mut a = obs[0].clone();
    assert!(a.merge(&obs[4]).is_err());
}
