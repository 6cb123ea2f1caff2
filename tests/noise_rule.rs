//! The calibration-time noise rule (`onnxq::backend::noise`): a depthwise
//! Conv whose input channels span very different ranges (one per-tensor
//! scale leaves the small ones a level or two, and its weights scale them
//! back up) stays float, with the pointwise Conv and activation making that
//! input; a depthwise Conv with even channels stays int8.

mod common;

use common::{f32_tensor, f32_value_info, node_proto, opset13_model};
use onnxq::onnx::pb;
use onnxq::quantize::{quantize, Calibration, QuantizeOptions};
use prost::Message;

/// The [1, 4, 8, 8] f32 image every test model reads and writes.
fn value_info(name: &str) -> pb::ValueInfoProto {
    f32_value_info(name, &[1, 4, 8, 8])
}

fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn ints_attr(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// x → pw (1×1 Conv, channel gains `gains`) → Relu → dw (3×3 depthwise,
/// channel weights `1 / gains`, as BatchNorm folding makes them) → y.
fn model(gains: [f32; 4]) -> onnxq::ir::Model {
    let mut w1 = vec![0f32; 16];
    for c in 0..4 {
        w1[c * 4 + c] = gains[c];
    }
    let w2: Vec<f32> = (0..36).map(|i| 0.8 / gains[i / 9] / 9.0).collect();
    let pw = node_proto("Conv", "pw", &["x", "w1", "b1"], "p");
    let relu = node_proto("Relu", "relu", &["p"], "r");
    let dw = pb::NodeProto {
        op_type: "Conv".into(),
        name: "dw".into(),
        input: vec!["r".into(), "w2".into(), "b2".into()],
        output: vec!["y".into()],
        attribute: vec![
            int_attr("group", 4),
            ints_attr("kernel_shape", &[3, 3]),
            ints_attr("pads", &[1, 1, 1, 1]),
        ],
        ..Default::default()
    };
    let proto = opset13_model(
        vec![pw, relu, dw],
        vec![
            f32_tensor("w1", &[4, 4, 1, 1], w1),
            f32_tensor("b1", &[4], vec![0.0; 4]),
            f32_tensor("w2", &[4, 1, 3, 3], w2),
            f32_tensor("b2", &[4], vec![0.0; 4]),
        ],
        vec![value_info("x")],
        vec![value_info("y")],
    );
    let bytes = proto.encode_to_vec();
    onnxq::import::import_bytes(&bytes, None, &Default::default()).unwrap()
}

/// x → conv (1×1, identity) → Exp → y: nothing int8 reads the Conv's output.
fn lone_conv_model() -> onnxq::ir::Model {
    let mut w = vec![0f32; 16];
    for c in 0..4 {
        w[c * 4 + c] = 0.01;
    }
    let conv = node_proto("Conv", "conv", &["x", "w"], "c");
    let exp = node_proto("Exp", "exp", &["c"], "y");
    let proto = opset13_model(
        vec![conv, exp],
        vec![f32_tensor("w", &[4, 4, 1, 1], w)],
        vec![value_info("x")],
        vec![value_info("y")],
    );
    let bytes = proto.encode_to_vec();
    onnxq::import::import_bytes(&bytes, None, &Default::default()).unwrap()
}

/// 16 samples of U(0, 1) in `[16, 4, 8, 8]`, as a `.npy` file.
fn calibration(dir: &std::path::Path, spikes: bool) -> std::path::PathBuf {
    let shape = "(16, 4, 8, 8)";
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    let mut s: u32 = 12345;
    for i in 0..16 * 4 * 64 {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let mut v = (s >> 8) as f32 / (1u32 << 24) as f32;
        // One element in 500: a rare spike, 200× the typical value.
        if spikes && i % 500 == 7 {
            v = 200.0;
        }
        bytes.extend(v.to_le_bytes());
    }
    let p = dir.join("calib.npy");
    std::fs::write(&p, bytes).unwrap();
    p
}

fn run(gains: [f32; 4], rule: bool) -> onnxq::quantize::Summary {
    run_model(model(gains), &format!("{}", gains[1]), false, rule)
}

fn run_model(m: onnxq::ir::Model, tag: &str, spikes: bool, rule: bool) -> onnxq::quantize::Summary {
    let dir = std::env::temp_dir().join(format!(
        "onnxq-noise-rule-{}-{tag}-{spikes}-{rule}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let data = calibration(&dir, spikes);
    let options = QuantizeOptions {
        noise_rule: rule,
        ..Default::default()
    };
    let s = quantize(m, Some(Calibration::Data(&data)), &options)
        .unwrap()
        .summary;
    let _ = std::fs::remove_dir_all(&dir);
    s
}

#[test]
fn spread_depthwise_input_stays_float_with_its_producer() {
    let spread = [8.0, 0.05, 0.05, 0.05];
    let s = run(spread, true);
    let why = s.float_reason("dw").unwrap_or_default();
    assert!(why.contains("too spread for one scale"), "{s}");
    for n in ["pw", "relu"] {
        let why = s.float_reason(n).unwrap_or_default();
        assert!(why.contains("makes the input of `dw`"), "{n}: {s}");
    }
    // Without the rule, everything is int8.
    let s = run(spread, false);
    assert!(s.float_reason("dw").is_none(), "{s}");
    assert!(s.float_reason("pw").is_none(), "{s}");
}

#[test]
fn even_depthwise_input_stays_int8() {
    let s = run([1.0, 1.0, 1.0, 1.0], true);
    for n in ["pw", "relu", "dw"] {
        assert!(s.float_reason(n).is_none(), "{n}: {s}");
    }
}

#[test]
fn heavy_tailed_output_read_by_no_int8_op_stays_float() {
    let s = run_model(lone_conv_model(), "lone", true, true);
    let why = s.float_reason("conv").unwrap_or_default();
    assert!(why.contains("heavy-tailed range"), "{s}");
    assert!(why.contains("weights stay int8"), "{s}");
    let s = run_model(lone_conv_model(), "lone", true, false);
    assert!(s.float_reason("conv").is_none(), "{s}");
    // Without spikes the grid carries the output: int8.
    let s = run_model(lone_conv_model(), "lone", false, true);
    assert!(s.float_reason("conv").is_none(), "{s}");
}
