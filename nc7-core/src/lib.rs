//! nc7-core: the runtime of nc7 (values, key mapping, DNA helix, genes), on burn.
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

extern crate self as nc7_core;

pub mod config;
pub mod data;
pub mod graph;
pub mod nucleotide;
pub mod prelude;
pub mod run;
pub mod tracking;

// Each module also by its short path (`nc7_core::nest`, `nc7_core::plan`, ...).
pub use config::check;
pub use graph::{diagnostic, dna, gene, glue, handler, keys, mapping, nest, suggest};
pub use nucleotide::{common, layers, registry, runtime, standard};
pub use run::{
    backend, cli, coordinator, environment, export, failure, integrity, kpi, memory, model, optim,
    plan, precision, project, signals, threads,
};
pub use tracking::callbacks;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use common::CommonConfig;
pub use diagnostic::{Code, Diagnostic, Diagnostics, Severity};
pub use dna::{Helix, NodeSpec};
pub use gene::Kind;
pub use glue::{AnyValue, Field, Generated, GlueError, Incoming, Keys, NoKeys};
pub use handler::{BoxError, GeneHandler, Outputs, RunError};
pub use keys::{KeySpec, Signature, ValueKind};
pub use mapping::{KeysMapping, MappingError, RoutePlan};
pub use nc7_macros::{Generated, Incoming, nucleotide};
pub use nest::{AnyTensor, Nest, NestError, TensorDtype};
pub use nucleotide::{Build, Mode, NoConfig, Nucleotide, NucleotideConfig};
pub use registry::{Registry, RegistryError};
