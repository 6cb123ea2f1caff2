//! Fixed-point requantization: scale conversion, and dense error bounds against the exact
//! real-valued product (i128 rational arithmetic in `round_exact`).
//!
//! - f32 scale, `HalfEven` ("precise"): **equal** to round-half-even(acc·scale).
//! - f32 scale, `HalfAway`: equal to round-half-away(acc·scale); differs from half-even only on
//!   exact ties, by 1.
//! - f64 scale (31-bit rounded multiplier): within 1 LSB of round-half-even(acc·scale) for all
//!   non-saturated outputs.

use onnxq::kernels::reference::requant_fixedpoint::{
    requantize_fixedpoint, requantize_u8, round_exact, Q8Output, Requant, RequantError, Rounding,
};
use onnxq::kernels::testing::XorShift;

fn accs(rng: &mut XorShift) -> Vec<i32> {
    let mut v: Vec<i32> = (-3000..=3000).collect();
    v.extend([
        i32::MIN,
        i32::MIN + 1,
        i32::MAX,
        i32::MAX - 1,
        1 << 24,
        -(1 << 24),
        65025 * 255,
    ]);
    for _ in 0..4000 {
        v.push(rng.next_u64() as i32);
        v.push((rng.next_u64() as i32) >> (rng.next_u64() % 31));
    }
    v
}

fn scales(rng: &mut XorShift) -> Vec<f32> {
    let mut s = vec![
        0.5,
        0.25,
        1.0 / 3.0,
        0.999_999_94,
        1.0,
        1.5,
        3.0,
        255.0,
        65535.0,
        (2f32).powi(-32),
        (2f32).powi(-31) * 1.5,
        1e-5,
        0.007_843_137,
        f32::from_bits(0x3F7F_FFFF),
    ];
    for _ in 0..150 {
        let e = rng.range_i32(-33, 15);
        s.push((1.0 + rng.f32()) * (e as f32).exp2());
    }
    s
}

#[test]
fn conversion_is_exact_for_f32_and_in_range() {
    let mut rng = XorShift::new(1);
    for s in scales(&mut rng) {
        let rq = Requant::from_scale(s).unwrap();
        if s >= (2f32).powi(-32) {
            assert_eq!(rq.scale(), f64::from(s), "{s}");
            assert!((1 << 30..1 << 31).contains(&rq.multiplier));
        } else {
            assert_eq!(rq, Requant::ZERO);
        }
        assert!((15..=62).contains(&rq.shift));
        assert_eq!(rq.limit, if s >= 1.0 { 512 } else { i32::MAX });
        let r64 = Requant::from_scale_f64(f64::from(s)).unwrap();
        assert_eq!(r64, rq, "f64 path agrees on f32-representable scales");
    }
    assert!(matches!(
        Requant::from_scale(0.0),
        Err(RequantError::NotPositiveFinite(_))
    ));
    assert!(matches!(
        Requant::from_scale(-1.0),
        Err(RequantError::NotPositiveFinite(_))
    ));
    assert!(matches!(
        Requant::from_scale(f32::NAN),
        Err(RequantError::NotPositiveFinite(_))
    ));
    assert!(matches!(
        Requant::from_scale(65536.0),
        Err(RequantError::TooLarge(_))
    ));
    assert_eq!(Requant::from_scale(1e-30).unwrap(), Requant::ZERO);
    // Rounding up to 2^31 renormalises.
    let r = Requant::from_scale_f64(1.0 - 1e-12).unwrap();
    assert_eq!((r.multiplier, r.shift), (1 << 30, 30));
}

#[test]
fn f32_scales_are_exact_single_rounding() {
    let mut rng = XorShift::new(2);
    let accs = accs(&mut rng);
    let mut ties = 0u64;
    for s in scales(&mut rng) {
        let rq = Requant::from_scale(s).unwrap();
        for &a in &accs {
            let even = round_exact(a, f64::from(s), Rounding::HalfEven);
            let away = round_exact(a, f64::from(s), Rounding::HalfAway);
            ties += u64::from(even != away);
            // Saturated outputs only need to saturate: compare after the u8 stage.
            for zp in [0u8, 128, 255] {
                let out = |rounding| Q8Output {
                    zp,
                    qmin: 0,
                    qmax: 255,
                    rounding,
                };
                let sat = |x: i64| (x + i64::from(zp)).clamp(0, 255) as u8;
                assert_eq!(
                    requantize_u8(a, rq, &out(Rounding::HalfEven)),
                    sat(even),
                    "precise: acc {a} scale {s}"
                );
                assert_eq!(
                    requantize_u8(a, rq, &out(Rounding::HalfAway)),
                    sat(away),
                    "half-away: acc {a} scale {s}"
                );
            }
            // Unsaturated: the signed q itself.
            if even.abs() < 1 << 20 && s < 1.0 {
                assert_eq!(
                    i64::from(requantize_fixedpoint(a, rq, Rounding::HalfEven)),
                    even
                );
                assert_eq!(
                    i64::from(requantize_fixedpoint(a, rq, Rounding::HalfAway)),
                    away
                );
            }
        }
    }
    assert!(ties > 100, "the sweep must hit exact ties ({ties})");
}

#[test]
fn f64_scales_within_one_lsb() {
    let mut rng = XorShift::new(3);
    let accs = accs(&mut rng);
    let mut max_err = 0i64;
    let mut n = 0u64;
    for _ in 0..300 {
        // Products of three f32 scales, as a·w/y in f64: not f32-representable.
        let s = f64::from(0.5 + rng.f32())
            * f64::from(0.5 + rng.f32())
            * (f64::from(rng.range_i32(-30, 14))).exp2()
            / 3.0;
        let rq = Requant::from_scale_f64(s).unwrap();
        if s >= (2f64).powi(-32) {
            assert!((rq.scale() - s).abs() <= s * (2f64).powi(-31), "{s}");
        } else {
            assert_eq!(rq, Requant::ZERO);
        }
        for &a in &accs {
            let want = round_exact(a, s, Rounding::HalfEven);
            if want.abs() > 600 {
                continue; // saturated for every zero point
            }
            for rounding in [Rounding::HalfEven, Rounding::HalfAway] {
                let got = i64::from(requantize_fixedpoint(a, rq, rounding));
                max_err = max_err.max((got - want).abs());
                n += 1;
            }
        }
    }
    assert!(max_err <= 1, "max error {max_err} LSB");
    assert!(n > 100_000, "{n}");
    println!("f64 scales: {n} comparisons, max |error| = {max_err} LSB");
}

#[test]
fn ties_and_signs() {
    let rq = Requant::from_scale(0.5).unwrap();
    for (a, away, even) in [
        (1, 1, 0),
        (3, 2, 2),
        (5, 3, 2),
        (-1, -1, 0),
        (-3, -2, -2),
        (-5, -3, -2),
    ] {
        assert_eq!(
            requantize_fixedpoint(a, rq, Rounding::HalfAway),
            away,
            "{a}"
        );
        assert_eq!(
            requantize_fixedpoint(a, rq, Rounding::HalfEven),
            even,
            "{a}"
        );
    }
    // Scale ≥ 1 saturates through the limit without overflow.
    let big = Requant::from_scale(40000.0).unwrap();
    let out = Q8Output::new(128);
    assert_eq!(requantize_u8(i32::MAX, big, &out), 255);
    assert_eq!(requantize_u8(i32::MIN, big, &out), 0);
    assert_eq!(requantize_u8(0, big, &out), 128);
    assert_eq!(
        requantize_u8(-1, Requant::from_scale(100.0).unwrap(), &out),
        28
    );
}
