//! The inferer's threads: reading (PNG decoding), the network and the callbacks (PNG writing)
//! on three threads joined by bounded channels, against the same run in one thread.
//!
//! The pipeline: `ImageFilesFeeder` over 256 RGB PNG files of 256×256, a plugin that halves
//! each image with a strided 2×2 convolution and applies a 3×3 convolution `repeats` times,
//! and `SampleSaver` writing each result as a PNG. Before measuring, single-thread runs time
//! each stage with no 3×3 convolution and with two, and `repeats` is chosen so that prediction
//! takes about the mean of reading and writing: each stage is about a third of the
//! single-thread time. Then both modes run alternately (each first in half the rounds), each
//! run printing how long each stage worked, and the speedup is the geometric mean of the
//! rounds' single/threaded time ratios.
//!
//! Run with `cargo xtask bench inferer`. The last line is `inferer speedup: <threaded/single>`
//! (throughput of the threaded run over the single-thread run).

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::Backend;
use burn::tensor::{Tensor, TensorData};
use nc7_core::coordinator::{InferOptions, InferReport, TrainOptions, infer, train};
use nc7_core::data::files::write_png;
use nc7_core::nucleotide::{ModelLoss, ModelPlugin};
use nc7_core::{BoxError, Build, Generated, Incoming, Mode, Registry, nucleotide};
use serde::{Deserialize, Serialize};

const IMAGES: usize = 256;
const SIDE: usize = 256;
const BATCH: usize = 8;
/// Measured rounds: even, so that each mode goes first equally often.
const ROUNDS: usize = 6;

#[derive(Incoming)]
pub struct Image<B: Backend> {
    image: Tensor<B, 4>,
}

#[derive(Generated)]
pub struct Blurred<B: Backend> {
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

/// `Blur`'s config.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlurConfig {
    /// How often the convolution is applied.
    repeats: usize,
}

/// A 2×2 convolution of stride 2, a 3×3 convolution applied `repeats` times, values clamped
/// to [0, 1].
/// The saved pictures are half the side: PNG encoding costs several times decoding.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct Blur<B: Backend> {
    down: Conv2d<B>,
    conv: Conv2d<B>,
    repeats: usize,
}

impl<B: Backend> Build<B> for Blur<B> {
    type Config = BlurConfig;
    type Input = Image<B>;
    type Output = Blurred<B>;
    fn build(c: &BlurConfig, device: &B::Device) -> Result<Self, BoxError> {
        Ok(Blur {
            down: Conv2dConfig::new([3, 3], [2, 2])
                .with_stride([2, 2])
                .init(device),
            conv: Conv2dConfig::new([3, 3], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            repeats: c.repeats,
        })
    }
}

impl<B: Backend> ModelPlugin<B> for Blur<B> {
    fn forward(&self, input: Image<B>, _: Mode) -> Blurred<B> {
        let mut x = self.down.forward(input.image);
        for _ in 0..self.repeats {
            x = self.conv.forward(x);
        }
        Blurred {
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

fn noise(i: usize) -> TensorData {
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

fn write(dir: &Path, files: &[(&str, String)]) {
    for (p, t) in files {
        let path = dir.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, t).unwrap();
    }
}

/// The project: images, training configs (one step, to export a saved model) and inference
/// configs.
fn project(root: &Path, repeats: usize) {
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
                "training/configs/plugins/blur.json",
                format!(
                    r#"{{"class_name": "Blur", "name": "blur", "inbound_nodes": ["dataset"], "repeats": {repeats}}}"#
                ),
            ),
            (
                "training/configs/losses/mean.json",
                r#"{"class_name": "MeanLoss", "name": "mean", "inbound_nodes": ["blur"]}"#.into(),
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
                r#"{"class_name": "SampleSaver", "name": "pictures", "inbound_nodes": ["dataset", "blur"],
                    "incoming_keys_mapping": {"dataset": {"file_name": "save_names", "image": "_"}},
                    "image_keys": ["picture"]}"#
                    .into(),
            ),
        ],
    );
}

fn saved_model(root: &Path) -> std::path::PathBuf {
    fs::read_dir(root.join("saved_models"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .next()
        .expect("a saved model")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("data")).unwrap();
    let images: Vec<TensorData> = (0..IMAGES).map(noise).collect();
    for (i, data) in images.iter().enumerate() {
        write_png(&root.join(format!("data/im{i:03}.png")), data).unwrap();
    }

    project(root, 0);
    train(
        root,
        &TrainOptions {
            stop: Arc::new(AtomicBool::new(false)),
            ..TrainOptions::default()
        },
        Registry::global(),
    )
    .expect("one training step to export a saved model");
    // The convolution's weights do not depend on `repeats`: the saved model's graph sets it.
    let graph = saved_model(root).join("graph.json");
    let set_repeats = |repeats: usize| {
        let text = fs::read_to_string(&graph).unwrap();
        let mut g: serde_json::Value = serde_json::from_str(&text).unwrap();
        g["plugins_config"][0]["repeats"] = repeats.into();
        fs::write(&graph, g.to_string()).unwrap();
    };

    let run = |single_thread: bool, show: bool| -> InferReport {
        let r = infer(
            root,
            &InferOptions {
                single_thread,
                ..InferOptions::default()
            },
            Registry::global(),
        )
        .expect("inference runs");
        assert_eq!(r.samples, IMAGES as u64);
        // Keep the disk from filling with results.
        fs::remove_dir_all(&r.run.dir).unwrap();
        if show {
            let [read, predict, call] = r.stage_seconds;
            println!(
                "  {}: {:.3} s; stages worked: reading {read:.3} s, prediction {predict:.3} s, callbacks {call:.3} s",
                if single_thread {
                    "single thread"
                } else {
                    "threaded     "
                },
                r.seconds
            );
        }
        r
    };
    // Calibration in one thread: the stages without convolutions, and the cost of two.
    run(true, false);
    let base = run(true, false).stage_seconds;
    set_repeats(2);
    let two = run(true, false).stage_seconds;
    let per_conv = ((two[1] - base[1]) / 2.0).max(1e-6);
    let target = (base[0] + base[2]) / 2.0;
    let repeats = ((target - base[1]) / per_conv).round().max(0.0) as usize;
    set_repeats(repeats);
    println!(
        "{IMAGES} images of 3×{SIDE}×{SIDE} in batches of {BATCH}, one thread: reading {:.3} s, callbacks (PNG writing) {:.3} s, prediction {:.3} s + {per_conv:.3} s per convolution → {repeats} convolutions",
        base[0], base[2], base[1]
    );

    // Warm-up: one of each.
    run(true, false);
    run(false, false);
    let (mut singles, mut threads, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (s, t) = if round % 2 == 0 {
            let s = run(true, true).seconds;
            (s, run(false, true).seconds)
        } else {
            let t = run(false, true).seconds;
            (run(true, true).seconds, t)
        };
        println!(
            "round {}: single thread {s:.3} s, threaded {t:.3} s, speedup {:.3}",
            round + 1,
            s / t
        );
        singles.push(s);
        threads.push(t);
        ratios.push(s / t);
    }
    let geomean = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
    let (s, t) = (median(singles), median(threads));
    println!(
        "medians: single thread {s:.3} s ({:.1} images/s), threaded {t:.3} s ({:.1} images/s)",
        IMAGES as f64 / s,
        IMAGES as f64 / t
    );
    println!(
        "cores available: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("inferer speedup: {geomean:.3}");
}
