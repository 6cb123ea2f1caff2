//! Ops that the deployment runtime runs slower in int8 than in float.
//!
//! onnxq's QDQ models are meant for ONNX Runtime (and tract) as much as for
//! onnxq's own executor, and a quantized unit that ONNX Runtime runs slower
//! than its float form buys nothing: these stay float by default, with the
//! reason in the summary. Both are measured with ONNX Runtime's CPU provider,
//! one thread (`scripts/bench_ort_speed.py`, and the figures in the README):
//!
//! * **a Conv over a single input channel** (a grayscale image, a
//!   spectrogram): K = kh·kw multiplies per output, too few for int8 to pay
//!   its im2col and requantization. MLAS runs the float Conv with a direct
//!   NCHW kernel, 1.2–3× faster than QLinearConv (1×8×8 digits: 38 µs vs
//!   145 µs at batch 64; 1×64×64 5×5: 400 µs vs 495 µs). The weights stay
//!   int8 (a DequantizeLinear before the float Conv), and the network input
//!   is no longer rounded.
//! * **AveragePool** (not the global one): ONNX Runtime's QLinearAveragePool
//!   is a com.microsoft NCHW kernel about 10× slower than the float pool
//!   (107 µs vs 10 µs on 64×32×4×4), and averaging gains no accuracy from
//!   int8. Where an int8 op reads the pool's output directly, the Q that op
//!   needs still follows the pool and ONNX Runtime fuses the three; where a
//!   reshape sits between them (pool → Flatten → Gemm), the pool runs float.
//!
//! A QConfigMapping `"name"` entry for the node overrides both.

use crate::ir::{Graph, NodeId};

/// Why `n` stays float for speed, if it does.
pub fn float_is_faster(g: &Graph, n: NodeId) -> Option<&'static str> {
    let node = g.node(n);
    match node.op_type() {
        "Conv" => {
            let group = node
                .op()
                .and_then(|o| o.attr("group"))
                .and_then(|a| a.as_int())
                .unwrap_or(1);
            let w = node.inputs.get(1).copied().flatten()?;
            let t = g.const_tensor(w)?;
            (group == 1 && t.dims.len() >= 3 && t.dims[1] == 1).then_some(
                "a convolution over one input channel does too little work per output for int8 \
                 to pay (ONNX Runtime runs it 1.2-3x faster in float than as QLinearConv); its \
                 weights stay int8",
            )
        }
        "AveragePool" => Some(
            "int8 averaging gains nothing, and ONNX Runtime's QLinearAveragePool runs ~10x \
             slower than float (an int8 op reading the pool directly still gets \
             DQ -> AveragePool -> Q fused)",
        ),
        _ => None,
    }
}
