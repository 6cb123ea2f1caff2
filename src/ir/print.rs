//! The stable text dump of the IR, the basis of snapshot tests.
//!
//! Stability rules: nodes in the deterministic topological order; values
//! renumbered `%0, %1, …` at print time (never petgraph indices); attributes
//! sorted; floats in shortest round-trip form; constants shown inline at
//! their use as `@name: dtype[shape]`, with their values when they have at
//! most [`INLINE_ELEMENTS`] elements and an in-crate FNV-1a checksum
//! otherwise.

use super::{
    AttrValue, Attribute, DataType, Graph, Model, NodeKind, Tensor, TensorData, ValueId, ValueType,
};
use std::collections::HashMap;
use std::fmt::Write;

/// Constants with at most this many elements are printed in full.
pub const INLINE_ELEMENTS: usize = 8;

/// The dump of a whole model: header, then the main graph.
pub fn model_to_string(m: &Model) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ir_version: {}", m.ir_version);
    let opsets: Vec<String> = m
        .opset_import
        .iter()
        .map(|o| {
            format!(
                "{}={}",
                if o.domain.is_empty() {
                    "ai.onnx"
                } else {
                    &o.domain
                },
                o.version
            )
        })
        .collect();
    let _ = writeln!(out, "opset_import: {}", opsets.join(", "));
    if !m.producer_name.is_empty() || !m.producer_version.is_empty() {
        let _ = writeln!(out, "producer: {} {}", m.producer_name, m.producer_version);
    }
    for (k, v) in &m.metadata_props {
        let _ = writeln!(out, "metadata: {k:?} = {v:?}");
    }
    if !m.functions.is_empty() {
        let names: Vec<String> = m
            .functions
            .iter()
            .map(|f| format!("{}::{}", f.domain, f.name))
            .collect();
        let _ = writeln!(out, "functions: {}", names.join(", "));
    }
    let mut p = Printer {
        out,
        next: 0,
        units: HashMap::new(),
    };
    p.graph(&m.graph, "graph", &HashMap::new(), 0);
    p.out
}

/// The dump of one graph alone.
pub fn graph_to_string(g: &Graph) -> String {
    let mut p = Printer {
        out: String::new(),
        next: 0,
        units: HashMap::new(),
    };
    p.graph(g, "graph", &HashMap::new(), 0);
    p.out
}

struct Printer {
    out: String,
    next: usize,
    /// Unit ids renumbered in order of appearance (stable across runs).
    units: HashMap<(usize, u32), usize>,
}

/// How a value is referred to in the dump.
#[derive(Clone)]
enum Ref {
    Num(usize),
    Const(String),
}

impl Printer {
    fn graph(&mut self, g: &Graph, title: &str, outer: &HashMap<String, String>, depth: usize) {
        let ind = "  ".repeat(depth);
        let order = match g.topo_order() {
            Ok(o) => o,
            Err(e) => {
                let _ = writeln!(self.out, "{ind}{title} {:?} {{ <invalid: {e}> }}", g.name);
                return;
            }
        };
        let _ = writeln!(self.out, "{ind}{title} {:?} {{", g.name);
        let mut names: HashMap<ValueId, Ref> = HashMap::new();
        // Inputs first, in their declared order.
        for &v in &g.inputs {
            let val = g.value(v);
            if g.node(val.producer.0).as_const().is_some() {
                continue;
            }
            let k = self.fresh();
            names.insert(v, Ref::Num(k));
            let _ = writeln!(
                self.out,
                "{ind}  input %{k}: {}{}  // {}",
                ty(&val.ty),
                quant_note(g, v, &names),
                val.name
            );
        }
        for &n in &order {
            let node = g.node(n);
            match &node.kind {
                NodeKind::Input => {}
                NodeKind::OuterRef => {
                    let v = node.outputs[0].expect("one output");
                    let name = &g.value(v).name;
                    let r = outer
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| format!("^{name}"));
                    names.insert(v, Ref::Const(r));
                }
                NodeKind::Const(c) => {
                    let v = node.outputs[0].expect("one output");
                    let text = format!(
                        "@{}: {}{}",
                        g.value(v).name,
                        tensor_summary(&c.tensor),
                        quant_note(g, v, &names)
                    );
                    if g.inputs.contains(&v) {
                        let _ = writeln!(self.out, "{ind}  input {text}  // with default");
                    }
                    names.insert(v, Ref::Const(text));
                }
                NodeKind::SparseConst(_) => {
                    let v = node.outputs[0].expect("one output");
                    names.insert(v, Ref::Const(format!("@{}: sparse", g.value(v).name)));
                }
                NodeKind::Op(op) => {
                    let mut line = format!("{ind}  ");
                    let outs: Vec<String> = node
                        .outputs
                        .iter()
                        .map(|o| match o {
                            Some(v) => {
                                let k = self.fresh();
                                names.insert(*v, Ref::Num(k));
                                let q = quant_note(g, *v, &names);
                                format!("%{k}: {}{q}", ty(&g.value(*v).ty))
                            }
                            None => "_".to_string(),
                        })
                        .collect();
                    if !outs.is_empty() {
                        line += &outs.join(", ");
                        line += " = ";
                    }
                    let ins: Vec<String> = node
                        .inputs
                        .iter()
                        .map(|i| match i {
                            Some(v) => show(&names, *v, g),
                            None => "_".to_string(),
                        })
                        .collect();
                    let _ = write!(line, "{}({})", op.qualified_name(), ins.join(", "));
                    let plain: Vec<String> = op
                        .attrs
                        .iter()
                        .filter(|(_, a)| a.subgraphs().is_empty())
                        .map(|(k, a)| format!("{k}={}", attr(a)))
                        .collect();
                    if !plain.is_empty() {
                        let _ = write!(line, " {{{}}}", plain.join(", "));
                    }
                    if let Some(u) = &node.unit {
                        let key = (g as *const Graph as usize, u.id);
                        let next = self.units.len();
                        let k = *self.units.entry(key).or_insert(next);
                        let _ = write!(line, "  [{} #{k}]", u.pattern);
                    }
                    if !node.name.is_empty() {
                        let _ = write!(line, "  // {}", node.name);
                    }
                    self.out += &line;
                    self.out.push('\n');
                    // Subgraphs see this graph's values under their printed names.
                    let mut scope = outer.clone();
                    for (v, r) in &names {
                        scope.insert(g.value(*v).name.clone(), show_ref(r));
                    }
                    for (k, a) in &op.attrs {
                        for (i, sg) in a.subgraphs().into_iter().enumerate() {
                            let title = match &a.value {
                                AttrValue::Graphs(_) => format!("{k}[{i}]:"),
                                _ => format!("{k}:"),
                            };
                            self.graph(sg, &title, &scope, depth + 2);
                        }
                    }
                }
            }
        }
        for &v in &g.outputs {
            let val = g.value(v);
            let _ = writeln!(
                self.out,
                "{ind}  output {}: {}  // {}",
                show(&names, v, g),
                ty(&val.ty),
                val.name
            );
        }
        let _ = writeln!(self.out, "{ind}}}");
    }

    fn fresh(&mut self) -> usize {
        self.next += 1;
        self.next - 1
    }
}

/// ` <observe …>` / ` <weight …>` / ` <share %k>` / ` <fixed …>`, or nothing.
fn quant_note(g: &Graph, v: ValueId, names: &HashMap<ValueId, Ref>) -> String {
    use super::QuantAnnotation as Q;
    match &g.value(v).quant {
        None => String::new(),
        Some(Q::Observe(c)) => format!(" <observe {c}>"),
        Some(Q::Weight { config, axis }) if config.qscheme.is_per_channel() => {
            format!(" <weight {config} axis={axis}>")
        }
        Some(Q::Weight { config, .. }) => format!(" <weight {config}>"),
        Some(Q::ShareWith(o)) => format!(" <share {}>", show(names, *o, g)),
        Some(Q::Fixed { config, min, max }) => format!(" <fixed [{min:?}, {max:?}] {config}>"),
    }
}

fn show_ref(r: &Ref) -> String {
    match r {
        Ref::Num(k) => format!("%{k}"),
        Ref::Const(s) => s.clone(),
    }
}

fn show(names: &HashMap<ValueId, Ref>, v: ValueId, g: &Graph) -> String {
    names
        .get(&v)
        .map(show_ref)
        .unwrap_or_else(|| format!("<undefined {}>", g.value(v).name))
}

fn ty(t: &ValueType) -> String {
    t.to_string()
}

fn attr(a: &Attribute) -> String {
    match &a.value {
        AttrValue::Float(f) => format!("{f:?}"),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::String(s) => format!("{:?}", String::from_utf8_lossy(s)),
        AttrValue::Tensor(t) => tensor_summary(t),
        AttrValue::Graph(_) | AttrValue::Graphs(_) => "<graph>".into(),
        AttrValue::SparseTensor(_) => "<sparse tensor>".into(),
        AttrValue::TypeProto(_) => "<type>".into(),
        AttrValue::Floats(v) => format!(
            "[{}]",
            v.iter()
                .map(|f| format!("{f:?}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        AttrValue::Ints(v) => format!(
            "[{}]",
            v.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        ),
        AttrValue::Strings(v) => {
            format!(
                "[{}]",
                v.iter()
                    .map(|s| format!("{:?}", String::from_utf8_lossy(s)))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
        AttrValue::Tensors(v) => format!(
            "[{}]",
            v.iter().map(tensor_summary).collect::<Vec<_>>().join(", ")
        ),
        AttrValue::SparseTensors(v) => format!("<{} sparse tensors>", v.len()),
        AttrValue::TypeProtos(v) => format!("<{} types>", v.len()),
        AttrValue::Ref { name, .. } => format!("@ref({name})"),
    }
}

/// `dtype[shape] = values` for small tensors, `dtype[shape] #checksum` otherwise.
pub fn tensor_summary(t: &Tensor) -> String {
    let dims: Vec<String> = t.dims.iter().map(i64::to_string).collect();
    let head = format!("{}[{}]", t.dtype, dims.join(","));
    if t.len() > INLINE_ELEMENTS {
        return format!("{head} #{:016x}", t.checksum());
    }
    let values: Option<Vec<String>> = match (&t.data, t.dtype) {
        (TensorData::Strings(s), _) => Some(
            s.iter()
                .map(|e| format!("{:?}", String::from_utf8_lossy(e)))
                .collect(),
        ),
        (_, DataType::F32 | DataType::F64 | DataType::F16 | DataType::BF16) => t
            .to_f32_vec()
            .map(|v| v.iter().map(|f| format!("{f:?}")).collect()),
        (_, DataType::Bool) => t
            .to_i64_vec()
            .map(|v| v.iter().map(|&b| (b != 0).to_string()).collect()),
        _ => t
            .to_i64_vec()
            .map(|v| v.iter().map(i64::to_string).collect()),
    };
    match values {
        Some(v) if t.dims.is_empty() && v.len() == 1 => format!("{head} = {}", v[0]),
        Some(v) => format!("{head} = [{}]", v.join(",")),
        None => format!("{head} #{:016x}", t.checksum()),
    }
}
