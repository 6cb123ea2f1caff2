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
    /// Import a model and export it again (a round trip through the IR).
    Convert {
        model: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
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
