//! Float GEMM for the executor's float ops: `C = A·B`, row-major, with every product
//! accumulated by a fused multiply-add in increasing `k` order.
//!
//! Why FMA and that order: it is how ONNX Runtime's MLAS SGEMM computes each output, so float
//! results feeding a quantizer round the same way (a QDQ graph's float Conv/MatMul followed by
//! QuantizeLinear is bit-identical to ONNX Runtime's instead of differing at rounding ties).
//! `f32::mul_add` is exact everywhere (a libm call without hardware FMA); the x86 path compiles
//! the same loop with FMA enabled, selected once per process.

/// `c = a·b` for `a: m×k`, `b: k×n`, `c: m×n` (overwritten), all row-major and dense.
///
/// # Panics
/// If a slice is shorter than its shape.
pub fn sgemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "sgemm: short slice"
    );
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static FMA: OnceLock<bool> = OnceLock::new();
        if *FMA.get_or_init(|| is_x86_feature_detected!("fma") && is_x86_feature_detected!("avx2"))
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            unsafe { sgemm_fma(m, n, k, a, b, c) };
            return;
        }
    }
    sgemm_body(m, n, k, a, b, c);
}

#[inline(always)]
fn sgemm_body(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    c[..m * n].fill(0.0);
    // i-k-j: the inner loop is a contiguous multiply-add the compiler vectorises; each c[i][j]
    // still sees its k terms in increasing order.
    for i in 0..m {
        let crow = &mut c[i * n..(i + 1) * n];
        for p in 0..k {
            let av = a[i * k + p];
            let brow = &b[p * n..(p + 1) * n];
            for (cv, &bv) in crow.iter_mut().zip(brow) {
                *cv = av.mul_add(bv, *cv);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sgemm_fma(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    sgemm_body(m, n, k, a, b, c);
}

/// One depthwise-conv plane: `o[oy, ox] = Σ_{ky, kx} w[ky, kx] · x[iy, ix]` (taps outside
/// the input are 0), accumulated by fused multiply-adds in `(ky, kx)` order from 0 — the same
/// arithmetic as an im2col + [`sgemm`] convolution, without the copy.
///
/// # Panics
/// If a slice is shorter than its shape.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_plane(
    x: &[f32],
    w: &[f32],
    h: usize,
    wd: usize,
    oh: usize,
    ow: usize,
    g: &crate::kernels::reference::ConvGeometry,
    o: &mut [f32],
) {
    let [kh, kw] = g.kernel;
    assert!(
        x.len() >= h * wd && w.len() >= kh * kw && o.len() >= oh * ow,
        "depthwise: short slice"
    );
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static FMA: OnceLock<bool> = OnceLock::new();
        if *FMA.get_or_init(|| is_x86_feature_detected!("fma") && is_x86_feature_detected!("avx2"))
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            unsafe { depthwise_fma(x, w, h, wd, oh, ow, g, o) };
            return;
        }
    }
    depthwise_body(x, w, h, wd, oh, ow, g, o);
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn depthwise_body(
    x: &[f32],
    w: &[f32],
    h: usize,
    wd: usize,
    oh: usize,
    ow: usize,
    g: &crate::kernels::reference::ConvGeometry,
    o: &mut [f32],
) {
    let [kh, kw] = g.kernel;
    for oy in 0..oh {
        for ox in 0..ow {
            let mut acc = 0f32;
            for ky in 0..kh {
                let iy = (oy * g.strides[0] + ky * g.dilations[0]) as isize - g.pads[0] as isize;
                for kx in 0..kw {
                    let ix =
                        (ox * g.strides[1] + kx * g.dilations[1]) as isize - g.pads[1] as isize;
                    let v = if iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < wd {
                        x[iy as usize * wd + ix as usize]
                    } else {
                        0.0
                    };
                    acc = w[ky * kw + kx].mul_add(v, acc);
                }
            }
            o[oy * ow + ox] = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
fn depthwise_fma(
    x: &[f32],
    w: &[f32],
    h: usize,
    wd: usize,
    oh: usize,
    ow: usize,
    g: &crate::kernels::reference::ConvGeometry,
    o: &mut [f32],
) {
    depthwise_body(x, w, h, wd, oh, ow, g, o);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_fused_multiply_add_in_k_order() {
        let (m, n, k) = (3, 19, 37);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 113) as f32 / 17.0 - 3.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 97) as f32 / 13.0 - 4.0)
            .collect();
        let mut c = vec![0f32; m * n];
        sgemm(m, n, k, &a, &b, &mut c);
        for i in 0..m {
            for j in 0..n {
                let want = (0..k).fold(0f32, |acc, p| a[i * k + p].mul_add(b[p * n + j], acc));
                assert_eq!(c[i * n + j].to_bits(), want.to_bits());
            }
        }
    }
}
