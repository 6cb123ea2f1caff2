//! `onnxq calibrate`: a saved table re-used gives the qparams of a fresh
//! run, and two merged half-runs give those of one full run.

use std::path::{Path, PathBuf};
use std::process::Command;

fn onnxq(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "onnxq {args:?}: {stderr}");
    stderr
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("onnxq-calib-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn saved_and_merged_calibrations_match_a_full_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/digits_cnn.onnx");
    let data = root.join("models/digits_cnn.calib.npy");
    let d = tmp("merge");
    // Two halves of the calibration set.
    let all = onnxq::data::read_npy(&data).unwrap();
    let n = all.dims[0] as usize;
    let row = all.raw().unwrap().len() / n;
    for (k, range) in [(0, 0..n / 2), (1, n / 2..n)] {
        let mut dims = all.dims.clone();
        dims[0] = range.len() as i64;
        let part = onnxq::ir::Tensor::from_raw(
            all.dtype,
            dims,
            all.raw().unwrap()[range.start * row..range.end * row].to_vec(),
        )
        .unwrap();
        std::fs::write(
            d.join(format!("half{k}.npy")),
            onnxq::data::npy_bytes(&part).unwrap(),
        )
        .unwrap();
    }
    let full = d.join("full.json");
    let (h0, h1, merged) = (d.join("h0.json"), d.join("h1.json"), d.join("merged.json"));
    for (data, out) in [
        (data.clone(), &full),
        (d.join("half0.npy"), &h0),
        (d.join("half1.npy"), &h1),
    ] {
        let msg = onnxq(&[
            "calibrate",
            s(&model),
            "--data",
            s(&data),
            "-o",
            s(out),
            "--observer",
            "minmax",
        ]);
        assert!(msg.contains("calibrated 5 activations, 3 weights"), "{msg}");
    }
    onnxq(&[
        "calibrate",
        s(&model),
        "--data",
        s(&data),
        "-o",
        s(&merged),
        "--merge",
        s(&h0),
        s(&h1),
    ]);
    let full_t = onnxq::calib::CalibrationTable::read(&full).unwrap();
    let merged_t = onnxq::calib::CalibrationTable::read(&merged).unwrap();
    assert_eq!(full_t.samples, n);
    assert_eq!(merged_t.samples, n);
    for (name, e) in &full_t.entries {
        assert_eq!(merged_t.qparams(name), Some(&e.qparams), "{name}");
    }
    // Re-read: qparams recomputed from the saved observer state are the same.
    use onnxq::observe::Observer;
    for (name, e) in &full_t.entries {
        if let Some(state) = &e.state {
            assert_eq!(&state.qparams().unwrap(), &e.qparams, "{name}");
        }
    }
    // Histogram observers refuse nothing and stay within a run: the default works too.
    let hist = d.join("hist.json");
    onnxq(&["calibrate", s(&model), "--data", s(&data), "-o", s(&hist)]);
    let t = onnxq::calib::CalibrationTable::read(&hist).unwrap();
    assert!(t.pipeline.contains("insert-observers{backend=fbgemm}"));
}

#[test]
fn bad_data_is_a_clear_error() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = tmp("bad");
    let out = Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args([
            "calibrate",
            s(&root.join("models/digits_cnn.onnx")),
            "--data",
            s(&root.join("models/mlp.calib.npy")),
            "-o",
            s(&d.join("x.json")),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mlp.calib.npy") && err.contains("input"),
        "{err}"
    );
    assert!(!d.join("x.json").exists());
}
