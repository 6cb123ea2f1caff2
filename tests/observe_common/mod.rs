//! Shared helpers for the observer integration tests: reading the committed
//! reference JSON files and building observers from their configs.
#![allow(dead_code)]

use onnxq::observe::{
    HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver, ObserverState, PerChannelMinMaxObserver, QDtype,
    QScheme, QuantSpec,
};
use serde_json::Value;

pub fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Minimal standard base64 decoder (the tests take no extra dependencies).
pub fn b64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// A batch: (data, shape).
pub type Batch = (Vec<f32>, Vec<usize>);

pub fn batches(refs: &Value, dataset: &str) -> Vec<Batch> {
    refs["datasets"][dataset]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let bytes = b64_decode(b["data"].as_str().unwrap());
            let data = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let shape = b["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            (data, shape)
        })
        .collect()
}

pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub fn dtype(s: &str) -> QDtype {
    match s {
        "quint8" => QDtype::QUInt8,
        "qint8" => QDtype::QInt8,
        "uint8" => QDtype::UInt8,
        "int8" => QDtype::Int8,
        "int16" => QDtype::Int16,
        "uint16" => QDtype::UInt16,
        other => panic!("dtype {other}"),
    }
}

pub fn qscheme(s: &str) -> QScheme {
    match s {
        "per_tensor_affine" => QScheme::PerTensorAffine,
        "per_tensor_symmetric" => QScheme::PerTensorSymmetric,
        "per_channel_affine" => QScheme::PerChannelAffine,
        "per_channel_symmetric" => QScheme::PerChannelSymmetric,
        other => panic!("qscheme {other}"),
    }
}

pub fn spec(cfg: &Value) -> QuantSpec {
    let mut s = QuantSpec::new(
        dtype(cfg["dtype"].as_str().unwrap()),
        qscheme(cfg["qscheme"].as_str().unwrap()),
    )
    .with_reduce_range(cfg["reduce_range"].as_bool().unwrap_or(false));
    if let (Some(a), Some(b)) = (cfg["quant_min"].as_i64(), cfg["quant_max"].as_i64()) {
        s = s.with_range(a, b);
    }
    if let Some(e) = cfg["eps"].as_f64() {
        s = s.with_eps(e as f32);
    }
    s
}

/// Builds the observer a torch-reference config describes.
pub fn build(cfg: &Value) -> ObserverState {
    let s = spec(cfg);
    let c = cfg["averaging_constant"].as_f64().unwrap_or(0.01);
    let axis = cfg["ch_axis"].as_i64().unwrap_or(0);
    match cfg["kind"].as_str().unwrap() {
        "min_max" => ObserverState::MinMax(MinMaxObserver::new(s).unwrap()),
        "moving_average_min_max" => {
            ObserverState::MovingAverageMinMax(MovingAverageMinMaxObserver::new(s, c).unwrap())
        }
        "per_channel_min_max" => {
            ObserverState::PerChannelMinMax(PerChannelMinMaxObserver::new(s, axis).unwrap())
        }
        "moving_average_per_channel_min_max" => ObserverState::MovingAveragePerChannelMinMax(
            MovingAveragePerChannelMinMaxObserver::new(s, axis, c).unwrap(),
        ),
        "histogram" => ObserverState::Histogram(HistogramObserver::new(s).unwrap()),
        other => panic!("kind {other}"),
    }
}
