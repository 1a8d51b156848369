//! Losses. nc7's standard `CrossEntropy` (per image), `PixelCrossEntropy` (per pixel) and
//! `CenterLoss` (centre-point detection) cover the starter tasks and are registered by nc7
//! itself; they are re-exported here for the model tests. A loss of your own goes in this file: a `#[nucleotide(kind = ModelLoss)]`
//! struct with `Build` and `ModelLoss` implementations, named in `project/training/configs/losses/`.

pub use nc7_core::standard::center::{CenterLoss, CenterLossIn};
pub use nc7_core::standard::{CrossEntropy, Loss, PixelCrossEntropy, ScoredImages, ScoredPixels};
