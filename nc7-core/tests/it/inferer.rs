//! The inferer end to end: a small image classifier is trained and exported, then run over a
//! folder of PNG files with savers, threaded and in one thread, with feed lists, shards and
//! every bad input the inference issue names.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use nc7_core::coordinator::{InferError, InferOptions, InferReport, TrainOptions, infer, train};
use nc7_core::nucleotide::{CallbackContext, CoordinatorCallback, DataFeeder, ModelPlugin};
use nc7_core::plan::{InferPlan, InferRequest, TrainPlan};
use nc7_core::{BoxError, Build, Generated, Incoming, Mode, NoKeys, Registry, cli, nucleotide};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Incoming)]
pub struct Pictures<B: Backend> {
    image: Tensor<B, 4>,
}

#[derive(Generated)]
pub struct Judged<B: Backend> {
    logits: Tensor<B, 2>,
    /// The image scaled by the model, saved as PNG by the savers.
    picture: Tensor<B, 4>,
}

#[derive(Incoming)]
pub struct Logits<B: Backend> {
    logits: Tensor<B, 2>,
}

#[derive(Generated)]
pub struct Class<B: Backend> {
    class: Tensor<B, 1, Int>,
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

/// Bright or dark: the mean pixel through a linear layer.
#[nucleotide(kind = ModelPlugin)]
#[derive(Module, Debug)]
pub struct Brightness<B: Backend> {
    linear: Linear<B>,
}

impl<B: Backend> Build<B> for Brightness<B> {
    type Config = Empty;
    type Input = Pictures<B>;
    type Output = Judged<B>;
    fn build(_: &Empty, device: &B::Device) -> Result<Self, BoxError> {
        Ok(Brightness {
            linear: LinearConfig::new(1, 2).init(device),
        })
    }
}

/// Where the model predicted and the callbacks ran: the kind of thread (`nc7-compute`,
/// `nc7-stage`) and the number of threads its parallel work would use.
static PREDICTED_ON: ThreadsSeen = ThreadsSeen::new(std::collections::BTreeSet::new());
static CALLED_BACK_ON: ThreadsSeen = ThreadsSeen::new(std::collections::BTreeSet::new());
type ThreadsSeen = std::sync::Mutex<std::collections::BTreeSet<(String, usize)>>;

fn seen_on(seen: &ThreadsSeen) {
    let name = std::thread::current().name().unwrap_or("").to_owned();
    let kind = name.split('-').take(2).collect::<Vec<_>>().join("-");
    seen.lock()
        .unwrap()
        .insert((kind, rayon::current_num_threads()));
}

impl<B: Backend> ModelPlugin<B> for Brightness<B> {
    fn forward(&self, input: Pictures<B>, _: Mode) -> Judged<B> {
        seen_on(&PREDICTED_ON);
        let [n, ..] = input.image.dims();
        let mean = input.image.clone().reshape([n as i32, -1]).mean_dim(1);
        Judged {
            logits: self.linear.forward(mean.mul_scalar(4.0).sub_scalar(2.0)),
            picture: input.image.mul_scalar(0.5),
        }
    }
}

simple_nucleotide!(Decide, ModelPostProcessor, Empty, Logits<B>, Class<B>, {
    fn process(&self, input: Logits<B>, _: Mode) -> Class<B> {
        Class {
            class: input.logits.argmax(1).squeeze_dim(1),
        }
    }
});

simple_nucleotide!(Ce, ModelLoss, Empty, Scored<B>, LossOut<B>, {
    fn loss(&self, input: Scored<B>, _: Mode) -> LossOut<B> {
        let device = input.logits.device();
        let targets = input.label.squeeze_dim(1);
        LossOut {
            loss: CrossEntropyLossConfig::new()
                .init(&device)
                .forward(input.logits, targets)
                .reshape([1]),
        }
    }
});

#[derive(Incoming)]
pub struct Seen<B: Backend> {
    class: Tensor<B, 1, Int>,
    file_name: Vec<String>,
}

/// `Log`'s config.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Fails on this iteration.
    #[serde(default)]
    fail_at: Option<usize>,
    /// Asks the run to stop after this iteration.
    #[serde(default)]
    stop_at: Option<usize>,
}

/// Writes one line per iteration to `log.txt`: iteration, is-last, file names and classes.
#[nucleotide(kind = CoordinatorCallback)]
pub struct Log {
    fail_at: Option<usize>,
    stop_at: Option<usize>,
}

impl<B: Backend> Build<B> for Log {
    type Config = LogConfig;
    type Input = Seen<B>;
    type Output = NoKeys;
    fn build(c: &LogConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(Log {
            fail_at: c.fail_at,
            stop_at: c.stop_at,
        })
    }
}

impl<B: Backend> CoordinatorCallback<B> for Log {
    fn on_iteration_end(
        &mut self,
        input: Seen<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<NoKeys>, BoxError> {
        use std::io::Write;
        let i = ctx.iteration.iteration;
        if self.fail_at == Some(i) {
            return Err(format!("refused iteration {i}").into());
        }
        if self.stop_at == Some(i) {
            ctx.control
                .request_stop(format!("enough after iteration {i}"));
        }
        assert_eq!(ctx.mode, Mode::Infer);
        seen_on(&CALLED_BACK_ON);
        let classes: Vec<i64> = input.class.into_data().convert::<i64>().to_vec().unwrap();
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ctx.log_dir.join("log.txt"))?;
        writeln!(
            f,
            "{i} {} {} {:?}",
            ctx.iteration.is_last,
            input.file_name.join(","),
            classes
        )?;
        Ok(Some(NoKeys))
    }
}

#[derive(Generated)]
pub struct Tile<B: Backend> {
    image: Tensor<B, 3>,
    file_name: String,
}

/// `Tiles`' config.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TilesConfig {
    /// Feed lists.
    lists: usize,
    /// Tiles per list.
    tiles: usize,
}

/// Feed lists of `tiles` 6×6 grey tiles, alternately dark and bright.
#[nucleotide(kind = DataFeeder)]
pub struct Tiles {
    lists: usize,
    tiles: usize,
    next: usize,
}

impl<B: Backend> Build<B> for Tiles {
    type Config = TilesConfig;
    type Input = NoKeys;
    type Output = Tile<B>;
    fn build(c: &TilesConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(Tiles {
            lists: c.lists,
            tiles: c.tiles,
            next: 0,
        })
    }
}

impl<B: Backend> DataFeeder<B> for Tiles {
    fn next_sample(&mut self) -> Result<Option<Tile<B>>, BoxError> {
        Err("Tiles gives feed lists".into())
    }
    fn feed_lists(&self) -> bool {
        true
    }
    fn next_feeds(&mut self) -> Result<Option<Vec<Tile<B>>>, BoxError> {
        if self.next == self.lists {
            return Ok(None);
        }
        self.next += 1;
        Ok(Some(
            (0..self.tiles)
                .map(|t| Tile {
                    image: Tensor::from_data(
                        TensorData::new(vec![(t % 2) as f32; 36], [1, 6, 6]),
                        &Default::default(),
                    ),
                    file_name: format!("list{}-tile{t}", self.next),
                })
                .collect(),
        ))
    }
}

/// Writes `n` grey 6×6 PNGs, even ones dark (label 0), odd ones bright (label 1), and their
/// label files.
fn write_images(dir: &Path, n: usize) {
    fs::create_dir_all(dir.join("images")).unwrap();
    fs::create_dir_all(dir.join("labels")).unwrap();
    for i in 0..n {
        let level = if i % 2 == 0 { 0.1 } else { 0.9 } + (i % 3) as f32 * 0.02;
        let data = TensorData::new(vec![level; 36], [1, 6, 6]);
        nc7_core::data::files::write_png(&dir.join(format!("images/im{i:02}.png")), &data).unwrap();
        fs::write(
            dir.join(format!("labels/im{i:02}.json")),
            (i % 2).to_string(),
        )
        .unwrap();
    }
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (p, t) in files {
        let path = dir.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, t).unwrap();
    }
}

/// A project trained for a few epochs on 12 images, with inference configs: the images
/// through `ImageFilesFeeder`, a PNG and JSON saver, a records saver and `Log`.
fn trained_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_images(&root.join("data"), 12);
    // Relative globs: relative to the project, whatever folder the tests run in.
    let list = r#"{"file_names": {"image": "data/images/*.png", "label": "data/labels/*.json"}}"#;
    write(
        root,
        &[
            (
                "training/configs/datasets.json",
                &format!(
                    r#"{{"train": {{"class_name": "ImageFiles", "name": "train_images", "color": "grey", "file_list": {list}}},
                         "eval": {{"class_name": "ImageFiles", "name": "eval_images", "color": "grey", "file_list": {list}}}}}"#
                ),
            ),
            (
                "training/configs/trainer.json",
                r#"{"batch_size": 4, "num_epochs": 6, "random_seed": 3,
                    "optimization_config": {"optimizer": {"name": "adam"}, "learning_rate": 0.1}}"#,
            ),
            (
                "training/configs/plugins/brightness.json",
                r#"{"class_name": "Brightness", "name": "brightness", "inbound_nodes": ["dataset"]}"#,
            ),
            (
                "training/configs/postprocessors/decide.json",
                r#"{"class_name": "Decide", "name": "decide", "inbound_nodes": ["brightness"]}"#,
            ),
            (
                "training/configs/losses/ce.json",
                r#"{"class_name": "Ce", "name": "ce", "inbound_nodes": ["dataset", "brightness"]}"#,
            ),
            (
                "inference/configs/datafeeder.json",
                &format!(
                    r#"{{"class_name": "ImageFilesFeeder", "name": "images", "color": "grey",
                         "file_list": {{"file_names": {{"image": "{}/data/images/*.png"}}}}}}"#,
                    root.display()
                ),
            ),
            ("inference/configs/inferer.json", r#"{"batch_size": 5}"#),
            (
                "inference/configs/callbacks/log.json",
                r#"{"class_name": "Log", "name": "log", "inbound_nodes": ["dataset", "decide"]}"#,
            ),
            (
                "inference/configs/callbacks/pictures.json",
                r#"{"class_name": "SampleSaver", "name": "pictures",
                    "inbound_nodes": ["dataset", "brightness", "decide"],
                    "incoming_keys_mapping": {"dataset": {"file_name": "save_names", "image": "_"}},
                    "image_keys": ["picture"], "save_prefix": "pred"}"#,
            ),
            (
                "inference/configs/callbacks/records.json",
                r#"{"class_name": "RecordsSaver", "name": "records",
                    "inbound_nodes": ["brightness", "decide"], "samples_per_file": 4}"#,
            ),
        ],
    );
    let _one_at_a_time = serial();
    let plan = TrainPlan::load(root, &Default::default(), Registry::global()).unwrap();
    let report = train(
        &plan,
        &TrainOptions {
            stop: Arc::new(AtomicBool::new(false)),
            ..TrainOptions::default()
        },
    )
    .unwrap();
    let last = report.evaluations.last().unwrap();
    assert!(last["loss"] < 0.5, "the classifier learns: {last:?}");
    dir
}

use crate::support::serial;

fn run(dir: &Path, request: InferRequest) -> Result<InferReport, InferError> {
    run_named(dir, request, None)
}

fn run_named(
    dir: &Path,
    request: InferRequest,
    run_name: Option<&str>,
) -> Result<InferReport, InferError> {
    let plan = InferPlan::load(dir, &request, Registry::global())?;
    let options = InferOptions {
        run_name: run_name.map(str::to_owned),
        ..InferOptions::default()
    };
    // Building the model draws its first weights from burn's generator.
    let _one_at_a_time = serial();
    infer(&plan, &options)
}

fn log_lines(run: &Path) -> Vec<String> {
    fs::read_to_string(run.join("results/log.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push((
                    e.path().strip_prefix(dir).unwrap().to_owned(),
                    fs::read(e.path()).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn runs_a_saved_model_over_images_threaded_and_in_one_thread_alike() {
    let dir = trained_project();
    let root = dir.path();
    let threaded = run(root, InferRequest::default()).unwrap();
    assert_eq!((threaded.samples, threaded.iterations), (12, 3));
    assert_eq!(threaded.run.name, "run-1");
    assert!(
        threaded
            .model
            .as_ref()
            .unwrap()
            .ends_with("saved_models/step-18"),
        "{:?}",
        threaded.model
    );
    // Iterations of 5, 5 and 2 samples, the last one known; every image classified right.
    let lines = log_lines(&threaded.run.dir);
    assert_eq!(
        lines,
        [
            "1 false im00,im01,im02,im03,im04 [0, 1, 0, 1, 0]",
            "2 false im05,im06,im07,im08,im09 [1, 0, 1, 0, 1]",
            "3 true im10,im11 [0, 1]",
        ]
    );
    let results = &threaded.run.results;
    // One PNG (the model's picture) and one JSON (logits and class) per image, named by file.
    let json: Value =
        serde_json::from_str(&fs::read_to_string(results.join("pred-im01.json")).unwrap()).unwrap();
    assert_eq!(json["class"], 1);
    assert_eq!(json["logits"].as_array().unwrap().len(), 2);
    let png = fs::read_dir(results)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("-picture.png"))
        .count();
    assert_eq!(png, 12);
    let picture = nc7_core::data::files::read_image(
        &results.join("pred-im01-picture.png"),
        nc7_core::data::files::Color::Grey,
    )
    .unwrap();
    let v: Vec<f32> = picture.to_vec().unwrap();
    assert!((v[0] - 0.46).abs() < 0.01, "half of 0.92: {}", v[0]);
    // Records: 12 samples in shards of 4.
    let records =
        nc7_core::data::read_records(&results.join("records/records-00002.safetensors")).unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(
        records[0].keys().collect::<Vec<_>>(),
        ["class", "logits", "picture"]
    );
    // The run folder: artifacts with the resolved config (the saved model's graph in it) and
    // `last_run`.
    let snapshot: Value = serde_json::from_str(
        &fs::read_to_string(threaded.run.artifacts.join("_config_infer_run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(snapshot["plugins_config"][0]["name"], "brightness");
    assert!(
        snapshot["saved_model"]
            .as_str()
            .unwrap()
            .ends_with("step-18")
    );
    assert_eq!(
        fs::read_link(root.join("inference/last_run")).unwrap(),
        Path::new("run-1")
    );

    // One thread, another batch size and a tiny prefetch: the same results, byte for byte.
    let single = run(
        root,
        InferRequest {
            single_thread: true,
            ..InferRequest::default()
        },
    )
    .unwrap();
    assert_eq!(single.run.name, "run-2");
    assert_eq!(files_under(&single.run.results), files_under(results));
    let small = run_named(
        root,
        InferRequest {
            batch_size: Some(2),
            prefetch: Some(1),
            ..InferRequest::default()
        },
        Some("small"),
    )
    .unwrap();
    assert_eq!(small.iterations, 6);
    assert_eq!(log_lines(&small.run.dir).len(), 6);
    assert!(log_lines(&small.run.dir)[5].starts_with("6 true im10,im11"));
    // A named run whose folder has results is refused.
    let again = run_named(root, InferRequest::default(), Some("small")).unwrap_err();
    assert!(again.to_string().contains("small"), "{again}");

    // A checkpoint runs with the training configs' model, and a chosen saved model by name.
    let from_checkpoint = run(
        root,
        InferRequest {
            checkpoint: Some("ckpt-18".into()),
            ..InferRequest::default()
        },
    )
    .unwrap();
    assert_eq!(
        files_under(&from_checkpoint.run.results),
        files_under(results)
    );
    let chosen = run(
        root,
        InferRequest {
            saved_model: Some("step-18".into()),
            single_thread: true,
            ..InferRequest::default()
        },
    )
    .unwrap();
    assert_eq!(chosen.samples, 12);

    // Shards split the file list: shard 1 of 3 holds every third image from the second.
    let shard = run(
        root,
        InferRequest {
            shard: Some((3, 1)),
            ..InferRequest::default()
        },
    )
    .unwrap();
    assert_eq!(shard.samples, 4);
    let out_of_range = run(
        root,
        InferRequest {
            shard: Some((3, 3)),
            ..InferRequest::default()
        },
    )
    .unwrap_err();
    assert!(
        out_of_range.to_string().contains("out of range"),
        "{out_of_range}"
    );

    // The same images through a data pipe (an image reader in a DataPipeFeeder) give the
    // same results.
    let feeder_file = root.join("inference/configs/datafeeder.json");
    let feeder = fs::read_to_string(&feeder_file).unwrap();
    fs::write(
        &feeder_file,
        r#"{"class_name": "DataPipeFeeder", "name": "images",
            "file_list": {"file_names": {"image": "./data/images/*.png"}},
            "readers": [{"class_name": "ImageReader", "name": "read", "color": "grey",
                          "inbound_nodes": ["file_list"],
                          "incoming_keys_mapping": {"file_list": {"image": "path", "file_name": "_"}}}]}"#,
    )
    .unwrap();
    let piped = run(root, InferRequest::default()).unwrap();
    assert_eq!(log_lines(&piped.run.dir), lines);
    fs::write(&feeder_file, feeder).unwrap();

    // A callback can stop the run.
    write(
        root,
        &[(
            "inference/configs/callbacks/log.json",
            r#"{"class_name": "Log", "name": "log", "inbound_nodes": ["dataset", "decide"], "stop_at": 1}"#,
        )],
    );
    let stopped = run(root, InferRequest::default()).unwrap();
    assert_eq!(stopped.stopped.as_deref(), Some("enough after iteration 1"));
    assert_eq!(log_lines(&stopped.run.dir).len(), 1);

    // The command line.
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = cli::run(
        [
            "nc7",
            "infer",
            root.to_str().unwrap(),
            "--batch-size",
            "6",
            "--single-thread",
            "--set",
            "callbacks.log.stop_at=null",
            "--run-name",
            "cli",
        ],
        Default::default(),
        &mut out,
        &mut err,
    );
    let text = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{text}{}", String::from_utf8_lossy(&err));
    assert!(
        text.contains("inferred 12 samples in 2 iterations"),
        "{text}"
    );
    assert!(text.contains("inference/cli/results"), "{text}");
    assert_eq!(log_lines(&root.join("inference/cli")).len(), 2);
}

#[test]
fn prediction_runs_on_the_compute_threads_and_each_other_stage_on_one() {
    let dir = trained_project();
    let root = dir.path();
    let mut results = Vec::new();
    for (threads, single_thread) in [(3, false), (1, false), (3, true)] {
        let request = InferRequest {
            threads: Some(threads),
            single_thread,
            ..InferRequest::default()
        };
        let plan = InferPlan::load(root, &request, Registry::global()).unwrap();
        assert_eq!(plan.threads, threads);
        let _one_at_a_time = serial();
        PREDICTED_ON.lock().unwrap().clear();
        CALLED_BACK_ON.lock().unwrap().clear();
        let report = infer(&plan, &InferOptions::default()).unwrap();
        let on = |seen: &ThreadsSeen| std::mem::take(&mut *seen.lock().unwrap());
        let compute = [("nc7-compute".to_owned(), threads)].into();
        assert_eq!(on(&PREDICTED_ON), compute);
        let callbacks = if single_thread {
            compute
        } else {
            [("nc7-stage".to_owned(), 1)].into()
        };
        assert_eq!(on(&CALLED_BACK_ON), callbacks);
        results.push(files_under(&report.run.results));
    }
    assert!(!results[0].is_empty());
    assert_eq!(results[0], results[1], "one compute thread or three");
    assert_eq!(results[0], results[2], "threaded or in one thread");
}

#[test]
fn joined_file_lists_are_read_in_order_each_sharded_with_relative_globs() {
    let dir = trained_project();
    let root = dir.path();
    // Two lists, globs relative to the project (the tests run elsewhere); the command line's
    // shard splits each.
    write(
        root,
        &[(
            "inference/configs/datafeeder.json",
            r#"{"class_name": "ImageFilesFeeder", "name": "images", "color": "grey",
                "file_list": [{"file_names": {"image": "data/images/im0*.png"}},
                              {"file_names": {"image": "data/images/im1*.png"}}]}"#,
        )],
    );
    let request = InferRequest {
        shard: Some((2, 1)),
        ..InferRequest::default()
    };
    let report = run(root, request).unwrap();
    assert_eq!(
        log_lines(&report.run.dir),
        [
            "1 false im01,im03,im05,im07,im09 [1, 1, 1, 1, 1]",
            "2 true im11 [1]",
        ]
    );
    // A bad list is named.
    write(
        root,
        &[(
            "inference/configs/datafeeder.json",
            r#"{"class_name": "ImageFilesFeeder", "name": "images", "color": "grey",
                "file_list": [{"file_names": {"image": "data/images/*.png"}},
                              {"file_names": {"image": "data/none/*.png"}}]}"#,
        )],
    );
    let err = run(root, InferRequest::default()).unwrap_err().to_string();
    assert!(
        err.contains("file list 2 of 2: the file list is empty"),
        "{err}"
    );
}

#[test]
fn feed_lists_run_in_batches_and_are_put_back_together() {
    let dir = trained_project();
    let root = dir.path();
    write(
        root,
        &[
            (
                "inference/configs/datafeeder.json",
                r#"{"class_name": "Tiles", "name": "tiles", "lists": 2, "tiles": 5}"#,
            ),
            ("inference/configs/callbacks/pictures.json", r#"[]"#),
            ("inference/configs/callbacks/records.json", r#"[]"#),
        ],
    );
    for single_thread in [false, true] {
        // Batches of 2: each list of 5 tiles runs as 3 batches, joined into one iteration.
        let r = run(
            root,
            InferRequest {
                batch_size: Some(2),
                single_thread,
                ..InferRequest::default()
            },
        )
        .unwrap();
        assert_eq!((r.iterations, r.samples), (2, 10));
        assert_eq!(
            log_lines(&r.run.dir),
            [
                "1 false list1-tile0,list1-tile1,list1-tile2,list1-tile3,list1-tile4 [0, 1, 0, 1, 0]",
                "2 true list2-tile0,list2-tile1,list2-tile2,list2-tile3,list2-tile4 [0, 1, 0, 1, 0]",
            ]
        );
    }
}

#[test]
fn bad_inputs_are_clear_errors_and_keep_what_was_written() {
    let dir = trained_project();
    let root = dir.path();
    let err = |options: InferRequest| run(root, options).unwrap_err().to_string();

    // No batch size anywhere.
    write(root, &[("inference/configs/inferer.json", "{}")]);
    let e = err(InferRequest::default());
    assert!(
        e.contains("no batch size for inference (inference/configs/inferer.json)")
            && e.contains("help: give `--batch-size N`"),
        "{e}"
    );
    write(
        root,
        &[("inference/configs/inferer.json", r#"{"batch_size": 5}"#)],
    );

    // A saved model that is not there.
    let e = err(InferRequest {
        saved_model: Some("step-99".into()),
        ..InferRequest::default()
    });
    assert!(e.contains("saved model `step-99`"), "{e}");
    assert!(e.contains("has `step-12`, `step-15`, `step-18`"), "{e}");

    // A data feeder whose samples do not fit the saved model: RGB images for a grey model.
    let feeder = fs::read_to_string(root.join("inference/configs/datafeeder.json")).unwrap();
    write(
        root,
        &[(
            "inference/configs/datafeeder.json",
            &feeder.replace("\"grey\"", "\"rgb\""),
        )],
    );
    let e = err(InferRequest::default());
    assert!(
        e.contains("key `image`: the model was exported with `image` float F32 [_, 1, 6, 6], the data feeder gives `image` float F32 [_, 3, 6, 6]"),
        "{e}"
    );
    assert!(e.contains("the saved model's inputs: `file_name` string, `image` float F32 [_, 1, 6, 6], `label` int I32 [_, 1]"), "{e}");
    write(root, &[("inference/configs/datafeeder.json", &feeder)]);

    // An empty file list names its glob.
    let e = err(InferRequest {
        overrides: nc7_core::config::Overrides {
            set: vec!["datafeeder.file_list.file_names.image=/nowhere/*.png".into()],
            ..Default::default()
        },
        ..InferRequest::default()
    });
    assert!(e.contains("/nowhere/*.png"), "{e}");

    // A corrupt image: the error names its file; --skip-bad-samples logs it and goes on.
    fs::write(root.join("data/images/im03.png"), b"not a png").unwrap();
    let e = err(InferRequest::default());
    assert!(e.contains("im03.png"), "{e}");
    assert!(e.contains("--skip-bad-samples"), "{e}");
    let skipped = run(
        root,
        InferRequest {
            skip_bad_samples: true,
            ..InferRequest::default()
        },
    )
    .unwrap();
    assert_eq!(skipped.samples, 11);
    assert_eq!(skipped.skipped.len(), 1);
    assert!(skipped.skipped[0].contains("im03.png"));
    assert!(!log_lines(&skipped.run.dir).join(" ").contains("im03"));
    // Runs that fail, or whose process is killed, never become the last run; their folders
    // say how they ended.
    let last = || fs::canonicalize(root.join("inference/last_run")).unwrap();
    assert_eq!(last(), fs::canonicalize(&skipped.run.dir).unwrap());
    let status = |dir: &std::path::Path| -> String {
        let text = fs::read_to_string(dir.join("status.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status(&skipped.run.dir), "finished");
    err(InferRequest::default());
    assert_eq!(last(), fs::canonicalize(&skipped.run.dir).unwrap());
    let failed = nc7_core::project::InferenceRun::create(root, None).unwrap();
    // (A process killed now leaves this folder as it is.)
    assert_eq!(status(&failed.dir), "running");
    assert_eq!(last(), fs::canonicalize(&skipped.run.dir).unwrap());

    // A callback that fails stops the run; what the savers hold is still written.
    write(
        root,
        &[(
            "inference/configs/callbacks/log.json",
            r#"{"class_name": "Log", "name": "log", "inbound_nodes": ["dataset", "decide"], "fail_at": 2}"#,
        )],
    );
    for single_thread in [false, true] {
        let r = run(
            root,
            InferRequest {
                skip_bad_samples: true,
                single_thread,
                ..InferRequest::default()
            },
        );
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("callback `log` failed: refused iteration 2"),
            "{e}"
        );
        // The failed run is the newest folder (`last_run` names finished runs only).
        let newest = fs::read_dir(root.join("inference"))
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let n: u64 = e.file_name().to_str()?.strip_prefix("run-")?.parse().ok()?;
                Some((n, e.path()))
            })
            .max()
            .unwrap()
            .1;
        let results = newest.join("results");
        assert_eq!(log_lines(results.parent().unwrap()).len(), 1);
        // The records saver had iteration 1 at least (it does not depend on `log`) and wrote
        // its unfinished shard at the end.
        let records: usize = fs::read_dir(results.join("records"))
            .unwrap()
            .flatten()
            .map(|e| nc7_core::data::read_records(&e.path()).unwrap().len())
            .sum();
        assert!(records >= 5, "{records}");
    }

    // Save names that would leave the results folder are refused.
    write(
        root,
        &[
            (
                "inference/configs/callbacks/log.json",
                r#"{"class_name": "Log", "name": "log", "inbound_nodes": ["dataset", "decide"]}"#,
            ),
            (
                "inference/configs/callbacks/pictures.json",
                r#"{"class_name": "SampleSaver", "name": "pictures",
                    "inbound_nodes": ["brightness"], "save_prefix": "../../../escape"}"#,
            ),
        ],
    );
    let e = err(InferRequest {
        skip_bad_samples: true,
        ..InferRequest::default()
    });
    assert!(e.contains("would leave the results folder"), "{e}");
    assert!(!root.join("escape").exists() && !root.join("inference/escape").exists());

    // Without any saved model.
    fs::remove_dir_all(root.join("saved_models")).unwrap();
    let e = err(InferRequest::default());
    assert!(e.contains("no saved model in"), "{e}");
    assert!(e.contains("train the project first"), "{e}");
}

#[derive(Incoming)]
pub struct Buffered<B: Backend> {
    buffered_samples: i64,
    keys: nc7_core::Nest<B>,
}

/// `Dump`'s config.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DumpConfig {
    /// The file in the results folder.
    file: String,
}

/// Appends one line per call: iteration, buffered samples, then each key's shape and values.
#[nucleotide(kind = CoordinatorCallback)]
pub struct Dump {
    file: String,
}

impl<B: Backend> Build<B> for Dump {
    type Config = DumpConfig;
    type Input = Buffered<B>;
    type Output = NoKeys;
    fn build(c: &DumpConfig, _: &B::Device) -> Result<Self, BoxError> {
        Ok(Dump {
            file: c.file.clone(),
        })
    }
}

impl<B: Backend> CoordinatorCallback<B> for Dump {
    fn on_iteration_end(
        &mut self,
        input: Buffered<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<NoKeys>, BoxError> {
        use std::io::Write;
        let mut line = format!("{} {}", ctx.iteration.iteration, input.buffered_samples);
        for (key, value) in input.keys.flatten() {
            let nc7_core::Nest::Tensor(t) = value else {
                continue;
            };
            let shape = t.shape().to_vec();
            let data = t.clone().into_data()?.convert::<f64>();
            let values: Vec<String> = data
                .to_vec::<f64>()
                .unwrap()
                .iter()
                .map(|v| format!("{v:.3}"))
                .collect();
            line.push_str(&format!(" {key} {shape:?} [{}]", values.join(",")));
        }
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ctx.log_dir.join(&self.file))?;
        writeln!(f, "{line}")?;
        Ok(Some(NoKeys))
    }
}

#[test]
fn buffer_callbacks_hand_on_what_they_buffered() {
    let dir = trained_project();
    let root = dir.path();
    write(
        root,
        &[
            ("inference/configs/callbacks/pictures.json", "[]"),
            ("inference/configs/callbacks/records.json", "[]"),
            (
                "inference/configs/callbacks/buffers.json",
                r#"[
                  {"class_name": "BufferCallback", "name": "mean", "buffer": "average",
                   "inbound_nodes": ["brightness"],
                   "incoming_keys_mapping": {"brightness": {"picture": "_"}}},
                  {"class_name": "BufferCallback", "name": "all", "inbound_nodes": ["decide", "brightness"],
                   "incoming_keys_mapping": {"brightness": {"picture": "_"}}},
                  {"class_name": "BufferCallback", "name": "flagged",
                   "inbound_nodes": ["decide", "brightness"],
                   "incoming_keys_mapping": {"decide": {"class": "evaluate"},
                                             "brightness": {"picture": "_"}}},
                  {"class_name": "Dump", "name": "dump_mean", "inbound_nodes": ["mean"], "file": "mean.txt"},
                  {"class_name": "Dump", "name": "dump_all", "inbound_nodes": ["all"], "file": "all.txt"},
                  {"class_name": "Dump", "name": "dump_flagged", "inbound_nodes": ["flagged"], "file": "flagged.txt"}
                ]"#,
            ),
        ],
    );
    let r = run(root, InferRequest::default()).unwrap();
    let read = |f: &str| fs::read_to_string(r.run.results.join(f)).unwrap();
    // Without a flag: handed on once, on the last iteration, with all 12 samples.
    let values = |line: &str, key: &str| -> Vec<f64> {
        let after = line.split(&format!(" {key} ")).nth(1).unwrap();
        let list = after.split('[').nth(2).unwrap().split(']').next().unwrap();
        list.split(',').map(|v| v.parse().unwrap()).collect()
    };
    let all = read("all.txt");
    assert_eq!(all.lines().count(), 1, "{all}");
    assert!(all.starts_with("3 12 class [12] ["), "{all}");
    assert_eq!(
        values(&all, "class"),
        [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    );
    assert!(all.contains(" logits [12, 2] ["), "{all}");
    // The average buffer's mean is the mean of every buffered sample's logits.
    let logits = values(&all, "logits");
    let mean = read("mean.txt");
    assert!(mean.starts_with("3 12 logits [2] ["), "{mean}");
    let expected: Vec<f64> = (0..2)
        .map(|j| (0..12).map(|i| logits[i * 2 + j]).sum::<f64>() / 12.0)
        .collect();
    for (m, e) in values(&mean, "logits").iter().zip(&expected) {
        assert!((m - e).abs() < 0.002, "{mean} vs {expected:?}");
    }
    // With a flag (the batch has a class 1): handed on every iteration, then emptied.
    let flagged = read("flagged.txt");
    let counts: Vec<&str> = flagged
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(counts, ["5", "5", "2"], "{flagged}");
}
