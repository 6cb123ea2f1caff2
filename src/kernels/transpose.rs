//! Byte matrix transpose (the NCHW ↔ NHWC conversions around the quantized convolutions).
//!
//! x86-64: 16×16 tiles in SSE2 registers (baseline on x86-64, so no dispatch): four rounds of
//! `punpcklbw`/`punpckhbw` between registers `i` and `i + 8`. Each round rotates the 8-bit
//! (row, column) address of every byte left by one bit, so four rounds swap row and column —
//! 96 instructions per 256 bytes instead of ~4× that for the scalar 8×8 bit tricks. Ragged
//! edges use the scalar loop.

/// `dst` (`cols × rows`) = transpose of `src` (`rows × cols`), both dense row-major. The
/// reference of [`transpose_u8`].
///
/// # Panics
/// If a slice is shorter than `rows·cols`.
pub fn transpose_u8_scalar(src: &[u8], rows: usize, cols: usize, dst: &mut [u8]) {
    let (src, dst) = (&src[..rows * cols], &mut dst[..rows * cols]);
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// `dst` (`cols × rows`) = transpose of `src` (`rows × cols`), both dense row-major.
///
/// # Panics
/// If a slice is shorter than `rows·cols`.
pub fn transpose_u8(src: &[u8], rows: usize, cols: usize, dst: &mut [u8]) {
    let (src, dst) = (&src[..rows * cols], &mut dst[..rows * cols]);
    #[cfg(target_arch = "x86_64")]
    let (rb, cb) = {
        let (rb, cb) = (rows / 16 * 16, cols / 16 * 16);
        for r0 in (0..rb).step_by(16) {
            for c0 in (0..cb).step_by(16) {
                // SAFETY: r0 + 16 ≤ rows and c0 + 16 ≤ cols, so every row read
                // (src[(r0+i)·cols + c0 ..][..16]) and column written
                // (dst[(c0+j)·rows + r0 ..][..16]) is inside the checked slices.
                unsafe { tile16_sse2(src, rows, cols, r0, c0, dst) };
            }
        }
        (rb, cb)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (rb, cb) = (0, 0);
    for r in 0..rows {
        let c_from = if r < rb { cb } else { 0 };
        for c in c_from..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// One 16×16 tile at `(r0, c0)`.
///
/// # Safety
/// `r0 + 16 ≤ rows`, `c0 + 16 ≤ cols`, `src` and `dst` hold `rows·cols` bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile16_sse2(src: &[u8], rows: usize, cols: usize, r0: usize, c0: usize, dst: &mut [u8]) {
    use core::arch::x86_64::*;
    let mut a = [_mm_setzero_si128(); 16];
    for (i, ai) in a.iter_mut().enumerate() {
        *ai = _mm_loadu_si128(src.as_ptr().add((r0 + i) * cols + c0).cast());
    }
    for _ in 0..4 {
        let mut b = [_mm_setzero_si128(); 16];
        for i in 0..8 {
            b[2 * i] = _mm_unpacklo_epi8(a[i], a[i + 8]);
            b[2 * i + 1] = _mm_unpackhi_epi8(a[i], a[i + 8]);
        }
        a = b;
    }
    for (j, aj) in a.iter().enumerate() {
        _mm_storeu_si128(dst.as_mut_ptr().add((c0 + j) * rows + r0).cast(), *aj);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_the_scalar_reference() {
        for &rows in &[1usize, 3, 16, 17, 32, 64, 255] {
            for &cols in &[1usize, 3, 16, 17, 48, 64, 255] {
                let src: Vec<u8> = (0..rows * cols).map(|i| (i * 37 + i / 7) as u8).collect();
                let mut a = vec![0u8; rows * cols];
                let mut b = vec![1u8; rows * cols];
                transpose_u8(&src, rows, cols, &mut a);
                transpose_u8_scalar(&src, rows, cols, &mut b);
                assert_eq!(a, b, "{rows}×{cols}");
            }
        }
    }
}
