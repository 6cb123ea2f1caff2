//! `fold-batchnorm`: folds an inference BatchNormalization into the Conv,
//! ConvTranspose, Gemm or MatMul that feeds it (PyTorch's `fuse_conv_bn`
//! over ONNX), so it costs nothing and quantizes with the weights. The same
//! for a BatchNorm that exporters decomposed (Paddle, TF): a Mul by and an
//! Add of constants that are per output channel (or scalar), after a Conv,
//! ConvTranspose or Gemm, fold one after the other.
//!
//! With s = gamma / sqrt(var + eps) per channel: W' = W·s on the output
//! channel axis, b' = (b − mean)·s + beta (Mul: s = c, Add: b' = b + c).
//! Arithmetic in f64, rounded once.

use crate::prelude::*;

#[derive(Default)]
pub struct FoldBatchNorm;

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let pattern = op("BatchNormalization").bind("bn").input(
            0,
            ops(&["Conv", "ConvTranspose", "Gemm", "MatMul"])
                .single_use()
                .bind("producer"),
        );
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            for m in g.find_matches(&pattern) {
                let (bn, prod) = (m.node("bn"), m.node("producer"));
                match bn_affine(g, bn).and_then(|(s, t)| fold(g, bn, prod, &s, &t)) {
                    Ok(()) => cx.count("folded", 1),
                    Err(why) => cx.note(g.display_node_name(bn), format!("not folded: {why}")),
                }
            }
            // Decomposed BatchNorm: Mul / Add by per-channel constants, until
            // nothing more folds (Conv → Mul → Add takes two rounds).
            loop {
                let mut folded = false;
                let candidates: Vec<NodeId> = g
                    .node_ids()
                    .filter(|&n| g.node(n).is_op("Mul") || g.node(n).is_op("Add"))
                    .collect();
                for n in candidates {
                    if g.try_node(n).is_none() {
                        continue;
                    }
                    let Some((prod, s, t)) = const_affine(g, n) else {
                        continue;
                    };
                    if fold(g, n, prod, &s, &t).is_ok() {
                        cx.count("folded-affine", 1);
                        folded = true;
                    }
                }
                if !folded {
                    break;
                }
            }
            Ok(())
        })
    }
}

/// A Mul by or Add of a constant that is per output channel (or a scalar),
/// reading the only output of a Conv/ConvTranspose/Gemm with constant
/// weights: that producer and the (scale, shift) per channel.
fn const_affine(g: &Graph, n: NodeId) -> Option<(NodeId, Vec<f64>, Vec<f64>)> {
    let node = g.node(n);
    let (a, b) = (
        node.inputs.first().copied().flatten()?,
        node.inputs.get(1).copied().flatten()?,
    );
    let (x, c) = if g.const_tensor(b).is_some() {
        (a, b)
    } else if g.const_tensor(a).is_some() {
        (b, a)
    } else {
        return None;
    };
    let prod = g.producer(x);
    let p = g.node(prod);
    let t = p.op()?.op_type.as_str();
    if !matches!(t, "Conv" | "ConvTranspose" | "Gemm")
        || p.outputs.first().copied().flatten() != Some(x)
    {
        return None;
    }
    if g.consumers(x).len() != 1 || g.is_graph_output(x) {
        return None;
    }
    let w = g.const_tensor(p.inputs.get(1).copied().flatten()?)?;
    // Output rank and the output-channel count.
    let (rank, channels) = match t {
        "Conv" => (w.dims.len(), *w.dims.first()? as usize),
        "ConvTranspose" => {
            let group = p.op()?.attr("group").and_then(|a| a.as_int()).unwrap_or(1);
            (w.dims.len(), (*w.dims.get(1)? * group) as usize)
        }
        _ => {
            let trans_b = p.op()?.attr("transB").and_then(|a| a.as_int()).unwrap_or(0) != 0;
            (2, *w.dims.get(if trans_b { 0 } else { 1 })? as usize)
        }
    };
    let ct = g.const_tensor(c)?;
    let vals = ct.to_f32_vec()?;
    if ct.dtype != DataType::F32 || ct.dims.len() > rank {
        return None;
    }
    // Right-aligned on the output: only the channel axis (1) may be > 1.
    let offset = rank - ct.dims.len();
    for (i, &d) in ct.dims.iter().enumerate() {
        if d != 1 && !(i + offset == 1 && d as usize == channels) {
            return None;
        }
    }
    let per: Vec<f64> = if vals.len() == channels {
        vals.iter().map(|&v| v as f64).collect()
    } else if vals.len() == 1 {
        vec![vals[0] as f64; channels]
    } else {
        return None;
    };
    if node.is_op("Mul") {
        Some((prod, per, vec![0.0; channels]))
    } else {
        Some((prod, vec![1.0; channels], per))
    }
}

/// Per-channel (scale, shift) of an inference BatchNormalization.
pub(crate) fn bn_affine(
    g: &Graph,
    bn: NodeId,
) -> std::result::Result<(Vec<f64>, Vec<f64>), String> {
    let node = g.node(bn);
    let op = node.op().expect("an op");
    if op
        .attr("training_mode")
        .and_then(|a| a.as_int())
        .unwrap_or(0)
        != 0
    {
        return Err("training mode".into());
    }
    if node.outputs.iter().skip(1).flatten().any(|&v| g.is_used(v)) {
        return Err("its running statistics outputs are read".into());
    }
    let eps = op
        .attr("epsilon")
        .and_then(|a| a.as_float())
        .unwrap_or(1e-5) as f64;
    let param = |i: usize| -> std::result::Result<Vec<f64>, String> {
        let v = node
            .inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or("missing parameter")?;
        let t = g.const_tensor(v).ok_or("parameters are not constants")?;
        let f = t.to_f32_vec().ok_or("parameters are not floats")?;
        Ok(f.into_iter().map(f64::from).collect())
    };
    let (gamma, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
    let c = gamma.len();
    if [beta.len(), mean.len(), var.len()].iter().any(|&l| l != c) {
        return Err("parameter lengths differ".into());
    }
    let scale: Vec<f64> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
    let shift: Vec<f64> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
    Ok((scale, shift))
}

/// Folds the per-channel affine map `bn` (a BatchNormalization, Mul or Add)
/// computes, `y = x·scale + shift`, into its producer `prod`.
fn fold(
    g: &mut Graph,
    bn: NodeId,
    prod: NodeId,
    scale: &[f64],
    shift: &[f64],
) -> std::result::Result<(), String> {
    let c = scale.len();
    let pnode = g.node(prod).clone();
    let pop = pnode.op().expect("an op").clone();
    let wv = pnode.inputs.get(1).copied().flatten().ok_or("no weight")?;
    let w = g
        .const_tensor(wv)
        .ok_or("weights are not constant")?
        .clone();
    if w.dtype != DataType::F32 {
        return Err(format!("{} weights", w.dtype));
    }
    let wf = w.to_f32_vec().expect("f32");
    let dims: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
    // Which weight elements belong to output channel o, and the bias slot.
    let (bias_slot, channel_of): (usize, Box<dyn Fn(usize) -> usize>) = match pop.op_type.as_str() {
        "Conv" => {
            if dims.first() != Some(&c) {
                return Err("channel count mismatch".into());
            }
            let per = wf.len() / c;
            (2, Box::new(move |i| i / per))
        }
        "ConvTranspose" => {
            let group = pop.attr("group").and_then(|a| a.as_int()).unwrap_or(1) as usize;
            if dims.len() < 2 || dims[1] * group != c {
                return Err("channel count mismatch".into());
            }
            // W: [C_in, C_out/group, k...]; output channel = group index * (C_out/group) + j.
            let (cin, cog) = (dims[0], dims[1]);
            let inner: usize = dims[2..].iter().product();
            let cin_g = cin / group;
            (
                2,
                Box::new(move |i| ((i / inner) / cog / cin_g) * cog + (i / inner) % cog),
            )
        }
        "Gemm" | "MatMul" => {
            if dims.len() != 2 {
                return Err("weights are not 2-D".into());
            }
            let trans_b = pop.op_type == "Gemm"
                && pop.attr("transB").and_then(|a| a.as_int()).unwrap_or(0) != 0;
            if pop.op_type == "Gemm" {
                let alpha = pop.attr("alpha").and_then(|a| a.as_float()).unwrap_or(1.0);
                let trans_a = pop.attr("transA").and_then(|a| a.as_int()).unwrap_or(0);
                if alpha != 1.0 || trans_a != 0 {
                    return Err("Gemm with alpha or transA".into());
                }
            } else {
                // BatchNorm over MatMul output must normalise its last axis (rank 2).
                let rank = g
                    .value(pnode.inputs[0].ok_or("no input")?)
                    .ty
                    .tensor()
                    .and_then(|t| t.rank());
                if rank != Some(2) {
                    return Err("MatMul input is not known to be 2-D".into());
                }
            }
            let n = if trans_b { dims[0] } else { dims[1] };
            if n != c {
                return Err("channel count mismatch".into());
            }
            let cols = dims[1];
            (
                2,
                if trans_b {
                    Box::new(move |i| i / cols)
                } else {
                    Box::new(move |i| i % cols)
                },
            )
        }
        other => return Err(format!("unexpected {other}")),
    };
    let new_w: Vec<f32> = wf
        .iter()
        .enumerate()
        .map(|(i, &x)| (x as f64 * scale[channel_of(i)]) as f32)
        .collect();
    let old_bias: Vec<f64> = match pnode.inputs.get(bias_slot).copied().flatten() {
        None => vec![0.0; c],
        Some(b) => {
            let t = g.const_tensor(b).ok_or("bias is not constant")?;
            let v = t.to_f32_vec().ok_or("bias is not float")?;
            if pop.op_type == "Gemm"
                && pop.attr("beta").and_then(|a| a.as_float()).unwrap_or(1.0) != 1.0
            {
                return Err("Gemm with beta".into());
            }
            match v.len() {
                1 => vec![v[0] as f64; c],
                l if l == c => v.into_iter().map(f64::from).collect(),
                _ => return Err("bias does not broadcast per channel".into()),
            }
        }
    };
    let new_b: Vec<f32> = (0..c)
        .map(|o| (old_bias[o] * scale[o] + shift[o]) as f32)
        .collect();

    let wname = g.value(wv).name.clone();
    let new_wv = set_or_add_const(
        g,
        wv,
        &format!("{wname}_bnfold"),
        Tensor::from_f32(w.dims.clone(), &new_w),
    );
    let bias_tensor = Tensor::from_f32(vec![c as i64], &new_b);
    let new_bv = match pnode.inputs.get(bias_slot).copied().flatten() {
        Some(b) if g.const_tensor(b).is_some_and(|t| t.dims == [c as i64]) => {
            set_or_add_const(g, b, "bias_bnfold", bias_tensor)
        }
        _ => {
            let base = wname
                .strip_suffix("weight")
                .map(|s| format!("{s}bias"))
                .unwrap_or_else(|| format!("{wname}_bias"));
            g.add_const(&base, bias_tensor)
        }
    };
    let prod_out = pnode.outputs[0].ok_or("no output")?;
    let old: Vec<ValueId> = g
        .node(bn)
        .inputs
        .iter()
        .chain(pnode.inputs.iter().skip(1))
        .flatten()
        .copied()
        .collect();
    if pop.op_type == "MatMul" {
        // MatMul has no bias input: add one.
        g.set_input(prod, 1, Some(new_wv));
        let add = g.add_op(
            &format!("{}_bias", g.display_node_name(bn)),
            Op::new("Add"),
            &[Some(prod_out), Some(new_bv)],
            &["bn_folded"],
        );
        let out = g.node(add).outputs[0].expect("one output");
        g.value_mut(out).ty = g.value(prod_out).ty.clone();
        g.retire(bn, out);
    } else {
        g.set_input(prod, 1, Some(new_wv));
        g.set_input(prod, bias_slot, Some(new_bv));
        g.retire(bn, prod_out);
    }
    for v in old {
        g.remove_if_unused_const(v);
    }
    Ok(())
}

/// Replaces the tensor of constant `v` in place when `v` has no other
/// reader (keeping its name); otherwise adds a new constant named `name`.
fn set_or_add_const(g: &mut Graph, v: ValueId, name: &str, t: Tensor) -> ValueId {
    let p = g.producer(v);
    let private = g.consumers(v).len() == 1 && !g.inputs.contains(&v) && !g.is_graph_output(v);
    if private {
        if let NodeKind::Const(c) = &mut g.node_mut(p).kind {
            c.tensor = t;
            if let ConstOrigin::ConstantOp(op) = &mut c.origin {
                // Written back as a `value` tensor.
                op.attrs.clear();
            }
            return v;
        }
    }
    g.add_const(name, t)
}
