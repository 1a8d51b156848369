use burn::prelude::Backend;
use nc7_core::{BoxError, Build, NoKeys, nucleotide};

/// Declared a loss, but only `Build` is implemented.
#[nucleotide(kind = ModelLoss)]
pub struct Loss;

impl<B: Backend> Build<B> for Loss {
    type Config = Config;
    type Input = NoKeys;
    type Output = NoKeys;
    fn build(_: &Config, _: &B::Device) -> Result<Self, BoxError> {
        Ok(Loss)
    }
}

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Config {}

fn main() {}
