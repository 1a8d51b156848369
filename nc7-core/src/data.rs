//! Data for coordinators: which samples make each batch, in a seeded order that a resumed run
//! reproduces exactly, and how samples are stacked into batches and read ahead.

pub mod batch;
pub mod order;

pub use batch::{BatchError, collate, for_each_batch, stack};
pub use order::{BatchOrder, DataPosition};
