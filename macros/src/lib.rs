//! nc7's derive and attribute macros. Use them through `nc7-core`, which re-exports them and
//! holds every trait and type the generated code names.
//!
//! The macros only parse, validate and emit: each error sits on the offending token and says
//! the fix, and all errors of one item are reported together.

mod keys;
mod nucleotide;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Declares a struct's fields as a nucleotide's incoming keys, one key per field.
///
/// A field's type says what the key holds: `Tensor<B, 4>` a float tensor of rank 4,
/// `Option<T>` an optional key, a struct deriving `Incoming` nested keys (`features:low`),
/// `Nest<B>` every key no other field takes. `#[nc7(rename = "...")]` names a key that is not a
/// Rust identifier; doc comments become the keys' docs.
#[proc_macro_derive(Incoming, attributes(nc7))]
pub fn derive_incoming(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    keys::expand(input, keys::Side::Incoming)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Declares a struct's fields as a nucleotide's generated keys, one key per field; the same
/// field types and attributes as `Incoming`.
#[proc_macro_derive(Generated, attributes(nc7))]
pub fn derive_generated(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    keys::expand(input, keys::Side::Generated)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Makes a type a nucleotide of a kind: `#[nucleotide(kind = ModelPlugin)]`.
///
/// The type implements `Build<B>` (its config and key structs) and the kind's trait
/// (`ModelPlugin<B>`, `ModelLoss<B>`, ...); the attribute checks that, records the class name,
/// path, kind and doc comment as constants, and registers the type at link time so a config's
/// `class_name` finds it. `name = "..."` sets another class name, `docs = "..."` other docs.
/// Model plugins are also burn modules (`#[derive(Module, Debug)]`): their parameters are
/// what the trainer trains and saves.
///
/// ```
/// use burn::module::Param;
/// use burn::prelude::*;
/// use nc7_core::nucleotide::ModelPlugin;
/// use nc7_core::{BoxError, Build, Generated, Incoming, Mode, Registry, nucleotide};
///
/// /// Turns features into class logits.
/// #[nucleotide(kind = ModelPlugin)]
/// #[derive(Module, Debug)]
/// pub struct Head<B: Backend> {
///     weights: Param<Tensor<B, 2>>,
/// }
///
/// #[derive(Incoming)]
/// pub struct HeadIn<B: Backend> {
///     /// Features, one row per sample.
///     features: Tensor<B, 2>,
/// }
///
/// #[derive(Generated)]
/// pub struct HeadOut<B: Backend> {
///     /// Class logits.
///     logits: Tensor<B, 2>,
/// }
///
/// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
/// pub struct HeadConfig {
///     inputs: usize,
///     classes: usize,
/// }
///
/// impl<B: Backend> Build<B> for Head<B> {
///     type Config = HeadConfig;
///     type Input = HeadIn<B>;
///     type Output = HeadOut<B>;
///     fn build(c: &HeadConfig, device: &B::Device) -> Result<Self, BoxError> {
///         Ok(Head { weights: Param::from_tensor(Tensor::zeros([c.inputs, c.classes], device)) })
///     }
/// }
///
/// impl<B: Backend> ModelPlugin<B> for Head<B> {
///     fn forward(&self, input: HeadIn<B>, _mode: Mode) -> HeadOut<B> {
///         HeadOut { logits: input.features.matmul(self.weights.val()) }
///     }
/// }
///
/// let info = Registry::global().info("Head").unwrap();
/// assert!(info.contains("features: float tensor of rank 2 — Features, one row per sample."));
/// ```
///
/// The classic mistake, declaring a kind without implementing its trait, does not compile;
/// the error sits on `kind = ModelPlugin`:
///
/// ```compile_fail
/// use burn::prelude::*;
/// use nc7_core::{BoxError, Build, NoKeys, nucleotide};
///
/// #[nucleotide(kind = ModelPlugin)]
/// pub struct Forgotten;
///
/// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
/// pub struct Config {}
///
/// impl<B: Backend> Build<B> for Forgotten {
///     type Config = Config;
///     type Input = NoKeys;
///     type Output = NoKeys;
///     fn build(_: &Config, _: &B::Device) -> Result<Self, BoxError> {
///         Ok(Forgotten)
///     }
/// }
/// // Missing: impl<B: Backend> ModelPlugin<B> for Forgotten { ... }
/// ```
#[proc_macro_attribute]
pub fn nucleotide(args: TokenStream, item: TokenStream) -> TokenStream {
    nucleotide::expand(args.into(), item.clone().into())
        .unwrap_or_else(|e| {
            // Keep the item so that one mistake in the attribute does not cascade into errors
            // everywhere the type is used.
            let mut out: proc_macro2::TokenStream = item.into();
            out.extend(e.into_compile_error());
            out
        })
        .into()
}
