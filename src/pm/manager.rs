//! The pass manager: runs a pipeline with verification and instrumentation.
//!
//! Instrumentation lives here, not in passes: IR dumps before/after chosen
//! passes, timing and statistics (logged at `RUST_LOG=debug`), the verifier
//! after every pass (always in debug builds and tests, on request in
//! release), and a bisect knob that stops after N passes.

use super::pass::{Pass, PassContext};
use super::pipeline::{PipelineElement, PipelineSpec};
use super::registry::PassRegistry;
use crate::error::{Error, Result};
use crate::ir::Model;
use std::time::{Duration, Instant};

/// Where IR dumps go: a callback given (pass name, "before"/"after", dump).
pub type DumpSink = Box<dyn FnMut(&str, &str, &str) + Send>;

/// Instrumentation settings.
#[derive(Default)]
pub struct Instrumentation {
    pub print_before: Vec<String>,
    pub print_after: Vec<String>,
    pub print_after_all: bool,
    /// Verify after every pass even in release builds.
    pub verify_each: bool,
    /// Run only the first N passes (bisection).
    pub stop_after: Option<usize>,
    /// Dump destination; stderr when `None`.
    pub sink: Option<DumpSink>,
}

/// Per-pass timing of a run.
#[derive(Clone, Debug)]
pub struct PassTiming {
    pub pass: String,
    pub elapsed: Duration,
}

/// A pipeline of passes.
#[derive(Default)]
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    pub instrumentation: Instrumentation,
}

impl PassManager {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a pipeline from text, creating passes from `registry`.
    pub fn parse(text: &str, registry: &PassRegistry) -> Result<Self> {
        let spec = PipelineSpec::parse(text)?;
        let mut pm = Self::new();
        for e in spec.0 {
            pm.add_boxed(registry.create(&e.name, e.options)?);
        }
        Ok(pm)
    }

    pub fn add(&mut self, pass: impl Pass + 'static) -> &mut Self {
        self.passes.push(Box::new(pass));
        self
    }

    pub fn add_boxed(&mut self, pass: Box<dyn Pass>) -> &mut Self {
        self.passes.push(pass);
        self
    }

    pub fn passes(&self) -> impl Iterator<Item = &dyn Pass> {
        self.passes.iter().map(|p| p.as_ref())
    }

    /// The pipeline as text; parsing it back gives the same pipeline.
    pub fn pipeline_text(&self) -> String {
        PipelineSpec(
            self.passes
                .iter()
                .map(|p| PipelineElement {
                    name: p.name().to_string(),
                    options: p.options().into_iter().collect(),
                })
                .collect(),
        )
        .to_string()
    }

    /// Runs the pipeline. Returns per-pass timings; statistics and
    /// diagnostics are in `cx`.
    pub fn run(&mut self, model: &mut Model, cx: &mut PassContext) -> Result<Vec<PassTiming>> {
        let verify = cfg!(debug_assertions) || self.instrumentation.verify_each;
        if verify {
            verify_model(model)
                .map_err(|e| Error::invalid(format!("input to the pipeline is invalid: {e}")))?;
        }
        let limit = self.instrumentation.stop_after.unwrap_or(usize::MAX);
        let mut timings = vec![];
        for (i, pass) in self.passes.iter().enumerate() {
            let name = pass.name();
            if i >= limit {
                log::info!("bisect: stopping before pass #{i} `{name}` (stop_after={limit})");
                break;
            }
            log::debug!("running pass #{i} `{name}`");
            if self.instrumentation.print_before.iter().any(|p| p == name) {
                Self::dump(&mut self.instrumentation.sink, name, "before", model);
            }
            let t = Instant::now();
            cx.enter(name);
            let result = pass.run(model, cx);
            cx.leave();
            let elapsed = t.elapsed();
            result.map_err(|e| Error::invalid(format!("pass `{name}` failed: {e}")))?;
            if verify {
                verify_model(model).map_err(|e| {
                    Error::invalid(format!("verifier failed after pass `{name}`: {e}"))
                })?;
            }
            let stats: Vec<String> = cx
                .statistics()
                .iter()
                .filter(|((p, _), _)| p == name)
                .map(|((_, k), v)| format!("{k}={v}"))
                .collect();
            log::debug!(
                "pass `{name}` took {:.3} ms [{}]",
                elapsed.as_secs_f64() * 1e3,
                stats.join(", ")
            );
            if self.instrumentation.print_after_all
                || self.instrumentation.print_after.iter().any(|p| p == name)
            {
                Self::dump(&mut self.instrumentation.sink, name, "after", model);
            }
            timings.push(PassTiming {
                pass: name.to_string(),
                elapsed,
            });
        }
        Ok(timings)
    }

    fn dump(sink: &mut Option<DumpSink>, pass: &str, when: &str, model: &Model) {
        let text = crate::ir::print::model_to_string(model);
        match sink {
            Some(f) => f(pass, when, &text),
            None => eprintln!("// ----- IR dump {when} `{pass}` -----\n{text}"),
        }
    }
}

/// The verifier run between passes.
pub fn verify_model(model: &Model) -> std::result::Result<(), String> {
    crate::ir::verify::verify_graph(&model.graph)
}
