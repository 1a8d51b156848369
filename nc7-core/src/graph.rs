//! The graph: values between nucleotides, key signatures and mapping, the DNA helix, genes and
//! gene handlers, and the problems found in them.

pub mod diagnostic;
pub mod dna;
pub mod gene;
pub mod glue;
pub mod handler;
pub mod keys;
pub mod mapping;
pub mod nest;
pub mod suggest;
