use super::*;
use serde_json::json;

#[test]
fn configs_flatten_into_params() {
    let config = json!({
        "trainer_config": {"optimization_config": {"learning_rate": 0.01}, "batch_size": {"train": 4}},
        "plugins_config": [{"name": "cnn", "class_name": "Cnn", "filters": [8, 16]}],
        "model_config": null,
    });
    let params = flatten_config(&config);
    assert_eq!(params["trainer.optimization_config.learning_rate"], "0.01");
    assert_eq!(params["trainer.batch_size.train"], "4");
    assert_eq!(params["plugins.cnn.filters"], "[8,16]");
    assert_eq!(params["plugins.cnn.class_name"], "Cnn");
    assert!(!params.keys().any(|k| k.starts_with("model")));
}

#[test]
fn names_and_values_are_what_mlflow_reads() {
    assert_eq!(sanitize("kpi/f1 (macro)/../x"), "kpi/f1 _macro_/_/x");
    assert_eq!(number(f64::NAN), "NaN");
    assert_eq!(number(f64::NEG_INFINITY), "-inf");
    assert_eq!(number(0.1), "0.1");
    assert_eq!(quoted("it's"), "'it''s'");
    assert_eq!(
        yaml_field("name: 'it''s'\nx: 1\n", "name").as_deref(),
        Some("it's")
    );
}

#[test]
fn runs_continue_without_the_steps_after_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mlruns");
    let keep = dir.path().join("run.json");
    let run = MlflowRun::start(&root, "demo", "training", None).unwrap();
    run.remember(&keep);
    run.log_metrics([("train/loss", 1.0)], 1);
    run.log_metrics([("train/loss", 0.5)], 2);
    run.log_params(&[("a".to_string(), "1".to_string())].into_iter().collect());
    run.end(RunStatus::Killed);
    let again = MlflowRun::start(&root, "demo", "training", Some((&keep, 1))).unwrap();
    assert_eq!(again.id, run.id);
    again.log_params(&[("a".to_string(), "2".to_string())].into_iter().collect());
    let metric = fs::read_to_string(again.key_path("metrics", "train/loss")).unwrap();
    assert_eq!(metric.lines().count(), 1, "{metric}");
    assert_eq!(
        fs::read_to_string(again.key_path("params", "a")).unwrap(),
        "1"
    );
    let meta = fs::read_to_string(again.dir.join("meta.yaml")).unwrap();
    assert!(meta.contains("status: 1\n"), "{meta}");
    // One experiment besides Default, found again by name.
    let experiments: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("meta.yaml").is_file())
        .collect();
    assert_eq!(experiments.len(), 2);
}

#[test]
fn the_store_follows_the_tracking_uri() {
    let p = Path::new("/p");
    assert_eq!(
        store_root_of(p, None, None),
        Some(PathBuf::from("/p/mlruns"))
    );
    assert_eq!(
        store_root_of(p, Some(""), None),
        Some(PathBuf::from("/p/mlruns"))
    );
    assert_eq!(
        store_root_of(p, Some("file:///x/runs"), None),
        Some(PathBuf::from("/x/runs"))
    );
    assert_eq!(
        store_root_of(p, Some("./runs"), None),
        Some(PathBuf::from("./runs"))
    );
    // A scheme nc7 does not write: tracked in the project, with a warning.
    assert_eq!(
        store_root_of(p, Some("sqlite:///m.db"), None),
        Some(PathBuf::from("/p/mlruns"))
    );
    assert_eq!(store_root_of(p, None, Some("off")), None);
}

#[test]
fn a_store_that_cannot_be_written_leaves_the_run_untracked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mlruns");
    fs::write(&file, "not a folder").unwrap();
    assert!(MlflowRun::start(&file, "demo", "training", None).is_none());
}

#[test]
fn keys_mlflow_refuses_are_renamed_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let run = MlflowRun::start(&dir.path().join("mlruns"), "demo", "r", None).unwrap();
    run.log_metrics([("eval/f1 (macro)", 0.5), ("eval/ok", 1.0)], 1);
    assert!(run.key_path("metrics", "eval/f1 _macro_").is_file());
    let tag = fs::read_to_string(run.key_path("tags", "nc7.renamed_keys")).unwrap();
    assert_eq!(tag, r#"{"eval/f1 (macro)":"eval/f1 _macro_"}"#);
}

#[test]
fn a_name_that_is_another_names_folder_is_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let run = MlflowRun::start(&dir.path().join("mlruns"), "demo", "r", None).unwrap();
    // A loss nucleotide named `loss`: its `loss/loss` beside the total `loss`.
    run.log_metrics([("train/loss", 1.0), ("train/loss/loss", 2.0)], 1);
    run.log_metrics([("train/loss", 0.5), ("train/loss/loss", 1.5)], 2);
    assert!(run.ok());
    let lines = |k: &str| {
        fs::read_to_string(run.dir.join("metrics").join(k))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(lines("train/loss"), 2);
    assert_eq!(lines("train/loss.loss"), 2);
    let tag = fs::read_to_string(run.key_path("tags", "nc7.renamed_keys")).unwrap();
    assert_eq!(tag, r#"{"train/loss/loss":"train/loss.loss"}"#);
}
