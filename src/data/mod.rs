//! Reading and writing tensors as NumPy `.npy` / `.npz` files (calibration
//! data, evaluation sets, `run` inputs and outputs).

use crate::error::{Error, Result};
use crate::ir::{DataType, Tensor};
use std::io::{Read, Seek};
use std::path::Path;

fn npy_dtype(descr: &str) -> Option<DataType> {
    Some(match descr.trim_start_matches(['<', '|', '=']) {
        "f4" => DataType::F32,
        "f8" => DataType::F64,
        "f2" => DataType::F16,
        "i8" => DataType::I64,
        "i4" => DataType::I32,
        "i2" => DataType::I16,
        "i1" => DataType::I8,
        "u8" => DataType::U64,
        "u4" => DataType::U32,
        "u2" => DataType::U16,
        "u1" => DataType::U8,
        "b1" => DataType::Bool,
        _ => return None,
    })
}

fn npy_descr(dt: DataType) -> Option<&'static str> {
    Some(match dt {
        DataType::F32 => "<f4",
        DataType::F64 => "<f8",
        DataType::F16 => "<f2",
        DataType::I64 => "<i8",
        DataType::I32 => "<i4",
        DataType::I16 => "<i2",
        DataType::I8 => "|i1",
        DataType::U64 => "<u8",
        DataType::U32 => "<u4",
        DataType::U16 => "<u2",
        DataType::U8 => "|u1",
        DataType::Bool => "|b1",
        _ => return None,
    })
}

fn read_npy_from<R: Read>(r: R, what: &str) -> Result<Tensor> {
    let npy = npyz::NpyFile::new(r)
        .map_err(|e| Error::invalid(format!("{what}: not a .npy array: {e}")))?;
    tensor_from_npy(npy, what)
}

/// Checks an opened `.npy` array's header (C order, little-endian, a numeric
/// dtype) and returns its dtype, its shape, and the reader positioned at the
/// data, so that callers can stream the data instead of loading it.
pub fn npy_data_reader<R: Read>(
    npy: npyz::NpyFile<R>,
    what: &str,
) -> Result<(DataType, Vec<i64>, R)> {
    if npy.order() != npyz::Order::C {
        return Err(Error::invalid(format!(
            "{what}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray"
        )));
    }
    let descr = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => {
            return Err(Error::invalid(format!(
                "{what}: unsupported dtype {other:?}"
            )))
        }
    };
    if descr.starts_with('>') && !descr.ends_with('1') {
        return Err(Error::invalid(format!(
            "{what}: big-endian arrays are not supported"
        )));
    }
    let dtype = npy_dtype(&descr)
        .ok_or_else(|| Error::invalid(format!("{what}: unsupported dtype `{descr}`")))?;
    let dims: Vec<i64> = npy.shape().iter().map(|&d| d as i64).collect();
    Ok((dtype, dims, npy.into_inner()))
}

fn tensor_from_npy<R: Read>(npy: npyz::NpyFile<R>, what: &str) -> Result<Tensor> {
    let (dtype, dims, mut reader) = npy_data_reader(npy, what)?;
    let n: usize = dims.iter().map(|&d| d as usize).product();
    let width = dtype.bit_width().expect("numeric") / 8;
    let mut raw = vec![0u8; n * width];
    reader
        .read_exact(&mut raw)
        .map_err(|e| Error::invalid(format!("{what}: truncated array data: {e}")))?;
    if dtype == DataType::Bool {
        raw.iter_mut().for_each(|b| *b = (*b != 0) as u8);
    }
    Tensor::from_raw(dtype, dims, raw).map_err(|e| Error::invalid(format!("{what}: {e}")))
}

/// Reads one `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_npy_from(std::io::BufReader::new(f), &path.display().to_string())
}

/// Reads every array of an `.npz` file, in archive order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_npz_from(std::io::BufReader::new(f), &path.display().to_string())
}

fn read_npz_from<R: Read + Seek>(r: R, what: &str) -> Result<Vec<(String, Tensor)>> {
    let mut npz = npyz::npz::NpzArchive::new(r)
        .map_err(|e| Error::invalid(format!("{what}: not an .npz archive: {e}")))?;
    let names: Vec<String> = npz.array_names().map(str::to_string).collect();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let file = npz
            .by_name(&name)
            .map_err(|e| Error::invalid(format!("{what}: array `{name}`: {e}")))?
            .ok_or_else(|| {
                Error::invalid(format!("{what}: array `{name}` is listed but missing"))
            })?;
        let t = tensor_from_npy(file, &format!("{what}: array `{name}`"))?;
        out.push((name, t));
    }
    Ok(out)
}

/// Serializes a tensor as `.npy` bytes (version 1.0 header).
pub fn npy_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let descr = npy_descr(t.dtype)
        .ok_or_else(|| Error::Unsupported(format!("cannot write {} tensors as .npy", t.dtype)))?;
    let shape = match t.dims.len() {
        0 => "()".to_string(),
        1 => format!("({},)", t.dims[0]),
        _ => format!(
            "({})",
            t.dims
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending with '\n'.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.div_ceil(64) * 64 - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.byte_size());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(t.raw().expect("numeric tensor"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip() {
        let t = Tensor::from_f32(vec![2, 3], &[1.0, -2.0, 3.5, 0.0, 1e-7, f32::MAX]);
        let bytes = npy_bytes(&t).unwrap();
        let back = read_npy_from(&bytes[..], "test").unwrap();
        assert_eq!(back, t);
        let s = Tensor::from_i64(vec![], &[7]);
        assert_eq!(read_npy_from(&npy_bytes(&s).unwrap()[..], "t").unwrap(), s);
    }

    #[test]
    fn garbage_is_an_error() {
        let e = read_npy_from(&b"hello world"[..], "x.npy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.npy"), "{e}");
    }
}
