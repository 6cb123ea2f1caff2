//! Raising a model's default-domain opset where a feature needs it
//! (DequantizeLinear with `block_size` and INT4 needs opset 21).
//!
//! Raising is only done when it provably keeps every op's meaning: each op
//! of the model (subgraphs included) must be on a list of ops whose schema
//! did not change meaning between the model's opset and the target, or have
//! an exact rewrite (attribute → input moves: `Unsqueeze`/`Squeeze`/`Split`
//! at 13, `Reduce*` axes at 13/18, `Split` `num_outputs` at 18). Anything
//! else is refused with an error naming the op, never raised on a guess.

use crate::error::{Error, Result};
use crate::ir::rewrite::for_each_graph_mut;
use crate::ir::{Attribute, Graph, Model, NodeId, Op, Tensor};

/// Ops whose meaning is unchanged from the given opset up to 21 (only types
/// were added, or optional attributes/inputs whose defaults keep the old
/// behaviour).
const SAFE_FROM: &[(&str, i64)] = &[
    ("Abs", 6),
    ("Acos", 7),
    ("Acosh", 9),
    ("Add", 7),
    ("And", 7),
    ("ArgMax", 1),
    ("ArgMin", 1),
    ("Asin", 7),
    ("Asinh", 9),
    ("Atan", 7),
    ("Atanh", 9),
    ("AveragePool", 7),
    ("BatchNormalization", 9),
    ("Cast", 6),
    ("Ceil", 6),
    ("Celu", 12),
    ("Clip", 11),
    ("Concat", 4),
    ("Constant", 1),
    ("ConstantOfShape", 9),
    ("Conv", 1),
    ("ConvInteger", 10),
    ("Cos", 7),
    ("Cosh", 9),
    ("CumSum", 11),
    ("DepthToSpace", 1),
    ("DequantizeLinear", 10),
    ("Div", 7),
    ("DynamicQuantizeLinear", 11),
    ("Einsum", 12),
    ("Elu", 6),
    ("Equal", 7),
    ("Erf", 9),
    ("Exp", 6),
    ("Expand", 8),
    ("EyeLike", 9),
    ("Flatten", 1),
    ("Floor", 6),
    ("GRU", 7),
    ("Gather", 1),
    ("GatherElements", 11),
    ("GatherND", 11),
    ("Gemm", 7),
    ("GlobalAveragePool", 1),
    ("GlobalMaxPool", 1),
    ("Greater", 7),
    ("GreaterOrEqual", 12),
    ("HardSigmoid", 6),
    ("HardSwish", 14),
    ("Identity", 1),
    ("If", 1),
    ("InstanceNormalization", 6),
    ("IsInf", 10),
    ("IsNaN", 9),
    ("LRN", 1),
    ("LSTM", 7),
    ("LayerNormalization", 17),
    ("LeakyRelu", 6),
    ("Less", 7),
    ("LessOrEqual", 12),
    ("Log", 6),
    ("Loop", 1),
    ("MatMul", 1),
    ("MatMulInteger", 10),
    ("Max", 8),
    ("MaxPool", 8),
    ("Mean", 8),
    ("Min", 8),
    ("Mod", 10),
    ("Mul", 7),
    ("Neg", 6),
    ("NonZero", 9),
    ("Not", 1),
    ("OneHot", 9),
    ("Or", 7),
    ("PRelu", 7),
    ("Pad", 11),
    ("Pow", 7),
    ("QLinearConv", 10),
    ("QLinearMatMul", 10),
    ("QuantizeLinear", 10),
    ("RNN", 7),
    ("Range", 11),
    ("Reciprocal", 6),
    ("Relu", 6),
    ("Reshape", 5),
    ("Round", 11),
    ("Scan", 9),
    ("ScatterElements", 11),
    ("ScatterND", 11),
    ("Selu", 6),
    ("Shape", 1),
    ("Shrink", 9),
    ("Sigmoid", 6),
    ("Sign", 9),
    ("Sin", 7),
    ("Sinh", 9),
    ("Size", 1),
    ("Slice", 10),
    ("Softplus", 1),
    ("Softsign", 1),
    ("SpaceToDepth", 1),
    ("Sqrt", 6),
    ("Sub", 7),
    ("Sum", 8),
    ("Tan", 7),
    ("Tanh", 6),
    ("ThresholdedRelu", 10),
    ("Tile", 6),
    ("TopK", 10),
    ("Transpose", 1),
    ("Trilu", 14),
    ("Unique", 11),
    ("Where", 9),
    ("Xor", 7),
];

/// Reductions whose `axes` became an input (ReduceSum at 13, the others at 18).
const REDUCE_AXES_AT: &[(&str, i64)] = &[
    ("ReduceSum", 13),
    ("ReduceMean", 18),
    ("ReduceMax", 18),
    ("ReduceMin", 18),
    ("ReduceProd", 18),
    ("ReduceL1", 18),
    ("ReduceL2", 18),
    ("ReduceLogSum", 18),
    ("ReduceLogSumExp", 18),
    ("ReduceSumSquare", 18),
];

/// What raising would have to do to one node.
enum Plan {
    Keep,
    /// Move attribute `attr` to input `slot` as an i64 tensor.
    AttrToInput {
        attr: &'static str,
        slot: usize,
    },
    /// Split: `split` attribute to input 1 (at 13) and/or `num_outputs` (at 18).
    Split,
    /// Softmax-family before 13 on a non-last (or unknown) axis: Flatten at
    /// `axis` → op(axis=1) → Reshape back, which is what the old op computed.
    SoftmaxWrap {
        axis: i64,
    },
    /// Set an attribute to the value the old default meant.
    SetAttr {
        attr: &'static str,
        value: &'static str,
    },
}

fn plan(g: &Graph, n: NodeId, from: i64, to: i64) -> std::result::Result<Plan, String> {
    let node = g.node(n);
    let Some(op) = node.op() else {
        return Ok(Plan::Keep);
    };
    if !(op.domain.is_empty() || op.domain == "ai.onnx") {
        return Ok(Plan::Keep);
    }
    let t = op.op_type.as_str();
    if let Some(&(_, since)) = SAFE_FROM.iter().find(|(o, _)| *o == t) {
        return if from >= since {
            Ok(Plan::Keep)
        } else {
            Err(format!("{t} changed at opset {since}"))
        };
    }
    if let Some(&(_, at)) = REDUCE_AXES_AT.iter().find(|(o, _)| *o == t) {
        return Ok(if from < at && to >= at && op.attr("axes").is_some() {
            Plan::AttrToInput {
                attr: "axes",
                slot: 1,
            }
        } else {
            Plan::Keep
        });
    }
    match t {
        "Unsqueeze" | "Squeeze" => Ok(if from < 13 && to >= 13 && op.attr("axes").is_some() {
            Plan::AttrToInput {
                attr: "axes",
                slot: 1,
            }
        } else {
            Plan::Keep
        }),
        "Split" if from >= 2 => Ok(Plan::Split),
        "Softmax" | "LogSoftmax" | "Hardmax" if from < 13 => {
            // Before 13 the input is coerced to 2-D at `axis` (default 1);
            // from 13 the op runs along `axis` (default -1). The same only
            // when the axis is the last one.
            let axis = op.attr("axis").and_then(Attribute::as_int).unwrap_or(1);
            let rank = node
                .inputs
                .first()
                .copied()
                .flatten()
                .and_then(|x| g.value(x).ty.tensor().and_then(|t| t.rank()));
            match rank {
                Some(r) if axis == -1 || axis == r as i64 - 1 => Ok(Plan::Keep),
                _ if to >= 13 => Ok(Plan::SoftmaxWrap { axis }),
                _ => Ok(Plan::Keep),
            }
        }
        "Softmax" | "LogSoftmax" | "Hardmax" => Ok(Plan::Keep),
        // RoiAlign-10's implicit half-pixel-free sampling got a name (and a
        // different default) at 16.
        "RoiAlign" if from >= 10 => Ok(
            if from < 16 && to >= 16 && op.attr("coordinate_transformation_mode").is_none() {
                Plan::SetAttr {
                    attr: "coordinate_transformation_mode",
                    value: "output_half_pixel",
                }
            } else {
                Plan::Keep
            },
        ),
        // GridSample-16's modes were renamed at 20.
        "GridSample" => {
            let mode = op
                .attr("mode")
                .and_then(|a| a.as_str())
                .unwrap_or("bilinear");
            let renamed = match mode {
                "bilinear" => "linear",
                "bicubic" => "cubic",
                _ => "",
            };
            Ok(if from < 20 && to >= 20 && !renamed.is_empty() {
                Plan::SetAttr {
                    attr: "mode",
                    value: renamed,
                }
            } else {
                Plan::Keep
            })
        }
        "GroupNormalization" if to >= 21 && from < 21 => {
            Err("GroupNormalization's scale and bias became per channel at opset 21".into())
        }
        "GroupNormalization" => Ok(Plan::Keep),
        // ConvTranspose-11 redefined how auto_pad and output_shape place the
        // padding; explicit pads compute the same output.
        "ConvTranspose" => {
            let auto_pad = op
                .attr("auto_pad")
                .and_then(|a| a.as_str())
                .unwrap_or("NOTSET");
            if from >= 11 || (auto_pad == "NOTSET" && op.attr("output_shape").is_none()) {
                Ok(Plan::Keep)
            } else {
                Err(format!(
                    "ConvTranspose with auto_pad={auto_pad} or output_shape changed at opset 11"
                ))
            }
        }
        // Resize-11's `tf_half_pixel_for_nn` is gone at 13; the rest is the same.
        "Resize" if from >= 11 => {
            let mode = op
                .attr("coordinate_transformation_mode")
                .and_then(|a| a.as_str().map(str::to_string));
            if mode.as_deref() == Some("tf_half_pixel_for_nn") {
                Err("Resize's tf_half_pixel_for_nn mode was removed at opset 13".into())
            } else {
                Ok(Plan::Keep)
            }
        }
        _ => Err(format!(
            "onnxq does not know whether {t} kept its meaning between opsets {from} and {to}"
        )),
    }
}

/// Raises the default-domain opset of `model` to `to` (no-op if it is
/// already there), rewriting the ops whose attributes became inputs.
/// Returns what was rewritten, one line per node. Fails, changing nothing,
/// if an op might not keep its meaning, naming it. Also raises the IR
/// version to what the opset needs.
pub fn raise_opset(model: &mut Model, to: i64) -> Result<Vec<String>> {
    let from = model.onnx_opset();
    if from >= to {
        return Ok(vec![]);
    }
    if from < 1 {
        return Err(Error::invalid(
            "the model does not import the default ONNX opset",
        ));
    }
    // Check everything first, so that a refusal leaves the model untouched.
    let mut problems = vec![];
    check_graph(&model.graph, from, to, &mut problems);
    if !problems.is_empty() {
        return Err(Error::Unsupported(format!(
            "cannot raise the opset from {from} to {to} safely: {}",
            problems.join("; ")
        )));
    }
    let mut done = vec![];
    for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
        let nodes: Vec<NodeId> = g.node_ids().collect();
        for n in nodes {
            match plan(g, n, from, to).map_err(Error::invalid)? {
                Plan::Keep => {}
                Plan::AttrToInput { attr, slot } => {
                    move_attr_to_input(g, n, attr, slot);
                    done.push(format!(
                        "{}: `{attr}` attribute → input",
                        g.display_node_name(n)
                    ));
                }
                Plan::SoftmaxWrap { axis } => {
                    wrap_softmax(g, n, axis)?;
                    done.push(format!(
                        "{}: flattened at axis {axis} (pre-13 semantics)",
                        g.display_node_name(n)
                    ));
                }
                Plan::SetAttr { attr, value } => {
                    let op: &mut Op = g.node_mut(n).op_mut().expect("op");
                    op.attrs.insert(attr.into(), Attribute::from(value));
                    done.push(format!("{}: {attr}={value}", g.display_node_name(n)));
                }
                Plan::Split => {
                    if from < 13 && g.node(n).op().and_then(|o| o.attr("split")).is_some() {
                        move_attr_to_input(g, n, "split", 1);
                        done.push(format!(
                            "{}: `split` attribute → input",
                            g.display_node_name(n)
                        ));
                    }
                    let has_split = g.node(n).inputs.get(1).copied().flatten().is_some();
                    if to >= 18 && !has_split {
                        let k = g.node(n).outputs.len() as i64;
                        let op: &mut Op = g.node_mut(n).op_mut().expect("op");
                        op.attrs.insert("num_outputs".into(), Attribute::from(k));
                        done.push(format!("{}: num_outputs={k}", g.display_node_name(n)));
                    }
                }
            }
        }
        Ok(())
    })?;
    model.set_opset("", to);
    model.opset_import.retain(|o| o.domain != "ai.onnx");
    let ir = min_ir_version(to);
    if model.ir_version < ir {
        model.ir_version = ir;
    }
    Ok(done)
}

fn check_graph(g: &Graph, from: i64, to: i64, problems: &mut Vec<String>) {
    for n in g.node_ids() {
        if let Err(why) = plan(g, n, from, to) {
            problems.push(format!("`{}`: {why}", g.display_node_name(n)));
        }
        if let Some(op) = g.node(n).op() {
            for a in op.attrs.values() {
                for sg in a.subgraphs() {
                    check_graph(sg, from, to, problems);
                }
            }
        }
    }
}

/// The IR version an opset needs (ONNX's version table).
pub fn min_ir_version(opset: i64) -> i64 {
    match opset {
        ..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        21 => 10,
        _ => 11,
    }
}

fn move_attr_to_input(g: &mut Graph, n: NodeId, attr: &str, slot: usize) {
    let op = g.node_mut(n).op_mut().expect("op");
    let Some(a) = op.attrs.remove(attr) else {
        return;
    };
    let vals: Vec<i64> = a.as_ints().map(<[i64]>::to_vec).unwrap_or_default();
    let base = if g.node(n).name.is_empty() {
        g.display_node_name(n)
    } else {
        g.node(n).name.clone()
    };
    let c = g.add_const(
        &format!("{base}_{attr}"),
        Tensor::from_i64(vec![vals.len() as i64], &vals),
    );
    g.value_mut(c).ty = crate::qdq::fixed_type(crate::ir::DataType::I64, &[vals.len() as i64]);
    g.set_input(n, slot, Some(c));
}

/// Before 13, softmax normalises over the input flattened to 2-D at `axis`;
/// from 13 over `axis` alone. Flatten(axis) → op(axis=1) → Reshape(Shape(x))
/// computes the old meaning; the reshaped value keeps the output's name,
/// type and declaration.
fn wrap_softmax(g: &mut Graph, n: NodeId, axis: i64) -> Result<()> {
    let name = g.display_node_name(n);
    let x = g
        .node(n)
        .inputs
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| Error::invalid(format!("{name}: no input")))?;
    let y = g
        .node(n)
        .outputs
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| Error::invalid(format!("{name}: no output")))?;
    if let Some(op) = g.node_mut(n).op_mut() {
        op.attrs.insert("axis".into(), Attribute::from(1i64));
    }
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
    let ty = std::mem::take(&mut g.value_mut(y).ty);
    let declared = g.value_mut(y).declared.take();
    g.value_mut(out).ty = ty;
    g.value_mut(out).declared = declared;
    g.replace_all_uses(y, out);
    g.set_input(reshape, 0, Some(y));
    Ok(())
}
