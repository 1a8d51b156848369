//! The UNet example on shortened schedules: it learns to segment, exports and segments new
//! shapes; and its encoder starts from a trained classifier's weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{nc7, project};

/// The last evaluation's value of `metric` in a train command's output.
fn last(text: &str, metric: &str) -> f64 {
    text.rsplit(&format!("{metric} "))
        .next()
        .filter(|_| text.contains(metric))
        .and_then(|t| t.split([',', '\n']).next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {metric} in {text}"))
}

/// The raw bytes of every tensor in a safetensors file, by name.
fn tensors(file: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect()
}

fn saved_weights(project: &Path) -> PathBuf {
    let (_, newest) = nc7_core::export::list(&project.join("saved_models"))
        .pop()
        .expect("a saved model");
    newest.join("model.safetensors")
}

#[test]
fn learns_to_segment_and_segments_new_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let unet = project("shapes-unet", dir.path());
    let p = unet.to_str().unwrap();
    nc7("shapes-unet", &["check", p]);
    let text = nc7(
        "shapes-unet",
        &["train", p, "--set", "trainer.num_epochs=2"],
    );
    // All background scores 0.2 (its IoU about 0.8, the shape's 0); 0.64 after two epochs.
    let iou = last(&text, "iou/mean_iou");
    assert!(iou > 0.5, "mean IoU after 250 steps: {iou}\n{text}");
    // The KPI: the IoU of every pixel of the evaluation set at once.
    let kpi = last(&text, "kpi/segmentation_kpi/mean_iou");
    assert!(kpi > 0.5, "the mean IoU KPI after 250 steps: {kpi}\n{text}");
    let table = std::fs::read_to_string(unet.join("logs/experiments.csv")).unwrap();
    assert!(
        table.starts_with(
            "finished,loss,mean_iou,mlflow_run_id,project,run,step,trainer.num_epochs\n"
        ),
        "{table}"
    );
    nc7("shapes-unet", &["infer", p]);
    let results = unet.join("inference/last_run/results");
    let masks: Vec<_> = std::fs::read_dir(&results).unwrap().flatten().collect();
    assert_eq!(masks.len(), 100, "one mask per new shape");
    let first = image::image_dimensions(results.join("shape-3-000000-predicted_mask.png")).unwrap();
    assert_eq!(first, (32, 32), "a mask the size of the image");
}

/// The transfer project (`transfer/trainer.json`) loads the classifier's `cnn` into the
/// `encoder`; with the encoder frozen, the UNet's exported encoder is the classifier's
/// convolutions, bit for bit, while the decoder trains.
#[test]
fn the_encoder_starts_from_the_classifiers_weights() {
    let dir = tempfile::tempdir().unwrap();
    let classifier = project("shapes-classifier", dir.path());
    let c = classifier.to_str().unwrap();
    nc7(
        "shapes-unet",
        &[
            "train",
            c,
            "--set",
            "trainer.num_epochs=1",
            "--set",
            "datasets.train.samples=320",
        ],
    );
    let unet = project("shapes-unet", dir.path());
    // The transfer overlay, as shipped: its path reaches the classifier next to the project.
    let overlay = dir.path().join("transfer");
    std::fs::create_dir_all(&overlay).unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shapes-unet/transfer/trainer.json"),
    )
    .unwrap();
    assert!(
        shipped.contains("../../shapes-classifier/project"),
        "{shipped}"
    );
    std::fs::write(
        overlay.join("trainer.json"),
        shipped.replace("../../shapes-classifier/project", c),
    )
    .unwrap();
    let before = tensors(&saved_weights(&classifier));
    nc7(
        "shapes-unet",
        &[
            "train",
            unet.to_str().unwrap(),
            "--config-dir",
            overlay.to_str().unwrap(),
            "--set",
            "plugins.encoder.trainable=false",
            "--set",
            "trainer.num_epochs=1",
            "--set",
            "datasets.train.samples=160",
        ],
    );
    let after = tensors(&saved_weights(&unet));
    for i in 0..3 {
        for p in ["weight", "bias"] {
            let source = &before[&format!("cnn.convs.{i}.{p}")];
            let loaded = &after[&format!("encoder.convs.{i}.{p}")];
            assert_eq!(
                source, loaded,
                "encoder.convs.{i}.{p} equals cnn.convs.{i}.{p}"
            );
        }
    }
    assert!(
        after.keys().any(|k| k.starts_with("decoder.")),
        "the decoder is saved too: {:?}",
        after.keys()
    );
}
