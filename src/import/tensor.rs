//! `TensorProto` → [`Tensor`]: every storage field, every data type, and
//! external data files.

use crate::ir::{DataType, Tensor, TensorData};
use crate::onnx::pb;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

/// Decodes a tensor, reading external data relative to `model_dir`.
pub fn tensor_from_proto(t: &pb::TensorProto, model_dir: Option<&Path>) -> Result<Tensor, String> {
    let dtype = DataType::from_onnx(t.data_type).ok_or_else(|| match t.data_type {
        0 => "data type is UNDEFINED".to_string(),
        c => format!("unknown data type code {c}"),
    })?;
    let dims = t.dims.clone();
    if let Some(d) = dims.iter().find(|&&d| d < 0) {
        return Err(format!("negative dimension {d} in shape {dims:?}"));
    }
    let n: usize = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .ok_or("shape overflows")?;
    let mut tensor = if t.data_location == pb::tensor_proto::DataLocation::External as i32 {
        let raw = read_external(t, model_dir)?;
        Tensor::from_raw(dtype, dims, raw).map_err(|e| e.to_string())?
    } else if dtype == DataType::String {
        Tensor::from_strings(dims, t.string_data.clone()).map_err(|e| e.to_string())?
    } else if !t.raw_data.is_empty() || n == 0 {
        Tensor::from_raw(dtype, dims, t.raw_data.clone()).map_err(|e| e.to_string())?
    } else {
        Tensor::from_raw(dtype, dims, typed_to_raw(t, dtype, n)?).map_err(|e| e.to_string())?
    };
    tensor.doc_string = t.doc_string.clone();
    tensor.metadata_props = super::kv(&t.metadata_props);
    debug_assert!(matches!(tensor.data, TensorData::Raw(_)) || dtype == DataType::String);
    Ok(tensor)
}

/// Converts the typed `*_data` fields to the packed little-endian layout.
fn typed_to_raw(t: &pb::TensorProto, dtype: DataType, n: usize) -> Result<Vec<u8>, String> {
    use DataType::*;
    let wrong = |field: &str| {
        format!("{dtype} tensor stores its data in `{field}`, which is not allowed for {dtype}")
    };
    let mut out = Vec::with_capacity(dtype.packed_len(n).unwrap_or(0));
    if !t.float_data.is_empty() {
        if !matches!(dtype, F32 | Complex64) {
            return Err(wrong("float_data"));
        }
        t.float_data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    } else if !t.double_data.is_empty() {
        if !matches!(dtype, F64 | Complex128) {
            return Err(wrong("double_data"));
        }
        t.double_data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    } else if !t.int64_data.is_empty() {
        if dtype != I64 {
            return Err(wrong("int64_data"));
        }
        t.int64_data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    } else if !t.uint64_data.is_empty() {
        match dtype {
            U64 => t
                .uint64_data
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            U32 => t
                .uint64_data
                .iter()
                .for_each(|v| out.extend_from_slice(&(*v as u32).to_le_bytes())),
            _ => return Err(wrong("uint64_data")),
        }
    } else if !t.int32_data.is_empty() {
        let d = &t.int32_data;
        match dtype {
            I32 => d
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            U16 | I16 | F16 | BF16 => d
                .iter()
                .for_each(|v| out.extend_from_slice(&(*v as u16).to_le_bytes())),
            U8 | I8 | Bool | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | F8E8M0 => {
                d.iter().for_each(|v| out.push(*v as u8))
            }
            // Each int32 holds one already-packed byte (2 nibbles / 4 crumbs).
            U4 | I4 | F4E2M1 | U2 | I2 => d.iter().for_each(|v| out.push(*v as u8)),
            F6E2M3 | F6E3M2 => out = pack_6bit(d),
            _ => return Err(wrong("int32_data")),
        }
    } else {
        return Err(format!("no data for {n} element(s) of {dtype}"));
    }
    Ok(out)
}

/// Packs 6-bit values (one per int32) into the LSB-first bit stream of `raw_data`.
fn pack_6bit(values: &[i32]) -> Vec<u8> {
    let mut out = vec![0u8; (values.len() * 6).div_ceil(8)];
    for (i, v) in values.iter().enumerate() {
        let bits = (*v as u32 & 0x3f) as u16;
        let bit = i * 6;
        let (byte, shift) = (bit / 8, bit % 8);
        let w = bits << shift;
        out[byte] |= w as u8;
        if shift > 2 {
            out[byte + 1] |= (w >> 8) as u8;
        }
    }
    out
}

fn read_external(t: &pb::TensorProto, model_dir: Option<&Path>) -> Result<Vec<u8>, String> {
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.as_str())
    };
    let location = get("location").ok_or("external data without a `location`")?;
    let rel = Path::new(location);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!(
            "external data location `{location}` must be a relative path inside the model's folder"
        ));
    }
    let dir = model_dir.ok_or_else(|| {
        format!("external data `{location}` but the model was not read from a file")
    })?;
    let path = dir.join(rel);
    let parse = |k: &str| -> Result<Option<u64>, String> {
        get(k)
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| format!("external data `{k}` is not a number: `{s}`"))
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let mut f = std::fs::File::open(&path)
        .map_err(|e| format!("cannot open external data file {}: {e}", path.display()))?;
    let file_len = f.metadata().map_err(|e| e.to_string())?.len();
    let length = match parse("length")? {
        Some(l) => l,
        None => file_len
            .checked_sub(offset)
            .ok_or("external data offset is past the end of the file")?,
    };
    if offset.checked_add(length).is_none_or(|end| end > file_len) {
        return Err(format!(
            "external data file {} has {file_len} bytes, but the tensor needs bytes {offset}..{}",
            path.display(),
            offset + length
        ));
    }
    f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; length as usize];
    f.read_exact(&mut buf)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dtype: DataType, dims: Vec<i64>) -> pb::TensorProto {
        pb::TensorProto {
            data_type: dtype.onnx_code(),
            dims,
            name: "t".into(),
            ..Default::default()
        }
    }

    #[test]
    fn typed_fields_become_raw() {
        let mut p = proto(DataType::F16, vec![2]);
        p.int32_data = vec![0x3c00, 0xc000];
        let t = tensor_from_proto(&p, None).unwrap();
        assert_eq!(t.raw().unwrap(), &[0x00, 0x3c, 0x00, 0xc0]);
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.0, -2.0]);

        let mut p = proto(DataType::I4, vec![3]);
        p.int32_data = vec![0x8f, 0x07];
        assert_eq!(
            tensor_from_proto(&p, None).unwrap().to_i64_vec().unwrap(),
            vec![-1, -8, 7]
        );
    }

    #[test]
    fn six_bit_packing_matches_spec() {
        // byte0 = x0 | ((x1 & 0x3) << 6); byte1 = (x1 >> 2) | ((x2 & 0xF) << 4); byte2 = (x2 >> 4) | (x3 << 2)
        let x = [0x15, 0x2a, 0x33, 0x0f];
        let b = pack_6bit(&x);
        assert_eq!(b[0], (x[0] | ((x[1] & 3) << 6)) as u8);
        assert_eq!(b[1], ((x[1] >> 2) | ((x[2] & 0xf) << 4)) as u8);
        assert_eq!(b[2], ((x[2] >> 4) | (x[3] << 2)) as u8);
    }

    #[test]
    fn unknown_dtype_and_bad_sizes_are_errors() {
        let p = pb::TensorProto {
            data_type: 99,
            ..Default::default()
        };
        assert!(tensor_from_proto(&p, None)
            .unwrap_err()
            .contains("unknown data type code 99"));
        let mut p = proto(DataType::F32, vec![3]);
        p.raw_data = vec![0; 8];
        assert!(tensor_from_proto(&p, None).is_err());
        let mut p = proto(DataType::F32, vec![1]);
        p.int64_data = vec![1];
        assert!(tensor_from_proto(&p, None).is_err());
    }
}
