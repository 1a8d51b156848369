//! A small CNN: conv blocks with max-pooling, global average pooling and a linear head.

use burn::module::Module;

use burn::nn::{Linear, LinearConfig};
use burn::prelude::Backend;
use burn::tensor::Tensor;
use nc7_core::nucleotide::ModelPlugin;
use nc7_core::{BoxError, Build, Generated, Incoming, Mode, nucleotide};
use serde::{Deserialize, Serialize};

use crate::layers::{ConvBlock, MaxPool2d};

/// Images in.
#[derive(Incoming)]
pub struct Images<B: Backend> {
    /// `[N, 3, H, W]` in [0, 1].
    pub image: Tensor<B, 4>,
}

/// Class scores out.
#[derive(Generated)]
pub struct Logits<B: Backend> {
    /// `[N, classes]`.
    pub logits: Tensor<B, 2>,
}

/// `Classifier`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Channels of each conv block (each halves the size).
    #[serde(default = "filters")]
    pub filters: Vec<usize>,
    /// Classes.
    #[serde(default = "three")]
    pub classes: usize,
}

fn filters() -> Vec<usize> {
    vec![8, 16, 16]
}

fn three() -> usize {
    3
}

/// Conv blocks with 2×2 max-pooling, global average pooling and a linear head.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    blocks: Vec<ConvBlock<B>>,
    pool: MaxPool2d,
    head: Linear<B>,
}

impl<B: Backend> Build<B> for Classifier<B> {
    type Config = ClassifierConfig;
    type Input = Images<B>;
    type Output = Logits<B>;
    fn build(c: &ClassifierConfig, device: &B::Device) -> Result<Self, BoxError> {
        if c.filters.is_empty() || c.classes < 2 {
            return Err("a classifier needs at least one conv block and two classes".into());
        }
        let mut input = 3;
        let blocks = c
            .filters
            .iter()
            .map(|&f| {
                let block = ConvBlock::new(input, f, device);
                input = f;
                block
            })
            .collect();
        Ok(Classifier {
            blocks,
            pool: MaxPool2d::new([2, 2]),
            head: LinearConfig::new(input, c.classes).init(device),
        })
    }
}

impl<B: Backend> ModelPlugin<B> for Classifier<B> {
    fn forward(&self, input: Images<B>, _: Mode) -> Logits<B> {
        let mut x = input.image;
        for block in &self.blocks {
            x = self.pool.forward(block.forward(x));
        }
        let [n, c, h, w] = x.dims();
        let pooled = x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c]);
        Logits {
            logits: self.head.forward(pooled),
        }
    }
}
