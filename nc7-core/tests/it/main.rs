//! nc7-core's integration tests, in one binary (one link, one process): values and glue,
//! nucleotides and the registry, projects and their checks, the trainer, the inferer, data
//! files, and the formats other tools read. Tests that train hold `support::serial()`.

#[macro_use]
mod support;

/// The benchmarks' models and projects (`benches/` includes the same files).
#[path = "../models/inferer.rs"]
mod inferer_models;
#[path = "../models/parity.rs"]
mod parity_models;

mod benches;
mod data;
mod derives;
mod glue;
mod inferer;
mod kpi;
mod nucleotide;
mod project;
mod tensorboard;
mod trainer;
mod vision;
