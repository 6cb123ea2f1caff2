//! Convolution (fbgemm family) vs the scalar reference, bit-exact, over every available kernel
//! set and every applicable algorithm: 1×1 direct (no copy), im2col + GEMM (general, grouped),
//! depthwise 3×3/5×5 (scalar and AVX2).

use onnxq::kernels::fbgemm::{ConvAlgo, ConvWeights, PackedConv};
use onnxq::kernels::reference::{
    conv_u8s8_nchw, conv_u8s8_nhwc, nchw_to_nhwc, nhwc_to_nchw, ConvGeometry, ConvProblem,
};
use onnxq::kernels::testing::conv::ConvTester;
use onnxq::kernels::testing::{Data, Out, WZp, XorShift};
use onnxq::kernels::{available, Isa};

const ZPS: [u8; 5] = [0, 1, 127, 128, 255];
const CHANNELS: [usize; 12] = [1, 2, 3, 4, 8, 15, 16, 17, 31, 32, 33, 67];

fn out_kinds() -> Vec<Out> {
    vec![
        Out::I32,
        Out::u8(128, false),
        Out::u8(3, true),
        Out::i8(-5, true),
        // Fused Relu on u8 (qmin = zp) and a Clip-like window on i8.
        Out::Quant {
            signed: false,
            zp: 100,
            qmin: 100,
            qmax: 255,
            per_channel: true,
            mult: None,
        },
        Out::Quant {
            signed: true,
            zp: 0,
            qmin: 0,
            qmax: 6,
            per_channel: false,
            mult: None,
        },
        Out::F32 {
            per_channel: true,
            bias: true,
        },
        Out::F32 {
            per_channel: false,
            bias: false,
        },
    ]
}

const DATA: [Data; 7] = [
    Data::Random,
    Data::Extremes,
    Data::RandomSmallWeights,
    Data::MinWeights,
    Data::MaxWeights,
    Data::Alternating,
    Data::PairBoundary,
];

fn pick<T: Copy>(rng: &mut XorShift, v: &[T]) -> T {
    v[(rng.next_u64() % v.len() as u64) as usize]
}

/// A random case; `depthwise` forces group = C = M.
fn random_case(rng: &mut XorShift, i: u64, depthwise: bool, max_macs: usize) -> ConvTester {
    loop {
        let k = pick(rng, &[1, 3, 5, 7]);
        let kw = if rng.next_u64().is_multiple_of(4) {
            pick(rng, &[1, 3, 5])
        } else {
            k
        };
        let c = pick(rng, &CHANNELS);
        let (c_in, c_out, group) = if depthwise {
            (c, c, c)
        } else {
            match rng.next_u64() % 4 {
                // Grouped: C and M multiples of the group.
                0 => {
                    let g = pick(rng, &[2, 3, 4]);
                    let (cg, mg) = (
                        pick(rng, &[1, 2, 3, 5, 8, 17]),
                        pick(rng, &[1, 3, 4, 16, 17]),
                    );
                    (cg * g, mg * g, g)
                }
                // Depthwise-shaped (with multiplier 1 or 2).
                1 => (c, c * pick(rng, &[1, 1, 2]), c),
                _ => (c, pick(rng, &CHANNELS), 1),
            }
        };
        let geom = ConvGeometry {
            c_in,
            c_out,
            group,
            kernel: [k, kw],
            strides: [pick(rng, &[1, 1, 2, 3]), pick(rng, &[1, 1, 2, 3])],
            pads: [
                rng.range_i32(0, 3) as usize,
                rng.range_i32(0, 3) as usize,
                rng.range_i32(0, 3) as usize,
                rng.range_i32(0, 3) as usize,
            ],
            dilations: if rng.next_u64().is_multiple_of(3) {
                [pick(rng, &[1, 2]), pick(rng, &[1, 2])]
            } else {
                [1, 1]
            },
        };
        let outs = out_kinds();
        let t = ConvTester::new(
            geom,
            rng.range_i32(1, 2) as usize,
            rng.range_i32(1, 13) as usize,
            rng.range_i32(1, 13) as usize,
        )
        .a_zp(pick(rng, &ZPS))
        .w_zp(match i % 5 {
            0 => WZp::PerChannel,
            1 => WZp::PerTensor(-3),
            _ => WZp::Zero,
        })
        .bias(i.is_multiple_of(2))
        .out(outs[(i as usize) % outs.len()])
        .data(DATA[(i as usize / 3) % DATA.len()])
        .seed(i);
        if t.valid() && t.macs() <= max_macs {
            return t;
        }
    }
}

/// The NHWC reference (used by every kernel test) equals the ONNX-layout NCHW reference
/// through the layout helpers.
#[test]
fn reference_nhwc_matches_onnx_nchw() {
    let mut rng = XorShift::new(11);
    for i in 0..40usize {
        let geom = ConvGeometry {
            c_in: 2 + 2 * (i % 3),
            c_out: 4,
            group: 1 + (i % 2),
            kernel: [3, 2],
            strides: [1 + (i % 2), 2],
            pads: [1, 0, 2, 1],
            dilations: [1 + usize::from(i.is_multiple_of(3)), 1],
        };
        let (n, h, w, c) = (2, 5 + i % 4, 6, geom.c_in);
        let x_nchw: Vec<u8> = (0..n * c * h * w).map(|_| rng.u8()).collect();
        let wts: Vec<i8> = (0..geom.c_out * geom.k_per_out())
            .map(|_| rng.i8())
            .collect();
        let x_nhwc = nchw_to_nhwc(&x_nchw, n, c, h, w);
        assert_eq!(nhwc_to_nchw(&x_nhwc, n, c, h, w), x_nchw);
        let prob = |input| ConvProblem {
            geom,
            n,
            h,
            w,
            input,
            a_zp: 7,
            weights: &wts,
            w_zp: &[0, -2, 5, 127],
            bias: Some(&[5, -9, 0, 1]),
        };
        let (p1, p2) = (prob(&x_nchw[..]), prob(&x_nhwc[..]));
        let (oh, ow) = p1.out_hw();
        let mut y1 = vec![0; p1.out_len()];
        let mut y2 = vec![0; p2.out_len()];
        conv_u8s8_nchw(&p1, &mut y1);
        conv_u8s8_nhwc(&p2, &mut y2);
        assert_eq!(nhwc_to_nchw(&y2, n, geom.c_out, oh, ow), y1, "{geom:?}");
    }
}

#[test]
fn random_general_sweep() {
    let mut rng = XorShift::new(1);
    let mut runs = 0;
    for i in 0..400 {
        let t = random_case(&mut rng, i, false, 150_000);
        for k in available() {
            runs += t.test_all(k).len();
        }
    }
    assert!(runs >= 400);
}

#[test]
fn random_depthwise_sweep() {
    let mut rng = XorShift::new(2);
    let mut names = std::collections::BTreeSet::new();
    for i in 0..300 {
        let t = random_case(&mut rng, i, true, 400_000);
        for k in available() {
            names.extend(t.test_all(k));
        }
    }
    for want in ["dwconv_u8s8_3x3_scalar", "dwconv_u8s8_5x5_scalar"] {
        assert!(names.contains(want), "{want} never ran: {names:?}");
    }
    if available().iter().any(|k| k.isa == Isa::Avx2) {
        for want in [
            "dwconv_u8s8_3x3_avx2",
            "dwconv_u8s8_5x5_avx2",
            "dwconv_u8s8_3x3c32_avx2",
            "dwconv_u8s8_5x5c32_avx2",
        ] {
            assert!(names.contains(want), "{want} never ran: {names:?}");
        }
    }
}

/// Depthwise 3×3/5×5, stride 1/2, every channel count 1..=67 (full blocks and tails), every
/// output kind, small maps with all pad combinations.
#[test]
fn depthwise_channel_sweep() {
    let outs = out_kinds();
    let mut i = 0u64;
    for k in [3, 5] {
        for c in 1..=67 {
            for s in [1, 2] {
                i += 1;
                let p = (i % 3) as usize;
                let geom = ConvGeometry {
                    c_in: c,
                    c_out: c,
                    group: c,
                    kernel: [k, k],
                    strides: [s, s],
                    pads: [p, k / 2, (p + 1) % 3, k / 2 - (i % 2) as usize],
                    dilations: [1, 1],
                };
                let t = ConvTester::new(geom, 1 + (i % 2) as usize, 5 + (i % 4) as usize, 6)
                    .a_zp(ZPS[(i % 5) as usize])
                    .w_zp(if i.is_multiple_of(3) {
                        WZp::PerChannel
                    } else {
                        WZp::Zero
                    })
                    .bias(i % 2 == 1)
                    .out(outs[(i as usize) % outs.len()])
                    .data(DATA[(i as usize / 2) % DATA.len()])
                    .seed(i);
                for kset in available() {
                    assert!(t
                        .test_dw_all(kset)
                        .iter()
                        .all(|n| n.starts_with("dwconv_u8s8_")));
                    if i.is_multiple_of(8) {
                        t.test(kset, ConvAlgo::Im2col);
                    }
                }
            }
        }
    }
}

/// The `c32` depthwise kernels, preferred for 3×3/5×5 on AVX2 whatever the weights: direct
/// groups (small weights), split groups (full range, extremes next to each other at
/// activations 0/1/254/255), mixed blocks (pair-boundary weights), weight zero points that
/// push `w − w_zp` to ±255, awkward channel counts, strides, dilations, every output kind;
/// every other depthwise kernel of the set on the same cases.
#[test]
fn depthwise_c32_variants() {
    let outs = out_kinds();
    let mut i = 0u64;
    for k in [3, 5] {
        for c in [1, 3, 17, 31, 32, 33, 64, 95, 144, 255] {
            for data in [
                Data::Extremes,
                Data::RandomSmallWeights,
                Data::PairBoundary,
                Data::MinWeights,
                Data::MaxWeights,
                Data::Alternating,
                Data::Random,
            ] {
                i += 1;
                let w_zp = match i % 4 {
                    0 => WZp::PerTensor(-128),
                    1 => WZp::PerTensor(127),
                    2 => WZp::PerChannel,
                    _ => WZp::Zero,
                };
                let s = 1 + (i % 2) as usize;
                let geom = ConvGeometry {
                    c_in: c,
                    c_out: c,
                    group: c,
                    kernel: [k, k],
                    strides: [s, s],
                    pads: [k / 2, (i % 3) as usize, 1, k / 2],
                    dilations: if i.is_multiple_of(5) { [2, 1] } else { [1, 1] },
                };
                let t = ConvTester::new(geom, 1, 9 + (i % 3) as usize, 7)
                    .a_zp(ZPS[(i % 5) as usize])
                    .pack_a_zp(ZPS[((i / 5) % 5) as usize])
                    .w_zp(w_zp)
                    .bias(i.is_multiple_of(2))
                    .out(outs[(i as usize) % outs.len()])
                    .data(data)
                    .seed(i);
                for kset in available() {
                    let names = t.test_dw_all(kset);
                    if kset.isa == Isa::Avx2 {
                        assert_eq!(names[0], format!("dwconv_u8s8_{k}x{k}c32_avx2"));
                        assert!(names.contains(&format!("dwconv_u8s8_{k}x{k}_avx2").as_str()));
                    }
                }
            }
        }
    }
}

/// One or two channels, random weights, weight zero points that put `w − w_zp` at 128 or
/// −129 next to small partners: a block whose tap groups nearly all pass the `vpmaddubsw` pair
/// bounds, so a lone out-of-s8 value must still force the split path.
#[test]
fn depthwise_c32_few_channels() {
    let mut i = 0u64;
    for k in [3, 5] {
        for c in [1, 2] {
            for zp in [-1, -3, 1, 2] {
                for seed in 0..40 {
                    i += 1;
                    let geom = ConvGeometry {
                        c_in: c,
                        c_out: c,
                        group: c,
                        kernel: [k, k],
                        strides: [1, 1],
                        pads: [k / 2; 4],
                        dilations: [1, 1],
                    };
                    let data = [Data::Random, Data::Extremes, Data::RandomSmallWeights][seed % 3];
                    let t = ConvTester::new(geom, 1, 3, 4)
                        .a_zp(ZPS[(i % 5) as usize])
                        .w_zp(WZp::PerTensor(zp))
                        .out(Out::I32)
                        .data(data)
                        .seed(i);
                    for kset in available() {
                        t.test_dw_all(kset);
                    }
                }
            }
        }
    }
}

/// 1×1 stride-1: the no-copy path vs im2col vs the reference, incl. groups, batch 2, odd C.
#[test]
fn pointwise_direct() {
    let outs = out_kinds();
    let mut i = 0u64;
    for &c in &CHANNELS {
        for m in [1, 3, 16, 17, 40] {
            for group in [1, 3] {
                i += 1;
                let (c_in, c_out) = (c * group, m * group);
                let mut geom = ConvGeometry::new(c_in, c_out, 1, 1);
                geom.group = group;
                let t = ConvTester::new(geom, 2, 1 + (i % 7) as usize, 3 + (i % 5) as usize)
                    .a_zp(ZPS[(i % 5) as usize])
                    .pack_a_zp(if i.is_multiple_of(6) {
                        99
                    } else {
                        ZPS[(i % 5) as usize]
                    })
                    .w_zp(if i.is_multiple_of(4) {
                        WZp::PerChannel
                    } else {
                        WZp::Zero
                    })
                    .bias(i.is_multiple_of(2))
                    .out(outs[(i as usize) % outs.len()])
                    .data(DATA[(i as usize) % DATA.len()])
                    .seed(i);
                for k in available() {
                    t.test(k, ConvAlgo::Direct1x1);
                    t.test(k, ConvAlgo::Im2col);
                }
            }
        }
    }
}

/// Full-range adversarial data (a = 255, w = −128 / 127) through every path, zero points at
/// the extremes, and a run-time activation zp different from the packed one.
#[test]
fn adversarial_and_refold() {
    let geoms = [
        ConvGeometry {
            pads: [1, 1, 1, 1],
            ..ConvGeometry::new(64, 32, 3, 3)
        },
        ConvGeometry {
            group: 67,
            pads: [2, 2, 2, 2],
            ..ConvGeometry::new(67, 67, 5, 5)
        },
        ConvGeometry {
            group: 33,
            strides: [2, 2],
            pads: [0, 1, 1, 0],
            ..ConvGeometry::new(33, 33, 3, 3)
        },
        ConvGeometry::new(67, 19, 1, 1),
        ConvGeometry {
            group: 2,
            strides: [3, 2],
            dilations: [2, 2],
            pads: [3, 0, 1, 2],
            ..ConvGeometry::new(6, 4, 3, 3)
        },
    ];
    let mut i = 0;
    for geom in geoms {
        for data in [Data::MinWeights, Data::MaxWeights, Data::Alternating] {
            for (a_zp, pack_zp) in [(0, 0), (255, 255), (128, 0), (1, 200)] {
                for w_zp in [WZp::Zero, WZp::PerTensor(127), WZp::PerChannel] {
                    i += 1;
                    let t = ConvTester::new(geom, 1, 7, 9)
                        .a_zp(a_zp)
                        .pack_a_zp(pack_zp)
                        .w_zp(w_zp)
                        .bias(i % 2 == 0)
                        .out(out_kinds()[i % 8])
                        .data(data)
                        .seed(i as u64);
                    for k in available() {
                        t.test_all(k);
                    }
                }
            }
        }
    }
}

#[test]
fn algorithm_choice() {
    for k in available() {
        let dw = ConvGeometry {
            group: 32,
            pads: [1; 4],
            ..ConvGeometry::new(32, 32, 3, 3)
        };
        assert_eq!(PackedConv::algos(k, &dw)[0], ConvAlgo::Depthwise);
        let dw7 = ConvGeometry {
            group: 32,
            ..ConvGeometry::new(32, 32, 7, 7)
        };
        assert_eq!(PackedConv::algos(k, &dw7), vec![ConvAlgo::Im2col]);
        let pw = ConvGeometry::new(32, 64, 1, 1);
        assert_eq!(
            PackedConv::algos(k, &pw),
            vec![ConvAlgo::Direct1x1, ConvAlgo::Im2col]
        );
        let pw_s2 = ConvGeometry {
            strides: [2, 2],
            ..pw
        };
        assert_eq!(
            PackedConv::algos(k, &pw_s2),
            vec![ConvAlgo::Indirect, ConvAlgo::Im2col]
        );
        let c3 = ConvGeometry {
            pads: [1; 4],
            ..ConvGeometry::new(16, 32, 3, 3)
        };
        assert_eq!(
            PackedConv::algos(k, &c3),
            vec![ConvAlgo::Indirect, ConvAlgo::Im2col]
        );
        // K·W·C not a multiple of 4, or grouped, or dilated: im2col only.
        for g in [
            ConvGeometry::new(3, 8, 3, 3),
            ConvGeometry {
                group: 2,
                ..ConvGeometry::new(16, 16, 3, 3)
            },
            ConvGeometry {
                dilations: [2, 2],
                ..ConvGeometry::new(16, 16, 3, 3)
            },
        ] {
            assert_eq!(PackedConv::algos(k, &g), vec![ConvAlgo::Im2col], "{g:?}");
        }
        let w = vec![0i8; 64 * 32];
        let bad = PackedConv::with_algo(
            k,
            ConvAlgo::Depthwise,
            &pw,
            &ConvWeights {
                data: &w,
                zp: &[0],
                bias: None,
            },
            0,
        );
        assert!(bad.is_err());
    }
}

/// The indirect conv (no im2col) against the reference: 16–40 channels (the sizes where it
/// pays), kernels 1×1 to 5×3, strides 1–2, every pad pattern, batches, every output kind and
/// both activation zero-point edges. Where the kernel set reads indirect A (AVX2 with 7-bit
/// weights), the algorithm really is `Indirect` (not the im2col fallback); with full-range
/// weights it falls back to im2col and stays exact.
#[test]
fn indirect_conv_equals_the_reference() {
    let outs = out_kinds();
    let mut i = 0u64;
    let mut indirect_ran = 0;
    for (c, m) in [(16usize, 16usize), (4, 17), (32, 40), (20, 3)] {
        for (kh, kw) in [(3usize, 3usize), (1, 1), (5, 3), (2, 4)] {
            for s in [1usize, 2] {
                i += 1;
                let pads = [
                    (i % 3) as usize,
                    kw / 2,
                    (i % 2) as usize,
                    ((i + 1) % 3) as usize,
                ];
                let geom = ConvGeometry {
                    strides: [s, s],
                    pads,
                    ..ConvGeometry::new(c, m, kh, kw)
                };
                let data = if i % 4 == 3 {
                    Data::Random
                } else {
                    Data::RandomSmallWeights
                };
                let t = ConvTester::new(geom, 1 + (i % 3) as usize, 5 + (i % 5) as usize, 7)
                    .a_zp(ZPS[(i % 5) as usize])
                    .bias(i.is_multiple_of(2))
                    .out(outs[(i as usize) % outs.len()])
                    .data(data)
                    .seed(i);
                for k in available() {
                    t.test(k, ConvAlgo::Indirect);
                    let w: Vec<i8> = (0..m * c * kh * kw).map(|j| (j % 121) as i8 - 60).collect();
                    let packed = PackedConv::with_algo(
                        k,
                        ConvAlgo::Indirect,
                        &geom,
                        &ConvWeights {
                            data: &w,
                            zp: &[0],
                            bias: None,
                        },
                        3,
                    )
                    .unwrap();
                    if packed.algo() == ConvAlgo::Indirect {
                        indirect_ran += 1;
                    }
                    if k.isa == Isa::Avx2 {
                        assert_eq!(packed.algo(), ConvAlgo::Indirect, "{geom:?}");
                    }
                }
            }
        }
    }
    if available().iter().any(|k| k.isa == Isa::Avx2) {
        assert!(indirect_ran > 0);
    }
    // Images whose padded copies exceed the L2 budget one by one: one GEMM call per image.
    let big = ConvGeometry {
        pads: [1; 4],
        ..ConvGeometry::new(16, 3, 3, 3)
    };
    let t = ConvTester::new(big, 2, 116, 117)
        .a_zp(128)
        .bias(true)
        .data(Data::RandomSmallWeights)
        .seed(99);
    for k in available() {
        t.test(k, ConvAlgo::Indirect);
    }
}
