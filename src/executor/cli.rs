//! The `onnxq run` and `onnxq bench` commands (argument structs and their implementations;
//! `main.rs` only mounts them).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// `println!` that ignores a closed stdout (e.g. piped into `head`) instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

use super::{Backend, Executor, ExecutorOptions, Lowering};
use crate::ir::{DataType, Model, Tensor};

/// Inputs: `NAME=FILE.npy` (repeatable) or one `.npz` holding arrays named after the inputs.
fn parse_inputs(specs: &[String]) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for s in specs {
        match s.split_once('=') {
            Some((name, file)) => {
                let t = crate::data::read_npy(Path::new(file))
                    .with_context(|| format!("input `{name}`"))?;
                out.push((name.to_string(), t));
            }
            None if s.ends_with(".npz") => {
                out.extend(crate::data::read_npz(Path::new(s))?);
            }
            None => bail!("--input takes NAME=FILE.npy or FILE.npz, got `{s}`"),
        }
    }
    Ok(out)
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    pub model: PathBuf,
    /// An input as NAME=FILE.npy (repeatable), or an .npz with every input by name.
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE")]
    pub inputs: Vec<String>,
    /// Folder for the outputs, written as `<output name>.npy` (characters other than
    /// letters, digits, `.`, `-` and `_` become `_`). Without it, a summary is printed.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[arg(long, default_value = "fbgemm", value_parser = ["fbgemm", "qnnpack"])]
    pub backend: String,
    /// Which QDQ units become integer kernels: ort (those ONNX Runtime runs in integer
    /// arithmetic), all (also non-redundant Relu/Clip and float-output units), off.
    #[arg(long, default_value = "ort", value_parser = ["ort", "all", "off"])]
    pub lowering: String,
    /// Tie rule of the qnnpack backend's fixed-point requantization: half-even ("precise",
    /// ONNX rounding of the exact product) or half-away (QNNPACK's native rule).
    #[arg(long, default_value = "half-even", value_parser = ["half-even", "half-away"])]
    pub q8_rounding: String,
    /// Worker threads of the integer kernels.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// List the units lowered to integer kernels (stderr).
    #[arg(long)]
    pub verbose: bool,
}

fn plan(
    model: &Path,
    backend: &str,
    threads: usize,
    lowering: &str,
    q8_rounding: &str,
) -> Result<(Model, Executor)> {
    let m = crate::import::import_file(model)?;
    let options = ExecutorOptions {
        backend: backend.parse::<Backend>().map_err(anyhow::Error::msg)?,
        threads,
        lowering: lowering.parse::<Lowering>().map_err(anyhow::Error::msg)?,
        q8_rounding: q8_rounding_of(q8_rounding),
        ..ExecutorOptions::default()
    };
    let exec =
        Executor::new(&m, options).with_context(|| format!("planning {}", model.display()))?;
    Ok((m, exec))
}

/// The `--q8-rounding` value (clap restricts it to the two spellings).
fn q8_rounding_of(s: &str) -> crate::kernels::qnnpack::Rounding {
    use crate::kernels::qnnpack::Rounding;
    if s == "half-away" {
        Rounding::HalfAway
    } else {
        Rounding::HalfEven
    }
}

/// A file name for an output (ONNX names may hold `/` or `:`).
pub fn output_file_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}.npy", s.trim_start_matches('.'))
}

pub fn run(a: RunArgs) -> Result<()> {
    let (_, exec) = plan(&a.model, &a.backend, a.threads, &a.lowering, &a.q8_rounding)?;
    if a.verbose {
        for u in exec.lowered_units() {
            eprintln!("lowered: {u}");
        }
        for r in exec.nhwc_regions() {
            eprintln!("kept NHWC: {r}");
        }
    }
    let inputs = parse_inputs(&a.inputs)?;
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let outs = exec.run(&refs)?;
    match &a.output {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut seen = std::collections::HashSet::new();
            for (name, t) in &outs {
                let file = output_file_name(name);
                if !seen.insert(file.clone()) {
                    bail!("two outputs map to the same file name {file}");
                }
                let path = dir.join(&file);
                crate::emit::write_atomic(&path, &crate::data::npy_bytes(t)?)?;
                eprintln!("wrote {}", path.display());
            }
        }
        None => {
            for (name, t) in &outs {
                let v = t.to_f32_vec().unwrap_or_default();
                let head: Vec<String> = v.iter().take(8).map(|x| format!("{x:.6}")).collect();
                out!(
                    "{name}: {}{:?} [{}{}]",
                    t.dtype,
                    t.dims,
                    head.join(", "),
                    if v.len() > 8 { ", ..." } else { "" }
                );
            }
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    pub model: PathBuf,
    /// onnxq (the native executor) or tract (float reference engine).
    #[arg(long, default_value = "onnxq", value_parser = ["onnxq", "tract"])]
    pub engine: String,
    #[arg(long, default_value = "fbgemm", value_parser = ["fbgemm", "qnnpack"])]
    pub backend: String,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed runs (after the warm-up).
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Inputs as for `run`; without them, random data of the declared shapes (symbolic dims
    /// take `--dim`).
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE")]
    pub inputs: Vec<String>,
    /// Size of symbolic dimensions for random inputs.
    #[arg(long, default_value_t = 1)]
    pub dim: usize,
    /// As for `run`.
    #[arg(long, default_value = "ort", value_parser = ["ort", "all", "off"])]
    pub lowering: String,
    /// Tie rule of the qnnpack backend's fixed-point requantization: half-even ("precise",
    /// ONNX rounding of the exact product) or half-away (QNNPACK's native rule).
    #[arg(long, default_value = "half-even", value_parser = ["half-even", "half-away"])]
    pub q8_rounding: String,
    /// Also print where the time goes (per op type / lowered unit kind, onnxq engine only).
    #[arg(long)]
    pub profile: bool,
}

/// Deterministic pseudo-random f32 in [0, 1) (xorshift; no dependency, reproducible).
fn random_tensor(dtype: DataType, shape: &[usize], seed: &mut u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Ok(match dtype {
        DataType::F32 => {
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    *seed ^= *seed << 13;
                    *seed ^= *seed >> 7;
                    *seed ^= *seed << 17;
                    (*seed >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect();
            Tensor::from_f32(dims, &v)
        }
        DataType::I64 => Tensor::from_i64(dims, &vec![0; n]),
        DataType::I32 => Tensor::from_i32(dims, &vec![0; n]),
        DataType::U8 | DataType::I8 | DataType::Bool => Tensor::from_u8(dtype, dims, vec![0; n]),
        t => bail!("cannot make random {t} inputs; pass --input"),
    })
}

/// Peak resident set size of this process in KiB (VmHWM), if the OS reports it.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn bench(a: BenchArgs) -> Result<()> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let m = crate::import::import_file(&a.model)?;
    let given = parse_inputs(&a.inputs)?;
    // Inputs in graph order (tract takes them positionally).
    let g = &m.graph;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    for &v in g.inputs.iter().filter(|&&v| g.const_tensor(v).is_none()) {
        let val = g.value(v);
        let t = match given.iter().find(|(n, _)| *n == val.name) {
            Some((_, t)) => t.clone(),
            None => {
                let tt = val.ty.tensor().with_context(|| {
                    format!("input `{}` has no tensor type; pass --input", val.name)
                })?;
                let shape: Vec<usize> = tt
                    .shape
                    .as_ref()
                    .with_context(|| format!("input `{}` has no shape; pass --input", val.name))?
                    .iter()
                    .map(|d| match d {
                        crate::ir::Dim::Fixed(v) if *v >= 0 => *v as usize,
                        _ => a.dim,
                    })
                    .collect();
                random_tensor(tt.dtype.unwrap_or(DataType::F32), &shape, &mut seed)?
            }
        };
        inputs.push((val.name.clone(), t));
    }
    let mut times = Vec::with_capacity(a.runs);
    let label = match a.engine.as_str() {
        "tract" => {
            let bytes = std::fs::read(&a.model).with_context(|| a.model.display().to_string())?;
            let ts: Vec<Tensor> = inputs.iter().map(|(_, t)| t.clone()).collect();
            let tm = crate::tract_runner::TractModel::load(&bytes, a.model.parent(), &ts)?;
            for k in 0..a.warmup + a.runs {
                let t0 = Instant::now();
                tm.run(&ts)?;
                if k >= a.warmup {
                    times.push(t0.elapsed().as_secs_f64());
                }
            }
            "tract (f32)".to_string()
        }
        _ => {
            let options = ExecutorOptions {
                backend: a.backend.parse::<Backend>().map_err(anyhow::Error::msg)?,
                threads: a.threads,
                lowering: a.lowering.parse::<Lowering>().map_err(anyhow::Error::msg)?,
                q8_rounding: q8_rounding_of(&a.q8_rounding),
                ..ExecutorOptions::default()
            };
            let exec = Executor::new(&m, options)?;
            let arrays: Vec<(&str, super::Array)> = inputs
                .iter()
                .map(|(n, t)| {
                    Ok((
                        n.as_str(),
                        super::Array::from_tensor(t).map_err(anyhow::Error::msg)?,
                    ))
                })
                .collect::<Result<_>>()?;
            for k in 0..a.warmup + a.runs {
                let ins = arrays.clone();
                let t0 = Instant::now();
                exec.run_arrays(ins)?;
                if k >= a.warmup {
                    times.push(t0.elapsed().as_secs_f64());
                }
            }
            if a.profile {
                // Per kind and per step, the median over runs of its time in one run: a shared
                // machine preempts now and then, and a sum over runs would be dominated by those.
                let mut per_step: std::collections::HashMap<(String, String), Vec<f64>> =
                    std::collections::HashMap::new();
                for _ in 0..a.runs {
                    let mut prof = std::collections::HashMap::new();
                    exec.run_profiled(arrays.clone(), &mut prof)?;
                    for (key, d) in prof {
                        per_step.entry(key).or_default().push(d.as_secs_f64());
                    }
                }
                let median = |v: &mut Vec<f64>| {
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2]
                };
                let mut per_kind: std::collections::HashMap<String, Vec<f64>> =
                    std::collections::HashMap::new();
                let mut steps: Vec<(String, f64)> = Vec::new();
                for ((kind, label), mut v) in per_step {
                    let slot = per_kind.entry(kind.clone()).or_default();
                    slot.resize(slot.len().max(v.len()), 0.0);
                    for (s, t) in slot.iter_mut().zip(&v) {
                        *s += t;
                    }
                    steps.push((format!("{label} ({kind})"), median(&mut v)));
                }
                let mut rows: Vec<(String, f64)> = per_kind
                    .into_iter()
                    .map(|(kind, mut v)| (kind, median(&mut v)))
                    .collect();
                let total: f64 = rows.iter().map(|r| r.1).sum();
                rows.sort_by(|x, y| y.1.total_cmp(&x.1));
                for (kind, s) in rows {
                    out!(
                        "  {:>6.2} %  {:>10.4} ms/run  {kind}",
                        100.0 * s / total.max(1e-12),
                        s * 1e3
                    );
                }
                steps.sort_by(|x, y| y.1.total_cmp(&x.1));
                out!("  slowest steps:");
                for (step, s) in steps.iter().take(12) {
                    out!(
                        "  {:>6.2} %  {:>10.4} ms/run  {step}",
                        100.0 * s / total.max(1e-12),
                        s * 1e3
                    );
                }
            }
            format!(
                "onnxq {} ({} lowered units)",
                a.backend,
                exec.lowered_units().len()
            )
        }
    };
    times.sort_by(f64::total_cmp);
    let ms = |s: f64| s * 1e3;
    out!(
        "{}: {label}, {} runs, threads {}: median {:.4} ms, min {:.4} ms, max {:.4} ms, peak RSS {} KiB",
        a.model.display(),
        a.runs,
        a.threads,
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1]),
        peak_rss_kib().map_or("?".to_string(), |k| k.to_string())
    );
    Ok(())
}
