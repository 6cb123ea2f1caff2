//! IR → ONNX `ModelProto`, and writing model files.
//!
//! Export is deterministic: the same IR gives byte-identical files. Nodes are
//! written in the IR's deterministic topological order, initializers in their
//! order of creation, attributes sorted by name. Tensors are written as
//! `raw_data`. Models whose tensors exceed protobuf's 2 GiB limit are written
//! with external data beside the model file.

use crate::error::{Error, Result};
use crate::ir::{
    AttrValue, Attribute, ConstOrigin, Graph, Model, NodeKind, Op, Tensor, TensorData, ValueId,
    ValueType,
};
use crate::onnx::pb;
use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Tensors larger than this go to the external data file when one is used.
const EXTERNAL_MIN_BYTES: usize = 1024;
/// Above this total of tensor bytes, a file is written with external data
/// (protobuf messages cannot exceed 2 GiB).
pub const EXTERNAL_DATA_THRESHOLD: usize = (2usize << 30) - (64 << 20);

/// Converts the model to protobuf with every tensor inline.
pub fn to_proto(model: &Model) -> ModelProtoResult {
    Exporter { external: None }.model(model)
}

type ModelProtoResult = pb::ModelProto;

/// Serializes the model with every tensor inline.
pub fn to_bytes(model: &Model) -> Vec<u8> {
    to_proto(model).encode_to_vec()
}

/// Writes the model to `path` atomically (temporary file, then rename). If
/// its tensors exceed 2 GiB, they are written to `<file name>.data` beside it
/// (also atomically) and referenced as external data.
pub fn write_file(model: &Model, path: &Path) -> Result<()> {
    write_file_with(model, path, EXTERNAL_DATA_THRESHOLD)
}

/// [`write_file`] with the total tensor size above which external data is
/// used (tests use a small one).
pub fn write_file_with(model: &Model, path: &Path, external_threshold: usize) -> Result<()> {
    let total: usize = tensor_bytes(&model.graph);
    if total < external_threshold {
        return write_atomic(path, &to_bytes(model));
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{}: not a file path", path.display())))?
        .to_string_lossy()
        .to_string();
    let data_name = format!("{file_name}.data");
    let data_path = path.with_file_name(&data_name);
    let mut sink = ExternalSink {
        location: data_name,
        buffer: Vec::with_capacity(total),
    };
    let proto = Exporter {
        external: Some(&mut sink),
    }
    .model(model);
    write_atomic(&data_path, &sink.buffer)?;
    write_atomic(path, &proto.encode_to_vec())
}

/// Writes bytes to `path` through a temporary file in the same folder and a
/// rename, so that a failure never leaves a half-written file.
///
/// An existing path that is not a regular file (`/dev/null`, a FIFO, a
/// terminal) is written in place: renaming over it would replace the device
/// node with a plain file, which as root breaks the whole machine.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_dir() {
            return Err(Error::invalid(format!(
                "{}: is a directory",
                path.display()
            )));
        }
        if !meta.is_file() {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
            return f
                .write_all(bytes)
                .map_err(|e| Error::invalid(format!("{}: {e}", path.display())));
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

fn tensor_bytes(g: &Graph) -> usize {
    let mut total = 0;
    for n in g.node_ids() {
        let node = g.node(n);
        if let Some(c) = node.as_const() {
            total += c.tensor.byte_size();
        }
        if let Some(op) = node.op() {
            for a in op.attrs.values() {
                for sg in a.subgraphs() {
                    total += tensor_bytes(sg);
                }
            }
        }
    }
    total
}

struct ExternalSink {
    location: String,
    buffer: Vec<u8>,
}

struct Exporter<'a> {
    external: Option<&'a mut ExternalSink>,
}

fn kv(v: &[(String, String)]) -> Vec<pb::StringStringEntryProto> {
    v.iter()
        .map(|(k, v)| pb::StringStringEntryProto {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

impl Exporter<'_> {
    fn model(&mut self, m: &Model) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: m.ir_version,
            opset_import: m
                .opset_import
                .iter()
                .map(|o| pb::OperatorSetIdProto {
                    domain: o.domain.clone(),
                    version: o.version,
                })
                .collect(),
            producer_name: m.producer_name.clone(),
            producer_version: m.producer_version.clone(),
            domain: m.domain.clone(),
            model_version: m.model_version,
            doc_string: m.doc_string.clone(),
            graph: Some(self.graph(&m.graph)),
            metadata_props: kv(&m.metadata_props),
            training_info: m.training_info.clone(),
            functions: m.functions.clone(),
            configuration: m.configuration.clone(),
        }
    }

    fn graph(&mut self, g: &Graph) -> pb::GraphProto {
        let order = g
            .topo_order()
            .expect("the IR is acyclic (checked at import and by the verifier)");
        let mut initializers = vec![];
        let mut sparse = vec![];
        let mut nodes = vec![];
        for &n in &order {
            let node = g.node(n);
            match &node.kind {
                NodeKind::Const(c) => {
                    let v = node.outputs[0].expect("a constant has one output");
                    let name = &g.value(v).name;
                    match &c.origin {
                        ConstOrigin::Initializer { .. } => {
                            initializers.push((node.order(), self.tensor(&c.tensor, name, true)))
                        }
                        ConstOrigin::ConstantOp(op) => {
                            let op = if crate::import::constant_value_matches(op, &c.tensor) {
                                op.clone()
                            } else {
                                let mut o = op.clone();
                                o.attrs.clear();
                                o.attrs.insert(
                                    "value".into(),
                                    Attribute::new(AttrValue::Tensor(c.tensor.clone())),
                                );
                                o
                            };
                            nodes.push(self.node(g, &node.name, &op, &node.inputs, &node.outputs));
                        }
                    }
                }
                NodeKind::SparseConst(sp) => sparse.push((node.order(), (**sp).clone())),
                NodeKind::Op(op) => {
                    nodes.push(self.node(g, &node.name, op, &node.inputs, &node.outputs))
                }
                NodeKind::Input | NodeKind::OuterRef => {}
            }
        }
        initializers.sort_by_key(|e| e.0);
        sparse.sort_by_key(|e| e.0);
        let mut value_info: Vec<(u64, pb::ValueInfoProto)> = g
            .value_ids()
            .filter_map(|v| {
                let val = g.value(v);
                val.value_info
                    .as_ref()
                    .map(|(k, vi)| (*k, with_type(vi, val)))
            })
            .collect();
        value_info.sort_by_key(|e| e.0);
        pb::GraphProto {
            node: nodes,
            name: g.name.clone(),
            initializer: initializers.into_iter().map(|e| e.1).collect(),
            sparse_initializer: sparse.into_iter().map(|e| e.1).collect(),
            doc_string: g.doc_string.clone(),
            input: g.inputs.iter().map(|&v| io_info(g, v)).collect(),
            output: g.outputs.iter().map(|&v| io_info(g, v)).collect(),
            value_info: value_info.into_iter().map(|e| e.1).collect(),
            quantization_annotation: g.quantization_annotation.clone(),
            metadata_props: kv(&g.metadata_props),
        }
    }

    fn node(
        &mut self,
        g: &Graph,
        name: &str,
        op: &Op,
        inputs: &[Option<ValueId>],
        outputs: &[Option<ValueId>],
    ) -> pb::NodeProto {
        let vname = |v: &Option<ValueId>| v.map(|v| g.value(v).name.clone()).unwrap_or_default();
        pb::NodeProto {
            input: inputs.iter().map(vname).collect(),
            output: outputs.iter().map(vname).collect(),
            name: name.to_string(),
            op_type: op.op_type.clone(),
            domain: op.domain.clone(),
            overload: op.overload.clone(),
            attribute: op.attrs.iter().map(|(k, a)| self.attribute(k, a)).collect(),
            doc_string: op.doc_string.clone(),
            metadata_props: kv(&op.metadata_props),
            device_configurations: op.device_configurations.clone(),
        }
    }

    fn attribute(&mut self, name: &str, a: &Attribute) -> pb::AttributeProto {
        use pb::attribute_proto::AttributeType as T;
        let mut p = pb::AttributeProto {
            name: name.to_string(),
            doc_string: a.doc_string.clone(),
            ..Default::default()
        };
        let kind = match &a.value {
            AttrValue::Float(f) => {
                p.f = *f;
                T::Float
            }
            AttrValue::Int(i) => {
                p.i = *i;
                T::Int
            }
            AttrValue::String(s) => {
                p.s = s.clone();
                T::String
            }
            AttrValue::Tensor(t) => {
                p.t = Some(self.tensor(t, "", false));
                T::Tensor
            }
            AttrValue::Graph(g) => {
                p.g = Some(self.graph(g));
                T::Graph
            }
            AttrValue::SparseTensor(s) => {
                p.sparse_tensor = Some((**s).clone());
                T::SparseTensor
            }
            AttrValue::TypeProto(t) => {
                p.tp = Some((**t).clone());
                T::TypeProto
            }
            AttrValue::Floats(v) => {
                p.floats = v.clone();
                T::Floats
            }
            AttrValue::Ints(v) => {
                p.ints = v.clone();
                T::Ints
            }
            AttrValue::Strings(v) => {
                p.strings = v.clone();
                T::Strings
            }
            AttrValue::Tensors(v) => {
                p.tensors = v.iter().map(|t| self.tensor(t, "", false)).collect();
                T::Tensors
            }
            AttrValue::Graphs(v) => {
                p.graphs = v.iter().map(|g| self.graph(g)).collect();
                T::Graphs
            }
            AttrValue::SparseTensors(v) => {
                p.sparse_tensors = v.clone();
                T::SparseTensors
            }
            AttrValue::TypeProtos(v) => {
                p.type_protos = v.clone();
                T::TypeProtos
            }
            AttrValue::Ref { name, kind } => {
                p.ref_attr_name = name.clone();
                p.r#type = *kind;
                return p;
            }
        };
        p.r#type = kind as i32;
        p
    }

    fn tensor(&mut self, t: &Tensor, name: &str, may_be_external: bool) -> pb::TensorProto {
        let mut p = pb::TensorProto {
            dims: t.dims.clone(),
            data_type: t.dtype.onnx_code(),
            name: name.to_string(),
            doc_string: t.doc_string.clone(),
            metadata_props: kv(&t.metadata_props),
            ..Default::default()
        };
        match &t.data {
            TensorData::Strings(s) => p.string_data = s.clone(),
            TensorData::Raw(raw) => match self.external.as_deref_mut() {
                Some(sink) if may_be_external && raw.len() >= EXTERNAL_MIN_BYTES => {
                    // Page-aligned offsets let readers mmap each tensor.
                    let offset = sink.buffer.len().div_ceil(4096) * 4096;
                    sink.buffer.resize(offset, 0);
                    sink.buffer.extend_from_slice(raw);
                    p.data_location = pb::tensor_proto::DataLocation::External as i32;
                    p.external_data = kv(&[
                        ("location".into(), sink.location.clone()),
                        ("offset".into(), offset.to_string()),
                        ("length".into(), raw.len().to_string()),
                    ]);
                }
                _ => p.raw_data = raw.clone(),
            },
        }
        p
    }
}

/// The `ValueInfoProto` of a graph input or output: as declared, else built
/// from what the IR knows.
fn io_info(g: &Graph, v: ValueId) -> pb::ValueInfoProto {
    let val = g.value(v);
    match &val.declared {
        Some(d) => with_type(d, val),
        None => pb::ValueInfoProto {
            name: val.name.clone(),
            r#type: type_proto(&val.ty),
            ..Default::default()
        },
    }
}

fn with_type(decl: &pb::ValueInfoProto, val: &crate::ir::Value) -> pb::ValueInfoProto {
    let mut d = decl.clone();
    d.name = val.name.clone();
    if d.r#type.is_none() {
        d.r#type = type_proto(&val.ty);
    }
    d
}

/// The `TypeProto` for an IR type (`None` when nothing is known).
pub fn type_proto(ty: &ValueType) -> Option<pb::TypeProto> {
    use pb::tensor_shape_proto::{dimension::Value as D, Dimension};
    match ty {
        ValueType::Unknown => None,
        ValueType::Other(tp) => Some((**tp).clone()),
        ValueType::Tensor(t) => Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: t.dtype.map(|d| d.onnx_code()).unwrap_or(0),
                shape: t.shape.as_ref().map(|s| pb::TensorShapeProto {
                    dim: s
                        .iter()
                        .map(|d| Dimension {
                            denotation: String::new(),
                            value: match d {
                                crate::ir::Dim::Fixed(v) => Some(D::DimValue(*v)),
                                crate::ir::Dim::Sym(s) => Some(D::DimParam(s.clone())),
                                crate::ir::Dim::Unknown => None,
                            },
                        })
                        .collect(),
                }),
            })),
        }),
    }
}
