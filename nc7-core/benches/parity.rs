//! Parity: the nc7 Trainer against a hand-written burn loop, after Lightning's parity test.
//!
//! Model: Lightning Fabric's parity ConvNet (conv 3→6 5×5, max-pool 2, conv 6→16 5×5, max-pool
//! 2, fc 400→120→84→10), SGD at a constant learning rate, random CIFAR-shaped data (3×32×32,
//! 10 classes), batch 32, 200 steps, NdArray, the same seed. Both sides batch the same
//! in-memory samples the same way (one tensor per sample, stacked), read the loss back every
//! step and start from the same weights; the loss sequences must be identical.
//!
//! The nc7 side is a whole `train` call on a project folder: configs loaded and checked,
//! the graph built, 200 steps with the summaries, checkpoint, evaluation (one batch) and the
//! defaults that ship on (progress bar, prefetching). The raw side is model init and the loop.
//! They run alternately (each first in half the rounds) in one process; the ratio is the
//! geometric mean of the rounds' ratios, printed with the medians. Peak memory:
//! each side runs once in its own child process and reports its high-water RSS and its peak
//! live heap (counted by this binary's allocator). RSS also counts the code each side runs
//! and the allocator's per-thread arenas, a fixed few MiB that the heap figure leaves out.
//!
//! Run with `cargo xtask bench parity`. The last line is `parity ratio: <nc7/raw>`.

use std::collections::BTreeMap;
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

const SEED: u64 = 42;
const BATCH: usize = 32;
const STEPS: usize = 200;
/// Samples in the training set: one per step and batch place, so the 200 steps read each
/// once. Lightning's parity test sizes its random set from steps × batch the same way (and
/// eight times that, in case it runs on eight processes).
const SAMPLES: usize = STEPS * BATCH;
const LR: f64 = 0.01;
const PIXELS: usize = 3 * 32 * 32;
/// Measured rounds: even, so that each side goes first equally often (on a machine with a
/// CPU budget the second run of a pair can be slower whichever side it is).
const REPEATS: usize = 6;

type Train = burn::backend::Autodiff<burn::backend::NdArray>;

/// The data set, made once per process from the seed: pixels and labels.
fn data() -> &'static (Vec<f32>, Vec<i64>) {
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

fn image<B: Backend>(i: usize, device: &B::Device) -> Tensor<B, 3> {
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

fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
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
pub struct CrossEntropy;

impl<B: Backend> Build<B> for CrossEntropy {
    type Config = Empty;
    type Input = Scored<B>;
    type Output = LossOut<B>;
    fn build(_: &Empty, _: &B::Device) -> Result<Self, BoxError> {
        Ok(CrossEntropy)
    }
}

impl<B: Backend> ModelLoss<B> for CrossEntropy {
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

fn write_project(dir: &Path) {
    let files = [
        (
            "datasets.json",
            format!(
                r#"{{"train": {{"class_name": "CifarLike", "name": "train", "len": {SAMPLES}}},
                    "eval": {{"class_name": "CifarLike", "name": "eval", "len": {BATCH}}}}}"#
            ),
        ),
        (
            "trainer.json",
            format!(
                r#"{{"batch_size": {BATCH}, "num_epochs": 1, "iterations_per_epoch": {STEPS},
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
            r#"{"class_name": "CrossEntropy", "name": "ce", "inbound_nodes": ["dataset", "net"]}"#
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

/// One nc7 training; its losses and seconds.
fn nc7() -> (Vec<f64>, f64) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    write_project(dir.path());
    // `NC7_TRAINER__…` variables change the trainer config, as for any nc7 run.
    let overrides = nc7_core::config::Overrides::default().with_process_env();
    let options = TrainOptions {
        stop: Arc::default(),
        ..TrainOptions::default()
    };
    let started = Instant::now();
    // The plan is timed with the run: resolving and checking the project is part of a run.
    let plan = TrainPlan::load(dir.path(), &overrides, None, Registry::global())
        .expect("the nc7 side plans");
    let report = train(&plan, &options).expect("the nc7 side trains");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(report.global_step as usize, STEPS);
    (report.losses, seconds)
}

// ---- the raw side: a hand-written burn loop ----

fn raw() -> (Vec<f64>, f64) {
    type B = Train;
    let device = Default::default();
    let started = Instant::now();
    B::seed(&device, SEED);
    let mut model = ConvNet::<B>::init(&device);
    let mut optimizer = SgdConfig::new().init::<B, ConvNet<B>>();
    let mut losses = Vec::with_capacity(STEPS);
    let batches_per_pass = SAMPLES / BATCH;
    for step in 0..STEPS {
        let first = (step % batches_per_pass) * BATCH;
        let images: Vec<Tensor<B, 3>> = (first..first + BATCH).map(|i| image(i, &device)).collect();
        let labels = data().1[first..first + BATCH].to_vec();
        let x = Tensor::stack(images, 0);
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [BATCH]), &device);
        let loss = cross_entropy(model.logits(x), y);
        losses.push(loss.clone().into_scalar().elem::<f64>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(LR, model, grads);
    }
    (losses, started.elapsed().as_secs_f64())
}

// ---- measuring ----

/// The system allocator, counting live heap bytes and their high-water mark.
struct CountingAlloc;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only counters are added.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use std::sync::atomic::Ordering::Relaxed;
        // SAFETY: the caller's contract for `alloc` is passed on.
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(live, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// A field of this process's `/proc/self/status` in KiB (Linux): `VmHWM` is the high-water
/// resident set size, `RssFile` the resident pages of mapped files (the code, mostly).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs one side in a child process (this binary again) and reads its peak RSS, its file
/// pages at the end and its peak heap (KiB).
fn child_peak(side: &str) -> (u64, u64, u64) {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let out = std::process::Command::new(exe)
        .env("PARITY_CHILD", side)
        .output()
        .expect("the bench binary runs again");
    assert!(
        out.status.success(),
        "the {side} child failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let read = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("the {side} child did not report its {name}"))
    };
    (
        read("peak_rss_kib "),
        read("file_rss_kib "),
        read("peak_heap_kib "),
    )
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
    if let Ok(side) = std::env::var("PARITY_CHILD") {
        let _ = data();
        match side.as_str() {
            "nc7" => drop(nc7()),
            _ => drop(raw()),
        }
        println!("peak_rss_kib {}", status_kib("VmHWM").unwrap_or(0));
        println!("file_rss_kib {}", status_kib("RssFile").unwrap_or(0));
        println!(
            "peak_heap_kib {}",
            PEAK.load(std::sync::atomic::Ordering::Relaxed) / 1024
        );
        return;
    }
    // `cargo bench` passes `--bench`; nothing else is read.
    println!(
        "parity: ConvNet, SGD lr {LR}, batch {BATCH}, {STEPS} steps, {SAMPLES} CIFAR-shaped samples, NdArray, seed {SEED}"
    );
    let (rss_nc7, file_nc7, heap_nc7) = child_peak("nc7");
    let (rss_raw, file_raw, heap_raw) = child_peak("raw");
    let _ = data();
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut ratios: Vec<f64> = Vec::new();
    let mut pair: BTreeMap<&str, f64> = BTreeMap::new();
    let mut reference: Option<Vec<f64>> = None;
    // One warm-up pair, then the measured ones, alternating which side goes first.
    for round in 0..=REPEATS {
        let order: [&str; 2] = if round % 2 == 0 {
            ["nc7", "raw"]
        } else {
            ["raw", "nc7"]
        };
        for side in order {
            let (losses, seconds) = if side == "nc7" { nc7() } else { raw() };
            match &reference {
                None => reference = Some(losses),
                Some(r) => assert!(
                    *r == losses,
                    "the {side} losses differ from the first run's: {:?} vs {:?}",
                    &r[..4],
                    &losses[..4]
                ),
            }
            if round > 0 {
                println!("round {round} {side:>3}: {seconds:.3} s");
                times.entry(side).or_default().push(seconds);
                pair.insert(side, seconds);
            }
        }
        if round > 0 {
            ratios.push(pair["nc7"] / pair["raw"]);
        }
    }
    let losses = reference.expect("at least one run");
    println!(
        "loss sequences identical over {} runs: {:.5} → {:.5}",
        2 * (REPEATS + 1),
        losses[0],
        losses[STEPS - 1]
    );
    let t_nc7 = median(times["nc7"].clone());
    let t_raw = median(times["raw"].clone());
    println!(
        "median time: nc7 {t_nc7:.3} s, raw {t_raw:.3} s ({:.4} ms per step of overhead)",
        (t_nc7 - t_raw) * 1000.0 / STEPS as f64
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "peak RSS: nc7 {:.1} MiB, raw {:.1} MiB, ratio {:.3}; {:.1} MiB more, of which {:.1} MiB more code and other file pages (nc7 {:.1} MiB, raw {:.1} MiB at the end)",
        mib(rss_nc7),
        mib(rss_raw),
        rss_nc7 as f64 / rss_raw.max(1) as f64,
        mib(rss_nc7) - mib(rss_raw),
        mib(file_nc7) - mib(file_raw),
        mib(file_nc7),
        mib(file_raw),
    );
    println!(
        "peak heap: nc7 {:.1} MiB, raw {:.1} MiB, ratio {:.3}",
        heap_nc7 as f64 / 1024.0,
        heap_raw as f64 / 1024.0,
        heap_nc7 as f64 / heap_raw.max(1) as f64
    );
    println!(
        "ratio of medians {:.4}; per round {}",
        t_nc7 / t_raw,
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // The geometric mean of the rounds' ratios: the order effect cancels over alternating rounds.
    let ratio = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
    println!("parity ratio: {ratio:.4}");
}
