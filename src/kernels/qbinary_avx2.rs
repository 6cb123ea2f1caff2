//! AVX2 body of [`super::qbinary`]: 32 elements per step in registers (dequantize both
//! operands, the op, QuantizeLinear, one 4-register pack to bytes), then 8 at a time, the
//! last partial group through 8-element stack copies. The loop is compiled once per op and
//! pair of operand forms (codes along the row, f32 along the row, or one value per row), so
//! nothing but the row length is decided inside it.
//!
//! Each lane gets the values of the element definition: `(x − zp) as f32 · scale` per operand
//! (formed exactly, see [`Codes`]), the op, then QuantizeLinear's division by the output scale,
//! rounding half to even, NaN → 0, `+ zp` and the clamp (and the Relu), in the output stage of
//! [`super::quantize_avx2`]. So the codes equal [`super::qbinary::qbinary_body`]'s bit for bit
//! (tested there).

use core::arch::x86_64::*;

use super::qbinary::{BinaryOp, Operand, QOutput, Rows};
use super::quantize_avx2::QStage;
use crate::kernels::reference::quantize::QType;

/// One operand positioned at a row: where its lanes come from.
trait Src: Copy {
    /// The operand read from element `off` (along the row, or the one value there).
    ///
    /// # Safety
    /// AVX2; `off` (and the row read from it) lies inside the operand.
    unsafe fn at(o: &Operand<'_>, off: usize) -> Self;
    /// Eight dequantized lanes starting at lane `i` of the row.
    ///
    /// # Safety
    /// AVX2; lanes `i..i + 8` lie inside the row.
    unsafe fn load8(self, i: usize) -> __m256;
}

/// 8-bit codes along the row. i8 codes are read as `c ^ 0x80` (a u8) with zero point
/// `z + 128`: `(c ^ 0x80) as u8 − (z + 128) = c as i8 − z`, the same integer. The difference is
/// formed in f32 without a conversion: the bits `0x4B00_0000 | u` are the float `2²³ + u`
/// (u < 2²³), and subtracting `2²³ + z` (exact: both are integers below 2²⁴) leaves `u − z`
/// exactly, the value `(u − z) as f32` of the definition.
#[derive(Clone, Copy)]
struct Codes {
    p: *const u8,
    flip: __m128i,
    /// `2²³ + z` (z after the i8 shift).
    z: __m256,
    s: __m256,
}

/// The bits of the f32 2²³.
const TWO23_BITS: i32 = 0x4B00_0000;

impl Src for Codes {
    #[inline(always)]
    unsafe fn at(o: &Operand<'_>, off: usize) -> Self {
        let (p, flip, z, s) = match *o {
            Operand::U8(v, s, z) => (v.as_ptr(), 0, z, s),
            Operand::I8(v, s, z) => (v.as_ptr().cast::<u8>(), -128i8, z + 128, s),
            Operand::F32(_) => unreachable!("Codes::at on an f32 operand"),
        };
        Codes {
            p: p.add(off),
            flip: _mm_set1_epi8(flip),
            z: _mm256_set1_ps(8_388_608.0 + z as f32),
            s: _mm256_set1_ps(s),
        }
    }

    #[inline(always)]
    unsafe fn load8(self, i: usize) -> __m256 {
        let b = _mm_xor_si128(_mm_loadl_epi64(self.p.add(i).cast()), self.flip);
        let u = _mm256_or_si256(_mm256_cvtepu8_epi32(b), _mm256_set1_epi32(TWO23_BITS));
        _mm256_mul_ps(_mm256_sub_ps(_mm256_castsi256_ps(u), self.z), self.s)
    }
}

/// f32 values along the row.
#[derive(Clone, Copy)]
struct Floats(*const f32);

impl Src for Floats {
    #[inline(always)]
    unsafe fn at(o: &Operand<'_>, off: usize) -> Self {
        match *o {
            Operand::F32(v) => Floats(v.as_ptr().add(off)),
            _ => unreachable!("Floats::at on a code operand"),
        }
    }

    #[inline(always)]
    unsafe fn load8(self, i: usize) -> __m256 {
        _mm256_loadu_ps(self.0.add(i))
    }
}

/// One value for the whole row.
#[derive(Clone, Copy)]
struct Splat(__m256);

impl Src for Splat {
    #[inline(always)]
    unsafe fn at(o: &Operand<'_>, off: usize) -> Self {
        Splat(_mm256_set1_ps(o.get(off)))
    }

    #[inline(always)]
    unsafe fn load8(self, _: usize) -> __m256 {
        self.0
    }
}

/// [`BinaryOp`] as a const parameter.
const ADD: u8 = 0;
const SUB: u8 = 1;
const MUL: u8 = 2;
const DIV: u8 = 3;

#[inline(always)]
unsafe fn apply<const OP: u8>(a: __m256, b: __m256) -> __m256 {
    match OP {
        ADD => _mm256_add_ps(a, b),
        SUB => _mm256_sub_ps(a, b),
        MUL => _mm256_mul_ps(a, b),
        _ => _mm256_div_ps(a, b),
    }
}

#[inline(always)]
unsafe fn group<A: Src, B: Src, const OP: u8>(a: A, b: B, i: usize, st: &QStage) -> __m256i {
    st.quantize8(apply::<OP>(a.load8(i), b.load8(i)))
}

/// Writes `y` (the [`super::qbinary::qbinary`] contract).
///
/// # Safety
/// AVX2; every row's operand range lies inside its operand (checked by the caller); `y`
/// holds `rows.starts.len() · rows.len` elements.
pub(crate) unsafe fn qbinary<T: QType>(
    op: BinaryOp,
    a: Operand<'_>,
    b: Operand<'_>,
    rows: &Rows<'_>,
    out: QOutput<T>,
    y: &mut [T],
) {
    /// The operand forms of one side, as a type.
    macro_rules! with_src {
        ($o:expr, $along:expr, |$t:ident| $body:expr) => {
            match ($o, $along) {
                (_, false) => {
                    type $t = Splat;
                    $body
                }
                (Operand::F32(_), true) => {
                    type $t = Floats;
                    $body
                }
                _ => {
                    type $t = Codes;
                    $body
                }
            }
        };
    }
    // SAFETY (every arm): the caller's contract.
    with_src!(a, rows.a_along, |SA| with_src!(
        b,
        rows.b_along,
        |SB| match op {
            BinaryOp::Add => rows_op::<SA, SB, T, ADD>(&a, &b, rows, out, y),
            BinaryOp::Sub => rows_op::<SA, SB, T, SUB>(&a, &b, rows, out, y),
            BinaryOp::Mul => rows_op::<SA, SB, T, MUL>(&a, &b, rows, out, y),
            BinaryOp::Div => rows_op::<SA, SB, T, DIV>(&a, &b, rows, out, y),
        }
    ))
}

#[target_feature(enable = "avx2")]
unsafe fn rows_op<A: Src, B: Src, T: QType, const OP: u8>(
    a: &Operand<'_>,
    b: &Operand<'_>,
    rows: &Rows<'_>,
    out: QOutput<T>,
    y: &mut [T],
) {
    let st = QStage::new(out.scale, out.zp, out.relu);
    let len = rows.len;
    for (r, &(ra, rb)) in rows.starts.iter().enumerate() {
        let yr = y.as_mut_ptr().add(r * len).cast::<u8>();
        let (sa, sb) = (A::at(a, ra), B::at(b, rb));
        let mut i = 0;
        while i + 32 <= len {
            // No closure (`[..].map`) here: a closure does not inherit `#[target_feature]`,
            // and an outlined one turns every intrinsic into a call.
            let q = [
                group::<A, B, OP>(sa, sb, i, &st),
                group::<A, B, OP>(sa, sb, i + 8, &st),
                group::<A, B, OP>(sa, sb, i + 16, &st),
                group::<A, B, OP>(sa, sb, i + 24, &st),
            ];
            _mm256_storeu_si256(yr.add(i).cast(), st.pack32(q));
            i += 32;
        }
        while i < len {
            let n = (len - i).min(8);
            let q = if n == 8 {
                group::<A, B, OP>(sa, sb, i, &st)
            } else {
                // The last partial group, from zero-padded stack copies of the lanes.
                let ta = tail::<A>(a, rows.a_along, ra, i, n);
                let tb = tail::<B>(b, rows.b_along, rb, i, n);
                st.quantize8(apply::<OP>(ta, tb))
            };
            st.store8(q, yr.add(i), n);
            i += n;
        }
    }
}

/// Lanes `i..i + n` (`n < 8`) of the row at `row` of `o`, zero-padded to 8 through a stack
/// copy (or the row's one value).
///
/// # Safety
/// AVX2; the row lies inside `o`.
#[inline(always)]
unsafe fn tail<S: Src>(o: &Operand<'_>, along: bool, row: usize, i: usize, n: usize) -> __m256 {
    if !along {
        return S::at(o, row).load8(0);
    }
    let r = row + i..row + i + n;
    match *o {
        Operand::U8(v, s, z) => {
            let mut c = [0u8; 8];
            c[..n].copy_from_slice(&v[r]);
            S::at(&Operand::U8(&c, s, z), 0).load8(0)
        }
        Operand::I8(v, s, z) => {
            let mut c = [0i8; 8];
            c[..n].copy_from_slice(&v[r]);
            S::at(&Operand::I8(&c, s, z), 0).load8(0)
        }
        Operand::F32(v) => {
            let mut c = [0f32; 8];
            c[..n].copy_from_slice(&v[r]);
            S::at(&Operand::F32(&c), 0).load8(0)
        }
    }
}
