//! Element types of ONNX tensors (`TensorProto.DataType`), all of them.

use std::fmt;

/// An ONNX tensor element type. Every value of `TensorProto.DataType` up to
/// opset 28 has a variant; an unknown code is an error at import, never a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    F32,
    U8,
    I8,
    U16,
    I16,
    I32,
    I64,
    String,
    Bool,
    F16,
    F64,
    U32,
    U64,
    Complex64,
    Complex128,
    BF16,
    F8E4M3FN,
    F8E4M3FNUZ,
    F8E5M2,
    F8E5M2FNUZ,
    U4,
    I4,
    F4E2M1,
    F8E8M0,
    U2,
    I2,
    F6E2M3,
    F6E3M2,
}

use DataType::*;

const ALL: [(DataType, i32, &str); 28] = [
    (F32, 1, "f32"),
    (U8, 2, "u8"),
    (I8, 3, "i8"),
    (U16, 4, "u16"),
    (I16, 5, "i16"),
    (I32, 6, "i32"),
    (I64, 7, "i64"),
    (String, 8, "str"),
    (Bool, 9, "bool"),
    (F16, 10, "f16"),
    (F64, 11, "f64"),
    (U32, 12, "u32"),
    (U64, 13, "u64"),
    (Complex64, 14, "c64"),
    (Complex128, 15, "c128"),
    (BF16, 16, "bf16"),
    (F8E4M3FN, 17, "f8e4m3fn"),
    (F8E4M3FNUZ, 18, "f8e4m3fnuz"),
    (F8E5M2, 19, "f8e5m2"),
    (F8E5M2FNUZ, 20, "f8e5m2fnuz"),
    (U4, 21, "u4"),
    (I4, 22, "i4"),
    (F4E2M1, 23, "f4e2m1"),
    (F8E8M0, 24, "f8e8m0"),
    (U2, 25, "u2"),
    (I2, 26, "i2"),
    (F6E2M3, 27, "f6e2m3"),
    (F6E3M2, 28, "f6e3m2"),
];

impl DataType {
    /// Every data type, in ONNX code order.
    pub fn all() -> impl Iterator<Item = DataType> {
        ALL.iter().map(|e| e.0)
    }

    /// From the ONNX `TensorProto.DataType` code. `None` for 0 (UNDEFINED) and
    /// for codes this build does not know.
    pub fn from_onnx(code: i32) -> Option<DataType> {
        ALL.iter().find(|e| e.1 == code).map(|e| e.0)
    }

    /// The ONNX `TensorProto.DataType` code.
    pub fn onnx_code(self) -> i32 {
        ALL[self as usize].1
    }

    /// Short name used in dumps: `f32`, `u8`, `i4`, ...
    pub fn short_name(self) -> &'static str {
        ALL[self as usize].2
    }

    /// Parses a short name as printed by [`DataType::short_name`].
    pub fn from_short_name(s: &str) -> Option<DataType> {
        ALL.iter().find(|e| e.2 == s).map(|e| e.0)
    }

    /// Size of one element in bits, as stored packed in `raw_data`.
    /// `None` for strings.
    pub fn bit_width(self) -> Option<usize> {
        Some(match self {
            String => return None,
            U2 | I2 => 2,
            U4 | I4 | F4E2M1 => 4,
            F6E2M3 | F6E3M2 => 6,
            U8 | I8 | Bool | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | F8E8M0 => 8,
            U16 | I16 | F16 | BF16 => 16,
            F32 | I32 | U32 => 32,
            F64 | I64 | U64 | Complex64 => 64,
            Complex128 => 128,
        })
    }

    /// Bytes needed to store `n` elements packed in `raw_data` layout.
    pub fn packed_len(self, n: usize) -> Option<usize> {
        let bits = self.bit_width()?;
        Some((n * bits).div_ceil(8))
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            F32 | F16
                | F64
                | BF16
                | F8E4M3FN
                | F8E4M3FNUZ
                | F8E5M2
                | F8E5M2FNUZ
                | F4E2M1
                | F8E8M0
                | F6E2M3
                | F6E3M2
        )
    }

    pub fn is_integer(self) -> bool {
        matches!(
            self,
            U8 | I8 | U16 | I16 | I32 | I64 | U32 | U64 | U4 | I4 | U2 | I2
        )
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_index_matches() {
        for (i, dt) in DataType::all().enumerate() {
            assert_eq!(dt as usize, i);
            assert_eq!(DataType::from_onnx(dt.onnx_code()), Some(dt));
            assert_eq!(DataType::from_short_name(dt.short_name()), Some(dt));
        }
        assert_eq!(DataType::from_onnx(0), None);
        assert_eq!(DataType::from_onnx(999), None);
    }

    #[test]
    fn packed_lengths() {
        assert_eq!(DataType::I4.packed_len(3), Some(2));
        assert_eq!(DataType::U2.packed_len(5), Some(2));
        assert_eq!(DataType::F6E2M3.packed_len(4), Some(3));
        assert_eq!(DataType::F6E2M3.packed_len(5), Some(4));
        assert_eq!(DataType::F32.packed_len(3), Some(12));
        assert_eq!(DataType::String.packed_len(3), None);
    }
}
