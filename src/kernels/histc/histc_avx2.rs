//! AVX2 bin indices: 8 lanes of the scalar formula with the same float32
//! operations (sub, mul, div are correctly rounded in both), then
//! `vcvttps2dq` on values already clamped into [0, bins].

use core::arch::x86_64::*;

use super::histc_scalar::bin_of;
use super::{HistcBins, HistcUkernel};
use crate::kernels::Isa;

pub static HISTC_AVX2: HistcUkernel = HistcUkernel {
    name: "histc_avx2",
    isa: Isa::Avx2,
    run,
};

unsafe fn run(x: &[f32], b: &HistcBins, out: &mut [u32]) {
    // SAFETY: this kernel is only listed in kernel sets of AVX2 hosts.
    unsafe { body(x, b, out) }
}

#[target_feature(enable = "avx2")]
unsafe fn body(x: &[f32], b: &HistcBins, out: &mut [u32]) {
    let n = x.len().min(out.len());
    let left = _mm256_set1_ps(b.left);
    let right = _mm256_set1_ps(b.right);
    let nb = _mm256_set1_ps(b.bins as f32);
    let width = _mm256_set1_ps(b.width());
    let last = _mm256_set1_ps((b.bins - 1) as f32);
    let dummy = _mm256_set1_ps(b.bins as f32);
    let zero = _mm256_setzero_ps();
    let n8 = n / 8 * 8;
    let mut i = 0;
    while i < n8 {
        // SAFETY: i + 8 ≤ n ≤ x.len(), out.len(): the loads and the store are in bounds.
        unsafe {
            let e = _mm256_loadu_ps(x.as_ptr().add(i));
            let q = _mm256_div_ps(_mm256_mul_ps(_mm256_sub_ps(e, left), nb), width);
            // maxps returns its second operand when the first is NaN: NaN -> 0.
            let q = _mm256_max_ps(q, zero);
            let q = _mm256_min_ps(q, last);
            let inside = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GE_OQ>(e, left),
                _mm256_cmp_ps::<_CMP_LE_OQ>(e, right),
            );
            let q = _mm256_blendv_ps(dummy, q, inside);
            _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), _mm256_cvttps_epi32(q));
        }
        i += 8;
    }
    for (o, &e) in out[i..n].iter_mut().zip(&x[i..n]) {
        *o = bin_of(e, b);
    }
}
