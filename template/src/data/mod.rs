//! Data. The starter configs train on nc7's built-in `Shapes` data set (drawn on the fly, no
//! files), wrapped in a `ProcessedDataset` whose processors augment the training images
//! (`Augment`) and standardise every image (`Standardize`, the preprocessing the backbone
//! expects){% if task == "detection" %}, then make the head's targets from the boxes (`CenterTargets`){% endif %}. For your own images, write them as files and point a data set at
//! them: `project/training/configs/_my_images_datasets.json` is a ready `datasets.json` for a
//! folder of PNG or JPEG images with JSON labels (and masks); rename it to `datasets.json`.
//! `cargo run -- write-shapes project/data/shapes` writes the shapes as such files to try it.
//!
//! A data processor of your own goes here: a `#[nucleotide(kind = DataProcessor)]` struct with
//! `Build` and `DataProcessor` implementations, named in the `processors` of a data config.

pub use nc7_core::data::{Augment, ProcessedDataset, Standardize};
