//! `dedup-constants`: readers of identical constant tensors share one.

use crate::prelude::*;
use std::collections::HashMap;

#[derive(Default)]
pub struct DedupConstants;

impl Pass for DedupConstants {
    fn name(&self) -> &'static str {
        "dedup-constants"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        for_each_graph_mut(model, &mut |g: &mut Graph| -> Result<()> {
            let mut first: HashMap<u64, Vec<ValueId>> = HashMap::new();
            for n in g.topo_order().map_err(|e| Error::invalid(e.to_string()))? {
                let Some(c) = g.node(n).as_const() else {
                    continue;
                };
                let v = g.node(n).outputs[0].expect("one output");
                // Overridable initializers and graph outputs keep their identity.
                if g.inputs.contains(&v) || g.is_graph_output(v) {
                    continue;
                }
                let key = c.tensor.checksum();
                let same = first.entry(key).or_default();
                let twin = same
                    .iter()
                    .copied()
                    .find(|&o| g.const_tensor(o) == Some(&c.tensor));
                match twin {
                    Some(o) => {
                        g.replace_all_uses(v, o);
                        g.remove_node(n);
                        cx.count("merged", 1);
                    }
                    None => same.push(v),
                }
            }
            Ok(())
        })
    }
}
