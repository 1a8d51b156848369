//! Backbone, neck and head: a backbone trained for one task starts another by config alone,
//! backbones swap by class name, and a head mapped to a level the backbone lacks fails
//! `check` with the mapping that fixes it. Data processors on any data set.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use nc7_core::check::ProjectCheck;
use nc7_core::config::RunType;
use nc7_core::coordinator::{TrainOptions, TrainReport, train};
use nc7_core::data::SampleKey;
use nc7_core::diagnostic::Code;
use nc7_core::gene::Kind;
use nc7_core::plan::TrainPlan;
use nc7_core::{Nest, Registry};
use serde_json::json;

use crate::support::serial;

type B = nc7_core::backend::Cpu;

const C: &str = "training/configs";

/// Shapes standardised (and, in training, lightly augmented) as the starters read them.
fn datasets(size: usize) -> serde_json::Value {
    let shapes = |name: &str, samples: usize, seed: u64, augment: bool| {
        let mut processors = vec![];
        if augment {
            processors.push(json!({"class_name": "Augment", "name": "augment",
                "inbound_nodes": ["data"], "scale": {"p": 0.5, "min": 0.9, "max": 1.1}}));
        }
        let from = if augment { "augment" } else { "data" };
        processors.push(json!({"class_name": "Standardize", "name": "standardize",
            "inbound_nodes": [from]}));
        json!({"class_name": "ProcessedDataset", "name": name,
            "dataset": {"class_name": "Shapes", "name": format!("{name}_shapes"),
                        "samples": samples, "size": size, "seed": seed},
            "processors": processors})
    };
    json!({"train": shapes("train", 96, 1, true), "eval": shapes("eval", 32, 2, false)})
}

fn trainer(load: Option<(&Path, &str)>) -> serde_json::Value {
    let mut t = json!({
        "batch_size": {"train": 16, "eval": 32}, "num_epochs": 2, "random_seed": 5,
        "exports_to_keep": 0,
        "optimization_config": {"optimizer": {"name": "adamw", "weight_decay": 0.01},
            "learning_rate": 0.01,
            "learning_rate_schedule": {"name": "cosine",
                                       "warmup": {"steps": 2, "start_factor": 0.1}}}
    });
    if let Some((path, from)) = load {
        t["load_config"] = json!([{"path": path, "nucleotides": {"backbone": from}}]);
    }
    t
}

const SMALL: [usize; 4] = [4, 8, 8, 8];

fn backbone(class: &str) -> serde_json::Value {
    json!({"class_name": class, "name": "backbone", "inbound_nodes": ["dataset"],
           "filters": SMALL})
}

/// A classification project: backbone, a head on the coarsest level, cross-entropy.
fn classification(class: &str, level: &str) -> Vec<(String, serde_json::Value)> {
    vec![
        ("plugins/backbone.json".into(), backbone(class)),
        (
            "plugins/head.json".into(),
            json!({"class_name": "ClassificationHead", "name": "head", "inbound_nodes": ["backbone"],
                   "incoming_keys_mapping": {"backbone": {level: "feature"}},
                   "channels": 8}),
        ),
        // The class count once, for the head (and any KPI) of the project.
        (
            "project_global_config.json".into(),
            json!({"num_classes": 3}),
        ),
        (
            "losses/ce.json".into(),
            json!({"class_name": "nc7_core::nucleotide::standard::CrossEntropy", "name": "ce", "inbound_nodes": ["dataset", "head"]}),
        ),
        (
            "metrics/acc.json".into(),
            json!({"class_name": "nc7_core::nucleotide::standard::Accuracy", "name": "acc", "inbound_nodes": ["dataset", "head"]}),
        ),
    ]
}

/// A segmentation project: backbone, an FPN on three levels, a head on the finest.
fn segmentation(class: &str, levels: [&str; 3], stride: usize) -> Vec<(String, serde_json::Value)> {
    vec![
        ("plugins/backbone.json".into(), backbone(class)),
        (
            "plugins/neck.json".into(),
            json!({"class_name": "Fpn", "name": "neck", "inbound_nodes": ["backbone"],
                   "incoming_keys_mapping": {"backbone": {
                       levels[0]: "level0", levels[1]: "level1", levels[2]: "level2"}},
                   "inputs": [4, 8, 8], "channels": 8}),
        ),
        (
            "plugins/head.json".into(),
            json!({"class_name": "SegmentationHead", "name": "head", "inbound_nodes": ["neck"],
                   "incoming_keys_mapping": {"neck": {"features:level0": "feature"}},
                   "channels": 8, "num_classes": 4, "hidden": 8, "stride": stride}),
        ),
        (
            "losses/ce.json".into(),
            json!({"class_name": "nc7_core::nucleotide::standard::PixelCrossEntropy", "name": "ce", "inbound_nodes": ["dataset", "head"]}),
        ),
        (
            "metrics/iou.json".into(),
            json!({"class_name": "nc7_core::nucleotide::standard::MeanIou", "name": "iou", "inbound_nodes": ["dataset", "head"]}),
        ),
    ]
}

/// Detection data: shapes of `size` pixels with centre-point targets at stride 4 (boxes
/// moved with the image by `Augment` in training).
fn detection_datasets(size: usize) -> serde_json::Value {
    let ignore_moved = json!({"label": "labels", "image": "_", "mask": "_", "bbox": "_"});
    let train = json!({"class_name": "ProcessedDataset", "name": "train",
    "dataset": {"class_name": "Shapes", "name": "train_shapes", "samples": 128, "size": size, "seed": 1},
    "processors": [
        {"class_name": "Augment", "name": "augment", "inbound_nodes": ["data"],
         "incoming_keys_mapping": {"data": {"bbox": "boxes"}},
         "flip_horizontal": 0.5, "scale": {"p": 0.5, "min": 0.8, "max": 1.2}},
        {"class_name": "Standardize", "name": "standardize", "inbound_nodes": ["augment"]},
        {"class_name": "CenterTargets", "name": "targets", "inbound_nodes": ["augment", "data"],
         "incoming_keys_mapping": {"data": ignore_moved}}
    ]});
    let eval = json!({"class_name": "ProcessedDataset", "name": "eval",
    "dataset": {"class_name": "Shapes", "name": "eval_shapes", "samples": 48, "size": size, "seed": 2},
    "processors": [
        {"class_name": "Standardize", "name": "standardize", "inbound_nodes": ["data"]},
        {"class_name": "CenterTargets", "name": "targets", "inbound_nodes": ["data"],
         "incoming_keys_mapping": {"data": {"bbox": "boxes", "label": "labels"}}}
    ]});
    json!({"train": train, "eval": eval})
}

/// A detection project: backbone, an FPN on strides 4 and 8, a centre-point head on stride 4.
fn detection(class: &str) -> Vec<(String, serde_json::Value)> {
    vec![
        // The class count once: the head, the KPI and the data's `CenterTargets` take it.
        (
            "project_global_config.json".into(),
            json!({"num_classes": 3}),
        ),
        ("plugins/backbone.json".into(), backbone(class)),
        (
            "plugins/neck.json".into(),
            json!({"class_name": "Fpn", "name": "neck", "inbound_nodes": ["backbone"],
                   "incoming_keys_mapping": {"backbone": {"features:stride4": "level0", "features:stride8": "level1"}},
                   "inputs": [8, 8], "channels": 8}),
        ),
        (
            "plugins/head.json".into(),
            json!({"class_name": "CenterHead", "name": "head", "inbound_nodes": ["neck"],
                   "incoming_keys_mapping": {"neck": {"features:level0": "feature"}},
                   "channels": 8, "hidden": 8}),
        ),
        (
            "losses/center.json".into(),
            json!({"class_name": "CenterLoss", "name": "center", "inbound_nodes": ["dataset", "head"],
                   "loss_weights": {"loss_size": 0.1}}),
        ),
        (
            "postprocessors/decode.json".into(),
            json!({"class_name": "CenterDecode", "name": "decode", "inbound_nodes": ["head"]}),
        ),
        (
            "kpi/detection.json".into(),
            json!({"class_name": "DetectionKpi", "name": "detection",
                   "inbound_nodes": ["dataset", "decode"],
                   "incoming_keys_mapping": {"dataset": {"bbox": "boxes", "label": "labels"}}}),
        ),
    ]
}

fn project(
    files: Vec<(String, serde_json::Value)>,
    size: usize,
    load: Option<(&Path, &str)>,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut all = files;
    if !all.iter().any(|(p, _)| p == "datasets.json") {
        all.push(("datasets.json".into(), datasets(size)));
    }
    all.push(("trainer.json".into(), trainer(load)));
    for (p, v) in all {
        let path = dir.path().join(C).join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
    dir
}

fn run(dir: &Path) -> TrainReport {
    let _one_at_a_time = serial();
    let plan = TrainPlan::load(dir, &Default::default(), Registry::global())
        .unwrap_or_else(|e| panic!("{e}"));
    train(&plan, &TrainOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// The newest checkpoint's tensors, by name.
fn weights(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut cps: Vec<_> = fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    cps.sort_by_key(|p| {
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        n.rsplit('-').next().unwrap().parse::<u64>().unwrap()
    });
    let bytes = fs::read(cps.last().unwrap().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect()
}

fn check(dir: &Path) -> ProjectCheck {
    ProjectCheck::load(dir, RunType::Train, &Default::default(), Registry::global())
}

#[test]
fn a_backbone_trained_for_classification_starts_a_segmentation_by_config_alone() {
    let classifier = project(classification("ConvBackbone", "features:stride8"), 16, None);
    let report = run(classifier.path());
    assert_eq!(report.epochs, 2);
    let first = report.losses[0];
    assert!(first.is_finite());
    let trained = weights(classifier.path());
    let backbone_weights = |w: &BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
        w.iter()
            .filter(|(n, _)| n.starts_with("backbone.") && !n.contains("running"))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    };
    assert!(
        backbone_weights(&trained).len() >= 8,
        "{:?}",
        trained.keys()
    );

    // The segmentation project differs in its neck, head, loss and metric; its backbone starts
    // from the classifier's run, frozen so that its weights stay what was loaded.
    let mut files = segmentation(
        "ConvBackbone",
        ["features:stride1", "features:stride2", "features:stride4"],
        1,
    );
    files[0].1["trainable"] = json!(false);
    let segmenter = project(files, 16, Some((classifier.path(), "backbone")));
    let c = check(segmenter.path());
    assert!(c.is_ok(), "{}", c.diagnostics);
    let report = run(segmenter.path());
    assert!(report.evaluations[1]["iou/mean_iou"].is_finite());
    let started = weights(segmenter.path());
    assert_eq!(
        backbone_weights(&started),
        backbone_weights(&trained),
        "the segmenter's frozen backbone is the classifier's"
    );
    assert!(started.keys().any(|n| n.starts_with("neck.")));
    assert!(started.keys().any(|n| n.starts_with("head.")));

    // The same segmenter without `load_config` starts elsewhere.
    let mut files = segmentation(
        "ConvBackbone",
        ["features:stride1", "features:stride2", "features:stride4"],
        1,
    );
    files[0].1["trainable"] = json!(false);
    let fresh = project(files, 16, None);
    run(fresh.path());
    assert_ne!(
        backbone_weights(&weights(fresh.path())),
        backbone_weights(&trained)
    );
}

#[test]
fn backbones_swap_by_class_name_and_a_missing_level_names_the_mapping_that_fixes_it() {
    // The residual backbone has strides 2 to 16: a classifier on stride 8 swaps to it by its
    // class name alone and trains.
    let residual = project(
        classification("ResidualBackbone", "features:stride8"),
        16,
        None,
    );
    let c = check(residual.path());
    assert!(c.is_ok(), "{}", c.diagnostics);
    let report = run(residual.path());
    assert!(report.losses.iter().all(|l| l.is_finite()));
    assert!(
        weights(residual.path())
            .keys()
            .any(|n| n.starts_with("backbone.levels.0.0.first.conv")),
        "a residual backbone's weights"
    );

    // A segmenter whose neck reads stride 1, swapped to the residual backbone: check names the
    // rule, what the backbone has, and the rule to write instead.
    let swapped = project(
        segmentation(
            "ResidualBackbone",
            ["features:stride1", "features:stride2", "features:stride4"],
            1,
        ),
        16,
        None,
    );
    let c = check(swapped.path());
    let errors: Vec<String> = c
        .diagnostics
        .errors()
        .filter(|d| d.code == Code::MISSING_KEY)
        .map(|d| d.to_string())
        .collect();
    assert_eq!(errors.len(), 1, "{}", c.diagnostics);
    let e = &errors[0];
    for part in [
        "missing incoming key `level0` for nucleotide `neck`",
        "maps `features:stride1` of `backbone` to it, but `backbone` generates no `features:stride1`",
        "`features:stride2`, `features:stride4`, `features:stride8`, `features:stride16`",
        r#"{"backbone": {"features:stride2": "level0"}}"#,
    ] {
        assert!(e.contains(part), "`{part}` not in: {e}");
    }

    // Fixed as the help says (the levels one stride coarser, the head up-sampling by 2): it
    // checks and trains.
    let fixed = project(
        segmentation(
            "ResidualBackbone",
            ["features:stride2", "features:stride4", "features:stride8"],
            2,
        ),
        16,
        None,
    );
    let c = check(fixed.path());
    assert!(c.is_ok(), "{}", c.diagnostics);
    let report = run(fixed.path());
    assert!(report.evaluations[1]["iou/mean_iou"].is_finite());
}

#[test]
fn a_head_whose_channels_differ_from_its_feature_says_which_to_set() {
    let mut files = classification("ConvBackbone", "features:stride4");
    files[1].1["channels"] = json!(16);
    let dir = project(files, 16, None);
    let _one_at_a_time = serial();
    let plan = TrainPlan::load(dir.path(), &Default::default(), Registry::global()).unwrap();
    let err = train(&plan, &TrainOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ClassificationHead reads a `feature` of 16 channels")
            && err.contains("set `channels` to 8"),
        "{err}"
    );
}

#[test]
fn processed_data_standardises_with_a_seed_per_sample_and_epoch() {
    let registry = Registry::global();
    let reg = registry
        .resolve("ProcessedDataset", Some(Kind::Dataset))
        .unwrap();
    let config = json!({
        "dataset": {"class_name": "Shapes", "name": "shapes", "samples": 4, "size": 8, "seed": 3},
        "processors": [
            {"class_name": "Augment", "name": "augment", "inbound_nodes": ["data"],
             "flip_horizontal": 0.5, "brightness": {"p": 1.0, "delta": 0.2}},
            {"class_name": "Standardize", "name": "standardize", "inbound_nodes": ["augment"],
             "mean": [0.5, 0.4, 0.3], "std": [0.25]}
        ]
    });
    let data = nc7_core::runtime::dataset::<B>(reg, "train", &config, &Default::default()).unwrap();
    assert_eq!(data.len(), 4);
    let image = |epoch: u64| -> Vec<f32> {
        let s = data
            .get_for(SampleKey {
                index: 1,
                epoch,
                seed: 9,
            })
            .unwrap();
        assert!(s.get("label").is_some() && s.get("mask").is_some(), "{s:?}");
        let Some(Nest::Tensor(t)) = s.get("image") else {
            panic!("no image in {s:?}")
        };
        t.clone().into_data().unwrap().to_vec().unwrap()
    };
    // The same key: the same sample; another epoch: another augmentation.
    assert_eq!(image(1), image(1));
    assert_ne!(image(1), image(2));
    // Without augmentation, the sample is the data set's, standardised per channel.
    let plain = json!({
        "dataset": {"class_name": "Shapes", "name": "shapes", "samples": 4, "size": 8, "seed": 3},
        "processors": [{"class_name": "Standardize", "name": "standardize", "inbound_nodes": ["data"],
                        "mean": [0.5, 0.4, 0.3], "std": [0.25]}]
    });
    let data = nc7_core::runtime::dataset::<B>(reg, "plain", &plain, &Default::default()).unwrap();
    let s = data.get(1).unwrap();
    let Some(Nest::Tensor(t)) = s.get("image") else {
        panic!()
    };
    let got: Vec<f32> = t.clone().into_data().unwrap().to_vec().unwrap();
    let drawn = nc7_core::data::shapes::draw(
        &nc7_core::data::ShapesConfig {
            samples: 4,
            size: 8,
            seed: 3,
            noise: 0.05,
        },
        1,
    );
    for (i, (g, p)) in got.iter().zip(&drawn.pixels).enumerate() {
        let mean = [0.5, 0.4, 0.3][i / 64];
        assert!(
            (g - (p - mean) / 0.25).abs() < 1e-6,
            "pixel {i}: {g} from {p}"
        );
    }

    // Bad configs: every problem named.
    for (config, expected) in [
        (
            json!({"dataset": {"class_name": "Shapes", "name": "s", "samples": 2}, "processors": []}),
            "`processors` is empty",
        ),
        (
            json!({"dataset": {"class_name": "Shapes", "name": "s", "samples": 2},
                   "processors": [{"class_name": "Standardize", "name": "st", "inbound_nodes": ["data"], "std": [0.0]}]}),
            "`std` holds 0: every deviation must be above 0",
        ),
        (
            json!({"dataset": {"class_name": "Shapes", "name": "s", "samples": 2},
                   "processors": [{"class_name": "Standardize", "name": "st", "inbound_nodes": ["data"], "mean": [0.1, 0.2]}]}),
            "",
        ),
    ] {
        match nc7_core::runtime::dataset::<B>(reg, "bad", &config, &Default::default()) {
            Err(e) => assert!(e.to_string().contains(expected), "{e}"),
            Ok(d) => {
                let e = d.get(0).unwrap_err().to_string();
                assert!(
                    e.contains("`mean` has 2 numbers for an image of 3 channels: give one, or 3"),
                    "{e}"
                );
            }
        }
    }
}

#[test]
fn a_classification_backbone_starts_a_centre_point_detector_that_learns_the_boxes() {
    let classifier = project(classification("ConvBackbone", "features:stride8"), 32, None);
    run(classifier.path());
    let trained = weights(classifier.path());

    let mut files = detection("ConvBackbone");
    files.push(("datasets.json".into(), detection_datasets(32)));
    let detector = project(files, 32, Some((classifier.path(), "backbone")));
    let c = check(detector.path());
    assert!(c.is_ok(), "{}", c.diagnostics);
    // Longer than the classifier: 6 epochs.
    let trainer = detector.path().join(C).join("trainer.json");
    let mut t: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&trainer).unwrap()).unwrap();
    t["num_epochs"] = json!(6);
    t["optimization_config"]["learning_rate"] = json!(0.02);
    fs::write(&trainer, t.to_string()).unwrap();
    let report = run(detector.path());
    let losses = &report.losses;
    let (first, last) = (
        losses[..4].iter().sum::<f64>(),
        losses[losses.len() - 4..].iter().sum::<f64>(),
    );
    assert!(last < first / 2.0, "the detection loss falls: {losses:?}");
    let last_eval = report.evaluations.last().unwrap();
    for key in [
        "kpi/detection/map",
        "kpi/detection/map_50",
        "center/loss_heatmap",
        "center/loss_size",
        "center/loss_offset",
    ] {
        assert!(
            last_eval.get(key).is_some_and(|v| v.is_finite()),
            "{key} in {last_eval:?}"
        );
    }
    assert!(last_eval["kpi/detection/map_50"] > 0.2, "{last_eval:?}");
    // The detector's backbone started from the classifier's (then trained on).
    let started = weights(detector.path());
    assert!(started.keys().any(|n| n.starts_with("head.heatmap.")));
    assert_eq!(
        trained
            .keys()
            .filter(|n| n.starts_with("backbone."))
            .count(),
        started
            .keys()
            .filter(|n| n.starts_with("backbone."))
            .count()
    );
}

#[test]
fn centre_point_targets_and_their_bad_inputs() {
    use burn::tensor::{Tensor, TensorData};
    use nc7_core::AnyValue;
    use nc7_core::Build;
    use nc7_core::nucleotide::DataProcessor;
    use nc7_core::standard::CenterTargets;
    use nc7_core::standard::center::{BoxesIn, CenterTargetsConfig};
    let device = Default::default();
    let config = CenterTargetsConfig {
        num_classes: 3,
        stride: 4,
        min_overlap: 0.7,
    };
    let mut targets = <CenterTargets as Build<B>>::build(&config, &device).unwrap();
    let image = Tensor::<B, 3>::zeros([3, 32, 32], &device);
    let value = |v: Vec<f32>, shape: Vec<usize>| {
        AnyValue(Nest::Tensor(nc7_core::AnyTensor::from_data(
            TensorData::new(v, shape),
            &device,
        )))
    };
    let labels = |v: Vec<i64>| {
        AnyValue(Nest::Tensor(nc7_core::AnyTensor::from_data(
            TensorData::new(v.clone(), [v.len()]),
            &device,
        )))
    };
    // Two boxes: a square of class 2 centred at (0.5, 0.25), a box of class 0 at the corner.
    let out = targets
        .process(BoxesIn {
            image: image.clone(),
            boxes: value(
                vec![0.375, 0.125, 0.625, 0.375, 0.0, 0.0, 0.25, 0.5],
                vec![2, 4],
            ),
            labels: labels(vec![2, 0]),
        })
        .unwrap();
    let read = |t: Tensor<B, 3>| -> Vec<f32> { t.into_data().to_vec().unwrap() };
    assert_eq!(out.target_heatmap.dims(), [3, 8, 8]);
    let heat = read(out.target_heatmap);
    let mask = read(out.center_mask);
    let size = read(out.target_size);
    let offset = read(out.target_offset);
    // Centre of the first box: cell (x 4, y 2), exactly on the cell's corner.
    assert_eq!(heat[2 * 64 + 2 * 8 + 4], 1.0);
    assert_eq!(mask[2 * 8 + 4], 1.0);
    assert_eq!((size[2 * 8 + 4], size[64 + 2 * 8 + 4]), (2.0, 2.0));
    assert_eq!((offset[2 * 8 + 4], offset[64 + 2 * 8 + 4]), (0.0, 0.0));
    // Second: centre (1, 2) in cells, of class 0 only.
    assert_eq!(heat[2 * 8 + 1], 1.0);
    assert_eq!(heat[64 + 2 * 8 + 1], 0.0);
    assert_eq!(mask.iter().sum::<f32>(), 2.0);
    // Around a peak the Gaussian falls off, never above 1.
    assert!(heat.iter().all(|v| (0.0..=1.0).contains(v)));
    // One box as `[4]` with a `[1]` label, as `Shapes` gives.
    let one = targets
        .process(BoxesIn {
            image: image.clone(),
            boxes: value(vec![0.1, 0.1, 0.3, 0.3], vec![4]),
            labels: labels(vec![1]),
        })
        .unwrap();
    assert_eq!(read(one.center_mask).iter().sum::<f32>(), 1.0);
    for (boxes, l, expected) in [
        (
            value(vec![0.1, 0.1, 0.3, 0.3], vec![4]),
            labels(vec![5]),
            "label 5 is outside the 3 classes",
        ),
        (
            value(vec![0.1, 0.1, 0.3, 0.3], vec![4]),
            labels(vec![1, 2]),
            "1 boxes but 2 labels",
        ),
        (
            value(vec![0.1, 0.1, 0.3], vec![3]),
            labels(vec![1]),
            "`boxes` has shape [3]",
        ),
        (
            value(vec![0.5, 0.1, 1.3, 0.3], vec![4]),
            labels(vec![1]),
            "box [0.500, 0.100, 1.300, 0.300] is not x0, y0, x1, y1 as fractions of the image",
        ),
    ] {
        let Err(err) = targets.process(BoxesIn {
            image: image.clone(),
            boxes,
            labels: l,
        }) else {
            panic!("{expected}: accepted")
        };
        let err = err.to_string();
        assert!(err.contains(expected), "{err}");
    }
    let bad = CenterTargetsConfig {
        num_classes: 0,
        stride: 4,
        min_overlap: 0.7,
    };
    assert!(<CenterTargets as Build<B>>::build(&bad, &device).is_err());
}

#[test]
fn a_backbone_without_its_preprocessing_in_the_data_is_a_warning_naming_the_processor() {
    let with = project(classification("ConvBackbone", "features:stride8"), 16, None);
    let c = check(with.path());
    assert!(c.is_ok(), "{}", c.diagnostics);
    assert_eq!(c.diagnostics.warnings().count(), 0, "{}", c.diagnostics);

    // The same project on plain shapes: no `Standardize` in front of the backbone.
    let mut files = classification("ConvBackbone", "features:stride8");
    files.push((
        "datasets.json".into(),
        json!({"train": {"class_name": "Shapes", "name": "train", "samples": 8, "size": 16},
               "eval": {"class_name": "Shapes", "name": "eval", "samples": 8, "size": 16}}),
    ));
    let without = project(files, 16, None);
    let c = check(without.path());
    assert!(c.is_ok(), "a warning, not an error: {}", c.diagnostics);
    let warnings: Vec<String> = c
        .diagnostics
        .warnings()
        .filter(|d| d.code == Code::PREPROCESSING)
        .map(|d| d.to_string())
        .collect();
    assert_eq!(warnings.len(), 1, "{}", c.diagnostics);
    for part in [
        "nucleotide `backbone` (ConvBackbone) expects images preprocessed by `Standardize`",
        "plugins/backbone.json",
        "`ProcessedDataset`",
    ] {
        assert!(
            warnings[0].contains(part),
            "`{part}` not in {}",
            warnings[0]
        );
    }
}

/// The detection starter's `_my_images_datasets.json` (the template's own file, its detection
/// branch, its globs under `root`): image files and JSON boxes through a data pipe.
fn own_detection_data(root: &Path) -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../template/project/training/configs/_my_images_datasets.json"
    );
    let text = fs::read_to_string(path).unwrap();
    let start = r#"{% if task == "detection" %}"#;
    let branch = text
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once("{% else %}"))
        .map(|(detection, _)| detection)
        .unwrap_or_else(|| panic!("{path} has no detection branch"));
    let root = root.display().to_string();
    serde_json::from_str(&branch.replace("data/", &format!("{root}/"))).unwrap()
}

#[test]
fn a_detector_trains_on_image_files_with_json_boxes() {
    let data = tempfile::tempdir().unwrap();
    for (part, samples, seed) in [("train", 64, 1), ("eval", 24, 2)] {
        nc7_core::data::write_shapes(
            &data.path().join(part),
            &nc7_core::data::ShapesConfig {
                samples,
                size: 32,
                seed,
                noise: 0.05,
            },
        )
        .unwrap();
    }
    // Two eval images hold a second box (the list form): batches pad the others' boxes.
    for n in ["shape-2-000000", "shape-2-000001"] {
        let path = data.path().join(format!("eval/labels/{n}.json"));
        let one: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let b = one["bbox"].clone();
        fs::write(
            &path,
            json!({"boxes": [b, [0.0, 0.0, 0.25, 0.25]], "labels": [one["label"], 1]}).to_string(),
        )
        .unwrap();
    }
    let mut files = detection("ConvBackbone");
    files.push(("datasets.json".into(), own_detection_data(data.path())));
    let detector = project(files, 32, None);
    let c = check(detector.path());
    assert!(c.is_ok(), "{}", c.diagnostics);
    let report = run(detector.path());
    let last = report.evaluations.last().unwrap();
    assert!(last["kpi/detection/map_50"].is_finite(), "{last:?}");

    // A boxes file that is not one: the file and the format named.
    let bad = data.path().join("eval/labels/shape-2-000003.json");
    fs::write(&bad, r#"{"boxes": [[0.1, 0.2, 0.3]], "labels": [1]}"#).unwrap();
    let (boxes, labels) =
        nc7_core::data::pipe::read_boxes(&data.path().join("eval/labels/shape-2-000000.json"))
            .unwrap();
    assert_eq!((boxes.len(), labels.len()), (8, 2));
    let err = nc7_core::data::pipe::read_boxes(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shape-2-000003.json: box 0 is [0.1,0.2,0.3], not four numbers")
            && err.contains("a boxes file is"),
        "{err}"
    );
}

#[test]
fn the_detection_kpi_leaves_batch_padding_out() {
    use nc7_core::nucleotide::KpiAccumulator;
    use nc7_core::standard::{DetectionConfig, DetectionKpi, Detections};
    let device = Default::default();
    let floats = |v: Vec<f32>, shape: Vec<usize>| {
        nc7_core::AnyValue(Nest::Tensor(nc7_core::AnyTensor::from_data(
            burn::tensor::TensorData::new(v, shape),
            &device,
        )))
    };
    let ints = |v: Vec<i64>| {
        let n = v.len();
        nc7_core::AnyValue(Nest::Tensor(nc7_core::AnyTensor::from_data(
            burn::tensor::TensorData::new(v, [n]),
            &device,
        )))
    };
    let image = |padded: bool| -> Detections<B> {
        let (mut boxes, mut labels) = (vec![0.1, 0.1, 0.4, 0.4], vec![1]);
        if padded {
            boxes.extend([0.0; 4]);
            labels.push(0);
        }
        let g = labels.len();
        Detections {
            boxes: floats(boxes, vec![g, 4]),
            labels: ints(labels),
            detected_boxes: floats(vec![0.1, 0.1, 0.4, 0.42, 0.5, 0.5, 0.6, 0.6], vec![2, 4]),
            detected_scores: floats(vec![0.9, 0.3], vec![2]),
            detected_labels: ints(vec![1, 0]),
        }
    };
    let config = DetectionConfig {
        num_classes: 2,
        box_format: Default::default(),
        max_detections: 100,
    };
    let mut kpi = <DetectionKpi as nc7_core::Build<B>>::build(&config, &device).unwrap();
    let plain = kpi.combine(vec![image(false), image(false)]).unwrap();
    let padded = kpi.combine(vec![image(true), image(false)]).unwrap();
    assert_eq!(
        plain.map.to_bits(),
        padded.map.to_bits(),
        "{} vs {}",
        plain.map,
        padded.map
    );
    assert!(
        plain.ap[0].is_nan(),
        "class 0 has no true box: only the padding had it"
    );
}
