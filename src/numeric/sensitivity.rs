//! Sensitivity analysis (the seed's one-at-a-time analysis) and the automatic float
//! fallback built on it.
//!
//! # Units
//!
//! The nodes analysed are the *quantizable units* of the model: what `insert-observers`
//! quantizes as one (a fused Conv+BatchNorm+Relu, a decomposed LayerNormalization, a
//! lone MatMul). Each is named by its first node's name, the name `--exclude` takes (the
//! QConfigMapping resolves a unit by its first node). A unit counts only if excluding it
//! changes what is observed; so units that stay float anyway are not listed.
//!
//! # One calibration
//!
//! Every variant (quantize only unit *i*; quantize all but unit *i*; the fallback's
//! candidates) is the same fused graph with other exclusions, converted with **one**
//! calibration table. Excluding a unit can make a value observed that the fully
//! quantized model does not observe on its own: the output of a MaxPool shares its
//! input's qparams when the MaxPool is quantized, but is observed directly when the
//! MaxPool stays float and the next Conv is quantized. So before calibrating, every
//! variant is prepared (fusion and observer insertion only: no data, milliseconds), and
//! the values any of them observes are all observed in the one calibration run. A
//! variant's conversion then reads the entries it needs from that table and ignores the
//! others. Cost: one calibration, plus per variant one prepare + convert + one run of
//! the evaluation data in the native executor.
//!
//! # Scores and ranking
//!
//! A variant's score is the SQNR of the model's outputs against the float model on the
//! evaluation data, per float output over all samples, 10·log10(Σx² / Σ(x−y)²), and the
//! worst output's figure (a detector's score head must not hide behind its boxes); with
//! labels, also the top-1 accuracy of the first output.
//! Units are ranked most sensitive first by the "quantize only this unit" score: lowest
//! accuracy first when labels are given (ties by SQNR), otherwise lowest SQNR first.
//! Quantization noise of independent units roughly adds up, so the unit that alone
//! brings the most noise is the one whose fallback to float gains the most; the "all but
//! this unit" score is reported beside it (high = floating this unit alone nearly
//! recovers the float model).
//!
//! # Fallback (`quantize --target-sqnr` / `--max-accuracy-drop`)
//!
//! 1. Rank the units as above (one calibration, N "only *i*" evaluations).
//! 2. Greedy: keep the first k units of the ranking in float for k = 0, 1, 2, ... and
//!    stop at the first k that meets the target.
//! 3. Prune: try to quantize again each unit of that set, least sensitive first; a unit
//!    goes back to int8 if the target still holds without it. The result is a set in
//!    which every float unit is needed (no single one can be quantized again).
//!
//! If the target is not met with `max_float` units in float (default: all units but
//! one, i.e. a model with at least one int8 unit), the search goes on without the cap
//! to say how many units, and which, it would need, and the best model within the cap
//! is returned with `reached = false`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::calib::{model_inputs, CalibrationData, CalibrationTable};
use crate::executor::{Executor, ExecutorOptions};
use crate::ir::{Model, NodeId, QuantAnnotation, Tensor};
use crate::quantize::{convert_prepared, prepare_static, Prepared, QuantizeOptions, Quantized};

/// A quantizable unit.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Unit {
    /// The first node's name (what `--exclude` takes).
    pub name: String,
    /// Its op types, e.g. `Conv+BatchNormalization+Relu`, or the composite's type.
    pub op: String,
}

/// A variant's figures against the float model.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Score {
    /// Output SQNR in dB (`null` in JSON when infinite: no error at all).
    pub sqnr_db: f64,
    /// Top-1 accuracy in [0, 1] with labels.
    pub accuracy: Option<f64>,
}

/// What the analysis evaluates on.
struct EvalSet {
    input_names: Vec<String>,
    batches: Vec<Vec<Tensor>>,
    /// Float outputs per batch (only the f32 outputs), as f32.
    reference: Vec<Vec<Option<Vec<f32>>>>,
    labels: Option<Vec<i64>>,
    samples: usize,
}

/// One calibration and one evaluation set, shared by every variant of a model.
pub struct Suite {
    float: Model,
    options: QuantizeOptions,
    pub units: Vec<Unit>,
    table: CalibrationTable,
    /// Calibration samples.
    pub calibration_samples: usize,
    eval: EvalSet,
    /// The float model's accuracy on the labels.
    pub float_accuracy: Option<f64>,
    /// Values observed only by some variants, added to the one calibration.
    pub extra_observed: usize,
    /// How long the one calibration took.
    pub calibration_time: std::time::Duration,
}

/// Labels from a `.npy` (integers) or from the `labels` array of an `.npz`.
pub fn read_labels(path: &Path) -> Result<Vec<i64>> {
    let is_npz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"));
    let t = if is_npz {
        let arrays = crate::data::read_npz(path)?;
        let names: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
        match arrays.iter().find(|(n, _)| n == "labels") {
            Some((_, t)) => t.clone(),
            None => bail!(
                "{}: no array named `labels` (the file holds: {})",
                path.display(),
                names.join(", ")
            ),
        }
    } else {
        crate::data::read_npy(path)?
    };
    t.to_i64_vec().with_context(|| {
        format!(
            "{}: labels must be integers, not {}",
            path.display(),
            t.dtype
        )
    })
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let target = if std::io::stderr().is_terminal() {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let pb = indicatif::ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:24} [{bar:40}] {pos}/{len} ({eta})")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// The annotation signature of a prepared graph: value name → kind, for comparing
/// variants.
fn signature(m: &Model) -> BTreeMap<String, &'static str> {
    let g = &m.graph;
    g.value_ids()
        .filter_map(|v| {
            let kind = match g.value(v).quant.as_ref()? {
                QuantAnnotation::Observe(_) => "observe",
                QuantAnnotation::Weight { .. } => "weight",
                QuantAnnotation::Fixed { .. } => "fixed",
                QuantAnnotation::ShareWith(_) => "share",
            };
            Some((g.value(v).name.clone(), kind))
        })
        .collect()
}

/// Candidate units of a prepared graph, in graph order: fused units, decomposed
/// composites, lone ops; each with a node name (unnamed nodes cannot be excluded by
/// name and are skipped).
fn candidate_units(m: &Model) -> Vec<Unit> {
    let g = &m.graph;
    let Ok(order) = g.topo_order() else {
        return vec![];
    };
    let mut groups: Vec<Vec<NodeId>> = vec![];
    let mut by_unit: BTreeMap<u32, usize> = BTreeMap::new();
    let mut composite_of: BTreeMap<NodeId, usize> = BTreeMap::new();
    let composites = crate::backend::composite::find_composites(g);
    let mut composite_group: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, c) in composites.iter().enumerate() {
        for &n in &c.nodes {
            composite_of.insert(n, i);
        }
    }
    for &n in &order {
        let node = g.node(n);
        if node.op().is_none() {
            continue;
        }
        if let Some(&c) = composite_of.get(&n) {
            match composite_group.get(&c) {
                Some(&i) => groups[i].push(n),
                None => {
                    composite_group.insert(c, groups.len());
                    groups.push(vec![n]);
                }
            }
            continue;
        }
        match &node.unit {
            Some(u) => match by_unit.get(&u.id) {
                Some(&i) => groups[i].push(n),
                None => {
                    by_unit.insert(u.id, groups.len());
                    groups.push(vec![n]);
                }
            },
            None => groups.push(vec![n]),
        }
    }
    let mut composite_type: BTreeMap<NodeId, &'static str> = BTreeMap::new();
    for c in &composites {
        composite_type.insert(c.nodes[0], c.op_type);
    }
    groups
        .into_iter()
        .filter(|nodes| !g.node(nodes[0]).name.is_empty())
        .map(|nodes| {
            let op = match composite_type.get(&nodes[0]) {
                Some(t) => format!("{t} (decomposed)"),
                None => nodes
                    .iter()
                    .map(|&n| g.node(n).op_type().to_string())
                    .collect::<Vec<_>>()
                    .join("+"),
            };
            Unit {
                name: g.node(nodes[0]).name.clone(),
                op,
            }
        })
        .collect()
}

impl Suite {
    /// Prepares every variant, calibrates once on `calib_data` and loads `eval_data`
    /// (and runs the float model on it). `labels`, when given, must have one entry per
    /// evaluation sample.
    pub fn new(
        model: Model,
        options: &QuantizeOptions,
        calib_data: &Path,
        eval_data: &Path,
        labels: Option<Vec<i64>>,
    ) -> Result<Suite> {
        let options = options.clone();
        let full = prepare_static(model.clone(), &options)?;
        if !full.observes_anything() {
            bail!("nothing to quantize: every node of the model stays float (see `onnxq quantize` for the reasons)");
        }
        let full_sig = signature(&full.model);
        // Candidates: the units insert-observers did not leave in float.
        let summary =
            crate::quantize::Summary::from_context(full.pipeline.clone(), &full.cx, None, vec![]);
        let candidates: Vec<Unit> = candidate_units(&full.model)
            .into_iter()
            .filter(|u| summary.float_reason(&u.name).is_none())
            .collect();
        // A unit counts when excluding it changes what is observed.
        let mut units = vec![];
        let mut variants: Vec<Prepared> = vec![];
        let pb = progress_bar(candidates.len() as u64 * 2, "preparing variants");
        for u in &candidates {
            pb.inc(1);
            let p = prepare_static(model.clone(), &with_exclusions(&options, [&u.name]))
                .with_context(|| format!("preparing the variant without `{}`", u.name))?;
            if signature(&p.model) != full_sig {
                units.push(u.clone());
                variants.push(p);
            }
        }
        if units.is_empty() {
            bail!("no quantizable unit found that `--exclude` could keep in float (are the nodes named?)");
        }
        for u in &units {
            pb.inc(1);
            let others = units.iter().filter(|o| o.name != u.name).map(|o| &o.name);
            let p = prepare_static(model.clone(), &with_exclusions(&options, others))
                .with_context(|| format!("preparing the variant with only `{}`", u.name))?;
            variants.push(p);
        }
        pb.finish_and_clear();
        // The superset of observed values (see the module documentation).
        let mut cal_model = full.model.clone();
        let mut extra = 0;
        for p in &variants {
            let vg = &p.model.graph;
            for v in vg.value_ids() {
                let Some(QuantAnnotation::Observe(cfg)) = &vg.value(v).quant else {
                    continue;
                };
                let name = &vg.value(v).name;
                let Some(fv) = cal_model.graph.value_by_name(name) else {
                    bail!("value `{name}` of a variant is not in the fully prepared model (the fusion differs between variants)");
                };
                if !matches!(
                    cal_model.graph.value(fv).quant,
                    Some(QuantAnnotation::Observe(_))
                ) {
                    cal_model.graph.value_mut(fv).quant =
                        Some(QuantAnnotation::Observe(cfg.clone()));
                    extra += 1;
                }
            }
        }
        drop(variants);
        let (table, stats) = crate::calib::calibrate(
            &cal_model,
            &full.pipeline,
            calib_data,
            options.calibration.clone(),
        )
        .with_context(|| format!("calibrating on {}", calib_data.display()))?;
        let eval = load_eval(&model, eval_data, labels)?;
        let mut suite = Suite {
            float: model,
            options,
            units,
            table,
            calibration_samples: stats.samples,
            eval,
            float_accuracy: None,
            extra_observed: extra,
            calibration_time: stats.elapsed,
        };
        // A unit whose observers all end up float at conversion (a mask whose calibrated
        // range is too wide for 8 bits) is not a real choice: drop it.
        let mut kept = vec![];
        for u in &suite.units {
            let others = suite
                .units
                .iter()
                .filter(|o| o.name != u.name)
                .map(|o| &o.name);
            let q = suite
                .quantize(others)
                .with_context(|| format!("converting the variant with only `{}`", u.name))?;
            if q.is_some_and(|q| q.summary.activations + q.summary.weights > 0) {
                kept.push(u.clone());
            }
        }
        if kept.is_empty() {
            bail!("nothing to quantize: no unit keeps an int8 value after conversion");
        }
        suite.units = kept;
        if suite.eval.labels.is_some() {
            let outs = suite.eval.reference.clone();
            suite.float_accuracy = suite.accuracy(&outs);
        }
        Ok(suite)
    }

    pub fn options(&self) -> &QuantizeOptions {
        &self.options
    }

    pub fn float_model(&self) -> &Model {
        &self.float
    }

    pub fn eval_samples(&self) -> usize {
        self.eval.samples
    }

    pub fn has_labels(&self) -> bool {
        self.eval.labels.is_some()
    }

    /// The model with `float_units` kept in float, converted with the shared table;
    /// `None` when nothing would be quantized.
    pub fn quantize<'a>(
        &self,
        float_units: impl IntoIterator<Item = &'a String>,
    ) -> Result<Option<Quantized>> {
        let opts = with_exclusions(&self.options, float_units);
        let p = prepare_static(self.float.clone(), &opts)?;
        if !p.observes_anything() {
            return Ok(None);
        }
        Ok(Some(convert_prepared(p, self.table.clone(), &opts)?))
    }

    /// Score of the model with `float_units` in float.
    pub fn evaluate<'a>(&self, float_units: impl IntoIterator<Item = &'a String>) -> Result<Score> {
        match self.quantize(float_units)? {
            None => Ok(Score {
                sqnr_db: f64::INFINITY,
                accuracy: self.float_accuracy,
            }),
            Some(q) => self.score(&q.model),
        }
    }

    /// Score of a quantized model on the evaluation set.
    pub fn score(&self, model: &Model) -> Result<Score> {
        let exec = Executor::new(model, ExecutorOptions::default())
            .context("planning the quantized variant in the executor")?;
        // Per output: a detector's weakest head (scores next to boxes of far larger
        // magnitude) must not hide behind the others' energy, so the score is the
        // worst output's SQNR.
        let mut sums: Vec<(f64, f64)> = vec![];
        let mut outs = Vec::with_capacity(self.eval.batches.len());
        for (b, batch) in self.eval.batches.iter().enumerate() {
            let inputs: Vec<(&str, &Tensor)> = self
                .eval
                .input_names
                .iter()
                .map(String::as_str)
                .zip(batch)
                .collect();
            let out = exec.run(&inputs).context("running the quantized variant")?;
            let mut row = Vec::with_capacity(out.len());
            for (k, (_, t)) in out.iter().enumerate() {
                let y = t.to_f32_vec();
                if let (Some(Some(x)), Some(y)) = (self.eval.reference[b].get(k), &y) {
                    if sums.len() <= k {
                        sums.resize(k + 1, (0.0, 0.0));
                    }
                    let (signal, noise) = &mut sums[k];
                    for (&a, &q) in x.iter().zip(y) {
                        let (a, q) = (a as f64, q as f64);
                        *signal += a * a;
                        *noise += (a - q) * (a - q);
                    }
                }
                row.push(y);
            }
            outs.push(row);
        }
        let sqnr_db = sums
            .iter()
            .filter(|(signal, _)| *signal > 0.0)
            .map(|&(signal, noise)| super::compare::sqnr_db(signal, noise))
            .fold(f64::INFINITY, f64::min);
        Ok(Score {
            sqnr_db,
            accuracy: self.accuracy(&outs),
        })
    }

    /// Top-1 accuracy of the first output against the labels.
    fn accuracy(&self, outs: &[Vec<Option<Vec<f32>>>]) -> Option<f64> {
        let labels = self.eval.labels.as_ref()?;
        let mut correct = 0usize;
        let mut i = 0usize;
        for (b, row) in outs.iter().enumerate() {
            let logits = row.first()?.as_ref()?;
            let n = self.eval.batches[b].first().map(|t| t.dims[0] as usize)?;
            let classes = logits.len() / n.max(1);
            for s in 0..n {
                let r = &logits[s * classes..(s + 1) * classes];
                let best = (0..classes).max_by(|&a, &c| r[a].total_cmp(&r[c]))?;
                if labels.get(i) == Some(&(best as i64)) {
                    correct += 1;
                }
                i += 1;
            }
        }
        Some(correct as f64 / labels.len().max(1) as f64)
    }

    /// The one-at-a-time analysis. `all_but` adds the "quantize all but this unit"
    /// evaluations (N more runs).
    pub fn sensitivity(&self, all_but: bool) -> Result<Sensitivity> {
        let n = self.units.len();
        let pb = progress_bar((n * (1 + all_but as usize) + 1) as u64, "sensitivity");
        let none: Vec<&String> = vec![];
        let int8 = self.evaluate(none)?;
        pb.inc(1);
        let mut rows = vec![];
        for u in &self.units {
            let others = self
                .units
                .iter()
                .filter(|o| o.name != u.name)
                .map(|o| &o.name);
            let only = self
                .evaluate(others)
                .with_context(|| format!("quantizing only `{}`", u.name))?;
            pb.inc(1);
            let but = if all_but {
                let s = self
                    .evaluate([&u.name])
                    .with_context(|| format!("quantizing all but `{}`", u.name))?;
                pb.inc(1);
                Some(s)
            } else {
                None
            };
            rows.push(SensitivityRow {
                rank: 0,
                node: u.name.clone(),
                op: u.op.clone(),
                only,
                all_but: but,
            });
        }
        pb.finish_and_clear();
        let labels = self.has_labels();
        rows.sort_by(|a, b| {
            let acc = |r: &SensitivityRow| r.only.accuracy.unwrap_or(0.0);
            let by_acc = if labels {
                acc(a).total_cmp(&acc(b))
            } else {
                std::cmp::Ordering::Equal
            };
            by_acc.then(a.only.sqnr_db.total_cmp(&b.only.sqnr_db))
        });
        for (i, r) in rows.iter_mut().enumerate() {
            r.rank = i + 1;
        }
        Ok(Sensitivity {
            calibration_samples: self.calibration_samples,
            eval_samples: self.eval.samples,
            float_accuracy: self.float_accuracy,
            int8,
            rows,
        })
    }

    /// The automatic fallback (see the module documentation).
    pub fn fallback(
        &self,
        ranking: &[String],
        target: Target,
        max_float: Option<usize>,
    ) -> Result<Fallback> {
        let n = ranking.len();
        let cap = max_float
            .unwrap_or(n.saturating_sub(1))
            .min(n.saturating_sub(1));
        let float_acc = self.float_accuracy;
        let met = |s: &Score| target.met(s, float_acc);
        let pb = progress_bar(n as u64, "fallback search");
        if n == 0 {
            bail!("no quantizable unit");
        }
        let mut tried = vec![];
        let mut found: Option<(usize, Score)> = None;
        // k = n (every unit float) is the float model, not a quantized one: not tried.
        for k in 0..n {
            let s = self.evaluate(&ranking[..k])?;
            pb.inc(1);
            tried.push((k, s));
            if met(&s) {
                found = Some((k, s));
                break;
            }
        }
        pb.finish_and_clear();
        let int8 = tried[0].1;
        // Best within the cap: the last tried k <= cap.
        let (k_best, _) = *tried
            .iter()
            .rev()
            .find(|(k, _)| *k <= cap)
            .expect("k = 0 is always tried");
        let needed = found.map(|(k, _)| k);
        let reached = matches!(needed, Some(k) if k <= cap);
        let mut float: Vec<String> =
            ranking[..if reached { needed.unwrap_or(0) } else { k_best }].to_vec();
        let mut pruned = vec![];
        if reached && float.len() > 1 {
            // Least sensitive first: the last ones added are the likeliest to be unneeded.
            for name in float.clone().iter().rev() {
                let without: Vec<String> = float.iter().filter(|f| *f != name).cloned().collect();
                let s = self.evaluate(&without)?;
                if met(&s) {
                    float = without;
                    pruned.push(name.clone());
                }
            }
        }
        let score = self.evaluate(&float)?;
        let would_need = match (reached, needed) {
            (false, Some(k)) => Some(ranking[..k].to_vec()),
            _ => None,
        };
        Ok(Fallback {
            target,
            int8,
            float_accuracy: float_acc,
            float_units: float,
            score,
            reached,
            cap,
            pruned,
            would_need,
            evaluations: tried.len(),
        })
    }
}

/// The options with more node exclusions.
fn with_exclusions<'a>(
    options: &QuantizeOptions,
    names: impl IntoIterator<Item = &'a String>,
) -> QuantizeOptions {
    let mut o = options.clone();
    for n in names {
        if !o.exclude.contains(n) {
            o.exclude.push(n.clone());
        }
    }
    o
}

/// Loads the evaluation data and runs the float model on it.
fn load_eval(model: &Model, path: &Path, labels: Option<Vec<i64>>) -> Result<EvalSet> {
    let inputs = model_inputs(model)?;
    let mut data = CalibrationData::open(path, &inputs)?;
    let exec = Executor::new(model, ExecutorOptions::default())
        .context("planning the float model in the executor")?;
    let mut batches = vec![];
    let mut reference = vec![];
    let mut samples = 0;
    while let Some(batch) = data.next_batch() {
        let batch = batch?;
        let named: Vec<(&str, &Tensor)> = inputs
            .iter()
            .map(|i| i.name.as_str())
            .zip(&batch.tensors)
            .collect();
        let out = exec
            .run(&named)
            .with_context(|| format!("running the float model on {}", path.display()))?;
        reference.push(out.iter().map(|(_, t)| t.to_f32_vec()).collect());
        samples += batch.samples;
        batches.push(batch.tensors);
    }
    if samples == 0 {
        bail!("{}: the evaluation data holds no sample", path.display());
    }
    if let Some(l) = &labels {
        if l.len() != samples {
            bail!(
                "labels: {} labels, but the evaluation data {} holds {} samples (one label per sample is needed)",
                l.len(),
                path.display(),
                samples
            );
        }
    }
    Ok(EvalSet {
        input_names: inputs.into_iter().map(|i| i.name).collect(),
        batches,
        reference,
        labels,
        samples,
    })
}

/// What the fallback must reach.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Output SQNR at least this many dB.
    SqnrDb(f64),
    /// Top-1 accuracy at most this many percentage points below float.
    MaxAccuracyDrop(f64),
}

impl Target {
    pub fn met(&self, s: &Score, float_accuracy: Option<f64>) -> bool {
        match *self {
            Target::SqnrDb(db) => s.sqnr_db >= db,
            Target::MaxAccuracyDrop(p) => match (s.accuracy, float_accuracy) {
                (Some(a), Some(f)) => (f - a) * 100.0 <= p + 1e-9,
                _ => false,
            },
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::SqnrDb(d) => write!(f, "output SQNR >= {d} dB"),
            Target::MaxAccuracyDrop(p) => write!(f, "top-1 accuracy drop <= {p} points"),
        }
    }
}

/// One unit's line of the analysis.
#[derive(Clone, Debug, Serialize)]
pub struct SensitivityRow {
    /// 1 = most sensitive.
    pub rank: usize,
    pub node: String,
    pub op: String,
    /// Only this unit quantized.
    pub only: Score,
    /// Every unit but this one quantized.
    pub all_but: Option<Score>,
}

/// The analysis result.
#[derive(Clone, Debug, Serialize)]
pub struct Sensitivity {
    pub calibration_samples: usize,
    pub eval_samples: usize,
    pub float_accuracy: Option<f64>,
    /// Every unit quantized.
    pub int8: Score,
    /// Most sensitive first.
    pub rows: Vec<SensitivityRow>,
}

fn db(x: f64) -> String {
    if x.is_infinite() && x > 0.0 {
        "inf".into()
    } else {
        format!("{x:.2}")
    }
}

fn pct(x: Option<f64>) -> String {
    x.map(|a| format!("{:.2}", a * 100.0)).unwrap_or_default()
}

impl Sensitivity {
    /// The ranking, most sensitive first (unit names).
    pub fn ranking(&self) -> Vec<String> {
        self.rows.iter().map(|r| r.node.clone()).collect()
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let labels = self.float_accuracy.is_some();
        let mut s = format!(
            "{} quantizable units; calibration {} samples, evaluation {} samples (native executor)\n",
            self.rows.len(),
            self.calibration_samples,
            self.eval_samples
        );
        s += &format!("all units int8: output SQNR {} dB", db(self.int8.sqnr_db));
        if labels {
            s += &format!(
                ", top-1 {} % (float {} %)",
                pct(self.int8.accuracy),
                pct(self.float_accuracy)
            );
        }
        s += "\nmost sensitive first (ranked by the 'only this unit int8' score)\n";
        let w = self
            .rows
            .iter()
            .map(|r| r.node.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let wo = self
            .rows
            .iter()
            .map(|r| r.op.len())
            .max()
            .unwrap_or(2)
            .max(2);
        s += &format!(
            "{:>4}  {:<w$}  {:<wo$}  {:>12}  {:>14}",
            "rank", "node", "op", "only SQNR dB", "all-but SQNR dB"
        );
        if labels {
            s += &format!("  {:>10}  {:>13}", "only top-1", "all-but top-1");
        }
        s += "\n";
        for r in &self.rows {
            s += &format!(
                "{:>4}  {:<w$}  {:<wo$}  {:>12}  {:>15}",
                r.rank,
                r.node,
                r.op,
                db(r.only.sqnr_db),
                r.all_but.map(|b| db(b.sqnr_db)).unwrap_or_default()
            );
            if labels {
                s += &format!(
                    "  {:>10}  {:>13}",
                    pct(r.only.accuracy),
                    pct(r.all_but.and_then(|b| b.accuracy))
                );
            }
            s += "\n";
        }
        s
    }
}

/// The fallback's result.
#[derive(Clone, Debug, Serialize)]
pub struct Fallback {
    pub target: Target,
    /// Every unit quantized.
    pub int8: Score,
    pub float_accuracy: Option<f64>,
    /// Units kept in float, most sensitive first.
    pub float_units: Vec<String>,
    /// The figures of the returned model.
    pub score: Score,
    pub reached: bool,
    /// The most units allowed in float.
    pub cap: usize,
    /// Units the pruning pass quantized again.
    pub pruned: Vec<String>,
    /// When not reached within the cap: the units it would need (if any number does).
    pub would_need: Option<Vec<String>>,
    /// Greedy evaluations run.
    pub evaluations: usize,
}

impl Fallback {
    fn figures(&self, s: &Score) -> String {
        let mut t = format!("output SQNR {} dB", db(s.sqnr_db));
        if let (Some(a), Some(f)) = (s.accuracy, self.float_accuracy) {
            t += &format!(
                ", top-1 {:.2} % ({:+.2} points vs float {:.2} %)",
                a * 100.0,
                (a - f) * 100.0,
                f * 100.0
            );
        }
        t
    }

    /// What `quantize` prints about the fallback.
    pub fn text(&self) -> String {
        let mut s = format!("target: {}\n", self.target);
        s += &format!("  all units int8: {}\n", self.figures(&self.int8));
        if self.float_units.is_empty() && self.reached {
            s += "  met with every unit int8: nothing kept in float\n";
        } else if self.float_units.is_empty() {
            s += "  kept in float: none\n";
        } else {
            s += &format!(
                "  kept in float ({}): {}\n",
                self.float_units.len(),
                self.float_units.join(", ")
            );
        }
        if !self.pruned.is_empty() {
            s += &format!(
                "  quantized again by the pruning pass: {}\n",
                self.pruned.join(", ")
            );
        }
        s += &format!("  result: {}\n", self.figures(&self.score));
        if !self.reached {
            s += &format!(
                "  TARGET NOT REACHED with at most {} unit(s) in float (best above).\n",
                self.cap
            );
            match &self.would_need {
                Some(n) => s += &format!(
                    "  it would need {} unit(s) in float: {}\n  (raise --max-float to {} to accept that)\n",
                    n.len(),
                    n.join(", "),
                    n.len()
                ),
                None => s += "  no set of units short of the all-float model reaches it\n",
            }
        }
        s
    }

    /// The QConfigMapping that reproduces this result: `base` plus a `None` entry per
    /// float unit.
    pub fn qconfig(&self, base: &crate::qconfig::QConfigMapping) -> crate::qconfig::QConfigMapping {
        let mut m = base.clone();
        for u in &self.float_units {
            m.set_name(u, None);
        }
        m
    }
}
