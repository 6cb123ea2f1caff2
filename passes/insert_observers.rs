//! `insert-observers{backend=fbgemm|qnnpack,observer=…,weight-observer=…,per-tensor=true,weight-dtype=int8|uint8,qconfig=FILE}`:
//! decides which values are observed during calibration, from the fused
//! graph, the backend's patterns and the QConfigMapping (PyTorch's
//! `prepare_fx` step 3).
//!
//! For every quantizable unit (a fused chain, or one op the backend has a
//! pattern for) whose QConfig is not `None`:
//! * its real-valued inputs are observed with the activation observer
//!   (shapes, indices, Clip bounds, Resize scales never are);
//! * its constant weight gets the weight observer, per channel on the
//!   op's output-channel axis (0 Conv, 1 ConvTranspose, the output axis of
//!   Gemm/MatMul);
//! * its output is observed (Conv, Gemm, Add, ...), shares its input's
//!   quantization (MaxPool, Reshape, Transpose, Concat, ...), or gets a
//!   fixed range (Sigmoid [0, 1], Tanh [−1, 1]).
//!
//! Values inside a fused unit are not observed, except the one entering an
//! Add (Conv + Add + Relu), which ONNX Runtime needs quantized to run the
//! Conv in int8. Everything else stays float;
//! the diagnostics say why, node by node. The branches of If nodes are
//! annotated the same way, each as a graph of its own; Loop and Scan bodies
//! stay float.

use crate::backend::composite::{find_composites, Composite};
use crate::backend::fragile::fragile_nodes;
use crate::backend::slow_int8;
use crate::backend::{BackendConfig, DataInputs, Observation, PatternConfig};
use crate::prelude::*;
use crate::qconfig::{ObserverConfig, ObserverKind, QConfigMapping};
use std::collections::{BTreeMap, BTreeSet};

pub struct InsertObservers {
    pub backend: BackendConfig,
    pub mapping: QConfigMapping,
    /// Option text to print back in the pipeline.
    options: Vec<(String, String)>,
    /// Keep elementwise and data-movement ops int8 even when nothing int8
    /// reads their output (`isolated=quantize`); by default they stay float.
    pub quantize_isolated: bool,
    /// Units (by first node name) kept float by a calibration-time rule
    /// ([`crate::backend::noise`]), with the reason the summary shows.
    pub float_units: BTreeMap<String, String>,
}

impl InsertObservers {
    pub fn new(backend: BackendConfig, mapping: QConfigMapping) -> Self {
        InsertObservers {
            backend,
            mapping,
            options: vec![],
            quantize_isolated: false,
            float_units: BTreeMap::new(),
        }
    }

    /// Factory for the registry.
    pub fn from_options(mut opts: PassOptions) -> Result<Box<dyn Pass>> {
        const KEYS: [&str; 7] = [
            "backend",
            "observer",
            "weight-observer",
            "per-tensor",
            "weight-dtype",
            "qconfig",
            "isolated",
        ];
        let options: Vec<(String, String)> = KEYS
            .iter()
            .filter_map(|&k| opts.take(k).map(|v| (k.to_string(), v)))
            .collect();
        opts.finish(&KEYS)?;
        let get = |k: &str| {
            options
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let mapping = match get("qconfig") {
            Some(f) => QConfigMapping::from_file(std::path::Path::new(f))?,
            None => QConfigMapping::preset(get("backend").unwrap_or("fbgemm"))?,
        };
        Ok(Box::new(Self::with_mapping(options, mapping)?))
    }

    /// The pass for pipeline `options` (`backend`, `observer`,
    /// `weight-observer`, `per-tensor`; `qconfig` is only recorded) and a
    /// QConfigMapping; the observer options override every QConfig in it.
    pub fn with_mapping(
        options: Vec<(String, String)>,
        mut mapping: QConfigMapping,
    ) -> Result<InsertObservers> {
        let get = |k: &str| {
            options
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let backend_name = get("backend").unwrap_or("fbgemm");
        let backend = BackendConfig::by_name(backend_name).ok_or_else(|| {
            Error::invalid(format!(
                "insert-observers: unknown backend `{backend_name}`"
            ))
        })?;
        let observer = get("observer").map(ObserverKind::parse).transpose()?;
        let weight_observer = get("weight-observer")
            .map(ObserverKind::parse)
            .transpose()?;
        let per_tensor = matches!(get("per-tensor"), Some("true" | "1"));
        let quantize_isolated = match get("isolated") {
            None | Some("float") => false,
            Some("quantize") => true,
            Some(o) => {
                return Err(Error::invalid(format!(
                    "insert-observers: isolated={o}: expected `float` or `quantize`"
                )))
            }
        };
        let weight_dtype = match get("weight-dtype") {
            None => None,
            Some("int8") => Some(false),
            Some("uint8") => Some(true),
            Some(o) => {
                return Err(Error::invalid(format!(
                    "insert-observers: weight-dtype `{o}` (int8, uint8)"
                )))
            }
        };
        let qconfigs = mapping
            .global
            .iter_mut()
            .chain(mapping.object_type.values_mut().flatten())
            .chain(mapping.name.values_mut().flatten());
        for q in qconfigs {
            if let Some(o) = &observer {
                q.activation.observer = o.clone();
            }
            if let Some(o) = &weight_observer {
                q.weight.observer = o.clone();
            }
            if per_tensor {
                q.weight = per_tensor_weight(&q.weight);
            }
            match weight_dtype {
                Some(true) => q.weight = u8_weight(&q.weight),
                Some(false) => q.weight = s8_weight(&q.weight),
                None => {}
            }
        }
        let mut p = InsertObservers::new(backend, mapping);
        p.options = options;
        p.quantize_isolated = quantize_isolated;
        Ok(p)
    }
}

/// The asymmetric uint8 version of a weight observer config (QNNPACK's native weights: u8
/// with a zero point, run by u8×u8 kernels without the s8 saturation hazard).
fn u8_weight(c: &ObserverConfig) -> ObserverConfig {
    use crate::observe::{QDtype, QScheme};
    let mut c = c.clone();
    c.dtype = QDtype::QUInt8;
    c.qscheme = match c.qscheme {
        QScheme::PerChannelSymmetric | QScheme::PerChannelAffine => QScheme::PerChannelAffine,
        QScheme::PerTensorSymmetric | QScheme::PerTensorAffine => QScheme::PerTensorAffine,
    };
    c
}

/// The int8 version of a weight observer config: the qnnpack preset's symmetric u8 weights
/// (zero point 128) become s8 with zero point 0, the same grid; other configs keep their
/// scheme (an affine one gets an s8 zero point).
fn s8_weight(c: &ObserverConfig) -> ObserverConfig {
    use crate::observe::QDtype;
    let mut c = c.clone();
    c.dtype = QDtype::QInt8;
    c
}

/// The per-tensor version of a weight observer config.
fn per_tensor_weight(c: &ObserverConfig) -> ObserverConfig {
    use crate::observe::QScheme;
    let mut c = c.clone();
    c.qscheme = if c.qscheme.is_symmetric() {
        QScheme::PerTensorSymmetric
    } else {
        QScheme::PerTensorAffine
    };
    c.observer = match c.observer {
        ObserverKind::PerChannelMinMax => ObserverKind::MinMax,
        ObserverKind::MovingAveragePerChannel => ObserverKind::MovingAverage,
        o => o,
    };
    c
}

impl Pass for InsertObservers {
    fn name(&self) -> &'static str {
        "insert-observers"
    }

    fn options(&self) -> Vec<(String, String)> {
        self.options.clone()
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        self.annotate_graph(&mut model.graph, cx)
    }
}

impl InsertObservers {
    /// Annotates `g`, then the branches of its If nodes (each branch is quantized on
    /// its own, as a graph; values it reads from outside are observed where it reads
    /// them). Loop and Scan bodies stay float: an observer there would see one
    /// iteration's value per run.
    fn annotate_graph(&self, g: &mut Graph, cx: &mut PassContext) -> Result<()> {
        let keep_float = self.island_consumers(g)?;
        let (order, _) = self.annotate_level(g, cx, &keep_float)?;
        for &n in &order {
            if !g.node(n).op().is_some_and(|op| op.has_subgraphs()) {
                continue;
            }
            if g.node(n).is_op("If") {
                let op = g.node_mut(n).op_mut().expect("an op");
                for a in op.attrs.values_mut() {
                    for sg in a.subgraphs_mut() {
                        self.annotate_graph(sg, cx)?;
                    }
                }
            } else {
                cx.note(
                    g.display_node_name(n),
                    format!(
                        "stays float, body included: ops inside {} bodies are not quantized (an observer there sees one iteration per run)",
                        g.node(n).op_type()
                    ),
                );
            }
        }
        Ok(())
    }

    /// The units (by any of their nodes) that stay float so that no float Conv/Gemm is
    /// left as an island between a DequantizeLinear and a QuantizeLinear: ONNX Runtime
    /// fuses such a unit into an int8 op (quantizing float weights itself, per tensor),
    /// so the model it runs would not be the one measured. The unit's int8 readers
    /// stay float too (their weights stay int8), which leaves its output float. A fixed
    /// point over trial annotations of a copy of `g` (this graph level only).
    fn island_consumers(&self, g: &Graph) -> Result<BTreeMap<NodeId, String>> {
        let mut keep_float: BTreeMap<NodeId, String> = BTreeMap::new();
        // Each round floats at least one more unit, so this ends; the bound is a guard.
        for _ in 0..=g.node_ids().count() {
            let mut trial = g.clone();
            let mut scratch = PassContext::new();
            let (_, int8) = self.annotate_level(&mut trial, &mut scratch, &keep_float)?;
            let mut grew = false;
            for (island, out) in float_islands(&trial, &int8) {
                let why = format!(
                    "reads the output of `{}`, kept float: an int8 op here would leave that Conv/Gemm between a DequantizeLinear and a QuantizeLinear, which ONNX Runtime fuses into int8 (quantizing its float weights itself)",
                    g.display_node_name(island)
                );
                for (c, _) in trial.consumers(out) {
                    if int8.contains(&c) && !keep_float.contains_key(&c) {
                        keep_float.insert(c, why.clone());
                        grew = true;
                    }
                }
            }
            if !grew {
                break;
            }
        }
        Ok(keep_float)
    }

    /// Annotates the units of `g` itself (not its branches), `keep_float`'s units kept
    /// float with int8 weights; returns the topological order.
    fn annotate_level(
        &self,
        g: &mut Graph,
        cx: &mut PassContext,
        keep_float: &BTreeMap<NodeId, String>,
    ) -> Result<(Vec<NodeId>, BTreeSet<NodeId>)> {
        let order = g.topo_order().map_err(|e| Error::invalid(e.to_string()))?;
        // Units in order of their first node; lone ops are units of one.
        let mut units: Vec<Vec<NodeId>> = vec![];
        let mut unit_index: BTreeMap<u32, usize> = BTreeMap::new();
        for &n in &order {
            let node = g.node(n);
            if node.op().is_none() {
                continue;
            }
            match &node.unit {
                Some(u) => match unit_index.get(&u.id) {
                    Some(&i) => units[i].push(n),
                    None => {
                        unit_index.insert(u.id, units.len());
                        units.push(vec![n]);
                    }
                },
                None => units.push(vec![n]),
            }
        }
        // Decomposed LayerNormalization / Gelu: decided as one op of that type.
        let mut float_nodes: BTreeMap<NodeId, String> = BTreeMap::new();
        let mut handled: BTreeSet<NodeId> = Default::default();
        // Units that got observers, with their pattern name.
        let mut quantized: Vec<(Vec<NodeId>, String)> = vec![];
        let mut weight_only: Vec<(ValueId, QuantAnnotation)> = vec![];
        for c in find_composites(g) {
            let first_name = g.node(c.nodes[0]).name.clone();
            let resolved = self.mapping.resolve(c.op_type, &first_name);
            let kept = c.nodes.iter().find_map(|n| keep_float.get(n));
            let why = match resolved.qconfig {
                _ if self.float_units.contains_key(&first_name) => {
                    self.float_units[&first_name].clone()
                }
                _ if kept.is_some() => kept.expect("checked").clone(),
                None => format!("qconfig is None ({})", resolved.rule),
                Some(_) if self.backend.single(c.op_type).is_none() => {
                    format!("{} has no int8 kernel on {}", c.op_type, self.backend.name)
                }
                Some(q) => {
                    // Quantized as the one op it is: its input and its output
                    // are observed, its inner values (x·relu6(x+3) spans far
                    // more than the result) are not.
                    let q = q.clone();
                    if let Some(name) = self.annotate_composite(g, &c, &q, cx) {
                        quantized.push((c.nodes.clone(), name));
                    }
                    for &n in &c.nodes {
                        handled.insert(n);
                    }
                    continue;
                }
            };
            for &n in &c.nodes {
                float_nodes.insert(n, format!("part of a decomposed {} ({why})", c.op_type));
            }
        }
        // Powers and normalization statistics no pattern matched.
        for (n, why) in fragile_nodes(g) {
            if !handled.contains(&n) {
                float_nodes.entry(n).or_insert(why);
            }
        }
        for nodes in units {
            if nodes.iter().all(|n| handled.contains(n)) {
                continue;
            }
            // A calibration-time rule (its unit keeps int8 weights), else a speed rule
            // unless the QConfigMapping names the node (then it is quantized as asked). A
            // speed rule's unit keeps float weights: with int8 ones ONNX Runtime would
            // dequantize them on every run and could not reorder them into its blocked
            // float layout, which is what makes the float op the faster one.
            let first = g.node(nodes[0]);
            let named = || {
                self.mapping
                    .resolve(first.op_type(), &first.name)
                    .rule
                    .starts_with("name ")
            };
            let calibration_rule = self
                .float_units
                .get(&first.name)
                .or_else(|| nodes.iter().find_map(|n| keep_float.get(n)))
                .cloned();
            if let Some(w) = calibration_rule
                .as_ref()
                .and_then(|_| self.weight_only(g, nodes[0]))
            {
                weight_only.push(w);
            }
            let rule = calibration_rule.or_else(|| {
                slow_int8::float_is_faster(g, nodes[0])
                    .filter(|_| !named())
                    .map(str::to_string)
            });
            let rule = rule.as_ref();
            if let Some(why) = rule.or_else(|| nodes.iter().find_map(|n| float_nodes.get(n))) {
                for &n in &nodes {
                    cx.note(g.display_node_name(n), format!("stays float: {why}"));
                }
                continue;
            }
            if let Some(name) = self.annotate_unit(g, &nodes, cx) {
                quantized.push((nodes, name));
            }
        }
        if !self.quantize_isolated {
            drop_isolated(g, &mut quantized, cx);
        }
        // Units a calibration-time rule keeps float keep int8 weights.
        for (w, a) in weight_only {
            if g.value(w).quant.is_none() {
                g.value_mut(w).quant = Some(a);
                cx.count("weight-only", 1);
            }
        }
        let int8: BTreeSet<NodeId> = quantized
            .iter()
            .flat_map(|(nodes, _)| nodes.iter().copied())
            .collect();
        note_float_islands(g, &int8, cx);
        warn_saturating_weights(g, &int8, cx);
        for (_, name) in &quantized {
            cx.count(name, 1);
        }
        Ok((order, int8))
    }
}

impl InsertObservers {
    /// The int8 weight annotation of a Conv/ConvTranspose/Gemm/MatMul kept
    /// float by a calibration-time rule: its activations stay float, its
    /// weights are stored in int8 (a DequantizeLinear before the float op).
    fn weight_only(&self, g: &Graph, first: NodeId) -> Option<(ValueId, QuantAnnotation)> {
        let node = g.node(first);
        if !COMPUTE_OPS.contains(&node.op_type()) {
            return None;
        }
        let q = self
            .mapping
            .resolve(node.op_type(), &node.name)
            .qconfig?
            .clone();
        let w = node.inputs.get(1).copied().flatten()?;
        let t = g.const_tensor(w).filter(|t| t.dtype == DataType::F32)?;
        // Depthwise weights are few bytes, and their rounding reaches the
        // output unaveraged: they stay float.
        if is_depthwise(g, first, t) {
            return None;
        }
        let axis = output_channel_axis(g, first, t.dims.len());
        // Float compute cannot saturate: all 8 bits.
        let mut config = q.weight;
        config.reduce_range = false;
        Some((w, QuantAnnotation::Weight { config, axis }))
    }

    /// A decomposed op the backend supports: observe its real-valued input
    /// and its output, like the single op it stands for.
    fn annotate_composite(
        &self,
        g: &mut Graph,
        c: &Composite,
        qconfig: &crate::qconfig::QConfig,
        cx: &mut PassContext,
    ) -> Option<String> {
        let first = c.nodes[0];
        let last = *c.nodes.last().expect("non-empty composite");
        let x = g
            .node(first)
            .inputs
            .iter()
            .flatten()
            .copied()
            .find(|&v| g.const_tensor(v).is_none());
        let out = g.node(last).outputs.first().copied().flatten();
        let (Some(x), Some(out)) = (x, out) else {
            return None;
        };
        if g.value(x).ty.dtype() != Some(DataType::F32) {
            return None;
        }
        if g.value(x).quant.is_none() {
            g.value_mut(x).quant = Some(QuantAnnotation::Observe(qconfig.activation.clone()));
        }
        g.value_mut(out).quant = Some(QuantAnnotation::Observe(qconfig.activation.clone()));
        let _ = cx;
        Some(c.op_type.to_string())
    }

    fn pattern_for(&self, g: &Graph, nodes: &[NodeId]) -> Option<&PatternConfig> {
        let first = g.node(nodes[0]);
        match &first.unit {
            Some(u) => self.backend.patterns.iter().find(|p| p.name == u.pattern),
            None => self.backend.single(first.op_type()),
        }
    }

    /// Observes what the unit needs; returns its pattern name when it is
    /// quantized (counted once the light-op clean-up has run).
    fn annotate_unit(
        &self,
        g: &mut Graph,
        nodes: &[NodeId],
        cx: &mut PassContext,
    ) -> Option<String> {
        let first = nodes[0];
        let last = *nodes.last().expect("non-empty unit");
        let name = g.display_node_name(first);
        let op_type = g.node(first).op_type().to_string();
        // Shapes, indices and masks computed in integers are not signals.
        if let Some(out) = g.node(last).outputs.first().copied().flatten() {
            let dt = g.value(out).ty.dtype();
            if dt.is_some_and(|d| d != DataType::F32) {
                cx.note(
                    name,
                    format!(
                        "stays float: not a real-valued signal (its output is {})",
                        dtype_name(dt)
                    ),
                );
                return None;
            }
        }
        if g.node(first).op().is_some_and(|op| op.has_subgraphs()) {
            return None; // noted once below, with the subgraph rule
        }
        // An embedding lookup: `quantize-embeddings` stores its table as int8 rows, which
        // one activation scale for the whole table would serve worse.
        if nodes.len() == 1 && super::is_embedding_lookup(g, first) {
            return None;
        }
        let Some(pattern) = self.pattern_for(g, nodes).cloned() else {
            cx.note(
                name,
                format!(
                    "stays float: {op_type} has no int8 kernel on {}",
                    self.backend.name
                ),
            );
            return None;
        };
        let resolved = self.mapping.resolve(&op_type, &g.node(first).name);
        let Some(qconfig) = resolved.qconfig.cloned() else {
            cx.note(
                name,
                format!("stays float: qconfig is None ({})", resolved.rule),
            );
            return None;
        };
        let out = g.node(last).outputs.first().copied().flatten()?;
        if g.value(out).ty.dtype() != Some(DataType::F32) {
            cx.note(
                name,
                format!(
                    "stays float: not a real-valued signal (its output is {})",
                    dtype_name(g.value(out).ty.dtype())
                ),
            );
            return None;
        }
        // Inputs: of the first node, plus the other operand of later chain
        // ops (the residual of Conv + Add + Relu).
        let mut data: Vec<ValueId> = vec![];
        let mut weight: Option<ValueId> = None;
        for (slot, v) in g.node(first).inputs.iter().enumerate() {
            let Some(v) = *v else { continue };
            if Some(slot) == pattern.weight_input {
                weight = Some(v);
                continue;
            }
            if Some(slot) == pattern.bias_input {
                continue;
            }
            if slot == 0 || pattern.data_inputs == DataInputs::All {
                data.push(v);
            }
        }
        // Inside a unit, the value entering an Add (the Conv/Gemm output of
        // Conv + Add + Relu) is observed too: ONNX Runtime has no fused
        // QDQ unit for it, and recognises DQ → Conv → Q and then a QDQ Add
        // only if that value is quantized (otherwise the Conv runs in float).
        let mut inner: Vec<ValueId> = vec![];
        for w in nodes.windows(2) {
            let prev_out = g.node(w[0]).outputs.first().copied().flatten();
            if g.node(w[1]).op_type() == "Add" {
                inner.extend(prev_out);
            }
            for v in g.node(w[1]).inputs.iter().flatten() {
                if Some(*v) != prev_out && g.node(w[1]).op_type() == "Add" {
                    data.push(*v);
                }
            }
        }
        // Real-valued signals only: f32 tensors.
        if let Some(&bad) = data
            .iter()
            .find(|&&v| g.value(v).ty.dtype() != Some(DataType::F32))
        {
            cx.note(
                name,
                format!(
                    "stays float: not a real-valued signal (an input is {})",
                    dtype_name(g.value(bad).ty.dtype())
                ),
            );
            return None;
        }
        if data.is_empty() {
            cx.note(name, "stays float: no real-valued input");
            return None;
        }
        for &v in data.iter().chain(&inner) {
            if g.value(v).quant.is_none() {
                g.value_mut(v).quant = Some(QuantAnnotation::Observe(qconfig.activation.clone()));
            }
        }
        if let Some(w) = weight {
            match g.const_tensor(w) {
                Some(t) if t.dtype == DataType::F32 => {
                    let axis = output_channel_axis(g, first, t.dims.len());
                    let mut config = qconfig.weight.clone();
                    // reduce_range guards the u8×s8 pair sums of GEMM kernels;
                    // depthwise kernels accumulate each tap in int32 and need
                    // no spare bit, while their few taps per channel need all 8.
                    if is_depthwise(g, first, t) {
                        config.reduce_range = false;
                    }
                    g.value_mut(w).quant = Some(QuantAnnotation::Weight { config, axis });
                }
                _ if g.value(w).ty.dtype() == Some(DataType::F32) => {
                    // MatMul of two activations: the second is observed too.
                    if g.value(w).quant.is_none() {
                        g.value_mut(w).quant =
                            Some(QuantAnnotation::Observe(qconfig.activation.clone()));
                    }
                }
                _ => {
                    cx.note(name, "stays float: weight is not f32");
                    return None;
                }
            }
        }
        let annotation = match pattern.observation {
            Observation::OwnOutput => QuantAnnotation::Observe(qconfig.activation.clone()),
            Observation::ShareWithInput => QuantAnnotation::ShareWith(data[0]),
            Observation::FixedRange { min, max } => QuantAnnotation::Fixed {
                config: qconfig.activation.clone(),
                min,
                max,
            },
        };
        g.value_mut(out).quant = Some(annotation);
        Some(pattern.name.to_string())
    }
}

/// Elements of a constant operand from which int8 storage pays on its own.
const BIG_CONSTANT: usize = 4096;

/// Ops whose int8 form is worth a Q/DQ pair on its own: the GEMM-shaped ones.
const COMPUTE_OPS: &[&str] = &["Conv", "ConvTranspose", "Gemm", "MatMul"];

/// Elementwise and data-movement units whose output no int8 unit reads
/// (a residual Add before a float LayerNorm, a Mul feeding a graph output)
/// stay float: their int8 form would be dequantized at once, so it only adds
/// rounding, and runs no faster. Dropping one can isolate its producers, so
/// this runs to a fixed point; then observers that no remaining unit needs
/// are removed.
fn drop_isolated(g: &mut Graph, quantized: &mut Vec<(Vec<NodeId>, String)>, cx: &mut PassContext) {
    loop {
        let member: BTreeMap<NodeId, usize> = quantized
            .iter()
            .enumerate()
            .flat_map(|(i, (nodes, _))| nodes.iter().map(move |&n| (n, i)))
            .collect();
        let isolated = quantized.iter().position(|(nodes, _)| {
            if nodes
                .iter()
                .any(|&n| COMPUTE_OPS.contains(&g.node(n).op_type()))
            {
                return false;
            }
            // A lookup in a large constant table (an embedding Gather) keeps
            // its int8 table: a quarter of the size, and no runtime
            // dequantization of the whole table.
            let big_table = |&n: &NodeId| {
                g.node(n).inputs.iter().flatten().any(|&v| {
                    g.const_tensor(v)
                        .is_some_and(|t| t.dtype == DataType::F32 && t.len() >= BIG_CONSTANT)
                })
            };
            if nodes.iter().any(big_table) {
                return false;
            }
            let last = *nodes.last().expect("non-empty unit");
            g.node(last).outputs.iter().flatten().all(|&out| {
                g.consumers(out)
                    .iter()
                    .all(|(c, _)| nodes.contains(c) || !member.contains_key(c))
            })
        });
        let Some(i) = isolated else { break };
        let (nodes, _) = quantized.remove(i);
        for &n in &nodes {
            cx.note(
                g.display_node_name(n),
                "stays float: its output feeds no int8 op, so int8 here would only add rounding",
            );
        }
    }
    // Keep an observer only where a quantized unit produces or reads the value.
    let member: BTreeSet<NodeId> = quantized
        .iter()
        .flat_map(|(nodes, _)| nodes.iter().copied())
        .collect();
    let annotated: Vec<ValueId> = g
        .value_ids()
        .filter(|&v| g.value(v).quant.is_some())
        .collect();
    for v in annotated {
        let producer = g.producer(v);
        let needed =
            member.contains(&producer) || g.consumers(v).iter().any(|(c, _)| member.contains(c));
        if !needed {
            g.value_mut(v).quant = None;
        }
    }
}

/// The float Conv/ConvTranspose/Gemm (float weights or int8 weight-only ones) and
/// weight-only MatMuls that sit between a DequantizeLinear and a QuantizeLinear (input
/// observed; output observed after at most a single-consumer Relu/Clip chain), with that
/// observed output. ONNX Runtime fuses such a unit into an int8 op, quantizing float
/// weights itself per tensor (its `WeightBiasQuantization`), so there the unit is not float.
fn float_islands(g: &Graph, int8: &BTreeSet<NodeId>) -> Vec<(NodeId, ValueId)> {
    let island = |n: NodeId| -> Option<ValueId> {
        let node = g.node(n);
        if int8.contains(&n) || !COMPUTE_OPS.contains(&node.op_type()) {
            return None;
        }
        let x = node.inputs.first().copied().flatten()?;
        let w = node.inputs.get(1).copied().flatten()?;
        let t = g.const_tensor(w).filter(|t| t.dtype == DataType::F32)?;
        let weight_only = matches!(g.value(w).quant, Some(QuantAnnotation::Weight { .. }));
        let fused = match node.op_type() {
            "Conv" | "ConvTranspose" | "Gemm" => g.value(w).quant.is_none() || weight_only,
            _ => weight_only,
        };
        if !fused || g.value(x).quant.is_none() || t.dims.is_empty() {
            return None;
        }
        qdq::quantized_output(g, n, |v| g.value(v).quant.is_some())
    };
    g.node_ids()
        .filter_map(|n| island(n).map(|v| (n, v)))
        .collect()
}

/// Names the float islands left ([`float_islands`]; `insert-observers` keeps their int8
/// readers float, so only an island whose output some other op needs quantized is left).
fn note_float_islands(g: &Graph, int8: &BTreeSet<NodeId>, cx: &mut PassContext) {
    for (n, _) in float_islands(g, int8) {
        cx.warn(
            g.display_node_name(n),
            "float here, but ONNX Runtime runs it in int8: between a DequantizeLinear and a QuantizeLinear, it fuses the unit into an int8 op (quantizing float weights itself, per tensor)",
        );
    }
}

/// Warns once when int8 units get s8 weights beyond ±64 (full-range qint8, from
/// `--weight-dtype int8` or a qconfig): ONNX Runtime's AVX2 u8×s8 GEMM kernels without VNNI
/// (`vpmaddubsw`) saturate 16-bit pair sums on them, so the model scores lower there than
/// its QDQ graph (transformer_layer: 21.5 dB against 31.7 on the calibration data).
/// Depthwise Convs are not concerned (the fbgemm preset gives them all 8 bits).
fn warn_saturating_weights(g: &Graph, int8: &BTreeSet<NodeId>, cx: &mut PassContext) {
    use crate::observe::QDtype;
    let names: Vec<String> = int8
        .iter()
        .copied()
        .filter(|&n| {
            let w = g.node(n).inputs.get(1).copied().flatten();
            // Depthwise: ORT's depthwise kernel widens to 16 bits first (exact).
            if w.and_then(|w| g.const_tensor(w))
                .is_some_and(|t| is_depthwise(g, n, t))
            {
                return false;
            }
            w.and_then(|w| g.value(w).quant.as_ref())
                .is_some_and(|q| match q {
                    QuantAnnotation::Weight { config, .. } => {
                        let (lo, hi) = config.spec().qrange();
                        matches!(config.dtype, QDtype::QInt8 | QDtype::Int8)
                            && (lo < -64 || hi > 64)
                    }
                    _ => false,
                })
        })
        .map(|n| g.display_node_name(n))
        .collect();
    if let Some(first) = names.first() {
        cx.warn(
            "weights",
            format!(
                "{} int8 unit(s) ({first}{}) have full-range s8 weights: ONNX Runtime's AVX2 kernels without VNNI saturate on them, so the model can score lower there than here; the fbgemm preset (7-bit weights) or --weight-dtype uint8 avoid it",
                names.len(),
                if names.len() > 1 { ", ..." } else { "" }
            ),
        );
    }
}

/// A depthwise Conv: one input channel per group (`[C, 1, k...]` weights,
/// `group` = C).
fn is_depthwise(g: &Graph, n: NodeId, w: &Tensor) -> bool {
    let node = g.node(n);
    let group = node
        .op()
        .and_then(|o| o.attr("group"))
        .and_then(|a| a.as_int())
        .unwrap_or(1);
    node.op_type() == "Conv"
        && group > 1
        && w.dims.get(1) == Some(&1)
        && w.dims.first() == Some(&group)
}

/// The output-channel axis of a weight: 0 for Conv, 1 for ConvTranspose,
/// the output axis for Gemm (0 with transB) and MatMul (last).
fn output_channel_axis(g: &Graph, n: NodeId, rank: usize) -> i64 {
    let node = g.node(n);
    match node.op_type() {
        "ConvTranspose" => 1,
        "Gemm" => {
            let trans_b = node
                .op()
                .and_then(|o| o.attr("transB"))
                .and_then(|a| a.as_int())
                .unwrap_or(0);
            if trans_b != 0 {
                0
            } else {
                1
            }
        }
        "MatMul" => rank as i64 - 1,
        _ => 0,
    }
}

/// A dtype for messages (`unknown` when inference could not tell).
fn dtype_name(d: Option<DataType>) -> String {
    d.map_or_else(
        || "of a type inference could not determine".to_string(),
        |d| d.to_string(),
    )
}
