//! Pattern matching over the graph: a chain or small DAG of operations,
//! anchored on its last node and matched by walking producers (as FX's
//! reverse-tuple patterns).
//!
//! ```
//! use onnxq::ir::pattern::{op, constant};
//! // BatchNormalization whose input comes from a Conv with no other reader.
//! let p = op("BatchNormalization").bind("bn").input(0, op("Conv").single_use().bind("conv"));
//! # let _ = p;
//! ```

use super::{Graph, NodeId, NodeKind, Slot};
use std::collections::BTreeMap;

/// What a pattern node accepts.
#[derive(Clone, Debug)]
enum Accept {
    /// Any producer (an input, a constant, an op).
    Any,
    /// A constant tensor.
    Constant,
    /// An op of one of these types in the default ONNX domain.
    Ops(Vec<String>),
}

/// A pattern node.
#[derive(Clone, Debug)]
pub struct Pattern {
    accept: Accept,
    inputs: Vec<(usize, Pattern)>,
    single_use: bool,
    bind: Option<&'static str>,
}

/// Matches an op of this type.
pub fn op(op_type: &str) -> Pattern {
    ops(&[op_type])
}

/// Matches an op of any of these types.
pub fn ops(op_types: &[&str]) -> Pattern {
    Pattern {
        accept: Accept::Ops(op_types.iter().map(|s| s.to_string()).collect()),
        inputs: vec![],
        single_use: false,
        bind: None,
    }
}

/// Matches any producer.
pub fn any() -> Pattern {
    Pattern {
        accept: Accept::Any,
        inputs: vec![],
        single_use: false,
        bind: None,
    }
}

/// Matches a constant.
pub fn constant() -> Pattern {
    Pattern {
        accept: Accept::Constant,
        inputs: vec![],
        single_use: false,
        bind: None,
    }
}

impl Pattern {
    /// The producer of input `slot` must match `p`.
    pub fn input(mut self, slot: usize, p: Pattern) -> Self {
        self.inputs.push((slot, p));
        self
    }

    /// The matched node's outputs must be read only inside the match (and
    /// must not be graph outputs), so the rewrite may fuse it away.
    pub fn single_use(mut self) -> Self {
        self.single_use = true;
        self
    }

    /// Names the matched node in the [`Match`].
    pub fn bind(mut self, name: &'static str) -> Self {
        self.bind = Some(name);
        self
    }
}

/// A successful match.
#[derive(Clone, Debug)]
pub struct Match {
    /// The node the pattern is anchored on (its root).
    pub anchor: NodeId,
    /// Bound nodes by name.
    pub bound: BTreeMap<&'static str, NodeId>,
}

impl Match {
    /// The node bound to `name`. Panics if the pattern did not bind it.
    pub fn node(&self, name: &str) -> NodeId {
        *self
            .bound
            .get(name)
            .unwrap_or_else(|| panic!("pattern binds no `{name}`"))
    }
}

impl Graph {
    /// Tries to match `p` with `anchor` as its root.
    pub fn match_at(&self, anchor: NodeId, p: &Pattern) -> Option<Match> {
        let mut m = Match {
            anchor,
            bound: BTreeMap::new(),
        };
        self.match_rec(anchor, p, None, &mut m).then_some(m)
    }

    /// Every match of `p`, anchors in deterministic topological order.
    pub fn find_matches(&self, p: &Pattern) -> Vec<Match> {
        let order = self.topo_order().unwrap_or_default();
        order
            .into_iter()
            .filter_map(|n| self.match_at(n, p))
            .collect()
    }

    fn match_rec(&self, n: NodeId, p: &Pattern, parent: Option<NodeId>, m: &mut Match) -> bool {
        let node = self.node(n);
        let ok = match (&p.accept, &node.kind) {
            (Accept::Any, _) => true,
            (Accept::Constant, NodeKind::Const(_)) => true,
            (Accept::Ops(types), NodeKind::Op(op)) => {
                (op.domain.is_empty() || op.domain == "ai.onnx") && types.contains(&op.op_type)
            }
            _ => false,
        };
        if !ok {
            return false;
        }
        if p.single_use {
            let Some(parent) = parent else { return false };
            for v in node.outputs.iter().flatten() {
                if self.is_graph_output(*v)
                    || self
                        .consumers(*v)
                        .iter()
                        .any(|&(c, s)| c != parent || s == Slot::Capture)
                {
                    return false;
                }
            }
        }
        if let Some(name) = p.bind {
            m.bound.insert(name, n);
        }
        for (slot, sub) in &p.inputs {
            let Some(Some(v)) = node.inputs.get(*slot) else {
                return false;
            };
            if !self.match_rec(self.producer(*v), sub, Some(n), m) {
                return false;
            }
        }
        true
    }
}
