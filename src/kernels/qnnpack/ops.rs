//! Drivers: tile the output, turn indirection entries into pointers, call the micro-kernel the
//! weights were packed for. Single-threaded and re-entrant; split the output rows (GEMM) or
//! output image rows (conv, depthwise) across threads by slicing.

use std::marker::PhantomData;

use crate::kernels::reference::q8conv::Nhwc;
use crate::kernels::reference::q8pool::Q8PoolQuant;
use crate::kernels::reference::q8vadd::Q8AddParams;
use crate::kernels::reference::requant_fixedpoint::{Q8Output, Requant, RequantError};

use super::indirection::{to_pointers, ConvIndirection, DwIndirection};
use super::pack::{PackedQ8Dw, PackedQ8Gemm};
use super::ukernel::{
    Q8AddCall, Q8AddUkernel, Q8DwRow, Q8GemmLayout, Q8GemmTile, Q8GemmUkernel, Q8PoolRow,
    Q8PoolUkernel,
};

/// Packed weights per N chunk kept L2-resident while all M tiles stream past.
const L2_BLOCK_BYTES: usize = 192 * 1024;

fn n_chunk_blocks(packed: &PackedQ8Gemm) -> usize {
    (L2_BLOCK_BYTES / packed.block_bytes()).max(1)
}

/// Widens `rows` rows of `kc` bytes (`src_stride` apart, starting at `src[0]`) to i16 rows of
/// `kcp` values, `kc..kcp` zero: the A operand of [`Q8GemmLayout::I16Pairs`] kernels.
fn widen(uk: &Q8GemmUkernel, src: &[u8], src_stride: usize, rows: usize, kc: usize) -> Vec<i16> {
    let kcp = kc.next_multiple_of(usize::from(uk.kc_align));
    let mut out = vec![0i16; rows * kcp];
    if rows == 0 {
        return out;
    }
    assert!(src.len() >= (rows - 1) * src_stride + kc, "A too short");
    #[cfg(target_arch = "x86_64")]
    if super::host_has("avx2") {
        // SAFETY: AVX2 is present; the source rows are inside `src` (asserted) and `out` has
        // rows·kcp values.
        unsafe {
            super::avx2::widen_rows(src.as_ptr(), src_stride, rows, kc, kcp, out.as_mut_ptr())
        };
        return out;
    }
    for (d, s) in out.chunks_exact_mut(kcp).zip(src.chunks(src_stride)) {
        for (d, &v) in d.iter_mut().zip(&s[..kc]) {
            *d = i16::from(v);
        }
    }
    out
}

/// Runs every tile: `rows(m0, ptrs)` fills the `ks·mr` row pointers of the tile at `m0`.
fn drive(
    packed: &PackedQ8Gemm,
    m: usize,
    out: &Q8Output,
    c: &mut [u8],
    ldc: usize,
    mut rows: impl FnMut(usize, &mut [*const u8]),
) {
    let uk = packed.ukernel();
    let (mr, nr, n) = (usize::from(uk.mr), usize::from(uk.nr), packed.n());
    assert!(ldc >= n, "ldc ≥ n");
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n, "output too short");
    assert!(
        super::host_has(uk.target),
        "{}: host lacks {}",
        uk.name,
        uk.target
    );
    let mut ptrs = vec![std::ptr::null::<u8>(); packed.ks() * mr];
    let chunk = n_chunk_blocks(packed);
    let blocks = packed.blocks();
    for b0 in (0..blocks).step_by(chunk) {
        for m0 in (0..m).step_by(mr) {
            rows(m0, &mut ptrs);
            for b in b0..(b0 + chunk).min(blocks) {
                let n0 = b * nr;
                let tile = Q8GemmTile {
                    m: (m - m0).min(mr),
                    n: (n - n0).min(nr),
                    kc: packed.kc(),
                    ks: packed.ks(),
                    a: ptrs.as_ptr(),
                    w: packed.block_ptr(b),
                    c: c[m0 * ldc + n0..].as_mut_ptr(),
                    ldc,
                    out: *out,
                    _lifetime: PhantomData,
                };
                // SAFETY: the host supports the kernel (asserted); the row pointers are readable
                // for kc bytes (checked by the callers), the block is whole, and the m×n window
                // at c[m0·ldc + n0] lies inside `c` (length checked above).
                unsafe { (uk.run)(&tile) };
            }
        }
    }
}

/// `C = requant((A − a_zp)(W − w_zp) + bias)` for `A: m×K` (row stride `lda ≥ K`) and weights
/// packed with `ks = 1`, into `c` (row stride `ldc ≥ N`). The activation zero point is the
/// one folded at pack time.
pub fn q8gemm(
    a: &[u8],
    lda: usize,
    m: usize,
    packed: &PackedQ8Gemm,
    out: &Q8Output,
    c: &mut [u8],
    ldc: usize,
) {
    assert_eq!(packed.ks(), 1, "q8gemm: weights packed for a conv (ks > 1)");
    let k = packed.kc();
    assert!(lda >= k, "lda ≥ K");
    if m > 0 {
        assert!(a.len() >= (m - 1) * lda + k, "A too short");
    }
    let uk = packed.ukernel();
    let mr = usize::from(uk.mr);
    if uk.layout == Q8GemmLayout::I16Pairs {
        let kcp = packed.kc_padded();
        let a16 = widen(uk, a, lda, m, k);
        drive(packed, m, out, c, ldc, |m0, ptrs| {
            for (r, p) in ptrs.iter_mut().enumerate().take(mr) {
                *p = a16[(m0 + r).min(m - 1) * kcp..].as_ptr().cast();
            }
        });
        return;
    }
    drive(packed, m, out, c, ldc, |m0, ptrs| {
        for (r, p) in ptrs.iter_mut().enumerate().take(mr) {
            *p = a[(m0 + r).min(m - 1) * lda..].as_ptr();
        }
    });
}

/// NHWC convolution through the indirection buffer `ind` (built for this input shape and the
/// packed kernel's MR). `y` holds `out_pixels` pixels `y_stride ≥ OC` bytes apart.
///
/// # Panics
/// If the input's zero point differs from the packed one, or shapes disagree.
pub fn q8conv(
    x: &Nhwc<'_>,
    ind: &ConvIndirection,
    packed: &PackedQ8Gemm,
    out: &Q8Output,
    y: &mut [u8],
    y_stride: usize,
) {
    let g = ind.window();
    let mr = usize::from(packed.ukernel().mr);
    assert_eq!(ind.mr(), mr, "indirection built for another MR");
    assert_eq!(packed.ks(), g.taps(), "taps");
    assert_eq!(packed.kc(), x.channels, "input channels");
    assert_eq!(packed.a_zp(), x.zp, "packed for another input zero point");
    let per_tile = g.taps() * mr;
    let offsets = ind.offsets();
    let uk = packed.ukernel();
    if uk.layout == Q8GemmLayout::I16Pairs {
        // Widen the whole image once (each pixel once, however many taps read it).
        let kcp = packed.kc_padded();
        let pixels = if x.data.len() >= x.channels {
            (x.data.len() - x.channels) / x.pixel_stride + 1
        } else {
            0
        };
        let x16 = widen(uk, x.data, x.pixel_stride, pixels, x.channels);
        let zero = vec![i16::from(x.zp); kcp];
        drive(packed, g.out_pixels(), out, y, y_stride, |m0, ptrs| {
            let t = m0 / mr;
            for (p, &o) in ptrs
                .iter_mut()
                .zip(&offsets[t * per_tile..(t + 1) * per_tile])
            {
                *p = if o == super::indirection::ZERO {
                    zero.as_ptr().cast()
                } else {
                    assert!(o < pixels, "input too short");
                    x16[o * kcp..].as_ptr().cast()
                };
            }
        });
        return;
    }
    let zero = vec![x.zp; x.channels + 64];
    // Pointers per tile, straight from the indirection offsets (no whole-image pointer array).
    drive(packed, g.out_pixels(), out, y, y_stride, |m0, ptrs| {
        let t = m0 / mr;
        for (p, &o) in ptrs
            .iter_mut()
            .zip(&offsets[t * per_tile..(t + 1) * per_tile])
        {
            *p = if o == super::indirection::ZERO {
                zero.as_ptr()
            } else {
                // Bounds: every pointer must be readable for `channels` bytes.
                assert!(
                    o * x.pixel_stride + x.channels <= x.data.len(),
                    "input too short"
                );
                x.data[o * x.pixel_stride..].as_ptr()
            };
        }
    });
}

/// NHWC depthwise convolution through `ind` with weights packed for a 3×3 or 5×5 kernel.
///
/// # Panics
/// If the window, channels or input zero point disagree with the packed weights.
pub fn q8dwconv(
    x: &Nhwc<'_>,
    ind: &DwIndirection,
    packed: &PackedQ8Dw,
    out: &Q8Output,
    y: &mut [u8],
    y_stride: usize,
) {
    let g = ind.window();
    let uk = packed.ukernel();
    assert_eq!(packed.kernel(), (g.kernel_h, g.kernel_w), "kernel size");
    assert_eq!(packed.channels(), x.channels, "channels");
    assert_eq!(packed.a_zp(), x.zp, "packed for another input zero point");
    assert!(y_stride >= x.channels);
    let (rows, ow) = (g.batch * g.out_h(), g.out_w());
    assert!(
        y.len() >= (rows * ow - 1) * y_stride + x.channels,
        "output too short"
    );
    assert!(
        super::host_has(uk.target),
        "{}: host lacks {}",
        uk.name,
        uk.target
    );
    let zero = vec![x.zp; x.channels + 64];
    let mut all = Vec::new();
    to_pointers(
        ind.offsets(),
        x.data,
        x.pixel_stride,
        x.channels,
        zero.as_ptr(),
        &mut all,
    );
    for row in 0..rows {
        let call = Q8DwRow {
            channels: x.channels,
            width: ow,
            a: all[row * ind.row_len()..].as_ptr(),
            a_step: ind.step(),
            w: packed.as_ptr(),
            c: y[row * ow * y_stride..].as_mut_ptr(),
            c_stride: y_stride,
            out: *out,
            _lifetime: PhantomData,
        };
        // SAFETY: host support asserted; the row's `(ow−1)·step + taps` pointers are in `all`
        // and each is readable for `channels` bytes (checked by `to_pointers`, or the zero
        // buffer); the packed buffer matches the kernel; the row's `ow` output pixels lie in `y`.
        unsafe { (uk.run)(&call) };
    }
}

/// Average pooling through a [`DwIndirection`] built for the pool window.
///
/// # Errors
/// If a window scale is not representable.
pub fn q8avgpool(
    uk: &'static Q8PoolUkernel,
    x: &Nhwc<'_>,
    ind: &DwIndirection,
    q: &Q8PoolQuant,
    count_include_pad: bool,
    y: &mut [u8],
    y_stride: usize,
) -> Result<(), RequantError> {
    let g = ind.window();
    let taps = g.taps();
    let (rows, ow) = (g.batch * g.out_h(), g.out_w());
    assert!(y_stride >= x.channels);
    assert!(
        y.len() >= (rows * ow - 1) * y_stride + x.channels,
        "output too short"
    );
    assert!(
        super::host_has(uk.target),
        "{}: host lacks {}",
        uk.name,
        uk.target
    );
    // One Requant per possible count.
    let table: Vec<Requant> = (0..=taps).map(|c| q.requant(c)).collect::<Result<_, _>>()?;
    let rq: Vec<Requant> = ind
        .valid_taps()
        .iter()
        .map(|&v| {
            table[if count_include_pad {
                taps
            } else {
                usize::from(v)
            }]
        })
        .collect();
    let zero = vec![x.zp; x.channels + 64];
    let mut all = Vec::new();
    to_pointers(
        ind.offsets(),
        x.data,
        x.pixel_stride,
        x.channels,
        zero.as_ptr(),
        &mut all,
    );
    for row in 0..rows {
        let call = Q8PoolRow {
            channels: x.channels,
            width: ow,
            taps,
            a: all[row * ind.row_len()..].as_ptr(),
            a_step: ind.step(),
            requant: rq[row * ow..].as_ptr(),
            x_zp: x.zp,
            c: y[row * ow * y_stride..].as_mut_ptr(),
            c_stride: y_stride,
            out: q.out,
            _lifetime: PhantomData,
        };
        // SAFETY: as in `q8dwconv`; `requant` holds `ow` entries for this row.
        unsafe { (uk.run)(&call) };
    }
    Ok(())
}

/// Global average pooling: `x` is `batch × pixels` pixels of `channels`; `y` is
/// `batch × channels` (row stride `y_stride`). i32 running sums per channel (exact for
/// `pixels < 2²³`).
///
/// # Errors
/// If the scale for `pixels` taps is not representable.
pub fn q8gavgpool(
    x: &Nhwc<'_>,
    batch: usize,
    pixels: usize,
    q: &Q8PoolQuant,
    y: &mut [u8],
    y_stride: usize,
) -> Result<(), RequantError> {
    let rq = q.requant(pixels)?;
    let ch = x.channels;
    let bias = -(pixels as i32) * i32::from(x.zp);
    let mut acc = vec![0i32; ch];
    for b in 0..batch {
        acc.fill(bias);
        for p in 0..pixels {
            let row = &x.data[(b * pixels + p) * x.pixel_stride..][..ch];
            // Autovectorised (u8 → i32 widening adds).
            for (s, &v) in acc.iter_mut().zip(row) {
                *s += i32::from(v);
            }
        }
        for (c, &s) in acc.iter().enumerate() {
            y[b * y_stride + c] =
                crate::kernels::reference::requant_fixedpoint::requantize_u8(s, rq, &q.out);
        }
    }
    Ok(())
}

/// `y[i] = a[i] ⊕ b[i]` (QNNPACK q8vadd semantics, see [`crate::kernels::reference::q8vadd`]).
pub fn q8vadd(uk: &'static Q8AddUkernel, a: &[u8], b: &[u8], p: &Q8AddParams, y: &mut [u8]) {
    assert!(a.len() == b.len() && y.len() == a.len(), "lengths");
    assert!(
        super::host_has(uk.target),
        "{}: host lacks {}",
        uk.name,
        uk.target
    );
    let call = Q8AddCall {
        n: a.len(),
        a: a.as_ptr(),
        b: b.as_ptr(),
        y: y.as_mut_ptr(),
        params: p,
    };
    // SAFETY: host support asserted; all three buffers have `n` bytes.
    unsafe { (uk.run)(&call) };
}

/// A u8 → u8 unary op as a 256-entry table (QNNPACK `x8lut`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Q8Lut {
    pub table: [u8; 256],
}

impl Q8Lut {
    /// `table[v] = Q(f(DQ(v)))`, see [`crate::kernels::reference::q8lut`].
    pub fn new(x_scale: f32, x_zp: u8, y_scale: f32, y_zp: u8, f: impl Fn(f32) -> f32) -> Q8Lut {
        Q8Lut {
            table: crate::kernels::reference::q8lut::q8lut_table(x_scale, x_zp, y_scale, y_zp, f),
        }
    }

    /// `y[i] = table[x[i]]` (4 independent lookups per iteration; no SIMD gather wins here).
    pub fn apply(&self, x: &[u8], y: &mut [u8]) {
        assert_eq!(x.len(), y.len());
        let t = &self.table;
        let mut xc = x.chunks_exact(4);
        let mut yc = y.chunks_exact_mut(4);
        for (xs, ys) in (&mut xc).zip(&mut yc) {
            ys[0] = t[usize::from(xs[0])];
            ys[1] = t[usize::from(xs[1])];
            ys[2] = t[usize::from(xs[2])];
            ys[3] = t[usize::from(xs[3])];
        }
        for (y, &x) in yc.into_remainder().iter_mut().zip(xc.remainder()) {
            *y = t[usize::from(x)];
        }
    }
}
