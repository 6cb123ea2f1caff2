//! `onnxq compare FLOAT QUANT --data PATH`: per-value quantization error.
//!
//! Activations are matched through the QDQ structure of the quantized model: every
//! `DequantizeLinear` fed by a `QuantizeLinear` whose input has the name of a computed
//! value (or graph input) of the float model is paired with that float value (a graph
//! output keeps its name on the DequantizeLinear's output, so the DQ output's name is
//! also tried when it is a graph output of both models). When the quantizer folded float
//! ops into the producer of a value and kept its name (BatchNorm folding: the Conv output
//! named `/conv/Conv_output_0` then holds Conv+BatchNorm), the float value compared is the
//! output of the folded ops, and the row's op says so (`Conv+BatchNormalization`). Both models are run with the
//! native executor on every batch of `--data`, with the paired values added as graph
//! outputs; the quantized model's lowering is unchanged by this (the DQ nodes are only
//! read, not absorbed).
//!
//! Figures are accumulated over all samples, as if every sample of a value were one
//! long vector: with `x` float and `y` dequantized, SQNR = 10·log10(Σx² / Σ(x−y)²),
//! MSE = Σ(x−y)² / n, cosine = Σxy / √(Σx²·Σy²) (sums in f64).
//!
//! Weights: a `DequantizeLinear` reading a constant `W_quantized` (8 bits or fewer) is
//! compared to the float initializer `W` when it has the same shape. When the float `W`
//! is folded with a following BatchNormalization (or Mul by a constant) by the quantizer,
//! it is compared with `W` of the float model after the optimize pipeline (which folds
//! the same way; the row's op says `(float BN-folded)`), and listed as skipped with the
//! reason if that is not found.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::report::{HistAcc, Histogram};
use crate::calib::{model_inputs, CalibrationData};
use crate::executor::{Executor, ExecutorOptions};
use crate::ir::{DataType, Graph, Model, NodeKind, Tensor, ValueId};

/// Command-line arguments of `onnxq compare`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// The float model.
    pub float_model: PathBuf,
    /// Its quantized (QDQ) version.
    pub quant_model: PathBuf,
    /// Data to run (as for `calibrate`: an .npz, a folder of them, or one .npy).
    #[arg(long)]
    pub data: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report (SQNR chart, histograms with clipping
    /// ranges) to this file.
    #[arg(long, value_name = "HTML")]
    pub report: Option<PathBuf>,
}

/// Running sums of one compared pair.
#[derive(Clone, Copy, Debug, Default)]
struct Acc {
    n: u64,
    xx: f64,
    yy: f64,
    xy: f64,
    ee: f64,
}

impl Acc {
    fn add(&mut self, x: &[f32], y: &[f32]) {
        for (&a, &b) in x.iter().zip(y) {
            let (a, b) = (a as f64, b as f64);
            self.xx += a * a;
            self.yy += b * b;
            self.xy += a * b;
            self.ee += (a - b) * (a - b);
        }
        self.n += x.len() as u64;
    }

    fn metrics(&self) -> Metrics {
        Metrics {
            sqnr_db: sqnr_db(self.xx, self.ee),
            mse: if self.n == 0 {
                0.0
            } else {
                self.ee / self.n as f64
            },
            cosine: if self.xx == 0.0 && self.yy == 0.0 {
                1.0
            } else if self.xx == 0.0 || self.yy == 0.0 {
                0.0
            } else {
                self.xy / (self.xx * self.yy).sqrt()
            },
            elements: self.n,
        }
    }
}

/// Adds Σx² (signal) and Σ(x−y)² (noise) of a reference `x` and its approximation `y`.
pub fn add_signal_noise(acc: &mut (f64, f64), x: &[f32], y: &[f32]) {
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (a as f64, b as f64);
        acc.0 += a * a;
        acc.1 += (a - b) * (a - b);
    }
}

/// An output SQNR measured on a data set: the figure over all of it (`db`), and how low
/// it could be on other data like it (`low_db`, see [`sqnr_lower_bound`]).
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct SqnrEstimate {
    pub db: f64,
    pub low_db: f64,
}

/// Bootstrap resamples behind [`sqnr_lower_bound`].
const BOOTSTRAP_RESAMPLES: usize = 1000;

/// The worst output's SQNR (dB) of per-output (signal, noise) sums; outputs without
/// signal do not count (+∞ when none has any).
pub fn worst_sqnr_db(sums: &[(f64, f64)]) -> f64 {
    sums.iter()
        .filter(|(signal, _)| *signal > 0.0)
        .map(|&(signal, noise)| sqnr_db(signal, noise))
        .fold(f64::INFINITY, f64::min)
}

/// The 5th percentile of the worst output's SQNR over bootstrap resamples of the
/// batches (`per_batch[b]`: batch b's per-output (signal, noise) sums), drawn with a
/// fixed seed so the figure is reproducible.
///
/// Why: a small set's SQNR is a ratio of sums dominated by its worst samples, and unseen
/// data scores lower when those are rare (16 OCR lines scoring 28 dB held 24.9 dB on 32
/// others). The spread of the resampled figure says how much the one figure can be
/// trusted: a set of similar samples keeps it close to the figure, a set with a few far
/// worse ones pulls it down. With one batch there is nothing to resample: the figure.
pub fn sqnr_lower_bound(per_batch: &[Vec<(f64, f64)>]) -> f64 {
    if per_batch.len() < 2 {
        return worst_sqnr_db(per_batch.first().map_or(&[][..], Vec::as_slice));
    }
    let outputs = per_batch.iter().map(Vec::len).max().unwrap_or(0);
    let total = |pick: &mut dyn FnMut() -> usize| {
        let mut sums = vec![(0.0f64, 0.0f64); outputs];
        for _ in 0..per_batch.len() {
            for (acc, &(s, n)) in sums.iter_mut().zip(&per_batch[pick()]) {
                acc.0 += s;
                acc.1 += n;
            }
        }
        worst_sqnr_db(&sums)
    };
    // splitmix64: small, seeded, the same figures on every machine.
    let mut state = 0x6f6e_6e78_7162_6f6fu64;
    let b = per_batch.len() as u64;
    let mut pick = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % b) as usize
    };
    let mut figures: Vec<f64> = (0..BOOTSTRAP_RESAMPLES).map(|_| total(&mut pick)).collect();
    figures.sort_by(f64::total_cmp);
    // Nearest rank.
    figures[BOOTSTRAP_RESAMPLES / 20 - 1]
}

/// 10·log10(signal / noise); +∞ for no noise (also when both are 0), −∞ for noise on a
/// zero signal.
pub fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if noise == 0.0 {
        f64::INFINITY
    } else if signal == 0.0 {
        f64::NEG_INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Metrics {
    /// Non-finite values (no error at all, or error on an all-zero value) are written
    /// as `null` in JSON.
    pub sqnr_db: f64,
    pub mse: f64,
    pub cosine: f64,
    /// Elements compared (over all samples for activations).
    pub elements: u64,
}

/// What a row compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Activation,
    Weight,
}

/// One compared value.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub kind: Kind,
    /// The float model's value name.
    pub name: String,
    /// The quantized model's dequantized value.
    pub quant_name: String,
    /// The op producing the float value (`Input` for a graph input), or consuming the weight.
    pub op: String,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// A weight that could not be compared.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub kind: Kind,
    pub name: String,
    pub reason: String,
}

/// The result of a comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub float_model: String,
    pub quant_model: String,
    pub samples: usize,
    pub batches: usize,
    /// Worst (lowest SQNR) first.
    pub rows: Vec<Row>,
    pub skipped: Vec<Skipped>,
}

/// A pair of activations to compare: float value, quantized DQ output.
struct Pair {
    float: ValueId,
    quant: ValueId,
    /// Float ops folded into the quantized value (e.g. `BatchNormalization`).
    folded: Vec<String>,
}

/// Op types the quantizer folds into the op before them when their other inputs are
/// constant (BatchNorm folding, decomposed BatchNorm `Mul`/`Add`, MatMul+Add fusion).
const FOLDABLE: [&str; 5] = ["BatchNormalization", "Mul", "Add", "Sub", "Div"];

/// The float value the quantized value named like `v` really computes: the quantizer
/// keeps the name of `v` when it folds a following BatchNormalization (or Mul/Add by
/// constants) into its producer, so while `v`'s only consumer is such an op whose output
/// does not exist in the quantized graph, the comparison moves to that op's output.
/// Returns the value and the op types followed.
fn follow_folded(f: &Graph, q: &Graph, mut v: ValueId) -> (ValueId, Vec<String>) {
    let mut ops = Vec::new();
    loop {
        if f.is_graph_output(v) {
            break;
        }
        let consumers = f.consumers(v);
        let [(c, _)] = consumers.as_slice() else {
            break;
        };
        let node = f.node(*c);
        let others_const = node
            .inputs
            .iter()
            .flatten()
            .filter(|&&i| i != v)
            .all(|&i| f.const_tensor(i).is_some());
        let Some(Some(out)) = node.outputs.first() else {
            break;
        };
        if !FOLDABLE.iter().any(|t| node.is_op(t))
            || !others_const
            || q.value_by_name(&f.value(*out).name).is_some()
        {
            break;
        }
        ops.push(node.op_type().to_string());
        v = *out;
    }
    (v, ops)
}

/// Finds the activation pairs (see the module documentation).
fn match_activations(f: &Graph, q: &Graph) -> Vec<Pair> {
    let computed = |name: &str| -> Option<ValueId> {
        let v = f.value_by_name(name)?;
        match f.node(f.producer(v)).kind {
            NodeKind::Op(_) | NodeKind::Input => Some(v),
            _ => None,
        }
    };
    let mut pairs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for n in q.topo_order().unwrap_or_default() {
        let dq = q.node(n);
        if !dq.is_op("DequantizeLinear") {
            continue;
        }
        let (Some(Some(xq)), Some(Some(out))) = (dq.inputs.first(), dq.outputs.first()) else {
            continue;
        };
        let qn = q.node(q.producer(*xq));
        if !qn.is_op("QuantizeLinear") {
            continue;
        }
        let Some(Some(x)) = qn.inputs.first() else {
            continue;
        };
        let float = computed(&q.value(*x).name).or_else(|| {
            let name = &q.value(*out).name;
            let v = computed(name)?;
            (q.is_graph_output(*out) && f.is_graph_output(v)).then_some(v)
        });
        if let Some(fv) = float {
            let (fv, folded) = follow_folded(f, q, fv);
            if seen.insert(fv) {
                pairs.push(Pair {
                    float: fv,
                    quant: *out,
                    folded,
                });
            }
        }
    }
    pairs
}

/// The float model after the optimize pipeline (BatchNorm folding, MatMul+Add fusion), in
/// which the weights the quantizer folded can be found as it saw them; `None` if the
/// pipeline fails.
fn optimized(model: &Model) -> Option<Model> {
    let mut m = model.clone();
    let registry = crate::pm::PassRegistry::builtin();
    let mut pm = crate::pm::PassManager::parse(crate::passes::OPTIMIZE, &registry).ok()?;
    let mut cx = crate::pm::PassContext::new();
    pm.run(&mut m, &mut cx).ok()?;
    Some(m)
}

/// Compares the weights (see the module documentation). `opt` is the float model after
/// the optimize pipeline, for the weights folded with a BatchNormalization.
fn compare_weights(
    f: &Graph,
    opt: Option<&Graph>,
    q: &Graph,
    rows: &mut Vec<Row>,
    skipped: &mut Vec<Skipped>,
    hists: &mut Vec<Histogram>,
) {
    for n in q.topo_order().unwrap_or_default() {
        let dq = q.node(n);
        if !dq.is_op("DequantizeLinear") {
            continue;
        }
        let (Some(Some(xq)), Some(Some(out))) = (dq.inputs.first(), dq.outputs.first()) else {
            continue;
        };
        let Some(wq) = q.const_tensor(*xq) else {
            continue;
        };
        if !matches!(
            wq.dtype,
            DataType::I8 | DataType::U8 | DataType::I4 | DataType::U4
        ) {
            continue; // i32 biases, 16-bit activations stored as constants
        }
        let qname = &q.value(*xq).name;
        let name = qname
            .strip_suffix("_quantized")
            .unwrap_or(qname)
            .to_string();
        let skip = |skipped: &mut Vec<Skipped>, reason: String| {
            skipped.push(Skipped {
                kind: Kind::Weight,
                name: name.clone(),
                reason,
            })
        };
        let Some(fv) = f.value_by_name(&name) else {
            skip(skipped, "no float initializer of that name".into());
            continue;
        };
        let Some(fw) = f.const_tensor(fv) else {
            skip(skipped, "not a constant in the float model".into());
            continue;
        };
        if fw.dims != wq.dims {
            skip(
                skipped,
                format!(
                    "shape {:?} in the float model, {:?} quantized",
                    fw.dims, wq.dims
                ),
            );
            continue;
        }
        let mut note = "";
        let mut fw = fw;
        if let Some(reason) = folded(f, fv) {
            // The same name and shape in the BatchNorm-folded float model, still a weight
            // (not the raw float one).
            let refolded = opt
                .and_then(|o| o.const_tensor(o.value_by_name(&name)?))
                .filter(|t| t.dims == wq.dims && t.data != fw.data);
            match refolded {
                Some(t) => {
                    fw = t;
                    note = " (float BN-folded)";
                }
                None => {
                    skip(skipped, reason);
                    continue;
                }
            }
        }
        let (Some(x), Some(y)) = (fw.to_f32_vec(), dequantize_const(q, n)) else {
            skip(skipped, "cannot read or dequantize the tensors".into());
            continue;
        };
        if x.len() != y.len() {
            skip(skipped, "element counts differ".into());
            continue;
        }
        let mut acc = Acc::default();
        acc.add(&x, &y);
        let mut h = HistAcc::default();
        h.add(&x);
        let (clip, clip_note) = dq_clip(q, n);
        hists.push(h.finish(&name, "weight", clip, clip_note));
        let op = q
            .consumers(*out)
            .first()
            .map(|(c, _)| q.node(*c).op_type().to_string())
            .unwrap_or_default()
            + note;
        rows.push(Row {
            kind: Kind::Weight,
            name,
            quant_name: q.value(*out).name.clone(),
            op,
            metrics: acc.metrics(),
        });
    }
}

/// Why the float weight `w` is not what the quantized model quantized: its consumer is
/// followed by a BatchNormalization or a Mul by a constant, which the quantizer folds in.
fn folded(f: &Graph, w: ValueId) -> Option<String> {
    for (c, _) in f.consumers(w) {
        let Some(Some(y)) = f.node(c).outputs.first() else {
            continue;
        };
        for (d, _) in f.consumers(*y) {
            let node = f.node(d);
            let const_operand = node
                .inputs
                .iter()
                .flatten()
                .any(|&i| f.const_tensor(i).is_some());
            if node.is_op("BatchNormalization") || (node.is_op("Mul") && const_operand) {
                return Some(format!(
                    "folded with the following {} `{}` by the quantizer",
                    node.op_type(),
                    f.display_node_name(d)
                ));
            }
        }
    }
    None
}

/// The float values of a DequantizeLinear of constants (per tensor or per axis).
fn dequantize_const(g: &Graph, dq: crate::ir::NodeId) -> Option<Vec<f32>> {
    let node = g.node(dq);
    let ints = |v: Option<ValueId>| -> Option<(Vec<i64>, Vec<i64>)> {
        let t = g.const_tensor(v?)?;
        let a = crate::executor::Array::from_tensor(t).ok()?;
        Some((a.data.to_i64_vec(), t.dims.clone()))
    };
    let (x, dims) = ints(node.inputs.first().copied().flatten())?;
    let scale = g
        .const_tensor(node.inputs.get(1).copied().flatten()?)?
        .to_f32_vec()?;
    let zp = match node.inputs.get(2).copied().flatten() {
        Some(z) => ints(Some(z))?.0,
        None => vec![0],
    };
    let op = node.op()?;
    if op.attr("block_size").and_then(|a| a.as_int()).unwrap_or(0) != 0 {
        return None;
    }
    if scale.len() == 1 {
        let z = *zp.first()?;
        return Some(x.iter().map(|&v| (v - z) as f32 * scale[0]).collect());
    }
    let axis = op.attr("axis").and_then(|a| a.as_int()).unwrap_or(1);
    let axis = if axis < 0 {
        axis + dims.len() as i64
    } else {
        axis
    } as usize;
    let ch = *dims.get(axis)? as usize;
    let inner: usize = dims[axis + 1..].iter().map(|&d| d as usize).product();
    if scale.len() != ch || (zp.len() != ch && zp.len() != 1) {
        return None;
    }
    Some(
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = (i / inner.max(1)) % ch;
                let z = if zp.len() == 1 { zp[0] } else { zp[c] };
                (v - z) as f32 * scale[c]
            })
            .collect(),
    )
}

/// The clipping range of a DequantizeLinear's qparams (see [`super::report::clip_range`]).
fn dq_clip(g: &Graph, dq: crate::ir::NodeId) -> (Option<(f64, f64)>, String) {
    let node = g.node(dq);
    let Some(scale) = node
        .inputs
        .get(1)
        .copied()
        .flatten()
        .and_then(|v| g.const_tensor(v))
        .and_then(|t| t.to_f32_vec())
    else {
        return (None, String::new());
    };
    let zpt = node
        .inputs
        .get(2)
        .copied()
        .flatten()
        .and_then(|v| g.const_tensor(v));
    let zp = zpt
        .and_then(|t| crate::executor::Array::from_tensor(t).ok())
        .map(|a| a.data.to_i64_vec())
        .unwrap_or_else(|| vec![0]);
    let (qmin, qmax) = match zpt.map(|t| t.dtype) {
        Some(DataType::I8) => (-128, 127),
        Some(DataType::U16) => (0, 65535),
        Some(DataType::I16) => (-32768, 32767),
        Some(DataType::I4) => (-8, 7),
        Some(DataType::U4) => (0, 15),
        Some(DataType::I32) => (i32::MIN as i64, i32::MAX as i64),
        // No zero point means uint8.
        _ => (0, 255),
    };
    super::report::clip_range(&scale, &zp, qmin, qmax)
}

/// A model with extra graph outputs, planned on the executor; returns the executor and,
/// per requested value, its index among the outputs.
fn plan_with_outputs(
    model: &Model,
    values: &[ValueId],
    what: &Path,
) -> Result<(Executor, Vec<usize>)> {
    let mut m = model.clone();
    let mut index = Vec::with_capacity(values.len());
    for &v in values {
        let i = match m.graph.outputs.iter().position(|&o| o == v) {
            Some(i) => i,
            None => {
                m.graph.outputs.push(v);
                m.graph.outputs.len() - 1
            }
        };
        index.push(i);
    }
    let exec = Executor::new(&m, ExecutorOptions::default())
        .with_context(|| format!("planning {}", what.display()))?;
    Ok((exec, index))
}

/// Compares `quant_path` (a QDQ model) with its float original on `data`.
pub fn compare_files(float_path: &Path, quant_path: &Path, data: &Path) -> Result<Report> {
    Ok(compare_files_with_histograms(float_path, quant_path, data)?.0)
}

/// [`compare_files`], also returning each compared tensor's histogram and clipping range
/// (for the HTML report).
pub fn compare_files_with_histograms(
    float_path: &Path,
    quant_path: &Path,
    data: &Path,
) -> Result<(Report, Vec<Histogram>)> {
    let fm = crate::import::import_file(float_path)
        .with_context(|| format!("reading the float model {}", float_path.display()))?;
    let qm = crate::import::import_file(quant_path)
        .with_context(|| format!("reading the quantized model {}", quant_path.display()))?;
    compare_models(&fm, &qm, float_path, quant_path, data)
}

/// Compares two models in memory; the paths name them in messages.
pub fn compare_models(
    fm: &Model,
    qm: &Model,
    float_path: &Path,
    quant_path: &Path,
    data: &Path,
) -> Result<(Report, Vec<Histogram>)> {
    let f_inputs = model_inputs(fm)?;
    let q_inputs = model_inputs(qm)?;
    let sig = |i: &[crate::calib::ModelInput]| -> Vec<(String, DataType)> {
        i.iter().map(|x| (x.name.clone(), x.dtype)).collect()
    };
    if sig(&f_inputs) != sig(&q_inputs) {
        bail!(
            "the models do not match: {} has inputs {:?}, {} has {:?}",
            float_path.display(),
            sig(&f_inputs),
            quant_path.display(),
            sig(&q_inputs)
        );
    }
    let pairs = match_activations(&fm.graph, &qm.graph);
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let opt = optimized(fm);
    let mut weight_hists = Vec::new();
    compare_weights(
        &fm.graph,
        opt.as_ref().map(|m| &m.graph),
        &qm.graph,
        &mut rows,
        &mut skipped,
        &mut weight_hists,
    );
    if pairs.is_empty() && rows.is_empty() {
        bail!(
            "no quantized value of {} matches a value of {}: compare needs a static QDQ model \
             quantized from it (QuantizeLinear → DequantizeLinear pairs on its values, or \
             DequantizeLinear weights; QOperator and dynamic models are not supported yet)",
            quant_path.display(),
            float_path.display()
        );
    }
    let fvals: Vec<ValueId> = pairs.iter().map(|p| p.float).collect();
    let qvals: Vec<ValueId> = pairs.iter().map(|p| p.quant).collect();
    let (fexec, fidx) = plan_with_outputs(fm, &fvals, float_path)?;
    let (qexec, qidx) = plan_with_outputs(qm, &qvals, quant_path)?;
    let mut hist = vec![HistAcc::default(); pairs.len()];

    let mut data = CalibrationData::open(data, &f_inputs)?;
    let mut acc = vec![Acc::default(); pairs.len()];
    let mut bad: HashMap<usize, String> = HashMap::new();
    let (mut samples, mut batches) = (0, 0);
    while let Some(batch) = data.next_batch() {
        let batch = batch?;
        let inputs: Vec<(&str, &Tensor)> = f_inputs
            .iter()
            .zip(&batch.tensors)
            .map(|(i, t)| (i.name.as_str(), t))
            .collect();
        let fo = fexec
            .run(&inputs)
            .with_context(|| format!("running {}", float_path.display()))?;
        let qo = qexec
            .run(&inputs)
            .with_context(|| format!("running {}", quant_path.display()))?;
        for (k, a) in acc.iter_mut().enumerate() {
            if bad.contains_key(&k) {
                continue;
            }
            let (x, y) = (&fo[fidx[k]].1, &qo[qidx[k]].1);
            if x.dims != y.dims {
                bad.insert(
                    k,
                    format!("shapes differ: {:?} float, {:?} quantized", x.dims, y.dims),
                );
                continue;
            }
            match (x.to_f32_vec(), y.to_f32_vec()) {
                (Some(xv), Some(yv)) => {
                    a.add(&xv, &yv);
                    hist[k].add(&xv);
                }
                _ => {
                    bad.insert(k, format!("not float: {} and {}", x.dtype, y.dtype));
                }
            }
        }
        samples += batch.samples;
        batches += 1;
    }
    if batches == 0 {
        bail!("the data holds no sample");
    }
    for (k, p) in pairs.iter().enumerate() {
        let name = fm.graph.value(p.float).name.clone();
        if let Some(reason) = bad.remove(&k) {
            skipped.push(Skipped {
                kind: Kind::Activation,
                name,
                reason,
            });
            continue;
        }
        rows.push(Row {
            kind: Kind::Activation,
            name,
            quant_name: qm.graph.value(p.quant).name.clone(),
            op: if p.folded.is_empty() {
                fm.graph
                    .node(fm.graph.producer(p.float))
                    .op_type()
                    .to_string()
            } else {
                // The op that produced the quantized value's name, then what was folded.
                let mut v = p.float;
                for _ in &p.folded {
                    let n = fm.graph.node(fm.graph.producer(v));
                    v = n
                        .inputs
                        .iter()
                        .flatten()
                        .copied()
                        .find(|&i| fm.graph.const_tensor(i).is_none())
                        .unwrap_or(v);
                }
                let first = fm.graph.node(fm.graph.producer(v)).op_type().to_string();
                std::iter::once(first)
                    .chain(p.folded.iter().cloned())
                    .collect::<Vec<_>>()
                    .join("+")
            },
            metrics: acc[k].metrics(),
        });
    }
    rows.sort_by(|a, b| a.metrics.sqnr_db.total_cmp(&b.metrics.sqnr_db));
    let mut hists = Vec::new();
    for (k, p) in pairs.iter().enumerate() {
        if hist[k].n == 0 {
            continue;
        }
        let (clip, note) = dq_clip(&qm.graph, qm.graph.producer(p.quant));
        let name = fm.graph.value(p.float).name.clone();
        hists.push(hist[k].finish(&name, "activation", clip, note));
    }
    hists.extend(weight_hists);
    Ok((
        Report {
            float_model: float_path.display().to_string(),
            quant_model: quant_path.display().to_string(),
            samples,
            batches,
            rows,
            skipped,
        },
        hists,
    ))
}

impl Report {
    /// The HTML report page: the table, the SQNR chart (activations then weights, worst
    /// first) and the histograms.
    pub fn html_page(&self, histograms: Vec<Histogram>) -> super::report::Page {
        let bars = self
            .rows
            .iter()
            .map(|r| super::report::Bar {
                label: format!(
                    "{} {}",
                    match r.kind {
                        Kind::Activation => "act",
                        Kind::Weight => "weight",
                    },
                    r.name
                ),
                sqnr_db: r.metrics.sqnr_db,
                second: None,
            })
            .collect();
        super::report::Page {
            title: format!(
                "onnxq compare: {} vs {}",
                self.quant_model, self.float_model
            ),
            sections: vec![("Per-value comparison".into(), self.table())],
            chart_title: "Per-layer SQNR (worst first)".into(),
            legend: ("SQNR of the dequantized value vs float".into(), None),
            bars,
            histograms,
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let acts = self
            .rows
            .iter()
            .filter(|r| r.kind == Kind::Activation)
            .count();
        let mut s = format!(
            "{} vs {}: {} activations on {} samples ({} batches), {} weights; worst SQNR first\n",
            self.quant_model,
            self.float_model,
            acts,
            self.samples,
            self.batches,
            self.rows.len() - acts
        );
        let w = self
            .rows
            .iter()
            .map(|r| r.op.len())
            .max()
            .unwrap_or(0)
            .max(2);
        s += &format!(
            "{:<10} {:>9} {:>11} {:>9}  {:<w$} name\n",
            "kind", "SQNR dB", "MSE", "cosine", "op"
        );
        for r in &self.rows {
            let kind = match r.kind {
                Kind::Activation => "activation",
                Kind::Weight => "weight",
            };
            s += &format!(
                "{:<10} {:>9.2} {:>11.3e} {:>9.6}  {:<w$} {}\n",
                kind, r.metrics.sqnr_db, r.metrics.mse, r.metrics.cosine, r.op, r.name
            );
        }
        if !self.skipped.is_empty() {
            s += "skipped:\n";
            for k in &self.skipped {
                let kind = match k.kind {
                    Kind::Activation => "activation",
                    Kind::Weight => "weight",
                };
                s += &format!("  {kind} {}: {}\n", k.name, k.reason);
            }
        }
        s
    }
}

/// `onnxq compare`: prints to stdout (a closed pipe is not an error).
pub fn run(a: CompareArgs) -> Result<()> {
    let mut text = Vec::new();
    run_to(&a, &mut text)?;
    use std::io::Write;
    match std::io::stdout().lock().write_all(&text) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// `onnxq compare`, writing the table (or the JSON with `--json`) to `out`.
pub fn run_to(a: &CompareArgs, out: &mut dyn std::io::Write) -> Result<()> {
    for p in [&a.float_model, &a.quant_model, &a.data] {
        if !p.exists() {
            bail!("{}: no such file or folder", p.display());
        }
    }
    let (report, hists) = compare_files_with_histograms(&a.float_model, &a.quant_model, &a.data)?;
    if let Some(path) = &a.report {
        report.html_page(hists).write(path)?;
        eprintln!("wrote {}", path.display());
    }
    let text = if a.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.table()
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_of_simple_vectors() {
        let mut a = Acc::default();
        a.add(&[1.0, 2.0, 2.0], &[1.0, 2.0, 1.0]);
        let m = a.metrics();
        // signal 9, noise 1
        assert!((m.sqnr_db - 10.0 * 9f64.log10()).abs() < 1e-12);
        assert!((m.mse - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.cosine - 7.0 / (9f64 * 6.0).sqrt()).abs() < 1e-12);
        assert_eq!(m.elements, 3);
        assert_eq!(sqnr_db(0.0, 0.0), f64::INFINITY);
        assert_eq!(sqnr_db(0.0, 1.0), f64::NEG_INFINITY);
        let mut z = Acc::default();
        z.add(&[0.0], &[0.0]);
        assert_eq!(z.metrics().cosine, 1.0);
    }

    #[test]
    fn sqnr_lower_bound_reads_the_spread_of_the_batches() {
        // Alike batches: every resample is the figure.
        let alike = vec![vec![(100.0, 1.0)]; 16];
        let point = worst_sqnr_db(&[(1600.0, 16.0)]);
        assert!((sqnr_lower_bound(&alike) - point).abs() < 1e-9);
        // One batch: nothing to resample.
        assert_eq!(sqnr_lower_bound(&alike[..1]), 20.0);
        // One far worse batch among 16: the bound falls below the figure, not below the
        // worst batch's own, and is the same on every call (seeded).
        let mut mixed = alike.clone();
        mixed[7] = vec![(100.0, 20.0)];
        let point = worst_sqnr_db(&[(1600.0, 35.0)]);
        let low = sqnr_lower_bound(&mixed);
        assert!(low < point - 1.0, "{low} vs {point}");
        assert!(low > 10.0 * 5f64.log10(), "{low}");
        assert_eq!(low, sqnr_lower_bound(&mixed));
        // The worst output decides, per resample; an output without signal does not.
        let two = (0..16)
            .map(|b| {
                vec![
                    (100.0, 1.0),
                    (100.0, if b == 3 { 30.0 } else { 10.0 }),
                    (0.0, 5.0),
                ]
            })
            .collect::<Vec<_>>();
        assert!(sqnr_lower_bound(&two) < worst_sqnr_db(&[(1600.0, 170.0)]));
        assert!(sqnr_lower_bound(&two) > 0.0);
    }
}
