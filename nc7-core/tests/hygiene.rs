//! The derives name everything by absolute path: shadowing the prelude cannot break them.
#![allow(dead_code, non_camel_case_types)]

use burn::backend::NdArray;
use burn::prelude::Backend;
use burn::tensor::Tensor;
use nc7_core::glue::At;
use nc7_core::nucleotide::ModelLoss;
use nc7_core::{BoxError, Build, Generated, Incoming, Keys, Mode, nucleotide};

struct Option;
struct Some;
struct None;
struct Result;
struct Ok;
struct Err;
struct Vec;
struct String;
struct Box;

#[derive(Incoming)]
struct In<B: Backend> {
    x: Tensor<B, 2>,
    maybe: core::option::Option<Tensor<B, 2>>,
    label: std::string::String,
}

#[derive(Generated)]
struct Out<B: Backend> {
    y: Tensor<B, 2>,
    all: std::vec::Vec<f64>,
}

/// A nucleotide declared under the shadowed prelude.
// A loss, not a plugin: plugins derive burn's `Module`, whose derive is not hygienic itself.
#[nucleotide(kind = ModelLoss)]
struct Shadowed;

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Config {}

impl<B: Backend> Build<B> for Shadowed {
    type Config = Config;
    type Input = In<B>;
    type Output = Out<B>;
    fn build(_: &Config, _: &B::Device) -> core::result::Result<Self, BoxError> {
        core::result::Result::Ok(Shadowed)
    }
}

impl<B: Backend> ModelLoss<B> for Shadowed {
    fn loss(&self, input: In<B>, _: Mode) -> Out<B> {
        Out {
            y: input.x,
            all: std::vec::Vec::new(),
        }
    }
}

#[test]
fn derives_survive_a_shadowed_prelude() {
    let device = Default::default();
    let out = Out::<NdArray> {
        y: Tensor::zeros([1, 1], &device),
        all: std::vec![1.0],
    };
    let n = out.into_nest();
    let back = Out::<NdArray>::from_nest(n, &At::nucleotide("h"));
    assert!(back.is_ok());
    assert_eq!(<In<NdArray> as Keys<NdArray>>::KEYS.len(), 3);
    assert!(
        nc7_core::Registry::global()
            .resolve("Shadowed", core::option::Option::None)
            .is_ok()
    );
}
