//! The trainer end to end on a small regression project: it learns, resumes exactly, writes
//! summaries TensorBoard reads, checkpoints that refuse corruption, saved models, and stops
//! with a clear error on a non-finite loss.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::Backend;
use burn::tensor::{ElementConversion as _, Tensor, TensorData};
use nc7_core::coordinator::{TrainError, TrainOptions, TrainReport, export_checkpoint, train};
use nc7_core::nucleotide::{CallbackContext, Dataset, ModelPlugin};
use nc7_core::plan::{TrainPlan, TrainRequest};
use nc7_core::project::ProjectMetadata;
use nc7_core::{BoxError, Build, Generated, Incoming, Mode, NoKeys, Registry, cli, nucleotide};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::support::python;

/// One sample: the batch adds the first dimension.
#[derive(Generated)]
pub struct PointSample<B: Backend> {
    x: Tensor<B, 1>,
    y: Tensor<B, 1>,
}

#[derive(Incoming)]
pub struct Features<B: Backend> {
    x: Tensor<B, 2>,
}

#[derive(Generated)]
pub struct Prediction<B: Backend> {
    prediction: Tensor<B, 2>,
}

#[derive(Incoming)]
pub struct Scored<B: Backend> {
    prediction: Tensor<B, 2>,
    y: Tensor<B, 2>,
}

#[derive(Generated)]
pub struct LossOut<B: Backend> {
    loss: Tensor<B, 1>,
}

#[derive(Incoming)]
pub struct LossIn<B: Backend> {
    loss: Tensor<B, 1>,
}

#[derive(Generated)]
pub struct MetricOut<B: Backend> {
    mae: Tensor<B, 1>,
}

/// Points on `y = 2 x0 - x1 + 0.5`, with `x` from the sample's index.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PointsConfig {
    /// Samples.
    len: usize,
    /// Makes every target NaN (the non-finite guard's test).
    #[serde(default)]
    poison: bool,
    /// A sample whose reading fails (the failures' tests).
    #[serde(default)]
    broken: Option<usize>,
    /// A sample whose reading panics.
    #[serde(default)]
    panics: Option<usize>,
    /// Shifts each sample's `x` by noise drawn from its key's seed (augmentation), and
    /// records the keys it was asked for in `KEYS`.
    #[serde(default)]
    augment: bool,
}

/// The sample keys an augmenting `Points` was asked for.
static KEYS: std::sync::Mutex<Vec<nc7_core::data::SampleKey>> = std::sync::Mutex::new(Vec::new());

#[nucleotide(kind = Dataset)]
pub struct Points {
    len: usize,
    poison: bool,
    broken: Option<usize>,
    panics: Option<usize>,
    augment: bool,
}

impl<B: Backend> Build<B> for Points {
    type Config = PointsConfig;
    type Input = NoKeys;
    type Output = PointSample<B>;
    fn build(c: &PointsConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(Points {
            len: c.len,
            poison: c.poison,
            broken: c.broken,
            panics: c.panics,
            augment: c.augment,
        })
    }
}

impl<B: Backend> Dataset<B> for Points {
    fn len(&self) -> usize {
        self.len
    }
    fn get_for(&self, key: nc7_core::data::SampleKey) -> Result<PointSample<B>, BoxError> {
        let sample = self.get(key.index)?;
        if !self.augment {
            return Ok(sample);
        }
        KEYS.lock().unwrap().push(key);
        let seed = key.sample_seed();
        let noise = |shift: u32| ((seed >> shift) & 0xffff) as f32 / 65536.0 * 0.2 - 0.1;
        let d = sample.x.device();
        let shift = Tensor::from_data(TensorData::new(vec![noise(0), noise(16)], [2]), &d);
        Ok(PointSample {
            x: sample.x + shift,
            y: sample.y,
        })
    }
    fn get(&self, i: usize) -> Result<PointSample<B>, BoxError> {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        let seen = (
            thread.split('-').take(2).collect::<Vec<_>>().join("-"),
            rayon::current_num_threads(),
        );
        READ_THREADS.lock().unwrap().insert(seen);
        if self.broken == Some(i) {
            return Err(format!("sample {i} is broken").into());
        }
        assert!(self.panics != Some(i), "sample {i} panics");
        let d = Default::default();
        let a = ((i * 7919) % 97) as f32 / 48.5 - 1.0;
        let b = ((i * 104_729) % 89) as f32 / 44.5 - 1.0;
        let y = if self.poison {
            f32::NAN
        } else {
            2.0 * a - b + 0.5
        };
        Ok(PointSample {
            x: Tensor::from_data(TensorData::new(vec![a, b], [2]), &d),
            y: Tensor::from_data(TensorData::new(vec![y], [1]), &d),
        })
    }
}

/// Where the dataset read: the kind of thread (`nc7-stage`, `nc7-compute`) and the number of
/// compute threads its parallel work would use.
static READ_THREADS: std::sync::Mutex<std::collections::BTreeSet<(String, usize)>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A linear layer.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct Line<B: Backend> {
    linear: Linear<B>,
}

/// Line's parameters.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {}

impl<B: Backend> Build<B> for Line<B> {
    type Config = LineConfig;
    type Input = Features<B>;
    type Output = Prediction<B>;
    fn build(_: &LineConfig, device: &B::Device) -> Result<Self, BoxError> {
        Ok(Line {
            linear: LinearConfig::new(2, 1).init(device),
        })
    }
}

impl<B: Backend> ModelPlugin<B> for Line<B> {
    fn forward(&self, input: Features<B>, _: Mode) -> Prediction<B> {
        Prediction {
            prediction: self.linear.forward(input.x),
        }
    }
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

simple_nucleotide!(Mse, ModelLoss, Empty, Scored<B>, LossOut<B>, {
    fn loss(&self, input: Scored<B>, _: Mode) -> LossOut<B> {
        LossOut {
            loss: (input.prediction - input.y).powi_scalar(2).mean(),
        }
    }
});

// A loss that fails inside, as burn does on a label outside the classes.
simple_nucleotide!(Brittle, ModelLoss, Empty, Scored<B>, LossOut<B>, {
    fn loss(&self, _: Scored<B>, _: Mode) -> LossOut<B> {
        let classes = [0.0f32; 3];
        let label = std::hint::black_box(5);
        panic!(
            "index out of bounds: the len is {} but the index is {label}",
            classes.len()
        )
    }
});

#[derive(Incoming)]
pub struct Classes<B: Backend> {
    labels: Tensor<B, 1, burn::tensor::Int>,
}

simple_nucleotide!(Share, ModelMetric, Empty, Classes<B>, MetricOut<B>, {
    fn metric(&self, input: Classes<B>, _: Mode) -> MetricOut<B> {
        MetricOut {
            mae: input.labels.float().mean(),
        }
    }
});

simple_nucleotide!(Mae, ModelMetric, Empty, Scored<B>, MetricOut<B>, {
    fn metric(&self, input: Scored<B>, _: Mode) -> MetricOut<B> {
        MetricOut {
            mae: (input.prediction - input.y).abs().mean(),
        }
    }
});

#[derive(Generated)]
pub struct ThreadsOut<B: Backend> {
    threads: Tensor<B, 1>,
}

// The compute threads the model runs on, as an evaluation value.
simple_nucleotide!(ThreadsSeen, ModelMetric, Empty, Scored<B>, ThreadsOut<B>, {
    fn metric(&self, input: Scored<B>, _: Mode) -> ThreadsOut<B> {
        let n = rayon::current_num_threads() as f32;
        ThreadsOut {
            threads: Tensor::from_data(TensorData::new(vec![n], [1]), &input.y.device()),
        }
    }
});

simple_nucleotide!(LossLog, CoordinatorCallback, Empty, LossIn<B>, NoKeys, {
    fn on_iteration_end(
        &mut self,
        input: LossIn<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<NoKeys>, BoxError> {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ctx.log_dir.join("losses.txt"))?;
        writeln!(
            f,
            "{} {} {}",
            ctx.iteration.epoch,
            ctx.iteration.iteration,
            input.loss.into_scalar()
        )?;
        Ok(Some(NoKeys))
    }
});

#[derive(Incoming)]
pub struct PointsIn<B: Backend> {
    x: Tensor<B, 2>,
}

// Appends each sample's `x` it is given to `points.txt`, one line per call.
simple_nucleotide!(
    PointsLog,
    CoordinatorCallback,
    Empty,
    PointsIn<B>,
    NoKeys,
    {
        fn on_iteration_end(
            &mut self,
            input: PointsIn<B>,
            ctx: &CallbackContext,
        ) -> Result<Option<NoKeys>, BoxError> {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(ctx.log_dir.join("points.txt"))?;
            let values = input
                .x
                .into_data()
                .to_vec::<f32>()
                .map_err(|e| format!("{e:?}"))?;
            writeln!(f, "{} {values:?}", ctx.iteration.iteration)?;
            Ok(Some(NoKeys))
        }
    }
);

const C: &str = "training/configs";

fn project(trainer: &str, extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, String)> = vec![
        (
            "datasets.json".into(),
            r#"{"train": {"class_name": "Points", "name": "train_points", "len": 20},
                "eval": {"class_name": "Points", "name": "eval_points", "len": 8}}"#
                .into(),
        ),
        ("trainer.json".into(), trainer.into()),
        (
            "plugins/line.json".into(),
            r#"{"class_name": "Line", "name": "line", "inbound_nodes": ["dataset"]}"#.into(),
        ),
        (
            "losses/mse.json".into(),
            r#"{"class_name": "Mse", "name": "mse", "inbound_nodes": ["dataset", "line"]}"#.into(),
        ),
        (
            "metrics/mae.json".into(),
            r#"{"class_name": "Mae", "name": "mae", "inbound_nodes": ["dataset", "line"]}"#.into(),
        ),
        (
            "callbacks_train/log.json".into(),
            r#"{"class_name": "LossLog", "name": "log", "inbound_nodes": ["mse"]}"#.into(),
        ),
    ];
    for (p, t) in extra {
        files.retain(|(q, _)| q != p);
        files.push((p.to_string(), t.to_string()));
    }
    for (p, t) in files {
        let path = dir.path().join(C).join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, t).unwrap();
    }
    dir
}

/// The plugin, not trained: its weights stay what they were built or loaded with.
const FROZEN_LINE: &str =
    r#"{"class_name": "Line", "name": "line", "inbound_nodes": ["dataset"], "trainable": false}"#;

const TRAINER: &str = r#"{
    "batch_size": {"train": 4, "eval": 3}, "num_epochs": 4, "random_seed": 7,
    "summary_steps": 2, "checkpoints_to_keep": 2, "exports_to_keep": 2,
    "optimization_config": {
        "optimizer": {"name": "adam"}, "learning_rate": 0.05, "gradient_clip": 2.0,
        "learning_rate_schedule": {"name": "step", "step_size": 5, "gamma": 0.5,
                                   "warmup": {"steps": 3, "start_factor": 0.2}}
    }
}"#;

fn options(resume: bool, max_epochs: Option<u64>) -> TrainOptions {
    TrainOptions {
        resume,
        max_epochs_this_run: max_epochs,
        stop: Arc::new(AtomicBool::new(false)),
        ..TrainOptions::default()
    }
}

use crate::support::serial;

fn run(dir: &Path, resume: bool, max_epochs: Option<u64>) -> Result<TrainReport, TrainError> {
    let _one_at_a_time = serial();
    train(&plan(dir)?, &options(resume, max_epochs))
}

fn plan(dir: &Path) -> Result<TrainPlan, TrainError> {
    Ok(TrainPlan::load(
        dir,
        &Default::default(),
        Registry::global(),
    )?)
}

fn newest_weights(dir: &Path) -> Vec<u8> {
    let cps = dir.join("checkpoints");
    let mut names: Vec<(u64, String)> = fs::read_dir(&cps)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            Some((n.rsplit('-').next()?.parse().ok()?, n))
        })
        .collect();
    names.sort();
    fs::read(cps.join(&names.last().unwrap().1).join("model.safetensors")).unwrap()
}

#[test]
fn trains_and_resumes_exactly() {
    let whole = project(TRAINER, &[]);
    let one_go = run(whole.path(), false, None).unwrap();
    assert_eq!(one_go.epochs, 4);
    assert_eq!(one_go.global_step, 20);
    assert_eq!(one_go.losses.len(), 20);
    let first = one_go.losses[0];
    let last = *one_go.losses.last().unwrap();
    assert!(last < first / 2.0, "the loss falls: {first} → {last}");
    assert_eq!(one_go.evaluations.len(), 4);
    assert!(one_go.evaluations[3]["mae/mae"] < one_go.evaluations[0]["mae/mae"]);

    let split = project(TRAINER, &[]);
    let a = run(split.path(), false, Some(2)).unwrap();
    assert_eq!((a.epochs, a.global_step), (2, 10));
    assert!(a.stopped.is_some());
    // Without --continue an existing run is refused.
    let refused = run(split.path(), false, None).unwrap_err();
    assert!(refused.to_string().contains("--continue"), "{refused}");
    let b = run(split.path(), true, None).unwrap();
    assert_eq!((b.epochs, b.global_step), (4, 20));
    let mut losses = a.losses.clone();
    losses.extend(&b.losses);
    assert_eq!(losses, one_go.losses, "the same loss sequence, bit for bit");
    assert_eq!(
        newest_weights(split.path()),
        newest_weights(whole.path()),
        "bitwise-identical weights"
    );
    assert_eq!(b.evaluations, one_go.evaluations[2..].to_vec());
    // Every file of the newest checkpoint (weights, each optimizer's state, the manifest with
    // the run state) and the evaluation history is the same, byte for byte: `cmp` can tell
    // an identical run.
    let ckpt = |p: &Path| p.join("checkpoints/ckpt-20");
    let mut names: Vec<String> = fs::read_dir(ckpt(whole.path()))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.iter().any(|n| n.contains("optimizer")), "{names:?}");
    for name in names
        .iter()
        .map(String::as_str)
        .chain(["../../training/evaluations.json"])
    {
        assert_eq!(
            fs::read(ckpt(split.path()).join(name)).unwrap(),
            fs::read(ckpt(whole.path()).join(name)).unwrap(),
            "{name} differs between the split and the whole run"
        );
    }

    // Checkpoints kept: the newest two; saved models: the newest two, complete.
    let cps: Vec<_> = fs::read_dir(whole.path().join("checkpoints"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(cps.len(), 2);
    let saved = whole.path().join("saved_models/step-20");
    for f in [
        "model.safetensors",
        "graph.json",
        "signature.json",
        "model.info",
        "eval_result.json",
    ] {
        assert!(saved.join(f).is_file(), "{f} in {}", saved.display());
    }
    assert!(!whole.path().join("saved_models/step-10").exists());
    let info: Value =
        serde_json::from_str(&fs::read_to_string(saved.join("model.info")).unwrap()).unwrap();
    assert_eq!(info["global_step"], 20);
    let sig: Value =
        serde_json::from_str(&fs::read_to_string(saved.join("signature.json")).unwrap()).unwrap();
    assert_eq!(sig["inputs"][0]["key"], "x");
    assert_eq!(sig["inputs"][0]["shape"], serde_json::json!([null, 2]));
    assert_eq!(sig["outputs"]["line"]["keys"][0]["key"], "prediction");
    let graph: Value =
        serde_json::from_str(&fs::read_to_string(saved.join("graph.json")).unwrap()).unwrap();
    assert!(
        graph["plugins_config"][0]["class_name"]
            .as_str()
            .unwrap()
            .ends_with("::Line")
    );
    let result: Value =
        serde_json::from_str(&fs::read_to_string(saved.join("eval_result.json")).unwrap()).unwrap();
    assert!((result["mae/mae"].as_f64().unwrap() - one_go.evaluations[3]["mae/mae"]).abs() < 1e-12);

    // The callback saw every training step, in the callbacks folder.
    let log = fs::read_to_string(whole.path().join("training/callbacks/train/losses.txt")).unwrap();
    assert_eq!(log.lines().count(), 20);
    assert!(log.lines().next().unwrap().starts_with("1 1 "));

    // The weights are read back by the safetensors Python package; the summaries by TensorBoard.
    if let Some(out) = python::run_python(
        "safetensors",
        "import sys, json\nfrom safetensors.numpy import load_file\nt = load_file(sys.argv[1])\nprint(json.dumps({k: list(v.shape) for k, v in t.items()}))",
        &[saved.join("model.safetensors").to_str().unwrap()],
    ) {
        let shapes: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(shapes["line.linear.weight"], serde_json::json!([2, 1]));
        assert_eq!(shapes["line.linear.bias"], serde_json::json!([1]));
    }
    if let Some(out) = python::run_python(
        "tensorboard",
        "import sys, json\nfrom tensorboard.backend.event_processing.event_accumulator import EventAccumulator\nr = {}\nfor m in ('train', 'eval'):\n    a = EventAccumulator(sys.argv[1] + '/' + m, size_guidance={'scalars': 0}); a.Reload()\n    r[m] = {t: [[e.step, e.value] for e in a.Scalars(t)] for t in a.Tags()['scalars']}\nprint(json.dumps(r))",
        &[whole.path().join("training/summaries").to_str().unwrap()],
    ) {
        let tb: Value = serde_json::from_str(out.trim()).unwrap();
        let loss = tb["train"]["loss"].as_array().unwrap();
        // Every second step, and each epoch's last (5 steps per epoch): 2, 4, 5, 6, 8, 10, ...
        assert_eq!(loss.len(), 12);
        assert_eq!(loss[2][0], 5);
        assert_eq!(loss[0][0], 2);
        assert!((loss[0][1].as_f64().unwrap() - one_go.losses[1]).abs() < 1e-5);
        assert_eq!(tb["train"]["learning_rate"].as_array().unwrap().len(), 12);
        assert!(tb["train"]["gradient_norm"].is_array());
        assert!(tb["train"]["mae/mae"].is_array());
        let eval_mae = tb["eval"]["mae/mae"].as_array().unwrap();
        assert_eq!(
            eval_mae
                .iter()
                .map(|e| e[0].as_u64().unwrap())
                .collect::<Vec<_>>(),
            vec![5, 10, 15, 20]
        );
    }

    // `export` writes a saved model from a chosen checkpoint, without training.
    let dir = export_alone(&plan(whole.path()).unwrap(), Some(Path::new("ckpt-15"))).unwrap();
    assert!(dir.ends_with("step-15"));
    assert!(dir.join("model.safetensors").is_file());

    // A stop while the last saved model was written leaves its evaluation recorded and no
    // saved model of its step: `--continue` writes it, the same, and trains nothing more.
    let newest = whole.path().join("saved_models/step-20");
    let files = ["model.safetensors", "eval_result.json", "signature.json"];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| fs::read(newest.join(f)).unwrap())
        .collect();
    fs::remove_dir_all(&newest).unwrap();
    let again = run(whole.path(), true, None).unwrap();
    assert_eq!((again.global_step, again.losses.len()), (20, 0));
    let after: Vec<Vec<u8>> = files
        .iter()
        .map(|f| fs::read(newest.join(f)).unwrap())
        .collect();
    assert!(before == after, "the saved model written again differs");
}

#[test]
fn a_corrupt_checkpoint_is_refused_and_the_previous_offered() {
    let dir = project(
        r#"{"batch_size": 5, "num_epochs": 2, "exports_to_keep": 0,
            "optimization_config": {"optimizer": {"name": "sgd", "momentum": 0.9}, "learning_rate": 0.1}}"#,
        &[],
    );
    run(dir.path(), false, None).unwrap();
    let newest = dir.path().join("checkpoints/ckpt-8/model.safetensors");
    let mut bytes = fs::read(&newest).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    fs::write(&newest, bytes).unwrap();
    let err = run(dir.path(), true, None).unwrap_err().to_string();
    assert!(err.contains("ckpt-8"), "{err}");
    assert!(
        err.contains("continue from it with `train --continue --checkpoint ckpt-4`"),
        "the previous one is offered, with the command that uses it: {err}"
    );
    let mut options = options(true, None);
    let _one_at_a_time = serial();
    // A folder that is no checkpoint is said to be one, not a corrupt one.
    options.checkpoint = Some("/etc".into());
    let err = train(&plan(dir.path()).unwrap(), &options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`/etc` is not a checkpoint") && err.contains("ckpt-4, ckpt-8"),
        "{err}"
    );
    // Continued from the one offered: the corrupt newer one moves aside, and the run ends
    // where an uninterrupted one does, to the bit.
    options.checkpoint = Some("ckpt-4".into());
    let report = train(&plan(dir.path()).unwrap(), &options).unwrap();
    assert_eq!(report.global_step, 8);
    assert!(dir.path().join("checkpoints/abandoned/ckpt-8").is_dir());
    // What an interrupted write left is removed at the next start.
    let left = dir.path().join("checkpoints/.ckpt-12.tmp-99999");
    fs::create_dir_all(&left).unwrap();
    fs::write(left.join("model.safetensors"), b"half").unwrap();
    let left_model = dir.path().join("saved_models/.step-12.tmp-99999");
    fs::create_dir_all(&left_model).unwrap();
    options.checkpoint = None;
    train(&plan(dir.path()).unwrap(), &options).unwrap();
    assert!(!left.exists() && !left_model.exists());
    let straight = project(
        r#"{"batch_size": 5, "num_epochs": 2, "exports_to_keep": 0,
            "optimization_config": {"optimizer": {"name": "sgd", "momentum": 0.9}, "learning_rate": 0.1}}"#,
        &[],
    );
    train(&plan(straight.path()).unwrap(), &self::options(false, None)).unwrap();
    assert_eq!(newest_weights(dir.path()), newest_weights(straight.path()));
}

#[test]
fn frozen_plugins_keep_their_weights_and_rmsprop_adamw_run() {
    for optimizer in [r#"{"name": "rmsprop"}"#, r#"{"name": "adamw"}"#] {
        let trainer = format!(
            r#"{{"batch_size": 5, "num_epochs": 1, "exports_to_keep": 0,
                "optimization_config": {{"optimizer": {optimizer}, "learning_rate": 0.01,
                "learning_rate_schedule": {{"name": "cosine", "steps": 4}}}}}}"#
        );
        let dir = project(&trainer, &[]);
        let r = run(dir.path(), false, None).unwrap();
        assert_eq!(r.global_step, 4, "{optimizer}");
    }
    let frozen = project(
        r#"{"batch_size": 5, "num_epochs": 1, "random_seed": 1, "exports_to_keep": 0}"#,
        &[(
            "plugins/line.json",
            r#"{"class_name": "Line", "name": "line", "inbound_nodes": ["dataset"], "trainable": false}"#,
        )],
    );
    let moving = project(
        r#"{"batch_size": 5, "num_epochs": 1, "random_seed": 1, "exports_to_keep": 0}"#,
        &[(
            "plugins/line.json",
            r#"{"class_name": "Line", "name": "line", "inbound_nodes": ["dataset"],
                "optimization_config": {"learning_rate_multiplier": 0.0}}"#,
        )],
    );
    let trained = project(
        r#"{"batch_size": 5, "num_epochs": 1, "random_seed": 1, "exports_to_keep": 0}"#,
        &[],
    );
    let f = run(frozen.path(), false, None).unwrap();
    let m = run(moving.path(), false, None).unwrap();
    let t = run(trained.path(), false, None).unwrap();
    // Frozen and a zero learning rate keep the initial weights: the loss stays the same per
    // batch order; training proper moves it.
    assert_eq!(f.losses, m.losses);
    assert_ne!(f.losses, t.losses);
    assert_eq!(newest_weights(frozen.path()), newest_weights(moving.path()));
}

#[test]
fn a_non_finite_loss_stops_with_the_step_and_the_loss_key() {
    let dir = project(
        r#"{"batch_size": 5, "num_epochs": 2}"#,
        &[(
            "datasets.json",
            r#"{"train": {"class_name": "Points", "name": "train_points", "len": 20, "poison": true},
                "eval": {"class_name": "Points", "name": "eval_points", "len": 8}}"#,
        )],
    );
    let err = run(dir.path(), false, None).unwrap_err().to_string();
    assert!(err.contains("not finite at step 1"), "{err}");
    assert!(err.contains("`mse/loss`"), "{err}");
}

#[test]
fn one_command_at_a_time_writes_into_a_project() {
    let dir = project(r#"{"batch_size": 5, "num_epochs": 1}"#, &[]);
    run(dir.path(), false, None).unwrap();
    // Another command holds the project: training, continuing and exporting are refused, and
    // nothing in the project changes.
    let held = nc7_core::project::ProjectLock::acquire(dir.path(), "infer").unwrap();
    let before = newest_weights(dir.path());
    for resume in [false, true] {
        let err = run(dir.path(), resume, Some(1)).unwrap_err().to_string();
        assert!(
            err.contains("is in use by `infer` (pid ") && err.contains("wait for it to end"),
            "{err}"
        );
    }
    let err = export_alone(&plan(dir.path()).unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is in use by `infer`"), "{err}");
    assert_eq!(newest_weights(dir.path()), before);
    drop(held);
    // Exporting builds the model: its random initial weights draw from burn's generator.
    export_alone(&plan(dir.path()).unwrap(), None).unwrap();
}

#[test]
fn a_panic_inside_a_step_fails_the_run_with_its_step() {
    let dir = project(
        r#"{"batch_size": 5, "num_epochs": 1}"#,
        &[(
            "losses/mse.json",
            r#"{"class_name": "Brittle", "name": "mse", "inbound_nodes": ["dataset", "line"]}"#,
        )],
    );
    let err = run(dir.path(), false, None).unwrap_err().to_string();
    assert!(
        err.contains(
            "training failed at step 1: index out of bounds: the len is 3 but the index is 5"
        ) && err.contains("the run is marked failed"),
        "{err}"
    );
    let record = fs::read_to_string(dir.path().join("nc7_project.json")).unwrap();
    assert!(record.contains("\"status\": \"failed\""), "{record}");
    let meta = fs::read_dir(dir.path().join("mlruns"))
        .unwrap()
        .flatten()
        .flat_map(|e| fs::read_dir(e.path()).into_iter().flatten().flatten())
        .map(|e| e.path().join("meta.yaml"))
        .find(|p| p.is_file() && fs::read_to_string(p).unwrap().contains("run_name"))
        .unwrap();
    assert!(
        fs::read_to_string(meta).unwrap().contains("status: 4\n"),
        "MLflow: FAILED"
    );
}

#[test]
fn bad_trainer_configs_and_devices_are_clear_errors() {
    let dir = project(r#"{"batch_size": 4, "num_epoch": 2}"#, &[]);
    let err = run(dir.path(), false, None).unwrap_err().to_string();
    assert!(err.contains("unknown field `num_epoch`"), "{err}");
    let dir = project(r#"{"batch_size": 4, "device": "tpu"}"#, &[]);
    let err = run(dir.path(), false, None).unwrap_err().to_string();
    assert!(err.contains("unknown device `tpu`"), "{err}");
    let dir = project(
        r#"{"batch_size": 4, "optimization_config": {"optimizer": {"name": "adagrad"}}}"#,
        &[],
    );
    let err = run(dir.path(), false, None).unwrap_err().to_string();
    assert!(err.contains("adagrad"), "{err}");
    // A tracking URI nc7 cannot track into: refused before training, saying what works.
    let dir = project(
        r#"{"batch_size": 4, "tracking": {"uri": "sqlite:///mlflow.db"}}"#,
        &[],
    );
    let err = run(dir.path(), false, None).unwrap_err().to_string();
    assert!(
        err.contains("trainer_config.tracking.uri")
            && err
                .contains("mlflow migrate-filestore --source mlruns --target sqlite:///mlflow.db"),
        "{err}"
    );
    // The project's device (project.toml) is the default of every run; an unknown key there
    // is an error too.
    let dir = project(r#"{"batch_size": 4}"#, &[]);
    fs::write(dir.path().join("project.toml"), "device = \"tpu\"\n").unwrap();
    let err = run(dir.path(), false, None).unwrap_err().to_string();
    assert!(
        err.contains("project.toml: device: unknown device `tpu`")
            && err.contains("(project.toml)"),
        "{err}"
    );
    fs::write(dir.path().join("project.toml"), "devise = \"cpu\"\n").unwrap();
    let err = run(dir.path(), false, None).unwrap_err().to_string();
    assert!(err.contains("unknown field `devise`"), "{err}");
    fs::write(dir.path().join("project.toml"), "device = \"cpu\"\n").unwrap();
    run(dir.path(), false, None).unwrap();
}

#[test]
fn threads_come_from_the_command_line_the_config_or_the_project_and_change_no_result() {
    let seen = |dir: &Path, threads: Option<usize>| {
        let _one_at_a_time = serial();
        READ_THREADS.lock().unwrap().clear();
        let request = TrainRequest {
            threads,
            ..TrainRequest::default()
        };
        let plan = TrainPlan::load(dir, &request, Registry::global()).unwrap();
        let report = train(&plan, &options(false, None)).unwrap();
        let read = std::mem::take(&mut *READ_THREADS.lock().unwrap());
        let recorded = ProjectMetadata::read(dir).unwrap().runs[0].threads;
        (
            report.evaluations.last().unwrap()["threads/threads"] as usize,
            read,
            recorded,
            newest_weights(dir),
        )
    };
    let metric = (
        "metrics/threads.json",
        r#"{"class_name": "ThreadsSeen", "name": "threads", "inbound_nodes": ["dataset", "line"]}"#,
    );
    let trainer = |threads: &str| TRAINER.replacen('{', &format!("{{{threads}"), 1);
    // The trainer config's; the read-ahead computes on its own one thread (the saved model's
    // input signature is read on the trainer's).
    let dir = project(&trainer(r#""threads": 3,"#), &[metric]);
    let (model, read, recorded, three) = seen(dir.path(), None);
    assert_eq!((model, recorded), (3, Some(3)));
    let read: Vec<_> = read.into_iter().collect();
    assert_eq!(
        read,
        [("nc7-compute".to_owned(), 3), ("nc7-stage".to_owned(), 1)]
    );
    // The command line's over it.
    let dir = project(&trainer(r#""threads": 3,"#), &[metric]);
    let (model, _, recorded, one) = seen(dir.path(), Some(1));
    assert_eq!((model, recorded), (1, Some(1)));
    assert_eq!(one, three, "the weights do not depend on the threads");
    // The project's when the config names none; every core when nothing does.
    let dir = project(&trainer(""), &[metric]);
    fs::write(dir.path().join("project.toml"), "threads = 2\n").unwrap();
    assert_eq!(seen(dir.path(), None).0, 2);
    let dir = project(&trainer(""), &[metric]);
    assert_eq!(seen(dir.path(), None).0, nc7_core::threads::available());

    // Zero, from wherever it comes, is refused with its field and file before anything runs.
    let refused = |dir: &Path, threads: Option<usize>| {
        let request = TrainRequest {
            threads,
            ..TrainRequest::default()
        };
        TrainPlan::load(dir, &request, Registry::global())
            .unwrap_err()
            .to_string()
    };
    let dir = project(&trainer(r#""threads": 0,"#), &[]);
    let err = refused(dir.path(), None);
    assert!(
        err.contains("trainer_config.threads is 0: a run needs at least one compute thread")
            && err.contains("trainer.json"),
        "{err}"
    );
    assert!(refused(dir.path(), Some(0)).contains("--threads is 0"));
    let dir = project(&trainer(""), &[]);
    fs::write(dir.path().join("project.toml"), "threads = 0\n").unwrap();
    let err = refused(dir.path(), None);
    assert!(err.contains("project.toml: threads is 0"), "{err}");
    fs::write(dir.path().join("project.toml"), "threads = \"two\"\n").unwrap();
    let err = refused(dir.path(), None);
    assert!(
        err.contains("project.toml") && err.contains("invalid type"),
        "{err}"
    );
    let dir = project(&trainer(r#""threads": -1,"#), &[]);
    let err = refused(dir.path(), None);
    assert!(
        err.contains("threads") && err.contains("invalid value"),
        "{err}"
    );
    // More threads than cores is allowed, with a warning.
    let many = nc7_core::threads::available() + 1;
    let dir = project(&trainer(&format!(r#""threads": {many},"#)), &[]);
    let plan = TrainPlan::load(dir.path(), &TrainRequest::default(), Registry::global()).unwrap();
    assert_eq!(plan.threads, many);
    let warning = plan
        .check
        .diagnostics
        .warnings()
        .next()
        .unwrap()
        .to_string();
    assert!(warning.contains("more than the"), "{warning}");
}

#[test]
fn the_command_line_trains_and_exports() {
    let _one_at_a_time = serial();
    let dir = project(r#"{"batch_size": 5, "num_epochs": 1}"#, &[]);
    let p = dir.path().to_str().unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run(
        ["nc7", "train", p, "--set", "trainer.num_epochs=2"],
        Default::default(),
        &mut out,
        &mut err,
    );
    let (o, e) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
    assert_eq!(code, 0, "{o}{e}");
    assert!(o.contains("trained 2 epochs (8 steps)"), "{o}");
    assert!(o.contains("saved model:"), "{o}");
    // The run record keeps the command line the run was given (not this test binary's).
    let record: Value =
        serde_json::from_slice(&fs::read(dir.path().join("nc7_project.json")).unwrap()).unwrap();
    assert_eq!(
        record["runs"][0]["command"],
        serde_json::json!(["nc7", "train", p, "--set", "trainer.num_epochs=2"])
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run(["nc7", "train", p], Default::default(), &mut out, &mut err);
    assert_eq!(code, 1);
    assert!(String::from_utf8_lossy(&err).contains("--continue"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run(["nc7", "export", p], Default::default(), &mut out, &mut err);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert!(String::from_utf8_lossy(&out).contains("step-8"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run(
        ["nc7", "train", p, "--continue", "--device", "cuda:0"],
        Default::default(),
        &mut out,
        &mut err,
    );
    if !cfg!(feature = "cuda") {
        assert_eq!(code, 1);
        assert!(String::from_utf8_lossy(&err).contains("--features cuda"));
    }
}

#[derive(Incoming)]
pub struct PredictionIn<B: Backend> {
    prediction: Tensor<B, 2>,
}

#[derive(Generated)]
pub struct Pictures<B: Backend> {
    image_ramp: Tensor<B, 3>,
    histogram_prediction: Tensor<B, 2>,
}

simple_nucleotide!(
    Picture,
    ModelSummary,
    Empty,
    PredictionIn<B>,
    Pictures<B>,
    {
        fn summarize(&self, input: PredictionIn<B>, _: Mode) -> Pictures<B> {
            let device = input.prediction.device();
            // A 4×6 grey ramp, channels last.
            let ramp: Vec<f32> = (0..24).map(|i| i as f32 / 23.0).collect();
            Pictures {
                image_ramp: Tensor::from_data(TensorData::new(ramp, [4, 6, 1]), &device),
                histogram_prediction: input.prediction,
            }
        }
    }
);

/// Asks the run to stop after training step `at`.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopAtConfig {
    at: u64,
}

#[nucleotide(kind = CoordinatorCallback)]
pub struct StopAt {
    at: u64,
}

impl<B: Backend> Build<B> for StopAt {
    type Config = StopAtConfig;
    type Input = LossIn<B>;
    type Output = NoKeys;
    fn build(c: &StopAtConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(StopAt { at: c.at })
    }
}

impl<B: Backend> nc7_core::nucleotide::CoordinatorCallback<B> for StopAt {
    fn on_iteration_end(
        &mut self,
        _: LossIn<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<NoKeys>, BoxError> {
        if ctx.summary_step == self.at {
            ctx.control
                .request_stop(format!("asked to stop at step {}", self.at));
        }
        Ok(Some(NoKeys))
    }
}

#[test]
fn early_stopping_keeping_the_best_and_stops_asked_by_callbacks() {
    // A frozen plugin: the evaluation loss never improves; patience 2 stops after the third
    // evaluation, and a continued run stops at once for the same reason.
    let flat = project(
        r#"{"batch_size": 5, "num_epochs": 10, "exports_to_keep": 0,
            "optimization_config": {"optimizer": {"name": "sgd"}},
            "early_stopping": {"monitor": "loss", "patience": 2}}"#,
        &[("plugins/line.json", FROZEN_LINE)],
    );
    let r = run(flat.path(), false, None).unwrap();
    assert_eq!(r.epochs, 3);
    let reason = r.stopped.unwrap();
    assert!(
        reason.contains("early stopping: `loss`") && reason.contains("after step 4"),
        "{reason}"
    );
    let again = run(flat.path(), true, None).unwrap();
    assert_eq!((again.epochs, again.losses.len()), (3, 0));
    assert!(again.stopped.unwrap().contains("early stopping"));
    let history: Value = serde_json::from_str(
        &fs::read_to_string(flat.path().join("training/evaluations.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(history.as_array().unwrap().len(), 3);

    // keep_best with `max` on a falling loss: the first checkpoint is the best and is kept
    // beside the newest, named in best.json, and exported with `--checkpoint best`.
    let best = project(
        r#"{"batch_size": 5, "num_epochs": 3, "checkpoints_to_keep": 1, "exports_to_keep": 0,
            "optimization_config": {"optimizer": {"name": "sgd"}, "learning_rate": 0.1},
            "keep_best": {"monitor": "loss", "mode": "max"}}"#,
        &[],
    );
    let r = run(best.path(), false, None).unwrap();
    assert!(r.evaluations[2]["loss"] < r.evaluations[0]["loss"]);
    let mut kept: Vec<String> = fs::read_dir(best.path().join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["best.json", "ckpt-12", "ckpt-4"]);
    let named: Value = serde_json::from_str(
        &fs::read_to_string(best.path().join("checkpoints/best.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(named["checkpoint"], "ckpt-4");
    assert_eq!(named["monitor"], "loss");
    let dir = export_alone(&plan(best.path()).unwrap(), Some(Path::new("best"))).unwrap();
    assert!(dir.ends_with("step-4"), "{}", dir.display());

    // A monitor the evaluation does not have: refused before the first step, with what the
    // evaluation has and the closest name.
    let unknown = project(
        r#"{"batch_size": 5, "num_epochs": 2, "keep_best": {"monitor": "accuracy"},
            "early_stopping": {"monitor": "mse/los"}}"#,
        &[],
    );
    let err = run(unknown.path(), false, None).unwrap_err().to_string();
    assert!(
        err.contains("error[NC0015]: trainer_config.keep_best.monitor `accuracy` is no evaluation value (training/configs/trainer.json)")
            && err.contains("help: evaluations give `loss`, `mse/loss`, `mae/mae`")
            && err.contains("trainer_config.early_stopping.monitor `mse/los` is no evaluation value; did you mean `mse/loss`?"),
        "{err}"
    );
    assert!(!unknown.path().join("checkpoints").exists());

    // A callback asks to stop after step 6 (mid epoch): a checkpoint there, and continuing
    // gives the uninterrupted run's losses.
    let trainer = r#"{"batch_size": 5, "num_epochs": 3, "random_seed": 3, "exports_to_keep": 0}"#;
    let whole = project(trainer, &[]);
    let all = run(whole.path(), false, None).unwrap();
    let stop = r#"{"class_name": "StopAt", "name": "stop", "inbound_nodes": ["mse"], "at": 6}"#;
    let asked = project(trainer, &[("callbacks_train/stop.json", stop)]);
    let a = run(asked.path(), false, None).unwrap();
    assert_eq!(a.global_step, 6);
    assert_eq!(a.stopped.as_deref(), Some("asked to stop at step 6"));
    assert!(asked.path().join("checkpoints/ckpt-6").is_dir());
    fs::remove_file(asked.path().join(C).join("callbacks_train/stop.json")).unwrap();
    let b = run(asked.path(), true, None).unwrap();
    let mut losses = a.losses;
    losses.extend(b.losses);
    assert_eq!(losses, all.losses);
    assert_eq!(b.evaluations, all.evaluations[1..].to_vec());
}

#[test]
fn load_config_starts_plugins_from_another_run_and_summaries_draw_images() {
    let picture = r#"{"class_name": "Picture", "name": "picture", "inbound_nodes": ["line"]}"#;
    let source = project(
        r#"{"batch_size": 5, "num_epochs": 1, "random_seed": 11, "summary_steps": 2}"#,
        &[("summaries/picture.json", picture)],
    );
    run(source.path(), false, None).unwrap();
    let saved = source.path().join("saved_models/step-4/model.safetensors");
    assert!(saved.is_file());

    // With a frozen plugin the target's checkpoint holds exactly what it loaded.
    let target_trainer = |load: &str| {
        format!(
            r#"{{"batch_size": 5, "num_epochs": 1, "random_seed": 99, "exports_to_keep": 0,
                "optimization_config": {{"optimizer": {{"name": "sgd"}}}},
                "load_config": [{load}]}}"#
        )
    };
    let src = serde_json::to_string(source.path().to_str().unwrap()).unwrap();
    let target = project(
        &target_trainer(&format!(
            r#"{{"path": {src}, "nucleotides": {{"line": "line"}}}}"#
        )),
        &[("plugins/line.json", FROZEN_LINE)],
    );
    run(target.path(), false, None).unwrap();
    let tensors = |bytes: &[u8]| -> Vec<(String, Vec<u8>)> {
        let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
        let mut v: Vec<(String, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.data().to_vec()))
            .collect();
        v.sort();
        v
    };
    let loaded = tensors(&newest_weights(target.path()));
    assert_eq!(loaded, tensors(&fs::read(&saved).unwrap()));
    let fresh = project(&target_trainer(""), &[("plugins/line.json", FROZEN_LINE)]);
    run(fresh.path(), false, None).unwrap();
    assert_ne!(
        tensors(&newest_weights(fresh.path())),
        loaded,
        "the seed alone gives other weights"
    );

    // A saved model whose weights changed after it was written: refused, not loaded.
    let flipped = tempfile::tempdir().unwrap();
    let copy = flipped.path().join("step-4");
    fs::create_dir_all(&copy).unwrap();
    for entry in fs::read_dir(saved.parent().unwrap()).unwrap().flatten() {
        fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let mut bytes = fs::read(copy.join("model.safetensors")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(copy.join("model.safetensors"), bytes).unwrap();
    let corrupt = serde_json::to_string(copy.to_str().unwrap()).unwrap();
    let refused = project(
        &target_trainer(&format!(
            r#"{{"path": {corrupt}, "nucleotides": {{"line": "line"}}}}"#
        )),
        &[],
    );
    let err = run(refused.path(), false, None).unwrap_err().to_string();
    assert!(
        err.contains("is corrupt: `model.safetensors` has") && err.contains("export it again"),
        "{err}"
    );

    // Bad sources: each error names the entry and what there is.
    for (load, expected) in [
        (
            r#"{"path": "missing", "nucleotides": ["line"]}"#.to_owned(),
            "load_config[0].path: `",
        ),
        (
            format!(r#"{{"path": {src}, "nucleotides": ["nope"]}}"#),
            "this project has no model plugin `nope`; it has `line`",
        ),
        (
            format!(r#"{{"path": {src}, "nucleotides": {{"line": "other"}}}}"#),
            "has no weights of a nucleotide `other`; it has `line`",
        ),
        (
            format!(
                r#"{{"path": {src}, "nucleotides": ["line"], "rename": {{"linear.": "lin."}}}}"#
            ),
            "no weights for parameter `linear.weight`",
        ),
    ] {
        let bad = project(&target_trainer(&load), &[]);
        let err = run(bad.path(), false, None).unwrap_err().to_string();
        assert!(err.contains(expected), "{load}: {err}");
    }

    // The source's summary images and histograms, read by TensorBoard.
    if let Some(out) = python::run_python(
        "tensorboard",
        "import sys, json\nfrom tensorboard.backend.event_processing.event_accumulator import EventAccumulator\nr = {}\nfor m in ('train', 'eval'):\n    a = EventAccumulator(sys.argv[1] + '/' + m, size_guidance={'images': 0, 'histograms': 0}); a.Reload()\n    r[m] = {'images': {t: [[e.step, e.width, e.height, len(e.encoded_image_string)] for e in a.Images(t)] for t in a.Tags()['images']},\n            'histograms': {t: [[e.step, e.histogram_value.num] for e in a.Histograms(t)] for t in a.Tags()['histograms']}}\nprint(json.dumps(r))",
        &[source.path().join("training/summaries").to_str().unwrap()],
    ) {
        let tb: Value = serde_json::from_str(out.trim()).unwrap();
        let images = tb["train"]["images"]["picture/ramp"].as_array().unwrap();
        // Summary steps 2 and 4 (the epoch's last).
        assert_eq!(images.len(), 2, "{tb}");
        assert_eq!(images[0][0], 2);
        assert_eq!(
            (images[0][1].as_u64(), images[0][2].as_u64()),
            (Some(6), Some(4))
        );
        let hist = tb["train"]["histograms"]["picture/prediction"]
            .as_array()
            .unwrap();
        assert_eq!(hist[0][1], 5.0, "a batch of 5 predictions");
        assert_eq!(tb["eval"]["images"]["picture/ramp"][0][0], 4);
    }
}

#[test]
fn records_saver_writes_each_evaluated_sample() {
    let saver = r#"{"class_name": "RecordsSaver", "name": "records",
                    "inbound_nodes": ["dataset", "line"], "samples_per_file": 5}"#;
    let samples = r#"{"class_name": "SampleSaver", "name": "samples",
                     "inbound_nodes": ["dataset", "line"], "save_prefix": "pred"}"#;
    let dir = project(
        r#"{"batch_size": 5, "num_epochs": 1, "exports_to_keep": 0}"#,
        &[
            ("callbacks_eval/records.json", saver),
            ("callbacks_eval/samples.json", samples),
        ],
    );
    run(dir.path(), false, None).unwrap();
    // One JSON file per evaluated sample, named by epoch, iteration and sample (spec §7).
    let eval = dir.path().join("training/callbacks/eval");
    let first: Value = serde_json::from_str(
        &fs::read_to_string(eval.join("pred-epoch_001_iter_00001_sample_000.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(first["x"], serde_json::json!([-1.0, -1.0]));
    assert!(first["prediction"][0].is_f64());
    assert!(
        eval.join("pred-epoch_001_iter_00002_sample_002.json")
            .is_file()
    );
    assert!(
        !eval
            .join("pred-epoch_001_iter_00002_sample_003.json")
            .exists()
    );
    // A prefix that would leave the callback's folder stops the run with the reason.
    let escape = project(
        r#"{"batch_size": 5, "num_epochs": 1, "exports_to_keep": 0}"#,
        &[(
            "callbacks_eval/samples.json",
            r#"{"class_name": "SampleSaver", "name": "samples",
                "inbound_nodes": ["dataset", "line"], "save_prefix": "../../escape"}"#,
        )],
    );
    let err = run(escape.path(), false, None).unwrap_err().to_string();
    assert!(err.contains("would leave the results folder"), "{err}");
    let folder = dir.path().join("training/callbacks/eval/records");
    let shards: Vec<Vec<nc7_core::data::records::Record>> = ["records-00000", "records-00001"]
        .iter()
        .map(|n| nc7_core::data::read_records(&folder.join(format!("{n}.safetensors"))).unwrap())
        .collect();
    assert_eq!(
        (shards[0].len(), shards[1].len()),
        (5, 3),
        "8 eval samples, 5 per shard"
    );
    let first = &shards[0][0];
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        ["prediction", "x", "y"],
        "every incoming key"
    );
    assert_eq!(first["x"].shape.to_vec(), [2]);
    assert_eq!(first["x"].to_vec::<f32>().unwrap(), [-1.0, -1.0]);
    assert_eq!(first["prediction"].shape.to_vec(), [1]);
}

/// The points dataset's sample `i`: `([x0, x1], y)`, as `Points` makes it.
fn point(i: usize) -> ([f32; 2], f32) {
    let a = ((i * 7919) % 97) as f32 / 48.5 - 1.0;
    let b = ((i * 104_729) % 89) as f32 / 44.5 - 1.0;
    ([a, b], 2.0 * a - b + 0.5)
}

/// The named f32 tensors of a safetensors file.
fn f32_tensors(bytes: &[u8]) -> BTreeMap<String, Vec<f32>> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, t)| {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (n, v)
        })
        .collect()
}

#[test]
fn evaluation_values_are_the_data_sets_not_a_mean_of_batch_means() {
    // 8 evaluation samples in batches of 3, 3 and 2.
    let dir = project(
        r#"{"batch_size": {"train": 4, "eval": 3}, "num_epochs": 1, "random_seed": 5,
            "exports_to_keep": 0}"#,
        &[],
    );
    let report = run(dir.path(), false, None).unwrap();
    let w = f32_tensors(&newest_weights(dir.path()));
    let (weight, bias) = (&w["line.linear.weight"], w["line.linear.bias"][0]);
    let errors: Vec<f64> = (0..8)
        .map(|i| {
            let (x, y) = point(i);
            f64::from((x[0] * weight[0] + x[1] * weight[1] + bias - y).abs())
        })
        .collect();
    let data_set = errors.iter().sum::<f64>() / 8.0;
    let batch_means = [&errors[0..3], &errors[3..6], &errors[6..8]]
        .iter()
        .map(|b| b.iter().sum::<f64>() / b.len() as f64)
        .sum::<f64>()
        / 3.0;
    assert!(
        (data_set - batch_means).abs() > 1e-4,
        "the case tells the two apart"
    );
    let got = report.evaluations[0]["mae/mae"];
    assert!(
        (got - data_set).abs() < 1e-5,
        "evaluation {got}, data set {data_set}, mean of batch means {batch_means}"
    );
}

#[test]
fn loss_weights_exclusions_and_weight_penalties_make_the_total_loss() {
    let trainer = r#"{"batch_size": 4, "num_epochs": 1, "random_seed": 2, "exports_to_keep": 0}"#;
    let second = r#"{"class_name": "Mse", "name": "again", "inbound_nodes": ["dataset", "line"]}"#;
    let eval = |model: &str, extra: &[(&str, &str)]| -> BTreeMap<String, f64> {
        let mut files = vec![("model.json", model)];
        files.extend_from_slice(extra);
        let dir = project(trainer, &files);
        run(dir.path(), false, None)
            .unwrap()
            .evaluations
            .pop()
            .unwrap()
    };
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(1.0);

    // A model weight on the loss, and a loss's own weight on its key.
    let e = eval(r#"{"loss_weights": {"mse": 2.0}}"#, &[]);
    assert!(close(e["loss"], 2.0 * e["mse/loss"]), "{e:?}");
    let weighted = r#"{"class_name": "Mse", "name": "mse", "inbound_nodes": ["dataset", "line"],
                       "loss_weights": {"loss": 3.0}}"#;
    let e = eval("{}", &[("losses/mse.json", weighted)]);
    assert!(close(e["loss"], 3.0 * e["mse/loss"]), "{e:?}");

    // A second loss excluded from the total is reported, not trained on.
    let excluded = r#"{"class_name": "Mse", "name": "again", "inbound_nodes": ["dataset", "line"],
                       "exclude_from_total_loss": true}"#;
    let e = eval("{}", &[("losses/again.json", excluded)]);
    assert!(close(e["loss"], e["mse/loss"]), "{e:?}");
    assert!(close(e["again/loss"], e["mse/loss"]), "{e:?}");
    let e = eval("{}", &[("losses/again.json", second)]);
    assert!(close(e["loss"], 2.0 * e["mse/loss"]), "{e:?}");

    // An L2 penalty of c·Σw²/2 over the trainable weights, in training and evaluation.
    let dir = project(trainer, &[("model.json", r#"{"regularization_l2": 0.5}"#)]);
    let r = run(dir.path(), false, None).unwrap();
    let e = &r.evaluations[0];
    let w = f32_tensors(&newest_weights(dir.path()));
    let squares: f64 = w
        .values()
        .flatten()
        .map(|v| f64::from(*v) * f64::from(*v))
        .sum();
    let penalty = e["regularization_loss_l2"];
    assert!(
        (penalty - 0.5 * squares / 2.0).abs() < 1e-6,
        "{penalty} vs {squares}"
    );
    assert!(close(e["loss"], e["mse/loss"] + penalty), "{e:?}");
    // L1 too; a frozen plugin is not penalised.
    let e = eval(r#"{"regularization_l1": 0.1}"#, &[]);
    assert!(e["regularization_loss_l1"] > 0.0, "{e:?}");
    let e = eval(
        r#"{"regularization_l1": 0.1}"#,
        &[("plugins/line.json", FROZEN_LINE)],
    );
    assert!(!e.contains_key("regularization_loss_l1"), "{e:?}");
}

#[test]
fn what_check_refuses_train_refuses_before_the_first_step() {
    let _one_at_a_time = serial();
    let trainer = r#"{"batch_size": 4, "num_epochs": 1}"#;
    let t = "training/configs/trainer.json";
    // (what, files changed, --set values, the file named, what the message says)
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
        &'a str,
        &'a [&'a str],
    );
    let cases: &[Case] = &[
        (
            "a float rank-2 key into an int rank-1 input",
            &[(
                "metrics/share.json",
                r#"{"class_name": "Share", "name": "share", "inbound_nodes": ["dataset"],
                    "incoming_keys_mapping": {"dataset": {"y": "labels"}}}"#,
            )],
            &[],
            "training/configs/metrics/share.json",
            &[
                "error[NC0017]",
                "incoming key `labels` of nucleotide `share` takes a int tensor of rank 1, but it is mapped from `dataset`'s `y`, a float tensor of rank 2",
                "help: map a key of the right kind",
            ],
        ),
        (
            "a mistyped trainer field",
            &[("trainer.json", r#"{"batch_size": 4, "num_epoch": 2}"#)],
            &[],
            t,
            &[
                "unknown field `num_epoch`",
                "help: use one of `trainer_config`'s fields",
            ],
        ),
        (
            "a learning rate of 0",
            &[(
                "trainer.json",
                r#"{"batch_size": 4, "optimization_config": {"learning_rate": 0}}"#,
            )],
            &[],
            t,
            &["trainer_config.optimization_config.learning_rate must be a positive number"],
        ),
        (
            "a negative learning rate, set on the command line",
            &[],
            &["trainer.optimization_config.learning_rate=-0.5"],
            t,
            &["learning_rate must be a positive number"],
        ),
        (
            "a monitor no evaluation gives",
            &[(
                "trainer.json",
                r#"{"batch_size": 4, "keep_best": {"monitor": "mae/ma"}}"#,
            )],
            &[],
            t,
            &["keep_best.monitor `mae/ma` is no evaluation value; did you mean `mae/mae`?"],
        ),
        (
            "a nucleotide name that cannot be a file name",
            &[(
                "metrics/mae.json",
                r#"{"class_name": "Mae", "name": "m/ae", "inbound_nodes": ["dataset", "line"]}"#,
            )],
            &[],
            "training/configs/metrics/mae.json",
            &["`m/ae` cannot be a file name"],
        ),
        (
            "a typo in the global config",
            &[("project_global_config.json", r#"{"Mse": {"lenn": 3}}"#)],
            &[],
            "training/configs/project_global_config.json",
            &["parameter `lenn` of scope `Mse` is declared by no `Mse`"],
        ),
        (
            "a nucleus7 model field nc7 does not implement",
            &[("model.json", r#"{"mixed_precision_config": {"use": true}}"#)],
            &[],
            "training/configs/model.json",
            &["model_config.mixed_precision_config: mixed precision is the trainer's `precision`"],
        ),
        (
            "model loss weights for a loss that is not there",
            &[("model.json", r#"{"loss_weights": {"msee": 2}}"#)],
            &[],
            "training/configs/model.json",
            &["names `msee`, which is no loss of the model; did you mean `mse`?"],
        ),
        (
            "loss weights on a plugin",
            &[(
                "plugins/line.json",
                r#"{"class_name": "Line", "name": "line", "inbound_nodes": ["dataset"],
                    "loss_weights": {"loss": 2}}"#,
            )],
            &[],
            "training/configs/plugins/line.json",
            &["only model losses take `loss_weights`"],
        ),
    ];
    for (what, files, set, file, says) in cases {
        let dir = project(trainer, files);
        let p = dir.path().to_str().unwrap();
        for command in ["check", "train"] {
            let mut args = vec!["nc7", command, p];
            for s in *set {
                args.extend(["--set", s]);
            }
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = cli::run(args, Default::default(), &mut out, &mut err);
            let err = String::from_utf8_lossy(&err);
            assert_eq!(code, 1, "{what}: `{command}` must refuse it:\n{err}");
            assert!(
                err.contains(&format!("({file})")),
                "{what}: `{command}` names {file}:\n{err}"
            );
            for s in *says {
                assert!(err.contains(s), "{what}: `{command}` says `{s}`:\n{err}");
            }
        }
        for folder in ["checkpoints", "training/summaries", "saved_models"] {
            assert!(
                !dir.path().join(folder).exists(),
                "{what}: no step ran ({folder})"
            );
        }
    }
}

/// One sample's prediction and target, as KPI nucleotides take them.
#[derive(Incoming)]
pub struct ScoredSample<B: Backend> {
    prediction: Tensor<B, 1>,
    y: Tensor<B, 1>,
}

#[derive(Generated)]
pub struct MaeKpiOut {
    mae: f64,
}

simple_nucleotide!(MaeKpi, KpiAccumulator, Empty, ScoredSample<B>, MaeKpiOut, {
    fn combine(&mut self, samples: Vec<ScoredSample<B>>) -> Result<MaeKpiOut, BoxError> {
        let n = samples.len() as f64;
        let sum: f64 = samples
            .into_iter()
            .map(|s| (s.prediction - s.y).abs().into_scalar().elem::<f64>())
            .sum();
        Ok(MaeKpiOut { mae: sum / n })
    }
});

#[test]
fn evaluations_run_kpis_into_summaries_the_saved_model_and_monitors() {
    let kpi =
        r#"{"class_name": "MaeKpi", "name": "mae_kpi", "inbound_nodes": ["dataset", "line"]}"#;
    // The monitor leaves out the accumulator's name: one accumulator alone gives `mae`.
    let dir = project(
        r#"{"batch_size": {"train": 4, "eval": 3}, "num_epochs": 2, "random_seed": 7,
            "keep_best": {"monitor": "kpi/mae", "mode": "min"}}"#,
        &[("kpi/mae.json", kpi)],
    );
    let p = plan(dir.path()).unwrap();
    assert_eq!(
        p.trainer.keep_best.as_ref().unwrap().monitor,
        "kpi/mae_kpi/mae"
    );
    let r = run(dir.path(), false, None).unwrap();
    for e in &r.evaluations {
        // Over every sample, as the metric weighted by samples (8 samples in batches of 3).
        let (kpi, metric) = (e["kpi/mae_kpi/mae"], e["mae/mae"]);
        assert!((kpi - metric).abs() < 1e-5, "{kpi} vs {metric}");
    }
    let step = r.global_step;
    let saved: Value = serde_json::from_str(
        &fs::read_to_string(
            dir.path()
                .join(format!("saved_models/step-{step}/eval_result.json")),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(saved.to_string().contains("kpi/mae_kpi/mae"), "{saved}");
    assert!(
        dir.path()
            .join(format!("training/kpi/step-{step}/mae_kpi.json"))
            .is_file()
    );
    let best: Value = serde_json::from_str(
        &fs::read_to_string(dir.path().join("checkpoints/best.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(best["monitor"], "kpi/mae_kpi/mae");
    let events: Vec<_> = fs::read_dir(dir.path().join("training/summaries/eval"))
        .unwrap()
        .flatten()
        .collect();
    let bytes = fs::read(events[0].path()).unwrap();
    assert!(
        bytes.windows(15).any(|w| w == b"kpi/mae_kpi/mae"),
        "the evaluation summaries hold the KPI"
    );

    // A KPI monitor no accumulator gives: refused at check, with the closest name.
    let unknown = project(
        r#"{"batch_size": 5, "num_epochs": 1, "keep_best": {"monitor": "kpi/mae_kpi/mea"}}"#,
        &[("kpi/mae.json", kpi)],
    );
    let err = plan(unknown.path()).unwrap_err().to_string();
    assert!(
        err.contains(
            "monitor `kpi/mae_kpi/mea` is no evaluation value; did you mean `kpi/mae_kpi/mae`?"
        ),
        "{err}"
    );
}

const MLFLOW_READ: &str = r#"
import json, os, sys
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
import warnings
warnings.simplefilter("ignore")
from mlflow.tracking import MlflowClient
client = MlflowClient("file://" + sys.argv[1])
experiment = [e for e in client.search_experiments() if e.name == sys.argv[2]][0]
runs = client.search_runs([experiment.experiment_id], filter_string="metrics.`eval/loss` < 1000")
run = runs[0]
history = lambda key: [m.step for m in client.get_metric_history(run.info.run_id, key)]
print(json.dumps({
    "runs": len(runs),
    "name": run.info.run_name,
    "status": run.info.status,
    "run_id": run.info.run_id,
    "params": run.data.params,
    "tags": {k: v for k, v in run.data.tags.items() if k.startswith("nc7.")},
    "train_steps": history("train/loss"),
    "eval_steps": history("eval/loss"),
    "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id)),
}))
"#;

#[test]
fn trainings_are_mlflow_runs_that_mlflow_reads_and_continue() {
    let dir = project(
        r#"{"batch_size": 5, "num_epochs": 2, "summary_steps": 2, "random_seed": 3,
            "exports_to_keep": 1}"#,
        &[],
    );
    // One epoch, then the second one continued: one MLflow run.
    let mut first = options(false, Some(1));
    first.command = vec!["nc7".into()];
    {
        let _serial = serial();
        train(&plan(dir.path()).unwrap(), &first).unwrap();
    }
    run(dir.path(), true, None).unwrap();
    let store = dir.path().join("mlruns");
    let name = dir
        .path()
        .canonicalize()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let Some(text) = python::run_python("mlflow", MLFLOW_READ, &[store.to_str().unwrap(), &name])
    else {
        return;
    };
    let read: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(read["runs"], 1, "{read}");
    // Named by its start by default: `20261202-071500`.
    let run_name = read["name"].as_str().unwrap();
    assert!(
        run_name.len() == 15 && run_name.as_bytes()[8] == b'-',
        "{run_name}"
    );
    assert_eq!(read["status"], "FINISHED");
    assert_eq!(read["params"]["trainer.batch_size"], "5", "{read}");
    assert_eq!(
        read["params"]["plugins.line.class_name"],
        "it::trainer::Line"
    );
    assert_eq!(read["tags"]["nc7.seed"], "3");
    // Steps 2, 4 of the first epoch, 6, 8 of the second: none twice.
    assert_eq!(read["train_steps"], json!([2, 4, 6, 8]), "{read}");
    assert_eq!(read["eval_steps"], json!([4, 8]), "{read}");
    assert_eq!(
        read["artifacts"],
        json!(["config.json", "eval_result.json", "plots"])
    );
    // The plots: training and evaluation curves, continued without repeated steps.
    let plots = dir.path().join("training/plots");
    let values: Value =
        serde_json::from_str(&fs::read_to_string(plots.join("values.json")).unwrap()).unwrap();
    let steps = |mode: &str| -> Vec<u64> {
        values[mode]["loss"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_u64().unwrap())
            .collect()
    };
    assert_eq!(steps("train"), [2, 4, 6, 8]);
    assert_eq!(steps("eval"), [4, 8]);
    for file in ["loss.svg", "loss.png", "learning_rate.svg", "mae_mae.png"] {
        assert!(plots.join(file).is_file(), "{file}");
    }
    let png = image::open(plots.join("loss.png")).unwrap();
    assert_eq!((png.width(), png.height()), (640, 400));
    let kept: Value = serde_json::from_str(
        &fs::read_to_string(dir.path().join("training/mlflow_run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(kept["run_id"], read["run_id"]);
    // MLflow's own migration moves the store into SQLite, where the run reads the same.
    let db = dir.path().join("mlflow.db");
    let migrated = python::run_python(
        "alembic",
        MLFLOW_MIGRATE,
        &[store.to_str().unwrap(), db.to_str().unwrap(), &name],
    )
    .map(|t| serde_json::from_str::<Value>(t.trim()).unwrap());
    if let Some(m) = migrated {
        assert_eq!(m["run_id"], read["run_id"], "{m}");
        assert_eq!(m["eval_steps"], json!([4, 8]), "{m}");
        assert_eq!(m["batch_size"], "5", "{m}");
    }
}

const MLFLOW_MIGRATE: &str = r#"
import json, os, subprocess, sys, warnings
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
warnings.simplefilter("ignore")
store, db, name = sys.argv[1], sys.argv[2], sys.argv[3]
subprocess.run([sys.executable, "-m", "mlflow", "migrate-filestore", "--source", store,
                "--target", "sqlite:///" + db], check=True, capture_output=True)
from mlflow.tracking import MlflowClient
client = MlflowClient("sqlite:///" + db)
experiment = client.get_experiment_by_name(name)
if experiment is None:
    sys.exit("no experiment %r after migrating; the database has %r" % (name, [e.name for e in client.search_experiments()]))
run = client.search_runs([experiment.experiment_id])[0]
print(json.dumps({
    "run_id": run.info.run_id,
    "batch_size": run.data.params["trainer.batch_size"],
    "eval_steps": [m.step for m in client.get_metric_history(run.info.run_id, "eval/loss")],
}))
"#;

const MLFLOW_SERVER_READ: &str = r#"
import json, math, sys, warnings
warnings.simplefilter("ignore")
from mlflow.tracking import MlflowClient
client = MlflowClient(sys.argv[1])
experiment = client.get_experiment_by_name("served")
trained = client.search_runs([experiment.experiment_id], filter_string="metrics.`eval/loss` < 1000")
history = lambda run_id, key: [[m.step, None if math.isnan(m.value) else m.value]
                               for m in client.get_metric_history(run_id, key)]
run = lambda run_id: client.get_run(run_id)
def artifacts(run_id, path=None):
    found = []
    for a in client.list_artifacts(run_id, path):
        found += artifacts(run_id, a.path) if a.is_dir else [a.path]
    return found
print(json.dumps({
    "trained": [{
        "status": r.info.status,
        "batch_size": r.data.params.get("trainer.batch_size"),
        "seed": r.data.tags.get("nc7.seed"),
        "train_steps": [p[0] for p in history(r.info.run_id, "train/loss")],
        "eval_steps": [p[0] for p in history(r.info.run_id, "eval/loss")],
        "artifacts": sorted(artifacts(r.info.run_id)),
    } for r in trained],
    "gone": {"status": run(sys.argv[2]).info.status, "x": history(sys.argv[2], "x")},
    "back": {"status": run(sys.argv[3]).info.status, "x": history(sys.argv[3], "x"),
             "params": run(sys.argv[3]).data.params},
}))
"#;

#[test]
fn a_tracking_server_gets_the_training_and_what_it_missed_while_down() {
    use crate::support::mlflow_server::MlflowServer;
    use nc7_core::tracking::mlflow::{MlflowRun, RetryPolicy, RunStatus, Target};
    use std::time::Duration;
    let store = tempfile::tempdir().unwrap();
    let Some(mut server) = MlflowServer::start(store.path(), None) else {
        return;
    };
    let url = server.url();
    // A training tracked on the server, set in its config.
    let dir = project(
        &format!(
            r#"{{"batch_size": 5, "num_epochs": 2, "summary_steps": 2, "random_seed": 3,
                "exports_to_keep": 1, "tracking": {{"uri": "{url}", "experiment": "served"}}}}"#
        ),
        &[],
    );
    run(dir.path(), false, None).unwrap();
    assert!(
        !dir.path().join("mlruns").exists(),
        "nothing tracked locally"
    );
    // Two runs while the server goes away: one ends while it is gone, the other goes on until
    // it is back.
    let policy = |flush: u64| RetryPolicy {
        retries: 1,
        backoff_factor: 0.05,
        jitter: 0.0,
        timeout: Duration::from_secs(10),
        flush_timeout: Duration::from_secs(flush),
    };
    let target = Target::Server(url.clone());
    let start = |name: &str, flush: u64| {
        MlflowRun::start_with(&target, policy(flush), dir.path(), "served", name, None).unwrap()
    };
    let (gone, back) = (start("gone", 1), start("back", 120));
    assert_eq!(gone.target, target, "both runs are on the server");
    for step in 1..=2 {
        gone.log_metrics([("x", step as f64)], step);
        back.log_metrics([("x", if step == 2 { f64::NAN } else { 1.0 })], step);
    }
    std::thread::sleep(Duration::from_millis(500));
    server.kill();
    for step in 3..=4 {
        gone.log_metrics([("x", step as f64)], step);
        back.log_metrics([("x", step as f64)], step);
    }
    back.log_params(&[("lr".to_string(), "0.1".to_string())].into());
    gone.end(RunStatus::Finished);
    let server = MlflowServer::start(store.path(), Some(server.port)).unwrap();
    back.log_metrics([("x", 5.0)], 5);
    back.end(RunStatus::Finished);
    let text = python::run_python(
        "mlflow",
        MLFLOW_SERVER_READ,
        &[&server.url(), &gone.id, &back.id],
    )
    .unwrap();
    let read: Value = serde_json::from_str(text.trim()).unwrap();
    let trained = &read["trained"];
    assert_eq!(trained.as_array().unwrap().len(), 1, "{read}");
    assert_eq!(trained[0]["status"], "FINISHED");
    assert_eq!(trained[0]["batch_size"], "5");
    assert_eq!(trained[0]["seed"], "3");
    assert_eq!(trained[0]["train_steps"], json!([2, 4, 6, 8]), "{read}");
    assert_eq!(trained[0]["eval_steps"], json!([4, 8]));
    let artifacts: Vec<&str> = trained[0]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for a in [
        "config.json",
        "eval_result.json",
        "plots/loss.svg",
        "plots/loss.png",
    ] {
        assert!(artifacts.contains(&a), "{a} in {artifacts:?}");
    }
    // The run that came back: every point, in order, with its NaN; its end and its param.
    assert_eq!(
        read["back"]["x"],
        json!([[1, 1.0], [2, null], [3, 3.0], [4, 4.0], [5, 5.0]]),
        "{read}"
    );
    assert_eq!(read["back"]["status"], "FINISHED");
    assert_eq!(read["back"]["params"]["lr"], "0.1");
    // The run that ended while the server was gone: the server has what it took before, the
    // project's store the rest, and together they are every point once.
    assert_eq!(
        read["gone"]["status"], "RUNNING",
        "its end never reached the server"
    );
    let mut steps: Vec<u64> = read["gone"]["x"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect();
    let local = dir.path().join("mlruns");
    let spilled = fs::read_dir(&local)
        .unwrap()
        .flatten()
        .flat_map(|e| fs::read_dir(e.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .find(|p| p.join("tags/nc7.remote_run_id").is_file())
        .expect("a local run holds what the server did not take");
    assert_eq!(
        fs::read_to_string(spilled.join("tags/nc7.remote_run_id")).unwrap(),
        gone.id
    );
    for line in fs::read_to_string(spilled.join("metrics/x"))
        .unwrap()
        .lines()
    {
        steps.push(line.split(' ').nth(2).unwrap().parse().unwrap());
    }
    steps.sort();
    assert_eq!(steps, [1, 2, 3, 4]);
}

#[cfg(feature = "notify")]
#[test]
fn the_notify_callback_mails_over_starttls_when_a_run_ends_or_fails() {
    use crate::support::smtp_sink::SmtpSink;
    use nc7_core::standard::notify::{NotifyConfig, send};
    let files = tempfile::tempdir().unwrap();
    let Some(sink) = SmtpSink::start(files.path(), false) else {
        return;
    };
    let open_port = sink.port;
    let notify = format!(
        r#"{{"class_name": "Notify", "name": "notify", "smtp_host": "127.0.0.1",
            "smtp_port": {}, "ca_file": "{}", "from": "nc7@example.com",
            "to": ["me@example.com", "team@example.com"]}}"#,
        sink.port,
        sink.ca.display()
    );
    // A training that finishes, and one whose loss is not finite at its first step.
    let extra = [("callbacks_train/notify.json", notify.as_str())];
    let finished = project(r#"{"batch_size": 5, "num_epochs": 1}"#, &extra);
    run(finished.path(), false, None).unwrap();
    let poisoned = r#"{"train": {"class_name": "Points", "name": "train_points", "len": 20, "poison": true},
                      "eval": {"class_name": "Points", "name": "eval_points", "len": 8}}"#;
    let failing = project(
        r#"{"batch_size": 5, "num_epochs": 1}"#,
        &[extra[0], ("datasets.json", poisoned)],
    );
    run(failing.path(), false, None).unwrap_err();
    let mails = sink.mails();
    assert_eq!(mails.len(), 2, "{mails:?}");
    assert_eq!(mails[0]["from"], "nc7@example.com");
    assert_eq!(
        mails[0]["to"],
        json!(["me@example.com", "team@example.com"])
    );
    assert_eq!(mails[0]["tls"], true, "sent after STARTTLS");
    let text = |i: usize| mails[i]["body"].as_str().unwrap().replace("\r\n", "\n");
    let subject = |i: usize| mails[i]["subject"].as_str().unwrap().to_owned();
    assert!(subject(0).ends_with(" finished"), "{}", subject(0));
    assert!(text(0).contains("finished at step 4"), "{}", text(0));
    assert!(text(0).contains("Last values:\n  loss = "), "{}", text(0));
    assert!(text(0).contains("MLflow run: "), "{}", text(0));
    assert!(subject(1).ends_with(" failed"), "{}", subject(1));
    assert!(text(1).contains("not finite at step 1"), "{}", text(1));

    // The login, over STARTTLS only: accepted, or refused with the server's answer.
    let secure = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(secure.path(), true).unwrap();
    let config: NotifyConfig = serde_json::from_value(json!({
        "smtp_host": "127.0.0.1", "smtp_port": sink.port, "ca_file": sink.ca,
        "from": "nc7@example.com", "to": ["me@example.com"],
    }))
    .unwrap();
    let login = |password: &str| Some(("nc7".to_string(), password.to_string()));
    send(&config, login("secret"), "subject", "body").unwrap();
    let err = send(&config, login("wrong"), "subject", "body")
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused") && err.contains("535"), "{err}");
    let err = send(&config, None, "subject", "body")
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused"), "{err}");
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["user"], "nc7");
    // A server whose certificate no trusted authority signed: refused, nothing sent.
    let mut untrusted = config.clone();
    untrusted.ca_file = None;
    let err = send(&untrusted, login("secret"), "s", "b")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("failed") || err.contains("certificate"),
        "{err}"
    );
    assert_eq!(sink.mails().len(), 1);
    // A mail that cannot be sent (nothing listens) is a warning: the training stands.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unsent = notify.replace(
        &format!("\"smtp_port\": {open_port}"),
        &format!("\"smtp_port\": {closed}"),
    );
    assert_ne!(unsent, notify);
    let lonely = project(
        r#"{"batch_size": 5, "num_epochs": 1}"#,
        &[("callbacks_train/notify.json", unsent.as_str())],
    );
    run(lonely.path(), false, None).unwrap();
    // A login in a config file is refused, saying where it belongs.
    let in_file = project(
        r#"{"batch_size": 5, "num_epochs": 1}"#,
        &[(
            "callbacks_train/notify.json",
            r#"{"class_name": "Notify", "name": "notify", "smtp_host": "h", "from": "a@b.c",
                "to": ["d@e.f"], "password": "hunter2"}"#,
        )],
    );
    let err = run(in_file.path(), false, None).unwrap_err().to_string();
    assert!(err.contains("NC7_SMTP_PASSWORD"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_profiled_training_writes_a_chrome_trace() {
    let dir = project(
        r#"{"batch_size": 5, "num_epochs": 1, "exports_to_keep": 0, "profile": true}"#,
        &[],
    );
    run(dir.path(), false, None).unwrap();
    let path = dir.path().join("training/profile/train-from-step-0.json");
    let events: Vec<Value> = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let count = |name: &str| events.iter().filter(|e| e["name"] == name).count();
    // Four steps: each reads a batch, runs the plugin, the loss, backward and the optimizer;
    // the evaluation reads its 8 samples in two batches.
    assert_eq!(count("read batch"), 6);
    assert_eq!(count("eval step"), 2);
    for name in [
        "step",
        "forward/line",
        "forward/mse",
        "backward",
        "optimizer",
        "callbacks",
    ] {
        assert_eq!(count(name), 4, "{name}");
    }
    assert_eq!(count("evaluation"), 1);
    assert_eq!(count("checkpoint"), 1);
    assert_eq!(count("loss"), 4, "a loss counter per step");
    let rates: Vec<f64> = events
        .iter()
        .filter(|e| e["name"] == "samples/s")
        .map(|e| e["args"]["samples/s"].as_f64().unwrap())
        .collect();
    assert_eq!(rates.len(), 4, "a throughput counter per step");
    assert!(rates.iter().all(|r| r.is_finite() && *r > 0.0), "{rates:?}");
    // Every span is complete, on a named thread.
    let named: Vec<&Value> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| &e["tid"])
        .collect();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        assert!(e["dur"].as_f64().unwrap() >= 0.0);
        assert!(named.contains(&&e["tid"]), "{e}");
    }
    // Off by default: no trace.
    let plain = project(
        r#"{"batch_size": 5, "num_epochs": 1, "exports_to_keep": 0}"#,
        &[],
    );
    run(plain.path(), false, None).unwrap();
    assert!(!plain.path().join("training/profile").exists());
    // A full disk: the continued run's trace cannot be written, and the training goes on.
    let full = project(
        r#"{"batch_size": 5, "num_epochs": 2, "exports_to_keep": 0}"#,
        &[],
    );
    run(full.path(), false, Some(1)).unwrap();
    let trace = full.path().join("training/profile/train-from-step-4.json");
    fs::create_dir_all(trace.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/dev/full", &trace).unwrap();
    let mut profiled = options(true, None);
    profiled.profile = true;
    let _one_at_a_time = serial();
    let report = train(&plan(full.path()).unwrap(), &profiled).unwrap();
    assert_eq!(report.global_step, 8);
}

#[test]
fn runs_are_listed_and_compared_from_the_run_record() {
    let _one_at_a_time = serial();
    let dir = project(
        r#"{"batch_size": 5, "num_epochs": 1, "random_seed": 3}"#,
        &[],
    );
    let p = dir.path().to_str().unwrap();
    let nc7 = |args: &[&str]| {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut argv = vec!["nc7"];
        argv.extend(args);
        let code = cli::run(argv, Default::default(), &mut out, &mut err);
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    };
    let (code, _, err) = nc7(&["runs", p]);
    assert_eq!(code, 1);
    assert!(err.contains("has no runs yet"), "{err}");
    assert_eq!(nc7(&["train", p]).0, 0);
    // A second training with another learning rate and seed, continued from the first.
    let (code, o, e) = nc7(&[
        "train",
        p,
        "--continue",
        "--set",
        "trainer.num_epochs=2",
        "--set",
        "trainer.optimization_config.learning_rate=0.5",
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let (code, list, _) = nc7(&["runs", p]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines[1].contains("train") && lines[1].contains("finished") && lines[1].contains("loss "),
        "{list}"
    );
    let record: Value =
        serde_json::from_slice(&fs::read(dir.path().join("nc7_project.json")).unwrap()).unwrap();
    let first = &record["runs"][0];
    assert_eq!(first["seed"], 3);
    assert_eq!(first["device"], "cpu");
    assert!(
        first["rustc_version"]
            .as_str()
            .unwrap()
            .starts_with("rustc ")
    );
    assert_eq!(first["config_hash"].as_str().unwrap().len(), 64);
    assert!(first["metrics"]["loss"].is_number());
    let (code, diff, _) = nc7(&["runs", p, "diff", "1", "2"]);
    assert_eq!(code, 0);
    assert!(diff.contains("  trainer.num_epochs: 1 → 2\n"), "{diff}");
    assert!(
        diff.contains("  trainer.optimization_config.learning_rate: (none) → 0.5\n"),
        "{diff}"
    );
    assert!(diff.contains("build and machine: the same\n"), "{diff}");
    assert!(diff.contains("values:\n  loss: "), "{diff}");
    let (code, _, err) = nc7(&["runs", p, "diff", "1", "9"]);
    assert_eq!(code, 1);
    assert!(err.contains("there is no run 9; `runs "), "{err}");
}

#[test]
fn continuing_refuses_another_data_order_unless_told() {
    let dir = project(
        r#"{"batch_size": 5, "num_epochs": 2, "random_seed": 3}"#,
        &[],
    );
    run(dir.path(), false, Some(1)).unwrap();
    fs::write(
        dir.path().join(C).join("trainer.json"),
        r#"{"batch_size": 4, "num_epochs": 2, "random_seed": 4}"#,
    )
    .unwrap();
    let err = run(dir.path(), true, None).unwrap_err().to_string();
    assert!(
        err.contains("the data order or the devices changed since it was written (random_seed 3 → 4, train batch size 5 → 4)")
            && err.contains("--accept-changed-order"),
        "{err}"
    );
    let mut accept = options(true, None);
    accept.accept_changed_order = true;
    let _serial = serial();
    let r = train(&plan(dir.path()).unwrap(), &accept).unwrap();
    assert_eq!(r.epochs, 2);
}

/// `export_checkpoint` holding the training lock: building the model draws its first weights
/// from burn's generator.
fn export_alone(
    plan: &TrainPlan,
    checkpoint: Option<&Path>,
) -> Result<std::path::PathBuf, TrainError> {
    let _one_at_a_time = serial();
    export_checkpoint(plan, checkpoint)
}

/// A training on several devices: `devices` from the config or `--devices`, a project with
/// 21 samples in batches of 4 (the last batch leaves the second device without a sample).
fn devices_run(
    dir: &Path,
    devices: Option<&[&str]>,
    resume: bool,
    max_epochs: Option<u64>,
    accept: bool,
) -> Result<TrainReport, TrainError> {
    let _one_at_a_time = serial();
    let request = TrainRequest {
        devices: devices.map(|d| d.iter().map(|s| s.to_string()).collect()),
        ..TrainRequest::default()
    };
    let plan = TrainPlan::load(dir, &request, Registry::global())?;
    let mut options = options(resume, max_epochs);
    options.accept_changed_order = accept;
    train(&plan, &options)
}

fn devices_project(trainer: &str) -> tempfile::TempDir {
    let datasets = r#"{"train": {"class_name": "Points", "name": "train_points", "len": 21},
        "eval": {"class_name": "Points", "name": "eval_points", "len": 8}}"#;
    let points = r#"{"class_name": "PointsLog", "name": "points", "inbound_nodes": ["dataset"]}"#;
    project(
        trainer,
        &[
            ("datasets.json", datasets),
            ("callbacks_eval/points.json", points),
        ],
    )
}

/// What the evaluation callback saw, by iteration: every sample once, in the data's order.
fn points_seen(dir: &Path) -> Vec<(String, Vec<f64>)> {
    let text = fs::read_to_string(dir.join("training/callbacks/eval/points.txt")).unwrap();
    let mut out: Vec<(String, Vec<f64>)> = Vec::new();
    for line in text.lines() {
        let (iteration, values) = line.split_once(' ').unwrap();
        let values: Vec<f64> = serde_json::from_str(values).unwrap();
        match out.last_mut() {
            Some((i, v)) if i == iteration => v.extend(values),
            _ => out.push((iteration.to_owned(), values)),
        }
    }
    out
}

#[test]
fn several_devices_train_like_one_repeat_bit_for_bit_and_resume_exactly() {
    let two = ["cpu:0", "cpu:1"];
    // One device, then two: the same losses to float tolerance (the gradients are summed in
    // another order), the same number of steps, every step's values over the whole batch.
    let one_dir = devices_project(TRAINER);
    let one = devices_run(one_dir.path(), None, false, None, false).unwrap();
    let two_dir = devices_project(TRAINER);
    let parallel = devices_run(two_dir.path(), Some(&two), false, None, false).unwrap();
    assert_eq!(parallel.global_step, one.global_step);
    assert_eq!(parallel.losses.len(), one.losses.len());
    const TOLERANCE: f64 = 1e-5;
    for (step, (a, b)) in one.losses.iter().zip(&parallel.losses).enumerate() {
        assert!(
            (a - b).abs() <= TOLERANCE * a.abs().max(1.0),
            "step {step}: one device {a}, two {b}"
        );
    }
    let (a, b) = (
        one.evaluations.last().unwrap()["mae/mae"],
        parallel.evaluations.last().unwrap()["mae/mae"],
    );
    assert!((a - b).abs() <= TOLERANCE, "evaluation: {a} vs {b}");
    // The evaluation is sharded too: its callbacks get each device's shard of a batch in
    // device order, so they see the samples one device would, in the same order.
    let seen = points_seen(two_dir.path());
    assert_eq!(seen, points_seen(one_dir.path()));
    assert_eq!(seen.len(), 4 * 3, "4 evaluations of 3 batches");
    let calls = |dir: &Path| {
        fs::read_to_string(dir.join("training/callbacks/eval/points.txt"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(
        (calls(one_dir.path()), calls(two_dir.path())),
        (12, 24),
        "one call per batch, one per device's shard"
    );
    let recorded = ProjectMetadata::read(two_dir.path()).unwrap().runs[0]
        .device
        .clone();
    assert_eq!(recorded.as_deref(), Some("cpu:0,cpu:1"));

    // Two devices again, from the config this time: bit for bit the same.
    let config = TRAINER.replacen('{', r#"{"devices": ["cpu:0", "cpu:1"], "#, 1);
    let again_dir = devices_project(&config);
    let again = devices_run(again_dir.path(), None, false, None, false).unwrap();
    assert_eq!(again.losses, parallel.losses);
    assert_eq!(
        newest_weights(again_dir.path()),
        newest_weights(two_dir.path())
    );

    // Stopped after two epochs and continued on the same devices: the uninterrupted run's
    // weights, bit for bit.
    let split = devices_project(&config);
    devices_run(split.path(), None, false, Some(2), false).unwrap();
    // Continuing on one device is refused, naming the change, unless asked for.
    let err = devices_run(split.path(), Some(&["cpu"]), true, Some(1), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("devices 2 → 1") && err.contains("--accept-changed-order"),
        "{err}"
    );
    devices_run(split.path(), None, true, None, false).unwrap();
    assert_eq!(newest_weights(split.path()), newest_weights(two_dir.path()));
    let accepted = devices_project(&config);
    devices_run(accepted.path(), None, false, Some(1), false).unwrap();
    let r = devices_run(accepted.path(), Some(&["cpu:0"]), true, None, true).unwrap();
    assert_eq!(r.global_step, parallel.global_step);

    // Bad device lists, refused before anything runs.
    let refused = |trainer: &str, devices: Option<&[&str]>, device: Option<&str>| {
        let dir = devices_project(trainer);
        let request = TrainRequest {
            devices: devices.map(|d| d.iter().map(|s| s.to_string()).collect()),
            device: device.map(|d| d.parse().unwrap()),
            ..TrainRequest::default()
        };
        TrainPlan::load(dir.path(), &request, Registry::global())
            .unwrap_err()
            .to_string()
    };
    let err = refused(TRAINER, Some(&["cpu:0", "cpu:0"]), None);
    assert!(err.contains("`cpu:0` is named twice"), "{err}");
    let err = refused(TRAINER, Some(&["cpu:0", "ndarray:1"]), None);
    assert!(
        err.contains("all of one kind") || err.contains("ndarray"),
        "{err}"
    );
    let err = refused(TRAINER, Some(&["cpu:0", "tpu:1"]), None);
    assert!(err.contains("unknown device `tpu:1`"), "{err}");
    let err = refused(TRAINER, Some(&[]), None);
    assert!(err.contains("no device named"), "{err}");
    let err = refused(TRAINER, Some(&["cpu:0", "cpu:1"]), Some("cpu"));
    assert!(
        err.contains("--device and --devices are both given"),
        "{err}"
    );
    let both = TRAINER.replacen('{', r#"{"device": "cpu", "devices": ["cpu:0"], "#, 1);
    let err = refused(&both, None, None);
    assert!(
        err.contains("both `device` and `devices`") && err.contains("trainer.json"),
        "{err}"
    );
    let five = ["cpu:0", "cpu:1", "cpu:2", "cpu:3", "cpu:4"];
    let err = refused(TRAINER, Some(&five), None);
    assert!(
        err.contains("names 5 devices, more than the 4 samples of a training batch"),
        "{err}"
    );
}

#[test]
fn mixed_precision_trains_in_half_precision_with_a_loss_scale_and_resumes_exactly() {
    use nc7_core::precision::Precision;
    let run_in = |dir: &Path, precision: Option<Precision>, resume: bool, max: Option<u64>| {
        let _one_at_a_time = serial();
        let request = TrainRequest {
            precision,
            ..TrainRequest::default()
        };
        let plan = TrainPlan::load(dir, &request, Registry::global()).unwrap();
        train(&plan, &options(resume, max)).unwrap()
    };
    let full = project(TRAINER, &[]);
    let f32_run = run_in(full.path(), None, false, None);
    for precision in [Precision::F16, Precision::Bf16] {
        // From the command line: the plugins compute in half precision, so the first loss
        // (before any step) is the f32 run's to half precision, not equal; the run learns.
        let dir = project(TRAINER, &[]);
        let half = run_in(dir.path(), Some(precision), false, None);
        assert_eq!(half.losses.len(), f32_run.losses.len());
        let (a, b) = (f32_run.losses[0], half.losses[0]);
        let tolerance = if precision == Precision::F16 {
            1e-3
        } else {
            1e-2
        };
        assert!(
            a != b && (a - b).abs() <= tolerance * a,
            "{precision}: first loss {a} (f32) vs {b}"
        );
        let (first, last) = (half.losses[0], *half.losses.last().unwrap());
        assert!(last < first / 2.0, "{precision}: {first} → {last}");
        // The loss scale is in the summaries and the checkpoints; a run stopped and
        // continued scales and steps as the uninterrupted one.
        let split = project(
            &TRAINER.replacen('{', &format!(r#"{{"precision": "{precision}", "#), 1),
            &[],
        );
        run_in(split.path(), None, false, Some(2));
        run_in(split.path(), None, true, None);
        assert_eq!(newest_weights(split.path()), newest_weights(dir.path()));
        let state = nc7_core::coordinator::Checkpoints::new(dir.path().join("checkpoints"), 9)
            .newest()
            .unwrap()
            .unwrap()
            .state;
        // f16 overflows at 65504: the first steps' scaled gradients overflow, those steps
        // are skipped and the scale halves until they fit; bf16 has f32's range.
        let scale = state["loss_scale"]["scale"].as_f64().unwrap();
        let initial = nc7_core::precision::LossScaler::INITIAL;
        match precision {
            Precision::F16 => assert!(scale < initial, "{state}"),
            _ => assert_eq!(scale, initial, "{state}"),
        }
    }
    // Half precision on two devices: the same steps as on one, to float tolerance.
    let one = project(TRAINER, &[]);
    let one = run_in(one.path(), Some(Precision::F16), false, None);
    let two = devices_project(&TRAINER.replacen('{', r#"{"precision": "f16", "#, 1));
    let two = devices_run(two.path(), Some(&["cpu:0", "cpu:1"]), false, None, false).unwrap();
    assert_eq!(two.global_step, 24);
    assert!(two.losses.iter().all(|l| l.is_finite()));
    assert!(one.losses.last() < one.losses.first());

    // A backend without half precision is refused before anything runs; a name that is not
    // a precision too.
    assert!(!nc7_core::backend::DeviceChoice::NdArray.supports(Precision::F16));
    if cfg!(feature = "ndarray") {
        let dir = project(TRAINER, &[]);
        let request = TrainRequest {
            precision: Some(Precision::Bf16),
            device: Some(nc7_core::backend::DeviceChoice::NdArray),
            ..TrainRequest::default()
        };
        let err = TrainPlan::load(dir.path(), &request, Registry::global())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "--precision is bf16: the `ndarray` device's backend does not compute in bf16"
            ),
            "{err}"
        );
    }
    let dir = project(&TRAINER.replacen('{', r#"{"precision": "f8", "#, 1), &[]);
    let err = TrainPlan::load(dir.path(), &TrainRequest::default(), Registry::global())
        .unwrap_err()
        .to_string();
    assert!(err.contains("precision") && err.contains("f8"), "{err}");
}

#[test]
fn a_device_whose_step_fails_fails_the_run_with_its_error_and_nothing_hangs() {
    // Without shuffling, the first batch is samples 0–3: the second device's shard is 2 and 3.
    for (fault, expected) in [
        (r#""broken": 3"#, "sample 3 is broken"),
        (r#""panics": 2"#, "sample 2: panicked: sample 2 panics"),
    ] {
        let datasets = format!(
            r#"{{"train": {{"class_name": "Points", "name": "train_points", "len": 21, {fault}}},
                "eval": {{"class_name": "Points", "name": "eval_points", "len": 8}}}}"#
        );
        let trainer = TRAINER.replacen(
            '{',
            r#"{"shuffle": false, "devices": ["cpu:0", "cpu:1"], "#,
            1,
        );
        let dir = project(&trainer, &[("datasets.json", &datasets)]);
        let (tx, rx) = std::sync::mpsc::channel();
        let path = dir.path().to_owned();
        std::thread::spawn(move || {
            let _one_at_a_time = serial();
            let result = TrainPlan::load(&path, &TrainRequest::default(), Registry::global())
                .map_err(TrainError::from)
                .and_then(|plan| train(&plan, &options(false, None)));
            let _ = tx.send(result.map(|r| r.global_step));
        });
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the run ended instead of hanging");
        let err = result.unwrap_err().to_string();
        assert!(err.contains(expected), "{fault}: {err}");
        // The project records the run as failed; a second run on the same devices works.
        let runs = ProjectMetadata::read(dir.path()).unwrap().runs;
        assert_eq!(runs[0].status.to_string(), "failed", "{fault}");
    }
    let again = devices_project(TRAINER);
    devices_run(
        again.path(),
        Some(&["cpu:0", "cpu:1"]),
        false,
        Some(1),
        false,
    )
    .unwrap();
}

#[test]
fn samples_are_read_with_their_epoch_and_the_run_seed_so_augmented_runs_repeat_and_resume() {
    let trainer = TRAINER.replacen('{', r#"{"shuffle": true, "#, 1);
    let datasets = r#"{"train": {"class_name": "Points", "name": "train_points", "len": 21, "augment": true},
        "eval": {"class_name": "Points", "name": "eval_points", "len": 8, "augment": true}}"#;
    let keys_of = |dir: &Path, devices: Option<&[&str]>, prefetch: Option<usize>| {
        if let Some(p) = prefetch {
            let t = fs::read_to_string(dir.join(C).join("trainer.json")).unwrap();
            let t = t.replacen('{', &format!(r#"{{"prefetch": {p}, "#), 1);
            fs::write(dir.join(C).join("trainer.json"), t).unwrap();
        }
        KEYS.lock().unwrap().clear();
        devices_run(dir, devices, false, None, false).unwrap();
        let mut keys = std::mem::take(&mut *KEYS.lock().unwrap());
        keys.sort_by_key(|k| (k.epoch, k.index));
        keys
    };
    let whole = project(&trainer, &[("datasets.json", datasets)]);
    let keys = keys_of(whole.path(), None, None);
    // Training reads each sample once per epoch with its data epoch; evaluation with epoch 0
    // (the same samples every time); every key carries the run's seed.
    for epoch in 1..=4 {
        let indices: Vec<usize> = keys
            .iter()
            .filter(|k| k.epoch == epoch)
            .map(|k| k.index)
            .collect();
        assert_eq!(indices, (0..21).collect::<Vec<_>>(), "epoch {epoch}");
    }
    assert!(keys.iter().filter(|k| k.epoch > 0).all(|k| k.seed == 7));
    // Four evaluations of the 8 samples with the run's seed; the saved models' signatures
    // read an evaluation batch by index alone (epoch 0, seed 0).
    let evaluated = keys.iter().filter(|k| k.epoch == 0 && k.seed == 7).count();
    assert_eq!(evaluated, 4 * 8);
    assert!(keys.iter().all(|k| k.seed == 7 || k.epoch == 0));
    // Another read-ahead, or two devices: the same keys, the same augmented samples.
    let no_prefetch = project(&trainer, &[("datasets.json", datasets)]);
    assert_eq!(keys_of(no_prefetch.path(), None, Some(0)), keys);
    assert_eq!(
        newest_weights(no_prefetch.path()),
        newest_weights(whole.path())
    );
    let two = project(&trainer, &[("datasets.json", datasets)]);
    let two_keys: Vec<_> = keys_of(two.path(), Some(&["cpu:0", "cpu:1"]), None)
        .into_iter()
        .filter(|k| k.epoch > 0)
        .collect();
    let one_keys: Vec<_> = keys.iter().copied().filter(|k| k.epoch > 0).collect();
    assert_eq!(
        two_keys, one_keys,
        "each sample read once per epoch over both devices"
    );
    // Stopped after two epochs and continued: the epochs after the stop read the same keys,
    // and the weights are the uninterrupted run's, bit for bit.
    let split = project(&trainer, &[("datasets.json", datasets)]);
    devices_run(split.path(), None, false, Some(2), false).unwrap();
    KEYS.lock().unwrap().clear();
    devices_run(split.path(), None, true, None, false).unwrap();
    let resumed: Vec<_> = std::mem::take(&mut *KEYS.lock().unwrap())
        .into_iter()
        .filter(|k| k.epoch > 0)
        .collect();
    assert!(resumed.iter().all(|k| k.epoch >= 3), "{resumed:?}");
    assert_eq!(newest_weights(split.path()), newest_weights(whole.path()));
}

#[test]
fn a_dataset_mix_draws_each_data_set_by_its_weight_repeats_and_resumes() {
    use nc7_core::data::SampleKey;
    use nc7_core::{Kind, Nest};
    type B = nc7_core::backend::Cpu;
    let mix = serde_json::json!({
        "datasets": [{"class_name": "Points", "name": "a", "len": 21},
                     {"class_name": "Points", "name": "b", "len": 5}],
        "weights": [3, 1], "samples_per_epoch": 20
    });
    let reg = Registry::global()
        .resolve("DatasetMix", Some(Kind::Dataset))
        .unwrap();
    let device = Default::default();
    let data = nc7_core::runtime::dataset::<B>(reg, "mix", &mix, &device).unwrap();
    assert_eq!(data.len(), 20);
    let source = |epoch, index| {
        let s = data
            .get_for(SampleKey {
                index,
                epoch,
                seed: 7,
            })
            .unwrap();
        let Some(Nest::Str(name)) = s.get("source") else {
            panic!("{s:?}")
        };
        let Some(Nest::Tensor(x)) = s.get("x") else {
            panic!("{s:?}")
        };
        (
            name.clone(),
            x.clone().into_data().unwrap().to_vec::<f32>().unwrap(),
        )
    };
    let (mut from_a, mut total) = (0, 0);
    for epoch in 1..=10 {
        let counts = data.epoch_counts(epoch, 7);
        assert_eq!(counts.values().sum::<usize>(), 20);
        from_a += counts["a"];
        total += 20;
        // Within an epoch a data set repeats no sample before all were given.
        let drawn: Vec<_> = (0..20).map(|i| source(epoch, i)).collect();
        for name in ["a", "b"] {
            let xs: Vec<_> = drawn.iter().filter(|d| d.0 == name).map(|d| &d.1).collect();
            let len = if name == "a" { 21 } else { 5 };
            let first: Vec<_> = xs.iter().take(len).collect();
            for (i, x) in first.iter().enumerate() {
                assert!(!first[..i].contains(x), "epoch {epoch}: `{name}` repeated");
            }
        }
        // The same key, the same sample; another epoch, other draws.
        assert_eq!(source(epoch, 3), source(epoch, 3));
    }
    let share = from_a as f64 / total as f64;
    assert!((0.6..0.9).contains(&share), "weights 3:1, `a` gave {share}");
    assert_ne!(
        (0..20).map(|i| source(1, i)).collect::<Vec<_>>(),
        (0..20).map(|i| source(2, i)).collect::<Vec<_>>()
    );

    // Training on the mix: the counts go to the summaries; a run stopped and continued ends
    // with the uninterrupted run's weights.
    let datasets = format!(
        r#"{{"train": {{"class_name": "DatasetMix", "name": "train_mix", "datasets": {},
             "weights": [3, 1], "samples_per_epoch": 20}},
            "eval": {{"class_name": "Points", "name": "eval_points", "len": 8}}}}"#,
        mix["datasets"]
    );
    let whole = project(TRAINER, &[("datasets.json", &datasets)]);
    devices_run(whole.path(), None, false, None, false).unwrap();
    let events: Vec<u8> = fs::read_dir(whole.path().join("training/summaries/train"))
        .unwrap()
        .flatten()
        .flat_map(|e| fs::read(e.path()).unwrap())
        .collect();
    for tag in ["samples/a", "samples/b"] {
        assert!(
            events.windows(tag.len()).any(|w| w == tag.as_bytes()),
            "no {tag} in the summaries"
        );
    }
    let split = project(TRAINER, &[("datasets.json", &datasets)]);
    devices_run(split.path(), None, false, Some(2), false).unwrap();
    devices_run(split.path(), None, true, None, false).unwrap();
    assert_eq!(newest_weights(split.path()), newest_weights(whole.path()));

    // Bad mixes, each named.
    for (change, expected) in [
        (
            json!({"weights": [3, 0]}),
            "`weights[1]` is 0: a sampling weight is more than 0",
        ),
        (json!({"weights": [-1, 1]}), "`weights[0]` is -1"),
        (json!({"weights": [0, 0]}), "`weights[0]` is 0"),
        (
            json!({"weights": [1]}),
            "`weights` has 1 values for 2 data sets",
        ),
        (json!({"datasets": []}), "`datasets` is empty"),
        (json!({"samples_per_epoch": 0}), "`samples_per_epoch` is 0"),
        (
            json!({"datasets": [{"class_name": "Points", "len": 3}]}),
            "`datasets[0]` has no `name`",
        ),
        (
            json!({"datasets": [{"class_name": "Pointz", "name": "p", "len": 3}]}),
            "`datasets[0]` (`p`)",
        ),
        (
            json!({"datasets": [{"class_name": "Points", "name": "p", "len": 3},
                                {"class_name": "Shapes", "name": "s", "samples": 3, "size": 8}]}),
            "the data sets of the mix give other keys: `s` has",
        ),
    ] {
        let mut bad = mix.clone();
        for (k, v) in change.as_object().unwrap() {
            bad[k] = v.clone();
        }
        if bad["datasets"].as_array().is_some_and(|d| d.len() != 2)
            && change.get("weights").is_none()
        {
            bad.as_object_mut().unwrap().remove("weights");
        }
        let err = nc7_core::runtime::dataset::<B>(reg, "mix", &bad, &device)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(expected), "{change}: {err}");
    }
}
