//! `onnxq compare`: its figures against a direct computation on activations dumped
//! independently (float model in tract, quantized model in the executor), worst-first
//! ordering, JSON output, and errors on bad input.

mod common;

use common::*;
use onnxq::calib::{model_inputs, CalibrationData};
use onnxq::executor::{Executor, ExecutorOptions};
use onnxq::ir::{TensorType, ValueType};
use onnxq::numeric::compare::{run_to, CompareArgs};
use std::path::{Path, PathBuf};

fn calib(model: &str) -> PathBuf {
    ["npy", "npz"]
        .iter()
        .map(|e| models_dir().join(format!("{model}.calib.{e}")))
        .find(|p| p.exists())
        .unwrap()
}

/// Quantizes through the library (not the binary: `target/debug/onnxq` may be shared
/// with other worktrees' builds).
fn quantize(model: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{model}.int8.onnx"));
    onnxq::quantize::quantize_file(
        &models_dir().join(format!("{model}.onnx")),
        &out,
        Some(onnxq::quantize::Calibration::Data(&calib(model))),
        &onnxq::quantize::QuantizeOptions::default(),
    )
    .unwrap();
    out
}

/// `onnxq compare` as the command runs it, returning its output or its error.
fn compare_cli(float: &Path, quant: &Path, data: &Path, json: bool) -> Result<String, String> {
    let args = CompareArgs {
        float_model: float.to_path_buf(),
        quant_model: quant.to_path_buf(),
        data: data.to_path_buf(),
        json,
        report: None,
    };
    let mut out = Vec::new();
    run_to(&args, &mut out).map_err(|e| format!("{e:#}"))?;
    Ok(String::from_utf8(out).unwrap())
}

fn compare_json(float: &Path, quant: &Path, data: &Path) -> serde_json::Value {
    let text = compare_cli(float, quant, data, true).unwrap();
    serde_json::from_str(&text).expect("compare --json prints JSON")
}

/// Runs every batch of `data` through the float model in tract and the quantized one in
/// the executor, returning per name the concatenated float and dequantized values.
fn dump(
    float: &Path,
    quant: &Path,
    data: &Path,
    pairs: &[(String, String)],
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let mut fm = onnxq::import::import_file(float).unwrap();
    let mut qm = onnxq::import::import_file(quant).unwrap();
    for (f, q) in pairs {
        let v = fm.graph.value_by_name(f).unwrap();
        fm.graph.outputs.push(v);
        let v = qm.graph.value_by_name(q).unwrap();
        qm.graph.outputs.push(v);
    }
    // tract infers intermediate shapes from the concrete inputs (declared symbolic
    // batch dims must not contradict them).
    let ids: Vec<_> = fm.graph.value_ids().collect();
    for v in ids {
        if fm.graph.inputs.contains(&v) || fm.graph.const_tensor(v).is_some() {
            continue;
        }
        let dtype = fm.graph.value(v).ty.dtype();
        fm.graph
            .set_value_type(v, ValueType::Tensor(TensorType { dtype, shape: None }));
    }
    let fbytes = onnxq::emit::to_bytes(&fm);
    let n_out = fm.graph.outputs.len();
    let qexec = Executor::new(&qm, ExecutorOptions::default()).unwrap();
    let inputs = model_inputs(&fm).unwrap();
    let mut data = CalibrationData::open(data, &inputs).unwrap();
    let mut out = vec![(Vec::new(), Vec::new()); pairs.len()];
    while let Some(batch) = data.next_batch() {
        let batch = batch.unwrap();
        let fo = onnxq::tract_runner::run_once(&fbytes, None, &batch.tensors).unwrap();
        let named: Vec<(&str, &onnxq::ir::Tensor)> = inputs
            .iter()
            .zip(&batch.tensors)
            .map(|(i, t)| (i.name.as_str(), t))
            .collect();
        let qo = qexec.run(&named).unwrap();
        let q_first = qo.len() - pairs.len();
        for (k, (f, q)) in out.iter_mut().enumerate() {
            f.extend(fo[n_out - pairs.len() + k].to_f32_vec().unwrap());
            q.extend(qo[q_first + k].1.to_f32_vec().unwrap());
        }
    }
    out
}

fn sqnr_db(x: &[f32], y: &[f32]) -> f64 {
    let s: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum();
    let n: f64 = x
        .iter()
        .zip(y)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    10.0 * (s / n).log10()
}

fn cosine(x: &[f32], y: &[f32]) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum();
    let nx: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum();
    let ny: f64 = y.iter().map(|&a| (a as f64).powi(2)).sum();
    dot / (nx * ny).sqrt()
}

fn check_model(model: &str, dir: &Path, min_activations: usize, min_weights: usize) {
    let float = models_dir().join(format!("{model}.onnx"));
    let quant = quantize(model, dir);
    let data = calib(model);
    let report = compare_json(&float, &quant, &data);
    let rows = report["rows"].as_array().unwrap();
    let sqnr = |r: &serde_json::Value| r["sqnr_db"].as_f64().unwrap_or(f64::INFINITY);
    // Worst first.
    for w in rows.windows(2) {
        assert!(sqnr(&w[0]) <= sqnr(&w[1]), "{model}: not sorted: {w:?}");
    }
    let acts: Vec<&serde_json::Value> = rows.iter().filter(|r| r["kind"] == "activation").collect();
    let weights: Vec<&serde_json::Value> = rows.iter().filter(|r| r["kind"] == "weight").collect();
    assert!(
        acts.len() >= min_activations,
        "{model}: {} activations",
        acts.len()
    );
    assert!(
        weights.len() >= min_weights,
        "{model}: {} weights",
        weights.len()
    );
    assert!(report["samples"].as_u64().unwrap() > 0);

    // Activations (the graph input and output included) against an independent dump.
    let pairs: Vec<(String, String)> = acts
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["quant_name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The graph input is there when it is quantized (digits_cnn's first Conv reads it in
    // float); the graph output always is.
    let fm = onnxq::import::import_file(&float).unwrap();
    let out_name = fm.graph.value(fm.graph.outputs[0]).name.clone();
    assert!(
        pairs.iter().any(|(f, _)| f == "input" || *f == out_name),
        "{model}: {pairs:?}"
    );
    let dumped = dump(&float, &quant, &data, &pairs);
    for (r, (x, y)) in acts.iter().zip(&dumped) {
        assert_eq!(r["elements"].as_u64().unwrap() as usize, x.len());
        let want = sqnr_db(x, y);
        let got = sqnr(r);
        assert!(
            (want - got).abs() < 0.01,
            "{model}: {}: compare says {got:.4} dB, direct {want:.4} dB",
            r["name"]
        );
        let mse: f64 = x
            .iter()
            .zip(y)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum::<f64>()
            / x.len() as f64;
        let got_mse = r["mse"].as_f64().unwrap();
        assert!(
            (mse - got_mse).abs() <= 1e-3 * mse + 1e-12,
            "{model}: mse {got_mse} vs {mse}"
        );
        assert!((cosine(x, y) - r["cosine"].as_f64().unwrap()).abs() < 1e-6);
    }

    // Weights: the float initializer against the quantized model's DequantizeLinear.
    let fm = onnxq::import::import_file(&float).unwrap();
    let mut qm = onnxq::import::import_file(&quant).unwrap();
    for r in &weights {
        let v = qm
            .graph
            .value_by_name(r["quant_name"].as_str().unwrap())
            .unwrap();
        qm.graph.outputs.push(v);
    }
    let qexec = Executor::new(&qm, ExecutorOptions::default()).unwrap();
    let inputs = model_inputs(&fm).unwrap();
    let x = CalibrationData::open(&data, &inputs)
        .unwrap()
        .next_batch()
        .unwrap()
        .unwrap();
    let named: Vec<(&str, &onnxq::ir::Tensor)> = inputs
        .iter()
        .zip(&x.tensors)
        .map(|(i, t)| (i.name.as_str(), t))
        .collect();
    let qo = qexec.run(&named).unwrap();
    let first = qo.len() - weights.len();
    for (k, r) in weights.iter().enumerate() {
        let name = r["name"].as_str().unwrap();
        let wv = fm.graph.value_by_name(name).unwrap();
        let mut w = fm.graph.const_tensor(wv).unwrap().to_f32_vec().unwrap();
        if r["op"].as_str().unwrap().contains("BN-folded") {
            bn_fold(&fm.graph, wv, &mut w);
        }
        let d = qo[first + k].1.to_f32_vec().unwrap();
        let want = sqnr_db(&w, &d);
        assert!(
            (want - sqnr(r)).abs() < 0.01,
            "{model}: weight {name}: compare says {} dB, direct {want:.4} dB",
            sqnr(r)
        );
    }
}

/// Folds the BatchNormalization after the Conv reading `w` into `w` (scale per output
/// channel: gamma / sqrt(var + eps)), independently of the optimize pipeline.
fn bn_fold(g: &onnxq::ir::Graph, w: onnxq::ir::ValueId, data: &mut [f32]) {
    let (conv, _) = g.consumers(w)[0];
    let y = g.node(conv).outputs[0].unwrap();
    let (bn, _) = g.consumers(y)[0];
    let bn = g.node(bn);
    assert!(bn.is_op("BatchNormalization"));
    let input = |i: usize| {
        g.const_tensor(bn.inputs[i].unwrap())
            .unwrap()
            .to_f32_vec()
            .unwrap()
    };
    let (gamma, var) = (input(1), input(4));
    let eps = bn
        .op()
        .unwrap()
        .attr("epsilon")
        .and_then(|a| a.as_float())
        .unwrap_or(1e-5);
    let per = data.len() / gamma.len();
    for (i, x) in data.iter_mut().enumerate() {
        let c = i / per;
        *x *= gamma[c] / (var[c] + eps).sqrt();
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("onnxq-compare-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn digits_cnn_figures_match_a_direct_computation() {
    let dir = temp_dir("digits");
    check_model("digits_cnn", &dir, 6, 3);
    // The BatchNorm-folded conv weights are compared with the folded float weights (checked
    // against an independent fold above), and the table prints.
    let float = models_dir().join("digits_cnn.onnx");
    let quant = dir.join("digits_cnn.int8.onnx");
    let report = compare_json(&float, &quant, &calib("digits_cnn"));
    let skipped = report["skipped"].as_array().unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    let folded = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["op"] == "Conv (float BN-folded)")
        .count();
    // The two int8 convs (the first one keeps float weights: a speed rule).
    assert_eq!(folded, 2);
    let text = compare_cli(&float, &quant, &calib("digits_cnn"), false).unwrap();
    assert!(
        text.contains("SQNR dB") && text.contains("fc.weight"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn transformer_layer_figures_match_a_direct_computation() {
    let dir = temp_dir("transformer");
    check_model("transformer_layer", &dir, 20, 6);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn batchnorm_folded_values_are_compared_with_the_batchnorm_output() {
    // The quantizer folds bn2 into conv2 and keeps the name `/conv2/Conv_output_0`:
    // compare must pair it with the float BatchNormalization's output, not the Conv's.
    let dir = temp_dir("residual");
    check_model("residual_block", &dir, 4, 2);
    let report = compare_json(
        &models_dir().join("residual_block.onnx"),
        &dir.join("residual_block.int8.onnx"),
        &calib("residual_block"),
    );
    let rows = report["rows"].as_array().unwrap();
    let bn = rows
        .iter()
        .find(|r| r["quant_name"] == "/conv2/Conv_output_0_dequantized")
        .expect("the folded conv output is compared");
    assert_eq!(bn["name"], "/bn2/BatchNormalization_output_0");
    assert_eq!(bn["op"], "Conv+BatchNormalization");
    assert!(bn["sqnr_db"].as_f64().unwrap() > 20.0, "{bn}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_gives_a_clear_error() {
    let dir = temp_dir("errors");
    let quant = quantize("digits_cnn", &dir);
    let data = calib("digits_cnn");
    let err = compare_cli(
        &models_dir().join("transformer_layer.onnx"),
        &quant,
        &data,
        false,
    )
    .unwrap_err();
    assert!(err.contains("do not match"), "{err}");

    let missing = dir.join("missing.onnx");
    let err = compare_cli(
        &models_dir().join("digits_cnn.onnx"),
        &missing,
        &data,
        false,
    )
    .unwrap_err();
    assert!(err.contains("missing.onnx: no such file"), "{err}");

    // A float model compared with itself has no QDQ structure to match.
    let float = models_dir().join("digits_cnn.onnx");
    let err = compare_cli(&float, &float, &data, true).unwrap_err();
    assert!(err.contains("no quantized value"), "{err}");
    assert!(err.contains("static QDQ"), "{err}");

    // Data that does not fit the models.
    let err = compare_cli(&float, &quant, &calib("mlp"), false).unwrap_err();
    assert!(err.contains("does not fit the model input"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
