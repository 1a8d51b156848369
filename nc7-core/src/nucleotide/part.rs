//! A nucleotide with what it is built from: its name, kind and registration, its own config,
//! and the common fields that concern training (trainable, its own optimization, how a
//! loss's keys make the total loss). Run plans type every nucleotide config into one, once.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::NucleotideEntry;
use crate::gene::Kind;
use crate::optim::PluginOptimization;

/// A nucleotide of the model with what it is built from.
#[derive(Debug, Clone)]
pub struct Part {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Its registration.
    pub registration: &'static crate::registry::Registration,
    /// Its own config fields, complete.
    pub config: Value,
    /// `trainable` (plugins).
    pub trainable: bool,
    /// Its own `optimization_config` (plugins).
    pub optimization: PluginOptimization,
    /// How its `loss…` keys make the total loss (losses).
    pub loss: LossSettings,
    /// Where its KPIs go and whether they are cached (KPI plugins and accumulators).
    pub kpi: KpiSettings,
}

/// Where a KPI nucleotide's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KpiSaver {
    /// JSON in the run's results folder: an accumulator's KPIs in `<name>.json` (images as
    /// `<name>-<key>.png`), a plugin's per-sample values as lines of `<name>.jsonl`.
    Json,
}

/// A KPI nucleotide's `savers` and `cache`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KpiSettings {
    /// Where its KPIs are written; by default an accumulator's go to JSON and a plugin's
    /// per-sample values nowhere.
    pub savers: Vec<KpiSaver>,
    /// Restores its KPIs from the run's cache for inputs it has seen before, instead of
    /// computing them again.
    pub cache: bool,
}

/// How a loss nucleotide's keys make the total loss: nucleus7's `loss_weights` and
/// `exclude_from_total_loss` of a loss.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossSettings {
    /// The weight of each `loss…` key in the loss's total (1 when absent).
    pub weights: BTreeMap<String, f64>,
    /// The loss is reported but not added to the total loss.
    pub exclude_from_total: bool,
}

/// Why a nucleotide config cannot be typed into its part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    /// Its common fields or its class name did not resolve (`check` says why).
    #[error("nucleotide `{name}` could not be resolved; run `check` for the details")]
    Unresolved {
        /// The nucleotide.
        name: String,
    },
    /// A common field that only another kind takes.
    #[error("nucleotide `{name}`: only {kind} take {fields}")]
    WrongKind {
        /// The nucleotide.
        name: String,
        /// The kinds that take the fields (`model plugins`).
        kind: &'static str,
        /// The fields (`` `optimization_config` ``).
        fields: &'static str,
    },
    /// A loss weight for a key the loss does not generate.
    #[error("nucleotide `{name}`: `loss_weights` has `{key}`, which is none of its loss keys ({}){}", crate::suggest::list(keys), crate::suggest::hint(key, keys.iter().map(String::as_str)))]
    UnknownLossKey {
        /// The nucleotide.
        name: String,
        /// The key given.
        key: String,
        /// Its keys named `loss…`.
        keys: Vec<String>,
    },
}

impl Part {
    /// The part of one checked nucleotide entry: its common fields split off, its own config
    /// left. The error says why it cannot be one.
    pub fn from_entry(e: &NucleotideEntry) -> Result<Part, PartError> {
        let (Some(common), Some(registration)) = (&e.common, e.registration) else {
            return Err(PartError::Unresolved {
                name: e.name().to_owned(),
            });
        };
        let optimization = match &common.optimization {
            Some(_) if registration.kind != Kind::ModelPlugin => {
                return Err(PartError::WrongKind {
                    name: common.name.clone(),
                    kind: "model plugins",
                    fields: "an `optimization_config`",
                });
            }
            Some(o) => o.clone(),
            None => PluginOptimization {
                learning_rate_multiplier: 1.0,
                optimizer: None,
            },
        };
        if registration.kind != Kind::ModelLoss
            && (common.loss_weights.is_some() || common.exclude_from_total_loss.is_some())
        {
            return Err(PartError::WrongKind {
                name: common.name.clone(),
                kind: "model losses",
                fields: "`loss_weights` and `exclude_from_total_loss`",
            });
        }
        let is_kpi = matches!(registration.kind, Kind::KpiPlugin | Kind::KpiAccumulator);
        if !is_kpi && (common.savers.is_some() || common.cache.is_some()) {
            return Err(PartError::WrongKind {
                name: common.name.clone(),
                kind: "KPI plugins and accumulators",
                fields: "`savers` and `cache`",
            });
        }
        let kpi = KpiSettings {
            savers: common.savers.clone().unwrap_or_else(|| {
                if registration.kind == Kind::KpiAccumulator {
                    vec![KpiSaver::Json]
                } else {
                    Vec::new()
                }
            }),
            cache: common.cache.unwrap_or(false),
        };
        let weights = common.loss_weights.clone().unwrap_or_default();
        let signature = (registration.signature)();
        if !signature.dynamic_generated {
            let keys: Vec<String> = signature
                .generated
                .iter()
                .map(|k| k.name.to_string())
                .filter(|k| k.starts_with("loss"))
                .collect();
            if let Some(bad) = weights.keys().find(|k| !keys.contains(k)) {
                return Err(PartError::UnknownLossKey {
                    name: common.name.clone(),
                    key: bad.clone(),
                    keys,
                });
            }
        }
        Ok(Part {
            name: common.name.clone(),
            kind: registration.kind,
            registration,
            config: Value::Object(common.rest.clone()),
            trainable: common.trainable,
            optimization,
            loss: LossSettings {
                weights,
                exclude_from_total: common.exclude_from_total_loss.unwrap_or(false),
            },
            kpi,
        })
    }

    /// The parts of checked nucleotide entries; the first that cannot be one is the error.
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = &'a NucleotideEntry>,
    ) -> Result<Vec<Part>, PartError> {
        entries.into_iter().map(Part::from_entry).collect()
    }
}
