//! Normalisations: Softmax/LogSoftmax (both the opset < 13 2-D coercion and the per-axis
//! form), LayerNormalization, BatchNormalization (inference), InstanceNormalization.

use super::{boxed, boxed_cow, input, Kernel, NodeCtx};
use crate::executor::value::{norm_axis, Array};

pub(super) fn build(t: &str, ctx: &NodeCtx<'_>) -> Result<Option<Box<dyn Kernel>>, String> {
    Ok(Some(match t {
        "Softmax" | "LogSoftmax" => {
            let legacy = ctx.opset < 13;
            let axis = ctx.int("axis", if legacy { 1 } else { -1 });
            let log = t == "LogSoftmax";
            // In place in the input's buffer when the executor hands it over.
            boxed_cow(move |x, _| {
                let a = norm_axis(axis, x.rank(), false)?;
                let Array { shape, data } = x.into_owned();
                let mut out = match data {
                    crate::executor::value::ArrayData::F32(v) => v,
                    d => return Err(format!("expected a float tensor, got {}", d.dtype())),
                };
                // Contiguous rows: one exp pass over the whole tensor (the same
                // per-element function as row by row, so the same bits).
                let row_len = if legacy {
                    shape[a..].iter().product::<usize>()
                } else if shape[a + 1..].iter().product::<usize>() == 1 {
                    shape[a]
                } else {
                    0
                };
                if !log && row_len > 0 {
                    softmax_rows(&mut out, row_len);
                    return Ok(vec![Array::f32(shape.clone(), out)]);
                }
                if legacy {
                    // Opset < 13: coerce to 2-D [prod(dims[..axis]), prod(dims[axis..])].
                    let inner: usize = shape[a..].iter().product();
                    if inner > 0 {
                        for row in out.chunks_mut(inner) {
                            softmax_strided(row, inner, 1, log);
                        }
                    }
                } else {
                    let d = shape[a];
                    let inner: usize = shape[a + 1..].iter().product();
                    let outer: usize = shape[..a].iter().product();
                    for o in 0..outer {
                        let block = &mut out[o * d * inner..(o + 1) * d * inner];
                        for n in 0..inner {
                            softmax_strided(&mut block[n..], d, inner, log);
                        }
                    }
                }
                Ok(vec![Array::f32(shape.clone(), out)])
            })
        }
        "LayerNormalization" => {
            let axis = ctx.int("axis", -1);
            let eps = ctx.float("epsilon", 1e-5);
            if ctx.int("stash_type", 1) != 1 {
                return Err("LayerNormalization stash_type other than float".into());
            }
            let n_out = ctx.n_outputs;
            boxed(move |i| {
                let x = input(i, 0)?;
                let v = x.as_f32()?;
                let a = norm_axis(axis, x.rank(), false)?;
                let inner: usize = x.shape[a..].iter().product();
                let scale = broadcast_param(input(i, 1)?, inner, "scale")?;
                let bias = match i.get(2).copied().flatten() {
                    Some(b) => broadcast_param(b, inner, "bias")?,
                    None => vec![0.0; inner],
                };
                let mut out = Vec::with_capacity(v.len());
                let (mut means, mut inv_stds) = (Vec::new(), Vec::new());
                if inner > 0 {
                    for row in v.chunks(inner) {
                        let mean = row.iter().sum::<f32>() / inner as f32;
                        let var = row.iter().map(|&e| (e - mean) * (e - mean)).sum::<f32>()
                            / inner as f32;
                        let inv = 1.0 / (var + eps).sqrt();
                        for k in 0..inner {
                            out.push((row[k] - mean) * inv * scale[k] + bias[k]);
                        }
                        means.push(mean);
                        inv_stds.push(inv);
                    }
                }
                let mut stat_shape = x.shape.clone();
                stat_shape[a..].iter_mut().for_each(|d| *d = 1);
                let mut outs = vec![Array::f32(x.shape.clone(), out)];
                if n_out > 1 {
                    outs.push(Array::f32(stat_shape.clone(), means));
                    outs.push(Array::f32(stat_shape, inv_stds));
                }
                Ok(outs)
            })
        }
        "BatchNormalization" => {
            if ctx.int("training_mode", 0) != 0 {
                return Err("BatchNormalization training_mode=1 is not supported".into());
            }
            let eps = ctx.float("epsilon", 1e-5);
            boxed(move |i| {
                let x = input(i, 0)?;
                let c = *x.shape.get(1).ok_or("BatchNormalization needs rank ≥ 2")?;
                let p: Vec<&[f32]> = (1..5)
                    .map(|k| input(i, k)?.as_f32())
                    .collect::<Result<_, _>>()?;
                if p.iter().any(|s| s.len() != c) {
                    return Err(format!(
                        "BatchNormalization parameters must have C = {c} values"
                    ));
                }
                let (s, b, m, var) = (p[0], p[1], p[2], p[3]);
                let inner: usize = x.shape[2..].iter().product();
                let v = x.as_f32()?;
                let mut out = Vec::with_capacity(v.len());
                // Folded per channel first, as ONNX Runtime does (x·scale' + bias'), so that
                // values near a later quantizer's rounding boundary round the same way.
                let sc: Vec<f32> = (0..c).map(|k| 1.0 / (var[k] + eps).sqrt() * s[k]).collect();
                let bi: Vec<f32> = (0..c).map(|k| b[k] - m[k] * sc[k]).collect();
                for (k, &e) in v.iter().enumerate() {
                    let ch = (k / inner.max(1)) % c;
                    out.push(e * sc[ch] + bi[ch]);
                }
                Ok(vec![Array::f32(x.shape.clone(), out)])
            })
        }
        "InstanceNormalization" => {
            let eps = ctx.float("epsilon", 1e-5);
            boxed(move |i| {
                let x = input(i, 0)?;
                let c = *x
                    .shape
                    .get(1)
                    .ok_or("InstanceNormalization needs rank ≥ 2")?;
                let (s, b) = (input(i, 1)?.as_f32()?, input(i, 2)?.as_f32()?);
                if s.len() != c || b.len() != c {
                    return Err(format!(
                        "InstanceNormalization parameters must have {c} values"
                    ));
                }
                let inner: usize = x.shape[2..].iter().product();
                let mut out = Vec::with_capacity(x.len());
                if inner > 0 {
                    for (k, row) in x.as_f32()?.chunks(inner).enumerate() {
                        let mean = row.iter().sum::<f32>() / inner as f32;
                        let var = row.iter().map(|&e| (e - mean) * (e - mean)).sum::<f32>()
                            / inner as f32;
                        let ch = k % c;
                        let inv = 1.0 / (var + eps).sqrt();
                        out.extend(row.iter().map(|&e| (e - mean) * inv * s[ch] + b[ch]));
                    }
                }
                Ok(vec![Array::f32(x.shape.clone(), out)])
            })
        }
        _ => return Ok(None),
    }))
}

/// Softmax over `n` elements at stride `stride` starting at `v[0]`.
/// Softmax of every contiguous row of `n` values of `v`: as [`softmax_strided`]'s
/// contiguous path, with the exponentials of all rows in one vectorised pass.
fn softmax_rows(v: &mut [f32], n: usize) {
    use crate::kernels::vmath::{lane_max, lane_sum};
    for row in v.chunks_mut(n) {
        let max = lane_max(row);
        row.iter_mut().for_each(|x| *x -= max);
    }
    crate::kernels::vmath::exp_slice(v);
    for row in v.chunks_mut(n) {
        let sum = lane_sum(row);
        row.iter_mut().for_each(|x| *x /= sum);
    }
}

fn softmax_strided(v: &mut [f32], n: usize, stride: usize, log: bool) {
    if stride == 1 && !log {
        // Contiguous: the exponentials as one vectorised pass (kernels::vmath, ≤ 2 ulp), then
        // the same sum order and division as below.
        let v = &mut v[..n];
        let max = crate::kernels::vmath::lane_max(v);
        v.iter_mut().for_each(|x| *x -= max);
        crate::kernels::vmath::exp_slice(v);
        let sum = crate::kernels::vmath::lane_sum(v);
        v.iter_mut().for_each(|x| *x /= sum);
        return;
    }
    let mut max = f32::NEG_INFINITY;
    for k in 0..n {
        max = max.max(v[k * stride]);
    }
    let mut sum = 0f32;
    for k in 0..n {
        let e = (v[k * stride] - max).exp();
        sum += e;
        if !log {
            v[k * stride] = e;
        }
    }
    for k in 0..n {
        let p = &mut v[k * stride];
        *p = if log { *p - max - sum.ln() } else { *p / sum };
    }
}

/// A LayerNorm scale/bias broadcast to the normalised block.
fn broadcast_param(p: &Array, inner: usize, what: &str) -> Result<Vec<f32>, String> {
    let v = p.as_f32()?;
    if v.len() == inner {
        Ok(v.to_vec())
    } else if v.len() == 1 {
        Ok(vec![v[0]; inner])
    } else if !v.is_empty() && inner.is_multiple_of(v.len()) {
        Ok(v.iter().cycle().take(inner).copied().collect())
    } else {
        Err(format!(
            "LayerNormalization {what} has {} values for {inner}",
            v.len()
        ))
    }
}
