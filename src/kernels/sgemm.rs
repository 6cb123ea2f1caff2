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
    let o = &mut o[..oh * ow];
    o.fill(0.0);
    // Taps outermost, each applied to the span of output columns it reaches inside the input:
    // every output still receives its taps in (ky, kx) order, and a skipped padding tap would
    // have added `w·0 = ±0` to a sum that is never −0, so the result is the same as the plain
    // per-output loop, but the inner loop is a contiguous (vectorisable) multiply-add.
    let sw = g.strides[1] as isize;
    for ky in 0..kh {
        for kx in 0..kw {
            let wv = w[ky * kw + kx];
            let off = (kx * g.dilations[1]) as isize - g.pads[1] as isize;
            let lo = if off >= 0 {
                0
            } else {
                ((-off + sw - 1) / sw) as usize
            }
            .min(ow);
            let hi = if (wd as isize) <= off {
                0
            } else {
                (((wd as isize - off + sw - 1) / sw) as usize).min(ow)
            }
            .max(lo);
            if hi == lo {
                // This tap reads only padding for every output column (an input
                // narrower than the kernel's reach): nothing to add.
                continue;
            }
            for oy in 0..oh {
                let iy = (oy * g.strides[0] + ky * g.dilations[0]) as isize - g.pads[0] as isize;
                if iy < 0 || iy as usize >= h {
                    continue;
                }
                let src = &x[iy as usize * wd..(iy as usize + 1) * wd];
                let dst = &mut o[oy * ow + lo..oy * ow + hi];
                if sw == 1 {
                    let s0 = (lo as isize + off) as usize;
                    for (d, &v) in dst.iter_mut().zip(&src[s0..s0 + (hi - lo)]) {
                        *d = wv.mul_add(v, *d);
                    }
                } else {
                    for (j, d) in dst.iter_mut().enumerate() {
                        let v = src[((lo + j) as isize * sw + off) as usize];
                        *d = wv.mul_add(v, *d);
                    }
                }
            }
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

    #[test]
    fn depthwise_equals_the_per_output_loop() {
        use crate::kernels::reference::ConvGeometry;
        let mut seed = 3u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 7.0
        };
        for case in 0..60 {
            let (k, s, d, p) = (
                [1, 3, 5][case % 3],
                1 + case % 2,
                1 + (case / 2) % 2,
                case % 3,
            );
            let (h, wd) = ((k - 1) * d + 1 + case % 5, (k - 1) * d + 2 + case % 4);
            let g = ConvGeometry {
                c_in: 1,
                c_out: 1,
                group: 1,
                kernel: [k, k],
                strides: [s, s],
                pads: [p, p, p, p],
                dilations: [d, d],
            };
            let (oh, ow) = g.out_hw(h, wd).unwrap();
            let x: Vec<f32> = (0..h * wd).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..k * k).map(|_| rnd()).collect();
            let mut o = vec![0f32; oh * ow];
            depthwise_plane(&x, &w, h, wd, oh, ow, &g, &mut o);
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0f32;
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * s + ky * d) as isize - p as isize;
                            let ix = (ox * s + kx * d) as isize - p as isize;
                            let inside =
                                iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd;
                            let v = if inside {
                                x[iy as usize * wd + ix as usize]
                            } else {
                                0.0
                            };
                            acc = w[ky * k + kx].mul_add(v, acc);
                        }
                    }
                    assert_eq!(o[oy * ow + ox].to_bits(), acc.to_bits(), "case {case}");
                }
            }
        }
    }
}
