//! Vectorised float transcendentals for the executor's float ops (LSTM gates, Erf, Softmax):
//! `exp`, logistic sigmoid, `tanh` and `erf` over slices.
//!
//! Why not libm: an LSTM step evaluates five transcendentals per hidden unit; libm's `expf` /
//! `tanhf` are scalar calls (~10–30 ns each) and were 90 % of the LSTM's time. Here `exp` is
//! the Cephes range reduction (`x = n·ln2 + r`, |r| ≤ ln2/2) with a degree-6 polynomial
//! (≤ 2 ulp), written without branches or calls so that it vectorises; sigmoid and tanh are
//! built on it. Accuracy (tested against libm): sigmoid ≤ 4e-7 relative, tanh ≤ 3e-7
//! absolute — the same order as ONNX Runtime's own (MLAS) rational approximations.
//!
//! Determinism: one portable body ([`exp_body`] etc., FMA through `f32::mul_add`, which is
//! always fused) is the scalar reference; the AVX2+FMA path compiles the very same body with
//! those features enabled, selected once per process. Both give the same bits (tested).

/// `e^x` for one value (the scalar reference of [`exp_slice`]).
#[inline(always)]
pub fn exp_one(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| ≤ 2^8.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Rounds to nearest integer (ties to even) for |v| < 2^22: the sum lands where the float
    // spacing is 1.
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23
                                     // Clamp so that 2^n stays a normal float (n ∈ [−126, 127]); e^x beyond is 0 / ∞-ish and
                                     // its consumers (sigmoid, tanh) saturate anyway. NaN passes through the clamp unchanged
                                     // (`max`/`min` on a NaN left operand return the NaN-less operand in Rust, so test first).
    let xc = if x.is_nan() { x } else { x.clamp(-87.0, 88.0) };
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = n.mul_add(-LN2_HI, xc);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let p = p.mul_add(r * r, r) + 1.0;
    // 2^n through the exponent bits: the low mantissa bits of `t` hold n (two's complement),
    // and the shift drops ROUND's own bits. n ∈ [−126, 127] after the clamp; for NaN the
    // scale is arbitrary and p is NaN anyway. (No float→int conversion: it would not
    // vectorise as cleanly.)
    let e = t.to_bits().wrapping_add(127) << 23;
    p * f32::from_bits(e)
}

/// Logistic sigmoid `1 / (1 + e^−x)` for one value.
#[inline(always)]
pub fn sigmoid_one(x: f32) -> f32 {
    1.0 / (1.0 + exp_one(-x))
}

/// `tanh(x)` for one value: `sign(x)·(1 − 2 / (e^{2|x|} + 1))`.
#[inline(always)]
pub fn tanh_one(x: f32) -> f32 {
    let e = exp_one(2.0 * x.abs());
    let t = 1.0 - 2.0 / (e + 1.0);
    t.copysign(x)
}

/// `erf(x)` for one value. `|x| ≤ 0.921875`: `x + x·q(x²)` (q of degree 5); above:
/// `1 − e^{−r(|x|)}` with r of degree 8 (r ≈ −ln erfc), saturating to ±1 from |x| = 3.925
/// (where erf rounds to 1 in f32). Coefficients: least-squares fits with max-error
/// reweighting on Chebyshev nodes (numpy, f64), rounded to f32; ≤ 2 ulp against f64 erf
/// (tested).
#[inline(always)]
pub fn erf_one(x: f32) -> f32 {
    const SPLIT: f32 = 0.921_875;
    let a = x.abs().min(3.925);
    let t = a * a;
    let mut q = -6.013_607e-4f32;
    q = q.mul_add(t, 4.998_05e-3);
    q = q.mul_add(t, -2.677_027_3e-2);
    q = q.mul_add(t, 1.128_192_8e-1);
    q = q.mul_add(t, -3.761_250_7e-1);
    q = q.mul_add(t, 1.283_791_5e-1);
    let small = q.mul_add(a, a);
    let mut r = -1.630_662_5e-6f32;
    r = r.mul_add(a, 4.589_382_3e-5);
    r = r.mul_add(a, -5.951_134e-4);
    r = r.mul_add(a, 4.750_206_6e-3);
    r = r.mul_add(a, -2.639_026e-2);
    r = r.mul_add(a, 1.100_182_9e-1);
    r = r.mul_add(a, 6.318_996_5e-1);
    r = r.mul_add(a, 1.130_185_7);
    r = r.mul_add(a, -3.072_146_2e-4);
    let big = 1.0 - exp_one(-r);
    let y = if a <= SPLIT { small } else { big };
    // `min` above turned a NaN into 3.925: give the NaN back.
    if x.is_nan() {
        x
    } else {
        y.copysign(x)
    }
}

#[inline(always)]
fn map_body(v: &mut [f32], f: impl Fn(f32) -> f32) {
    for x in v.iter_mut() {
        *x = f(*x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sigmoid_avx2(v: &mut [f32]) {
    map_body(v, sigmoid_one);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn tanh_avx2(v: &mut [f32]) {
    map_body(v, tanh_one);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn erf_avx2(v: &mut [f32]) {
    map_body(v, erf_one);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_avx2(v: &mut [f32]) {
    map_body(v, exp_one);
}

/// Whether the AVX2+FMA bodies may run (probed once per process; `ONNXQ_ISA=scalar` pins the
/// portable body, as for the integer kernels).
fn use_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| {
            let h = super::cpu::host();
            h.avx2 && h.fma && super::best().isa != super::Isa::Scalar
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Which body runs: the AVX2+FMA one if `simd` and the host has it, else the portable one.
macro_rules! dispatch {
    ($v:expr, $simd:expr, $avx2:ident, $one:ident) => {{
        #[cfg(target_arch = "x86_64")]
        if $simd && use_avx2() {
            // SAFETY: the host supports AVX2 and FMA (checked by use_avx2).
            unsafe { $avx2($v) };
            return;
        }
        let _ = $simd;
        map_body($v, $one);
    }};
}

/// `v[i] = e^{v[i]}` in place.
pub fn exp_slice(v: &mut [f32]) {
    exp_slice_with(v, true)
}

/// `v[i] = sigmoid(v[i])` in place.
pub fn sigmoid_slice(v: &mut [f32]) {
    sigmoid_slice_with(v, true)
}

/// `v[i] = tanh(v[i])` in place.
pub fn tanh_slice(v: &mut [f32]) {
    tanh_slice_with(v, true)
}

/// `v[i] = erf(v[i])` in place.
pub fn erf_slice(v: &mut [f32]) {
    erf_slice_with(v, true)
}

/// [`erf_slice`] with the SIMD path allowed or not (`false`: the scalar reference).
pub fn erf_slice_with(v: &mut [f32], simd: bool) {
    dispatch!(v, simd, erf_avx2, erf_one)
}

/// [`exp_slice`] with the SIMD path allowed or not (`false`: the scalar reference).
pub fn exp_slice_with(v: &mut [f32], simd: bool) {
    dispatch!(v, simd, exp_avx2, exp_one)
}

/// [`sigmoid_slice`] with the SIMD path allowed or not (`false`: the scalar reference).
pub fn sigmoid_slice_with(v: &mut [f32], simd: bool) {
    dispatch!(v, simd, sigmoid_avx2, sigmoid_one)
}

/// [`tanh_slice`] with the SIMD path allowed or not (`false`: the scalar reference).
pub fn tanh_slice_with(v: &mut [f32], simd: bool) {
    dispatch!(v, simd, tanh_avx2, tanh_one)
}

/// `Σ v` in a fixed order that vectorises: lane `l` (of 8) sums `v[l], v[l+8], …` over the
/// whole chunks of 8; the lanes are added as `((0+1)+(2+3))+((4+5)+(6+7))`; then the tail,
/// in order. A sequential fold waits on each add's latency (a 32-wide LayerNorm row: ~130
/// cycles per sum). Every row sum of the executor (ReduceSum/ReduceMean/ReduceSumSquare over
/// the last axis, the fused LayerNorm, Softmax) goes through it, so a fused composite and
/// its nodes give the same bits. Plain IEEE adds: the same bits on every ISA.
#[inline]
pub fn lane_sum(v: &[f32]) -> f32 {
    lane_sum_map(v, |x| x)
}

/// `Σ v²` in [`lane_sum`]'s order (each square rounded, as `Mul` then `ReduceSum` give).
#[inline]
pub fn lane_sum_sq(v: &[f32]) -> f32 {
    lane_sum_map(v, |x| x * x)
}

/// `Σ f(v)` in [`lane_sum`]'s order (each `f(x)` rounded as the unfused op writes it).
#[inline(always)]
pub(crate) fn lane_sum_map<T: Copy>(v: &[T], f: impl Fn(T) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for &x in tail {
        s += f(x);
    }
    s
}

/// The largest value of `v` (`-inf` when empty), NaNs skipped as `f32::max` does; in 8 lanes.
/// Max is exact in any order, so this equals a sequential fold (but for the sign of a zero).
#[inline]
pub fn lane_max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    acc.iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs over the whole useful range, the extremes, and the specials.
    fn inputs(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 40.0
            })
            .collect();
        let specials = [
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            100.0,
            -100.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        for (d, s) in v.iter_mut().zip(specials) {
            *d = s;
        }
        v
    }

    #[test]
    fn simd_equals_scalar_bit_for_bit() {
        for n in [1usize, 3, 17, 255, 1000] {
            let x = inputs(n, n as u64);
            type F = fn(&mut [f32], bool);
            for (name, f) in [
                ("exp", exp_slice_with as F),
                ("sigmoid", sigmoid_slice_with as F),
                ("tanh", tanh_slice_with as F),
                ("erf", erf_slice_with as F),
            ] {
                let (mut a, mut b) = (x.clone(), x.clone());
                f(&mut a, true);
                f(&mut b, false);
                for i in 0..n {
                    assert_eq!(a[i].to_bits(), b[i].to_bits(), "{name}({}) n={n}", x[i]);
                }
            }
        }
    }

    #[test]
    fn close_to_libm() {
        let mut x = inputs(200_000, 7);
        x.extend((-2000..2000).map(|i| i as f32 * 1e-3));
        for &v in &x {
            let s = sigmoid_one(v);
            let want = 1.0 / (1.0 + (-(v as f64)).exp());
            assert!(
                ((s as f64) - want).abs() <= 4e-7 * want + 1e-37,
                "sigmoid({v}) = {s}, want {want}"
            );
            let t = tanh_one(v);
            let want = (v as f64).tanh();
            assert!(
                ((t as f64) - want).abs() <= 3e-7,
                "tanh({v}) = {t}, want {want}"
            );
            if v.abs() < 80.0 {
                let e = exp_one(v);
                let want = (v as f64).exp();
                assert!(
                    ((e as f64) - want).abs() <= 3e-7 * want,
                    "exp({v}) = {e}, want {want}"
                );
            }
        }
        for &v in &x {
            let e = erf_one(v);
            let want = libm::erf(v as f64);
            // 2 ulp of the result (and of the smallest normal near 0).
            let ulp = (want.abs() as f32).max(1e-30);
            let ulp = f32::from_bits(ulp.to_bits() + 1) - ulp;
            assert!(
                ((e as f64) - want).abs() <= 2.0 * ulp as f64,
                "erf({v}) = {e}, want {want}"
            );
        }
        assert!(erf_one(f32::NAN).is_nan());
        assert_eq!(erf_one(f32::INFINITY), 1.0);
        assert_eq!(erf_one(-10.0), -1.0);
        assert!(sigmoid_one(f32::NAN).is_nan() && tanh_one(f32::NAN).is_nan());
        assert_eq!(sigmoid_one(f32::INFINITY), 1.0);
        assert!(sigmoid_one(f32::NEG_INFINITY) < 1e-37);
        assert_eq!(tanh_one(f32::NEG_INFINITY), -1.0);
    }

    #[test]
    fn lane_sums_follow_their_documented_order() {
        for n in [0usize, 1, 3, 8, 17, 32, 255] {
            // Finite values (`inputs` holds the specials).
            let mut seed = n as u64 + 1;
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 40.0
                })
                .collect();
            let mut acc = [0f32; 8];
            let full = n / 8 * 8;
            for (i, &x) in v[..full].iter().enumerate() {
                acc[i % 8] += x;
            }
            let mut want =
                ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            for &x in &v[full..] {
                want += x;
            }
            assert_eq!(lane_sum(&v).to_bits(), want.to_bits(), "n {n}");
            let sq: Vec<f32> = v.iter().map(|x| x * x).collect();
            assert_eq!(lane_sum_sq(&v).to_bits(), lane_sum(&sq).to_bits(), "n {n}");
            let m = v.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            assert_eq!(lane_max(&v), m, "n {n}");
            // Within the usual bound of a float sum: n·ε·Σ|x|.
            let exact: f64 = v.iter().map(|&x| x as f64).sum();
            let mag: f64 = v.iter().map(|&x| (x as f64).abs()).sum();
            let bound = n as f64 * f32::EPSILON as f64 * mag;
            assert!((lane_sum(&v) as f64 - exact).abs() <= bound, "n {n}");
        }
    }
}
