//! `fuse-activations{backend=fbgemm|qnnpack}`: marks the chains the backend
//! runs as one int8 unit — Conv/Gemm/MatMul followed by Relu, LeakyRelu or
//! Clip(0, max), and Conv + Add(residual) + Relu — so that observer
//! insertion puts no Q/DQ inside them and kernels apply the activation in
//! their output stage. The graph itself is unchanged (it still exports to
//! plain ONNX); what was not fused, and why, is recorded as notes.

use crate::backend::BackendConfig;
use crate::prelude::*;

pub struct FuseActivations {
    backend: BackendConfig,
}

impl Default for FuseActivations {
    fn default() -> Self {
        FuseActivations {
            backend: BackendConfig::fbgemm(),
        }
    }
}

impl FuseActivations {
    pub fn new(backend: BackendConfig) -> Self {
        FuseActivations { backend }
    }

    /// Factory for the registry: option `backend`.
    pub fn from_options(mut opts: PassOptions) -> Result<Box<dyn Pass>> {
        let name = opts.take("backend").unwrap_or_else(|| "fbgemm".into());
        opts.finish(&["backend"])?;
        let backend = BackendConfig::by_name(&name).ok_or_else(|| {
            Error::invalid(format!(
                "fuse-activations: unknown backend `{name}` (fbgemm, qnnpack)"
            ))
        })?;
        Ok(Box::new(FuseActivations { backend }))
    }
}

impl Pass for FuseActivations {
    fn name(&self) -> &'static str {
        "fuse-activations"
    }

    fn options(&self) -> Vec<(String, String)> {
        if self.backend.name == "fbgemm" {
            vec![]
        } else {
            vec![("backend".into(), self.backend.name.into())]
        }
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let backend = &self.backend;
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            let order = g.topo_order().map_err(|e| Error::invalid(e.to_string()))?;
            // Anchor on the last op of each chain, latest first, so that a
            // longer chain (Conv+Add+Relu) claims its nodes before a shorter one.
            for &last in order.iter().rev() {
                if g.node(last).unit.is_some() || g.node(last).op().is_none() {
                    continue;
                }
                let op_type = g.node(last).op_type().to_string();
                let mut reasons = vec![];
                for p in backend.fusions() {
                    if !p
                        .chain
                        .last()
                        .is_some_and(|s| s.ops.contains(&op_type.as_str()))
                    {
                        continue;
                    }
                    match backend.match_chain(g, p, last) {
                        Ok(m) if m.nodes.iter().all(|&n| g.node(n).unit.is_none()) => {
                            g.mark_unit(&m.nodes, p.name);
                            cx.count(p.name, 1);
                            reasons.clear();
                            break;
                        }
                        Ok(_) => reasons.push(format!("{}: already part of another unit", p.name)),
                        Err(why) => reasons.push(format!("{}: {why}", p.name)),
                    }
                }
                // Only activations that could have fused are worth a note.
                if !reasons.is_empty() && matches!(op_type.as_str(), "Relu" | "LeakyRelu" | "Clip")
                {
                    cx.note(
                        g.display_node_name(last),
                        format!("not fused ({})", reasons.join("; ")),
                    );
                }
            }
            Ok(())
        })
    }
}
