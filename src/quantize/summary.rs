//! What `onnxq quantize` prints: what was quantized, what stayed float and
//! why (grouped by reason, every node named), size and time per stage.

use crate::pm::{PassContext, Severity};
use std::fmt;
use std::time::Duration;

/// Nodes or values left in float for one reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloatGroup {
    pub reason: String,
    /// Node (or value) names, in the order the passes reported them.
    pub subjects: Vec<String>,
}

/// The report of one quantization run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// The pipeline that ran, as text.
    pub pipeline: String,
    pub activations: u64,
    pub weights: u64,
    pub biases: u64,
    /// Conv/Gemm biases moved by bias correction (float ones of weight-only units included).
    pub corrected_biases: u64,
    pub constants: u64,
    /// Embedding tables stored as int8 rows (`quantize-embeddings`).
    pub embedding_tables: u64,
    /// Static mode: recurrent layers whose weights became int8 behind a DequantizeLinear,
    /// per op type.
    pub recurrent_weights: Vec<(String, u64)>,
    /// Ops rewritten per type by the mode's pass (dynamic, weight-only,
    /// QOperator), e.g. `("MatMul", 6)`.
    pub by_op: Vec<(String, u64)>,
    /// What stayed float, grouped by reason (first-reported reason first).
    pub float: Vec<FloatGroup>,
    /// Other notes and warnings: `(subject, message)`.
    pub notes: Vec<(String, String)>,
    /// Calibration samples (None when a saved table was used).
    pub samples: Option<usize>,
    /// The output SQNR (dB, worst output) on the calibration data, when quantization
    /// measured it (bias correction `auto` does): the accuracy guard reuses it.
    pub calibration_sqnr: Option<crate::numeric::compare::SqnrEstimate>,
    /// Bias correction `auto`: whether the comparison kept it (`None`: not compared).
    pub bias_correction_chosen: Option<bool>,
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
    pub stage_times: Vec<(&'static str, Duration)>,
}

/// Prefixes of the notes that mean "left in float".
const FLOAT_PREFIXES: [&str; 3] = ["stays float: ", "stays float, ", "kept float: "];

impl Summary {
    /// Collects the counters and diagnostics of the quantization passes.
    pub fn from_context(
        pipeline: String,
        cx: &PassContext,
        samples: Option<usize>,
        stage_times: Vec<(&'static str, Duration)>,
    ) -> Summary {
        let mut s = Summary {
            pipeline,
            activations: cx.stat("convert-qdq", "activations"),
            weights: cx.stat("convert-qdq", "weights"),
            biases: cx.stat("convert-qdq", "biases"),
            corrected_biases: cx.stat("convert-qdq", "bias corrections"),
            constants: cx.stat("convert-qdq", "constants"),
            embedding_tables: cx.stat("quantize-embeddings", "embedding tables"),
            samples,
            stage_times,
            ..Default::default()
        };
        for d in cx.diagnostics() {
            let reason = FLOAT_PREFIXES
                .iter()
                .find_map(|p| d.message.strip_prefix(p));
            match reason {
                Some(r) => s.add_float(r, &d.subject),
                None if d.severity == Severity::Warning
                    || matches!(
                        d.pass,
                        "insert-observers"
                            | "convert-qdq"
                            | "convert-qoperator"
                            | "quantize-dynamic"
                            | "quantize-weight-only"
                            | "quantize-embeddings"
                            | "strip-metadata"
                            | "store-weights-fp16"
                    ) =>
                {
                    s.notes.push((d.subject.clone(), d.message.clone()))
                }
                None => {}
            }
        }
        s
    }

    fn add_float(&mut self, reason: &str, subject: &str) {
        match self.float.iter_mut().find(|g| g.reason == reason) {
            Some(g) => {
                if !g.subjects.iter().any(|s| s == subject) {
                    g.subjects.push(subject.to_string());
                }
            }
            None => self.float.push(FloatGroup {
                reason: reason.to_string(),
                subjects: vec![subject.to_string()],
            }),
        }
    }

    /// Whether `subject` (a node or value name) was left in float, and why.
    pub fn float_reason(&self, subject: &str) -> Option<&str> {
        self.float
            .iter()
            .find(|g| g.subjects.iter().any(|s| s == subject))
            .map(|g| g.reason.as_str())
    }

    /// Number of nodes and values left in float.
    pub fn float_count(&self) -> usize {
        self.float.iter().map(|g| g.subjects.len()).sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "pipeline: {}", self.pipeline)?;
        if self.activations + self.weights + self.biases + self.constants > 0 {
            let corrected = if self.corrected_biases > 0 {
                format!(
                    "; {} layer biases corrected for their weights' rounding",
                    self.corrected_biases
                )
            } else {
                String::new()
            };
            writeln!(
                f,
                "quantized: {} activations, {} weights, {} biases, {} constants{corrected}",
                self.activations, self.weights, self.biases, self.constants
            )?;
        }
        if self.embedding_tables > 0 {
            writeln!(
                f,
                "embedding tables: {} stored as int8 rows, dequantized after the lookup",
                self.embedding_tables
            )?;
        }
        // `LSTM 1, GRU 2`.
        let counts = |v: &[(String, u64)]| -> String {
            let ops: Vec<String> = v.iter().map(|(t, n)| format!("{t} {n}")).collect();
            ops.join(", ")
        };
        if !self.recurrent_weights.is_empty() {
            writeln!(
                f,
                "recurrent weights: {} int8 per gate row behind DequantizeLinear (the cells compute in float)",
                counts(&self.recurrent_weights)
            )?;
        }
        if !self.by_op.is_empty() {
            writeln!(f, "rewritten ops: {}", counts(&self.by_op))?;
        }
        if !self.float.is_empty() {
            writeln!(f, "left in float ({}), by reason:", self.float_count())?;
            for g in &self.float {
                writeln!(f, "  {} ({}):", g.reason, g.subjects.len())?;
                write_wrapped(f, &g.subjects, "    ", 100)?;
            }
        }
        if !self.notes.is_empty() {
            writeln!(f, "notes:")?;
            for (subject, message) in &self.notes {
                writeln!(f, "  {subject}: {message}")?;
            }
        }
        if let (Some(a), Some(b)) = (self.size_before, self.size_after) {
            writeln!(
                f,
                "size: {} -> {} ({:.2}x)",
                crate::summary::human_bytes(a as usize),
                crate::summary::human_bytes(b as usize),
                b as f64 / a.max(1) as f64
            )?;
        }
        if !self.stage_times.is_empty() {
            let stages: Vec<String> = self
                .stage_times
                .iter()
                .map(|(name, d)| format!("{name} {:.3} s", d.as_secs_f64()))
                .collect();
            write!(f, "time: {}", stages.join(", "))?;
            if let Some(n) = self.samples {
                write!(f, " ({n} calibration samples)")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Names separated by ", ", wrapped at `width` columns.
fn write_wrapped(
    f: &mut fmt::Formatter<'_>,
    names: &[String],
    indent: &str,
    width: usize,
) -> fmt::Result {
    let mut line = String::new();
    for (i, n) in names.iter().enumerate() {
        let item = if i + 1 < names.len() {
            format!("{n}, ")
        } else {
            n.clone()
        };
        if !line.is_empty() && indent.len() + line.len() + item.len() > width {
            writeln!(f, "{indent}{}", line.trim_end())?;
            line.clear();
        }
        line += &item;
    }
    if !line.is_empty() {
        writeln!(f, "{indent}{line}")?;
    }
    Ok(())
}
