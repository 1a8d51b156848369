//! Data filters on any data set or data feeder (nucleus7's data filters): `FilteredDataset`
//! and `FilteredFeeder` wrap one and drop the samples their filters do not keep.
//!
//! ```json
//! {"class_name": "FilteredDataset", "name": "train",
//!  "dataset": {"class_name": "Shapes", "name": "shapes", "samples": 2000, "size": 24},
//!  "filters": [{"class_name": "NoCircles", "name": "no_circles", "inbound_nodes": ["data"],
//!               "incoming_keys_mapping": {"data": {"label": "label"}}}]}
//! ```
//!
//! A filter is a DataProcessor that generates a boolean `keep`, with its own key mapping; it
//! reads the wrapped data's sample as the node `data`. A sample any filter does not keep is
//! dropped (filters are AND-ed, a drop counts for the first filter that drops it). A
//! `FilteredDataset` filters every sample when it is built (to know its length) and logs what
//! each filter dropped; a `FilteredFeeder` filters as it goes. Filters that keep nothing are an
//! error naming what each dropped. (A `DataPipe` has `filters` of its own, over its file list's
//! samples and its readers' outputs.)

use burn::prelude::Backend;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::SampleKey;
use super::pipe::{Built, build_nucleotides, dropped_by, kept_by, move_nest};
use crate::config::{NucleotideSection, SectionShape};
use crate::gene::Kind;
use crate::nest::Nest;
use crate::nucleotide::{DataFeeder, Dataset};
use crate::registry::Registry;
use crate::runtime::{DynDataset, DynFeeder};
use crate::{BoxError, Build, Generated, NoKeys, nucleotide};

/// The node the filters read the wrapped data's sample as.
pub const DATA_NODE: &str = "data";

const SECTIONS: [NucleotideSection; 1] = [NucleotideSection {
    key: "filters",
    kinds: &[Kind::DataProcessor],
    shape: SectionShape::List,
}];

/// `FilteredDataset`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilteredDatasetConfig {
    /// The data set to filter (`class_name`, `name`, its fields).
    pub dataset: Value,
    /// DataProcessor configs that each generate a boolean `keep`.
    pub filters: Vec<Value>,
}

/// `FilteredFeeder`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilteredFeederConfig {
    /// The data feeder to filter (`class_name`, `name`, its fields).
    pub feeder: Value,
    /// DataProcessor configs that each generate a boolean `keep`.
    pub filters: Vec<Value>,
}

/// A sample the filters kept: the wrapped data's keys.
#[derive(Generated)]
pub struct FilteredSample<B: Backend> {
    /// Every key of the sample.
    pub keys: Nest<B>,
}

/// The filters, built, and what each dropped.
struct Filters {
    built: Built<crate::backend::Cpu>,
    names: Vec<String>,
    dropped: Vec<usize>,
}

impl Filters {
    fn new(filters: &[Value]) -> Result<Filters, BoxError> {
        if filters.is_empty() {
            return Err(
                "`filters` is empty: give the filters, or use the data without them".into(),
            );
        }
        let built = build_nucleotides(
            &serde_json::json!({ "filters": filters }),
            &SECTIONS,
            DATA_NODE,
            "the filters",
            &Default::default(),
        )?;
        let names: Vec<String> = built.entries.iter().map(|e| e.name().to_owned()).collect();
        Ok(Filters {
            dropped: vec![0; names.len()],
            names,
            built,
        })
    }

    /// Whether every filter keeps `sample`.
    fn keep(&mut self, sample: Nest<crate::backend::Cpu>) -> Result<bool, BoxError> {
        let outputs = self.built.run(sample, "filter")?;
        kept_by(&outputs, &self.names, &mut self.dropped)
    }

    /// The error of filters that keep none of `total` samples.
    fn none_kept(&self, total: &str) -> BoxError {
        format!(
            "the filters keep none of the {total}: {} (a sample counts for the first filter that drops it); loosen or remove the filters that dropped them",
            dropped_by(&self.names, &self.dropped)
        )
        .into()
    }
}

/// The registration, name and own config of a nucleotide config of `kind` nested in a
/// data nucleotide's `field` (a filtered data set's, a mix's).
pub(super) fn nested(
    config: &Value,
    field: &str,
    kind: Kind,
) -> Result<(&'static crate::registry::Registration, String, Value), BoxError> {
    let at = |f: &str| {
        config
            .get(f)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("`{field}` has no `{f}`: give its `class_name` and `name`"))
    };
    let (class, name) = (at("class_name")?, at("name")?);
    let registration = Registry::global()
        .resolve(&class, Some(kind))
        .map_err(|e| format!("`{field}` (`{name}`): {e}"))?;
    let mut own = config.clone();
    if let Some(m) = own.as_object_mut() {
        m.remove("class_name");
        m.remove("name");
    }
    Ok((registration, name, own))
}

/// A data set without the samples its filters drop.
#[nucleotide(kind = Dataset)]
pub struct FilteredDataset {
    inner: Box<dyn DynDataset<crate::backend::Cpu>>,
    /// The wrapped data set's samples the filters keep.
    kept: Vec<usize>,
}

impl<B: Backend> Build<B> for FilteredDataset {
    type Config = FilteredDatasetConfig;
    type Input = NoKeys;
    type Output = FilteredSample<B>;
    fn build(c: &FilteredDatasetConfig, _: &B::Device) -> Result<Self, BoxError> {
        let (registration, name, own) = nested(&c.dataset, "dataset", Kind::Dataset)?;
        let inner = crate::runtime::dataset::<crate::backend::Cpu>(
            registration,
            &name,
            &own,
            &Default::default(),
        )
        .map_err(|e| format!("`dataset` (`{name}`): {e}"))?;
        let mut filters = Filters::new(&c.filters)?;
        let mut kept = Vec::new();
        for i in 0..inner.len() {
            let sample = inner
                .get(i)
                .map_err(|e| format!("`{name}` sample {i}: {e}"))?;
            if filters
                .keep(sample)
                .map_err(|e| format!("`{name}` sample {i}: {e}"))?
            {
                kept.push(i);
            }
        }
        if kept.is_empty() {
            return Err(filters.none_kept(&format!("{} samples of `{name}`", inner.len())));
        }
        if kept.len() < inner.len() {
            log::info!(
                "`{name}`: the filters keep {} of {} samples ({})",
                kept.len(),
                inner.len(),
                dropped_by(&filters.names, &filters.dropped)
            );
        }
        Ok(FilteredDataset { inner, kept })
    }
}

impl<B: Backend> Dataset<B> for FilteredDataset {
    fn len(&self) -> usize {
        self.kept.len()
    }

    fn get(&self, index: usize) -> Result<FilteredSample<B>, BoxError> {
        self.get_for(SampleKey::unkeyed(index))
    }

    fn get_for(&self, key: SampleKey) -> Result<FilteredSample<B>, BoxError> {
        let index = *self
            .kept
            .get(key.index)
            .ok_or_else(|| format!("sample {} of {}", key.index, self.kept.len()))?;
        let sample = self.inner.get_for(SampleKey { index, ..key })?;
        Ok(FilteredSample {
            keys: move_nest::<B>(sample)?,
        })
    }
}

/// A data feeder without the samples its filters drop.
#[nucleotide(kind = DataFeeder)]
pub struct FilteredFeeder {
    inner: Box<dyn DynFeeder<crate::backend::Cpu>>,
    name: String,
    filters: Filters,
    seen: usize,
    given: usize,
}

impl<B: Backend> Build<B> for FilteredFeeder {
    type Config = FilteredFeederConfig;
    type Input = NoKeys;
    type Output = FilteredSample<B>;
    fn build(c: &FilteredFeederConfig, _: &B::Device) -> Result<Self, BoxError> {
        let (registration, name, own) = nested(&c.feeder, "feeder", Kind::DataFeeder)?;
        let inner = crate::runtime::feeder::<crate::backend::Cpu>(
            registration,
            &name,
            &own,
            &Default::default(),
        )
        .map_err(|e| format!("`feeder` (`{name}`): {e}"))?;
        Ok(FilteredFeeder {
            inner,
            name,
            filters: Filters::new(&c.filters)?,
            seen: 0,
            given: 0,
        })
    }
}

impl<B: Backend> DataFeeder<B> for FilteredFeeder {
    fn next_sample(&mut self) -> Result<Option<FilteredSample<B>>, BoxError> {
        while let Some(sample) = self.inner.next_sample()? {
            self.seen += 1;
            let keep = self
                .filters
                .keep(sample.clone())
                .map_err(|e| format!("`{}` sample {}: {e}", self.name, self.seen - 1))?;
            if keep {
                self.given += 1;
                return Ok(Some(FilteredSample {
                    keys: move_nest::<B>(sample)?,
                }));
            }
        }
        if self.given == 0 && self.seen > 0 {
            return Err(self
                .filters
                .none_kept(&format!("{} samples of `{}`", self.seen, self.name)));
        }
        Ok(None)
    }
}
