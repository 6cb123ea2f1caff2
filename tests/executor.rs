//! The native executor on the bundled models: float models against tract and ONNX Runtime's
//! recorded outputs, quantized models against the same QDQ graph run unlowered (every op in
//! float), planning refusals and bad inputs.

mod common;

use common::{bundled_models, sample_inputs, stem};
use onnxq::executor::{Executor, ExecutorOptions};
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
        let exec = match Executor::new(&model, ExecutorOptions::default()) {
            Ok(e) => e,
            Err(e) => {
                // Only the control-flow model may be refused, and it must say why.
                assert_eq!(name, "control_flow", "{name}: {e}");
                assert!(e.to_string().contains("If"), "{e}");
                continue;
            }
        };
        let inputs = sample_inputs(&path, &model);
        let ours = run(&exec, &model, &inputs);
        let bytes = std::fs::read(&path).unwrap();
        let tract = onnxq::tract_runner::run_once(&bytes, path.parent(), &inputs).unwrap();
        let expected = onnxq::data::read_npz(&path.with_extension("expected.npz")).unwrap();
        for (k, (oname, t)) in ours.iter().enumerate() {
            let e_tract = max_rel_err(t, &tract[k]);
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
    assert!(checked >= 6, "only {checked} models ran");
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
