//! Bad input gives a clear error naming the file, node or tensor, never a panic.

mod common;

use common::{opset13_model, value_info};
use onnxq::onnx::pb;
use prost::Message;
use std::path::{Path, PathBuf};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("onnxq-errors-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model(nodes: Vec<pb::NodeProto>, inits: Vec<pb::TensorProto>) -> pb::ModelProto {
    opset13_model(
        nodes,
        inits,
        vec![value_info("x", 1, &[2])],
        vec![value_info("y", 1, &[2])],
    )
}

fn write(dir: &Path, name: &str, m: &pb::ModelProto) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

fn err(path: &Path) -> String {
    match onnxq::import::import_file(path) {
        Ok(_) => panic!("{path:?} imported without error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_file() {
    let e = err(Path::new("/nonexistent/model.onnx"));
    assert!(
        e.contains("/nonexistent/model.onnx") && e.contains("No such file"),
        "{e}"
    );
}

#[test]
fn not_protobuf_and_empty_and_truncated() {
    let d = tmpdir("garbage");
    let p = d.join("text.onnx");
    std::fs::write(&p, "this is not a model\n").unwrap();
    let e = err(&p);
    assert!(
        e.contains("text.onnx") && e.contains("not an ONNX model"),
        "{e}"
    );

    let p = d.join("empty.onnx");
    std::fs::write(&p, b"").unwrap();
    let e = err(&p);
    assert!(
        e.contains("empty.onnx") && e.contains("not an ONNX model"),
        "{e}"
    );

    let good = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits_cnn.onnx"))
        .unwrap();
    let p = d.join("truncated.onnx");
    std::fs::write(&p, &good[..good.len() * 2 / 3]).unwrap();
    let e = err(&p);
    assert!(
        e.contains("truncated.onnx") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn undefined_value_names_node_and_value() {
    let d = tmpdir("undef");
    let m = model(
        vec![
            node("Relu", "relu1", &["x"], &["h"]),
            node("Add", "add1", &["h", "nowhere"], &["y"]),
        ],
        vec![],
    );
    let e = err(&write(&d, "undef.onnx", &m));
    assert!(
        e.contains("undef.onnx") && e.contains("add1") && e.contains("nowhere"),
        "{e}"
    );
}

#[test]
fn cycle_is_reported() {
    let d = tmpdir("cycle");
    let m = model(
        vec![
            node("Add", "a", &["x", "b_out"], &["a_out"]),
            node("Relu", "b", &["a_out"], &["b_out"]),
            node("Relu", "c", &["a_out"], &["y"]),
        ],
        vec![],
    );
    let e = err(&write(&d, "cycle.onnx", &m));
    assert!(e.contains("cycle.onnx") && e.contains("cycle"), "{e}");
}

#[test]
fn duplicate_definition_is_reported() {
    let d = tmpdir("dup");
    let m = model(
        vec![
            node("Relu", "r1", &["x"], &["y"]),
            node("Relu", "r2", &["x"], &["y"]),
        ],
        vec![],
    );
    let e = err(&write(&d, "dup.onnx", &m));
    assert!(
        e.contains("r2") && e.contains("`y`") && e.contains("already defined"),
        "{e}"
    );
}

#[test]
fn unknown_data_type_names_the_tensor() {
    let d = tmpdir("dtype");
    let w = pb::TensorProto {
        name: "weird_w".into(),
        data_type: 77,
        dims: vec![2],
        raw_data: vec![0; 8],
        ..Default::default()
    };
    let m = model(vec![node("Add", "add", &["x", "weird_w"], &["y"])], vec![w]);
    let e = err(&write(&d, "dtype.onnx", &m));
    assert!(
        e.contains("weird_w") && e.contains("unknown data type code 77"),
        "{e}"
    );
}

#[test]
fn missing_external_data_file_names_tensor_and_file() {
    let d = tmpdir("ext");
    let ext = |k: &str, v: &str| pb::StringStringEntryProto {
        key: k.into(),
        value: v.into(),
    };
    let w = pb::TensorProto {
        name: "big_w".into(),
        data_type: 1,
        dims: vec![2],
        data_location: pb::tensor_proto::DataLocation::External as i32,
        external_data: vec![
            ext("location", "weights.bin"),
            ext("offset", "0"),
            ext("length", "8"),
        ],
        ..Default::default()
    };
    let m = model(
        vec![node("Add", "add", &["x", "big_w"], &["y"])],
        vec![w.clone()],
    );
    let p = write(&d, "ext.onnx", &m);
    let e = err(&p);
    assert!(e.contains("big_w") && e.contains("weights.bin"), "{e}");

    // Present but too short.
    std::fs::write(d.join("weights.bin"), [0u8; 4]).unwrap();
    let e = err(&p);
    assert!(e.contains("big_w") && e.contains("4 bytes"), "{e}");

    // Present: imports, and the values are read.
    let bytes: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    std::fs::write(d.join("weights.bin"), &bytes).unwrap();
    let model = onnxq::import::import_file(&p).unwrap();
    let v = model.graph.value_by_name("big_w").unwrap();
    assert_eq!(
        model.graph.const_tensor(v).unwrap().to_f32_vec().unwrap(),
        vec![1.5, -2.0]
    );

    // Escaping the model's folder is refused.
    let mut w2 = w;
    w2.external_data[0].value = "../weights.bin".into();
    let m = model_with(vec![w2]);
    let e = err(&write(&d, "escape.onnx", &m));
    assert!(
        e.contains("big_w") && e.contains("relative path inside"),
        "{e}"
    );
}

fn model_with(inits: Vec<pb::TensorProto>) -> pb::ModelProto {
    model(vec![node("Add", "add", &["x", "big_w"], &["y"])], inits)
}

#[test]
fn cli_convert_refuses_to_overwrite_its_input_and_leaves_no_partial_file() {
    let d = tmpdir("cli");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mlp.onnx");
    let p = d.join("mlp.onnx");
    std::fs::copy(&src, &p).unwrap();
    let before = std::fs::read(&p).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(["convert"])
        .arg(&p)
        .arg("-o")
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert_eq!(before, std::fs::read(&p).unwrap());

    // A failing write (missing folder) leaves nothing behind.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(["convert"])
        .arg(&p)
        .arg("-o")
        .arg(d.join("no/such/dir/out.onnx"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("out.onnx"));
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    // A bad input model: clear error, exit code 1, no panic.
    let bad = d.join("bad.onnx");
    std::fs::write(&bad, b"\x08\x07garbage").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(["inspect"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.onnx") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// `optimize --list-passes` needs no model (the README's command); `optimize` without a model
/// or without `-o` says what it needs.
#[test]
fn optimize_list_passes_needs_no_model() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_onnxq"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["optimize", "--list-passes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for pass in ["fold-batchnorm", "insert-observers", "strip-metadata"] {
        assert!(text.contains(pass), "{text}");
    }
    let out = run(&["optimize"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("MODEL"));
    let mlp = common::models_dir().join("mlp.onnx");
    let out = run(&["optimize", mlp.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("-o OUT"));
}
