//! `fuse-matmul-add`: MatMul by a constant 2-D weight followed by the Add of
//! a constant bias becomes one Gemm, where Gemm's 2-D rule allows it (the
//! activation must be known to be rank 2). Either Add operand may be the
//! bias (torch exports put it first).

use crate::prelude::*;

#[derive(Default)]
pub struct FuseMatMulAdd;

impl Pass for FuseMatMulAdd {
    fn name(&self) -> &'static str {
        "fuse-matmul-add"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let mm = || {
            op("MatMul")
                .single_use()
                .bind("matmul")
                .input(1, constant())
        };
        let patterns = [
            op("Add")
                .bind("add")
                .input(0, mm())
                .input(1, constant().bind("bias")),
            op("Add")
                .bind("add")
                .input(1, mm())
                .input(0, constant().bind("bias")),
        ];
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            for p in &patterns {
                for m in g.find_matches(p) {
                    // An earlier rewrite in this sweep may have consumed it.
                    if g.try_node(m.anchor).is_none() || g.match_at(m.anchor, p).is_none() {
                        continue;
                    }
                    match fuse(g, &m) {
                        Ok(()) => cx.count("fused", 1),
                        Err(why) => cx.note(
                            g.display_node_name(m.anchor),
                            format!("not fused into Gemm: {why}"),
                        ),
                    }
                }
            }
            Ok(())
        })
    }
}

fn fuse(g: &mut Graph, m: &Match) -> std::result::Result<(), String> {
    let (add, mm) = (m.node("add"), m.node("matmul"));
    let bias_v = g.node(m.node("bias")).outputs[0].expect("one output");
    let x = g.node(mm).inputs[0].ok_or("no input")?;
    let w = g.node(mm).inputs[1].ok_or("no weight")?;
    let wt = g.const_tensor(w).ok_or("weight not constant")?;
    if wt.dims.len() != 2 {
        return Err("weight is not 2-D".into());
    }
    let n = wt.dims[1];
    if g.value(x).ty.tensor().and_then(|t| t.rank()) != Some(2) {
        return Err("input is not known to be 2-D (Gemm needs rank 2)".into());
    }
    let b = g.const_tensor(bias_v).ok_or("bias not constant")?;
    let broadcasts = b.dims == [n] || b.dims == [1, n] || b.len() == 1;
    if !broadcasts {
        return Err(format!(
            "bias shape {:?} does not broadcast over [M,{n}]",
            b.dims
        ));
    }
    let name = g.node(mm).name.clone();
    let ty = g.value(g.node(add).outputs[0].expect("output")).ty.clone();
    let gemm = g.add_op(
        &name,
        Op::new("Gemm"),
        &[Some(x), Some(w), Some(bias_v)],
        &["gemm_out"],
    );
    let out = g.node(gemm).outputs[0].expect("one output");
    g.value_mut(out).ty = ty;
    g.retire(add, out);
    g.remove_dead_nodes_from(mm);
    Ok(())
}
