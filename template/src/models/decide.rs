//! Post-processors: the class with the highest score, per image or per pixel.

use burn::prelude::Backend;
use burn::tensor::{Int, Tensor};
use nc7_core::nucleotide::ModelPostProcessor;
use nc7_core::{BoxError, Build, Generated, Incoming, Mode, nucleotide};

use super::classifier::Logits;
use crate::losses::NoConfig;

/// The predicted class of each image.
#[derive(Generated)]
pub struct Classes<B: Backend> {
    /// `[N]`.
    pub class: Tensor<B, 1, Int>,
}

/// Per-pixel scores in.
#[derive(Incoming)]
pub struct PixelScores<B: Backend> {
    /// `[N, classes, H, W]`.
    pub logits: Tensor<B, 4>,
}

/// The predicted class of each pixel.
#[derive(Generated)]
pub struct PixelClasses<B: Backend> {
    /// `[N, H, W]`.
    pub predicted_mask: Tensor<B, 3, Int>,
}

/// The class with the highest score.
#[nucleotide(kind = ModelPostProcessor)]
pub struct ArgMax;

impl<B: Backend> Build<B> for ArgMax {
    type Config = NoConfig;
    type Input = Logits<B>;
    type Output = Classes<B>;
    fn build(_: &NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(ArgMax)
    }
}

impl<B: Backend> ModelPostProcessor<B> for ArgMax {
    fn process(&self, input: Logits<B>, _: Mode) -> Classes<B> {
        Classes {
            class: input.logits.argmax(1).squeeze_dim(1),
        }
    }
}

/// The class with the highest score, per pixel.
#[nucleotide(kind = ModelPostProcessor)]
pub struct PixelArgMax;

impl<B: Backend> Build<B> for PixelArgMax {
    type Config = NoConfig;
    type Input = PixelScores<B>;
    type Output = PixelClasses<B>;
    fn build(_: &NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(PixelArgMax)
    }
}

impl<B: Backend> ModelPostProcessor<B> for PixelArgMax {
    fn process(&self, input: PixelScores<B>, _: Mode) -> PixelClasses<B> {
        PixelClasses {
            predicted_mask: input.logits.argmax(1).squeeze_dim(1),
        }
    }
}
