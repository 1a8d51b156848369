//! TensorBoard's own reader loads the event files nc7 writes.

use crate::support::python;

use nc7_core::nucleotide::SummaryWriter;
use nc7_core::tracking::EventWriter;
use serde_json::Value;

const READ: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "histograms": 0})
acc.Reload()
tags = acc.Tags()
out = {
    "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
    "histograms": {
        t: [[e.step, e.histogram_value.min, e.histogram_value.max, e.histogram_value.num,
             e.histogram_value.sum, list(e.histogram_value.bucket_limit),
             list(e.histogram_value.bucket)] for e in acc.Histograms(t)]
        for t in tags["histograms"]
    },
}
print(json.dumps(out, sort_keys=True))
"#;

#[test]
fn tensorboard_reads_scalars_and_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let writer = EventWriter::create(&dir.path().join("train")).unwrap();
    for step in 1..=5u64 {
        writer.scalar("loss", 1.0 / step as f64, step);
        writer.scalar("learning_rate", 0.1, step);
    }
    writer.histogram("weights", &[0.0, 1.0, 1.0, 2.0, 4.0, f64::NAN], 3, 4);
    writer.flush().unwrap();
    let name = writer
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    drop(writer);

    let Some(out) = python::run_python(
        "tensorboard",
        READ,
        &[dir.path().join("train").to_str().unwrap()],
    ) else {
        return;
    };
    let got: Value = serde_json::from_str(&out).unwrap();
    let loss: Vec<(u64, f64)> = got["scalars"]["loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].as_u64().unwrap(), e[1].as_f64().unwrap()))
        .collect();
    assert_eq!(loss.len(), 5);
    for (i, (step, value)) in loss.iter().enumerate() {
        assert_eq!(*step, i as u64 + 1);
        assert!((value - 1.0 / (i as f64 + 1.0)).abs() < 1e-6, "{value}");
    }
    assert_eq!(got["scalars"]["learning_rate"].as_array().unwrap().len(), 5);
    let h = &got["histograms"]["weights"][0];
    assert_eq!(h[0], 3, "step");
    assert_eq!(
        (h[1].as_f64(), h[2].as_f64(), h[3].as_f64(), h[4].as_f64()),
        (Some(0.0), Some(4.0), Some(5.0), Some(8.0))
    );
    assert_eq!(h[5], serde_json::json!([1.0, 2.0, 3.0, 4.0]));
    assert_eq!(h[6], serde_json::json!([1.0, 2.0, 1.0, 1.0]));
}
