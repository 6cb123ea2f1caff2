//! Constant tensors held by the IR (initializers, `Constant` nodes, tensor attributes).
//!
//! Data is kept in one canonical form whatever the file used: the packed,
//! little-endian `raw_data` layout of the ONNX spec (strings as a list of byte
//! strings). Passes read and write that single form.

use super::dtype::DataType;
use std::fmt;

/// Element storage of a [`Tensor`].
#[derive(Clone, PartialEq, Eq)]
pub enum TensorData {
    /// Packed little-endian bytes, ONNX `raw_data` layout.
    Raw(Vec<u8>),
    /// One byte string per element (`STRING` tensors).
    Strings(Vec<Vec<u8>>),
}

/// A constant tensor.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    pub dtype: DataType,
    pub dims: Vec<i64>,
    pub data: TensorData,
    /// `TensorProto.doc_string`, kept for round trips.
    pub doc_string: String,
    /// `TensorProto.metadata_props`, kept for round trips.
    pub metadata_props: Vec<(String, String)>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:?} #{:016x}", self.dtype, self.dims, self.checksum())
    }
}

/// Why a tensor's data does not fit its declared type and shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} bytes of {dtype} data for shape {dims:?}, found {found}")]
pub struct DataSizeMismatch {
    pub dtype: DataType,
    pub dims: Vec<i64>,
    pub expected: usize,
    pub found: usize,
}

impl Tensor {
    /// A tensor from packed raw bytes; checks that the size fits the shape.
    pub fn from_raw(
        dtype: DataType,
        dims: Vec<i64>,
        raw: Vec<u8>,
    ) -> Result<Tensor, DataSizeMismatch> {
        let n = element_count(&dims);
        let expected = dtype.packed_len(n).unwrap_or(0);
        if dtype == DataType::String || raw.len() != expected {
            return Err(DataSizeMismatch {
                dtype,
                dims,
                expected,
                found: raw.len(),
            });
        }
        Ok(Tensor {
            dtype,
            dims,
            data: TensorData::Raw(raw),
            doc_string: String::new(),
            metadata_props: vec![],
        })
    }

    pub fn from_strings(dims: Vec<i64>, strings: Vec<Vec<u8>>) -> Result<Tensor, DataSizeMismatch> {
        let expected = element_count(&dims);
        if strings.len() != expected {
            return Err(DataSizeMismatch {
                dtype: DataType::String,
                dims,
                expected,
                found: strings.len(),
            });
        }
        Ok(Tensor {
            dtype: DataType::String,
            dims,
            data: TensorData::Strings(strings),
            doc_string: String::new(),
            metadata_props: vec![],
        })
    }

    pub fn from_f32(dims: Vec<i64>, values: &[f32]) -> Tensor {
        assert_eq!(
            element_count(&dims),
            values.len(),
            "shape does not match data"
        );
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::from_raw(DataType::F32, dims, raw).expect("size checked above")
    }

    pub fn from_i64(dims: Vec<i64>, values: &[i64]) -> Tensor {
        assert_eq!(
            element_count(&dims),
            values.len(),
            "shape does not match data"
        );
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::from_raw(DataType::I64, dims, raw).expect("size checked above")
    }

    pub fn from_i32(dims: Vec<i64>, values: &[i32]) -> Tensor {
        assert_eq!(
            element_count(&dims),
            values.len(),
            "shape does not match data"
        );
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::from_raw(DataType::I32, dims, raw).expect("size checked above")
    }

    pub fn from_u8(dtype: DataType, dims: Vec<i64>, values: Vec<u8>) -> Tensor {
        assert!(matches!(
            dtype,
            DataType::U8 | DataType::I8 | DataType::Bool
        ));
        Tensor::from_raw(dtype, dims, values).expect("shape does not match data")
    }

    /// Number of elements (1 for a scalar).
    pub fn len(&self) -> usize {
        element_count(&self.dims)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Raw packed bytes; `None` for string tensors.
    pub fn raw(&self) -> Option<&[u8]> {
        match &self.data {
            TensorData::Raw(r) => Some(r),
            TensorData::Strings(_) => None,
        }
    }

    /// Size of the data in bytes (strings: the sum of their lengths).
    pub fn byte_size(&self) -> usize {
        match &self.data {
            TensorData::Raw(r) => r.len(),
            TensorData::Strings(s) => s.iter().map(Vec::len).sum(),
        }
    }

    /// Values as f32 for the common real-valued dtypes, `None` for others.
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        let raw = self.raw()?;
        Some(match self.dtype {
            DataType::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            DataType::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            DataType::F16 => raw
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            DataType::BF16 => raw
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            _ => self.to_i64_vec()?.into_iter().map(|v| v as f32).collect(),
        })
    }

    /// Values as i64 for the integer dtypes and bool, `None` for others.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        let raw = self.raw()?;
        let n = self.len();
        Some(match self.dtype {
            DataType::I64 => raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            DataType::U64 => raw
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            DataType::I32 => raw
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            DataType::U32 => raw
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            DataType::I16 => raw
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DataType::U16 => raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DataType::I8 => raw.iter().map(|&b| b as i8 as i64).collect(),
            DataType::U8 | DataType::Bool => raw.iter().map(|&b| b as i64).collect(),
            DataType::U4 | DataType::I4 => (0..n)
                .map(|i| {
                    let nib = (raw[i / 2] >> (4 * (i % 2))) & 0xf;
                    if self.dtype == DataType::I4 {
                        ((nib << 4) as i8 >> 4) as i64
                    } else {
                        nib as i64
                    }
                })
                .collect(),
            DataType::U2 | DataType::I2 => (0..n)
                .map(|i| {
                    let v = (raw[i / 4] >> (2 * (i % 4))) & 0x3;
                    if self.dtype == DataType::I2 {
                        ((v << 6) as i8 >> 6) as i64
                    } else {
                        v as i64
                    }
                })
                .collect(),
            _ => return None,
        })
    }

    /// A checksum of dtype, shape and data, stable across platforms and
    /// releases (FNV-1a 64, computed here rather than with std's hasher,
    /// whose algorithm is unspecified).
    pub fn checksum(&self) -> u64 {
        let mut h = Fnv64::new();
        h.write(&self.dtype.onnx_code().to_le_bytes());
        h.write(&(self.dims.len() as u64).to_le_bytes());
        for d in &self.dims {
            h.write(&d.to_le_bytes());
        }
        match &self.data {
            TensorData::Raw(r) => h.write(r),
            TensorData::Strings(s) => {
                for e in s {
                    h.write(&(e.len() as u64).to_le_bytes());
                    h.write(e);
                }
            }
        }
        h.finish()
    }
}

/// Number of elements of a shape (1 for a scalar, 0 if any dim is 0 or negative).
pub fn element_count(dims: &[i64]) -> usize {
    dims.iter().map(|&d| d.max(0) as usize).product()
}

/// IEEE half to f32, exact.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if mant == 0 {
            sign
        } else {
            // Subnormal half: renormalise.
            let mut e = 127 - 15 + 1;
            let mut m = mant;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (mant << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (mant << 13)
    };
    f32::from_bits(bits)
}

/// FNV-1a, 64-bit.
#[derive(Clone, Copy)]
pub struct Fnv64(u64);

impl Fnv64 {
    pub fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
    pub fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_vector() {
        let mut h = Fnv64::new();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn int4_unpacks_signed() {
        let t = Tensor::from_raw(DataType::I4, vec![3], vec![0x8f, 0x07]).unwrap();
        assert_eq!(t.to_i64_vec().unwrap(), vec![-1, -8, 7]);
    }

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn raw_size_is_checked() {
        assert!(Tensor::from_raw(DataType::F32, vec![2], vec![0; 7]).is_err());
    }
}
