//! Embedding onnxq's pass manager: define a pass of your own, register it
//! next to the built-in ones, and run it in a pipeline given as text.
//!
//! ```text
//! cargo run --example custom_pass -- models/digits_cnn.onnx
//! ```
//!
//! The pass below names every unnamed node after its op and first output,
//! so that later `--exclude NODE` options and reports can refer to every node.

use onnxq::prelude::*;

/// Gives every unnamed operation a stable name: `<OpType>_<first output>`.
#[derive(Default)]
struct NameNodes {
    prefix: String,
}

impl Pass for NameNodes {
    fn name(&self) -> &'static str {
        "name-nodes"
    }

    fn options(&self) -> Vec<(String, String)> {
        if self.prefix.is_empty() {
            vec![]
        } else {
            vec![("prefix".into(), self.prefix.clone())]
        }
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            for m in g.find_matches(&any()) {
                let node = g.node(m.anchor);
                let (Some(op), Some(Some(out))) = (node.op(), node.outputs.first()) else {
                    continue;
                };
                if node.name.is_empty() {
                    let name = format!("{}{}_{}", self.prefix, op.op_type, g.value(*out).name);
                    g.node_mut(m.anchor).name = name;
                    cx.count("named", 1);
                }
            }
            Ok(())
        })
    }
}

/// Registers the custom pass; built-ins stay available.
fn registry() -> PassRegistry {
    let mut r = PassRegistry::builtin();
    r.register(
        "name-nodes",
        "name every unnamed node after its op and output",
        |mut opts| {
            let prefix = opts.take("prefix").unwrap_or_default();
            opts.finish(&["prefix"])?;
            Ok(Box::new(NameNodes { prefix }) as Box<dyn Pass>)
        },
    );
    r
}

/// Runs `fold-batchnorm` and the custom pass; returns the pipeline text and
/// how many nodes were named.
fn optimize(model: &mut Model) -> Result<(String, u64)> {
    let mut pm = PassManager::parse(
        "fold-batchnorm,name-nodes{prefix=q_},eliminate-dead-code",
        &registry(),
    )?;
    let mut cx = PassContext::new();
    pm.run(model, &mut cx)?;
    Ok((pm.pipeline_text(), cx.stat("name-nodes", "named")))
}

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "models/digits_cnn.onnx".into());
    let mut model = onnxq::import::import_file(&path)?;
    let (pipeline, named) = optimize(&mut model)?;
    println!("ran `{pipeline}`: named {named} node(s)");
    print!("{}", onnxq::ir::print::model_to_string(&model));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_pass_runs_in_a_textual_pipeline() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/mlp.onnx");
        let mut model = onnxq::import::import_file(path).unwrap();
        // Unname two nodes so that the pass has work to do.
        let ops: Vec<NodeId> = model
            .graph
            .node_ids()
            .filter(|&n| model.graph.node(n).op().is_some())
            .take(2)
            .collect();
        for &n in &ops {
            model.graph.node_mut(n).name.clear();
        }
        let (pipeline, named) = optimize(&mut model).unwrap();
        assert_eq!(
            pipeline,
            "fold-batchnorm,name-nodes{prefix=q_},eliminate-dead-code"
        );
        assert_eq!(named, 2);
        for n in ops {
            assert!(
                model.graph.node(n).name.starts_with("q_"),
                "{}",
                model.graph.node(n).name
            );
        }
        let e = PassManager::parse("name-nodes{prefx=a}", &registry())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("no option `prefx`") && e.contains("prefix"),
            "{e}"
        );
    }
}
