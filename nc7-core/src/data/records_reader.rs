//! Records read back: `Records` (a Dataset, every sample in memory) and `RecordsFeeder` (a
//! DataFeeder, one shard at a time) over the shards a `RecordsSaver` wrote.
//!
//! ```json
//! {"class_name": "RecordsFeeder", "name": "saved", "shards": "inference/last_run/results/records/*.safetensors"}
//! ```
//!
//! Every key a record holds is generated (the keys are dynamic: what was saved); nested keys
//! (`a:b`) become nested maps again. Shards are read in sorted order; the glob is relative to
//! the working directory.

use std::path::PathBuf;

use burn::prelude::Backend;
use serde::{Deserialize, Serialize};

use super::records::{Record, read_records};
use crate::nest::{AnyTensor, Nest};
use crate::nucleotide::{DataFeeder, Dataset};
use crate::{BoxError, Build, Generated, NoKeys, nucleotide};

/// `Records` and `RecordsFeeder`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordsConfig {
    /// A glob of shard files (`inference/last_run/results/records/*.safetensors`); relative
    /// to the project.
    #[schemars(extend("x-nc7-path" = true))]
    pub shards: String,
}

/// One record: every key it holds.
#[derive(Generated)]
pub struct RecordSample<B: Backend> {
    /// The record's keys.
    pub keys: Nest<B>,
}

fn shard_files(c: &RecordsConfig) -> Result<Vec<PathBuf>, BoxError> {
    let paths = glob::glob(&c.shards).map_err(|e| format!("shards `{}`: {e}", c.shards))?;
    let mut files: Vec<PathBuf> = paths
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Box::new(crate::data::DataError::from(format!(
            "shards `{}` matches no file; a RecordsSaver writes `<name>-<index>.safetensors` into its folder (run `infer` first when they are an inference's records)",
            c.shards
        ))));
    }
    Ok(files)
}

fn to_sample<B: Backend>(record: Record, device: &B::Device) -> Result<RecordSample<B>, BoxError> {
    let keys = Nest::unflatten(
        record
            .into_iter()
            .map(|(k, data)| (k, Nest::Tensor(AnyTensor::from_data(data, device)))),
    )?;
    Ok(RecordSample { keys })
}

/// Saved records as a dataset: every sample of every shard, read at build.
#[nucleotide(kind = Dataset)]
pub struct Records {
    records: Vec<Record>,
}

impl<B: Backend> Build<B> for Records {
    type Config = RecordsConfig;
    type Input = NoKeys;
    type Output = RecordSample<B>;
    fn build(c: &RecordsConfig, _: &B::Device) -> Result<Self, BoxError> {
        let mut records = Vec::new();
        for f in shard_files(c)? {
            records.extend(read_records(&f)?);
        }
        Ok(Records { records })
    }
}

impl<B: Backend> Dataset<B> for Records {
    fn len(&self) -> usize {
        self.records.len()
    }
    fn get(&self, index: usize) -> Result<RecordSample<B>, BoxError> {
        let record = self
            .records
            .get(index)
            .ok_or_else(|| format!("record {index} of {}", self.records.len()))?;
        to_sample(record.clone(), &Default::default())
    }
}

/// Saved records for inference, one after another, one shard in memory at a time.
#[nucleotide(kind = DataFeeder)]
pub struct RecordsFeeder {
    files: Vec<PathBuf>,
    next_file: usize,
    pending: std::vec::IntoIter<Record>,
}

impl<B: Backend> Build<B> for RecordsFeeder {
    type Config = RecordsConfig;
    type Input = NoKeys;
    type Output = RecordSample<B>;
    fn build(c: &RecordsConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(RecordsFeeder {
            files: shard_files(c)?,
            next_file: 0,
            pending: Vec::new().into_iter(),
        })
    }
}

impl<B: Backend> DataFeeder<B> for RecordsFeeder {
    fn next_sample(&mut self) -> Result<Option<RecordSample<B>>, BoxError> {
        loop {
            if let Some(record) = self.pending.next() {
                return to_sample(record, &Default::default()).map(Some);
            }
            let Some(file) = self.files.get(self.next_file) else {
                return Ok(None);
            };
            self.next_file += 1;
            self.pending = read_records(file)?.into_iter();
        }
    }
}
