//! u8×s8 GEMM throughput per available micro-kernel: `cargo bench --bench qgemm`.
//!
//! GOPS = 2·M·N·K / time (median of runs). Whole-GEMM runs use the fused per-channel u8
//! requantization (QLinearMatMul-like) and weights in [−64, 64] so every kernel (including the
//! `vpmaddubsw` one) admits them. Peak fractions use an estimated clock (dependent imul chain)
//! and the ISA's MAC/cycle ceiling, printed below.

use std::hint::black_box;
use std::time::Instant;

use onnxq::kernels::fbgemm::{qgemm, OutputStage, PackedB, QGemmOutput, QWeights};
use onnxq::kernels::testing::{time_ukernel_l1, XorShift};
use onnxq::kernels::{available, Isa, QGemmUkernel};

/// Estimated core clock in GHz: a dependent chain `x = x·x + k` (64-bit imul, 3 cycles, plus
/// add, 1 cycle, on Zen 3 and recent Intel cores), which LLVM cannot shortcut.
fn clock_ghz() -> f64 {
    let n: u64 = 200_000_000;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let mut x = black_box(3u64);
        let k = black_box(0x9E37_79B9_7F4A_7C15u64);
        let t0 = Instant::now();
        for _ in 0..n {
            x = x.wrapping_mul(x).wrapping_add(k);
        }
        black_box(x);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    (n as f64 * 4.0) / best / 1e9
}

/// Architectural MAC/cycle ceiling of the kernel's instruction sequence (per core).
fn peak_mac_per_cycle(isa: Isa) -> Option<f64> {
    match isa {
        Isa::Scalar => None,
        Isa::Avx2 => Some(32.0),
        Isa::AvxVnni => Some(64.0),
        Isa::Avx512Vnni => Some(128.0),
        Isa::Amx => Some(1024.0),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn gemm_gops(uk: &'static QGemmUkernel, m: usize, n: usize, k: usize) -> f64 {
    let mut rng = XorShift::new(42);
    let w: Vec<i8> = (0..k * n).map(|_| rng.range_i32(-64, 64) as i8).collect();
    let bias: Vec<i32> = (0..n).map(|_| rng.range_i32(-1000, 1000)).collect();
    let packed = PackedB::with_ukernel(
        uk,
        &QWeights {
            data: &w,
            k,
            n,
            trans_b: false,
            zp: &[0],
            bias: Some(&bias),
        },
        117,
    )
    .unwrap();
    let a: Vec<u8> = (0..m * k).map(|_| rng.u8()).collect();
    let mult: Vec<f32> = (0..n).map(|_| 1e-4 * (1.0 + rng.f32())).collect();
    let mut c = vec![0u8; m * n];
    let mut run = || {
        let stage = OutputStage::Requantize {
            mult: &mult,
            zp: 128,
            qmin: 0,
            qmax: 255,
        };
        let t0 = Instant::now();
        qgemm(&a, k, 117, m, &packed, stage, QGemmOutput::U8(&mut c), n);
        black_box(&c);
        t0.elapsed().as_secs_f64()
    };
    run();
    run();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed().as_secs_f64() < 1.0 && times.len() < 200) {
        times.push(run());
    }
    2.0 * (m * n * k) as f64 / median(times) / 1e9
}

fn ukernel_gops(uk: &'static QGemmUkernel) -> f64 {
    let k = 512;
    let reps = if uk.isa == Isa::Scalar { 200 } else { 20_000 };
    // Warm up for ~0.3 s (frequency ramp, page faults) before timing.
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < 0.3 {
        time_ukernel_l1(uk, k, reps / 10);
    }
    let times: Vec<f64> = (0..7).map(|_| time_ukernel_l1(uk, k, reps)).collect();
    let macs = (usize::from(uk.mr) * usize::from(uk.nr) * k * reps) as f64;
    2.0 * macs / median(times) / 1e9
}

fn main() {
    // `cargo bench` passes `--bench`; a substring filter selects kernels by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let ghz = clock_ghz();
    println!("clock estimate: {ghz:.2} GHz (dependent imul+add chain, assuming 4 cycles per step)");
    println!(
        "peak = MAC/cycle ceiling x 2 x clock: avx2 32 (vpmaddubsw+vpmaddwd+vpaddd, 2 per cycle), \
         avxvnni 64, avx512vnni 128"
    );
    println!();
    println!(
        "{:<30} {:>16} {:>16} {:>16} {:>16}",
        "kernel", "ukernel L1 k=512", "512^3", "1024^3", "3136x576x64"
    );
    for set in available() {
        for &uk in set.gemm_u8s8 {
            if filter.as_deref().is_some_and(|f| !uk.name.contains(f)) {
                continue;
            }
            let peak = peak_mac_per_cycle(uk.isa).map(|p| 2.0 * p * ghz);
            let cell = |g: f64| match peak {
                Some(p) => format!("{g:7.1} ({:3.0}%)", 100.0 * g / p),
                None => format!("{g:7.1}       "),
            };
            let l1 = ukernel_gops(uk);
            let (s1, s2, s3) = if uk.isa == Isa::Scalar {
                (gemm_gops(uk, 128, 128, 128), f64::NAN, f64::NAN)
            } else {
                (
                    gemm_gops(uk, 512, 512, 512),
                    gemm_gops(uk, 1024, 1024, 1024),
                    gemm_gops(uk, 3136, 64, 576),
                )
            };
            println!(
                "{:<30} {:>16} {:>16} {:>16} {:>16}",
                uk.name,
                cell(l1),
                cell(s1),
                cell(s2),
                cell(s3)
            );
        }
    }
    println!("(scalar: 128^3 instead of 512^3; GOPS, % of the ISA peak in brackets)");
}
