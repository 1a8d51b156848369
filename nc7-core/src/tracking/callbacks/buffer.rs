//! Buffers for callbacks over many samples, and `BufferCallback`, which hands them on.

use super::*;

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
    pub fn push(&mut self, record: Record) -> Result<(), crate::data::DataError> {
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
                ).into());
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
            for record in split_batch(batch, n, not_batch_keys).map_err(|e| e.to_string())? {
                self.push(record).map_err(|e| e.to_string())?;
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
