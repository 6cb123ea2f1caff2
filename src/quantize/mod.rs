//! The whole post-training quantization job, as a library call: what
//! `onnxq quantize` runs, for embedders.
//!
//! ```text
//! import → fuse (FUSE preset, or --passes) → insert-observers (QConfigMapping)
//!        → calibrate through tract (or a saved table) → convert-qdq → emit
//! ```
//!
//! [`quantize`] works on an in-memory [`Model`] and returns the quantized one
//! with a [`Summary`]; [`quantize_file`] adds reading and the atomic write.

mod smooth;
mod summary;

pub use smooth::smooth_quant;
pub use summary::{FloatGroup, Summary};

use crate::calib::{CalibrationOptions, CalibrationTable};
use crate::error::{Error, Result};
use crate::ir::{Model, QuantAnnotation};
use crate::pm::{PassContext, PassManager, PassRegistry};
use crate::qconfig::QConfigMapping;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The opset of per-axis QuantizeLinear/DequantizeLinear.
pub const PER_AXIS_OPSET: i64 = 13;

/// What gets quantized, and when activations are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Post-training static quantization: calibrated activation ranges.
    Static,
    /// Weights int8, activations quantized at run time (no calibration).
    Dynamic,
    /// MatMul/Gemm weights only: int8 per channel, or int4 blockwise.
    WeightOnly { bits: u32, block: usize },
}

/// How a static model is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// QuantizeLinear/DequantizeLinear around float ops (ONNX Runtime's QDQ).
    Qdq,
    /// QLinearConv / QLinearMatMul, Q/DQ at the boundaries.
    QOperator,
}

/// How a model is quantized. The defaults are `onnxq quantize`'s.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub mode: Mode,
    pub format: Format,
    /// Kernel family whose capabilities and qconfig preset apply: `fbgemm` or `qnnpack`.
    pub backend: String,
    /// Activation observer override (kebab-case name, e.g. `minmax`, `percentile`).
    pub observer: Option<String>,
    /// Weight observer override.
    pub weight_observer: Option<String>,
    /// Per-tensor weights instead of per-channel.
    pub per_tensor: bool,
    /// Weight type override: `int8` (the presets) or `uint8` (asymmetric, QNNPACK's form).
    pub weight_dtype: Option<String>,
    /// A QConfigMapping file; default: the backend's preset.
    pub qconfig: Option<PathBuf>,
    /// Node names kept in float.
    pub exclude: Vec<String>,
    /// Op types kept in float.
    pub exclude_op: Vec<String>,
    /// Float pipeline run before observer insertion; default: [`crate::passes::FUSE`]
    /// with this backend's fusion patterns.
    pub passes: Option<String>,
    /// Calibration settings (threads, progress bar).
    pub calibration: CalibrationOptions,
    /// Quantize elementwise/data-movement ops that feed no int8 op too
    /// (`insert-observers{isolated=quantize}`).
    pub quantize_isolated: bool,
    /// Apply the calibration-time rules of [`crate::backend::noise`] (default on).
    pub noise_rule: bool,
    /// Correct Conv/Gemm biases for the mean shift of their rounded weights, from the
    /// calibration's channel means (see [`crate::passes::ConvertQdq`]).
    pub bias_correction: BiasCorrection,
    /// Units (by first node name) kept float by those rules, with the reason.
    pub float_units: std::collections::BTreeMap<String, String>,
    /// Drop the exporter's per-node doc strings and metadata_props first
    /// (`strip-metadata`; PyTorch's dynamo export writes a stack trace per node).
    pub strip_metadata: bool,
    /// Float units (by first node name) whose float weights are stored as float16
    /// (`store-weights-fp16`), besides the qconfig's `float16_weights`: the accuracy
    /// fallback's choice.
    pub float16_weights: std::collections::BTreeSet<String>,
    /// SmoothQuant's migration strength α for the MatMul/Gemm inputs float ops make
    /// (`--smooth-quant`; [`smooth_quant`]); `None`: off.
    pub smooth_quant: Option<f32>,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            mode: Mode::Static,
            format: Format::Qdq,
            backend: "fbgemm".into(),
            observer: None,
            weight_observer: None,
            per_tensor: false,
            weight_dtype: None,
            qconfig: None,
            exclude: vec![],
            exclude_op: vec![],
            passes: None,
            calibration: CalibrationOptions::default(),
            quantize_isolated: false,
            noise_rule: true,
            bias_correction: BiasCorrection::Auto,
            float_units: Default::default(),
            strip_metadata: false,
            float16_weights: Default::default(),
            smooth_quant: None,
        }
    }
}

/// Whether static quantization applies bias correction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasCorrection {
    On,
    Off,
    /// With calibration data: the model is converted both ways and the one whose output
    /// is closer to the float model's on that data is kept (the choice is a summary
    /// note). Bias correction lowers each layer's error, but on a few models the layers'
    /// remaining shifts had been cancelling each other (PP-OCR's direction classifier:
    /// 37.4 dB without, 24.0 dB with, on its calibration lines). With a saved table, or
    /// in the numeric suite's variants: on.
    Auto,
}

impl BiasCorrection {
    /// Whether the converter corrects (`Auto` resolved as on).
    pub fn converts_with(self) -> bool {
        self != BiasCorrection::Off
    }
}

/// Where the activation ranges come from.
pub enum Calibration<'a> {
    /// Calibration data (see [`crate::calib::CalibrationData::open`]).
    Data(&'a Path),
    /// A table saved by `onnxq calibrate` with the same options.
    Table(CalibrationTable),
}

impl QuantizeOptions {
    /// Canonicalization and fusion for this backend (before observers).
    pub fn fuse_pipeline(&self) -> String {
        match &self.passes {
            Some(p) => p.clone(),
            None => crate::passes::FUSE.replace(
                "fuse-activations",
                &format!("fuse-activations{{backend={}}}", self.backend),
            ),
        }
    }

    /// The `insert-observers` options these settings give.
    pub fn insert_options(&self) -> Vec<(String, String)> {
        let mut opts = vec![("backend".to_string(), self.backend.clone())];
        if let Some(o) = &self.observer {
            opts.push(("observer".into(), o.clone()));
        }
        if let Some(o) = &self.weight_observer {
            opts.push(("weight-observer".into(), o.clone()));
        }
        if self.per_tensor {
            opts.push(("per-tensor".into(), "true".into()));
        }
        if let Some(d) = &self.weight_dtype {
            opts.push(("weight-dtype".into(), d.clone()));
        }
        if let Some(q) = &self.qconfig {
            opts.push(("qconfig".into(), q.display().to_string()));
        }
        if self.quantize_isolated {
            opts.push(("isolated".into(), "quantize".into()));
        }
        opts
    }

    /// The QConfigMapping (file or preset) with the exclusions added as
    /// `None` entries. Unknown node names are an error: a typo must not
    /// silently quantize the node the user wanted in float.
    pub fn mapping(&self, model: &Model) -> Result<QConfigMapping> {
        let mut mapping = match &self.qconfig {
            Some(f) => QConfigMapping::from_file(f)?,
            None => QConfigMapping::preset(&self.backend)?,
        };
        let mut names = std::collections::BTreeSet::new();
        crate::ir::rewrite::all_node_names(&model.graph, &mut names);
        for n in &self.exclude {
            if !names.contains(n.as_str()) {
                return Err(Error::invalid(format!(
                    "exclude {n}: the model has no node named `{n}`"
                )));
            }
            mapping.set_name(n, None);
        }
        for t in &self.exclude_op {
            mapping.set_object_type(t, None);
        }
        Ok(mapping)
    }
}

/// PyTorch's `prepare_fx`: fusion, then observer insertion. Returns the
/// pipeline text that ran (recorded in calibration tables).
pub fn prepare(
    model: &mut Model,
    options: &QuantizeOptions,
    cx: &mut PassContext,
) -> Result<String> {
    let registry = PassRegistry::builtin();
    let stripped = strip_metadata(model, options, cx)?;
    let mut upgraded = String::new();
    let from = model.onnx_opset();
    if !options.per_tensor && (1..PER_AXIS_OPSET).contains(&from) {
        // Per-channel weights need per-axis DequantizeLinear (opset 13).
        let mut up = PassManager::new();
        up.add(crate::passes::UpgradeOpset { to: PER_AXIS_OPSET });
        match up.run(model, cx) {
            Ok(_) => upgraded = format!("{},", up.pipeline_text()),
            // QuantizeLinear/DequantizeLinear exist from opset 10: below
            // that, a refusal to raise ends the job, with its reason.
            Err(e) if from < 10 && options.mode == Mode::Static => {
                return Err(Error::invalid(format!(
                    "the model imports opset {from}; QuantizeLinear/DequantizeLinear need opset 10 or later, and raising it is not safe: {e}"
                )))
            }
            Err(e) => cx.warn(
                "opset",
                format!("kept opset {from}, so weights are per tensor: {e}"),
            ),
        }
    }
    let mut fuse = PassManager::parse(&options.fuse_pipeline(), &registry)?;
    fuse.run(model, cx)?;
    let mapping = options.mapping(model)?;
    let mut float_units = options.float_units.clone();
    for n in &mapping.weight_only {
        float_units.entry(n.clone()).or_insert_with(|| {
            "activations float, weights int8 (the qconfig's `weight_only`)".into()
        });
    }
    let mut observers =
        crate::passes::InsertObservers::with_mapping(options.insert_options(), mapping)?;
    observers.float_units = float_units;
    let mut insert = PassManager::new();
    insert.add(observers);
    insert.run(model, cx)?;
    Ok(format!(
        "{stripped}{upgraded}{},{}",
        fuse.pipeline_text(),
        insert.pipeline_text()
    ))
}

/// `--strip-metadata`: runs `strip-metadata` first; the pipeline text it adds.
fn strip_metadata(
    model: &mut Model,
    options: &QuantizeOptions,
    cx: &mut PassContext,
) -> Result<String> {
    if !options.strip_metadata {
        return Ok(String::new());
    }
    let mut pm = PassManager::new();
    pm.add(crate::passes::StripMetadata);
    pm.run(model, cx)?;
    Ok(format!("{},", pm.pipeline_text()))
}

/// The result of [`quantize`].
pub struct Quantized {
    pub model: Model,
    pub summary: Summary,
}

/// Quantizes `model` as `options` say. Static mode needs `calibration`;
/// the other modes need none.
pub fn quantize(
    model: Model,
    calibration: Option<Calibration<'_>>,
    options: &QuantizeOptions,
) -> Result<Quantized> {
    if let (Mode::Static, Some(c)) = (&options.mode, calibration) {
        return quantize_static(model, c, options);
    }
    if options.smooth_quant.is_some() && !matches!(options.mode, Mode::Static) {
        return Err(Error::invalid(
            "--smooth-quant is for static mode with calibration data: dynamic and weight-only modes have no activation grid to smooth for",
        ));
    }
    refuse_quantized(&model)?;
    let mut model = model;
    name_unnamed_nodes(&mut model);
    let freed = initializers_as_constants(&mut model);
    let mut q = match &options.mode {
        Mode::Static => Err(Error::invalid(
            "static quantization needs calibration data or a calibration table",
        )),
        _ if options.format == Format::QOperator => Err(Error::invalid(
            "--format qoperator is for static mode (dynamic mode writes MatMulInteger/ConvInteger, weight-only DequantizeLinear)",
        )),
        mode => quantize_without_data(model, mode, options),
    }?;
    if freed > 0 {
        q.summary.notes.push((
            "model".into(),
            format!("{freed} initializers were also listed as graph inputs (pre-IR-4 style); they are treated as constants, no longer inputs"),
        ));
    }
    Ok(q)
}

/// Op nodes without a name (some exporters write none) get `<OpType>_<first output>`,
/// unique in the model (If branches included), so that `--exclude`, the summary, `sensitivity` and a saved
/// qconfig can all refer to them. Named nodes keep their names. Returns how many.
pub fn name_unnamed_nodes(model: &mut Model) -> usize {
    let mut taken = std::collections::BTreeSet::new();
    crate::ir::rewrite::all_node_names(&model.graph, &mut taken);
    taken.remove("");
    let mut named = 0;
    let _ = crate::ir::rewrite::for_each_graph_mut(model, &mut |g: &mut crate::ir::Graph| {
        let ids: Vec<_> = g.node_ids().collect();
        for n in ids {
            let node = g.node(n);
            if node.op().is_none() || !node.name.is_empty() {
                continue;
            }
            let out = node
                .outputs
                .iter()
                .flatten()
                .next()
                .map(|&v| g.value(v).name.clone())
                .unwrap_or_default();
            let base = format!("{}_{out}", node.op_type());
            let name = std::iter::once(base.clone())
                .chain((1..).map(|i| format!("{base}_{i}")))
                .find(|c| !taken.contains(c))
                .expect("unbounded");
            taken.insert(name.clone());
            g.node_mut(n).name = name;
            named += 1;
        }
        Ok::<(), ()>(())
    });
    named
}

/// Initializers also listed as graph inputs (exporters before IR 4) are
/// overridable defaults in ONNX's semantics; quantizing treats them as the
/// weights they are and drops them from the inputs, or the float copy would
/// have to stay beside the int8 one. Returns how many were freed.
fn initializers_as_constants(model: &mut Model) -> usize {
    use crate::ir::{ConstOrigin, NodeKind};
    let g = &mut model.graph;
    let mut freed = vec![];
    let ids: Vec<_> = g.node_ids().collect();
    for n in ids {
        let out = g.node(n).outputs.first().copied().flatten();
        if let NodeKind::Const(c) = &mut g.node_mut(n).kind {
            if let ConstOrigin::Initializer { is_graph_input } = &mut c.origin {
                if *is_graph_input {
                    *is_graph_input = false;
                    freed.extend(out);
                }
            }
        }
    }
    g.inputs.retain(|v| !freed.contains(v));
    freed.len()
}

/// Dynamic and weight-only modes: weights only are known ahead of time.
fn quantize_without_data(
    mut model: Model,
    mode: &Mode,
    options: &QuantizeOptions,
) -> Result<Quantized> {
    let mut cx = PassContext::new();
    let t0 = Instant::now();
    let stripped = strip_metadata(&mut model, options, &mut cx)?;
    let names: std::collections::BTreeSet<String> = options.exclude.iter().cloned().collect();
    let (pipeline, pass) = match mode {
        Mode::Dynamic => {
            let mut o = crate::passes::DynamicOptions {
                exclude: names,
                per_channel: !options.per_tensor,
                ..Default::default()
            };
            for t in &options.exclude_op {
                o.op_types.remove(t);
            }
            (
                crate::modes::quantize_dynamic(&mut model, o, &mut cx)?,
                "quantize-dynamic",
            )
        }
        Mode::WeightOnly { bits, block } => {
            let mut o = crate::passes::WeightOnlyOptions {
                bits: *bits,
                block: *block,
                exclude: names,
                per_channel: !options.per_tensor,
                ..Default::default()
            };
            for t in &options.exclude_op {
                o.op_types.remove(t);
            }
            (
                crate::modes::quantize_weight_only(&mut model, o, &mut cx)?,
                "quantize-weight-only",
            )
        }
        Mode::Static => {
            return Err(Error::invalid(
                "static quantization needs calibration data or a calibration table",
            ))
        }
    };
    let pipeline = format!(
        "{stripped}{pipeline}{}",
        quantize_embeddings(&mut model, options, &mut cx)?
    );
    let mut summary = Summary::from_context(pipeline, &cx, None, vec![("quantize", t0.elapsed())]);
    summary.by_op = op_counts(&cx, pass);
    Ok(Quantized { model, summary })
}

/// Every mode's last step when the model looks up an embedding table: its rows become
/// int8 (`quantize-embeddings`), unless `--exclude-op Gather`; `--exclude` names of
/// lookups keep theirs float.
fn embeddings_pass(
    model: &Model,
    options: &QuantizeOptions,
) -> Option<crate::passes::QuantizeEmbeddings> {
    if options.exclude_op.iter().any(|t| t == "Gather") {
        return None;
    }
    let mut any = false;
    crate::ir::rewrite::visit_graphs(&model.graph, &mut |g| {
        any |= g
            .node_ids()
            .any(|n| crate::passes::is_embedding_lookup(g, n));
    });
    if !any {
        return None;
    }
    Some(crate::passes::QuantizeEmbeddings {
        exclude: existing_exclusions(model, options),
    })
}

/// The `--exclude` names still in `model` (fusion may have absorbed some), for the passes
/// that run after conversion and refuse unknown names.
fn existing_exclusions(
    model: &Model,
    options: &QuantizeOptions,
) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    crate::ir::rewrite::all_node_names(&model.graph, &mut names);
    options
        .exclude
        .iter()
        .filter(|n| names.contains(n.as_str()))
        .cloned()
        .collect()
}

/// Static mode's recurrent layers: no standard int8 LSTM/GRU/RNN op exists, so their
/// weights (W and R, often most of an OCR recogniser's or a VAD's file) are stored int8 per
/// gate row behind a DequantizeLinear, as dynamic mode does (`quantize-dynamic` restricted
/// to those ops), and the cell computes in float. Only when the model has such a layer;
/// `--exclude` names and `--exclude-op` types keep theirs float.
fn recurrent_weights_pass(
    model: &Model,
    options: &QuantizeOptions,
) -> Result<Option<crate::passes::QuantizeDynamic>> {
    let ops: std::collections::BTreeSet<String> = ["GRU", "LSTM", "RNN"]
        .iter()
        .filter(|t| !options.exclude_op.iter().any(|e| e == *t))
        .map(|t| t.to_string())
        .collect();
    let mut any = false;
    crate::ir::rewrite::visit_graphs(&model.graph, &mut |g| {
        any |= g.node_ids().any(|n| ops.contains(g.node(n).op_type()));
    });
    if !any || model.onnx_opset() < 11 {
        return Ok(None);
    }
    let o = crate::passes::DynamicOptions {
        per_channel: !options.per_tensor,
        unsigned_weights: false,
        op_types: ops,
        exclude: existing_exclusions(model, options),
        ..Default::default()
    };
    Ok(Some(crate::passes::QuantizeDynamic::new(o)?))
}

/// [`embeddings_pass`] for the modes without data, after their own pipeline: the
/// pipeline text that ran, with a leading comma, or nothing.
fn quantize_embeddings(
    model: &mut Model,
    options: &QuantizeOptions,
    cx: &mut PassContext,
) -> Result<String> {
    let Some(pass) = embeddings_pass(model, options) else {
        return Ok(String::new());
    };
    let mut pm = PassManager::new();
    pm.add(pass).add(crate::passes::EliminateDeadCode);
    pm.run(model, cx)?;
    Ok(format!(",{}", pm.pipeline_text()))
}

/// The per-op-type counters a pass recorded.
fn op_counts(cx: &PassContext, pass: &str) -> Vec<(String, u64)> {
    cx.statistics()
        .iter()
        .filter(|((p, _), _)| p == pass)
        .map(|((_, what), n)| (what.clone(), *n))
        .collect()
}

/// A model after [`prepare`] (fusion and observer insertion), ready to be
/// calibrated and converted. [`prepare_static`] makes one; the numeric suite
/// prepares many variants of one model (different exclusions) and converts
/// each with one shared calibration table.
#[derive(Clone)]
pub struct Prepared {
    pub model: Model,
    /// The pipeline that ran, as text.
    pub pipeline: String,
    pub cx: PassContext,
    /// Initializers freed from the graph inputs (see `initializers_as_constants`).
    freed: usize,
    t_prepare: std::time::Duration,
}

impl Prepared {
    /// Whether anything is observed (otherwise every node stays float).
    pub fn observes_anything(&self) -> bool {
        fn any(g: &crate::ir::Graph) -> bool {
            g.value_ids().any(|v| g.value(v).quant.is_some())
                || g.node_ids().any(|n| {
                    g.node(n)
                        .op()
                        .is_some_and(|op| op.attrs.values().flat_map(|a| a.subgraphs()).any(any))
                })
        }
        any(&self.model.graph)
    }
}

impl Prepared {
    /// Replaces the weight entries of `table` with this preparation's (weights are known
    /// without data): a variant whose units keep int8 weights with float activations
    /// stores them with all 8 bits, where the shared table has the int8 units' config.
    pub fn refresh_weight_entries(&self, table: &mut CalibrationTable) -> Result<()> {
        let w = crate::calib::constant_entries(&self.model, &self.pipeline)?;
        for (name, e) in w.entries {
            if e.role == crate::calib::Role::Weight {
                table.entries.insert(name, e);
            }
        }
        Ok(())
    }
}

/// The static-mode steps before calibration: refuses quantized models,
/// treats initializers listed as inputs as constants, fuses and inserts
/// observers as `options` say.
pub fn prepare_static(model: Model, options: &QuantizeOptions) -> Result<Prepared> {
    refuse_quantized(&model)?;
    let mut model = model;
    name_unnamed_nodes(&mut model);
    let freed = initializers_as_constants(&mut model);
    let mut cx = PassContext::new();
    let t0 = Instant::now();
    let pipeline = prepare(&mut model, options, &mut cx)?;
    Ok(Prepared {
        model,
        pipeline,
        cx,
        freed,
        t_prepare: t0.elapsed(),
    })
}

/// Converts a prepared model with a calibration table. The table may hold
/// entries for more values than this model observes (a table calibrated on
/// a superset, as the numeric suite does): only the observed ones are read.
pub fn convert_prepared(
    prepared: Prepared,
    table: CalibrationTable,
    options: &QuantizeOptions,
) -> Result<Quantized> {
    convert_timed(prepared, table, None, std::time::Duration::ZERO, options)
}

fn convert_timed(
    prepared: Prepared,
    table: CalibrationTable,
    samples: Option<usize>,
    t_calibrate: std::time::Duration,
    options: &QuantizeOptions,
) -> Result<Quantized> {
    let Prepared {
        mut model,
        pipeline,
        mut cx,
        freed,
        t_prepare,
    } = prepared;
    let t2 = Instant::now();
    let mut convert = PassManager::new();
    convert.add(
        crate::passes::ConvertQdq::new(table)
            .with_bias_correction(options.bias_correction.converts_with()),
    );
    if let Some(pass) = recurrent_weights_pass(&model, options)? {
        convert.add(pass);
    }
    if let Some(pass) = embeddings_pass(&model, options) {
        convert.add(pass);
    }
    // Float units with float16 weights: the fallback's, and a saved fallback result's
    // (the qconfig's).
    let mut only = options.float16_weights.clone();
    if let Some(path) = &options.qconfig {
        only.extend(QConfigMapping::from_file(path)?.float16_weights);
    }
    if !only.is_empty() {
        convert.add(crate::passes::StoreWeightsFp16 { only });
    }
    convert.add(crate::passes::EliminateDeadCode);
    convert.run(&mut model, &mut cx)?;
    let mut pipeline = format!("{pipeline},{}", convert.pipeline_text());
    if options.format == Format::QOperator {
        pipeline += ",";
        pipeline += &crate::modes::convert_to_qoperator(&mut model, &mut cx)?;
    }
    let mut summary = Summary::from_context(
        pipeline,
        &cx,
        samples,
        vec![
            ("prepare", t_prepare),
            ("calibrate", t_calibrate),
            ("convert", t2.elapsed()),
        ],
    );
    summary.recurrent_weights = op_counts(&cx, "quantize-dynamic");
    if options.format == Format::QOperator {
        summary.by_op = op_counts(&cx, "convert-qoperator");
    }
    if freed > 0 {
        summary.notes.push((
            "model".into(),
            format!("{freed} initializers were also listed as graph inputs (pre-IR-4 style); they are treated as constants, no longer inputs"),
        ));
    }
    Ok(Quantized { model, summary })
}

/// Static post-training quantization: QDQ, or QOperator on top of it.
fn quantize_static(
    model: Model,
    calibration: Calibration<'_>,
    options: &QuantizeOptions,
) -> Result<Quantized> {
    // SmoothQuant first: every later stage starts from the smoothed float model.
    let mut model = model;
    let smooth_notes = match (options.smooth_quant, &calibration) {
        (None, _) => {
            let n = crate::passes::smooth_groups(&model.graph).len();
            if n == 0 {
                vec![]
            } else {
                vec![("smooth-quant".to_string(), format!(
                    "{n} MatMul/Gemm input(s) are made by float ops (LayerNorm, Gelu, Softmax), whose outlier channels the per-tensor int8 grid pays for: --smooth-quant may quantize them with less error"
                ))]
            }
        }
        (Some(alpha), Calibration::Data(path)) => {
            smooth_quant(&mut model, path, alpha, &options.calibration)?
        }
        (Some(_), Calibration::Table(_)) => {
            return Err(Error::invalid(
                "--smooth-quant needs calibration data (--data): a saved table holds no channel ranges of the unsmoothed inputs",
            ))
        }
    };
    // The float model, kept for the noise rules (prepared again) and as the reference of
    // the bias-correction choice (see [`BiasCorrection::Auto`]).
    let choose_correction = options.bias_correction == BiasCorrection::Auto
        && matches!(calibration, Calibration::Data(_));
    let original = (options.noise_rule || choose_correction).then(|| model.clone());
    let mut prepared = prepare_static(model, options)?;
    if !prepared.observes_anything() {
        // No activation to calibrate, but recurrent weights or an embedding table to store
        // int8 (an LSTM-only model): those steps need no data.
        let weights_only = recurrent_weights_pass(&prepared.model, options)?.is_some()
            || embeddings_pass(&prepared.model, options).is_some();
        if weights_only {
            let mut q = convert_timed(
                prepared,
                CalibrationTable::default(),
                None,
                std::time::Duration::ZERO,
                options,
            )?;
            q.summary.notes.push((
                "model".into(),
                "static mode found no activation to quantize; only recurrent weights or embedding tables are int8 (no calibration ran)".into(),
            ));
            return Ok(q);
        }
        let s = Summary::from_context(prepared.pipeline.clone(), &prepared.cx, None, vec![]);
        let reasons: Vec<String> = s
            .float
            .iter()
            .map(|g| format!("{} ({} nodes)", g.reason, g.subjects.len()))
            .collect();
        return Err(Error::invalid(format!(
            "nothing to quantize: every node stays float: {}",
            reasons.join("; ")
        )));
    }
    let t1 = Instant::now();
    let data_path = match &calibration {
        Calibration::Data(p) => Some(*p),
        Calibration::Table(_) => None,
    };
    let mut engine_note = None;
    let (table, samples) = match calibration {
        Calibration::Table(t) => (t, None),
        Calibration::Data(path) => {
            let (t, stats) = crate::calib::calibrate(
                &prepared.model,
                &prepared.pipeline,
                path,
                options.calibration.clone(),
            )?;
            if stats.engine != "tract" {
                engine_note = Some(format!("calibrated with {}", stats.engine));
            }
            (t, Some(stats.samples))
        }
    };
    // Calibration-time rules: units the calibrated ranges show int8 would
    // bury in noise are prepared again as float. The table covers the new
    // preparation unless keeping them float exposes a value not observed
    // before; then it is calibrated again.
    let mut table = table;
    if let Some(original) = original.as_ref().filter(|_| options.noise_rule) {
        let float_units =
            crate::backend::noise::noisy_units_with_branches(&prepared.model.graph, &table);
        if !float_units.is_empty() {
            let mut opts = options.clone();
            opts.float_units = float_units;
            let ruled = prepare_static(original.clone(), &opts)?;
            let covered = observed_names(&ruled.model.graph)
                .iter()
                .all(|name| table.entries.contains_key(name));
            // Weight entries again: weight-only units keep all 8 bits.
            ruled.refresh_weight_entries(&mut table)?;
            match data_path {
                _ if covered => prepared = ruled,
                Some(path) => {
                    table = crate::calib::calibrate(
                        &ruled.model,
                        &ruled.pipeline,
                        path,
                        options.calibration.clone(),
                    )?
                    .0;
                    prepared = ruled;
                }
                // A saved table without the values the rule needs: as calibrated.
                None => {}
            }
        }
    }
    let auto = match (data_path, &original) {
        (Some(path), Some(float)) if choose_correction && !table.channel_means.is_empty() => {
            Some((path, float))
        }
        _ => None,
    };
    let mut q = match auto {
        None => convert_timed(prepared, table, samples, t1.elapsed(), options)?,
        Some((path, float)) => {
            let with = convert_timed(
                prepared.clone(),
                table.clone(),
                samples,
                t1.elapsed(),
                options,
            )?;
            if with.summary.corrected_biases == 0 {
                with
            } else {
                let without = convert_timed(
                    prepared,
                    table,
                    samples,
                    t1.elapsed(),
                    &QuantizeOptions {
                        bias_correction: BiasCorrection::Off,
                        ..options.clone()
                    },
                )?;
                let threads = options.calibration.threads.max(1);
                choose_bias_correction(with, without, float, path, threads)
            }
        }
    };
    if let Some(n) = engine_note {
        q.summary.notes.push(("calibration".into(), n));
    }
    if let Some(alpha) = options.smooth_quant {
        // It ran before the pipeline, on the float model.
        q.summary.pipeline = format!("smooth-quant{{alpha={alpha}}},{}", q.summary.pipeline);
    }
    q.summary.notes.extend(smooth_notes);
    Ok(q)
}

/// [`BiasCorrection::Auto`]: of the model converted `with` bias correction and `without`
/// it, the one whose output is closer to `float`'s on the calibration data at `path`.
fn choose_bias_correction(
    mut with: Quantized,
    without: Quantized,
    float: &Model,
    path: &Path,
    threads: usize,
) -> Quantized {
    let t0 = Instant::now();
    let measured = crate::numeric::sensitivity::output_sqnrs(
        float,
        &[&with.model, &without.model],
        path,
        threads,
    );
    let (s_with, s_without) = match measured {
        Ok(s) => (s[0], s[1]),
        // The native executor cannot run this model: no comparison, and the correction
        // stays on (it lowers each layer's error).
        Err(e) => {
            with.summary.notes.push((
                "bias correction".into(),
                format!("on (not compared: {e:#})"),
            ));
            return with;
        }
    };
    let note = format!(
        "output SQNR on the calibration data {:.1} dB with it, {:.1} dB without",
        s_with.db, s_without.db
    );
    let on = s_with.db >= s_without.db;
    let (mut kept, sqnr, what) = if on {
        (with, s_with, format!("on: {note}"))
    } else {
        (
            without,
            s_without,
            format!("off (it lowered the output's accuracy here): {note}"),
        )
    };
    kept.summary
        .stage_times
        .push(("bias correction", t0.elapsed()));
    kept.summary.notes.push(("bias correction".into(), what));
    kept.summary.calibration_sqnr = Some(sqnr);
    kept.summary.bias_correction_chosen = Some(on);
    kept
}

/// [`quantize`] from a file to a file, written atomically (a failure leaves
/// no output behind). The input file is only read.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    calibration: Option<Calibration<'_>>,
    options: &QuantizeOptions,
) -> Result<Summary> {
    let t0 = Instant::now();
    let model = crate::import::import_file(input)?;
    let t_import = t0.elapsed();
    let Quantized { model, mut summary } = quantize(model, calibration, options)?;
    let t1 = Instant::now();
    crate::emit::write_file(&model, output)
        .map_err(|e| Error::invalid(format!("writing {}: {e}", output.display())))?;
    summary.stage_times.insert(0, ("import", t_import));
    summary.stage_times.push(("write", t1.elapsed()));
    summary.size_before = file_size(input);
    summary.size_after = file_size(output);
    Ok(summary)
}

/// Ops that mean the model is quantized already (standard or ORT contrib).
const QUANTIZED_OPS: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeLSTM",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QGemm",
    "QLinearAdd",
    "QLinearMul",
];

/// Quantizing a quantized model again is refused, naming a node.
fn refuse_quantized(model: &Model) -> Result<()> {
    let g = &model.graph;
    for n in g.node_ids() {
        if let Some(op) = g.node(n).op() {
            if QUANTIZED_OPS.contains(&op.op_type.as_str()) {
                return Err(Error::invalid(format!(
                    "the model is quantized already: node `{}` is {}",
                    g.display_node_name(n),
                    op.qualified_name()
                )));
            }
        }
    }
    Ok(())
}

/// A model's size on disk, external data included.
fn file_size(path: &Path) -> Option<u64> {
    let main = std::fs::metadata(path).ok()?.len();
    // Our writer's external data file (see `emit::write_file`).
    let mut data = path.as_os_str().to_owned();
    data.push(".data");
    let ext = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
    Some(main + ext)
}

/// Names of the values observed from data in `g` and its If branches.
fn observed_names(g: &crate::ir::Graph) -> Vec<String> {
    let mut out: Vec<String> = g
        .value_ids()
        .filter(|&v| matches!(g.value(v).quant, Some(QuantAnnotation::Observe(_))))
        .map(|v| g.value(v).name.clone())
        .collect();
    for n in g.node_ids() {
        if g.node(n).is_op("If") {
            for a in g.node(n).op().expect("an op").attrs.values() {
                for sg in a.subgraphs() {
                    out.extend(observed_names(sg));
                }
            }
        }
    }
    out
}
