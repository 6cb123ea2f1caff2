//! `quantize-embeddings`: a Gather in a large float table becomes an int8 lookup with one
//! scale per row, in every mode. Checked on a small token model: the table is stored as
//! int8 (and the float one is gone), each looked-up row equals its per-row dequantization
//! exactly, and the emitted model runs in tract and in onnxq's executor with the float
//! model's outputs. ONNX Runtime runs it in tests/python/test_ort_quantize_modes.py.

mod common;

use common::{f32_tensor, node_proto, opset13_model, sqnr_db, value_info, write_npz};
use onnxq::executor::{Executor, ExecutorOptions};
use onnxq::ir::{Model, Tensor};
use onnxq::onnx::pb;
use onnxq::quantize::{quantize, BiasCorrection, Calibration, Mode, QuantizeOptions};
use prost::Message;

const VOCAB: usize = 300;
const DIM: usize = 16;

/// Row `r` of the table: values of very different norms from row to row (one scale for
/// the whole table would flatten the small rows).
fn table() -> Vec<f32> {
    (0..VOCAB * DIM)
        .map(|i| {
            let (r, c) = (i / DIM, i % DIM);
            let norm = 0.01 * (1 + r % 37) as f32;
            norm * (((r * 31 + c * 17) % 23) as f32 - 11.0) / 11.0
        })
        .collect()
}

/// ids [2, 5] int64 → Gather(table [VOCAB, DIM]) → MatMul(w [DIM, 8]) → y [2, 5, 8];
/// `vocab` rows (a table under 4096 elements stays float).
fn token_model(vocab: usize) -> Model {
    let w: Vec<f32> = (0..DIM * 8)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0)
        .collect();
    let proto = opset13_model(
        vec![
            node_proto("Gather", "embed", &["table", "ids"], "e"),
            node_proto("MatMul", "proj", &["e", "w"], "y"),
        ],
        vec![
            f32_tensor(
                "table",
                &[vocab as i64, DIM as i64],
                table()[..vocab * DIM].to_vec(),
            ),
            f32_tensor("w", &[DIM as i64, 8], w),
        ],
        vec![value_info(
            "ids",
            pb::tensor_proto::DataType::Int64 as i32,
            &[2, 5],
        )],
        vec![value_info(
            "y",
            pb::tensor_proto::DataType::Float as i32,
            &[2, 5, 8],
        )],
    );
    onnxq::import::import_bytes(&proto.encode_to_vec(), None, &Default::default()).unwrap()
}

fn ids(seed: i64) -> Tensor {
    let v: Vec<i64> = (0..10)
        .map(|i| (seed * 97 + i * 41) % VOCAB as i64)
        .collect();
    Tensor::from_i64(vec![2, 5], &v)
}

fn quantized(model: &Model, mode: Mode, exclude: &[&str], exclude_op: &[&str]) -> Model {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data = std::env::temp_dir().join(format!("onnxq-embed-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    for k in 0..4 {
        write_npz(&data.join(format!("s{k}.npz")), &[("ids", &ids(k))]);
    }
    let options = QuantizeOptions {
        mode: mode.clone(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        exclude_op: exclude_op.iter().map(|s| s.to_string()).collect(),
        bias_correction: BiasCorrection::Off,
        ..Default::default()
    };
    let calibration = (mode == Mode::Static).then_some(Calibration::Data(&data));
    let q = quantize(model.clone(), calibration, &options)
        .unwrap()
        .model;
    std::fs::remove_dir_all(&data).ok();
    q
}

fn constants(m: &Model) -> Vec<(String, Tensor)> {
    let g = &m.graph;
    g.value_ids()
        .filter_map(|v| {
            g.const_tensor(v)
                .map(|t| (g.value(v).name.clone(), t.clone()))
        })
        .collect()
}

fn output(m: &Model, x: &Tensor) -> Vec<f32> {
    let exec = Executor::new(m, ExecutorOptions::default()).unwrap();
    let out = exec.run(&[("ids", x)]).unwrap();
    out[0].1.to_f32_vec().unwrap()
}

fn tract_output(m: &Model, x: &Tensor) -> Vec<f32> {
    let bytes = onnxq::emit::to_bytes(m);
    let out = onnxq::tract_runner::run_once(&bytes, None, std::slice::from_ref(x)).unwrap();
    out[0].to_f32_vec().unwrap()
}

#[test]
fn every_mode_stores_the_table_as_int8_rows() {
    let float = token_model(VOCAB);
    for mode in [
        Mode::Static,
        Mode::Dynamic,
        Mode::WeightOnly { bits: 8, block: 32 },
    ] {
        let q = quantized(&float, mode.clone(), &[], &[]);
        let consts = constants(&q);
        assert!(
            !consts
                .iter()
                .any(|(_, t)| t.dims == [VOCAB as i64, DIM as i64] && t.dtype.is_float()),
            "{mode:?}: the float table is gone"
        );
        let (_, tq) = consts
            .iter()
            .find(|(_, t)| t.dims == [VOCAB as i64, DIM as i64])
            .expect("an int8 table");
        assert_eq!(tq.dtype, onnxq::ir::DataType::I8, "{mode:?}");
        let (_, ts) = consts
            .iter()
            .find(|(_, t)| t.dims == [VOCAB as i64, 1])
            .expect("one scale per row");
        // Per row: symmetric, max |w| ↦ 127, round half to even.
        let (q8, scales) = (tq.to_i64_vec().unwrap(), ts.to_f32_vec().unwrap());
        let w = table();
        for r in 0..VOCAB {
            let row = &w[r * DIM..(r + 1) * DIM];
            let amax = row.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
            assert_eq!(scales[r], amax / 127.0, "{mode:?}: row {r} scale");
            for c in 0..DIM {
                let want = (row[c] / scales[r]).round_ties_even() as i64;
                assert_eq!(q8[r * DIM + c], want, "{mode:?}: row {r} col {c}");
            }
        }
        // The model computes the same thing: the lookup, then the projection.
        for seed in [11, 12] {
            let x = ids(seed);
            let want = tract_output(&float, &x);
            let got = tract_output(&q, &x);
            let db = sqnr_db(&want, &got);
            println!("{mode:?}: tract SQNR {db:.1} dB");
            // Static mode also rounds the activations, with ranges seen on other tokens.
            let floor = if mode == Mode::Static { 25.0 } else { 35.0 };
            assert!(db > floor, "{mode:?}: tract SQNR {db:.1} dB");
            let mine = output(&q, &x);
            let err = mine
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let top = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(err <= 0.02 * top, "{mode:?}: executor vs tract {err}");
        }
    }
}

#[test]
fn the_lookup_equals_the_dequantized_table() {
    // With the projection excluded, the output is the looked-up rows themselves.
    let float = token_model(VOCAB);
    let q = quantized(
        &float,
        Mode::WeightOnly { bits: 8, block: 32 },
        &["proj"],
        &[],
    );
    let x = ids(5);
    let got = output(&q, &x);
    let w = table();
    let idx = x.to_i64_vec().unwrap();
    let w_proj: Vec<f32> = (0..DIM * 8)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0)
        .collect();
    for (t, &row) in idx.iter().enumerate() {
        let row = &w[row as usize * DIM..(row as usize + 1) * DIM];
        let amax = row.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
        let s = amax / 127.0;
        let deq: Vec<f32> = row.iter().map(|&v| (v / s).round_ties_even() * s).collect();
        for o in 0..8 {
            let want: f32 = (0..DIM).map(|k| deq[k] * w_proj[k * 8 + o]).sum();
            let g = got[t * 8 + o];
            assert!((g - want).abs() <= 1e-5, "token {t} out {o}: {g} vs {want}");
        }
    }
}

#[test]
fn excluded_or_small_tables_stay_float() {
    let float = token_model(VOCAB);
    let has_float_table = |m: &Model, rows: usize| {
        constants(m)
            .iter()
            .any(|(_, t)| t.dims == [rows as i64, DIM as i64] && t.dtype.is_float())
    };
    let q = quantized(&float, Mode::Static, &["embed"], &[]);
    assert!(has_float_table(&q, VOCAB), "--exclude embed");
    let q = quantized(&float, Mode::Dynamic, &[], &["Gather"]);
    assert!(has_float_table(&q, VOCAB), "--exclude-op Gather");
    // 200 × 16 = 3200 elements: not worth it.
    let q = quantized(&token_model(200), Mode::Dynamic, &[], &[]);
    assert!(has_float_table(&q, 200), "a small table");
}
