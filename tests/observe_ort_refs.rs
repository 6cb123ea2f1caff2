//! Percentile and entropy ranges against ONNX Runtime 1.32's
//! `HistogramCollector` (`tests/data/ort_refs.json`, made by
//! `tests/data/gen_ort_refs.py` on the datasets of `observer_refs.json`).
//!
//! "stream" feeds one batch per `collect()`, "once" concatenates all batches
//! into one call (ORT's own calibrator flow). Ranges must match bit for bit;
//! the final bin count and total count must match too.

mod observe_common;

use observe_common::{batches, load};
use onnxq::observe::{
    EntropyObserver, Observer, ObserverState, PercentileHistogram, PercentileObserver, QDtype,
    QScheme, QuantSpec,
};
use serde_json::Value;

fn build(cfg: &Value) -> ObserverState {
    let nb = cfg["num_bins"].as_u64().unwrap() as usize;
    match cfg["method"].as_str().unwrap() {
        "percentile" => {
            let spec = if cfg["symmetric"].as_bool().unwrap() {
                QuantSpec::new(QDtype::QInt8, QScheme::PerTensorSymmetric)
            } else {
                QuantSpec::new(QDtype::QUInt8, QScheme::PerTensorAffine)
            };
            let p = cfg["percentile"].as_f64().unwrap();
            ObserverState::Percentile(PercentileObserver::new(spec, p, nb).unwrap())
        }
        "entropy" => {
            let nq = cfg["num_quantized_bins"].as_u64().unwrap() as usize;
            let spec = QuantSpec::new(QDtype::QUInt8, QScheme::PerTensorAffine);
            ObserverState::Entropy(EntropyObserver::new(spec, nb, nq).unwrap())
        }
        m => panic!("{m}"),
    }
}

fn hist_shape(obs: &ObserverState) -> (usize, f64) {
    let h = match obs {
        ObserverState::Percentile(p) => match &p.hist {
            PercentileHistogram::Abs(h) => &h.hist,
            PercentileHistogram::Value(h) => &h.hist,
        },
        ObserverState::Entropy(e) => &e.hist.hist,
        _ => unreachable!(),
    };
    (h.len(), h.iter().sum())
}

#[test]
fn ranges_match_onnxruntime() {
    let refs = load("ort_refs.json");
    let data = load("observer_refs.json");
    let mut misses = vec![];
    let cases = refs["cases"].as_array().unwrap();
    for case in cases {
        let mut obs = build(&case["config"]);
        let bs = batches(&data, case["dataset"].as_str().unwrap());
        if case["mode"] == "stream" {
            for (x, _) in &bs {
                obs.observe(x, &[]).unwrap();
            }
        } else {
            let all: Vec<f32> = bs.iter().flat_map(|(x, _)| x.iter().copied()).collect();
            obs.observe(&all, &[]).unwrap();
        }
        let (lo, hi) = obs.range().unwrap();
        let exp = &case["expected"];
        let want = [
            exp["range"][0].as_f64().unwrap() as f32,
            exp["range"][1].as_f64().unwrap() as f32,
        ];
        let (nbins, total) = hist_shape(&obs);
        let ok = lo[0].to_bits() == want[0].to_bits()
            && hi[0].to_bits() == want[1].to_bits()
            && nbins as u64 == exp["num_bins_final"].as_u64().unwrap()
            && total as u64 == exp["hist_total"].as_u64().unwrap();
        if !ok {
            misses.push(format!(
                "{} {} {}: got ({}, {}) bins {nbins} total {total}; ort ({}, {}) bins {} total {}",
                case["dataset"],
                case["mode"],
                case["config"],
                lo[0],
                hi[0],
                want[0],
                want[1],
                exp["num_bins_final"],
                exp["hist_total"]
            ));
        }
    }
    assert!(
        misses.is_empty(),
        "{} of {} cases differ:\n{}",
        misses.len(),
        cases.len(),
        misses.join("\n")
    );
}
