//! The GEMM driver: tiles M and N, prepares per-call parameters, calls the micro-kernel that
//! the weights were packed for.
//!
//! Loop nest (Goto-style, K unblocked): `for` N blocks of `nc` columns (sized so that the
//! block's packed weights, K·nc·elem bytes, stay in L2) → `for` MR-row panels of A (a panel is
//! `mr·K` bytes, L1-resident across the block) → `for` NR-column strips → one micro-kernel
//! call. The epilogue is fused, so there is no i32 scratch and no second pass.
//!
//! Threading: the driver is single-threaded and re-entrant (no global state; `PackedB` is
//! shared read-only). Split M across threads by slicing: give each thread `a[m0·lda..]`,
//! `c[m0·ldc..]` and its row count — rows are independent.

use std::marker::PhantomData;

use super::output::OutputStage;
use super::pack::PackedB;
use super::ukernel::{AFormat, QGemmTile, TileOutput};

/// Target bytes of packed weights per N block (half of a 512 KiB–2 MiB L2).
const L2_BLOCK_BYTES: usize = 256 * 1024;

/// The output buffer; its element type must match the [`OutputStage`].
#[derive(Debug)]
pub enum QGemmOutput<'a> {
    I32(&'a mut [i32]),
    U8(&'a mut [u8]),
    I8(&'a mut [i8]),
    F32(&'a mut [f32]),
}

impl QGemmOutput<'_> {
    fn len(&self) -> usize {
        match self {
            QGemmOutput::I32(c) => c.len(),
            QGemmOutput::U8(c) => c.len(),
            QGemmOutput::I8(c) => c.len(),
            QGemmOutput::F32(c) => c.len(),
        }
    }
}

/// Pads a 1-or-N parameter array to the packed width.
fn padded(values: &[f32], n: usize, n_padded: usize, what: &str) -> Vec<f32> {
    assert!(
        values.len() == 1 || values.len() == n,
        "{what}: expected 1 or N = {n} values, got {}",
        values.len()
    );
    let mut v = vec![0f32; n_padded];
    if values.len() == 1 {
        v[..n].fill(values[0]);
    } else {
        v[..n].copy_from_slice(values);
    }
    v
}

/// `C = output((A − a_zp)·(W − w_zp) + bias)` for `A: m×K` (u8, row stride `lda ≥ K`) and
/// the packed weights (K×N), into `c` (row stride `ldc ≥ N`, elements).
///
/// If `a_zp` differs from the one folded at pack time, the column bias is recomputed for this
/// call (O(N)); the result is the same.
///
/// # Panics
/// On a slice too short for its shape and stride, an output buffer type that does not match
/// the stage, or out-of-range `qmin`/`qmax`.
#[allow(clippy::too_many_arguments)]
pub fn qgemm(
    a: &[u8],
    lda: usize,
    a_zp: u8,
    m: usize,
    packed: &PackedB,
    output: OutputStage<'_>,
    c: QGemmOutput<'_>,
    ldc: usize,
) {
    let (k, n) = (packed.k(), packed.n());
    if m == 0 || n == 0 {
        return;
    }
    assert!(lda >= k, "lda {lda} < K {k}");
    assert!(
        a.len() >= (m - 1) * lda + k,
        "A too short for M×K at stride lda"
    );
    qgemm_impl(ASource::Rows { a, lda }, a_zp, m, packed, output, c, ldc);
}

/// [`qgemm`] over indirect A: row `r` of A is `segs` runs of `K / segs` bytes, run `s` at
/// `rows[r] + s·seg_stride` (a convolution's kernel rows in its NHWC input, read in place).
/// The weights must be symmetric (no row sums) and packed for a kernel that reads indirect A.
///
/// # Safety
/// Every pointer in `rows` is valid for reads of the runs it describes.
///
/// # Panics
/// As [`qgemm`]; also if the packed kernel cannot read indirect A, the weights have zero
/// points, or `K / segs` is not a whole multiple of 4.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn qgemm_indirect(
    rows: &[*const u8],
    segs: usize,
    seg_stride: usize,
    a_zp: u8,
    packed: &PackedB,
    output: OutputStage<'_>,
    c: QGemmOutput<'_>,
    ldc: usize,
) {
    let k = packed.k();
    assert!(packed.ukernel().indirect, "kernel cannot read indirect A");
    assert!(
        packed.b_zp_padded().is_none(),
        "indirect A needs symmetric weights"
    );
    assert!(
        segs > 0 && k.is_multiple_of(segs) && (k / segs).is_multiple_of(4),
        "K {k} in {segs} runs"
    );
    let src = ASource::Indirect {
        rows,
        segs,
        seg_stride,
    };
    qgemm_impl(src, a_zp, rows.len(), packed, output, c, ldc);
}

/// Where the micro-kernel reads A.
#[derive(Clone, Copy)]
enum ASource<'a> {
    Rows {
        a: &'a [u8],
        lda: usize,
    },
    Indirect {
        rows: &'a [*const u8],
        segs: usize,
        seg_stride: usize,
    },
}

#[allow(clippy::too_many_arguments)]
fn qgemm_impl(
    src: ASource<'_>,
    a_zp: u8,
    m: usize,
    packed: &PackedB,
    output: OutputStage<'_>,
    c: QGemmOutput<'_>,
    ldc: usize,
) {
    let (k, n) = (packed.k(), packed.n());
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n, "ldc {ldc} < N {n}");
    assert!(
        c.len() >= (m - 1) * ldc + n,
        "C too short for M×N at stride ldc"
    );

    let uk = packed.ukernel();
    let (mr, nr) = (usize::from(uk.mr), usize::from(uk.nr));
    let n_padded = packed.n_padded();

    // Per-call parameters, padded to whole strips so the kernel can read `nr` values.
    let p1: Vec<f32>;
    let p2: Vec<f32>;
    let (mut zp, mut qmin, mut qmax) = (0, 0, 0);
    match (&output, &c) {
        (OutputStage::Raw, QGemmOutput::I32(_)) => {
            p1 = Vec::new();
            p2 = Vec::new();
        }
        (
            OutputStage::Requantize {
                mult,
                zp: z,
                qmin: lo,
                qmax: hi,
            },
            QGemmOutput::U8(_) | QGemmOutput::I8(_),
        ) => {
            let (tmin, tmax) = if matches!(c, QGemmOutput::U8(_)) {
                (0, 255)
            } else {
                (-128, 127)
            };
            assert!(
                tmin <= *lo && lo <= hi && *hi <= tmax,
                "qmin/qmax {lo}..={hi} outside the output type {tmin}..={tmax}"
            );
            assert!(
                (tmin..=tmax).contains(z),
                "zero point {z} outside the output type"
            );
            (zp, qmin, qmax) = (*z, *lo, *hi);
            p1 = padded(mult, n, n_padded, "mult");
            p2 = Vec::new();
        }
        (OutputStage::Dequantize { scale, bias }, QGemmOutput::F32(_)) => {
            p1 = padded(scale, n, n_padded, "scale");
            p2 = match bias {
                Some(b) => {
                    assert_eq!(b.len(), n, "f32 bias: N values");
                    padded(b, n, n_padded, "bias")
                }
                None => vec![0f32; n_padded],
            };
        }
        _ => panic!("output buffer type does not match the output stage"),
    }

    let refolded;
    let col_bias = if a_zp == packed.a_zp() {
        packed.col_bias()
    } else {
        refolded = packed.col_bias_for(a_zp);
        &refolded[..]
    };
    let b_zp = packed.b_zp_padded();

    let elem = uk.b_format.elem_bytes();
    let nc = (L2_BLOCK_BYTES / (k.max(1) * elem) / nr).max(1) * nr;

    // Packed A rows: u16 per element, K rounded up to even, plus 32 bytes of slack so the row
    // streams are never 4 KiB apart (store-forwarding/4K-aliasing stalls).
    let panel_ld = k.div_ceil(2) * 2 + 16;
    let mut a_panel: Vec<u16> = match uk.a_format {
        AFormat::Direct => Vec::new(),
        AFormat::PackedI16Pairs => vec![0; panel_ld * mr],
    };
    let mut row_sums = [0i32; 64];
    debug_assert!(mr <= row_sums.len());

    #[derive(Clone, Copy)]
    enum Kind {
        I32,
        U8,
        I8,
        F32,
    }
    let mut c = c;
    // Raw pointer to C derived from the exclusive borrow; `c` is not touched again.
    let (kind, c_ptr) = match &mut c {
        QGemmOutput::I32(s) => (Kind::I32, s.as_mut_ptr().cast::<u8>()),
        QGemmOutput::U8(s) => (Kind::U8, s.as_mut_ptr()),
        QGemmOutput::I8(s) => (Kind::I8, s.as_mut_ptr().cast::<u8>()),
        QGemmOutput::F32(s) => (Kind::F32, s.as_mut_ptr().cast::<u8>()),
    };

    for n0 in (0..n).step_by(nc) {
        let n1 = (n0 + nc).min(n);
        for m0 in (0..m).step_by(mr) {
            let mm = mr.min(m - m0);
            let (a_tile, a_stride, a_ptrs, segs, seg_stride) = match src {
                ASource::Rows { a, lda } => {
                    let a_rows = &a[m0 * lda..(m0 + mm - 1) * lda + k];
                    if b_zp.is_some() {
                        for (r, s) in row_sums[..mm].iter_mut().enumerate() {
                            *s = a_rows[r * lda..r * lda + k]
                                .iter()
                                .map(|&v| i32::from(v))
                                .sum();
                        }
                    }
                    let (a_tile, a_stride) = match uk.a_format {
                        AFormat::Direct => (a_rows.as_ptr(), lda),
                        AFormat::PackedI16Pairs => {
                            pack_a_u16(a_rows, lda, mm, k, &mut a_panel, panel_ld);
                            (a_panel.as_ptr().cast::<u8>(), panel_ld * 2)
                        }
                    };
                    (a_tile, a_stride, std::ptr::null(), 1, 0)
                }
                ASource::Indirect {
                    rows,
                    segs,
                    seg_stride,
                } => (std::ptr::null(), 0, rows[m0..].as_ptr(), segs, seg_stride),
            };
            for col0 in (n0..n1).step_by(nr) {
                let nn = nr.min(n1 - col0);
                let s = col0 / nr;
                let c_off = m0 * ldc + col0;
                let out = match kind {
                    Kind::I32 => TileOutput::I32 {
                        c: c_ptr.cast::<i32>().wrapping_add(c_off),
                    },
                    Kind::U8 => TileOutput::U8 {
                        c: c_ptr.wrapping_add(c_off),
                        mult: p1[col0..].as_ptr(),
                        zp,
                        qmin,
                        qmax,
                    },
                    Kind::I8 => TileOutput::I8 {
                        c: c_ptr.cast::<i8>().wrapping_add(c_off),
                        mult: p1[col0..].as_ptr(),
                        zp,
                        qmin,
                        qmax,
                    },
                    Kind::F32 => TileOutput::F32 {
                        c: c_ptr.cast::<f32>().wrapping_add(c_off),
                        scale: p1[col0..].as_ptr(),
                        bias: p2[col0..].as_ptr(),
                    },
                };
                let tile = QGemmTile {
                    m: mm,
                    n: nn,
                    k,
                    a: a_tile,
                    lda: a_stride,
                    a_rows: a_ptrs,
                    segs,
                    seg_stride,
                    b: packed.strip_ptr(s),
                    col_bias: col_bias[col0..].as_ptr(),
                    row_sums: if b_zp.is_some() {
                        row_sums.as_ptr()
                    } else {
                        std::ptr::null()
                    },
                    b_zp: b_zp.map_or(std::ptr::null(), |z| z[col0..].as_ptr()),
                    out,
                    ldc,
                    _lifetime: PhantomData,
                };
                // SAFETY: the kernel was chosen for this host by dispatch (its ISA is in
                // `available()`); A covers `mm` rows × `k` (or the packed panel, or the `mm`
                // row pointers `qgemm_indirect`'s caller vouched for), the strip is a
                // whole padded strip of `packed`, parameter arrays are padded to `n_padded ≥
                // col0 + nr`, and C covers `mm` rows × `nn` columns at stride `ldc` (asserted
                // above).
                unsafe { (uk.run)(&tile) };
            }
        }
    }
}

/// Zero-extends `m` rows of A to u16 rows `ld` elements apart (the tail past `k` stays 0).
/// A plain widening loop, which LLVM vectorizes (`vpmovzxbw`).
fn pack_a_u16(a: &[u8], lda: usize, m: usize, k: usize, panel: &mut [u16], ld: usize) {
    for r in 0..m {
        let src = &a[r * lda..r * lda + k];
        let dst = &mut panel[r * ld..r * ld + k];
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = u16::from(s);
        }
    }
}
