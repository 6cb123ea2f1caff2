//! Snapshots of the emitted QDQ graphs (and summaries), with a calibration
//! table injected from synthetic per-value ranges: the graph structure is
//! reviewed as a diff, independently of tract's float results on this CPU.

mod common;

use common::{bundled_models, stem};
use onnxq::observe::Observer;
use onnxq::quantize::{quantize, Calibration, QuantizeOptions};

/// FNV-1a of a name: a deterministic, name-specific pseudo range.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A table in which each activation saw 33 evenly spaced values in a range
/// derived from its name (some all-positive, like post-ReLU values).
fn injected_table(
    model: &onnxq::ir::Model,
    options: &QuantizeOptions,
) -> onnxq::calib::CalibrationTable {
    let mut prepared = model.clone();
    let mut cx = onnxq::pm::PassContext::new();
    let pipeline = onnxq::quantize::prepare(&mut prepared, options, &mut cx).unwrap();
    let mut pending = onnxq::calib::begin(&prepared, &pipeline).unwrap();
    // Range observers only: without channel means, the graphs are converted without
    // bias correction (`tests/bias_correction.rs` covers it).
    let ranges = pending.means_from;
    for (name, obs) in pending
        .names
        .clone()
        .iter()
        .zip(pending.observers.iter_mut())
        .take(ranges)
    {
        let h = fnv(name);
        let hi = 0.5 + (h % 97) as f32 / 16.0;
        let lo = if h.is_multiple_of(3) {
            0.0
        } else {
            -hi * ((h >> 8) % 5 + 1) as f32 / 5.0
        };
        let xs: Vec<f32> = (0..=32).map(|i| lo + (hi - lo) * i as f32 / 32.0).collect();
        obs.observe(&xs, &[xs.len()]).unwrap();
    }
    pending.finish(1).unwrap()
}

#[test]
fn quantized_graph_snapshots() {
    use onnxq::quantize::{Format, Mode};
    // (name, mode, format, backend)
    let configs = [
        ("fbgemm", Mode::Static, Format::Qdq, "fbgemm"),
        ("qnnpack", Mode::Static, Format::Qdq, "qnnpack"),
        ("qoperator", Mode::Static, Format::QOperator, "fbgemm"),
        ("dynamic", Mode::Dynamic, Format::Qdq, "fbgemm"),
        (
            "weight_only_int8",
            Mode::WeightOnly { bits: 8, block: 32 },
            Format::Qdq,
            "fbgemm",
        ),
        (
            "weight_only_int4",
            Mode::WeightOnly { bits: 4, block: 32 },
            Format::Qdq,
            "fbgemm",
        ),
    ];
    for path in bundled_models() {
        let name = stem(&path);
        let model = onnxq::import::import_file(&path).unwrap();
        for (config, mode, format, backend) in &configs {
            let options = QuantizeOptions {
                backend: backend.to_string(),
                mode: mode.clone(),
                format: *format,
                ..Default::default()
            };
            let calibration = (*mode == Mode::Static)
                .then(|| Calibration::Table(injected_table(&model, &options)));
            // A refusal is part of the contract too: its message is the snapshot.
            let text = match quantize(model.clone(), calibration, &options) {
                Ok(q) => {
                    if name == "transformer_layer" && *config == "fbgemm" {
                        // The library answers "why is this float?" per node or value.
                        let why = q.summary.float_reason("/Gather").unwrap_or_default();
                        assert!(why.contains("not a real-valued signal"), "{why}");
                        let why = q.summary.float_reason("/ln1/Pow").unwrap_or_default();
                        assert!(why.contains("LayerNormalization"), "{why}");
                        assert_eq!(q.summary.float_reason("/q/MatMul"), None);
                    }
                    let mut summary = q.summary.clone();
                    summary.stage_times.clear();
                    format!("{summary}\n{}", onnxq::ir::print::model_to_string(&q.model))
                }
                Err(e) => format!("refused: {e}\n"),
            };
            insta::assert_snapshot!(format!("{name}_{config}"), text);
        }
    }
}
