//! Reference u8 → u8 unary ops as 256-entry lookup tables (QNNPACK `x8lut`): the table is the
//! exact QDQ semantics, `table[v] = QuantizeLinear(f(DequantizeLinear(v)))` in f32 (round half
//! to even, saturate), so applying it is bit-exact with the unfused graph.

use super::quantize::quantize_one;

/// Builds the table of `f` for the given input/output quantization.
pub fn q8lut_table(
    x_scale: f32,
    x_zp: u8,
    y_scale: f32,
    y_zp: u8,
    f: impl Fn(f32) -> f32,
) -> [u8; 256] {
    let mut t = [0u8; 256];
    for (v, e) in t.iter_mut().enumerate() {
        let x = (v as i32 - i32::from(x_zp)) as f32 * x_scale;
        *e = quantize_one(f(x), y_scale, y_zp);
    }
    t
}

/// `y[i] = table[x[i]]`.
pub fn q8lut(x: &[u8], table: &[u8; 256], y: &mut [u8]) {
    assert_eq!(x.len(), y.len());
    for (y, &x) in y.iter_mut().zip(x) {
        *y = table[usize::from(x)];
    }
}

/// Scalar f32 definitions of the usual unary ops (ONNX formulas).
pub mod unary {
    pub fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }

    pub fn tanh(x: f32) -> f32 {
        x.tanh()
    }

    /// ONNX HardSigmoid with `alpha = 1/6, beta = 1/2` times x.
    pub fn hardswish(x: f32) -> f32 {
        x * (x / 6.0 + 0.5).clamp(0.0, 1.0)
    }

    pub fn relu(x: f32) -> f32 {
        x.max(0.0)
    }

    /// Exact GELU, `x/2 · (1 + erf(x/√2))`, erf evaluated in f64 (error < 1e-15).
    pub fn gelu(x: f32) -> f32 {
        let x = f64::from(x);
        (0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))) as f32
    }

    /// GELU, tanh approximation (`approximate = "tanh"`).
    pub fn gelu_tanh(x: f32) -> f32 {
        let c = (2.0 / std::f32::consts::PI).sqrt();
        0.5 * x * (1.0 + (c * (x + 0.044_715 * x * x * x)).tanh())
    }

    /// erf by its Maclaurin series for |x| < 3 and the continued fraction of erfc beyond
    /// (both converge to f64 precision there).
    pub fn erf(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 3.0 {
            // erf(x) = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))
            let mut term = a;
            let mut sum = a;
            let x2 = a * a;
            let mut n = 0.0;
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -x2 / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = exp(−a²)/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + 2/(a + …)))))
            let mut f = a;
            for k in (1..60).rev() {
                f = a + f64::from(k) / 2.0 / f;
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
        };
        r.copysign(x)
    }
}
