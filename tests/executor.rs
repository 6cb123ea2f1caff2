//! The native executor on the bundled models: float models against tract and ONNX Runtime's
//! recorded outputs, quantized models against the same QDQ graph run unlowered (every op in
//! float), planning refusals and bad inputs.

mod common;

use common::{bundled_models, sample_inputs, stem};
use onnxq::executor::{Executor, ExecutorOptions, Lowering};
use onnxq::ir::{Model, Tensor};

fn named_inputs<'a>(model: &Model, inputs: &'a [Tensor]) -> Vec<(String, &'a Tensor)> {
    model
        .graph
        .inputs
        .iter()
        .filter(|&&v| model.graph.const_tensor(v).is_none())
        .map(|&v| model.graph.value(v).name.clone())
        .zip(inputs)
        .collect()
}

fn run(exec: &Executor, model: &Model, inputs: &[Tensor]) -> Vec<(String, Tensor)> {
    let named = named_inputs(model, inputs);
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    exec.run(&refs).unwrap()
}

/// Max of |a − b| / max(1, |b|) over all elements.
fn max_rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims, b.dims, "shapes differ");
    let (a, b) = (a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

#[test]
fn float_models_match_tract_and_ort() {
    let mut checked = 0;
    for path in bundled_models() {
        let name = stem(&path);
        let model = onnxq::import::import_file(&path).unwrap();
        let exec = Executor::new(&model, ExecutorOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let inputs = sample_inputs(&path, &model);
        let ours = run(&exec, &model, &inputs);
        let bytes = std::fs::read(&path).unwrap();
        // tract cannot analyse the control-flow model's Loop (its scan outputs): ORT only.
        let tract = match onnxq::tract_runner::run_once(&bytes, path.parent(), &inputs) {
            Ok(t) => Some(t),
            Err(e) if name == "control_flow" => {
                eprintln!("{name}: tract: {e}");
                None
            }
            Err(e) => panic!("{name}: tract: {e}"),
        };
        let expected = onnxq::data::read_npz(&path.with_extension("expected.npz")).unwrap();
        for (k, (oname, t)) in ours.iter().enumerate() {
            let e_tract = tract
                .as_ref()
                .map_or(0.0, |tract| max_rel_err(t, &tract[k]));
            assert!(
                e_tract <= 1e-4,
                "{name}/{oname}: vs tract rel err {e_tract}"
            );
            let ort = &expected.iter().find(|(n, _)| n == oname).unwrap().1;
            let e_ort = max_rel_err(t, ort);
            assert!(e_ort <= 1e-4, "{name}/{oname}: vs ORT rel err {e_ort}");
            eprintln!("{name}/{oname}: rel err vs tract {e_tract:.2e}, vs ORT {e_ort:.2e}");
        }
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} models ran");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let path = common::models_dir().join("mlp.onnx");
    let model = onnxq::import::import_file(&path).unwrap();
    let exec = Executor::new(&model, ExecutorOptions::default()).unwrap();
    let good = Tensor::from_f32(vec![2, 64], &[0.5; 128]);
    let err = |inputs: &[(&str, &Tensor)]| exec.run(inputs).unwrap_err().to_string();
    assert!(err(&[]).contains("missing input `input`"));
    assert!(err(&[("nope", &good)]).contains("unknown input `nope`"));
    let wrong_shape = Tensor::from_f32(vec![2, 63], &[0.5; 126]);
    assert!(err(&[("input", &wrong_shape)]).contains("expected shape"));
    let wrong_type = Tensor::from_i64(vec![2, 64], &[1; 128]);
    assert!(err(&[("input", &wrong_type)]).contains("expected f32"));
    assert_eq!(
        exec.run(&[("input", &good)]).unwrap()[0].1.dims,
        vec![2, 10]
    );
}

#[test]
fn unsupported_ops_are_refused_at_planning_with_their_names() {
    let mut model = onnxq::import::import_file(common::models_dir().join("mlp.onnx")).unwrap();
    let g = &mut model.graph;
    let relu = g
        .node_ids()
        .find(|&n| g.node(n).is_op("Relu"))
        .expect("mlp has a Relu");
    g.node_mut(relu).op_mut().unwrap().op_type = "FancyOp".into();
    let name = g.display_node_name(relu);
    let e = Executor::new(&model, ExecutorOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("FancyOp") && e.contains(&name), "{e}");
}

/// Quantizes a bundled model with the CLI into `dir`.
fn quantize(name: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let m = common::models_dir();
    let calib = ["npy", "npz"]
        .iter()
        .map(|e| m.join(format!("{name}.calib.{e}")))
        .find(|p| p.exists())
        .unwrap();
    let out = dir.join(format!("{name}.int8.onnx"));
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .arg("quantize")
        .arg(m.join(format!("{name}.onnx")))
        .arg("-o")
        .arg(&out)
        .arg("--data")
        .arg(&calib)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

/// The first `n` calibration samples as named inputs (more elements than the samples).
fn calib_inputs(name: &str, model: &Model, n: i64) -> Vec<(String, Tensor)> {
    let m = common::models_dir();
    let npy = m.join(format!("{name}.calib.npy"));
    let arrays = if npy.exists() {
        let input = &model.graph.value(model.graph.inputs[0]).name;
        vec![(input.clone(), onnxq::data::read_npy(&npy).unwrap())]
    } else {
        onnxq::data::read_npz(&m.join(format!("{name}.calib.npz"))).unwrap()
    };
    arrays
        .into_iter()
        .map(|(k, t)| {
            let a = onnxq::executor::Array::from_tensor(&t).unwrap();
            let rows = (a.shape[0] as i64).min(n) as usize;
            let per: usize = a.shape[1..].iter().product();
            let mut dims = t.dims.clone();
            dims[0] = rows as i64;
            let bytes = t.raw().unwrap()[..rows * per * t.byte_size() / a.len()].to_vec();
            (k, Tensor::from_raw(t.dtype, dims, bytes).unwrap())
        })
        .collect()
}

/// Scale of the DequantizeLinear producing graph output `name`, if it is one.
fn output_scale(model: &Model, name: &str) -> Option<f32> {
    let g = &model.graph;
    let v = g.value_by_name(name)?;
    let p = g.node(g.producer(v));
    if !p.is_op("DequantizeLinear") {
        return None;
    }
    g.const_tensor(p.inputs[1]?)?.to_f32_vec().map(|s| s[0])
}

#[test]
fn lowered_quantized_models_match_their_float_qdq_graph() {
    let dir = std::env::temp_dir().join(format!("onnxq-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for path in bundled_models() {
        let name = stem(&path);
        if name == "control_flow" {
            continue; // tract (used by calibration) cannot run its Loop.
        }
        let q = quantize(&name, &dir);
        let model = onnxq::import::import_file(&q).unwrap();
        let plan = |lowering| {
            Executor::new(
                &model,
                ExecutorOptions {
                    lowering,
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let lowered = plan(Lowering::OrtCompatible);
        assert!(
            !lowered.lowered_units().is_empty(),
            "{name}: nothing was lowered"
        );
        let float = plan(Lowering::Off);
        assert!(float.lowered_units().is_empty());
        let inputs = calib_inputs(&name, &model, 64);
        let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let (a, b) = (lowered.run(&refs).unwrap(), float.run(&refs).unwrap());
        let threaded = Executor::new(
            &model,
            ExecutorOptions {
                threads: 3,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            threaded.run(&refs).unwrap(),
            a,
            "{name}: threads change results"
        );
        // Values kept NHWC through elementwise ops and global pools give the same bits.
        let conv_to_conv_only = Executor::new(
            &model,
            ExecutorOptions {
                nhwc_regions: false,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(conv_to_conv_only.nhwc_regions().is_empty());
        assert_eq!(
            conv_to_conv_only.run(&refs).unwrap(),
            a,
            "{name}: NHWC regions change results"
        );
        if name == "inverted_residual" {
            // The squeeze-excitation block: the depthwise output feeds a global pool (its
            // DequantizeLinear fused into the pool) and the Mul by the channel scales, then the
            // project conv.
            let regions = lowered.nhwc_regions().join(" | ");
            for step in [
                "`/GlobalAveragePool`",
                "`/Mul`",
                "`/dw/Conv`",
                "`/project/Conv`",
            ] {
                assert!(
                    regions.contains(step),
                    "{step} not in an NHWC region: {regions}"
                );
            }
        }
        if name == "digits_cnn" {
            // conv → MaxPool on codes → conv: the pool runs NHWC, no transpose around it.
            let regions = lowered.nhwc_regions().join(" | ");
            assert!(
                regions.contains("MaxPool `/features/features.6/MaxPool`"),
                "the MaxPool is not in an NHWC region: {regions}"
            );
        }
        for ((oname, x), (_, y)) in a.iter().zip(&b) {
            let (x, y) = (x.to_f32_vec().unwrap(), y.to_f32_vec().unwrap());
            let Some(scale) = output_scale(&model, oname) else {
                // A float tail (the transformer's LayerNorm stays float): the
                // same float ops on inputs that differ by an LSB here and there;
                // LayerNorm divides by a row's deviation, so one flipped tie in
                // a low-variance row moves that whole row (measured: 99.90 %
                // exact, one row off by 3.8 % of max|output|).
                let peak = y.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
                let worst = x
                    .iter()
                    .zip(&y)
                    .fold(0f32, |m, (p, q)| m.max((p - q).abs()))
                    / peak;
                let exact =
                    x.iter().zip(&y).filter(|(p, q)| p == q).count() as f64 / x.len() as f64;
                eprintln!(
                    "{name}/{oname}: float output, {} units lowered, exact {:.4}%, max error {worst:.2e} × max|output|",
                    lowered.lowered_units().len(),
                    exact * 100.0
                );
                assert!(
                    exact >= 0.995 && worst <= 0.1,
                    "{name}/{oname}: exact {exact}, max error {worst:e} × max|output|"
                );
                continue;
            };
            let lsb: Vec<f32> = x
                .iter()
                .zip(&y)
                .map(|(p, q)| ((p - q) / scale).abs().round())
                .collect();
            let exact = lsb.iter().filter(|&&d| d == 0.0).count() as f64 / lsb.len() as f64;
            let worst = lsb.iter().copied().fold(0.0, f32::max);
            eprintln!(
                "{name}/{oname}: {} units lowered, {} elements, exact {:.4}%, max {worst} LSB",
                lowered.lowered_units().len(),
                lsb.len(),
                exact * 100.0
            );
            // A lowered unit folds the three scales into one multiplier, which may round a
            // tie the other way (1 LSB at that unit); later layers can grow that difference
            // by the time it reaches the output, so the bound there is a few LSB.
            assert!(
                exact >= 0.999 && worst <= 4.0,
                "{name}/{oname}: exact {exact}, max {worst} LSB"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The work a run counts (what the accuracy fallback's budgets read instead of wall time):
/// the multiply-accumulates of the matrix products and recurrent cells, worked out by hand
/// from the models' shapes at batch 4, and the same on every run.
#[test]
fn counted_work_is_the_models_multiply_accumulates() {
    // mlp: MatMul 64→128, Gemm 128→64 (transB), MatMul 64→10.
    // lstm: 8 steps × 4 rows × (W 128×8 + R 128×32), then Gemm 32→10.
    for (name, macs) in [
        ("mlp", 4 * (64 * 128 + 128 * 64 + 64 * 10)),
        ("lstm", 8 * 4 * (128 * 8 + 128 * 32) + 4 * 32 * 10),
        // digits_cnn: 3×3 convs 1→16 and 16→32 on 8×8 (pads 1), 32→32 on 4×4, Gemm 128→10.
        (
            "digits_cnn",
            4 * (64 * 16 * 9 + 64 * 32 * 16 * 9 + 16 * 32 * 32 * 9 + 128 * 10),
        ),
    ] {
        let path = common::models_dir().join(format!("{name}.onnx"));
        let model = onnxq::import::import_file(&path).unwrap();
        let inputs = sample_inputs(&path, &model);
        assert_eq!(inputs[0].dims[0], 4, "{name}: the sample batch");
        let exec = Executor::new(&model, ExecutorOptions::default()).unwrap();
        let named = named_inputs(&model, &inputs);
        let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let mut work = onnxq::executor::Work::default();
        let out = exec.run_counted(&refs, &mut work).unwrap();
        assert_eq!(work.macs, macs as u64, "{name}");
        assert!(work.steps >= 3 && work.elements > 0, "{name}: {work:?}");
        // Counting does not change what runs.
        for ((_, a), (_, b)) in out.iter().zip(exec.run(&refs).unwrap()) {
            assert_eq!(a, &b, "{name}");
        }
        let mut again = onnxq::executor::Work::default();
        exec.run_counted(&refs, &mut again).unwrap();
        assert_eq!(work, again, "{name}");
        assert!(work.nominal_seconds() > 0.0);
    }
}
