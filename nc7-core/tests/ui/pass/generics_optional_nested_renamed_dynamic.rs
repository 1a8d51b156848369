use burn::prelude::Backend;
use burn::tensor::{Bool, Int, Tensor};
use nc7_core::{Generated, Incoming, Nest};

#[derive(Generated)]
pub struct Pyramid<B: Backend> {
    pub low: Tensor<B, 4>,
    pub high: Option<Tensor<B, 4>>,
}

#[derive(Incoming)]
pub struct In<B: Backend> {
    /// Images.
    pub images: Tensor<B, 4>,
    pub mask: Option<Tensor<B, 4, Bool>>,
    #[nc7(rename = "class-ids")]
    pub labels: Tensor<B, 1, Int>,
    pub rest: Nest<B>,
}

#[derive(Generated)]
pub struct Out<B>
where
    B: Backend,
{
    pub logits: Tensor<B, 2>,
    pub features: Pyramid<B>,
    pub names: Vec<String>,
}

fn main() {}
