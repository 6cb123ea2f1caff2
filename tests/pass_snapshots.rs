//! One pass on one small focused graph, snapshotted before → after
//! (rustc's mir-opt tests in spirit), plus fusion and backend explanations.

use onnxq::backend::BackendConfig;
use onnxq::ir::print::model_to_string;
use onnxq::prelude::*;

fn f32t(dims: &[i64], f: impl Fn(usize) -> f32) -> Tensor {
    let n: i64 = dims.iter().product();
    Tensor::from_f32(dims.to_vec(), &(0..n as usize).map(f).collect::<Vec<_>>())
}

fn input(g: &mut Graph, name: &str, dims: &[Dim]) -> ValueId {
    let n = g
        .add_node(name, NodeKind::Input, &[], &[Some(name)])
        .unwrap();
    let v = g.node(n).outputs[0].unwrap();
    g.value_mut(v).ty = ValueType::Tensor(TensorType::new(DataType::F32, dims.to_vec()));
    g.inputs.push(v);
    v
}

fn out(g: &Graph, n: NodeId) -> ValueId {
    g.node(n).outputs[0].unwrap()
}

fn model(g: Graph) -> Model {
    Model {
        ir_version: 8,
        opset_import: vec![onnxq::ir::OpsetImport {
            domain: String::new(),
            version: 17,
        }],
        graph: g,
        ..Default::default()
    }
}

fn run(m: &mut Model, pipeline: &str) -> PassContext {
    let mut pm = PassManager::parse(pipeline, &PassRegistry::builtin()).unwrap();
    let mut cx = PassContext::new();
    pm.run(m, &mut cx).unwrap();
    cx
}

fn snapshot(name: &str, mut m: Model, pipeline: &str) -> PassContext {
    let before = model_to_string(&m);
    let cx = run(&mut m, pipeline);
    let after = model_to_string(&m);
    insta::with_settings!({description => pipeline}, {
        insta::assert_snapshot!(name, format!("{before}\n// ---- after `{pipeline}` ----\n{after}"));
    });
    cx
}

fn conv_bn_relu() -> Model {
    let mut g = Graph::new("conv_bn_relu");
    let x = input(
        &mut g,
        "x",
        &[
            Dim::Sym("N".into()),
            Dim::Fixed(2),
            Dim::Fixed(4),
            Dim::Fixed(4),
        ],
    );
    let w = g.add_const(
        "conv.weight",
        f32t(&[3, 2, 3, 3], |i| (i as f32 * 0.37).sin()),
    );
    let conv = g.add_op(
        "conv",
        Op::new("Conv").with_attr("pads", vec![1i64, 1, 1, 1]),
        &[Some(x), Some(w)],
        &["c"],
    );
    let p: Vec<ValueId> = ["gamma", "beta", "mean", "var"]
        .iter()
        .enumerate()
        .map(|(k, n)| {
            g.add_const(
                &format!("bn.{n}"),
                f32t(&[3], |i| 0.5 + (i + k) as f32 * 0.25),
            )
        })
        .collect();
    let c = out(&g, conv);
    let bn = g.add_op(
        "bn",
        Op::new("BatchNormalization"),
        &[Some(c), Some(p[0]), Some(p[1]), Some(p[2]), Some(p[3])],
        &["b"],
    );
    let b = out(&g, bn);
    let relu = g.add_op("relu", Op::new("Relu"), &[Some(b)], &["y"]);
    g.outputs.push(out(&g, relu));
    model(g)
}

#[test]
fn fold_batchnorm_into_conv() {
    let cx = snapshot("fold_batchnorm_conv", conv_bn_relu(), "fold-batchnorm");
    assert_eq!(cx.stat("fold-batchnorm", "folded"), 1);
}

#[test]
fn fuse_conv_relu_and_explain() {
    let mut m = conv_bn_relu();
    let cx = snapshot(
        "fuse_conv_relu",
        m.clone(),
        "fold-batchnorm,fuse-activations",
    );
    assert_eq!(cx.stat("fuse-activations", "weighted-relu"), 1);
    // A second reader of the conv output prevents the fusion, and says so.
    run(&mut m, "fold-batchnorm");
    let g = &mut m.graph;
    let conv = g.node_ids().find(|&n| g.node(n).is_op("Conv")).unwrap();
    let c = out(g, conv);
    let extra = g.add_op("tap", Op::new("Sigmoid"), &[Some(c)], &["tap"]);
    let tap = out(g, extra);
    g.outputs.push(tap);
    let relu = g.node_ids().find(|&n| g.node(n).is_op("Relu")).unwrap();
    let why = BackendConfig::fbgemm().explain(g, relu);
    assert!(
        why.contains("not fused as `weighted-relu`") && why.contains("also read elsewhere"),
        "{why}"
    );
    let cx = run(&mut m, "fuse-activations");
    assert_eq!(cx.stat("fuse-activations", "weighted-relu"), 0);
    assert!(cx
        .diagnostics()
        .iter()
        .any(|d| d.message.contains("also read elsewhere")));
}

#[test]
fn lone_batchnorm_becomes_mul_add() {
    let mut g = Graph::new("lone_bn");
    let x = input(
        &mut g,
        "x",
        &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(2), Dim::Fixed(2)],
    );
    let p: Vec<ValueId> = ["gamma", "beta", "mean", "var"]
        .iter()
        .map(|n| g.add_const(&format!("bn.{n}"), f32t(&[3], |i| 1.0 + i as f32)))
        .collect();
    let bn = g.add_op(
        "bn",
        Op::new("BatchNormalization"),
        &[Some(x), Some(p[0]), Some(p[1]), Some(p[2]), Some(p[3])],
        &["y"],
    );
    g.outputs.push(out(&g, bn));
    snapshot("batchnorm_to_mul_add", model(g), "batchnorm-to-mul-add");
}

#[test]
fn matmul_add_to_gemm_with_bias_first() {
    let mut g = Graph::new("linear");
    let x = input(&mut g, "x", &[Dim::Sym("N".into()), Dim::Fixed(4)]);
    let w = g.add_const("fc.weight_t", f32t(&[4, 3], |i| i as f32 * 0.1));
    let b = g.add_const("fc.bias", f32t(&[3], |i| i as f32));
    let mm = g.add_op("fc/MatMul", Op::new("MatMul"), &[Some(x), Some(w)], &["mm"]);
    let m = out(&g, mm);
    let add = g.add_op("fc/Add", Op::new("Add"), &[Some(b), Some(m)], &["y"]);
    g.outputs.push(out(&g, add));
    let cx = snapshot("fuse_matmul_add", model(g), "fuse-matmul-add");
    assert_eq!(cx.stat("fuse-matmul-add", "fused"), 1);
}

#[test]
fn canonicalize_identity_dropout_duplicates_and_shape_chains() {
    let mut g = Graph::new("canon");
    let x = input(&mut g, "x", &[Dim::Sym("N".into()), Dim::Fixed(8)]);
    let id = g.add_op("id", Op::new("Identity"), &[Some(x)], &["x_id"]);
    let xi = out(&g, id);
    let drop = g.add_op("drop", Op::new("Dropout"), &[Some(xi)], &["x_drop"]);
    let xd = out(&g, drop);
    // Shape(x)[1] is known (8) although N is not: the Reshape target folds.
    let shape = g.add_op("shape", Op::new("Shape"), &[Some(xd)], &["s"]);
    let one = g.add_const("one", Tensor::from_i64(vec![], &[1]));
    let s = out(&g, shape);
    let gather = g.add_op("gather", Op::new("Gather"), &[Some(s), Some(one)], &["d"]);
    let axes = g.add_const("axes", Tensor::from_i64(vec![1], &[0]));
    let d = out(&g, gather);
    let unsq = g.add_op(
        "unsq",
        Op::new("Unsqueeze"),
        &[Some(d), Some(axes)],
        &["d1"],
    );
    let minus1 = g.add_const("minus1", Tensor::from_i64(vec![1], &[-1]));
    let d1 = out(&g, unsq);
    let cat = g.add_op(
        "cat",
        Op::new("Concat").with_attr("axis", 0i64),
        &[Some(minus1), Some(d1)],
        &["target"],
    );
    let t = out(&g, cat);
    let reshape = g.add_op("reshape", Op::new("Reshape"), &[Some(xd), Some(t)], &["r"]);
    // Two identical constants.
    let c1 = g.add_const("scale_a", f32t(&[8], |i| i as f32));
    let c2 = g.add_const("scale_b", f32t(&[8], |i| i as f32));
    let r = out(&g, reshape);
    let m1 = g.add_op("mul_a", Op::new("Mul"), &[Some(r), Some(c1)], &["m1"]);
    let m1v = out(&g, m1);
    let m2 = g.add_op("mul_b", Op::new("Mul"), &[Some(m1v), Some(c2)], &["y"]);
    g.outputs.push(out(&g, m2));
    let unused = g.add_const("unused", f32t(&[2], |_| 0.0));
    let _ = unused;
    let cx = snapshot("canonicalize", model(g), onnxq::passes::CANONICALIZE);
    assert_eq!(cx.stat("remove-identity", "removed"), 2);
    assert_eq!(cx.stat("dedup-constants", "merged"), 1);
    assert!(cx.stat("fold-constants", "folded") >= 3);
}

#[test]
fn backend_pipeline_option_round_trips() {
    let r = PassRegistry::builtin();
    let pm = PassManager::parse("fuse-activations{backend=qnnpack},fuse-activations", &r).unwrap();
    assert_eq!(
        pm.pipeline_text(),
        "fuse-activations{backend=qnnpack},fuse-activations"
    );
    let e = PassManager::parse("fuse-activations{backend=arm}", &r)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("unknown backend `arm`"), "{e}");
}
