//! The inferer benchmark's project, shared by the benchmark (`benches/inferer.rs`) and the
//! tests (which run it small): PNG images, a plugin `Mix` whose cost is set by its config, a
//! loss to train one step and export, and inference configs that write every result as a PNG.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::prelude::Backend;
use burn::tensor::{Tensor, TensorData};
use nc7_core::coordinator::{TrainOptions, train};
use nc7_core::data::files::write_png;
use nc7_core::layers::{Conv2d, Conv2dConfig};
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
    /// The side of the square, inside that one, that the convolution runs over, and how often
    /// it is applied: they set the cost of prediction.
    tile: usize,
    repeats: usize,
}

/// The image's top-left `side`×`side` square, its top-left `tile`×`tile` square replaced by a
/// 3×3 convolution of it applied `repeats` times, values clamped to [0, 1].
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct Mix<B: Backend> {
    conv: Conv2d<B>,
    side: usize,
    tile: usize,
    repeats: usize,
}

impl<B: Backend> Build<B> for Mix<B> {
    type Config = MixConfig;
    type Input = Image<B>;
    type Output = Mixed<B>;
    fn build(c: &MixConfig, device: &B::Device) -> Result<Self, BoxError> {
        Ok(Mix {
            conv: Conv2dConfig::new([3, 3], [3, 3])
                .with_padding([1, 1])
                .init(device),
            side: c.side,
            tile: c.tile.min(c.side),
            repeats: c.repeats,
        })
    }
}

impl<B: Backend> ModelPlugin<B> for Mix<B> {
    fn forward(&self, input: Image<B>, _: Mode) -> Mixed<B> {
        let device = input.image.device();
        let [n, c, h, w] = input.image.dims();
        let image = input.image.into_data().to_vec::<f32>().unwrap();
        let (side, tile) = (self.side, self.tile);
        let picture = corner(&image, [n, c, h, w], side);
        let mut t = Tensor::<B, 4>::from_data(
            TensorData::new(
                corner(&picture, [n, c, side, side], tile),
                [n, c, tile, tile],
            ),
            &device,
        );
        for _ in 0..self.repeats {
            t = self.conv.forward(t);
        }
        let t = t.clamp(0.0, 1.0).into_data().to_vec::<f32>().unwrap();
        let mut picture = picture;
        for (plane, rows) in picture.chunks_mut(side * side).zip(t.chunks(tile * tile)) {
            for (row, from) in plane.chunks_mut(side).zip(rows.chunks(tile)) {
                row[..tile].copy_from_slice(from);
            }
        }
        Mixed {
            picture: Tensor::from_data(TensorData::new(picture, [n, c, side, side]), &device)
                .clamp(0.0, 1.0),
        }
    }
}

/// The top-left `side`×`side` square of each plane of `x` (`dims`), copied row by row: a
/// strided slice of a tensor is copied element by element on the CPU backend, which would
/// make the copy, not the convolutions, the cost of prediction.
fn corner(x: &[f32], [n, c, h, w]: [usize; 4], side: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * c * side * side);
    for plane in x.chunks(h * w).take(n * c) {
        for row in plane.chunks(w).take(side) {
            out.extend_from_slice(&row[..side]);
        }
    }
    out
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
                    r#"{{"class_name": "Mix", "name": "mix", "inbound_nodes": ["dataset"], "side": {SIDE}, "tile": 16, "repeats": 1}}"#
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
    let plan =
        TrainPlan::load(root, &Default::default(), Registry::global()).expect("the project plans");
    train(
        &plan,
        &TrainOptions {
            stop: Arc::new(AtomicBool::new(false)),
            ..TrainOptions::default()
        },
    )
    .expect("one training step to export a saved model");
}

/// Sets `Mix`'s `side`, `tile` and `repeats` in the saved model of the project in `root` (the
/// weights do not depend on them), and seals its manifest again, as an export would have.
pub fn set_cost(root: &Path, side: usize, tile: usize, repeats: usize) {
    use nc7_core::integrity;
    let dir = fs::read_dir(root.join("saved_models"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .next()
        .expect("a saved model");
    let graph = dir.join("graph.json");
    let mut g: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&graph).unwrap()).unwrap();
    g["plugins_config"][0]["side"] = side.into();
    g["plugins_config"][0]["tile"] = tile.into();
    g["plugins_config"][0]["repeats"] = repeats.into();
    fs::write(&graph, g.to_string()).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&integrity::unseal(&dir).unwrap()).unwrap();
    manifest["files"]["graph.json"] =
        serde_json::to_value(integrity::hash_file(&graph).unwrap()).unwrap();
    integrity::seal(&dir, &serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}
