//! `upgrade-opset{to=N}`: raises the default-domain ONNX opset of a model
//! to N (≤ 21), rewriting the ops whose definition changed on the way so that
//! the model computes exactly the same function, and refusing (naming the
//! node, changing nothing) where it cannot prove that. The rules live in
//! [`crate::opset`]: attribute → input moves (Squeeze/Unsqueeze/Split/
//! Reduce*), Split's `num_outputs`, Softmax-family before 13 wrapped in
//! Flatten/Reshape, RoiAlign's and GridSample's renamed modes, and a table
//! of ops whose meaning did not change.
//!
//! Quantization uses it where a feature needs a newer opset: per-axis
//! DequantizeLinear (13), blockwise DequantizeLinear and int4 (21).

use crate::prelude::*;

pub struct UpgradeOpset {
    pub to: i64,
}

impl UpgradeOpset {
    pub fn from_options(mut opts: PassOptions) -> Result<Box<dyn Pass>> {
        let to = opts.take("to");
        opts.finish(&["to"])?;
        let to = to
            .ok_or_else(|| Error::invalid("upgrade-opset needs to=N"))?
            .parse::<i64>()
            .map_err(|_| Error::invalid("upgrade-opset: to=N takes an integer"))?;
        if !(1..=21).contains(&to) {
            return Err(Error::invalid(format!(
                "upgrade-opset: to={to} is outside 1..=21"
            )));
        }
        Ok(Box::new(UpgradeOpset { to }))
    }
}

impl Pass for UpgradeOpset {
    fn name(&self) -> &'static str {
        "upgrade-opset"
    }

    fn options(&self) -> Vec<(String, String)> {
        vec![("to".into(), self.to.to_string())]
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()> {
        let from = model.onnx_opset();
        let rewritten = raise_opset(model, self.to)?;
        cx.count("rewritten", rewritten.len() as u64);
        if from < self.to {
            cx.count("raised", 1);
        }
        Ok(())
    }
}
