//! Elementwise ops: float unary activations, numpy-broadcast binary arithmetic and
//! comparisons, Where, Clip, Cast, Identity.

use super::{boxed, boxed_cow, input, Kernel, NodeCtx};
use crate::executor::value::{
    broadcast_index, broadcast_shape, broadcast_strides, for_each_offset, Array, ArrayData,
};
use crate::ir::DataType;
use crate::kernels::reference::q8lut::unary;
use std::borrow::Cow;

/// Builds the kernel if `t` is an elementwise op.
pub(super) fn build(t: &str, ctx: &NodeCtx<'_>) -> Result<Option<Box<dyn Kernel>>, String> {
    // A macro rather than a `fn(f32) -> f32` parameter: each op gets its own monomorphized,
    // inlined (and vectorizable) loop instead of an indirect call per element.
    macro_rules! unary_f {
        ($f:expr) => {
            boxed_cow(move |x, _| unary_cow(x, $f))
        };
    }
    Ok(Some(match t {
        "Identity" | "Dropout" => boxed_cow(|x, _| {
            // Dropout in inference is the identity; its optional mask output is all true.
            let x = x.into_owned();
            let mask = Array::new(x.shape.clone(), ArrayData::Bool(vec![true; x.len()]))?;
            Ok(vec![x, mask])
        }),
        "Relu" => unary_f!(|x| x.max(0.0)),
        "Sigmoid" => unary_f!(unary::sigmoid),
        "Tanh" => unary_f!(f32::tanh),
        "Exp" => unary_f!(f32::exp),
        "Log" => unary_f!(f32::ln),
        "Sqrt" => unary_f!(f32::sqrt),
        "Neg" => return Ok(Some(boxed(neg))),
        "Abs" => unary_f!(f32::abs),
        "Reciprocal" => unary_f!(|x| 1.0 / x),
        "Floor" => unary_f!(f32::floor),
        "Ceil" => unary_f!(f32::ceil),
        "Round" => unary_f!(f32::round_ties_even),
        "Sin" => unary_f!(f32::sin),
        "Cos" => unary_f!(f32::cos),
        "Softplus" => unary_f!(|x| (x.exp() + 1.0).ln()),
        "Softsign" => unary_f!(|x| x / (1.0 + x.abs())),
        // Vectorised (≤ 2 ulp, see kernels::vmath); libm's erff was ~9 ns per element.
        "Erf" => boxed_cow(|x, _| {
            let Array { shape, data } = x.into_owned();
            let ArrayData::F32(mut v) = data else {
                return Err(format!("expected a float tensor, got {}", data.dtype()));
            };
            crate::kernels::vmath::erf_slice(&mut v);
            Ok(vec![Array::f32(shape, v)])
        }),
        "HardSwish" => unary_f!(|x| x * (x / 6.0 + 0.5).clamp(0.0, 1.0)),
        "Gelu" => match ctx.string("approximate", "none").as_str() {
            "none" => unary_f!(unary::gelu),
            "tanh" => unary_f!(unary::gelu_tanh),
            a => return Err(format!("Gelu approximate=`{a}` is not supported")),
        },
        "HardSigmoid" => {
            let (a, b) = (ctx.float("alpha", 0.2), ctx.float("beta", 0.5));
            boxed_cow(move |x, _| unary_cow(x, |x| (a * x + b).clamp(0.0, 1.0)))
        }
        "LeakyRelu" => {
            let a = ctx.float("alpha", 0.01);
            boxed_cow(move |x, _| unary_cow(x, |x| if x < 0.0 { a * x } else { x }))
        }
        "Elu" => {
            let a = ctx.float("alpha", 1.0);
            boxed_cow(move |x, _| unary_cow(x, |x| if x < 0.0 { a * (x.exp() - 1.0) } else { x }))
        }
        "Clip" => clip(ctx)?,
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Mod" => {
            let op = t.to_string();
            let fmod = ctx.int("fmod", 0) != 0;
            boxed_cow(move |first, rest| {
                // Max/Min are variadic (a single input is returned as is); the others have
                // exactly two inputs. The first product reads the inputs in place: no copy.
                // A handed-over first input of the output's shape is overwritten in place.
                if rest.is_empty() {
                    return Ok(vec![first.into_owned()]);
                }
                let first = match first {
                    Cow::Owned(a) if rest.len() == 1 => {
                        match arith_in_place(&op, a, input(rest, 0)?)? {
                            Ok(done) => return Ok(vec![done]),
                            Err(a) => Cow::Owned(a),
                        }
                    }
                    x => x,
                };
                let mut acc = arith(&op, fmod, &first, input(rest, 0)?)?;
                for k in 1..rest.len() {
                    acc = arith(&op, fmod, &acc, input(rest, k)?)?;
                }
                Ok(vec![acc])
            })
        }
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" => {
            let op = t.to_string();
            boxed(move |i| compare(&op, input(i, 0)?, input(i, 1)?).map(|a| vec![a]))
        }
        "And" | "Or" | "Xor" => {
            let op = t.to_string();
            boxed(move |i| logical(&op, input(i, 0)?, input(i, 1)?).map(|a| vec![a]))
        }
        "Not" => boxed(|i| match &input(i, 0)?.data {
            ArrayData::Bool(v) => Ok(vec![Array {
                shape: input(i, 0)?.shape.clone(),
                data: ArrayData::Bool(v.iter().map(|b| !b).collect()),
            }]),
            d => Err(format!("Not expects bool, got {}", d.dtype())),
        }),
        "Where" => boxed(|i| where_op(input(i, 0)?, input(i, 1)?, input(i, 2)?).map(|a| vec![a])),
        "Cast" => {
            let to = ctx.int("to", 0);
            let dt = DataType::from_onnx(to as i32)
                .ok_or_else(|| format!("Cast to unknown type code {to}"))?;
            if !crate::executor::value::supported_dtype(dt) {
                return Err(format!("Cast to {dt} is not supported"));
            }
            boxed(move |i| Ok(vec![cast(input(i, 0)?, dt)]))
        }
        _ => return Ok(None),
    }))
}

/// [`unary_op`] in place in the input's buffer when the executor handed it over (the same
/// function per element, so the same bits).
fn unary_cow(x: Cow<'_, Array>, f: impl Fn(f32) -> f32) -> Result<Vec<Array>, String> {
    match x {
        Cow::Owned(Array {
            shape,
            data: ArrayData::F32(mut v),
        }) => {
            v.iter_mut().for_each(|a| *a = f(*a));
            Ok(vec![Array::f32(shape, v)])
        }
        x => unary_op(&[Some(x.as_ref())], f),
    }
}

fn unary_op(i: &[Option<&Array>], f: impl Fn(f32) -> f32) -> Result<Vec<Array>, String> {
    let x = input(i, 0)?;
    let v = x.as_f32()?;
    Ok(vec![Array::f32(
        x.shape.clone(),
        v.iter().map(|&a| f(a)).collect(),
    )])
}

fn neg(i: &[Option<&Array>]) -> Result<Vec<Array>, String> {
    let x = input(i, 0)?;
    let data = match &x.data {
        ArrayData::F32(v) => ArrayData::F32(v.iter().map(|a| -a).collect()),
        ArrayData::I64(v) => ArrayData::I64(v.iter().map(|a| a.wrapping_neg()).collect()),
        ArrayData::I32(v) => ArrayData::I32(v.iter().map(|a| a.wrapping_neg()).collect()),
        ArrayData::I8(v) => ArrayData::I8(v.iter().map(|a| a.wrapping_neg()).collect()),
        d => return Err(format!("Neg of {} is not supported", d.dtype())),
    };
    Ok(vec![Array {
        shape: x.shape.clone(),
        data,
    }])
}

fn clip(ctx: &NodeCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    if ctx.opset < 11 {
        let (lo, hi) = (ctx.float("min", f32::MIN), ctx.float("max", f32::MAX));
        return Ok(boxed(move |i| unary_op(i, |x| x.max(lo).min(hi))));
    }
    Ok(boxed(|i| {
        let x = input(i, 0)?;
        let bound = |k: usize, d: f64| -> Result<f64, String> {
            match i.get(k).copied().flatten() {
                Some(a) if a.len() == 1 => Ok(a.data.to_f64_vec()[0]),
                Some(_) => Err("Clip bounds must be scalars".into()),
                None => Ok(d),
            }
        };
        let (lo, hi) = (bound(1, f64::NEG_INFINITY)?, bound(2, f64::INFINITY)?);
        let data = match &x.data {
            ArrayData::F32(v) => {
                let (lo, hi) = (lo as f32, hi as f32);
                // max then min, as the ONNX reference: NaN stays NaN, lo > hi gives hi.
                ArrayData::F32(v.iter().map(|&a| a.max(lo).min(hi)).collect())
            }
            ArrayData::I64(v) => ArrayData::I64(
                v.iter()
                    .map(|&a| (a as f64).max(lo).min(hi) as i64)
                    .collect(),
            ),
            ArrayData::I32(v) => ArrayData::I32(
                v.iter()
                    .map(|&a| (a as f64).max(lo).min(hi) as i32)
                    .collect(),
            ),
            ArrayData::U8(v) => ArrayData::U8(
                v.iter()
                    .map(|&a| (a as f64).max(lo).min(hi) as u8)
                    .collect(),
            ),
            ArrayData::I8(v) => ArrayData::I8(
                v.iter()
                    .map(|&a| (a as f64).max(lo).min(hi) as i8)
                    .collect(),
            ),
            d => return Err(format!("Clip of {} is not supported", d.dtype())),
        };
        Ok(vec![Array {
            shape: x.shape.clone(),
            data,
        }])
    }))
}

/// Applies `f` with numpy broadcasting.
///
/// Walks the output row by row (last axis): each operand's row is either contiguous or one
/// repeated element, and an odometer over the outer axes advances the row offsets, so no index
/// vectors are built.
pub(crate) fn broadcast2<T: Copy, U>(
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    f: impl Fn(T, T) -> U,
) -> Result<(Vec<usize>, Vec<U>), String> {
    let shape = broadcast_shape(sa, sb)?;
    if sa == sb {
        return Ok((shape, a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()));
    }
    let n: usize = shape.iter().product();
    if b.len() == 1 && a.len() == n {
        let y = b[0];
        return Ok((shape, a.iter().map(|&x| f(x, y)).collect()));
    }
    if a.len() == 1 && b.len() == n {
        let x = a[0];
        return Ok((shape, b.iter().map(|&y| f(x, y)).collect()));
    }
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok((shape, out));
    }
    let r = shape.len();
    let (sta, stb) = (broadcast_strides(sa, &shape), broadcast_strides(sb, &shape));
    let last = shape[r - 1];
    let (da, db) = (sta[r - 1], stb[r - 1]);
    let mut pos = vec![0usize; r.saturating_sub(1)];
    let (mut oa, mut ob) = (0usize, 0usize);
    for _ in 0..n / last {
        match (da, db) {
            (1, 1) => out.extend(
                a[oa..oa + last]
                    .iter()
                    .zip(&b[ob..ob + last])
                    .map(|(&x, &y)| f(x, y)),
            ),
            (1, _) => {
                let y = b[ob];
                out.extend(a[oa..oa + last].iter().map(|&x| f(x, y)));
            }
            (_, 1) => {
                let x = a[oa];
                out.extend(b[ob..ob + last].iter().map(|&y| f(x, y)));
            }
            _ => {
                let (x, y) = (a[oa], b[ob]);
                out.extend((0..last).map(|_| f(x, y)));
            }
        }
        for d in (0..r - 1).rev() {
            pos[d] += 1;
            oa += sta[d];
            ob += stb[d];
            if pos[d] < shape[d] {
                break;
            }
            oa -= sta[d] * pos[d];
            ob -= stb[d] * pos[d];
            pos[d] = 0;
        }
    }
    Ok((shape, out))
}

/// [`arith`] of two floats written over `a`, when `a` has the output's shape and the op is
/// one of the plain ones (the same function per element as [`broadcast2`], so the same
/// bits); `Err(a)` gives it back otherwise.
fn arith_in_place(op: &str, mut a: Array, b: &Array) -> Result<Result<Array, Array>, String> {
    if !matches!(op, "Add" | "Sub" | "Mul" | "Div") {
        return Ok(Err(a));
    }
    let (ArrayData::F32(x), ArrayData::F32(y)) = (&mut a.data, &b.data) else {
        return Ok(Err(a));
    };
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    if shape != a.shape {
        return Ok(Err(a));
    }
    macro_rules! go {
        ($f:expr) => {
            broadcast_into(x, &shape, y, &b.shape, $f)
        };
    }
    // One monomorphized loop per op, as in `arith`.
    match op {
        "Add" => go!(|p: f32, q: f32| p + q),
        "Sub" => go!(|p: f32, q: f32| p - q),
        "Mul" => go!(|p: f32, q: f32| p * q),
        _ => go!(|p: f32, q: f32| p / q),
    }
    Ok(Ok(a))
}

/// `a[i] = f(a[i], b[…])` with `b` broadcast to `a`'s `shape` (row by row, as
/// [`broadcast2`]).
fn broadcast_into(
    a: &mut [f32],
    shape: &[usize],
    b: &[f32],
    sb: &[usize],
    f: impl Fn(f32, f32) -> f32,
) {
    if shape == sb {
        a.iter_mut().zip(b).for_each(|(x, &y)| *x = f(*x, y));
        return;
    }
    if b.len() == 1 {
        let y = b[0];
        a.iter_mut().for_each(|x| *x = f(*x, y));
        return;
    }
    let r = shape.len();
    if r == 0 || a.is_empty() {
        return;
    }
    let stb = broadcast_strides(sb, shape);
    let last = shape[r - 1];
    let db = stb[r - 1];
    let mut rows = a.chunks_exact_mut(last);
    for_each_offset(&shape[..r - 1], &stb[..r - 1], |ob| {
        let row = rows.next().expect("one row per offset");
        if db == 1 {
            row.iter_mut()
                .zip(&b[ob..ob + last])
                .for_each(|(x, &y)| *x = f(*x, y));
        } else {
            let y = b[ob];
            row.iter_mut().for_each(|x| *x = f(*x, y));
        }
    });
}

fn arith(op: &str, fmod: bool, a: &Array, b: &Array) -> Result<Array, String> {
    let (sa, sb) = (&a.shape, &b.shape);
    let (shape, data) = match (&a.data, &b.data) {
        (ArrayData::F32(x), ArrayData::F32(y)) => {
            // One monomorphized loop per op (no indirect call per element).
            macro_rules! go {
                ($f:expr) => {
                    broadcast2(x, sa, y, sb, $f)?
                };
            }
            let (s, v) = match op {
                "Add" => go!(|p: f32, q: f32| p + q),
                "Sub" => go!(|p: f32, q: f32| p - q),
                "Mul" => go!(|p: f32, q: f32| p * q),
                "Div" => go!(|p: f32, q: f32| p / q),
                "Pow" => go!(pow_f32),
                "Max" => go!(|p: f32, q: f32| {
                    if p.is_nan() || q.is_nan() {
                        f32::NAN
                    } else {
                        p.max(q)
                    }
                }),
                "Min" => go!(|p: f32, q: f32| {
                    if p.is_nan() || q.is_nan() {
                        f32::NAN
                    } else {
                        p.min(q)
                    }
                }),
                _ => {
                    if fmod {
                        go!(|p: f32, q: f32| p % q)
                    } else {
                        return Err("float Mod requires fmod=1".into());
                    }
                }
            };
            (s, ArrayData::F32(v))
        }
        (ArrayData::F32(x), ArrayData::I64(_) | ArrayData::I32(_)) if op == "Pow" => {
            let y: Vec<f32> = b.data.to_f64_vec().iter().map(|&v| v as f32).collect();
            let (s, v) = broadcast2(x, sa, &y, sb, pow_f32)?;
            (s, ArrayData::F32(v))
        }
        (ArrayData::I64(x), ArrayData::I64(y)) => {
            let (s, v) = broadcast2(x, sa, y, sb, |p, q| int_op(op, p, q))?;
            (s, ArrayData::I64(v.into_iter().collect::<Result<_, _>>()?))
        }
        (ArrayData::I32(x), ArrayData::I32(y)) => {
            let (s, v) = broadcast2(x, sa, y, sb, |p, q| {
                int_op(op, p as i64, q as i64).map(|r| r as i32)
            })?;
            (s, ArrayData::I32(v.into_iter().collect::<Result<_, _>>()?))
        }
        (x, y) => {
            return Err(format!(
                "{op} of {} and {} is not supported",
                x.dtype(),
                y.dtype()
            ))
        }
    };
    Ok(Array { shape, data })
}

fn pow_f32(p: f32, q: f32) -> f32 {
    // Squares are common (LayerNorm variance); powf(x, 2) is exact anyway, this is faster.
    if q == 2.0 {
        p * p
    } else {
        p.powf(q)
    }
}

fn int_op(op: &str, p: i64, q: i64) -> Result<i64, String> {
    Ok(match op {
        "Add" => p.wrapping_add(q),
        "Sub" => p.wrapping_sub(q),
        "Mul" => p.wrapping_mul(q),
        "Div" => {
            if q == 0 {
                return Err("integer division by zero".into());
            }
            p.wrapping_div(q)
        }
        "Max" => p.max(q),
        "Min" => p.min(q),
        "Mod" => {
            if q == 0 {
                return Err("integer modulo by zero".into());
            }
            // Integer Mod (fmod=0) takes the sign of the divisor, like Python.
            p.rem_euclid(q) + if q < 0 && p.rem_euclid(q) != 0 { q } else { 0 }
        }
        "Pow" => p
            .checked_pow(q.clamp(0, u32::MAX as i64) as u32)
            .unwrap_or(0),
        _ => return Err(format!("{op} is not an arithmetic op")),
    })
}

fn compare(op: &str, a: &Array, b: &Array) -> Result<Array, String> {
    let f: fn(f64, f64) -> bool = match op {
        "Equal" => |p, q| p == q,
        "Less" => |p, q| p < q,
        "Greater" => |p, q| p > q,
        "LessOrEqual" => |p, q| p <= q,
        _ => |p, q| p >= q,
    };
    if a.dtype() != b.dtype() {
        return Err(format!(
            "{op} of {} and {} (types must match)",
            a.dtype(),
            b.dtype()
        ));
    }
    let (shape, v) = match (&a.data, &b.data) {
        (ArrayData::I64(x), ArrayData::I64(y)) => broadcast2(x, &a.shape, y, &b.shape, |p, q| {
            f(p as f64, q as f64).then_some(())
        })
        .map(|(s, v)| (s, v.iter().map(Option::is_some).collect::<Vec<_>>()))?,
        _ => {
            let (x, y) = (a.data.to_f64_vec(), b.data.to_f64_vec());
            broadcast2(&x, &a.shape, &y, &b.shape, f)?
        }
    };
    Ok(Array {
        shape,
        data: ArrayData::Bool(v),
    })
}

fn logical(op: &str, a: &Array, b: &Array) -> Result<Array, String> {
    let (ArrayData::Bool(x), ArrayData::Bool(y)) = (&a.data, &b.data) else {
        return Err(format!("{op} expects bool inputs"));
    };
    let f: fn(bool, bool) -> bool = match op {
        "And" => |p, q| p && q,
        "Or" => |p, q| p || q,
        _ => |p, q| p ^ q,
    };
    let (shape, v) = broadcast2(x, &a.shape, y, &b.shape, f)?;
    Ok(Array {
        shape,
        data: ArrayData::Bool(v),
    })
}

fn where_op(c: &Array, x: &Array, y: &Array) -> Result<Array, String> {
    let ArrayData::Bool(cond) = &c.data else {
        return Err("Where condition must be bool".into());
    };
    let shape = broadcast_shape(&broadcast_shape(&c.shape, &x.shape)?, &y.shape)?;
    let ic = broadcast_index(&c.shape, &shape);
    let ix = broadcast_index(&x.shape, &shape);
    let iy = broadcast_index(&y.shape, &shape);
    // Pick per element from x or y: gather both with the index maps, then select.
    let xs = x.data.take(&ix);
    let ys = y.data.take(&iy);
    let data = match (xs, ys) {
        (ArrayData::F32(a), ArrayData::F32(b)) => ArrayData::F32(select(&ic, cond, a, b)),
        (ArrayData::I64(a), ArrayData::I64(b)) => ArrayData::I64(select(&ic, cond, a, b)),
        (ArrayData::I32(a), ArrayData::I32(b)) => ArrayData::I32(select(&ic, cond, a, b)),
        (ArrayData::U8(a), ArrayData::U8(b)) => ArrayData::U8(select(&ic, cond, a, b)),
        (ArrayData::I8(a), ArrayData::I8(b)) => ArrayData::I8(select(&ic, cond, a, b)),
        (ArrayData::Bool(a), ArrayData::Bool(b)) => ArrayData::Bool(select(&ic, cond, a, b)),
        (a, b) => {
            return Err(format!(
                "Where of {} and {} (types must match)",
                a.dtype(),
                b.dtype()
            ))
        }
    };
    Ok(Array { shape, data })
}

fn select<T: Copy>(ic: &[usize], cond: &[bool], a: Vec<T>, b: Vec<T>) -> Vec<T> {
    ic.iter()
        .zip(a.into_iter().zip(b))
        .map(|(&k, (p, q))| if cond[k] { p } else { q })
        .collect()
}

/// ONNX Cast between the supported types (float → int truncates toward zero, saturating).
pub(crate) fn cast(x: &Array, to: DataType) -> Array {
    let data = match (to, &x.data) {
        (DataType::F32, ArrayData::F32(v)) => ArrayData::F32(v.clone()),
        (DataType::F32, ArrayData::U8(v)) => {
            ArrayData::F32(v.iter().map(|&e| f32::from(e)).collect())
        }
        (DataType::F32, ArrayData::I8(v)) => {
            ArrayData::F32(v.iter().map(|&e| f32::from(e)).collect())
        }
        (DataType::F32, ArrayData::I32(v)) => ArrayData::F32(v.iter().map(|&e| e as f32).collect()),
        (DataType::F32, ArrayData::I64(v)) => ArrayData::F32(v.iter().map(|&e| e as f32).collect()),
        (DataType::F32, ArrayData::Bool(v)) => {
            ArrayData::F32(v.iter().map(|&e| f32::from(u8::from(e))).collect())
        }
        (DataType::Bool, ArrayData::F32(v)) => {
            ArrayData::Bool(v.iter().map(|&a| a != 0.0).collect())
        }
        (DataType::Bool, d) => ArrayData::Bool(d.to_i64_vec().iter().map(|&a| a != 0).collect()),
        (DataType::I64, d) => ArrayData::I64(d.to_i64_vec()),
        (DataType::I32, ArrayData::F32(v)) => ArrayData::I32(v.iter().map(|&a| a as i32).collect()),
        (DataType::I32, d) => ArrayData::I32(d.to_i64_vec().iter().map(|&a| a as i32).collect()),
        (DataType::U8, ArrayData::F32(v)) => ArrayData::U8(v.iter().map(|&a| a as u8).collect()),
        (DataType::U8, ArrayData::U8(v)) => ArrayData::U8(v.clone()),
        (DataType::U8, d) => ArrayData::U8(d.to_i64_vec().iter().map(|&a| a as u8).collect()),
        (DataType::I8, ArrayData::F32(v)) => ArrayData::I8(v.iter().map(|&a| a as i8).collect()),
        (DataType::I8, ArrayData::I8(v)) => ArrayData::I8(v.clone()),
        (_, d) => ArrayData::I8(d.to_i64_vec().iter().map(|&a| a as i8).collect()),
    };
    Array {
        shape: x.shape.clone(),
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In place over a handed-over input equals the allocating path bit for bit, over
    /// broadcasts of every kind; shapes it cannot take are given back.
    #[test]
    fn in_place_arith_equals_arith() {
        let cases: [(&[usize], &[usize]); 7] = [
            (&[64, 4, 16, 16], &[64, 1, 1, 16]),
            (&[3, 17], &[3, 17]),
            (&[3, 17], &[]),
            (&[3, 17], &[3, 1]),
            (&[2, 3, 5], &[5]),
            (&[2, 1, 5], &[2, 3, 5]),
            (&[4], &[2, 4]),
        ];
        for (sa, sb) in cases {
            let na: usize = sa.iter().product();
            let nb: usize = sb.iter().product();
            let a = Array::f32(
                sa.to_vec(),
                (0..na).map(|i| (i as f32 * 0.37).sin()).collect(),
            );
            let b = Array::f32(
                sb.to_vec(),
                (0..nb).map(|i| 1.5 + (i as f32).cos()).collect(),
            );
            for op in ["Add", "Sub", "Mul", "Div", "Pow"] {
                let want = arith(op, false, &a, &b).unwrap();
                match arith_in_place(op, a.clone(), &b).unwrap() {
                    Ok(got) => {
                        assert_eq!(got.shape, want.shape, "{op} {sa:?} {sb:?}");
                        let (ArrayData::F32(g), ArrayData::F32(w)) = (&got.data, &want.data) else {
                            panic!("dtype")
                        };
                        assert!(g.iter().zip(w).all(|(x, y)| x.to_bits() == y.to_bits()));
                    }
                    Err(back) => {
                        assert_eq!(back, a);
                        assert!(op == "Pow" || want.shape != a.shape, "{op} {sa:?} {sb:?}");
                    }
                }
            }
        }
    }
}
