//! Building blocks the models share.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::Backend;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

/// A 3×3 convolution and a ReLU; the size is kept.
#[derive(Module, Debug)]
pub struct ConvBlock<B: Backend> {
    conv: Conv2d<B>,
}

impl<B: Backend> ConvBlock<B> {
    /// A block from `input` to `output` channels.
    pub fn new(input: usize, output: usize, device: &B::Device) -> Self {
        ConvBlock {
            conv: Conv2dConfig::new([input, output], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
        }
    }

    /// `[N, input, H, W]` → `[N, output, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        relu(self.conv.forward(x))
    }
}
