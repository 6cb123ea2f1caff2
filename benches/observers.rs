//! Observer `observe()` throughput. `cargo bench --bench observers`
//!
//! Each observer sees a stream of pseudo-random (roughly Gaussian) tensors of
//! a fixed size whose scale drifts slowly, so the range widens now and then
//! (as in real calibration) and the histogram observers re-bin.

use onnxq::observe::{
    EntropyObserver, HistogramObserver, MinMaxObserver, MseObserver, Observer, PercentileObserver,
    QuantSpec, DEFAULT_ENTROPY_BINS, DEFAULT_ENTROPY_QUANTIZED_BINS, DEFAULT_PERCENTILE,
    DEFAULT_PERCENTILE_BINS,
};
use std::hint::black_box;
use std::time::Instant;

fn batches(len: usize, count: usize) -> Vec<Vec<f32>> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..count)
        .map(|b| {
            let scale = 1.0 + 0.02 * (b % 37) as f32;
            (0..len)
                .map(|_| {
                    let g = next() + next() + next() + next() - 2.0;
                    g * scale
                })
                .collect()
        })
        .collect()
}

fn bench<O: Observer>(name: &str, make: impl Fn() -> O, data: &[Vec<f32>]) {
    let len = data[0].len();
    let shape = [len];
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let mut o = make();
        let t = Instant::now();
        for x in data {
            o.observe(black_box(x), &shape).unwrap();
        }
        best = best.min(t.elapsed().as_secs_f64());
        black_box(&o);
    }
    let per_call = best / data.len() as f64;
    let melems = (len * data.len()) as f64 / best / 1e6;
    println!(
        "{name:<12} n={len:>7}  {:>9.2} us/observe  {melems:>8.1} Melem/s",
        per_call * 1e6
    );
}

fn main() {
    let spec = QuantSpec::default();
    for &len in &[1_000usize, 10_000, 100_000] {
        let count = (4_000_000 / len).max(20);
        let data = batches(len, count);
        bench("minmax", || MinMaxObserver::new(spec).unwrap(), &data);
        bench("histogram", || HistogramObserver::new(spec).unwrap(), &data);
        bench("mse", || MseObserver::new(spec).unwrap(), &data);
        bench(
            "percentile",
            || PercentileObserver::new(spec, DEFAULT_PERCENTILE, DEFAULT_PERCENTILE_BINS).unwrap(),
            &data,
        );
        bench(
            "entropy",
            || {
                EntropyObserver::new(spec, DEFAULT_ENTROPY_BINS, DEFAULT_ENTROPY_QUANTIZED_BINS)
                    .unwrap()
            },
            &data,
        );
        println!();
    }
}
