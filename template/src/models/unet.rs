//! A UNet: an encoder of conv blocks and max-pooling, a decoder of up-sampling, skip
//! connections and conv blocks, and a 1×1 convolution to class scores per pixel.

use burn::module::Module;

use burn::prelude::Backend;
use burn::tensor::Tensor;
use nc7_core::nucleotide::ModelPlugin;
use nc7_core::{BoxError, Build, Generated, Mode, nucleotide};
use serde::{Deserialize, Serialize};

use super::classifier::Images;
use nc7_core::layers::{Conv2d, Conv2dConfig, MaxPool2d};

use crate::layers::{ConvBlock, upsample2};

/// Class scores per pixel.
#[derive(Generated)]
pub struct PixelLogits<B: Backend> {
    /// `[N, classes, H, W]`.
    pub logits: Tensor<B, 4>,
}

/// `UNet`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Channels of each encoder level; the image side must divide by 2 for each level but the
    /// last.
    #[serde(default = "filters")]
    pub filters: Vec<usize>,
    /// Classes, background included.
    #[serde(default = "four")]
    pub classes: usize,
}

fn filters() -> Vec<usize> {
    vec![8, 16, 32]
}

fn four() -> usize {
    4
}

/// The UNet.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct UNet<B: Backend> {
    encoder: Vec<ConvBlock<B>>,
    pool: MaxPool2d,
    decoder: Vec<ConvBlock<B>>,
    head: Conv2d<B>,
}

impl<B: Backend> Build<B> for UNet<B> {
    type Config = UNetConfig;
    type Input = Images<B>;
    type Output = PixelLogits<B>;
    fn build(c: &UNetConfig, device: &B::Device) -> Result<Self, BoxError> {
        if c.filters.len() < 2 || c.classes < 2 {
            return Err("a UNet needs at least two levels and two classes".into());
        }
        let mut input = 3;
        let mut encoder = Vec::new();
        for &f in &c.filters {
            encoder.push(ConvBlock::new(input, f, device));
            input = f;
        }
        let mut decoder = Vec::new();
        for pair in c.filters.windows(2).rev() {
            let (skip, deep) = (pair[0], pair[1]);
            decoder.push(ConvBlock::new(deep + skip, skip, device));
        }
        Ok(UNet {
            encoder,
            pool: MaxPool2d::new([2, 2]),
            decoder,
            head: Conv2dConfig::new([c.filters[0], c.classes], [1, 1]).init(device),
        })
    }
}

impl<B: Backend> ModelPlugin<B> for UNet<B> {
    fn forward(&self, input: Images<B>, _: Mode) -> PixelLogits<B> {
        let mut skips = Vec::new();
        let mut x = input.image;
        let last = self.encoder.len() - 1;
        for (i, block) in self.encoder.iter().enumerate() {
            x = block.forward(x);
            if i < last {
                skips.push(x.clone());
                x = self.pool.forward(x);
            }
        }
        for block in &self.decoder {
            let skip = skips.pop().expect("one skip per level");
            x = block.forward(Tensor::cat(vec![upsample2(x), skip], 1));
        }
        PixelLogits {
            logits: self.head.forward(x),
        }
    }
}
