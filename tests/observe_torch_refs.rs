//! Observers against PyTorch 2.15 on the same float32 inputs
//! (`tests/data/observer_refs.json`, made by `tests/data/gen_observer_refs.py`).
//!
//! Min/max observers must match bit for bit (scale, zero point and the running
//! min/max). The histogram observer must choose the same clipping bins as
//! torch, which makes its scale bit-identical too; see `histogram_matches_torch`.

mod observe_common;

use observe_common::{batches, build, f32s, load};
use onnxq::observe::Observer;
use serde_json::Value;

fn run(refs: &Value, case: &Value) -> onnxq::observe::ObserverState {
    let mut obs = build(&case["config"]);
    for (x, shape) in batches(refs, case["dataset"].as_str().unwrap()) {
        obs.observe(&x, &shape).unwrap();
    }
    obs
}

fn describe(case: &Value) -> String {
    format!("{} {}", case["dataset"], case["config"])
}

#[test]
fn minmax_family_matches_torch_bit_exactly() {
    let refs = load("observer_refs.json");
    let mut n = 0;
    for case in refs["cases"].as_array().unwrap() {
        if case["config"]["kind"] == "histogram" {
            continue;
        }
        let obs = run(&refs, case);
        let qp = obs.qparams().unwrap();
        let exp = &case["expected"];
        let want_scale = f32s(&exp["scale"]);
        let want_zp: Vec<i64> = exp["zero_point"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&qp.scale),
            bits(&want_scale),
            "scale: {}",
            describe(case)
        );
        assert_eq!(qp.zero_point, want_zp, "zero point: {}", describe(case));
        let (lo, hi) = obs.range().unwrap();
        assert_eq!(
            bits(&lo),
            bits(&f32s(&exp["range"][0])),
            "min: {}",
            describe(case)
        );
        assert_eq!(
            bits(&hi),
            bits(&f32s(&exp["range"][1])),
            "max: {}",
            describe(case)
        );
        n += 1;
    }
    assert!(n > 100, "only {n} cases");
}

/// Histogram observer: same clipping range and qparams as torch.
///
/// Everything torch computes in float32 is emulated operation by operation
/// except two float32 reductions (`torch.sum` of the histogram and of the L2
/// error vector), which we do in f64 and round. Those can only flip a
/// near-tie in the search, so we require bit-exact scales and exact zero
/// points for every reference case, and would report (not hide) a miss.
#[test]
fn histogram_matches_torch() {
    let refs = load("observer_refs.json");
    let mut n = 0;
    let mut misses = vec![];
    for case in refs["cases"].as_array().unwrap() {
        if case["config"]["kind"] != "histogram" {
            continue;
        }
        let obs = run(&refs, case);
        let exp = &case["expected"];
        let qp = obs.qparams().unwrap();
        let (lo, hi) = obs.range().unwrap();
        let want = f32s(&exp["range"]);
        let want_scale = f32s(&exp["scale"])[0];
        let want_zp = exp["zero_point"][0].as_i64().unwrap();
        let ok = lo[0].to_bits() == want[0].to_bits()
            && hi[0].to_bits() == want[1].to_bits()
            && qp.scale[0].to_bits() == want_scale.to_bits()
            && qp.zero_point[0] == want_zp;
        if !ok {
            misses.push(format!(
                "{}: got range ({}, {}) scale {} zp {}; torch ({}, {}) {} {}",
                describe(case),
                lo[0],
                hi[0],
                qp.scale[0],
                qp.zero_point[0],
                want[0],
                want[1],
                want_scale,
                want_zp
            ));
        }
        n += 1;
    }
    assert!(n > 30, "only {n} cases");
    assert!(
        misses.is_empty(),
        "{} of {n} histogram cases differ:\n{}",
        misses.len(),
        misses.join("\n")
    );
}
