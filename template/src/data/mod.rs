//! Data. The starter configs train on nc7's built-in `Shapes` data set (drawn on the fly, no
//! files). For your own images, write them as files and point a dataset at them:
//! `project/training/configs/_my_images_datasets.json` is a ready `datasets.json` for a folder
//! of PNG or JPEG images with JSON labels (and masks); rename it to `datasets.json`.
//! `cargo run -- write-shapes project/data/shapes` writes the shapes as such files to try it.
//!
//! Processors for data pipes (`DataPipe` in nc7) live here too.

use burn::prelude::Backend;
use burn::tensor::{Tensor, TensorData};
use nc7_core::nucleotide::DataProcessor;
use nc7_core::{BoxError, Build, Generated, nucleotide};
use serde::{Deserialize, Serialize};

/// An image.
#[derive(Generated)]
pub struct Image<B: Backend> {
    /// `[C, H, W]`.
    pub image: Tensor<B, 3>,
}

/// `Standardize`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StandardizeConfig {
    /// The mean of each channel.
    pub mean: Vec<f32>,
    /// The standard deviation of each channel.
    pub std: Vec<f32>,
}

/// Subtracts each channel's mean and divides by its standard deviation.
#[nucleotide(kind = DataProcessor)]
pub struct Standardize {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl<B: Backend> Build<B> for Standardize {
    type Config = StandardizeConfig;
    type Input = Image<B>;
    type Output = Image<B>;
    fn build(c: &StandardizeConfig, _: &B::Device) -> Result<Self, BoxError> {
        if c.mean.len() != c.std.len() || c.std.iter().any(|s| *s <= 0.0) {
            return Err("give one mean and one positive std per channel".into());
        }
        Ok(Standardize {
            mean: c.mean.clone(),
            std: c.std.clone(),
        })
    }
}

impl<B: Backend> DataProcessor<B> for Standardize {
    fn process(&mut self, input: Image<B>) -> Result<Image<B>, BoxError> {
        let [c, _, _] = input.image.dims();
        if c != self.mean.len() {
            return Err(
                format!("the image has {c} channels, the config {}", self.mean.len()).into(),
            );
        }
        let device = input.image.device();
        let column =
            |v: &[f32]| Tensor::<B, 3>::from_data(TensorData::new(v.to_vec(), [c, 1, 1]), &device);
        Ok(Image {
            image: (input.image - column(&self.mean)) / column(&self.std),
        })
    }
}
