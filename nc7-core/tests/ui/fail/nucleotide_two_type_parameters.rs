use burn::prelude::Backend;
use nc7_core::nucleotide;

#[nucleotide(kind = ModelPlugin)]
pub struct Net<B: Backend, T> {
    a: std::marker::PhantomData<(B, T)>,
}

fn main() {}
