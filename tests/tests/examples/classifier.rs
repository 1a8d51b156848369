//! The classifier example on a shortened schedule: it trains better than chance with its KPIs
//! in every evaluation, exports, keeps an experiment row, classifies new shapes and evaluates
//! the KPIs of what it classified.

use crate::{example, nc7};

#[test]
fn trains_exports_and_classifies() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    nc7_core::project::copy_configs(&example("shapes-classifier"), &project).unwrap();
    let p = project.to_str().unwrap();
    // Its KPI accumulator's implicit `evaluate` key is no warning.
    let checked = nc7("shapes-classifier", &["check", p]);
    assert!(
        checked.trim_end().ends_with("ok: no errors, 0 warnings"),
        "{checked}"
    );
    let text = nc7(
        "shapes-classifier",
        &["train", p, "--set", "trainer.num_epochs=1"],
    );
    let accuracy: f64 = text
        .split("accuracy/accuracy ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {text}"));
    assert!(
        accuracy > 0.45,
        "better than chance (1/3) after 50 steps: {accuracy}"
    );
    let table = std::fs::read_to_string(project.join("logs/experiments.csv")).unwrap();
    assert!(
        // The run's name and MLflow run, and the value it set over the project's configs.
        table.starts_with(
            "accuracy,finished,loss,mlflow_run_id,project,run,step,trainer.num_epochs\n"
        ) && table.trim_end().ends_with(",1"),
        "{table}"
    );
    nc7("shapes-classifier", &["infer", p]);
    let results = project.join("inference/last_run/results");
    let first: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(results.join("shape-3-000000.json")).unwrap(),
    )
    .unwrap();
    assert!(first["class"].as_i64().is_some_and(|c| (0..3).contains(&c)));
    // 200 JSON files and the records folder.
    assert_eq!(std::fs::read_dir(&results).unwrap().count(), 201);
    assert!(text.contains("kpi/classification/f1_macro"), "{text}");
    let evaluated = nc7("shapes-classifier", &["evaluate-kpi", p]);
    assert!(
        evaluated.contains("evaluated 200 samples") && evaluated.contains("f1_macro"),
        "{evaluated}"
    );
    let kpi: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            project.join("kpi_evaluation/last_run/results/classification.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let right: i64 = (0..3)
        .map(|i| kpi["confusion_matrix"][i][i].as_i64().unwrap())
        .sum();
    assert_eq!(
        right as f64 / 200.0,
        kpi["accuracy"].as_f64().unwrap(),
        "{kpi}"
    );
    assert!(
        project
            .join("kpi_evaluation/last_run/results/classification-confusion_matrix.png")
            .is_file()
    );
}

/// The accuracy a `train` command printed in its last evaluation.
fn accuracy_of(text: &str) -> f64 {
    text.split("accuracy/accuracy ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {text}"))
}

#[test]
fn trains_on_two_devices_to_the_accuracy_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let train = |name: &str, extra: &[&str]| {
        let project = dir.path().join(name);
        nc7_core::project::copy_configs(&example("shapes-classifier"), &project).unwrap();
        let p = project.to_str().unwrap().to_owned();
        let mut args = vec!["train", &p, "--set", "trainer.num_epochs=2"];
        args.extend_from_slice(extra);
        let text = nc7("shapes-classifier", &args);
        let runs = nc7_core::project::ProjectMetadata::read(&project).unwrap();
        (accuracy_of(&text), runs.runs[0].device.clone())
    };
    let (one, device) = train("one", &[]);
    assert_eq!(device.as_deref(), Some("cpu"));
    let (two, devices) = train("two", &["--devices", "cpu:0,cpu:1"]);
    assert_eq!(devices.as_deref(), Some("cpu:0,cpu:1"));
    assert!(one > 0.6, "one device learns: {one}");
    // The same steps to float tolerance: the accuracy over the 400 evaluation samples agrees
    // to a few samples.
    assert!((one - two).abs() <= 0.01, "one device {one}, two {two}");
}
