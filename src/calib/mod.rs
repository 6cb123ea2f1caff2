//! Calibration through tract: feeding representative data to the float
//! model and collecting statistics of chosen values with observers.
//!
//! ```no_run
//! use onnxq::calib::{CalibrationData, Calibrator};
//! use onnxq::observe::{MinMaxObserver, QuantSpec};
//! # fn main() -> onnxq::Result<()> {
//! let model = onnxq::import::import_file("models/digits_cnn.onnx")?;
//! let observed: Vec<_> = model.graph.outputs.clone();
//! let cal = Calibrator::new(&model, &observed)?;
//! let data = CalibrationData::open("models/digits_cnn.calib.npy".as_ref(), cal.inputs())?;
//! let mut observers = vec![MinMaxObserver::new(QuantSpec::default()).unwrap(); observed.len()];
//! let stats = cal.run(data, &mut observers)?;
//! println!("{} samples, {:.0} samples/s", stats.samples, stats.samples_per_sec());
//! # Ok(()) }
//! ```

mod hoist;
mod runner;
mod source;
mod table;

pub use runner::{CalibrationOptions, CalibrationStats, Calibrator, PLAN_CACHE_SIZE};
pub use source::{model_inputs, Batch, CalibrationData, ModelInput, DEFAULT_BATCH_SIZE};
pub use table::{
    begin, calibrate, constant_entries, corrected_layer_input, CalibrationTable, Entry, Pending,
    Role,
};
