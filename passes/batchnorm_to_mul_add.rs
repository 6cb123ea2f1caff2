//! `batchnorm-to-mul-add`: an inference BatchNormalization that could not
//! be folded becomes `x·scale + shift` with per-channel constants shaped
//! `[C, 1, …]` to broadcast over axis 1 (quantizable as Mul and Add).

use super::fold_batchnorm::bn_affine;
use crate::prelude::*;

#[derive(Default)]
pub struct BatchNormToMulAdd;

impl Pass for BatchNormToMulAdd {
    fn name(&self) -> &'static str {
        "batchnorm-to-mul-add"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            for m in g.find_matches(&op("BatchNormalization")) {
                let bn = m.anchor;
                let name = g.display_node_name(bn);
                let Some(x) = g.node(bn).inputs[0] else {
                    continue;
                };
                let Some(rank) = g.value(x).ty.tensor().and_then(|t| t.rank()) else {
                    cx.note(name, "kept: input rank unknown");
                    continue;
                };
                let (scale, shift) = match bn_affine(g, bn) {
                    Ok(a) => a,
                    Err(why) => {
                        cx.note(name, format!("kept: {why}"));
                        continue;
                    }
                };
                if rank < 2 {
                    cx.note(name, "kept: input has rank < 2");
                    continue;
                }
                let c = scale.len() as i64;
                let mut dims = vec![c];
                dims.extend(std::iter::repeat_n(1, rank - 2));
                let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
                let base = name.replace(['/', ' ', '>'], "_");
                let s = g.add_const(
                    &format!("{base}_scale"),
                    Tensor::from_f32(dims.clone(), &to_f32(&scale)),
                );
                let b = g.add_const(
                    &format!("{base}_shift"),
                    Tensor::from_f32(dims, &to_f32(&shift)),
                );
                let ty = g.value(g.node(bn).outputs[0].expect("output")).ty.clone();
                let mul = g.add_op(
                    &format!("{name}_mul"),
                    Op::new("Mul"),
                    &[Some(x), Some(s)],
                    &[&format!("{base}_scaled")],
                );
                let mv = g.node(mul).outputs[0].expect("one output");
                g.value_mut(mv).ty = ty.clone();
                let add = g.add_op(
                    &format!("{name}_add"),
                    Op::new("Add"),
                    &[Some(mv), Some(b)],
                    &[&format!("{base}_shifted")],
                );
                let av = g.node(add).outputs[0].expect("one output");
                g.value_mut(av).ty = ty;
                let params: Vec<ValueId> = g
                    .node(bn)
                    .inputs
                    .iter()
                    .skip(1)
                    .flatten()
                    .copied()
                    .collect();
                g.retire(bn, av);
                for p in params {
                    g.remove_if_unused_const(p);
                }
                cx.count("rewritten", 1);
            }
            Ok(())
        })
    }
}
