//! Losses: cross-entropy over classes, per image or per pixel.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::Backend;
use burn::tensor::{Int, Tensor};
use nc7_core::nucleotide::ModelLoss;
use nc7_core::{BoxError, Build, Generated, Incoming, Mode, nucleotide};
use serde::{Deserialize, Serialize};

/// An empty config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// A loss value.
#[derive(Generated)]
pub struct Loss<B: Backend> {
    /// The mean cross-entropy.
    pub loss: Tensor<B, 1>,
}

/// Class scores and true classes, per image.
#[derive(Incoming)]
pub struct ScoredImages<B: Backend> {
    /// `[N, classes]`.
    pub logits: Tensor<B, 2>,
    /// `[N, 1]`.
    pub label: Tensor<B, 2, Int>,
}

/// Class scores and true classes, per pixel.
#[derive(Incoming)]
pub struct ScoredPixels<B: Backend> {
    /// `[N, classes, H, W]`.
    pub logits: Tensor<B, 4>,
    /// `[N, H, W]`.
    pub mask: Tensor<B, 3, Int>,
}

/// The mean cross-entropy of image class scores.
#[nucleotide(kind = ModelLoss)]
pub struct CrossEntropy;

impl<B: Backend> Build<B> for CrossEntropy {
    type Config = NoConfig;
    type Input = ScoredImages<B>;
    type Output = Loss<B>;
    fn build(_: &NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(CrossEntropy)
    }
}

impl<B: Backend> ModelLoss<B> for CrossEntropy {
    fn loss(&self, input: ScoredImages<B>, _: Mode) -> Loss<B> {
        let loss = CrossEntropyLossConfig::new()
            .init(&input.logits.device())
            .forward(input.logits, input.label.squeeze_dim(1));
        Loss {
            loss: loss.reshape([1]),
        }
    }
}

/// The mean cross-entropy of pixel class scores.
#[nucleotide(kind = ModelLoss)]
pub struct PixelCrossEntropy;

impl<B: Backend> Build<B> for PixelCrossEntropy {
    type Config = NoConfig;
    type Input = ScoredPixels<B>;
    type Output = Loss<B>;
    fn build(_: &NoConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(PixelCrossEntropy)
    }
}

/// `[N, C, H, W]` scores as `[N·H·W, C]` rows.
pub fn pixel_rows<B: Backend>(logits: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, c, h, w] = logits.dims();
    logits.permute([0, 2, 3, 1]).reshape([n * h * w, c])
}

impl<B: Backend> ModelLoss<B> for PixelCrossEntropy {
    fn loss(&self, input: ScoredPixels<B>, _: Mode) -> Loss<B> {
        let [n, h, w] = input.mask.dims();
        let loss = CrossEntropyLossConfig::new()
            .init(&input.logits.device())
            .forward(pixel_rows(input.logits), input.mask.reshape([n * h * w]));
        Loss {
            loss: loss.reshape([1]),
        }
    }
}
