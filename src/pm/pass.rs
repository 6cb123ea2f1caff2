//! The `Pass` trait and the context passes run with.

use crate::error::Result;
use crate::ir::Model;
use std::collections::BTreeMap;

/// A transformation of the model.
///
/// Passes are stateless values: everything a run learns goes into the
/// [`PassContext`], so one pass object may run any number of times, in any
/// pipeline. The name is stable and kebab-case; it is the pass's name in
/// pipeline text, dumps and logs.
pub trait Pass: Send + Sync {
    /// Stable kebab-case name, e.g. `fold-batchnorm`.
    fn name(&self) -> &'static str;

    /// This instance's options, printed back as `name{key=value,...}`.
    fn options(&self) -> Vec<(String, String)> {
        vec![]
    }

    /// Runs over the model.
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<()>;
}

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Why something was not done (e.g. a node not fused); shown on request.
    Note,
    Warning,
}

/// A message from a pass about one node or value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub pass: &'static str,
    pub severity: Severity,
    /// The node or value concerned (its ONNX name).
    pub subject: String,
    pub message: String,
}

/// What a pass run may read and record: options shared by the pipeline,
/// statistics (named counters) and diagnostics.
#[derive(Clone, Default)]
pub struct PassContext {
    /// Pipeline-wide settings, e.g. `backend=fbgemm`.
    pub settings: BTreeMap<String, String>,
    stats: BTreeMap<(String, String), u64>,
    diagnostics: Vec<Diagnostic>,
    current: Option<&'static str>,
}

impl PassContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` to the counter `what` of the running pass.
    pub fn count(&mut self, what: &str, n: u64) {
        let pass = self.current.unwrap_or("").to_string();
        *self.stats.entry((pass, what.to_string())).or_default() += n;
    }

    /// Records a note (why something was not done) about a node or value.
    pub fn note(&mut self, subject: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Note, subject.into(), message.into());
    }

    pub fn warn(&mut self, subject: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, subject.into(), message.into());
    }

    fn push(&mut self, severity: Severity, subject: String, message: String) {
        let pass = self.current.unwrap_or("");
        log::debug!("{pass}: {subject}: {message}");
        self.diagnostics.push(Diagnostic {
            pass,
            severity,
            subject,
            message,
        });
    }

    /// Counters as ((pass, name), value), sorted.
    pub fn statistics(&self) -> &BTreeMap<(String, String), u64> {
        &self.stats
    }

    /// A counter's value (0 if never counted).
    pub fn stat(&self, pass: &str, what: &str) -> u64 {
        self.stats
            .get(&(pass.to_string(), what.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    pub(crate) fn enter(&mut self, pass: &'static str) {
        self.current = Some(pass);
    }

    pub(crate) fn leave(&mut self) {
        self.current = None;
    }
}
