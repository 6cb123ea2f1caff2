//! Helpers shared by the integration tests.
#![allow(dead_code)]

use onnxq::ir::{Model, Tensor};
use std::path::{Path, PathBuf};

pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// Every bundled model, sorted by name.
pub fn bundled_models() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(models_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    assert!(v.len() >= 6, "models/ should hold the bundled models");
    v
}

pub fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().to_string()
}

/// The model's sample inputs (`X.sample.npz`), in graph input order.
pub fn sample_inputs(model_path: &Path, model: &Model) -> Vec<Tensor> {
    let npz = model_path.with_extension("sample.npz");
    let arrays = onnxq::data::read_npz(&npz).unwrap();
    model
        .graph
        .inputs
        .iter()
        .filter(|&&v| model.graph.const_tensor(v).is_none())
        .map(|&v| {
            let name = &model.graph.value(v).name;
            arrays
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{npz:?} lacks `{name}`"))
                .1
                .clone()
        })
        .collect()
}

/// A graph input/output declaration: element type `elem` (ONNX code) with fixed `dims`.
pub fn value_info(name: &str, elem: i32, dims: &[i64]) -> onnxq::onnx::pb::ValueInfoProto {
    use onnxq::onnx::pb;
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A graph input/output declaration: f32 with fixed `dims`.
pub fn f32_value_info(name: &str, dims: &[i64]) -> onnxq::onnx::pb::ValueInfoProto {
    value_info(name, 1, dims)
}

/// An f32 initializer.
pub fn f32_tensor(name: &str, dims: &[i64], values: Vec<f32>) -> onnxq::onnx::pb::TensorProto {
    onnxq::onnx::pb::TensorProto {
        name: name.into(),
        data_type: 1,
        dims: dims.to_vec(),
        float_data: values,
        ..Default::default()
    }
}

/// An IR-8, opset-13 model of one graph named `g`.
pub fn opset13_model(
    nodes: Vec<onnxq::onnx::pb::NodeProto>,
    initializer: Vec<onnxq::onnx::pb::TensorProto>,
    input: Vec<onnxq::onnx::pb::ValueInfoProto>,
    output: Vec<onnxq::onnx::pb::ValueInfoProto>,
) -> onnxq::onnx::pb::ModelProto {
    use onnxq::onnx::pb;
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: "g".into(),
            node: nodes,
            initializer,
            input,
            output,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A node named `name` without attributes.
pub fn node_proto(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
) -> onnxq::onnx::pb::NodeProto {
    onnxq::onnx::pb::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// Writes an uncompressed `.npz` as `np.savez` does.
pub fn write_npz(path: &Path, arrays: &[(&str, &Tensor)]) {
    use npyz::zip::{write::FileOptions, CompressionMethod, ZipWriter};
    use std::io::Write;
    let mut z = ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, t) in arrays {
        z.start_file(
            format!("{name}.npy"),
            FileOptions::default().compression_method(CompressionMethod::Stored),
        )
        .unwrap();
        z.write_all(&onnxq::data::npy_bytes(t).unwrap()).unwrap();
    }
    z.finish().unwrap();
}

/// Output SQNR in dB: 10·log10(Σ want² / Σ (want − got)²).
pub fn sqnr_db(want: &[f32], got: &[f32]) -> f64 {
    assert_eq!(want.len(), got.len());
    let s: f64 = want.iter().map(|&x| (x as f64).powi(2)).sum();
    let n: f64 = want
        .iter()
        .zip(got)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    10.0 * (s / n.max(1e-30)).log10()
}

/// A graph-valued attribute (an If's `then_branch` / `else_branch`).
pub fn graph_attr(name: &str, g: onnxq::onnx::pb::GraphProto) -> onnxq::onnx::pb::AttributeProto {
    use onnxq::onnx::pb;
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Graph as i32,
        g: Some(g),
        ..Default::default()
    }
}
