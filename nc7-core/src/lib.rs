//! nc7: nucleus7's way of building deep-learning projects, on burn.
#![warn(missing_docs)]

extern crate self as nc7_core;

pub mod keys;
pub mod mapping;
pub mod nest;
pub mod suggest;

pub use keys::{KeySpec, Signature, ValueKind};
pub use mapping::{KeysMapping, MappingError, RoutePlan};
pub use nest::{AnyTensor, Nest, NestError, TensorDtype};
