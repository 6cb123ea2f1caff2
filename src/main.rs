//! The `onnxq` command line.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "onnxq",
    version,
    about = "Graph-mode INT8 quantization compiler for ONNX"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the IR dump of a model and a summary (ops, parameters, opsets).
    Inspect {
        model: PathBuf,
        /// Print only the summary, not the IR dump.
        #[arg(long)]
        summary_only: bool,
    },
    /// Run graph passes (canonicalization, BatchNorm folding, fusion) and write the result.
    Optimize {
        model: PathBuf,
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Pipeline text, e.g. `fold-constants,fold-batchnorm`; default: the optimize preset.
        #[arg(long)]
        passes: Option<String>,
        /// Print the IR after every pass (to stderr).
        #[arg(long)]
        print_after_all: bool,
        /// Print the IR before this pass (repeatable).
        #[arg(long, value_name = "NAME")]
        print_before: Vec<String>,
        /// Print the IR after this pass (repeatable).
        #[arg(long, value_name = "NAME")]
        print_after: Vec<String>,
        /// Run the verifier after every pass (always on in debug builds).
        #[arg(long)]
        verify_each: bool,
        /// Run only the first N passes (bisection).
        #[arg(long, value_name = "N")]
        stop_after: Option<usize>,
        /// List the registered passes and exit.
        #[arg(long)]
        list_passes: bool,
    },
    /// Run representative data through the float model and save the observers' statistics.
    Calibrate {
        model: PathBuf,
        /// Calibration data: an .npz (arrays named after the inputs), a folder of them, or one .npy.
        #[arg(long)]
        data: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        q: QuantFlags,
        /// Worker threads (observers that cannot merge use one).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Merge these partial calibration files into OUTPUT instead of running the model.
        #[arg(long, num_args = 1.., value_name = "FILE")]
        merge: Vec<PathBuf>,
    },
    /// Quantize a float model to INT8: static (fuse, observe, calibrate, convert to QDQ or
    /// QOperator), dynamic or weight-only.
    Quantize {
        model: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Calibration data (see `calibrate`).
        #[arg(long, conflicts_with = "calibration")]
        data: Option<PathBuf>,
        /// A calibration table from `onnxq calibrate` (same options).
        #[arg(long)]
        calibration: Option<PathBuf>,
        #[command(flatten)]
        q: QuantFlags,
        /// Keep this node in float (repeatable).
        #[arg(long, value_name = "NODE")]
        exclude: Vec<String>,
        /// Keep every node of this op type in float (repeatable).
        #[arg(long, value_name = "TYPE")]
        exclude_op: Vec<String>,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Float pipeline run before observer insertion (default: the fusion preset).
        #[arg(long)]
        passes: Option<String>,
        /// static (calibrated activations), dynamic (activations quantized at
        /// run time: MatMul/Gemm/LSTM/GRU), weight-only (MatMul/Gemm weights).
        #[arg(long, default_value = "static", value_parser = ["static", "dynamic", "weight-only"])]
        mode: String,
        /// Static mode's output: qdq (QuantizeLinear/DequantizeLinear pairs) or
        /// qoperator (QLinearConv/QLinearMatMul).
        #[arg(long, default_value = "qdq", value_parser = ["qdq", "qoperator"])]
        format: String,
        /// Weight-only mode: 8 (per channel) or 4 (blockwise, opset 21).
        #[arg(long, value_parser = clap::value_parser!(u32).range(4..=8))]
        bits: Option<u32>,
        /// Weight-only 4-bit: weights per scale along K (a power of two ≥ 16).
        #[arg(long)]
        block_size: Option<usize>,
        /// An evaluation set (.npz with the model's input arrays and `labels`):
        /// prints fp32 vs int8 top-1 accuracy, both run in tract.
        #[arg(long, value_name = "NPZ")]
        eval: Option<PathBuf>,
    },
    /// Run a model with the native executor; outputs are written as <name>.npy.
    Run(onnxq::executor::cli::RunArgs),
    /// Time a model (native executor or tract): median/min/max latency and peak RSS.
    Bench(onnxq::executor::cli::BenchArgs),
    /// Per-value SQNR, MSE and cosine similarity of a QDQ model against its float original.
    Compare(onnxq::numeric::compare::CompareArgs),
    /// Import a model and export it again (a round trip through the IR).
    Convert {
        model: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// How activations and weights are quantized (shared by calibrate and quantize).
#[derive(clap::Args, Clone, Debug)]
struct QuantFlags {
    /// Kernel family whose capabilities and defaults apply.
    #[arg(long, default_value = "fbgemm", value_parser = ["fbgemm", "qnnpack"])]
    backend: String,
    /// Activation observer: minmax, moving-average, histogram, percentile, entropy, mse.
    #[arg(long)]
    observer: Option<String>,
    /// Weight observer: minmax, per-channel-minmax, ...
    #[arg(long)]
    weight_observer: Option<String>,
    /// Quantize weights per tensor instead of per channel.
    #[arg(long)]
    per_tensor: bool,
    /// Weight type: int8 (the presets' symmetric weights) or uint8 (asymmetric, with a zero
    /// point: QNNPACK's native form, run by u8×u8 kernels).
    #[arg(long, value_parser = ["int8", "uint8"])]
    weight_dtype: Option<String>,
    /// A QConfigMapping JSON file (see README).
    #[arg(long)]
    qconfig: Option<PathBuf>,
    /// Also quantize elementwise and data-movement ops whose output feeds no
    /// int8 op (by default they stay float: int8 there only adds rounding).
    #[arg(long)]
    quantize_isolated: bool,
}

impl QuantFlags {
    /// The library options these flags give (exclusions and threads are
    /// added by the commands that have them).
    fn options(&self) -> onnxq::quantize::QuantizeOptions {
        onnxq::quantize::QuantizeOptions {
            backend: self.backend.clone(),
            observer: self.observer.clone(),
            weight_observer: self.weight_observer.clone(),
            per_tensor: self.per_tensor,
            weight_dtype: self.weight_dtype.clone(),
            qconfig: self.qconfig.clone(),
            quantize_isolated: self.quantize_isolated,
            ..Default::default()
        }
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect {
            model,
            summary_only,
        } => {
            let m = onnxq::import::import_file(&model)?;
            let mut text = String::new();
            if !summary_only {
                text += &onnxq::ir::print::model_to_string(&m);
                text.push('\n');
            }
            text += &onnxq::summary::summary_text(&m);
            write_stdout(&text)?;
        }
        Command::Optimize {
            model,
            output,
            passes,
            print_after_all,
            print_before,
            print_after,
            verify_each,
            stop_after,
            list_passes,
        } => {
            let registry = onnxq::pm::PassRegistry::builtin();
            if list_passes {
                let mut text = String::new();
                for (name, desc) in registry.describe() {
                    text += &format!("{name:<24} {desc}\n");
                }
                return write_stdout(&text);
            }
            let Some(output) = output else {
                bail!("optimize needs -o OUT (or --list-passes)")
            };
            refuse_overwrite(&model, &output)?;
            let mut m = onnxq::import::import_file(&model)?;
            let text = passes.as_deref().unwrap_or(onnxq::passes::OPTIMIZE);
            let mut pm = onnxq::pm::PassManager::parse(text, &registry)?;
            pm.instrumentation.print_after_all = print_after_all;
            pm.instrumentation.print_before = print_before;
            pm.instrumentation.print_after = print_after;
            pm.instrumentation.verify_each = verify_each;
            pm.instrumentation.stop_after = stop_after;
            let mut cx = onnxq::pm::PassContext::new();
            let timings = pm.run(&mut m, &mut cx)?;
            onnxq::emit::write_file(&m, &output)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!("pipeline: {}", pm.pipeline_text());
            for t in &timings {
                let stats: Vec<String> = cx
                    .statistics()
                    .iter()
                    .filter(|((p, _), _)| *p == t.pass)
                    .map(|((_, k), v)| format!("{k}={v}"))
                    .collect();
                eprintln!(
                    "  {:<24} {:>8.2} ms  {}",
                    t.pass,
                    t.elapsed.as_secs_f64() * 1e3,
                    stats.join(", ")
                );
            }
            eprintln!("wrote {}", output.display());
        }
        Command::Calibrate {
            model,
            data,
            output,
            q,
            threads,
            merge,
        } => {
            refuse_overwrite(&model, &output)?;
            if !merge.is_empty() {
                let mut table = onnxq::calib::CalibrationTable::read(&merge[0])?;
                for f in &merge[1..] {
                    table
                        .merge(&onnxq::calib::CalibrationTable::read(f)?)
                        .with_context(|| format!("merging {}", f.display()))?;
                }
                table.write(&output)?;
                eprintln!(
                    "merged {} tables ({} samples) into {}",
                    merge.len(),
                    table.samples,
                    output.display()
                );
                return Ok(());
            }
            let mut m = onnxq::import::import_file(&model)?;
            let mut cx = onnxq::pm::PassContext::new();
            let pipeline = onnxq::quantize::prepare(&mut m, &q.options(), &mut cx)?;
            let options = onnxq::calib::CalibrationOptions {
                threads,
                ..Default::default()
            };
            let (table, stats) = onnxq::calib::calibrate(&m, &pipeline, &data, options)?;
            table.write(&output)?;
            let roles =
                |r: onnxq::calib::Role| table.entries.values().filter(|e| e.role == r).count();
            eprintln!(
                "calibrated {} activations, {} weights, {} fixed ranges on {} samples in {:.2} s ({:.0} samples/s, {} thread(s){})",
                roles(onnxq::calib::Role::Activation),
                roles(onnxq::calib::Role::Weight),
                roles(onnxq::calib::Role::Fixed),
                stats.samples,
                stats.elapsed.as_secs_f64(),
                stats.samples_per_sec(),
                stats.threads,
                stats.single_thread_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
            );
            for d in cx.diagnostics() {
                log::info!("{}: {}: {}", d.pass, d.subject, d.message);
            }
            eprintln!("wrote {}", output.display());
        }
        Command::Quantize {
            model,
            output,
            data,
            calibration,
            q,
            exclude,
            exclude_op,
            threads,
            passes,
            eval,
            mode,
            format,
            bits,
            block_size,
        } => {
            refuse_overwrite(&model, &output)?;
            if mode != "weight-only" && (bits.is_some() || block_size.is_some()) {
                bail!("--bits and --block-size are options of --mode weight-only (this is --mode {mode})");
            }
            if mode != "static" && format == "qoperator" {
                bail!("--format qoperator is for --mode static (dynamic mode writes MatMulInteger, weight-only DequantizeLinear)");
            }
            if mode != "static" && (data.is_some() || calibration.is_some()) {
                bail!("--mode {mode} needs no calibration data: drop --data / --calibration");
            }
            let mode = match mode.as_str() {
                "static" => onnxq::quantize::Mode::Static,
                "dynamic" => onnxq::quantize::Mode::Dynamic,
                _ => onnxq::quantize::Mode::WeightOnly {
                    bits: bits.unwrap_or(8),
                    block: block_size.unwrap_or(32),
                },
            };
            let calibration = match (&data, &calibration) {
                (Some(d), _) => Some(onnxq::quantize::Calibration::Data(d)),
                (None, Some(f)) => Some(onnxq::quantize::Calibration::Table(
                    onnxq::calib::CalibrationTable::read(f)?,
                )),
                (None, None) if mode == onnxq::quantize::Mode::Static => {
                    bail!("static quantization needs --data PATH (calibration data) or --calibration FILE (or --mode dynamic|weight-only)")
                }
                (None, None) => None,
            };
            let options = onnxq::quantize::QuantizeOptions {
                mode,
                format: if format == "qoperator" {
                    onnxq::quantize::Format::QOperator
                } else {
                    onnxq::quantize::Format::Qdq
                },
                exclude,
                exclude_op,
                passes,
                calibration: onnxq::calib::CalibrationOptions {
                    threads,
                    ..Default::default()
                },
                ..q.options()
            };
            let summary = onnxq::quantize::quantize_file(&model, &output, calibration, &options)?;
            eprint!("{summary}");
            eprintln!("wrote {}", output.display());
            if let Some(eval) = eval {
                let fp32 = top1_accuracy(&model, &eval)?;
                let int8 = top1_accuracy(&output, &eval)?;
                write_stdout(&format!(
                    "top-1 accuracy on {} ({} samples, tract): fp32 {:.2} %, int8 {:.2} % ({:+.2} points)\n",
                    eval.display(),
                    fp32.1,
                    fp32.0 * 100.0,
                    int8.0 * 100.0,
                    (int8.0 - fp32.0) * 100.0
                ))?;
            }
        }
        Command::Run(a) => onnxq::executor::cli::run(a)?,
        Command::Bench(a) => onnxq::executor::cli::bench(a)?,
        Command::Compare(a) => onnxq::numeric::compare::run(a)?,
        Command::Convert { model, output } => {
            refuse_overwrite(&model, &output)?;
            let m = onnxq::import::import_file(&model)?;
            onnxq::emit::write_file(&m, &output)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!("wrote {}", output.display());
        }
    }
    Ok(())
}

/// Top-1 accuracy of a single-input classifier on an .npz with the input
/// array (named after the model input) and `labels`, run in tract.
fn top1_accuracy(model: &Path, eval: &Path) -> Result<(f64, usize)> {
    let m = onnxq::import::import_file_with(
        model,
        &onnxq::import::ImportOptions { infer_types: false },
    )?;
    let arrays = onnxq::data::read_npz(eval)?;
    let input_name = &m.graph.value(m.graph.inputs[0]).name;
    let find = |n: &str| arrays.iter().find(|(k, _)| k == n).map(|(_, t)| t.clone());
    let x =
        find(input_name).with_context(|| format!("{}: no array `{input_name}`", eval.display()))?;
    let labels =
        find("labels").with_context(|| format!("{}: no array `labels`", eval.display()))?;
    let labels = labels.to_i64_vec().context("labels must be integers")?;
    let bytes = std::fs::read(model)?;
    let out = onnxq::tract_runner::run_once(&bytes, model.parent(), std::slice::from_ref(&x))?;
    let logits = out[0].to_f32_vec().context("float logits")?;
    let classes = logits.len() / labels.len();
    let correct = labels
        .iter()
        .enumerate()
        .filter(|&(i, &l)| {
            let row = &logits[i * classes..(i + 1) * classes];
            let best = (0..classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            best as i64 == l
        })
        .count();
    Ok((correct as f64 / labels.len() as f64, labels.len()))
}

/// Writes to stdout; a closed pipe (`onnxq inspect m | head`) is not an error.
fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Output paths must never be the input model (or its external data).
fn refuse_overwrite(input: &Path, output: &Path) -> Result<()> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(input, output) {
        bail!(
            "refusing to overwrite the input model {}: choose another output path",
            input.display()
        );
    }
    Ok(())
}
