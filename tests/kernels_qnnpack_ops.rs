//! Average pooling, global average pooling, Add and LUT ops vs their references; indirection
//! reuse across inputs.

use onnxq::kernels::qnnpack::testing::{Data, Q8Tester, Scale};
use onnxq::kernels::qnnpack::{
    available_q8avgpool, available_q8dwconv, available_q8vadd, q8dwconv, q8gavgpool, DwIndirection,
    PackedQ8Dw, Q8Lut, Q8Output, Requant, Rounding,
};
use onnxq::kernels::reference::q8conv::{Nhwc, Window2d};
use onnxq::kernels::reference::q8dwconv::{q8dwconv as ref_dwconv, Q8DwWeights};
use onnxq::kernels::reference::q8lut::{q8lut, q8lut_table, unary};
use onnxq::kernels::reference::q8pool::{q8gavgpool as ref_gavgpool, Q8PoolQuant};
use onnxq::kernels::reference::quantize::quantize_one;
use onnxq::kernels::testing::XorShift;

const ZPS: [u8; 5] = [0, 1, 127, 128, 255];

#[test]
fn avgpool_sweep() {
    let mut i = 0u64;
    for uk in available_q8avgpool() {
        for k in [1, 2, 3, 5] {
            for size in [1, 2, 3, 5, 9] {
                for stride in [1, 2] {
                    for pad in [0, 1] {
                        if size + 2 * pad < k || pad >= k {
                            continue;
                        }
                        for ch in [1, 7, 16, 17, 33, 67] {
                            i += 1;
                            Q8Tester::new()
                                .window(Window2d::square(size, size, k, k, stride, pad))
                                .channels(ch)
                                .x_stride(ch + (i % 3) as usize)
                                .a_zp(ZPS[(i % 5) as usize])
                                .count_include_pad(i.is_multiple_of(2))
                                .rounding(if i.is_multiple_of(3) {
                                    Rounding::HalfEven
                                } else {
                                    Rounding::HalfAway
                                })
                                .data(if i.is_multiple_of(7) {
                                    Data::Max255x0
                                } else {
                                    Data::Random
                                })
                                .scale(if i.is_multiple_of(5) {
                                    Scale::Fixed(4.0)
                                } else {
                                    Scale::Auto { per_channel: false }
                                })
                                .seed(i)
                                .test_avgpool(uk);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn global_avgpool_matches_reference() {
    let mut rng = XorShift::new(3);
    for &(batch, pixels, ch) in &[(1, 1, 1), (2, 49, 67), (1, 3136, 64), (3, 7, 16)] {
        for &zp in &ZPS {
            let x: Vec<u8> = (0..batch * pixels * ch).map(|_| rng.u8()).collect();
            let xv = Nhwc {
                data: &x,
                channels: ch,
                pixel_stride: ch,
                zp,
            };
            let q = Q8PoolQuant {
                x_scale: 0.02,
                y_scale: 0.015 + 0.01 * rng.f32(),
                out: Q8Output::new(ZPS[(zp as usize) % 5]),
            };
            let mut want = vec![0u8; batch * ch];
            let mut got = vec![0u8; batch * ch];
            ref_gavgpool(&xv, batch, pixels, &q, &mut want, ch).unwrap();
            q8gavgpool(&xv, batch, pixels, &q, &mut got, ch).unwrap();
            assert_eq!(got, want, "batch {batch} pixels {pixels} ch {ch} zp {zp}");
        }
    }
}

#[test]
fn vadd_sweep() {
    let ratios = [
        (1.0, 1.0),
        (0.5, 0.25),
        (0.9, 1.7),
        (3.0, 0.01),
        (100.0, 200.0),
        (0.001, 0.002),
    ];
    let mut i = 0u64;
    for uk in available_q8vadd() {
        for n in [1, 2, 15, 16, 17, 31, 33, 255, 1000] {
            for &(ra, rb) in &ratios {
                for &za in &ZPS {
                    i += 1;
                    Q8Tester::new()
                        .mnk(1, n, 1)
                        .a_zp(za)
                        .out(Q8Output {
                            zp: ZPS[(i % 5) as usize],
                            qmin: if i.is_multiple_of(4) { 20 } else { 0 },
                            qmax: 255,
                            rounding: if i.is_multiple_of(2) {
                                Rounding::HalfEven
                            } else {
                                Rounding::HalfAway
                            },
                        })
                        .data(if i.is_multiple_of(6) {
                            Data::Alternating
                        } else {
                            Data::Random
                        })
                        .seed(i)
                        .test_vadd(uk, ra, rb);
                }
            }
        }
    }
}

/// The Add reference is within 1 LSB of the real-valued result.
#[test]
fn vadd_reference_error_bound() {
    use onnxq::kernels::reference::q8vadd::{q8add_one, Q8AddParams};
    let mut rng = XorShift::new(9);
    for _ in 0..300 {
        let (sa, sb, sy) = (
            0.001 + rng.f32() * 0.1,
            0.001 + rng.f32() * 0.1,
            0.002 + rng.f32() * 0.1,
        );
        let (za, zb, zy) = (rng.u8(), rng.u8(), rng.u8());
        let Ok(p) = Q8AddParams::new(sa, za, sb, zb, sy, Q8Output::new(zy)) else {
            continue;
        };
        for _ in 0..200 {
            let (a, b) = (rng.u8(), rng.u8());
            let real = (f64::from(a) - f64::from(za)) * f64::from(sa) / f64::from(sy)
                + (f64::from(b) - f64::from(zb)) * f64::from(sb) / f64::from(sy);
            let want = (real.round_ties_even() + f64::from(zy)).clamp(0.0, 255.0);
            let got = f64::from(q8add_one(a, b, &p));
            assert!((got - want).abs() <= 1.0, "{a} {b} {p:?}: {got} vs {want}");
        }
    }
}

#[test]
fn lut_is_exact_qdq() {
    type Unary = (&'static str, fn(f32) -> f32);
    let fs: [Unary; 6] = [
        ("sigmoid", unary::sigmoid),
        ("tanh", unary::tanh),
        ("hardswish", unary::hardswish),
        ("gelu", unary::gelu),
        ("gelu_tanh", unary::gelu_tanh),
        ("relu", unary::relu),
    ];
    let mut rng = XorShift::new(4);
    let x: Vec<u8> = (0..1001).map(|_| rng.u8()).collect();
    for (name, f) in fs {
        for &(xs, xz, ys, yz) in &[(0.05f32, 128u8, 1.0f32 / 255.0, 0u8), (0.1, 3, 0.02, 128)] {
            let lut = Q8Lut::new(xs, xz, ys, yz, f);
            for v in 0..=255u8 {
                let want = quantize_one(f((i32::from(v) - i32::from(xz)) as f32 * xs), ys, yz);
                assert_eq!(lut.table[usize::from(v)], want, "{name} {v}");
            }
            let mut got = vec![0u8; x.len()];
            let mut want = vec![0u8; x.len()];
            lut.apply(&x, &mut got);
            q8lut(&x, &q8lut_table(xs, xz, ys, yz, f), &mut want);
            assert_eq!(got, want, "{name}");
        }
    }
    // erf sanity against known values.
    for &(x, e) in &[
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.5, 0.999_999_256_901_627_7),
    ] {
        assert!((unary::erf(x) - e).abs() < 1e-12, "erf({x})");
        assert!((unary::erf(-x) + e).abs() < 1e-12);
    }
}

/// One indirection buffer, built once, serves different input buffers (base addresses) of
/// the same shape.
#[test]
fn indirection_is_reused_across_inputs() {
    let g = Window2d::square(11, 13, 3, 3, 2, 1);
    let ind = DwIndirection::new(&g);
    let ch = 24;
    let mut rng = XorShift::new(8);
    let w: Vec<u8> = (0..9 * ch).map(|_| rng.u8()).collect();
    let rq = [Requant::from_scale(0.003).unwrap()];
    let weights = Q8DwWeights {
        data: &w,
        channels: ch,
        zp: &[120],
        bias: None,
        requant: &rq,
    };
    let out = Q8Output::new(128);
    for uk in available_q8dwconv().filter(|u| u.taps == 9) {
        let packed = PackedQ8Dw::new(uk, &weights, 3, 3, 17);
        for _ in 0..3 {
            let x: Vec<u8> = (0..11 * 13 * ch).map(|_| rng.u8()).collect();
            let xv = Nhwc {
                data: &x,
                channels: ch,
                pixel_stride: ch,
                zp: 17,
            };
            let n = g.out_pixels() * ch;
            let (mut got, mut want) = (vec![0u8; n], vec![0u8; n]);
            q8dwconv(&xv, &ind, &packed, &out, &mut got, ch);
            ref_dwconv(&g, &xv, &weights, &out, &mut want, ch);
            assert_eq!(got, want, "{}", uk.name);
        }
    }
}
