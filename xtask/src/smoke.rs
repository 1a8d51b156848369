//! Projects from `template/`: `new` generates one for a user; `template-smoke` generates one
//! per starter task and runs it end to end, the way a newcomer would.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::{cargo, workspace};

/// The cargo-generate release this machine's toolchain builds (newer ones need rustc ≥ 1.96).
const CARGO_GENERATE: &str = "cargo-generate@0.23.7";

/// Runs a command, failing with what ran and where.
fn step(cmd: &mut Command, shown: &str) -> Result<(), String> {
    eprintln!("==> {shown}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

/// Runs a command and returns its stdout and stderr, whether it succeeded or not.
fn output(cmd: &mut Command, shown: &str) -> Result<(bool, String), String> {
    eprintln!("==> {shown}");
    let out = cmd
        .output()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// Runs one of nc7's commands, shows what it said, and fails when it fails or warns: a freshly
/// generated project trains, exports and infers without a warning (an MLflow store it cannot
/// write, a metric name MLflow refuses, a drawing that fails all warn without failing the run).
fn step_without_warnings(cmd: &mut Command, shown: &str) -> Result<(), String> {
    let (ok, text) = output(cmd, shown)?;
    eprint!("{text}");
    if !ok {
        return Err(format!("`{shown}` failed"));
    }
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("nc7 warn:"))
        .collect();
    if !warnings.is_empty() {
        return Err(format!("`{shown}` warned:\n{}", warnings.join("\n")));
    }
    Ok(())
}

/// Makes sure `cargo generate` runs, installing the pinned release when it does not.
fn ensure_cargo_generate() -> Result<(), String> {
    let found = Command::new(cargo())
        .args(["generate", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Ok(());
    }
    step(
        Command::new(cargo()).args(["install", CARGO_GENERATE, "--locked"]),
        &format!("cargo install {CARGO_GENERATE} --locked"),
    )
}

/// Generates a project from `template/` into `parent/name`, wired to this checkout.
fn generate(parent: &Path, name: &str, task: &str, device: &str) -> Result<PathBuf, String> {
    ensure_cargo_generate()?;
    let template = workspace().join("template");
    let nc7 = workspace().join("nc7-core");
    step(
        Command::new(cargo())
            .args(["generate", "--path"])
            .arg(&template)
            .args(["--name", name, "--destination"])
            .arg(parent)
            .args(["--vcs", "none", "--silent", "--no-workspace"])
            .arg("--define")
            .arg(format!("task={task}"))
            .arg("--define")
            .arg(format!("device={device}"))
            .arg("--define")
            .arg(format!("nc7_path={}", nc7.display())),
        &format!("cargo generate --path template --name {name} (task {task}, device {device})"),
    )?;
    let project = parent.join(name);
    if !project.join("Cargo.toml").is_file() {
        return Err(format!(
            "cargo generate wrote no project at {}",
            project.display()
        ));
    }
    Ok(project)
}

/// `new <name> [--task …] [--device …]`.
pub fn new_project(name: &str, rest: &[&str]) -> ExitCode {
    let mut task = "classification";
    let mut device = "cpu";
    let mut args = rest.iter();
    while let Some(arg) = args.next() {
        match (*arg, args.next()) {
            ("--task", Some(t)) if TASKS.contains(t) => task = t,
            ("--device", Some(d)) if ["cpu", "cuda"].contains(d) => device = d,
            (other, _) => {
                eprintln!(
                    "error: `{other}`: give `--task classification|segmentation|detection` and `--device cpu|cuda`"
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let parent = workspace()
        .parent()
        .expect("the checkout has a parent folder")
        .to_owned();
    match generate(&parent, name, task, device) {
        Ok(project) => {
            println!(
                "generated {}\nnext: cd {} && cargo xtask train",
                project.display(),
                project.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The starter tasks `template/cargo-generate.toml` offers.
const TASKS: [&str; 3] = ["classification", "segmentation", "detection"];

/// `template-smoke [task…]`: every starter task (or the ones named) end to end.
pub fn run_all(only: &[&str]) -> ExitCode {
    if let Some(bad) = only.iter().find(|t| !TASKS.contains(t)) {
        eprintln!(
            "error: no starter task `{bad}`; the tasks are {}",
            TASKS.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let started = std::time::Instant::now();
    for task in TASKS
        .into_iter()
        .filter(|t| only.is_empty() || only.contains(t))
    {
        if let Err(e) = smoke(task) {
            eprintln!("error: template smoke test, task {task}: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "template smoke test passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn smoke(task: &str) -> Result<(), String> {
    let tmp = std::env::temp_dir().join(format!("nc7-template-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let result = smoke_in(&tmp, task);
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        eprintln!("the generated project is kept in {}", tmp.display());
    }
    result
}

fn smoke_in(tmp: &Path, task: &str) -> Result<(), String> {
    let name = format!("smoke-{task}");
    let project = generate(tmp, &name, task, "cpu")?;
    // The checkout's lock file: the same versions as this workspace, so the shared target
    // directory already holds them.
    std::fs::copy(workspace().join("Cargo.lock"), project.join("Cargo.lock"))
        .map_err(|e| format!("cannot copy Cargo.lock: {e}"))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let xtask = |args: &[&str]| {
        let mut cmd = Command::new(cargo());
        cmd.arg("xtask")
            .args(args)
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", &target)
            .env("XTASK_PROFILE", "dev")
            .env_remove("CARGO_MANIFEST_DIR");
        cmd
    };
    step(&mut xtask(&["check"]), "cargo xtask check")?;
    // A generated project is formatted and lint-clean as it comes.
    step(&mut xtask(&["lint"]), "cargo xtask lint")?;
    step(&mut xtask(&["test"]), "cargo xtask test")?;
    let sets = [
        "--set",
        "datasets.train.dataset.samples=960",
        "--set",
        "datasets.eval.dataset.samples=100",
        "--set",
        "trainer.num_epochs=2",
        "--set",
        "trainer.batch_size.train=16",
    ];
    let mut train = vec!["train"];
    train.extend(sets);
    step_without_warnings(&mut xtask(&train), "cargo xtask train --set … (2 epochs)")?;
    step_without_warnings(&mut xtask(&["export"]), "cargo xtask export")?;
    step_without_warnings(&mut xtask(&["infer"]), "cargo xtask infer")?;

    let dir = project.join("project");
    let saved = std::fs::read_dir(dir.join("saved_models"))
        .map_err(|e| format!("no saved_models: {e}"))?
        .flatten()
        .any(|e| e.path().join("model.safetensors").is_file());
    if !saved {
        return Err("no saved model was written".into());
    }
    let results = dir.join("inference/last_run/results");
    let written = std::fs::read_dir(&results)
        .map_err(|e| format!("no inference results in {}: {e}", results.display()))?
        .count();
    if written < 100 {
        return Err(format!(
            "{written} results in {}, 100 expected",
            results.display()
        ));
    }
    let table = std::fs::read_to_string(dir.join("logs/experiments.csv"))
        .map_err(|e| format!("no experiments.csv: {e}"))?;
    if table.lines().count() < 2 {
        return Err(format!("experiments.csv has no row:\n{table}"));
    }
    // The evaluation set's KPI (exact over its samples).
    let (metric, chance) = match task {
        "classification" => ("accuracy", 0.4),
        "segmentation" => ("mean_iou", 0.3),
        _ => ("map_50", 0.5),
    };
    let value = last_kpi(&dir, &format!("kpi/{task}/{metric}"))?;
    println!("{task}: {metric} {value:.3} after 2 epochs");
    if task == "detection" {
        let map = last_kpi(&dir, "kpi/detection/map")?;
        println!("detection: COCO mAP@[.5:.95] {map:.3} after 2 epochs");
        let drawn = std::fs::read_dir(&results)
            .map_err(|e| e.to_string())?
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
            .count();
        if drawn < 100 {
            return Err(format!(
                "{drawn} drawn detections in {}, 100 expected",
                results.display()
            ));
        }
    }
    if value <= chance {
        return Err(format!(
            "{metric} is {value}, not better than chance ({chance})"
        ));
    }
    if task == "classification" && !dir.join("training/callbacks/eval/confusion.csv").is_file() {
        return Err("the confusion matrix callback wrote nothing".into());
    }

    if task == "classification" {
        real_data(&project, &xtask)?;
    }

    // Then broken (in place: the generated project is a copy made for this test, and its
    // binary is built): a misspelt class name and a metric that reads a key nothing generates.
    let configs = project.join("project/training/configs");
    let edit = |file: &str, from: &str, to: &str| -> Result<(), String> {
        let path = configs.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        if !text.contains(from) {
            return Err(format!("{} does not hold `{from}`", path.display()));
        }
        std::fs::write(&path, text.replacen(from, to, 1)).map_err(|e| e.to_string())
    };
    let model_class = "ConvBackbone";
    edit(
        "plugins/backbone.json",
        &format!("\"{model_class}\""),
        &format!("\"{model_class}s\""),
    )?;
    // A detection starter has no metric: its loss reads the head instead.
    let reader = if task == "detection" {
        "losses/loss.json"
    } else {
        "metrics/metric.json"
    };
    // Without the data set (whose keys a processed data set knows only when it runs), the
    // labels or targets it reads are missing: a key the checker can list.
    edit(
        reader,
        "\"inbound_nodes\": [\"dataset\", \"head\"]",
        "\"inbound_nodes\": [\"head\"]",
    )?;
    let (ok, text) = output(&mut xtask(&["check"]), "cargo xtask check (broken configs)")?;
    let expected = [
        format!("did you mean `{model_class}`"),
        "plugins/backbone.json".to_owned(),
        reader.to_owned(),
        "NC0003".to_owned(),
    ];
    if ok {
        return Err(format!("`check` passed on the broken configs:\n{text}"));
    }
    for e in &expected {
        if !text.contains(e.as_str()) {
            return Err(format!(
                "`check` on the broken configs does not say `{e}`:\n{text}"
            ));
        }
    }
    Ok(())
}

/// Writes scikit-learn's handwritten digits (1,797 real 8×8 grey scans of 10 classes) as PNG
/// images and JSON labels in the layout `_my_images_datasets.json` reads: every fifth digit for
/// evaluation (359), the rest for training (1,438).
const WRITE_DIGITS: &str = r#"
import json, os, struct, sys, zlib
from sklearn.datasets import load_digits

def png(path, pixels):
    h, w = len(pixels), len(pixels[0])
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

digits = load_digits()
root = sys.argv[1]
for i, (image, label) in enumerate(zip(digits.images, digits.target)):
    part = "eval" if i % 5 == 4 else "train"
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(root, part, sub), exist_ok=True)
    png(os.path.join(root, part, "images", f"{i:04d}.png"),
        [[round(v * 255 / 16) for v in row] for row in image])
    with open(os.path.join(root, part, "labels", f"{i:04d}.json"), "w") as f:
        json.dump({"label": int(label)}, f)
"#;

/// The accuracy the classification starter reaches on the digits with only its class count
/// changed.
const REAL_DATA_ACCURACY: f64 = 0.97;

/// The classification starter on real data, as a new user would try it: the digits written
/// as image files, `_my_images_datasets.json` made `datasets.json`, the class count set to 10,
/// nothing else changed; it trains to at least [`REAL_DATA_ACCURACY`].
fn real_data(project: &Path, xtask: &impl Fn(&[&str]) -> Command) -> Result<(), String> {
    let dir = project.join("project");
    step(
        Command::new("python3")
            .args(["-c", WRITE_DIGITS])
            .arg(dir.join("data")),
        "python3: write scikit-learn's digits as PNG files into project/data",
    )?;
    let configs = dir.join("training/configs");
    std::fs::rename(
        configs.join("_my_images_datasets.json"),
        configs.join("datasets.json"),
    )
    .map_err(|e| format!("cannot use _my_images_datasets.json: {e}"))?;
    std::fs::write(
        configs.join("project_global_config.json"),
        "{\"num_classes\": 10}\n",
    )
    .map_err(|e| e.to_string())?;
    // The shapes run's outputs out of the way (a project holds one training run).
    for d in [
        "training/artifacts",
        "training/summaries",
        "training/callbacks",
        "checkpoints",
        "saved_models",
    ] {
        let _ = std::fs::remove_dir_all(dir.join(d));
    }
    let _ = std::fs::remove_file(dir.join("training/evaluations.json"));
    let started = std::time::Instant::now();
    step_without_warnings(&mut xtask(&["train"]), "cargo xtask train (the digits)")?;
    let seconds = started.elapsed().as_secs_f64();
    let accuracy = last_kpi(&dir, "kpi/classification/accuracy")?;
    println!(
        "classification starter on scikit-learn's digits (1,438 train / 359 eval, 10 classes): accuracy {accuracy:.4} in {seconds:.0} s"
    );
    if accuracy < REAL_DATA_ACCURACY {
        return Err(format!(
            "the classification starter reaches {accuracy} on the digits, below {REAL_DATA_ACCURACY}"
        ));
    }
    Ok(())
}

/// The value of `key` in the last evaluation of the project's training run
/// (`training/evaluations.json`).
fn last_kpi(dir: &Path, key: &str) -> Result<f64, String> {
    let path = dir.join("training/evaluations.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let last = json
        .as_array()
        .and_then(|a| a.last())
        .or_else(|| json.get("evaluations").and_then(|e| e.as_array()?.last()))
        .ok_or_else(|| format!("{} holds no evaluation", path.display()))?;
    last.get(key)
        .or_else(|| last.get("values").and_then(|v| v.get(key)))
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| {
            format!(
                "the last evaluation in {} has no `{key}`: {last}",
                path.display()
            )
        })
}
