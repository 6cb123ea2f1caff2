//! insta snapshots of `inspect` (IR dump + summary) for every bundled model.

mod common;

use common::*;

#[test]
fn inspect_dump_of_every_model() {
    for path in bundled_models() {
        let m = onnxq::import::import_file(&path).unwrap();
        let text = format!(
            "{}\n{}",
            onnxq::ir::print::model_to_string(&m),
            onnxq::summary::summary_text(&m)
        );
        insta::assert_snapshot!(format!("inspect_{}", stem(&path)), text);
    }
}
