//! `onnxq quantize` (static QDQ) end to end, checked in tract: every bundled
//! model quantizes, tract runs the result, outputs keep their SQNR, and
//! digits_cnn keeps its accuracy. (ONNX Runtime checks: tests/python.)

mod common;

use common::*;
use std::process::Command;

fn quantize(model: &str, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let dir = models_dir();
    let calib = ["npy", "npz"]
        .iter()
        .map(|e| dir.join(format!("{model}.calib.{e}")))
        .find(|p| p.exists())
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .arg("quantize")
        .arg(dir.join(format!("{model}.onnx")))
        .arg("-o")
        .arg(out)
        .arg("--data")
        .arg(calib)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn every_model_quantizes_and_keeps_its_outputs_in_tract() {
    // SQNR floors, a few dB under what this version reaches (int8 vs fp32).
    let floors = [
        ("digits_cnn", 30.0),
        ("residual_block", 26.0),
        ("inverted_residual", 20.0),
        ("mlp", 30.0),
        ("transformer_layer", 18.0),
        ("lstm", 30.0),
    ];
    let dir = std::env::temp_dir().join(format!("onnxq-quantize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, floor) in floors {
        let out = dir.join(format!("{name}.int8.onnx"));
        let r = quantize(name, &out, &[]);
        assert!(
            r.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let path = models_dir().join(format!("{name}.onnx"));
        let model = onnxq::import::import_file(&path).unwrap();
        let inputs = sample_inputs(&path, &model);
        let want =
            onnxq::tract_runner::run_once(&std::fs::read(&path).unwrap(), None, &inputs).unwrap();
        let got =
            onnxq::tract_runner::run_once(&std::fs::read(&out).unwrap(), None, &inputs).unwrap();
        let db = sqnr_db(
            &want[0].to_f32_vec().unwrap(),
            &got[0].to_f32_vec().unwrap(),
        );
        println!("{name}: SQNR {db:.1} dB");
        assert!(db >= floor, "{name}: SQNR {db:.1} dB < {floor} dB");
        // Something was quantized: QuantizeLinear nodes and int8 weights exist.
        let q = onnxq::import::import_file(&out).unwrap();
        assert!(
            q.graph
                .node_ids()
                .any(|n| q.graph.node(n).is_op("QuantizeLinear")),
            "{name}"
        );
    }
}

#[test]
fn digits_cnn_keeps_its_accuracy_in_tract() {
    let out = std::env::temp_dir().join(format!("onnxq-digits-{}.onnx", std::process::id()));
    let eval = models_dir().join("digits_cnn.eval.npz");
    let r = quantize("digits_cnn", &out, &["--eval", eval.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let line = String::from_utf8_lossy(&r.stdout).to_string();
    let pct = |key: &str| -> f64 {
        let i = line.find(key).unwrap() + key.len();
        line[i..]
            .trim_start()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (fp32, int8) = (pct("fp32"), pct("int8"));
    assert!(fp32 >= 95.0, "{line}");
    assert!(
        int8 >= fp32 - 0.5,
        "int8 accuracy dropped more than 0.5 points: {line}"
    );
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        stderr.contains("quantized: 6 activations, 3 weights, 3 biases"),
        "{stderr}"
    );
}

#[test]
fn masks_stay_float_and_bad_options_are_errors() {
    let dir = std::env::temp_dir().join(format!("onnxq-quantize-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let r = quantize("transformer_layer", &dir.join("t.onnx"), &[]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    // Every float node is listed under its reason: the float-min mask, the
    // decomposed LayerNorms and the shape arithmetic.
    let listed_under = |reason: &str, name: &str| {
        let mut lines = stderr.lines().skip_while(|l| !l.contains(reason)).skip(1);
        lines
            .by_ref()
            .take_while(|l| l.starts_with("    "))
            .any(|l| l.split(", ").any(|n| n.trim() == name))
    };
    assert!(r.status.success(), "{stderr}");
    // The masked Add feeds the float Softmax only: it stays float, and so
    // does the mask.
    assert!(
        listed_under("its output feeds no int8 op", "/Add"),
        "{stderr}"
    );
    // Forced to int8 anyway, the float-min mask's range is caught.
    let forced = quantize(
        "transformer_layer",
        &dir.join("t2.onnx"),
        &["--quantize-isolated"],
    );
    let forced_err = String::from_utf8_lossy(&forced.stderr);
    assert!(forced.status.success(), "{forced_err}");
    assert!(
        forced_err
            .lines()
            .skip_while(|l| !l.contains("calibrated range too wide for 8 bits"))
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .any(|l| l.split(", ").any(|n| n.trim() == "mask")),
        "{forced_err}"
    );
    assert!(
        listed_under("part of a decomposed LayerNormalization", "/ln1/Pow"),
        "{stderr}"
    );
    assert!(
        listed_under("not a real-valued signal (its output is i64)", "/Gather"),
        "{stderr}"
    );
    let r = quantize("mlp", &dir.join("m.onnx"), &["--exclude", "/no/such/node"]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("no node named `/no/such/node`"));
    assert!(!dir.join("m.onnx").exists());
    // tract cannot run its Loop: calibration runs on onnxq's executor (If, Loop and
    // Scan), and the summary says so.
    let r = quantize("control_flow", &dir.join("c.onnx"), &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("calibrated with onnxq's executor"), "{err}");
}

#[test]
fn conflicting_options_and_nothing_to_quantize_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("onnxq-quantize-conflict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("m.onnx");
    let cases: [(&[&str], &str); 5] = [
        (&["--mode", "dynamic"], "needs no calibration data"),
        (&["--bits", "4"], "options of --mode weight-only"),
        (
            &["--format", "qoperator", "--mode", "weight-only"],
            "is for --mode static",
        ),
        (&["--calibration", "x.json"], "cannot be used with"),
        (
            &["--exclude-op", "Gemm", "--exclude-op", "Relu"],
            "nothing to quantize",
        ),
    ];
    for (extra, want) in cases {
        let r = quantize("mlp", &out, extra);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{extra:?} succeeded");
        assert!(stderr.contains(want), "{extra:?}: {stderr}");
        assert!(!out.exists(), "{extra:?} left an output behind");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Initializers also listed as graph inputs (pre-IR-4 exporters) are
/// quantized as the weights they are: dropped from the inputs (else the
/// float copy stays beside the int8 one), and the summary says so.
#[test]
fn initializers_listed_as_inputs_are_quantized_as_constants() {
    use onnxq::ir::{ConstOrigin, NodeKind};
    use onnxq::quantize::{quantize, Calibration, QuantizeOptions};
    let mut m = onnxq::import::import_file(models_dir().join("mlp.onnx")).unwrap();
    let ids: Vec<_> = m.graph.node_ids().collect();
    let mut weights = vec![];
    for n in ids {
        if let NodeKind::Const(c) = &mut m.graph.node_mut(n).kind {
            c.origin = ConstOrigin::Initializer {
                is_graph_input: true,
            };
            weights.push(n);
        }
    }
    for n in weights {
        let v = m.graph.node(n).outputs[0].unwrap();
        m.graph.inputs.push(v);
    }
    let data = models_dir().join("mlp.calib.npy");
    let q = quantize(
        m,
        Some(Calibration::Data(&data)),
        &QuantizeOptions::default(),
    )
    .unwrap();
    assert_eq!(q.model.graph.inputs.len(), 1);
    assert!(q.summary.weights >= 2);
    assert!(
        q.summary
            .notes
            .iter()
            .any(|(_, n)| n.contains("also listed as graph inputs")),
        "{}",
        q.summary
    );
}

#[test]
fn report_is_refused_up_front_where_it_cannot_be_made() {
    let dir = std::env::temp_dir().join(format!("onnxq-report-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("m.onnx");
    let r = Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .arg("quantize")
        .arg(models_dir().join("mlp.onnx"))
        .arg("-o")
        .arg(&out)
        .args(["--mode", "dynamic", "--report"])
        .arg(dir.join("r.html"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        stderr.contains("--report") && stderr.contains("--mode static"),
        "{stderr}"
    );
    assert!(
        !out.exists(),
        "nothing is written when the options conflict"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Static mode on a model whose only quantizable layer is an LSTM (the Gemm excluded): no
/// activation is calibrated, but the LSTM weights are still stored int8 (they are most of
/// the file), and the summary says why nothing else is.
#[test]
fn static_mode_stores_recurrent_weights_when_no_activation_is_quantized() {
    let dir = std::env::temp_dir().join(format!("onnxq-lstm-only-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("lstm.onnx");
    let r = quantize("lstm", &out, &["--exclude-op", "Gemm"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("recurrent weights: LSTM 1"), "{err}");
    assert!(
        err.contains("static mode found no activation to quantize"),
        "{err}"
    );
    let m = onnxq::import::import_file(&out).unwrap();
    let g = &m.graph;
    let int8_rows: usize = g
        .value_ids()
        .filter_map(|v| g.const_tensor(v))
        .filter(|t| t.dtype == onnxq::ir::DataType::I8 && t.dims.len() == 3)
        .map(|t| t.len())
        .sum();
    // W [1,128,8] and R [1,128,32] (their per-row zero points are 1-D).
    assert_eq!(int8_rows, 128 * 8 + 128 * 32, "{err}");
    assert!(
        std::fs::metadata(&out).unwrap().len()
            < std::fs::metadata(models_dir().join("lstm.onnx"))
                .unwrap()
                .len()
                / 2
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--strip-metadata` drops the per-node debug metadata an exporter wrote (PyTorch's dynamo
/// export: a stack trace per node); without it, onnxq keeps it as it keeps everything else.
#[test]
fn strip_metadata_drops_per_node_debug_information() {
    let dir = std::env::temp_dir().join(format!("onnxq-strip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut m = onnxq::import::import_file(models_dir().join("mlp.onnx")).unwrap();
    let trace = "File \"model.py\", line 42, in forward\n".repeat(20);
    let ids: Vec<_> = m.graph.node_ids().collect();
    for n in ids {
        if let Some(op) = m.graph.node_mut(n).op_mut() {
            op.metadata_props
                .push(("pkg.torch.onnx.stack_trace".into(), trace.clone()));
            op.doc_string = "exported".into();
        }
    }
    let src = dir.join("traced.onnx");
    onnxq::emit::write_file(&m, &src).unwrap();
    let calib = models_dir().join("mlp.calib.npy");
    let run = |out: &std::path::Path, extra: &[&str]| {
        let r = Command::new(env!("CARGO_BIN_EXE_onnxq"))
            .args([
                "quantize",
                src.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ])
            .args(["--data", calib.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        String::from_utf8_lossy(&r.stderr).to_string()
    };
    let (kept, stripped) = (dir.join("kept.onnx"), dir.join("stripped.onnx"));
    run(&kept, &[]);
    let err = run(&stripped, &["--strip-metadata"]);
    assert!(err.contains("strip-metadata: "), "{err}");
    let traced = |p: &std::path::Path| {
        let m = onnxq::import::import_file(p).unwrap();
        m.graph
            .node_ids()
            .filter(|&n| {
                m.graph
                    .node(n)
                    .op()
                    .is_some_and(|o| !o.metadata_props.is_empty() || !o.doc_string.is_empty())
            })
            .count()
    };
    assert!(traced(&kept) > 0);
    assert_eq!(traced(&stripped), 0);
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    assert!(
        size(&stripped) + 2000 < size(&kept),
        "{} vs {}",
        size(&stripped),
        size(&kept)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Full-range s8 weights on int8 units (which ONNX Runtime's AVX2 kernels without VNNI
/// saturate on) are warned about; the presets' weights (7-bit s8, u8) are not.
#[test]
fn full_range_s8_weights_are_warned_about() {
    let dir = std::env::temp_dir().join(format!("onnxq-s8warn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let warned = |extra: &[&str]| {
        let o = quantize("mlp", &dir.join("q.onnx"), extra);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "{err}");
        err.contains("full-range s8 weights")
    };
    assert!(warned(&["--backend", "qnnpack", "--weight-dtype", "int8"]));
    assert!(!warned(&["--backend", "qnnpack"]));
    assert!(!warned(&[]));
    std::fs::remove_dir_all(&dir).ok();
}
