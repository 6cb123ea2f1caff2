//! Composite ops that exporters decompose: LayerNormalization (torch < 2
//! exports, TF, Paddle), Gelu (erf form), HardSwish and HardSigmoid
//! (`x · relu6(x + 3) / 6`, Paddle and TF). Quantizing their inner nodes
//! one by one puts 8-bit steps on a variance or an erf argument, which
//! destroys accuracy for no speed gain; like NNCF's ignored patterns for
//! transformers, observer insertion treats each match as one op of the
//! composite type (`LayerNormalization`, `Gelu`), so the QConfigMapping and
//! the backend decide for it as a whole.

use crate::ir::{Graph, NodeId, ValueId};

/// A decomposed op found in the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Composite {
    /// The ONNX op it computes, e.g. `LayerNormalization`.
    pub op_type: &'static str,
    /// Its nodes, in graph order of discovery (first: the one reading the input).
    pub nodes: Vec<NodeId>,
}

/// Every decomposed LayerNormalization, Gelu, HardSwish and HardSigmoid of `g` (not of subgraphs).
/// A node belongs to at most one composite.
pub fn find_composites(g: &Graph) -> Vec<Composite> {
    let mut found: Vec<Composite> = vec![];
    let mut taken = std::collections::BTreeSet::new();
    let Ok(order) = g.topo_order() else {
        return found;
    };
    for n in order {
        for c in [
            layer_norm_at(g, n),
            gelu_at(g, n),
            gelu_tanh_at(g, n),
            hard_sigmoid_family_at(g, n),
        ]
        .into_iter()
        .flatten()
        {
            if c.nodes.iter().all(|x| !taken.contains(x)) {
                taken.extend(c.nodes.iter().copied());
                found.push(c);
            }
        }
    }
    found
}

fn op_is(g: &Graph, n: NodeId, t: &str) -> bool {
    g.node(n).op().is_some() && g.node(n).is_op(t)
}

/// The op producing `v`, if it is an op node.
fn producer_op(g: &Graph, v: ValueId) -> Option<NodeId> {
    let p = g.producer(v);
    g.node(p).op().is_some().then_some(p)
}

fn input(g: &Graph, n: NodeId, slot: usize) -> Option<ValueId> {
    g.node(n).inputs.get(slot).copied().flatten()
}

fn output(g: &Graph, n: NodeId) -> Option<ValueId> {
    g.node(n).outputs.first().copied().flatten()
}

/// The only reader of `n`'s output (and that output is not a graph output).
fn sole_reader(g: &Graph, n: NodeId) -> Option<NodeId> {
    let out = output(g, n)?;
    if g.is_graph_output(out) {
        return None;
    }
    match g.consumers(out).as_slice() {
        [(c, _)] => Some(*c),
        _ => None,
    }
}

/// A scalar (or all-equal) constant operand of `n` with value near `want`.
fn const_scalar(g: &Graph, v: ValueId) -> Option<f32> {
    let t = g.const_tensor(v)?;
    let vals = t.to_f32_vec()?;
    let first = *vals.first()?;
    vals.iter().all(|&x| x == first).then_some(first)
}

/// The other input of a binary node, given one of them.
fn other_input(g: &Graph, n: NodeId, one: ValueId) -> Option<ValueId> {
    let (a, b) = (input(g, n, 0)?, input(g, n, 1)?);
    if a == one {
        Some(b)
    } else if b == one {
        Some(a)
    } else {
        None
    }
}

/// Anchored on the first ReduceMean:
/// `m = ReduceMean(x); d = Sub(x, m); p = Pow(d, 2) | Mul(d, d);
///  v = ReduceMean(p); a = Add(v, eps); s = Sqrt(a); y = Div(d, s)`,
/// then optionally `Mul(y, gamma)` and `Add(·, beta)` with constants.
fn layer_norm_at(g: &Graph, mean: NodeId) -> Option<Composite> {
    if !op_is(g, mean, "ReduceMean") {
        return None;
    }
    let x = input(g, mean, 0)?;
    let m = output(g, mean)?;
    // Sub(x, m): the mean's readers include it.
    let sub =
        g.consumers(m).into_iter().map(|(c, _)| c).find(|&c| {
            op_is(g, c, "Sub") && input(g, c, 0) == Some(x) && input(g, c, 1) == Some(m)
        })?;
    let d = output(g, sub)?;
    let readers: Vec<NodeId> = g.consumers(d).into_iter().map(|(c, _)| c).collect();
    let square = *readers.iter().find(|&&c| {
        (op_is(g, c, "Pow")
            && input(g, c, 0) == Some(d)
            && input(g, c, 1).and_then(|e| const_scalar(g, e)) == Some(2.0))
            || (op_is(g, c, "Mul") && input(g, c, 0) == Some(d) && input(g, c, 1) == Some(d))
    })?;
    let var = sole_reader(g, square).filter(|&c| op_is(g, c, "ReduceMean"))?;
    let add_eps = sole_reader(g, var).filter(|&c| op_is(g, c, "Add"))?;
    let eps = other_input(g, add_eps, output(g, var)?)?;
    const_scalar(g, eps).filter(|e| (0.0..1e-1).contains(e))?;
    let sqrt = sole_reader(g, add_eps).filter(|&c| op_is(g, c, "Sqrt"))?;
    let div = sole_reader(g, sqrt).filter(|&c| {
        op_is(g, c, "Div") && input(g, c, 0) == Some(d) && input(g, c, 1) == output(g, sqrt)
    })?;
    // d feeds exactly the square and the division.
    let mut want = vec![square, div];
    want.sort();
    want.dedup();
    let mut have = readers.clone();
    have.sort();
    have.dedup();
    if have != want {
        return None;
    }
    let mut nodes = vec![mean, sub, square, var, add_eps, sqrt, div];
    // The affine part: Mul by a constant, then Add of a constant.
    if let Some(mul) = sole_reader(g, div).filter(|&c| op_is(g, c, "Mul")) {
        let gamma = other_input(g, mul, output(g, div)?)?;
        if g.const_tensor(gamma).is_some() {
            nodes.push(mul);
            if let Some(add) = sole_reader(g, mul).filter(|&c| op_is(g, c, "Add")) {
                let beta = other_input(g, add, output(g, mul)?)?;
                if g.const_tensor(beta).is_some() {
                    nodes.push(add);
                }
            }
        }
    }
    Some(Composite {
        op_type: "LayerNormalization",
        nodes,
    })
}

/// Anchored on Erf: `e = Erf(Div(x, √2) | Mul(x, 1/√2)); a = Add(e, 1);
/// y = Mul(x, a)` and a Mul by 0.5 before (on x) or after.
fn gelu_at(g: &Graph, erf: NodeId) -> Option<Composite> {
    if !op_is(g, erf, "Erf") {
        return None;
    }
    let scale = producer_op(g, input(g, erf, 0)?)?;
    let x = input(g, scale, 0)?;
    let c = const_scalar(g, input(g, scale, 1)?)?;
    let ok_scale = (op_is(g, scale, "Div") && (c - std::f32::consts::SQRT_2).abs() < 1e-3)
        || (op_is(g, scale, "Mul") && (c - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-3);
    if !ok_scale || sole_reader(g, scale) != Some(erf) {
        return None;
    }
    let add = sole_reader(g, erf).filter(|&n| op_is(g, n, "Add"))?;
    let one = other_input(g, add, output(g, erf)?)?;
    (const_scalar(g, one)? == 1.0).then_some(())?;
    let mul = sole_reader(g, add).filter(|&n| op_is(g, n, "Mul"))?;
    let lhs = other_input(g, mul, output(g, add)?)?;
    let mut nodes = vec![scale, erf, add, mul];
    if lhs == x {
        // 0.5 after: Mul(x·a, 0.5).
        let half = sole_reader(g, mul).filter(|&n| op_is(g, n, "Mul"))?;
        let h = other_input(g, half, output(g, mul)?)?;
        (const_scalar(g, h)? == 0.5).then_some(())?;
        nodes.push(half);
    } else {
        // 0.5 before: Mul(Mul(x, 0.5), a).
        let half = producer_op(g, lhs).filter(|&n| op_is(g, n, "Mul"))?;
        let h = other_input(g, half, x)?;
        (const_scalar(g, h)? == 0.5).then_some(())?;
        if sole_reader(g, half) != Some(mul) {
            return None;
        }
        nodes.insert(0, half);
    }
    Some(Composite {
        op_type: "Gelu",
        nodes,
    })
}

/// The float value of a Clip bound (input from opset 11, attribute before).
fn clip_bound(g: &Graph, clip: NodeId, slot: usize, attr: &str) -> Option<f32> {
    match input(g, clip, slot) {
        Some(v) => const_scalar(g, v),
        None => g.node(clip).op()?.attr(attr)?.as_float(),
    }
}

/// Division by `d` as Div(·, d) or Mul(·, 1/d) of a constant: its reader.
fn divides_by(g: &Graph, n: NodeId, v: ValueId, d: f32) -> bool {
    let Some(c) = other_input(g, n, v).and_then(|c| const_scalar(g, c)) else {
        return false;
    };
    (op_is(g, n, "Div") && input(g, n, 0) == Some(v) && (c - d).abs() < 1e-6)
        || (op_is(g, n, "Mul") && (c - 1.0 / d).abs() < 1e-6)
}

/// Anchored on `Clip(Add(x, 3), 0, 6)`: then `Mul(x, ·)` and a division by
/// 6 is HardSwish; a division by 6 alone is HardSigmoid (alpha 1/6).
fn hard_sigmoid_family_at(g: &Graph, clip: NodeId) -> Option<Composite> {
    if !op_is(g, clip, "Clip") {
        return None;
    }
    let (lo, hi) = (
        clip_bound(g, clip, 1, "min")?,
        clip_bound(g, clip, 2, "max")?,
    );
    if lo != 0.0 || hi != 6.0 {
        return None;
    }
    let add = producer_op(g, input(g, clip, 0)?).filter(|&n| op_is(g, n, "Add"))?;
    if sole_reader(g, add) != Some(clip) {
        return None;
    }
    let (a0, a1) = (input(g, add, 0)?, input(g, add, 1)?);
    let x = if const_scalar(g, a1) == Some(3.0) {
        a0
    } else if const_scalar(g, a0) == Some(3.0) {
        a1
    } else {
        return None;
    };
    let clip_out = output(g, clip)?;
    let next = sole_reader(g, clip)?;
    if op_is(g, next, "Mul") && other_input(g, next, clip_out) == Some(x) {
        let mul_out = output(g, next)?;
        let div = sole_reader(g, next).filter(|&d| divides_by(g, d, mul_out, 6.0))?;
        return Some(Composite {
            op_type: "HardSwish",
            nodes: vec![add, clip, next, div],
        });
    }
    divides_by(g, next, clip_out, 6.0).then(|| Composite {
        op_type: "HardSigmoid",
        nodes: vec![add, clip, next],
    })
}

/// `Mul(a, c)` (either operand order) by a scalar constant near `want`: `a`.
fn mul_by(g: &Graph, n: NodeId, want: f32, tol: f32) -> Option<ValueId> {
    if !op_is(g, n, "Mul") {
        return None;
    }
    let (a, b) = (input(g, n, 0)?, input(g, n, 1)?);
    let near = |v: ValueId| const_scalar(g, v).is_some_and(|c| (c - want).abs() <= tol);
    if near(b) {
        Some(a)
    } else if near(a) {
        Some(b)
    } else {
        None
    }
}

/// Anchored on Tanh: the tanh approximation of Gelu,
/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, with x³ as Pow(x, 3) or
/// x·x·x, and the 0.5 applied to x first or to the product last.
fn gelu_tanh_at(g: &Graph, tanh: NodeId) -> Option<Composite> {
    if !op_is(g, tanh, "Tanh") {
        return None;
    }
    let scale = producer_op(g, input(g, tanh, 0)?)?;
    let inner = mul_by(g, scale, 0.797_884_6, 1e-3)?;
    let add = producer_op(g, inner).filter(|&n| op_is(g, n, "Add"))?;
    // One Add operand is x, the other 0.044715·x³.
    let (a0, a1) = (input(g, add, 0)?, input(g, add, 1)?);
    let (x, cubic_v, cubic_c) = [(a0, a1), (a1, a0)].into_iter().find_map(|(x, c)| {
        let mc = producer_op(g, c)?;
        let cube_v = mul_by(g, mc, 0.044_715, 1e-5)?;
        let cube = producer_op(g, cube_v)?;
        let is_cube = (op_is(g, cube, "Pow")
            && input(g, cube, 0) == Some(x)
            && input(g, cube, 1).and_then(|e| const_scalar(g, e)) == Some(3.0))
            || (op_is(g, cube, "Mul") && {
                // x·(x·x) or (x·x)·x
                let (p, q) = (input(g, cube, 0)?, input(g, cube, 1)?);
                let sq = |v: ValueId| {
                    producer_op(g, v).is_some_and(|s| {
                        op_is(g, s, "Mul") && input(g, s, 0) == Some(x) && input(g, s, 1) == Some(x)
                    })
                };
                (p == x && sq(q)) || (q == x && sq(p))
            });
        is_cube.then_some((x, cube, mc))
    })?;
    let mut nodes = vec![];
    if op_is(g, cubic_v, "Mul") {
        // x·x·x: the inner square too.
        let (p, q) = (input(g, cubic_v, 0)?, input(g, cubic_v, 1)?);
        let sq_v = if p == x { q } else { p };
        nodes.push(producer_op(g, sq_v)?);
    }
    nodes.extend([cubic_v, cubic_c, add, scale, tanh]);
    let one = sole_reader(g, tanh).filter(|&n| op_is(g, n, "Add"))?;
    (const_scalar(g, other_input(g, one, output(g, tanh)?)?)? == 1.0).then_some(())?;
    nodes.push(one);
    let mul = sole_reader(g, one).filter(|&n| op_is(g, n, "Mul"))?;
    let lhs = other_input(g, mul, output(g, one)?)?;
    if lhs == x {
        let half = sole_reader(g, mul)?;
        mul_by(g, half, 0.5, 0.0)?;
        nodes.extend([mul, half]);
    } else {
        let half = producer_op(g, lhs)?;
        (mul_by(g, half, 0.5, 0.0)? == x && sole_reader(g, half) == Some(mul)).then_some(())?;
        nodes.insert(0, half);
        nodes.push(mul);
    }
    // Inner values must be private to the composite.
    for &n in &nodes[..nodes.len() - 1] {
        let out = output(g, n)?;
        if g.is_graph_output(out) || g.consumers(out).iter().any(|(c, _)| !nodes.contains(c)) {
            return None;
        }
    }
    Some(Composite {
        op_type: "Gelu",
        nodes,
    })
}
