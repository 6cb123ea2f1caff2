//! Import + export cost of a model with ~100 MB of weights, beyond reading
//! the file. `cargo bench --bench import_export`
//!
//! The model is made here (25 MatMuls with 1024×1024 f32 weights), written
//! to a temporary file, then timed stage by stage: read, decode + import
//! (without and with tract's type inference), export, encode + atomic write.

use onnxq::import::{import_bytes, ImportOptions};
use onnxq::ir::{Dim, Graph, Model, NodeKind, Op, OpsetImport, Tensor, TensorType, ValueType};
use std::time::Instant;

fn big_model(layers: usize, n: usize) -> Model {
    let mut g = Graph::new("big");
    let x = g.add_node("x", NodeKind::Input, &[], &[Some("x")]).unwrap();
    let mut cur = g.node(x).outputs[0].unwrap();
    g.value_mut(cur).ty = ValueType::Tensor(TensorType::new(
        onnxq::ir::DataType::F32,
        vec![Dim::Sym("batch".into()), Dim::Fixed(n as i64)],
    ));
    g.inputs.push(cur);
    let mut seed = 1u32;
    for i in 0..layers {
        let w: Vec<f32> = (0..n * n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed as f32 / u32::MAX as f32 - 0.5) * 0.01
            })
            .collect();
        let wv = g.add_const(
            &format!("w{i}"),
            Tensor::from_f32(vec![n as i64, n as i64], &w),
        );
        let node = g.add_op(
            &format!("mm{i}"),
            Op::new("MatMul"),
            &[Some(cur), Some(wv)],
            &[&format!("h{i}")],
        );
        cur = g.node(node).outputs[0].unwrap();
    }
    g.outputs.push(cur);
    Model {
        ir_version: 8,
        opset_import: vec![OpsetImport {
            domain: String::new(),
            version: 13,
        }],
        graph: g,
        ..Default::default()
    }
}

fn main() {
    let model = big_model(25, 1024);
    let dir = std::env::temp_dir().join(format!("onnxq-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.onnx");
    onnxq::emit::write_file(&model, &path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "model: {} MB of weights, file {:.1} MB",
        25 * 4,
        size as f64 / 1e6
    );
    let runs = 5;
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("read file", vec![]),
        ("import (no inference)", vec![]),
        ("import (tract inference)", vec![]),
        ("export to bytes", vec![]),
        ("write file (atomic)", vec![]),
    ];
    for _ in 0..runs {
        let t = Instant::now();
        let bytes = std::fs::read(&path).unwrap();
        rows[0].1.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let m = import_bytes(&bytes, Some(&dir), &ImportOptions { infer_types: false }).unwrap();
        rows[1].1.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let _ = import_bytes(&bytes, Some(&dir), &ImportOptions { infer_types: true }).unwrap();
        rows[2].1.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let out = onnxq::emit::to_bytes(&m);
        rows[3].1.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        onnxq::emit::write_atomic(&dir.join("out.onnx"), &out).unwrap();
        rows[4].1.push(t.elapsed().as_secs_f64());
    }
    println!("{:<28} {:>10} {:>10}", "stage", "median ms", "min ms");
    for (name, mut v) in rows {
        v.sort_by(f64::total_cmp);
        println!(
            "{:<28} {:>10.1} {:>10.1}",
            name,
            v[v.len() / 2] * 1e3,
            v[0] * 1e3
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
