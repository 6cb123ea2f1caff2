//! Operator kernels of the executor, one op family per file, and the table that builds a
//! kernel for an ONNX node.
//!
//! A kernel is built once per node at planning time (attributes parsed, constant inputs
//! prepared) and then run many times on borrowed inputs. Errors are plain strings; the
//! executor prefixes them with the node's op type and name.

pub(crate) mod conv;
mod conv_transpose;
pub(crate) mod elementwise;
mod gru;
mod matmul;
mod norm;
mod pool;
mod reduce;
mod rnn;
mod shape;

use super::value::Array;
use crate::ir::{AttrValue, Op};
use std::borrow::Cow;

/// A planned operator.
pub(crate) trait Kernel: Send + Sync {
    /// Computes the node's outputs (one per declared output, in order) from its inputs
    /// (`None` for an omitted optional input).
    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String>;

    /// [`Kernel::run`] with up to `threads` worker threads (kernels that do not split their
    /// work ignore it).
    fn run_with(&self, inputs: &[Option<&Array>], threads: usize) -> Result<Vec<Array>, String> {
        let _ = threads;
        self.run(inputs)
    }

    /// [`Kernel::run_with`] with the first input handed over: the executor does so when this
    /// step is that value's last reader. Kernels that can reuse its buffer (the views such as
    /// Reshape, Softmax, the float unary ops and Add/Sub/Mul/Div) override it; the default
    /// borrows it.
    fn run_owned(
        &self,
        first: Array,
        rest: &[Option<&Array>],
        threads: usize,
    ) -> Result<Vec<Array>, String> {
        run_borrowing(self, &first, rest, threads)
    }

    /// The activation layouts of a quantized convolution, for the planner to keep values
    /// NHWC between convs; `None` for every other kernel.
    fn conv_layout(&mut self) -> Option<&mut crate::executor::qlinear::ConvLayout> {
        None
    }

    /// How the kernel can take NHWC values, for the planner's layout pass
    /// (`executor::layout`); `None` when it needs NCHW.
    fn layout_role(&mut self) -> Option<LayoutRole<'_>> {
        None
    }
}

/// What a kernel offers the layout pass (`executor::layout`).
pub(crate) enum LayoutRole<'a> {
    /// Elementwise over two operands (`Some(step input)` for a run-time value, `None` for a
    /// constant whose bytes are the same in both layouts). The pass sets `nhwc` to run it on
    /// NHWC values: per operand, whether it stays NCHW-shaped (outside the region, broadcast)
    /// and is read channels-last.
    Binary {
        operands: [Option<usize>; 2],
        nhwc: &'a mut Option<[bool; 2]>,
    },
    /// A global pool: reads NHWC at input 0 when the pass sets the flag, writes `[N, C, 1, 1]`.
    GlobalPool(&'a mut bool),
    /// A spatial pool of codes: reads and writes NHWC (`[N, H, W, C]` → `[N, OH, OW, C]`) when
    /// the pass sets the flag; to the pass, an elementwise step of one operand.
    Pool(&'a mut bool),
}

/// What a kernel builder knows about its node.
pub(crate) struct NodeCtx<'a> {
    pub op: &'a Op,
    /// Version of the default ONNX opset the model imports.
    pub opset: i64,
    /// Per input: the value if it is a constant at planning time; `None` also for omitted
    /// optional inputs (see `present`).
    pub consts: Vec<Option<&'a Array>>,
    /// Per input: whether it is given at all.
    pub present: Vec<bool>,
    pub n_outputs: usize,
}

impl NodeCtx<'_> {
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.op
            .attr(name)
            .and_then(|a| a.as_int())
            .unwrap_or(default)
    }
    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.op
            .attr(name)
            .and_then(|a| a.as_float())
            .unwrap_or(default)
    }
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.op
            .attr(name)
            .and_then(|a| a.as_ints())
            .map(<[i64]>::to_vec)
    }
    pub fn string(&self, name: &str, default: &str) -> String {
        self.op
            .attr(name)
            .and_then(|a| a.as_str())
            .unwrap_or(default)
            .to_string()
    }
    pub fn has(&self, input: usize) -> bool {
        self.present.get(input).copied().unwrap_or(false)
    }
    pub fn konst(&self, input: usize) -> Option<&Array> {
        self.consts.get(input).copied().flatten()
    }
    /// Rejects attributes this implementation does not honour (so that they are never
    /// silently ignored).
    pub fn refuse_attr(&self, name: &str, why: &str) -> Result<(), String> {
        match self.op.attr(name) {
            Some(a) if !matches!(&a.value, AttrValue::String(s) if s.is_empty()) => {
                Err(format!("attribute `{name}` is not supported: {why}"))
            }
            _ => Ok(()),
        }
    }
}

/// A kernel from a closure (for the many stateless ops).
pub(crate) struct FnKernel<F>(pub F);

impl<F> Kernel for FnKernel<F>
where
    F: Fn(&[Option<&Array>]) -> Result<Vec<Array>, String> + Send + Sync,
{
    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        (self.0)(inputs)
    }
}

pub(crate) fn boxed<F>(f: F) -> Box<dyn Kernel>
where
    F: Fn(&[Option<&Array>]) -> Result<Vec<Array>, String> + Send + Sync + 'static,
{
    Box::new(FnKernel(f))
}

/// `k` on `first` and `rest` borrowed: [`Kernel::run_owned`] of a kernel with no use for the
/// buffer.
pub(crate) fn run_borrowing<K: Kernel + ?Sized>(
    k: &K,
    first: &Array,
    rest: &[Option<&Array>],
    threads: usize,
) -> Result<Vec<Array>, String> {
    let mut ins = Vec::with_capacity(rest.len() + 1);
    ins.push(Some(first));
    ins.extend_from_slice(rest);
    k.run_with(&ins, threads)
}

/// A kernel from a closure taking its first input as a `Cow`: owned when the executor
/// hands it over ([`Kernel::run_owned`]), so the closure can reuse its buffer, borrowed
/// otherwise (`into_owned` then copies). `rest` holds inputs 1…
pub(crate) struct CowKernel<F>(pub F);

impl<F> Kernel for CowKernel<F>
where
    F: Fn(Cow<'_, Array>, &[Option<&Array>]) -> Result<Vec<Array>, String> + Send + Sync,
{
    fn run(&self, inputs: &[Option<&Array>]) -> Result<Vec<Array>, String> {
        (self.0)(Cow::Borrowed(input(inputs, 0)?), &inputs[1..])
    }

    fn run_owned(
        &self,
        first: Array,
        rest: &[Option<&Array>],
        _threads: usize,
    ) -> Result<Vec<Array>, String> {
        (self.0)(Cow::Owned(first), rest)
    }
}

pub(crate) fn boxed_cow<F>(f: F) -> Box<dyn Kernel>
where
    F: Fn(Cow<'_, Array>, &[Option<&Array>]) -> Result<Vec<Array>, String> + Send + Sync + 'static,
{
    Box::new(CowKernel(f))
}

/// Input `i`, which must be present.
pub(crate) fn input<'a>(inputs: &[Option<&'a Array>], i: usize) -> Result<&'a Array, String> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("missing input {i}"))
}

/// Ops whose outputs depend only on their inputs (safe to evaluate at planning time).
pub(crate) fn is_deterministic(op_type: &str) -> bool {
    !op_type.starts_with("Random") && op_type != "Multinomial" && op_type != "Bernoulli"
}

/// Builds the kernel of a default-domain op (`Err` names what is unsupported).
pub(crate) fn build(ctx: &NodeCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    if let Some(k) = super::contrib::build(ctx)? {
        return Ok(k);
    }
    if !(ctx.op.domain.is_empty() || ctx.op.domain == "ai.onnx") {
        return Err(format!("domain `{}` is not supported", ctx.op.domain));
    }
    let t = ctx.op.op_type.as_str();
    if let Some(k) = elementwise::build(t, ctx)? {
        return Ok(k);
    }
    if let Some(k) = shape::build(t, ctx)? {
        return Ok(k);
    }
    if let Some(k) = reduce::build(t, ctx)? {
        return Ok(k);
    }
    if let Some(k) = norm::build(t, ctx)? {
        return Ok(k);
    }
    if let Some(k) = pool::build(t, ctx)? {
        return Ok(k);
    }
    if let Some(k) = matmul::build(t, ctx)? {
        return Ok(k);
    }
    if let Some(k) = conv::build(t, ctx)? {
        return Ok(k);
    }
    if let Some(k) = conv_transpose::build(t, ctx)? {
        return Ok(k);
    }
    if let Some(k) = gru::build(t, ctx)? {
        return Ok(k);
    }
    if let Some(k) = rnn::build(t, ctx)? {
        return Ok(k);
    }
    if let Some(k) = super::qlinear::build(t, ctx)? {
        return Ok(k);
    }
    Err("operator not supported by the executor".into())
}

pub(crate) use matmul::sgemm;
pub(crate) use pool::{global_pool_of_codes, max_pool_of_codes};
