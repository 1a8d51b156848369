//! `RecordsSaver`: every sample it is given, as records (safetensors shards).

use super::*;

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
    pub fn samples(
        &self,
        not_batch_keys: &[String],
    ) -> Result<Vec<Record>, crate::data::DataError> {
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
