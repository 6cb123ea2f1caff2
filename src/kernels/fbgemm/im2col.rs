//! im2col for NHWC input: one GEMM row per output pixel, `K = KH·KW·Cg` bytes, column
//! `k = (ky·KW + kx)·Cg + ci` (tap-major, channels contiguous: each tap is one slice copy of a
//! pixel's group channels). Taps in the padding are filled with the activation zero point, so
//! they contribute exactly zero to `Σ(a − a_zp)(w − w_zp)` (and the row sums used for
//! asymmetric weights stay consistent).

use crate::kernels::reference::ConvGeometry;

/// Writes GEMM rows `m0..m0 + rows` (row `m` = output pixel `(m / ow, m % ow)`) of group `g`
/// of one NHWC image (`img`: `h·w·C` bytes) into `dst` (`rows·K` bytes, row stride `K`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn im2col_rows(
    geom: &ConvGeometry,
    img: &[u8],
    h: usize,
    w: usize,
    ow: usize,
    g: usize,
    m0: usize,
    rows: usize,
    a_zp: u8,
    dst: &mut [u8],
) {
    let [kh, kw] = geom.kernel;
    let [sh, sw] = geom.strides;
    let [dh, dw] = geom.dilations;
    let (pt, pl) = (geom.pads[0], geom.pads[1]);
    let (c, cg) = (geom.c_in, geom.cg_in());
    let k = kh * kw * cg;
    debug_assert!(dst.len() >= rows * k);
    for (r, row) in dst[..rows * k].chunks_exact_mut(k).enumerate() {
        let m = m0 + r;
        let (oy, ox) = (m / ow, m % ow);
        for ky in 0..kh {
            let seg = &mut row[ky * kw * cg..(ky + 1) * kw * cg];
            let iy = (oy * sh + ky * dh).wrapping_sub(pt);
            if iy >= h {
                seg.fill(a_zp);
                continue;
            }
            let line = &img[iy * w * c..(iy + 1) * w * c];
            // One group, no dilation, window inside the row: the KW taps are one contiguous
            // run of the input row.
            let ix0 = (ox * sw).wrapping_sub(pl);
            if cg == c && dw == 1 && ix0 < w && ix0 + kw <= w {
                seg.copy_from_slice(&line[ix0 * c..(ix0 + kw) * c]);
                continue;
            }
            for (kx, tap) in seg.chunks_exact_mut(cg).enumerate() {
                let ix = (ox * sw + kx * dw).wrapping_sub(pl);
                if ix >= w {
                    tap.fill(a_zp);
                } else {
                    let src = ix * c + g * cg;
                    tap.copy_from_slice(&line[src..src + cg]);
                }
            }
        }
    }
}
