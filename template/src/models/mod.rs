//! The models, as nc7 model plugins: a small CNN classifier and a UNet for segmentation.

mod classifier;
mod unet;

pub use classifier::{Classifier, ClassifierConfig, Images, Logits};
pub use unet::{PixelLogits, UNet, UNetConfig};

/// The post-processors, nc7's standard ones: the class with the highest score per image
/// (`ArgMax`) or per pixel (`PixelArgMax`).
pub use nc7_core::standard::{ArgMax, PixelArgMax};
