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
mod sgemm_6x16_avx2fma;

/// Register-tiled product on AVX2 + FMA: 16-column panels of `b` (packed contiguous, the last
/// one zero-padded, unless a single row block reads them once), each swept by 6-row tiles of
/// the micro-kernel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sgemm_fma(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    use sgemm_6x16_avx2fma::{tile, MR, NR};
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    let mut panel = vec![];
    for j0 in (0..n).step_by(NR) {
        let cols = (n - j0).min(NR);
        let (bp, ldb): (&[f32], usize) = if cols == NR && m <= MR {
            (&b[j0..], n)
        } else {
            panel.clear();
            panel.resize(k * NR, 0.0);
            for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
                dst[..cols].copy_from_slice(&b[p * n + j0..p * n + j0 + cols]);
            }
            (&panel, NR)
        };
        for i0 in (0..m).step_by(MR) {
            let rows = (m - i0).min(MR);
            tile(
                rows,
                cols,
                k,
                &a[i0 * k..],
                k,
                bp,
                ldb,
                &mut c[i0 * n + j0..],
                n,
            );
        }
    }
}

/// One depthwise-conv plane: `o[oy, ox] = Σ_{ky, kx} w[ky, kx] · x[iy, ix]`. The plane is
/// first copied into `scratch` with its zero padding, so that a tap is a plain load (no
/// bounds logic), and each output accumulates its taps in a register (eight outputs of a row
/// per AVX2 register at stride 1). Per output value the arithmetic is the im2col + [`sgemm`]
/// convolution's: fused multiply-adds over all taps in `(ky, kx)` order from 0, padding taps
/// adding `w·0`.
///
/// # Panics
/// If a slice is shorter than its shape.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_plane_padded(
    x: &[f32],
    w: &[f32],
    h: usize,
    wd: usize,
    oh: usize,
    ow: usize,
    g: &crate::kernels::reference::ConvGeometry,
    o: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let [kh, kw] = g.kernel;
    assert!(
        x.len() >= h * wd && w.len() >= kh * kw && o.len() >= oh * ow,
        "depthwise: short slice"
    );
    let [pt, pl, pb, pr] = g.pads;
    let (hp, wp) = (h + pt + pb, wd + pl + pr);
    scratch.clear();
    scratch.resize(hp * wp, 0.0);
    for y in 0..h {
        scratch[(y + pt) * wp + pl..][..wd].copy_from_slice(&x[y * wd..][..wd]);
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static FMA: OnceLock<bool> = OnceLock::new();
        if *FMA.get_or_init(|| is_x86_feature_detected!("fma") && is_x86_feature_detected!("avx2"))
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            unsafe { depthwise_padded_fma(scratch, w, wp, oh, ow, g, o) };
            return;
        }
    }
    depthwise_padded_body(scratch, w, wp, oh, ow, g, o);
}

/// The portable body: one output at a time, its taps accumulated in a register.
fn depthwise_padded_body(
    xp: &[f32],
    w: &[f32],
    wp: usize,
    oh: usize,
    ow: usize,
    g: &crate::kernels::reference::ConvGeometry,
    o: &mut [f32],
) {
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.strides;
    let [dh, dw] = g.dilations;
    for oy in 0..oh {
        for ox in 0..ow {
            let mut acc = 0f32;
            for ky in 0..kh {
                let row = &xp[(oy * sh + ky * dh) * wp..][..wp];
                for kx in 0..kw {
                    acc = w[ky * kw + kx].mul_add(row[ox * sw + kx * dw], acc);
                }
            }
            o[oy * ow + ox] = acc;
        }
    }
}

/// AVX2: eight outputs of a row per register (stride 1), the taps accumulated in it; the
/// rest of the row, and strided rows, by the portable body's per-output loop.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn depthwise_padded_fma(
    xp: &[f32],
    w: &[f32],
    wp: usize,
    oh: usize,
    ow: usize,
    g: &crate::kernels::reference::ConvGeometry,
    o: &mut [f32],
) {
    use std::arch::x86_64::*;
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.strides;
    let [dh, dw] = g.dilations;
    let vec_end = if sw == 1 { ow / 8 * 8 } else { 0 };
    // The furthest vector load ends at the last row's last tap, x0 + 8 ≤ vec_end.
    assert!(
        vec_end == 0
            || oh == 0
            || (oh - 1) * sh * wp + (kh - 1) * dh * wp + (kw - 1) * dw + vec_end <= xp.len(),
        "depthwise: padded plane too short"
    );
    assert!(o.len() >= oh * ow, "depthwise: short output");
    for oy in 0..oh {
        let base = oy * sh * wp;
        for x0 in (0..vec_end).step_by(8) {
            // SAFETY: every load reads xp[base + ky·dh·wp + kx·dw + x0 ..][..8], in bounds
            // by the assertion above; AVX2 and FMA are enabled on this function.
            let acc = unsafe {
                let mut acc = _mm256_setzero_ps();
                for ky in 0..kh {
                    let row = xp.as_ptr().add(base + ky * dh * wp + x0);
                    for kx in 0..kw {
                        let v = _mm256_loadu_ps(row.add(kx * dw));
                        acc = _mm256_fmadd_ps(_mm256_set1_ps(w[ky * kw + kx]), v, acc);
                    }
                }
                acc
            };
            // SAFETY: o[oy·ow + x0 .. + 8] is in bounds (x0 + 8 ≤ ow, o holds oh·ow).
            unsafe { _mm256_storeu_ps(o[oy * ow + x0..][..8].as_mut_ptr(), acc) };
        }
        for ox in vec_end..ow {
            let mut acc = 0f32;
            for ky in 0..kh {
                let row = &xp[base + ky * dh * wp..][..wp];
                for kx in 0..kw {
                    acc = w[ky * kw + kx].mul_add(row[ox * sw + kx * dw], acc);
                }
            }
            o[oy * ow + ox] = acc;
        }
    }
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
    fn tiled_kernel_equals_the_portable_loop_on_awkward_shapes() {
        let mut seed = 11u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 9.0
        };
        let sizes = [1, 2, 3, 5, 6, 7, 12, 16, 17, 33, 64, 255];
        for (case, &m) in sizes.iter().enumerate() {
            for &n in &sizes {
                let k = [1, 3, 9, 17, 64, 255][(case + n) % 6];
                let a: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
                let b: Vec<f32> = (0..k * n).map(|_| rnd()).collect();
                let mut c = vec![f32::NAN; m * n];
                sgemm(m, n, k, &a, &b, &mut c);
                let mut want = vec![0f32; m * n];
                sgemm_body(m, n, k, &a, &b, &mut want);
                assert!(
                    c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "m {m} n {n} k {k}"
                );
            }
        }
        // k = 0 gives zeros; special values propagate as in the loop.
        let mut c = vec![1f32; 6];
        sgemm(2, 3, 0, &[], &[], &mut c);
        assert!(c.iter().all(|&v| v == 0.0));
        let a = [f32::INFINITY, -0.0, f32::NAN, 1.0];
        let b = [0.0f32, -1.0, 2.0, f32::NEG_INFINITY];
        let (mut c, mut want) = (vec![0f32; 4], vec![0f32; 4]);
        sgemm(2, 2, 2, &a, &b, &mut c);
        sgemm_body(2, 2, 2, &a, &b, &mut want);
        assert!(c
            .iter()
            .zip(&want)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())));
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
        let mut scratch = vec![];
        for case in 0..72 {
            let (k, s, d, p) = (
                [1, 3, 5][case % 3],
                1 + case % 2,
                1 + (case / 2) % 2,
                case % 3,
            );
            // Widths giving output rows of 1 to 255 (the AVX2 path takes 8 at a time).
            let extra = [0, 1, 2, 7, 16, 30, 254][case % 7];
            let (h, wd) = ((k - 1) * d + 1 + case % 5, (k - 1) * d + 1 + extra);
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
            depthwise_plane_padded(&x, &w, h, wd, oh, ow, &g, &mut o, &mut scratch);
            // The portable body on the same padded plane.
            let mut portable = vec![0f32; oh * ow];
            let wp = wd + 2 * p;
            depthwise_padded_body(&scratch, &w, wp, oh, ow, &g, &mut portable);
            assert!(
                o.iter()
                    .zip(&portable)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "case {case}: the portable body differs"
            );
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
