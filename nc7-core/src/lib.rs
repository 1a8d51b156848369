//! nc7-core: the runtime of nc7 (values, key mapping, DNA helix, genes), on burn.
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

extern crate self as nc7_core;

pub mod backend;
pub mod callbacks;
pub mod check;
pub mod cli;
pub mod common;
pub mod config;
pub mod coordinator;
pub mod data;
pub mod diagnostic;
pub mod dna;
pub mod export;
pub mod gene;
pub mod glue;
pub mod handler;
pub mod keys;
pub mod layers;
pub mod mapping;
pub mod memory;
pub mod model;
pub mod nest;
pub mod nucleotide;
pub mod optim;
pub mod plan;
pub mod prelude;
pub mod project;
pub mod registry;
pub mod runtime;
pub mod standard;
pub mod suggest;
pub mod tracking;

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
