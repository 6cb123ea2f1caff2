//! Indirection-buffer convolution and depthwise 3×3 / 5×5 kernels vs the direct-loop
//! reference, bit-exact (shared tester).

use onnxq::kernels::qnnpack::testing::{Data, Q8Tester, Scale, WZp};
use onnxq::kernels::qnnpack::{available_q8dwconv, available_q8gemm, Rounding};
use onnxq::kernels::reference::q8conv::Window2d;

const ZPS: [u8; 5] = [0, 1, 127, 128, 255];

fn window(h: usize, w: usize, k: usize, s: usize, p: usize) -> Window2d {
    Window2d::square(h, w, k, k, s, p)
}

#[test]
fn conv_shapes() {
    let mut i = 0u64;
    for uk in available_q8gemm() {
        for &(h, w, k, s, p) in &[
            (1, 1, 1, 1, 0),
            (5, 7, 3, 1, 1),
            (9, 9, 3, 2, 1),
            (6, 5, 2, 2, 0),
            (4, 4, 5, 1, 2),
            (8, 3, 1, 2, 0),
            (3, 3, 3, 1, 2),
        ] {
            for &(ic, oc) in &[(1, 1), (3, 5), (8, 16), (17, 33), (67, 7)] {
                i += 1;
                Q8Tester::new()
                    .window(window(h, w, k, s, p))
                    .channels(ic)
                    .out_channels(oc)
                    .a_zp(ZPS[(i % 5) as usize])
                    .w_zp(if i.is_multiple_of(2) {
                        WZp::PerChannel
                    } else {
                        WZp::PerTensor(ZPS[(i / 5 % 5) as usize])
                    })
                    .bias(!i.is_multiple_of(3))
                    .scale(Scale::Auto {
                        per_channel: i % 2 == 1,
                    })
                    .seed(i)
                    .test_conv(uk);
            }
        }
    }
}

#[test]
fn conv_strides_batch_dilation_asymmetric_padding() {
    for (i, uk) in available_q8gemm().enumerate() {
        let g = Window2d {
            batch: 2,
            in_h: 7,
            in_w: 6,
            kernel_h: 3,
            kernel_w: 2,
            stride_h: 2,
            stride_w: 1,
            dilation_h: 2,
            dilation_w: 3,
            pad_top: 2,
            pad_left: 0,
            pad_bottom: 1,
            pad_right: 3,
        };
        Q8Tester::new()
            .window(g)
            .channels(13)
            .out_channels(19)
            .x_stride(13 + 5)
            .y_stride(19 + 3)
            .a_zp(200)
            .w_zp(WZp::PerChannel)
            .bias(true)
            .seed(i as u64)
            .test_conv(uk);
        // Adversarial data at full range.
        for data in [Data::Max255x0, Data::Max255x255, Data::Alternating] {
            Q8Tester::new()
                .window(g)
                .channels(9)
                .out_channels(17)
                .a_zp(0)
                .w_zp(WZp::PerTensor(255))
                .data(data)
                .seed(5)
                .test_conv(uk);
        }
    }
}

#[test]
fn dwconv_sweep() {
    let mut i = 0u64;
    for uk in available_q8dwconv() {
        let k = if uk.taps == 9 { 3 } else { 5 };
        for size in 1..=9 {
            for stride in [1, 2] {
                for pad in [0, 1, 2] {
                    if size + 2 * pad < k {
                        continue;
                    }
                    for ch in [1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 64, 67] {
                        i += 1;
                        if !i.is_multiple_of(3) && ch > 17 && size > 4 {
                            continue; // keep the sweep fast; large cases sampled
                        }
                        Q8Tester::new()
                            .window(Window2d::square(
                                size,
                                size + i as usize % 3,
                                k,
                                k,
                                stride,
                                pad,
                            ))
                            .channels(ch)
                            .a_zp(ZPS[(i % 5) as usize])
                            .w_zp(if i.is_multiple_of(2) {
                                WZp::PerChannel
                            } else {
                                WZp::PerTensor(ZPS[(i / 5 % 5) as usize])
                            })
                            .bias(i % 3 != 1)
                            .scale(Scale::Auto {
                                per_channel: i % 4 < 2,
                            })
                            .rounding(if i.is_multiple_of(2) {
                                Rounding::HalfEven
                            } else {
                                Rounding::HalfAway
                            })
                            .seed(i)
                            .test_dwconv(uk);
                    }
                }
            }
        }
    }
}

#[test]
fn dwconv_strides_dilation_and_adversarial() {
    let mut i = 0u64;
    for uk in available_q8dwconv() {
        let k = if uk.taps == 9 { 3 } else { 5 };
        let g = Window2d {
            batch: 2,
            in_h: 9,
            in_w: 8,
            kernel_h: k,
            kernel_w: k,
            stride_h: 2,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 2,
            pad_top: 1,
            pad_left: 3,
            pad_bottom: 2,
            pad_right: 4,
        };
        for ch in [5, 16, 19, 40, 97] {
            for data in [
                Data::Random,
                Data::Max255x0,
                Data::Max255x255,
                Data::Alternating,
                Data::NearZeroPoints,
                Data::Extremes,
            ] {
                for &za in &ZPS {
                    i += 1;
                    Q8Tester::new()
                        .window(g)
                        .channels(ch)
                        .x_stride(ch + (i % 4) as usize)
                        .y_stride(ch + 1 + (i % 3) as usize)
                        .a_zp(za)
                        .w_zp(WZp::PerTensor(ZPS[(i % 5) as usize]))
                        .data(data)
                        .scale(if i.is_multiple_of(3) {
                            Scale::Fixed(0.5)
                        } else if i % 3 == 1 {
                            Scale::Fixed(2.0)
                        } else {
                            Scale::Auto { per_channel: true }
                        })
                        .bias(true)
                        .seed(i)
                        .test_dwconv(uk);
                }
            }
        }
    }
}
