//! Every available() micro-kernel and kernel set vs the scalar reference, bit-exact.

use onnxq::kernels::testing::{Checked, Data, GemmTester, Out, WZp};
use onnxq::kernels::{available, available_gemm_u8s8, QGemmUkernel, WeightRange};

const SIZES: [usize; 12] = [1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 33, 64];
const ZPS: [u8; 5] = [0, 1, 127, 128, 255];

fn kernels() -> Vec<&'static QGemmUkernel> {
    let ks: Vec<_> = available_gemm_u8s8().collect();
    assert!(!ks.is_empty());
    ks
}

/// Requantize stages cycled through by the sweeps.
fn out_kinds() -> Vec<Out> {
    vec![
        Out::I32,
        Out::u8(128, false),
        Out::u8(3, true),
        Out::i8(-5, true),
        Out::i8(0, false),
        // Fused Relu on u8 (qmin = zp) and a Clip-like window.
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

/// Single-tile sweep: m in 1..=MR, n in 1..=NR, small k around the k-group size.
#[test]
fn ukernel_single_tile_sweep() {
    for uk in kernels() {
        let (mr, nr) = (usize::from(uk.mr), usize::from(uk.nr));
        let mut i = 0u64;
        for m in 1..=mr {
            for n in 1..=nr {
                for k in [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33] {
                    i += 1;
                    let outs = out_kinds();
                    let t = GemmTester::new(m, n, k)
                        .data(Data::RandomSmallWeights)
                        .a_zp(ZPS[(i % 5) as usize])
                        .w_zp(if i.is_multiple_of(4) {
                            WZp::PerChannel
                        } else {
                            WZp::Zero
                        })
                        .bias(i.is_multiple_of(2))
                        .lda(k + (i % 3) as usize)
                        .ldc(n + (i % 2) as usize * 3)
                        .out(outs[(i as usize) % outs.len()])
                        .seed(i);
                    assert_eq!(t.test_ukernel(uk), Checked::Passed, "{}", uk.name);
                }
            }
        }
    }
}

/// Driver sweep over the size grid, cycling zero points, output stages and strides.
#[test]
fn driver_size_grid() {
    let outs = out_kinds();
    for uk in kernels() {
        let mut i = 0usize;
        for &m in &SIZES {
            for &n in &SIZES {
                for &k in &SIZES {
                    i += 1;
                    let t = GemmTester::new(m, n, k)
                        .data(Data::RandomSmallWeights)
                        .a_zp(ZPS[i % 5])
                        .w_zp(match i % 3 {
                            0 => WZp::Zero,
                            1 => WZp::PerTensor(-3),
                            _ => WZp::PerChannel,
                        })
                        .trans_b(i % 2 == 1)
                        .bias(i % 4 < 2)
                        .lda(if i.is_multiple_of(2) { k } else { k + 5 })
                        .ldc(if i.is_multiple_of(3) { n } else { n + 3 })
                        .out(outs[i % outs.len()])
                        .seed(i as u64);
                    assert_eq!(t.test_ukernel(uk), Checked::Passed);
                }
            }
        }
    }
}

/// Large and odd shapes (K blocks, several N blocks / strips, edge tiles on both sides).
#[test]
fn driver_large_shapes() {
    let shapes = [
        (255, 257, 256),
        (256, 64, 255),
        (3, 256, 257),
        (257, 17, 33),
        (64, 255, 1),
        (31, 33, 600),
        (7, 300, 2000),
    ];
    for uk in kernels() {
        for (i, &(m, n, k)) in shapes.iter().enumerate() {
            for (j, out) in [
                Out::I32,
                Out::u8(17, true),
                Out::F32 {
                    per_channel: true,
                    bias: true,
                },
            ]
            .into_iter()
            .enumerate()
            {
                let t = GemmTester::new(m, n, k)
                    .data(Data::RandomSmallWeights)
                    .a_zp(ZPS[(i + j) % 5])
                    .w_zp(if j == 1 { WZp::PerChannel } else { WZp::Zero })
                    .trans_b(j == 2)
                    .bias(true)
                    .lda(k + 1)
                    .ldc(n + 2)
                    .out(out)
                    .seed((i * 3 + j) as u64);
                assert_eq!(t.test_ukernel(uk), Checked::Passed);
            }
        }
    }
}

/// Full-range random weights: every kernel is exact or refuses them at pack time.
#[test]
fn full_range_random_exact_or_refused() {
    for uk in kernels() {
        for (i, &(m, n, k)) in [(7, 33, 64), (16, 16, 255), (1, 1, 4), (33, 70, 31)]
            .iter()
            .enumerate()
        {
            for &a_zp in &ZPS {
                let t = GemmTester::new(m, n, k)
                    .data(Data::Random)
                    .a_zp(a_zp)
                    .w_zp(WZp::PerChannel)
                    .bias(true)
                    .out(Out::u8(128, true))
                    .seed(i as u64 + u64::from(a_zp));
                let r = t.test_ukernel(uk);
                if uk.weights == WeightRange::Full {
                    assert_eq!(r, Checked::Passed, "{}", uk.name);
                }
            }
        }
    }
}

/// Adversarial saturating data for `vpmaddubsw`: A = 255 with B = −128 / 127 / alternating.
/// Each kernel set must pick a kernel that is exact; kernels with `PairSum128` must refuse.
#[test]
fn adversarial_full_range() {
    for set in available() {
        for data in [Data::MinWeights, Data::MaxWeights, Data::Alternating] {
            for &(m, n, k) in &[
                (1, 1, 2),
                (6, 16, 4),
                (7, 17, 5),
                (13, 40, 256),
                (64, 64, 513),
            ] {
                for out in [Out::I32, Out::u8(0, false), Out::i8(0, true)] {
                    let t = GemmTester::new(m, n, k).data(data).a_zp(0).out(out);
                    t.test_kernels(set);
                    for uk in set.gemm_u8s8 {
                        let r = t.test_ukernel(uk);
                        match uk.weights {
                            WeightRange::Full => assert_eq!(r, Checked::Passed),
                            WeightRange::PairSum128 => {
                                assert_eq!(r, Checked::Rejected, "{}", uk.name)
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The exact edge of `PairSum128`: A = 255 against pairs summing to ±128 is admitted and
/// exact (|pair sum| = 32 640 ≤ 32 767).
#[test]
fn pair_boundary_admitted_and_exact() {
    for uk in kernels() {
        for &(m, n, k) in &[(6, 16, 12), (5, 37, 64), (9, 3, 255)] {
            let t = GemmTester::new(m, n, k)
                .data(Data::PairBoundary)
                .out(Out::I32);
            assert_eq!(t.test_ukernel(uk), Checked::Passed, "{}", uk.name);
            let t = t.trans_b(true).out(Out::i8(0, false));
            assert_eq!(t.test_ukernel(uk), Checked::Passed, "{}", uk.name);
        }
    }
}

/// Exact .5 ties in the requantization: multiplier 0.5 and odd accumulators must round half
/// to even (and the f32 path must be reproduced exactly).
#[test]
fn requant_ties_and_saturation() {
    for uk in kernels() {
        for (i, mult) in [0.5f32, 1.5, 1.0, 100.0, 1e-6].into_iter().enumerate() {
            for signed in [false, true] {
                let zp = if signed { 0 } else { 128 };
                let (qmin, qmax) = if signed { (-128, 127) } else { (0, 255) };
                let t = GemmTester::new(5, 19, 3)
                    .data(Data::RandomSmallWeights)
                    .a_zp(ZPS[i])
                    .out(Out::Quant {
                        signed,
                        zp,
                        qmin,
                        qmax,
                        per_channel: false,
                        mult: Some(mult),
                    })
                    .seed(i as u64);
                assert_eq!(t.test_ukernel(uk), Checked::Passed);
            }
        }
    }
}

/// Calling with an activation zero point different from the packed one refolds the bias.
#[test]
fn runtime_a_zp_refold() {
    for uk in kernels() {
        for &(pack_zp, call_zp) in &[(0u8, 128u8), (128, 0), (255, 1)] {
            let t = GemmTester::new(9, 21, 37)
                .data(Data::RandomSmallWeights)
                .a_zp(call_zp)
                .pack_a_zp(pack_zp)
                .w_zp(WZp::PerChannel)
                .bias(true)
                .out(Out::u8(7, true));
            assert_eq!(t.test_ukernel(uk), Checked::Passed);
        }
    }
}

/// Kernel sets pick an exact kernel for any weights (random full range, all zero points).
#[test]
fn kernel_sets_random() {
    for set in available() {
        for (i, &(m, n, k)) in [(1, 1, 1), (6, 16, 8), (17, 33, 31), (100, 70, 300)]
            .iter()
            .enumerate()
        {
            for &a_zp in &ZPS {
                let outs = out_kinds();
                GemmTester::new(m, n, k)
                    .data(Data::Random)
                    .a_zp(a_zp)
                    .w_zp(if i % 2 == 0 {
                        WZp::PerTensor(5)
                    } else {
                        WZp::PerChannel
                    })
                    .bias(true)
                    .lda(k + 7)
                    .ldc(n + 1)
                    .out(outs[(i + usize::from(a_zp)) % outs.len()])
                    .seed(u64::from(a_zp))
                    .test_kernels(set);
            }
        }
    }
}
