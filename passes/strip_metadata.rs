//! `strip-metadata`: drops the exporter's per-node debug information (`doc_string` and
//! `metadata_props`) in every graph, If/Loop/Scan bodies included. PyTorch's dynamo exporter
//! writes a stack trace per node there: 637 KB of silero-VAD's 2.85 MB, more than its int8
//! weights. The model's own metadata (producer, `metadata_props` of the model) stays.

use crate::prelude::*;

#[derive(Default)]
pub struct StripMetadata;

impl Pass for StripMetadata {
    fn name(&self) -> &'static str {
        "strip-metadata"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let mut stripped = 0;
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            let ids: Vec<NodeId> = g.node_ids().collect();
            for n in ids {
                if let Some(op) = g.node_mut(n).op_mut() {
                    if !op.doc_string.is_empty() || !op.metadata_props.is_empty() {
                        op.doc_string.clear();
                        op.metadata_props.clear();
                        stripped += 1;
                    }
                }
            }
            Ok(())
        })?;
        cx.count("nodes", stripped);
        if stripped > 0 {
            cx.note(
                "strip-metadata",
                format!("{stripped} nodes' doc strings and metadata_props dropped"),
            );
        }
        Ok(())
    }
}
