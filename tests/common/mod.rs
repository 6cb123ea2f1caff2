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
