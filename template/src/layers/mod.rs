//! Building blocks the models share. nc7's convolution trains several times faster on the CPU
//! than burn's, with the same parameters; `ConvBlock` is a 3×3 convolution and a ReLU.

pub use nc7_core::layers::{ConvBlock, MaxPool2d, upsample2};
