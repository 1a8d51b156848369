//! The inferer benchmark's project, shared by the benchmark (`benches/inferer.rs`) and the
//! tests (which run it small): PNG images, a plugin `Mix` whose cost is set by its config, a
//! loss to train one step and export, and inference configs that write every result as a PNG.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::Backend;
use burn::tensor::{Tensor, TensorData, s};
use nc7_core::coordinator::{TrainOptions, train};
use nc7_core::data::files::write_png;
use nc7_core::nucleotide::{ModelLoss, ModelPlugin};
use nc7_core::plan::TrainPlan;
use nc7_core::{BoxError, Build, Generated, Incoming, Mode, Registry, nucleotide};
use serde::{Deserialize, Serialize};

/// The side of the images.
pub const SIDE: usize = 256;
/// Samples per inference batch.
pub const BATCH: usize = 8;

#[derive(Incoming)]
pub struct Image<B: Backend> {
    image: Tensor<B, 4>,
}

#[derive(Generated)]
pub struct Mixed<B: Backend> {
    picture: Tensor<B, 4>,
}

#[derive(Incoming)]
pub struct Picture<B: Backend> {
    picture: Tensor<B, 4>,
}

#[derive(Generated)]
pub struct Loss<B: Backend> {
    loss: Tensor<B, 1>,
}

/// `Mix`'s config.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MixConfig {
    /// The side of the top-left square kept: sets the cost of writing the picture.
    side: usize,
    /// How often the 3×3 convolution is applied after the first time: sets the cost of
    /// prediction.
    repeats: usize,
}

/// The image's top-left `side`×`side` square, a 3×3 convolution applied `1 + repeats` times,
/// values clamped to [0, 1].
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct Mix<B: Backend> {
    conv: Conv2d<B>,
    side: usize,
    repeats: usize,
}

impl<B: Backend> Build<B> for Mix<B> {
    type Config = MixConfig;
    type Input = Image<B>;
    type Output = Mixed<B>;
    fn build(c: &MixConfig, device: &B::Device) -> Result<Self, BoxError> {
        Ok(Mix {
            conv: Conv2dConfig::new([3, 3], [3, 3])
                .with_padding(burn::nn::PaddingConfig2d::Same)
                .init(device),
            side: c.side,
            repeats: c.repeats,
        })
    }
}

impl<B: Backend> ModelPlugin<B> for Mix<B> {
    fn forward(&self, input: Image<B>, _: Mode) -> Mixed<B> {
        let side = self.side;
        let mut x = input.image.slice(s![.., .., 0..side, 0..side]);
        for _ in 0..=self.repeats {
            x = self.conv.forward(x);
        }
        Mixed {
            picture: x.clamp(0.0, 1.0),
        }
    }
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// The mean of the picture: enough to train one step and export.
#[nucleotide(kind = ModelLoss)]
#[derive(Module, Clone, Debug)]
pub struct MeanLoss;

impl<B: Backend> Build<B> for MeanLoss {
    type Config = Empty;
    type Input = Picture<B>;
    type Output = Loss<B>;
    fn build(_: &Empty, _: &B::Device) -> Result<Self, BoxError> {
        Ok(MeanLoss)
    }
}

impl<B: Backend> ModelLoss<B> for MeanLoss {
    fn loss(&self, input: Picture<B>, _: Mode) -> Loss<B> {
        Loss {
            loss: input.picture.mean(),
        }
    }
}

pub fn noise(i: usize) -> TensorData {
    let mut s = 0x9e37_79b9_u64 ^ (i as u64 + 1).wrapping_mul(0x2545_f491);
    let values: Vec<f32> = (0..3 * SIDE * SIDE)
        .map(|p| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Smooth gradients with some noise: compresses like a photograph, not like noise.
            let (y, x) = ((p / SIDE) % SIDE, p % SIDE);
            let base = ((x + y + i * 7) % SIDE) as f32 / SIDE as f32;
            (base * 0.8 + (s >> 40) as f32 / (1u64 << 24) as f32 * 0.2).min(1.0)
        })
        .collect();
    TensorData::new(values, [3, SIDE, SIDE])
}

pub fn write(dir: &Path, files: &[(&str, String)]) {
    for (p, t) in files {
        let path = dir.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, t).unwrap();
    }
}

/// The project: images, training configs (one step, to export a saved model) and inference
/// configs.
pub fn project(root: &Path) {
    let list = format!(
        r#"{{"file_names": {{"image": "{}/data/*.png"}}}}"#,
        root.display()
    );
    write(
        root,
        &[
            (
                "training/configs/datasets.json",
                format!(
                    r#"{{"train": {{"class_name": "ImageFiles", "name": "train", "file_list": {list}}},
                         "eval": {{"class_name": "ImageFiles", "name": "eval", "file_list": {list}}}}}"#
                ),
            ),
            (
                "training/configs/trainer.json",
                r#"{"batch_size": 2, "num_epochs": 1, "progress_bar": false,
                    "iterations_per_epoch": {"train": 1, "eval": 1},
                    "optimization_config": {"optimizer": {"name": "sgd"}, "learning_rate": 0.01}}"#
                    .into(),
            ),
            (
                "training/configs/plugins/mix.json",
                format!(
                    r#"{{"class_name": "Mix", "name": "mix", "inbound_nodes": ["dataset"], "side": {SIDE}, "repeats": 0}}"#
                ),
            ),
            (
                "training/configs/losses/mean.json",
                r#"{"class_name": "MeanLoss", "name": "mean", "inbound_nodes": ["mix"]}"#.into(),
            ),
            (
                "inference/configs/datafeeder.json",
                format!(r#"{{"class_name": "ImageFilesFeeder", "name": "images", "file_list": {list}}}"#),
            ),
            (
                "inference/configs/inferer.json",
                format!(r#"{{"batch_size": {BATCH}}}"#),
            ),
            (
                "inference/configs/callbacks/pictures.json",
                r#"{"class_name": "SampleSaver", "name": "pictures", "inbound_nodes": ["dataset", "mix"],
                    "incoming_keys_mapping": {"dataset": {"file_name": "save_names", "image": "_"}},
                    "image_keys": ["picture"]}"#
                    .into(),
            ),
        ],
    );
}

/// A project in `root` with `images` images and a saved model (one training step).
pub fn trained_project(root: &Path, images: usize) {
    fs::create_dir_all(root.join("data")).unwrap();
    for i in 0..images {
        write_png(&root.join(format!("data/im{i:03}.png")), &noise(i)).unwrap();
    }
    project(root);
    let plan = TrainPlan::load(root, &Default::default(), None, Registry::global())
        .expect("the project plans");
    train(
        &plan,
        &TrainOptions {
            stop: Arc::new(AtomicBool::new(false)),
            ..TrainOptions::default()
        },
    )
    .expect("one training step to export a saved model");
}
