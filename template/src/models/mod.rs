//! The models, as nc7 model plugins: a small CNN classifier and a UNet for segmentation.

mod classifier;
mod unet;

pub use classifier::{Classifier, ClassifierConfig, Images, Logits};
pub use unet::{PixelLogits, UNet, UNetConfig};

mod decide;
pub use decide::{ArgMax, PixelArgMax};
