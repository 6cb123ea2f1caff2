//! ONNX `ModelProto` → IR.
//!
//! The importer resolves every name to a value, checks the graph (undefined
//! values, duplicate definitions, cycles, unknown data types), loads external
//! data, and then asks tract to infer the type and shape of every
//! intermediate value. Nothing it reads is modified.

mod infer;
mod tensor;

pub use tensor::tensor_from_proto;

use crate::error::{Error, Result};
use crate::ir::{
    AttrValue, Attribute, Const, ConstOrigin, Dim, Graph, Model, NodeId, NodeKind, Op, OpsetImport,
    TensorType, ValueId, ValueType,
};
use crate::onnx::pb;
use prost::Message;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Import settings.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Infer types and shapes of intermediate values with tract.
    pub infer_types: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { infer_types: true }
    }
}

/// Reads and imports an ONNX file. External data is read relative to the
/// file's folder.
pub fn import_file(path: impl AsRef<Path>) -> Result<Model> {
    import_file_with(path, &ImportOptions::default())
}

pub fn import_file_with(path: impl AsRef<Path>, options: &ImportOptions) -> Result<Model> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    import_bytes(&bytes, Some(&dir), options).map_err(|e| e.in_file(path))
}

/// Imports a serialized model. `model_dir` is where external data lives.
pub fn import_bytes(
    bytes: &[u8],
    model_dir: Option<&Path>,
    options: &ImportOptions,
) -> Result<Model> {
    let proto = pb::ModelProto::decode(bytes).map_err(|e| {
        Error::invalid(format!(
            "not an ONNX model: protobuf decoding failed ({e}); is the file truncated?"
        ))
    })?;
    let mut model = import_proto(&proto, model_dir)?;
    if options.infer_types {
        infer::infer_types(&mut model, bytes, model_dir);
    }
    Ok(model)
}

/// Imports a decoded `ModelProto` (no type inference).
pub fn import_proto(proto: &pb::ModelProto, model_dir: Option<&Path>) -> Result<Model> {
    let graph_proto = proto.graph.as_ref().ok_or_else(|| {
        Error::invalid(
            "not an ONNX model: it has no graph (empty file, or not an ONNX protobuf)".to_string(),
        )
    })?;
    if proto.opset_import.is_empty() && graph_proto.node.is_empty() && proto.ir_version == 0 {
        return Err(Error::invalid(
            "not an ONNX model: no opset, no IR version, no nodes".to_string(),
        ));
    }
    let cx = Ctx {
        model_dir: model_dir.map(Path::to_path_buf),
    };
    let (graph, outer) = cx.import_graph(graph_proto, "main graph")?;
    if let Some((name, user)) = outer.first() {
        return Err(Error::invalid(format!(
            "{user} reads undefined value `{name}`"
        )));
    }
    Ok(Model {
        ir_version: proto.ir_version,
        opset_import: proto
            .opset_import
            .iter()
            .map(|o| OpsetImport {
                domain: o.domain.clone(),
                version: o.version,
            })
            .collect(),
        producer_name: proto.producer_name.clone(),
        producer_version: proto.producer_version.clone(),
        domain: proto.domain.clone(),
        model_version: proto.model_version,
        doc_string: proto.doc_string.clone(),
        metadata_props: kv(&proto.metadata_props),
        graph,
        training_info: proto.training_info.clone(),
        functions: proto.functions.clone(),
        configuration: proto.configuration.clone(),
    })
}

pub(crate) fn kv(entries: &[pb::StringStringEntryProto]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

/// Parses a `TypeProto` into the IR's view. Unknown element types become
/// `None` (the declaration itself is kept verbatim on the value).
pub fn value_type_from_proto(tp: Option<&pb::TypeProto>) -> ValueType {
    let Some(tp) = tp else {
        return ValueType::Unknown;
    };
    match &tp.value {
        Some(pb::type_proto::Value::TensorType(t)) => ValueType::Tensor(TensorType {
            dtype: crate::ir::DataType::from_onnx(t.elem_type),
            shape: t.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => {
                            Dim::Fixed(*v)
                        }
                        Some(pb::tensor_shape_proto::dimension::Value::DimParam(p))
                            if !p.is_empty() =>
                        {
                            Dim::Sym(p.clone())
                        }
                        _ => Dim::Unknown,
                    })
                    .collect()
            }),
        }),
        Some(_) => ValueType::Other(Box::new(tp.clone())),
        None => ValueType::Unknown,
    }
}

struct Ctx {
    model_dir: Option<PathBuf>,
}

/// A name a subgraph reads from an enclosing graph, with a description of
/// its first reader for error messages.
type OuterUse = (String, String);

impl Ctx {
    /// Imports one graph. Returns it with the names it reads from enclosing
    /// graphs (each is an `OuterRef` node inside it).
    fn import_graph(&self, gp: &pb::GraphProto, what: &str) -> Result<(Graph, Vec<OuterUse>)> {
        let mut g = Graph::new(gp.name.clone());
        g.doc_string = gp.doc_string.clone();
        g.metadata_props = kv(&gp.metadata_props);
        g.quantization_annotation = gp.quantization_annotation.clone();
        let mut order = 0u64;
        let mut next = || {
            order += 1;
            order
        };

        // Initializers first, so that graph inputs with a default value can
        // point at them.
        let input_names: BTreeSet<&str> = gp.input.iter().map(|i| i.name.as_str()).collect();
        for init in &gp.initializer {
            let t = self.tensor(init, what)?;
            let is_graph_input = input_names.contains(init.name.as_str());
            let kind = NodeKind::Const(Const {
                tensor: t,
                origin: ConstOrigin::Initializer { is_graph_input },
            });
            let n = g
                .add_node(init.name.clone(), kind, &[], &[Some(&init.name)])
                .map_err(|_| {
                    Error::invalid(format!(
                        "{what}: initializer `{}` is defined twice",
                        init.name
                    ))
                })?;
            g.set_order(n, 1_000_000_000 + next());
        }
        for sp in &gp.sparse_initializer {
            let name = sp
                .values
                .as_ref()
                .map(|v| v.name.clone())
                .unwrap_or_default();
            if name.is_empty() {
                return Err(Error::invalid(format!(
                    "{what}: a sparse initializer has no name"
                )));
            }
            let n = g
                .add_node(
                    name.clone(),
                    NodeKind::SparseConst(Box::new(sp.clone())),
                    &[],
                    &[Some(&name)],
                )
                .map_err(|_| {
                    Error::invalid(format!("{what}: initializer `{name}` is defined twice"))
                })?;
            g.set_order(n, 1_000_000_000 + next());
        }
        for inp in &gp.input {
            let ty = value_type_from_proto(inp.r#type.as_ref());
            let v = match g.value_by_name(&inp.name) {
                Some(v) => v, // an initializer listed as input
                None => {
                    let n = g
                        .add_node(inp.name.clone(), NodeKind::Input, &[], &[Some(&inp.name)])
                        .map_err(|_| {
                            Error::invalid(format!("{what}: input `{}` is defined twice", inp.name))
                        })?;
                    g.set_order(n, next());
                    g.node(n).outputs[0].expect("one output")
                }
            };
            let val = g.value_mut(v);
            val.declared = Some(Box::new(inp.clone()));
            val.ty = ty;
            g.inputs.push(v);
        }

        // Nodes: create them all (so that forward references resolve, and a
        // cycle is reported as such), then connect inputs.
        let node_base = 2_000_000_000u64;
        let mut created: Vec<NodeId> = Vec::with_capacity(gp.node.len());
        for (i, np) in gp.node.iter().enumerate() {
            let desc = describe_node(np, what);
            let op = self.op(np, &desc)?;
            let is_constant = (np.domain.is_empty() || np.domain == "ai.onnx")
                && np.op_type == "Constant"
                && np.output.len() == 1
                && !np.output[0].is_empty()
                && !op.attrs.contains_key("sparse_value");
            let kind = if is_constant {
                let tensor = constant_value(&op, &desc)?;
                NodeKind::Const(Const {
                    tensor,
                    origin: ConstOrigin::ConstantOp(op),
                })
            } else {
                NodeKind::Op(op)
            };
            let outs: Vec<Option<&str>> = np
                .output
                .iter()
                .map(|o| if o.is_empty() { None } else { Some(o.as_str()) })
                .collect();
            let n = g
                .add_node(np.name.clone(), kind, &[], &outs)
                .map_err(|e| match e {
                    crate::ir::GraphError::DuplicateName(v) => Error::invalid(format!(
                        "{desc} defines value `{v}`, which is already defined"
                    )),
                    other => Error::invalid(format!("{desc}: {other}")),
                })?;
            g.set_order(n, node_base + i as u64);
            created.push(n);
        }

        let mut outer: Vec<OuterUse> = vec![];
        let mut outer_ids: HashMap<String, ValueId> = HashMap::new();
        let mut resolve =
            |g: &mut Graph, name: &str, user: &str, outer: &mut Vec<OuterUse>| -> ValueId {
                if let Some(v) = g.value_by_name(name) {
                    return v;
                }
                if let Some(&v) = outer_ids.get(name) {
                    return v;
                }
                // Not defined here: read from an enclosing graph (or undefined,
                // which the top level reports).
                let n = g
                    .add_node(name, NodeKind::OuterRef, &[], &[Some(name)])
                    .expect("name is new");
                g.set_order(n, 0);
                let v = g.node(n).outputs[0].expect("one output");
                outer_ids.insert(name.to_string(), v);
                outer.push((name.to_string(), user.to_string()));
                v
            };

        for (np, &n) in gp.node.iter().zip(&created) {
            let desc = describe_node(np, what);
            let inputs: Vec<Option<ValueId>> = np
                .input
                .iter()
                .map(|i| {
                    if i.is_empty() {
                        None
                    } else {
                        Some(resolve(&mut g, i, &desc, &mut outer))
                    }
                })
                .collect();
            for (slot, v) in inputs.into_iter().enumerate() {
                g.set_input(n, slot, v);
            }
            // Subgraphs: import, then capture what they read from here.
            let mut sub_outer: Vec<OuterUse> = vec![];
            if let Some(op) = g.node_mut(n).op_mut() {
                for (aname, a) in op.attrs.iter_mut() {
                    let sub_what = format!("{desc}, attribute `{aname}`");
                    match &mut a.value {
                        AttrValue::Graph(sg) => {
                            let gp = proto_graph_attr(np, aname, 0);
                            let (sub, uses) = self.import_graph(gp, &sub_what)?;
                            **sg = sub;
                            sub_outer.extend(uses);
                        }
                        AttrValue::Graphs(sgs) => {
                            for (k, sg) in sgs.iter_mut().enumerate() {
                                let gp = proto_graph_attr(np, aname, k);
                                let (sub, uses) = self.import_graph(gp, &sub_what)?;
                                *sg = sub;
                                sub_outer.extend(uses);
                            }
                        }
                        _ => {}
                    }
                }
            }
            if !sub_outer.is_empty() {
                let mut caps: Vec<ValueId> = vec![];
                for (name, user) in &sub_outer {
                    let v = resolve(&mut g, name, user, &mut outer);
                    if !caps.contains(&v) {
                        caps.push(v);
                    }
                }
                g.set_captures(n, &caps);
            }
        }

        for (k, out) in gp.output.iter().enumerate() {
            let user = format!("{what}: output #{k}");
            let v = resolve(&mut g, &out.name, &user, &mut outer);
            let val = g.value_mut(v);
            val.declared = Some(Box::new(out.clone()));
            val.ty = value_type_from_proto(out.r#type.as_ref());
            g.outputs.push(v);
        }
        for (k, vi) in gp.value_info.iter().enumerate() {
            match g.value_by_name(&vi.name) {
                Some(v) => {
                    let ty = value_type_from_proto(vi.r#type.as_ref());
                    let val = g.value_mut(v);
                    if val.declared.is_none() {
                        val.ty = ty;
                    }
                    val.value_info = Some((k as u64, Box::new(vi.clone())));
                }
                None => log::warn!(
                    "{what}: value_info for `{}`, which no node produces: dropped",
                    vi.name
                ),
            }
        }

        if let Err(e) = g.topo_order() {
            return Err(Error::invalid(format!("{what}: {e}")));
        }
        Ok((g, outer))
    }

    fn tensor(&self, t: &pb::TensorProto, what: &str) -> Result<crate::ir::Tensor> {
        tensor_from_proto(t, self.model_dir.as_deref())
            .map_err(|e| Error::invalid(format!("{what}: tensor `{}`: {e}", t.name)))
    }

    fn op(&self, np: &pb::NodeProto, desc: &str) -> Result<Op> {
        let mut attrs = std::collections::BTreeMap::new();
        for a in &np.attribute {
            let value = self
                .attr_value(a)
                .map_err(|e| Error::invalid(format!("{desc}, attribute `{}`: {e}", a.name)))?;
            if attrs
                .insert(
                    a.name.clone(),
                    Attribute {
                        value,
                        doc_string: a.doc_string.clone(),
                    },
                )
                .is_some()
            {
                return Err(Error::invalid(format!(
                    "{desc}: attribute `{}` is given twice",
                    a.name
                )));
            }
        }
        Ok(Op {
            op_type: np.op_type.clone(),
            domain: np.domain.clone(),
            overload: np.overload.clone(),
            attrs,
            doc_string: np.doc_string.clone(),
            metadata_props: kv(&np.metadata_props),
            device_configurations: np.device_configurations.clone(),
        })
    }

    fn attr_value(&self, a: &pb::AttributeProto) -> std::result::Result<AttrValue, String> {
        use pb::attribute_proto::AttributeType as T;
        if !a.ref_attr_name.is_empty() {
            return Ok(AttrValue::Ref {
                name: a.ref_attr_name.clone(),
                kind: a.r#type,
            });
        }
        let kind = match T::try_from(a.r#type) {
            Ok(T::Undefined) => infer_attr_type(a).ok_or("attribute has no type and no value")?,
            Ok(k) => k,
            Err(_) => return Err(format!("unknown attribute type code {}", a.r#type)),
        };
        let tensor = |t: &pb::TensorProto| self.tensor(t, "attribute").map_err(|e| e.to_string());
        Ok(match kind {
            T::Float => AttrValue::Float(a.f),
            T::Int => AttrValue::Int(a.i),
            T::String => AttrValue::String(a.s.clone()),
            T::Tensor => AttrValue::Tensor(tensor(
                a.t.as_ref().ok_or("tensor attribute without a tensor")?,
            )?),
            // Placeholder graphs; import_graph fills them in with scope.
            T::Graph => {
                a.g.as_ref().ok_or("graph attribute without a graph")?;
                AttrValue::Graph(Box::default())
            }
            T::SparseTensor => AttrValue::SparseTensor(Box::new(
                a.sparse_tensor
                    .clone()
                    .ok_or("sparse attribute without a tensor")?,
            )),
            T::TypeProto => AttrValue::TypeProto(Box::new(
                a.tp.clone().ok_or("type attribute without a type")?,
            )),
            T::Floats => AttrValue::Floats(a.floats.clone()),
            T::Ints => AttrValue::Ints(a.ints.clone()),
            T::Strings => AttrValue::Strings(a.strings.clone()),
            T::Tensors => AttrValue::Tensors(
                a.tensors
                    .iter()
                    .map(tensor)
                    .collect::<std::result::Result<_, _>>()?,
            ),
            T::Graphs => AttrValue::Graphs(vec![Graph::default(); a.graphs.len()]),
            T::SparseTensors => AttrValue::SparseTensors(a.sparse_tensors.clone()),
            T::TypeProtos => AttrValue::TypeProtos(a.type_protos.clone()),
            T::Undefined => unreachable!("resolved above"),
        })
    }
}

fn proto_graph_attr<'a>(np: &'a pb::NodeProto, name: &str, k: usize) -> &'a pb::GraphProto {
    let a = np
        .attribute
        .iter()
        .find(|a| a.name == name)
        .expect("attribute exists");
    match (&a.g, k) {
        (Some(g), 0) => g,
        _ => &a.graphs[k],
    }
}

/// Old files leave `type` unset: guess it from the field that holds a value.
fn infer_attr_type(a: &pb::AttributeProto) -> Option<pb::attribute_proto::AttributeType> {
    use pb::attribute_proto::AttributeType as T;
    Some(if a.g.is_some() {
        T::Graph
    } else if a.t.is_some() {
        T::Tensor
    } else if a.sparse_tensor.is_some() {
        T::SparseTensor
    } else if a.tp.is_some() {
        T::TypeProto
    } else if !a.floats.is_empty() {
        T::Floats
    } else if !a.ints.is_empty() {
        T::Ints
    } else if !a.strings.is_empty() {
        T::Strings
    } else if !a.tensors.is_empty() {
        T::Tensors
    } else if !a.graphs.is_empty() {
        T::Graphs
    } else if !a.s.is_empty() {
        T::String
    } else if a.f != 0.0 {
        T::Float
    } else {
        T::Int
    })
}

fn describe_node(np: &pb::NodeProto, what: &str) -> String {
    let name = if !np.name.is_empty() {
        format!("`{}`", np.name)
    } else if let Some(o) = np.output.iter().find(|o| !o.is_empty()) {
        format!("producing `{o}`")
    } else {
        "(unnamed)".to_string()
    };
    if what == "main graph" {
        format!("node {name} ({})", np.op_type)
    } else {
        format!("{what}: node {name} ({})", np.op_type)
    }
}

/// The tensor a `Constant` node produces, from whichever attribute holds it.
fn constant_value(op: &Op, desc: &str) -> Result<crate::ir::Tensor> {
    use crate::ir::Tensor;
    let mut found = None;
    for (name, a) in &op.attrs {
        let t = match (name.as_str(), &a.value) {
            ("value", AttrValue::Tensor(t)) => t.clone(),
            ("value_float", AttrValue::Float(f)) => Tensor::from_f32(vec![], &[*f]),
            ("value_floats", AttrValue::Floats(f)) => Tensor::from_f32(vec![f.len() as i64], f),
            ("value_int", AttrValue::Int(i)) => Tensor::from_i64(vec![], &[*i]),
            ("value_ints", AttrValue::Ints(i)) => Tensor::from_i64(vec![i.len() as i64], i),
            ("value_string", AttrValue::String(s)) => {
                Tensor::from_strings(vec![], vec![s.clone()]).expect("one element")
            }
            ("value_strings", AttrValue::Strings(s)) => {
                Tensor::from_strings(vec![s.len() as i64], s.clone()).expect("sized")
            }
            _ => continue,
        };
        if found.replace(t).is_some() {
            return Err(Error::invalid(format!(
                "{desc}: Constant has more than one value attribute"
            )));
        }
    }
    found.ok_or_else(|| Error::invalid(format!("{desc}: Constant has no value attribute")))
}

/// Whether a `Constant` node's attributes still describe `tensor` (export
/// writes them back unchanged then, and a `value` tensor otherwise).
pub(crate) fn constant_value_matches(op: &Op, tensor: &crate::ir::Tensor) -> bool {
    match constant_value(op, "") {
        Ok(t) => t.dtype == tensor.dtype && t.dims == tensor.dims && t.data == tensor.data,
        Err(_) => false,
    }
}
