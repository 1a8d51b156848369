//! The models. The starters are built from nc7's standard pieces, wired in
//! `project/training/configs/plugins/`: a backbone (`ConvBackbone`, or `ResidualBackbone`:
//! features at several strides), an optional neck (`Fpn`) and a task head
//! (`ClassificationHead`, `SegmentationHead`, `CenterHead`); the post-processors are nc7's
//! `ArgMax`, `PixelArgMax` and `CenterDecode`. They are re-exported here for the model tests.
//!
//! A model of your own goes in this folder: a `#[nucleotide(kind = ModelPlugin)]` struct
//! deriving burn's `Module`, with `Build` and `ModelPlugin` implementations (`layers/` has
//! nc7's fast `Conv2d` and `ConvBlock`). Give it the keys of the piece it replaces (a
//! backbone generates `features:stride…`, a head reads `feature`) and change that piece's
//! `class_name`: the rest of the configs stay as they are.

pub use nc7_core::standard::center::{BoxesIn, CenterHeadConfig, CenterMaps, CenterTargetsConfig};
pub use nc7_core::standard::vision::{
    BackboneConfig, BackboneImages, ClassificationHeadConfig, FpnConfig, HeadFeature, NeckLevels,
    SegmentationHeadConfig,
};
pub use nc7_core::standard::{
    ArgMax, CenterDecode, CenterHead, CenterTargets, ClassificationHead, ConvBackbone, Fpn,
    PixelArgMax, ResidualBackbone, SegmentationHead,
};
