//! The `com.microsoft` quantized operators that ONNX Runtime's quantizer writes in its
//! QOperator format.
//!
//! - `QGemm` runs on the integer GEMM (exactly like QLinearMatMul plus Gemm's bias and
//!   `transB`).
//! - The elementwise and pooling ones (`QLinearAdd`, `QLinearMul`, `QLinearAveragePool`,
//!   `QLinearGlobalAveragePool`, `QLinearConcat`, `QLinearSigmoid`, `QLinearLeakyRelu`) run as
//!   their definition: dequantize the inputs, the float op, quantize the output. ONNX Runtime
//!   computes some of them with a folded scale ratio, so results may differ from it by 1 LSB
//!   at rounding ties.

use super::ops::{self, input, Kernel, NodeCtx};
use super::qlinear::{dequantize, quantize, Act, QMatMul, QOut, QSpec, Src};
use super::value::Array;
use crate::ir::{DataType, Op};

/// `(x, scale, zero point)` input positions of one quantized operand.
type QIn = (usize, usize, usize);

/// A float op between a dequantizing prologue and a quantizing epilogue.
struct Emulated {
    float: Box<dyn Kernel>,
    inputs: Vec<QIn>,
    /// `(scale, zero point)` positions of the output parameters.
    out: (usize, usize),
}

impl Kernel for Emulated {
    fn run(&self, i: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        let deq = self
            .inputs
            .iter()
            .map(|&(x, s, z)| {
                dequantize(
                    input(i, x)?,
                    input(i, s)?,
                    i.get(z).copied().flatten(),
                    (1, 0),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<Option<&Array>> = deq.iter().map(Some).collect();
        let y = self.float.run(&refs)?.remove(0);
        let zp = i.get(self.out.1).copied().flatten();
        // The output type follows the zero point, else the first input's type.
        let ty = zp.map_or_else(
            || input(i, self.inputs[0].0).map(Array::dtype),
            |z| Ok(z.dtype()),
        )?;
        Ok(vec![quantize(&y, input(i, self.out.0)?, zp, (1, 0), ty)?])
    }
}

fn emulate(
    ctx: &NodeCtx<'_>,
    float_op: &str,
    inputs: Vec<QIn>,
    out: (usize, usize),
) -> Result<Box<dyn Kernel>, String> {
    let mut op: Op = ctx.op.clone();
    op.op_type = float_op.to_string();
    op.domain = String::new();
    op.attrs.remove("channels_last");
    let n = inputs.len();
    let fctx = NodeCtx {
        op: &op,
        opset: ctx.opset.max(13),
        consts: vec![None; n],
        present: vec![true; n],
        n_outputs: 1,
    };
    let float = ops::build(&fctx)?;
    Ok(Box::new(Emulated { float, inputs, out }))
}

/// Builds a `com.microsoft` op, `Ok(None)` if it is not one of those above.
pub(crate) fn build(ctx: &NodeCtx<'_>) -> Result<Option<Box<dyn Kernel>>, String> {
    if ctx.op.domain != "com.microsoft" {
        return Ok(None);
    }
    if ctx.int("channels_last", 0) != 0 {
        return Err("channels_last=1 is not supported".into());
    }
    let k = match ctx.op.op_type.as_str() {
        "QGemm" => {
            if ctx.int("transA", 0) != 0 || ctx.float("alpha", 1.0) != 1.0 {
                return Err("QGemm with transA or alpha ≠ 1 is not supported".into());
            }
            let out = match Src::of(ctx, 7) {
                Some(y_scale) => QOut::Requant {
                    y_scale,
                    y_zp: Src::of(ctx, 8),
                    y_type: DataType::U8,
                    act: Act::None,
                },
                None => QOut::Dequant,
            };
            let spec = QSpec {
                x: 0,
                x_scale: Src::of(ctx, 1),
                x_zp: Src::of(ctx, 2),
                w: Src::of(ctx, 3).ok_or("missing B")?,
                w_scale: Src::of(ctx, 4),
                w_zp: Src::of(ctx, 5),
                bias: Src::of(ctx, 6),
                out,
            };
            Box::new(QMatMul::new(spec, ctx.int("transB", 0) != 0)?) as Box<dyn Kernel>
        }
        "QLinearAdd" => emulate(ctx, "Add", vec![(0, 1, 2), (3, 4, 5)], (6, 7))?,
        "QLinearMul" => emulate(ctx, "Mul", vec![(0, 1, 2), (3, 4, 5)], (6, 7))?,
        "QLinearAveragePool" => emulate(ctx, "AveragePool", vec![(0, 1, 2)], (3, 4))?,
        "QLinearGlobalAveragePool" => emulate(ctx, "GlobalAveragePool", vec![(0, 1, 2)], (3, 4))?,
        "QLinearSigmoid" => emulate(ctx, "Sigmoid", vec![(0, 1, 2)], (3, 4))?,
        "QLinearLeakyRelu" => emulate(ctx, "LeakyRelu", vec![(0, 1, 2)], (3, 4))?,
        "QLinearConcat" => {
            let n = ctx.present.len();
            if n < 5 || !(n - 2).is_multiple_of(3) {
                return Err(format!("QLinearConcat with {n} inputs"));
            }
            let ins = (0..(n - 2) / 3)
                .map(|k| (2 + 3 * k, 3 + 3 * k, 4 + 3 * k))
                .collect();
            emulate(ctx, "Concat", ins, (0, 1))?
        }
        _ => return Err("this com.microsoft operator is not supported by the executor".into()),
    };
    Ok(Some(k))
}
