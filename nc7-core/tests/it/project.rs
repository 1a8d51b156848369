//! Project configs end to end: layout, layering, global scopes, overrides, every error kind at
//! once, run folders, snapshots, metadata and the command line (spec §4, §5, §8).

use std::fs;
use std::path::Path;

use burn::prelude::Backend;
use burn::tensor::{Int, Tensor};
use nc7_core::check::ProjectCheck;
use nc7_core::config::{Overrides, RunType};
use nc7_core::nucleotide::CallbackContext;
use nc7_core::project::{
    InferenceRun, ProjectError, ProjectMetadata, TrainingDirs, write_snapshot,
};
use nc7_core::{BoxError, Code, Generated, Incoming, Mode, NoKeys, Registry, cli};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Nucleotides the projects below use.

#[derive(Generated)]
pub struct Batch<B: Backend> {
    images: Tensor<B, 4>,
    labels: Tensor<B, 1, Int>,
}

/// One sample, as datasets and data feeders generate it (the handlers get them batched).
#[derive(Generated)]
pub struct Sample<B: Backend> {
    images: Tensor<B, 3>,
    labels: i64,
}

#[derive(Generated)]
pub struct Logits<B: Backend> {
    logits: Tensor<B, 2>,
}

#[derive(Incoming)]
pub struct Scored<B: Backend> {
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
}

#[derive(Generated)]
pub struct Loss<B: Backend> {
    loss: Tensor<B, 1>,
}

/// The images dataset's parameters.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// How many samples.
    count: usize,
    /// Image side.
    #[serde(default = "eight")]
    size: u32,
}

fn eight() -> u32 {
    8
}

/// The network's parameters.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    /// Filters of the first layer.
    filters: u32,
    /// Dropout rate.
    dropout: f64,
    /// Widths of the layers.
    layers: Vec<u32>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            filters: 8,
            dropout: 0.0,
            layers: vec![8, 16],
        }
    }
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EveryConfig {
    /// Print every this many iterations.
    every: u32,
}

impl Default for EveryConfig {
    fn default() -> Self {
        EveryConfig { every: 1 }
    }
}

simple_nucleotide!(Images, Dataset, ImagesConfig, NoKeys, Sample<B>, {
    fn len(&self) -> usize {
        4
    }
    fn get(&self, _: usize) -> Result<Sample<B>, BoxError> {
        Err("not read in these tests".into())
    }
});
simple_nucleotide!(ImagesFeeder, DataFeeder, Empty, NoKeys, Sample<B>, {
    fn next_sample(&mut self) -> Result<Option<Sample<B>>, BoxError> {
        Ok(None)
    }
});
simple_nucleotide!(Net, ModelPlugin, NetConfig, Batch<B>, Logits<B>, {
    fn forward(&self, input: Batch<B>, _: Mode) -> Logits<B> {
        Logits {
            logits: input.images.flatten(1, 3),
        }
    }
});
simple_nucleotide!(CrossEntropy, ModelLoss, Empty, Scored<B>, Loss<B>, {
    fn loss(&self, input: Scored<B>, _: Mode) -> Loss<B> {
        Loss {
            loss: input.logits.mean(),
        }
    }
});
simple_nucleotide!(Accuracy, ModelMetric, Empty, Scored<B>, Loss<B>, {
    fn metric(&self, input: Scored<B>, _: Mode) -> Loss<B> {
        Loss {
            loss: input.logits.mean(),
        }
    }
});
simple_nucleotide!(Argmax, ModelPostProcessor, Empty, Logits<B>, Logits<B>, {
    fn process(&self, input: Logits<B>, _: Mode) -> Logits<B> {
        input
    }
});
simple_nucleotide!(
    Printer,
    CoordinatorCallback,
    EveryConfig,
    Loss<B>,
    NoKeys,
    {
        fn on_iteration_end(
            &mut self,
            _: Loss<B>,
            _: &CallbackContext,
        ) -> Result<Option<NoKeys>, BoxError> {
            Ok(Some(NoKeys))
        }
    }
);
simple_nucleotide!(
    LogitsPrinter,
    CoordinatorCallback,
    EveryConfig,
    Logits<B>,
    NoKeys,
    {
        fn on_iteration_end(
            &mut self,
            _: Logits<B>,
            _: &CallbackContext,
        ) -> Result<Option<NoKeys>, BoxError> {
            Ok(Some(NoKeys))
        }
    }
);

// ---------------------------------------------------------------------------------------------
// Helpers.

fn project(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    dir
}

const C: &str = "training/configs";

fn valid_training() -> Vec<(String, String)> {
    [
        (
            "datasets.json",
            r#"{"train": {"class_name": "Images", "name": "train_images", "count": 16},
                             "eval": {"class_name": "Images", "name": "eval_images", "count": 4}}"#,
        ),
        ("trainer.json", r#"{"num_epochs": 2, "batch_size": 4}"#),
        (
            "project_global_config.json",
            r#"{"dropout": 0.5, "ModelPlugin": {"filters": 16}, "Images": {"size": 12}}"#,
        ),
        (
            "plugins/net.json",
            r#"{"class_name": "Net", "name": "net", "inbound_nodes": ["dataset"]}"#,
        ),
        (
            "losses/ce.json",
            r#"{"class_name": "CrossEntropy", "name": "ce", "inbound_nodes": ["dataset", "net"]}"#,
        ),
        (
            "metrics/acc.toml",
            "class_name = \"Accuracy\"\nname = \"acc\"\ninbound_nodes = [\"dataset\", \"net\"]\n",
        ),
        (
            "postprocessors/argmax.json",
            r#"{"class_name": "Argmax", "name": "argmax", "inbound_nodes": ["net"]}"#,
        ),
        (
            "callbacks/printer.json",
            r#"{"class_name": "Printer", "name": "printer", "inbound_nodes": ["ce"]}"#,
        ),
        ("_notes.txt", "ignored"),
        (".hidden.json", "{not even json"),
        ("_old/plugins.json", "{}"),
    ]
    .iter()
    .map(|(p, t)| (format!("{C}/{p}"), t.to_string()))
    .collect()
}

fn project_with(changes: &[(&str, Option<&str>)]) -> TempDir {
    let mut files = valid_training();
    for (path, text) in changes {
        let path = format!("{C}/{path}");
        files.retain(|(p, _)| *p != path);
        if let Some(t) = text {
            files.push((path, t.to_string()));
        }
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    project(&refs)
}

fn check(dir: &Path, run: RunType, overrides: Overrides) -> ProjectCheck {
    ProjectCheck::load(dir, run, &overrides, Registry::global())
}

fn errors(c: &ProjectCheck) -> Vec<(Code, String, Option<String>)> {
    c.diagnostics
        .errors()
        .map(|d| (d.code, d.to_string(), d.file.clone()))
        .collect()
}

fn has(c: &ProjectCheck, code: Code, file: Option<&str>, text: &str) {
    assert!(
        c.diagnostics
            .errors()
            .any(|d| d.code == code && d.file.as_deref() == file && d.to_string().contains(text)),
        "no {code} in {file:?} containing {text:?} among:\n{}",
        c.diagnostics
    );
}

fn cli(args: &[&str], env: Overrides) -> (u8, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut argv = vec!["nc7"];
    argv.extend(args);
    let code = cli::run(argv, env, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

// ---------------------------------------------------------------------------------------------
// A valid project.

#[test]
fn a_valid_project_checks_and_prints_its_graph() {
    let dir = project_with(&[]);
    let c = check(dir.path(), RunType::Train, Overrides::default());
    assert!(c.is_ok(), "{}", c.diagnostics);
    let names: Vec<&str> = c.handlers.iter().map(|h| h.name()).collect();
    assert_eq!(names, ["model", "callbacks_train", "callbacks_eval"]);
    assert_eq!(
        c.handlers[0].helix().order_names(),
        ["net", "argmax", "ce", "acc"]
    );

    let (code, out, err) = cli(
        &["check", dir.path().to_str().unwrap()],
        Overrides::default(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("handler `model` (genes: ModelPlugin → ModelPostProcessor → ModelLoss → ModelMetric → ModelSummary; inputs: dataset)"), "{out}");
    assert!(
        out.contains("   3. ce (ModelLoss, CrossEntropy) ← dataset, net"),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with("ok: no errors, 0 warnings"),
        "{out}"
    );
}

/// spec §5 with real types, and the snapshot: defaults and full class names filled in.
#[test]
fn global_config_typos_are_errors() {
    let global = r#"{"dropot": 0.5, "ModelPlugin": {"filtres": 16}, "Nett": {"filters": 4},
                     "Images": {"size": 12, "sise": 3}, "ModelLoss": {"filters": 2}}"#;
    let dir = project_with(&[("project_global_config.json", Some(global))]);
    let c = check(dir.path(), RunType::Train, Overrides::default());
    let file = "training/configs/project_global_config.json";
    has(
        &c,
        Code::UNKNOWN_FIELD,
        Some(file),
        "`project_global_config` has `dropot`, which is no nucleotide kind, registered type or parameter that a nucleotide of this run declares; did you mean `dropout`?",
    );
    has(
        &c,
        Code::UNKNOWN_FIELD,
        Some(file),
        "parameter `filtres` of scope `ModelPlugin` is declared by no ModelPlugin nucleotide; did you mean `filters`?",
    );
    has(
        &c,
        Code::UNKNOWN_FIELD,
        Some(file),
        "has `Nett`, which is no nucleotide kind, registered type or parameter that a nucleotide of this run declares; did you mean `Net`?",
    );
    has(
        &c,
        Code::UNKNOWN_FIELD,
        Some(file),
        "parameter `sise` of scope `Images` is declared by no `Images`; did you mean `size`?",
    );
    // No loss of this run declares `filters`.
    has(
        &c,
        Code::UNKNOWN_FIELD,
        Some(file),
        "parameter `filters` of scope `ModelLoss` is declared by no ModelLoss nucleotide",
    );
    assert_eq!(errors(&c).len(), 5, "{}", c.diagnostics);
}

#[test]
fn global_scopes_and_defaults_fill_the_resolved_config() {
    let dir = project_with(&[(
        "plugins/net.json",
        Some(
            r#"{"class_name": "Net", "name": "net", "inbound_nodes": ["dataset"], "dropout": 0.1}"#,
        ),
    )]);
    let c = check(dir.path(), RunType::Train, Overrides::default());
    assert!(c.is_ok(), "{}", c.diagnostics);
    let v = c.config.to_value();
    let net = &v["plugins_config"][0];
    assert_eq!(net["filters"], json!(16), "kind scope");
    assert_eq!(
        net["dropout"],
        json!(0.1),
        "explicit wins over the global scope"
    );
    assert_eq!(net["layers"], json!([8, 16]), "the type's default");
    assert!(
        net["class_name"].as_str().unwrap().ends_with("::Net"),
        "{net}"
    );
    assert_eq!(
        v["datasets_config"]["train"]["size"],
        json!(12),
        "type scope"
    );
    // A loss does not declare `dropout`: nothing is injected.
    assert_eq!(v["losses_config"][0].get("dropout"), None);

    let explain = c.config.explain();
    for line in [
        "plugins_config[net].filters = 16  (project_global_config, scope `ModelPlugin`)",
        "plugins_config[net].dropout = 0.1  (training/configs/plugins/net.json)",
        "plugins_config[net].layers = [8,16]  (default of `Net`)",
        "datasets_config.train.size = 12  (project_global_config, scope `Images`)",
        "metrics_config[acc].name = \"acc\"  (training/configs/metrics/acc.toml)",
        "trainer_config.num_epochs = 2  (training/configs/trainer.json)",
    ] {
        assert!(
            explain.lines().any(|l| l == line),
            "no line {line:?} in:\n{explain}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Layout (spec §8).

#[test]
fn config_discovery_follows_the_layout() {
    let dir = project_with(&[
        (
            "config_main.json",
            Some(
                r#"{"trainer_config": {"num_epochs": 100}, "model_config": {"name": "from_main"}}"#,
            ),
        ),
        (
            "plugins/b.json",
            Some(
                r#"[{"class_name": "Net", "name": "b1", "inbound_nodes": ["dataset"]},
                                    {"class_name": "Net", "name": "b2", "inbound_nodes": ["dataset"]}]"#,
            ),
        ),
    ]);
    let c = check(dir.path(), RunType::Train, Overrides::default());
    assert!(c.is_ok(), "{}", c.diagnostics);
    let v = c.config.to_value();
    // Gene folder files in sorted order, a file may hold a list.
    let plugins: Vec<&str> = v["plugins_config"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(plugins, ["b1", "b2", "net"]);
    // Single files override config_main; what only config_main gives stays.
    assert_eq!(
        v["trainer_config"],
        json!({"num_epochs": 2, "batch_size": 4})
    );
    assert_eq!(v["model_config"], json!({"name": "from_main"}));
    assert!(v["datasets_config"]["train"].is_object());
}

#[test]
fn stray_files_and_folders_and_two_formats_are_errors() {
    let dir = project_with(&[
        ("wrong_config.json", Some("{}")),
        ("plugin/x.json", Some("{}")),
        ("trainer.toml", Some("num_epochs = 3\n")),
        ("losses/notes.txt", Some("x")),
        ("datasets.yaml", Some("x")),
    ]);
    let c = check(dir.path(), RunType::Train, Overrides::default());
    has(
        &c,
        Code::LAYOUT,
        Some("training/configs/wrong_config.json"),
        "stray file `wrong_config.json`",
    );
    has(
        &c,
        Code::LAYOUT,
        Some("training/configs/plugin"),
        "did you mean `plugins`?",
    );
    has(
        &c,
        Code::LAYOUT,
        Some("training/configs/trainer.json"),
        "same config in two formats",
    );
    has(
        &c,
        Code::LAYOUT,
        Some("training/configs/losses/notes.txt"),
        "stray file `notes.txt`",
    );
    has(
        &c,
        Code::LAYOUT,
        Some("training/configs/datasets.yaml"),
        "end in `.json` or `.toml`",
    );
    assert_eq!(errors(&c).len(), 6, "{}", c.diagnostics);
    // The trainer is ambiguous, so it is also missing.
    has(&c, Code::MISSING_CONFIG, None, "`trainer_config`");
}

#[test]
fn malformed_files_report_line_and_column() {
    let dir = project_with(&[
        (
            "trainer.json",
            Some("{\n  \"num_epochs\": 2,\n  \"batch_size\" 4\n}"),
        ),
        (
            "metrics/acc.toml",
            Some("class_name = \"Accuracy\"\nname = \n"),
        ),
    ]);
    let c = check(dir.path(), RunType::Train, Overrides::default());
    has(
        &c,
        Code::CONFIG_SYNTAX,
        Some("training/configs/trainer.json"),
        "at line 3, column 16",
    );
    has(
        &c,
        Code::CONFIG_SYNTAX,
        Some("training/configs/metrics/acc.toml"),
        "at line 2, column 8",
    );
}

#[test]
fn empty_and_missing_projects() {
    let empty = tempfile::tempdir().unwrap();
    let c = check(empty.path(), RunType::Train, Overrides::default());
    assert_eq!(errors(&c).len(), 1, "{}", c.diagnostics);
    has(
        &c,
        Code::MISSING_CONFIG,
        None,
        "has no `training/configs/` for a train run",
    );
    let (code, _, err) = cli(&["check", "/no/such/project"], Overrides::default());
    assert_eq!(code, 1);
    assert!(
        err.contains("project directory `/no/such/project` does not exist"),
        "{err}"
    );
}

#[test]
fn mandatory_configs() {
    let dir = project_with(&[
        ("trainer.json", None),
        ("losses/ce.json", None),
        (
            "datasets.json",
            Some(r#"{"train": {"class_name": "Images", "name": "d", "count": 1}}"#),
        ),
        ("metrics/acc.toml", None),
        ("kpi/mean.json", None),
        ("callbacks/printer.json", None),
    ]);
    let c = check(dir.path(), RunType::Train, Overrides::default());
    has(&c, Code::MISSING_CONFIG, None, "needs `trainer_config`");
    has(&c, Code::MISSING_CONFIG, None, "needs `losses_config`");
    has(
        &c,
        Code::MISSING_CONFIG,
        Some("training/configs/datasets.json"),
        "no `eval` dataset",
    );
    assert_eq!(errors(&c).len(), 3, "{}", c.diagnostics);
}

// ---------------------------------------------------------------------------------------------
// Every error of a broken project, in one run.

#[test]
fn a_broken_project_reports_every_problem_with_its_file() {
    let dir = project_with(&[
        (
            "plugins/net.json",
            Some(
                r#"{"class_name": "Net", "name": "net", "inbound_nodes": ["dataset"], "filtres": 3, "layers": "wide"}"#,
            ),
        ),
        (
            "plugins/head.json",
            Some(r#"{"class_name": "Nett", "name": "head", "inbound_nodes": ["net"]}"#),
        ),
        (
            "plugins/wrong.json",
            Some(
                r#"{"class_name": "CrossEntropy", "name": "wrong", "inbound_nodes": ["dataset"]}"#,
            ),
        ),
        (
            "losses/ce.json",
            Some(r#"{"class_name": "CrossEntropy", "name": "ce", "inbound_nodes": ["net"]}"#),
        ),
        (
            "datasets.json",
            Some(
                r#"{"train": {"class_name": "Images", "name": "d"}, "eval": {"class_name": "Images", "name": "e", "count": 1}, "test": {}}"#,
            ),
        ),
        (
            "callbacks/printer.json",
            Some(r#"{"name": "printer", "inbound_nodes": ["ce"], "trainable": "yes"}"#),
        ),
        ("config_main.json", Some(r#"{"plugin_config": []}"#)),
        ("model.json", Some("[1, 2]")),
    ]);
    let c = check(dir.path(), RunType::Train, Overrides::default());
    let f = |name: &str| format!("training/configs/{name}");
    has(
        &c,
        Code::UNKNOWN_FIELD,
        Some(&f("plugins/net.json")),
        "did you mean `filters`?",
    );
    has(
        &c,
        Code::FIELD_TYPE,
        Some(&f("plugins/net.json")),
        "field `layers`: invalid type: string \"wide\", expected a sequence",
    );
    has(
        &c,
        Code::CLASS_NAME,
        Some(&f("plugins/head.json")),
        "unknown class_name `Nett`; did you mean `Net`?",
    );
    has(
        &c,
        Code::CLASS_NAME,
        Some(&f("plugins/wrong.json")),
        "is a ModelLoss, but a ModelPlugin is expected here",
    );
    has(
        &c,
        Code::FIELD_TYPE,
        Some(&f("datasets.json")),
        "missing field `count`",
    );
    has(
        &c,
        Code::UNKNOWN_FIELD,
        Some(&f("datasets.json")),
        "`datasets_config` has no slot `test`",
    );
    has(
        &c,
        Code::FIELD_TYPE,
        Some(&f("callbacks/printer.json")),
        "field `class_name`",
    );
    has(
        &c,
        Code::FIELD_TYPE,
        Some(&f("callbacks/printer.json")),
        "field `trainable`",
    );
    has(
        &c,
        Code::UNKNOWN_FIELD,
        Some(&f("config_main.json")),
        "unknown config section `plugin_config`",
    );
    has(
        &c,
        Code::FIELD_TYPE,
        Some(&f("model.json")),
        "`model_config` is `[1,2]`, not a map of settings",
    );
    // The graph is still checked: the loss lacks `labels` from the dataset.
    has(
        &c,
        Code::MISSING_KEY,
        Some(&f("losses/ce.json")),
        "`labels`",
    );
    // `head` has an unknown type: no cascade of key errors from it.
    assert!(
        !c.diagnostics
            .0
            .iter()
            .any(|d| d.nucleotide == "head" && d.code == Code::MISSING_KEY)
    );

    let (code, out, err) = cli(
        &["check", dir.path().to_str().unwrap()],
        Overrides::default(),
    );
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.contains("error[NC0013]: nucleotide `head`: unknown class_name `Nett`"),
        "{err}"
    );
    assert!(
        err.trim_end()
            .ends_with(&format!("{} errors and 0 warnings", errors(&c).len())),
        "{err}"
    );
}

#[test]
fn a_class_of_the_wrong_kind_for_its_folder() {
    let dir = project_with(&[(
        "datasets.json",
        Some(
            r#"{"train": {"class_name": "Net", "name": "d"}, "eval": {"class_name": "Images", "name": "e", "count": 1}}"#,
        ),
    )]);
    let c = check(dir.path(), RunType::Train, Overrides::default());
    has(
        &c,
        Code::CLASS_NAME,
        Some("training/configs/datasets.json"),
        "`Net` is a ModelPlugin, but a Dataset is expected here",
    );
}

// ---------------------------------------------------------------------------------------------
// Layering over the project's files.

#[test]
fn extra_config_dirs_env_and_set_in_order() {
    let dir = project_with(&[]);
    let extra = project(&[
        (
            "plugins/more.json",
            r#"["__BASE__", {"class_name": "Net", "name": "extra", "inbound_nodes": ["dataset"]}]"#,
        ),
        (
            "trainer.json",
            r#"{"__UPDATE_CONFIG__": true, "num_epochs": 7}"#,
        ),
    ]);
    let overrides = Overrides {
        config_dirs: vec![extra.path().to_owned()],
        env: vec![
            (
                "NC7_TRAINER__NUM_EPOCHS".into(),
                "trainer.num_epochs".into(),
                "9".into(),
            ),
            (
                "NC7_PLUGINS__NET__DROPOUT".into(),
                "plugins.net.dropout".into(),
                "0.25".into(),
            ),
        ],
        set: vec![
            "trainer.batch_size=16".into(),
            "plugins.extra.layers=[4, 4]".into(),
            "datasets.train.count=3".into(),
        ],
    };
    let c = check(dir.path(), RunType::Train, overrides);
    assert!(c.is_ok(), "{}", c.diagnostics);
    let v = c.config.to_value();
    assert_eq!(
        v["trainer_config"],
        json!({"num_epochs": 9, "batch_size": 16})
    );
    let names: Vec<&str> = v["plugins_config"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["net", "extra"]);
    assert_eq!(v["plugins_config"][0]["dropout"], json!(0.25));
    assert_eq!(v["plugins_config"][1]["layers"], json!([4, 4]));
    assert_eq!(v["datasets_config"]["train"]["count"], json!(3));
    let explain = c.config.explain();
    assert!(
        explain.contains("trainer_config.num_epochs = 9  (environment `NC7_TRAINER__NUM_EPOCHS`)"),
        "{explain}"
    );
    assert!(
        explain.contains("trainer_config.batch_size = 16  (--set trainer.batch_size=16)"),
        "{explain}"
    );
    assert!(
        explain.lines().any(|l| l
            .starts_with("plugins_config[extra].inbound_nodes = [\"dataset\"]  (")
            && l.ends_with("plugins/more.json)")),
        "{explain}"
    );
    // What the run sets over the project's own configs: its hyperparameters in an experiment.
    let over = c.config.overridden(RunType::Train);
    assert_eq!(
        over.get("trainer.num_epochs").map(String::as_str),
        Some("9")
    );
    assert_eq!(
        over.get("trainer.batch_size").map(String::as_str),
        Some("16")
    );
    assert_eq!(
        over.get("plugins.extra.class_name").map(String::as_str),
        Some("it::project::Net")
    );
    assert!(
        !over.keys().any(|k| k.starts_with("datasets.eval")),
        "values of the project's own files are no overrides: {over:?}"
    );
}

#[test]
fn overrides_of_paths_that_do_not_exist() {
    let dir = project_with(&[]);
    let set = |args: &[&str]| Overrides {
        set: args.iter().map(|s| s.to_string()).collect(),
        ..Overrides::default()
    };
    let c = check(
        dir.path(),
        RunType::Train,
        set(&[
            "trainer.bach_size=3",
            "plugins.net.filtres=3",
            "plugins.nett.filters=3",
            "trainr.num_epochs=1",
            "no_equals",
        ]),
    );
    has(
        &c,
        Code::OVERRIDE,
        None,
        "`--set trainer.bach_size=3`: `trainer_config` has no `bach_size` (it has `num_epochs`, `batch_size`; its type also declares `iterations_per_epoch`, ",
    );
    has(
        &c,
        Code::OVERRIDE,
        None,
        "`keep_best`); did you mean `batch_size`?",
    );
    has(
        &c,
        Code::OVERRIDE,
        None,
        "`plugins_config[net]` has no `filtres` (it has `class_name`, `name`, `inbound_nodes`; its type also declares `filters`, `dropout`, `layers`, `incoming_keys_mapping`, `trainable`, `optimization_config`); did you mean `filters`?",
    );
    has(
        &c,
        Code::OVERRIDE,
        None,
        "has no item `nett` (it has 1 item(s), named `net`); did you mean `net`?",
    );
    has(&c, Code::OVERRIDE, None, "did you mean `trainer`?");
    has(&c, Code::OVERRIDE, None, "expected `path=value`");
    assert_eq!(errors(&c).len(), 5);
    // A field the type declares may be set even when the file does not give it.
    let c = check(dir.path(), RunType::Train, set(&["plugins.net.layers=[1]"]));
    assert!(c.is_ok(), "{}", c.diagnostics);
    // So may a trainer field the file leaves to its default.
    let c = check(
        dir.path(),
        RunType::Train,
        set(&["trainer.prefetch=0", "trainer.progress_bar=false"]),
    );
    let v = c.config.to_value();
    let trainer = &v["trainer_config"];
    assert_eq!(
        (&trainer["prefetch"], &trainer["progress_bar"]),
        (&json!(0), &json!(false))
    );
}

// ---------------------------------------------------------------------------------------------
// Other kinds of runs.

#[test]
fn inference_checks_the_feeder_callbacks_and_the_model() {
    let mut files = valid_training();
    files.push((
        "inference/configs/datafeeder.json".into(),
        r#"{"class_name": "ImagesFeeder", "name": "feeder"}"#.into(),
    ));
    files.push((
        "inference/configs/callbacks/printer.json".into(),
        r#"{"class_name": "LogitsPrinter", "name": "printer", "inbound_nodes": ["argmax"]}"#.into(),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let dir = project(&refs);
    let c = check(dir.path(), RunType::Infer, Overrides::default());
    assert!(c.is_ok(), "{}", c.diagnostics);
    let names: Vec<&str> = c.handlers.iter().map(|h| h.name()).collect();
    assert_eq!(names, ["model", "callbacks"]);
    // Rank-2 logits mapped into a callback that takes a rank-1 loss: refused before a run.
    let printer = dir.path().join("inference/configs/callbacks/printer.json");
    let good = fs::read_to_string(&printer).unwrap();
    fs::write(
        &printer,
        r#"{"class_name": "Printer", "name": "printer", "inbound_nodes": ["argmax"],
            "incoming_keys_mapping": {"argmax": {"logits": "loss"}}}"#,
    )
    .unwrap();
    let c = check(dir.path(), RunType::Infer, Overrides::default());
    has(
        &c,
        Code::KEY_KIND,
        Some("inference/configs/callbacks/printer.json"),
        "incoming key `loss` of nucleotide `printer` takes a float tensor of rank 1, but it is mapped from `argmax`'s `logits`, a float tensor of rank 2",
    );
    fs::write(&printer, &good).unwrap();
    // Inference runs plugins and post-processors only: losses need labels.
    fs::write(
        &printer,
        r#"{"class_name": "Printer", "name": "printer", "inbound_nodes": ["ce"]}"#,
    )
    .unwrap();
    let c = check(dir.path(), RunType::Infer, Overrides::default());
    assert!(!c.is_ok());
    assert!(
        c.diagnostics.to_string().contains("`ce`"),
        "{}",
        c.diagnostics
    );
    fs::write(&printer, good).unwrap();

    // A feeder that is not a feeder.
    fs::write(
        dir.path().join("inference/configs/datafeeder.json"),
        r#"{"class_name": "Images", "name": "f", "count": 1}"#,
    )
    .unwrap();
    let c = check(dir.path(), RunType::Infer, Overrides::default());
    has(
        &c,
        Code::CLASS_NAME,
        Some("inference/configs/datafeeder.json"),
        "is a Dataset, but a DataFeeder is expected here",
    );
    let c = check(dir.path(), RunType::Kpi, Overrides::default());
    has(
        &c,
        Code::MISSING_CONFIG,
        None,
        "has no `kpi_evaluation/configs/` for a kpi run",
    );
}

// ---------------------------------------------------------------------------------------------
// Run folders, snapshots and metadata (spec §8).

#[test]
fn inference_run_folders() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let run1 = InferenceRun::create(p, None).unwrap();
    assert_eq!(run1.name, "run-1");
    assert!(run1.results.is_dir() && run1.artifacts.is_dir());
    // `last_run` names a run once it has finished.
    assert!(!p.join("inference/last_run").exists());
    run1.finish("finished").unwrap();
    assert_eq!(
        fs::read_link(p.join("inference/last_run")).unwrap(),
        Path::new("run-1")
    );
    // A run folder holding only configs (and empty folders) is reused.
    fs::create_dir_all(p.join("inference/run-1/configs")).unwrap();
    fs::write(p.join("inference/run-1/configs/x.json"), "{}").unwrap();
    assert_eq!(InferenceRun::create(p, None).unwrap().name, "run-1");
    // Once it has results, the next run is run-2.
    fs::write(run1.results.join("a.png"), "x").unwrap();
    let run2 = InferenceRun::create(p, None).unwrap();
    assert_eq!(run2.name, "run-2");
    run2.finish("failed").unwrap();
    assert_eq!(
        fs::read_link(p.join("inference/last_run")).unwrap(),
        Path::new("run-1"),
        "a failed run is not the last run"
    );
    run2.finish("finished").unwrap();
    assert_eq!(
        fs::read_link(p.join("inference/last_run")).unwrap(),
        Path::new("run-2")
    );
    // An explicit name whose folder has content is an error; a new one is fine.
    let err = InferenceRun::create(p, Some("run-1")).unwrap_err();
    assert!(matches!(err, ProjectError::RunExists { .. }), "{err}");
    assert!(
        err.to_string().contains("choose another `--run-name`"),
        "{err}"
    );
    assert_eq!(
        InferenceRun::create(p, Some("night")).unwrap().dir,
        p.join("inference/night")
    );
    for bad in ["../x", "a/b", "", "last_run", ".."] {
        assert!(
            matches!(
                InferenceRun::create(p, Some(bad)),
                Err(ProjectError::BadRunName { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn an_existing_training_needs_continue() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let err = TrainingDirs::prepare(p, true).unwrap_err();
    assert!(
        err.to_string().contains("has no training run to continue"),
        "{err}"
    );
    let dirs = TrainingDirs::prepare(p, false).unwrap();
    for d in [
        &dirs.artifacts,
        &dirs.callbacks_train,
        &dirs.callbacks_eval,
        &dirs.summaries_train,
        &dirs.summaries_eval,
        &dirs.checkpoints,
        &dirs.saved_models,
    ] {
        assert!(d.is_dir(), "{}", d.display());
    }
    // Empty folders are no run yet.
    TrainingDirs::prepare(p, false).unwrap();
    // What `dna` and `file-list` write into `training/artifacts/` is no training run.
    fs::write(dirs.artifacts.join("dna_model.dot"), "digraph {}").unwrap();
    fs::write(dirs.artifacts.join("file_list_train.jsonl"), "{}\n").unwrap();
    TrainingDirs::prepare(p, false).unwrap();
    fs::write(dirs.checkpoints.join("ckpt-1"), "x").unwrap();
    let err = TrainingDirs::prepare(p, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "project `{}` already has a training run (1 file in checkpoints/); continue it with `--continue`, or move `checkpoints/` out of the project (after keeping what you need) to start a new one; `training/configs/` stays",
            p.display()
        )
    );
    // Each thing a run wrote is named, so the advice never says to move the configs.
    write_snapshot(&dirs.artifacts, RunType::Train, &json!({})).unwrap();
    fs::write(dirs.summaries_train.join("events"), "x").unwrap();
    let err = TrainingDirs::prepare(p, false).unwrap_err().to_string();
    assert!(
        err.contains(
            "(1 file in checkpoints/, 1 file in training/artifacts/, 1 file in training/summaries/)"
        ) && err.contains("move `checkpoints/`, `training/artifacts/`, `training/summaries/` out"),
        "{err}"
    );
    TrainingDirs::prepare(p, true).unwrap();
}

#[test]
fn snapshots_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_snapshot(dir.path(), RunType::Train, &json!({"run": 1})).unwrap();
    let b = write_snapshot(dir.path(), RunType::Train, &json!({"run": 2})).unwrap();
    let c = write_snapshot(dir.path(), RunType::Infer, &json!({"run": 3})).unwrap();
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(
        [name(&a), name(&b), name(&c)],
        [
            "_config_train_run.json",
            "_config_train_run_2.json",
            "_config_infer_run.json"
        ]
    );
    let read = |p: &Path| serde_json::from_str::<Value>(&fs::read_to_string(p).unwrap()).unwrap();
    assert_eq!(read(&a), json!({"run": 1}));
    assert_eq!(read(&b), json!({"run": 2}));
}

#[test]
fn project_metadata_records_each_run() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("my_project");
    fs::create_dir(&p).unwrap();
    let i = ProjectMetadata::start_run(
        &p,
        RunType::Train,
        &p.join("training"),
        vec!["nc7".into(), "train".into()],
    )
    .unwrap();
    let j = ProjectMetadata::start_run(
        &p,
        RunType::Infer,
        &p.join("inference/run-1"),
        vec!["nc7".into(), "infer".into()],
    )
    .unwrap();
    ProjectMetadata::end_run(&p, i, "finished", &[("loss".to_string(), 0.5)].into()).unwrap();
    let meta = ProjectMetadata::read(&p).unwrap();
    assert_eq!(meta.project_name, "my_project");
    assert_eq!((i, j), (0, 1));
    let r = &meta.runs[0];
    assert_eq!(
        (r.run_type.as_str(), r.run_dir.as_str(), r.status.as_str()),
        ("train", "training", "finished")
    );
    assert!(r.end.is_some() && r.start.ends_with('Z') && !r.host.is_empty());
    assert_eq!(r.nc7_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(meta.runs[1].run_dir, "inference/run-1");
    assert_eq!(meta.runs[1].status, "running");
    // The file is plain JSON other tools read.
    let raw: Value =
        serde_json::from_str(&fs::read_to_string(p.join("nc7_project.json")).unwrap()).unwrap();
    assert_eq!(raw["runs"][0]["command"], json!(["nc7", "train"]));
    assert!(raw["runs"][0].get("git_commit").is_some());
}

// ---------------------------------------------------------------------------------------------
// The command line.

#[test]
fn command_line_subcommands() {
    let dir = project_with(&[]);
    let d = dir.path().to_str().unwrap();

    let (code, out, _) = cli(
        &["config", "explain", d, "--set", "trainer.num_epochs=3"],
        Overrides::default(),
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("trainer_config.num_epochs = 3  (--set trainer.num_epochs=3)"),
        "{out}"
    );

    let (code, out, err) = cli(&["dna", d], Overrides::default());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dna_model.dot"), "{out}");
    let dot = fs::read_to_string(dir.path().join("training/artifacts/dna_model.dot")).unwrap();
    assert!(
        dot.starts_with("digraph") && dot.contains("\"net\""),
        "{dot}"
    );
    assert!(
        dir.path()
            .join("training/artifacts/dna_callbacks_train.dot")
            .is_file()
    );
    // The same graph drawn by nc7 as SVG: a box per node and input, an arrow per edge, which
    // an XML reader parses.
    let svg_path = dir.path().join("training/artifacts/dna_model.svg");
    let svg = fs::read_to_string(&svg_path).unwrap();
    assert!(
        svg.contains(">net<") && svg.contains(">ModelPlugin<"),
        "{svg}"
    );
    if let Some(text) = crate::support::python::run_python(
        "xml.etree.ElementTree",
        "import sys, xml.etree.ElementTree as E\nns = '{http://www.w3.org/2000/svg}'\nroot = E.parse(sys.argv[1]).getroot()\nprint(len(root.findall(ns + 'g')), len(root.findall(ns + 'path')))",
        &[svg_path.to_str().unwrap()],
    ) {
        let counts: Vec<usize> = text
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        let dot_edges = dot.matches(" -> ").count();
        let dot_nodes = dot.matches("fillcolor").count();
        assert_eq!(counts, [dot_nodes, dot_edges], "{svg}");
    }

    let (code, out, _) = cli(&["info", "Net"], Overrides::default());
    assert_eq!(code, 0);
    assert!(
        out.contains("Net (ModelPlugin,")
            && out.contains("filters: integer = 8 — Filters of the first layer."),
        "{out}"
    );
    let (code, out, _) = cli(
        &["sample-config", "Images", "--format", "toml"],
        Overrides::default(),
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("count = \"TODO\"") && out.contains("size = 8"),
        "{out}"
    );
    let (code, _, err) = cli(&["info", "Nett"], Overrides::default());
    assert_eq!(code, 1);
    assert!(err.contains("did you mean `Net`?"), "{err}");
    let (code, out, _) = cli(&["list"], Overrides::default());
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("CrossEntropy") && l.contains("ModelLoss")),
        "{out}"
    );

    for sub in [
        &["check", "--help"][..],
        &["config", "explain", "--help"],
        &["info", "--help"],
        &["sample-config", "--help"],
        &["dna", "--help"],
        &["--help"],
    ] {
        let (code, out, _) = cli(sub, Overrides::default());
        assert_eq!(code, 0, "{sub:?}");
        assert!(out.contains("Usage: nc7"), "{sub:?}: {out}");
    }
    let (code, _, err) = cli(&["check", d, "--type", "trian"], Overrides::default());
    assert_eq!(code, 2);
    assert!(
        err.contains("invalid value 'trian'") && err.contains("train"),
        "{err}"
    );
}

#[test]
fn environment_variables_become_overrides() {
    // The test's own environment: `cli::main` reads the process's the same way.
    let vars = [
        ("NC7_TRAINER__BATCH_SIZE", "8"),
        ("NC7_PLUGINS__NET__LAYERS", "[1, 2]"),
        ("NC7_LOG", "debug"),
        ("HOME", "/root"),
    ];
    let env = Overrides::default().with_env(vars).env;
    assert_eq!(env.len(), 2, "{env:?}");
    for want in [
        ("NC7_PLUGINS__NET__LAYERS", "plugins.net.layers", "[1, 2]"),
        ("NC7_TRAINER__BATCH_SIZE", "trainer.batch_size", "8"),
    ] {
        let want = (want.0.to_owned(), want.1.to_owned(), want.2.to_owned());
        assert!(env.contains(&want), "{want:?} not in {env:?}");
    }
    let dir = project_with(&[]);
    let c = check(
        dir.path(),
        RunType::Train,
        Overrides::default().with_env(vars),
    );
    assert!(c.is_ok(), "{}", c.diagnostics);
    let v = c.config.to_value();
    assert_eq!(v["trainer_config"]["batch_size"], json!(8));
    assert_eq!(v["plugins_config"][0]["layers"], json!([1, 2]));
}
