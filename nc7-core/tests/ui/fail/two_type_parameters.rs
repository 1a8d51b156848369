use burn::prelude::Backend;
use nc7_core::Incoming;

#[derive(Incoming)]
struct In<B: Backend, T> {
    x: burn::tensor::Tensor<B, 1>,
    t: T,
}

fn main() {}
