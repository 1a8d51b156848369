//! Bad inputs, as a table: configs, command lines, data and weights files, environment
//! variables. Each row runs one command of `nc7-examples` on a copy of a classifier project
//! and asserts the exit code, the error's code, that the message names the file, key or value
//! at fault, that nothing panicked, and that the project lost nothing: a command refused before
//! it ran leaves every file as it was; a run that failed while running keeps every file it
//! found and records itself as failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// What a project starts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fixture {
    /// The classifier's configs, made small.
    Configs,
    /// The same, trained one epoch, with one inference run.
    Trained,
    /// The classifier reading images and labels from files under `data/`.
    Files,
}

/// What a row leaves in the project.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaves {
    /// Every file as it was, and no new one.
    Nothing,
    /// Every file it found as it was, but the run records (`nc7_project.json`, the
    /// experiments log); new files only in the failed run's own folders.
    FailedRun,
}

struct Row {
    what: &'static str,
    fixture: Fixture,
    setup: fn(&Path),
    /// The command line after the binary; `{p}` is the project.
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    exit: i32,
    code: &'static str,
    /// Each must be in what the command printed.
    names: &'static [&'static str],
    leaves: Leaves,
}

fn none(_: &Path) {}

fn write(p: &Path, rel: &str, text: &str) {
    let path = p.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn remove(p: &Path, rel: &str) {
    std::fs::remove_file(p.join(rel)).unwrap();
}

/// Changes a JSON config in place.
fn edit(p: &Path, rel: &str, change: impl FnOnce(&mut Value)) {
    let path = p.join(rel);
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    change(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Flips one byte in the middle of a file.
fn flip(p: &Path, rel: &str) {
    let path = p.join(rel);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

/// The newest checkpoint's folder, relative to the project.
fn newest_checkpoint(p: &Path) -> String {
    let mut names: Vec<(u64, String)> = std::fs::read_dir(p.join("checkpoints"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            Some((name.strip_prefix("ckpt-")?.parse().ok()?, name))
        })
        .collect();
    names.sort();
    format!("checkpoints/{}", names.last().unwrap().1)
}

/// The saved model's folder, relative to the project.
fn saved_model(p: &Path) -> String {
    let name = std::fs::read_dir(p.join("saved_models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("step-"))
        .unwrap();
    format!("saved_models/{name}")
}

const PLUGIN: &str = "training/configs/plugins/cnn.json";
const TRAINER: &str = "training/configs/trainer.json";
const LOSS: &str = "training/configs/losses/cross_entropy.json";
const DATASETS: &str = "training/configs/datasets.json";

fn rows() -> Vec<Row> {
    use Fixture::*;
    use Leaves::*;
    let train: &[&str] = &["train", "{p}"];
    let row = |what, fixture, setup: fn(&Path), args, exit, code, names| Row {
        what,
        fixture,
        setup,
        args,
        env: &[],
        exit,
        code,
        names,
        leaves: Nothing,
    };
    let config =
        |what, setup: fn(&Path), code, names| row(what, Configs, setup, train, 1, code, names);
    let mut rows = vec![
        // Config files.
        config(
            "trainer.json cut short",
            |p| write(p, TRAINER, r#"{"batch_size": "#),
            "NC0010",
            &["trainer.json"],
        ),
        config(
            "a trailing comma",
            |p| {
                write(
                    p,
                    LOSS,
                    r#"{"class_name": "CrossEntropy", "name": "cross_entropy",}"#,
                )
            },
            "NC0010",
            &["cross_entropy.json"],
        ),
        config(
            "TOML that is not TOML",
            |p| {
                remove(p, PLUGIN);
                write(
                    p,
                    "training/configs/plugins/cnn.toml",
                    "class_name = ShapesCnn\n",
                );
            },
            "NC0010",
            &["cnn.toml"],
        ),
        config(
            "one config in two formats",
            |p| {
                write(
                    p,
                    "training/configs/plugins/cnn.toml",
                    "class_name = \"ShapesCnn\"\nname = \"cnn\"\n",
                );
            },
            "NC0011",
            &["cnn"],
        ),
        config(
            "a stray file among the configs",
            |p| write(p, "training/configs/notes.txt", "todo"),
            "NC0011",
            &["notes.txt"],
        ),
        config(
            "a stray folder among the configs",
            |p| write(p, "training/configs/wip/a.json", "{}"),
            "NC0011",
            &["wip"],
        ),
        config(
            "no trainer config",
            |p| remove(p, TRAINER),
            "NC0012",
            &["trainer"],
        ),
        config(
            "no datasets config",
            |p| remove(p, DATASETS),
            "NC0012",
            &["datasets"],
        ),
        config(
            "an unknown class_name",
            |p| edit(p, PLUGIN, |v| v["class_name"] = json!("ShapesCNN")),
            "NC0013",
            &["ShapesCNN", "ShapesCnn"],
        ),
        config(
            "a class_name of another kind",
            |p| edit(p, PLUGIN, |v| v["class_name"] = json!("Accuracy")),
            "NC0013",
            &["Accuracy"],
        ),
        config(
            "an unknown field in a nucleotide",
            |p| edit(p, PLUGIN, |v| v["filter"] = json!([8])),
            "NC0014",
            &["filter", "cnn.json"],
        ),
        config(
            "an unknown field in the trainer",
            |p| edit(p, TRAINER, |v| v["num_epoch"] = json!(3)),
            "NC0014",
            &["num_epoch"],
        ),
        config(
            "a field of the wrong type",
            |p| edit(p, PLUGIN, |v| v["filters"] = json!("eight")),
            "NC0015",
            &["filters"],
        ),
        config(
            "a trainer value of the wrong type",
            |p| edit(p, TRAINER, |v| v["num_epochs"] = json!("many")),
            "NC0015",
            &["num_epochs"],
        ),
        config(
            "a nucleotide without class_name",
            |p| {
                edit(p, PLUGIN, |v| {
                    v.as_object_mut().unwrap().remove("class_name");
                })
            },
            "NC0015",
            &["class_name"],
        ),
        config(
            "two nucleotides of one name",
            |p| {
                edit(p, "training/configs/metrics/accuracy.json", |v| {
                    v["name"] = json!("cnn")
                })
            },
            "NC0001",
            &["cnn"],
        ),
        config(
            "an inbound node that does not exist",
            |p| edit(p, LOSS, |v| v["inbound_nodes"] = json!(["dataset", "cnnn"])),
            "NC0002",
            &["cnnn"],
        ),
        config(
            "a required key nothing generates",
            |p| edit(p, LOSS, |v| v["inbound_nodes"] = json!(["dataset"])),
            "NC0003",
            &["cross_entropy"],
        ),
        config(
            "nucleotides in a cycle",
            |p| {
                edit(p, PLUGIN, |v| {
                    v["inbound_nodes"] = json!(["dataset", "class"])
                })
            },
            "NC0004",
            &["cnn", "class"],
        ),
        config(
            "a mapping for a node that is not inbound",
            |p| {
                edit(p, LOSS, |v| {
                    v["incoming_keys_mapping"] = json!({"accuracy": {"x": "y"}})
                })
            },
            "NC0005",
            &["accuracy"],
        ),
        config(
            "a malformed mapping rule",
            |p| {
                edit(p, LOSS, |v| {
                    v["incoming_keys_mapping"] = json!({"dataset": {"label": 5}})
                })
            },
            "NC0008",
            &["cross_entropy"],
        ),
        config(
            "a key of another kind",
            |p| {
                edit(p, LOSS, |v| {
                    v["incoming_keys_mapping"] =
                        json!({"dataset": {"image": "label", "label": "_"}})
                })
            },
            "NC0017",
            &["label", "image"],
        ),
        config(
            "no epochs",
            |p| edit(p, TRAINER, |v| v["num_epochs"] = json!(0)),
            "NC0015",
            &["num_epochs"],
        ),
        config(
            "a batch of none",
            |p| {
                edit(p, TRAINER, |v| {
                    v["batch_size"] = json!({"train": 0, "eval": 10})
                })
            },
            "NC0015",
            &["batch_size"],
        ),
        config(
            "a negative learning rate",
            |p| {
                edit(p, TRAINER, |v| {
                    v["optimization_config"]["learning_rate"] = json!(-0.1)
                })
            },
            "NC0015",
            &["learning_rate"],
        ),
        config(
            "an unknown optimizer",
            |p| {
                edit(p, TRAINER, |v| {
                    v["optimization_config"]["optimizer"]["name"] = json!("adamw2")
                })
            },
            "NC0015",
            &["adamw2"],
        ),
        config(
            "an unknown schedule",
            |p| {
                edit(p, TRAINER, |v| {
                    v["optimization_config"]["learning_rate_schedule"]["name"] = json!("wavy")
                })
            },
            "NC0015",
            &["wavy"],
        ),
        config(
            "a negative sample count",
            |p| edit(p, DATASETS, |v| v["train"]["samples"] = json!(-5)),
            "NC0015",
            &["samples"],
        ),
        config(
            "a monitor the evaluation never gives",
            |p| {
                edit(p, TRAINER, |v| {
                    v["keep_best"]["monitor"] = json!("kpi/nope")
                })
            },
            "NC0015",
            &["kpi/nope"],
        ),
        config(
            "a tracking URI nc7 cannot track into",
            |p| {
                edit(p, TRAINER, |v| {
                    v["tracking"] = json!({"uri": "htp://server:5000"})
                })
            },
            "NC0015",
            &["htp://server:5000"],
        ),
        // Overrides.
        row(
            "--set on no config value",
            Configs,
            none,
            &["train", "{p}", "--set", "trainer.nope=1"],
            1,
            "NC0016",
            &["trainer.nope"],
        ),
        row(
            "--set of the wrong type",
            Configs,
            none,
            &["train", "{p}", "--set", "trainer.num_epochs=many"],
            1,
            "NC0015",
            &["num_epochs"],
        ),
        row(
            "--set without a value",
            Configs,
            none,
            &["train", "{p}", "--set", "trainer.num_epochs"],
            1,
            "NC0016",
            &["trainer.num_epochs"],
        ),
        row(
            "--set on a nucleotide that does not exist",
            Configs,
            none,
            &["train", "{p}", "--set", "plugins.cnnn.filters=[4]"],
            1,
            "NC0016",
            &["cnnn"],
        ),
        Row {
            env: &[("NC7_TRAINER__NUM_EPOCHS", "abc")],
            ..row(
                "an NC7_ override of the wrong type",
                Configs,
                none,
                train,
                1,
                "NC0015",
                &["NC7_TRAINER__NUM_EPOCHS"],
            )
        },
        Row {
            env: &[("NC7_TRAINER__NOPE", "1")],
            ..row(
                "an NC7_ override on no config value",
                Configs,
                none,
                train,
                1,
                "NC0016",
                &["NC7_TRAINER__NOPE"],
            )
        },
        // Command lines.
        row(
            "an unknown command",
            Configs,
            none,
            &["trian", "{p}"],
            2,
            "NC0117",
            &["trian"],
        ),
        row(
            "an unknown flag",
            Configs,
            none,
            &["train", "{p}", "--epochs", "3"],
            2,
            "NC0117",
            &["--epochs"],
        ),
        row(
            "a number that is not one",
            Trained,
            none,
            &["infer", "{p}", "--batch-size", "many"],
            2,
            "NC0117",
            &["many"],
        ),
        row(
            "a project folder that does not exist",
            Configs,
            none,
            &["train", "{p}/nope"],
            1,
            "NC0012",
            &["nope"],
        ),
        row(
            "a project folder that is a file",
            Configs,
            |p| write(p, "file", ""),
            &["train", "{p}/file"],
            1,
            "NC0012",
            &["file"],
        ),
        row(
            "an unknown device",
            Configs,
            none,
            &["train", "{p}", "--device", "tpu"],
            1,
            "NC0115",
            &["tpu"],
        ),
        row(
            "a device this build lacks",
            Configs,
            none,
            &["train", "{p}", "--device", "cuda"],
            1,
            "NC0115",
            &["cuda"],
        ),
        row(
            "--checkpoint without --continue",
            Configs,
            none,
            &["train", "{p}", "--checkpoint", "ckpt-1"],
            2,
            "NC0117",
            &["--continue"],
        ),
        row(
            "train on a trained project",
            Trained,
            none,
            train,
            1,
            "NC0102",
            &["--continue"],
        ),
        row(
            "continue with nothing to continue",
            Configs,
            none,
            &["train", "{p}", "--continue"],
            1,
            "NC0103",
            &["{p}"],
        ),
        row(
            "continue from a folder that is no checkpoint",
            Trained,
            none,
            &["train", "{p}", "--continue", "--checkpoint", "/etc"],
            1,
            "NC0108",
            &["/etc"],
        ),
        row(
            "continue from a checkpoint that does not exist",
            Trained,
            none,
            &["train", "{p}", "--continue", "--checkpoint", "ckpt-999"],
            1,
            "NC0108",
            &["ckpt-999"],
        ),
        row(
            "export without a checkpoint",
            Configs,
            none,
            &["export", "{p}"],
            1,
            "NC0108",
            &["checkpoints"],
        ),
        row(
            "export of a checkpoint that does not exist",
            Trained,
            none,
            &["export", "{p}", "--checkpoint", "ckpt-999"],
            1,
            "NC0108",
            &["ckpt-999"],
        ),
        row(
            "infer without a saved model",
            Configs,
            none,
            &["infer", "{p}"],
            1,
            "NC0108",
            &["saved_models"],
        ),
        row(
            "infer with a saved model that does not exist",
            Trained,
            none,
            &["infer", "{p}", "--saved-model", "step-999"],
            1,
            "NC0108",
            &["step-999"],
        ),
        row(
            "infer with a batch of none",
            Trained,
            none,
            &["infer", "{p}", "--batch-size", "0"],
            1,
            "NC0015",
            &["batch-size"],
        ),
        row(
            "a shard outside the shards",
            Trained,
            none,
            &[
                "infer",
                "{p}",
                "--number-of-shards",
                "2",
                "--shard-index",
                "5",
            ],
            1,
            "NC0015",
            &["shard"],
        ),
        row(
            "an inference run name that is a path",
            Trained,
            none,
            &["infer", "{p}", "--run-name", "a/b"],
            1,
            "NC0106",
            &["a/b"],
        ),
        row(
            "an inference run name that is taken",
            Trained,
            none,
            &["infer", "{p}", "--run-name", "run-1"],
            1,
            "NC0104",
            &["run-1"],
        ),
        Row {
            leaves: FailedRun,
            ..row(
                "KPIs of a project never inferred",
                Configs,
                none,
                &["evaluate-kpi", "{p}"],
                1,
                "NC0110",
                &["inference/last_run/results/records"],
            )
        },
        row(
            "info on an unknown class",
            Configs,
            none,
            &["info", "ShapeCnn"],
            1,
            "NC0013",
            &["ShapeCnn", "ShapesCnn"],
        ),
        row(
            "a sample config of an unknown class",
            Configs,
            none,
            &["sample-config", "Nope"],
            1,
            "NC0013",
            &["Nope"],
        ),
        // Weights, checkpoints, run records.
        row(
            "a checkpoint whose manifest was edited",
            Trained,
            |p| {
                let m = format!("{}/manifest.json", newest_checkpoint(p));
                let text = std::fs::read_to_string(p.join(&m)).unwrap();
                write(
                    p,
                    &m,
                    &text.replacen("\"global_step\": ", "\"global_step\": 1", 1),
                );
            },
            &["train", "{p}", "--continue"],
            1,
            "NC0107",
            &["manifest"],
        ),
        row(
            "a checkpoint with a flipped byte",
            Trained,
            |p| flip(p, &format!("{}/model.safetensors", newest_checkpoint(p))),
            &["train", "{p}", "--continue"],
            1,
            "NC0107",
            &["model.safetensors"],
        ),
        row(
            "a checkpoint without its seal",
            Trained,
            |p| remove(p, &format!("{}/manifest.sha256", newest_checkpoint(p))),
            &["train", "{p}", "--continue"],
            1,
            "NC0107",
            &["manifest.sha256"],
        ),
        row(
            "export of a corrupt checkpoint",
            Trained,
            |p| flip(p, &format!("{}/model.safetensors", newest_checkpoint(p))),
            &["export", "{p}"],
            1,
            "NC0107",
            &["model.safetensors"],
        ),
        row(
            "a saved model with a flipped byte",
            Trained,
            |p| flip(p, &format!("{}/model.safetensors", saved_model(p))),
            &["infer", "{p}"],
            1,
            "NC0107",
            &["model.safetensors"],
        ),
        row(
            "a saved model without its signature",
            Trained,
            |p| remove(p, &format!("{}/signature.json", saved_model(p))),
            &["infer", "{p}"],
            1,
            "NC0107",
            &["signature.json"],
        ),
        row(
            "a saved model's graph that is no JSON",
            Trained,
            |p| write(p, &format!("{}/graph.json", saved_model(p)), "{"),
            &["infer", "{p}"],
            1,
            "NC0107",
            &["graph.json"],
        ),
        row(
            "an evaluation history that is no list",
            Trained,
            |p| write(p, "training/evaluations.json", "{\"a\": 1}"),
            &[
                "train",
                "{p}",
                "--continue",
                "--set",
                "trainer.num_epochs=2",
            ],
            1,
            "NC0107",
            &["evaluations.json"],
        ),
        row(
            "load_config from a folder without weights",
            Configs,
            |p| {
                edit(p, TRAINER, |v| {
                    v["load_config"] = json!([{"path": "/etc", "nucleotides": ["cnn"]}])
                })
            },
            train,
            1,
            "NC0108",
            &["/etc"],
        ),
        // Data files.
        row(
            "an image glob that matches nothing",
            Files,
            |p| {
                edit(p, DATASETS, |v| {
                    v["train"]["file_list"]["file_names"]["image"] = json!("data/nothing/*.png")
                })
            },
            train,
            1,
            "NC0110",
            &["data/nothing/*.png"],
        ),
        row(
            "two images of one match name",
            Files,
            |p| {
                write(p, "data/images/shape-0-000003.jpg", "");
                edit(p, DATASETS, |v| {
                    v["train"]["file_list"]["file_names"]["image"] = json!("data/images/*")
                })
            },
            train,
            1,
            "NC0110",
            &["shape-0-000003.jpg", "shape-0-000003.png"],
        ),
        Row {
            leaves: FailedRun,
            ..row(
                "an image that is no PNG",
                Files,
                |p| write(p, "data/images/shape-0-000005.png", "not a png"),
                train,
                1,
                "NC0110",
                &["shape-0-000005.png"],
            )
        },
        Row {
            leaves: FailedRun,
            ..row(
                "a label that is no JSON",
                Files,
                |p| write(p, "data/labels/shape-0-000004.json", "{label"),
                train,
                1,
                "NC0110",
                &["shape-0-000004.json"],
            )
        },
        Row {
            leaves: FailedRun,
            ..row(
                "a label outside the classes",
                Files,
                |p| write(p, "data/labels/shape-0-000002.json", "{\"label\": 7}"),
                train,
                1,
                "NC0110",
                &["shape-0-000002", "7"],
            )
        },
        Row {
            leaves: FailedRun,
            ..row(
                "a broken records shard",
                Trained,
                |p| {
                    write(
                        p,
                        "inference/last_run/results/records/zz-broken.safetensors",
                        "not safetensors",
                    )
                },
                &["evaluate-kpi", "{p}"],
                1,
                "NC0110",
                &["zz-broken.safetensors"],
            )
        },
        // Environment.
        Row {
            env: &[("NC7_LOG", "loud")],
            ..row(
                "a log level that is none",
                Configs,
                none,
                train,
                1,
                "NC0118",
                &["NC7_LOG", "loud"],
            )
        },
        Row {
            env: &[("NC7_MALLOC", "jemalloc")],
            ..row(
                "an allocator nc7 does not know",
                Configs,
                none,
                train,
                1,
                "NC0118",
                &["NC7_MALLOC", "jemalloc"],
            )
        },
        Row {
            env: &[("NC7_MLFLOW", "maybe")],
            ..row(
                "tracking neither on nor off",
                Configs,
                none,
                train,
                1,
                "NC0118",
                &["NC7_MLFLOW", "maybe"],
            )
        },
        Row {
            env: &[
                ("NC7_MLFLOW", "on"),
                ("MLFLOW_TRACKING_URI", "htp://server:5000"),
            ],
            ..row(
                "a tracking URI of no scheme nc7 knows",
                Configs,
                none,
                train,
                1,
                "NC0118",
                &["MLFLOW_TRACKING_URI", "htp"],
            )
        },
        Row {
            env: &[("NC7_MLFLOW_FLUSH_TIMEOUT", "-3")],
            ..row(
                "a negative flush timeout",
                Configs,
                none,
                train,
                1,
                "NC0118",
                &["NC7_MLFLOW_FLUSH_TIMEOUT"],
            )
        },
        Row {
            env: &[("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "lots")],
            ..row(
                "retries that are no number",
                Configs,
                none,
                train,
                1,
                "NC0118",
                &["MLFLOW_HTTP_REQUEST_MAX_RETRIES", "lots"],
            )
        },
    ];
    rows.sort_by_key(|r| r.fixture as u8);
    rows
}

/// The settings every fixture trains with: one short epoch.
fn small(p: &Path) {
    edit(p, TRAINER, |v| {
        v["num_epochs"] = json!(1);
        v["batch_size"] = json!({"train": 16, "eval": 20});
        v["summary_steps"] = json!(2);
    });
    edit(p, DATASETS, |v| {
        v["train"]["samples"] = json!(64);
        v["eval"]["samples"] = json!(40);
    });
    edit(p, "inference/configs/datafeeder.json", |v| {
        v["samples"] = json!(20)
    });
}

fn nc7(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nc7-examples"));
    cmd.args(args)
        .env("NC7_MLFLOW", "off")
        .env("NC7_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn must(args: &[&str]) {
    let out = nc7(args, &[]);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fixture, made once per test process, in `root`.
fn fixture(kind: Fixture, root: &Path) -> PathBuf {
    let dir = root.join(format!("{kind:?}"));
    let p = crate::project("shapes-classifier", &dir);
    small(&p);
    let s = p.to_str().unwrap();
    match kind {
        Fixture::Configs => {}
        Fixture::Trained => {
            must(&["train", s]);
            must(&["infer", s]);
        }
        Fixture::Files => {
            must(&[
                "write-shapes",
                &format!("{s}/data"),
                "--samples",
                "12",
                "--size",
                "24",
            ]);
            edit(&p, DATASETS, |v| {
                let files = |eval: bool| {
                    json!({
                        "class_name": "ImageFiles",
                        "name": if eval { "eval_images" } else { "train_images" },
                        "color": "rgb",
                        "file_list": {"file_names": {
                            "image": "data/images/*.png",
                            "label": "data/labels/*.json",
                        }},
                    })
                };
                *v = json!({"train": files(false), "eval": files(true)});
            });
        }
    }
    p
}

/// Every file under `dir` by its path there (an empty lock file counts as none).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if rel == nc7_core::project::LOCK_FILE && bytes.is_empty() {
                    continue;
                }
                out.insert(rel, bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        let kind = e.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Files a failed run may rewrite: the project's run record and the experiments log.
const RUN_RECORDS: [&str; 2] = ["nc7_project.json", "experiments.csv"];

#[test]
fn every_bad_input_is_a_clear_error_that_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let rows = rows();
    assert!(rows.len() >= 60, "{} rows", rows.len());
    let mut made: BTreeMap<u8, PathBuf> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let source = made
            .entry(r.fixture as u8)
            .or_insert_with(|| fixture(r.fixture, root.path()))
            .clone();
        let p = root.path().join(format!("row-{i}"));
        copy_dir(&source, &p);
        (r.setup)(&p);
        let before = snapshot(&p);
        let s = p.to_str().unwrap();
        let args: Vec<String> = r.args.iter().map(|a| a.replace("{p}", s)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = nc7(&args, r.env);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut wrong = Vec::new();
        if out.status.code() != Some(r.exit) {
            wrong.push(format!("exit {:?}, not {}", out.status.code(), r.exit));
        }
        if !said.contains(&format!("error[{}]", r.code)) {
            wrong.push(format!("no error[{}]", r.code));
        }
        for name in r.names {
            let name = name.replace("{p}", s);
            if !said.contains(&name) {
                wrong.push(format!("does not name `{name}`"));
            }
        }
        if said.contains("panicked") || said.contains("RUST_BACKTRACE") {
            wrong.push("panicked".into());
        }
        let after = snapshot(&p);
        for (path, bytes) in &before {
            let may_change =
                r.leaves == Leaves::FailedRun && RUN_RECORDS.iter().any(|f| path.ends_with(f));
            match after.get(path) {
                None => wrong.push(format!("lost {path}")),
                Some(b) if b != bytes && !may_change => wrong.push(format!("changed {path}")),
                _ => {}
            }
        }
        let new: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
        match r.leaves {
            Leaves::Nothing if !new.is_empty() => {
                wrong.push(format!(
                    "wrote {}",
                    new.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Leaves::FailedRun => {
                let record =
                    String::from_utf8_lossy(after.get("nc7_project.json").map_or(&[][..], |b| b));
                if !record.contains("\"failed\"") {
                    wrong.push("the run record does not say failed".into());
                }
            }
            _ => {}
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "row {i} ({}): {}\n{said}",
                r.what,
                wrong.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n\n")
    );
}
