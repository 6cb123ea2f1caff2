//! Run-time tensors of the executor: a shape and typed, owned element storage.
//!
//! The IR's [`Tensor`] keeps raw little-endian bytes (the file's form); kernels want typed
//! slices, so values are converted once at the graph boundary (inputs, constants, outputs).

use crate::ir::{DataType, Tensor};

/// Typed element storage. Only the element types the executor computes with have a variant;
/// anything else is refused when the model is planned or an input is bound.
#[derive(Clone, Debug, PartialEq)]
pub enum ArrayData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    Bool(Vec<bool>),
}

/// Applies `$body` to the vector inside any [`ArrayData`] and wraps the result in the same
/// variant (`$body` must return a `Vec` of the same element type).
macro_rules! map_same {
    ($d:expr, $v:ident => $body:expr) => {
        match $d {
            ArrayData::F32($v) => ArrayData::F32($body),
            ArrayData::I64($v) => ArrayData::I64($body),
            ArrayData::I32($v) => ArrayData::I32($body),
            ArrayData::U8($v) => ArrayData::U8($body),
            ArrayData::I8($v) => ArrayData::I8($body),
            ArrayData::Bool($v) => ArrayData::Bool($body),
        }
    };
}
pub(crate) use map_same;

impl ArrayData {
    pub fn len(&self) -> usize {
        match self {
            ArrayData::F32(v) => v.len(),
            ArrayData::I64(v) => v.len(),
            ArrayData::I32(v) => v.len(),
            ArrayData::U8(v) => v.len(),
            ArrayData::I8(v) => v.len(),
            ArrayData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DataType {
        match self {
            ArrayData::F32(_) => DataType::F32,
            ArrayData::I64(_) => DataType::I64,
            ArrayData::I32(_) => DataType::I32,
            ArrayData::U8(_) => DataType::U8,
            ArrayData::I8(_) => DataType::I8,
            ArrayData::Bool(_) => DataType::Bool,
        }
    }

    /// Gathers elements by flat source index (the building block of every layout op).
    pub fn take(&self, idx: &[usize]) -> ArrayData {
        map_same!(self, v => idx.iter().map(|&i| v[i]).collect())
    }

    /// No elements of type `dt`; `None` for a type the executor does not compute with.
    pub fn empty(dt: DataType) -> Option<ArrayData> {
        Some(match dt {
            DataType::F32 => ArrayData::F32(vec![]),
            DataType::I64 => ArrayData::I64(vec![]),
            DataType::I32 => ArrayData::I32(vec![]),
            DataType::U8 => ArrayData::U8(vec![]),
            DataType::I8 => ArrayData::I8(vec![]),
            DataType::Bool => ArrayData::Bool(vec![]),
            _ => return None,
        })
    }

    /// An empty vector of the same type with room for `n` elements.
    pub fn empty_like(&self, n: usize) -> ArrayData {
        map_same!(self, _v => Vec::with_capacity(n))
    }

    /// Appends a slice `[start, end)` of `src` (same type) to `self`.
    pub fn extend_from(&mut self, src: &ArrayData, start: usize, end: usize) -> Result<(), String> {
        match (self, src) {
            (ArrayData::F32(a), ArrayData::F32(b)) => a.extend_from_slice(&b[start..end]),
            (ArrayData::I64(a), ArrayData::I64(b)) => a.extend_from_slice(&b[start..end]),
            (ArrayData::I32(a), ArrayData::I32(b)) => a.extend_from_slice(&b[start..end]),
            (ArrayData::U8(a), ArrayData::U8(b)) => a.extend_from_slice(&b[start..end]),
            (ArrayData::I8(a), ArrayData::I8(b)) => a.extend_from_slice(&b[start..end]),
            (ArrayData::Bool(a), ArrayData::Bool(b)) => a.extend_from_slice(&b[start..end]),
            (a, b) => {
                return Err(format!(
                    "inputs of different types ({} and {})",
                    a.dtype(),
                    b.dtype()
                ))
            }
        }
        Ok(())
    }

    /// Every element as f64 (exact for all supported types but i64 beyond 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            ArrayData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::U8(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::I8(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }

    /// Every element as i64 (floats truncate toward zero, as ONNX Cast does).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match self {
            ArrayData::F32(v) => v.iter().map(|&x| x as i64).collect(),
            ArrayData::I64(v) => v.clone(),
            ArrayData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            ArrayData::U8(v) => v.iter().map(|&x| x as i64).collect(),
            ArrayData::I8(v) => v.iter().map(|&x| x as i64).collect(),
            ArrayData::Bool(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }
}

/// A run-time tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: ArrayData,
}

/// Whether the executor computes with this element type.
pub fn supported_dtype(dt: DataType) -> bool {
    ArrayData::empty(dt).is_some()
}

impl Array {
    pub fn new(shape: Vec<usize>, data: ArrayData) -> Result<Array, String> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(format!(
                "shape {shape:?} holds {n} elements, data has {}",
                data.len()
            ));
        }
        Ok(Array { shape, data })
    }

    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> Array {
        debug_assert_eq!(shape.iter().product::<usize>(), v.len());
        Array {
            shape,
            data: ArrayData::F32(v),
        }
    }

    pub fn i64(shape: Vec<usize>, v: Vec<i64>) -> Array {
        debug_assert_eq!(shape.iter().product::<usize>(), v.len());
        Array {
            shape,
            data: ArrayData::I64(v),
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn dtype(&self) -> DataType {
        self.data.dtype()
    }

    pub fn as_f32(&self) -> Result<&[f32], String> {
        match &self.data {
            ArrayData::F32(v) => Ok(v),
            d => Err(format!("expected a float tensor, got {}", d.dtype())),
        }
    }

    /// Integer contents (any integer or bool type), e.g. shapes, axes, indices.
    pub fn ints(&self) -> Result<Vec<i64>, String> {
        match &self.data {
            ArrayData::F32(_) => Err("expected an integer tensor, got f32".into()),
            d => Ok(d.to_i64_vec()),
        }
    }

    /// Converts from the IR's raw form.
    pub fn from_tensor(t: &Tensor) -> Result<Array, String> {
        let shape = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
            .collect::<Result<Vec<_>, _>>()?;
        let raw = t
            .raw()
            .ok_or_else(|| "string tensors are not supported".to_string())?;
        let n: usize = shape.iter().product();
        let want = t.dtype.packed_len(n).unwrap_or(usize::MAX);
        if raw.len() != want {
            return Err(format!(
                "{} tensor of shape {shape:?} needs {want} bytes, has {}",
                t.dtype,
                raw.len()
            ));
        }
        let data = match t.dtype {
            DataType::F32 => ArrayData::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            DataType::I64 => ArrayData::I64(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            ),
            DataType::I32 => ArrayData::I32(
                raw.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            DataType::U8 => ArrayData::U8(raw.to_vec()),
            DataType::I8 => ArrayData::I8(raw.iter().map(|&b| b as i8).collect()),
            DataType::Bool => ArrayData::Bool(raw.iter().map(|&b| b != 0).collect()),
            // 4-bit weights (DequantizeLinear's only use of them) are held widened to
            // 8 bits: ONNX packs two per byte, the first element in the low nibble.
            DataType::I4 => ArrayData::I8(
                (0..n)
                    .map(|i| (((raw[i / 2] >> (4 * (i % 2))) << 4) as i8) >> 4)
                    .collect(),
            ),
            DataType::U4 => ArrayData::U8(
                (0..n)
                    .map(|i| (raw[i / 2] >> (4 * (i % 2))) & 0x0f)
                    .collect(),
            ),
            other => return Err(format!("element type {other} is not supported")),
        };
        Ok(Array { shape, data })
    }

    /// Converts to the IR's raw form.
    pub fn to_tensor(&self) -> Tensor {
        let raw: Vec<u8> = match &self.data {
            ArrayData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ArrayData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ArrayData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ArrayData::U8(v) => v.clone(),
            ArrayData::I8(v) => v.iter().map(|&x| x as u8).collect(),
            ArrayData::Bool(v) => v.iter().map(|&x| x as u8).collect(),
        };
        let dims = self.shape.iter().map(|&d| d as i64).collect();
        Tensor::from_raw(self.dtype(), dims, raw).expect("size matches the shape by construction")
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Normalises a possibly negative axis for a tensor of `rank` (`rank` itself is allowed when
/// `inclusive`, as Unsqueeze and Flatten need).
pub fn norm_axis(axis: i64, rank: usize, inclusive: bool) -> Result<usize, String> {
    let r = rank as i64 + i64::from(inclusive);
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// The numpy broadcast of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(format!("shapes {a:?} and {b:?} do not broadcast"));
        };
    }
    Ok(out)
}

/// Strides of `shape` viewed as broadcast to `out` (0 along broadcast dimensions).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let s = strides(shape);
    let off = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < off || shape[i - off] == 1 {
                0
            } else {
                s[i - off]
            }
        })
        .collect()
}

/// Flat source indices of `shape` broadcast to `out` (used by Expand and broadcasting ops).
pub fn broadcast_index(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let st = broadcast_strides(shape, out);
    let mut idx = Vec::with_capacity(out.iter().product());
    for_each_offset(out, &st, |off| idx.push(off));
    idx
}

/// Calls `f` with the input offset of every index of `dims` (strides `st`), last dim fastest.
pub fn for_each_offset(dims: &[usize], st: &[usize], mut f: impl FnMut(usize)) {
    let r = dims.len();
    let count: usize = dims.iter().product();
    let mut pos = vec![0usize; r];
    let mut off = 0usize;
    for _ in 0..count {
        f(off);
        for d in (0..r).rev() {
            pos[d] += 1;
            off += st[d];
            if pos[d] < dims[d] {
                break;
            }
            off -= st[d] * pos[d];
            pos[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_indices() {
        assert_eq!(broadcast_shape(&[2, 1, 3], &[4, 1]).unwrap(), vec![2, 4, 3]);
        assert!(broadcast_shape(&[2, 3], &[4]).is_err());
        assert_eq!(broadcast_index(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_index(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn tensor_round_trip() {
        let t = Tensor::from_i32(vec![2], &[-5, 7]);
        assert_eq!(Array::from_tensor(&t).unwrap().to_tensor(), t);
        let bad = Tensor::from_raw(DataType::F16, vec![1], vec![0, 0]).unwrap();
        assert!(Array::from_tensor(&bad).unwrap_err().contains("f16"));
    }

    #[test]
    fn four_bit_constants_unpack_low_nibble_first() {
        // Elements -8, 7, -1 (odd count: the last byte's high nibble is padding).
        let t = Tensor::from_raw(DataType::I4, vec![3], vec![0x78, 0x0f]).unwrap();
        let a = Array::from_tensor(&t).unwrap();
        assert!(matches!(&a.data, ArrayData::I8(v) if v == &[-8, 7, -1]));
        let t = Tensor::from_raw(DataType::U4, vec![3], vec![0xf0, 0x09]).unwrap();
        let a = Array::from_tensor(&t).unwrap();
        assert!(matches!(&a.data, ArrayData::U8(v) if v == &[0, 15, 9]));
    }
}
