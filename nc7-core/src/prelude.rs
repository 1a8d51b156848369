//! What a nucleotide author needs, in one import: `use nc7_core::prelude::*;`.
//!
//! The macro and derives, the `Build` trait and the kind traits (one per kind of nucleotide),
//! the run mode, the error type, the empty config and key set, the value type and burn's
//! backend and tensor types.

pub use crate::glue::NoKeys;
pub use crate::handler::BoxError;
pub use crate::nest::Nest;
pub use crate::nucleotide::{
    Build, CallbackContext, CoordinatorCallback, DataFeeder, DataProcessor, DataReader, Dataset,
    KpiAccumulator, KpiPlugin, Mode, ModelLoss, ModelMetric, ModelPlugin, ModelPostProcessor,
    ModelSummary, NoConfig, RunEnd, RunOutcome,
};
pub use nc7_macros::{Generated, Incoming, nucleotide};

pub use burn::prelude::{Backend, Module, Tensor};
pub use burn::tensor::{Bool, Int};
