//! Every qnnpack-style GEMM micro-kernel vs the scalar reference, bit-exact (shared tester).

use onnxq::kernels::qnnpack::testing::{Data, Q8Tester, Scale, WZp};
use onnxq::kernels::qnnpack::{available_q8gemm, Q8GemmUkernel, Q8Output, Rounding};

const SIZES: [usize; 12] = [1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 33, 255];
const ZPS: [u8; 5] = [0, 1, 127, 128, 255];

fn kernels() -> Vec<&'static Q8GemmUkernel> {
    let ks: Vec<_> = available_q8gemm().collect();
    assert!(!ks.is_empty());
    ks
}

#[test]
fn registry_lists_scalar_and_simd() {
    let names: Vec<_> = kernels().iter().map(|k| k.name).collect();
    assert!(names.contains(&"q8gemm_4x4c2_scalar"));
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        assert!(names.contains(&"q8gemm_6x16c2_avx2"), "{names:?}");
        assert!(names.contains(&"q8gemm_6x16c4_avx2"), "{names:?}");
        if std::is_x86_feature_detected!("avxvnni") {
            assert!(names.contains(&"q8gemm_6x16c4_avxvnni"), "{names:?}");
        }
        assert!(names.contains(&"q8gemm_4x16c2_avx2"), "{names:?}");
        assert!(names.contains(&"q8gemm_4x4c2_sse2"), "{names:?}");
    }
}

#[test]
fn k_sweep() {
    for uk in kernels() {
        let (mr, nr) = (usize::from(uk.mr), usize::from(uk.nr));
        for (i, &k) in SIZES.iter().enumerate() {
            Q8Tester::new()
                .mnk(mr, nr, k)
                .a_zp(ZPS[i % 5])
                .w_zp(WZp::PerTensor(ZPS[(i + 2) % 5]))
                .seed(i as u64)
                .test_gemm(uk);
        }
    }
}

#[test]
fn mnk_sweep() {
    for uk in kernels() {
        let mut i = 0u64;
        for &m in &SIZES {
            for &n in &SIZES {
                for &k in &[1usize, 3, 8, 17, 33] {
                    i += 1;
                    Q8Tester::new()
                        .mnk(m, n, k)
                        .a_zp(ZPS[(i % 5) as usize])
                        .w_zp(if i.is_multiple_of(2) {
                            WZp::PerChannel
                        } else {
                            WZp::PerTensor(ZPS[(i / 5 % 5) as usize])
                        })
                        .bias(i.is_multiple_of(3))
                        .scale(Scale::Auto {
                            per_channel: i % 4 < 2,
                        })
                        .rounding(if i % 2 == 1 {
                            Rounding::HalfEven
                        } else {
                            Rounding::HalfAway
                        })
                        .seed(i)
                        .test_gemm(uk);
                }
            }
        }
    }
}

#[test]
fn odd_strides_and_large_k() {
    for uk in kernels() {
        for (i, &(m, n, k)) in [(7, 33, 255), (17, 15, 100), (33, 31, 31), (4, 17, 1000)]
            .iter()
            .enumerate()
        {
            Q8Tester::new()
                .mnk(m, n, k)
                .lda(k + 3 + i)
                .ldc(n + 5 + 2 * i)
                .a_zp(ZPS[i % 5])
                .w_zp(WZp::PerChannel)
                .bias(true)
                .scale(Scale::Auto { per_channel: true })
                .seed(77 + i as u64)
                .test_gemm(uk);
        }
    }
}

#[test]
fn adversarial_data_zero_points_and_scales() {
    let datas = [
        Data::Max255x0,
        Data::Max255x255,
        Data::Alternating,
        Data::NearZeroPoints,
        Data::Random,
    ];
    let scales = [
        Scale::Fixed(0.5),
        Scale::Fixed(1.0),
        Scale::Fixed(3.0),
        Scale::Fixed(1.0 / 65025.0),
        Scale::Fixed(0.999_999_9),
        Scale::Auto { per_channel: true },
    ];
    for uk in kernels() {
        let mut i = 0u64;
        for &data in &datas {
            for &za in &ZPS {
                for &zw in &ZPS {
                    i += 1;
                    let scale = scales[(i % scales.len() as u64) as usize];
                    for rounding in [Rounding::HalfAway, Rounding::HalfEven] {
                        Q8Tester::new()
                            .mnk(5, 19, 17 + (i % 3) as usize)
                            .a_zp(za)
                            .w_zp(WZp::PerTensor(zw))
                            .data(data)
                            .scale(scale)
                            .rounding(rounding)
                            .bias(i.is_multiple_of(2))
                            .seed(i)
                            .test_gemm(uk);
                    }
                }
            }
        }
    }
}

#[test]
fn output_clamps() {
    for uk in kernels() {
        for (i, &(zp, qmin, qmax)) in [
            (100u8, 100u8, 255u8),
            (0, 0, 6),
            (128, 20, 240),
            (255, 0, 255),
        ]
        .iter()
        .enumerate()
        {
            Q8Tester::new()
                .mnk(9, 21, 40)
                .a_zp(3)
                .w_zp(WZp::PerChannel)
                .out(Q8Output {
                    zp,
                    qmin,
                    qmax,
                    rounding: Rounding::HalfAway,
                })
                .seed(i as u64)
                .test_gemm(uk);
        }
    }
}
