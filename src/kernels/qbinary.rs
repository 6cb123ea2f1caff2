//! `Q(DQ(a) ⊕ DQ(b))` for ⊕ ∈ {Add, Sub, Mul, Div}, optionally with a Relu before the Q:
//! the quantized elementwise ops (QLinearAdd / QLinearMul and their QDQ units), over rows of a
//! broadcast. Each element gets exactly the f32 operations of the float graph it replaces:
//! DequantizeLinear's `(x − zp) as f32 · scale` for each operand, the op, then QuantizeLinear
//! ([`super::quantize::quantize_one`]). So the result equals the QDQ graph's bit for bit.
//!
//! The portable body runs in chunks held on the stack (dequantize both, operate, quantize). On
//! AVX2 hosts [`super::qbinary_avx2`] does the same IEEE operations 32 lanes at a time in
//! registers (the same bits; the tests below compare it with the element definition).

use super::quantize::quantize_slice_body;
use crate::kernels::reference::quantize::QType;

/// One operand, read in place: 8-bit codes with their scale and zero point, or f32 values.
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    U8(&'a [u8], f32, i32),
    I8(&'a [i8], f32, i32),
    F32(&'a [f32]),
}

impl Operand<'_> {
    /// The dequantized value at `i`.
    #[inline(always)]
    pub(super) fn get(&self, i: usize) -> f32 {
        match *self {
            Operand::U8(v, s, z) => (i32::from(v[i]) - z) as f32 * s,
            Operand::I8(v, s, z) => (i32::from(v[i]) - z) as f32 * s,
            Operand::F32(v) => v[i],
        }
    }

    /// Elements held.
    #[cfg(target_arch = "x86_64")]
    fn len(&self) -> usize {
        match *self {
            Operand::U8(v, ..) => v.len(),
            Operand::I8(v, ..) => v.len(),
            Operand::F32(v) => v.len(),
        }
    }

    /// Panics unless every row's range (`len` elements from its start when `along`, else the
    /// start) lies inside the operand.
    #[cfg(target_arch = "x86_64")]
    fn check_rows(&self, starts: impl Iterator<Item = usize>, len: usize, along: bool) {
        let need = if along { len } else { 1 };
        for s in starts {
            assert!(
                s.checked_add(need).is_some_and(|end| end <= self.len()),
                "qbinary: operand of {} elements read at {s}..{s}+{need}",
                self.len()
            );
        }
    }

    /// The dequantized values `off..off + out.len()`, or the one at `off` repeated.
    #[inline(always)]
    fn fill(&self, along: bool, off: usize, out: &mut [f32]) {
        if !along {
            out.fill(self.get(off));
            return;
        }
        let n = out.len();
        match *self {
            Operand::U8(v, s, z) => out
                .iter_mut()
                .zip(&v[off..off + n])
                .for_each(|(o, &b)| *o = (i32::from(b) - z) as f32 * s),
            Operand::I8(v, s, z) => out
                .iter_mut()
                .zip(&v[off..off + n])
                .for_each(|(o, &b)| *o = (i32::from(b) - z) as f32 * s),
            Operand::F32(v) => out.copy_from_slice(&v[off..off + n]),
        }
    }
}

/// The elementwise operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// How the output rows read the operands: output row `r` (`len` elements) starts at
/// `starts[r].0` in `a` and `starts[r].1` in `b`; along the row an operand advances when
/// its flag is set, else its value at the start repeats.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    pub starts: &'a [(usize, usize)],
    pub len: usize,
    pub a_along: bool,
    pub b_along: bool,
}

/// The output: per-tensor scale and zero point, and whether a Relu comes before the Q (the
/// result is then at least the zero point).
#[derive(Clone, Copy, Debug)]
pub struct QOutput<T> {
    pub scale: f32,
    pub zp: T,
    pub relu: bool,
}

/// Writes `y` (`rows.starts.len() · rows.len` elements). Panics if an operand is shorter
/// than the rows read from it.
pub fn qbinary<T: QType + Ord>(
    op: BinaryOp,
    a: Operand<'_>,
    b: Operand<'_>,
    rows: &Rows<'_>,
    out: QOutput<T>,
    y: &mut [T],
) {
    assert_eq!(
        y.len(),
        rows.starts.len() * rows.len,
        "qbinary: output length"
    );
    #[cfg(target_arch = "x86_64")]
    if super::quantize::avx2() && rows.len > 0 {
        a.check_rows(rows.starts.iter().map(|s| s.0), rows.len, rows.a_along);
        b.check_rows(rows.starts.iter().map(|s| s.1), rows.len, rows.b_along);
        // SAFETY: the host supports AVX2 (checked by avx2()); every row's operand range was
        // checked above and `y` has one `rows.len` row per start (asserted).
        unsafe { super::qbinary_avx2::qbinary(op, a, b, rows, out, y) };
        return;
    }
    qbinary_body(op, a, b, rows, out, y);
}

/// The portable body of [`qbinary`] (also its reference in the tests).
#[inline(always)]
pub fn qbinary_body<T: QType + Ord>(
    op: BinaryOp,
    a: Operand<'_>,
    b: Operand<'_>,
    rows: &Rows<'_>,
    out: QOutput<T>,
    y: &mut [T],
) {
    const CH: usize = 64;
    if rows.len == 0 {
        return;
    }
    let (mut fa, mut fb) = ([0f32; CH], [0f32; CH]);
    for (yr, &(oa, ob)) in y.chunks_exact_mut(rows.len).zip(rows.starts) {
        for (i, yc) in yr.chunks_mut(CH).enumerate() {
            let n = yc.len();
            let (fa, fb) = (&mut fa[..n], &mut fb[..n]);
            a.fill(rows.a_along, oa + if rows.a_along { i * CH } else { 0 }, fa);
            b.fill(rows.b_along, ob + if rows.b_along { i * CH } else { 0 }, fb);
            let it = fa.iter_mut().zip(fb.iter());
            match op {
                BinaryOp::Add => it.for_each(|(x, &y)| *x += y),
                BinaryOp::Sub => it.for_each(|(x, &y)| *x -= y),
                BinaryOp::Mul => it.for_each(|(x, &y)| *x *= y),
                BinaryOp::Div => it.for_each(|(x, &y)| *x /= y),
            }
            quantize_slice_body(fa, out.scale, out.zp, yc);
            if out.relu {
                yc.iter_mut().for_each(|q| *q = (*q).max(out.zp));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::quantize::quantize_one;

    fn lcg(seed: &mut u64) -> u32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    }

    /// Ties, NaN, infinities, huge values and signed zeros: the same codes as the definition
    /// (both output types, Relu or not), along rows of every length up to 40.
    #[test]
    fn special_values_round_and_saturate_as_the_definition() {
        let specials = [
            0.5f32,
            1.5,
            2.5,
            -0.5,
            -1.5,
            -2.5,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
            -1e30,
            -0.0,
            0.0,
            127.5,
            128.5,
            -128.5,
            255.5,
            254.5,
            8_388_609.0,
            0.49999997,
        ];
        for len in 1..=40usize {
            let f: Vec<f32> = (0..len).map(|i| specials[i % specials.len()]).collect();
            let codes: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let starts = [(0usize, 0usize)];
            let rows = Rows {
                starts: &starts,
                len,
                a_along: true,
                b_along: true,
            };
            let (oa, ob) = (Operand::U8(&codes, 0.5, 3), Operand::F32(&f));
            for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
                for relu in [false, true] {
                    let mut y = vec![0u8; len];
                    qbinary(
                        op,
                        oa,
                        ob,
                        &rows,
                        QOutput {
                            scale: 1.0,
                            zp: 7u8,
                            relu,
                        },
                        &mut y,
                    );
                    let mut y8 = vec![0i8; len];
                    qbinary(
                        op,
                        ob,
                        oa,
                        &rows,
                        QOutput {
                            scale: 0.5,
                            zp: -9i8,
                            relu,
                        },
                        &mut y8,
                    );
                    for j in 0..len {
                        let (x, z) = (oa.get(j), ob.get(j));
                        let apply = |p: f32, q: f32| match op {
                            BinaryOp::Add => p + q,
                            BinaryOp::Sub => p - q,
                            BinaryOp::Mul => p * q,
                            BinaryOp::Div => p / q,
                        };
                        let mut want = quantize_one(apply(x, z), 1.0, 7u8);
                        let mut want8 = quantize_one(apply(z, x), 0.5, -9i8);
                        if relu {
                            want = want.max(7);
                            want8 = want8.max(-9);
                        }
                        assert_eq!(y[j], want, "{op:?} u8 len {len} at {j}: {x} {z}");
                        assert_eq!(y8[j], want8, "{op:?} i8 len {len} at {j}: {z} {x}");
                    }
                }
            }
        }
    }

    /// The dispatched kernel equals an element-by-element evaluation of the float graph
    /// (dequantize, op, QuantizeLinear), for every op, both output types, with and without
    /// Relu, on awkward row lengths and both broadcast forms.
    #[test]
    fn equals_the_elementwise_definition() {
        let mut seed = 7u64;
        for &len in &[1usize, 3, 17, 64, 65, 255] {
            for &(a_along, b_along) in &[(true, true), (true, false), (false, true)] {
                let nrows = 5;
                let a: Vec<u8> = (0..nrows * len).map(|_| lcg(&mut seed) as u8).collect();
                let b: Vec<i8> = (0..nrows * len).map(|_| lcg(&mut seed) as i8).collect();
                let starts: Vec<(usize, usize)> = (0..nrows)
                    .map(|r| {
                        (
                            if a_along { r * len } else { r },
                            if b_along { r * len } else { r },
                        )
                    })
                    .collect();
                let rows = Rows {
                    starts: &starts,
                    len,
                    a_along,
                    b_along,
                };
                let (oa, ob) = (Operand::U8(&a, 0.037, 131), Operand::I8(&b, 0.011, -3));
                for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
                    for relu in [false, true] {
                        let out = QOutput {
                            scale: 0.05,
                            zp: 120u8,
                            relu,
                        };
                        let mut y = vec![0u8; nrows * len];
                        qbinary(op, oa, ob, &rows, out, &mut y);
                        // The portable body (non-AVX2 hosts) gives the same codes.
                        let mut yp = vec![0u8; nrows * len];
                        qbinary_body(op, oa, ob, &rows, out, &mut yp);
                        assert_eq!(y, yp, "{op:?} len {len}: dispatched vs portable");
                        for (r, &(sa, sb)) in starts.iter().enumerate() {
                            for j in 0..len {
                                let x = oa.get(sa + if a_along { j } else { 0 });
                                let z = ob.get(sb + if b_along { j } else { 0 });
                                let f = match op {
                                    BinaryOp::Add => x + z,
                                    BinaryOp::Sub => x - z,
                                    BinaryOp::Mul => x * z,
                                    BinaryOp::Div => x / z,
                                };
                                let mut want = quantize_one(f, 0.05, 120u8);
                                if relu {
                                    want = want.max(120);
                                }
                                assert_eq!(
                                    y[r * len + j],
                                    want,
                                    "{op:?} len {len} row {r} col {j}"
                                );
                            }
                        }
                        // The i8 operand first (each operand form on either side).
                        let swapped = Rows {
                            starts: &starts.iter().map(|&(x, z)| (z, x)).collect::<Vec<_>>(),
                            len,
                            a_along: b_along,
                            b_along: a_along,
                        };
                        let mut ys = vec![0u8; nrows * len];
                        qbinary(op, ob, oa, &swapped, out, &mut ys);
                        for (r, &(sa, sb)) in starts.iter().enumerate() {
                            for j in 0..len {
                                let x = oa.get(sa + if a_along { j } else { 0 });
                                let z = ob.get(sb + if b_along { j } else { 0 });
                                let f = match op {
                                    BinaryOp::Add => z + x,
                                    BinaryOp::Sub => z - x,
                                    BinaryOp::Mul => z * x,
                                    BinaryOp::Div => z / x,
                                };
                                let mut want = quantize_one(f, 0.05, 120u8);
                                if relu {
                                    want = want.max(120);
                                }
                                assert_eq!(ys[r * len + j], want, "{op:?} swapped len {len}");
                            }
                        }
                        let mut y8 = vec![0i8; nrows * len];
                        let out8 = QOutput {
                            scale: 0.02,
                            zp: -5i8,
                            relu,
                        };
                        qbinary(
                            op,
                            oa,
                            Operand::F32(&vec![0.25; nrows * len]),
                            &rows,
                            out8,
                            &mut y8,
                        );
                        for (r, &(sa, _)) in starts.iter().enumerate() {
                            for j in 0..len {
                                let x = oa.get(sa + if a_along { j } else { 0 });
                                let f = match op {
                                    BinaryOp::Add => x + 0.25,
                                    BinaryOp::Sub => x - 0.25,
                                    BinaryOp::Mul => x * 0.25,
                                    BinaryOp::Div => x / 0.25,
                                };
                                let mut want = quantize_one(f, 0.02, -5i8);
                                if relu {
                                    want = want.max(-5);
                                }
                                assert_eq!(y8[r * len + j], want, "{op:?} i8 len {len}");
                            }
                        }
                    }
                }
            }
        }
    }
}
