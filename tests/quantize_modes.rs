//! The quantization modes beyond static QDQ — dynamic, weight-only and the
//! QOperator format — on the bundled models, run in tract (ONNX Runtime and
//! onnx's full checker: tests/python/test_ort_quantize_modes.py), with
//! snapshots of the emitted graphs.

mod common;

use common::*;
use onnxq::ir::print::model_to_string;
use onnxq::passes::DynamicOptions;
use onnxq::prelude::*;
use std::path::PathBuf;

fn load(name: &str) -> (PathBuf, Model) {
    let path = models_dir().join(format!("{name}.onnx"));
    let m = onnxq::import::import_file(&path).unwrap();
    (path, m)
}

fn sqnr_db(want: &[f32], got: &[f32]) -> f64 {
    assert_eq!(want.len(), got.len());
    let s: f64 = want.iter().map(|&x| (x as f64).powi(2)).sum();
    let n: f64 = want
        .iter()
        .zip(got)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    10.0 * (s / n.max(1e-30)).log10()
}

/// Runs the float model and `q` in tract on the sample; SQNR of output 0.
fn tract_sqnr(path: &std::path::Path, q: &Model) -> Result<f64> {
    let float = onnxq::import::import_file(path).unwrap();
    let inputs = sample_inputs(path, &float);
    let want = onnxq::tract_runner::run_once(&std::fs::read(path).unwrap(), None, &inputs)?;
    let got = onnxq::tract_runner::run_once(&onnxq::emit::to_bytes(q), None, &inputs)?;
    Ok(sqnr_db(
        &want[0].to_f32_vec().unwrap(),
        &got[0].to_f32_vec().unwrap(),
    ))
}

fn op_count(m: &Model, op: &str) -> usize {
    m.graph
        .node_ids()
        .filter(|&n| m.graph.node(n).is_op(op))
        .count()
}

fn run_pipeline(m: &mut Model, text: &str) -> Result<PassContext> {
    let mut pm = PassManager::parse(text, &PassRegistry::builtin())?;
    let mut cx = PassContext::new();
    pm.run(m, &mut cx)?;
    Ok(cx)
}

// ---- dynamic ---------------------------------------------------------------

#[test]
fn dynamic_models_run_in_tract_and_keep_their_outputs() {
    // Floors a few dB under what this version reaches in tract (exact
    // integer arithmetic): the int8 weights and u8 activations are the only
    // error.
    let cases = [
        ("mlp", 45.0, "Gemm", 3, 0),
        // The two attention MatMuls (activation × activation) stay float.
        ("transformer_layer", 30.0, "MatMul", 6, 2),
        ("lstm", 35.0, "LSTM", 1, 1),
        ("digits_cnn", 33.0, "Conv", 3, 0),
        ("residual_block", 28.0, "Conv", 2, 0),
        ("inverted_residual", 26.0, "Conv", 6, 0),
    ];
    for (name, floor, op, count, left) in cases {
        let (path, mut m) = load(name);
        let mut cx = PassContext::new();
        let pipeline =
            onnxq::modes::quantize_dynamic(&mut m, DynamicOptions::default(), &mut cx).unwrap();
        assert!(pipeline.ends_with("quantize-dynamic,eliminate-dead-code"));
        assert_eq!(
            cx.stat("quantize-dynamic", op),
            count,
            "{name}: {:?}",
            cx.statistics()
        );
        let db = tract_sqnr(&path, &m).unwrap();
        println!("{name}: dynamic SQNR {db:.1} dB (tract)");
        assert!(db >= floor, "{name}: SQNR {db:.1} dB < {floor} dB");
        assert_eq!(op_count(&m, op), left, "{name}: {op} left");
        if op != "LSTM" {
            assert!(op_count(&m, "MatMulInteger") + op_count(&m, "ConvInteger") > 0);
            assert!(op_count(&m, "DynamicQuantizeLinear") > 0);
        }
    }
}

#[test]
fn dynamic_keeps_activation_matmuls_float_and_shares_the_run_time_quantization() {
    let (_, mut m) = load("transformer_layer");
    let mut cx = PassContext::new();
    onnxq::modes::quantize_dynamic(&mut m, DynamicOptions::default(), &mut cx).unwrap();
    // QK^T and attention × V stay float, and say why.
    assert_eq!(op_count(&m, "MatMul"), 2);
    let notes: Vec<String> = cx
        .diagnostics()
        .iter()
        .filter(|d| d.pass == "quantize-dynamic")
        .map(|d| format!("{}: {}", d.subject, d.message))
        .collect();
    assert_eq!(
        notes
            .iter()
            .filter(|n| n.contains("both inputs are activations"))
            .count(),
        2,
        "{notes:#?}"
    );
    // q, k, v read the same input: one DynamicQuantizeLinear for it, one for
    // the attention output, one for the LayerNorm output and one for the GELU.
    assert_eq!(op_count(&m, "DynamicQuantizeLinear"), 4);
    assert_eq!(op_count(&m, "MatMulInteger"), 6);
}

#[test]
fn dynamic_options_and_errors() {
    // Per-tensor int8: scalar weight scale and zero point.
    let (path, mut m) = load("mlp");
    run_pipeline(
        &mut m,
        "fuse-matmul-add,quantize-dynamic{per-tensor=true,weight-type=int8},eliminate-dead-code",
    )
    .unwrap();
    for n in m.graph.node_ids() {
        if m.graph.node(n).is_op("MatMulInteger") {
            let w = m.graph.node(n).inputs[1].unwrap();
            assert_eq!(m.graph.const_tensor(w).unwrap().dtype, DataType::I8);
            let z = m.graph.node(n).inputs[3].unwrap();
            assert!(m.graph.const_tensor(z).unwrap().dims.is_empty());
        }
    }
    assert!(tract_sqnr(&path, &m).unwrap() > 35.0);
    // Only some op types; exclusions by node name.
    let (_, mut m) = load("lstm");
    let cx = run_pipeline(&mut m, "quantize-dynamic{ops=LSTM}").unwrap();
    assert_eq!(cx.stat("quantize-dynamic", "LSTM"), 1);
    assert_eq!(op_count(&m, "Gemm"), 1);
    let (_, mut m) = load("mlp");
    let cx = run_pipeline(&mut m, "quantize-dynamic{exclude=/fc2/Gemm}").unwrap();
    assert_eq!(op_count(&m, "Gemm"), 1);
    assert!(cx
        .diagnostics()
        .iter()
        .any(|d| d.subject == "/fc2/Gemm" && d.message.contains("excluded")));
    // Bad options are errors naming what is wrong.
    for (text, want) in [
        ("quantize-dynamic{exclude=/no/such}", "no node of that name"),
        ("quantize-dynamic{ops=Softmax}", "op type `Softmax`"),
        ("quantize-dynamic{weight-type=int4}", "weight-type must be"),
        ("quantize-dynamic{bits=8}", "has no option `bits`"),
    ] {
        let (_, mut m) = load("mlp");
        let e = run_pipeline(&mut m, text).err().unwrap().to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
}

#[test]
fn dynamic_snapshot_mlp_and_lstm() {
    for name in ["mlp", "lstm"] {
        let (_, mut m) = load(name);
        let mut cx = PassContext::new();
        onnxq::modes::quantize_dynamic(&mut m, DynamicOptions::default(), &mut cx).unwrap();
        insta::assert_snapshot!(format!("dynamic_{name}"), model_to_string(&m));
    }
}
