//! Calibration data: where the samples come from, and how they are cut into
//! the batches fed to the model.
//!
//! # Accepted sources
//!
//! * a single `.npz` file: one array per model input, keyed by the input's name;
//! * a folder of `.npz` files, read one file at a time in name order;
//! * a single `.npy` file, for a model with one input;
//! * in-memory tensors ([`CalibrationData::from_tensors`]) or a lazy stream of
//!   ready-made batches ([`CalibrationData::from_batches`]).
//!
//! # The rank rule
//!
//! Every array's first axis counts *samples*. How a sample becomes model input
//! is decided per input by comparing the array's rank with the input's rank `r`:
//!
//! * **rank `r`** ("batched"): axis 0 *is* the model's batch axis. The array is
//!   cut into batches of [`CalibrationData::with_batch_size`] rows (default
//!   [`DEFAULT_BATCH_SIZE`]; the last batch may be smaller). If the model fixes
//!   its first dim to `k`, batches are exactly `k` rows. Example:
//!   `digits_cnn.calib.npy` `[128,1,8,8]` for input `[N,1,8,8]`.
//! * **rank `r + 1`** ("stacked"): axis 0 indexes samples and each sample
//!   `a[i]` is fed as-is (it may itself hold a batch). Example: `flag` `[64]`
//!   for a 0-d input of `control_flow.calib.npz`.
//!
//! In one file, every array must hold the same number of samples. When any
//! input of a file is stacked, the whole file is fed one sample at a time
//! (batched inputs then get batches of one row), since a stacked sample
//! cannot be grouped with others.
//!
//! # Memory
//!
//! Batches are produced lazily. A `.npy` file is streamed from disk batch by
//! batch; an `.npz` file is read whole when its turn comes (so a folder holds
//! one file in memory at a time); [`CalibrationData::from_batches`] takes any
//! iterator. Nothing accumulates across batches.
//!
//! # Checks
//!
//! Errors name the file (or `in-memory data`) and the input: a missing array,
//! a wrong rank, a dim that differs from the model's fixed dim, a dtype other
//! than the input's, NaN or ±Inf in float data, unequal sample counts, an
//! empty data set, unreadable files.

use crate::error::{Error, Result};
use crate::ir::{DataType, Dim, Model, NodeKind, Tensor};
use std::collections::VecDeque;
use std::fmt;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Rows per batch for "batched" arrays when the model's batch dim is dynamic.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// A graph input that calibration must feed (initializer-backed inputs are
/// not among them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInput {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<Dim>,
}

impl fmt::Display for ModelInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}[", self.name, self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The inputs of the main graph that calibration data must provide, in graph
/// input order. Inputs backed by an initializer are skipped. Errors if an
/// input's element type or rank is unknown.
pub fn model_inputs(model: &Model) -> Result<Vec<ModelInput>> {
    let g = &model.graph;
    let mut out = Vec::new();
    for &v in &g.inputs {
        if !matches!(g.node(g.producer(v)).kind, NodeKind::Input) {
            continue;
        }
        let value = g.value(v);
        let tt = value.ty.tensor().ok_or_else(|| {
            Error::Unsupported(format!(
                "graph input `{}` is not a tensor ({}); calibration feeds tensors only",
                value.name, value.ty
            ))
        })?;
        let dtype = tt.dtype.ok_or_else(|| {
            Error::invalid(format!(
                "graph input `{}` has no element type; calibration needs it",
                value.name
            ))
        })?;
        let shape = tt.shape.clone().ok_or_else(|| {
            Error::invalid(format!(
                "graph input `{}` has no known rank; calibration needs it",
                value.name
            ))
        })?;
        out.push(ModelInput {
            name: value.name.clone(),
            dtype,
            shape,
        });
    }
    Ok(out)
}

/// One batch: a tensor per model input, in model input order.
#[derive(Clone, Debug)]
pub struct Batch {
    pub tensors: Vec<Tensor>,
    /// How many calibration samples the batch holds (its rows, or 1 for a
    /// stacked sample).
    pub samples: usize,
}

/// How an array maps to model input (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Axis 0 is the model's batch axis.
    Batched,
    /// Axis 0 indexes samples, each fed as-is.
    Stacked,
    /// Fed unchanged with every batch of the file: an input whose axis 0
    /// the model fixes and which is not a batch axis (a recurrent state
    /// `[layers, batch, hidden]`, a sample rate), told apart from a batch
    /// axis by its count disagreeing with the other inputs' samples.
    Whole,
}

/// A file's arrays after validation, cut into batches on demand.
struct Chunk {
    origin: Origin,
    arrays: ChunkArrays,
    layouts: Vec<Layout>,
    samples: usize,
    /// Samples per batch.
    step: usize,
    next: usize,
}

enum ChunkArrays {
    /// One tensor per input, in model order.
    Memory(Vec<Tensor>),
    /// A `.npy` stream positioned at the next unread row.
    Npy {
        reader: BufReader<std::fs::File>,
        dtype: DataType,
        dims: Vec<i64>,
    },
}

/// Where an error happened: a file or in-memory data.
#[derive(Clone, Debug)]
enum Origin {
    File(PathBuf),
    Memory(String),
}

impl Origin {
    fn err(&self, message: String) -> Error {
        match self {
            Origin::File(p) => Error::Invalid {
                file: Some(p.clone()),
                message,
            },
            Origin::Memory(what) => Error::invalid(format!("{what}: {message}")),
        }
    }
}

enum Pending {
    /// `.npz` files still to read.
    Files(VecDeque<PathBuf>),
    /// In-memory arrays, already given as one chunk.
    Nothing,
    /// Ready-made batches.
    Stream {
        iter: Box<dyn Iterator<Item = Result<Vec<Tensor>>> + Send>,
        index: usize,
    },
}

/// A calibration data set, iterated lazily batch by batch. Also an
/// `Iterator<Item = Result<Vec<Tensor>>>` (tensors in model input order).
pub struct CalibrationData {
    inputs: Vec<ModelInput>,
    batch_size: usize,
    description: String,
    current: Option<Chunk>,
    pending: Pending,
    total_samples: Option<usize>,
    yielded: usize,
    finished: bool,
}

impl fmt::Debug for CalibrationData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CalibrationData")
            .field("source", &self.description)
            .field("inputs", &self.inputs)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

fn is_npz(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

impl CalibrationData {
    /// Opens a `.npz` file, a folder of `.npz` files or (single-input models)
    /// a `.npy` file. The first file is read and checked here, so most
    /// mistakes surface before calibration starts.
    pub fn open(path: &Path, inputs: &[ModelInput]) -> Result<CalibrationData> {
        check_inputs(inputs)?;
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let mut data = CalibrationData::empty(inputs, path.display().to_string());
        if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(path, e)))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .filter(|p| is_npz(p) && p.is_file())
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(Error::Invalid {
                    file: Some(path.to_path_buf()),
                    message: format!(
                        "empty calibration data set: the folder holds no .npz file \
                         (expected arrays keyed by input name: {})",
                        input_names(inputs)
                    ),
                });
            }
            data.pending = Pending::Files(files.into());
        } else if is_npz(path) {
            data.pending = Pending::Files(VecDeque::from([path.to_path_buf()]));
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
        {
            if inputs.len() != 1 {
                return Err(Error::Invalid {
                    file: Some(path.to_path_buf()),
                    message: format!(
                        "a .npy file holds one array but the model has {} inputs ({}); \
                         use an .npz file keyed by input name",
                        inputs.len(),
                        input_names(inputs)
                    ),
                });
            }
            let chunk = data.open_npy(path)?;
            data.total_samples = Some(chunk.samples);
            data.current = Some(chunk);
            data.pending = Pending::Nothing;
        } else {
            return Err(Error::Invalid {
                file: Some(path.to_path_buf()),
                message: "calibration data must be a .npz file, a folder of .npz files, \
                          or a .npy file (single-input models)"
                    .into(),
            });
        }
        // Read and check the first file now.
        if let Pending::Files(files) = &mut data.pending {
            let single = files.len() == 1;
            let first = files.pop_front().expect("non-empty");
            let chunk = data.load_npz(&first)?;
            if single {
                data.total_samples = Some(chunk.samples);
            }
            data.current = Some(chunk);
        }
        Ok(data)
    }

    /// In-memory arrays, one per input in model input order, following the
    /// same rank rule as files.
    pub fn from_tensors(inputs: &[ModelInput], tensors: Vec<Tensor>) -> Result<CalibrationData> {
        check_inputs(inputs)?;
        let mut data = CalibrationData::empty(inputs, "in-memory data".into());
        let origin = Origin::Memory("in-memory data".into());
        if tensors.len() != inputs.len() {
            return Err(origin.err(format!(
                "{} arrays given for {} inputs ({})",
                tensors.len(),
                inputs.len(),
                input_names(inputs)
            )));
        }
        let chunk = data.make_chunk(origin, ChunkArrays::Memory(tensors))?;
        data.total_samples = Some(chunk.samples);
        data.current = Some(chunk);
        data.pending = Pending::Nothing;
        Ok(data)
    }

    /// A lazy stream of ready-made batches (one tensor per input, in model
    /// input order, each exactly the model input's rank). Each batch is checked
    /// like file data when it is pulled; each counts as one sample per row of
    /// its first input (or one, for a 0-d first input).
    pub fn from_batches<I>(inputs: &[ModelInput], batches: I) -> Result<CalibrationData>
    where
        I: IntoIterator<Item = Result<Vec<Tensor>>>,
        I::IntoIter: Send + 'static,
    {
        check_inputs(inputs)?;
        let mut data = CalibrationData::empty(inputs, "in-memory batches".into());
        data.pending = Pending::Stream {
            iter: Box::new(batches.into_iter()),
            index: 0,
        };
        Ok(data)
    }

    /// Rows per batch for batched arrays whose model batch dim is dynamic
    /// (ignored when the model fixes that dim). Zero is taken as one.
    pub fn with_batch_size(mut self, batch_size: usize) -> CalibrationData {
        self.batch_size = batch_size.max(1);
        if let Some(c) = &mut self.current {
            c.step = batch_step(&self.inputs, &c.layouts, self.batch_size);
        }
        self
    }

    /// The model inputs this data feeds.
    pub fn inputs(&self) -> &[ModelInput] {
        &self.inputs
    }

    /// The total number of samples, when known without reading ahead (a
    /// single file or in-memory arrays).
    pub fn total_samples(&self) -> Option<usize> {
        self.total_samples
    }

    /// What the data is (path or `in-memory data`), for messages.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The next batch with its sample count; `None` at the end. An empty data
    /// set gives one error, then `None`.
    pub fn next_batch(&mut self) -> Option<Result<Batch>> {
        if self.finished {
            return None;
        }
        let r = self.next_inner();
        match &r {
            Some(Ok(b)) => self.yielded += b.samples,
            Some(Err(_)) => self.finished = true,
            None => {
                self.finished = true;
                if self.yielded == 0 {
                    return Some(Err(Error::invalid(format!(
                        "{}: empty calibration data set: no samples for the inputs {}",
                        self.description,
                        input_names(&self.inputs)
                    ))));
                }
            }
        }
        r
    }

    fn empty(inputs: &[ModelInput], description: String) -> CalibrationData {
        CalibrationData {
            inputs: inputs.to_vec(),
            batch_size: DEFAULT_BATCH_SIZE,
            description,
            current: None,
            pending: Pending::Nothing,
            total_samples: None,
            yielded: 0,
            finished: false,
        }
    }

    fn next_inner(&mut self) -> Option<Result<Batch>> {
        loop {
            if let Some(chunk) = &mut self.current {
                if chunk.next < chunk.samples {
                    return Some(chunk.take(&self.inputs));
                }
                self.current = None;
            }
            match &mut self.pending {
                Pending::Nothing => return None,
                Pending::Files(files) => {
                    let path = files.pop_front()?;
                    match self.load_npz(&path) {
                        Ok(c) => self.current = Some(c),
                        Err(e) => return Some(Err(e)),
                    }
                }
                Pending::Stream { iter, index } => {
                    let tensors = match iter.next()? {
                        Ok(t) => t,
                        Err(e) => return Some(Err(e)),
                    };
                    let origin = Origin::Memory(format!("in-memory batch {index}"));
                    *index += 1;
                    return Some(check_batch(&self.inputs, &origin, tensors));
                }
            }
        }
    }

    fn load_npz(&self, path: &Path) -> Result<Chunk> {
        let arrays = crate::data::read_npz(path)?;
        let mut held: Vec<String> = arrays.iter().map(|(k, _)| format!("`{k}`")).collect();
        held.sort();
        let mut ordered = Vec::with_capacity(self.inputs.len());
        let mut by_name: std::collections::HashMap<String, Tensor> = arrays.into_iter().collect();
        for inp in &self.inputs {
            let t = by_name.remove(&inp.name).ok_or_else(|| Error::Invalid {
                file: Some(path.to_path_buf()),
                message: format!(
                    "missing array for input `{}` (the file holds: {})",
                    inp.name,
                    if held.is_empty() {
                        "no arrays".to_string()
                    } else {
                        held.join(", ")
                    }
                ),
            })?;
            ordered.push(t);
        }
        if !by_name.is_empty() {
            let mut extra: Vec<&String> = by_name.keys().collect();
            extra.sort();
            log::warn!(
                "{}: ignoring arrays that are not model inputs: {:?}",
                path.display(),
                extra
            );
        }
        self.make_chunk(
            Origin::File(path.to_path_buf()),
            ChunkArrays::Memory(ordered),
        )
    }

    fn open_npy(&self, path: &Path) -> Result<Chunk> {
        let origin = Origin::File(path.to_path_buf());
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let npy = npyz::NpyFile::new(BufReader::new(f))
            .map_err(|e| origin.err(format!("not a .npy array: {e}")))?;
        let (dtype, dims, reader) = crate::data::npy_data_reader(npy, &path.display().to_string())?;
        self.make_chunk(
            origin,
            ChunkArrays::Npy {
                reader,
                dtype,
                dims,
            },
        )
    }

    /// Validates dtypes, ranks, fixed dims and sample counts, and picks the
    /// layout of each array.
    fn make_chunk(&self, origin: Origin, arrays: ChunkArrays) -> Result<Chunk> {
        let metas: Vec<(DataType, Vec<i64>)> = match &arrays {
            ChunkArrays::Memory(ts) => ts.iter().map(|t| (t.dtype, t.dims.clone())).collect(),
            ChunkArrays::Npy { dtype, dims, .. } => vec![(*dtype, dims.clone())],
        };
        let mut layouts = Vec::with_capacity(metas.len());
        let mut counts: Vec<(usize, bool)> = Vec::with_capacity(metas.len());
        let mut samples: Option<(usize, &str)> = None;
        for (inp, (dtype, dims)) in self.inputs.iter().zip(&metas) {
            if *dtype != inp.dtype {
                return Err(origin.err(format!(
                    "input `{}`: the array is {dtype} but the model input is {inp}",
                    inp.name
                )));
            }
            let r = inp.shape.len();
            if r == 0 && dims.is_empty() {
                // A scalar input (a sample rate, a step count): fed with every batch.
                counts.push((1, true));
                layouts.push(Layout::Whole);
                continue;
            }
            let layout = if dims.len() == r && r > 0 {
                Layout::Batched
            } else if dims.len() == r + 1 {
                Layout::Stacked
            } else {
                return Err(origin.err(format!(
                    "input `{}`: array of shape {dims:?} (rank {}) does not fit the model input {inp}: \
                     expected rank {r} (axis 0 = batch) or {} (axis 0 = samples)",
                    inp.name,
                    dims.len(),
                    r + 1
                )));
            };
            // The per-batch dims that must match the model's fixed dims.
            let (fixed_from, model_from) = match layout {
                Layout::Batched | Layout::Whole => (1, 1),
                Layout::Stacked => (1, 0),
            };
            for (k, (&d, md)) in dims[fixed_from..]
                .iter()
                .zip(&inp.shape[model_from..])
                .enumerate()
            {
                if let Dim::Fixed(m) = md {
                    if d != *m {
                        return Err(origin.err(format!(
                            "input `{}`: array of shape {dims:?} does not fit the model input {inp}: \
                             dim {} is {d}, the model fixes it to {m}",
                            inp.name,
                            k + model_from,
                        )));
                    }
                }
            }
            let n = dims[0].max(0) as usize;
            if layout == Layout::Batched {
                if let Some(Dim::Fixed(k)) = inp.shape.first() {
                    let k = (*k).max(1) as usize;
                    if !n.is_multiple_of(k) {
                        return Err(origin.err(format!(
                            "input `{}`: {n} rows cannot be cut into batches of {k}, \
                             the model's fixed batch dim ({inp})",
                            inp.name
                        )));
                    }
                }
            }
            let fixed0 =
                matches!(inp.shape.first(), Some(Dim::Fixed(k)) if *k == dims[0] && *k > 1);
            counts.push((n, layout == Layout::Batched && fixed0));
            layouts.push(layout);
        }
        // Sample counts must agree, except for inputs whose axis 0 the model
        // fixes: those that disagree are fed whole (Layout::Whole).
        let voters: Vec<usize> = (0..counts.len()).filter(|&i| !counts[i].1).collect();
        let pool: Vec<usize> = if voters.is_empty() {
            (0..counts.len()).collect()
        } else {
            voters
        };
        for &i in &pool {
            let (n, _) = counts[i];
            match samples {
                None => samples = Some((n, &self.inputs[i].name)),
                Some((m, other)) if m != n => {
                    return Err(origin.err(format!(
                        "input `{}` has {n} samples (axis 0) but input `{other}` has {m}",
                        self.inputs[i].name
                    )))
                }
                _ => {}
            }
        }
        if let Some((m, _)) = samples {
            for (i, &(n, fixed0)) in counts.iter().enumerate() {
                if fixed0 && n != m {
                    layouts[i] = Layout::Whole;
                }
            }
        }
        let samples = samples.map(|s| s.0).unwrap_or(0);
        let step = batch_step(&self.inputs, &layouts, self.batch_size);
        Ok(Chunk {
            origin,
            arrays,
            layouts,
            samples,
            step,
            next: 0,
        })
    }
}

impl Iterator for CalibrationData {
    type Item = Result<Vec<Tensor>>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().map(|r| r.map(|b| b.tensors))
    }
}

/// Samples per batch for a chunk with these layouts.
fn batch_step(inputs: &[ModelInput], layouts: &[Layout], batch_size: usize) -> usize {
    if layouts.contains(&Layout::Stacked) {
        return 1;
    }
    let fixed = inputs
        .iter()
        .zip(layouts)
        .filter(|(_, l)| **l == Layout::Batched)
        .find_map(|(i, _)| match i.shape.first() {
            Some(Dim::Fixed(k)) => Some((*k).max(1) as usize),
            _ => None,
        });
    fixed.unwrap_or(batch_size)
}

impl Chunk {
    fn take(&mut self, inputs: &[ModelInput]) -> Result<Batch> {
        let start = self.next;
        let end = (start + self.step).min(self.samples);
        self.next = end;
        let mut tensors = Vec::with_capacity(inputs.len());
        match &mut self.arrays {
            ChunkArrays::Memory(ts) => {
                for (t, layout) in ts.iter().zip(&self.layouts) {
                    tensors.push(slice_rows(t, start, end, *layout)?);
                }
            }
            ChunkArrays::Npy {
                reader,
                dtype,
                dims,
            } => {
                let width = dtype.bit_width().unwrap_or(8) / 8;
                let row: usize = dims[1..].iter().map(|&d| d.max(0) as usize).product();
                let mut raw = vec![0u8; (end - start) * row * width];
                reader.read_exact(&mut raw).map_err(|e| {
                    self.origin
                        .err(format!("truncated array data at sample {start}: {e}"))
                })?;
                if *dtype == DataType::Bool {
                    raw.iter_mut().for_each(|b| *b = (*b != 0) as u8);
                }
                let mut bdims = dims.clone();
                match self.layouts[0] {
                    // A lone input has no other count to disagree with.
                    Layout::Batched | Layout::Whole => bdims[0] = (end - start) as i64,
                    Layout::Stacked => {
                        bdims.remove(0);
                    }
                }
                let t = Tensor::from_raw(*dtype, bdims, raw)
                    .map_err(|e| self.origin.err(e.to_string()))?;
                tensors.push(t);
            }
        }
        for (t, inp) in tensors.iter().zip(inputs) {
            check_finite(t, inp, &self.origin, start)?;
        }
        Ok(Batch {
            tensors,
            samples: end - start,
        })
    }
}

/// Rows `[start, end)` of `t` along axis 0; a stacked sample drops the axis.
fn slice_rows(t: &Tensor, start: usize, end: usize, layout: Layout) -> Result<Tensor> {
    if layout == Layout::Whole {
        return Ok(t.clone());
    }
    let raw = t
        .raw()
        .ok_or_else(|| Error::Unsupported("string tensors as calibration data".into()))?;
    let n = t.dims[0].max(0) as usize;
    let row = raw.len().checked_div(n).unwrap_or(0);
    let bytes = raw[start * row..end * row].to_vec();
    let mut dims = t.dims.clone();
    match layout {
        Layout::Batched => dims[0] = (end - start) as i64,
        Layout::Stacked => {
            dims.remove(0);
        }
        Layout::Whole => {} // returned above
    }
    Tensor::from_raw(t.dtype, dims, bytes).map_err(|e| Error::invalid(e.to_string()))
}

/// Checks a ready-made batch (from [`CalibrationData::from_batches`]).
fn check_batch(inputs: &[ModelInput], origin: &Origin, tensors: Vec<Tensor>) -> Result<Batch> {
    if tensors.len() != inputs.len() {
        return Err(origin.err(format!(
            "{} tensors given for {} inputs ({})",
            tensors.len(),
            inputs.len(),
            input_names(inputs)
        )));
    }
    for (t, inp) in tensors.iter().zip(inputs) {
        if t.dtype != inp.dtype {
            return Err(origin.err(format!(
                "input `{}`: the tensor is {} but the model input is {inp}",
                inp.name, t.dtype
            )));
        }
        if t.dims.len() != inp.shape.len() {
            return Err(origin.err(format!(
                "input `{}`: tensor of shape {:?} does not fit the model input {inp} (rank {})",
                inp.name,
                t.dims,
                inp.shape.len()
            )));
        }
        for (k, (&d, md)) in t.dims.iter().zip(&inp.shape).enumerate() {
            if let Dim::Fixed(m) = md {
                if d != *m {
                    return Err(origin.err(format!(
                        "input `{}`: tensor of shape {:?} does not fit the model input {inp}: \
                         dim {k} is {d}, the model fixes it to {m}",
                        inp.name, t.dims
                    )));
                }
            }
        }
        check_finite(t, inp, origin, 0)?;
    }
    let samples = match tensors.first() {
        Some(t) if !t.dims.is_empty() => t.dims[0].max(0) as usize,
        _ => 1,
    };
    Ok(Batch { tensors, samples })
}

/// NaN / ±Inf in float data is an error (it would poison every range).
fn check_finite(t: &Tensor, inp: &ModelInput, origin: &Origin, first_sample: usize) -> Result<()> {
    if !t.dtype.is_float() {
        return Ok(());
    }
    let bad = match (t.dtype, t.raw()) {
        (DataType::F32, Some(raw)) => raw
            .chunks_exact(4)
            .position(|c| !f32::from_le_bytes(c.try_into().expect("4 bytes")).is_finite()),
        (DataType::F64, Some(raw)) => raw
            .chunks_exact(8)
            .position(|c| !f64::from_le_bytes(c.try_into().expect("8 bytes")).is_finite()),
        _ => t
            .to_f32_vec()
            .and_then(|v| v.iter().position(|x| !x.is_finite())),
    };
    if let Some(i) = bad {
        let per_sample = if t.dims.is_empty() || t.dims[0] <= 0 {
            t.len().max(1)
        } else {
            t.len() / t.dims[0] as usize
        }
        .max(1);
        return Err(origin.err(format!(
            "input `{}`: non-finite value (NaN or ±Inf) in sample {} (element {i} of this batch); \
             calibration data must be finite",
            inp.name,
            first_sample + i / per_sample
        )));
    }
    Ok(())
}

fn check_inputs(inputs: &[ModelInput]) -> Result<()> {
    if inputs.is_empty() {
        return Err(Error::invalid(
            "the model has no graph inputs to feed calibration data to",
        ));
    }
    for inp in inputs {
        if inp.dtype == DataType::String || inp.dtype.bit_width().is_none_or(|b| b % 8 != 0) {
            return Err(Error::Unsupported(format!(
                "calibration data for input {inp}: element type {} is not supported",
                inp.dtype
            )));
        }
    }
    Ok(())
}

fn input_names(inputs: &[ModelInput]) -> String {
    inputs
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
