//! Bias correction (convert-qdq, on by default): a Conv's or Gemm's bias absorbs the mean
//! output shift its int8 weights cause, `Σ_k (w − ŵ)[o, k]·E[x_k]`, with the input's
//! channel means from calibration. Checked against that formula on the emitted int8
//! weights and int32 bias, and end to end on digits_cnn.

mod common;

use common::{f32_tensor, f32_value_info, models_dir, node_proto, opset13_model};
use onnxq::ir::{Graph, Model};
use onnxq::observe::Observer;
use onnxq::onnx::pb;
use onnxq::quantize::{quantize, Calibration, QuantizeOptions};
use prost::Message;

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

fn import(proto: pb::ModelProto) -> Model {
    onnxq::import::import_bytes(&proto.encode_to_vec(), None, &Default::default()).unwrap()
}

/// x [4, 3] → Gemm (transB, alpha 2, beta 0.5, C [2]) → y [4, 2]. Weights whose int8
/// rounding errors do not cancel.
fn gemm_model() -> Model {
    let mut gemm = node_proto("Gemm", "fc", &["x", "w", "c"], "y");
    gemm.attribute = vec![
        attr_int("transB", 1),
        attr_float("alpha", 2.0),
        attr_float("beta", 0.5),
    ];
    import(opset13_model(
        vec![gemm],
        vec![
            f32_tensor("w", &[2, 3], vec![0.3, -0.71, 0.05, 1.0, 0.333, -0.2]),
            f32_tensor("c", &[2], vec![0.25, -0.5]),
        ],
        vec![f32_value_info("x", &[4, 3])],
        vec![f32_value_info("y", &[4, 2])],
    ))
}

/// x [1, 4, 3, 3] → grouped 1×1 Conv (2 groups, 4 outputs, no bias) → y.
fn conv_model() -> Model {
    let mut conv = node_proto("Conv", "conv", &["x", "w"], "y");
    conv.attribute = vec![attr_int("group", 2)];
    import(opset13_model(
        vec![conv],
        vec![f32_tensor(
            "w",
            &[4, 2, 1, 1],
            vec![0.9, 0.013, -0.41, 0.777, 0.05, -1.0, 0.3331, 0.2],
        )],
        vec![f32_value_info("x", &[1, 4, 3, 3])],
        vec![f32_value_info("y", &[1, 4, 3, 3])],
    ))
}

/// Quantizes `model` with a table whose activations saw [-4, 4] and whose channel-mean
/// observers saw `x` (shape `dims`).
fn quantized(model: &Model, x: &[f32], dims: &[usize], correct: bool) -> Model {
    let options = QuantizeOptions {
        bias_correction: if correct {
            onnxq::quantize::BiasCorrection::On
        } else {
            onnxq::quantize::BiasCorrection::Off
        },
        ..Default::default()
    };
    let mut prepared = model.clone();
    let mut cx = onnxq::pm::PassContext::new();
    let pipeline = onnxq::quantize::prepare(&mut prepared, &options, &mut cx).unwrap();
    let mut pending = onnxq::calib::begin(&prepared, &pipeline).unwrap();
    assert_eq!(
        pending.observers.len() - pending.means_from,
        1,
        "one channel-mean observer: the layer's input"
    );
    let from = pending.means_from;
    for (k, obs) in pending.observers.iter_mut().enumerate() {
        if k >= from {
            obs.observe(x, dims).unwrap();
        } else {
            obs.observe(&[-4.0, 4.0], &[2]).unwrap();
        }
    }
    let table = pending.finish(1).unwrap();
    assert_eq!(table.channel_means.len(), 1);
    quantize(model.clone(), Some(Calibration::Table(table)), &options)
        .unwrap()
        .model
}

/// The dequantized values of the DequantizeLinear that feeds input `slot` of node `node`.
fn dequantized_input(g: &Graph, node: &str, slot: usize) -> Vec<f32> {
    let n = g.node_ids().find(|&n| g.node(n).name == node).unwrap();
    let v = g.node(n).inputs[slot].expect("input present");
    let dq = g.producer(v);
    assert!(g.node(dq).is_op("DequantizeLinear"), "{node} input {slot}");
    let ins = &g.node(dq).inputs;
    let q = g.const_tensor(ins[0].unwrap()).unwrap();
    let scale = g
        .const_tensor(ins[1].unwrap())
        .unwrap()
        .to_f32_vec()
        .unwrap();
    let zp = ins
        .get(2)
        .copied()
        .flatten()
        .map(|z| g.const_tensor(z).unwrap().to_i64_vec().unwrap())
        .unwrap_or_else(|| vec![0; scale.len()]);
    let qv = q.to_i64_vec().unwrap();
    // Per tensor, or per axis (ONNX's default axis is 1).
    let axis = g
        .node(dq)
        .op()
        .and_then(|op| op.attrs.get("axis"))
        .and_then(|a| a.as_int())
        .unwrap_or(1) as usize;
    let dims: Vec<usize> = q.dims.iter().map(|&d| d as usize).collect();
    let inner: usize = dims.get(axis + 1..).map_or(1, |d| d.iter().product());
    qv.iter()
        .enumerate()
        .map(|(i, &x)| {
            let c = if scale.len() == 1 {
                0
            } else {
                (i / inner) % dims[axis]
            };
            (x - zp[c]) as f32 * scale[c]
        })
        .collect()
}

fn bias_scale(g: &Graph, node: &str) -> Vec<f32> {
    let n = g.node_ids().find(|&n| g.node(n).name == node).unwrap();
    let dq = g.producer(g.node(n).inputs[2].unwrap());
    g.const_tensor(g.node(dq).inputs[1].unwrap())
        .unwrap()
        .to_f32_vec()
        .unwrap()
}

#[test]
fn gemm_bias_absorbs_the_weight_rounding_shift() {
    let m = gemm_model();
    // Channel means of x (axis 1 of [4, 3]): 1.5, -0.5, 2.0.
    let x: Vec<f32> = (0..4)
        .flat_map(|r| {
            let d = r as f32 - 1.5;
            [1.5 + d, -0.5 - d, 2.0 + 0.5 * d]
        })
        .collect();
    let mean = [1.5f64, -0.5, 2.0];
    let w = [0.3f32, -0.71, 0.05, 1.0, 0.333, -0.2];
    let c = [0.25f64, -0.5];
    let on = quantized(&m, &x, &[4, 3], true);
    let wq = dequantized_input(&on.graph, "fc", 1);
    let bias = dequantized_input(&on.graph, "fc", 2);
    let step = bias_scale(&on.graph, "fc");
    for o in 0..2 {
        let shift: f64 = (0..3)
            .map(|k| (w[o * 3 + k] as f64 - wq[o * 3 + k] as f64) * mean[k])
            .sum();
        // y = 2·x·Wᵀ + 0.5·C: the shift of x·Wᵀ, times alpha / beta, in C's units.
        let want = c[o] + shift * 2.0 / 0.5;
        assert!(shift.abs() > 1e-4, "channel {o}: no rounding shift to test");
        assert!(
            (bias[o] as f64 - want).abs() <= 0.5 * step[o] as f64 + 1e-7,
            "channel {o}: bias {} want {want}",
            bias[o]
        );
    }
    // Without correction: C as it was.
    let off = quantized(&m, &x, &[4, 3], false);
    let plain = dequantized_input(&off.graph, "fc", 2);
    for o in 0..2 {
        assert!((plain[o] as f64 - c[o]).abs() <= 0.5 * step[o] as f64 + 1e-7);
    }
}

#[test]
fn conv_without_bias_gets_one_per_group() {
    let m = conv_model();
    // Channel c of x [1, 4, 3, 3] is c - 1.5 + a ripple that averages to 0 over the 9 pixels.
    let x: Vec<f32> = (0..4)
        .flat_map(|c| (0..9).map(move |p| c as f32 - 1.5 + (p as f32 - 4.0) * 0.1))
        .collect();
    let mean: Vec<f64> = (0..4).map(|c| c as f64 - 1.5).collect();
    let w = [0.9f32, 0.013, -0.41, 0.777, 0.05, -1.0, 0.3331, 0.2];
    let q = quantized(&m, &x, &[1, 4, 3, 3], true);
    let wq = dequantized_input(&q.graph, "conv", 1);
    let bias = dequantized_input(&q.graph, "conv", 2);
    let step = bias_scale(&q.graph, "conv");
    assert_eq!(bias.len(), 4);
    for o in 0..4 {
        // Outputs 0, 1 read input channels 0, 1; outputs 2, 3 read 2, 3.
        let base = o / 2 * 2;
        let want: f64 = (0..2)
            .map(|i| (w[o * 2 + i] as f64 - wq[o * 2 + i] as f64) * mean[base + i])
            .sum();
        assert!(
            (bias[o] as f64 - want).abs() <= 0.5 * step[o] as f64 + 1e-7,
            "output {o}: bias {} want {want}",
            bias[o]
        );
    }
    // The layer had no bias: without correction it still has none.
    let off = quantized(&m, &x, &[1, 4, 3, 3], false);
    let n = off
        .graph
        .node_ids()
        .find(|&n| off.graph.node(n).name == "conv")
        .unwrap();
    assert!(off.graph.node(n).inputs.get(2).copied().flatten().is_none());
}

/// End to end with real calibration data: the corrected digits_cnn is closer to the
/// float model on its evaluation set, and a saved table (`onnxq calibrate`) carries the
/// channel means, so `--calibration` reproduces `--data` byte for byte.
#[test]
fn digits_cnn_is_closer_to_float_and_tables_carry_the_means() {
    let dir = std::env::temp_dir().join(format!("onnxq-bc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = models_dir().join("digits_cnn.onnx");
    let calib = models_dir().join("digits_cnn.calib.npy");
    let eval = models_dir().join("digits_cnn.eval.npz");
    let bin = env!("CARGO_BIN_EXE_onnxq");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    let m = model.to_str().unwrap();
    let path = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let (on, off, table, from_table) = (
        path("on.onnx"),
        path("off.onnx"),
        path("table.json"),
        path("from_table.onnx"),
    );
    let c = calib.to_str().unwrap();
    let guard = ["--accuracy-guard", "off"];
    // auto (the default) converts both ways and keeps the closer one: here, with.
    let o = run(&[&["quantize", m, "-o", &on, "--data", c][..], &guard].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bias correction: on: output SQNR"), "{err}");
    run(&[
        &[
            "quantize",
            m,
            "-o",
            &off,
            "--data",
            c,
            "--bias-correction",
            "off",
        ][..],
        &guard,
    ]
    .concat());
    let float = onnxq::import::import_file(&model).unwrap();
    let sqnr = |p: &str| {
        onnxq::numeric::sensitivity::output_sqnr(
            &float,
            &onnxq::import::import_file(p).unwrap(),
            &eval,
            1,
        )
        .unwrap()
    };
    let (s_on, s_off) = (sqnr(&on), sqnr(&off));
    // (The single-channel first Conv stays float for speed, so less is left to correct than
    // with every Conv int8: +0.5 dB then, +0.49 now.)
    assert!(s_on > s_off + 0.3, "corrected {s_on} dB, plain {s_off} dB");
    run(&["calibrate", m, "--data", c, "-o", &table]);
    let text = std::fs::read_to_string(&table).unwrap();
    assert!(
        text.contains("channel_means"),
        "the table has no channel means"
    );
    run(&[
        &["quantize", m, "-o", &from_table, "--calibration", &table][..],
        &guard,
    ]
    .concat());
    assert_eq!(
        std::fs::read(&on).unwrap(),
        std::fs::read(&from_table).unwrap()
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Two Gemms sharing one weight (quantized once): both biases absorb their own input's shift.
#[test]
fn a_shared_weight_corrects_every_layer_reading_it() {
    let g1 = node_proto("Gemm", "g1", &["x1", "w"], "y1");
    let g2 = node_proto("Gemm", "g2", &["x2", "w"], "y2");
    let m = import(opset13_model(
        vec![g1, g2],
        vec![f32_tensor("w", &[2, 2], vec![0.3, -0.71, 0.05, 1.0])],
        vec![f32_value_info("x1", &[1, 2]), f32_value_info("x2", &[1, 2])],
        vec![f32_value_info("y1", &[1, 2]), f32_value_info("y2", &[1, 2])],
    ));
    let options = QuantizeOptions {
        bias_correction: onnxq::quantize::BiasCorrection::On,
        ..Default::default()
    };
    let mut prepared = m.clone();
    let mut cx = onnxq::pm::PassContext::new();
    let pipeline = onnxq::quantize::prepare(&mut prepared, &options, &mut cx).unwrap();
    let mut pending = onnxq::calib::begin(&prepared, &pipeline).unwrap();
    let from = pending.means_from;
    let means: std::collections::BTreeMap<&str, [f32; 2]> =
        [("x1", [1.0, 2.0]), ("x2", [-3.0, 0.5])].into();
    for (k, (name, obs)) in pending
        .names
        .clone()
        .iter()
        .zip(pending.observers.iter_mut())
        .enumerate()
    {
        if k >= from {
            obs.observe(&means[name.as_str()], &[1, 2]).unwrap();
        } else {
            obs.observe(&[-4.0, 4.0], &[2]).unwrap();
        }
    }
    let table = pending.finish(1).unwrap();
    assert_eq!(table.channel_means.len(), 2);
    let q = quantize(m, Some(Calibration::Table(table)), &options)
        .unwrap()
        .model;
    let w = [0.3f32, -0.71, 0.05, 1.0];
    for (node, mean) in [("g1", [1.0f64, 2.0]), ("g2", [-3.0, 0.5])] {
        let wq = dequantized_input(&q.graph, node, 1);
        let bias = dequantized_input(&q.graph, node, 2);
        let step = bias_scale(&q.graph, node);
        for o in 0..2 {
            // B is [K, N]: element (k, o) at k·2 + o.
            let want: f64 = (0..2)
                .map(|k| (w[k * 2 + o] as f64 - wq[k * 2 + o] as f64) * mean[k])
                .sum();
            assert!(
                (bias[o] as f64 - want).abs() <= 0.5 * step[o] as f64 + 1e-7,
                "{node} channel {o}: bias {} want {want}",
                bias[o]
            );
        }
    }
}
