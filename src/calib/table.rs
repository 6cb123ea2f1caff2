//! The calibration table: every quantized value's observer state and
//! qparams, saved as JSON so that quantization can re-use a calibration
//! without re-running the model, and two partial runs can be merged.

use super::{CalibrationData, CalibrationOptions, CalibrationStats, Calibrator};
use crate::error::{Error, Result};
use crate::ir::{Model, QuantAnnotation, ValueId};
use crate::observe::{Observer, ObserverState, QParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What a table entry describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An activation observed while running calibration data.
    Activation,
    /// A constant weight, observed from its values.
    Weight,
    /// A range fixed by the op (Sigmoid, Tanh, Softmax).
    Fixed,
}

/// One quantized value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub role: Role,
    /// The observer with everything it saw (absent for fixed ranges).
    pub state: Option<ObserverState>,
    pub qparams: QParams,
}

/// Observer states and qparams by value name.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct CalibrationTable {
    pub format_version: u32,
    /// The pipeline that decided what is observed (for the record).
    pub pipeline: String,
    /// Samples seen by the activation observers.
    pub samples: usize,
    pub entries: BTreeMap<String, Entry>,
}

const FORMAT_VERSION: u32 = 1;

impl CalibrationTable {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serialisable")
    }

    pub fn from_json(text: &str) -> Result<CalibrationTable> {
        let t: CalibrationTable = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("calibration table: {e}")))?;
        if t.format_version != FORMAT_VERSION {
            return Err(Error::invalid(format!(
                "calibration table: unsupported format version {}",
                t.format_version
            )));
        }
        Ok(t)
    }

    pub fn read(path: &Path) -> Result<CalibrationTable> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| e.in_file(path))
    }

    /// Writes the table atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::emit::write_atomic(path, self.to_json().as_bytes())
    }

    /// Merges a second partial calibration of the same model and pipeline
    /// (exact for min/max observers; see each observer's `merge`).
    pub fn merge(&mut self, other: &CalibrationTable) -> Result<()> {
        if self.entries.keys().ne(other.entries.keys()) {
            return Err(Error::invalid(
                "calibration tables observe different values: not the same model and pipeline",
            ));
        }
        for (name, e) in self.entries.iter_mut() {
            let o = &other.entries[name];
            if e.role == Role::Activation {
                let (Some(a), Some(b)) = (e.state.as_mut(), o.state.as_ref()) else {
                    continue;
                };
                a.merge(b)
                    .map_err(|err| Error::invalid(format!("value `{name}`: {err}")))?;
                e.qparams = a
                    .qparams()
                    .map_err(|err| Error::invalid(format!("value `{name}`: {err}")))?;
            }
        }
        self.samples += other.samples;
        Ok(())
    }

    pub fn qparams(&self, value: &str) -> Option<&QParams> {
        self.entries.get(value).map(|e| &e.qparams)
    }
}

/// A calibration whose constant-only entries (weights, fixed ranges,
/// constant operands) are done, waiting for the activation observers to see
/// data: [`begin`], feed `observers[k]` with value `observed[k]`, [`Pending::finish`].
/// [`calibrate`] does all three with tract; tests and embedders with their own
/// data source drive it directly.
pub struct Pending {
    table: CalibrationTable,
    /// Activations to observe, in order.
    pub observed: Vec<ValueId>,
    /// Their names, in the same order.
    pub names: Vec<String>,
    /// One observer per observed value, as configured by the prepared graph.
    pub observers: Vec<ObserverState>,
}

impl Pending {
    /// The table, with every activation's qparams from its observer.
    pub fn finish(mut self, samples: usize) -> Result<CalibrationTable> {
        self.table.samples = samples;
        for (name, obs) in self.names.into_iter().zip(self.observers) {
            let qparams = obs
                .qparams()
                .map_err(|e| Error::invalid(format!("value `{name}`: {e}")))?;
            self.table.entries.insert(
                name,
                Entry {
                    role: Role::Activation,
                    state: Some(obs),
                    qparams,
                },
            );
        }
        Ok(self.table)
    }
}

/// Calibrates a prepared model (after `insert-observers`): weights are
/// observed from their constants, activations by running `data` through
/// tract, fixed ranges computed directly.
pub fn calibrate(
    model: &Model,
    pipeline: &str,
    data_path: &Path,
    options: CalibrationOptions,
) -> Result<(CalibrationTable, CalibrationStats)> {
    let mut pending = begin(model, pipeline)?;
    let cal = Calibrator::new(model, &pending.observed)?.with_options(options);
    let data = CalibrationData::open(data_path, cal.inputs())?;
    let stats = cal.run(data, &mut pending.observers)?;
    Ok((pending.finish(stats.samples)?, stats))
}

/// Starts the calibration of a prepared `model` (see [`Pending`]).
pub fn begin(model: &Model, pipeline: &str) -> Result<Pending> {
    let g = &model.graph;
    let mut table = CalibrationTable {
        format_version: FORMAT_VERSION,
        pipeline: pipeline.to_string(),
        ..Default::default()
    };
    let mut observed: Vec<ValueId> = vec![];
    let mut observers: Vec<ObserverState> = vec![];
    let value_err = |name: &str, e: crate::observe::ObserveError| {
        Error::invalid(format!("value `{name}`: {e}"))
    };
    for v in g.value_ids() {
        let name = g.value(v).name.clone();
        match &g.value(v).quant {
            Some(QuantAnnotation::Observe(cfg)) => match g.const_tensor(v) {
                // A constant operand (Add of a bias, Mul by a scale): its
                // values are known, no data needed.
                Some(t) => {
                    let data = t
                        .to_f32_vec()
                        .ok_or_else(|| Error::invalid(format!("constant `{name}` is not float")))?;
                    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
                    let mut obs = cfg.build(1)?;
                    obs.observe(&data, &shape)
                        .map_err(|e| value_err(&name, e))?;
                    let qparams = obs.qparams().map_err(|e| value_err(&name, e))?;
                    table.entries.insert(
                        name,
                        Entry {
                            role: Role::Activation,
                            state: Some(obs),
                            qparams,
                        },
                    );
                }
                None => {
                    observed.push(v);
                    observers.push(cfg.build(1)?);
                }
            },
            Some(QuantAnnotation::Weight { config, axis }) => {
                let t = g
                    .const_tensor(v)
                    .ok_or_else(|| Error::invalid(format!("weight `{name}` is not a constant")))?;
                let data = t
                    .to_f32_vec()
                    .ok_or_else(|| Error::invalid(format!("weight `{name}` is not float")))?;
                let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
                let mut obs = config.build(*axis)?;
                obs.observe(&data, &shape)
                    .map_err(|e| value_err(&name, e))?;
                let qparams = obs.qparams().map_err(|e| value_err(&name, e))?;
                table.entries.insert(
                    name,
                    Entry {
                        role: Role::Weight,
                        state: Some(obs),
                        qparams,
                    },
                );
            }
            Some(QuantAnnotation::Fixed { config, min, max }) => {
                let qparams =
                    crate::observe::calculate_qparams(&config.spec(), &[*min], &[*max], None)
                        .map_err(|e| value_err(&name, e))?;
                table.entries.insert(
                    name,
                    Entry {
                        role: Role::Fixed,
                        state: None,
                        qparams,
                    },
                );
            }
            Some(QuantAnnotation::ShareWith(_)) | None => {}
        }
    }
    if observed.is_empty() {
        return Err(Error::invalid(
            "nothing to calibrate: no activation is observed (is anything quantizable?)",
        ));
    }
    let names = observed.iter().map(|&v| g.value(v).name.clone()).collect();
    Ok(Pending {
        table,
        observed,
        names,
        observers,
    })
}
