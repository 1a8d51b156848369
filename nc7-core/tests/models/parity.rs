//! The parity benchmark's two sides, shared by the benchmark (`benches/parity.rs`) and the
//! tests (which check that they agree on a few steps): Lightning Fabric's parity ConvNet, its
//! CIFAR-shaped random data, the nc7 side (a project folder and a `train` call) and the raw side
//! (a hand-written burn loop).
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::prelude::Backend;
use burn::tensor::activation::relu;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use nc7_core::coordinator::{TrainOptions, train};
use nc7_core::nucleotide::{Dataset, ModelLoss, ModelPlugin};
use nc7_core::plan::TrainPlan;
use nc7_core::{BoxError, Build, Generated, Incoming, Mode, NoKeys, Registry, nucleotide};
use serde::{Deserialize, Serialize};

pub const SEED: u64 = 42;
pub const BATCH: usize = 32;
pub const STEPS: usize = 200;
/// Samples in the training set: one per step and batch place, so the 200 steps read each
/// once. Lightning's parity test sizes its random set from steps × batch the same way (and
/// eight times that, in case it runs on eight processes).
pub const SAMPLES: usize = STEPS * BATCH;
pub const LR: f64 = 0.01;
pub const PIXELS: usize = 3 * 32 * 32;

pub type Train = nc7_core::backend::CpuTrain;

/// The data set, made once per process from the seed: pixels and labels.
pub fn data() -> &'static (Vec<f32>, Vec<i64>) {
    static DATA: OnceLock<(Vec<f32>, Vec<i64>)> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut s = SEED;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let pixels = (0..SAMPLES * PIXELS)
            .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32)
            .collect();
        let labels = (0..SAMPLES).map(|_| (next() % 10) as i64).collect();
        (pixels, labels)
    })
}

pub fn image<B: Backend>(i: usize, device: &B::Device) -> Tensor<B, 3> {
    let pixels = data().0[i * PIXELS..(i + 1) * PIXELS].to_vec();
    Tensor::from_data(TensorData::new(pixels, [3, 32, 32]), device)
}

// ---- the model, shared by both sides ----

/// Lightning's parity ConvNet.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct ConvNet<B: Backend> {
    conv1: Conv2d<B>,
    pool: MaxPool2d,
    conv2: Conv2d<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    fc3: Linear<B>,
}

impl<B: Backend> ConvNet<B> {
    fn init(device: &B::Device) -> Self {
        ConvNet {
            conv1: Conv2dConfig::new([3, 6], [5, 5]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            conv2: Conv2dConfig::new([6, 16], [5, 5]).init(device),
            fc1: LinearConfig::new(400, 120).init(device),
            fc2: LinearConfig::new(120, 84).init(device),
            fc3: LinearConfig::new(84, 10).init(device),
        }
    }

    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.pool.forward(relu(self.conv1.forward(x)));
        let x = self.pool.forward(relu(self.conv2.forward(x)));
        let x: Tensor<B, 2> = x.flatten(1, 3);
        let x = relu(self.fc1.forward(x));
        let x = relu(self.fc2.forward(x));
        self.fc3.forward(x)
    }
}

pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits, labels)
}

// ---- the nc7 side: nucleotides and a project ----

#[derive(Generated)]
pub struct Sample<B: Backend> {
    image: Tensor<B, 3>,
    label: Tensor<B, 1, Int>,
}

#[derive(Incoming)]
pub struct Images<B: Backend> {
    image: Tensor<B, 4>,
}

#[derive(Generated)]
pub struct Logits<B: Backend> {
    logits: Tensor<B, 2>,
}

#[derive(Incoming)]
pub struct Scored<B: Backend> {
    logits: Tensor<B, 2>,
    label: Tensor<B, 2, Int>,
}

#[derive(Generated)]
pub struct LossOut<B: Backend> {
    loss: Tensor<B, 1>,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

impl<B: Backend> Build<B> for ConvNet<B> {
    type Config = Empty;
    type Input = Images<B>;
    type Output = Logits<B>;
    fn build(_: &Empty, device: &B::Device) -> Result<Self, BoxError> {
        Ok(ConvNet::init(device))
    }
}

impl<B: Backend> ModelPlugin<B> for ConvNet<B> {
    fn forward(&self, input: Images<B>, _: Mode) -> Logits<B> {
        Logits {
            logits: self.logits(input.image),
        }
    }
}

/// Cross entropy of logits and labels.
#[nucleotide(kind = ModelLoss)]
pub struct ParityLoss;

impl<B: Backend> Build<B> for ParityLoss {
    type Config = Empty;
    type Input = Scored<B>;
    type Output = LossOut<B>;
    fn build(_: &Empty, _: &B::Device) -> Result<Self, BoxError> {
        Ok(ParityLoss)
    }
}

impl<B: Backend> ModelLoss<B> for ParityLoss {
    fn loss(&self, input: Scored<B>, _: Mode) -> LossOut<B> {
        let n = input.label.dims()[0];
        LossOut {
            loss: cross_entropy(input.logits, input.label.reshape([n])),
        }
    }
}

/// The first `len` samples of the process's data.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CifarLikeConfig {
    len: usize,
}

#[nucleotide(kind = Dataset)]
pub struct CifarLike {
    len: usize,
}

impl<B: Backend> Build<B> for CifarLike {
    type Config = CifarLikeConfig;
    type Input = NoKeys;
    type Output = Sample<B>;
    fn build(c: &CifarLikeConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(CifarLike { len: c.len })
    }
}

impl<B: Backend> Dataset<B> for CifarLike {
    fn len(&self) -> usize {
        self.len
    }
    fn get(&self, i: usize) -> Result<Sample<B>, BoxError> {
        let device = Default::default();
        Ok(Sample {
            image: image(i, &device),
            label: Tensor::from_data(TensorData::new(vec![data().1[i]], [1]), &device),
        })
    }
}

/// Writes the nc7 side's project: `steps` steps of the parity training in batches of `batch`.
pub fn write_project(dir: &Path, steps: usize, batch: usize) {
    let files = [
        (
            "datasets.json",
            format!(
                r#"{{"train": {{"class_name": "CifarLike", "name": "train", "len": {SAMPLES}}},
                    "eval": {{"class_name": "CifarLike", "name": "eval", "len": {batch}}}}}"#
            ),
        ),
        (
            "trainer.json",
            format!(
                r#"{{"batch_size": {batch}, "num_epochs": 1, "iterations_per_epoch": {steps},
                    "random_seed": {SEED}, "shuffle": false, "summary_steps": 50,
                    "checkpoints_to_keep": 1, "exports_to_keep": 0,
                    "optimization_config": {{"optimizer": {{"name": "sgd"}}, "learning_rate": {LR}}}}}"#
            ),
        ),
        (
            "plugins/net.json",
            r#"{"class_name": "ConvNet", "name": "net", "inbound_nodes": ["dataset"]}"#.into(),
        ),
        (
            "losses/ce.json",
            r#"{"class_name": "ParityLoss", "name": "ce", "inbound_nodes": ["dataset", "net"]}"#
                .into(),
        ),
    ];
    for (name, text) in files {
        let path = dir.join("training/configs").join(name);
        std::fs::create_dir_all(path.parent().expect("config files have a folder"))
            .expect("the temporary folder is writable");
        std::fs::write(path, text).expect("the temporary folder is writable");
    }
}

/// One nc7 training of `steps` steps in batches of `batch`; its losses and seconds.
pub fn nc7(steps: usize, batch: usize) -> (Vec<f64>, f64) {
    nc7_on(steps, batch, nc7_core::plan::TrainRequest::default())
}

/// One nc7 training as [`nc7`], with the devices and threads of `request`.
pub fn nc7_on(
    steps: usize,
    batch: usize,
    request: nc7_core::plan::TrainRequest,
) -> (Vec<f64>, f64) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    write_project(dir.path(), steps, batch);
    // `NC7_TRAINER__…` variables change the trainer config, as for any nc7 run.
    let overrides = nc7_core::config::Overrides::default().with_process_env();
    let options = TrainOptions {
        stop: Arc::default(),
        ..TrainOptions::default()
    };
    let started = Instant::now();
    // The plan is timed with the run: resolving and checking the project is part of a run.
    let plan = TrainPlan::load(
        dir.path(),
        &nc7_core::plan::TrainRequest {
            overrides,
            ..request
        },
        Registry::global(),
    )
    .expect("the nc7 side plans");
    let report = train(&plan, &options).expect("the nc7 side trains");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(report.global_step as usize, steps);
    (report.losses, seconds)
}

// ---- the raw side: a hand-written burn loop ----

/// The hand-written loop of `steps` steps in batches of `batch`; its losses and seconds. It
/// runs on a thread pool of its own with one thread per core, as nc7's trainer does (burn's
/// CPU kernels run their parallel work on the pool of the thread that calls them; from a
/// thread outside any pool each one is handed to another thread and waited for).
pub fn raw(steps: usize, batch: usize) -> (Vec<f64>, f64) {
    let started = Instant::now();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .build()
        .expect("a thread pool");
    let losses = pool.install(|| raw_loop(steps, batch));
    (losses, started.elapsed().as_secs_f64())
}

fn raw_loop(steps: usize, batch: usize) -> Vec<f64> {
    type B = Train;
    let device = Default::default();
    B::seed(&device, SEED);
    let mut model = ConvNet::<B>::init(&device);
    let mut optimizer = SgdConfig::new().init::<B, ConvNet<B>>();
    let mut losses = Vec::with_capacity(steps);
    let batches_per_pass = SAMPLES / batch;
    for step in 0..steps {
        let first = (step % batches_per_pass) * batch;
        let images: Vec<Tensor<B, 3>> = (first..first + batch).map(|i| image(i, &device)).collect();
        let labels = data().1[first..first + batch].to_vec();
        let x = Tensor::stack(images, 0);
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [batch]), &device);
        let loss = cross_entropy(model.logits(x), y);
        losses.push(loss.clone().into_scalar().elem::<f64>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(LR, model, grads);
    }
    losses
}
