//! Backend capabilities as data (PyTorch's `BackendConfig` over ONNX).
//!
//! A [`BackendConfig`] lists, for one kernel family, the op patterns it runs
//! in int8, how each pattern's tensors are observed, and the dtypes it
//! supports. Fusion, observer insertion and conversion read it; none of them
//! hard-codes op lists. It also answers "why was this node not fused / not
//! quantized" ([`BackendConfig::explain`]).

mod fbgemm;
mod qnnpack;

pub mod composite;
pub mod fragile;
pub mod noise;
pub mod slow_int8;

use crate::ir::{Graph, NodeId};

/// How a pattern's output is observed relative to its input (PyTorch's
/// `ObservationType`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observation {
    /// The output gets its own observer (Conv, Gemm, MatMul, Add, ...).
    OwnOutput,
    /// The output shares its input's quantization (MaxPool, Reshape,
    /// Transpose, Concat, ...): no requantization.
    ShareWithInput,
    /// The output range is fixed by the op's math (Sigmoid → [0, 1], Tanh → [−1, 1]).
    FixedRange { min: f32, max: f32 },
}

/// Quantized element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QDType {
    U8,
    I8,
    I32,
}

/// Dtypes a pattern supports on one backend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DTypeConfig {
    pub activation: QDType,
    /// `None` for ops without weights.
    pub weight: Option<QDType>,
    pub bias: Option<QDType>,
    /// Weights may be quantized per output channel.
    pub weight_per_channel: bool,
    /// Activations must use the reduced range (0..127) so the AVX2
    /// `vpmaddubsw` path cannot saturate.
    pub reduce_range: bool,
}

/// A condition on one op of a pattern.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Constraint {
    None,
    /// Clip whose bounds are constants, min = 0 (Relu6-style, [0, 6] or any max).
    ClipFromZero,
}

/// One step of a chain pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Accepted op types (default ONNX domain).
    pub ops: &'static [&'static str],
    pub constraint: Constraint,
}

/// A pattern the backend runs as one int8 unit: a chain of ops, first to
/// last, each reading the previous one's output (any input slot).
#[derive(Clone, Debug, PartialEq)]
pub struct PatternConfig {
    /// Stable kebab-case name, e.g. `conv-relu`.
    pub name: &'static str,
    pub chain: Vec<Step>,
    pub observation: Observation,
    pub dtypes: Vec<DTypeConfig>,
    /// Input slot of the weight of the first op, if it has one.
    pub weight_input: Option<usize>,
    /// Input slot of the bias of the first op, if it has one.
    pub bias_input: Option<usize>,
    /// Which inputs carry real-valued signals to quantize (the others —
    /// shapes, indices, Clip bounds, Resize scales — are never quantized).
    pub data_inputs: DataInputs,
}

/// Which inputs of a pattern's first op are quantized signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataInputs {
    /// Input 0 only.
    First,
    /// Every input (Add, Mul, Concat, MatMul with two activations).
    All,
}

impl PatternConfig {
    /// Whether this pattern fuses several ops into one unit.
    pub fn is_fusion(&self) -> bool {
        self.chain.len() > 1
    }
}

/// The capabilities of one kernel family.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendConfig {
    pub name: &'static str,
    pub patterns: Vec<PatternConfig>,
}

/// A chain matched in a graph: nodes first to last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainMatch {
    pub pattern: &'static str,
    pub nodes: Vec<NodeId>,
}

impl BackendConfig {
    /// The backend named `fbgemm` or `qnnpack`.
    pub fn by_name(name: &str) -> Option<BackendConfig> {
        match name {
            "fbgemm" | "x86" => Some(fbgemm::config()),
            "qnnpack" => Some(qnnpack::config()),
            _ => None,
        }
    }

    pub fn fbgemm() -> BackendConfig {
        fbgemm::config()
    }

    pub fn qnnpack() -> BackendConfig {
        qnnpack::config()
    }

    /// Fused patterns, longest first (so Conv+Add+Relu wins over Conv+Relu).
    pub fn fusions(&self) -> Vec<&PatternConfig> {
        let mut v: Vec<&PatternConfig> = self.patterns.iter().filter(|p| p.is_fusion()).collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.chain.len()));
        v
    }

    /// The single-op pattern for an op type, if the backend quantizes it.
    pub fn single(&self, op_type: &str) -> Option<&PatternConfig> {
        self.patterns
            .iter()
            .find(|p| !p.is_fusion() && p.chain[0].ops.contains(&op_type))
    }

    /// Tries to match `pattern` as a chain ending at `last`. Every op before
    /// the last must be read only by the next one (so the unit has one output).
    pub fn match_chain(
        &self,
        g: &Graph,
        pattern: &PatternConfig,
        last: NodeId,
    ) -> Result<ChainMatch, String> {
        let mut nodes = vec![last];
        let mut cur = last;
        for (i, step) in pattern.chain.iter().enumerate().rev() {
            check_step(g, cur, step)?;
            if i == 0 {
                break;
            }
            // Find the input produced by something matching the previous step.
            let prev_step = &pattern.chain[i - 1];
            let node = g.node(cur);
            let prev = node
                .inputs
                .iter()
                .flatten()
                .map(|&v| g.producer(v))
                .find(|&p| check_step(g, p, prev_step).is_ok())
                .ok_or_else(|| {
                    format!(
                        "no input of {} comes from {}",
                        node.op_type(),
                        prev_step.ops.join("/")
                    )
                })?;
            let out = g
                .node(prev)
                .outputs
                .first()
                .copied()
                .flatten()
                .ok_or("no output")?;
            let readers = g.consumers(out);
            if g.is_graph_output(out) || readers.len() != 1 {
                return Err(format!(
                    "the output of {} `{}` is also read elsewhere, so it cannot be fused",
                    g.node(prev).op_type(),
                    g.display_node_name(prev)
                ));
            }
            nodes.push(prev);
            cur = prev;
        }
        nodes.reverse();
        Ok(ChainMatch {
            pattern: pattern.name,
            nodes,
        })
    }

    /// Why a node is or is not fused / quantized on this backend, in words.
    pub fn explain(&self, g: &Graph, n: NodeId) -> String {
        let node = g.node(n);
        let Some(op) = node.op() else {
            return format!("{} is not an operation", g.display_node_name(n));
        };
        let mut lines = vec![];
        match self.single(&op.op_type) {
            Some(p) => lines.push(format!(
                "{} is quantized by pattern `{}` on {}",
                op.op_type, p.name, self.name
            )),
            None => lines.push(format!(
                "{} has no int8 kernel on {}: it stays float, with Q/DQ at its boundary",
                op.op_type, self.name
            )),
        }
        for p in self.fusions() {
            if !p
                .chain
                .last()
                .is_some_and(|s| s.ops.contains(&op.op_type.as_str()))
            {
                continue;
            }
            match self.match_chain(g, p, n) {
                Ok(_) => lines.push(format!("fused as `{}`", p.name)),
                Err(why) => lines.push(format!("not fused as `{}`: {why}", p.name)),
            }
        }
        lines.join("; ")
    }
}

fn check_step(g: &Graph, n: NodeId, step: &Step) -> Result<(), String> {
    let node = g.node(n);
    let Some(op) = node.op() else {
        return Err(format!("{} is not an op", g.display_node_name(n)));
    };
    let default_domain = op.domain.is_empty() || op.domain == "ai.onnx";
    if !default_domain || !step.ops.contains(&op.op_type.as_str()) {
        return Err(format!("{} is not {}", op.op_type, step.ops.join("/")));
    }
    match step.constraint {
        Constraint::None => Ok(()),
        Constraint::ClipFromZero => {
            let min = clip_bound(g, n, 1, "min");
            match min {
                Some(0.0) => Ok(()),
                Some(m) => Err(format!("Clip min is {m}, not 0")),
                None => Err("Clip bounds are not constants".into()),
            }
        }
    }
}

/// A Clip bound: input `slot` (opset ≥ 11) or attribute `attr` (older).
pub fn clip_bound(g: &Graph, n: NodeId, slot: usize, attr: &str) -> Option<f32> {
    let node = g.node(n);
    if let Some(a) = node.op()?.attr(attr) {
        return a.as_float();
    }
    let v = node.inputs.get(slot).copied().flatten()?;
    g.const_tensor(v)?.to_f32_vec()?.first().copied()
}

/// Shared pattern lists: both backends support the same ops, with
/// different dtypes.
pub(crate) fn standard_patterns(weighted: DTypeConfig, plain: DTypeConfig) -> Vec<PatternConfig> {
    let step = |ops: &'static [&'static str]| Step {
        ops,
        constraint: Constraint::None,
    };
    let acts: &'static [&'static str] = &["Relu", "LeakyRelu"];
    let weighted_ops: &'static [&'static str] = &["Conv", "Gemm", "MatMul"];
    let mut v = vec![];
    let single = |name: &'static str,
                  ops: &'static [&'static str],
                  obs: Observation,
                  dt: DTypeConfig,
                  w: Option<usize>,
                  b: Option<usize>| {
        let data_inputs = if matches!(name, "add" | "mul" | "matmul" | "concat") {
            DataInputs::All
        } else {
            DataInputs::First
        };
        PatternConfig {
            data_inputs,
            name,
            chain: vec![Step {
                ops,
                constraint: Constraint::None,
            }],
            observation: obs,
            dtypes: vec![dt],
            weight_input: w,
            bias_input: b,
        }
    };
    // Fusions: the activation runs in the weighted op's output stage.
    v.push(PatternConfig {
        name: "conv-add-relu",
        chain: vec![step(&["Conv"]), step(&["Add"]), step(&["Relu"])],
        observation: Observation::OwnOutput,
        dtypes: vec![weighted],
        weight_input: Some(1),
        bias_input: Some(2),
        data_inputs: DataInputs::First,
    });
    for (name, last) in [
        ("weighted-relu", step(acts)),
        (
            "weighted-relu6",
            Step {
                ops: &["Clip"],
                constraint: Constraint::ClipFromZero,
            },
        ),
    ] {
        v.push(PatternConfig {
            name,
            chain: vec![step(weighted_ops), last],
            observation: Observation::OwnOutput,
            dtypes: vec![weighted],
            weight_input: Some(1),
            bias_input: Some(2),
            data_inputs: DataInputs::First,
        });
    }
    v.push(single(
        "conv",
        &["Conv"],
        Observation::OwnOutput,
        weighted,
        Some(1),
        Some(2),
    ));
    v.push(single(
        "conv-transpose",
        &["ConvTranspose"],
        Observation::OwnOutput,
        DTypeConfig {
            weight_per_channel: false,
            ..weighted
        },
        Some(1),
        Some(2),
    ));
    v.push(single(
        "gemm",
        &["Gemm"],
        Observation::OwnOutput,
        weighted,
        Some(1),
        Some(2),
    ));
    v.push(single(
        "matmul",
        &["MatMul"],
        Observation::OwnOutput,
        weighted,
        Some(1),
        None,
    ));
    for (name, ops) in [
        ("add", &["Add"] as &'static [&'static str]),
        ("mul", &["Mul"]),
        ("average-pool", &["AveragePool", "GlobalAveragePool"]),
        (
            "activation",
            &["Relu", "LeakyRelu", "Clip", "HardSwish", "HardSigmoid"],
        ),
        ("resize", &["Resize"]),
        // Every input observed on its own, the output over their union:
        // sharing one input's range would clip the others.
        ("concat", &["Concat"]),
    ] {
        v.push(single(name, ops, Observation::OwnOutput, plain, None, None));
    }
    v.push(single(
        "share-input",
        &[
            "MaxPool",
            "Reshape",
            "Transpose",
            "Flatten",
            "Squeeze",
            "Unsqueeze",
            "Split",
            "Slice",
            "Gather",
            "Pad",
        ],
        Observation::ShareWithInput,
        plain,
        None,
        None,
    ));
    v.push(single(
        "sigmoid",
        &["Sigmoid"],
        Observation::FixedRange { min: 0.0, max: 1.0 },
        plain,
        None,
        None,
    ));
    // Quantizable, but kept float by the default QConfigMapping (accuracy).
    v.push(single(
        "softmax",
        &["Softmax"],
        Observation::FixedRange { min: 0.0, max: 1.0 },
        plain,
        None,
        None,
    ));
    v.push(single(
        "tanh",
        &["Tanh"],
        Observation::FixedRange {
            min: -1.0,
            max: 1.0,
        },
        plain,
        None,
        None,
    ));
    v
}
