use super::file::number;
use super::yaml::*;
use super::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A run in the file store `root`.
fn local(root: &Path, name: &str, resume: Option<(&Path, u64)>) -> Option<MlflowRun> {
    MlflowRun::start(&Target::Files(root.to_owned()), root, "demo", name, resume)
}

fn files(run: &MlflowRun) -> &FileRun {
    match &run.backend {
        Backend::Files(r) => r,
        Backend::Server(_) => panic!("a file store run"),
    }
}

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
    let run = local(&root, "training", None).unwrap();
    run.remember(&keep);
    run.log_metrics([("train/loss", 1.0)], 1);
    run.log_metrics([("train/loss", 0.5)], 2);
    run.log_params(&[("a".to_string(), "1".to_string())].into_iter().collect());
    run.end(RunStatus::Killed);
    let again = local(&root, "training", Some((&keep, 1))).unwrap();
    assert_eq!(again.id, run.id);
    again.log_params(&[("a".to_string(), "2".to_string())].into_iter().collect());
    let metric = fs::read_to_string(files(&again).key_path("metrics", "train/loss")).unwrap();
    assert_eq!(metric.lines().count(), 1, "{metric}");
    assert_eq!(
        fs::read_to_string(files(&again).key_path("params", "a")).unwrap(),
        "1"
    );
    let meta = fs::read_to_string(files(&again).dir().join("meta.yaml")).unwrap();
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
    let files = |path: &str| Some(Target::Files(PathBuf::from(path)));
    assert_eq!(target_of(p, None, None), files("/p/mlruns"));
    assert_eq!(target_of(p, Some(""), None), files("/p/mlruns"));
    assert_eq!(target_of(p, Some("file:///x/runs"), None), files("/x/runs"));
    assert_eq!(target_of(p, Some("./runs"), None), files("./runs"));
    assert_eq!(
        target_of(p, Some("http://127.0.0.1:5000/"), None),
        Some(Target::Server("http://127.0.0.1:5000".into()))
    );
    // A scheme nc7 does not track into: tracked in the project, with a warning that says what
    // to use.
    assert_eq!(
        target_of(p, Some("sqlite:///m.db"), None),
        files("/p/mlruns")
    );
    let err = parse_uri("sqlite:///m.db").unwrap_err();
    assert!(
        err.contains("`file:` URI")
            && err.contains("`http://`")
            && err.contains("mlflow migrate-filestore --source mlruns --target sqlite:///m.db"),
        "{err}"
    );
    assert!(
        parse_uri("http://")
            .unwrap_err()
            .contains("names no server")
    );
    assert_eq!(target_of(p, None, Some("off")), None);
}

#[test]
fn a_store_that_cannot_be_written_leaves_the_run_untracked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mlruns");
    fs::write(&file, "not a folder").unwrap();
    assert!(local(&file, "training", None).is_none());
}

#[test]
fn keys_mlflow_refuses_are_renamed_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let run = local(&dir.path().join("mlruns"), "r", None).unwrap();
    run.log_metrics([("eval/f1 (macro)", 0.5), ("eval/ok", 1.0)], 1);
    let run = files(&run);
    assert!(run.key_path("metrics", "eval/f1 _macro_").is_file());
    let tag = fs::read_to_string(run.key_path("tags", "nc7.renamed_keys")).unwrap();
    assert_eq!(tag, r#"{"eval/f1 (macro)":"eval/f1 _macro_"}"#);
}

#[test]
fn a_name_that_is_another_names_folder_is_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let run = local(&dir.path().join("mlruns"), "r", None).unwrap();
    // A loss nucleotide named `loss`: its `loss/loss` beside the total `loss`.
    run.log_metrics([("train/loss", 1.0), ("train/loss/loss", 2.0)], 1);
    run.log_metrics([("train/loss", 0.5), ("train/loss/loss", 1.5)], 2);
    let run = files(&run);
    assert!(run.ok());
    let lines = |k: &str| {
        fs::read_to_string(run.dir().join("metrics").join(k))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(lines("train/loss"), 2);
    assert_eq!(lines("train/loss.loss"), 2);
    let tag = fs::read_to_string(run.key_path("tags", "nc7.renamed_keys")).unwrap();
    assert_eq!(tag, r#"{"train/loss/loss":"train/loss.loss"}"#);
}

/// A request a fake tracking server got.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

impl Request {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A tracking server on loopback that answers as MLflow does, refusing the first `fail_batches`
/// `log-batch` requests with a 500 and going away after `serve` requests.
fn fake_server(fail_batches: usize, serve: usize) -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut failed = 0;
        for stream in listener.incoming().take(serve) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let (method, path) = (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
            );
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = header.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let (status, answer) = if path.contains("get-by-name") {
                (
                    404,
                    json!({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such"}),
                )
            } else if path.ends_with("experiments/create") {
                (200, json!({"experiment_id": "7"}))
            } else if path.ends_with("runs/create") {
                (
                    200,
                    json!({"run": {"info": {"run_id": "r1",
                    "artifact_uri": "mlflow-artifacts:/7/r1/artifacts"}}}),
                )
            } else if path.ends_with("runs/log-batch") && failed < fail_batches {
                failed += 1;
                (
                    500,
                    json!({"error_code": "INTERNAL_ERROR", "message": "busy"}),
                )
            } else {
                (200, json!({}))
            };
            log.lock().unwrap().push(Request { method, path, body });
            let text = answer.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, seen)
}

fn quick_policy() -> RetryPolicy {
    RetryPolicy {
        retries: 2,
        backoff_factor: 0.01,
        jitter: 0.0,
        timeout: Duration::from_secs(5),
        flush_timeout: Duration::from_secs(5),
    }
}

#[test]
fn a_server_gets_the_run_over_rest_and_its_errors_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen) = fake_server(1, 100);
    let target = Target::Server(url.clone());
    let run =
        MlflowRun::start_with(&target, quick_policy(), dir.path(), "demo", "r", None).unwrap();
    assert_eq!((run.id.as_str(), run.experiment.as_str()), ("r1", "7"));
    run.log_params(&[("trainer.batch_size".to_string(), "4".to_string())].into());
    run.log_metrics(
        [("train/loss", f64::NAN), ("eval/f1 (macro)", f64::INFINITY)],
        3,
    );
    let artifact = dir.path().join("config.json");
    fs::write(&artifact, "{}").unwrap();
    run.log_artifact(&artifact, "plots/config.json");
    run.end(RunStatus::Finished);
    let seen = seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths[..3],
        [
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name=demo",
            "/api/2.0/mlflow/experiments/create",
            "/api/2.0/mlflow/runs/create",
        ]
    );
    let batches: Vec<Value> = seen
        .iter()
        .filter(|r| r.path.ends_with("log-batch"))
        .map(Request::json)
        .collect();
    // The 500 was retried with the same batch.
    assert!(batches.len() >= 2, "{seen:?}");
    assert_eq!(batches[0], batches[1]);
    let all = |field: &str| -> Vec<Value> {
        batches[1..]
            .iter()
            .flat_map(|b| b[field].as_array().unwrap().clone())
            .collect()
    };
    let metrics = all("metrics");
    assert_eq!(metrics[0]["key"], "train/loss");
    assert_eq!(metrics[0]["value"], "NaN");
    assert_eq!(metrics[0]["step"], 3);
    assert_eq!(metrics[1]["key"], "eval/f1 _macro_");
    assert_eq!(metrics[1]["value"], "Infinity");
    assert_eq!(
        all("params"),
        [json!({"key": "trainer.batch_size", "value": "4"})]
    );
    assert_eq!(
        all("tags"),
        [json!({"key": "nc7.renamed_keys", "value": r#"{"eval/f1 (macro)":"eval/f1 _macro_"}"#})]
    );
    let put = seen.iter().find(|r| r.method == "PUT").unwrap();
    assert_eq!(
        put.path,
        "/api/2.0/mlflow-artifacts/artifacts/7/r1/artifacts/plots/config.json"
    );
    assert_eq!(put.body, b"{}");
    let end = seen.last().unwrap();
    assert_eq!(end.path, "/api/2.0/mlflow/runs/update");
    assert_eq!(end.json()["status"], "FINISHED");
    assert!(end.json()["end_time"].as_u64().unwrap() > 0);
    // Nothing was written locally.
    assert!(!dir.path().join("mlruns").exists());
}

#[test]
fn what_a_server_that_went_away_did_not_take_is_written_locally() {
    let dir = tempfile::tempdir().unwrap();
    // The server answers the run's creation and the first batch, then is gone.
    let (url, seen) = fake_server(0, 4);
    let target = Target::Server(url.clone());
    let run =
        MlflowRun::start_with(&target, quick_policy(), dir.path(), "demo", "r", None).unwrap();
    run.log_metrics([("train/loss", 1.0)], 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen.lock().unwrap().len() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    run.log_params(&[("a".to_string(), "1".to_string())].into());
    run.log_metrics([("train/loss", 0.5)], 2);
    run.end(RunStatus::Finished);
    // A run in the project's store: every param and tag, the points the server did not take,
    // its status, and the server's run id.
    let root = dir.path().join("mlruns");
    let experiment = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap() != "0" && p.join("meta.yaml").is_file())
        .unwrap();
    let spilled = fs::read_dir(&experiment)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir() && p.file_name().unwrap() != "tags")
        .unwrap();
    let read = |p: &str| fs::read_to_string(spilled.join(p)).unwrap();
    assert_eq!(read("tags/nc7.remote_run_id"), "r1");
    assert_eq!(read("params/a"), "1");
    let points: Vec<String> = read("metrics/train/loss")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(points.len(), 1, "{points:?}");
    assert!(points[0].ends_with(" 0.5 2"), "{points:?}");
    assert!(read("meta.yaml").contains("status: 3\n"));
}

#[test]
fn a_server_down_at_the_start_leaves_the_run_in_the_project() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = Target::Server(format!("http://127.0.0.1:{port}"));
    let run =
        MlflowRun::start_with(&target, quick_policy(), dir.path(), "demo", "r", None).unwrap();
    assert_eq!(run.target, Target::Files(dir.path().join("mlruns")));
    run.log_metrics([("train/loss", 1.0)], 1);
    run.end(RunStatus::Finished);
    let tag = fs::read_to_string(files(&run).key_path("tags", "nc7.unreachable_tracking_uri"));
    assert_eq!(tag.unwrap(), format!("http://127.0.0.1:{port}"));
}
