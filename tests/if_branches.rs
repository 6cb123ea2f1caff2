//! Quantization inside If branches, on `models/branches/digits_branches.onnx`: the digits
//! MLP behind an If on the sample rate (then: weights in the main graph's initializers,
//! read by name; else: weights in Constant nodes and the last layer in a nested If), as
//! silero-VAD exports are built (see `models/gen/make_branches.py`).

mod common;

use common::*;
use onnxq::ir::{DataType, Graph, Model, NodeKind, Tensor};
use onnxq::quantize::{quantize, Calibration, QuantizeOptions};
use std::collections::{BTreeMap, BTreeSet};

fn branches_model() -> Model {
    onnxq::import::import_file(models_dir().join("branches/digits_branches.onnx")).unwrap()
}

fn quantized() -> onnxq::quantize::Quantized {
    let calib = models_dir().join("branches/digits_branches.calib.npz");
    quantize(
        branches_model(),
        Some(Calibration::Data(&calib)),
        &QuantizeOptions::default(),
    )
    .unwrap()
}

/// Per graph name: its op types (with counts), and every value name it defines.
fn walk(g: &Graph, ops: &mut BTreeMap<String, BTreeMap<String, usize>>, names: &mut Vec<String>) {
    let entry = ops.entry(g.name.clone()).or_default();
    for n in g.node_ids() {
        let node = g.node(n);
        if !matches!(node.kind, NodeKind::OuterRef) {
            names.extend(
                node.outputs
                    .iter()
                    .flatten()
                    .map(|&v| g.value(v).name.clone()),
            );
        }
        if let Some(op) = node.op() {
            *entry.entry(op.op_type.clone()).or_default() += 1;
        }
    }
    for n in g.node_ids() {
        if let Some(op) = g.node(n).op() {
            for a in op.attrs.values() {
                for sg in a.subgraphs() {
                    walk(sg, ops, names);
                }
            }
        }
    }
}

#[test]
fn every_branch_is_quantized_and_names_stay_unique() {
    let q = quantized();
    let mut ops = BTreeMap::new();
    let mut names = vec![];
    walk(&q.model.graph, &mut ops, &mut names);
    for branch in ["net16k", "net8k", "last_a"] {
        let o = &ops[branch];
        assert!(
            o.get("QuantizeLinear").copied().unwrap_or(0) > 0
                && o.get("DequantizeLinear").copied().unwrap_or(0) > 0,
            "{branch}: {o:?}"
        );
    }
    // The nested If is on `sr > 0`: its else branch never runs on the calibration data,
    // so its activations stay float (its weight stays int8), with the reason.
    assert_eq!(
        ops["last_b"].get("QuantizeLinear"),
        None,
        "{:?}",
        ops["last_b"]
    );
    assert!(
        q.summary
            .float
            .iter()
            .any(|f| f.reason.contains("never reached")),
        "{}",
        q.summary
    );
    // The then branch's weights were main-graph initializers: they moved into it
    // and are stored as int8 there; no float weight is left in the main graph.
    let g = &q.model.graph;
    for n in g.node_ids() {
        if let Some(c) = g.node(n).as_const() {
            assert!(
                c.tensor.dtype != DataType::F32 || c.tensor.len() <= 1,
                "main graph still holds float constant {}",
                g.node(n).name
            );
        }
    }
    // One name, one definition, across all graphs (a branch may not shadow an
    // enclosing graph's name; ONNX Runtime and the checker reject that).
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "duplicate value names");
    let why: Vec<&str> = q.summary.float.iter().map(|f| f.reason.as_str()).collect();
    assert!(
        !why.iter().any(|w| w.contains("subgraph")),
        "float reasons: {why:?}"
    );
}

fn eval() -> (Tensor, Vec<i64>) {
    let ev = onnxq::data::read_npz(&models_dir().join("mlp.eval.npz")).unwrap();
    let get = |k: &str| ev.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let labels = get("labels").to_i64_vec().unwrap();
    (get("input"), labels)
}

fn run(m: &Model, x: &Tensor, sr: i64) -> Vec<f32> {
    let exec = onnxq::executor::Executor::new(m, Default::default()).unwrap();
    let sr = Tensor::from_i64(vec![], &[sr]);
    let out = exec.run(&[("input", x), ("sr", &sr)]).unwrap();
    out[0].1.to_f32_vec().unwrap()
}

/// The fallback suite's units of `model`, calibrated and evaluated on `data`.
fn suite_units(model: Model, data: &std::path::Path) -> Vec<String> {
    let suite = onnxq::numeric::sensitivity::Suite::new(
        model,
        &QuantizeOptions::default(),
        data,
        data,
        None,
    )
    .unwrap();
    suite.units.iter().map(|u| u.name.clone()).collect()
}

fn top1(logits: &[f32], labels: &[i64]) -> f64 {
    let hits = logits
        .chunks(10)
        .zip(labels)
        .filter(|(row, &l)| {
            let best = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            best as i64 == l
        })
        .count();
    hits as f64 / labels.len() as f64
}

#[test]
fn both_branches_keep_float_accuracy_in_the_executor() {
    let float = branches_model();
    let q = quantized();
    let (x, labels) = eval();
    for sr in [16000, 8000] {
        let want = run(&float, &x, sr);
        let got = run(&q.model, &x, sr);
        let (f, i) = (top1(&want, &labels), top1(&got, &labels));
        let sqnr = sqnr_db(&want, &got);
        assert!(i >= f - 0.005, "sr={sr}: int8 top-1 {i} vs float {f}");
        assert!(sqnr > 30.0, "sr={sr}: SQNR {sqnr:.1} dB");
    }
}

/// Quantizes the branches model in `mode` and checks that every branch holds `op`, with
/// `unique` that each name is defined once in the whole model (sibling branches may
/// legally reuse a name), and that top-1 on both rates stays within `drop` of float.
fn check_mode_in_branches(mode: onnxq::quantize::Mode, op: &str, unique: bool, drop: f64) {
    let label = format!("{mode:?}");
    let options = QuantizeOptions {
        mode,
        ..Default::default()
    };
    let q = quantize(branches_model(), None, &options).unwrap();
    let mut ops = BTreeMap::new();
    let mut names = vec![];
    walk(&q.model.graph, &mut ops, &mut names);
    for branch in ["net16k", "net8k", "last_a", "last_b"] {
        assert!(
            ops[branch].contains_key(op),
            "{label}, {branch}: {:?}",
            ops[branch]
        );
    }
    if unique {
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            names.len(),
            "{label}: a name is defined twice"
        );
    }
    let (x, labels) = eval();
    for sr in [16000, 8000] {
        let f = top1(&run(&branches_model(), &x, sr), &labels);
        let i = top1(&run(&q.model, &x, sr), &labels);
        assert!(i >= f - drop, "{label}, sr={sr}: top-1 {i} vs float {f}");
    }
}

#[test]
fn dynamic_mode_quantizes_the_branches_too() {
    check_mode_in_branches(
        onnxq::quantize::Mode::Dynamic,
        "MatMulInteger",
        false,
        0.005,
    );
}

/// Weight-only mode (8 and 4 bits) stores the MatMul/Gemm weights of every branch as
/// integers behind a DequantizeLinear.
#[test]
fn weight_only_mode_quantizes_the_branches_too() {
    for bits in [8, 4] {
        let mode = onnxq::quantize::Mode::WeightOnly { bits, block: 32 };
        check_mode_in_branches(mode, "DequantizeLinear", true, 0.01);
    }
}

#[test]
fn sensitivity_sees_the_units_inside_branches() {
    let calib = models_dir().join("branches/digits_branches.calib.npz");
    let names = suite_units(branches_model(), &calib);
    for want in [
        "hi/MatMul",
        "hi/Gemm",
        "lo/MatMul",
        "lo/a/MatMul",
        "lo/b/MatMul",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}

/// An If whose then branch is Conv → Relu → Reshape → Conv: in the fully int8 model the
/// Reshape output shares the Relu's quantization, but the fallback's variant keeping the
/// first Conv float observes it directly. The suite's union calibration must observe it
/// too (it merged main-graph values only, and silero-VAD op18's `--target-sqnr` failed
/// with "calibration table has no entry").
#[test]
fn fallback_variants_observe_what_they_need_inside_branches() {
    use onnxq::onnx::pb;
    use prost::Message;
    let conv = |name: &str, x: &str, w: &str, y: &str| node_proto("Conv", name, &[x, w], y);
    let w: Vec<f32> = (0..16).map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0).collect();
    let then_g = pb::GraphProto {
        name: "then".into(),
        node: vec![
            conv("t/c1", "x", "w1", "t1"),
            node_proto("Relu", "t/relu", &["t1"], "t2"),
            node_proto("Reshape", "t/reshape", &["t2", "shape"], "t3"),
            conv("t/c2", "t3", "w2", "ty"),
        ],
        output: vec![f32_value_info("ty", &[1, 4, 4, 4])],
        ..Default::default()
    };
    let else_g = pb::GraphProto {
        name: "else".into(),
        node: vec![conv("e/c3", "x", "w1", "ey")],
        output: vec![f32_value_info("ey", &[1, 4, 4, 4])],
        ..Default::default()
    };
    let mut if_node = node_proto("If", "branch", &["cond"], "y");
    if_node.attribute = vec![
        graph_attr("then_branch", then_g),
        graph_attr("else_branch", else_g),
    ];
    let shape = pb::TensorProto {
        name: "shape".into(),
        data_type: 7,
        dims: vec![4],
        int64_data: vec![1, 4, 4, 4],
        ..Default::default()
    };
    let zero = pb::TensorProto {
        name: "zero".into(),
        data_type: 7,
        dims: vec![],
        int64_data: vec![0],
        ..Default::default()
    };
    let proto = opset13_model(
        vec![
            node_proto("Greater", "gt", &["flag", "zero"], "cond"),
            if_node,
        ],
        vec![
            f32_tensor("w1", &[4, 4, 1, 1], w.clone()),
            f32_tensor("w2", &[4, 4, 1, 1], w.iter().rev().copied().collect()),
            shape,
            zero,
        ],
        vec![
            f32_value_info("x", &[1, 4, 4, 4]),
            value_info("flag", 7, &[]),
        ],
        vec![f32_value_info("y", &[1, 4, 4, 4])],
    );
    let model =
        onnxq::import::import_bytes(&proto.encode_to_vec(), None, &Default::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("onnxq-if-fallback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for k in 0..4 {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 13 + k * 5) % 17) as f32 / 4.0 - 2.0)
            .collect();
        write_npz(
            &dir.join(format!("s{k}.npz")),
            &[
                ("x", &Tensor::from_f32(vec![1, 4, 4, 4], &x)),
                ("flag", &Tensor::from_i64(vec![], &[1 - (k as i64 % 2)])),
            ],
        );
    }
    let names = suite_units(model, &dir);
    assert!(names.iter().any(|n| n == "t/c2"), "{names:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Calibration data that takes only the 16 kHz branch: the other branch's observers see
/// nothing, so its activations stay float (summary: "never reached") instead of getting
/// placeholder qparams (scale 1, zero point 0), and it still computes what float does.
/// (silero-VAD op18 calibrated at 16 kHz ran at 8 kHz at −4 dB before.)
#[test]
fn a_branch_the_calibration_never_takes_stays_float() {
    let calib =
        onnxq::data::read_npz(&models_dir().join("branches/digits_branches.calib.npz")).unwrap();
    let get = |k: &str| calib.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let (input, sr) = (get("input"), get("sr").to_i64_vec().unwrap());
    let rows: Vec<usize> = (0..sr.len()).filter(|&i| sr[i] == 16000).collect();
    let all = input.to_f32_vec().unwrap();
    let x: Vec<f32> = rows
        .iter()
        .flat_map(|&r| all[r * 64..(r + 1) * 64].iter().copied())
        .collect();
    let dir = std::env::temp_dir().join(format!("onnxq-if-untaken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("calib16k.npz");
    write_npz(
        &path,
        &[
            ("input", &Tensor::from_f32(vec![rows.len() as i64, 64], &x)),
            (
                "sr",
                &Tensor::from_i64(vec![rows.len() as i64], &vec![16000; rows.len()]),
            ),
        ],
    );
    let q = quantize(
        branches_model(),
        Some(Calibration::Data(&path)),
        &QuantizeOptions::default(),
    )
    .unwrap();
    let never = q
        .summary
        .float
        .iter()
        .find(|g| g.reason.contains("never reached"))
        .unwrap_or_else(|| panic!("no `never reached` group:\n{}", q.summary));
    assert!(!never.subjects.is_empty());
    let float = branches_model();
    let (ev, labels) = eval();
    for sr in [16000, 8000] {
        let want = run(&float, &ev, sr);
        let got = run(&q.model, &ev, sr);
        let sqnr = sqnr_db(&want, &got);
        let (f, i) = (top1(&want, &labels), top1(&got, &labels));
        assert!(
            sqnr > 30.0 && i >= f - 0.005,
            "sr={sr}: SQNR {sqnr:.1} dB, top-1 {i} vs {f}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
