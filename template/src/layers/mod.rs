//! Building blocks the models share.

use burn::module::Module;
use burn::prelude::Backend;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
// nc7's convolution trains several times faster on the CPU than burn's; same parameters.
pub use nc7_core::layers::upsample2;
use nc7_core::layers::{Conv2d, Conv2dConfig};

/// A 3×3 convolution and a ReLU; the size is kept.
#[derive(Module, Debug)]
pub struct ConvBlock<B: Backend> {
    conv: Conv2d<B>,
}

impl<B: Backend> ConvBlock<B> {
    /// A block from `input` to `output` channels.
    pub fn new(input: usize, output: usize, device: &B::Device) -> Self {
        ConvBlock {
            conv: Conv2dConfig::new([input, output], [3, 3]).init(device),
        }
    }

    /// `[N, input, H, W]` → `[N, output, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        relu(self.conv.forward(x))
    }
}
