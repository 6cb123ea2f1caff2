//! Making values inside If branches observable: calibration reads observed
//! values as outputs of the main graph, so a value computed inside a branch is
//! piped out as an extra output of the branch, then of the If node, up to the
//! main graph. The other branch returns an empty tensor in that slot; an empty
//! tensor carries no range and observers skip it.
//!
//! Only If branches are searched: a Loop or Scan body runs many times per
//! call, and its values cannot leave the body one by one.

use crate::ir::{DataType, Dim, Graph, NodeId, NodeKind, Tensor, TensorType, ValueId, ValueType};
use std::collections::{BTreeMap, BTreeSet};

/// Pipes every value named in `want` that is computed in an If branch
/// (at any depth) of `g` out to `g`. Returns, per name found, the value of `g`
/// that carries it. Names that `g` itself computes are returned as they are;
/// names `g` only reads from an enclosing graph are not returned.
pub fn hoist(g: &mut Graph, want: &BTreeSet<String>) -> BTreeMap<String, ValueId> {
    let mut found = BTreeMap::new();
    let mut remaining = BTreeSet::new();
    for name in want {
        match g.value_by_name(name) {
            Some(v) if matches!(g.node(g.producer(v)).kind, NodeKind::OuterRef) => {}
            Some(v) => {
                found.insert(name.clone(), v);
            }
            None => {
                remaining.insert(name.clone());
            }
        }
    }
    if remaining.is_empty() {
        return found;
    }
    let ifs: Vec<NodeId> = g.node_ids().filter(|&n| g.node(n).is_op("If")).collect();
    for n in ifs {
        if remaining.is_empty() {
            break;
        }
        let op = g.node_mut(n).op_mut().expect("an If op");
        let (Some(then_g), Some(else_g)) = branch_pair(op) else {
            continue;
        };
        let from_then = hoist(then_g, &remaining);
        let from_else = hoist(else_g, &remaining);
        let names: Vec<(String, bool)> = from_then
            .keys()
            .map(|k| (k.clone(), true))
            .chain(
                from_else
                    .keys()
                    .filter(|k| !from_then.contains_key(*k))
                    .map(|k| (k.clone(), false)),
            )
            .collect();
        for (name, in_then) in &names {
            let (carrier, other) = if *in_then {
                (&mut *then_g, &mut *else_g)
            } else {
                (&mut *else_g, &mut *then_g)
            };
            let v = if *in_then {
                from_then[name]
            } else {
                from_else[name]
            };
            carrier.outputs.push(v);
            let empty = other.add_const(
                &format!("{name}__unobserved"),
                Tensor::from_f32(vec![0], &[]),
            );
            other.outputs.push(empty);
        }
        for (name, _) in names {
            let out = g.add_node_output(n, &format!("{name}__observed"));
            g.set_value_type(
                out,
                ValueType::Tensor(TensorType {
                    dtype: Some(DataType::F32),
                    shape: None::<Vec<Dim>>,
                }),
            );
            remaining.remove(&name);
            found.insert(name, out);
        }
    }
    found
}

/// The then and else branches of an If.
fn branch_pair(op: &mut crate::ir::Op) -> (Option<&mut Graph>, Option<&mut Graph>) {
    let mut then_g = None;
    let mut else_g = None;
    for (k, a) in op.attrs.iter_mut() {
        let sg = a.subgraphs_mut().into_iter().next();
        match k.as_str() {
            "then_branch" => then_g = sg,
            "else_branch" => else_g = sg,
            _ => {}
        }
    }
    (then_g, else_g)
}
