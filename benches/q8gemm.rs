//! qnnpack-style u8×u8 throughput: `cargo bench --bench q8gemm [filter]`.
//!
//! GOPS = 2·MACs / time (median of runs, single thread), fused per-channel fixed-point
//! requantization to u8 in every case.
//! - GEMM per micro-kernel at 512³, 1024³, 3136×576×64 (M×K×N: the 56×56 3×3 conv as GEMM)
//!   and 192×16×64 (a 1×1 conv of the bundled small CNNs: the requant epilogue dominates).
//! - Depthwise 3×3 (56×56, stride 1, pad 1, C = 64…144) per depthwise kernel, vs the same
//!   depthwise conv done as im2col + GEMM per group with every SIMD GEMM kernel (per channel:
//!   gather the P×9 patch matrix through precomputed offsets, then an N = 1 GEMM), which is
//!   what a generic grouped-conv path would do), and as one dense GEMM over the all-channel
//!   im2col with block-diagonal weights (C× the MACs at full GEMM speed); the ratio is against
//!   the fastest of all those baselines.

use std::hint::black_box;
use std::time::Instant;

use onnxq::kernels::qnnpack::{
    self, available_q8dwconv, available_q8gemm, q8dwconv, q8gemm, DwIndirection, PackedQ8Dw,
    PackedQ8Gemm, Q8GemmUkernel, Q8Output,
};
use onnxq::kernels::reference::q8conv::{Nhwc, Window2d};
use onnxq::kernels::reference::q8dwconv::Q8DwWeights;
use onnxq::kernels::reference::q8gemm::Q8Weights;
use onnxq::kernels::reference::requant_fixedpoint::Requant;
use onnxq::kernels::testing::XorShift;

/// Best (minimum) seconds of `f` over ≥ 5 runs (up to ~1 s), after 2 warm-up runs. The
/// minimum, not the median: the 2-vCPU machine is shared and the median swings ±50 %.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed().as_secs_f64() < 1.0 && times.len() < 200) {
        let t0 = Instant::now();
        f();
        times.push(t0.elapsed().as_secs_f64());
    }
    times.into_iter().fold(f64::MAX, f64::min)
}

fn gemm_gops(uk: &'static Q8GemmUkernel, m: usize, k: usize, n: usize) -> f64 {
    let mut rng = XorShift::new(42);
    let w: Vec<u8> = (0..n * k).map(|_| rng.u8()).collect();
    let zps: Vec<u8> = (0..n).map(|_| rng.u8()).collect();
    let bias: Vec<i32> = (0..n).map(|_| rng.range_i32(-1000, 1000)).collect();
    let rq: Vec<Requant> = (0..n)
        .map(|_| Requant::from_scale(1e-5 * (1.0 + rng.f32())).unwrap())
        .collect();
    let weights = Q8Weights {
        data: &w,
        n,
        k,
        zp: &zps,
        bias: Some(&bias),
        requant: &rq,
    };
    let packed = PackedQ8Gemm::new(uk, &weights, 1, 117);
    let a: Vec<u8> = (0..m * k).map(|_| rng.u8()).collect();
    let mut c = vec![0u8; m * n];
    let out = Q8Output::new(128);
    let t = time(|| {
        q8gemm(&a, k, m, &packed, &out, &mut c, n);
        black_box(&c);
    });
    2.0 * (m * n * k) as f64 / t / 1e9
}

struct Dw {
    g: Window2d,
    ch: usize,
    x: Vec<u8>,
    w: Vec<u8>,
    zps: Vec<u8>,
    bias: Vec<i32>,
    rq: Vec<Requant>,
}

impl Dw {
    fn new(ch: usize) -> Dw {
        Dw::with(ch, 3, 1, true)
    }

    /// `k×k` stride `s` pad `k/2` on 56×56; random per-channel weight zero points, or 128.
    fn with(ch: usize, k: usize, s: usize, per_channel_zp: bool) -> Dw {
        let mut rng = XorShift::new(ch as u64);
        let g = Window2d::square(56, 56, k, k, s, k / 2);
        Dw {
            g,
            ch,
            x: (0..56 * 56 * ch).map(|_| rng.u8()).collect(),
            w: (0..k * k * ch).map(|_| rng.u8()).collect(),
            zps: (0..ch)
                .map(|_| if per_channel_zp { rng.u8() } else { 128 })
                .collect(),
            bias: (0..ch).map(|_| rng.range_i32(-1000, 1000)).collect(),
            rq: (0..ch)
                .map(|_| Requant::from_scale(1e-3 * (1.0 + rng.f32())).unwrap())
                .collect(),
        }
    }

    fn weights(&self) -> Q8DwWeights<'_> {
        Q8DwWeights {
            data: &self.w,
            channels: self.ch,
            zp: &self.zps,
            bias: Some(&self.bias),
            requant: &self.rq,
        }
    }

    fn macs(&self) -> f64 {
        (self.g.out_pixels() * self.ch * self.g.taps()) as f64
    }

    fn gops_dw(&self, uk: &'static qnnpack::Q8DwUkernel) -> f64 {
        let (kh, kw) = (self.g.kernel_h, self.g.kernel_w);
        let packed = PackedQ8Dw::new(uk, &self.weights(), kh, kw, 100);
        let ind = DwIndirection::new(&self.g);
        let xv = Nhwc {
            data: &self.x,
            channels: self.ch,
            pixel_stride: self.ch,
            zp: 100,
        };
        let mut y = vec![0u8; self.g.out_pixels() * self.ch];
        let out = Q8Output::new(128);
        let t = time(|| {
            q8dwconv(&xv, &ind, &packed, &out, &mut y, self.ch);
            black_box(&y);
        });
        2.0 * self.macs() / t / 1e9
    }

    /// The same depthwise conv as **one** dense GEMM: im2col of all channels (P × 9C, rows
    /// copied 9·C bytes at a time through the precomputed offsets), weights as a C × 9C
    /// block-diagonal matrix (off-group entries = the weight zero point, so they contribute
    /// exactly 0), i.e. C× the MACs but at full GEMM speed.
    fn gops_dense(&self, uk: &'static Q8GemmUkernel) -> f64 {
        let (p, ch) = (self.g.out_pixels(), self.ch);
        let k = 9 * ch;
        let mut wd = vec![0u8; ch * k];
        for c in 0..ch {
            for t in 0..9 {
                for ic in 0..ch {
                    wd[c * k + t * ch + ic] = if ic == c {
                        self.w[t * ch + c]
                    } else {
                        self.zps[c]
                    };
                }
            }
        }
        let packed = PackedQ8Gemm::new(
            uk,
            &Q8Weights {
                data: &wd,
                n: ch,
                k,
                zp: &self.zps,
                bias: Some(&self.bias),
                requant: &self.rq,
            },
            1,
            100,
        );
        let (oh, ow) = (self.g.out_h(), self.g.out_w());
        let mut offs = Vec::with_capacity(p * 9);
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..3 {
                    for kx in 0..3 {
                        offs.push(
                            self.g
                                .input_at(oy, ox, ky, kx)
                                .map_or(usize::MAX, |(iy, ix)| (iy * 56 + ix) * ch),
                        );
                    }
                }
            }
        }
        let mut cols = vec![0u8; p * k];
        let mut y = vec![0u8; p * ch];
        let out = Q8Output::new(128);
        let t = time(|| {
            for (dst, &o) in cols.chunks_exact_mut(ch).zip(&offs) {
                if o == usize::MAX {
                    dst.fill(100);
                } else {
                    dst.copy_from_slice(&self.x[o..o + ch]);
                }
            }
            q8gemm(&cols, k, p, &packed, &out, &mut y, ch);
            black_box(&y);
        });
        2.0 * self.macs() / t / 1e9
    }

    /// The same depthwise conv as a grouped conv through im2col + GEMM, done as well as that
    /// formulation allows: the patch offsets (input pixel per output pixel and tap, or
    /// padding) are computed once outside the timing, as a real grouped-conv path would cache
    /// them; per channel (= group) the timed loop gathers the P×9 patch matrix from them (no
    /// per-element bounds logic) and runs one N = 1, K = 9 GEMM with `uk` packed for that
    /// channel, then scatters the P results into the NHWC output.
    fn gops_im2col(&self, uk: &'static Q8GemmUkernel) -> f64 {
        let p = self.g.out_pixels();
        let packed: Vec<PackedQ8Gemm> = (0..self.ch)
            .map(|c| {
                let wc: Vec<u8> = (0..9).map(|t| self.w[t * self.ch + c]).collect();
                PackedQ8Gemm::new(
                    uk,
                    &Q8Weights {
                        data: &wc,
                        n: 1,
                        k: 9,
                        zp: &self.zps[c..c + 1],
                        bias: Some(&self.bias[c..c + 1]),
                        requant: &self.rq[c..c + 1],
                    },
                    1,
                    100,
                )
            })
            .collect();
        // Patch offsets: input element index of channel 0, or usize::MAX for padding.
        let (oh, ow) = (self.g.out_h(), self.g.out_w());
        let mut offs = Vec::with_capacity(p * 9);
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..3 {
                    for kx in 0..3 {
                        offs.push(
                            self.g
                                .input_at(oy, ox, ky, kx)
                                .map_or(usize::MAX, |(iy, ix)| (iy * 56 + ix) * self.ch),
                        );
                    }
                }
            }
        }
        let mut cols = vec![0u8; p * 9];
        let mut yc = vec![0u8; p];
        let mut y = vec![0u8; p * self.ch];
        let out = Q8Output::new(128);
        let t = time(|| {
            for (c, pk) in packed.iter().enumerate() {
                for (dst, &o) in cols.iter_mut().zip(&offs) {
                    *dst = if o == usize::MAX { 100 } else { self.x[o + c] };
                }
                q8gemm(&cols, 9, p, pk, &out, &mut yc, 1);
                for (i, &v) in yc.iter().enumerate() {
                    y[i * self.ch + c] = v;
                }
            }
            black_box(&y);
        });
        2.0 * self.macs() / t / 1e9
    }
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    println!(
        "u8u8 GEMM, GOPS (single thread, best of runs, fused per-channel fixed-point requant)"
    );
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>14} {:>12} {:>10}",
        "kernel", "L1 k=512", "512^3", "1024^3", "3136x576x64", "192x16x64", "L1 k=16"
    );
    for uk in available_q8gemm().filter(|u| want(u.name)) {
        let scalar = uk.target.is_empty();
        let g1 = gemm_gops(
            uk,
            if scalar { 128 } else { 512 },
            if scalar { 128 } else { 512 },
            if scalar { 128 } else { 512 },
        );
        let (g2, g3, g4) = if scalar {
            (f64::NAN, f64::NAN, f64::NAN)
        } else {
            (
                gemm_gops(uk, 1024, 1024, 1024),
                gemm_gops(uk, 3136, 576, 64),
                // A 1×1 conv of a small CNN (epilogue-bound: K = 16).
                gemm_gops(uk, 192, 16, 64),
            )
        };
        let note = if scalar { " (scalar: 128^3)" } else { "" };
        let l1 = ukernel_l1_gops(uk, 512);
        let l1s = ukernel_l1_gops(uk, 16);
        println!(
            "{:<24} {l1:>10.1} {g1:>10.1} {g2:>10.1} {g3:>14.1} {g4:>12.1} {l1s:>10.1}{note}",
            uk.name
        );
    }
    println!();
    println!(
        "depthwise 3x3, 56x56, stride 1, pad 1, GOPS (useful MACs); baselines with every SIMD \
         q8gemm kernel: im2col+ = per group (N = 1), dense+ = one GEMM with block-diagonal \
         weights (C× the MACs); the ratio is against the fastest baseline"
    );
    let chans = [64, 96, 128, 144];
    print!("{:<24}", "kernel");
    for c in chans {
        print!(" {:>9}", format!("C={c}"));
    }
    println!();
    let dws: Vec<Dw> = chans.iter().map(|&c| Dw::new(c)).collect();
    let mut best_dw = vec![0f64; chans.len()];
    for uk in available_q8dwconv().filter(|u| u.taps == 9 && want(u.name)) {
        print!("{:<24}", uk.name);
        for (i, d) in dws.iter().enumerate() {
            let g = d.gops_dw(uk);
            best_dw[i] = best_dw[i].max(g);
            print!(" {g:>9.1}");
        }
        println!();
    }
    let simd_gemm: Vec<&'static Q8GemmUkernel> = available_q8gemm()
        .filter(|u| !u.target.is_empty())
        .collect();
    let mut best_im2col = vec![0f64; chans.len()];
    // Two baselines per GEMM kernel: im2col per group, and one dense block-diagonal GEMM.
    type Baseline<'a> = (&'a str, fn(&Dw, &'static Q8GemmUkernel) -> f64);
    let baselines: [Baseline; 2] = [("im2col", Dw::gops_im2col), ("dense", Dw::gops_dense)];
    for (label, gops) in baselines {
        for &uk in &simd_gemm {
            print!(
                "{:<24}",
                format!("{label}+{}", uk.name.trim_start_matches("q8gemm_"))
            );
            for (i, d) in dws.iter().enumerate() {
                let g = gops(d, uk);
                best_im2col[i] = best_im2col[i].max(g);
                print!(" {g:>9.1}");
            }
            println!();
        }
    }
    let ratio: Vec<f64> = best_dw
        .iter()
        .zip(&best_im2col)
        .map(|(d, i)| d / i)
        .collect();
    print!("{:<24}", "best dw / best baseline");
    for r in ratio {
        print!(" {:>8.1}x", r);
    }
    println!();
    println!();
    println!(
        "depthwise kxk sS, 56x56, pad k/2, GOPS (useful MACs), per-tensor w_zp = 128 (pt) and \
         random per-channel w_zp (pc), every depthwise kernel of the tap count"
    );
    for (k, s) in [(3, 1), (3, 2), (5, 1), (5, 2)] {
        print!("{:<32}", format!("dw{k}x{k} s{s}"));
        for c in chans {
            print!(" {:>9}", format!("C={c}"));
        }
        println!();
        for per_channel in [false, true] {
            let dws: Vec<Dw> = chans
                .iter()
                .map(|&c| Dw::with(c, k, s, per_channel))
                .collect();
            for uk in available_q8dwconv().filter(|u| usize::from(u.taps) == k * k && want(u.name))
            {
                print!(
                    "{:<32}",
                    format!("{} {}", uk.name, if per_channel { "pc" } else { "pt" })
                );
                for d in &dws {
                    print!(" {:>9.1}", d.gops_dw(uk));
                }
                println!();
            }
        }
    }
}

/// Micro-kernel alone on one full `mr×nr` tile, depth `k`, L1-resident: GOPS (best of 7).
fn ukernel_l1_gops(uk: &'static Q8GemmUkernel, k: usize) -> f64 {
    use std::marker::PhantomData;
    let (mr, nr) = (usize::from(uk.mr), usize::from(uk.nr));
    let mut rng = XorShift::new(5);
    let w: Vec<u8> = (0..nr * k).map(|_| rng.u8()).collect();
    let rq = [Requant::from_scale(1e-5).unwrap()];
    let packed = PackedQ8Gemm::new(
        uk,
        &Q8Weights {
            data: &w,
            n: nr,
            k,
            zp: &[3],
            bias: None,
            requant: &rq,
        },
        1,
        7,
    );
    let a: Vec<u8> = (0..mr * k).map(|_| rng.u8()).collect();
    let a16: Vec<i16> = a.iter().map(|&v| i16::from(v)).collect();
    let rows: Vec<*const u8> = (0..mr)
        .map(|r| {
            if uk.layout == qnnpack::Q8GemmLayout::I16Pairs {
                a16[r * k..].as_ptr().cast()
            } else {
                a[r * k..].as_ptr()
            }
        })
        .collect();
    let mut c = vec![0u8; mr * nr];
    let tile = qnnpack::Q8GemmTile {
        m: mr,
        n: nr,
        kc: k,
        ks: 1,
        a: rows.as_ptr(),
        w: packed.block_ptr(0),
        c: c.as_mut_ptr(),
        ldc: nr,
        out: Q8Output::new(0),
        _lifetime: PhantomData,
    };
    let reps = if uk.target.is_empty() { 200 } else { 20_000 };
    let best = (0..7)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..reps {
                // SAFETY: the kernel set is available on this host; rows, the packed block and
                // C have the sizes the tile describes.
                unsafe { (uk.run)(black_box(&tile)) };
            }
            t0.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min);
    black_box(&c);
    2.0 * (mr * nr * k * reps) as f64 / best / 1e9
}
