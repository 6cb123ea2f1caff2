//! The executor's qnnpack backend on the bundled models: every quantized model runs with every
//! lowered unit on the qnnpack kernels, matches the fbgemm backend and the unlowered float QDQ
//! graph, falls back explicitly where it must, and refuses unsupported ops like fbgemm does.
//! (ONNX Runtime cross-checks: tests/python/test_executor_ort_qnnpack.py.)

mod common;

use common::{bundled_models, stem};
use onnxq::executor::{Backend, Executor, ExecutorOptions, Lowering};
use onnxq::ir::{Model, Tensor};
use onnxq::kernels::qnnpack::Rounding;

/// Quantizes a bundled model with the CLI (`extra` flags) into `dir`.
fn quantize(name: &str, dir: &std::path::Path, tag: &str, extra: &[&str]) -> std::path::PathBuf {
    let m = common::models_dir();
    let calib = ["npy", "npz"]
        .iter()
        .map(|e| m.join(format!("{name}.calib.{e}")))
        .find(|p| p.exists())
        .unwrap();
    let out = dir.join(format!("{name}.{tag}.onnx"));
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .arg("quantize")
        .arg(m.join(format!("{name}.onnx")))
        .arg("-o")
        .arg(&out)
        .arg("--data")
        .arg(&calib)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

/// The first `n` calibration rows of every input.
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

fn plan(model: &Model, backend: Backend, lowering: Lowering) -> Executor {
    Executor::new(
        model,
        ExecutorOptions {
            backend,
            lowering,
            ..Default::default()
        },
    )
    .unwrap()
}

/// (exact rate, max LSB) of `x` against `y` in units of the output's scale; for a float
/// output, (exact rate, max error / max|y|).
fn agreement(model: &Model, oname: &str, x: &Tensor, y: &Tensor) -> (f64, f32, bool) {
    let (x, y) = (x.to_f32_vec().unwrap(), y.to_f32_vec().unwrap());
    assert_eq!(x.len(), y.len());
    let exact = x.iter().zip(&y).filter(|(p, q)| p == q).count() as f64 / x.len() as f64;
    match output_scale(model, oname) {
        Some(scale) => {
            let worst = x
                .iter()
                .zip(&y)
                .map(|(p, q)| ((p - q) / scale).abs().round())
                .fold(0.0, f32::max);
            (exact, worst, true)
        }
        None => {
            let peak = y.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
            let worst = x
                .iter()
                .zip(&y)
                .fold(0f32, |m, (p, q)| m.max((p - q).abs()))
                / peak;
            (exact, worst, false)
        }
    }
}

#[test]
fn qnnpack_backend_runs_every_quantized_model_on_its_kernels() {
    let dir = std::env::temp_dir().join(format!("onnxq-exec-q8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut models = 0;
    for path in bundled_models() {
        let name = stem(&path);
        if name == "control_flow" {
            continue; // tract (used by calibration) cannot run its Loop.
        }
        for (tag, extra) in [
            (
                "u8u8",
                &["--backend", "qnnpack", "--weight-dtype", "uint8"][..],
            ),
            ("fbgemm", &[][..]),
        ] {
            let q = quantize(&name, &dir, tag, extra);
            let model = onnxq::import::import_file(&q).unwrap();
            let q8 = plan(&model, Backend::Qnnpack, Lowering::OrtCompatible);
            let fb = plan(&model, Backend::Fbgemm, Lowering::OrtCompatible);
            let float = plan(&model, Backend::Qnnpack, Lowering::Off);
            // Every product unit is on a qnnpack kernel (no fallback in the bundled models).
            let units = q8.lowered_units();
            assert!(
                units.iter().any(|u| u.contains(" on q8")),
                "{name}: {units:?}"
            );
            assert!(
                !units.iter().any(|u| u.contains("fallback")),
                "{name}: {units:?}"
            );
            let inputs = calib_inputs(&name, &model, 64);
            let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let a = q8.run(&refs).unwrap();
            let threaded = Executor::new(
                &model,
                ExecutorOptions {
                    backend: Backend::Qnnpack,
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
            let b = fb.run(&refs).unwrap();
            let c = float.run(&refs).unwrap();
            for (((oname, x), (_, y)), (_, z)) in a.iter().zip(&b).zip(&c) {
                let (e1, w1, quant) = agreement(&model, oname, x, y);
                let (e2, w2, _) = agreement(&model, oname, x, z);
                eprintln!(
                    "{name}[{tag}]/{oname}: vs fbgemm exact {:.4}% max {w1}, vs float QDQ graph exact {:.4}% max {w2}{}",
                    e1 * 100.0,
                    e2 * 100.0,
                    if quant { " LSB" } else { " × max|output|" }
                );
                if quant {
                    // Both backends compute the same exact i32 products; the requantization
                    // rounds the exact (qnnpack) or the f32 (fbgemm) product: equal except on
                    // rare near-ties. Against the float graph, as for fbgemm
                    // (tests/executor.rs): ≤ 4 LSB after amplification by later layers.
                    assert!(e1 >= 0.999 && w1 <= 1.0, "{name}: vs fbgemm {e1} {w1}");
                    assert!(e2 >= 0.999 && w2 <= 4.0, "{name}: vs float {e2} {w2}");
                } else {
                    assert!(e1 >= 0.995 && w1 <= 0.1, "{name}: vs fbgemm {e1} {w1}");
                }
            }
        }
        models += 1;
    }
    assert!(models >= 6);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn units_the_qnnpack_kernels_do_not_take_fall_back_to_fbgemm_by_name() {
    // With Lowering::All a unit whose output stays float (dequantizing output stage) is
    // lowered too; the qnnpack kernels only write u8, so it runs on fbgemm and says so. Made
    // here by cutting the mlp's final Q → DQ: the last Gemm's float output becomes the graph
    // output.
    let dir = std::env::temp_dir().join(format!("onnxq-exec-q8fb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let q = quantize(
        "mlp",
        &dir,
        "u8u8",
        &["--backend", "qnnpack", "--weight-dtype", "uint8"],
    );
    let mut model = onnxq::import::import_file(&q).unwrap();
    let g = &mut model.graph;
    let out = g.outputs[0];
    let dq = g.node(g.producer(out));
    assert!(dq.is_op("DequantizeLinear"));
    let qv = dq.inputs[0].unwrap();
    let qn = g.node(g.producer(qv));
    assert!(qn.is_op("QuantizeLinear"));
    let gemm_out = qn.inputs[0].unwrap();
    g.outputs[0] = gemm_out;
    let all = plan(&model, Backend::Qnnpack, Lowering::All);
    let units = all.lowered_units();
    let fallbacks: Vec<&String> = units.iter().filter(|u| u.contains("fallback")).collect();
    assert_eq!(fallbacks.len(), 1, "{units:?}");
    assert!(
        fallbacks[0].contains('`')
            && fallbacks[0].contains("→f32 [fbgemm fallback: the output stays in float"),
        "{}",
        fallbacks[0]
    );
    assert!(units.iter().any(|u| u.contains("on q8gemm")), "{units:?}");
    let inputs = calib_inputs("mlp", &model, 16);
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let a = all.run(&refs).unwrap();
    let b = plan(&model, Backend::Fbgemm, Lowering::All)
        .run(&refs)
        .unwrap();
    assert_eq!(
        a, b,
        "the fallback unit reads the same u8 values as on fbgemm"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unsupported_ops_are_refused_with_their_names_on_qnnpack_too() {
    let mut model = onnxq::import::import_file(common::models_dir().join("mlp.onnx")).unwrap();
    let g = &mut model.graph;
    let relu = g
        .node_ids()
        .find(|&n| g.node(n).is_op("Relu"))
        .expect("mlp has a Relu");
    g.node_mut(relu).op_mut().unwrap().op_type = "FancyOp".into();
    let name = g.display_node_name(relu);
    let e = Executor::new(
        &model,
        ExecutorOptions {
            backend: Backend::Qnnpack,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("FancyOp") && e.contains(&name), "{e}");
}

#[test]
fn both_tie_rules_plan_and_agree_within_one_lsb() {
    let dir = std::env::temp_dir().join(format!("onnxq-exec-q8tie-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let q = quantize(
        "residual_block",
        &dir,
        "u8u8",
        &["--backend", "qnnpack", "--weight-dtype", "uint8"],
    );
    let model = onnxq::import::import_file(&q).unwrap();
    let with = |rounding| {
        Executor::new(
            &model,
            ExecutorOptions {
                backend: Backend::Qnnpack,
                q8_rounding: rounding,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let inputs = calib_inputs("residual_block", &model, 16);
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let even = with(Rounding::HalfEven).run(&refs).unwrap();
    let away = with(Rounding::HalfAway).run(&refs).unwrap();
    for ((oname, x), (_, y)) in even.iter().zip(&away) {
        let (e, w, _) = agreement(&model, oname, x, y);
        eprintln!("residual_block/{oname}: half-even vs half-away exact {e}, max {w} LSB");
        assert!(e >= 0.99 && w <= 1.0, "{oname}: {e} {w}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
