//! u8×s8 convolution throughput (fbgemm family), NHWC, single thread:
//! `cargo bench --bench qconv [filter]`.
//!
//! GOPS = 2·MACs / time (median of runs, and best run: the VM is noisy), MACs = N·OH·OW·M·(C/group)·KH·KW. Every case uses
//! the fused per-channel u8 requantization (QLinearConv-like), a_zp = 117, symmetric weights.
//! "w±64" = weights in [−64, 64] (the AVX2 `vpmaddubsw` GEMM kernel admits them), "w full" =
//! full-range s8 weights (the exact 16-bit AVX2 GEMM kernel). Depthwise kernels are exact for
//! both (the AVX2 `c32` ones take their cheaper direct path on ±64 weights, the split path on
//! full-range ones); they are also timed as im2col + GEMM (`group = C`, K = 9, N = 1 per group) for
//! comparison.

use std::hint::black_box;
use std::time::Instant;

use onnxq::kernels::fbgemm::{
    ConvAlgo, ConvScratch, ConvWeights, DwConvUkernel, OutputStage, PackedConv, QGemmOutput,
};
use onnxq::kernels::reference::ConvGeometry;
use onnxq::kernels::testing::XorShift;
use onnxq::kernels::{available, Kernels};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// GOPS and the micro-kernel name of `geom` on a 1×h×w input.
fn conv_gops(
    k: &Kernels,
    algo: ConvAlgo,
    dw: Option<&'static DwConvUkernel>,
    geom: &ConvGeometry,
    h: usize,
    w: usize,
    full_range: bool,
) -> (f64, f64, &'static str) {
    let mut rng = XorShift::new(42);
    let wts: Vec<i8> = (0..geom.c_out * geom.k_per_out())
        .map(|_| {
            if full_range {
                rng.i8()
            } else {
                rng.range_i32(-64, 64) as i8
            }
        })
        .collect();
    let bias: Vec<i32> = (0..geom.c_out)
        .map(|_| rng.range_i32(-1000, 1000))
        .collect();
    let cw = ConvWeights {
        data: &wts,
        zp: &[0],
        bias: Some(&bias),
    };
    let packed = match dw {
        Some(uk) => PackedConv::with_dw_ukernel(k, uk, geom, &cw, 117),
        None => PackedConv::with_algo(k, algo, geom, &cw, 117),
    }
    .unwrap();
    let input: Vec<u8> = (0..h * w * geom.c_in).map(|_| rng.u8()).collect();
    let mult: Vec<f32> = (0..geom.c_out).map(|_| 1e-4 * (1.0 + rng.f32())).collect();
    let [_, oh, ow, m] = packed.output_shape(1, h, w).unwrap();
    let mut out = vec![0u8; oh * ow * m];
    let mut scratch = ConvScratch::new();
    let mut run = || {
        let stage = OutputStage::Requantize {
            mult: &mult,
            zp: 128,
            qmin: 0,
            qmax: 255,
        };
        let t0 = Instant::now();
        packed.run(
            &input,
            1,
            h,
            w,
            117,
            stage,
            QGemmOutput::U8(&mut out),
            &mut scratch,
        );
        black_box(&out);
        t0.elapsed().as_secs_f64()
    };
    run();
    run();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed().as_secs_f64() < 0.7 && times.len() < 500) {
        times.push(run());
    }
    let macs = (oh * ow * m * geom.k_per_out()) as f64;
    let best = times.iter().copied().fold(f64::MAX, f64::min);
    (
        2.0 * macs / median(times) / 1e9,
        2.0 * macs / best / 1e9,
        packed.ukernel_name(),
    )
}

/// Name, geometry, input side, and the (algorithm, full-range weights) variants to time.
type Case = (String, ConvGeometry, usize, Vec<(ConvAlgo, bool)>);

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut cases: Vec<Case> = Vec::new();
    let gemm = vec![(ConvAlgo::Im2col, false), (ConvAlgo::Im2col, true)];
    cases.push((
        "conv3x3 64->64 56x56 p1 (M=3136 K=576 N=64)".into(),
        ConvGeometry {
            pads: [1; 4],
            ..ConvGeometry::new(64, 64, 3, 3)
        },
        56,
        gemm.clone(),
    ));
    cases.push((
        "conv1x1 64->256 56x56 (M=3136 K=64 N=256)".into(),
        ConvGeometry::new(64, 256, 1, 1),
        56,
        vec![
            (ConvAlgo::Direct1x1, false),
            (ConvAlgo::Direct1x1, true),
            (ConvAlgo::Im2col, false),
        ],
    ));
    for (kk, s) in [(3, 1), (3, 2), (5, 1), (5, 2)] {
        for c in [64, 96, 128, 144] {
            if kk == 5 && c != 96 && c != 144 {
                continue;
            }
            cases.push((
                format!("dw{kk}x{kk} C={c} 56x56 s{s}"),
                ConvGeometry {
                    group: c,
                    strides: [s, s],
                    pads: [kk / 2; 4],
                    ..ConvGeometry::new(c, c, kk, kk)
                },
                56,
                vec![
                    (ConvAlgo::Depthwise, true),
                    (ConvAlgo::Depthwise, false),
                    (ConvAlgo::Im2col, false),
                    (ConvAlgo::Im2col, true),
                ],
            ));
        }
    }
    println!(
        "{:<46} {:<8} {:<10} {:<7} {:<26} {:>8} {:>8}",
        "case", "isa", "algo", "weights", "ukernel", "median", "best"
    );
    for (name, geom, hw, algos) in &cases {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        for k in available() {
            for &(algo, full) in algos {
                // The scalar set only on the depthwise kernels (the GEMM is too slow to matter).
                if k.isa == onnxq::kernels::Isa::Scalar && algo != ConvAlgo::Depthwise {
                    continue;
                }
                // Depthwise: every kernel of the set that can run it (preferred first).
                let dws: Vec<Option<&'static DwConvUkernel>> = if algo == ConvAlgo::Depthwise {
                    PackedConv::dw_ukernels(k, geom)
                        .into_iter()
                        .map(Some)
                        .collect()
                } else {
                    vec![None]
                };
                for dw in dws {
                    let (g, b, uk) = conv_gops(k, algo, dw, geom, *hw, *hw, full);
                    println!(
                        "{:<46} {:<8} {:<10} {:<7} {:<26} {:>8.1} {:>8.1}",
                        name,
                        k.isa.as_str(),
                        format!("{algo:?}"),
                        if full { "full" } else { "±64" },
                        uk,
                        g,
                        b
                    );
                }
            }
        }
    }
}
