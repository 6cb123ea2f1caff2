//! LSTM (float; forward, reverse or bidirectional; default activations; layout 0).

use super::{boxed, input, sgemm, Kernel, NodeCtx};
use crate::executor::value::Array;
use crate::kernels::reference::q8lut::unary::sigmoid;

pub(super) fn build(t: &str, ctx: &NodeCtx<'_>) -> Result<Option<Box<dyn Kernel>>, String> {
    if t != "LSTM" {
        return Ok(None);
    }
    if let Some(acts) = ctx.op.attr("activations").and_then(|a| match &a.value {
        crate::ir::AttrValue::Strings(s) => Some(s.clone()),
        _ => None,
    }) {
        let ok = acts
            .chunks(3)
            .all(|c| c.len() == 3 && c[0] == b"Sigmoid" && c[1] == b"Tanh" && c[2] == b"Tanh");
        if !ok {
            return Err("LSTM with non-default activations is not supported".into());
        }
    }
    for a in ["clip", "activation_alpha", "activation_beta"] {
        ctx.refuse_attr(a, "LSTM option")?;
    }
    if ctx.int("input_forget", 0) != 0 || ctx.int("layout", 0) != 0 {
        return Err("LSTM input_forget=1 / layout=1 are not supported".into());
    }
    if ctx.has(7) {
        return Err("LSTM peepholes (input P) are not supported".into());
    }
    let dir = ctx.string("direction", "forward");
    let dirs: Vec<bool> = match dir.as_str() {
        "forward" => vec![false],
        "reverse" => vec![true],
        "bidirectional" => vec![false, true],
        d => return Err(format!("LSTM direction `{d}`")),
    };
    let hidden = ctx.int("hidden_size", 0);
    Ok(Some(boxed(move |i| {
        let x = input(i, 0)?;
        let (w, r) = (input(i, 1)?, input(i, 2)?);
        if x.rank() != 3 || w.rank() != 3 || r.rank() != 3 {
            return Err("LSTM X, W, R must be 3-D".into());
        }
        let (seq, batch, isz) = (x.shape[0], x.shape[1], x.shape[2]);
        let h = r.shape[2];
        if (hidden != 0 && hidden as usize != h)
            || w.shape != [dirs.len(), 4 * h, isz]
            || r.shape != [dirs.len(), 4 * h, h]
        {
            return Err(format!(
                "LSTM weight shapes W {:?} R {:?} do not match",
                w.shape, r.shape
            ));
        }
        if let Some(sl) = i.get(4).copied().flatten() {
            if sl.ints()?.iter().any(|&l| l as usize != seq) {
                return Err(
                    "LSTM sequence_lens shorter than the sequence are not supported".into(),
                );
            }
        }
        let nd = dirs.len();
        let get = |k: usize, len: usize| -> Result<Option<&[f32]>, String> {
            match i.get(k).copied().flatten() {
                Some(a) if a.len() == len => Ok(Some(a.as_f32()?)),
                Some(a) => Err(format!("LSTM input {k} has shape {:?}", a.shape)),
                None => Ok(None),
            }
        };
        let b = get(3, nd * 8 * h)?;
        let h0 = get(5, nd * batch * h)?;
        let c0 = get(6, nd * batch * h)?;
        let (xv, wv, rv) = (x.as_f32()?, w.as_f32()?, r.as_f32()?);
        let mut y = vec![0f32; seq * nd * batch * h];
        let mut yh = vec![0f32; nd * batch * h];
        let mut yc = vec![0f32; nd * batch * h];
        for (d, &rev) in dirs.iter().enumerate() {
            // Transposed weights so that gates = x·Wᵀ + h·Rᵀ is a plain sgemm.
            let wt = transpose2(&wv[d * 4 * h * isz..(d + 1) * 4 * h * isz], 4 * h, isz);
            let rt = transpose2(&rv[d * 4 * h * h..(d + 1) * 4 * h * h], 4 * h, h);
            let bias: Vec<f32> = (0..4 * h)
                .map(|k| b.map_or(0.0, |b| b[d * 8 * h + k] + b[d * 8 * h + 4 * h + k]))
                .collect();
            let mut hs = h0.map_or(vec![0f32; batch * h], |v| {
                v[d * batch * h..(d + 1) * batch * h].to_vec()
            });
            let mut cs = c0.map_or(vec![0f32; batch * h], |v| {
                v[d * batch * h..(d + 1) * batch * h].to_vec()
            });
            let mut gx = vec![0f32; batch * 4 * h];
            let mut gh = vec![0f32; batch * 4 * h];
            for step in 0..seq {
                let t = if rev { seq - 1 - step } else { step };
                sgemm(
                    batch,
                    4 * h,
                    isz,
                    &xv[t * batch * isz..(t + 1) * batch * isz],
                    &wt,
                    &mut gx,
                );
                sgemm(batch, 4 * h, h, &hs, &rt, &mut gh);
                for bi in 0..batch {
                    for k in 0..h {
                        let g = |q: usize| {
                            gx[bi * 4 * h + q * h + k]
                                + gh[bi * 4 * h + q * h + k]
                                + bias[q * h + k]
                        };
                        // Gate order i, o, f, c (ONNX).
                        let (ig, og, fg, cg) =
                            (sigmoid(g(0)), sigmoid(g(1)), sigmoid(g(2)), g(3).tanh());
                        let c = fg * cs[bi * h + k] + ig * cg;
                        cs[bi * h + k] = c;
                        hs[bi * h + k] = og * c.tanh();
                    }
                }
                y[(t * nd + d) * batch * h..][..batch * h].copy_from_slice(&hs);
            }
            yh[d * batch * h..(d + 1) * batch * h].copy_from_slice(&hs);
            yc[d * batch * h..(d + 1) * batch * h].copy_from_slice(&cs);
        }
        Ok(vec![
            Array::f32(vec![seq, nd, batch, h], y),
            Array::f32(vec![nd, batch, h], yh),
            Array::f32(vec![nd, batch, h], yc),
        ])
    })))
}

fn transpose2(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = v[r * cols + c];
        }
    }
    t
}
