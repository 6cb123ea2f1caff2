//! Float MatMul (numpy batch broadcasting) and Gemm, over a simple cache-friendly sgemm.

use super::{boxed, input, Kernel, NodeCtx};
use crate::executor::value::{broadcast_index, broadcast_shape, Array};

pub(super) fn build(t: &str, ctx: &NodeCtx<'_>) -> Result<Option<Box<dyn Kernel>>, String> {
    Ok(Some(match t {
        "MatMul" => boxed(|i| Ok(vec![matmul(input(i, 0)?, input(i, 1)?)?])),
        "Gemm" => {
            let (ta, tb) = (ctx.int("transA", 0) != 0, ctx.int("transB", 0) != 0);
            let (alpha, beta) = (ctx.float("alpha", 1.0), ctx.float("beta", 1.0));
            boxed(move |i| {
                let (a, b) = (input(i, 0)?, input(i, 1)?);
                if a.rank() != 2 || b.rank() != 2 {
                    return Err("Gemm inputs must be 2-D".into());
                }
                let a_t = if ta {
                    super::shape::transpose(a, &[1, 0])?
                } else {
                    a.clone()
                };
                let b_t = if tb {
                    super::shape::transpose(b, &[1, 0])?
                } else {
                    b.clone()
                };
                let (m, k, n) = (a_t.shape[0], a_t.shape[1], b_t.shape[1]);
                if b_t.shape[0] != k {
                    return Err(format!("Gemm: A is {m}×{k}, B is {:?}", b_t.shape));
                }
                let mut c = vec![0f32; m * n];
                sgemm(m, n, k, a_t.as_f32()?, b_t.as_f32()?, &mut c);
                if alpha != 1.0 {
                    c.iter_mut().for_each(|v| *v *= alpha);
                }
                if let Some(bias) = i.get(2).copied().flatten() {
                    let bv = bias.as_f32()?;
                    let shape = broadcast_shape(&bias.shape, &[m, n])?;
                    if shape != [m, n] {
                        return Err(format!(
                            "Gemm C {:?} does not broadcast to {m}×{n}",
                            bias.shape
                        ));
                    }
                    let idx = broadcast_index(&bias.shape, &[m, n]);
                    for (v, &p) in c.iter_mut().zip(&idx) {
                        *v += beta * bv[p];
                    }
                }
                Ok(vec![Array::f32(vec![m, n], c)])
            })
        }
        _ => return Ok(None),
    }))
}

pub(crate) use crate::kernels::sgemm::sgemm;

/// ONNX MatMul (numpy semantics: 1-D operands are promoted and the added axis removed).
pub(crate) fn matmul(a: &Array, b: &Array) -> Result<Array, String> {
    let (av, bv) = (a.as_f32()?, b.as_f32()?);
    let mut sa = a.shape.clone();
    let mut sb = b.shape.clone();
    if sa.is_empty() || sb.is_empty() {
        return Err("MatMul of a scalar".into());
    }
    let (a1, b1) = (sa.len() == 1, sb.len() == 1);
    if a1 {
        sa.insert(0, 1);
    }
    if b1 {
        sb.push(1);
    }
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
    if k != k2 {
        return Err(format!(
            "MatMul: shapes {:?} and {:?} do not match",
            a.shape, b.shape
        ));
    }
    let batch = broadcast_shape(&sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
    let nb: usize = batch.iter().product();
    let ia = broadcast_index(&sa[..sa.len() - 2], &batch);
    let ib = broadcast_index(&sb[..sb.len() - 2], &batch);
    let mut out = vec![0f32; nb * m * n];
    for bi in 0..nb {
        let (pa, pb) = (ia[bi] * m * k, ib[bi] * k * n);
        sgemm(
            m,
            n,
            k,
            &av[pa..pa + m * k],
            &bv[pb..pb + k * n],
            &mut out[bi * m * n..(bi + 1) * m * n],
        );
    }
    let mut shape = batch;
    if !a1 {
        shape.push(m);
    }
    if !b1 {
        shape.push(n);
    }
    Ok(Array::f32(shape, out))
}
