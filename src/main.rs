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
    /// A QConfigMapping JSON file (see README).
    #[arg(long)]
    qconfig: Option<PathBuf>,
}

impl QuantFlags {
    /// The prepare pipeline (fusion + observer insertion) these flags describe.
    fn prepare_pipeline(&self) -> String {
        let mut opts = vec![format!("backend={}", self.backend)];
        if let Some(o) = &self.observer {
            opts.push(format!("observer={o}"));
        }
        if let Some(o) = &self.weight_observer {
            opts.push(format!("weight-observer={o}"));
        }
        if self.per_tensor {
            opts.push("per-tensor=true".into());
        }
        if let Some(q) = &self.qconfig {
            opts.push(format!("qconfig={}", q.display()));
        }
        let fuse = onnxq::passes::FUSE.replace(
            "fuse-activations",
            &format!("fuse-activations{{backend={}}}", self.backend),
        );
        format!("{fuse},insert-observers{{{}}}", opts.join(","))
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
            let pipeline = q.prepare_pipeline();
            let mut pm =
                onnxq::pm::PassManager::parse(&pipeline, &onnxq::pm::PassRegistry::builtin())?;
            let mut cx = onnxq::pm::PassContext::new();
            pm.run(&mut m, &mut cx)?;
            let options = onnxq::calib::CalibrationOptions {
                threads,
                ..Default::default()
            };
            let (table, stats) = onnxq::calib::calibrate(&m, &pm.pipeline_text(), &data, options)?;
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
