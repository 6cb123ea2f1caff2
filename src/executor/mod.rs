//! The native executor: plans a model once, then runs it many times.
//!
//! Architecture: executor → kernels. [`Executor::new`] walks the graph in topological order and
//! builds one step per node:
//! - constants are converted once; nodes whose inputs are all constant are evaluated at
//!   planning time (constant folding);
//! - QDQ node units (`DQ(x) + DQ(w) [+ DQ(bias)] → Conv/Gemm/MatMul [→ Relu/Clip] → Q`) are
//!   lowered to the fbgemm integer kernels with prepacked weights and the output stage fused
//!   (see [`lower`]); QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger,
//!   DynamicQuantizeLinear and standalone Q/DQ run on the same integer code ([`qlinear`]);
//! - with [`Backend::Qnnpack`] the same units (and QLinearConv / QLinearMatMul, u8 Add and
//!   average pools) run on the u8×u8 qnnpack-style kernels instead ([`q8`]); a unit those
//!   kernels cannot take stays on fbgemm and its description says `[fbgemm fallback: why]`;
//! - everything else runs through the float ops of [`ops`];
//! - steps whose results are never needed are dropped, and every intermediate value is freed
//!   right after its last use, so peak memory follows the live set, not the graph size.
//!
//! An op that cannot be run is refused at planning time with its op type and node name
//! (all such nodes are listed). Bad inputs (unknown or missing names, wrong type or shape)
//! are errors of [`Executor::run`]; kernels never panic on them.

pub mod cli;
mod composite;
mod contrib;
mod control;
mod layout;
mod lower;
pub(crate) mod ops;
mod q8;
mod qlinear;
pub mod value;

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::ir::{DataType, Dim, Model, NodeKind, Tensor, ValueId};
pub use value::{Array, ArrayData};

/// Which integer kernel family runs the quantized ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// u8 activations × s8 weights, float requantization (`kernels::fbgemm`).
    #[default]
    Fbgemm,
    /// u8 × u8 with fixed-point requantization (`kernels::qnnpack`, see [`q8`]).
    Qnnpack,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Backend, String> {
        match s {
            "fbgemm" => Ok(Backend::Fbgemm),
            "qnnpack" => Ok(Backend::Qnnpack),
            _ => Err(format!("unknown backend `{s}` (fbgemm, qnnpack)")),
        }
    }
}

/// Planning options.
#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    pub backend: Backend,
    /// Worker threads for the integer kernels (rows of a quantized GEMM, images of a
    /// quantized convolution are split among them); float ops run on the calling thread.
    pub threads: usize,
    /// Which QDQ node units become integer kernels.
    pub lowering: Lowering,
    /// Tie rule of the qnnpack backend's fixed-point requantization: `HalfEven` (default,
    /// "precise": ONNX's rounding of the exact product) or `HalfAway` (QNNPACK's).
    pub q8_rounding: crate::kernels::qnnpack::Rounding,
    /// Keep values NHWC through elementwise ops and into global pools between quantized
    /// convs (`executor::layout`; default). Off: only conv → conv values stay NHWC (the
    /// results are the same bits either way; tests compare the two).
    pub nhwc_regions: bool,
}

/// How much of a QDQ graph is lowered to integer kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Lowering {
    /// Nothing: QDQ units run as written, in float (to measure what lowering changes).
    Off,
    /// The units ONNX Runtime also runs in integer arithmetic (default): `DQ → op → Q`, with
    /// a Relu/Clip in between only where it is redundant with the output saturation. Units
    /// whose result the graph keeps in float stay float, so results match ONNX Runtime's
    /// bit for bit except where the folded requantization multiplier rounds differently.
    #[default]
    OrtCompatible,
    /// Also fuse non-redundant Relu/Clip into the output stage and lower units whose output
    /// stays float (dequantizing output stage). Faster; differs from the float graph by
    /// ±1 LSB at those units, which downstream layers may amplify.
    All,
}

impl std::str::FromStr for Lowering {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Lowering, String> {
        match s {
            "off" => Ok(Lowering::Off),
            "ort" => Ok(Lowering::OrtCompatible),
            "all" => Ok(Lowering::All),
            _ => Err(format!("unknown lowering `{s}` (off, ort, all)")),
        }
    }
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions {
            backend: Backend::Fbgemm,
            threads: 1,
            lowering: Lowering::OrtCompatible,
            q8_rounding: crate::kernels::qnnpack::Rounding::HalfEven,
            nhwc_regions: true,
        }
    }
}

/// What runs of a model did, counted from the shapes they ran on: a measure of their cost
/// that is the same on every machine and under any load, for budgets that must not make
/// the same command give different results ([`Work::nominal_seconds`]). The steps of
/// control-flow bodies (If, Loop, Scan) count only by their inputs and outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Multiply-accumulates of convolutions, matrix products and recurrent cells.
    pub macs: u64,
    /// Elements read and written by every step.
    pub elements: u64,
    /// Steps run.
    pub steps: u64,
}

impl Work {
    pub fn add(&mut self, other: Work) {
        self.macs += other.macs;
        self.elements += other.elements;
        self.steps += other.steps;
    }

    /// The work in seconds at fixed single-thread rates of a current x86 core running the
    /// float kernels: 16 GMAC/s, 1 G elements/s and 1 µs per step (set against this
    /// executor's float pass on the bundled and third-party models on a 2-core Zen 3,
    /// which it matches within a factor of about 3 either way).
    pub fn nominal_seconds(&self) -> f64 {
        self.macs as f64 / 16e9 + self.elements as f64 / 1e9 + self.steps as f64 * 1e-6
    }
}

/// The work of one step that ran `kind` (the op type) from `ins` to `outs`.
fn step_work(kind: &str, ins: &[Option<&Array>], outs: &[Array]) -> Work {
    let elements = ins.iter().flatten().map(|a| a.len()).sum::<usize>()
        + outs.iter().map(Array::len).sum::<usize>();
    let dims = |i: usize| ins.get(i).copied().flatten().map(|a| a.shape.as_slice());
    let out_len = outs.first().map_or(0, Array::len) as u64;
    let prod = |d: &[usize]| d.iter().product::<usize>() as u64;
    let macs = match kind {
        // Each output sums C_in/group × kernel taps: the weight's elements per out channel.
        "Conv" => match dims(1) {
            Some(w) if !w.is_empty() && w[0] > 0 => out_len * prod(&w[1..]),
            _ => 0,
        },
        // Each input element spreads over C_out/group × kernel taps.
        "ConvTranspose" => match (dims(0), dims(1)) {
            (Some(x), Some(w)) if !w.is_empty() => prod(x) * prod(&w[1..]),
            _ => 0,
        },
        "MatMul" | "Gemm" => match (dims(0), outs.first()) {
            // K: A's elements per output row (Gemm's A may be transposed, MatMul's batched).
            (Some(a), Some(y)) if !a.is_empty() && !y.shape.is_empty() => {
                let rows = prod(&y.shape[..y.shape.len() - 1]).max(1);
                let k = if kind == "Gemm" {
                    prod(a) / rows
                } else {
                    *a.last().unwrap_or(&1) as u64
                };
                out_len * k
            }
            _ => 0,
        },
        // Per time step and batch row, every gate weight (input and recurrent) once.
        "LSTM" | "GRU" | "RNN" => match (dims(0), dims(1), dims(2)) {
            (Some(x), Some(w), Some(r)) if x.len() == 3 => {
                (x[0] * x[1]) as u64 * (prod(w) + prod(r))
            }
            _ => 0,
        },
        _ => 0,
    };
    Work {
        macs,
        elements: elements as u64,
        steps: 1,
    }
}

/// A float16 constant read only by `Cast(to=FLOAT)` (a weight stored in f16, see the
/// `store-weights-fp16` pass), held widened to f32: f16 → f32 is exact, so the Casts
/// fold to the same values. Other f16 constants are refused by `Array::from_tensor`.
fn widened_f16_weight(g: &crate::ir::Graph, v: ValueId, t: &Tensor) -> Option<Array> {
    if t.dtype != DataType::F16 || g.is_graph_output(v) {
        return None;
    }
    let casts_to_f32 = g.consumers(v).iter().all(|&(c, slot)| {
        let node = g.node(c);
        slot == crate::ir::Slot::Input(0)
            && node.is_op("Cast")
            && node
                .op()
                .and_then(|op| op.attr("to"))
                .and_then(|a| a.as_int())
                == Some(DataType::F32.onnx_code() as i64)
    });
    if !casts_to_f32 {
        return None;
    }
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<_>>>()?;
    Some(Array::f32(shape, t.to_f32_vec()?))
}

/// Named tensors as run-time arrays.
fn input_arrays<'a>(inputs: &[(&'a str, &Tensor)]) -> Result<Vec<(&'a str, Array)>> {
    inputs
        .iter()
        .map(|(n, t)| {
            Array::from_tensor(t)
                .map(|a| (*n, a))
                .map_err(|e| Error::invalid(format!("input `{n}`: {e}")))
        })
        .collect()
}

/// A step's input or output values while planning.
type ValueList = Vec<Option<ValueId>>;

struct Step {
    /// `OpType` and node name, for errors.
    label: String,
    /// What runs, for profiles: the op type, or the lowered unit's description.
    kind: String,
    kernel: Box<dyn ops::Kernel>,
    inputs: Vec<Option<usize>>,
    outputs: Vec<Option<usize>>,
    /// Slots whose last use is this step.
    free_after: Vec<usize>,
}

/// A graph input as the executor expects it.
#[derive(Clone, Debug)]
pub struct InputSpec {
    pub name: String,
    pub dtype: Option<DataType>,
    /// Declared dims; `None` entries are symbolic or unknown.
    pub shape: Option<Vec<Option<usize>>>,
    slot: usize,
}

/// A planned model. Immutable and `Sync`: several threads may call [`Executor::run`].
pub struct Executor {
    steps: Vec<Step>,
    n_slots: usize,
    /// Constant values by slot (a vector: looked up for every step input on every run).
    consts: Vec<Option<Array>>,
    inputs: Vec<InputSpec>,
    outputs: Vec<(String, usize)>,
    lowered: Vec<String>,
    /// The regions kept NHWC beyond conv → conv (their steps), for reports.
    nhwc_regions: Vec<String>,
    options: ExecutorOptions,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("steps", &self.steps.len())
            .field("lowered", &self.lowered)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// Plans `model` (see the module documentation).
    pub fn new(model: &Model, options: ExecutorOptions) -> Result<Executor> {
        Executor::plan(model, options, false)
    }

    /// [`Executor::new`]; in a subgraph (`outer_refs_are_inputs`), the values read from
    /// the enclosing graph are inputs, by name.
    fn plan(
        model: &Model,
        options: ExecutorOptions,
        outer_refs_are_inputs: bool,
    ) -> Result<Executor> {
        if options.threads == 0 {
            return Err(Error::invalid("threads must be at least 1"));
        }
        crate::kernels::heap::retain_freed_memory();
        let g = &model.graph;
        let opset = model.onnx_opset();
        let order = g
            .topo_order()
            .map_err(|e| Error::invalid(format!("cannot order the graph: {e}")))?;

        // Constants first: lowering looks at weights and quantization parameters wherever
        // they sit in the order.
        let mut consts: HashMap<ValueId, Array> = HashMap::new();
        let mut bad_consts: HashMap<ValueId, String> = HashMap::new();
        for &n in &order {
            if let NodeKind::Const(c) = &g.node(n).kind {
                let v = g.node(n).outputs[0].expect("a constant has its value");
                if let Some(a) = widened_f16_weight(g, v, &c.tensor) {
                    consts.insert(v, a);
                    continue;
                }
                match Array::from_tensor(&c.tensor) {
                    Ok(a) => {
                        consts.insert(v, a);
                    }
                    Err(e) => {
                        bad_consts.insert(v, format!("constant `{}`: {e}", g.value(v).name));
                    }
                }
            }
        }

        // Decomposed LayerNorm / Gelu: one step each, bit-identical to the nodes.
        let mut fused = if options.lowering == Lowering::Off {
            HashMap::new()
        } else {
            composite::find(g, &consts)
        };
        let mut steps: Vec<(Step, ValueList, ValueList)> = Vec::new();
        let mut absorbed: HashSet<crate::ir::NodeId> = HashSet::new();
        let mut errors: Vec<String> = Vec::new();
        let mut inputs = Vec::new();
        let mut lowered = Vec::new();
        for &n in &order {
            let node = g.node(n);
            let label = || format!("{} `{}`", node.op_type(), g.display_node_name(n));
            match &node.kind {
                NodeKind::Const(_) => continue,
                NodeKind::OuterRef if !outer_refs_are_inputs => {
                    errors.push(format!("{}: not supported", label()));
                    continue;
                }
                NodeKind::Input | NodeKind::OuterRef => {
                    let v = node.outputs[0].expect("an input has its value");
                    let val = g.value(v);
                    let tt = val.ty.tensor();
                    if let Some(dt) = tt.and_then(|t| t.dtype) {
                        if !value::supported_dtype(dt) {
                            errors.push(format!(
                                "graph input `{}`: element type {dt} is not supported",
                                val.name
                            ));
                        }
                    }
                    inputs.push(InputSpec {
                        name: val.name.clone(),
                        dtype: tt.and_then(|t| t.dtype),
                        shape: tt.and_then(|t| t.shape.as_ref()).map(|s| {
                            s.iter()
                                .map(|d| match d {
                                    Dim::Fixed(v) if *v >= 0 => Some(*v as usize),
                                    _ => None,
                                })
                                .collect()
                        }),
                        slot: v.index(),
                    });
                    continue;
                }
                NodeKind::SparseConst(_) => {
                    errors.push(format!("{}: not supported", label()));
                    continue;
                }
                NodeKind::Op(_) => {}
            }
            if absorbed.contains(&n) {
                continue;
            }
            let op = node.op().expect("an op");
            if op.has_subgraphs() {
                let standard = op.domain.is_empty() || op.domain == "ai.onnx";
                let built = match op.op_type.as_str() {
                    "If" if standard => control::build_if(model, node, &options),
                    "Loop" if standard => control::build_loop(model, node, &options),
                    "Scan" if standard => control::build_scan(model, node, &options),
                    _ => {
                        errors.push(format!(
                            "{}: control flow other than If, Loop and Scan (subgraphs) is not supported by the executor",
                            label()
                        ));
                        continue;
                    }
                };
                match built {
                    Ok(kernel) => {
                        // The captured outer values follow the node's inputs.
                        let mut ins: ValueList = node.inputs.to_vec();
                        ins.extend(node.captures.iter().map(|&v| Some(v)));
                        steps.push((
                            Step {
                                label: label(),
                                kind: op.op_type.clone(),
                                kernel,
                                inputs: vec![],
                                outputs: vec![],
                                free_after: vec![],
                            },
                            ins,
                            node.outputs.to_vec(),
                        ));
                    }
                    Err(e) => errors.push(format!("{}: {e}", label())),
                }
                continue;
            }
            for v in node.inputs.iter().flatten() {
                if let Some(e) = bad_consts.get(v) {
                    errors.push(format!("{}: {e}", label()));
                }
            }
            if let Some(f) = fused.remove(&n) {
                absorbed.extend(f.nodes.iter().copied());
                lowered.push(format!("{} ({})", label(), f.what));
                steps.push((
                    Step {
                        label: label(),
                        kind: f.what.into(),
                        kernel: f.kernel,
                        inputs: vec![],
                        outputs: vec![],
                        free_after: vec![],
                    },
                    vec![Some(f.input)],
                    vec![Some(f.output)],
                ));
                continue;
            }
            if options.lowering != Lowering::Off {
                let all = options.lowering == Lowering::All;
                let q8 = (options.backend == Backend::Qnnpack).then_some(options.q8_rounding);
                let l = lower::try_lower(g, n, &consts, opset, all, q8).and_then(|l| match l {
                    Some(l) => Ok(Some(l)),
                    None => lower::try_lower_transparent(g, n, &consts, opset),
                });
                let l = l.and_then(|l| match l {
                    Some(l) => Ok(Some(l)),
                    None => lower::try_lower_lut(g, n, &consts, opset),
                });
                let l = l.and_then(|l| match (l, q8) {
                    (Some(l), _) => Ok(Some(l)),
                    (None, Some(r)) => q8::try_lower(g, n, &consts, opset, r),
                    (None, None) => Ok(None),
                });
                let l = l.and_then(|l| match l {
                    Some(l) => Ok(Some(l)),
                    None => lower::try_lower_binary(g, n, &consts),
                });
                let l = l.and_then(|l| match l {
                    Some(l) => Ok(Some(l)),
                    None => lower::try_lower_dq_pool(g, n, &consts),
                });
                match l {
                    Ok(Some(l)) => {
                        absorbed.extend(l.absorbed.iter().copied());
                        lowered.push(format!("{} ({})", label(), l.what));
                        steps.push((
                            Step {
                                label: label(),
                                kind: format!("{} [int]", l.what),
                                kernel: l.kernel,
                                inputs: vec![],
                                outputs: vec![],
                                free_after: vec![],
                            },
                            l.inputs,
                            l.outputs,
                        ));
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        errors.push(format!("{}: {e}", label()));
                        continue;
                    }
                }
            }
            let ctx = ops::NodeCtx {
                op,
                opset,
                consts: node
                    .inputs
                    .iter()
                    .map(|v| v.and_then(|v| consts.get(&v)))
                    .collect(),
                present: node.inputs.iter().map(Option::is_some).collect(),
                n_outputs: node.outputs.len(),
            };
            // QOperator products on the qnnpack kernels (else fbgemm's, said in the list).
            let q8 = match options.backend {
                Backend::Qnnpack => match q8::qoperator(&ctx, options.q8_rounding) {
                    Ok(Some((k, uk))) => {
                        lowered.push(format!("{} (on {uk})", label()));
                        Some(k)
                    }
                    Ok(None) => None,
                    Err(why) => {
                        lowered.push(format!("{} [fbgemm fallback: {why}]", label()));
                        None
                    }
                },
                Backend::Fbgemm => None,
            };
            let kernel = match q8.map_or_else(|| ops::build(&ctx), Ok) {
                Ok(k) => k,
                Err(e) => {
                    errors.push(format!("{}: {e}", label()));
                    continue;
                }
            };
            let all_const = node.inputs.iter().flatten().all(|v| consts.contains_key(v));
            if all_const && ops::is_deterministic(&op.op_type) {
                // Constant folding: evaluate now, keep the results as constants.
                let ins: Vec<Option<&Array>> = node
                    .inputs
                    .iter()
                    .map(|v| v.and_then(|v| consts.get(&v)))
                    .collect();
                match kernel.run(&ins) {
                    Ok(outs) => {
                        for (v, a) in node.outputs.iter().zip(outs) {
                            if let Some(v) = v {
                                consts.insert(*v, a);
                            }
                        }
                    }
                    Err(e) => errors.push(format!("{}: {e}", label())),
                }
                continue;
            }
            steps.push((
                Step {
                    label: label(),
                    kind: op.qualified_name(),
                    kernel,
                    inputs: vec![],
                    outputs: vec![],
                    free_after: vec![],
                },
                node.inputs.to_vec(),
                node.outputs.to_vec(),
            ));
        }
        if !errors.is_empty() {
            let n = errors.len();
            let mut msg = format!("cannot plan the model ({n} problem(s)):");
            for e in errors.iter().take(20) {
                msg.push_str("\n  ");
                msg.push_str(e);
            }
            if n > 20 {
                msg.push_str(&format!("\n  ... and {} more", n - 20));
            }
            return Err(Error::Unsupported(msg));
        }

        // Dead steps: keep only what the outputs need (walking backwards).
        let outputs: Vec<(String, usize)> = g
            .outputs
            .iter()
            .map(|&v| (g.value(v).name.clone(), v.index()))
            .collect();
        let mut needed: HashSet<ValueId> = g.outputs.iter().copied().collect();
        let mut keep = vec![false; steps.len()];
        for (k, (_, ins, outs)) in steps.iter().enumerate().rev() {
            if outs.iter().flatten().any(|v| needed.contains(v)) {
                keep[k] = true;
                needed.extend(ins.iter().flatten().copied());
            }
        }
        let mut planned: Vec<Step> = Vec::new();
        for ((mut s, ins, outs), k) in steps.into_iter().zip(keep) {
            if k {
                s.inputs = ins.iter().map(|v| v.map(ValueId::index)).collect();
                s.outputs = outs.iter().map(|v| v.map(ValueId::index)).collect();
                planned.push(s);
            }
        }
        // Last use of every slot that is neither a constant nor a graph output.
        let out_slots: HashSet<usize> = outputs.iter().map(|o| o.1).collect();
        let slot_values: HashMap<usize, ValueId> = g.value_ids().map(|v| (v.index(), v)).collect();
        let konst = |slot: usize| slot_values.get(&slot).and_then(|v| consts.get(v));
        let scalar_const = |slot: usize| konst(slot).is_some_and(|a| a.len() == 1);
        let static_shape = |slot: usize| -> Option<Vec<Option<usize>>> {
            if let Some(a) = konst(slot) {
                return Some(a.shape.iter().map(|&d| Some(d)).collect());
            }
            match &g.value(*slot_values.get(&slot)?).ty {
                crate::ir::ValueType::Tensor(t) => t.shape.as_ref().map(|dims| {
                    dims.iter()
                        .map(|d| match d {
                            crate::ir::Dim::Fixed(n) => usize::try_from(*n).ok(),
                            _ => None,
                        })
                        .collect()
                }),
                _ => None,
            }
        };
        let nhwc_regions = layout::keep_nhwc(
            &mut planned,
            &out_slots,
            &scalar_const,
            &static_shape,
            options.nhwc_regions,
        );
        let const_slots: HashMap<usize, Array> = consts
            .into_iter()
            .filter(|(v, _)| needed.contains(v))
            .map(|(v, a)| (v.index(), a))
            .collect();
        let mut last: HashMap<usize, usize> = HashMap::new();
        for (k, s) in planned.iter().enumerate() {
            for &slot in s.inputs.iter().flatten().chain(s.outputs.iter().flatten()) {
                last.insert(slot, k);
            }
        }
        for (slot, k) in last {
            if !out_slots.contains(&slot) && !const_slots.contains_key(&slot) {
                planned[k].free_after.push(slot);
            }
        }
        let n_slots = g.value_ids().map(|v| v.index() + 1).max().unwrap_or(0);
        let mut consts: Vec<Option<Array>> = (0..n_slots).map(|_| None).collect();
        for (slot, a) in const_slots {
            consts[slot] = Some(a);
        }
        Ok(Executor {
            steps: planned,
            n_slots,
            consts,
            inputs,
            outputs,
            lowered,
            nhwc_regions,
            options,
        })
    }

    /// The graph inputs the model expects.
    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    /// Graph output names, in order.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|o| o.0.as_str()).collect()
    }

    /// The units lowered to integer kernels (`OpType \`node\` (what)`), for reports.
    pub fn lowered_units(&self) -> &[String] {
        &self.lowered
    }

    /// The regions of steps that run on NHWC values beyond conv → conv (see
    /// `executor::layout`), for reports.
    pub fn nhwc_regions(&self) -> &[String] {
        &self.nhwc_regions
    }

    /// Number of planned steps.
    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    pub fn options(&self) -> &ExecutorOptions {
        &self.options
    }

    /// Runs the model on named inputs (every graph input exactly once) and returns the graph
    /// outputs in order, with their names.
    pub fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let outs = self.run_arrays(input_arrays(inputs)?)?;
        Ok(outs.into_iter().map(|(n, a)| (n, a.to_tensor())).collect())
    }

    /// [`Executor::run`] on run-time arrays (no conversion).
    pub fn run_arrays(&self, inputs: Vec<(&str, Array)>) -> Result<Vec<(String, Array)>> {
        self.run_inner(inputs, None, None)
    }

    /// [`Executor::run`] that also adds what the run did to `work` (see [`Work`]).
    pub fn run_counted(
        &self,
        inputs: &[(&str, &Tensor)],
        work: &mut Work,
    ) -> Result<Vec<(String, Tensor)>> {
        let outs = self.run_inner(input_arrays(inputs)?, None, Some(work))?;
        Ok(outs.into_iter().map(|(n, a)| (n, a.to_tensor())).collect())
    }

    /// [`Executor::run_arrays`] that also adds each step's wall time to `profile`, keyed by
    /// what the step runs (op type, or the lowered unit's description) and the step's label
    /// (its node).
    pub fn run_profiled(
        &self,
        inputs: Vec<(&str, Array)>,
        profile: &mut HashMap<(String, String), std::time::Duration>,
    ) -> Result<Vec<(String, Array)>> {
        self.run_inner(inputs, Some(profile), None)
    }

    fn run_inner(
        &self,
        inputs: Vec<(&str, Array)>,
        mut profile: Option<&mut HashMap<(String, String), std::time::Duration>>,
        mut work: Option<&mut Work>,
    ) -> Result<Vec<(String, Array)>> {
        let mut vals: Vec<Option<Array>> = (0..self.n_slots).map(|_| None).collect();
        let mut seen = HashSet::new();
        for (name, a) in inputs {
            let spec = self.inputs.iter().find(|s| s.name == name).ok_or_else(|| {
                Error::invalid(format!(
                    "unknown input `{name}` (the model's inputs: {})",
                    self.input_names()
                ))
            })?;
            if !seen.insert(name) {
                return Err(Error::invalid(format!("input `{name}` given twice")));
            }
            if let Some(dt) = spec.dtype {
                if dt != a.dtype() {
                    return Err(Error::invalid(format!(
                        "input `{name}`: expected {dt}, got {}",
                        a.dtype()
                    )));
                }
            }
            if let Some(shape) = &spec.shape {
                let ok = shape.len() == a.rank()
                    && shape
                        .iter()
                        .zip(&a.shape)
                        .all(|(d, &s)| d.is_none_or(|d| d == s));
                if !ok {
                    let want: Vec<String> = shape
                        .iter()
                        .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
                        .collect();
                    return Err(Error::invalid(format!(
                        "input `{name}`: expected shape [{}], got {:?}",
                        want.join(", "),
                        a.shape
                    )));
                }
            }
            vals[spec.slot] = Some(a);
        }
        if let Some(missing) = self.inputs.iter().find(|s| vals[s.slot].is_none()) {
            return Err(Error::invalid(format!("missing input `{}`", missing.name)));
        }
        for s in &self.steps {
            let t0 = profile.is_some().then(std::time::Instant::now);
            // The first input moves into the kernel when this step is its last reader (a
            // view or an in-place kernel then reuses its buffer; `Kernel::run_owned`).
            let handed_over = match s.inputs.first() {
                Some(&Some(k0))
                    if work.is_none()
                        && s.free_after.contains(&k0)
                        && !s.inputs[1..].contains(&Some(k0)) =>
                {
                    vals[k0].take()
                }
                _ => None,
            };
            // A kernel should never panic on any input; if one does anyway, report the node
            // instead of taking the caller's process down.
            let guarded = |run: &mut dyn FnMut() -> Result<Vec<Array>, String>| {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
                    Ok(r) => r.map_err(|e| Error::invalid(format!("{}: {e}", s.label))),
                    Err(_) => Err(Error::invalid(format!(
                        "{}: internal error (kernel panicked); please report it",
                        s.label
                    ))),
                }
            };
            let outs = if let Some(first) = handed_over {
                let rest: Vec<Option<&Array>> = s.inputs[1..]
                    .iter()
                    .map(|slot| slot.and_then(|k| self.consts[k].as_ref().or(vals[k].as_ref())))
                    .collect();
                let mut first = Some(first);
                guarded(&mut || {
                    let x = first.take().ok_or("input handed over twice")?;
                    s.kernel.run_owned(x, &rest, self.options.threads)
                })?
            } else {
                let ins: Vec<Option<&Array>> = s
                    .inputs
                    .iter()
                    .map(|slot| slot.and_then(|k| self.consts[k].as_ref().or(vals[k].as_ref())))
                    .collect();
                let outs = guarded(&mut || s.kernel.run_with(&ins, self.options.threads))?;
                if let Some(w) = work.as_deref_mut() {
                    w.add(step_work(&s.kind, &ins, &outs));
                }
                outs
            };
            for (slot, a) in s.outputs.iter().zip(outs) {
                if let Some(k) = slot {
                    vals[*k] = Some(a);
                }
            }
            for &k in &s.free_after {
                vals[k] = None;
            }
            if let (Some(p), Some(t0)) = (profile.as_deref_mut(), t0) {
                *p.entry((s.kind.clone(), s.label.clone())).or_default() += t0.elapsed();
            }
        }
        self.outputs
            .iter()
            .enumerate()
            .map(|(i, (name, slot))| {
                // Moved out unless the same value is also a later output (then cloned).
                let again = self.outputs[i + 1..].iter().any(|o| o.1 == *slot);
                let a = match &self.consts[*slot] {
                    Some(c) => Some(c.clone()),
                    None if again => vals[*slot].clone(),
                    None => vals[*slot].take(),
                };
                let a =
                    a.ok_or_else(|| Error::invalid(format!("output `{name}` was not computed")))?;
                Ok((name.clone(), a))
            })
            .collect()
    }

    fn input_names(&self) -> String {
        self.inputs
            .iter()
            .map(|s| format!("`{}`", s.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
