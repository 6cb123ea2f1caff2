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
    padded: &mut Vec<u8>,
) {
    let [kh, kw] = geom.kernel;
    let [sh, sw] = geom.strides;
    let [dh, dw] = geom.dilations;
    let (pt, pl) = (geom.pads[0], geom.pads[1]);
    let (c, cg) = (geom.c_in, geom.cg_in());
    let k = kh * kw * cg;
    debug_assert!(dst.len() >= rows * k);
    if rows == 0 {
        return;
    }
    // The output pixel of the first row; later rows step (oy, ox) instead of dividing.
    let (mut oy, mut ox) = (m0 / ow, m0 % ow);
    if cg == c && dw == 1 {
        // One group, no horizontal dilation: copy the part of the image the windows cover
        // into a buffer with the padding filled in, once; then every row is KH runs of KW·C
        // bytes with no border cases (per-tap border handling cost more than the GEMM on
        // small images).
        let last_oy = oy + (rows + ox - 1) / ow;
        let (ph, pw) = (last_oy * sh + (kh - 1) * dh + 1, (ow - 1) * sw + kw);
        let y0 = oy * sh;
        let need = (ph - y0) * pw * c;
        if padded.len() < need {
            padded.resize(need, 0);
        }
        let padded = &mut padded[..need];
        pad_image(img, h, w, c, pt, pl, y0, pw, a_zp, padded);
        let run = kw * c;
        for row in dst[..rows * k].chunks_exact_mut(k) {
            for (ky, seg) in row.chunks_exact_mut(run).enumerate() {
                let src = ((oy * sh + ky * dh - y0) * pw + ox * sw) * c;
                copy_short(seg, &padded[src..src + run]);
            }
            ox += 1;
            if ox == ow {
                ox = 0;
                oy += 1;
            }
        }
        return;
    }
    for row in dst[..rows * k].chunks_exact_mut(k) {
        for ky in 0..kh {
            let seg = &mut row[ky * kw * cg..(ky + 1) * kw * cg];
            let iy = (oy * sh + ky * dh).wrapping_sub(pt);
            if iy >= h {
                fill_short(seg, a_zp);
                continue;
            }
            let line = &img[iy * w * c..(iy + 1) * w * c];
            for (kx, tap) in seg.chunks_exact_mut(cg).enumerate() {
                let ix = (ox * sw + kx * dw).wrapping_sub(pl);
                if ix >= w {
                    fill_short(tap, a_zp);
                } else {
                    let src = ix * c + g * cg;
                    copy_short(tap, &line[src..src + cg]);
                }
            }
        }
        ox += 1;
        if ox == ow {
            ox = 0;
            oy += 1;
        }
    }
}

/// Copies the padded rows `y0..` of an NHWC image (`h×w×c`, top and left pads `pt`, `pl`) into
/// `dst` (whole rows of `pw` pixels; as many rows as `dst` holds): padded pixel `(y, x)` is
/// input pixel `(y − pt, x − pl)`, or `zp` outside the input.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pad_image(
    img: &[u8],
    h: usize,
    w: usize,
    c: usize,
    pt: usize,
    pl: usize,
    y0: usize,
    pw: usize,
    zp: u8,
    dst: &mut [u8],
) {
    for (py, prow) in dst.chunks_exact_mut(pw * c).enumerate() {
        let iy = (y0 + py).wrapping_sub(pt);
        if iy >= h {
            fill_short(prow, zp);
            continue;
        }
        // Input columns land at padded columns pl..; the rest is padding.
        let lo = pl.min(pw);
        let hi = (pl + w).min(pw).max(lo);
        fill_short(&mut prow[..lo * c], zp);
        copy_short(
            &mut prow[lo * c..hi * c],
            &img[(iy * w) * c..][..(hi - lo) * c],
        );
        fill_short(&mut prow[hi * c..], zp);
    }
}

/// `dst.fill(v)` for short runs: 16-byte stores inline, the last one overlapping.
#[inline(always)]
fn fill_short(dst: &mut [u8], v: u8) {
    const V: usize = 16;
    let n = dst.len();
    if n < V {
        dst.iter_mut().for_each(|d| *d = v);
        return;
    }
    let splat = [v; V];
    let mut i = 0;
    while i + V <= n {
        dst[i..i + V].copy_from_slice(&splat);
        i += V;
    }
    if i < n {
        dst[n - V..].copy_from_slice(&splat);
    }
}

/// `dst.copy_from_slice(src)` for the short runs of im2col (a few taps of a few channels):
/// 16-byte moves inline, the last one overlapping, instead of a call into `memcpy` per run
/// (which cost as much as the GEMM on convs with 16 channels).
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    const V: usize = 16;
    let n = dst.len();
    assert_eq!(n, src.len(), "copy_short: lengths differ");
    if n < V {
        dst.copy_from_slice(src);
        return;
    }
    let mut i = 0;
    while i + V <= n {
        dst[i..i + V].copy_from_slice(&src[i..i + V]);
        i += V;
    }
    if i < n {
        dst[n - V..].copy_from_slice(&src[n - V..]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_short_copies_every_length() {
        for n in 0..100usize {
            let src: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let mut dst = vec![0u8; n];
            super::copy_short(&mut dst, &src);
            assert_eq!(dst, src, "length {n}");
        }
    }
}
