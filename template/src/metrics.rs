//! Metrics. nc7's standard `Accuracy` (classification) and `MeanIou` (segmentation) are
//! registered by nc7 itself and named in `project/training/configs/metrics/`. A metric of your
//! own goes in this file: a `#[nucleotide(kind = ModelMetric)]` struct with `Build` and
//! `ModelMetric` implementations.

pub use nc7_core::standard::{Accuracy, MeanIou};
