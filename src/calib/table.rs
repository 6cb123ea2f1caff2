//! The calibration table: every quantized value's observer state and
//! qparams, saved as JSON so that quantization can re-use a calibration
//! without re-running the model, and two partial runs can be merged.

use super::{CalibrationData, CalibrationOptions, CalibrationStats, Calibrator};
use crate::error::{Error, Result};
use crate::ir::{Graph, Model, NodeKind, QuantAnnotation, ValueId};
use crate::observe::{ChannelMeanObserver, Observer, ObserverState, QParams};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
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
    /// Per-channel means of the float inputs of Conv and Gemm layers with quantized
    /// weights, by value name: bias correction's statistic (see
    /// [`crate::observe::ChannelMeanObserver`]). Tables written before it have none, and
    /// their models are converted without correction.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channel_means: BTreeMap<String, ChannelMeanObserver>,
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
        for (name, m) in self.channel_means.iter_mut() {
            if let Some(o) = other.channel_means.get(name) {
                m.merge(o)
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
    /// One observer per observed value, as configured by the prepared graph. The
    /// entries from [`Pending::means_from`] on are channel means (the same value may
    /// also be observed for its range before that).
    pub observers: Vec<ObserverState>,
    pub means_from: usize,
    /// When values inside If branches are observed: the prepared model with
    /// them piped out to its main graph, which `observed` refers to.
    calibration_model: Option<Model>,
}

impl Pending {
    /// The model to run for calibration (`observed` are values of its main
    /// graph): `prepared` itself unless values inside If branches are observed.
    pub fn calibration_model<'a>(&'a self, prepared: &'a Model) -> &'a Model {
        self.calibration_model.as_ref().unwrap_or(prepared)
    }

    /// The table, with every activation's qparams from its observer.
    pub fn finish(mut self, samples: usize) -> Result<CalibrationTable> {
        self.table.samples = samples;
        for (k, (name, obs)) in self.names.into_iter().zip(self.observers).enumerate() {
            if k >= self.means_from {
                match obs {
                    ObserverState::ChannelMean(m) if m.count > 0 => {
                        self.table.channel_means.insert(name, m);
                    }
                    _ => {}
                }
                continue;
            }
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
    let mut cal =
        Calibrator::new(pending.calibration_model(model), &pending.observed)?.with_options(options);
    if pending.calibration_model.is_some() {
        // The piped-out values have a shape in one branch and none in the
        // other, which tract's analysis cannot unify.
        cal = cal.on_native_executor("values inside If branches are observed");
    }
    let data = CalibrationData::open(data_path, cal.inputs())?;
    let stats = cal.run(data, &mut pending.observers)?;
    Ok((pending.finish(stats.samples)?, stats))
}

/// The entries a prepared `model` gets without data: weights, constant operands and
/// fixed ranges (what [`begin`] computes before the activations are observed).
pub fn constant_entries(model: &Model, pipeline: &str) -> Result<CalibrationTable> {
    let mut table = CalibrationTable {
        format_version: FORMAT_VERSION,
        pipeline: pipeline.to_string(),
        ..Default::default()
    };
    let (mut wanted, mut means) = (vec![], vec![]);
    collect(&model.graph, &[], &mut table, &mut wanted, &mut means)?;
    Ok(table)
}

/// Starts the calibration of a prepared `model` (see [`Pending`]). Values
/// annotated inside If branches are included: they are piped out to the main
/// graph of [`Pending::calibration_model`].
pub fn begin(model: &Model, pipeline: &str) -> Result<Pending> {
    let mut table = CalibrationTable {
        format_version: FORMAT_VERSION,
        pipeline: pipeline.to_string(),
        ..Default::default()
    };
    let mut wanted: Vec<(String, ObserverState)> = vec![];
    let mut means: Vec<(String, ObserverState)> = vec![];
    collect(&model.graph, &[], &mut table, &mut wanted, &mut means)?;
    if wanted.is_empty() {
        return Err(Error::invalid(
            "nothing to calibrate: no activation is observed (is anything quantizable?)",
        ));
    }
    let g = &model.graph;
    let in_main = |name: &str| {
        g.value_by_name(name)
            .filter(|&v| !matches!(g.node(g.producer(v)).kind, NodeKind::OuterRef))
    };
    let means_from = wanted.len();
    wanted.extend(means);
    let inner: BTreeSet<String> = wanted
        .iter()
        .filter(|(n, _)| in_main(n).is_none())
        .map(|(n, _)| n.clone())
        .collect();
    let (calibration_model, piped) = if inner.is_empty() {
        (None, BTreeMap::new())
    } else {
        let mut m = model.clone();
        let piped = super::hoist::hoist(&mut m.graph, &inner);
        (Some(m), piped)
    };
    let mut observed = Vec::with_capacity(wanted.len());
    let mut names = Vec::with_capacity(wanted.len());
    let mut observers = Vec::with_capacity(wanted.len());
    for (name, obs) in wanted {
        let v = in_main(&name)
            .or_else(|| piped.get(&name).copied())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "value `{name}` cannot be observed: it is not computed in the main graph or an If branch"
                ))
            })?;
        observed.push(v);
        names.push(name);
        observers.push(obs);
    }
    Ok(Pending {
        table,
        observed,
        names,
        observers,
        means_from,
        calibration_model,
    })
}

/// Adds the entries of graph `g` (with enclosing graphs `outer`, innermost
/// last) and of its If branches: constants and fixed ranges to `table`,
/// activations to observe to `wanted` (once per name), inputs whose channel
/// means bias correction needs to `means`.
fn collect(
    g: &Graph,
    outer: &[&Graph],
    table: &mut CalibrationTable,
    wanted: &mut Vec<(String, ObserverState)>,
    means: &mut Vec<(String, ObserverState)>,
) -> Result<()> {
    for n in g.node_ids() {
        let Some((x, axis)) = corrected_layer_input(g, n) else {
            continue;
        };
        let name = g.value(x).name.clone();
        if !means.iter().any(|(m, _)| *m == name) {
            means.push((
                name,
                ObserverState::ChannelMean(ChannelMeanObserver::new(axis)),
            ));
        }
    }
    let value_err = |name: &str, e: crate::observe::ObserveError| {
        Error::invalid(format!("value `{name}`: {e}"))
    };
    // A value read from an enclosing graph that is a constant there.
    let outer_const = |name: &str| {
        outer.iter().rev().find_map(|og| {
            og.value_by_name(name)
                .map(|v| match og.node(og.producer(v)).kind {
                    NodeKind::OuterRef => None,
                    _ => og.const_tensor(v),
                })
        })?
    };
    for v in g.value_ids() {
        let name = g.value(v).name.clone();
        if table.entries.contains_key(&name) || wanted.iter().any(|(n, _)| *n == name) {
            continue;
        }
        match &g.value(v).quant {
            Some(QuantAnnotation::Observe(cfg)) => {
                let konst = g.const_tensor(v).or_else(|| {
                    matches!(g.node(g.producer(v)).kind, NodeKind::OuterRef)
                        .then(|| outer_const(&name))
                        .flatten()
                });
                match konst {
                    // A constant operand (Add of a bias, Mul by a scale, an
                    // embedding table): its values are known, no data needed. A table
                    // a Gather looks up gets its exact range (minmax): each entry is
                    // an output as it is, and a histogram's clipped range cut BERT's
                    // embedding table to a quarter of it (11.6 dB after the lookup).
                    Some(t) => {
                        let data = t.to_f32_vec().ok_or_else(|| {
                            Error::invalid(format!("constant `{name}` is not float"))
                        })?;
                        let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
                        let looked_up = g
                            .consumers(v)
                            .iter()
                            .any(|(c, _)| g.node(*c).is_op("Gather"));
                        let mut obs = if looked_up {
                            crate::qconfig::ObserverConfig {
                                observer: crate::qconfig::ObserverKind::MinMax,
                                percentile: None,
                                averaging_constant: None,
                                ..cfg.clone()
                            }
                            .build(1)?
                        } else {
                            cfg.build(1)?
                        };
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
                    None => wanted.push((name, cfg.build(1)?)),
                }
            }
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
    let mut scopes: Vec<&Graph> = outer.to_vec();
    scopes.push(g);
    for n in g.node_ids() {
        if !g.node(n).is_op("If") {
            continue;
        }
        for a in g.node(n).op().expect("an op").attrs.values() {
            for sg in a.subgraphs() {
                collect(sg, &scopes, table, wanted, means)?;
            }
        }
    }
    Ok(())
}

/// The float input of a layer that bias correction applies to, and its channel
/// axis: a Conv or a Gemm whose weight (input 1) is quantized and whose input 0
/// is computed (not a constant). Conv's channels are on axis 1; Gemm's on the K axis
/// of A (1, or 0 with `transA`). MatMul has no bias input, ConvTranspose's output
/// pixels see a varying number of taps: neither is corrected.
pub fn corrected_layer_input(g: &Graph, n: crate::ir::NodeId) -> Option<(ValueId, usize)> {
    let node = g.node(n);
    let axis = if node.is_op("Conv") {
        1
    } else if node.is_op("Gemm") {
        let trans_a = node
            .op()
            .and_then(|op| op.attrs.get("transA"))
            .and_then(|a| a.as_int())
            .unwrap_or(0);
        if trans_a != 0 {
            0
        } else {
            1
        }
    } else {
        return None;
    };
    let x = node.inputs.first().copied().flatten()?;
    let w = node.inputs.get(1).copied().flatten()?;
    if !matches!(g.value(w).quant, Some(QuantAnnotation::Weight { .. })) {
        return None;
    }
    if matches!(
        g.node(g.producer(x)).kind,
        NodeKind::Const(_) | NodeKind::SparseConst(_)
    ) || g
        .value(x)
        .ty
        .dtype()
        .is_some_and(|d| d != crate::ir::DataType::F32)
    {
        return None;
    }
    Some((x, axis))
}
