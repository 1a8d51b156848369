//! Kinds of nucleotides, the genes they form, and which gene may feed which.

use std::fmt;
use std::str::FromStr;

/// What a nucleotide is for. A gene is all nucleotides of one kind inside one handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Part of the network: turns inputs into predictions.
    ModelPlugin,
    /// Computes losses from plugin outputs.
    ModelLoss,
    /// Turns raw predictions into final results (not run in training).
    ModelPostProcessor,
    /// Writes summaries (scalars, images, histograms) during evaluation.
    ModelSummary,
    /// Computes metrics.
    ModelMetric,
    /// Gives training or evaluation samples.
    Dataset,
    /// Gives inference samples.
    DataFeeder,
    /// Reads raw data from files.
    DataReader,
    /// Transforms read data.
    DataProcessor,
    /// Reacts to iterations of a coordinator (saving, logging, early stopping, ...).
    CoordinatorCallback,
    /// Computes KPIs for one sample.
    KpiPlugin,
    /// Accumulates KPIs over samples.
    KpiAccumulator,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 12] = [
        Kind::ModelPlugin,
        Kind::ModelLoss,
        Kind::ModelPostProcessor,
        Kind::ModelSummary,
        Kind::ModelMetric,
        Kind::Dataset,
        Kind::DataFeeder,
        Kind::DataReader,
        Kind::DataProcessor,
        Kind::CoordinatorCallback,
        Kind::KpiPlugin,
        Kind::KpiAccumulator,
    ];

    /// The kind's name, as configs and messages write it.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::ModelPlugin => "ModelPlugin",
            Kind::ModelLoss => "ModelLoss",
            Kind::ModelPostProcessor => "ModelPostProcessor",
            Kind::ModelSummary => "ModelSummary",
            Kind::ModelMetric => "ModelMetric",
            Kind::Dataset => "Dataset",
            Kind::DataFeeder => "DataFeeder",
            Kind::DataReader => "DataReader",
            Kind::DataProcessor => "DataProcessor",
            Kind::CoordinatorCallback => "CoordinatorCallback",
            Kind::KpiPlugin => "KpiPlugin",
            Kind::KpiAccumulator => "KpiAccumulator",
        }
    }

    /// The kinds of nucleotides in the same handler this kind may take inputs from (spec §3,
    /// with the deliberate differences of §9: metrics and summaries read losses, summaries read
    /// metrics). The handler's incoming nodes (dataset, data feeder, model outputs fed to
    /// callbacks) are always allowed and are not listed.
    pub const fn may_take_from(self) -> &'static [Kind] {
        use Kind::*;
        match self {
            ModelPlugin => &[ModelPlugin],
            ModelLoss => &[ModelPlugin, ModelLoss],
            ModelPostProcessor => &[ModelPlugin, ModelPostProcessor],
            ModelSummary => &[
                ModelPlugin,
                ModelLoss,
                ModelPostProcessor,
                ModelSummary,
                ModelMetric,
            ],
            ModelMetric => &[ModelPlugin, ModelLoss, ModelPostProcessor],
            CoordinatorCallback => &[CoordinatorCallback],
            KpiPlugin => &[KpiPlugin],
            KpiAccumulator => &[KpiPlugin, KpiAccumulator],
            DataReader => &[],
            DataProcessor => &[DataReader, DataProcessor],
            // A dataset or data feeder built from a data pipe gives what its readers and
            // processors generate.
            Dataset | DataFeeder => &[DataReader, DataProcessor],
        }
    }

    /// Whether a nucleotide of this kind may take inputs from one of kind `other`.
    pub fn allows_input_from(self, other: Kind) -> bool {
        self.may_take_from().contains(&other)
    }

    /// The handler genes, in run order, that nucleotides of this kind live in.
    pub fn handler(self) -> &'static [Kind] {
        use Kind::*;
        match self {
            ModelPlugin | ModelLoss | ModelPostProcessor | ModelSummary | ModelMetric => {
                MODEL_GENES
            }
            CoordinatorCallback => CALLBACK_GENES,
            KpiPlugin | KpiAccumulator => KPI_GENES,
            DataReader | DataProcessor | Dataset | DataFeeder => DATA_PIPE_GENES,
        }
    }
}

/// The model's genes in run order: plugins, postprocessors, losses, metrics, summaries.
pub const MODEL_GENES: &[Kind] = &[
    Kind::ModelPlugin,
    Kind::ModelPostProcessor,
    Kind::ModelLoss,
    Kind::ModelMetric,
    Kind::ModelSummary,
];
/// The callbacks handler's one gene.
pub const CALLBACK_GENES: &[Kind] = &[Kind::CoordinatorCallback];
/// The KPI evaluator's genes in run order.
pub const KPI_GENES: &[Kind] = &[Kind::KpiPlugin, Kind::KpiAccumulator];
/// A data pipe's genes in run order.
pub const DATA_PIPE_GENES: &[Kind] = &[Kind::DataReader, Kind::DataProcessor];

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kind name that is not one of nc7's kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown nucleotide kind `{given}`{hint}; expected one of {expected}")]
pub struct UnknownKind {
    /// The name given.
    pub given: String,
    hint: String,
    expected: String,
}

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let names = Kind::ALL.map(Kind::name);
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownKind {
                given: s.to_owned(),
                hint: crate::suggest::hint(s, names),
                expected: crate::suggest::list(names),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::Kind::*;
    use super::*;

    /// spec §3: the allowed gene-to-gene dependencies, as a full table of every pair.
    #[test]
    fn dependency_matrix() {
        let table: &[(Kind, &[Kind])] = &[
            (ModelPlugin, &[ModelPlugin]),
            (ModelLoss, &[ModelPlugin, ModelLoss]),
            (ModelPostProcessor, &[ModelPlugin, ModelPostProcessor]),
            (
                ModelSummary,
                &[
                    ModelPlugin,
                    ModelLoss,
                    ModelPostProcessor,
                    ModelSummary,
                    ModelMetric,
                ],
            ),
            (ModelMetric, &[ModelPlugin, ModelLoss, ModelPostProcessor]),
            (CoordinatorCallback, &[CoordinatorCallback]),
            (KpiPlugin, &[KpiPlugin]),
            (KpiAccumulator, &[KpiPlugin, KpiAccumulator]),
            (DataReader, &[]),
            (DataProcessor, &[DataReader, DataProcessor]),
        ];
        for (kind, allowed) in table {
            for other in Kind::ALL {
                assert_eq!(
                    kind.allows_input_from(other),
                    allowed.contains(&other),
                    "{kind} <- {other}"
                );
            }
        }
        // The spec's examples.
        assert!(!ModelLoss.allows_input_from(ModelMetric));
        assert!(ModelSummary.allows_input_from(ModelLoss));
        assert!(!ModelPlugin.allows_input_from(ModelPostProcessor));
    }

    #[test]
    fn gene_order_respects_the_matrix() {
        // Every allowed dependency inside a handler points to the same or an earlier gene, so
        // running genes in order is a topological order.
        for genes in [MODEL_GENES, CALLBACK_GENES, KPI_GENES, DATA_PIPE_GENES] {
            for (i, kind) in genes.iter().enumerate() {
                for from in kind.may_take_from() {
                    if let Some(j) = genes.iter().position(|g| g == from) {
                        assert!(j <= i, "{kind} takes from later gene {from}");
                    }
                }
            }
        }
    }

    #[test]
    fn names_parse_with_did_you_mean() {
        for k in Kind::ALL {
            assert_eq!(k.name().parse::<Kind>().unwrap(), k);
        }
        let err = "ModelPlugn".parse::<Kind>().unwrap_err().to_string();
        assert!(err.contains("did you mean `ModelPlugin`"), "{err}");
        assert!(err.contains("`KpiAccumulator`"), "{err}");
    }
}
