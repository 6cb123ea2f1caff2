//! Layout and shape ops: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split,
//! Slice, Gather, Expand, Tile, Pad, Resize and the Shape family (Shape, Size,
//! ConstantOfShape, Range). Any element type; data movement goes through index maps.

use super::{boxed, boxed_cow, input, Kernel, NodeCtx};
use crate::executor::value::{
    broadcast_index, broadcast_shape, for_each_offset, norm_axis, strides, Array, ArrayData,
};

pub(super) fn build(t: &str, ctx: &NodeCtx<'_>) -> Result<Option<Box<dyn Kernel>>, String> {
    let opset = ctx.opset;
    Ok(Some(match t {
        "Reshape" => {
            let allowzero = ctx.int("allowzero", 0) != 0;
            // Views: the data moves when the executor hands the input over.
            boxed_cow(move |x, rest| {
                let spec = input(rest, 0)?.ints()?;
                let shape = reshape_dims(&x.shape, &spec, allowzero)?;
                Ok(vec![Array::new(shape, x.into_owned().data)?])
            })
        }
        "Flatten" => {
            let axis = ctx.int("axis", 1);
            boxed_cow(move |x, _| {
                let a = norm_axis(axis, x.rank(), true)?;
                let outer = x.shape[..a].iter().product();
                let inner = x.shape[a..].iter().product();
                Ok(vec![Array::new(vec![outer, inner], x.into_owned().data)?])
            })
        }
        "Squeeze" | "Unsqueeze" => {
            let attr_axes = ctx.ints("axes");
            let squeeze = t == "Squeeze";
            boxed_cow(move |x, rest| {
                let axes = match (opset >= 13, rest.first().copied().flatten()) {
                    (true, Some(a)) => Some(a.ints()?),
                    (true, None) => None,
                    (false, _) => attr_axes.clone(),
                };
                let shape = if squeeze {
                    squeeze_dims(&x.shape, axes.as_deref())?
                } else {
                    unsqueeze_dims(&x.shape, &axes.ok_or("Unsqueeze needs axes")?)?
                };
                Ok(vec![Array::new(shape, x.into_owned().data)?])
            })
        }
        "Transpose" => {
            let perm = ctx.ints("perm");
            boxed(move |i| {
                let x = input(i, 0)?;
                let perm: Vec<usize> = match &perm {
                    Some(p) => p
                        .iter()
                        .map(|&a| norm_axis(a, x.rank(), false))
                        .collect::<Result<_, _>>()?,
                    None => (0..x.rank()).rev().collect(),
                };
                Ok(vec![transpose(x, &perm)?])
            })
        }
        "Concat" => {
            let axis = ctx.int("axis", 0);
            boxed(move |i| {
                let xs: Vec<&Array> = i.iter().flatten().copied().collect();
                Ok(vec![concat(&xs, axis)?])
            })
        }
        "Split" => split(ctx)?,
        "Slice" => slice(ctx)?,
        "Gather" => {
            let axis = ctx.int("axis", 0);
            boxed(move |i| Ok(vec![gather(input(i, 0)?, input(i, 1)?, axis)?]))
        }
        "Expand" => boxed(|i| {
            let x = input(i, 0)?;
            let spec: Vec<usize> = input(i, 1)?
                .ints()?
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("negative dim {d} in Expand")))
                .collect::<Result<_, _>>()?;
            let shape = broadcast_shape(&x.shape, &spec)?;
            check_size(&shape, "Expand")?;
            let idx = broadcast_index(&x.shape, &shape);
            Ok(vec![Array::new(shape, x.data.take(&idx))?])
        }),
        "Tile" => boxed(|i| {
            let x = input(i, 0)?;
            let reps = input(i, 1)?.ints()?;
            if reps.len() != x.rank() || reps.iter().any(|&r| r < 0) {
                return Err(format!("Tile repeats {reps:?} for rank {}", x.rank()));
            }
            let shape: Vec<usize> = x
                .shape
                .iter()
                .zip(&reps)
                .map(|(&d, &r)| d.saturating_mul(r as usize))
                .collect();
            check_size(&shape, "Tile")?;
            let idx = map_index(&shape, &x.shape, |d, o| o % x.shape[d]);
            Ok(vec![Array::new(shape, x.data.take(&idx))?])
        }),
        "Shape" => {
            let (start, end) = (
                ctx.int("start", 0),
                ctx.op.attr("end").and_then(|a| a.as_int()),
            );
            boxed(move |i| {
                let x = input(i, 0)?;
                let r = x.rank() as i64;
                let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let (s, e) = (clampi(start), clampi(end.unwrap_or(r)));
                let dims: Vec<i64> = x.shape[s..e.max(s)].iter().map(|&d| d as i64).collect();
                Ok(vec![Array::i64(vec![dims.len()], dims)])
            })
        }
        "Size" => boxed(|i| Ok(vec![Array::i64(vec![], vec![input(i, 0)?.len() as i64])])),
        "ConstantOfShape" => {
            let value = match ctx.op.attr("value").and_then(|a| a.as_tensor()) {
                Some(t) => Array::from_tensor(t)?,
                None => Array::f32(vec![1], vec![0.0]),
            };
            if value.len() != 1 {
                return Err("ConstantOfShape value must have one element".into());
            }
            boxed(move |i| {
                let shape: Vec<usize> = input(i, 0)?
                    .ints()?
                    .iter()
                    .map(|&d| usize::try_from(d).map_err(|_| format!("negative dim {d}")))
                    .collect::<Result<_, _>>()?;
                check_size(&shape, "ConstantOfShape")?;
                let n = shape.iter().product::<usize>();
                Ok(vec![Array::new(shape, value.data.take(&vec![0; n]))?])
            })
        }
        "Range" => boxed(|i| {
            let (s, l, d) = (input(i, 0)?, input(i, 1)?, input(i, 2)?);
            match (&s.data, &l.data, &d.data) {
                (ArrayData::F32(s), ArrayData::F32(l), ArrayData::F32(d)) => {
                    let (s, l, d) = (s[0], l[0], d[0]);
                    let n = (((l - s) / d).ceil().max(0.0)) as usize;
                    check_size(&[n], "Range")?;
                    Ok(vec![Array::f32(
                        vec![n],
                        (0..n).map(|k| s + k as f32 * d).collect(),
                    )])
                }
                _ => {
                    let (s, l, d) = (s.ints()?[0], l.ints()?[0], d.ints()?[0]);
                    if d == 0 {
                        return Err("Range delta is 0".into());
                    }
                    let n = ((l - s + d - d.signum()) / d).max(0) as usize;
                    check_size(&[n], "Range")?;
                    let v: Vec<i64> = (0..n as i64).map(|k| s + k * d).collect();
                    let out = Array::i64(vec![n], v);
                    Ok(vec![if input(i, 0)?.dtype() == crate::ir::DataType::I32 {
                        super::elementwise::cast(&out, crate::ir::DataType::I32)
                    } else {
                        out
                    }])
                }
            }
        }),
        "Pad" => pad(ctx)?,
        "Resize" => super::pool::resize(ctx)?,
        _ => return Ok(None),
    }))
}

/// Largest tensor a shape-producing op may create (2^31 elements): a corrupt shape input must
/// be an error, not an allocation failure that aborts the process.
const MAX_ELEMENTS: usize = 1 << 31;

fn check_size(shape: &[usize], what: &str) -> Result<(), String> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    match n {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(format!("{what}: output shape {shape:?} is too large")),
    }
}

/// Source indices for an output of `out` shape where `f(axis, out_coord)` gives the input
/// coordinate along each axis (input of shape `src`).
fn map_index(out: &[usize], src: &[usize], f: impl Fn(usize, usize) -> usize) -> Vec<usize> {
    let n: usize = out.iter().product();
    let st = strides(src);
    let os = strides(out);
    (0..n)
        .map(|flat| {
            let mut off = 0;
            for d in 0..out.len() {
                let c = (flat / os[d]) % out[d];
                off += f(d, c) * st[d];
            }
            off
        })
        .collect()
}

fn reshape_dims(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (k, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(k);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *input
                    .get(k)
                    .ok_or_else(|| format!("Reshape: 0 at position {k} beyond the input rank"))?,
            ),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(format!("Reshape: invalid shape {spec:?}")),
        }
    }
    if let Some(k) = infer {
        let known: usize = out.iter().product();
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {spec:?}"));
        }
        out[k] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return Err(format!("cannot reshape {input:?} to {spec:?}"));
    }
    Ok(out)
}

fn squeeze_dims(shape: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, String> {
    match axes {
        None => Ok(shape.iter().copied().filter(|&d| d != 1).collect()),
        Some(axes) => {
            let axes: Vec<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, shape.len(), false))
                .collect::<Result<_, _>>()?;
            for &a in &axes {
                if shape[a] != 1 {
                    return Err(format!("cannot squeeze axis {a} of size {}", shape[a]));
                }
            }
            Ok(shape
                .iter()
                .enumerate()
                .filter(|(k, _)| !axes.contains(k))
                .map(|(_, &d)| d)
                .collect())
        }
    }
}

fn unsqueeze_dims(shape: &[usize], axes: &[i64]) -> Result<Vec<usize>, String> {
    let r = shape.len() + axes.len();
    let mut axes: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, r, false))
        .collect::<Result<_, _>>()?;
    axes.sort_unstable();
    axes.dedup();
    if axes.len() != r - shape.len() {
        return Err("Unsqueeze: repeated axes".into());
    }
    let mut src = shape.iter();
    Ok((0..r)
        .map(|k| {
            if axes.contains(&k) {
                1
            } else {
                *src.next().expect("counted above")
            }
        })
        .collect())
}

pub(crate) fn transpose(x: &Array, perm: &[usize]) -> Result<Array, String> {
    let r = x.rank();
    let mut seen = vec![false; r];
    if perm.len() != r
        || perm
            .iter()
            .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!("invalid perm {perm:?} for rank {r}"));
    }
    let out: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let st = strides(&x.shape);
    let pst: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    let data = match &x.data {
        // 8-bit codes (transposes on quantized values): 16×16 SSE2 tiles.
        ArrayData::U8(v) => ArrayData::U8(permute(
            v,
            &out,
            &pst,
            crate::kernels::transpose::transpose_u8,
        )),
        d => crate::executor::value::map_same!(d, v => permute(v, &out, &pst, transpose_2d)),
    };
    Array::new(out, data)
}

/// The output dims and their input strides with size-1 dims dropped and neighbours merged
/// where the input walks them as one (a dim whose stride is the next one's span).
fn coalesce(out: &[usize], pst: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut d: Vec<(usize, usize)> = vec![];
    for (&n, &s) in out.iter().zip(pst) {
        if n == 1 {
            continue;
        }
        match d.last_mut() {
            Some(last) if last.1 == s * n => *last = (last.0 * n, s),
            _ => d.push((n, s)),
        }
    }
    d.into_iter().unzip()
}

/// `v` in output order (output dims `out`, their input strides `pst`). After coalescing:
/// contiguous runs are copied whole (fixed-size copies for the short runs of attention
/// heads), a batch of 2-D transposes goes to `tr`, and anything else gathers element by
/// element.
fn permute<T: Copy + Default>(
    v: &[T],
    out: &[usize],
    pst: &[usize],
    tr: fn(&[T], usize, usize, &mut [T]),
) -> Vec<T> {
    let n = v.len();
    let (out, pst) = coalesce(out, pst);
    let r = out.len();
    if n == 0 || r == 0 || (r == 1 && pst[0] == 1) {
        return v.to_vec();
    }
    let mut o = vec![T::default(); n];
    let inner = out[r - 1];
    if pst[r - 1] == 1 {
        // Runs of `inner` contiguous elements (r ≥ 2 here, or it would be the identity).
        let (mid, ms) = (out[r - 2], pst[r - 2]);
        let mut dst = o.chunks_exact_mut(inner);
        let mut runs = |off: usize| {
            for i in 0..mid {
                let (d, s) = (dst.next().expect("n runs"), &v[off + i * ms..][..inner]);
                match inner {
                    4 => copy_fixed::<T, 4>(s, d),
                    8 => copy_fixed::<T, 8>(s, d),
                    16 => copy_fixed::<T, 16>(s, d),
                    _ => d.copy_from_slice(s),
                }
            }
        };
        for_each_offset(&out[..r - 2], &pst[..r - 2], &mut runs);
        return o;
    }
    if r >= 2 && pst[r - 2] == 1 && pst[r - 1] == out[r - 2] {
        // Each block is an input matrix `out[r-1] × out[r-2]`, transposed.
        let (rows, cols) = (out[r - 1], out[r - 2]);
        let mut blocks = o.chunks_exact_mut(rows * cols);
        for_each_offset(&out[..r - 2], &pst[..r - 2], |off| {
            tr(
                &v[off..off + rows * cols],
                rows,
                cols,
                blocks.next().expect("n blocks"),
            )
        });
        return o;
    }
    let s_in = pst[r - 1];
    let mut dst = o.chunks_exact_mut(inner);
    for_each_offset(&out[..r - 1], &pst[..r - 1], |off| {
        for (j, d) in dst.next().expect("n rows").iter_mut().enumerate() {
            *d = v[off + j * s_in];
        }
    });
    o
}

#[inline(always)]
fn copy_fixed<T: Copy, const L: usize>(s: &[T], d: &mut [T]) {
    let s: &[T; L] = s.try_into().expect("a run of L");
    let d: &mut [T; L] = d.try_into().expect("a run of L");
    *d = *s;
}

/// `dst` (`cols × rows`) = transpose of `src` (`rows × cols`), row-major: 8×8 blocks.
fn transpose_2d<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const B: usize = 8;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for c in c0..(c0 + B).min(cols) {
                for r in r0..(r0 + B).min(rows) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

fn concat(xs: &[&Array], axis: i64) -> Result<Array, String> {
    let first = xs.first().ok_or("Concat of nothing")?;
    let a = norm_axis(axis, first.rank(), false)?;
    let mut shape = first.shape.clone();
    shape[a] = 0;
    for x in xs {
        if x.rank() != first.rank()
            || x.shape[..a] != first.shape[..a]
            || x.shape[a + 1..] != first.shape[a + 1..]
        {
            return Err(format!(
                "Concat on axis {a}: shapes {:?} and {:?} differ elsewhere",
                first.shape, x.shape
            ));
        }
        shape[a] += x.shape[a];
    }
    let outer: usize = shape[..a].iter().product();
    let inner: usize = shape[a + 1..].iter().product();
    let mut data = first.data.empty_like(shape.iter().product());
    for o in 0..outer {
        for x in xs {
            let chunk = x.shape[a] * inner;
            data.extend_from(&x.data, o * chunk, (o + 1) * chunk)?;
        }
    }
    Array::new(shape, data)
}

fn split(ctx: &NodeCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let axis = ctx.int("axis", 0);
    let attr_split = ctx.ints("split");
    let n_out = ctx.n_outputs;
    let opset = ctx.opset;
    let num_outputs = ctx.op.attr("num_outputs").and_then(|a| a.as_int());
    Ok(boxed(move |i| {
        let x = input(i, 0)?;
        let a = norm_axis(axis, x.rank(), false)?;
        let dim = x.shape[a];
        let sizes: Vec<usize> = match (opset >= 13, i.get(1).copied().flatten(), &attr_split) {
            (true, Some(s), _) => s.ints()?.iter().map(|&v| v.max(0) as usize).collect(),
            (false, _, Some(s)) => s.iter().map(|&v| v.max(0) as usize).collect(),
            _ => {
                // Equal parts (the last smaller when num_outputs does not divide, opset 18).
                let parts = num_outputs.map_or(n_out, |v| v as usize).max(1);
                let each = dim.div_ceil(parts);
                (0..parts)
                    .map(|k| each.min(dim.saturating_sub(k * each)))
                    .collect()
            }
        };
        if sizes.iter().sum::<usize>() != dim {
            return Err(format!("Split sizes {sizes:?} do not add up to {dim}"));
        }
        let outer: usize = x.shape[..a].iter().product();
        let inner: usize = x.shape[a + 1..].iter().product();
        let mut outs = Vec::with_capacity(sizes.len());
        let mut start = 0;
        for &s in &sizes {
            let mut shape = x.shape.clone();
            shape[a] = s;
            let mut data = x.data.empty_like(outer * s * inner);
            for o in 0..outer {
                let base = (o * dim + start) * inner;
                data.extend_from(&x.data, base, base + s * inner)?;
            }
            outs.push(Array::new(shape, data)?);
            start += s;
        }
        Ok(outs)
    }))
}

fn slice(ctx: &NodeCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let opset = ctx.opset;
    let (a_starts, a_ends, a_axes) = (ctx.ints("starts"), ctx.ints("ends"), ctx.ints("axes"));
    Ok(boxed(move |i| {
        let x = input(i, 0)?;
        let get = |k: usize| -> Result<Option<Vec<i64>>, String> {
            i.get(k).copied().flatten().map(|a| a.ints()).transpose()
        };
        let (starts, ends, axes, steps) = if opset >= 10 {
            (
                get(1)?.ok_or("Slice needs starts")?,
                get(2)?.ok_or("Slice needs ends")?,
                get(3)?,
                get(4)?,
            )
        } else {
            (
                a_starts.clone().ok_or("Slice needs starts")?,
                a_ends.clone().ok_or("Slice needs ends")?,
                a_axes.clone(),
                None,
            )
        };
        let r = x.rank();
        let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
        if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            return Err("Slice: starts/ends/axes/steps lengths differ".into());
        }
        let mut begin = vec![0i64; r];
        let mut step = vec![1i64; r];
        let mut shape = x.shape.clone();
        for k in 0..starts.len() {
            let a = norm_axis(axes[k], r, false)?;
            let d = x.shape[a] as i64;
            let s = steps[k];
            if s == 0 {
                return Err("Slice step 0".into());
            }
            let fix = |v: i64| if v < 0 { v + d } else { v };
            let (b, e) = if s > 0 {
                (fix(starts[k]).clamp(0, d), fix(ends[k]).clamp(0, d))
            } else {
                (
                    fix(starts[k]).clamp(-1, d - 1),
                    fix(ends[k]).clamp(-1, d - 1),
                )
            };
            let n = if s > 0 {
                ((e - b + s - 1) / s).max(0)
            } else {
                ((b - e + (-s) - 1) / (-s)).max(0)
            };
            begin[a] = b;
            step[a] = s;
            shape[a] = n as usize;
        }
        let idx = map_index(&shape, &x.shape, |d, c| {
            (begin[d] + c as i64 * step[d]) as usize
        });
        Ok(vec![Array::new(shape, x.data.take(&idx))?])
    }))
}

fn gather(x: &Array, ind: &Array, axis: i64) -> Result<Array, String> {
    let a = norm_axis(axis, x.rank(), false)?;
    let d = x.shape[a] as i64;
    let ind_v: Vec<usize> = ind
        .ints()?
        .iter()
        .map(|&v| {
            let w = if v < 0 { v + d } else { v };
            if (0..d).contains(&w) {
                Ok(w as usize)
            } else {
                Err(format!(
                    "Gather index {v} out of range for axis of size {d}"
                ))
            }
        })
        .collect::<Result<_, _>>()?;
    let outer: usize = x.shape[..a].iter().product();
    let inner: usize = x.shape[a + 1..].iter().product();
    let mut shape = x.shape[..a].to_vec();
    shape.extend_from_slice(&ind.shape);
    shape.extend_from_slice(&x.shape[a + 1..]);
    let mut data = x.data.empty_like(outer * ind_v.len() * inner);
    for o in 0..outer {
        for &k in &ind_v {
            let base = (o * d as usize + k) * inner;
            data.extend_from(&x.data, base, base + inner)?;
        }
    }
    Array::new(shape, data)
}

fn pad(ctx: &NodeCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let mode = ctx.string("mode", "constant");
    let opset = ctx.opset;
    let (a_pads, a_value) = (ctx.ints("pads"), ctx.float("value", 0.0));
    if !matches!(mode.as_str(), "constant" | "reflect" | "edge") {
        return Err(format!("Pad mode `{mode}` is not supported"));
    }
    Ok(boxed(move |i| {
        let x = input(i, 0)?;
        let r = x.rank();
        let (pads, value, axes) = if opset >= 11 {
            let p = input(i, 1)?.ints()?;
            let v = match i.get(2).copied().flatten() {
                Some(c) if !c.is_empty() => c.data.to_f64_vec()[0],
                _ => 0.0,
            };
            let axes = i.get(3).copied().flatten().map(|a| a.ints()).transpose()?;
            (p, v, axes)
        } else {
            (
                a_pads.clone().ok_or("Pad needs pads")?,
                a_value as f64,
                None,
            )
        };
        let axes: Vec<usize> = match axes {
            Some(a) => a
                .iter()
                .map(|&v| norm_axis(v, r, false))
                .collect::<Result<_, _>>()?,
            None => (0..r).collect(),
        };
        if pads.len() != 2 * axes.len() {
            return Err(format!("Pad: {} pads for {} axes", pads.len(), axes.len()));
        }
        let mut before = vec![0i64; r];
        let mut after = vec![0i64; r];
        for (k, &a) in axes.iter().enumerate() {
            before[a] = pads[k];
            after[a] = pads[k + axes.len()];
        }
        let shape: Vec<usize> = (0..r)
            .map(|d| {
                let n = x.shape[d] as i64 + before[d] + after[d];
                usize::try_from(n).map_err(|_| "Pad: negative output size".to_string())
            })
            .collect::<Result<_, _>>()?;
        check_size(&shape, "Pad")?;
        // Index n of the source marks "use the pad value" (appended as an extra element).
        let n = x.len();
        let st = strides(&x.shape);
        let os = strides(&shape);
        let total: usize = shape.iter().product();
        let mut idx = Vec::with_capacity(total);
        for flat in 0..total {
            let mut off = 0usize;
            let mut outside = false;
            for d in 0..r {
                let c = ((flat / os[d]) % shape[d]) as i64 - before[d];
                let len = x.shape[d] as i64;
                let c = if (0..len).contains(&c) {
                    c
                } else {
                    match mode.as_str() {
                        "edge" if len > 0 => c.clamp(0, len - 1),
                        "reflect" if len > 1 => {
                            let period = 2 * (len - 1);
                            let m = c.rem_euclid(period);
                            if m < len {
                                m
                            } else {
                                period - m
                            }
                        }
                        _ => {
                            outside = true;
                            0
                        }
                    }
                };
                off += c as usize * st[d];
            }
            idx.push(if outside { n } else { off });
        }
        let fill = super::elementwise::cast(&Array::f32(vec![1], vec![value as f32]), x.dtype());
        let mut ext = x.data.empty_like(n + 1);
        ext.extend_from(&x.data, 0, n)?;
        ext.extend_from(&fill.data, 0, 1)?;
        Ok(vec![Array::new(shape, ext.take(&idx))?])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_and_scalars() {
        let x = Array::f32(vec![2, 3], vec![0., 1., 2., 3., 4., 5.]);
        let t = transpose(&x, &[1, 0]).unwrap();
        assert_eq!(t, Array::f32(vec![3, 2], vec![0., 3., 1., 4., 2., 5.]));
        let s = Array::f32(vec![], vec![7.]);
        assert_eq!(transpose(&s, &[]).unwrap(), s);
        let e = Array::f32(vec![0, 2], vec![]);
        assert_eq!(transpose(&e, &[1, 0]).unwrap().shape, vec![2, 0]);
    }

    /// Every path of `permute` (runs, fixed-size runs, batched 2-D transposes on 16×16
    /// tiles, element gathers, size-1 dims) equals the element-by-element definition.
    #[test]
    fn transpose_equals_the_index_definition() {
        let shapes: [&[usize]; 8] = [
            &[64, 16, 4, 8],
            &[3, 17, 1, 5],
            &[2, 33, 18],
            &[1, 1, 7],
            &[5, 4, 16, 2],
            &[2, 3, 4, 5, 6],
            &[255, 3],
            &[16, 1, 32],
        ];
        for shape in shapes {
            let r = shape.len();
            let n: usize = shape.iter().product();
            let codes: Vec<u8> = (0..n).map(|i| (i * 131 + i / 3) as u8).collect();
            let floats: Vec<f32> = (0..n).map(|i| i as f32).collect();
            // Every permutation of the rank (Heap's algorithm).
            let mut perm: Vec<usize> = (0..r).collect();
            let mut c = vec![0usize; r];
            let mut perms = vec![perm.clone()];
            let mut i = 0;
            while i < r {
                if c[i] < i {
                    perm.swap(if i % 2 == 0 { 0 } else { c[i] }, i);
                    perms.push(perm.clone());
                    c[i] += 1;
                    i = 0;
                } else {
                    c[i] = 0;
                    i += 1;
                }
            }
            let st = strides(shape);
            for p in &perms {
                let out: Vec<usize> = p.iter().map(|&d| shape[d]).collect();
                let ost = strides(&out);
                let want = |k: usize| -> usize {
                    // Output index k → input offset.
                    (0..r).map(|d| (k / ost[d]) % out[d] * st[p[d]]).sum()
                };
                let u = transpose(
                    &Array::new(shape.to_vec(), ArrayData::U8(codes.clone())).unwrap(),
                    p,
                )
                .unwrap();
                let f = transpose(&Array::f32(shape.to_vec(), floats.clone()), p).unwrap();
                assert_eq!(u.shape, out);
                let (ArrayData::U8(u), ArrayData::F32(f)) = (&u.data, &f.data) else {
                    panic!("dtype changed")
                };
                for k in 0..n {
                    assert_eq!(u[k], codes[want(k)], "{shape:?} {p:?} at {k}");
                    assert_eq!(f[k], floats[want(k)], "{shape:?} {p:?} at {k}");
                }
            }
        }
    }
}
