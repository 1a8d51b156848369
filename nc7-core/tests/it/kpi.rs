//! KPI evaluation end to end: `evaluate-kpi` over saved records agrees with scikit-learn, the
//! cache restores what it computed, `evaluate` cuts evaluations, bad inputs are clear errors and
//! `extract-data` runs callbacks without a model.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::TensorData;
use nc7_core::backend::Cpu;
use nc7_core::config::Overrides;
use nc7_core::data::records::RecordsWriter;
use nc7_core::kpi::{KpiEvaluator, KpiTargets};
use nc7_core::plan::{FeedRequest, KpiPlan};
use nc7_core::{AnyTensor, BoxError, Generated, Incoming, Nest, Registry, cli};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::support::python;

#[derive(Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Incoming)]
pub struct Score {
    score: f64,
}

#[derive(Generated)]
pub struct Mean {
    mean: f64,
    count: i64,
}

/// Calls of `CountingMean::combine`, to see what the cache saves.
static COMBINED: AtomicUsize = AtomicUsize::new(0);

simple_nucleotide!(CountingMean, KpiAccumulator, Empty, Score, Mean, {
    fn combine(&mut self, samples: Vec<Score>) -> Result<Mean, BoxError> {
        COMBINED.fetch_add(1, Ordering::SeqCst);
        let n = samples.len();
        Ok(Mean {
            mean: samples.iter().map(|s| s.score).sum::<f64>() / n as f64,
            count: n as i64,
        })
    }
});

fn cli_run(args: &[&str]) -> (u8, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut argv = vec!["nc7"];
    argv.extend(args);
    let code = cli::run(argv, Overrides::default(), &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn write_files(root: &Path, files: &[(&str, String)]) {
    for (path, text) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
}

/// A small deterministic generator.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const SAMPLES: usize = 157;
const CLASSES: usize = 5;

/// Predictions and labels of a classifier and a segmenter, as saved records; class 4 appears
/// nowhere (its per-class values are not numbers) and class 3 in no mask.
fn write_records(dir: &Path) -> Value {
    let mut rng = Lcg(11);
    let mut writer = RecordsWriter::new(dir, 40).unwrap();
    let (mut y, mut p, mut masks, mut predicted) = (vec![], vec![], vec![], vec![]);
    for i in 0..SAMPLES {
        let label = rng.below(4) as i64;
        let class = if rng.below(10) < 7 {
            label
        } else {
            rng.below(4) as i64
        };
        let mask: Vec<i64> = (0..30).map(|_| [0, 1, 2][rng.below(3) as usize]).collect();
        let guess: Vec<i64> = mask
            .iter()
            .map(|&m| {
                if rng.below(4) == 0 {
                    rng.below(3) as i64
                } else {
                    m
                }
            })
            .collect();
        let mut record = BTreeMap::new();
        record.insert(
            "class".to_string(),
            TensorData::new(vec![class], [0usize; 0]),
        );
        record.insert("label".to_string(), TensorData::new(vec![label], [1]));
        record.insert("mask".to_string(), TensorData::new(mask.clone(), [6, 5]));
        record.insert(
            "predicted_mask".to_string(),
            TensorData::new(guess.clone(), [6, 5]),
        );
        record.insert(
            "score".to_string(),
            TensorData::new(vec![i as f32 / 10.0], [0usize; 0]),
        );
        writer.write("predictions", record).unwrap();
        y.push(label);
        p.push(class);
        masks.push(mask);
        predicted.push(guess);
    }
    writer.flush().unwrap();
    json!({"y": y, "p": p, "mask": masks, "pred_mask": predicted})
}

/// A KPI evaluation project over the records in `<root>/records`.
fn kpi_project(root: &Path, batch_size: usize, extra: &[(&str, String)]) -> Value {
    let data = write_records(&root.join("records"));
    let c = "kpi_evaluation/configs";
    let mut files = vec![
        (
            "datafeeder.json",
            format!(
                r#"{{"class_name": "RecordsFeeder", "name": "saved", "shards": "{}/records/*.safetensors"}}"#,
                root.display()
            ),
        ),
        (
            "kpi_evaluator.json",
            format!(r#"{{"batch_size": {batch_size}}}"#),
        ),
        (
            "kpi/classification.json",
            format!(
                r#"{{"class_name": "ClassificationKpi", "name": "classification", "num_classes": {CLASSES},
                    "inbound_nodes": ["dataset"],
                    "incoming_keys_mapping": {{"dataset": {{"class": "predictions", "label": "labels"}}}}}}"#
            ),
        ),
        (
            "kpi/pixels.json",
            format!(
                r#"{{"class_name": "PixelConfusion", "name": "pixels", "num_classes": {CLASSES},
                    "inbound_nodes": ["dataset"],
                    "incoming_keys_mapping": {{"dataset": {{"predicted_mask": "predictions", "mask": "labels"}}}}}}"#
            ),
        ),
        (
            "kpi/segmentation.json",
            format!(
                r#"{{"class_name": "SegmentationKpi", "name": "segmentation", "num_classes": {CLASSES},
                    "inbound_nodes": ["pixels"]}}"#
            ),
        ),
    ];
    files.extend(extra.iter().cloned());
    let files: Vec<(String, String)> = files
        .into_iter()
        .map(|(p, t)| (format!("{c}/{p}"), t))
        .collect();
    let refs: Vec<(&str, String)> = files.iter().map(|(p, t)| (p.as_str(), t.clone())).collect();
    write_files(root, &refs);
    data
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(
        &fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn close(a: &Value, b: f64, what: &str) {
    let a = a
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {a} is no number"));
    assert!((a - b).abs() <= 1e-6, "{what}: nc7 {a}, reference {b}");
}

const SKLEARN: &str = r#"
import json, sys
import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, jaccard_score, precision_recall_fscore_support
d = json.loads(sys.argv[1])
y, p = np.array(d["y"]), np.array(d["p"])
labels = sorted(set(y.tolist()) | set(p.tolist()))
out = {"accuracy": accuracy_score(y, p), "labels": labels}
pr, rc, f1, sup = precision_recall_fscore_support(y, p, labels=labels, average=None, zero_division=0)
out.update(precision=pr.tolist(), recall=rc.tolist(), f1=f1.tolist(), support=sup.tolist())
for avg in ["macro", "weighted"]:
    a, b, c, _ = precision_recall_fscore_support(y, p, average=avg, zero_division=0)
    out["precision_" + avg], out["recall_" + avg], out["f1_" + avg] = a, b, c
out["confusion_matrix"] = confusion_matrix(y, p, labels=list(range(int(sys.argv[2])))).tolist()
my, mp = np.array(d["mask"]).ravel(), np.array(d["pred_mask"]).ravel()
seg = sorted(set(my.tolist()) | set(mp.tolist()))
out["seg_labels"] = seg
out["iou"] = jaccard_score(my, mp, labels=seg, average=None).tolist()
out["mean_iou"] = jaccard_score(my, mp, average="macro")
out["pixel_accuracy"] = accuracy_score(my, mp)
print(json.dumps(out))
"#;

#[test]
fn evaluate_kpi_agrees_with_scikit_learn() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // 157 samples in batches of 10: the last batch is smaller, which must not matter.
    let data = kpi_project(root, 10, &[]);
    let (code, out, err) = cli_run(&["evaluate-kpi", root.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("evaluated {SAMPLES} samples in 16 iterations")),
        "{out}"
    );
    assert!(out.contains("kpi/classification/f1_macro"), "{out}");
    let results = root.join("kpi_evaluation/run-1/results");
    let cls = read_json(&results.join("classification.json"));
    let seg = read_json(&results.join("segmentation.json"));
    assert!(
        results
            .join("classification-confusion_matrix.png")
            .is_file()
    );
    assert!(results.join("segmentation-confusion_matrix.png").is_file());
    assert!(root.join("kpi_evaluation/last_run").exists());
    assert!(
        root.join("kpi_evaluation/run-1/artifacts/_config_kpi_run.json")
            .is_file()
    );
    // The run is an MLflow run with its KPIs as metrics.
    let tracked = walk(&root.join("mlruns"))
        .into_iter()
        .any(|p| p.ends_with("metrics/kpi/classification/f1_macro"));
    assert!(tracked, "an MLflow metric file for the KPI");
    // Class 4 is in no label and no prediction: its per-class values are null.
    assert_eq!(cls["precision"][4], Value::Null);
    assert_eq!(seg["iou"][3], Value::Null);
    let Some(text) = python::run_python(
        "sklearn",
        SKLEARN,
        &[&data.to_string(), &CLASSES.to_string()],
    ) else {
        return;
    };
    let reference: Value = serde_json::from_str(text.trim()).unwrap();
    for key in [
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
    ] {
        close(&cls[key], reference[key].as_f64().unwrap(), key);
    }
    for (i, label) in reference["labels"].as_array().unwrap().iter().enumerate() {
        let c = label.as_u64().unwrap() as usize;
        for key in ["precision", "recall", "f1"] {
            close(
                &cls[key][c],
                reference[key][i].as_f64().unwrap(),
                &format!("{key}[{c}]"),
            );
        }
        assert_eq!(cls["support"][c], reference["support"][i]);
    }
    assert_eq!(cls["confusion_matrix"], reference["confusion_matrix"]);
    for (i, label) in reference["seg_labels"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let c = label.as_u64().unwrap() as usize;
        close(
            &seg["iou"][c],
            reference["iou"][i].as_f64().unwrap(),
            &format!("iou[{c}]"),
        );
    }
    close(
        &seg["mean_iou"],
        reference["mean_iou"].as_f64().unwrap(),
        "mean_iou",
    );
    close(
        &seg["pixel_accuracy"],
        reference["pixel_accuracy"].as_f64().unwrap(),
        "pixel_accuracy",
    );
}

fn plan(root: &Path) -> KpiPlan {
    KpiPlan::load(root, &FeedRequest::default(), Registry::global())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_cache_restores_kpis_it_computed_and_an_unusable_cache_is_skipped() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mean = r#"{"class_name": "CountingMean", "name": "mean", "inbound_nodes": ["dataset"], "cache": true}"#;
    kpi_project(root, 16, &[("kpi/mean.json", mean.to_string())]);
    let before = COMBINED.load(Ordering::SeqCst);
    let first = cli_run(&["evaluate-kpi", root.to_str().unwrap()]);
    assert_eq!(first.0, 0, "{}", first.2);
    assert_eq!(COMBINED.load(Ordering::SeqCst), before + 1);
    // The same inputs again: restored, not computed, and the same values.
    let second = cli_run(&["evaluate-kpi", root.to_str().unwrap(), "--quiet"]);
    assert_eq!(second.0, 0, "{}", second.2);
    assert_eq!(COMBINED.load(Ordering::SeqCst), before + 1);
    let a = read_json(&root.join("kpi_evaluation/run-1/results/mean.json"));
    let b = read_json(&root.join("kpi_evaluation/run-2/results/mean.json"));
    assert_eq!(a, b);
    assert_eq!(a["count"], SAMPLES);
    // Other inputs (fewer samples per evaluation) are computed.
    let p = plan(root);
    let mut kpi = KpiEvaluator::new(
        &p.kpi,
        &KpiTargets {
            results: root.join("direct"),
            cache: Some(root.join("kpi_evaluation/kpi_cache")),
        },
    )
    .unwrap();
    kpi.sample(vec![Some(sample(0.5, None))], true).unwrap();
    let values = kpi.finish().unwrap();
    assert_eq!(values.computed["mean"], 1);
    // A cache folder that cannot be made: the evaluation runs without it.
    fs::remove_dir_all(root.join("kpi_evaluation/kpi_cache")).unwrap();
    fs::write(root.join("kpi_evaluation/kpi_cache"), "not a folder").unwrap();
    let third = cli_run(&["evaluate-kpi", root.to_str().unwrap()]);
    assert_eq!(third.0, 0, "{}", third.2);
    assert_eq!(COMBINED.load(Ordering::SeqCst), before + 3);
    assert_eq!(
        read_json(&root.join("kpi_evaluation/run-3/results/mean.json")),
        a
    );
}

/// One sample as the KPI handler's input: the data feeder's keys.
fn sample(score: f64, evaluate: Option<bool>) -> Nest<Cpu> {
    let d = Default::default();
    let mut n = Nest::<Cpu>::map();
    n.insert("score", Nest::Float(score)).unwrap();
    n.insert("class", Nest::Int(1)).unwrap();
    n.insert(
        "label",
        Nest::Tensor(AnyTensor::from_data(TensorData::new(vec![1i64], [1]), &d)),
    )
    .unwrap();
    let mask = || {
        Nest::Tensor(AnyTensor::<Cpu>::from_data(
            TensorData::new(vec![0i64; 30], [6, 5]),
            &d,
        ))
    };
    n.insert("mask", mask()).unwrap();
    n.insert("predicted_mask", mask()).unwrap();
    if let Some(e) = evaluate {
        n.insert("evaluate", Nest::Bool(e)).unwrap();
    }
    n
}

#[test]
fn evaluate_cuts_evaluations_and_the_end_of_the_data_combines_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mean = r#"{"class_name": "CountingMean", "name": "mean", "inbound_nodes": ["dataset"]}"#;
    kpi_project(root, 4, &[("kpi/mean.json", mean.to_string())]);
    let p = plan(root);
    let results = root.join("direct");
    let mut kpi = KpiEvaluator::new(
        &p.kpi,
        &KpiTargets {
            results: results.clone(),
            cache: None,
        },
    )
    .unwrap();
    // `evaluate` on the third sample; the data then ends without a last sample marked.
    for (i, flag) in [None, Some(false), Some(true), None, None]
        .into_iter()
        .enumerate()
    {
        kpi.sample(vec![Some(sample(i as f64, flag))], false)
            .unwrap();
    }
    let values = kpi.finish().unwrap();
    let mean = &values.by_accumulator["mean"];
    assert_eq!(mean.get("mean"), Some(&Nest::Float(3.5)));
    assert_eq!(mean.get("count"), Some(&Nest::Int(2)));
    assert_eq!(
        read_json(&results.join("mean.json")),
        json!({"mean": 3.5, "count": 2})
    );
    let lines = fs::read_to_string(results.join("mean.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    assert!(lines.starts_with(r#"{"count":3,"mean":1.0}"#), "{lines}");
    assert_eq!(values.scalars()["kpi/mean/mean"], 3.5);
}

#[test]
fn bad_kpi_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    kpi_project(root, 4, &[]);
    let p = plan(root);
    let mut kpi = KpiEvaluator::new(
        &p.kpi,
        &KpiTargets {
            results: root.join("direct"),
            cache: None,
        },
    )
    .unwrap();
    kpi.sample(vec![Some(sample(0.0, None))], false).unwrap();
    // The second sample has no label.
    let mut bad = sample(0.0, None);
    bad.remove("label");
    let err = kpi.sample(vec![Some(bad)], false).unwrap_err().to_string();
    assert!(
        err.contains("KPI evaluation, sample 1: missing required key `labels` for nucleotide `classification`"),
        "{err}"
    );
    // A class outside `num_classes`.
    let mut kpi = KpiEvaluator::new(
        &p.kpi,
        &KpiTargets {
            results: root.join("d2"),
            cache: None,
        },
    )
    .unwrap();
    let mut wrong = sample(0.0, None);
    wrong.insert("class", Nest::Int(9)).unwrap();
    let err = kpi.sample(vec![Some(wrong)], true).unwrap_err().to_string();
    assert!(
        err.contains("nucleotide `classification` failed: `predictions` is 9, not a class of 0..5 (`num_classes`)"),
        "{err}"
    );
    // A KPI config with a field only losses take, and a saver that does not exist.
    write_files(
        root,
        &[(
            "kpi_evaluation/configs/kpi/classification.json",
            r#"{"class_name": "ClassificationKpi", "name": "classification", "num_classes": 5,
                "inbound_nodes": ["dataset"], "savers": ["mlflow"], "loss_weights": {"loss": 1}}"#
                .to_string(),
        )],
    );
    let (code, _, err) = cli_run(&["check", root.to_str().unwrap(), "--type", "kpi"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("savers") && err.contains("`[\"json\"]`"),
        "{err}"
    );
}

#[test]
fn extract_data_runs_callbacks_without_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_records(&root.join("records"));
    write_files(
        root,
        &[
            (
                "data_extraction/configs/datafeeder.json",
                // Paths may start at the project's folder, wherever nc7 runs.
                r#"{"class_name": "RecordsFeeder", "name": "saved", "shards": "${project}/records/*.safetensors"}"#.into(),
            ),
            (
                "data_extraction/configs/data_extraction.json",
                r#"{"batch_size": 50}"#.into(),
            ),
            (
                "data_extraction/configs/callbacks/copy.json",
                r#"{"class_name": "RecordsSaver", "name": "copy", "inbound_nodes": ["dataset"],
                    "incoming_keys_mapping": {"dataset": {"mask": "_", "predicted_mask": "_"}}}"#
                    .into(),
            ),
        ],
    );
    let (code, out, err) = cli_run(&["check", root.to_str().unwrap(), "--type", "data"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok: no errors"), "{out}");
    let (code, out, err) = cli_run(&["extract-data", root.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("extracted {SAMPLES} samples in 4 iterations")),
        "{out}"
    );
    let shards: Vec<_> = fs::read_dir(root.join("data_extraction/run-1/results/records"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    let copied: usize = shards
        .iter()
        .map(|e| {
            nc7_core::data::records::read_records(&e.path())
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(copied, SAMPLES);
    // Without callbacks there is nothing to run: refused at check.
    fs::remove_file(root.join("data_extraction/configs/callbacks/copy.json")).unwrap();
    let (code, _, err) = cli_run(&["extract-data", root.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("callbacks_config"), "{err}");
}

const COCO: &str = r#"
import json, sys, io, contextlib
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
d = json.loads(sys.argv[1])
gt = COCO()
gt.dataset = d["gt"]
with contextlib.redirect_stdout(io.StringIO()):
    gt.createIndex()
    dt = gt.loadRes(d["dt"])
    e = COCOeval(gt, dt, "bbox")
    e.evaluate()
    e.accumulate()
    e.summarize()
p = e.eval["precision"]  # [T, R, K, A, M]
per_class, per_class_50 = [], []
for k in range(p.shape[2]):
    s = p[:, :, k, 0, -1]
    per_class.append(float(s[s > -1].mean()) if (s > -1).any() else None)
s = p[0, :, :, 0, -1]
for k in range(p.shape[2]):
    c = s[:, k]
    per_class_50.append(float(c[c > -1].mean()) if (c > -1).any() else None)
print(json.dumps({"map": e.stats[0], "map_50": e.stats[1], "map_75": e.stats[2], "ap": per_class, "ap_50": per_class_50}))
"#;

#[test]
fn detection_map_agrees_with_pycocotools() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_files(
        root,
        &[
            (
                "kpi_evaluation/configs/datafeeder.json",
                r#"{"class_name": "RecordsFeeder", "name": "saved", "shards": "${project}/none/*"}"#.into(),
            ),
            (
                "kpi_evaluation/configs/kpi/detection.json",
                r#"{"class_name": "DetectionKpi", "name": "detection", "num_classes": 3, "inbound_nodes": ["dataset"]}"#.into(),
            ),
        ],
    );
    let p = plan(root);
    let mut kpi = KpiEvaluator::new(
        &p.kpi,
        &KpiTargets {
            results: root.join("results"),
            cache: None,
        },
    )
    .unwrap();
    let d = Default::default();
    let floats = |v: Vec<f32>, shape: Vec<usize>| {
        Nest::<Cpu>::Tensor(AnyTensor::from_data(TensorData::new(v, shape), &d))
    };
    let ints = |v: Vec<i64>| {
        let n = v.len();
        Nest::<Cpu>::Tensor(AnyTensor::from_data(TensorData::new(v, [n]), &d))
    };
    let mut rng = Lcg(5);
    let (mut images, mut annotations, mut results) = (vec![], vec![], vec![]);
    let images_count = 40;
    for image in 0..images_count {
        // 1 to 4 true boxes of classes 0 and 1 (class 2 has none, only false detections).
        let (mut gt, mut gt_classes, mut det, mut scores, mut det_classes) =
            (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..1 + rng.below(4) {
            let (x, y) = (rng.below(60) as f32, rng.below(60) as f32);
            let (w, h) = (4.0 + rng.below(20) as f32, 4.0 + rng.below(20) as f32);
            let class = rng.below(2) as i64;
            gt.extend([x, y, x + w, y + h]);
            gt_classes.push(class);
            annotations.push(
                json!({"id": annotations.len() + 1, "image_id": image, "category_id": class + 1,
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}),
            );
            if rng.below(5) > 0 {
                // A detection near it: shifted by up to 3.5 pixels, sometimes of the wrong class.
                let (dx, dy) = (rng.below(8) as f32 * 0.5, rng.below(8) as f32 * 0.5);
                let c = if rng.below(8) == 0 { 2 } else { class };
                let score = rng.below(20) as f32 * 0.05;
                det.extend([x + dx, y + dy, x + w + dx, y + h - dy]);
                scores.push(score);
                det_classes.push(c);
                results.push(json!({"image_id": image, "category_id": c + 1, "bbox": [x + dx, y + dy, w, h - 2.0 * dy], "score": score}));
            }
        }
        for _ in 0..rng.below(3) {
            // False detections.
            let (x, y, w) = (
                rng.below(70) as f32,
                rng.below(70) as f32,
                3.0 + rng.below(9) as f32,
            );
            let c = rng.below(3) as i64;
            let score = rng.below(20) as f32 * 0.05;
            det.extend([x, y, x + w, y + w]);
            scores.push(score);
            det_classes.push(c);
            results.push(json!({"image_id": image, "category_id": c + 1, "bbox": [x, y, w, w], "score": score}));
        }
        images.push(json!({"id": image, "width": 100, "height": 100}));
        let (g, dn) = (gt_classes.len(), det_classes.len());
        let mut n = Nest::<Cpu>::map();
        n.insert("boxes", floats(gt, vec![g, 4])).unwrap();
        n.insert("labels", ints(gt_classes)).unwrap();
        n.insert("detected_boxes", floats(det, vec![dn, 4]))
            .unwrap();
        n.insert("detected_scores", floats(scores, vec![dn]))
            .unwrap();
        n.insert("detected_labels", ints(det_classes)).unwrap();
        kpi.sample(vec![Some(n)], image + 1 == images_count)
            .unwrap();
    }
    let values = kpi.finish().unwrap();
    let ours = nc7_core::kpi::kpi_json(&values.by_accumulator["detection"], "detection");
    assert_eq!(
        ours["ap"][2],
        Value::Null,
        "class 2 has no true boxes: {ours}"
    );
    let categories: Vec<Value> = (1..=3)
        .map(|c| json!({"id": c, "name": format!("c{c}")}))
        .collect();
    let data = json!({"gt": {"info": {}, "images": images, "annotations": annotations, "categories": categories}, "dt": results});
    let Some(text) = python::run_python("pycocotools", COCO, &[&data.to_string()]) else {
        return;
    };
    let reference: Value = serde_json::from_str(text.trim()).unwrap();
    for key in ["map", "map_50", "map_75"] {
        close(&ours[key], reference[key].as_f64().unwrap(), key);
    }
    for k in 0..2 {
        close(
            &ours["ap"][k],
            reference["ap"][k].as_f64().unwrap(),
            &format!("ap[{k}]"),
        );
        close(
            &ours["ap_50"][k],
            reference["ap_50"][k].as_f64().unwrap(),
            &format!("ap_50[{k}]"),
        );
    }
    assert_eq!(reference["ap"][2], Value::Null);
}
