//! `cargo xtask`: this project's commands. Each builds the project binary (in release, with
//! the `cuda` feature when `--device cuda` is asked or the project was generated for CUDA;
//! `XTASK_PROFILE=dev` builds a debug binary) and runs it on the `project/` folder. Settings
//! are nc7's to read: the device is `project/project.toml`'s unless `--device` is given.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// The project binary.
const BIN: &str = "{{project-name}}";

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  train [--continue] [--device cpu|cuda|cuda:N] [--set path=value]...
                train the model in project/ (on project/project.toml's device by default)
  export [--checkpoint ckpt-N|best|path]
                write a saved model from a checkpoint
  infer [--saved-model step-N] [--batch-size N] [--single-thread] [--device ...] [--set ...]
                run the newest saved model over the inference data feeder
  check [--type train|infer]   check the configs: every problem at once, or the graph
  dna           write the DOT drawings of the graph into the run's artifacts/
  info <class>  describe a nucleotide
  sample-config <class>        print a config with every field
  test          run every test (the model tests included)
  lint          cargo fmt --check and cargo clippy -D warnings
  doc           build the documentation
  clean         remove build outputs and everything runs wrote into project/";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    let rest = &args[1..];
    match command.as_str() {
        "train" | "export" | "infer" | "check" | "dna" => run_project(command, rest),
        "info" | "sample-config" => run_binary(command, rest, false),
        "test" => cargo(&["test", "--workspace"]),
        "lint" => {
            let fmt = cargo(&["fmt", "--all", "--", "--check"]);
            if fmt != ExitCode::SUCCESS {
                return fmt;
            }
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
        }
        "doc" => cargo(&["doc", "--no-deps"]),
        "clean" => clean(),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("error: unknown command `{other}`\n\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

/// The project's root: the folder holding this workspace's Cargo.toml. `cargo xtask` (cargo
/// run) says where xtask is as it starts it; the path compiled in is only the fallback, since
/// a binary built in another copy of the project can be reused from a shared target folder.
fn root() -> PathBuf {
    let xtask = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    xtask
        .parent()
        .expect("xtask lives in the project")
        .to_owned()
}

/// Whether a command asks for a CUDA device on the command line (`--device cuda[:N]`); the
/// project's own device needs no flag, since the binary is built with its default features.
fn asks_for_cuda(args: &[String]) -> bool {
    args.iter()
        .position(|a| a == "--device")
        .and_then(|i| args.get(i + 1))
        .is_some_and(|d| d.starts_with("cuda"))
}

/// `train`, `export`, `infer`, `check`, `dna`: the binary on `project/`, run from there.
fn run_project(command: &str, args: &[String]) -> ExitCode {
    let mut full = vec![
        command.to_owned(),
        root().join("project").display().to_string(),
    ];
    full.extend(args.iter().cloned());
    run_binary_with(&full, asks_for_cuda(args))
}

fn run_binary(command: &str, args: &[String], cuda: bool) -> ExitCode {
    let mut full = vec![command.to_owned()];
    full.extend(args.iter().cloned());
    run_binary_with(&full, cuda)
}

fn run_binary_with(args: &[String], cuda: bool) -> ExitCode {
    let dev = std::env::var("XTASK_PROFILE").is_ok_and(|p| p == "dev");
    let mut build = vec!["build", "--quiet", "--bin", BIN];
    if !dev {
        build.push("--release");
    }
    if cuda {
        build.extend(["--features", "cuda"]);
    }
    let built = cargo(&build);
    if built != ExitCode::SUCCESS {
        return built;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let binary = target.join(if dev { "debug" } else { "release" }).join(BIN);
    let status = Command::new(&binary)
        .args(args)
        .current_dir(root().join("project"))
        .status();
    exit(status, &binary.display().to_string())
}

fn cargo(args: &[&str]) -> ExitCode {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo).args(args).current_dir(root()).status();
    exit(status, &format!("cargo {}", args.join(" ")))
}

fn exit(status: std::io::Result<std::process::ExitStatus>, what: &str) -> ExitCode {
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(s.code().unwrap_or(1).clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("error: cannot run {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Removes build outputs and what runs wrote into `project/` (configs stay).
fn clean() -> ExitCode {
    let project = root().join("project");
    for dir in [
        "training/summaries",
        "training/callbacks",
        "training/artifacts",
        "checkpoints",
        "saved_models",
    ] {
        let _ = std::fs::remove_dir_all(project.join(dir));
    }
    let _ = std::fs::remove_file(project.join("training/evaluations.json"));
    let _ = std::fs::remove_file(project.join("nc7_project.json"));
    if let Ok(entries) = std::fs::read_dir(project.join("inference")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("run-") || name == "last_run" {
                let _ =
                    std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
            }
        }
    }
    cargo(&["clean"])
}
