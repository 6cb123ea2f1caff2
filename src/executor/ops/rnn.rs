//! LSTM (float; forward, reverse or bidirectional; default activations; layout 0).

use super::{boxed, input, sgemm, Kernel, NodeCtx};
use crate::executor::value::Array;
use crate::kernels::vmath;

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
    // Constant weights (the usual case) are transposed once here rather than on every run.
    let pre_t = match (ctx.konst(1), ctx.konst(2)) {
        (Some(w), Some(r)) if w.rank() == 3 && r.rank() == 3 => {
            let (w4h, isz, h) = (w.shape[1], w.shape[2], r.shape[2]);
            let (wv, rv) = (w.as_f32()?, r.as_f32()?);
            let nd = w.shape[0];
            if wv.len() == nd * w4h * isz && rv.len() == r.shape[0] * r.shape[1] * h {
                let wt = (0..nd)
                    .map(|d| transpose2(&wv[d * w4h * isz..(d + 1) * w4h * isz], w4h, isz))
                    .collect::<Vec<_>>();
                let rt = (0..r.shape[0])
                    .map(|d| {
                        let rr = r.shape[1];
                        transpose2(&rv[d * rr * h..(d + 1) * rr * h], rr, h)
                    })
                    .collect::<Vec<_>>();
                Some((wt, rt))
            } else {
                None
            }
        }
        _ => None,
    };
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
        let g4 = 4 * h;
        for (d, &rev) in dirs.iter().enumerate() {
            // Transposed weights so that gates = x·Wᵀ + h·Rᵀ is a plain sgemm.
            let owned;
            let (wt, rt): (&[f32], &[f32]) = match &pre_t {
                Some((wt, rt)) => (&wt[d], &rt[d]),
                None => {
                    owned = (
                        transpose2(&wv[d * g4 * isz..(d + 1) * g4 * isz], g4, isz),
                        transpose2(&rv[d * g4 * h..(d + 1) * g4 * h], g4, h),
                    );
                    (&owned.0, &owned.1)
                }
            };
            let bias: Vec<f32> = (0..g4)
                .map(|k| b.map_or(0.0, |b| b[d * 8 * h + k] + b[d * 8 * h + g4 + k]))
                .collect();
            let mut hs = h0.map_or(vec![0f32; batch * h], |v| {
                v[d * batch * h..(d + 1) * batch * h].to_vec()
            });
            let mut cs = c0.map_or(vec![0f32; batch * h], |v| {
                v[d * batch * h..(d + 1) * batch * h].to_vec()
            });
            // The input projections of all time steps in one GEMM (each output is the same
            // FMA chain as a per-step GEMM would compute).
            let mut gx_all = vec![0f32; seq * batch * g4];
            sgemm(
                seq * batch,
                g4,
                isz,
                &xv[..seq * batch * isz],
                wt,
                &mut gx_all,
            );
            let mut gh = vec![0f32; batch * g4];
            let mut ct = vec![0f32; h];
            for step in 0..seq {
                let t = if rev { seq - 1 - step } else { step };
                sgemm(batch, g4, h, &hs, rt, &mut gh);
                let gx = &gx_all[t * batch * g4..(t + 1) * batch * g4];
                for bi in 0..batch {
                    // Pre-activations in place of gh, then the gates over whole slices
                    // (vectorised): order i, o, f, c (ONNX), so i, o, f are contiguous.
                    let g = &mut gh[bi * g4..(bi + 1) * g4];
                    for ((v, &x), &bb) in g.iter_mut().zip(&gx[bi * g4..]).zip(&bias) {
                        *v = x + *v + bb;
                    }
                    vmath::sigmoid_slice(&mut g[..3 * h]);
                    vmath::tanh_slice(&mut g[3 * h..]);
                    let (ig, rest) = g.split_at(h);
                    let (og, rest) = rest.split_at(h);
                    let (fg, cg) = rest.split_at(h);
                    let c = &mut cs[bi * h..(bi + 1) * h];
                    for (((cv, &f), &i), &gc) in c.iter_mut().zip(fg).zip(ig).zip(cg) {
                        *cv = f * *cv + i * gc;
                    }
                    ct.copy_from_slice(c);
                    vmath::tanh_slice(&mut ct);
                    for ((hv, &o), &tc) in hs[bi * h..(bi + 1) * h].iter_mut().zip(og).zip(&ct) {
                        *hv = o * tc;
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
