//! Data for coordinators: which samples make each batch, in a seeded order that a resumed run
//! reproduces exactly.

pub mod order;

pub use order::{BatchOrder, DataPosition};
