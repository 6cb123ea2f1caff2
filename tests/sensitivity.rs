//! Sensitivity analysis and the automatic float fallback: on a model where int8 hurts
//! (`digits_cnn_illcond`: digits_cnn whose classifier reads a dead channel through
//! ±25 weights, see `models/gen/make_ill_conditioned.py`), the culprit `/fc/Gemm` must
//! rank first and be the one unit the fallback keeps in float; one calibration serves
//! every variant; the saved qconfig reproduces the result; bad input gives clear errors.

mod common;

use common::*;
use onnxq::numeric::sensitivity::{read_labels, Ranking, RankingChoice, Suite, Target};
use onnxq::quantize::QuantizeOptions;
use std::path::PathBuf;
use std::process::Command;

/// A fresh folder for one test's files.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("onnxq-sensitivity-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn model(name: &str) -> PathBuf {
    let sub = if name.ends_with("_illcond") {
        "illcond/"
    } else {
        ""
    };
    models_dir().join(format!("{sub}{name}.onnx"))
}

/// The ill-conditioned digits model runs on digits_cnn's data.
fn calib(name: &str) -> PathBuf {
    let name = name.trim_end_matches("_illcond");
    ["npy", "npz"]
        .iter()
        .map(|e| models_dir().join(format!("{name}.calib.{e}")))
        .find(|p| p.exists())
        .unwrap()
}

fn per_tensor() -> QuantizeOptions {
    QuantizeOptions {
        per_tensor: true,
        ..Default::default()
    }
}

fn suite(name: &str, options: &QuantizeOptions) -> Suite {
    let m = onnxq::import::import_file(model(name)).unwrap();
    Suite::new(m, options, &calib(name), &calib(name), None).unwrap()
}

const CULPRIT: &str = "/fc/Gemm";

#[test]
fn ill_conditioned_layer_ranks_first_and_is_the_one_float_unit() {
    let s = suite("digits_cnn_illcond", &QuantizeOptions::default());
    let names: Vec<&str> = s.units.iter().map(|u| u.name.as_str()).collect();
    assert!(names.contains(&CULPRIT), "units: {names:?}");
    let sens = s.sensitivity(true).unwrap();
    eprintln!("{}", sens.table());
    assert_eq!(sens.rows[0].node, CULPRIT, "{}", sens.table());
    // Quantizing it alone costs far more than any other unit alone.
    let gap = sens.rows[1].only.unwrap().sqnr_db - sens.rows[0].only.unwrap().sqnr_db;
    assert!(gap > 20.0, "{}", sens.table());
    // And floating it alone recovers the most.
    let best_all_but = sens
        .rows
        .iter()
        .max_by(|a, b| {
            a.all_but
                .unwrap()
                .sqnr_db
                .total_cmp(&b.all_but.unwrap().sqnr_db)
        })
        .unwrap();
    assert_eq!(best_all_but.node, CULPRIT, "{}", sens.table());

    // The fallback to 30 dB (all-int8 is ~6 dB) needs exactly that one unit.
    assert!(sens.int8.sqnr_db < 30.0, "{}", sens.table());
    let fb = s
        .fallback(&sens.ranking(), Target::SqnrDb(30.0), None)
        .unwrap();
    eprintln!("{}", fb.text());
    assert!(fb.reached);
    assert_eq!(fb.float_units, vec![CULPRIT.to_string()]);
    assert!(fb.score.sqnr_db >= 30.0);

    // The saved QConfigMapping, loaded by --qconfig, reproduces the model.
    let dir = temp_dir("qconfig");
    let qc = dir.join("fallback.qconfig.json");
    let base = QuantizeOptions::default()
        .mapping(s.float_model())
        .expect("preset mapping");
    std::fs::write(&qc, fb.qconfig(&base).to_json()).unwrap();
    let opts = QuantizeOptions {
        qconfig: Some(qc.clone()),
        ..Default::default()
    };
    let q = onnxq::quantize::quantize(
        s.float_model().clone(),
        Some(onnxq::quantize::Calibration::Data(&calib("digits_cnn"))),
        &opts,
    )
    .unwrap();
    assert!(
        q.summary
            .float_reason(CULPRIT)
            .is_some_and(|r| r.contains("qconfig is None")),
        "{}",
        q.summary
    );
    let again = s.score(&q.model).unwrap();
    assert!(
        (again.sqnr_db - fb.score.sqnr_db).abs() < 0.01,
        "{} vs {}",
        again.sqnr_db,
        fb.score.sqnr_db
    );
}

/// The fast path of large models agrees with the full analysis on the ill-conditioned
/// model: the one-pass local ranking puts the culprit first, far ahead; `--ranking auto`
/// takes it when the full ranking does not fit the budget; and the fallback searching on
/// a subset of the samples keeps the same single unit in float, with figures that are a
/// full evaluation on all samples.
#[test]
fn local_ranking_and_subset_search_agree_on_the_culprit() {
    let mut s = suite("digits_cnn_illcond", &QuantizeOptions::default());
    let local = s.local_sensitivity().unwrap();
    eprintln!("{}", local.table());
    assert_eq!(local.ranking, Ranking::Local);
    assert_eq!(local.rows[0].node, CULPRIT, "{}", local.table());
    let db = |i: usize| local.rows[i].local_sqnr_db.unwrap();
    assert!(db(1) - db(0) > 10.0, "{}", local.table());
    assert!(local.rows.iter().all(|r| r.only.is_none()));
    // Auto: the full ranking when it fits the budget, else the local one (and why).
    let (full, why) = s
        .rank(
            RankingChoice::Auto,
            false,
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    assert_eq!(full.ranking, Ranking::Full);
    assert!(why.is_none());
    let (auto, why) = s
        .rank(RankingChoice::Auto, false, std::time::Duration::ZERO)
        .unwrap();
    assert_eq!(auto.ranking, Ranking::Local);
    assert!(why.is_some_and(|w| w.contains("--ranking full")));
    assert_eq!(auto.ranking(), local.ranking());

    // Search on the first batch (32 of 128 samples); result evaluated on all.
    let used = s.set_search_samples(Some(32));
    assert_eq!(used, 32);
    let fb = s
        .fallback(&local.ranking(), Target::SqnrDb(30.0), None)
        .unwrap();
    eprintln!("{}", fb.text());
    assert!(fb.reached);
    assert_eq!(fb.float_units, vec![CULPRIT.to_string()]);
    assert_eq!((fb.search_samples, fb.eval_samples), (32, 128));
    assert!(
        fb.text().contains("searched on 32 of 128 samples"),
        "{}",
        fb.text()
    );
    let all = s.evaluate(&fb.float_units).unwrap();
    assert_eq!(all.sqnr_db, fb.score.sqnr_db);
    assert!(fb.score.sqnr_db >= 30.0);
    // The same as the full path.
    s.set_search_samples(None);
    let slow = s
        .fallback(&full.ranking(), Target::SqnrDb(30.0), None)
        .unwrap();
    assert_eq!(slow.float_units, fb.float_units);
    assert_eq!(slow.score.sqnr_db, fb.score.sqnr_db);
}

/// The bundled depthwise block with per-tensor weights: every unit is analysed and the
/// fallback meets a target between the all-int8 SQNR and the float model's.
#[test]
fn inverted_residual_per_tensor_fallback() {
    let s = suite("inverted_residual", &per_tensor());
    let names: Vec<&str> = s.units.iter().map(|u| u.name.as_str()).collect();
    assert!(names.contains(&"/dw/Conv"), "units: {names:?}");
    let sens = s.sensitivity(false).unwrap();
    eprintln!("{}", sens.table());
    let target = sens.int8.sqnr_db + 4.0;
    let fb = s
        .fallback(&sens.ranking(), Target::SqnrDb(target), None)
        .unwrap();
    eprintln!("{}", fb.text());
    assert!(fb.reached);
    assert!(fb.score.sqnr_db >= target);
    // Pruned: no unit of the result can be quantized again.
    for u in &fb.float_units {
        let rest: Vec<String> = fb.float_units.iter().filter(|f| *f != u).cloned().collect();
        assert!(
            s.evaluate(&rest).unwrap().sqnr_db < target,
            "{u} is not needed"
        );
    }
}

/// One calibration for every variant: the shared table converts each "only i" and "all
/// but i" variant like a calibration of that variant alone would (same qparams, so the
/// same model and score).
#[test]
fn shared_table_equals_per_variant_calibration() {
    let s = suite("digits_cnn", &QuantizeOptions::default());
    assert!(s.units.len() >= 3, "{:?}", s.units);
    for u in &s.units {
        let shared = s.evaluate([&u.name]).unwrap();
        let own = onnxq::quantize::quantize(
            s.float_model().clone(),
            Some(onnxq::quantize::Calibration::Data(&calib("digits_cnn"))),
            &QuantizeOptions {
                exclude: vec![u.name.clone()],
                ..Default::default()
            },
        )
        .unwrap();
        let own = s.score(&own.model).unwrap();
        assert!(
            (shared.sqnr_db - own.sqnr_db).abs() < 1e-6,
            "{}: shared table {} dB, own calibration {} dB",
            u.name,
            shared.sqnr_db,
            own.sqnr_db
        );
    }
}

#[test]
fn accuracy_ranking_and_accuracy_target_on_digits() {
    let eval = models_dir().join("digits_cnn.eval.npz");
    let labels = read_labels(&eval).unwrap();
    assert_eq!(labels.len(), 540);
    let m = onnxq::import::import_file(model("digits_cnn")).unwrap();
    let s = Suite::new(
        m,
        &QuantizeOptions::default(),
        &calib("digits_cnn"),
        &eval,
        Some(labels),
    )
    .unwrap();
    let fa = s.float_accuracy.unwrap();
    assert!((fa - 0.9907).abs() < 0.001, "float top-1 {fa}");
    let sens = s.sensitivity(false).unwrap();
    eprintln!("{}", sens.table());
    assert!(sens
        .rows
        .iter()
        .all(|r| r.only.is_some_and(|o| o.accuracy.is_some())));
    let fb = s
        .fallback(&sens.ranking(), Target::MaxAccuracyDrop(0.5), None)
        .unwrap();
    eprintln!("{}", fb.text());
    assert!(fb.reached);
    assert!((fa - fb.score.accuracy.unwrap()) * 100.0 <= 0.5 + 1e-9);
}

#[test]
fn unreachable_target_says_what_it_would_need() {
    let s = suite("digits_cnn_illcond", &QuantizeOptions::default());
    let sens = s.sensitivity(false).unwrap();
    // At most 0 units in float: only the all-int8 model is allowed.
    let fb = s
        .fallback(
            &sens.ranking(),
            Target::SqnrDb(sens.int8.sqnr_db + 3.0),
            Some(0),
        )
        .unwrap();
    assert!(!fb.reached);
    assert!(fb.float_units.is_empty());
    let need = fb.would_need.clone().expect("some units reach it");
    assert_eq!(need, vec![CULPRIT.to_string()]);
    let text = fb.text();
    assert!(text.contains("TARGET NOT REACHED"), "{text}");
    assert!(text.contains(CULPRIT), "{text}");
    // A target above anything short of the all-float model.
    let fb = s
        .fallback(&sens.ranking(), Target::SqnrDb(500.0), None)
        .unwrap();
    assert!(!fb.reached);
    assert!(fb.would_need.is_none());
    assert!(fb.text().contains("no set of units"), "{}", fb.text());
}

#[test]
fn bad_input_errors() {
    let m = onnxq::import::import_file(model("digits_cnn")).unwrap();
    let eval = models_dir().join("digits_cnn.eval.npz");
    // Labels for another set: 540 labels, 128 samples.
    let err = Suite::new(
        m.clone(),
        &QuantizeOptions::default(),
        &calib("digits_cnn"),
        &calib("digits_cnn"),
        Some(read_labels(&eval).unwrap()),
    )
    .err()
    .expect("label count mismatch");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("540 labels") && msg.contains("128 samples"),
        "{msg}"
    );
    // An unknown node.
    let err = Suite::new(
        m,
        &QuantizeOptions {
            exclude: vec!["/no/such/Conv".into()],
            ..Default::default()
        },
        &calib("digits_cnn"),
        &calib("digits_cnn"),
        None,
    )
    .err()
    .expect("unknown node");
    assert!(format!("{err:#}").contains("/no/such/Conv"), "{err:#}");
    // Labels that are not labels.
    let err = read_labels(&calib("digits_cnn")).unwrap_err();
    assert!(format!("{err:#}").contains("integers"), "{err:#}");
    let err = read_labels(&models_dir().join("digits_cnn.sample.npz")).unwrap_err();
    assert!(
        format!("{err:#}").contains("no array named `labels`"),
        "{err:#}"
    );
}

/// `onnxq quantize MODEL -o OUT --data DATA EXTRA...`.
fn quantize_cli(
    model: &std::path::Path,
    out: &std::path::Path,
    data: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    onnxq(&args)
}

fn onnxq(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_target_sqnr_writes_model_and_qconfig_and_exit_code() {
    let dir = temp_dir("cli");
    let out = dir.join("ill.int8.onnx");
    let m = model("digits_cnn_illcond");
    let c = calib("digits_cnn");
    let o = quantize_cli(&m, &out, &c, &["--target-sqnr", "30"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("kept in float"), "{err}");
    assert!(err.contains(CULPRIT), "{err}");
    let qc = dir.join("ill.int8.onnx.qconfig.json");
    let mapping = onnxq::qconfig::QConfigMapping::from_file(&qc).unwrap();
    // The culprit's noise is its weights: int8 weights in a float unit cannot meet
    // the target, so the second search keeps the unit fully float.
    assert!(err.contains("searching again with float weights"), "{err}");
    assert!(err.contains("weights too"), "{err}");
    // Its int8 weights are the noise: they stay float when the others are tried.
    assert!(!err.contains("int8 weights back"), "{err}");
    assert!(mapping.name.get(CULPRIT).is_some_and(|q| q.is_none()));
    assert!(mapping.weight_only.is_empty());
    // Reused with --qconfig.
    let out2 = dir.join("again.onnx");
    let o = quantize_cli(&m, &out2, &c, &["--qconfig", qc.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());

    // Unreachable within --max-float 0: the model is written, exit code 2, and the
    // message names the units it would need.
    let out3 = dir.join("capped.onnx");
    let o = quantize_cli(&m, &out3, &c, &["--target-sqnr", "30", "--max-float", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("TARGET NOT REACHED"), "{err}");
    assert!(err.contains("it would need"), "{err}");
    assert!(out3.exists());

    // --max-accuracy-drop without labels.
    let o = quantize_cli(&m, &dir.join("x.onnx"), &c, &["--max-accuracy-drop", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("needs labels"), "{err}");
}

#[test]
fn cli_sensitivity_json() {
    let m = model("digits_cnn_illcond");
    let c = calib("digits_cnn");
    let o = onnxq(&[
        "sensitivity",
        m.to_str().unwrap(),
        "--data",
        c.to_str().unwrap(),
        "--json",
        "--no-all-but",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rows"][0]["node"], CULPRIT);
    assert_eq!(v["rows"][0]["rank"], 1);
    assert!(v["int8"]["sqnr_db"].is_number());
    // Labels whose count does not match.
    let o = onnxq(&[
        "sensitivity",
        m.to_str().unwrap(),
        "--data",
        c.to_str().unwrap(),
        "--labels",
        models_dir().join("digits_cnn.eval.npz").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("540 labels"), "{err}");
}

/// After a fully float search (weights too), the float units whose float weights the
/// target does not need get int8 weights back: on the ill-conditioned model at a target
/// that needs several float units, the culprit keeps float weights (its int8 weights
/// are the noise) and the others are restored; the model still meets the target, and
/// the qconfig reproduces the mix.
#[test]
fn restoring_int8_weights_keeps_float_only_the_weights_the_target_needs() {
    let mut s = suite("digits_cnn_illcond", &QuantizeOptions::default());
    let sens = s.sensitivity(false).unwrap();
    let target = Target::SqnrDb(40.0);
    let mut fb = s.fallback(&sens.ranking(), target, None).unwrap();
    assert!(fb.reached && !fb.weights_int8, "{}", fb.text());
    assert!(fb.float_units.len() >= 2, "{}", fb.text());
    s.restore_int8_weights(&mut fb).unwrap();
    eprintln!("{}", fb.text());
    let w = fb.float_weights.clone().expect("restoration ran");
    assert!(w.contains(&CULPRIT.to_string()), "{}", fb.text());
    assert!(!fb.weights_restored.is_empty(), "{}", fb.text());
    assert!(fb.text().contains("int8 weights back"), "{}", fb.text());
    // What the suite converts now is that mix, and it meets the target.
    let q = s.quantize(&fb.float_units).unwrap().unwrap();
    let score = s.score(&q.model).unwrap();
    assert!(score.sqnr_db >= 40.0, "{}", score.sqnr_db);
    assert_eq!(score.sqnr_db, fb.score.sqnr_db);
    let g = &q.model.graph;
    let weight_is_int8 = |name: &str| {
        let n = g.node_ids().find(|&n| g.node(n).name == name).unwrap();
        let wv = g.node(n).inputs[1].unwrap();
        stored_int8(g, wv).is_some()
    };
    assert!(!weight_is_int8(CULPRIT));
    for u in &fb.weights_restored {
        assert!(weight_is_int8(u), "{u}");
    }
    // The qconfig: the culprit fully float, the restored ones weight-only.
    let m = fb.qconfig(&onnxq::qconfig::QConfigMapping::default());
    assert!(m.name.get(CULPRIT).is_some_and(|q| q.is_none()));
    for u in &fb.weights_restored {
        assert!(m.weight_only.contains(u), "{u}");
    }
    // The culprit's float weights are stored as float16 (11 significant bits instead of
    // 7 leave the target met): its weight is a Cast of an f16 initializer, and the
    // qconfig says so.
    assert!(fb.weights_fp16, "{}", fb.text());
    assert!(fb.text().contains("stored as float16"), "{}", fb.text());
    let n = g.node_ids().find(|&n| g.node(n).name == CULPRIT).unwrap();
    let cast = g.producer(g.node(n).inputs[1].unwrap());
    assert!(g.node(cast).is_op("Cast"));
    let stored = g.const_tensor(g.node(cast).inputs[0].unwrap()).unwrap();
    assert_eq!(stored.dtype, onnxq::ir::DataType::F16);
    assert!(m.float16_weights.contains(CULPRIT));
}

/// A search run with float16 weights (`Suite::set_float16_weights`, what the CLI's
/// fallback tries before float32) converts its fully float units with f16 weights behind a
/// Cast, and the restoration then keeps them so without spending an evaluation on it.
#[test]
fn float16_search_keeps_float_weights_as_float16() {
    let mut s = suite("digits_cnn_illcond", &QuantizeOptions::default());
    let sens = s.sensitivity(false).unwrap();
    let target = Target::SqnrDb(40.0);
    s.set_float16_weights(true);
    let mut fb = s.fallback(&sens.ranking(), target, None).unwrap();
    assert!(fb.reached, "{}", fb.text());
    let q = s.quantize(&fb.float_units).unwrap().unwrap();
    let g = &q.model.graph;
    let n = g.node_ids().find(|&n| g.node(n).name == CULPRIT).unwrap();
    let cast = g.producer(g.node(n).inputs[1].unwrap());
    assert!(
        g.node(cast).is_op("Cast"),
        "the search's float unit has f16 weights"
    );
    let before = fb.evaluations;
    s.restore_int8_weights(&mut fb).unwrap();
    assert!(fb.weights_fp16, "{}", fb.text());
    // One evaluation per unit tried with int8 weights back (given back, or still needing
    // float weights, less those not tried), none for float16.
    let tried = fb.weights_restored.len() + fb.weights_needed.len() - fb.weights_untried;
    assert!(tried > 0, "{}", fb.text());
    assert_eq!(fb.evaluations - before, tried, "{}", fb.text());
    assert!(fb.score.sqnr_db >= 40.0, "{}", fb.text());
    // Off again, a fully float unit is float32 (what `onnxq sensitivity` measures).
    s.set_weight_only_fallback(false);
    let q = s.quantize(&fb.float_units).unwrap().unwrap();
    let g = &q.model.graph;
    let n = g.node_ids().find(|&n| g.node(n).name == CULPRIT).unwrap();
    assert!(!g
        .node(g.producer(g.node(n).inputs[1].unwrap()))
        .is_op("Cast"));
}

/// The CLI's mixed result (some float units with int8 weights, the culprit without) is
/// written, and its saved qconfig reproduces it byte for byte.
#[test]
fn cli_mixed_float_weights_round_trip_through_the_qconfig() {
    let dir = temp_dir("mixed");
    let out = dir.join("ill.int8.onnx");
    let m = model("digits_cnn_illcond");
    let c = calib("digits_cnn");
    let o = quantize_cli(&m, &out, &c, &["--target-sqnr", "40"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("int8 weights back"), "{err}");
    assert!(
        err.contains(&format!("float weights needed (1): {CULPRIT}")),
        "{err}"
    );
    let qc = dir.join("ill.int8.onnx.qconfig.json");
    let mapping = onnxq::qconfig::QConfigMapping::from_file(&qc).unwrap();
    assert!(mapping.name.get(CULPRIT).is_some_and(|q| q.is_none()));
    assert!(!mapping.weight_only.is_empty());
    // Its float weights are stored as float16, and the saved mapping says so.
    assert!(err.contains("stored as float16"), "{err}");
    assert!(mapping.float16_weights.contains(CULPRIT), "{mapping:?}");
    let out2 = dir.join("again.onnx");
    let o = quantize_cli(&m, &out2, &c, &["--qconfig", qc.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
}

/// The accuracy fallback keeps the chosen units' activations float but their weights
/// int8 (weight-only), so the model stays small; a unit kept float that way still meets
/// the target, and its weights are a DequantizeLinear of an int8 initializer.
#[test]
fn weight_only_fallback_keeps_float_units_weights_int8() {
    let mut s = suite("inverted_residual", &per_tensor());
    s.set_weight_only_fallback(true);
    let sens = s.sensitivity(false).unwrap();
    let target = sens.int8.sqnr_db + 4.0;
    let fb = s
        .fallback(&sens.ranking(), Target::SqnrDb(target), None)
        .unwrap();
    eprintln!("{}", fb.text());
    assert!(fb.reached && fb.weights_int8);
    assert!(fb.text().contains("weights int8"));
    // Every unit but one float, weight-only vs fully float: the same activations, more
    // int8 weights.
    let all_but_one: Vec<String> = s.units.iter().skip(1).map(|u| u.name.clone()).collect();
    let wo = s.quantize(&all_but_one).unwrap().unwrap();
    s.set_weight_only_fallback(false);
    let full = s.quantize(&all_but_one).unwrap().unwrap();
    assert_eq!(wo.summary.activations, full.summary.activations);
    assert!(
        wo.summary.weights > full.summary.weights,
        "{} vs {}",
        wo.summary.weights,
        full.summary.weights
    );
    // The float units' int8 weights are stored int8.
    let g = &wo.model.graph;
    let mut int8_weights_of_float_units = 0;
    for n in g.node_ids() {
        let node = g.node(n);
        if !all_but_one.contains(&node.name)
            || !matches!(node.op_type(), "Conv" | "Gemm" | "MatMul")
        {
            continue;
        }
        let Some(w) = node.inputs.get(1).copied().flatten() else {
            continue;
        };
        if let Some(t) = stored_int8(g, w) {
            assert_eq!(t.dtype, onnxq::ir::DataType::I8);
            // Read by a float op: Cast → Mul, which engines fold at load (a DequantizeLinear
            // would be run on every inference by ONNX Runtime).
            assert!(g.node(g.producer(w)).is_op("Mul"), "{}", node.name);
            int8_weights_of_float_units += 1;
        }
    }
    assert!(int8_weights_of_float_units > 0);
}

/// The integer initializer a float weight `w` is computed from: through a DequantizeLinear
/// (an int8 op's weight) or Cast → (Sub) → Mul (a float op's); `None` for a float weight
/// (float32, or float16 behind a Cast).
fn stored_int8(g: &onnxq::ir::Graph, w: onnxq::ir::ValueId) -> Option<&onnxq::ir::Tensor> {
    let mut v = w;
    loop {
        let p = g.node(g.producer(v));
        if p.is_op("DequantizeLinear") || p.is_op("Cast") {
            let t = g.const_tensor(p.inputs[0]?)?;
            // (A Cast of float16 is a float weight stored as float16.)
            let int = matches!(t.dtype, onnxq::ir::DataType::I8 | onnxq::ir::DataType::U8);
            return int.then_some(t);
        }
        if !(p.is_op("Mul") || p.is_op("Sub")) {
            return None;
        }
        v = p.inputs[0]?;
    }
}

/// The number that follows `marker` in `text`.
fn number_after(text: &str, marker: &str) -> f64 {
    text.split(marker)
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no number after `{marker}` in:\n{text}"))
}

/// Plain `quantize` (no target) measures the output SQNR on the calibration data: below
/// the accuracy guard the fallback replaces the all-int8 model, keeping the bias-correction
/// choice `auto` made; `off` skips the check; a model above it is written as quantized,
/// with the figure in the summary.
#[test]
fn accuracy_guard_falls_back_below_it_and_off_skips_it() {
    let dir = temp_dir("guard");
    let m = model("digits_cnn_illcond");
    let c = calib("digits_cnn");
    let guarded = dir.join("guarded.onnx");
    let o = quantize_cli(&m, &guarded, &c, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("accuracy guard: output SQNR"), "{err}");
    assert!(err.contains("below 28 dB (25 dB + 3 dB"), "{err}");
    assert!(err.contains(CULPRIT), "{err}");
    let chosen = if err.contains("bias correction: off") {
        "off"
    } else {
        "on"
    };
    assert!(
        err.contains(&format!(
            "bias correction: {chosen} in the fallback's model too"
        )),
        "{err}"
    );
    let off = dir.join("off.onnx");
    let o = quantize_cli(&m, &off, &c, &["--accuracy-guard", "off"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("accuracy guard"), "{err}");
    assert_ne!(
        std::fs::read(&guarded).unwrap(),
        std::fs::read(&off).unwrap()
    );
    // The guarded model is the better one, by far.
    let float = onnxq::import::import_file(&m).unwrap();
    let sqnr = |p: &std::path::Path| {
        onnxq::numeric::sensitivity::output_sqnr(
            &float,
            &onnxq::import::import_file(p).unwrap(),
            &c,
            1,
        )
        .unwrap()
    };
    let (g, u) = (sqnr(&guarded), sqnr(&off));
    assert!(g >= 25.0 && u < 10.0, "guarded {g} dB, unguarded {u} dB");
    // The fallback's options apply to the guard's fallback.
    let local = dir.join("local.onnx");
    let o = quantize_cli(&m, &local, &c, &["--ranking", "local", "--max-float", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("local SQNR") || err.contains(CULPRIT), "{err}");
    assert!(err.contains(CULPRIT), "{err}");
    // digits_cnn meets it: no fallback, the figure is a summary note.
    let plain = dir.join("plain.onnx");
    let o = quantize_cli(&model("digits_cnn"), &plain, &c, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("accuracy guard: output SQNR") && err.contains(">= 25 dB + 3 dB"),
        "{err}"
    );
    assert!(!dir.join("plain.onnx.qconfig.json").exists());
    let plain_err = err.to_string();
    // The margin: a guard 1.5 dB under digits_cnn's figure is met, but not with its 3 dB
    // margin, so the fallback runs and aims at guard + 3.
    let figure = number_after(&err, "accuracy guard: output SQNR ");
    let guard = (figure - 1.5).floor();
    let margin = dir.join("margin.onnx");
    let o = quantize_cli(
        &model("digits_cnn"),
        &margin,
        &c,
        &["--accuracy-guard", &guard.to_string()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("below {} dB ({guard} dB + 3 dB", guard + 3.0)),
        "{err}"
    );
    let reached = onnxq::numeric::sensitivity::output_sqnr(
        &onnxq::import::import_file(model("digits_cnn")).unwrap(),
        &onnxq::import::import_file(&margin).unwrap(),
        &c,
        1,
    )
    .unwrap();
    assert!(reached >= guard + 3.0, "{reached} dB\n{err}");
    // Beside its figure, the guard reports how far it can be trusted: its 5th percentile
    // over resamples of the calibration batches, a little lower.
    let low = number_after(&plain_err, "--accuracy-guard); ");
    assert!(low < figure && low > figure - 3.0, "{plain_err}");
    assert!(plain_err.contains("dB at the 5th percentile over resamples"));
    // Not a number.
    let o = quantize_cli(&m, &off, &c, &["--accuracy-guard", "high"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("a number of dB, or `off`"));
}

/// A float unit with float weights between a DequantizeLinear and a QuantizeLinear (an
/// island, which ONNX Runtime quantizes itself) is named in the summary; one whose output
/// stays float is not.
#[test]
fn float_islands_pull_their_int8_readers_into_float() {
    let s = suite("inverted_residual", &QuantizeOptions::default());
    let float = ["/dw/Conv".to_string(), "/head/Conv".to_string()];
    let q = s.quantize(&float).unwrap().unwrap();
    // /dw/Conv reads the DequantizeLinear of the expand Conv's output and, through its
    // Clip, feeds the SE block (GlobalAveragePool, and the Mul scaling its output): with
    // those int8, it would sit between a DequantizeLinear and a QuantizeLinear, which ONNX
    // Runtime fuses into int8. So they stay float, and no island is left to warn about.
    let reason = |subject: &str| {
        q.summary
            .float
            .iter()
            .find(|g| g.subjects.iter().any(|s| s == subject))
            .map(|g| g.reason.clone())
            .unwrap_or_default()
    };
    for reader in ["/GlobalAveragePool", "/Mul"] {
        assert!(
            reason(reader).contains("reads the output of `/dw/Conv`"),
            "{reader}: {}",
            reason(reader)
        );
    }
    assert!(!q
        .summary
        .notes
        .iter()
        .any(|(_, m)| m.contains("ONNX Runtime runs it in int8")));
    // /head/Conv feeds the float HardSwish at the end: not an island, nothing pulled in.
    assert!(!q
        .summary
        .float
        .iter()
        .any(|g| g.reason.contains("reads the output of `/head/Conv`")));
    // The project Conv after the SE block stays int8.
    assert!(reason("/project/Conv").is_empty());
}
