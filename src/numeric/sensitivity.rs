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
//! 1. Rank the units as above (one calibration, N "only *i*" evaluations), or, for
//!    models where that is too slow, on fewer samples or by the one-pass local analysis
//!    ([`Suite::rank`], [`Suite::local_sensitivity`]); no ranking at all when every unit
//!    int8 already meets the target.
//! 2. Search: the shortest prefix of the ranking kept in float that meets the target,
//!    by doubling (k = 0, 1, 2, 4, ...) then bisection.
//! 3. Prune: try to quantize again each unit of that set, least sensitive first; a unit
//!    goes back to int8 if the target still holds without it. The result is a set in
//!    which every float unit is needed (no single one can be quantized again), unless
//!    evaluations are slow: then only the 8 least sensitive are tried.
//!
//! The search may run on a subset of the evaluation samples
//! ([`Suite::set_search_samples`]); the returned figures are always a full evaluation
//! on all of them, and if those miss the target the search runs again on all of them.
//!
//! If the target is not met with `max_float` units in float (default: all units but
//! one, i.e. a model with at least one int8 unit), the search goes on without the cap
//! to say how many units, and which, it would need, and the best model within the cap
//! is returned with `reached = false`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::compare::{sqnr_lower_bound, worst_sqnr_db, SqnrEstimate};
use crate::calib::{model_inputs, CalibrationData, CalibrationTable};
use crate::executor::{Executor, ExecutorOptions, Work};
use crate::ir::{Model, NodeId, QuantAnnotation, Tensor, ValueId};
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
    /// Samples per batch.
    batch_samples: Vec<usize>,
    /// Wall time of the float model's pass over the whole set (for the log).
    float_time: std::time::Duration,
    /// That pass's work in nominal seconds ([`Work::nominal_seconds`]): what the budgets
    /// read, so that the same command makes the same choices on any machine and load.
    float_cost: f64,
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
    /// Worker threads of the evaluations (batches run in parallel).
    threads: usize,
    /// Batches (from the first) the ranking and the fallback search run on; the
    /// fallback's result is always evaluated on all of them.
    search_batches: usize,
    /// The fully prepared float graph (fused, BatchNorm folded): the local analysis'
    /// reference, whose value names the quantized variants keep.
    prepared: Model,
    /// Output value names of each unit.
    unit_outputs: BTreeMap<String, Vec<String>>,
    /// Units the calibration-time noise rules ([`crate::backend::noise`]) keep float in
    /// every variant, with the reason; not candidates of the ranking.
    pub ruled: BTreeMap<String, String>,
    /// Units a variant keeps float keep int8 weights (weight-only), as the noise rules'
    /// do: the fallback's choice ([`Suite::set_weight_only_fallback`]). Off, a float unit
    /// is fully float (what `onnxq sensitivity` measures).
    weight_only_fallback: bool,
    /// With `weight_only_fallback` on: float units (and noise-rule units) whose weights
    /// stay float too, what [`Suite::restore_int8_weights`] narrows down.
    float_weights: std::collections::BTreeSet<String>,
    /// The float weights of float units (fully float ones, or `float_weights` units) are
    /// stored as float16 (the `store-weights-fp16` pass): the fallback search's setting
    /// ([`Suite::set_float16_weights`]) or [`Suite::restore_int8_weights`]'s choice.
    fp16_weights: bool,
}

/// Why the fallback keeps a unit float, in the summary.
pub const FALLBACK_REASON: &str =
    "kept float by the accuracy fallback (output SQNR target); weights stay int8";

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
    let mut sig = BTreeMap::new();
    crate::ir::rewrite::visit_graphs(&m.graph, &mut |g| {
        sig.extend(g.value_ids().filter_map(|v| {
            let kind = match g.value(v).quant.as_ref()? {
                QuantAnnotation::Observe(_) => "observe",
                QuantAnnotation::Weight { .. } => "weight",
                QuantAnnotation::Fixed { .. } => "fixed",
                QuantAnnotation::ShareWith(_) => "share",
            };
            Some((g.value(v).name.clone(), kind))
        }));
    });
    sig
}

/// Candidate units of a prepared graph, with their output value names, in graph order: fused units, decomposed
/// composites, lone ops; each with a node name (unnamed nodes cannot be excluded by
/// name and are skipped).
fn candidate_units(m: &Model) -> Vec<(Unit, Vec<String>)> {
    let mut out = vec![];
    graph_units(&m.graph, &mut out);
    out
}

/// [`candidate_units`] of `g`, then of the branches of its If nodes (which
/// insert-observers quantizes too; node names are unique across the model).
fn graph_units(g: &crate::ir::Graph, out: &mut Vec<(Unit, Vec<String>)>) {
    out.extend(units_of_graph(g));
    for n in g.node_ids() {
        if g.node(n).is_op("If") {
            for a in g.node(n).op().expect("an op").attrs.values() {
                for sg in a.subgraphs() {
                    graph_units(sg, out);
                }
            }
        }
    }
}

fn units_of_graph(g: &crate::ir::Graph) -> Vec<(Unit, Vec<String>)> {
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
            // The unit's outputs: values of its nodes read outside it (or graph outputs).
            let mut outputs = vec![];
            for &n in &nodes {
                for v in g.node(n).outputs.iter().flatten() {
                    let outside = g.is_graph_output(*v)
                        || g.consumers(*v).iter().any(|(c, _)| !nodes.contains(c));
                    if outside {
                        outputs.push(g.value(*v).name.clone());
                    }
                }
            }
            (
                Unit {
                    name: g.node(nodes[0]).name.clone(),
                    op,
                },
                outputs,
            )
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
        let t0 = std::time::Instant::now();
        // Every variant starts from the smoothed model, as `quantize` does.
        let mut model = model;
        if let Some(alpha) = options.smooth_quant {
            crate::quantize::smooth_quant(&mut model, calib_data, alpha, &options.calibration)
                .context("smoothing the MatMul inputs (--smooth-quant)")?;
        }
        let full = prepare_static(model.clone(), &options)?;
        if !full.observes_anything() {
            bail!("nothing to quantize: every node of the model stays float (see `onnxq quantize` for the reasons)");
        }
        let full_sig = signature(&full.model);
        // Candidates: the units insert-observers did not leave in float.
        let summary =
            crate::quantize::Summary::from_context(full.pipeline.clone(), &full.cx, None, vec![]);
        let (candidates, outputs): (Vec<Unit>, Vec<Vec<String>>) = candidate_units(&full.model)
            .into_iter()
            .filter(|(u, _)| summary.float_reason(&u.name).is_none())
            .unzip();
        let unit_outputs: BTreeMap<String, Vec<String>> = candidates
            .iter()
            .map(|u| u.name.clone())
            .zip(outputs)
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
            extra += merge_observed(&mut cal_model, &p.model)?;
        }
        drop(variants);
        log::info!(
            "suite: variants prepared in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let (table, stats) = crate::calib::calibrate(
            &cal_model,
            &full.pipeline,
            calib_data,
            options.calibration.clone(),
        )
        .with_context(|| format!("calibrating on {}", calib_data.display()))?;
        log::info!("suite: calibrated at {:.1} s", t0.elapsed().as_secs_f64());
        let threads = options.calibration.threads.max(1);
        let eval = load_eval(&model, eval_data, labels, threads, 1)?;
        log::info!(
            "suite: float reference at {:.1} s ({:.2} s wall; {:.2} s nominal)",
            t0.elapsed().as_secs_f64(),
            eval.float_time.as_secs_f64(),
            eval.float_cost
        );
        let search_batches = eval.batches.len();
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
            threads,
            search_batches,
            prepared: full.model,
            unit_outputs,
            ruled: BTreeMap::new(),
            weight_only_fallback: false,
            float_weights: Default::default(),
            fp16_weights: false,
        };
        if suite.options.noise_rule {
            suite.apply_noise_rules(&cal_model, calib_data)?;
        }
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
        suite.float_accuracy = suite.float_accuracy_on(suite.eval.batches.len());
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
        let opts = self.variant_options(float_units);
        let p = prepare_static(self.float.clone(), &opts)?;
        if !p.observes_anything() {
            return Ok(None);
        }
        let mut table = self.table.clone();
        if !opts.float_units.is_empty() {
            // Weight-only units keep all 8 bits: their weight entries are this
            // preparation's, not the shared table's.
            p.refresh_weight_entries(&mut table)
                .context("observing the weights of the variant")?;
        }
        Ok(Some(convert_prepared(p, table, &opts)?))
    }

    /// The options of the variant keeping `float_units` and the noise rules' units
    /// float: fully (excluded), or weight-only with [`Suite::set_weight_only_fallback`].
    fn variant_options<'a>(
        &self,
        float_units: impl IntoIterator<Item = &'a String>,
    ) -> QuantizeOptions {
        let mut opts = self.options.clone();
        if self.weight_only_fallback {
            // Weight-only, except the units whose weights stay float too: excluded.
            let ruled = self.ruled.iter().map(|(u, why)| (u, why.as_str()));
            let searched = float_units.into_iter().map(|u| (u, FALLBACK_REASON));
            let mut full: Vec<String> = vec![];
            opts.float_units = BTreeMap::new();
            for (u, why) in ruled.chain(searched) {
                if self.float_weights.contains(u) {
                    full.push(u.clone());
                } else {
                    opts.float_units
                        .entry(u.clone())
                        .or_insert_with(|| why.to_string());
                }
            }
            if self.fp16_weights {
                opts.float16_weights.extend(full.iter().cloned());
            }
            with_exclusions(&opts, &full)
        } else {
            // Fully float: the noise rules' units too.
            let names: Vec<String> = self
                .ruled
                .keys()
                .cloned()
                .chain(float_units.into_iter().cloned())
                .collect();
            if self.fp16_weights {
                opts.float16_weights.extend(names.iter().cloned());
            }
            with_exclusions(&opts, &names)
        }
    }

    /// Units the fallback keeps float keep int8 weights (see the field's documentation).
    pub fn set_weight_only_fallback(&mut self, on: bool) {
        self.weight_only_fallback = on;
        self.float_weights.clear();
        self.fp16_weights = false;
    }

    /// The float weights of the units a variant keeps float are stored as float16 (the
    /// `store-weights-fp16` pass; a weight it refuses stays float32): for a fallback search
    /// whose float units should cost half their float32 size. Off by default, so that
    /// `onnxq sensitivity` measures fully float units.
    pub fn set_float16_weights(&mut self, on: bool) {
        self.fp16_weights = on;
    }

    /// After a search with fully float units met the target (weight-only fallback off):
    /// gives int8 weights back to the float units (noise-rule units included) whose float
    /// weights the target does not need, largest weights first, one evaluation each on
    /// the whole evaluation set (at most [`PRUNE_MAX_EVALS`] when an evaluation costs
    /// over a nominal second). The units stay float as activations; the suite then converts
    /// with the mix ([`Suite::quantize`]), and `fb` says which units keep float weights.
    pub fn restore_int8_weights(&mut self, fb: &mut Fallback) -> Result<()> {
        if self.weight_only_fallback || !fb.reached {
            return Ok(());
        }
        let all: Vec<String> = fb
            .float_units
            .iter()
            .chain(&fb.ruled_float)
            .cloned()
            .collect();
        let mut candidates: Vec<(usize, String)> = all
            .iter()
            .map(|u| (unit_weight_elements(&self.prepared, u), u.clone()))
            .filter(|(n, _)| *n > 0)
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        // Start from the model the search returned (every unit fully float, so that its
        // figures still hold), then try the units with weights.
        self.weight_only_fallback = true;
        self.float_weights = all.iter().cloned().collect();
        let batches = self.eval.batches.len();
        // Float16 storage first (half of every float weight, where int8 weights back save
        // 3/4 of a few): kept when the target is still met with it, then the int8 weights
        // are tried on top of it. The search's result sits just above the target, so
        // trying it last would leave it no margin. A search run with float16 weights
        // ([`Suite::set_float16_weights`]) already met the target with them.
        if self.fp16_weights {
            fb.weights_fp16 = true;
        } else {
            self.fp16_weights = true;
            let (s, met) = self.try_variant(fb, batches, "float weights as float16")?;
            if met {
                fb.score = s;
                fb.weights_fp16 = true;
            } else {
                self.fp16_weights = false;
            }
        }
        let cap = self.evaluation_cap(batches);
        let pb = progress_bar(candidates.len() as u64, "int8 weights back");
        let mut restored = vec![];
        let mut untried = 0;
        for (i, (_, u)) in candidates.iter().enumerate() {
            if i == cap {
                untried = candidates.len() - i;
                break;
            }
            self.float_weights.remove(u);
            let (s, met) = self.try_variant(fb, batches, &format!("int8 weights back for {u}"))?;
            pb.set_position(i as u64 + 1);
            if met {
                restored.push(u.clone());
                fb.score = s;
            } else {
                self.float_weights.insert(u.clone());
            }
        }
        pb.finish_and_clear();
        fb.float_weights = Some(self.float_weights.iter().cloned().collect());
        fb.weights_needed = candidates
            .iter()
            .filter(|(_, u)| self.float_weights.contains(u))
            .map(|(_, u)| u.clone())
            .collect();
        fb.weights_restored = restored;
        fb.weights_untried = untried;
        Ok(())
    }

    /// One evaluation of `fb`'s float units as the suite now converts them, on the first
    /// `batches`: its score and whether it meets the target (logged as `what`).
    fn try_variant(&self, fb: &mut Fallback, batches: usize, what: &str) -> Result<(Score, bool)> {
        let s = self.evaluate_on(&fb.float_units, batches)?;
        fb.evaluations += 1;
        let met = fb.target.met(&s, self.float_accuracy);
        let verdict = if met { "kept" } else { "missed" };
        log::info!("{what}: {} dB ({verdict})", s.sqnr_db);
        Ok((s, met))
    }

    /// The calibration-time noise rules, applied once on the shared table: their units
    /// leave the candidates and stay float (weight-only) in every variant. When keeping
    /// them float exposes a value no variant observed, the calibration runs again with it.
    fn apply_noise_rules(&mut self, cal_model: &Model, calib_data: &Path) -> Result<()> {
        let ruled =
            crate::backend::noise::noisy_units_with_branches(&self.prepared.graph, &self.table);
        if ruled.is_empty() {
            return Ok(());
        }
        let mut opts = self.options.clone();
        opts.float_units = ruled.clone();
        let p = prepare_static(self.float.clone(), &opts)?;
        let mut cal_model = cal_model.clone();
        let missing = merge_observed(&mut cal_model, &p.model)?;
        if missing > 0 {
            log::info!("suite: the noise rules expose {missing} value(s): calibrating again");
            let (table, stats) = crate::calib::calibrate(
                &cal_model,
                &p.pipeline,
                calib_data,
                self.options.calibration.clone(),
            )
            .with_context(|| format!("calibrating on {}", calib_data.display()))?;
            self.table = table;
            self.calibration_time += stats.elapsed;
            self.extra_observed += missing;
        }
        self.units.retain(|u| !ruled.contains_key(&u.name));
        self.ruled = ruled;
        Ok(())
    }

    /// Score of the model with `float_units` in float, on the whole evaluation set.
    pub fn evaluate<'a>(&self, float_units: impl IntoIterator<Item = &'a String>) -> Result<Score> {
        self.evaluate_on(float_units, self.eval.batches.len())
    }

    /// [`Suite::evaluate`] on the first `batches` batches.
    fn evaluate_on<'a>(
        &self,
        float_units: impl IntoIterator<Item = &'a String>,
        batches: usize,
    ) -> Result<Score> {
        self.evaluate_with(float_units, batches, self.threads)
    }

    /// [`Suite::evaluate_on`] with at most `threads` threads.
    fn evaluate_with<'a>(
        &self,
        float_units: impl IntoIterator<Item = &'a String>,
        batches: usize,
        threads: usize,
    ) -> Result<Score> {
        match self.quantize(float_units)? {
            None => Ok(Score {
                sqnr_db: f64::INFINITY,
                accuracy: self.float_accuracy_on(batches),
            }),
            Some(q) => self.score_with(&q.model, batches, threads),
        }
    }

    /// Samples the ranking and the fallback search run on: the first batches holding at
    /// least `n` samples (all of them for `None` or `n` ≥ the set). The fallback's result
    /// is still evaluated on the whole set. Returns the samples actually used.
    pub fn set_search_samples(&mut self, n: Option<usize>) -> usize {
        let mut batches = self.eval.batches.len();
        if let Some(n) = n {
            let mut acc = 0;
            for (b, &k) in self.eval.batch_samples.iter().enumerate() {
                acc += k;
                if acc >= n.max(1) {
                    batches = b + 1;
                    break;
                }
            }
        }
        self.search_batches = batches;
        self.search_samples()
    }

    /// The default of `--sensitivity-samples`: all (`None`) unless the float model's pass
    /// over the evaluation data costs more than [`AUTO_SEARCH_PASS`] (nominal seconds,
    /// [`Work::nominal_seconds`]); then as many samples as fit in that time, at least 4.
    pub fn auto_search_samples(&self) -> Option<usize> {
        let t = self.eval.float_cost;
        let limit = AUTO_SEARCH_PASS.as_secs_f64();
        if t <= limit {
            return None;
        }
        let n = (self.eval.samples as f64 * limit / t).floor() as usize;
        Some(n.max(4).min(self.eval.samples))
    }

    /// Estimated nominal seconds of one evaluation on the first `batches` batches (the
    /// float model's pass over them).
    fn eval_cost(&self, batches: usize) -> f64 {
        let n: usize = self.eval.batch_samples[..batches.min(self.eval.batches.len())]
            .iter()
            .sum();
        self.eval.float_cost * n as f64 / self.eval.samples.max(1) as f64
    }

    /// How many one-by-one evaluations on the first `batches` batches the pruning steps
    /// may spend: unbounded while one costs at most a nominal second, else
    /// [`PRUNE_MAX_EVALS`].
    fn evaluation_cap(&self, batches: usize) -> usize {
        if self.eval_cost(batches) <= 1.0 {
            usize::MAX
        } else {
            PRUNE_MAX_EVALS
        }
    }

    /// Samples of the batches the ranking and the search run on.
    pub fn search_samples(&self) -> usize {
        self.eval.batch_samples[..self.search_batches].iter().sum()
    }

    /// The cost of one pass of the float model over the whole evaluation set (the
    /// reference outputs, computed once), in nominal seconds ([`Work::nominal_seconds`]).
    pub fn float_eval_cost(&self) -> f64 {
        self.eval.float_cost
    }

    /// Score of a quantized model on the whole evaluation set.
    pub fn score(&self, model: &Model) -> Result<Score> {
        self.score_on(model, self.eval.batches.len())
    }

    /// Score of a quantized model on the first `batches` batches of the evaluation set.
    /// Batches run in parallel (`threads` workers); the sums are added in batch order,
    /// so the figure does not depend on the number of threads.
    fn score_on(&self, model: &Model, batches: usize) -> Result<Score> {
        self.score_with(model, batches, self.threads)
    }

    /// [`Suite::score_on`] with at most `threads` threads.
    fn score_with(&self, model: &Model, batches: usize, threads: usize) -> Result<Score> {
        let (sums, firsts): (Vec<_>, Vec<_>) = score_eval(&self.eval, model, batches, threads)?
            .into_iter()
            .map(|b| (b.sums, b.first))
            .unzip();
        // Per output: a detector's weakest head (scores next to boxes of far larger
        // magnitude) must not hide behind the others' energy, so the score is the
        // worst output's SQNR.
        Ok(Score {
            sqnr_db: worst_sqnr_db(&total_sums(&sums)),
            accuracy: self.accuracy(&firsts),
        })
    }

    /// Top-1 accuracy of the first output (one entry per batch, from the first batch on)
    /// against the labels of those batches' samples.
    fn accuracy(&self, firsts: &[Option<Vec<f32>>]) -> Option<f64> {
        let labels = self.eval.labels.as_ref()?;
        let mut correct = 0usize;
        let mut i = 0usize;
        for (b, logits) in firsts.iter().enumerate() {
            let logits = logits.as_ref()?;
            let n = self.eval.batch_samples[b];
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
        Some(correct as f64 / i.max(1) as f64)
    }

    /// The one-at-a-time analysis. `all_but` adds the "quantize all but this unit"
    /// evaluations (N more runs).
    pub fn sensitivity(&self, all_but: bool) -> Result<Sensitivity> {
        self.sensitivity_on(all_but, self.search_batches)
    }

    /// [`Suite::sensitivity`] on the first `nb` batches.
    fn sensitivity_on(&self, all_but: bool, nb: usize) -> Result<Sensitivity> {
        let nb = nb.clamp(1, self.eval.batches.len());
        let n = self.units.len();
        let pb = progress_bar((n * (1 + all_but as usize) + 1) as u64, "sensitivity");
        let none: Vec<&String> = vec![];
        let int8 = self.evaluate_on(none, nb)?;
        pb.inc(1);
        // The variants run in parallel (one thread each), in unit order.
        let threads_each = if n >= self.threads { 1 } else { self.threads };
        let done = std::sync::atomic::AtomicUsize::new(0);
        let per_unit = parallel_map(n, self.threads, |i| -> Result<SensitivityRow> {
            let u = &self.units[i];
            let others = self
                .units
                .iter()
                .filter(|o| o.name != u.name)
                .map(|o| &o.name);
            let only = self
                .evaluate_with(others, nb, threads_each)
                .with_context(|| format!("quantizing only `{}`", u.name))?;
            pb.inc(1);
            let but = if all_but {
                let s = self
                    .evaluate_with([&u.name], nb, threads_each)
                    .with_context(|| format!("quantizing all but `{}`", u.name))?;
                pb.inc(1);
                Some(s)
            } else {
                None
            };
            let k = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            log::info!("sensitivity: {k}/{n} `{}`: {} dB", u.name, only.sqnr_db);
            Ok(SensitivityRow {
                rank: 0,
                node: u.name.clone(),
                op: u.op.clone(),
                only: Some(only),
                all_but: but,
                local_sqnr_db: None,
            })
        });
        let mut rows = per_unit.into_iter().collect::<Result<Vec<_>>>()?;
        pb.finish_and_clear();
        let labels = self.has_labels();
        rows.sort_by(|a, b| {
            let acc = |r: &SensitivityRow| r.only.and_then(|o| o.accuracy).unwrap_or(0.0);
            let by_acc = if labels {
                acc(a).total_cmp(&acc(b))
            } else {
                std::cmp::Ordering::Equal
            };
            let db = |r: &SensitivityRow| r.only.map_or(f64::INFINITY, |o| o.sqnr_db);
            by_acc.then(db(a).total_cmp(&db(b)))
        });
        for (i, r) in rows.iter_mut().enumerate() {
            r.rank = i + 1;
        }
        Ok(Sensitivity {
            ranking: Ranking::Full,
            calibration_samples: self.calibration_samples,
            eval_samples: self.search_samples(),
            float_accuracy: self.float_accuracy_on(nb),
            int8,
            rows,
        })
    }

    /// The local analysis: one pass instead of one evaluation per unit. The fully int8
    /// model is rewired so that every unit reads the float model's values (quantized with
    /// the unit's input qparams) instead of its int8 predecessors' results, and its
    /// outputs (with their output quantization) are compared with the float model's: each
    /// unit's own error, free of what came before. Cost: per sample one run of the float
    /// model (keeping the values the units read) and one of the rewired int8 model.
    /// Ranked by that SQNR, lowest first (its worst output counting). It ignores how
    /// the error then propagates to the outputs, which the full ranking measures.
    pub fn local_sensitivity(&self) -> Result<Sensitivity> {
        let nb = self.search_batches;
        let none: Vec<&String> = vec![];
        let q = self
            .quantize(none)?
            .context("nothing to quantize with every unit int8")?;
        let int8 = self.score_on(&q.model, nb)?;
        let local = local_errors(
            &self.prepared,
            &q.model,
            &self.units,
            &self.unit_outputs,
            &self.eval,
            nb,
            self.threads,
        )?;
        let mut rows: Vec<SensitivityRow> = self
            .units
            .iter()
            .zip(local)
            .map(|(u, db)| SensitivityRow {
                rank: 0,
                node: u.name.clone(),
                op: u.op.clone(),
                only: None,
                all_but: None,
                local_sqnr_db: Some(db),
            })
            .collect();
        // Stable: units without a measurable output (+inf) keep the graph order, last.
        rows.sort_by(|a, b| {
            let db = |r: &SensitivityRow| r.local_sqnr_db.unwrap_or(f64::INFINITY);
            db(a).total_cmp(&db(b))
        });
        for (i, r) in rows.iter_mut().enumerate() {
            r.rank = i + 1;
        }
        Ok(Sensitivity {
            ranking: Ranking::Local,
            calibration_samples: self.calibration_samples,
            eval_samples: self.search_samples(),
            float_accuracy: self.float_accuracy_on(nb),
            int8,
            rows,
        })
    }

    /// The ranking `choice` asks for. `Auto` takes the full one on the search samples
    /// when its cost (one evaluation per unit, the float model's pass in nominal seconds)
    /// stays under `budget`; else the full one on as many of the first search samples
    /// as fit in the budget (at least 1); else, when even one sample does not fit, the
    /// local one. Returns the analysis and, for `Auto` when it did not take the full
    /// ranking on the search samples, what it did instead and why.
    pub fn rank(
        &self,
        choice: RankingChoice,
        all_but: bool,
        budget: std::time::Duration,
    ) -> Result<(Sensitivity, Option<String>)> {
        match choice {
            RankingChoice::Full => Ok((self.sensitivity(all_but)?, None)),
            RankingChoice::Local => Ok((self.local_sensitivity()?, None)),
            RankingChoice::Auto => {
                // Per sample, in nominal single-thread seconds.
                let per_sample = self.eval.float_cost / self.eval.samples.max(1) as f64;
                let runs = (self.units.len() * (1 + all_but as usize) + 1) as f64;
                let cost = |b: usize| {
                    runs * per_sample * self.eval.batch_samples[..b].iter().sum::<usize>() as f64
                };
                let fits = (1..=self.search_batches)
                    .rev()
                    .find(|&b| cost(b) <= budget.as_secs_f64());
                match fits {
                    Some(b) if b == self.search_batches => Ok((self.sensitivity(all_but)?, None)),
                    Some(b) => {
                        let why = format!(
                            "ranking: full, on the first {} of {} search samples (~{:.0} nominal s for {} units; budget {} s; --ranking full uses all)",
                            self.eval.batch_samples[..b].iter().sum::<usize>(),
                            self.search_samples(),
                            cost(b),
                            self.units.len(),
                            budget.as_secs()
                        );
                        Ok((self.sensitivity_on(all_but, b)?, Some(why)))
                    }
                    None => {
                        let why = format!(
                            "ranking: local (one pass): a full ranking of {} units would cost ~{:.0} nominal s even on {} sample(s) (budget {} s; --ranking full forces it)",
                            self.units.len(),
                            cost(1),
                            self.eval.batch_samples[0],
                            budget.as_secs()
                        );
                        Ok((self.local_sensitivity()?, Some(why)))
                    }
                }
            }
        }
    }

    /// Whether the model with every unit int8 meets `target` on the search samples (then
    /// the fallback needs no ranking).
    pub fn all_int8_meets(&self, target: Target) -> Result<bool> {
        let none: Vec<&String> = vec![];
        let s = self.evaluate_on(none, self.search_batches)?;
        Ok(target.met(&s, self.float_accuracy_on(self.search_batches)))
    }

    /// The float model's top-1 accuracy on the first `batches` batches.
    fn float_accuracy_on(&self, batches: usize) -> Option<f64> {
        self.eval.labels.as_ref()?;
        let firsts: Vec<Option<Vec<f32>>> = self.eval.reference[..batches]
            .iter()
            .map(|r| r.first().cloned().flatten())
            .collect();
        self.accuracy(&firsts)
    }

    /// The automatic fallback (see the module documentation). The search runs on the
    /// search samples ([`Suite::set_search_samples`]); the returned model's figures are a
    /// full evaluation on the whole set, and when the search ran on a subset and the
    /// whole set misses the target, the search goes on on the whole set.
    pub fn fallback(
        &self,
        ranking: &[String],
        target: Target,
        max_float: Option<usize>,
    ) -> Result<Fallback> {
        let n = ranking.len();
        if n == 0 {
            bail!("no quantizable unit");
        }
        let all = self.eval.batches.len();
        let sub = self.search_batches;
        let mut fb = self.search(ranking, target, max_float, sub, 0)?;
        if sub < all {
            // The claim is made on the whole set: evaluate the result there.
            let met_sub = fb.reached;
            fb.score = self.evaluate(&fb.float_units)?;
            fb.int8 = self.evaluate_on(ranking[..0].iter(), all)?;
            fb.float_accuracy = self.float_accuracy;
            fb.evaluations += 2;
            if met_sub && !target.met(&fb.score, self.float_accuracy) {
                // The subset was optimistic: search again on the whole set, from the
                // prefix the subset needed on.
                let start = ranking
                    .iter()
                    .rposition(|u| fb.float_units.contains(u))
                    .map_or(0, |i| i + 1);
                let evaluations = fb.evaluations;
                fb = self.search(ranking, target, max_float, all, start)?;
                fb.evaluations += evaluations;
                fb.verified_on_subset_failed = true;
            }
        }
        fb.search_samples = self.search_samples();
        fb.eval_samples = self.eval.samples;
        Ok(fb)
    }

    /// The search of [`Suite::fallback`] on the first `batches` batches: the smallest
    /// prefix of the ranking that meets the target, found by doubling then bisection
    /// from prefix length `start` (prefix lengths below it are taken as failing), then
    /// pruned.
    fn search(
        &self,
        ranking: &[String],
        target: Target,
        max_float: Option<usize>,
        batches: usize,
        start: usize,
    ) -> Result<Fallback> {
        let n = ranking.len();
        let cap = max_float
            .unwrap_or(n.saturating_sub(1))
            .min(n.saturating_sub(1));
        let float_acc = self.float_accuracy_on(batches);
        let met = |s: &Score| target.met(s, float_acc);
        let pb = progress_bar(n as u64, "fallback search");
        let mut tried: BTreeMap<usize, Score> = BTreeMap::new();
        let mut eval = |k: usize| -> Result<Score> {
            if let Some(s) = tried.get(&k) {
                return Ok(*s);
            }
            let s = self.evaluate_on(&ranking[..k], batches)?;
            log::info!(
                "fallback: {k} unit(s) in float: {} dB on {batches} batch(es)",
                s.sqnr_db
            );
            pb.set_position(k as u64);
            tried.insert(k, s);
            Ok(s)
        };
        // k = n (every unit float) is the float model, not a quantized one: not tried.
        // Doubling: start, start+1, start+2, start+4, ... (and n-1 last), then bisection
        // between the last failing and the first meeting prefix length.
        let start = start.min(n - 1);
        let int8 = eval(0)?;
        let mut lo: Option<usize> = None; // longest prefix known to fail
        let mut hi: Option<(usize, Score)> = None; // shortest prefix known to meet
        let mut step = 0usize;
        loop {
            let k = (start + step).min(n - 1);
            let s = eval(k)?;
            if met(&s) {
                hi = Some((k, s));
                break;
            }
            lo = Some(k);
            if k == n - 1 {
                break;
            }
            step = if step == 0 { 1 } else { step * 2 };
        }
        if let Some((mut h, mut hs)) = hi {
            // Nothing failed yet: the first prefix tried met, and the shorter ones are
            // taken as failing.
            let mut l = lo.unwrap_or(h.saturating_sub(1));
            while h > l + 1 {
                let m = l + (h - l) / 2;
                let s = eval(m)?;
                if met(&s) {
                    (h, hs) = (m, s);
                } else {
                    l = m;
                }
            }
            hi = Some((h, hs));
        }
        let needed = hi.map(|(k, _)| k);
        let reached = matches!(needed, Some(k) if k <= cap);
        let mut float: Vec<String> = if reached {
            ranking[..needed.unwrap_or(0)].to_vec()
        } else {
            // Best within the cap among the prefixes tried (evaluating the cap itself).
            eval(cap)?;
            let by = |s: &Score| match (target, s.accuracy) {
                (Target::MaxAccuracyDrop(_), Some(a)) => (a, s.sqnr_db),
                _ => (0.0, s.sqnr_db),
            };
            let (k, _) = tried
                .iter()
                .filter(|(k, _)| **k <= cap)
                .max_by(|a, b| {
                    let (x, y) = (by(a.1), by(b.1));
                    x.0.total_cmp(&y.0).then(x.1.total_cmp(&y.1))
                })
                .expect("k = 0 is always tried");
            ranking[..*k].to_vec()
        };
        let evaluations = tried.len();
        pb.finish_and_clear();
        let mut pruned = vec![];
        let mut unpruned = 0;
        if reached && float.len() > 1 {
            // Least sensitive first: the last ones added are the likeliest to be unneeded.
            // One by one; bounded when an evaluation is slow (the bisection already gave
            // the shortest prefix, so the units worth trying are its last ones).
            let cap = self.evaluation_cap(batches);
            let mut stack: Vec<Vec<String>> = float.iter().map(|c| vec![c.clone()]).collect();
            let mut runs = 0;
            while let Some(group) = stack.pop() {
                if runs == cap {
                    // Bounded: what is left stays float (needed or not), and the output
                    // says so.
                    unpruned = stack.len() + 1;
                    break;
                }
                runs += 1;
                let without: Vec<String> = float
                    .iter()
                    .filter(|f| !group.contains(f))
                    .cloned()
                    .collect();
                let s = self.evaluate_on(&without, batches)?;
                log::info!(
                    "pruning: {} unit(s) back to int8: {} dB ({})",
                    group.len(),
                    s.sqnr_db,
                    if met(&s) { "kept int8" } else { "missed" }
                );
                if met(&s) {
                    float = without;
                    pruned.extend(group);
                }
            }
        }
        let score = self.evaluate_on(&float, batches)?;
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
            evaluations,
            search_samples: 0,
            eval_samples: 0,
            verified_on_subset_failed: false,
            unpruned,
            weights_int8: self.weight_only_fallback,
            ruled_float: if self.weight_only_fallback {
                vec![]
            } else {
                self.ruled.keys().cloned().collect()
            },
            float_weights: None,
            weights_fp16: false,
            weights_needed: vec![],
            weights_restored: vec![],
            weights_untried: 0,
        })
    }
}

/// `--ranking auto` takes the full ranking when it is estimated to cost at most this
/// (nominal seconds, [`Work::nominal_seconds`]).
pub const AUTO_FULL_BUDGET: std::time::Duration = std::time::Duration::from_secs(150);

/// Without `--sensitivity-samples`, the search runs on a subset when one pass of the
/// float model over the evaluation data costs more than this (nominal seconds).
pub const AUTO_SEARCH_PASS: std::time::Duration = std::time::Duration::from_secs(8);

/// The guard's measurement ([`output_sqnrs`]) cuts a single data file into at least this
/// many batches: they are what its lower bound resamples.
const EVAL_BATCHES: usize = 16;

/// When an evaluation costs over a nominal second, the pruning pass stops after this many.
const PRUNE_MAX_EVALS: usize = 8;

/// How the units were ranked.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Ranking {
    /// One evaluation per unit: the output SQNR with only that unit int8.
    Full,
    /// One pass: each unit's own output error on float inputs.
    Local,
}

/// The `--ranking` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RankingChoice {
    Auto,
    Full,
    Local,
}

impl std::str::FromStr for RankingChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(RankingChoice::Auto),
            "full" => Ok(RankingChoice::Full),
            "local" => Ok(RankingChoice::Local),
            _ => Err(format!("unknown ranking `{s}` (auto, full or local)")),
        }
    }
}

/// Each unit's local SQNR (see [`Suite::local_sensitivity`]), in `units` order.
fn local_errors(
    prepared: &Model,
    int8: &Model,
    units: &[Unit],
    unit_outputs: &BTreeMap<String, Vec<String>>,
    eval: &EvalSet,
    batches: usize,
    threads: usize,
) -> Result<Vec<f64>> {
    use crate::ir::NodeKind;
    let fg = &prepared.graph;
    let float_value = |name: &str| -> Option<ValueId> {
        let v = fg.value_by_name(name)?;
        matches!(
            fg.node(fg.producer(v)).kind,
            NodeKind::Op(_) | NodeKind::Input
        )
        .then_some(v)
    };
    let mut qm = int8.clone();
    let mut feeds: Vec<(String, ValueId)> = vec![]; // new input name, float value
    let mut measured: BTreeMap<String, ValueId> = BTreeMap::new();
    {
        let g = &mut qm.graph;
        let qnodes: Vec<NodeId> = g
            .topo_order()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .into_iter()
            .filter(|&n| g.node(n).is_op("QuantizeLinear"))
            .collect();
        for qn in qnodes {
            let Some(Some(x)) = g.node(qn).inputs.first().copied() else {
                continue;
            };
            if !matches!(g.node(g.producer(x)).kind, NodeKind::Op(_)) {
                continue;
            }
            let xname = g.value(x).name.clone();
            let Some(fv) = float_value(&xname) else {
                continue;
            };
            let Some(Some(qout)) = g.node(qn).outputs.first().copied() else {
                continue;
            };
            let Some((dqn, _)) = g
                .consumers(qout)
                .into_iter()
                .find(|(c, _)| g.node(*c).is_op("DequantizeLinear"))
            else {
                continue;
            };
            // The measurement: the unit's output through its own output quantization.
            let qop = g.node(qn).op().cloned().expect("an op");
            let mut qin: Vec<Option<ValueId>> = g.node(qn).inputs.to_vec();
            qin[0] = Some(x);
            let mq = g.add_op(
                &format!("{}__local", g.node(qn).name),
                qop,
                &qin,
                &[&format!("{xname}__local_q")],
            );
            let mqv = g.node(mq).outputs[0].expect("one output");
            let dqop = g.node(dqn).op().cloned().expect("an op");
            let mut dqin: Vec<Option<ValueId>> = g.node(dqn).inputs.to_vec();
            dqin[0] = Some(mqv);
            let mdq = g.add_op(
                &format!("{}__local", g.node(dqn).name),
                dqop,
                &dqin,
                &[&format!("{xname}__local_dq")],
            );
            measured.insert(xname.clone(), g.node(mdq).outputs[0].expect("one output"));
            // The unit downstream reads the float model's value instead.
            let iname = g.fresh_name(&format!("{xname}__float"));
            let inode = g
                .add_node(iname.clone(), NodeKind::Input, &[], &[Some(&iname)])
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let iv = g.node(inode).outputs[0].expect("one output");
            let ty = g.value(x).ty.clone();
            g.set_value_type(iv, ty);
            g.inputs.push(iv);
            g.set_input(qn, 0, Some(iv));
            feeds.push((iname, fv));
        }
    }
    // Per unit, its outputs: (float value, measured value).
    let mut pairs: Vec<Vec<(ValueId, ValueId)>> = vec![];
    for u in units {
        let mut p = vec![];
        for name in unit_outputs.get(&u.name).into_iter().flatten() {
            let Some(fv) = float_value(name) else {
                continue;
            };
            let q = match measured.get(name) {
                Some(&m) => Some(m),
                None => qm.graph.value_by_name(name).filter(|&v| {
                    matches!(qm.graph.node(qm.graph.producer(v)).kind, NodeKind::Op(_))
                }),
            };
            if let Some(q) = q {
                p.push((fv, q));
            }
        }
        pairs.push(p);
    }
    // Float run: the fed values and the compared ones as outputs.
    let mut fm = prepared.clone();
    let mut fidx: BTreeMap<ValueId, usize> = BTreeMap::new();
    let wanted = feeds
        .iter()
        .map(|(_, v)| *v)
        .chain(pairs.iter().flatten().map(|(f, _)| *f));
    for v in wanted {
        fidx.entry(v)
            .or_insert_with(|| output_index(&mut fm.graph, v));
    }
    let mut qidx: BTreeMap<ValueId, usize> = BTreeMap::new();
    for &(_, q) in pairs.iter().flatten() {
        qidx.entry(q)
            .or_insert_with(|| output_index(&mut qm.graph, q));
    }
    let batches = batches.clamp(1, eval.batches.len());
    let workers = threads.min(batches).max(1);
    let opts = ExecutorOptions {
        threads: (threads / workers).max(1),
        ..ExecutorOptions::default()
    };
    let fexec = Executor::new(&fm, opts.clone())
        .context("planning the float model for the local analysis")?;
    let qexec = Executor::new(&qm, opts)
        .context("planning the rewired int8 model for the local analysis")?;
    let per_batch = parallel_map(batches, workers, |b| -> Result<Vec<Vec<(f64, f64)>>> {
        let batch = &eval.batches[b];
        let inputs: Vec<(&str, &Tensor)> = eval
            .input_names
            .iter()
            .map(String::as_str)
            .zip(batch)
            .collect();
        let fo = fexec
            .run(&inputs)
            .context("running the float model (local analysis)")?;
        let mut qin = inputs.clone();
        for (name, fv) in &feeds {
            qin.push((name.as_str(), &fo[fidx[fv]].1));
        }
        let qo = qexec
            .run(&qin)
            .context("running the rewired int8 model (local analysis)")?;
        let mut sums = vec![];
        for p in &pairs {
            let mut row = vec![];
            for (f, q) in p {
                let (x, y) = (&fo[fidx[f]].1, &qo[qidx[q]].1);
                let mut acc = (0.0f64, 0.0f64);
                if x.dims == y.dims {
                    if let (Some(x), Some(y)) = (x.to_f32_vec(), y.to_f32_vec()) {
                        super::compare::add_signal_noise(&mut acc, &x, &y);
                    }
                }
                row.push(acc);
            }
            sums.push(row);
        }
        Ok(sums)
    });
    let mut total: Vec<Vec<(f64, f64)>> = pairs.iter().map(|p| vec![(0.0, 0.0); p.len()]).collect();
    for r in per_batch {
        for (t, row) in total.iter_mut().zip(r?) {
            for (acc, (s, n)) in t.iter_mut().zip(row) {
                acc.0 += s;
                acc.1 += n;
            }
        }
    }
    Ok(total
        .iter()
        .map(|outs| {
            outs.iter()
                .filter(|(signal, _)| *signal > 0.0)
                .map(|&(signal, noise)| super::compare::sqnr_db(signal, noise))
                .fold(f64::INFINITY, f64::min)
        })
        .collect())
}

/// Output sums of one batch, and its first output when labels are given.
struct BatchScore {
    sums: Vec<(f64, f64)>,
    first: Option<Vec<f32>>,
}

/// `f(0..n)` on `workers` threads, results in index order.
fn parallel_map<T: Send>(n: usize, workers: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if workers <= 1 || n <= 1 {
        return (0..n).map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<T>>> =
        (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers.min(n) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let r = f(i);
                *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every index was run")
        })
        .collect()
}

/// The position of `v` among `g`'s outputs, appending it when it is not one.
fn output_index(g: &mut crate::ir::Graph, v: ValueId) -> usize {
    match g.outputs.iter().position(|&o| o == v) {
        Some(i) => i,
        None => {
            g.outputs.push(v);
            g.outputs.len() - 1
        }
    }
}

/// Marks in `cal` (the fully prepared model) every value `variant` observes that `cal`
/// does not observe yet; returns how many.
fn merge_observed(cal: &mut Model, variant: &Model) -> Result<usize> {
    merge_observed_graph(&mut cal.graph, &variant.graph)
}

/// [`merge_observed`] on one graph, then on the If branches of its nodes (paired by node
/// name and attribute: a variant's branches observe values the union must observe too).
fn merge_observed_graph(cal: &mut crate::ir::Graph, vg: &crate::ir::Graph) -> Result<usize> {
    let mut added = 0;
    for v in vg.value_ids() {
        let Some(QuantAnnotation::Observe(cfg)) = &vg.value(v).quant else {
            continue;
        };
        let name = &vg.value(v).name;
        let Some(fv) = cal.value_by_name(name) else {
            bail!("value `{name}` of a variant is not in the fully prepared model (the fusion differs between variants)");
        };
        // A fixed range (Sigmoid, Tanh) stays: it is exact for every variant, and the
        // all-int8 variant expects it.
        if !matches!(
            cal.value(fv).quant,
            Some(QuantAnnotation::Observe(_) | QuantAnnotation::Fixed { .. })
        ) {
            cal.value_mut(fv).quant = Some(QuantAnnotation::Observe(cfg.clone()));
            added += 1;
        }
    }
    for n in vg.node_ids() {
        let Some(op) = vg.node(n).op().filter(|op| op.has_subgraphs()) else {
            continue;
        };
        let name = &vg.node(n).name;
        let Some(cn) = cal.node_ids().find(|&c| cal.node(c).name == *name) else {
            bail!("node `{name}` of a variant is not in the fully prepared model");
        };
        let Some(cal_op) = cal.node_mut(cn).op_mut() else {
            continue;
        };
        for (attr, a) in &op.attrs {
            let (Some(ca), subs) = (cal_op.attrs.get_mut(attr), a.subgraphs()) else {
                continue;
            };
            for (cg, sg) in ca.subgraphs_mut().into_iter().zip(subs) {
                added += merge_observed_graph(cg, sg)?;
            }
        }
    }
    Ok(added)
}

/// Elements of the constant weights (rank ≥ 2) read by the node named `name` of `m`
/// (If branches included): what keeping that unit's weights float costs.
fn unit_weight_elements(m: &Model, name: &str) -> usize {
    let mut n = 0;
    crate::ir::rewrite::visit_graphs(&m.graph, &mut |g| {
        for id in g.node_ids() {
            if g.node(id).name != name {
                continue;
            }
            for v in g.node(id).inputs.iter().flatten() {
                if let Some(t) = g.const_tensor(*v) {
                    if t.dims.len() >= 2 && t.dtype.is_float() {
                        n += t.len();
                    }
                }
            }
        }
    });
    n
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

/// The per-output (signal, noise) sums of `model` against `eval`'s float reference on
/// each of its first `batches` batches, in batch order, with the first outputs when
/// `eval` has labels (batches run in parallel on `threads` workers; callers add the sums
/// in batch order, so the result does not depend on the thread count).
fn score_eval(
    eval: &EvalSet,
    model: &Model,
    batches: usize,
    threads: usize,
) -> Result<Vec<BatchScore>> {
    let batches = batches.clamp(1, eval.batches.len());
    let threads = threads.max(1);
    let workers = threads.min(batches).max(1);
    // Few batches: the kernels get the threads instead.
    let exec = Executor::new(
        model,
        ExecutorOptions {
            threads: (threads / workers).max(1),
            ..ExecutorOptions::default()
        },
    )
    .context("planning the quantized variant in the executor")?;
    let labels = eval.labels.is_some();
    let results = parallel_map(batches, workers, |b| -> Result<BatchScore> {
        let batch = &eval.batches[b];
        let inputs: Vec<(&str, &Tensor)> = eval
            .input_names
            .iter()
            .map(String::as_str)
            .zip(batch)
            .collect();
        let out = exec.run(&inputs).context("running the quantized variant")?;
        let mut sums = vec![(0.0f64, 0.0f64); out.len()];
        let mut first = None;
        for (k, (_, t)) in out.iter().enumerate() {
            let y = t.to_f32_vec();
            if let (Some(Some(x)), Some(y)) = (eval.reference[b].get(k), &y) {
                super::compare::add_signal_noise(&mut sums[k], x, y);
            }
            if k == 0 && labels {
                first = y;
            }
        }
        Ok(BatchScore { sums, first })
    });
    results.into_iter().collect()
}

/// Per-output sums over the batches, added in batch order.
fn total_sums(per_batch: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    let mut sums: Vec<(f64, f64)> = vec![];
    for b in per_batch {
        if sums.len() < b.len() {
            sums.resize(b.len(), (0.0, 0.0));
        }
        for (acc, &(s, n)) in sums.iter_mut().zip(b) {
            acc.0 += s;
            acc.1 += n;
        }
    }
    sums
}

/// The output SQNR (worst output, dB) of `quantized` against `float` on `data`, both run
/// by the executor: the accuracy guard of `onnxq quantize`.
pub fn output_sqnr(float: &Model, quantized: &Model, data: &Path, threads: usize) -> Result<f64> {
    Ok(output_sqnrs(float, &[quantized], data, threads)?[0].db)
}

/// [`output_sqnr`] of several quantized versions of `float`, which runs once, each with
/// its lower bound ([`crate::numeric::compare::sqnr_lower_bound`]).
pub fn output_sqnrs(
    float: &Model,
    quantized: &[&Model],
    data: &Path,
    threads: usize,
) -> Result<Vec<SqnrEstimate>> {
    let eval = load_eval(float, data, None, threads.max(1), EVAL_BATCHES)?;
    quantized
        .iter()
        .map(|q| {
            let batches = score_eval(&eval, q, eval.batches.len(), threads.max(1))?;
            let sums: Vec<Vec<(f64, f64)>> = batches.into_iter().map(|b| b.sums).collect();
            Ok(SqnrEstimate {
                db: worst_sqnr_db(&total_sums(&sums)),
                low_db: sqnr_lower_bound(&sums),
            })
        })
        .collect()
}

/// Loads the evaluation data and runs the float model on it (batches on `threads`
/// workers). A single file is cut into at least `min_batches` batches.
fn load_eval(
    model: &Model,
    path: &Path,
    labels: Option<Vec<i64>>,
    threads: usize,
    min_batches: usize,
) -> Result<EvalSet> {
    let inputs = model_inputs(model)?;
    let mut data = CalibrationData::open(path, &inputs)?;
    if let Some(n) = data.total_samples() {
        let rows = n
            .div_ceil(min_batches.max(1))
            .clamp(1, crate::calib::DEFAULT_BATCH_SIZE);
        data = data.with_batch_size(rows);
    }
    let mut batches = vec![];
    let mut batch_samples = vec![];
    while let Some(batch) = data.next_batch() {
        let batch = batch?;
        batch_samples.push(batch.samples);
        batches.push(batch.tensors);
    }
    let samples: usize = batch_samples.iter().sum();
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
    let t0 = std::time::Instant::now();
    let workers = threads.min(batches.len()).max(1);
    let exec = Executor::new(
        model,
        ExecutorOptions {
            threads: (threads / workers).max(1),
            ..ExecutorOptions::default()
        },
    )
    .context("planning the float model in the executor")?;
    let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    let runs = parallel_map(
        batches.len(),
        workers,
        |b| -> Result<(Vec<Option<Vec<f32>>>, Work)> {
            let named: Vec<(&str, &Tensor)> = names.iter().copied().zip(&batches[b]).collect();
            let mut work = Work::default();
            let out = exec
                .run_counted(&named, &mut work)
                .with_context(|| format!("running the float model on {}", path.display()))?;
            Ok((out.iter().map(|(_, t)| t.to_f32_vec()).collect(), work))
        },
    )
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    let float_time = t0.elapsed();
    let mut work = Work::default();
    let mut reference = Vec::with_capacity(runs.len());
    for (r, w) in runs {
        reference.push(r);
        work.add(w);
    }
    Ok(EvalSet {
        input_names: inputs.into_iter().map(|i| i.name).collect(),
        batches,
        reference,
        labels,
        samples,
        batch_samples,
        float_time,
        float_cost: work.nominal_seconds(),
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
    /// Only this unit quantized (full ranking).
    pub only: Option<Score>,
    /// Every unit but this one quantized.
    pub all_but: Option<Score>,
    /// Local ranking: the SQNR of this unit's own outputs when it runs int8 on the float
    /// model's (quantized) inputs, its worst output counting.
    pub local_sqnr_db: Option<f64>,
}

/// The analysis result.
#[derive(Clone, Debug, Serialize)]
pub struct Sensitivity {
    /// How the units were ranked.
    pub ranking: Ranking,
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
        if self.ranking == Ranking::Local {
            s += "\nmost sensitive first (ranked by the local SQNR: each unit int8 on the float model's inputs, its own outputs vs float)\n";
            s += &format!(
                "{:>4}  {:<w$}  {:<wo$}  {:>13}\n",
                "rank", "node", "op", "local SQNR dB"
            );
            for r in &self.rows {
                s += &format!(
                    "{:>4}  {:<w$}  {:<wo$}  {:>13}\n",
                    r.rank,
                    r.node,
                    r.op,
                    r.local_sqnr_db.map(db).unwrap_or_default()
                );
            }
            return s;
        }
        s += "\nmost sensitive first (ranked by the 'only this unit int8' score)\n";
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
                r.only.map(|o| db(o.sqnr_db)).unwrap_or_default(),
                r.all_but.map(|b| db(b.sqnr_db)).unwrap_or_default()
            );
            if labels {
                s += &format!(
                    "  {:>10}  {:>13}",
                    pct(r.only.and_then(|o| o.accuracy)),
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
    /// Search evaluations run (doubling and bisection over prefixes of the ranking,
    /// and the checks on the whole set).
    pub evaluations: usize,
    /// Samples the search ran on.
    pub search_samples: usize,
    /// Samples the returned figures are measured on (the whole evaluation set).
    pub eval_samples: usize,
    /// The search ran on a subset, whose result missed the target on the whole set, so
    /// it was searched again on the whole set.
    pub verified_on_subset_failed: bool,
    /// Float units the pruning pass did not get to try (it stops after
    /// `PRUNE_MAX_EVALS` evaluations).
    pub unpruned: usize,
    /// The float units keep int8 weights ([`Suite::set_weight_only_fallback`]).
    pub weights_int8: bool,
    /// Units the noise rules keep float, fully float in this search (without int8
    /// weights, they are part of the result's exclusions).
    pub ruled_float: Vec<String>,
    /// After [`Suite::restore_int8_weights`]: the units (float and noise-rule ones) still
    /// fully float (weightless ones included); every other float unit has int8 weights.
    pub float_weights: Option<Vec<String>>,
    /// Of those, the units with weights: the ones whose float weights the target needed.
    pub weights_needed: Vec<String>,
    /// Units that got their int8 weights back.
    pub weights_restored: Vec<String>,
    /// Units [`Suite::restore_int8_weights`] did not get to try (bounded evaluations).
    pub weights_untried: usize,
    /// The float weights still needed are stored as float16 (tried first by
    /// [`Suite::restore_int8_weights`]).
    pub weights_fp16: bool,
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
            let weights = match &self.float_weights {
                Some(_) if !self.weights_restored.is_empty() => {
                    let w = &self.weights_needed;
                    let n = self.float_units.iter().filter(|u| w.contains(u)).count();
                    format!(", weights int8 but for {n}")
                }
                None if self.weights_int8 => ", weights int8".to_string(),
                _ => ", weights too".to_string(),
            };
            s += &format!(
                "  kept in float ({}{weights}): {}\n",
                self.float_units.len(),
                self.float_units.join(", ")
            );
        }
        if self.float_weights.is_some() {
            let w = &self.weights_needed;
            if !self.weights_restored.is_empty() {
                s += &format!(
                    "  int8 weights back without missing the target ({}): {}\n",
                    self.weights_restored.len(),
                    self.weights_restored.join(", ")
                );
            }
            if !w.is_empty() && !self.weights_restored.is_empty() {
                s += &format!("  float weights needed ({}): {}\n", w.len(), w.join(", "));
            }
            if self.weights_fp16 {
                s += "  float weights are stored as float16 (the target is still met)\n";
            }
            if self.weights_untried > 0 {
                s += &format!(
                    "  stopped after {PRUNE_MAX_EVALS} evaluations: {} unit(s) were not tried with int8 weights\n",
                    self.weights_untried
                );
            }
        }
        if !self.pruned.is_empty() {
            s += &format!(
                "  quantized again by the pruning pass: {}\n",
                self.pruned.join(", ")
            );
        }
        if self.search_samples > 0 && self.search_samples < self.eval_samples {
            s += &format!(
                "  searched on {} of {} samples; the figures are on all {}\n",
                self.search_samples, self.eval_samples, self.eval_samples
            );
        }
        if self.unpruned > 0 {
            s += &format!(
                "  pruning stopped after {PRUNE_MAX_EVALS} evaluations: {} float unit(s) were not tried back in int8\n",
                self.unpruned
            );
        }
        if self.verified_on_subset_failed {
            s += "  (the subset's choice missed the target on all samples: searched again on all of them)\n";
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

    /// The QConfigMapping that reproduces this result: `base` plus, per float unit, a
    /// `weight_only` entry (or a `None` one when the units are fully float).
    pub fn qconfig(&self, base: &crate::qconfig::QConfigMapping) -> crate::qconfig::QConfigMapping {
        let mut m = base.clone();
        if let Some(w) = &self.float_weights {
            // Mixed: float weights where needed, int8 weights elsewhere (noise-rule units
            // are weight-only by default).
            for u in &self.float_units {
                if !w.contains(u) {
                    m.weight_only.insert(u.clone());
                }
            }
            for u in w {
                m.set_name(u, None);
            }
            if self.weights_fp16 {
                m.float16_weights = self.weights_needed.iter().cloned().collect();
            }
            return m;
        }
        for u in &self.float_units {
            if self.weights_int8 {
                m.weight_only.insert(u.clone());
            } else {
                m.set_name(u, None);
            }
        }
        // Otherwise they would be weight-only again.
        for u in &self.ruled_float {
            m.set_name(u, None);
        }
        m
    }
}
