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
            ("--task", Some(t)) if ["classification", "segmentation"].contains(t) => task = t,
            ("--device", Some(d)) if ["cpu", "cuda"].contains(d) => device = d,
            (other, _) => {
                eprintln!(
                    "error: `{other}`: give `--task classification|segmentation` and `--device cpu|cuda`"
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

/// `template-smoke`: every starter task end to end.
pub fn run_all() -> ExitCode {
    let started = std::time::Instant::now();
    for task in ["classification", "segmentation"] {
        if let Err(e) = smoke(task) {
            eprintln!("error: template smoke test, task {task}: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "template smoke test passed for both starter tasks in {:.0} s",
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
        "datasets.train.samples=960",
        "--set",
        "datasets.eval.samples=100",
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
    let (metric, chance) = if task == "classification" {
        ("accuracy", 0.4)
    } else {
        ("mean_iou", 0.3)
    };
    let value = csv_value(&table, metric)
        .ok_or_else(|| format!("experiments.csv has no `{metric}`:\n{table}"))?;
    println!("{task}: {metric} {value:.3} after 2 epochs");
    if value <= chance {
        return Err(format!(
            "{metric} is {value}, not better than chance ({chance})"
        ));
    }
    if task == "classification" && !dir.join("training/callbacks/eval/confusion.csv").is_file() {
        return Err("the confusion matrix callback wrote nothing".into());
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
    let model_class = if task == "classification" {
        "Classifier"
    } else {
        "UNet"
    };
    edit(
        "plugins/model.json",
        &format!("\"{model_class}\""),
        &format!("\"{model_class}s\""),
    )?;
    edit(
        "metrics/metric.json",
        "\"inbound_nodes\": [\"dataset\", \"model\"]",
        "\"inbound_nodes\": [\"dataset\"]",
    )?;
    let (ok, text) = output(&mut xtask(&["check"]), "cargo xtask check (broken configs)")?;
    let expected = [
        format!("did you mean `{model_class}`"),
        "plugins/model.json".to_owned(),
        "metrics/metric.json".to_owned(),
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

/// The value of `column` in the last row of a CSV table.
fn csv_value(table: &str, column: &str) -> Option<f64> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next()?.split(',').collect();
    let i = header.iter().position(|h| *h == column)?;
    lines.last()?.split(',').nth(i)?.parse().ok()
}
