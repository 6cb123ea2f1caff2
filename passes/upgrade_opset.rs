//! `upgrade-opset{to=N}`: raises the default-domain opset import of a model
//! (opset 11 or later) to N ≤ 21, rewriting the ops whose definition changed
//! on the way so that the model computes exactly the same function:
//!
//! * 13: `Squeeze`, `Unsqueeze`, `Split`, `ReduceSum` take their axes/split
//!   as an input instead of an attribute; `Softmax`, `LogSoftmax`, `Hardmax`
//!   normalise over one axis instead of the flattened trailing dims (kept as
//!   is when the axis is the last one, else wrapped in Flatten → op → Reshape);
//! * 16: `RoiAlign` gets its old `output_half_pixel` mode spelled out;
//! * 18: the other `Reduce*` take axes as an input; `Split` without sizes
//!   names its output count (`num_outputs`);
//! * 20: `GridSample` modes are renamed (`bilinear` → `linear`, `bicubic` → `cubic`).
//!
//! Everything else must be an op whose inference semantics did not change
//! between the model's opset and N (the list below); anything else, a
//! `Resize` in the `tf_half_pixel_for_nn` mode removed in 13, a
//! `GroupNormalization` (redefined in 21), or a model below opset 11 is an
//! error naming the node: nothing is changed then.
//!
//! Quantization uses it where a feature needs a newer opset: per-axis
//! DequantizeLinear (13), blockwise DequantizeLinear (21).

use crate::prelude::*;

pub struct UpgradeOpset {
    pub to: i64,
}

impl UpgradeOpset {
    pub fn from_options(mut opts: PassOptions) -> Result<Box<dyn Pass>> {
        let to = opts.take("to");
        opts.finish(&["to"])?;
        let to = to
            .ok_or_else(|| Error::invalid("upgrade-opset needs to=N"))?
            .parse::<i64>()
            .map_err(|_| Error::invalid("upgrade-opset: to=N takes an integer"))?;
        if !(11..=21).contains(&to) {
            return Err(Error::invalid(format!(
                "upgrade-opset: to={to} is outside 11..=21"
            )));
        }
        Ok(Box::new(UpgradeOpset { to }))
    }
}

/// Ops whose inference semantics are the same from opset 11 to 21 (types
/// were added, optional attributes or inputs with the old behaviour as
/// default): the model's nodes must be these or have a rule above.
const UNCHANGED: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "AveragePool",
    "BatchNormalization",
    "BitShift",
    "Cast",
    "Ceil",
    "Celu",
    "Clip",
    "Compress",
    "Concat",
    "ConcatFromSequence",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvInteger",
    "ConvTranspose",
    "Cos",
    "Cosh",
    "CumSum",
    "DepthToSpace",
    "DequantizeLinear",
    "Det",
    "Div",
    "Dropout",
    "DynamicQuantizeLinear",
    "Einsum",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "EyeLike",
    "Flatten",
    "Floor",
    "GRU",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gemm",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "If",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LSTM",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "Loop",
    "LpNormalization",
    "LpPool",
    "MatMul",
    "MatMulInteger",
    "Max",
    "MaxPool",
    "MaxRoiPool",
    "MaxUnpool",
    "Mean",
    "MeanVarianceNormalization",
    "Min",
    "Mish",
    "Mod",
    "Mul",
    "Neg",
    "NonMaxSuppression",
    "NonZero",
    "Not",
    "OneHot",
    "Or",
    "PRelu",
    "Pad",
    "Pow",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "RNN",
    "Range",
    "Reciprocal",
    "Relu",
    "Reshape",
    "Resize",
    "ReverseSequence",
    "Round",
    "Scan",
    "ScatterElements",
    "ScatterND",
    "Selu",
    "SequenceAt",
    "SequenceConstruct",
    "SequenceEmpty",
    "SequenceErase",
    "SequenceInsert",
    "SequenceLength",
    "Shape",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Size",
    "Slice",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "SplitToSequence",
    "Sqrt",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Transpose",
    "Trilu",
    "Unique",
    "Where",
    "Xor",
];

/// Reductions whose `axes` became an input in opset 18 (ReduceSum: 13).
const REDUCE_18: &[&str] = &[
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
];

impl Pass for UpgradeOpset {
    fn name(&self) -> &'static str {
        "upgrade-opset"
    }

    fn options(&self) -> Vec<(String, String)> {
        vec![("to".into(), self.to.to_string())]
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let from = model.onnx_opset();
        if from >= self.to {
            return Ok(());
        }
        if from < 11 {
            return Err(Error::invalid(format!(
                "upgrade-opset: the model imports opset {from}; only opset 11 or later can be raised (ops like Resize, Pad, Clip, Slice changed before 11)"
            )));
        }
        // Check everything first, so that a refusal leaves the model untouched.
        let to = self.to;
        let mut check = model.clone();
        for_each_graph_mut(&mut check, &mut |g: &mut Graph| check_graph(g, from, to))?;
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            let nodes: Vec<NodeId> = g.node_ids().collect();
            for n in nodes {
                if upgrade_node(g, n, from, to)? {
                    cx.count("rewritten", 1);
                }
            }
            Ok(())
        })?;
        let domain = if model.opset(&["ai.onnx"]).is_some() {
            "ai.onnx"
        } else {
            ""
        };
        model.set_opset(domain, to);
        cx.count("raised", 1);
        Ok(())
    }
}

fn default_domain(op: &Op) -> bool {
    op.domain.is_empty() || op.domain == "ai.onnx"
}

fn check_graph(g: &mut Graph, from: i64, to: i64) -> Result<()> {
    for n in g.node_ids().collect::<Vec<_>>() {
        let node = g.node(n);
        let Some(op) = node.op() else { continue };
        if !default_domain(op) {
            continue;
        }
        let t = op.op_type.as_str();
        let known = UNCHANGED.contains(&t)
            || REDUCE_18.contains(&t)
            || matches!(
                t,
                "Squeeze"
                    | "Unsqueeze"
                    | "Split"
                    | "ReduceSum"
                    | "Softmax"
                    | "LogSoftmax"
                    | "Hardmax"
                    | "RoiAlign"
                    | "GridSample"
                    | "GroupNormalization"
            );
        let refuse = |why: &str| {
            Err(Error::invalid(format!(
                "upgrade-opset {from} → {to}: node `{}` ({t}): {why}",
                g.display_node_name(n)
            )))
        };
        if !known {
            return refuse("no rule for this op; its definition may have changed");
        }
        if t == "Resize"
            && to >= 13
            && op
                .attr("coordinate_transformation_mode")
                .and_then(|a| a.as_str())
                == Some("tf_half_pixel_for_nn")
        {
            return refuse("mode tf_half_pixel_for_nn was removed in opset 13");
        }
        if t == "GroupNormalization" && to >= 21 {
            return refuse("scale and bias became per-channel in opset 21");
        }
    }
    Ok(())
}

/// Moves an ints attribute to a constant int64 input at `slot`.
fn attr_to_input(g: &mut Graph, n: NodeId, attr: &str, slot: usize) {
    let Some(vals) = g
        .node(n)
        .op()
        .and_then(|o| o.attr(attr))
        .and_then(|a| a.as_ints())
        .map(|v| v.to_vec())
    else {
        return;
    };
    if let Some(op) = g.node_mut(n).op_mut() {
        op.attrs.remove(attr);
    }
    let base = format!("{}_{attr}", g.display_node_name(n));
    let c = g.add_const(&base, Tensor::from_i64(vec![vals.len() as i64], &vals));
    g.set_input(n, slot, Some(c));
}

fn set_attr(g: &mut Graph, n: NodeId, name: &str, value: impl Into<Attribute>) {
    if let Some(op) = g.node_mut(n).op_mut() {
        op.attrs.insert(name.to_string(), value.into());
    }
}

/// Rewrites one node for the step from `from` to `to`; true if it changed.
fn upgrade_node(g: &mut Graph, n: NodeId, from: i64, to: i64) -> Result<bool> {
    let Some(op) = g.node(n).op() else {
        return Ok(false);
    };
    if !default_domain(op) {
        return Ok(false);
    }
    let t = op.op_type.clone();
    let crosses = |v: i64| from < v && to >= v;
    match t.as_str() {
        "Squeeze" | "Unsqueeze" | "ReduceSum" if crosses(13) => {
            attr_to_input(g, n, "axes", 1);
            Ok(true)
        }
        r if REDUCE_18.contains(&r) && crosses(18) => {
            attr_to_input(g, n, "axes", 1);
            Ok(true)
        }
        "Split" => {
            let mut changed = false;
            if crosses(13) {
                attr_to_input(g, n, "split", 1);
                changed = true;
            }
            // Split-18 wants `num_outputs` when no sizes are given.
            let has_sizes = g.node(n).inputs.get(1).copied().flatten().is_some();
            if to >= 18
                && !has_sizes
                && g.node(n).op().and_then(|o| o.attr("num_outputs")).is_none()
            {
                let k = g.node(n).outputs.len() as i64;
                set_attr(g, n, "num_outputs", k);
                changed = true;
            }
            Ok(changed)
        }
        "Softmax" | "LogSoftmax" | "Hardmax" if crosses(13) => upgrade_softmax(g, n),
        "RoiAlign" if crosses(16) => {
            if g.node(n)
                .op()
                .and_then(|o| o.attr("coordinate_transformation_mode"))
                .is_none()
            {
                set_attr(g, n, "coordinate_transformation_mode", "output_half_pixel");
            }
            Ok(true)
        }
        "GridSample" if crosses(20) => {
            let mode = g
                .node(n)
                .op()
                .and_then(|o| o.attr("mode"))
                .and_then(|a| a.as_str())
                .unwrap_or("bilinear")
                .to_string();
            let renamed = match mode.as_str() {
                "bilinear" => "linear",
                "bicubic" => "cubic",
                other => other,
            };
            set_attr(g, n, "mode", renamed);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Before 13, softmax normalises over the input flattened to 2-D at `axis`
/// (default 1); from 13 over `axis` alone (default -1). Same thing when
/// `axis` is the last axis; otherwise Flatten → op(axis=1) → Reshape back.
fn upgrade_softmax(g: &mut Graph, n: NodeId) -> Result<bool> {
    let axis = g
        .node(n)
        .op()
        .and_then(|o| o.attr("axis"))
        .and_then(|a| a.as_int())
        .unwrap_or(1);
    let x = g.node(n).inputs[0]
        .ok_or_else(|| Error::invalid(format!("{}: no input", g.display_node_name(n))))?;
    let rank = g.value(x).ty.tensor().and_then(|t| t.rank());
    let last = match rank {
        Some(r) => axis == -1 || axis == r as i64 - 1,
        None => axis == -1,
    };
    set_attr(g, n, "axis", if last { axis } else { 1 });
    if last {
        return Ok(true);
    }
    let name = g.display_node_name(n);
    let y = g.node(n).outputs[0].ok_or_else(|| Error::invalid(format!("{name}: no output")))?;
    let flat_name = g.fresh_name(&format!("{name}_flat"));
    let flat = g.add_op(
        &flat_name,
        Op::new("Flatten").with_attr("axis", axis),
        &[Some(x)],
        &[&flat_name],
    );
    let flat_v = g.node(flat).outputs[0].expect("one output");
    g.set_input(n, 0, Some(flat_v));
    let shape_name = g.fresh_name(&format!("{name}_shape"));
    let shape = g.add_op(&shape_name, Op::new("Shape"), &[Some(x)], &[&shape_name]);
    let shape_v = g.node(shape).outputs[0].expect("one output");
    // The reshaped value takes over the original output's name (graph
    // outputs and readers keep their names); the 2-D one gets a fresh name.
    let y_name = g.value(y).name.clone();
    let y2d_name = g.fresh_name(&format!("{y_name}_2d"));
    g.rename_value(y, &y2d_name);
    let reshape_name = g.fresh_name(&format!("{name}_reshape"));
    let reshape = g.add_op(
        &reshape_name,
        Op::new("Reshape"),
        &[None, Some(shape_v)],
        &[&y_name],
    );
    let out = g.node(reshape).outputs[0].expect("one output");
    // The reshaped value is the old output: its type and declaration move.
    let ty = std::mem::take(&mut g.value_mut(y).ty);
    let declared = g.value_mut(y).declared.take();
    g.value_mut(out).ty = ty;
    g.value_mut(out).declared = declared;
    g.replace_all_uses(y, out);
    g.set_input(reshape, 0, Some(y));
    Ok(true)
}
