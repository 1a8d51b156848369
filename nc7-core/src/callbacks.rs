//! Saver callbacks and what they share: where a sample's results go (spec §7), and how a
//! batch splits into samples.
//!
//! `RecordsSaver` (a CoordinatorCallback) writes every incoming key of each sample as
//! records (see [`crate::data::records`]) in its log folder: tensors whose first dimension is
//! the batch size are split per sample, keys named in `not_batch_keys` and scalars are stored
//! whole with each sample; strings are not stored (a `save_names` key names the shards).
//!
//! [`Buffer`] keeps samples, their sum or their mean for callbacks that work on many samples
//! at once, handed over when a batch's `evaluate` flag is set or at the end.
//!
//! `SampleSaver` writes each sample's results as files: the keys in `image_keys` as PNG
//! images (`[C, H, W]` or `[H, W]` in `[0, 1]`), every other value into one JSON file. The
//! file names follow spec §7 (`prefix-name-suffix`, the name from `save_names` or
//! `epoch_EEE_iter_IIIII_sample_SSS`), with `-<key>.png` or `.json` added.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use burn::prelude::Backend;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use crate::data::records::{Record, RecordsWriter};
use crate::nest::Nest;
use crate::nucleotide::{CallbackContext, CoordinatorCallback};
use crate::{BoxError, Build, Incoming, NoKeys, nucleotide};

/// Where a sample is saved, before the saver adds its extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveName<'a> {
    /// Put before the name, joined with `-`.
    pub prefix: &'a str,
    /// Put after the name, joined with `-`.
    pub suffix: &'a str,
    /// The sample's own name (from a `save_names` key), if it has one.
    pub name: Option<&'a str>,
    /// Epoch, iteration and the sample's index in its batch, when known.
    pub position: Option<(usize, usize, usize)>,
}

/// The path of a sample's results in `log_dir`: `prefix-name-suffix`, the name being the
/// sample's own or `epoch_EEE_iter_IIIII_sample_SSS`. A name that would leave `log_dir` (an
/// absolute path, `..`, a NUL) is an error; names may make subfolders inside it.
pub fn save_path(log_dir: &Path, n: &SaveName<'_>) -> Result<PathBuf, String> {
    let generated;
    let name = match (n.name, n.position) {
        (Some(name), _) => Some(name),
        (None, Some((epoch, iteration, sample))) => {
            generated = format!("epoch_{epoch:03}_iter_{iteration:05}_sample_{sample:03}");
            Some(generated.as_str())
        }
        (None, None) => None,
    };
    let joined: Vec<&str> = [Some(n.prefix), name, Some(n.suffix)]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    let joined = joined.join("-");
    let relative = Path::new(&joined);
    let inside = !joined.is_empty()
        && !joined.contains('\0')
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(format!(
            "the save name `{}` would leave the results folder {}; save names are plain names or relative paths inside it",
            joined.escape_debug(),
            log_dir.display()
        ));
    }
    Ok(log_dir.join(relative))
}

/// Splits a batch into per-sample records: `n` samples, `not_batch_keys` kept whole.
pub fn split_batch<B: Backend>(
    batch: &Nest<B>,
    n: usize,
    not_batch_keys: &[String],
) -> Result<Vec<Record>, String> {
    let mut out: Vec<Record> = vec![BTreeMap::new(); n];
    for (key, value) in batch.flatten() {
        let whole = not_batch_keys.contains(&key);
        let data = match value {
            Nest::Tensor(t) => t.clone().into_data()?,
            Nest::Float(v) => TensorData::new(vec![*v], [0usize; 0]),
            Nest::Int(v) => TensorData::new(vec![*v], [0usize; 0]),
            Nest::Bool(v) => TensorData::new(vec![*v], [0usize; 0]),
            _ => continue,
        };
        let shape = data.shape.to_vec();
        let scalar = !matches!(value, Nest::Tensor(_));
        if whole || scalar {
            for r in &mut out {
                r.insert(key.clone(), data.clone());
            }
            continue;
        }
        if shape.first() != Some(&n) {
            return Err(format!(
                "key `{key}` has shape {shape:?}, not a batch of {n}; name it in `not_batch_keys` to store it whole"
            ));
        }
        let bytes = data.as_bytes();
        let per = bytes.len() / n.max(1);
        for (i, r) in out.iter_mut().enumerate() {
            r.insert(
                key.clone(),
                TensorData::from_bytes_vec(
                    bytes[i * per..(i + 1) * per].to_vec(),
                    shape[1..].to_vec(),
                    data.dtype,
                ),
            );
        }
    }
    Ok(out)
}

/// The batch size of a batch: the first dimension of its first tensor.
fn batch_size<B: Backend>(batch: &Nest<B>, not_batch_keys: &[String]) -> Option<usize> {
    batch.flatten().into_iter().find_map(|(k, v)| match v {
        Nest::Tensor(t) if !not_batch_keys.contains(&k) => t.shape().to_vec().first().copied(),
        _ => None,
    })
}

/// `RecordsSaver`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordsSaverConfig {
    /// Samples per shard.
    #[serde(default = "hundred")]
    pub samples_per_file: usize,
    /// The shards' name when no `save_names` key gives one.
    #[serde(default = "records_name")]
    pub file_name: String,
    /// Keys stored whole with every sample instead of split along the batch.
    #[serde(default)]
    pub not_batch_keys: Vec<String>,
    /// The subfolder of the callback's log folder the shards go to.
    #[serde(default = "records_name")]
    pub subfolder: String,
}

fn hundred() -> usize {
    100
}
fn records_name() -> String {
    "records".into()
}

/// What `RecordsSaver` reads: an optional `save_names` list and every other key.
#[derive(Incoming)]
pub struct ToSave<B: Backend> {
    /// One save name per sample (the shard's name).
    pub save_names: Option<Vec<String>>,
    /// Everything else.
    pub rest: Nest<B>,
}

impl<B: Backend> ToSave<B> {
    /// The batch split into samples: as many as `save_names` has, else the first dimension
    /// of the first tensor; `not_batch_keys` kept whole.
    pub fn samples(&self, not_batch_keys: &[String]) -> Result<Vec<Record>, String> {
        let n = match (&self.save_names, batch_size(&self.rest, not_batch_keys)) {
            (Some(names), _) => names.len(),
            (None, Some(n)) => n,
            (None, None) => return Err("nothing to save: no tensor among the incoming keys".into()),
        };
        split_batch(&self.rest, n, not_batch_keys)
    }
}

/// Saves every sample it is given as records (safetensors shards).
#[nucleotide(kind = CoordinatorCallback)]
pub struct RecordsSaver {
    config: RecordsSaverConfig,
    writer: Option<RecordsWriter>,
}

impl<B: Backend> Build<B> for RecordsSaver {
    type Config = RecordsSaverConfig;
    type Input = ToSave<B>;
    type Output = NoKeys;
    fn build(c: &RecordsSaverConfig, _: &B::Device) -> Result<Self, BoxError> {
        if c.samples_per_file == 0 {
            return Err("samples_per_file must be at least 1".into());
        }
        save_path(
            Path::new("."),
            &SaveName {
                name: Some(&c.file_name),
                ..SaveName::default()
            },
        )?;
        save_path(
            Path::new("."),
            &SaveName {
                name: Some(&c.subfolder),
                ..SaveName::default()
            },
        )?;
        Ok(RecordsSaver {
            config: c.clone(),
            writer: None,
        })
    }
}

impl<B: Backend> CoordinatorCallback<B> for RecordsSaver {
    fn on_iteration_end(
        &mut self,
        input: ToSave<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<NoKeys>, BoxError> {
        let c = &self.config;
        let samples = input.samples(&c.not_batch_keys)?;
        if self.writer.is_none() {
            let dir = save_path(
                &ctx.log_dir,
                &SaveName {
                    name: Some(&c.subfolder),
                    ..SaveName::default()
                },
            )?;
            self.writer = Some(RecordsWriter::new(&dir, c.samples_per_file)?);
        }
        let writer = self.writer.as_mut().expect("made above");
        for (i, record) in samples.into_iter().enumerate() {
            let name = input
                .save_names
                .as_ref()
                .map_or(c.file_name.as_str(), |names| names[i].as_str());
            // Shard names are plain file names.
            if name.is_empty() || name.contains(['/', '\\', '\0']) || name == ".." || name == "." {
                return Err(format!(
                    "save name `{}` of sample {i} is not a plain file name; shards are written into {}",
                    name.escape_debug(),
                    ctx.log_dir.display()
                )
                .into());
            }
            writer.write(name, record)?;
        }
        Ok(Some(NoKeys))
    }

    fn end(&mut self, _: &CallbackContext) -> Result<(), BoxError> {
        if let Some(w) = self.writer.as_mut() {
            w.flush()?;
        }
        Ok(())
    }
}

/// `SampleSaver`'s config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleSaverConfig {
    /// Keys saved as PNG images.
    #[serde(default)]
    pub image_keys: Vec<String>,
    /// Put before each name.
    #[serde(default)]
    pub save_prefix: String,
    /// Put after each name.
    #[serde(default)]
    pub save_suffix: String,
    /// Keys stored whole with every sample instead of split along the batch.
    #[serde(default)]
    pub not_batch_keys: Vec<String>,
}

/// Saves each sample's results as PNG images and a JSON file.
#[nucleotide(kind = CoordinatorCallback)]
pub struct SampleSaver {
    config: SampleSaverConfig,
}

impl<B: Backend> Build<B> for SampleSaver {
    type Config = SampleSaverConfig;
    type Input = ToSave<B>;
    type Output = NoKeys;
    fn build(c: &SampleSaverConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(SampleSaver { config: c.clone() })
    }
}

impl<B: Backend> CoordinatorCallback<B> for SampleSaver {
    fn on_iteration_end(
        &mut self,
        input: ToSave<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<NoKeys>, BoxError> {
        let c = &self.config;
        let samples = input.samples(&c.not_batch_keys)?;
        for (i, mut sample) in samples.into_iter().enumerate() {
            let base = save_path(
                &ctx.log_dir,
                &SaveName {
                    prefix: &c.save_prefix,
                    suffix: &c.save_suffix,
                    name: input.save_names.as_ref().map(|s| s[i].as_str()),
                    position: Some((ctx.iteration.epoch, ctx.iteration.iteration, i)),
                },
            )?;
            if let Some(parent) = base.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            let with = |tail: &str| {
                let mut p = base.clone().into_os_string();
                p.push(tail);
                PathBuf::from(p)
            };
            for key in &c.image_keys {
                let data = sample
                    .remove(key)
                    .ok_or_else(|| format!("image key `{key}` is not among the incoming keys"))?;
                crate::data::files::write_png(&with(&format!("-{key}.png")), &data)?;
            }
            if !sample.is_empty() {
                let mut json = serde_json::Map::new();
                for (key, data) in sample {
                    json.insert(key, tensor_json(&data)?);
                }
                let path = with(".json");
                std::fs::write(&path, serde_json::Value::Object(json).to_string())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
        }
        Ok(Some(NoKeys))
    }
}

/// A tensor as nested JSON lists (a scalar as a number).
fn tensor_json(data: &TensorData) -> Result<serde_json::Value, String> {
    let values: Vec<serde_json::Value> = match data.dtype {
        burn::tensor::DType::Bool(_) => data
            .clone()
            .convert::<u8>()
            .to_vec::<u8>()
            .map_err(|e| format!("{e:?}"))?
            .into_iter()
            .map(|v| (v != 0).into())
            .collect(),
        d if d.is_float() => data
            .clone()
            .convert::<f64>()
            .to_vec::<f64>()
            .map_err(|e| format!("{e:?}"))?
            .into_iter()
            .map(Into::into)
            .collect(),
        _ => data
            .clone()
            .convert::<i64>()
            .to_vec::<i64>()
            .map_err(|e| format!("{e:?}"))?
            .into_iter()
            .map(Into::into)
            .collect(),
    };
    fn nest(values: &[serde_json::Value], shape: &[usize]) -> serde_json::Value {
        match shape {
            [] => values.first().cloned().unwrap_or(serde_json::Value::Null),
            [_] => serde_json::Value::Array(values.to_vec()),
            [n, rest @ ..] => {
                let size = values.len() / (*n).max(1);
                serde_json::Value::Array(
                    values
                        .chunks(size.max(1))
                        .take(*n)
                        .map(|c| nest(c, rest))
                        .collect(),
                )
            }
        }
    }
    Ok(nest(&values, &data.shape.to_vec()))
}

/// How a [`Buffer`] keeps what it is given.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum BufferKind {
    /// Every sample, in order.
    #[default]
    Samples,
    /// The element-wise sum of every sample.
    Additive,
    /// The element-wise mean of every sample.
    Average,
}

/// What a buffer held when it was taken.
#[derive(Debug, Clone, PartialEq)]
pub enum Buffered {
    /// Every sample (`samples`).
    Samples(Vec<Record>),
    /// The sum or mean of each key (`additive`, `average`), as f64 tensors, and how many
    /// samples went in.
    Reduced(Record, usize),
}

/// A buffer for callbacks that work on many samples at once (nucleus7's BufferCallback):
/// samples go in with [`Buffer::push`] — or a batch with [`Buffer::push_batch`], evaluated
/// when the batch's `evaluate` flag is set or at the end — and come out with
/// [`Buffer::take`].
#[derive(Debug, Clone, Default)]
pub struct Buffer {
    kind: BufferKind,
    samples: Vec<Record>,
    sums: BTreeMap<String, (Vec<f64>, Vec<usize>)>,
    count: usize,
}

impl Buffer {
    /// An empty buffer.
    pub fn new(kind: BufferKind) -> Buffer {
        Buffer {
            kind,
            ..Buffer::default()
        }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds a sample; for sums and means every key must keep its shape.
    pub fn push(&mut self, record: Record) -> Result<(), String> {
        if self.kind == BufferKind::Samples {
            self.samples.push(record);
            self.count += 1;
            return Ok(());
        }
        for (key, data) in &record {
            let values: Vec<f64> = data
                .clone()
                .convert::<f64>()
                .to_vec()
                .map_err(|e| format!("key `{key}`: {e:?}"))?;
            let shape = data.shape.to_vec();
            let entry = self
                .sums
                .entry(key.clone())
                .or_insert_with(|| (vec![0.0; values.len()], shape.clone()));
            if entry.1 != shape {
                return Err(format!(
                    "key `{key}` has shape {shape:?} here and {:?} before; a {} buffer needs one shape",
                    entry.1,
                    if self.kind == BufferKind::Additive {
                        "additive"
                    } else {
                        "average"
                    }
                ));
            }
            for (s, v) in entry.0.iter_mut().zip(values) {
                *s += v;
            }
        }
        self.count += 1;
        Ok(())
    }

    /// Splits a batch into samples and adds them; when `evaluate` is set, returns what the
    /// buffer held (this batch included) and empties it.
    pub fn push_batch<B: Backend>(
        &mut self,
        batch: &Nest<B>,
        not_batch_keys: &[String],
        evaluate: bool,
    ) -> Result<Option<Buffered>, String> {
        if let Some(n) = batch_size(batch, not_batch_keys) {
            for record in split_batch(batch, n, not_batch_keys)? {
                self.push(record)?;
            }
        }
        Ok(evaluate.then(|| self.take()))
    }

    /// What the buffer holds; it is empty afterwards.
    pub fn take(&mut self) -> Buffered {
        let count = std::mem::take(&mut self.count);
        match self.kind {
            BufferKind::Samples => Buffered::Samples(std::mem::take(&mut self.samples)),
            kind => Buffered::Reduced(
                std::mem::take(&mut self.sums)
                    .into_iter()
                    .map(|(k, (mut v, shape))| {
                        if kind == BufferKind::Average {
                            v.iter_mut().for_each(|x| *x /= count.max(1) as f64);
                        }
                        (k, TensorData::new(v, shape))
                    })
                    .collect(),
                count,
            ),
        }
    }
}

/// `BufferCallback`'s config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BufferCallbackConfig {
    /// `samples` (default): every sample; `additive`: their sum; `average`: their mean.
    #[serde(default)]
    pub buffer: BufferKind,
    /// Keys stored whole with every sample instead of split along the batch.
    #[serde(default)]
    pub not_batch_keys: Vec<String>,
}

/// What `BufferCallback` reads: an optional `evaluate` flag and every other key.
#[derive(Incoming)]
pub struct ToBuffer<B: Backend> {
    /// Hands the buffer on when set (a boolean, or a batch of flags of which any is set).
    pub evaluate: Option<crate::glue::AnyValue<B>>,
    /// What is buffered.
    pub rest: Nest<B>,
}

/// What `BufferCallback` hands on.
#[derive(crate::Generated)]
pub struct BufferedKeys<B: Backend> {
    /// How many samples went in.
    pub buffered_samples: i64,
    /// `samples`: every buffered sample, batched again; `additive`/`average`: each key's sum or
    /// mean (float).
    pub keys: Nest<B>,
}

/// nucleus7's BufferCallback: buffers samples over iterations and hands them on to the
/// callbacks that read it when an `evaluate` flag is set or on the last iteration; on the
/// other iterations those callbacks do not run.
#[nucleotide(kind = CoordinatorCallback)]
pub struct BufferCallback {
    config: BufferCallbackConfig,
    buffer: Buffer,
}

impl<B: Backend> Build<B> for BufferCallback {
    type Config = BufferCallbackConfig;
    type Input = ToBuffer<B>;
    type Output = BufferedKeys<B>;
    fn build(c: &BufferCallbackConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(BufferCallback {
            config: c.clone(),
            buffer: Buffer::new(c.buffer),
        })
    }
}

impl<B: Backend> CoordinatorCallback<B> for BufferCallback {
    fn on_iteration_end(
        &mut self,
        input: ToBuffer<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<BufferedKeys<B>>, BoxError> {
        let evaluate = match &input.evaluate {
            Some(flag) => flag
                .0
                .truth_values()
                .map_err(|e| format!("`evaluate`: {e}"))?
                .into_iter()
                .any(|v| v),
            None => false,
        } || ctx.iteration.is_last;
        let Some(buffered) =
            self.buffer
                .push_batch(&input.rest, &self.config.not_batch_keys, evaluate)?
        else {
            return Ok(None);
        };
        let device = Default::default();
        let to_nest = |record: Record| -> Result<Nest<B>, BoxError> {
            Ok(Nest::unflatten(record.into_iter().map(|(k, d)| {
                (
                    k,
                    Nest::Tensor(crate::nest::AnyTensor::from_data(d, &device)),
                )
            }))?)
        };
        let (count, keys) = match buffered {
            Buffered::Samples(records) if records.is_empty() => (0, Nest::map()),
            Buffered::Samples(records) => {
                let n = records.len();
                let samples = records
                    .into_iter()
                    .map(to_nest)
                    .collect::<Result<Vec<_>, _>>()?;
                (n, crate::data::collate(samples, &device)?)
            }
            Buffered::Reduced(record, n) => (
                n,
                to_nest(
                    record
                        .into_iter()
                        .map(|(k, d)| (k, d.convert::<f32>()))
                        .collect(),
                )?,
            ),
        };
        Ok(Some(BufferedKeys {
            buffered_samples: count as i64,
            keys,
        }))
    }
}

/// `ExperimentCsv`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentCsvConfig {
    /// The table, relative to the project folder.
    #[serde(default = "experiments_file")]
    pub file: String,
}

fn experiments_file() -> String {
    "logs/experiments.csv".into()
}

/// Every value `ExperimentCsv` reads (losses and metrics).
#[derive(Incoming)]
pub struct Values<B: Backend> {
    /// Whatever the inbound nodes give.
    pub values: Nest<B>,
}

/// One row per training run in a CSV table (Dida's experiment tracking): when the run ended,
/// the project, the step and the last evaluation's mean of every single-value key it reads
/// (losses, metrics). A key no earlier row had becomes a new column. Put it in
/// `callbacks_eval`.
#[nucleotide(kind = CoordinatorCallback)]
pub struct ExperimentCsv {
    file: String,
    sums: BTreeMap<String, (f64, usize)>,
}

impl<B: Backend> Build<B> for ExperimentCsv {
    type Config = ExperimentCsvConfig;
    type Input = Values<B>;
    type Output = NoKeys;
    fn build(c: &ExperimentCsvConfig, _: &B::Device) -> Result<Self, BoxError> {
        save_path(
            Path::new("."),
            &SaveName {
                name: Some(&c.file),
                ..SaveName::default()
            },
        )?;
        Ok(ExperimentCsv {
            file: c.file.clone(),
            sums: BTreeMap::new(),
        })
    }
}

impl<B: Backend> CoordinatorCallback<B> for ExperimentCsv {
    fn on_iteration_end(
        &mut self,
        input: Values<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<NoKeys>, BoxError> {
        if ctx.iteration.iteration == 1 {
            // A new evaluation: the row keeps the last one.
            self.sums.clear();
        }
        for (key, value) in input.values.flatten() {
            let Nest::Tensor(t) = value else { continue };
            if t.shape().num_elements() != 1 {
                continue;
            }
            let v: Vec<f64> = t
                .clone()
                .into_data()?
                .convert::<f64>()
                .to_vec()
                .map_err(|e| format!("key `{key}`: {e:?}"))?;
            let e = self.sums.entry(key).or_insert((0.0, 0));
            e.0 += v[0];
            e.1 += 1;
        }
        Ok(Some(NoKeys))
    }

    fn end(&mut self, ctx: &CallbackContext) -> Result<(), BoxError> {
        let root = project_of(&ctx.log_dir);
        let mut row: BTreeMap<String, String> = self
            .sums
            .iter()
            .map(|(k, (s, n))| (k.clone(), format!("{:.6}", s / (*n).max(1) as f64)))
            .collect();
        row.insert(
            "finished".into(),
            crate::project::rfc3339(std::time::SystemTime::now()),
        );
        row.insert(
            "project".into(),
            root.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        row.insert("step".into(), ctx.summary_step.to_string());
        let file = root.join(&self.file);
        append_row(&file, row)?;
        log::info!("experiment row appended to {}", file.display());
        Ok(())
    }
}

/// The project folder of a callback folder (`<project>/training/callbacks/<mode>`), or the
/// folder itself elsewhere.
fn project_of(log_dir: &Path) -> PathBuf {
    let in_training = log_dir.parent().and_then(Path::file_name) == Some("callbacks".as_ref());
    match log_dir.ancestors().nth(3) {
        Some(root) if in_training => root.to_owned(),
        _ => log_dir.to_owned(),
    }
}

/// Appends a row to a CSV table (created with its folder when missing); columns the row adds
/// go after the existing ones, and earlier rows leave them empty.
pub fn append_row(path: &Path, row: BTreeMap<String, String>) -> Result<(), String> {
    let mut header: Vec<String> = Vec::new();
    let mut rows: Vec<BTreeMap<String, String>> = Vec::new();
    if path.exists() {
        let mut reader =
            csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
        header = reader
            .headers()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .iter()
            .map(str::to_owned)
            .collect();
        for r in reader.records() {
            let r = r.map_err(|e| format!("{}: {e}", path.display()))?;
            rows.push(
                header
                    .iter()
                    .cloned()
                    .zip(r.iter().map(str::to_owned))
                    .collect(),
            );
        }
    }
    for key in row.keys() {
        if !header.contains(key) {
            header.push(key.clone());
        }
    }
    rows.push(row);
    let mut writer = csv::Writer::from_writer(Vec::new());
    let bad = |e: csv::Error| format!("{}: {e}", path.display());
    writer.write_record(&header).map_err(bad)?;
    for r in &rows {
        writer
            .write_record(header.iter().map(|h| r.get(h).map_or("", String::as_str)))
            .map_err(bad)?;
    }
    let bytes = writer.into_inner().map_err(|e| e.to_string())?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    crate::project::replace_file(path, &bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_samples() {
        type B = crate::backend::Cpu;
        let d = Default::default();
        let mut batch = Nest::<B>::map();
        let t = |v: Vec<f32>, shape: Vec<usize>| -> Nest<B> {
            Nest::Tensor(crate::nest::AnyTensor::from_data(
                TensorData::new(v, shape),
                &d,
            ))
        };
        batch
            .insert("x", t(vec![1.0, 2.0, 3.0, 4.0], vec![2, 2]))
            .unwrap();
        batch.insert("table", t(vec![9.0; 3], vec![3])).unwrap();
        batch.insert("step", Nest::Int(7)).unwrap();
        batch.insert("name", Nest::Str("skipped".into())).unwrap();
        let e = split_batch(&batch, 2, &[]).unwrap_err();
        assert!(
            e.contains("key `table` has shape [3], not a batch of 2"),
            "{e}"
        );
        let samples = split_batch(&batch, 2, &["table".to_owned()]).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1]["x"].to_vec::<f32>().unwrap(), [3.0, 4.0]);
        assert_eq!(samples[1]["x"].shape.to_vec(), [2]);
        assert_eq!(samples[0]["table"].shape.to_vec(), [3]);
        assert_eq!(samples[0]["step"].to_vec::<i64>().unwrap(), [7]);
        assert!(!samples[0].contains_key("name"));
    }

    #[test]
    fn sample_saver_writes_pngs_and_json() {
        type B = crate::backend::Cpu;
        let d = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let mut batch = Nest::<B>::map();
        let image = TensorData::new(
            vec![0.0f32, 1.0, 0.5, 0.25, 0.0, 1.0, 0.5, 0.25],
            [2, 1, 2, 2],
        );
        batch
            .insert(
                "mask",
                Nest::Tensor(crate::nest::AnyTensor::from_data(image, &d)),
            )
            .unwrap();
        let score = TensorData::new(vec![1i64, 2, 3, 4], [2, 2]);
        batch
            .insert(
                "score",
                Nest::Tensor(crate::nest::AnyTensor::from_data(score, &d)),
            )
            .unwrap();
        let mut saver = <SampleSaver as Build<B>>::build(
            &SampleSaverConfig {
                image_keys: vec!["mask".into()],
                ..SampleSaverConfig::default()
            },
            &d,
        )
        .unwrap();
        let ctx = CallbackContext {
            mode: crate::Mode::Infer,
            log_dir: dir.path().to_owned(),
            summaries: std::sync::Arc::new(crate::nucleotide::MemorySummaries::default()),
            summary_step: 0,
            iteration: Default::default(),
            iterations_per_epoch: 1,
            control: Default::default(),
        };
        let input = ToSave {
            save_names: Some(vec!["a".into(), "sub/b".into()]),
            rest: batch,
        };
        CoordinatorCallback::<B>::on_iteration_end(&mut saver, input, &ctx).unwrap();
        let png = crate::data::files::read_image(
            &dir.path().join("sub/b-mask.png"),
            crate::data::files::Color::Grey,
        )
        .unwrap();
        // 8-bit pixels: 0, 255, 128, 64.
        assert_eq!(
            png.to_vec::<f32>().unwrap(),
            [0.0, 1.0, 128.0 / 255.0, 64.0 / 255.0]
        );
        let json = std::fs::read_to_string(dir.path().join("a.json")).unwrap();
        assert_eq!(json, r#"{"score":[1,2]}"#);
    }

    #[test]
    fn buffers_keep_sum_and_average() {
        let rec = |v: f32| -> Record {
            [("x".to_owned(), TensorData::new(vec![v, 2.0 * v], [2]))].into()
        };
        let mut samples = Buffer::new(BufferKind::Samples);
        let mut sum = Buffer::new(BufferKind::Additive);
        let mut mean = Buffer::new(BufferKind::Average);
        for v in [1.0, 2.0, 6.0] {
            for b in [&mut samples, &mut sum, &mut mean] {
                b.push(rec(v)).unwrap();
            }
        }
        assert_eq!(samples.len(), 3);
        assert!(matches!(samples.take(), Buffered::Samples(s) if s.len() == 3));
        assert!(samples.is_empty());
        let Buffered::Reduced(s, 3) = sum.take() else {
            panic!()
        };
        assert_eq!(s["x"].to_vec::<f64>().unwrap(), [9.0, 18.0]);
        let Buffered::Reduced(m, 3) = mean.take() else {
            panic!()
        };
        assert_eq!(m["x"].to_vec::<f64>().unwrap(), [3.0, 6.0]);
        assert!(mean.is_empty());
        mean.push(rec(1.0)).unwrap();
        let e = mean
            .push([("x".to_owned(), TensorData::new(vec![1.0f32], [1]))].into())
            .unwrap_err();
        assert!(
            e.contains("key `x` has shape [1] here and [2] before"),
            "{e}"
        );

        // Batches go in split; `evaluate` hands the buffer over.
        type B = crate::backend::Cpu;
        let mut batch = Nest::<B>::map();
        let data = TensorData::new(vec![1.0f32, 3.0], [2, 1]);
        batch
            .insert(
                "y",
                Nest::Tensor(crate::nest::AnyTensor::from_data(data, &Default::default())),
            )
            .unwrap();
        let mut b = Buffer::new(BufferKind::Average);
        assert_eq!(b.push_batch(&batch, &[], false).unwrap(), None);
        let Some(Buffered::Reduced(m, 4)) = b.push_batch(&batch, &[], true).unwrap() else {
            panic!()
        };
        assert_eq!(m["y"].to_vec::<f64>().unwrap(), [2.0]);
    }

    #[test]
    fn save_names_table() {
        let dir = Path::new("save_target");
        let with = |name, position| SaveName {
            prefix: "prefix",
            suffix: "suffix",
            name,
            position,
        };
        // Spec §7.
        let cases: &[(SaveName<'_>, &str)] = &[
            (
                with(Some("some_new_name"), None),
                "save_target/prefix-some_new_name-suffix",
            ),
            (
                with(None, Some((5, 10, 3))),
                "save_target/prefix-epoch_005_iter_00010_sample_003-suffix",
            ),
            (with(None, None), "save_target/prefix-suffix"),
            (
                SaveName {
                    name: Some("a/b"),
                    ..SaveName::default()
                },
                "save_target/a/b",
            ),
        ];
        for (n, expected) in cases {
            assert_eq!(save_path(dir, n).unwrap(), Path::new(expected), "{n:?}");
        }
        for bad in ["../x", "/etc/passwd", "a/../../x", "nul\0byte"] {
            let n = SaveName {
                name: Some(bad),
                ..SaveName::default()
            };
            let e = save_path(dir, &n).unwrap_err();
            assert!(
                e.contains("would leave the results folder save_target"),
                "{bad}: {e}"
            );
        }
        assert!(
            save_path(dir, &SaveName::default()).is_err(),
            "an empty name"
        );
    }

    #[test]
    fn experiment_rows_add_columns() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("logs/experiments.csv");
        let row = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        append_row(&file, row(&[("loss", "0.5"), ("step", "10")])).unwrap();
        append_row(
            &file,
            row(&[("accuracy", "0.9"), ("loss", "0.2"), ("step", "20")]),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "loss,step,accuracy\n0.5,10,\n0.2,20,0.9\n"
        );
        assert_eq!(
            project_of(Path::new("/p/training/callbacks/eval")),
            Path::new("/p")
        );
        assert_eq!(
            project_of(Path::new("/p/inference/run-1/results")),
            Path::new("/p/inference/run-1/results")
        );
    }
}
