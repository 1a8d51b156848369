//! The nucleotides of the shapes UNet: an encoder built like the shapes classifier's
//! convolutions (so it can start from a trained classifier) and a decoder with skip
//! connections. Its loss, metric and post-processor are nc7's standard `PixelCrossEntropy`,
//! `MeanIou` and `PixelArgMax`; the data come from nc7's built-in `Shapes` data set (`mask`:
//! 0 background, 1 + class).

use burn::tensor::activation::relu;
use nc7_core::layers::{Conv2d, Conv2dConfig, MaxPool2d, upsample2};
use nc7_core::prelude::*;
use serde::{Deserialize, Serialize};
use shapes_classifier::{Images, conv_layers};

/// The encoder's features at each level.
#[derive(Generated)]
pub struct Features<B: Backend> {
    /// `[N, filters[0], H, W]`.
    pub level0: Tensor<B, 4>,
    /// `[N, filters[1], H/2, W/2]`.
    pub level1: Tensor<B, 4>,
    /// `[N, filters[2], H/4, W/4]`.
    pub level2: Tensor<B, 4>,
    /// `[N, filters[2], H/8, W/8]`.
    pub deepest: Tensor<B, 4>,
}

/// The features the decoder reads: the encoder's, or any with the same keys and sizes.
#[derive(Incoming)]
pub struct Skips<B: Backend> {
    /// `[N, skips[0], H, W]`.
    pub level0: Tensor<B, 4>,
    /// `[N, skips[1], H/2, W/2]`.
    pub level1: Tensor<B, 4>,
    /// `[N, skips[2], H/4, W/4]`.
    pub level2: Tensor<B, 4>,
    /// `[N, skips[2], H/8, W/8]`.
    pub deepest: Tensor<B, 4>,
}

/// Class scores per pixel.
#[derive(Generated)]
pub struct PixelLogits<B: Backend> {
    /// `[N, classes, H, W]`.
    pub logits: Tensor<B, 4>,
}

/// `ShapesEncoder`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// Channels of the three convolutions; the classifier's to load its weights.
    #[serde(default = "encoder_filters")]
    pub filters: [usize; 3],
}

fn encoder_filters() -> [usize; 3] {
    [8, 16, 16]
}

/// Three blocks of 3×3 convolution, ReLU and 2×2 max-pooling, laid out like `ShapesCnn`'s: its
/// `convs` load from a trained classifier by nucleotide name. The image side must divide by 8.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct ShapesEncoder<B: Backend> {
    convs: Vec<Conv2d<B>>,
    pool: MaxPool2d,
}

impl<B: Backend> Build<B> for ShapesEncoder<B> {
    type Config = EncoderConfig;
    type Input = Images<B>;
    type Output = Features<B>;
    fn build(c: &EncoderConfig, device: &B::Device) -> Result<Self, BoxError> {
        Ok(ShapesEncoder {
            convs: conv_layers(&c.filters, device),
            pool: pool(),
        })
    }
}

fn pool() -> MaxPool2d {
    MaxPool2d::new([2, 2])
}

impl<B: Backend> ModelPlugin<B> for ShapesEncoder<B> {
    fn forward(&self, input: Images<B>, _: Mode) -> Features<B> {
        let level0 = relu(self.convs[0].forward(input.image));
        let level1 = relu(self.convs[1].forward(self.pool.forward(level0.clone())));
        let level2 = relu(self.convs[2].forward(self.pool.forward(level1.clone())));
        let deepest = self.pool.forward(level2.clone());
        Features {
            level0,
            level1,
            level2,
            deepest,
        }
    }
}

/// `ShapesDecoder`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    /// The encoder's `filters`: the channels of the skip connections.
    #[serde(default = "encoder_filters")]
    pub skips: [usize; 3],
    /// Channels of the bottleneck convolution and of the decoder's blocks at levels 2, 1
    /// and 0.
    #[serde(default = "decoder_filters")]
    pub filters: [usize; 4],
    /// Classes, background included.
    #[serde(default = "four")]
    pub classes: usize,
}

fn decoder_filters() -> [usize; 4] {
    [32, 32, 16, 16]
}

fn four() -> usize {
    4
}

/// A 3×3 convolution, the size kept.
fn conv3<B: Backend>(input: usize, output: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([input, output], [3, 3]).init(device)
}

/// A bottleneck convolution on the deepest features, then three times: up-sample by two,
/// join the skip connection of that level, 3×3 convolution and ReLU; a 1×1 convolution
/// gives the class scores of every pixel.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct ShapesDecoder<B: Backend> {
    bottleneck: Conv2d<B>,
    blocks: Vec<Conv2d<B>>,
    head: Conv2d<B>,
}

impl<B: Backend> Build<B> for ShapesDecoder<B> {
    type Config = DecoderConfig;
    type Input = Skips<B>;
    type Output = PixelLogits<B>;
    fn build(c: &DecoderConfig, device: &B::Device) -> Result<Self, BoxError> {
        if c.classes < 2 {
            return Err(format!(
                "classes is {}; a segmentation needs at least two (background included)",
                c.classes
            )
            .into());
        }
        let mut channels = c.filters[0];
        let mut blocks = Vec::new();
        for (&skip, &out) in c.skips.iter().rev().zip(&c.filters[1..]) {
            blocks.push(conv3(channels + skip, out, device));
            channels = out;
        }
        Ok(ShapesDecoder {
            bottleneck: conv3(c.skips[2], c.filters[0], device),
            blocks,
            head: Conv2dConfig::new([channels, c.classes], [1, 1]).init(device),
        })
    }
}

impl<B: Backend> ModelPlugin<B> for ShapesDecoder<B> {
    fn forward(&self, input: Skips<B>, _: Mode) -> PixelLogits<B> {
        let mut x = relu(self.bottleneck.forward(input.deepest));
        for (block, skip) in self
            .blocks
            .iter()
            .zip([input.level2, input.level1, input.level0])
        {
            x = relu(block.forward(Tensor::cat(vec![upsample2(x), skip], 1)));
        }
        PixelLogits {
            logits: self.head.forward(x),
        }
    }
}
