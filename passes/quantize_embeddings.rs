//! `quantize-embeddings{exclude=NODE;...}`: embedding tables stored as int8 rows.
//!
//! A transformer's word-embedding table is often most of its file (MiniLM: 11.7 M of
//! 17 M parameters), and a lookup reads a few rows of it. Quantized as an activation
//! (one scale for the whole table, `DequantizeLinear` → `Gather`), the table would be
//! dequantized whole on every run by engines that keep weight DQs unfolded, and rows of
//! different norms would share one step. Here each row gets its own symmetric int8
//! scale, and the lookup happens before the dequantization:
//!
//! `Gather(table_q, ids)` → `Cast` to float → `Mul` by `Gather(row_scale, ids)`
//!
//! which equals `Gather(DequantizeLinear(table_q, row_scale, axis=0), ids)` exactly, with
//! standard ops that every engine runs and that read only the looked-up rows.
//!
//! A lookup qualifies when `Gather` (axis 0) reads a 2-D f32 constant of at least
//! [`MIN_TABLE`] elements through indices that are not constant (constant lookups were
//! folded already); a table with non-finite values stays float, and the summary says so. Its output keeps its meaning and type, so
//! what reads it (a float Add, or a Q/DQ pair `convert-qdq` put there) is unchanged.
//! `insert-observers` leaves such lookups to this pass ([`is_embedding_lookup`]).

use super::quantize_dynamic::{check_exclusions, option_list};
use crate::ir::rewrite::{for_each_graph_mut, unshadow_names};
use crate::prelude::*;
use std::collections::{BTreeSet, HashMap};

/// Elements from which a table is worth int8 rows: below it the scales and the three
/// extra nodes outweigh the saving.
pub const MIN_TABLE: usize = 4096;

/// Whether node `n` of `g` is a lookup in a float embedding table this pass rewrites.
pub fn is_embedding_lookup(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    let Some(op) = node.op().filter(|_| node.is_op("Gather")) else {
        return false;
    };
    let axis = op.attr("axis").and_then(|a| a.as_int()).unwrap_or(0);
    if axis != 0 && axis != -2 {
        return false;
    }
    let (Some(table), Some(ids)) = (
        node.inputs.first().copied().flatten(),
        node.inputs.get(1).copied().flatten(),
    ) else {
        return false;
    };
    if g.const_tensor(ids).is_some() {
        return false;
    }
    let Some(t) = g.const_tensor(table) else {
        return false;
    };
    let Some(out) = node.outputs.first().copied().flatten() else {
        return false;
    };
    t.dtype == DataType::F32 && t.dims.len() == 2 && t.len() >= MIN_TABLE && !g.is_graph_output(out)
}

#[derive(Default)]
pub struct QuantizeEmbeddings {
    /// Gather nodes kept in float.
    pub exclude: BTreeSet<String>,
}

impl QuantizeEmbeddings {
    pub fn from_options(mut opts: PassOptions) -> Result<Box<dyn Pass>> {
        let exclude = opts
            .take("exclude")
            .map(|v| option_list(&v))
            .unwrap_or_default();
        opts.finish(&["exclude"])?;
        Ok(Box::new(QuantizeEmbeddings { exclude }))
    }
}

impl Pass for QuantizeEmbeddings {
    fn name(&self) -> &'static str {
        "quantize-embeddings"
    }

    fn options(&self) -> Vec<(String, String)> {
        if self.exclude.is_empty() {
            return vec![];
        }
        let list: Vec<String> = self.exclude.iter().cloned().collect();
        vec![("exclude".into(), list.join(";"))]
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        check_exclusions("quantize-embeddings", &model.graph, &self.exclude)?;
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            self.rewrite_graph(g, cx);
            Ok(())
        })?;
        unshadow_names(model);
        Ok(())
    }
}

/// A table quantized per row: int8 values and one scale per row.
struct RowQuantized {
    values: Tensor,
    scales: Tensor,
}

/// `None` when the table holds a NaN or an infinity.
fn quantize_rows(t: &Tensor) -> Option<RowQuantized> {
    let v = t.to_f32_vec().expect("checked f32");
    if v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let (rows, cols) = (t.dims[0] as usize, t.dims[1] as usize);
    let mut q = vec![0i64; v.len()];
    let mut scales = vec![1.0f32; rows];
    for r in 0..rows {
        let row = &v[r * cols..(r + 1) * cols];
        let amax = row.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
        // An all-zero row (padding token) keeps scale 1: zeros either way.
        if amax > 0.0 {
            scales[r] = amax / 127.0;
        }
        for (c, &x) in row.iter().enumerate() {
            q[r * cols + c] = qdq::quantize_value(x, scales[r], 0, -127, 127);
        }
    }
    Some(RowQuantized {
        values: qdq::int_tensor(DataType::I8, t.dims.clone(), &q),
        scales: Tensor::from_f32(vec![rows as i64, 1], &scales),
    })
}

impl QuantizeEmbeddings {
    fn rewrite_graph(&self, g: &mut Graph, cx: &mut PassContext) {
        let Ok(order) = g.topo_order() else { return };
        // A table read by several lookups is stored once.
        let mut stored: HashMap<ValueId, Option<(ValueId, ValueId)>> = HashMap::new();
        for n in order {
            if !is_embedding_lookup(g, n) {
                continue;
            }
            let name = g.display_node_name(n);
            if self.exclude.contains(&g.node(n).name) {
                cx.note(name, "stays float: excluded");
                continue;
            }
            let node = g.node(n);
            let table = node.inputs[0].expect("checked");
            let ids = node.inputs[1].expect("checked");
            let out = node.outputs[0].expect("checked");
            let ty = g.value(out).ty.clone();
            let oname = g.value(out).name.clone();
            let entry = *stored.entry(table).or_insert_with(|| {
                let rq = quantize_rows(g.const_tensor(table).expect("checked"))?;
                let tname = g.value(table).name.clone();
                let qv = g.add_const(&format!("{tname}_quantized"), rq.values);
                let sv = g.add_const(&format!("{tname}_row_scale"), rq.scales);
                Some((qv, sv))
            });
            let Some((qv, sv)) = entry else {
                cx.note(
                    name,
                    "stays float: its embedding table has non-finite values",
                );
                continue;
            };
            let rows = g.add_op(
                &format!("{name}_int8"),
                Op::new("Gather").with_attr("axis", 0i64),
                &[Some(qv), Some(ids)],
                &[&format!("{oname}_int8")],
            );
            let rows_v = g.node(rows).outputs[0].expect("one output");
            g.value_mut(rows_v).ty = qdq::retyped(&ty, DataType::I8);
            let scale = g.add_op(
                &format!("{name}_row_scale"),
                Op::new("Gather").with_attr("axis", 0i64),
                &[Some(sv), Some(ids)],
                &[&format!("{oname}_row_scale")],
            );
            let scale_v = g.node(scale).outputs[0].expect("one output");
            let cast = g.add_op(
                &format!("{name}_Cast"),
                Op::new("Cast").with_attr("to", DataType::F32.onnx_code() as i64),
                &[Some(rows_v)],
                &[&format!("{oname}_float")],
            );
            let cast_v = g.node(cast).outputs[0].expect("one output");
            g.value_mut(cast_v).ty = ty.clone();
            let mul = g.add_op(
                &format!("{name}_rescale"),
                Op::new("Mul"),
                &[Some(cast_v), Some(scale_v)],
                &[&format!("{oname}_rescaled")],
            );
            let mul_v = g.node(mul).outputs[0].expect("one output");
            g.value_mut(mul_v).ty = ty;
            g.replace_all_uses(out, mul_v);
            g.remove_node(n);
            g.remove_if_unused_const(table);
            cx.count("embedding tables", 1);
            cx.note(
                name,
                "embedding table stored as int8 rows (one scale per row), dequantized after the lookup",
            );
        }
    }
}
