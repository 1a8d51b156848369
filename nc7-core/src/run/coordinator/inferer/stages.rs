//! The reading and prediction stages of an inference run.

use super::*;

/// One iteration after prediction: the data and every model nucleotide's outputs.
pub(super) struct Predicted<B: Backend> {
    pub(super) data: Nest<B>,
    pub(super) outputs: BTreeMap<String, Option<Nest<B>>>,
    pub(super) samples: usize,
    pub(super) is_last: bool,
}

/// How many failed reads in a row end a run even with `--skip-bad-samples`: a feeder that
/// fails this often is broken, not fed a few bad files.
pub(super) const MAX_FAILURES_IN_A_ROW: usize = 100;

/// The reading stage: samples from the data feeder, batched, one iteration ahead.
pub(super) struct Reader<B: Backend> {
    pub(super) name: String,
    pub(super) feeder: Box<dyn DynFeeder<B>>,
    pub(super) batch_size: usize,
    pub(super) skip_bad_samples: bool,
    pub(super) device: B::Device,
    pub(super) skipped: Vec<String>,
    pub(super) ahead: Option<Result<Option<Read<B>>, Fault>>,
    /// Seconds spent reading.
    pub(super) busy: f64,
}

impl<B: Backend> Reader<B> {
    /// The next feed list (or sample), skipping bad ones when asked.
    pub(super) fn feeds(&mut self) -> Result<Option<Vec<Nest<B>>>, Fault> {
        let mut failures = 0;
        loop {
            match self.feeder.next_feeds() {
                Ok(feeds) => return Ok(feeds),
                Err(e) if self.skip_bad_samples && failures + 1 < MAX_FAILURES_IN_A_ROW => {
                    failures += 1;
                    log::warn!("skipped a bad sample of data feeder `{}`: {e}", self.name);
                    self.skipped.push(e.to_string());
                }
                Err(e) if self.skip_bad_samples => {
                    return Err(Fault::new(
                        code_or(&*e, Code::DATA),
                        format!(
                            "data feeder `{}` failed {MAX_FAILURES_IN_A_ROW} times in a row; the last: {e}",
                            self.name
                        ),
                    ));
                }
                Err(e) => {
                    return Err(Fault::new(
                        code_or(&*e, Code::DATA),
                        format!(
                            "data feeder `{}`: {e} (--skip-bad-samples logs bad samples and goes on)",
                            self.name
                        ),
                    ));
                }
            }
        }
    }

    /// One iteration's batches (not yet known to be the last); `None` at the end of the data.
    pub(super) fn read_iteration(&mut self) -> Result<Option<Read<B>>, Fault> {
        let batching = |e: BatchError| {
            Fault::new(
                Code::DATA,
                format!("batching the data feeder's samples: {e}"),
            )
        };
        if self.feeder.feed_lists() {
            let Some(feeds) = self.feeds()? else {
                return Ok(None);
            };
            if feeds.is_empty() {
                return Err(Fault::new(
                    Code::DATA,
                    format!("data feeder `{}` gave an empty feed list", self.name),
                ));
            }
            let n = feeds.len();
            let mut batches = Vec::new();
            let mut feeds = feeds.into_iter().peekable();
            while feeds.peek().is_some() {
                let chunk: Vec<Nest<B>> = feeds.by_ref().take(self.batch_size).collect();
                batches.push(collate(chunk, &self.device).map_err(batching)?);
            }
            return Ok(Some(Read::new(batches, n)));
        }
        // Each sample goes into the batch's buffers as it is read.
        let mut batch = Collator::new(self.batch_size, &self.device);
        while batch.len() < self.batch_size {
            match self.feeds()? {
                Some(feeds) => {
                    for sample in feeds {
                        batch.push(sample).map_err(batching)?;
                    }
                }
                None => break,
            }
        }
        if batch.is_empty() {
            return Ok(None);
        }
        let n = batch.len();
        Ok(Some(Read::new(vec![batch.finish().map_err(batching)?], n)))
    }

    /// The next iteration. An error while reading ahead is given after the iteration before it.
    pub(super) fn next(&mut self) -> Result<Option<Read<B>>, Fault> {
        let started = Instant::now();
        let next = self.next_unclocked();
        self.busy += started.elapsed().as_secs_f64();
        next
    }

    pub(super) fn next_unclocked(&mut self) -> Result<Option<Read<B>>, Fault> {
        let current = match self.ahead.take() {
            Some(read) => read?,
            None => self.read_iteration()?,
        };
        let Some(mut read) = current else {
            return Ok(None);
        };
        let ahead = self.read_iteration();
        read.is_last = matches!(ahead, Ok(None));
        self.ahead = Some(ahead);
        Ok(Some(read))
    }
}

/// The prediction stage.
pub(super) struct Predictor<'a, B: Backend> {
    /// The model; none in runs without one, whose iterations are the data alone.
    pub(super) model: Option<Model<B>>,
    pub(super) parts: &'a [Part],
    /// The saved model's inputs, checked against the first batch.
    pub(super) inputs: Option<&'a [Value]>,
    pub(super) model_dir: &'a Path,
    /// Seconds spent predicting.
    pub(super) busy: f64,
}

impl<B: Backend> Predictor<'_, B> {
    pub(super) fn predict(&mut self, read: Read<B>) -> Result<Predicted<B>, Fault> {
        let started = Instant::now();
        let predicted = self.predict_unclocked(read);
        self.busy += started.elapsed().as_secs_f64();
        predicted
    }

    pub(super) fn predict_unclocked(&mut self, read: Read<B>) -> Result<Predicted<B>, Fault> {
        if let (Some(inputs), Some(first)) = (self.inputs.take(), read.batches.first()) {
            check_signature(inputs, first, self.model_dir)
                .map_err(|e| Fault::new(Code::DATA, e))?;
        }
        let mut data = Vec::with_capacity(read.batches.len());
        let mut outputs: BTreeMap<String, Vec<Option<Nest<B>>>> = BTreeMap::new();
        for batch in read.batches {
            let Some(model) = &mut self.model else {
                data.push(batch);
                continue;
            };
            let out = model
                .run(batch.clone(), Mode::Infer)
                .map_err(|e| Fault::new(code_of(&e), format!("the model: {e}")))?
                .into_map();
            data.push(batch);
            for p in self.parts {
                if let Some(o) = out.get(&p.name) {
                    outputs.entry(p.name.clone()).or_default().push(o.clone());
                }
            }
        }
        let joined = |batches: Vec<Nest<B>>, what: &str| {
            concat(batches).map_err(|e| {
                Fault::new(
                    Code::DATA,
                    format!("joining the feed list's batches ({what}): {e}"),
                )
            })
        };
        let data = joined(data, "data")?;
        let mut collapsed = BTreeMap::new();
        for (name, values) in outputs {
            // An output absent in any batch is absent for the iteration.
            let value = match values.into_iter().collect::<Option<Vec<_>>>() {
                Some(v) => Some(joined(v, &name)?),
                None => None,
            };
            collapsed.insert(name, value);
        }
        Ok(Predicted {
            data,
            outputs: collapsed,
            samples: read.samples,
            is_last: read.is_last,
        })
    }
}

impl<'a, B: Backend> Predictor<'a, B> {
    /// The prediction stage of `model` with its weights loaded, or of no model.
    pub(super) fn build(
        model: Option<ModelRun<'a>>,
        device: &B::Device,
    ) -> Result<Self, InferError> {
        let Some(m) = model else {
            return Ok(Predictor {
                model: None,
                parts: &[],
                inputs: None,
                model_dir: Path::new(""),
                busy: 0.0,
            });
        };
        let mut built = Model::<B>::build(m.plan.handler.clone(), &m.plan.parts, device)
            .map_err(|e| InferError::Run(Fault::new(code_of(&*e), e.to_string())))?;
        let mut tensors = crate::model::read_safetensors::<B>(m.weights, device)?;
        built.load_tensors(&mut tensors, &[]).map_err(|e| {
            InferError::Run(Fault::new(
                code_or(&e, Code::WEIGHTS_MISMATCH),
                format!("weights {}: {e}", m.weights.display()),
            ))
        })?;
        Ok(Predictor {
            model: Some(built),
            parts: &m.plan.parts,
            inputs: m.inputs,
            model_dir: m.dir,
            busy: 0.0,
        })
    }
}
