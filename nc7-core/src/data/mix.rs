//! `DatasetMix` (nucleus7's dataset mix): several data sets as one, each drawn with its
//! sampling weight.
//!
//! ```json
//! {"class_name": "DatasetMix", "name": "train",
//!  "datasets": [{"class_name": "Shapes", "name": "clean", "samples": 2000, "size": 24},
//!               {"class_name": "Shapes", "name": "noisy", "samples": 500, "size": 24, "noise": 0.3}],
//!  "weights": [3, 1], "samples_per_epoch": 2000}
//! ```
//!
//! An epoch of the mix holds `samples_per_epoch` samples (all the data sets' samples by
//! default). Each epoch, each of its positions draws a data set by the weights, and each data
//! set gives its samples in a new order, without repeating one before all were given (a data
//! set drawn more often than it has samples starts over in another order). The draws follow
//! from the run's seed and the epoch alone, so a mixed run repeats, continues exactly and reads
//! alike with any read-ahead or number of devices. Every sample gets `source`, the name of the
//! data set it came from; the trainer writes how many samples each data set gave to an epoch
//! to the summaries (`samples/<name>`) and the log. The data sets must give the same keys.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use burn::prelude::Backend;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::SampleKey;
use super::order::SplitMix64;
use crate::gene::Kind;
use crate::nest::Nest;
use crate::nucleotide::Dataset;
use crate::runtime::DynDataset;
use crate::{BoxError, Build, Generated, NoKeys, nucleotide};

/// `DatasetMix`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetMixConfig {
    /// The data sets: each a Dataset nucleotide's config (`class_name`, `name`, its fields).
    pub datasets: Vec<Value>,
    /// Each data set's sampling weight, more than 0; all alike when absent.
    #[serde(default)]
    pub weights: Option<Vec<f64>>,
    /// Samples in an epoch of the mix; all the data sets' samples when absent.
    #[serde(default)]
    pub samples_per_epoch: Option<usize>,
}

/// A sample of the mix: the data set it came from and its keys.
#[derive(Generated)]
pub struct MixSample<B: Backend> {
    /// The name of the data set the sample came from.
    pub source: String,
    /// The sample's keys.
    pub keys: Nest<B>,
}

/// One epoch's draws: for each position, the data set and its sample.
type Table = Arc<Vec<(usize, usize)>>;

/// Several data sets as one, each drawn with its sampling weight.
#[nucleotide(kind = Dataset)]
pub struct DatasetMix {
    names: Vec<String>,
    sources: Vec<Box<dyn DynDataset<crate::backend::Cpu>>>,
    /// Cumulative weights, the last 1.
    cumulative: Vec<f64>,
    len: usize,
    /// The last epochs' tables (a read-ahead may read two epochs at once).
    tables: Mutex<Vec<((u64, u64), Table)>>,
}

impl<B: Backend> Build<B> for DatasetMix {
    type Config = DatasetMixConfig;
    type Input = NoKeys;
    type Output = MixSample<B>;
    fn build(c: &DatasetMixConfig, _: &B::Device) -> Result<Self, BoxError> {
        if c.datasets.is_empty() {
            return Err("`datasets` is empty: give the data sets to mix".into());
        }
        let weights = match &c.weights {
            Some(w) if w.len() != c.datasets.len() => {
                return Err(format!(
                    "`weights` has {} values for {} data sets: give one per data set",
                    w.len(),
                    c.datasets.len()
                )
                .into());
            }
            Some(w) => w.clone(),
            None => vec![1.0; c.datasets.len()],
        };
        if let Some((i, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !(w.is_finite() && **w > 0.0))
        {
            return Err(format!(
                "`weights[{i}]` is {w}: a sampling weight is more than 0 (a data set with weight 0 is never drawn: remove it instead)"
            )
            .into());
        }
        let mut names = Vec::new();
        let mut sources = Vec::new();
        for (i, d) in c.datasets.iter().enumerate() {
            let (registration, name, own) =
                super::filtered::nested(d, &format!("datasets[{i}]"), Kind::Dataset)?;
            if names.contains(&name) {
                return Err(format!(
                    "`datasets[{i}]`: the name `{name}` is taken by another data set of the mix"
                )
                .into());
            }
            let data = crate::runtime::dataset::<crate::backend::Cpu>(
                registration,
                &name,
                &own,
                &Default::default(),
            )
            .map_err(|e| format!("`datasets[{i}]` (`{name}`): {e}"))?;
            if data.is_empty() {
                return Err(format!("`datasets[{i}]` (`{name}`) has no samples").into());
            }
            names.push(name);
            sources.push(data);
        }
        // The data sets must give the same keys (their first samples tell).
        let keys = |k: usize| -> Result<Vec<String>, BoxError> {
            let s = sources[k].get(0)?;
            Ok(s.flatten().into_iter().map(|(k, _)| k).collect())
        };
        let first = keys(0)?;
        for k in 1..sources.len() {
            let other = keys(k)?;
            if other != first {
                let only = |a: &[String], b: &[String]| {
                    a.iter()
                        .filter(|x| !b.contains(x))
                        .map(|x| format!("`{x}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(format!(
                    "the data sets of the mix give other keys: `{}` has {} that `{}` lacks, and lacks {}; mix data sets whose samples have the same keys",
                    names[k],
                    only(&other, &first),
                    names[0],
                    only(&first, &other)
                )
                .into());
            }
        }
        let total: f64 = weights.iter().sum();
        let mut sum = 0.0;
        let mut cumulative: Vec<f64> = weights
            .iter()
            .map(|w| {
                sum += w / total;
                sum
            })
            .collect();
        *cumulative.last_mut().expect("at least one data set") = 1.0;
        let len = match c.samples_per_epoch {
            Some(0) => return Err("`samples_per_epoch` is 0: an epoch needs a sample".into()),
            Some(n) => n,
            None => sources.iter().map(|s| s.len()).sum(),
        };
        Ok(DatasetMix {
            names,
            sources,
            cumulative,
            len,
            tables: Mutex::new(Vec::new()),
        })
    }
}

impl DatasetMix {
    /// The draws of `epoch` for a run with `seed`.
    fn table(&self, epoch: u64, seed: u64) -> Table {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, t)) = tables.iter().find(|(k, _)| *k == (epoch, seed)) {
            return t.clone();
        }
        let base = SampleKey {
            index: usize::MAX,
            epoch,
            seed,
        }
        .sample_seed();
        let mut draws = SplitMix64(base);
        let picks: Vec<usize> = (0..self.len)
            .map(|_| {
                let u = draws.unit();
                self.cumulative.iter().position(|c| u < *c).unwrap_or(0)
            })
            .collect();
        // Each data set's samples in a new order, started over in another when used up.
        let mut orders: Vec<Vec<usize>> = vec![Vec::new(); self.sources.len()];
        let mut next = vec![0usize; self.sources.len()];
        let mut table = Vec::with_capacity(self.len);
        for s in picks {
            if next[s] == orders[s].len() {
                let n = self.sources[s].len();
                let mut order: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    order.swap(i, draws.below(i as u64 + 1) as usize);
                }
                orders[s] = order;
                next[s] = 0;
            }
            table.push((s, orders[s][next[s]]));
            next[s] += 1;
        }
        let table = Arc::new(table);
        tables.push(((epoch, seed), table.clone()));
        if tables.len() > 2 {
            tables.remove(0);
        }
        table
    }
}

impl<B: Backend> Dataset<B> for DatasetMix {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> Result<MixSample<B>, BoxError> {
        self.get_for(SampleKey::unkeyed(index))
    }

    fn get_for(&self, key: SampleKey) -> Result<MixSample<B>, BoxError> {
        let table = self.table(key.epoch, key.seed);
        let &(s, index) = table
            .get(key.index)
            .ok_or_else(|| format!("sample {} of {}", key.index, self.len))?;
        let inner = SampleKey { index, ..key };
        let sample = self.sources[s]
            .get_for(inner)
            .map_err(|e| format!("`{}` sample {index}: {e}", self.names[s]))?;
        Ok(MixSample {
            source: self.names[s].clone(),
            keys: super::pipe::move_nest::<B>(sample)?,
        })
    }

    fn epoch_counts(&self, epoch: u64, seed: u64) -> BTreeMap<String, usize> {
        let mut counts: BTreeMap<String, usize> =
            self.names.iter().map(|n| (n.clone(), 0)).collect();
        for (s, _) in self.table(epoch, seed).iter() {
            *counts.entry(self.names[*s].clone()).or_default() += 1;
        }
        counts
    }
}
