//! QuantizeLinear / DequantizeLinear / requantization references: ties, saturation, per axis.

use onnxq::kernels::reference::quantize::quantize_one;
use onnxq::kernels::reference::{dequantize_linear, quantize_linear, requantize};

#[test]
fn quantize_ties_round_half_to_even() {
    let x = [0.5f32, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 126.5, 127.5];
    let mut y = [0u8; 9];
    quantize_linear(&x, &[9], None, &[1.0], &[128u8], &mut y);
    assert_eq!(y, [128, 130, 130, 132, 128, 126, 126, 254, 255]);
    let mut y = [0i8; 9];
    quantize_linear(&x, &[9], None, &[1.0], &[0i8], &mut y);
    assert_eq!(y, [0, 2, 2, 4, 0, -2, -2, 126, 127]);
    // x / scale exactly .5 with a non-unit scale: 0.75 / 0.5 = 1.5 → 2, 1.25 / 0.5 = 2.5 → 2.
    let mut y = [0u8; 2];
    quantize_linear(&[0.75, 1.25], &[2], None, &[0.5], &[0u8], &mut y);
    assert_eq!(y, [2, 2]);
}

#[test]
fn quantize_saturates() {
    let x = [
        1000.0f32,
        -1000.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e30,
        f32::NAN,
    ];
    let mut y = [0u8; 6];
    quantize_linear(&x, &[6], None, &[1.0], &[10u8], &mut y);
    assert_eq!(y, [255, 0, 255, 0, 255, 10]);
    let mut y = [0i8; 6];
    quantize_linear(&x, &[6], None, &[1.0], &[-3i8], &mut y);
    assert_eq!(y, [127, -128, 127, -128, 127, -3]);
    // Saturation happens after adding the zero point: 250 + 10 → 255, −5 + 10 → 5.
    let mut y = [0u8; 2];
    quantize_linear(&[250.0, -5.0], &[2], None, &[1.0], &[10u8], &mut y);
    assert_eq!(y, [255, 5]);
}

/// ONNX divides by the scale; multiplying by the reciprocal rounds differently for some
/// inputs. Find such an input and check that the reference divides.
#[test]
fn quantize_divides_not_reciprocal() {
    let scale = 0.1f32;
    let recip = 1.0 / scale;
    let mut found = 0;
    for i in 0..200_000u32 {
        let x = i as f32 * 0.000_25;
        let by_div = (x / scale).round_ties_even();
        let by_mul = (x * recip).round_ties_even();
        if by_div != by_mul && by_div.abs() < 100.0 {
            found += 1;
            let q: i8 = quantize_one(x, scale, 0i8);
            assert_eq!(i32::from(q), by_div as i32, "x = {x}");
        }
    }
    assert!(found > 0, "no input distinguishes x/s from x·(1/s)");
}

#[test]
fn quantize_per_axis() {
    // shape [2, 3], axis 1: columns use scales 1, 2, 4 and zero points 0, 10, 20.
    let x = [1.0f32, 2.0, 4.0, -1.0, -2.0, 10.0];
    let mut y = [0u8; 6];
    quantize_linear(
        &x,
        &[2, 3],
        Some(1),
        &[1.0, 2.0, 4.0],
        &[0u8, 10, 20],
        &mut y,
    );
    assert_eq!(y, [1, 11, 21, 0, 9, 22]); // 10/4 = 2.5 → 2 (+20)
                                          // axis 0 of [2, 3]: rows.
    let mut y = [0i8; 6];
    quantize_linear(&x, &[2, 3], Some(0), &[1.0, 0.5], &[0i8, 1], &mut y);
    assert_eq!(y, [1, 2, 4, -1, -3, 21]);
}

#[test]
fn dequantize_per_tensor_and_axis() {
    let x = [0u8, 128, 255, 10];
    let mut y = [0f32; 4];
    dequantize_linear(&x, &[4], None, &[0.5], &[128u8], &mut y);
    assert_eq!(y, [-64.0, 0.0, 63.5, -59.0]);
    let x = [-128i8, 127, 0, 5];
    let mut y = [0f32; 4];
    dequantize_linear(&x, &[2, 2], Some(1), &[1.0, 0.25], &[0i8, 1], &mut y);
    assert_eq!(y, [-128.0, 31.5, 0.0, 1.0]);
}

#[test]
fn round_trip_exact_on_grid() {
    for zp in [0u8, 1, 127, 128, 255] {
        let q: Vec<u8> = (0..=255).collect();
        let mut f = vec![0f32; 256];
        dequantize_linear(&q, &[256], None, &[0.037], &[zp], &mut f);
        let mut back = vec![0u8; 256];
        quantize_linear(&f, &[256], None, &[0.037], &[zp], &mut back);
        assert_eq!(back, q, "zp {zp}");
    }
}

#[test]
fn requantize_definition() {
    // Ties to even after the f32 multiply.
    assert_eq!(requantize(5, 0.5, 0, -128, 127), 2);
    assert_eq!(requantize(7, 0.5, 0, -128, 127), 4);
    assert_eq!(requantize(-5, 0.5, 0, -128, 127), -2);
    assert_eq!(requantize(-7, 0.5, 10, -128, 127), 6);
    // Clamp (and fused Relu: qmin = zp).
    assert_eq!(requantize(-1000, 1.0, 128, 0, 255), 0);
    assert_eq!(requantize(-1000, 1.0, 128, 128, 255), 128);
    assert_eq!(requantize(1000, 1.0, 128, 0, 255), 255);
    assert_eq!(requantize(i32::MAX, 1e9, 0, -128, 127), 127);
    assert_eq!(requantize(i32::MIN, 1e9, 0, -128, 127), -128);
    // Non-finite multipliers: NaN → qmin, as vmaxps(NaN, lo) = lo.
    assert_eq!(requantize(0, f32::INFINITY, 3, 0, 255), 0);
    // The defined path converts acc to f32 first (RNE): 2^24 + 1 → 2^24, so ·2^-25 gives an
    // exact tie 0.5 → 0, where exact arithmetic (0.500 000 03) would give 1.
    assert_eq!(
        requantize((1 << 24) + 1, 1.0 / (1u64 << 25) as f32, 0, -128, 127),
        0
    );
}
