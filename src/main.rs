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
