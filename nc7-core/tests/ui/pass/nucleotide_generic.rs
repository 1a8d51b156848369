use std::marker::PhantomData;

use burn::prelude::Backend;
use burn::tensor::Tensor;
use nc7_core::nucleotide::ModelPlugin;
use nc7_core::{BoxError, Build, Generated, Incoming, Mode, Nucleotide, nucleotide};

/// Doubles its input.
#[nucleotide(kind = ModelPlugin, name = "Twice")]
#[derive(burn::module::Module, Debug)]
pub struct Double<B: Backend> {
    _b: PhantomData<B>,
}

#[derive(Incoming)]
pub struct In<B: Backend> {
    x: Tensor<B, 1>,
}

#[derive(Generated)]
pub struct Out<B: Backend> {
    y: Tensor<B, 1>,
}

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Default)]
pub struct Config {}

impl<B: Backend> Build<B> for Double<B> {
    type Config = Config;
    type Input = In<B>;
    type Output = Out<B>;
    fn build(_: &Config, _: &B::Device) -> Result<Self, BoxError> {
        Ok(Double { _b: PhantomData })
    }
}

impl<B: Backend> ModelPlugin<B> for Double<B> {
    fn forward(&self, input: In<B>, _: Mode) -> Out<B> {
        Out { y: input.x * 2.0 }
    }
}

fn main() {
    assert_eq!(<Double<burn::backend::NdArray> as Nucleotide>::CLASS_NAME, "Twice");
}
