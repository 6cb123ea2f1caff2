//! Reductions: ReduceMean/Sum/Max/Min/Prod/SumSquare/L2 (axes as attribute or input, by
//! opset), ArgMax/ArgMin.

use super::{boxed, input, Kernel, NodeCtx};
use crate::executor::value::{norm_axis, strides, Array, ArrayData};

pub(super) fn build(t: &str, ctx: &NodeCtx<'_>) -> Result<Option<Box<dyn Kernel>>, String> {
    match t {
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd"
        | "ReduceSumSquare" | "ReduceL2" => {}
        "ArgMax" | "ArgMin" => {
            let axis = ctx.int("axis", 0);
            let keep = ctx.int("keepdims", 1) != 0;
            let last = ctx.int("select_last_index", 0) != 0;
            let max = t == "ArgMax";
            return Ok(Some(boxed(move |i| {
                let x = input(i, 0)?;
                let v = x.data.to_f64_vec();
                let a = norm_axis(axis, x.rank(), false)?;
                let (outer, d) = (x.shape[..a].iter().product::<usize>(), x.shape[a]);
                let inner: usize = x.shape[a + 1..].iter().product();
                let mut out = Vec::with_capacity(outer * inner);
                for o in 0..outer {
                    for n in 0..inner {
                        let mut best = 0usize;
                        for k in 1..d {
                            let (cand, cur) =
                                (v[(o * d + k) * inner + n], v[(o * d + best) * inner + n]);
                            let better = if max { cand > cur } else { cand < cur };
                            if better || (last && cand == cur) {
                                best = k;
                            }
                        }
                        out.push(best as i64);
                    }
                }
                let mut shape = x.shape.clone();
                if keep {
                    shape[a] = 1;
                } else {
                    shape.remove(a);
                }
                Ok(vec![Array::i64(shape, out)])
            })));
        }
        _ => return Ok(None),
    }
    let keep = ctx.int("keepdims", 1) != 0;
    let noop_empty = ctx.int("noop_with_empty_axes", 0) != 0;
    // Axes moved from attribute to input: ReduceSum at opset 13, the others at 18.
    let axes_input = if t == "ReduceSum" {
        ctx.opset >= 13
    } else {
        ctx.opset >= 18
    };
    let attr_axes = ctx.ints("axes");
    let op = t.to_string();
    Ok(Some(boxed(move |i| {
        let x = input(i, 0)?;
        let axes = if axes_input {
            i.get(1).copied().flatten().map(|a| a.ints()).transpose()?
        } else {
            attr_axes.clone()
        };
        let axes: Vec<usize> = match axes {
            Some(a) if !a.is_empty() => a
                .iter()
                .map(|&v| norm_axis(v, x.rank(), false))
                .collect::<Result<_, _>>()?,
            _ if noop_empty => return Ok(vec![x.clone()]),
            _ => (0..x.rank()).collect(),
        };
        let v = x.as_f32()?;
        Ok(vec![reduce(&op, v, &x.shape, &axes, keep)])
    })))
}

fn reduce(op: &str, v: &[f32], shape: &[usize], axes: &[usize], keep: bool) -> Array {
    let kept: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if axes.contains(&d) { 1 } else { n })
        .collect();
    let out_n: usize = kept.iter().product();
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let (init, f): (f32, fn(f32, f32) -> f32) = match op {
        "ReduceMax" => (f32::NEG_INFINITY, f32::max),
        "ReduceMin" => (f32::INFINITY, f32::min),
        "ReduceProd" => (1.0, |a, b| a * b),
        "ReduceSumSquare" | "ReduceL2" => (0.0, |a, b| a + b * b),
        _ => (0.0, |a, b| a + b),
    };
    let mut acc = vec![init; out_n];
    let last_reduced = axes.len() == 1 && axes[0] == shape.len() - 1;
    if last_reduced && count > 0 {
        // Innermost-axis reduction (softmax/LayerNorm style): contiguous rows, one
        // monomorphised fold per op (no indirect call per element; same order).
        fn rows(v: &[f32], count: usize, init: f32, acc: &mut [f32], f: impl Fn(f32, f32) -> f32) {
            for (a, row) in acc.iter_mut().zip(v.chunks(count)) {
                *a = row.iter().fold(init, |a, &b| f(a, b));
            }
        }
        // Sums in `vmath::lane_sum`'s order (as the fused LayerNorm and Softmax sum).
        use crate::kernels::vmath::{lane_sum, lane_sum_sq};
        match op {
            "ReduceMax" => rows(v, count, init, &mut acc, f32::max),
            "ReduceMin" => rows(v, count, init, &mut acc, f32::min),
            "ReduceProd" => rows(v, count, init, &mut acc, |a, b| a * b),
            "ReduceSumSquare" | "ReduceL2" => acc
                .iter_mut()
                .zip(v.chunks(count))
                .for_each(|(a, row)| *a = lane_sum_sq(row)),
            _ => acc
                .iter_mut()
                .zip(v.chunks(count))
                .for_each(|(a, row)| *a = lane_sum(row)),
        }
    } else {
        let ks = strides(&kept);
        let is = strides(shape);
        for (flat, &x) in v.iter().enumerate() {
            let mut o = 0;
            for d in 0..shape.len() {
                if kept[d] != 1 || shape[d] == 1 {
                    o += ((flat / is[d]) % shape[d]) * ks[d];
                }
            }
            acc[o] = f(acc[o], x);
        }
    }
    match op {
        "ReduceMean" => acc.iter_mut().for_each(|a| *a /= count as f32),
        "ReduceL2" => acc.iter_mut().for_each(|a| *a = a.sqrt()),
        _ => {}
    }
    let out_shape = if keep {
        kept
    } else {
        shape
            .iter()
            .enumerate()
            .filter(|(d, _)| !axes.contains(d))
            .map(|(_, &n)| n)
            .collect()
    };
    Array {
        shape: out_shape,
        data: ArrayData::F32(acc),
    }
}
