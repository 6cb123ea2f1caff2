//! Calibration throughput and memory. `cargo bench --bench calibration`
//!
//! 1. Throughput: calibration as `onnxq calibrate` runs it (the values the
//!    prepared graph observes, the fbgemm preset's histogram observers), and
//!    as a stress case with every f32 op output observed (MinMax and
//!    Histogram), 1 and 2 threads, against plain tract inference on the same
//!    batches, for `digits_cnn` and `transformer_layer`. The target is
//!    calibration at ≥ 70 % of plain inference on one thread.
//! 2. Peak RSS (`VmHWM`) when calibrating on N and then 10×N samples, the
//!    larger set synthesised lazily (the bundled set repeated with a small
//!    perturbation, batch by batch) and, in a second row, streamed from a
//!    `.npy` file on disk. The target is < 10 % growth.

use onnxq::calib::{CalibrationData, CalibrationOptions, Calibrator, ModelInput};
use onnxq::ir::{DataType, Model, Tensor, ValueId};
use onnxq::observe::{
    HistogramObserver, MinMaxObserver, ObserveError, Observer, ObserverState, QParams, QuantSpec,
};
use onnxq::tract_runner::TractModel;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// Every f32 output of a main-graph op (roughly what observer insertion
/// instruments).
fn activations(m: &Model) -> Vec<ValueId> {
    let g = &m.graph;
    let mut v = Vec::new();
    for n in g.topo_order().unwrap() {
        let node = g.node(n);
        if node.op().is_some() {
            v.extend(
                node.outputs
                    .iter()
                    .flatten()
                    .copied()
                    .filter(|&o| g.value(o).ty.dtype() == Some(DataType::F32)),
            );
        }
    }
    v
}

/// The bundled calibration set cut into batches of `bs` rows.
fn base_batches(name: &str, inputs: &[ModelInput], bs: usize) -> Vec<Vec<Tensor>> {
    let dir = models_dir();
    let npy = dir.join(format!("{name}.calib.npy"));
    let path = if npy.exists() {
        npy
    } else {
        dir.join(format!("{name}.calib.npz"))
    };
    CalibrationData::open(&path, inputs)
        .unwrap()
        .with_batch_size(bs)
        .map(Result::unwrap)
        .collect()
}

fn samples_in(batches: &[Vec<Tensor>]) -> usize {
    batches.iter().map(|b| b[0].dims[0] as usize).sum()
}

/// `reps` copies of `base`, each perturbed by a deterministic ±0.5 % factor,
/// produced lazily (one batch in memory at a time).
fn synthetic(
    base: Vec<Vec<Tensor>>,
    reps: usize,
) -> impl Iterator<Item = onnxq::Result<Vec<Tensor>>> + Send + 'static {
    let n = base.len();
    (0..reps * n).map(move |i| {
        let rep = i / n;
        let factor = 1.0 + 0.005 * (((rep * 7919) % 201) as f32 - 100.0) / 100.0;
        Ok(base[i % n]
            .iter()
            .map(|t| {
                if rep == 0 || t.dtype != DataType::F32 {
                    return t.clone();
                }
                let v: Vec<f32> = t.to_f32_vec().unwrap().iter().map(|x| x * factor).collect();
                Tensor::from_f32(t.dims.clone(), &v)
            })
            .collect())
    })
}

fn observers(kind: &str, n: usize) -> Vec<ObserverState> {
    let spec = QuantSpec::default();
    let o = match kind {
        "minmax" => ObserverState::MinMax(MinMaxObserver::new(spec).unwrap()),
        _ => ObserverState::Histogram(HistogramObserver::new(spec).unwrap()),
    };
    vec![o; n]
}

const TRIES: usize = 5;

/// An observer that ignores its input.
#[derive(Clone)]
struct Null;

impl Observer for Null {
    fn observe(&mut self, x: &[f32], _shape: &[usize]) -> Result<(), ObserveError> {
        std::hint::black_box(x);
        Ok(())
    }
    fn range(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        None
    }
    fn qparams(&self) -> Result<QParams, ObserveError> {
        Err(ObserveError::InvalidState("no-op observer".into()))
    }
    fn state(&self) -> ObserverState {
        ObserverState::MinMax(MinMaxObserver::new(QuantSpec::default()).unwrap())
    }
    fn merge(&mut self, _other: &Self) -> Result<(), ObserveError> {
        Ok(())
    }
}

fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Best of `tries` timings of `f`, in samples per second.
fn best_rate(samples: usize, tries: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..tries {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    samples as f64 / best
}

fn throughput(name: &str, bs: usize, reps: usize) {
    let m = onnxq::import::import_file(models_dir().join(format!("{name}.onnx"))).unwrap();
    let values = activations(&m);
    let inputs = onnxq::calib::model_inputs(&m).unwrap();
    let base = base_batches(name, &inputs, bs);
    let batches: Vec<Vec<Tensor>> = (0..reps).flat_map(|_| base.iter().cloned()).collect();
    let samples = samples_in(&batches);

    // Plain inference: one plan per distinct shape set, loaded beforehand.
    let bytes = onnxq::emit::to_bytes(&m);
    let mut plans: Vec<(Vec<Vec<i64>>, TractModel)> = Vec::new();
    for b in &batches {
        let key: Vec<Vec<i64>> = b.iter().map(|t| t.dims.clone()).collect();
        if !plans.iter().any(|(k, _)| *k == key) {
            plans.push((key, TractModel::load(&bytes, None, b).unwrap()));
        }
    }
    let plain = best_rate(samples, TRIES, || {
        for b in &batches {
            let key: Vec<Vec<i64>> = b.iter().map(|t| t.dims.clone()).collect();
            let p = &plans.iter().find(|(k, _)| *k == key).unwrap().1;
            std::hint::black_box(p.run(b).unwrap());
        }
    });
    println!(
        "{name:<18} {:>4} values  batch {bs:<3} {samples:>6} samples  plain tract, 1 thread     {plain:>10.0} samples/s",
        values.len()
    );
    // Calibration with observers that do nothing: the cost of exposing the
    // observed values (tract cannot fuse across a graph output) and of the
    // calibration loop, without the statistics.
    {
        let cal = Calibrator::new(&m, &values)
            .unwrap()
            .with_options(CalibrationOptions {
                threads: 1,
                show_progress: false,
            });
        let run = || {
            let data = CalibrationData::from_batches(&inputs, batches.clone().into_iter().map(Ok))
                .unwrap();
            let mut obs = vec![Null; values.len()];
            cal.run(data, &mut obs).unwrap();
        };
        run();
        let rate = best_rate(samples, TRIES, run);
        println!(
            "{:<70} calibrate no-op     1 thr {rate:>10.0} samples/s  {:>5.0} % of plain",
            "",
            100.0 * rate / plain
        );
    }
    // As shipped: what `onnxq calibrate` observes (the fbgemm preset:
    // histogram activations) on the prepared graph.
    {
        let mut prepared = m.clone();
        let mut cx = onnxq::pm::PassContext::new();
        let options = onnxq::quantize::QuantizeOptions::default();
        let pipeline = onnxq::quantize::prepare(&mut prepared, &options, &mut cx).unwrap();
        let pending = onnxq::calib::begin(&prepared, &pipeline).unwrap();
        for threads in [1, 2] {
            let cal = Calibrator::new(pending.calibration_model(&prepared), &pending.observed)
                .unwrap()
                .with_options(CalibrationOptions {
                    threads,
                    show_progress: false,
                });
            let run = || {
                let data =
                    CalibrationData::from_batches(&inputs, batches.clone().into_iter().map(Ok))
                        .unwrap();
                let mut obs = pending.observers.clone();
                cal.run(data, &mut obs).unwrap();
            };
            run();
            let rate = best_rate(samples, TRIES, run);
            println!(
                "{:<70} as shipped ({:>2} values) {threads} thr {rate:>8.0} samples/s  {:>5.0} % of plain",
                "",
                pending.observed.len(),
                100.0 * rate / plain
            );
        }
    }
    for kind in ["minmax", "histogram"] {
        for threads in [1, 2] {
            let cal = Calibrator::new(&m, &values)
                .unwrap()
                .with_options(CalibrationOptions {
                    threads,
                    show_progress: false,
                });
            let run = || {
                let data =
                    CalibrationData::from_batches(&inputs, batches.clone().into_iter().map(Ok))
                        .unwrap();
                let mut obs = observers(kind, values.len());
                cal.run(data, &mut obs).unwrap();
            };
            run(); // builds the plans
            let rate = best_rate(samples, TRIES, run);
            println!(
                "{:<70} calibrate {kind:<9} {threads} thr {rate:>10.0} samples/s  {:>5.0} % of plain",
                "",
                100.0 * rate / plain
            );
        }
    }
}

fn memory() {
    let name = "digits_cnn";
    let m = onnxq::import::import_file(models_dir().join(format!("{name}.onnx"))).unwrap();
    let values = activations(&m);
    let inputs = onnxq::calib::model_inputs(&m).unwrap();
    let base = base_batches(name, &inputs, 32);
    let n = samples_in(&base) * 10;
    let cal = Calibrator::new(&m, &values)
        .unwrap()
        .with_options(CalibrationOptions {
            threads: 2,
            show_progress: false,
        });
    let run = |data: CalibrationData| {
        let mut obs = observers("histogram", values.len());
        let stats = cal.run(data, &mut obs).unwrap();
        stats.samples
    };
    // N samples: the bundled set ×10; then 10×N: ×100.
    let s1 = run(CalibrationData::from_batches(&inputs, synthetic(base.clone(), 10)).unwrap());
    let h1 = vm_hwm_kib();
    let s2 = run(CalibrationData::from_batches(&inputs, synthetic(base.clone(), 100)).unwrap());
    let h2 = vm_hwm_kib();
    assert_eq!((s1, s2), (n, 10 * n));
    let data_kib = |s: usize| s * 64 * 4 / 1024;
    println!(
        "{name}, in memory (lazy) : N = {s1:>6} samples  VmHWM {h1:>7} KiB | 10N = {s2:>6} samples  VmHWM {h2:>7} KiB | growth {:>5.2} % (the 10N data would be {} KiB if materialised)",
        100.0 * (h2 as f64 - h1 as f64) / h1 as f64,
        data_kib(s2)
    );
    // Streamed from .npy files on disk.
    let dir = std::env::temp_dir().join(format!("onnxq-calib-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |path: &Path, reps: usize| {
        let mut raw = Vec::new();
        let mut rows = 0i64;
        for b in synthetic(base.clone(), reps) {
            let b = b.unwrap();
            rows += b[0].dims[0];
            raw.extend_from_slice(b[0].raw().unwrap());
        }
        let t = Tensor::from_raw(DataType::F32, vec![rows, 1, 8, 8], raw).unwrap();
        std::fs::write(path, onnxq::data::npy_bytes(&t).unwrap()).unwrap();
    };
    // Written beforehand (writing materialises the data), so that it does
    // not count in the peaks: the biggest first.
    let (p1, p2) = (dir.join("n.npy"), dir.join("10n.npy"));
    write(&p2, 1000);
    write(&p1, 100);
    let h0 = vm_hwm_kib();
    let s1 = run(CalibrationData::open(&p1, &inputs).unwrap());
    let h1 = vm_hwm_kib();
    let s2 = run(CalibrationData::open(&p2, &inputs).unwrap());
    let h2 = vm_hwm_kib();
    println!(
        "{name}, .npy on disk     : N = {s1:>6} samples  VmHWM {h1:>7} KiB | 10N = {s2:>6} samples  VmHWM {h2:>7} KiB | growth {:>5.2} % (peak before these runs {h0} KiB, from writing the files)",
        100.0 * (h2 as f64 - h1 as f64) / h1 as f64,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("== throughput (best of {TRIES}) ==");
    throughput("digits_cnn", 32, 10);
    throughput("transformer_layer", 16, 10);
    println!("\n== peak RSS (histogram observers on every f32 activation, 2 threads) ==");
    memory();
}
