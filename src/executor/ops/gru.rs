//! GRU (float; forward, reverse or bidirectional; default activations; layout 0;
//! `linear_before_reset` 0 or 1), as recurrent VADs and OCR heads export it.
//!
//! Gate order in W, R and B is z, r, h (ONNX). The input projection of every time step
//! is one GEMM up front; each step then does `H·Rᵀ` for the recurrent part.

use super::{boxed, input, sgemm, Kernel, NodeCtx};
use crate::executor::value::Array;
use crate::kernels::reference::q8lut::unary::sigmoid;

pub(super) fn build(t: &str, ctx: &NodeCtx<'_>) -> Result<Option<Box<dyn Kernel>>, String> {
    if t != "GRU" {
        return Ok(None);
    }
    if let Some(acts) = ctx.op.attr("activations").and_then(|a| match &a.value {
        crate::ir::AttrValue::Strings(s) => Some(s.clone()),
        _ => None,
    }) {
        let ok = acts
            .chunks(2)
            .all(|c| c.len() == 2 && c[0] == b"Sigmoid" && c[1] == b"Tanh");
        if !ok {
            return Err("GRU with non-default activations is not supported".into());
        }
    }
    for a in ["clip", "activation_alpha", "activation_beta"] {
        ctx.refuse_attr(a, "GRU option")?;
    }
    if ctx.int("layout", 0) != 0 {
        return Err("GRU layout=1 is not supported".into());
    }
    let dirs: Vec<bool> = match ctx.string("direction", "forward").as_str() {
        "forward" => vec![false],
        "reverse" => vec![true],
        "bidirectional" => vec![false, true],
        d => return Err(format!("GRU direction `{d}`")),
    };
    let hidden = ctx.int("hidden_size", 0);
    let lbr = ctx.int("linear_before_reset", 0) != 0;
    let n_outputs = ctx.n_outputs;
    Ok(Some(boxed(move |i| {
        let x = input(i, 0)?;
        let (w, r) = (input(i, 1)?, input(i, 2)?);
        if x.rank() != 3 || w.rank() != 3 || r.rank() != 3 {
            return Err("GRU X, W, R must be 3-D".into());
        }
        let (seq, batch, isz) = (x.shape[0], x.shape[1], x.shape[2]);
        let h = r.shape[2];
        let nd = dirs.len();
        if (hidden != 0 && hidden as usize != h)
            || w.shape != [nd, 3 * h, isz]
            || r.shape != [nd, 3 * h, h]
        {
            return Err(format!(
                "GRU weight shapes W {:?} R {:?} do not match",
                w.shape, r.shape
            ));
        }
        if let Some(sl) = i.get(4).copied().flatten() {
            if sl.ints()?.iter().any(|&l| l as usize != seq) {
                return Err("GRU sequence_lens shorter than the sequence are not supported".into());
            }
        }
        let b = i
            .get(3)
            .copied()
            .flatten()
            .map(|b| b.as_f32())
            .transpose()?;
        if b.is_some_and(|b| b.len() != nd * 6 * h) {
            return Err("GRU B must be [num_directions, 6·hidden]".into());
        }
        let h0 = i
            .get(5)
            .copied()
            .flatten()
            .map(|a| a.as_f32())
            .transpose()?;
        if h0.is_some_and(|v| v.len() != nd * batch * h) {
            return Err("GRU initial_h must be [num_directions, batch, hidden]".into());
        }
        let (x, w, r) = (x.as_f32()?, w.as_f32()?, r.as_f32()?);
        let mut y = vec![0f32; seq * nd * batch * h];
        let mut y_h = vec![0f32; nd * batch * h];
        for (d, &reverse) in dirs.iter().enumerate() {
            let g3 = 3 * h;
            // Wᵀ: [isz, 3h] and Rᵀ: [h, 3h].
            let wd = &w[d * g3 * isz..(d + 1) * g3 * isz];
            let rd = &r[d * g3 * h..(d + 1) * g3 * h];
            let wt = transpose(wd, g3, isz);
            let rt = transpose(rd, g3, h);
            let zeros = vec![0f32; 6 * h];
            let bd = b.map_or(&zeros[..], |b| &b[d * 6 * h..(d + 1) * 6 * h]);
            let (wb, rb) = bd.split_at(g3);
            // Input projections of all steps: [seq·batch, 3h] + Wb.
            let mut xp = vec![0f32; seq * batch * g3];
            sgemm(seq * batch, g3, isz, x, &wt, &mut xp);
            for row in xp.chunks_mut(g3) {
                row.iter_mut().zip(wb).for_each(|(v, b)| *v += b);
            }
            let mut hs: Vec<f32> = match h0 {
                Some(v) => v[d * batch * h..(d + 1) * batch * h].to_vec(),
                None => vec![0f32; batch * h],
            };
            let mut hr = vec![0f32; batch * g3];
            let mut rh = vec![0f32; batch * h];
            let mut rh_proj = vec![0f32; batch * h];
            for step in 0..seq {
                let t = if reverse { seq - 1 - step } else { step };
                // Recurrent part of z and r (and of h when linear_before_reset).
                sgemm(batch, g3, h, &hs, &rt, &mut hr);
                if !lbr {
                    // (r ⊙ H)·Rhᵀ needs r first.
                    for bi in 0..batch {
                        for j in 0..h {
                            let xr = xp[(t * batch + bi) * g3 + h + j];
                            let rg = sigmoid(xr + hr[bi * g3 + h + j] + rb[h + j]);
                            rh[bi * h + j] = rg * hs[bi * h + j];
                        }
                    }
                    // Rhᵀ is the last h columns of Rᵀ: gather them contiguous.
                    let rht: Vec<f32> = (0..h)
                        .flat_map(|k| rt[k * g3 + 2 * h..k * g3 + 3 * h].iter().copied())
                        .collect();
                    sgemm(batch, h, h, &rh, &rht, &mut rh_proj);
                }
                for bi in 0..batch {
                    for j in 0..h {
                        let xrow = &xp[(t * batch + bi) * g3..][..g3];
                        let hrow = &hr[bi * g3..][..g3];
                        let z = sigmoid(xrow[j] + hrow[j] + rb[j]);
                        let rg = sigmoid(xrow[h + j] + hrow[h + j] + rb[h + j]);
                        let cand = if lbr {
                            (xrow[2 * h + j] + rg * (hrow[2 * h + j] + rb[2 * h + j])).tanh()
                        } else {
                            (xrow[2 * h + j] + rh_proj[bi * h + j] + rb[2 * h + j]).tanh()
                        };
                        let prev = hs[bi * h + j];
                        let new = (1.0 - z) * cand + z * prev;
                        y[((t * nd + d) * batch + bi) * h + j] = new;
                        hs[bi * h + j] = new;
                    }
                }
            }
            y_h[d * batch * h..(d + 1) * batch * h].copy_from_slice(&hs);
        }
        let mut outs = vec![
            Array::f32(vec![seq, nd, batch, h], y),
            Array::f32(vec![nd, batch, h], y_h),
        ];
        outs.truncate(n_outputs.max(1));
        Ok(outs)
    })))
}

fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = a[i * cols + j];
        }
    }
    t
}
