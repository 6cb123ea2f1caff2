//! Sanity checks of the clipping calibrators: a standard Gaussian plus a few
//! huge outliers must be clipped near the Gaussian's tail, not at the outliers,
//! while MinMax keeps the outliers.

use onnxq::observe::{
    EntropyObserver, HistogramObserver, MinMaxObserver, MseObserver, Observer, ObserverState,
    PercentileObserver, QDtype, QScheme, QuantSpec,
};

/// Deterministic standard normals (xorshift64 + Box-Muller).
fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut uni = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (uni(), uni());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        })
        .collect()
}

/// 1M Gaussian values in 10 batches; outliers (80-100 sigma) at +100 and -80
/// in batch 0 and +90 in batch 5. MSE only clips outliers when clipping them
/// costs less than the extra rounding noise of keeping them (see the `mse`
/// module docs); at 1000 sigma, 3 outliers per million would be kept.
fn data() -> Vec<Vec<f32>> {
    let mut b: Vec<Vec<f32>> = (0..10).map(|i| gaussian(100_000, 0x1234 + i)).collect();
    b[0][10] = 100.0;
    b[0][20] = -80.0;
    b[5][30] = 90.0;
    b
}

fn calibrate(mut obs: ObserverState, batches: &[Vec<f32>]) -> (f32, f32) {
    for x in batches {
        obs.observe(x, &[]).unwrap();
    }
    let (lo, hi) = obs.range().unwrap();
    (lo[0], hi[0])
}

fn spec(s: QScheme) -> QuantSpec {
    QuantSpec::new(QDtype::QInt8, s)
}

#[test]
fn clipping_calibrators_ignore_outliers() {
    use QScheme::*;
    let d = data();
    let minmax = calibrate(
        ObserverState::MinMax(MinMaxObserver::new(spec(PerTensorAffine)).unwrap()),
        &d,
    );
    assert_eq!(minmax, (-80.0, 100.0));

    // (name, observer, smallest and largest acceptable |clip|, largest scale)
    let cases: Vec<(&str, ObserverState, f32, f32, f32)> = vec![
        // 99.99th percentile of |x| for N(0,1) is ~3.9.
        (
            "percentile sym 99.99",
            ObserverState::Percentile(
                PercentileObserver::new(spec(PerTensorSymmetric), 99.99, 2048).unwrap(),
            ),
            2.5,
            6.0,
            0.05,
        ),
        (
            "percentile affine 99.99",
            ObserverState::Percentile(
                PercentileObserver::new(spec(PerTensorAffine), 99.99, 2048).unwrap(),
            ),
            2.5,
            6.0,
            0.05,
        ),
        // The KL search cannot go below num_quantized_bins/2 = 64 bins of width
        // amax/1024 (here ~6.25): a floor of the method at 2048 bins.
        (
            "entropy 2048/128",
            ObserverState::Entropy(EntropyObserver::new(spec(PerTensorAffine), 2048, 128).unwrap()),
            2.0,
            15.0,
            0.15,
        ),
        // MSE trades clipping error against rounding noise; with 3 outliers
        // per million it clips to a third to a half of their size (see below).
        (
            "mse sym",
            ObserverState::Mse(MseObserver::new(spec(PerTensorSymmetric)).unwrap()),
            2.0,
            60.0,
            0.5,
        ),
        (
            "mse affine",
            ObserverState::Mse(MseObserver::new(spec(PerTensorAffine)).unwrap()),
            2.0,
            60.0,
            0.5,
        ),
        (
            "torch histogram (L2)",
            ObserverState::Histogram(HistogramObserver::new(spec(PerTensorAffine)).unwrap()),
            2.0,
            12.0,
            0.1,
        ),
    ];
    for (name, obs, lo_ok, hi_ok, max_scale) in cases {
        let (lo, hi) = calibrate(obs.clone(), &d);
        for t in [-lo, hi] {
            assert!(t >= lo_ok && t <= hi_ok, "{name}: range ({lo}, {hi})");
        }
        // Far finer than MinMax's ~0.7.
        let s = obs_scale(obs, &d);
        assert!(s < max_scale, "{name}: scale {s}");
    }
}

fn obs_scale(mut obs: ObserverState, batches: &[Vec<f32>]) -> f32 {
    for x in batches {
        obs.observe(x, &[]).unwrap();
    }
    obs.qparams().unwrap().scale[0]
}

/// Percentile on skewed non-negative data: symmetric uses |x|, affine cuts
/// each tail; both stay inside the observed range.
#[test]
fn percentile_on_skewed_data_stays_in_range() {
    let x: Vec<f32> = gaussian(50_000, 77)
        .iter()
        .map(|v| (v * 0.5).exp())
        .collect();
    for s in [QScheme::PerTensorSymmetric, QScheme::PerTensorAffine] {
        let mut obs =
            PercentileObserver::new(QuantSpec::new(QDtype::QUInt8, s), 99.9, 2048).unwrap();
        obs.observe(&x, &[]).unwrap();
        let (lo, hi) = obs.threshold().unwrap();
        let (mn, mx) = x
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(
            lo >= mn && hi <= mx && hi < mx,
            "{s:?}: ({lo}, {hi}) vs ({mn}, {mx})"
        );
    }
}

/// ORT's default entropy bins (128/128) leave a single candidate on one batch,
/// so the range is the full observed range; TensorRT's 2048/128 clips.
#[test]
fn entropy_bin_defaults() {
    let mut x = gaussian(100_000, 3);
    x[0] = 50.0;
    let s = QuantSpec::new(QDtype::QUInt8, QScheme::PerTensorAffine);
    let mut ort = EntropyObserver::new(s, 128, 128).unwrap();
    ort.observe(&x, &[]).unwrap();
    let (_, hi) = ort.threshold().unwrap();
    assert_eq!(hi, 50.0);
    let mut trt = EntropyObserver::new(s, 2048, 128).unwrap();
    trt.observe(&x, &[]).unwrap();
    let (_, hi) = trt.threshold().unwrap();
    assert!(hi < 20.0, "{hi}");
}

/// The symmetric MSE optimum for this data is analytic: minimising
/// `sum_i (d_i - t)^2 + N t^2 / (12 * 127.5^2)` over `t` (outliers `d_i` =
/// 100, 90, 80; the Gaussian's rounding noise `s^2/12` with `s = t/127.5`)
/// gives `t = 2*270 / (2*3 + 2N/195075) = 33.2` for `N = 1e6`.
#[test]
fn mse_symmetric_hits_the_analytic_optimum() {
    let d = data();
    let (lo, hi) = calibrate(
        ObserverState::Mse(MseObserver::new(spec(QScheme::PerTensorSymmetric)).unwrap()),
        &d,
    );
    let t = (-lo).max(hi);
    let n = 1e6f32;
    let want = 2.0 * 270.0 / (6.0 + 2.0 * n / 195_075.0);
    assert!((t - want).abs() < 1.5, "t = {t}, analytic {want}");
}

/// A float-min attention mask after small activations: ORT-style histograms
/// would need billions of bins; observing is a clear error, not an OOM.
#[test]
fn ort_histograms_refuse_runaway_growth() {
    use onnxq::observe::{
        EntropyObserver, Observer, PercentileObserver, QDtype, QScheme, QuantSpec,
    };
    let spec = QuantSpec::new(QDtype::QUInt8, QScheme::PerTensorAffine);
    let small: Vec<f32> = (0..64).map(|i| i as f32 * 1e-3).collect();
    let mask = vec![0.0, f32::MIN, -1.0, 2.0];
    let mut p = PercentileObserver::new(spec, 99.99, 2048).unwrap();
    p.observe(&small, &[64]).unwrap();
    let e = p.observe(&mask, &[4]).unwrap_err().to_string();
    assert!(e.contains("bins"), "{e}");
    let mut h = EntropyObserver::new(spec, 2048, 128).unwrap();
    h.observe(&small, &[64]).unwrap();
    assert!(h.observe(&mask, &[4]).is_err());
}

/// Constant data (a bias of equal values, a scale tensor of ones) gives
/// qparams that represent the value, for every scheme; ONNX Runtime's
/// thresholds invert on such data.
#[test]
fn clipping_calibrators_on_constant_data() {
    for value in [1.0f32, -2.5, 0.0, 1e-3] {
        for s in [QScheme::PerTensorAffine, QScheme::PerTensorSymmetric] {
            let observers = [
                ObserverState::Percentile(PercentileObserver::new(spec(s), 99.999, 2048).unwrap()),
                ObserverState::Entropy(EntropyObserver::new(spec(s), 2048, 128).unwrap()),
            ];
            for mut obs in observers {
                obs.observe(&[value; 64], &[64]).unwrap();
                let q = obs
                    .qparams()
                    .unwrap_or_else(|e| panic!("{value} {s:?}: {e}"));
                let x = ((value / q.scale[0]).round() as i64 + q.zero_point[0])
                    .clamp(q.quant_min, q.quant_max);
                let back = (x - q.zero_point[0]) as f32 * q.scale[0];
                assert!(
                    (back - value).abs() <= q.scale[0] / 2.0 + 1e-6,
                    "{value} {s:?}: {back} (scale {})",
                    q.scale[0]
                );
            }
        }
    }
}
