//! Nucleotides: the traits a nucleotide implements (`Build` and one per kind), the registry
//! that finds a type by its class name, the common config fields, nucleotides built at run
//! time on any backend, the standard nucleotides and layers.

mod kinds;

pub mod common;
pub mod layers;
pub mod part;
pub mod registry;
pub mod runtime;
pub mod standard;

pub use kinds::*;
