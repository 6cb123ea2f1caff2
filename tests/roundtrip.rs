//! Import → export round trips of every bundled model: the exported model
//! computes bit-identical outputs in tract, and a second round trip is
//! byte-identical to the first.

mod common;

use common::*;
use onnxq::import::{import_bytes, import_file, ImportOptions};

/// Bundled models tract 0.23 cannot run, with the reason it gives.
const TRACT_CANNOT_RUN: &[(&str, &str)] = &[("control_flow", "Unimplemented(Loop)")];

#[test]
fn round_trip_is_exact_and_stable() {
    for path in bundled_models() {
        let name = stem(&path);
        let original = std::fs::read(&path).unwrap();
        let model = import_file(&path).unwrap();
        onnxq::ir::verify::verify_graph(&model.graph).unwrap_or_else(|e| panic!("{name}: {e}"));
        let first = onnxq::emit::to_bytes(&model);
        let again = import_bytes(&first, path.parent(), &ImportOptions::default()).unwrap();
        let second = onnxq::emit::to_bytes(&again);
        assert!(
            first == second,
            "{name}: second round trip differs from the first"
        );

        let inputs = sample_inputs(&path, &model);
        let want = onnxq::tract_runner::run_once(&original, path.parent(), &inputs);
        if let Some((_, why)) = TRACT_CANNOT_RUN.iter().find(|(m, _)| *m == name) {
            // ONNX Runtime checks these (tests/python); tell us when tract learns them.
            let e = want.expect_err("tract runs this model now: remove it from TRACT_CANNOT_RUN");
            assert!(e.to_string().contains(why), "{name}: {e}");
            continue;
        }
        let want = want.unwrap();
        let got = onnxq::tract_runner::run_once(&first, path.parent(), &inputs).unwrap();
        assert!(!want.is_empty() && want.len() == got.len(), "{name}");
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.dims, g.dims, "{name}");
            assert!(
                w.raw() == g.raw(),
                "{name}: outputs differ after the round trip"
            );
        }
    }
}

#[test]
fn the_input_file_is_not_modified() {
    let path = models_dir().join("digits_cnn.onnx");
    let before = std::fs::read(&path).unwrap();
    let mut m = import_file(&path).unwrap();
    m.producer_name = "changed".into();
    let _ = onnxq::emit::to_bytes(&m);
    assert_eq!(before, std::fs::read(&path).unwrap());
}

#[test]
fn large_models_are_written_with_external_data() {
    let path = models_dir().join("digits_cnn.onnx");
    let model = import_file(&path).unwrap();
    let dir = std::env::temp_dir().join(format!("onnxq-extdata-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("digits_ext.onnx");
    // Pretend the limit is 10 KB: the 4.6 KB+ weights go to digits_ext.onnx.data.
    onnxq::emit::write_file_with(&model, &out, 10_000).unwrap();
    let data = std::fs::metadata(dir.join("digits_ext.onnx.data"))
        .unwrap()
        .len();
    let main = std::fs::metadata(&out).unwrap().len();
    assert!(
        data > 50_000 && main < 10_000,
        "data {data} B, model {main} B"
    );
    // Read back through the external-data path: same tensors, same outputs.
    let back = import_file(&out).unwrap();
    assert_eq!(onnxq::emit::to_bytes(&back), onnxq::emit::to_bytes(&model));
    let inputs = sample_inputs(&path, &model);
    let want =
        onnxq::tract_runner::run_once(&std::fs::read(&path).unwrap(), path.parent(), &inputs)
            .unwrap();
    let got =
        onnxq::tract_runner::run_once(&std::fs::read(&out).unwrap(), Some(&dir), &inputs).unwrap();
    assert!(want[0].raw() == got[0].raw());
    std::fs::remove_dir_all(&dir).ok();
}
