//! Data processors on any data set or data feeder: `ProcessedDataset` and `ProcessedFeeder`
//! wrap one and run every sample through their `processors` (a `DataPipe` has processors of
//! its own; these put the same nucleotides behind `Shapes`, `ImageFiles`, a mix, ...), and
//! `Standardize`, the input preprocessing nc7's backbones expect.
//!
//! ```json
//! {"class_name": "ProcessedDataset", "name": "train",
//!  "dataset": {"class_name": "Shapes", "name": "shapes", "samples": 2000, "size": 24},
//!  "processors": [
//!    {"class_name": "Augment", "name": "augment", "inbound_nodes": ["data"], "crop": 0.5},
//!    {"class_name": "Standardize", "name": "standardize", "inbound_nodes": ["augment"]}]}
//! ```
//!
//! The processors read the wrapped data's sample as the node `data`, which also gives
//! `sample_seed`: a seed of the sample's own from the run's seed, the data epoch and the
//! sample's index (as a `DataPipe`'s `file_list` does), so random processors such as
//! `Augment` are reproducible and resume exactly. A sample is the wrapped data's keys, each
//! replaced by the key of that name the last processor to generate it gave.

use std::sync::Mutex;

use burn::prelude::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::SampleKey;
use super::filtered::{DATA_NODE, nested};
use super::pipe::{Built, SAMPLE_SEED_KEY, build_nucleotides, move_nest};
use crate::backend::Cpu;
use crate::config::{NucleotideSection, SectionShape};
use crate::gene::Kind;
use crate::nest::Nest;
use crate::nucleotide::{DataFeeder, DataProcessor, Dataset};
use crate::runtime::{DynDataset, DynFeeder};
use crate::{BoxError, Build, Generated, Incoming, NoKeys, nucleotide};

const SECTIONS: [NucleotideSection; 1] = [NucleotideSection {
    key: "processors",
    kinds: &[Kind::DataProcessor],
    shape: SectionShape::List,
}];

/// `ProcessedDataset`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessedDatasetConfig {
    /// The data set to process (`class_name`, `name`, its fields).
    pub dataset: Value,
    /// DataProcessor configs, run in order; the first reads the node `data`.
    pub processors: Vec<Value>,
}

/// `ProcessedFeeder`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessedFeederConfig {
    /// The data feeder to process (`class_name`, `name`, its fields).
    pub feeder: Value,
    /// DataProcessor configs, run in order; the first reads the node `data`.
    pub processors: Vec<Value>,
}

/// A processed sample: the wrapped data's keys, with what the processors generated.
#[derive(Generated)]
pub struct ProcessedSample<B: Backend> {
    /// Every key of the sample.
    pub keys: Nest<B>,
}

/// The processors, built.
struct Processors {
    built: Built<Cpu>,
    names: Vec<String>,
}

impl Processors {
    fn new(processors: &[Value]) -> Result<Processors, BoxError> {
        if processors.is_empty() {
            return Err(
                "`processors` is empty: give the processors, or use the data without them".into(),
            );
        }
        let built = build_nucleotides(
            &serde_json::json!({ "processors": processors }),
            &SECTIONS,
            DATA_NODE,
            "the processors",
            &Default::default(),
        )?;
        let names = built.entries.iter().map(|e| e.name().to_owned()).collect();
        Ok(Processors { built, names })
    }

    /// `sample` through the processors, with `seed` as its `sample_seed`.
    fn process(&mut self, sample: Nest<Cpu>, seed: u64) -> Result<Nest<Cpu>, BoxError> {
        let mut start = sample.clone();
        if start.get(SAMPLE_SEED_KEY).is_none() {
            start.insert(SAMPLE_SEED_KEY, Nest::Int(seed as i64))?;
        }
        let mut outputs = self.built.run(start, "processor")?;
        let mut keys = sample;
        for name in &self.names {
            if let Some(Nest::Map(out)) = outputs.take(name) {
                for (k, v) in out {
                    keys.insert(&k, v)?;
                }
            }
        }
        Ok(keys)
    }
}

/// A data set whose samples run through data processors.
#[nucleotide(kind = Dataset)]
pub struct ProcessedDataset {
    inner: Box<dyn DynDataset<Cpu>>,
    name: String,
    /// Behind a lock: nucleotides run with `&mut self`, a data set is read with `&self`.
    processors: Mutex<Processors>,
}

impl<B: Backend> Build<B> for ProcessedDataset {
    type Config = ProcessedDatasetConfig;
    type Input = NoKeys;
    type Output = ProcessedSample<B>;
    fn build(c: &ProcessedDatasetConfig, _: &B::Device) -> Result<Self, BoxError> {
        let (registration, name, own) = nested(&c.dataset, "dataset", Kind::Dataset)?;
        let inner = crate::runtime::dataset::<Cpu>(registration, &name, &own, &Default::default())
            .map_err(|e| format!("`dataset` (`{name}`): {e}"))?;
        Ok(ProcessedDataset {
            inner,
            name,
            processors: Mutex::new(Processors::new(&c.processors)?),
        })
    }
}

impl<B: Backend> Dataset<B> for ProcessedDataset {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn get(&self, index: usize) -> Result<ProcessedSample<B>, BoxError> {
        self.get_for(SampleKey::unkeyed(index))
    }

    fn get_for(&self, key: SampleKey) -> Result<ProcessedSample<B>, BoxError> {
        let sample = self.inner.get_for(key)?;
        let keys = self
            .processors
            .lock()
            .map_err(|_| "a processor panicked on an earlier sample")?
            .process(sample, key.sample_seed())
            .map_err(|e| format!("`{}` sample {}: {e}", self.name, key.index))?;
        Ok(ProcessedSample {
            keys: move_nest::<B>(keys)?,
        })
    }

    fn epoch_counts(&self, epoch: u64, seed: u64) -> std::collections::BTreeMap<String, usize> {
        self.inner.epoch_counts(epoch, seed)
    }
}

/// A data feeder whose samples run through data processors.
#[nucleotide(kind = DataFeeder)]
pub struct ProcessedFeeder {
    inner: Box<dyn DynFeeder<Cpu>>,
    name: String,
    processors: Processors,
    given: usize,
}

impl<B: Backend> Build<B> for ProcessedFeeder {
    type Config = ProcessedFeederConfig;
    type Input = NoKeys;
    type Output = ProcessedSample<B>;
    fn build(c: &ProcessedFeederConfig, _: &B::Device) -> Result<Self, BoxError> {
        let (registration, name, own) = nested(&c.feeder, "feeder", Kind::DataFeeder)?;
        let inner = crate::runtime::feeder::<Cpu>(registration, &name, &own, &Default::default())
            .map_err(|e| format!("`feeder` (`{name}`): {e}"))?;
        Ok(ProcessedFeeder {
            inner,
            name,
            processors: Processors::new(&c.processors)?,
            given: 0,
        })
    }
}

impl<B: Backend> DataFeeder<B> for ProcessedFeeder {
    fn next_sample(&mut self) -> Result<Option<ProcessedSample<B>>, BoxError> {
        let Some(sample) = self.inner.next_sample()? else {
            return Ok(None);
        };
        let index = self.given;
        self.given += 1;
        let keys = self
            .processors
            .process(sample, SampleKey::unkeyed(index).sample_seed())
            .map_err(|e| format!("`{}` sample {index}: {e}", self.name))?;
        Ok(Some(ProcessedSample {
            keys: move_nest::<B>(keys)?,
        }))
    }
}

/// `Standardize`'s config: per-channel statistics (one number for every channel, or one per
/// channel).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StandardizeConfig {
    /// Subtracted from each channel.
    #[serde(default = "half")]
    pub mean: Vec<f32>,
    /// Each channel is divided by it after the subtraction.
    #[serde(default = "quarter")]
    pub std: Vec<f32>,
}

fn half() -> Vec<f32> {
    vec![0.5]
}

fn quarter() -> Vec<f32> {
    vec![0.25]
}

/// An image to standardise.
#[derive(Incoming)]
pub struct StandardizeIn<B: Backend> {
    /// `[C, H, W]`.
    pub image: Tensor<B, 3>,
}

/// The standardised image.
#[derive(Generated)]
pub struct StandardizeOut<B: Backend> {
    /// `[C, H, W]`: `(image − mean) / std` per channel.
    pub image: Tensor<B, 3>,
}

/// Standardises an image per channel, `(image − mean) / std`: the input preprocessing nc7's
/// backbones expect (Verres's `preprocess_input`). The defaults (0.5, 0.25) map `[0, 1]` to
/// `[−2, 2]`; give your data's statistics for better ones.
#[nucleotide(kind = DataProcessor)]
pub struct Standardize {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl<B: Backend> Build<B> for Standardize {
    type Config = StandardizeConfig;
    type Input = StandardizeIn<B>;
    type Output = StandardizeOut<B>;
    fn build(c: &StandardizeConfig, _: &B::Device) -> Result<Self, BoxError> {
        if c.mean.is_empty() || c.std.is_empty() {
            return Err("`mean` and `std` need one number, or one per channel".into());
        }
        if let Some(bad) = c.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("`std` holds {bad}: every deviation must be above 0").into());
        }
        Ok(Standardize {
            mean: c.mean.clone(),
            std: c.std.clone(),
        })
    }
}

/// One number per channel from `values` (one for all, or one each).
fn per_channel(values: &[f32], channels: usize, what: &str) -> Result<Vec<f32>, BoxError> {
    match values.len() {
        1 => Ok(vec![values[0]; channels]),
        n if n == channels => Ok(values.to_vec()),
        n => Err(format!(
            "`{what}` has {n} numbers for an image of {channels} channels: give one, or {channels}"
        )
        .into()),
    }
}

impl<B: Backend> DataProcessor<B> for Standardize {
    fn process(&mut self, input: StandardizeIn<B>) -> Result<StandardizeOut<B>, BoxError> {
        let [c, _, _] = input.image.dims();
        let device = input.image.device();
        let column =
            |v: Vec<f32>| Tensor::<B, 3>::from_data(TensorData::new(v, [c, 1, 1]), &device);
        let mean = column(per_channel(&self.mean, c, "mean")?);
        let std = column(per_channel(&self.std, c, "std")?);
        Ok(StandardizeOut {
            image: (input.image - mean) / std,
        })
    }
}
