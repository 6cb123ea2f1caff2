//! SmoothQuant (`quantize --smooth-quant`): a MatMul input made by a float LayerNorm whose
//! gain gives two channels 25× the others' range is divided by per-channel scales folded
//! into the weights. The float model keeps its function; the int8 model gains what the
//! outlier channels cost the per-tensor input grid; inputs that no float op makes are left
//! alone; a saved calibration table (no channel ranges) is refused.

mod common;

use common::{f32_tensor, f32_value_info, node_proto, opset13_model, write_npz};
use onnxq::ir::{Model, Tensor};
use onnxq::onnx::pb;
use onnxq::quantize::{quantize, smooth_quant, Calibration, QuantizeOptions};
use prost::Message;

const C: usize = 16;
const N: usize = 8;
const ROWS: usize = 64;

fn import(proto: pb::ModelProto) -> Model {
    onnxq::import::import_bytes(&proto.encode_to_vec(), None, &Default::default()).unwrap()
}

/// Deterministic values in [-1, 1).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn axes_attr() -> pb::AttributeProto {
    pb::AttributeProto {
        name: "axes".into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: vec![-1],
        ..Default::default()
    }
}

/// x [64, 16] → decomposed LayerNorm (as PyTorch exports it; gain 25 on channels 3 and 11)
/// → MatMul w [16, 8] → y; the LayerNorm's output is also the graph output `h`. The weight
/// rows of the wide channels are 25× smaller, as trained models have them, so that every
/// channel matters to `y` alike.
/// With `from_input`, the MatMul reads `x` instead (no float op makes its input).
fn model(from_input: bool) -> Model {
    let mut gamma = vec![1f32; C];
    gamma[3] = 25.0;
    gamma[11] = 25.0;
    let beta: Vec<f32> = noise(7, C).iter().map(|v| v * 0.1).collect();
    let w: Vec<f32> = noise(11, C * N)
        .iter()
        .enumerate()
        .map(|(i, v)| v / gamma[i / N])
        .collect();
    let mut mean = node_proto("ReduceMean", "ln/mean", &["x"], "m");
    mean.attribute.push(axes_attr());
    let mut var = node_proto("ReduceMean", "ln/var", &["sq"], "v");
    var.attribute.push(axes_attr());
    let nodes = vec![
        mean,
        node_proto("Sub", "ln/sub", &["x", "m"], "d"),
        node_proto("Pow", "ln/pow", &["d", "two"], "sq"),
        var,
        node_proto("Add", "ln/eps", &["v", "eps"], "ve"),
        node_proto("Sqrt", "ln/sqrt", &["ve"], "sd"),
        node_proto("Div", "ln/div", &["d", "sd"], "n"),
        node_proto("Mul", "ln/gamma", &["n", "gamma"], "g"),
        node_proto("Add", "ln/beta", &["g", "beta"], "h"),
        node_proto(
            "MatMul",
            "mm",
            &[if from_input { "x" } else { "h" }, "w"],
            "y",
        ),
    ];
    let proto = opset13_model(
        nodes,
        vec![
            f32_tensor("two", &[], vec![2.0]),
            f32_tensor("eps", &[], vec![1e-5]),
            f32_tensor("gamma", &[C as i64], gamma),
            f32_tensor("beta", &[C as i64], beta),
            f32_tensor("w", &[C as i64, N as i64], w),
        ],
        vec![f32_value_info("x", &[ROWS as i64, C as i64])],
        vec![
            f32_value_info("y", &[ROWS as i64, N as i64]),
            f32_value_info("h", &[ROWS as i64, C as i64]),
        ],
    );
    import(proto)
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("onnxq-smooth-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn data(dir: &std::path::Path) -> std::path::PathBuf {
    let x: Vec<f32> = noise(3, ROWS * C).iter().map(|v| v * 3.0).collect();
    let path = dir.join("calib.npz");
    write_npz(
        &path,
        &[("x", &Tensor::from_f32(vec![ROWS as i64, C as i64], &x))],
    );
    path
}

fn sqnr(float: &Model, other: &Model, data: &std::path::Path) -> f64 {
    onnxq::numeric::sensitivity::output_sqnr(float, other, data, 1).unwrap()
}

#[test]
fn smoothing_keeps_the_function_and_recovers_the_outlier_channels_cost() {
    let data = data(&tmpdir("keep"));
    let float = model(false);

    // The float model alone: same outputs (h untouched, y up to float rounding).
    let mut smoothed = float.clone();
    let notes = smooth_quant(&mut smoothed, &data, 0.5, &Default::default()).unwrap();
    assert!(
        notes
            .iter()
            .any(|(s, m)| s == "h" && m.contains("smoothed for mm")),
        "{notes:?}"
    );
    assert!(sqnr(&float, &smoothed, &data) > 100.0);
    let text = onnxq::ir::print::model_to_string(&smoothed);
    assert!(text.contains("Div"), "{text}");

    // Int8: the plain model's input grid spends its levels on the two wide channels.
    let options = QuantizeOptions::default();
    let plain = quantize(float.clone(), Some(Calibration::Data(&data)), &options).unwrap();
    let smooth_options = QuantizeOptions {
        smooth_quant: Some(0.5),
        ..QuantizeOptions::default()
    };
    let with = quantize(
        float.clone(),
        Some(Calibration::Data(&data)),
        &smooth_options,
    )
    .unwrap();
    let (a, b) = (
        sqnr(&float, &plain.model, &data),
        sqnr(&float, &with.model, &data),
    );
    eprintln!("smoothed {b:.1} dB, plain {a:.1} dB");
    assert!(b > a + 3.0, "smoothed {b:.1} dB, plain {a:.1} dB");
    assert!(
        with.summary
            .notes
            .iter()
            .any(|(s, m)| s == "smooth-quant" && m.starts_with("1 MatMul/Gemm input(s)")),
        "{:?}",
        with.summary.notes
    );
    // The division stays float, right before the MatMul's quantized input.
    assert!(with
        .summary
        .float
        .iter()
        .any(|g| g.subjects.iter().any(|s| s == "h_smooth")));
}

#[test]
fn inputs_no_float_op_makes_are_left_alone() {
    let data = data(&tmpdir("alone"));
    let mut m = model(true);
    let before = onnxq::ir::print::model_to_string(&m);
    let notes = smooth_quant(&mut m, &data, 0.5, &Default::default()).unwrap();
    assert!(notes[0].1.contains("nothing smoothed"), "{notes:?}");
    assert_eq!(before, onnxq::ir::print::model_to_string(&m));
}

#[test]
fn a_saved_table_cannot_smooth() {
    let data = data(&tmpdir("table"));
    let float = model(false);
    let table = onnxq::calib::calibrate(
        &onnxq::quantize::prepare_static(float.clone(), &QuantizeOptions::default())
            .unwrap()
            .model,
        "",
        &data,
        Default::default(),
    )
    .unwrap()
    .0;
    let options = QuantizeOptions {
        smooth_quant: Some(0.5),
        ..QuantizeOptions::default()
    };
    let err = quantize(float, Some(Calibration::Table(table)), &options)
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("--smooth-quant needs calibration data"),
        "{err}"
    );
}

#[test]
fn cli_smooth_quant_reports_what_it_smoothed() {
    let dir = tmpdir("cli");
    let models = common::models_dir();
    let out = dir.join("tl.onnx");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args([
            "quantize",
            models.join("transformer_layer.onnx").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--data",
            models.join("transformer_layer.calib.npz").to_str().unwrap(),
            "--accuracy-guard",
            "off",
            "--smooth-quant",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // ln1's output feeds /ff1/MatMul, the decomposed Gelu's feeds /ff2/MatMul.
    assert!(
        err.contains("smooth-quant: 2 MatMul/Gemm input(s)"),
        "{err}"
    );
    assert!(err.contains("smoothed for /ff1/MatMul"), "{err}");
    assert!(err.contains("pipeline: smooth-quant{alpha=0.5},"), "{err}");
    // And the written int8 model stays close to the original float model.
    let float = onnxq::import::import_file(models.join("transformer_layer.onnx")).unwrap();
    let q = onnxq::import::import_file(&out).unwrap();
    let data = models.join("transformer_layer.calib.npz");
    assert!(sqnr(&float, &q, &data) > 28.0);
}

#[test]
fn other_modes_refuse_smoothing() {
    let options = QuantizeOptions {
        smooth_quant: Some(0.5),
        mode: onnxq::quantize::Mode::Dynamic,
        ..QuantizeOptions::default()
    };
    let r = quantize(model(false), None, &options);
    let err = r.err().expect("refused");
    assert!(
        err.to_string()
            .contains("--smooth-quant is for static mode"),
        "{err}"
    );
}
