//! Does `onnxq optimize` make models faster (or at least not slower) in
//! tract? Median latency of the original and the optimized model, same
//! inputs, single thread, in the same run. `cargo bench --bench tract_optimize`

use onnxq::pm::{PassContext, PassManager, PassRegistry};
use std::path::Path;
use std::time::Instant;

fn median_latency(model: &onnxq::tract_runner::TractModel, inputs: &[onnxq::ir::Tensor]) -> f64 {
    for _ in 0..20 {
        model.run(inputs).unwrap();
    }
    let mut times = vec![];
    let start = Instant::now();
    while times.len() < 50 || (start.elapsed().as_secs_f64() < 1.0 && times.len() < 5000) {
        let t = Instant::now();
        model.run(inputs).unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    println!(
        "{:<20} {:>12} {:>12} {:>8}",
        "model", "orig µs", "optimized µs", "ratio"
    );
    for name in [
        "digits_cnn",
        "residual_block",
        "inverted_residual",
        "mlp",
        "transformer_layer",
        "lstm",
    ] {
        let path = dir.join(format!("{name}.onnx"));
        let model = onnxq::import::import_file(&path).unwrap();
        let samples = onnxq::data::read_npz(&path.with_extension("sample.npz")).unwrap();
        let inputs: Vec<onnxq::ir::Tensor> = model
            .graph
            .inputs
            .iter()
            .map(|&v| {
                samples
                    .iter()
                    .find(|(n, _)| *n == model.graph.value(v).name)
                    .unwrap()
                    .1
                    .clone()
            })
            .collect();
        let mut optimized = model.clone();
        PassManager::parse(onnxq::passes::OPTIMIZE, &PassRegistry::builtin())
            .unwrap()
            .run(&mut optimized, &mut PassContext::new())
            .unwrap();
        let a =
            onnxq::tract_runner::TractModel::load(&std::fs::read(&path).unwrap(), None, &inputs)
                .unwrap();
        let b = onnxq::tract_runner::TractModel::load(
            &onnxq::emit::to_bytes(&optimized),
            None,
            &inputs,
        )
        .unwrap();
        let (ta, tb) = (median_latency(&a, &inputs), median_latency(&b, &inputs));
        println!(
            "{:<20} {:>12.1} {:>12.1} {:>8.3}",
            name,
            ta * 1e6,
            tb * 1e6,
            tb / ta
        );
    }
}
