//! AVX2 QuantizeLinear: the per-8-lane output stage shared by [`super::quantize::quantize_slice`]
//! and the quantized elementwise ops ([`super::qbinary_avx2`]), and the packs of its i32 codes
//! to bytes.
//!
//! `clamp(round(x / s) + z, MIN, MAX)` is computed as `round(clamp(x / s, MIN − z, MAX − z)) + z`:
//! the bounds are integers, so clamping before or after rounding gives the same integer.
//! Rounding half to even is the f32 addition of `M = 1.5·2²³` (for |r| ≤ 2²², the sum's ulp is
//! 1), whose bits minus M's bits are then the integer; `z` is added to those bits as an integer
//! (adding it before rounding would move ties: RNE(0.5) + 1 = 1 but RNE(1.5) = 2). NaN maps to
//! 0 before the clamp (then to `z`), as the reference. With a Relu the lower bound is `z`
//! instead of `MIN` (the clamp followed by `max(z)`). The same value as
//! [`crate::kernels::reference::quantize::quantize_one`] for every input (tested there and in
//! `quantize.rs`).

use core::arch::x86_64::*;

use crate::kernels::reference::quantize::QType;

/// The output stage's constants, splatted once per call.
pub(crate) struct QStage {
    scale: __m256,
    lo: __m256,
    hi: __m256,
    magic: __m256,
    /// M's bits minus z.
    bias: __m256i,
    signed: bool,
}

const M: f32 = 12_582_912.0; // 1.5 · 2²³

impl QStage {
    /// # Safety
    /// AVX2.
    #[inline(always)]
    pub(crate) unsafe fn new<T: QType>(scale: f32, zp: T, relu: bool) -> QStage {
        let z = zp.to_i32() as f32;
        QStage {
            scale: _mm256_set1_ps(scale),
            lo: _mm256_set1_ps(if relu { 0.0 } else { T::MIN as f32 - z }),
            hi: _mm256_set1_ps(T::MAX as f32 - z),
            magic: _mm256_set1_ps(M),
            bias: _mm256_set1_epi32(M.to_bits() as i32 - zp.to_i32()),
            signed: T::MIN < 0,
        }
    }

    /// The codes of 8 lanes, as i32.
    ///
    /// # Safety
    /// AVX2.
    #[inline(always)]
    pub(crate) unsafe fn quantize8(&self, x: __m256) -> __m256i {
        let r = _mm256_div_ps(x, self.scale);
        // NaN → 0 (then the zero point).
        let r = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(r, r), r);
        let r = _mm256_min_ps(_mm256_max_ps(r, self.lo), self.hi);
        _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(r, self.magic)), self.bias)
    }

    /// Four groups of 8 codes (each in the code range) as 32 bytes in order.
    ///
    /// # Safety
    /// AVX2.
    #[inline(always)]
    pub(crate) unsafe fn pack32(&self, q: [__m256i; 4]) -> __m256i {
        let w01 = _mm256_packs_epi32(q[0], q[1]);
        let w23 = _mm256_packs_epi32(q[2], q[3]);
        let bytes = if self.signed {
            _mm256_packs_epi16(w01, w23)
        } else {
            _mm256_packus_epi16(w01, w23)
        };
        // Dword k of the packs holds 4 codes of group [0, 2, 4, 6, 1, 3, 5, 7][k].
        _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// Stores the first `n ≤ 8` codes of `q` at `dst`.
    ///
    /// # Safety
    /// AVX2; `dst` is valid for `n` bytes.
    #[inline(always)]
    pub(crate) unsafe fn store8(&self, q: __m256i, dst: *mut u8, n: usize) {
        let w = _mm256_packs_epi32(q, q);
        let w = if self.signed {
            _mm256_packs_epi16(w, w)
        } else {
            _mm256_packus_epi16(w, w)
        };
        // Bytes 0..4 of each 128-bit half hold lanes 0..4 and 4..8.
        let lo = _mm256_castsi256_si128(w);
        let hi = _mm256_extracti128_si256::<1>(w);
        let eight = _mm_cvtsi128_si64(_mm_unpacklo_epi32(lo, hi)).to_le_bytes();
        core::ptr::copy_nonoverlapping(eight.as_ptr(), dst, n);
    }
}

/// QuantizeLinear of `x` into `y` (same length), one scale and zero point.
///
/// # Safety
/// AVX2; `x.len() == y.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantize_slice<T: QType>(x: &[f32], scale: f32, zp: T, y: &mut [T]) {
    let st = QStage::new(scale, zp, false);
    let (len, src, dst) = (x.len(), x.as_ptr(), y.as_mut_ptr().cast::<u8>());
    let mut i = 0;
    while i + 32 <= len {
        // No closure (`[..].map`): it would not inherit `#[target_feature]` (see qbinary_avx2).
        let q = [
            st.quantize8(_mm256_loadu_ps(src.add(i))),
            st.quantize8(_mm256_loadu_ps(src.add(i + 8))),
            st.quantize8(_mm256_loadu_ps(src.add(i + 16))),
            st.quantize8(_mm256_loadu_ps(src.add(i + 24))),
        ];
        _mm256_storeu_si256(dst.add(i).cast(), st.pack32(q));
        i += 32;
    }
    while i < len {
        let n = (len - i).min(8);
        let v = if n == 8 {
            _mm256_loadu_ps(src.add(i))
        } else {
            let mut t = [0f32; 8];
            t[..n].copy_from_slice(&x[i..i + n]);
            _mm256_loadu_ps(t.as_ptr())
        };
        st.store8(st.quantize8(v), dst.add(i), n);
        i += n;
    }
}
