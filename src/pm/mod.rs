//! The pass manager: the [`Pass`] trait, the registry of passes by name,
//! textual pipelines, and the manager that runs them with verification and
//! instrumentation.

mod manager;
mod pass;
mod pipeline;
mod registry;

pub use manager::{verify_model, DumpSink, Instrumentation, PassManager, PassTiming};
pub use pass::{Diagnostic, Pass, PassContext, Severity};
pub use pipeline::{PipelineElement, PipelineSpec};
pub use registry::{PassFactory, PassOptions, PassRegistry};
