//! SmoothQuant's data step: the per-channel `max|X_c|` of the inputs the
//! `smooth-quant` pass would smooth, from one float pass over the calibration data, then
//! the pass itself. The model stays the same function (up to float rounding): every later
//! stage, the accuracy guard's reference included, starts from the smoothed model.

use std::collections::BTreeMap;
use std::path::Path;

use crate::calib::{CalibrationData, CalibrationOptions, Calibrator};
use crate::observe::{Observer, PerChannelMinMaxObserver};
use crate::passes::{smooth_groups, SmoothQuant};
use crate::prelude::*;

/// Smooths `model` in place with migration strength `alpha`; returns the notes for the
/// summary (`(subject, message)`), empty when no input qualified.
pub fn smooth_quant(
    model: &mut Model,
    data: &Path,
    alpha: f32,
    options: &CalibrationOptions,
) -> Result<Vec<(String, String)>> {
    SmoothQuant::check_alpha(alpha)?;
    let groups = smooth_groups(&model.graph);
    if groups.is_empty() {
        return Ok(vec![(
            "smooth-quant".into(),
            "no MatMul/Gemm input made by a float op (LayerNormalization, Gelu, Softmax): nothing smoothed".into(),
        )]);
    }
    let inputs: Vec<ValueId> = groups.iter().map(|g| g.input).collect();
    let cal = Calibrator::new(model, &inputs)?.with_options(CalibrationOptions {
        show_progress: false,
        ..options.clone()
    });
    let spec = QuantSpec::new(QDtype::QInt8, QScheme::PerChannelSymmetric);
    let observer = PerChannelMinMaxObserver::new(spec, -1)
        .map_err(|e| Error::invalid(format!("smooth-quant: {e}")))?;
    let mut observers = vec![observer; inputs.len()];
    let batches = CalibrationData::open(data, cal.inputs())?;
    cal.run(batches, &mut observers)
        .map_err(|e| Error::invalid(format!("smooth-quant: observing the MatMul inputs: {e}")))?;
    let stats: BTreeMap<String, Vec<f32>> = inputs
        .iter()
        .zip(&observers)
        .filter_map(|(&v, o)| {
            let (lo, hi) = o.range()?;
            let absmax = lo
                .iter()
                .zip(&hi)
                .map(|(l, h)| l.abs().max(h.abs()))
                .collect();
            Some((model.graph.value(v).name.clone(), absmax))
        })
        .collect();
    let mut cx = PassContext::new();
    let mut pm = PassManager::new();
    pm.add(SmoothQuant::with_stats(alpha, stats));
    pm.run(model, &mut cx)?;
    let smoothed = cx.stat("smooth-quant", "smoothed inputs");
    let mut notes = vec![(
        "smooth-quant".to_string(),
        format!("{smoothed} MatMul/Gemm input(s) divided by their channel scales (alpha {alpha}), the weights multiplied by them"),
    )];
    notes.extend(
        cx.diagnostics()
            .iter()
            .map(|d| (d.subject.clone(), d.message.clone())),
    );
    Ok(notes)
}
