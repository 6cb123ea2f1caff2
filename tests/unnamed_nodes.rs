//! Exporters that write no node names (centerface, some TF converters): quantize names the
//! op nodes `<OpType>_<first output>`, so `--exclude`, the summary and the sensitivity
//! fallback can refer to them.

use onnxq::quantize::{quantize, Calibration, QuantizeOptions};

#[test]
fn unnamed_nodes_get_names_that_exclude_accepts() {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut model = onnxq::import::import_file(models.join("mlp.onnx")).unwrap();
    let ids: Vec<_> = model.graph.node_ids().collect();
    for n in ids {
        if model.graph.node(n).op().is_some() {
            model.graph.node_mut(n).name.clear();
        }
    }
    let calib = models.join("mlp.calib.npy");
    let options = QuantizeOptions {
        exclude: vec!["Gemm_/fc2/Gemm_output_0".into()],
        ..Default::default()
    };
    let q = quantize(model.clone(), Some(Calibration::Data(&calib)), &options).unwrap();
    assert!(
        q.summary
            .float_reason("Gemm_/fc2/Gemm_output_0")
            .is_some_and(|r| r.contains("qconfig is None")),
        "{}",
        q.summary
    );
    let names: Vec<String> = q
        .model
        .graph
        .node_ids()
        .filter(|&n| q.model.graph.node(n).op().is_some())
        .map(|n| q.model.graph.node(n).name.clone())
        .collect();
    assert!(names.iter().all(|n| !n.is_empty()), "{names:?}");
    assert!(names.contains(&"MatMul_/MatMul_output_0".to_string()));
    // An unknown name is still an error.
    let bad = QuantizeOptions {
        exclude: vec!["Gemm_nothing".into()],
        ..Default::default()
    };
    let err = quantize(model, Some(Calibration::Data(&calib)), &bad)
        .err()
        .expect("unknown node");
    assert!(err.to_string().contains("Gemm_nothing"), "{err}");
}
