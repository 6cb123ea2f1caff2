//! Ops that the deployment runtime runs slower in int8 than in float.
//!
//! onnxq's QDQ models are meant for ONNX Runtime (and tract) as much as for
//! onnxq's own executor, and a quantized unit that ONNX Runtime runs slower
//! than its float form buys nothing: these stay float by default, with the
//! reason in the summary. Both are measured with ONNX Runtime's CPU provider,
//! one thread (`scripts/bench_ort_speed.py`, and the figures in the README):
//!
//! * **a Conv over a single input channel with up to 7×7 taps** (a grayscale
//!   image, a spectrogram): K = kh·kw ≤ 49 multiplies per output, too few for int8 to pay
//!   its im2col and requantization. MLAS runs the float Conv with a direct
//!   NCHW kernel, 1.2–3× faster than QLinearConv (1×8×8 digits: 38 µs vs
//!   145 µs at batch 64; 1×64×64 5×5: 400 µs vs 495 µs). The weights stay
//!   float too, at most 49 per output channel: behind a DequantizeLinear,
//!   ONNX Runtime would dequantize them on every run and could not reorder
//!   them into its blocked (NCHWc) float layout. The network input is no
//!   longer rounded.
//! * **AveragePool** (not the global one): ONNX Runtime's QLinearAveragePool
//!   is a com.microsoft NCHW kernel about 10× slower than the float pool
//!   (107 µs vs 10 µs on 64×32×4×4), and averaging gains no accuracy from
//!   int8. Where an int8 op reads the pool's output directly, the Q that op
//!   needs still follows the pool and ONNX Runtime fuses the three; where
//!   reshapes sit between them (pool → Flatten → Gemm), they stay float too,
//!   the Q goes after them, and the pool runs float.
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
            // Up to 7×7 taps, as measured; a long single-channel filter (an STFT basis of
            // 256 taps) is a real GEMM, where int8 pays.
            let taps: i64 = t.dims.iter().skip(2).product();
            (group == 1 && t.dims.len() >= 3 && t.dims[1] == 1 && taps <= 49).then_some(
                "a convolution over one input channel does too little work per output for int8 \
                 to pay (ONNX Runtime runs it 1.2-3x faster in float than as QLinearConv); its \
                 weights stay float too (at most 49 per output channel)",
            )
        }
        "AveragePool" => Some(
            "int8 averaging gains nothing, and ONNX Runtime's QLinearAveragePool runs ~10x \
             slower than float (an int8 op reading the pool directly still gets \
             DQ -> AveragePool -> Q fused)",
        ),
        t if RESHAPES.contains(&t) && after_average_pool(g, n) => Some(
            "it carries a float AveragePool's output: the Q of its int8 reader goes after it, \
             so that ONNX Runtime cannot fuse the pool into QLinearAveragePool",
        ),
        _ => None,
    }
}

/// Reshapes through which [`float_is_faster`] follows an AveragePool's output.
const RESHAPES: &[&str] = &["Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose"];

/// Whether `n`'s data input is an AveragePool's output, directly or through reshapes.
fn after_average_pool(g: &Graph, n: NodeId) -> bool {
    let mut n = n;
    // Exporters write one or two reshapes between a pool and its reader; 16 bounds the walk.
    for _ in 0..16 {
        let Some(Some(x)) = g.node(n).inputs.first().copied() else {
            return false;
        };
        let p = g.producer(x);
        let Some(op) = g.node(p).op() else {
            return false;
        };
        match op.op_type.as_str() {
            "AveragePool" => return true,
            t if RESHAPES.contains(&t) => n = p,
            _ => return false,
        }
    }
    false
}
