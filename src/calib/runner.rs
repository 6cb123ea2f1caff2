//! Running calibration data through tract and feeding observers.
//!
//! [`Calibrator::new`] exports the model (in memory) with every observed value
//! added as an extra graph output and parses it in tract once.
//! [`Calibrator::run`] pulls batches from a [`CalibrationData`], runs each
//! through a tract plan optimised for the batch's concrete input shapes (plans
//! are cached per distinct shape set, [`PLAN_CACHE_SIZE`] at most), and feeds
//! each observed output to its observer.
//!
//! # Threads
//!
//! With [`CalibrationOptions::threads`] > 1 (default 2), batches are dealt
//! round-robin to the workers (batch `i` to worker `i mod n`), each with its
//! own clone of the observers; the clones are merged in worker order at the
//! end ([`Observer::merge`]). The assignment is deterministic, so results are
//! reproducible from run to run. Merging min/max observers is exact (the
//! result equals the one-thread run bit for bit); merging histograms is exact
//! only when the partial ranges agree, and otherwise re-bins as torch does
//! when a batch widens the range (see `TorchHistogram::merge`).
//!
//! # When tract cannot run the model
//!
//! Some exporters' graphs are beyond tract's analysis (an `If` on a value
//! computed at run time, as silero-style VADs branch on the sample rate). When
//! tract cannot optimise the model for a batch's shapes, the calibrator plans
//! the same exported model once with onnxq's own executor and runs every
//! remaining batch through it; [`CalibrationStats::engine`] says which ran.
//!
//! One thread is used instead, with the reason in
//! [`CalibrationStats::single_thread_reason`], when an observer cannot merge
//! (moving averages are order-dependent and refuse) or already holds data
//! (clones of it would count that data twice).

use super::source::{Batch, CalibrationData, ModelInput};
use crate::error::{Error, Result};
use crate::ir::{DataType, Model, NodeKind, ValueId};
use crate::observe::Observer;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tract_onnx::prelude::{
    DatumType, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable, TValue, TVec,
    TypedRunnableModel,
};

/// Distinct input shape sets whose optimised plans are kept.
pub const PLAN_CACHE_SIZE: usize = 8;

/// The progress bar appears only once a run has lasted this long.
const PROGRESS_DELAY: Duration = Duration::from_secs(1);

/// How to run a calibration.
#[derive(Clone, Debug)]
pub struct CalibrationOptions {
    /// Worker threads (default 2; 0 is taken as 1).
    pub threads: usize,
    /// Show a progress bar on stderr (only if stderr is a terminal, and only
    /// once the run has lasted about a second).
    pub show_progress: bool,
}

impl Default for CalibrationOptions {
    fn default() -> Self {
        CalibrationOptions {
            threads: 2,
            show_progress: true,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CalibrationStats {
    pub samples: usize,
    pub batches: usize,
    /// Worker threads actually used.
    pub threads: usize,
    /// Why one thread was used although more were asked for.
    pub single_thread_reason: Option<String>,
    /// Plans optimised during this run (cache misses).
    pub plans_built: usize,
    pub elapsed: Duration,
    /// What ran the model: `tract`, or onnxq's executor with tract's reason.
    pub engine: String,
}

impl CalibrationStats {
    pub fn samples_per_sec(&self) -> f64 {
        self.samples as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

type Plan = Arc<TypedRunnableModel>;
type ShapeKey = Vec<Vec<usize>>;

/// A model prepared for calibration of a fixed list of values.
pub struct Calibrator {
    inputs: Vec<ModelInput>,
    /// Names of the observed values, for messages.
    names: Vec<String>,
    /// Per observed value, its index among tract's outputs.
    output_index: Vec<usize>,
    base: Mutex<InferenceModel>,
    /// Most recently used first.
    plans: Mutex<Vec<(ShapeKey, Plan)>>,
    /// Plans optimised so far.
    built: AtomicUsize,
    options: CalibrationOptions,
    /// The exported model, kept for the native fallback.
    export: Model,
    /// onnxq's executor on `export`, planned the first time tract fails.
    native: OnceLock<std::result::Result<crate::executor::Executor, String>>,
    /// Why tract was given up, once it was.
    tract_failure: Mutex<Option<String>>,
    use_native: AtomicBool,
}

impl std::fmt::Debug for Calibrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calibrator")
            .field("inputs", &self.inputs)
            .field("observed", &self.names)
            .finish_non_exhaustive()
    }
}

impl Calibrator {
    /// Prepares `model` to observe `observed` (values of the main graph, float
    /// tensors computed by the graph: not inputs of other types, not
    /// constants). Duplicates are allowed.
    pub fn new(model: &Model, observed: &[ValueId]) -> Result<Calibrator> {
        let inputs = super::source::model_inputs(model)?;
        let g = &model.graph;
        let mut export = model.clone();
        let mut names = Vec::with_capacity(observed.len());
        let mut output_index = Vec::with_capacity(observed.len());
        for &v in observed {
            let value = g.try_value(v).ok_or_else(|| {
                Error::invalid(format!(
                    "observed value #{} is not a value of the main graph",
                    v.index()
                ))
            })?;
            let producer = g.node(g.producer(v));
            if matches!(producer.kind, NodeKind::Const(_) | NodeKind::SparseConst(_)) {
                return Err(Error::invalid(format!(
                    "observed value `{}` is a constant; observe weights directly, not through calibration",
                    value.name
                )));
            }
            if let Some(dt) = value.ty.dtype() {
                if dt != DataType::F32 {
                    return Err(Error::invalid(format!(
                        "observed value `{}` is {dt}; only f32 values can be observed",
                        value.name
                    )));
                }
            }
            let idx = match export.graph.outputs.iter().position(|&o| o == v) {
                Some(i) => i,
                None => {
                    export.graph.outputs.push(v);
                    export.graph.outputs.len() - 1
                }
            };
            names.push(value.name.clone());
            output_index.push(idx);
        }
        // Only element types on intermediate values: shapes declared in the
        // file (symbolic batch names, sometimes plain wrong) must not
        // contradict what tract infers from the concrete input shapes.
        let inputs_set: Vec<ValueId> = export.graph.inputs.clone();
        let ids: Vec<ValueId> = export.graph.value_ids().collect();
        for v in ids {
            if inputs_set.contains(&v) || export.graph.const_tensor(v).is_some() {
                continue;
            }
            let dtype = export.graph.value(v).ty.dtype();
            if dtype.is_some() {
                export.graph.set_value_type(
                    v,
                    crate::ir::ValueType::Tensor(crate::ir::TensorType { dtype, shape: None }),
                );
            }
        }
        let bytes = crate::emit::to_bytes(&export);
        let proto = {
            use prost::Message;
            tract_onnx::pb::ModelProto::decode(&bytes[..])
                .map_err(|e| Error::invalid(format!("tract: {e}")))?
        };
        let parsed = tract_onnx::onnx()
            .parse(&proto, None)
            .map_err(|e| Error::invalid(format!("tract cannot load the model: {e:#}")))?;
        let tract_inputs = parsed
            .model
            .input_outlets()
            .map_err(|e| Error::invalid(format!("tract: {e:#}")))?
            .len();
        if tract_inputs != inputs.len() {
            return Err(Error::invalid(format!(
                "tract sees {tract_inputs} model inputs, onnxq {}",
                inputs.len()
            )));
        }
        Ok(Calibrator {
            inputs,
            names,
            output_index,
            base: Mutex::new(parsed.model),
            plans: Mutex::new(Vec::new()),
            built: AtomicUsize::new(0),
            options: CalibrationOptions::default(),
            export,
            native: OnceLock::new(),
            tract_failure: Mutex::new(None),
            use_native: AtomicBool::new(false),
        })
    }

    /// The native executor on the exported model (planned once).
    fn native(&self) -> std::result::Result<&crate::executor::Executor, String> {
        self.native
            .get_or_init(|| {
                crate::executor::Executor::new(&self.export, Default::default())
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Which engine ran the batches so far, with tract's reason when it was given up.
    pub fn engine(&self) -> String {
        match &*self.tract_failure.lock().expect("poisoned") {
            None => "tract".into(),
            Some(why) => format!("onnxq's executor ({why})"),
        }
    }

    /// Runs every batch on onnxq's executor from the start, `why` being the
    /// reason reported by [`Calibrator::engine`].
    pub fn on_native_executor(self, why: &str) -> Calibrator {
        *self.tract_failure.lock().expect("poisoned") = Some(why.to_string());
        self.use_native.store(true, Ordering::Release);
        self
    }

    pub fn with_options(mut self, options: CalibrationOptions) -> Calibrator {
        self.options = options;
        self
    }

    pub fn options(&self) -> &CalibrationOptions {
        &self.options
    }

    /// The inputs calibration data must provide, in order.
    pub fn inputs(&self) -> &[ModelInput] {
        &self.inputs
    }

    /// Names of the observed values, in the order given to [`Calibrator::new`].
    pub fn observed_names(&self) -> &[String] {
        &self.names
    }

    /// Runs all of `data` and feeds `observers[k]` with observed value `k`.
    /// On error the observers are left as they were before the run if more
    /// than one thread was used, and partially updated otherwise.
    pub fn run<O>(&self, data: CalibrationData, observers: &mut [O]) -> Result<CalibrationStats>
    where
        O: Observer + Clone + Send,
    {
        if observers.len() != self.names.len() {
            return Err(Error::invalid(format!(
                "{} observers given for {} observed values",
                observers.len(),
                self.names.len()
            )));
        }
        if data.inputs() != self.inputs.as_slice() {
            return Err(Error::invalid(format!(
                "{}: the calibration data was opened for other inputs than the model's",
                data.description()
            )));
        }
        let start = Instant::now();
        let plans_before = self.plans_built_total();
        let asked = self.options.threads.max(1);
        let mut reason = None;
        if asked > 1 {
            reason = parallel_blocker(observers);
        }
        let threads = if reason.is_some() { 1 } else { asked };
        let bar = Progress::new(self.options.show_progress, data.total_samples());
        let (samples, batches) = if threads == 1 {
            self.run_serial(data, observers, &bar)?
        } else {
            self.run_parallel(data, observers, threads, &bar)?
        };
        bar.finish();
        Ok(CalibrationStats {
            samples,
            batches,
            threads,
            single_thread_reason: reason,
            plans_built: self.plans_built_total() - plans_before,
            elapsed: start.elapsed(),
            engine: self.engine(),
        })
    }

    fn run_serial<O: Observer>(
        &self,
        mut data: CalibrationData,
        observers: &mut [O],
        bar: &Progress,
    ) -> Result<(usize, usize)> {
        let (mut samples, mut batches) = (0, 0);
        while let Some(batch) = data.next_batch() {
            let batch = batch?;
            self.run_batch(&batch, observers)?;
            samples += batch.samples;
            batches += 1;
            bar.inc(batch.samples);
        }
        Ok((samples, batches))
    }

    fn run_parallel<O: Observer + Clone + Send>(
        &self,
        mut data: CalibrationData,
        observers: &mut [O],
        threads: usize,
        bar: &Progress,
    ) -> Result<(usize, usize)> {
        let mut parts: Vec<Vec<O>> = (0..threads).map(|_| observers.to_vec()).collect();
        let (samples, batches, data_err, worker_errs) = std::thread::scope(|s| {
            let mut senders = Vec::with_capacity(threads);
            let mut handles = Vec::with_capacity(threads);
            for part in parts.iter_mut() {
                let (tx, rx) = mpsc::sync_channel::<Batch>(1);
                senders.push(tx);
                handles.push(s.spawn(move || -> Result<()> {
                    for batch in rx {
                        self.run_batch(&batch, part)?;
                        bar.inc(batch.samples);
                    }
                    Ok(())
                }));
            }
            let (mut samples, mut batches, mut data_err) = (0usize, 0usize, None);
            while let Some(batch) = data.next_batch() {
                match batch {
                    Ok(b) => {
                        let n = b.samples;
                        if senders[batches % threads].send(b).is_err() {
                            break; // that worker failed; its error is reported below
                        }
                        samples += n;
                        batches += 1;
                    }
                    Err(e) => {
                        data_err = Some(e);
                        break;
                    }
                }
                bar.tick();
            }
            drop(senders);
            let worker_errs: Vec<Error> = handles
                .into_iter()
                .filter_map(|h| match h.join() {
                    Ok(r) => r.err(),
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect();
            (samples, batches, data_err, worker_errs)
        });
        if let Some(e) = data_err {
            return Err(e);
        }
        if let Some(e) = worker_errs.into_iter().next() {
            return Err(e);
        }
        let mut parts = parts.into_iter();
        let mut merged = parts.next().expect("threads > 1");
        for part in parts {
            for (k, (a, b)) in merged.iter_mut().zip(&part).enumerate() {
                a.merge(b)
                    .map_err(|e| Error::invalid(format!("observer of `{}`: {e}", self.names[k])))?;
            }
        }
        for (dst, src) in observers.iter_mut().zip(merged) {
            *dst = src;
        }
        Ok((samples, batches))
    }

    /// Runs one batch and feeds the observers.
    fn run_batch<O: Observer>(&self, batch: &Batch, observers: &mut [O]) -> Result<()> {
        if self.use_native.load(Ordering::Acquire) {
            return self.run_batch_native(batch, observers);
        }
        let tv: TVec<TValue> = batch
            .tensors
            .iter()
            .map(|t| crate::tract_runner::to_tract(t).map(TValue::from))
            .collect::<Result<_>>()?;
        let key: ShapeKey = tv.iter().map(|t| t.shape().to_vec()).collect();
        let plan = match self.plan(&key, &tv) {
            Ok(p) => p,
            Err(tract_err) => {
                // Beyond tract's analysis: the native executor, if it can plan the model.
                self.native().map_err(|native_err| {
                    Error::invalid(format!(
                        "{tract_err}; onnxq's executor cannot run it either: {native_err}"
                    ))
                })?;
                let short = tract_err.to_string();
                let short = short
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(160)
                    .collect::<String>();
                log::info!("calibrating with onnxq's executor: {short}");
                self.tract_failure
                    .lock()
                    .expect("poisoned")
                    .get_or_insert(format!("tract: {short}"));
                self.use_native.store(true, Ordering::Release);
                return self.run_batch_native(batch, observers);
            }
        };
        let outs = plan.run(tv).map_err(|e| {
            Error::invalid(format!("tract run failed on input shapes {key:?}: {e:#}"))
        })?;
        for (k, obs) in observers.iter_mut().enumerate() {
            let out = &outs[self.output_index[k]];
            if out.datum_type() != DatumType::F32 {
                return Err(Error::invalid(format!(
                    "observed value `{}` is {:?} at run time; only f32 values can be observed",
                    self.names[k],
                    out.datum_type()
                )));
            }
            let view = out
                .try_as_plain_ram()
                .map_err(|e| Error::invalid(format!("`{}`: {e:#}", self.names[k])))?;
            let x = view
                .as_slice::<f32>()
                .map_err(|e| Error::invalid(format!("`{}`: {e:#}", self.names[k])))?;
            // An empty tensor has no range (the untaken branch of an If).
            if x.is_empty() {
                continue;
            }
            obs.observe(x, out.shape())
                .map_err(|e| Error::invalid(format!("observer of `{}`: {e}", self.names[k])))?;
        }
        Ok(())
    }

    /// [`Calibrator::run_batch`] on onnxq's executor.
    fn run_batch_native<O: Observer>(&self, batch: &Batch, observers: &mut [O]) -> Result<()> {
        let exec = self.native().map_err(Error::invalid)?;
        let named: Vec<(&str, &crate::ir::Tensor)> = self
            .inputs
            .iter()
            .map(|i| i.name.as_str())
            .zip(batch.tensors.iter())
            .collect();
        let outs = exec.run(&named)?;
        for (k, obs) in observers.iter_mut().enumerate() {
            let t = &outs[self.output_index[k]].1;
            let x = t
                .to_f32_vec()
                .filter(|_| t.dtype == DataType::F32)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "observed value `{}` is {} at run time; only f32 values can be observed",
                        self.names[k], t.dtype
                    ))
                })?;
            if x.is_empty() {
                continue;
            }
            let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            obs.observe(&x, &shape)
                .map_err(|e| Error::invalid(format!("observer of `{}`: {e}", self.names[k])))?;
        }
        Ok(())
    }

    fn plans_built_total(&self) -> usize {
        self.built.load(Ordering::Relaxed)
    }

    /// The plan for these input shapes, from the cache or optimised now.
    fn plan(&self, key: &ShapeKey, inputs: &[TValue]) -> Result<Plan> {
        let mut cache = self.plans.lock().expect("plan cache poisoned");
        if let Some(pos) = cache.iter().position(|(k, _)| k == key) {
            let entry = cache.remove(pos);
            let plan = entry.1.clone();
            cache.insert(0, entry);
            return Ok(plan);
        }
        let mut model = self.base.lock().expect("model poisoned").clone();
        for (i, t) in inputs.iter().enumerate() {
            model
                .set_input_fact(i, InferenceFact::dt_shape(t.datum_type(), t.shape()))
                .map_err(|e| {
                    Error::invalid(format!("tract: input `{}`: {e:#}", self.inputs[i].name))
                })?;
        }
        let typed = model.into_optimized().map_err(|e| {
            Error::invalid(format!(
                "tract cannot optimise the model for input shapes {key:?}: {e:#}"
            ))
        })?;
        let plan = typed
            .into_runnable()
            .map_err(|e| Error::invalid(format!("tract: {e:#}")))?;
        self.built.fetch_add(1, Ordering::Relaxed);
        cache.insert(0, (key.clone(), plan.clone()));
        cache.truncate(PLAN_CACHE_SIZE);
        Ok(plan)
    }
}

/// Why the observers cannot be split across threads, if they cannot.
fn parallel_blocker<O: Observer + Clone>(observers: &[O]) -> Option<String> {
    for (k, o) in observers.iter().enumerate() {
        if o.range().is_some() {
            return Some(format!(
                "observer {k} already holds data (its clones would count it twice)"
            ));
        }
        let mut probe = o.clone();
        if let Err(e) = probe.merge(o) {
            return Some(format!("observer {k} cannot be merged: {e}"));
        }
    }
    None
}

/// A progress bar that stays hidden for the first second and when stderr is
/// not a terminal.
struct Progress {
    bar: Option<ProgressBar>,
    start: Instant,
    shown: AtomicBool,
}

impl Progress {
    fn new(enabled: bool, total: Option<usize>) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let (bar, template) = match total {
                Some(n) => (
                    ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::hidden()),
                    "calibrating {wide_bar} {pos}/{len} samples ({per_sec}, ETA {eta})",
                ),
                None => (
                    ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()),
                    "{spinner} calibrating: {pos} samples ({per_sec}, {elapsed})",
                ),
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            bar,
            start: Instant::now(),
            shown: AtomicBool::new(false),
        }
    }

    fn inc(&self, samples: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(samples as u64);
            self.tick();
        }
    }

    fn tick(&self) {
        if let Some(bar) = &self.bar {
            if !self.shown.load(Ordering::Relaxed)
                && self.start.elapsed() >= PROGRESS_DELAY
                && !self.shown.swap(true, Ordering::Relaxed)
            {
                bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
