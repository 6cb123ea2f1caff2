//! Calibration through tract (`onnxq::calib`): data sources, the runner, the
//! thread split, and error messages.

mod common;

use common::write_npz;

use onnxq::calib::{model_inputs, CalibrationData, CalibrationOptions, Calibrator, ModelInput};
use onnxq::ir::{DataType, Model, Tensor, ValueId};
use onnxq::observe::{
    HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver, Observer, ObserverState,
    QDtype, QScheme, QuantSpec,
};
use std::path::{Path, PathBuf};

fn model(name: &str) -> Model {
    onnxq::import::import_file(common::models_dir().join(format!("{name}.onnx"))).unwrap()
}

fn spec() -> QuantSpec {
    QuantSpec::new(QDtype::QUInt8, QScheme::PerTensorAffine)
}

fn minmax(n: usize) -> Vec<ObserverState> {
    vec![ObserverState::MinMax(MinMaxObserver::new(spec()).unwrap()); n]
}

fn histogram(n: usize) -> Vec<ObserverState> {
    vec![ObserverState::Histogram(HistogramObserver::new(spec()).unwrap()); n]
}

/// Outputs of the main-graph ops of these types (f32 activations).
fn outputs_of(m: &Model, op_types: &[&str]) -> Vec<ValueId> {
    let g = &m.graph;
    let mut v = Vec::new();
    for n in g.topo_order().unwrap() {
        let node = g.node(n);
        if op_types.iter().any(|t| node.is_op(t)) {
            v.extend(node.outputs.iter().flatten().copied());
        }
    }
    v
}

fn opts(threads: usize) -> CalibrationOptions {
    CalibrationOptions {
        threads,
        show_progress: false,
    }
}

/// tract on all samples at once, with `values` as extra outputs: their
/// (min, max).
fn reference_ranges(m: &Model, values: &[ValueId], inputs: &[Tensor]) -> Vec<(f32, f32)> {
    let mut export = m.clone();
    export.graph.outputs = values.to_vec();
    let bytes = onnxq::emit::to_bytes(&export);
    let outs = onnxq::tract_runner::run_once(&bytes, None, inputs).unwrap();
    outs.iter()
        .map(|t| {
            let v = t.to_f32_vec().unwrap();
            v.iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                    (lo.min(x), hi.max(x))
                })
        })
        .collect()
}

fn ranges(obs: &[ObserverState]) -> Vec<(f32, f32)> {
    obs.iter()
        .map(|o| {
            let (lo, hi) = o.range().unwrap();
            (lo[0], hi[0])
        })
        .collect()
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("onnxq-calib-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn digits_calib() -> Tensor {
    onnxq::data::read_npy(&common::models_dir().join("digits_cnn.calib.npy")).unwrap()
}

fn err_of(r: onnxq::Result<impl std::fmt::Debug>) -> String {
    r.unwrap_err().to_string()
}

/// The first error of a data set, at open or while iterating.
fn data_error(path: &Path, inputs: &[ModelInput]) -> String {
    match CalibrationData::open(path, inputs) {
        Err(e) => e.to_string(),
        Ok(data) => {
            for b in data {
                if let Err(e) = b {
                    return e.to_string();
                }
            }
            panic!("no error from {}", path.display())
        }
    }
}

// ---- digits_cnn: exactness and the thread split -------------------------

#[test]
fn digits_minmax_equals_tract_on_all_samples() {
    let m = model("digits_cnn");
    let values = outputs_of(&m, &["Conv", "Relu", "MaxPool", "Gemm"]);
    assert!(values.len() >= 5, "{}", values.len());
    let all = digits_calib();
    assert_eq!(all.dims, vec![128, 1, 8, 8]);
    let want = reference_ranges(&m, &values, std::slice::from_ref(&all));

    let cal = Calibrator::new(&m, &values).unwrap();
    for (threads, batch) in [(1, 128), (1, 32), (2, 32), (2, 7), (2, 1)] {
        let cal = Calibrator::new(&m, &values)
            .unwrap()
            .with_options(opts(threads));
        let data = CalibrationData::open(
            &common::models_dir().join("digits_cnn.calib.npy"),
            cal.inputs(),
        )
        .unwrap()
        .with_batch_size(batch);
        assert_eq!(data.total_samples(), Some(128));
        let mut obs = minmax(values.len());
        let stats = cal.run(data, &mut obs).unwrap();
        assert_eq!(stats.samples, 128);
        assert_eq!(stats.batches, 128usize.div_ceil(batch));
        assert_eq!(stats.threads, threads);
        // batch 7: full batches and one of 2 rows, two shape sets
        let shapes = if 128 % batch == 0 { 1 } else { 2 };
        assert_eq!(stats.plans_built, shapes, "threads {threads} batch {batch}");
        let got = ranges(&obs);
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                (g.0.to_bits(), g.1.to_bits()),
                (w.0.to_bits(), w.1.to_bits()),
                "value `{}` threads {threads} batch {batch}: {g:?} vs {w:?}",
                cal.observed_names()[k]
            );
        }
    }
    // Plans are cached across runs.
    let data = CalibrationData::open(
        &common::models_dir().join("digits_cnn.calib.npy"),
        cal.inputs(),
    )
    .unwrap();
    let mut obs = minmax(values.len());
    assert_eq!(
        cal.run(data.with_batch_size(64), &mut obs)
            .unwrap()
            .plans_built,
        1
    );
    let data = CalibrationData::from_tensors(cal.inputs(), vec![digits_calib()]).unwrap();
    let mut obs = minmax(values.len());
    assert_eq!(
        cal.run(data.with_batch_size(64), &mut obs)
            .unwrap()
            .plans_built,
        0
    );
    assert_eq!(ranges(&obs), want);
}

fn run_digits(threads: usize, obs: &mut [ObserverState], values: &[ValueId], m: &Model) {
    let cal = Calibrator::new(m, values)
        .unwrap()
        .with_options(opts(threads));
    let data = CalibrationData::open(
        &common::models_dir().join("digits_cnn.calib.npy"),
        cal.inputs(),
    )
    .unwrap()
    .with_batch_size(16);
    let stats = cal.run(data, obs).unwrap();
    assert_eq!(stats.threads, threads);
    assert_eq!(stats.single_thread_reason, None);
}

#[test]
fn one_and_two_threads_agree() {
    let m = model("digits_cnn");
    let values = outputs_of(&m, &["Conv", "Relu", "Gemm"]);
    // MinMax: exact.
    let (mut a, mut b) = (minmax(values.len()), minmax(values.len()));
    run_digits(1, &mut a, &values, &m);
    run_digits(2, &mut b, &values, &m);
    assert_eq!(a, b);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.qparams().unwrap(), y.qparams().unwrap());
    }
    // Histogram: the merge re-bins when the two halves' ranges differ, as torch
    // does when a batch widens the range; the chosen range agrees closely.
    let (mut a, mut b) = (histogram(values.len()), histogram(values.len()));
    run_digits(1, &mut a, &values, &m);
    run_digits(2, &mut b, &values, &m);
    let mut b2 = histogram(values.len());
    run_digits(2, &mut b2, &values, &m);
    assert_eq!(b, b2, "the two-thread split is deterministic");
    for (k, (x, y)) in a.iter().zip(&b).enumerate() {
        let (ObserverState::Histogram(hx), ObserverState::Histogram(hy)) = (x, y) else {
            unreachable!()
        };
        // Same overall min/max and the same total count.
        assert_eq!(hx.hist.min_max, hy.hist.min_max, "value {k}");
        let (cx, cy): (f32, f32) = (
            hx.hist.histogram.iter().sum(),
            hy.hist.histogram.iter().sum(),
        );
        assert!((cx - cy).abs() <= 1e-6 * cx, "value {k}: {cx} vs {cy}");
        let ((lx, ux), (ly, uy)) = (x.range().unwrap(), y.range().unwrap());
        let width = hx.hist.min_max.map(|(lo, hi)| hi - lo).unwrap();
        assert!(
            (lx[0] - ly[0]).abs() <= 0.02 * width && (ux[0] - uy[0]).abs() <= 0.02 * width,
            "value {k}: 1 thread [{}, {}] vs 2 threads [{}, {}]",
            lx[0],
            ux[0],
            ly[0],
            uy[0]
        );
    }
}

#[test]
fn moving_average_falls_back_to_one_thread() {
    let m = model("digits_cnn");
    let values = outputs_of(&m, &["Relu"]);
    let cal = Calibrator::new(&m, &values).unwrap().with_options(opts(2));
    let data = CalibrationData::open(
        &common::models_dir().join("digits_cnn.calib.npy"),
        cal.inputs(),
    )
    .unwrap();
    let mut obs = vec![MovingAverageMinMaxObserver::new(spec(), 0.01).unwrap(); values.len()];
    let stats = cal.run(data, &mut obs).unwrap();
    assert_eq!(stats.threads, 1);
    let why = stats.single_thread_reason.unwrap();
    assert!(why.contains("cannot be merged"), "{why}");
    assert!(obs[0].range().is_some());
    // Observers that already hold data also run on one thread.
    let data = CalibrationData::from_tensors(cal.inputs(), vec![digits_calib()]).unwrap();
    let mut obs2 = minmax(values.len());
    obs2[0].observe(&[0.0, 1.0], &[]).unwrap();
    let stats = cal.run(data, &mut obs2).unwrap();
    assert_eq!(stats.threads, 1);
    assert!(stats
        .single_thread_reason
        .unwrap()
        .contains("already holds data"));
}

// ---- other models ------------------------------------------------------

#[test]
fn transformer_npz_two_inputs_dynamic_seq() {
    let m = model("transformer_layer");
    let inputs = model_inputs(&m).unwrap();
    assert_eq!(
        inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["input", "mask"]
    );
    let values = outputs_of(&m, &["MatMul", "Softmax", "Erf"]);
    assert!(!values.is_empty());
    let cal = Calibrator::new(&m, &values).unwrap().with_options(opts(2));
    let path = common::models_dir().join("transformer_layer.calib.npz");
    let data = CalibrationData::open(&path, cal.inputs())
        .unwrap()
        .with_batch_size(16);
    let n = data.total_samples().unwrap();
    let mut obs = minmax(values.len());
    let stats = cal.run(data, &mut obs).unwrap();
    assert_eq!(stats.samples, n);
    assert_eq!(stats.threads, 2);
    for (k, o) in obs.iter().enumerate() {
        let (lo, hi) = o.range().unwrap();
        assert!(
            lo[0].is_finite() && hi[0].is_finite() && lo[0] <= hi[0],
            "{k}"
        );
        if cal.observed_names()[k].contains("Softmax") {
            assert!(lo[0] >= 0.0 && hi[0] <= 1.0);
        }
    }

    // A folder of files with different batch and sequence lengths.
    let all = onnxq::data::read_npz(&path).unwrap();
    let get = |name: &str| all.iter().find(|(k, _)| k == name).unwrap().1.clone();
    let (x, mask) = (get("input"), get("mask"));
    let (seq, d) = (x.dims[1] as usize, x.dims[2] as usize);
    let cut = |t: &Tensor, rows: usize, keep: usize| -> Tensor {
        let v = t.to_f32_vec().unwrap();
        let inner: usize = t.dims[2..].iter().product::<i64>() as usize;
        let mut out = Vec::new();
        for r in 0..rows {
            for s in 0..keep {
                let at = (r * seq + s) * inner;
                out.extend_from_slice(&v[at..at + inner]);
            }
        }
        let mut dims = vec![rows as i64, keep as i64];
        dims.extend_from_slice(&t.dims[2..]);
        Tensor::from_f32(dims, &out)
    };
    let dir = tmpdir("transformer");
    write_npz(
        &dir.join("a.npz"),
        &[("input", &cut(&x, 3, seq)), ("mask", &cut(&mask, 3, seq))],
    );
    write_npz(
        &dir.join("b.npz"),
        &[("mask", &cut(&mask, 5, 11)), ("input", &cut(&x, 5, 11))],
    );
    let data = CalibrationData::open(&dir, cal.inputs()).unwrap();
    assert_eq!(data.total_samples(), None);
    let shapes: Vec<Vec<Vec<i64>>> = data
        .map(|b| b.unwrap().iter().map(|t| t.dims.clone()).collect())
        .collect();
    assert_eq!(
        shapes,
        vec![
            vec![vec![3, seq as i64, d as i64], vec![3, seq as i64]],
            vec![vec![5, 11, d as i64], vec![5, 11]],
        ]
    );
    let mut obs = minmax(values.len());
    let stats = cal
        .run(CalibrationData::open(&dir, cal.inputs()).unwrap(), &mut obs)
        .unwrap();
    assert_eq!((stats.samples, stats.batches), (8, 2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mlp_and_lstm_calibrate() {
    for name in ["mlp", "lstm"] {
        let m = model(name);
        let values = outputs_of(&m, &["Relu", "Gemm", "MatMul", "LSTM", "Add"])
            .into_iter()
            .filter(|&v| m.graph.value(v).ty.dtype() == Some(DataType::F32))
            .collect::<Vec<_>>();
        assert!(!values.is_empty(), "{name}");
        let cal = Calibrator::new(&m, &values).unwrap().with_options(opts(2));
        let path = common::models_dir().join(format!("{name}.calib.npy"));
        let data = CalibrationData::open(&path, cal.inputs()).unwrap();
        let n = data.total_samples().unwrap();
        let mut obs = histogram(values.len());
        let stats = cal.run(data, &mut obs).unwrap();
        assert_eq!(stats.samples, n, "{name}");
        for o in &obs {
            let (s, _) = o.qparams().unwrap().per_tensor().unwrap();
            assert!(s > 0.0 && s.is_finite(), "{name}");
        }
    }
}

#[test]
fn control_flow_stacked_scalars_are_fed_one_sample_at_a_time() {
    // tract cannot run Loop, so only the data side is checked here.
    let m = model("control_flow");
    let inputs = model_inputs(&m).unwrap();
    let path = common::models_dir().join("control_flow.calib.npz");
    let data = CalibrationData::open(&path, &inputs).unwrap();
    assert_eq!(data.total_samples(), Some(64));
    let batches: Vec<Vec<Tensor>> = data.map(Result::unwrap).collect();
    assert_eq!(batches.len(), 64);
    let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    for (i, b) in batches.iter().enumerate() {
        for (t, name) in b.iter().zip(&names) {
            match *name {
                "x" => assert_eq!(t.dims, vec![1, 8]),
                "flag" => {
                    assert_eq!((t.dtype, t.dims.clone()), (DataType::Bool, vec![]));
                    assert_eq!(t.to_i64_vec().unwrap(), vec![(i % 2 == 0) as i64]);
                }
                "steps" => {
                    assert_eq!((t.dtype, t.dims.clone()), (DataType::I64, vec![]));
                    assert_eq!(t.to_i64_vec().unwrap(), vec![2 + (i % 4) as i64]);
                }
                other => panic!("unexpected input {other}"),
            }
        }
    }
}

#[test]
fn stacked_batches_and_lazy_streams() {
    let m = model("digits_cnn");
    let inputs = model_inputs(&m).unwrap();
    // [4, 32, 1, 8, 8]: four samples, each a batch of 32 fed as-is.
    let all = digits_calib();
    let stacked = Tensor::from_raw(
        DataType::F32,
        vec![4, 32, 1, 8, 8],
        all.raw().unwrap().to_vec(),
    )
    .unwrap();
    let data = CalibrationData::from_tensors(&inputs, vec![stacked]).unwrap();
    let dims: Vec<Vec<i64>> = data.map(|b| b.unwrap()[0].dims.clone()).collect();
    assert_eq!(dims, vec![vec![32, 1, 8, 8]; 4]);
    // A lazy stream of batches, checked as pulled.
    let values = outputs_of(&m, &["Relu"]);
    let cal = Calibrator::new(&m, &values).unwrap().with_options(opts(2));
    let batch = Tensor::from_raw(
        DataType::F32,
        vec![16, 1, 8, 8],
        all.raw().unwrap()[..16 * 256].to_vec(),
    )
    .unwrap();
    let data =
        CalibrationData::from_batches(cal.inputs(), (0..5).map(move |_| Ok(vec![batch.clone()])))
            .unwrap();
    let mut obs = minmax(values.len());
    let stats = cal.run(data, &mut obs).unwrap();
    assert_eq!((stats.samples, stats.batches), (80, 5));
}

// ---- errors ------------------------------------------------------------

#[test]
fn errors_name_the_file_and_the_input() {
    let dir = tmpdir("errors");
    let cnn = model_inputs(&model("digits_cnn")).unwrap();
    let tr = model_inputs(&model("transformer_layer")).unwrap();

    // Wrong dtype.
    let p = dir.join("f64.npz");
    let t = Tensor::from_raw(DataType::F64, vec![2, 1, 8, 8], vec![0; 2 * 64 * 8]).unwrap();
    write_npz(&p, &[("input", &t)]);
    let e = data_error(&p, &cnn);
    assert!(
        e.contains("f64.npz") && e.contains("`input`") && e.contains("f64"),
        "{e}"
    );

    // Wrong fixed dim.
    let p = dir.join("dim.npz");
    write_npz(
        &p,
        &[("input", &Tensor::from_f32(vec![2, 1, 8, 7], &[0.5; 112]))],
    );
    let e = data_error(&p, &cnn);
    assert!(
        e.contains("dim.npz") && e.contains("`input`") && e.contains("dim 3 is 7"),
        "{e}"
    );

    // Wrong rank.
    let p = dir.join("rank.npz");
    write_npz(
        &p,
        &[("input", &Tensor::from_f32(vec![2, 64], &[0.5; 128]))],
    );
    let e = data_error(&p, &cnn);
    assert!(
        e.contains("rank.npz") && e.contains("`input`") && e.contains("rank"),
        "{e}"
    );

    // NaN, in the second batch of a .npy (found while streaming).
    let mut v = digits_calib().to_f32_vec().unwrap();
    v[40 * 64 + 3] = f32::NAN;
    let p = dir.join("nan.npy");
    std::fs::write(
        &p,
        onnxq::data::npy_bytes(&Tensor::from_f32(vec![128, 1, 8, 8], &v)).unwrap(),
    )
    .unwrap();
    let e = data_error(&p, &cnn);
    assert!(
        e.contains("nan.npy") && e.contains("`input`") && e.contains("sample 40"),
        "{e}"
    );
    let mut v = v.clone();
    v[40 * 64 + 3] = f32::INFINITY;
    let e = err_of(
        CalibrationData::from_tensors(&cnn, vec![Tensor::from_f32(vec![128, 1, 8, 8], &v)])
            .unwrap()
            .collect::<onnxq::Result<Vec<_>>>(),
    );
    assert!(
        e.contains("in-memory data") && e.contains("`input`") && e.contains("NaN"),
        "{e}"
    );

    // Missing input.
    let p = dir.join("nomask.npz");
    write_npz(
        &p,
        &[("input", &Tensor::from_f32(vec![1, 4, 32], &[0.0; 128]))],
    );
    let e = data_error(&p, &tr);
    assert!(
        e.contains("nomask.npz") && e.contains("`mask`") && e.contains("missing"),
        "{e}"
    );
    assert!(e.contains("holds: `input`"), "{e}");

    // Unequal sample counts.
    let p = dir.join("count.npz");
    write_npz(
        &p,
        &[
            ("input", &Tensor::from_f32(vec![2, 4, 32], &[0.0; 256])),
            ("mask", &Tensor::from_f32(vec![3, 4], &[0.0; 12])),
        ],
    );
    let e = data_error(&p, &tr);
    assert!(
        e.contains("count.npz") && e.contains("`mask`") && e.contains("3 samples"),
        "{e}"
    );

    // A .npy for a two-input model.
    let e = data_error(&common::models_dir().join("digits_cnn.calib.npy"), &tr);
    assert!(
        e.contains(".npz") && e.contains("`input`") && e.contains("`mask`"),
        "{e}"
    );

    // Empty folder, and an empty array.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = data_error(&empty, &cnn);
    assert!(
        e.contains("empty") && e.contains("no .npz") && e.contains("`input`"),
        "{e}"
    );
    let p = dir.join("zero.npz");
    write_npz(&p, &[("input", &Tensor::from_f32(vec![0, 1, 8, 8], &[]))]);
    let e = data_error(&p, &cnn);
    assert!(
        e.contains("zero.npz") && e.contains("empty") && e.contains("`input`"),
        "{e}"
    );

    // Unreadable files.
    let p = dir.join("garbage.npz");
    std::fs::write(&p, b"not a zip").unwrap();
    let e = data_error(&p, &cnn);
    assert!(
        e.contains("garbage.npz") && e.contains("not an .npz"),
        "{e}"
    );
    assert_eq!(e.matches("garbage.npz").count(), 1, "{e}");
    let e = data_error(&dir.join("missing.npz"), &cnn);
    assert!(e.contains("missing.npz"), "{e}");

    // A bad file later in a folder surfaces while iterating, named.
    let folder = dir.join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    write_npz(
        &folder.join("0.npz"),
        &[("input", &Tensor::from_f32(vec![1, 1, 8, 8], &[0.5; 64]))],
    );
    write_npz(
        &folder.join("1.npz"),
        &[("inptu", &Tensor::from_f32(vec![1, 1, 8, 8], &[0.5; 64]))],
    );
    let e = data_error(&folder, &cnn);
    assert!(
        e.contains("1.npz") && e.contains("`input`") && e.contains("`inptu`"),
        "{e}"
    );

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn calibrator_rejects_bad_values_and_observer_counts() {
    let m = model("digits_cnn");
    let g = &m.graph;
    let weight = g
        .value_ids()
        .find(|&v| g.const_tensor(v).is_some())
        .unwrap();
    let e = err_of(Calibrator::new(&m, &[weight]));
    assert!(e.contains("constant"), "{e}");
    let values = outputs_of(&m, &["Relu"]);
    let cal = Calibrator::new(&m, &values).unwrap();
    let data = CalibrationData::from_tensors(cal.inputs(), vec![digits_calib()]).unwrap();
    let e = err_of(cal.run(data, &mut minmax(values.len() + 1)));
    assert!(e.contains("observers"), "{e}");
    // A non-f32 value (the control-flow model's bool `x_proj_pos`).
    let cf = model("control_flow");
    let v = cf.graph.value_by_name("x_proj_pos").unwrap();
    let e = err_of(Calibrator::new(&cf, &[v]));
    assert!(e.contains("x_proj_pos") && e.contains("f32"), "{e}");
}

/// A recurrent state `[2, batch, 4]` beside `x [batch, 3]` (silero-style):
/// the state's axis 0 is fixed by the model and disagrees with the samples,
/// so it is fed whole with every batch; with a matching count it would be a
/// batch axis like any other.
#[test]
fn fixed_leading_state_is_fed_whole() {
    use onnxq::ir::Dim;
    let inputs = vec![
        ModelInput {
            name: "x".into(),
            dtype: DataType::F32,
            shape: vec![Dim::Sym("batch".into()), Dim::Fixed(3)],
        },
        ModelInput {
            name: "state".into(),
            dtype: DataType::F32,
            shape: vec![Dim::Fixed(2), Dim::Sym("batch".into()), Dim::Fixed(4)],
        },
    ];
    let x = Tensor::from_f32(vec![5, 3], &[0.5; 15]);
    let state = Tensor::from_f32(vec![2, 1, 4], &[0.25; 8]);
    let d = tmpdir("state");
    write_npz(&d.join("s.npz"), &[("x", &x), ("state", &state)]);
    let batches: Vec<Vec<Tensor>> = CalibrationData::open(&d.join("s.npz"), &inputs)
        .unwrap()
        .with_batch_size(2)
        .map(Result::unwrap)
        .collect();
    let dims: Vec<Vec<Vec<i64>>> = batches
        .iter()
        .map(|b| b.iter().map(|t| t.dims.clone()).collect())
        .collect();
    assert_eq!(
        dims,
        vec![
            vec![vec![2, 3], vec![2, 1, 4]],
            vec![vec![2, 3], vec![2, 1, 4]],
            vec![vec![1, 3], vec![2, 1, 4]],
        ]
    );
    // Two inputs whose counts disagree without a fixed axis 0 stay an error.
    let y = Tensor::from_f32(vec![4, 3], &[0.5; 12]);
    write_npz(&d.join("bad.npz"), &[("x", &x), ("state", &y)]);
    let bad = vec![
        inputs[0].clone(),
        ModelInput {
            name: "state".into(),
            dtype: DataType::F32,
            shape: vec![Dim::Sym("batch".into()), Dim::Fixed(3)],
        },
    ];
    let e = data_error(&d.join("bad.npz"), &bad);
    assert!(e.contains("bad.npz") && e.contains("samples"), "{e}");
}
