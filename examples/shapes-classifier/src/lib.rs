//! The nucleotides of the shapes classifier: a small CNN (`ShapesCnn`). Its loss, metric and
//! post-processor are nc7's standard `CrossEntropy`, `Accuracy` and `ArgMax`, and the data
//! come from nc7's built-in `Shapes` data set.

use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use nc7_core::layers::{Conv2d, Conv2dConfig, MaxPool2d};
use nc7_core::prelude::*;
use serde::{Deserialize, Serialize};

/// Images in, one row of class scores per image out.
#[derive(Incoming)]
pub struct Images<B: Backend> {
    /// `[N, 3, H, W]` in [0, 1].
    pub image: Tensor<B, 4>,
}

/// Class scores.
#[derive(Generated)]
pub struct Logits<B: Backend> {
    /// `[N, classes]`.
    pub logits: Tensor<B, 2>,
}

/// `ShapesCnn`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShapesCnnConfig {
    /// Channels of the three convolution blocks.
    #[serde(default = "filters")]
    pub filters: [usize; 3],
    /// Classes.
    #[serde(default = "three")]
    pub classes: usize,
}

fn filters() -> [usize; 3] {
    [8, 16, 16]
}

fn three() -> usize {
    3
}

/// Three blocks of 3×3 convolution, ReLU and 2×2 max-pooling, global average pooling and a
/// linear layer.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct ShapesCnn<B: Backend> {
    convs: Vec<Conv2d<B>>,
    pool: MaxPool2d,
    head: Linear<B>,
}

impl<B: Backend> Build<B> for ShapesCnn<B> {
    type Config = ShapesCnnConfig;
    type Input = Images<B>;
    type Output = Logits<B>;
    fn build(c: &ShapesCnnConfig, device: &B::Device) -> Result<Self, BoxError> {
        Ok(ShapesCnn {
            convs: conv_layers(&c.filters, device),
            pool: MaxPool2d::new([2, 2]),
            head: LinearConfig::new(c.filters[2], c.classes).init(device),
        })
    }
}

/// The classifier's convolutions: 3×3, the size kept, from 3 channels through `filters`
/// (nc7's im2col convolution: several times faster to train on the CPU than burn's).
/// Another model that builds its layers with this function, in a field named `convs`, can
/// start from a trained classifier's weights (`load_config`).
pub fn conv_layers<B: Backend>(filters: &[usize], device: &B::Device) -> Vec<Conv2d<B>> {
    let mut channels = 3;
    filters
        .iter()
        .map(|&f| {
            let conv = Conv2dConfig::new([channels, f], [3, 3]).init(device);
            channels = f;
            conv
        })
        .collect()
}

impl<B: Backend> ModelPlugin<B> for ShapesCnn<B> {
    fn forward(&self, input: Images<B>, _: Mode) -> Logits<B> {
        let mut x = input.image;
        for conv in &self.convs {
            x = self.pool.forward(relu(conv.forward(x)));
        }
        let [n, c, h, w] = x.dims();
        let pooled = x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c]);
        Logits {
            logits: self.head.forward(pooled),
        }
    }
}
