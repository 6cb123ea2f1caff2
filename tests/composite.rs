//! Decomposed LayerNormalization and Gelu are recognised (and only when the
//! structure really is one), so observer insertion keeps them whole.

mod common;

use common::{f32_tensor, f32_value_info, node_proto, opset13_model};
use onnxq::backend::composite::find_composites;
use onnxq::onnx::pb;
use std::path::Path;

fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    node_proto(op, output, inputs, output)
}

fn scalar(name: &str, v: f32) -> pb::TensorProto {
    f32_tensor(name, &[], vec![v])
}

fn vector(name: &str, v: &[f32]) -> pb::TensorProto {
    f32_tensor(name, &[v.len() as i64], v.to_vec())
}

fn reduce_mean(input: &str, output: &str) -> pb::NodeProto {
    let mut n = node("ReduceMean", &[input], output);
    n.attribute.push(pb::AttributeProto {
        name: "axes".into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: vec![-1],
        ..Default::default()
    });
    n
}

/// x: f32[2, 4] → `out`.
fn build(nodes: Vec<pb::NodeProto>, inits: Vec<pb::TensorProto>, out: &str) -> onnxq::ir::Model {
    let proto = opset13_model(
        nodes,
        inits,
        vec![f32_value_info("x", &[2, 4])],
        vec![f32_value_info(out, &[2, 4])],
    );
    onnxq::import::import_proto(&proto, None).unwrap()
}

fn found(m: &onnxq::ir::Model) -> Vec<(String, Vec<String>)> {
    find_composites(&m.graph)
        .into_iter()
        .map(|c| {
            (
                c.op_type.to_string(),
                c.nodes
                    .iter()
                    .map(|&n| m.graph.node(n).name.clone())
                    .collect(),
            )
        })
        .collect()
}

fn layer_norm(
    square_by_mul: bool,
    eps_first: bool,
    affine: bool,
    extra_reader: bool,
) -> onnxq::ir::Model {
    let mut nodes = vec![
        reduce_mean("x", "m"),
        node("Sub", &["x", "m"], "d"),
        if square_by_mul {
            node("Mul", &["d", "d"], "p")
        } else {
            node("Pow", &["d", "two"], "p")
        },
        reduce_mean("p", "v"),
        if eps_first {
            node("Add", &["eps", "v"], "a")
        } else {
            node("Add", &["v", "eps"], "a")
        },
        node("Sqrt", &["a"], "s"),
        node("Div", &["d", "s"], "n"),
    ];
    let mut out = "n".to_string();
    if affine {
        nodes.push(node("Mul", &["n", "gamma"], "g"));
        nodes.push(node("Add", &["g", "beta"], "y"));
        out = "y".into();
    }
    if extra_reader {
        nodes.push(node("Add", &[out.as_str(), "d"], "z"));
        out = "z".into();
    }
    build(
        nodes,
        vec![
            scalar("two", 2.0),
            scalar("eps", 1e-5),
            vector("gamma", &[1.0, 2.0, 3.0, 4.0]),
            vector("beta", &[0.1, 0.2, 0.3, 0.4]),
        ],
        &out,
    )
}

#[test]
fn layer_norm_variants() {
    let m = layer_norm(false, false, true, false);
    assert_eq!(
        found(&m),
        vec![(
            "LayerNormalization".into(),
            ["m", "d", "p", "v", "a", "s", "n", "g", "y"]
                .map(String::from)
                .to_vec()
        )]
    );
    let m = layer_norm(true, true, false, false);
    assert_eq!(
        found(&m),
        vec![(
            "LayerNormalization".into(),
            ["m", "d", "p", "v", "a", "s", "n"]
                .map(String::from)
                .to_vec()
        )]
    );
    // The centred value is also read elsewhere: not a LayerNorm's private value.
    assert_eq!(found(&layer_norm(false, false, false, true)), vec![]);
}

#[test]
fn gelu_variants() {
    let after = build(
        vec![
            node("Div", &["x", "sqrt2"], "q"),
            node("Erf", &["q"], "e"),
            node("Add", &["e", "one"], "a"),
            node("Mul", &["x", "a"], "u"),
            node("Mul", &["u", "half"], "y"),
        ],
        vec![
            scalar("sqrt2", std::f32::consts::SQRT_2),
            scalar("one", 1.0),
            scalar("half", 0.5),
        ],
        "y",
    );
    assert_eq!(
        found(&after),
        vec![(
            "Gelu".into(),
            ["q", "e", "a", "u", "y"].map(String::from).to_vec()
        )]
    );
    let before = build(
        vec![
            node("Mul", &["x", "half"], "h"),
            node("Mul", &["x", "isqrt2"], "q"),
            node("Erf", &["q"], "e"),
            node("Add", &["one", "e"], "a"),
            node("Mul", &["h", "a"], "y"),
        ],
        vec![
            scalar("isqrt2", std::f32::consts::FRAC_1_SQRT_2),
            scalar("one", 1.0),
            scalar("half", 0.5),
        ],
        "y",
    );
    assert_eq!(
        found(&before),
        vec![(
            "Gelu".into(),
            ["h", "q", "e", "a", "y"].map(String::from).to_vec()
        )]
    );
    // Erf of something else is just Erf.
    let plain = build(
        vec![node("Div", &["x", "three"], "q"), node("Erf", &["q"], "y")],
        vec![scalar("three", 3.0)],
        "y",
    );
    assert_eq!(found(&plain), vec![]);
}

#[test]
fn torch_exported_transformer_layer() {
    let m = onnxq::import::import_file(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/transformer_layer.onnx"),
    )
    .unwrap();
    let f = found(&m);
    let kinds: Vec<(&str, usize)> = f.iter().map(|(k, n)| (k.as_str(), n.len())).collect();
    assert_eq!(
        kinds,
        vec![
            ("LayerNormalization", 9),
            ("Gelu", 5),
            ("LayerNormalization", 9)
        ]
    );
}

#[test]
fn hard_swish_and_hard_sigmoid() {
    let hs = build(
        vec![
            node("Add", &["x", "three"], "a"),
            node("Clip", &["a", "zero", "six"], "c"),
            node("Mul", &["c", "x"], "m"),
            node("Div", &["m", "six"], "y"),
        ],
        vec![
            scalar("three", 3.0),
            scalar("zero", 0.0),
            scalar("six", 6.0),
        ],
        "y",
    );
    assert_eq!(
        found(&hs),
        vec![(
            "HardSwish".into(),
            ["a", "c", "m", "y"].map(String::from).to_vec()
        )]
    );
    let hsig = build(
        vec![
            node("Add", &["three", "x"], "a"),
            node("Clip", &["a", "zero", "six"], "c"),
            node("Mul", &["c", "sixth"], "y"),
        ],
        vec![
            scalar("three", 3.0),
            scalar("zero", 0.0),
            scalar("six", 6.0),
            scalar("sixth", 1.0 / 6.0),
        ],
        "y",
    );
    assert_eq!(
        found(&hsig),
        vec![(
            "HardSigmoid".into(),
            ["a", "c", "y"].map(String::from).to_vec()
        )]
    );
    // relu6(x + 3) read by something else is not a HardSigmoid.
    let relu6 = build(
        vec![
            node("Add", &["x", "three"], "a"),
            node("Clip", &["a", "zero", "six"], "y"),
        ],
        vec![
            scalar("three", 3.0),
            scalar("zero", 0.0),
            scalar("six", 6.0),
        ],
        "y",
    );
    assert_eq!(found(&relu6), vec![]);
}

#[test]
fn tanh_gelu_as_bert_exports_it() {
    // HF BERT's gelu_new: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
    let m = build(
        vec![
            node("Mul", &["x", "half"], "h"),
            node("Pow", &["x", "three"], "p"),
            node("Mul", &["p", "c1"], "m1"),
            node("Add", &["x", "m1"], "a"),
            node("Mul", &["a", "c2"], "m2"),
            node("Tanh", &["m2"], "t"),
            node("Add", &["t", "one"], "a1"),
            node("Mul", &["h", "a1"], "y"),
        ],
        vec![
            scalar("half", 0.5),
            scalar("three", 3.0),
            scalar("c1", 0.044715),
            scalar("c2", 0.797_884_6),
            scalar("one", 1.0),
        ],
        "y",
    );
    assert_eq!(
        found(&m),
        vec![(
            "Gelu".into(),
            ["h", "p", "m1", "a", "m2", "t", "a1", "y"]
                .map(String::from)
                .to_vec()
        )]
    );
    // A plain tanh of a scaled sum is not a Gelu.
    let plain = build(
        vec![node("Mul", &["x", "c2"], "m2"), node("Tanh", &["m2"], "y")],
        vec![scalar("c2", 0.797_884_6)],
        "y",
    );
    assert_eq!(found(&plain), vec![]);
}

fn fragile(m: &onnxq::ir::Model) -> Vec<String> {
    onnxq::backend::fragile::fragile_nodes(&m.graph)
        .into_keys()
        .map(|n| m.graph.node(n).name.clone())
        .collect()
}

fn reduce_sum(input: &str, output: &str) -> pb::NodeProto {
    let mut n = reduce_mean(input, output);
    n.op_type = "ReduceSum".into();
    n.attribute.clear();
    n.input.push("axis".into());
    n
}

fn axis_init() -> pb::TensorProto {
    pb::TensorProto {
        name: "axis".into(),
        data_type: 7,
        dims: vec![1],
        int64_data: vec![-1],
        ..Default::default()
    }
}

/// Flax's LayerNorm (`E[x²] − E[x]²`, Sqrt + Reciprocal), which no composite
/// pattern matches: every statistic and every op applying one stays float,
/// the affine tail does not.
#[test]
fn fragile_flax_layer_norm() {
    let m = build(
        vec![
            reduce_sum("x", "s1"),
            node("Mul", &["s1", "inv_n"], "mean"),
            node("Mul", &["x", "x"], "sq"),
            reduce_sum("sq", "s2"),
            node("Mul", &["s2", "inv_n"], "ex2"),
            node("Mul", &["mean", "mean"], "mean2"),
            node("Sub", &["ex2", "mean2"], "var"),
            node("Max", &["zero", "var"], "varp"),
            node("Add", &["varp", "eps"], "a"),
            node("Sqrt", &["a"], "s"),
            node("Reciprocal", &["s"], "r"),
            node("Mul", &["r", "gamma"], "rg"),
            node("Sub", &["x", "mean"], "d"),
            node("Mul", &["d", "rg"], "n"),
            node("Add", &["n", "beta"], "y"),
        ],
        vec![
            axis_init(),
            scalar("inv_n", 0.25),
            scalar("zero", 0.0),
            scalar("eps", 1e-6),
            vector("gamma", &[1.0, 2.0, 3.0, 4.0]),
            vector("beta", &[0.0, 0.1, 0.2, 0.3]),
        ],
        "y",
    );
    assert!(found(&m).is_empty(), "no composite pattern for this form");
    let got = fragile(&m);
    for n in [
        "mean", "sq", "ex2", "mean2", "var", "varp", "a", "s", "r", "rg", "d", "n",
    ] {
        assert!(
            got.contains(&n.to_string()),
            "{n} should stay float: {got:?}"
        );
    }
    assert!(
        !got.contains(&"y".to_string()),
        "the affine tail is a signal"
    );
}

/// x³ written as products (JAX's tanh-Gelu) is a power; x·sigmoid(x) and a
/// squeeze-excitation gate through a Conv-free path of other ops are not.
#[test]
fn fragile_powers_but_not_gates() {
    let m = build(
        vec![
            node("Mul", &["c", "x"], "cx"),
            node("Mul", &["x", "cx"], "cx2"),
            node("Mul", &["x", "cx2"], "cx3"),
            node("Add", &["x", "cx3"], "inner"),
            node("Tanh", &["inner"], "t"),
            node("Add", &["t", "one"], "t1"),
            node("Mul", &["x", "t1"], "gelu"),
            node("Sigmoid", &["gelu"], "sg"),
            node("Mul", &["gelu", "sg"], "y"),
        ],
        vec![scalar("c", 0.044715), scalar("one", 1.0)],
        "y",
    );
    let got = fragile(&m);
    assert_eq!(got, ["cx2", "cx3", "inner", "t"].map(String::from).to_vec());
}
