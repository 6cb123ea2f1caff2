//! Passes and the pass manager: every pass preserves the float function on
//! every bundled model (checked in tract), BatchNorm folding removes what it
//! should, pipelines round-trip as text, and the verifier names a pass that
//! breaks the graph.

mod common;

use common::*;
use onnxq::ir::Model;
use onnxq::pm::{Pass, PassContext, PassManager, PassRegistry};
use onnxq::prelude::*;

/// Bundled models tract cannot run (checked against ONNX Runtime in tests/python).
const TRACT_CANNOT_RUN: &[&str] = &["control_flow"];

fn run_pipeline(model: &mut Model, text: &str) -> PassContext {
    let mut pm = PassManager::parse(text, &PassRegistry::builtin()).unwrap();
    let mut cx = PassContext::new();
    pm.run(model, &mut cx)
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    cx
}

fn outputs(model: &Model, inputs: &[Tensor]) -> Vec<Vec<f32>> {
    let bytes = onnxq::emit::to_bytes(model);
    onnxq::tract_runner::run_once(&bytes, None, inputs)
        .unwrap()
        .iter()
        .map(|t| t.to_f32_vec().unwrap())
        .collect()
}

#[test]
fn every_pass_preserves_the_float_function() {
    let registry = PassRegistry::builtin();
    // Every float pass; the quantizing ones change the function by design
    // (tests/quantize_cli.rs, tests/quantize_modes.rs), and so does f16 weight storage
    // (below, and tests/python/test_ort_optimize.py).
    let quantizing = [
        "convert-qdq",
        "quantize-dynamic",
        "quantize-weight-only",
        "store-weights-fp16",
    ];
    let mut pipelines: Vec<String> = registry
        .names()
        .filter(|n| !quantizing.contains(n))
        .map(|n| match n {
            // The newest opset it can raise to: every rewrite rule applies.
            "upgrade-opset" => "upgrade-opset{to=21}".to_string(),
            n => n.to_string(),
        })
        .collect();
    pipelines.push(onnxq::passes::CANONICALIZE.to_string());
    pipelines.push(onnxq::passes::OPTIMIZE.to_string());
    let mut worst = (0.0f64, String::new());
    for path in bundled_models() {
        let name = stem(&path);
        let original = onnxq::import::import_file(&path).unwrap();
        let runnable = !TRACT_CANNOT_RUN.contains(&name.as_str());
        let inputs = sample_inputs(&path, &original);
        let want = runnable.then(|| outputs(&original, &inputs));
        for p in &pipelines {
            let mut m = original.clone();
            run_pipeline(&mut m, p);
            let Some(want) = &want else { continue };
            let got = outputs(&m, &inputs);
            for (w, g) in want.iter().zip(&got) {
                let scale = w
                    .iter()
                    .fold(0f32, |a, &x| a.max(x.abs()))
                    .max(f32::MIN_POSITIVE) as f64;
                let err = w
                    .iter()
                    .zip(g)
                    .fold(0f64, |a, (&x, &y)| a.max((x as f64 - y as f64).abs()));
                let rel = err / scale;
                assert!(
                    rel <= 1e-5,
                    "{name} after `{p}`: max abs error {err:e} = {rel:e} × max|output|"
                );
                if rel > worst.0 {
                    worst = (rel, format!("{name} after `{p}`"));
                }
            }
        }
    }
    println!("worst relative error: {:e} ({})", worst.0, worst.1);
}

fn count_ops(m: &Model, op: &str) -> usize {
    m.graph
        .node_ids()
        .filter(|&n| m.graph.node(n).is_op(op))
        .count()
}

#[test]
fn batchnorm_after_conv_is_folded_away() {
    for name in ["digits_cnn", "residual_block", "inverted_residual"] {
        let mut m = onnxq::import::import_file(models_dir().join(format!("{name}.onnx"))).unwrap();
        assert!(count_ops(&m, "BatchNormalization") > 0);
        let cx = run_pipeline(&mut m, onnxq::passes::OPTIMIZE);
        assert_eq!(count_ops(&m, "BatchNormalization"), 0, "{name}");
        assert!(cx.stat("fold-batchnorm", "folded") > 0);
        // No dangling BN parameters are left in the file.
        let names: Vec<String> = m
            .graph
            .value_ids()
            .map(|v| m.graph.value(v).name.clone())
            .collect();
        assert!(
            !names.iter().any(|n| n.contains("running_mean")),
            "{name}: {names:?}"
        );
    }
}

#[test]
fn preset_pipeline_snapshots() {
    let presets = [
        ("canonicalize", onnxq::passes::CANONICALIZE),
        ("optimize", onnxq::passes::OPTIMIZE),
        ("fuse", onnxq::passes::FUSE),
        ("prepare", onnxq::passes::PREPARE),
    ];
    for path in bundled_models() {
        for (preset, text) in presets {
            let mut m = onnxq::import::import_file(&path).unwrap();
            run_pipeline(&mut m, text);
            insta::with_settings!({description => text}, {
                insta::assert_snapshot!(format!("{preset}_{}", stem(&path)), onnxq::ir::print::model_to_string(&m));
            });
        }
    }
}

#[test]
fn fusion_units_on_bundled_models() {
    let expect: &[(&str, &[(&str, u64)])] = &[
        ("digits_cnn", &[("weighted-relu", 3)]),
        (
            "residual_block",
            &[("weighted-relu", 1), ("conv-add-relu", 1)],
        ),
        (
            "inverted_residual",
            &[("weighted-relu6", 2), ("weighted-relu", 1)],
        ),
        ("mlp", &[("weighted-relu", 2)]),
    ];
    for (name, counts) in expect {
        let mut m = onnxq::import::import_file(models_dir().join(format!("{name}.onnx"))).unwrap();
        let cx = run_pipeline(&mut m, onnxq::passes::FUSE);
        for (pattern, n) in *counts {
            assert_eq!(
                cx.stat("fuse-activations", pattern),
                *n,
                "{name}: {pattern}"
            );
        }
    }
}

#[test]
fn pipeline_text_round_trips_and_unknown_names_list_valid_ones() {
    let registry = PassRegistry::builtin();
    for text in [
        onnxq::passes::OPTIMIZE,
        onnxq::passes::CANONICALIZE,
        "fold-batchnorm,fold-batchnorm",
    ] {
        assert_eq!(
            PassManager::parse(text, &registry).unwrap().pipeline_text(),
            text
        );
    }
    let e = PassManager::parse("fold-constants,fuse-everything", &registry)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("unknown pass `fuse-everything`") && e.contains("fold-batchnorm"),
        "{e}"
    );
    let e = PassManager::parse("fold-batchnorm{aggressive=1}", &registry)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("has no option `aggressive`"), "{e}");
}

/// A pass that corrupts the graph: the verifier must catch it and name it.
struct BreakGraph;
impl Pass for BreakGraph {
    fn name(&self) -> &'static str {
        "break-graph"
    }
    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<()> {
        let g = &mut model.graph;
        // Make the first op read its own output: a cycle.
        let n = g
            .topo_order()
            .unwrap()
            .into_iter()
            .find(|&n| g.node(n).op().is_some())
            .unwrap();
        let out = g.node(n).outputs[0].unwrap();
        g.set_input(n, 0, Some(out));
        Ok(())
    }
}

#[test]
fn verifier_names_the_pass_that_broke_the_graph() {
    let mut m = onnxq::import::import_file(models_dir().join("mlp.onnx")).unwrap();
    let mut pm = PassManager::new();
    pm.add(onnxq::passes::RemoveIdentity).add(BreakGraph);
    pm.instrumentation.verify_each = true;
    let e = pm
        .run(&mut m, &mut PassContext::new())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("after pass `break-graph`") && e.contains("cycle"),
        "{e}"
    );
}

#[test]
fn stop_after_and_print_after_instrumentation() {
    let mut m = onnxq::import::import_file(models_dir().join("digits_cnn.onnx")).unwrap();
    let mut pm = PassManager::parse(onnxq::passes::OPTIMIZE, &PassRegistry::builtin()).unwrap();
    let dumps = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let d2 = dumps.clone();
    pm.instrumentation.print_after = vec!["fold-batchnorm".into()];
    pm.instrumentation.print_before = vec!["fold-batchnorm".into()];
    pm.instrumentation.sink = Some(Box::new(move |pass, when, text| {
        d2.lock().unwrap().push(format!(
            "{when} {pass}: {}",
            text.contains("BatchNormalization")
        ))
    }));
    pm.instrumentation.stop_after = Some(3);
    let timings = pm.run(&mut m, &mut PassContext::new()).unwrap();
    assert_eq!(timings.len(), 3);
    assert_eq!(
        *dumps.lock().unwrap(),
        vec!["before fold-batchnorm: true", "after fold-batchnorm: false"]
    );
}

/// `store-weights-fp16` on the bundled models: every weight op's weights become f16
/// behind a Cast, and tract and onnxq's executor compute what the float model computes
/// with its weights rounded to f16.
#[test]
fn fp16_weight_storage_computes_the_rounded_weights() {
    for path in bundled_models() {
        let name = stem(&path);
        if TRACT_CANNOT_RUN.contains(&name.as_str()) {
            continue;
        }
        let original = onnxq::import::import_file(&path).unwrap();
        let inputs = sample_inputs(&path, &original);
        let mut stored = original.clone();
        let cx = run_pipeline(&mut stored, "store-weights-fp16");
        let n = cx.stat("store-weights-fp16", "weights") as usize;
        assert!(n > 0, "{name}: no weight stored in f16");
        assert!(
            onnxq::emit::to_bytes(&stored).len() < onnxq::emit::to_bytes(&original).len(),
            "{name}"
        );
        // The reference: the same weights rounded to f16 in place, kept f32.
        let mut rounded = original.clone();
        let mut halves = 0;
        let g = &mut rounded.graph;
        let ids: Vec<NodeId> = g.node_ids().collect();
        for id in ids {
            let Some(v) = g.node(id).outputs[0] else {
                continue;
            };
            let Some(t) = g.const_tensor(v) else { continue };
            let weight_only = !g.consumers(v).is_empty()
                && g.consumers(v).iter().all(|&(c, _)| {
                    onnxq::passes::FP16_WEIGHT_OPS
                        .iter()
                        .any(|o| g.node(c).is_op(o))
                });
            if t.dtype != DataType::F32 || t.dims.len() < 2 || !weight_only {
                continue;
            }
            let r: Vec<f32> = t
                .to_f32_vec()
                .unwrap()
                .iter()
                .map(|&x| half::f16::from_f32(x).to_f32())
                .collect();
            let dims = t.dims.clone();
            if let NodeKind::Const(c) = &mut g.node_mut(id).kind {
                c.tensor = Tensor::from_f32(dims, &r);
            }
            halves += 1;
        }
        assert_eq!(halves, n, "{name}");
        let want = outputs(&rounded, &inputs);
        let got = outputs(&stored, &inputs);
        let ex = onnxq::executor::Executor::new(&stored, Default::default()).unwrap();
        let named: Vec<(&str, &Tensor)> = stored
            .graph
            .inputs
            .iter()
            .map(|&v| stored.graph.value(v).name.as_str())
            .zip(&inputs)
            .collect();
        let native: Vec<Vec<f32>> = ex
            .run(&named)
            .unwrap()
            .iter()
            .map(|(_, t)| t.to_f32_vec().unwrap())
            .collect();
        for ((w, g), e) in want.iter().zip(&got).zip(&native) {
            let scale = w.iter().fold(f32::MIN_POSITIVE, |a, &x| a.max(x.abs()));
            for ((&a, &b), &c) in w.iter().zip(g).zip(e) {
                assert!((a - b).abs() <= 1e-5 * scale, "{name}: tract {a} vs {b}");
                assert!((a - c).abs() <= 1e-4 * scale, "{name}: executor {a} vs {c}");
            }
        }
    }
}

#[test]
fn fp16_weight_storage_keeps_what_f16_cannot_hold_and_names_unknown_nodes() {
    let path = models_dir().join("mlp.onnx");
    let mut m = onnxq::import::import_file(&path).unwrap();
    // Scale one weight beyond f16's range.
    let g = &mut m.graph;
    let ids: Vec<NodeId> = g.node_ids().collect();
    let mut big = None;
    for id in ids {
        let Some(v) = g.node(id).outputs[0] else {
            continue;
        };
        let Some(t) = g.const_tensor(v) else { continue };
        if t.dtype == DataType::F32 && t.dims.len() == 2 {
            let r: Vec<f32> = t.to_f32_vec().unwrap().iter().map(|x| x * 1e6).collect();
            let dims = t.dims.clone();
            big = Some(g.value(v).name.clone());
            if let NodeKind::Const(c) = &mut g.node_mut(id).kind {
                c.tensor = Tensor::from_f32(dims, &r);
            }
            break;
        }
    }
    let big = big.expect("mlp has a 2-D weight");
    let mut stored = m.clone();
    let cx = run_pipeline(&mut stored, "store-weights-fp16");
    let v = stored
        .graph
        .value_by_name(&big)
        .expect("kept under its name");
    assert_eq!(stored.graph.const_tensor(v).unwrap().dtype, DataType::F32);
    assert!(cx
        .diagnostics()
        .iter()
        .any(|d| d.subject == big && d.message.contains("65504")));
    let err = PassManager::parse("store-weights-fp16{only=nope}", &PassRegistry::builtin())
        .unwrap()
        .run(&mut m.clone(), &mut PassContext::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`nope`"), "{err}");
}
