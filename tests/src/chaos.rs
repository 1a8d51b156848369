//! Kill and resume: trainings of the classifier example stopped at seeded random moments
//! (inside checkpoint writes, exports, evaluations and summaries as often as the moments fall
//! there) by a seeded choice of SIGKILL, SIGTERM, SIGINT or two SIGINTs (the second ends the
//! process at once), each continued with `train --continue` until it ends, and compared byte
//! for byte with one uninterrupted training: every checkpoint file, the saved model's weights,
//! signature, graph and evaluation, and the evaluation history.
//!
//! `cargo xtask chaos [--runs N] [--seed S]` runs it at length; the workspace's tests run a
//! short version.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The settings every training of the suite runs with: small enough for many runs, with
/// several checkpoints, exports and evaluations.
pub const SETTINGS: [&str; 8] = [
    "--set",
    "trainer.num_epochs=3",
    "--set",
    "datasets.train.samples=480",
    "--set",
    "datasets.eval.samples=100",
    "--set",
    "trainer.summary_steps=5",
];

/// What a chaos run found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Trainings killed and continued.
    pub runs: usize,
    /// Those that ended identical to the uninterrupted one.
    pub identical: usize,
}

/// Runs `runs` killed-and-continued trainings with `bin` (nc7's command line with the
/// examples linked), writing a line per run to `log`.
pub fn run(bin: &Path, runs: usize, seed: u64, log: &mut dyn Write) -> Result<Outcome, String> {
    let tmp = tempdir()?;
    let reference = tmp.join("reference");
    copy_configs(&example(), &reference)?;
    let started = Instant::now();
    train(bin, &reference, false)?;
    let whole = started.elapsed();
    let expected = files(&reference)?;
    writeln!(
        log,
        "chaos: uninterrupted training in {:.1} s, {} files compared",
        whole.as_secs_f64(),
        expected.len()
    )
    .map_err(|e| e.to_string())?;
    let mut random = seed.max(1);
    let mut identical = 0;
    for i in 0..runs {
        let dir = tmp.join(format!("run-{i}"));
        copy_configs(&example(), &dir)?;
        // A moment within the training's length (the start included).
        let at = Duration::from_secs_f64(whole.as_secs_f64() * next(&mut random));
        let how = STOPS[(next(&mut random) * STOPS.len() as f64) as usize];
        let mut child = command(bin, &dir, false)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        std::thread::sleep(at);
        for signal in how.signals() {
            // SAFETY: `kill` sends a signal to the child, which has not been waited for, so its
            // pid is still its own.
            unsafe { libc::kill(child.id() as libc::pid_t, *signal) };
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.wait();
        // As a user would: continue, or start over when the kill came before anything
        // was written.
        if let Err(e) = train(bin, &dir, true) {
            if !e.contains("has no training run to continue") {
                return Err(e);
            }
            train(bin, &dir, false)?;
        }
        let got = files(&dir)?;
        let differ: Vec<&String> = expected
            .keys()
            .chain(got.keys())
            .filter(|k| expected.get(*k) != got.get(*k))
            .collect();
        if differ.is_empty() {
            identical += 1;
            writeln!(
                log,
                "chaos: run {i}: {how} at {:.2} s: identical",
                at.as_secs_f64()
            )
        } else {
            writeln!(
                log,
                "chaos: run {i}: {how} at {:.2} s: differs in {}",
                at.as_secs_f64(),
                differ
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    writeln!(log, "chaos: {identical} of {runs} identical").map_err(|e| e.to_string())?;
    Ok(Outcome { runs, identical })
}

/// How a run is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Kill,
    Term,
    Int,
    TwoInts,
}

const STOPS: [Stop; 4] = [Stop::Kill, Stop::Term, Stop::Int, Stop::TwoInts];

impl Stop {
    fn signals(self) -> &'static [libc::c_int] {
        match self {
            Stop::Kill => &[libc::SIGKILL],
            Stop::Term => &[libc::SIGTERM],
            Stop::Int => &[libc::SIGINT],
            Stop::TwoInts => &[libc::SIGINT, libc::SIGINT],
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Kill => "SIGKILL",
            Stop::Term => "SIGTERM",
            Stop::Int => "SIGINT",
            Stop::TwoInts => "two SIGINTs",
        })
    }
}

/// xorshift: the next number in [0, 1).
fn next(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

fn command(bin: &Path, project: &Path, resume: bool) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("train").arg(project).args(SETTINGS);
    if resume {
        cmd.arg("--continue");
    }
    cmd.env("NC7_MLFLOW", "off")
        .env("NC7_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn train(bin: &Path, project: &Path, resume: bool) -> Result<(), String> {
    let out = command(bin, project, resume)
        .output()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "training {} failed ({}):\n{}",
            project.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The files a run must end with, by path in the project: every checkpoint's files, the saved
/// models' (but `model.info`, which holds the time it was written), the evaluation history.
pub fn files(project: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for sub in ["checkpoints", "saved_models"] {
        let root = project.join(sub);
        for dir in std::fs::read_dir(&root).map_err(|e| format!("{}: {e}", root.display()))? {
            let dir = dir.map_err(|e| e.to_string())?.path();
            let name = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !dir.is_dir() || name.starts_with('.') || name == "abandoned" {
                continue;
            }
            for file in std::fs::read_dir(&dir).map_err(|e| e.to_string())? {
                let file = file.map_err(|e| e.to_string())?.path();
                let fname = file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                // The saved model's info holds its time, so its manifest differs with it.
                if sub == "saved_models"
                    && matches!(
                        fname.as_str(),
                        "model.info" | "manifest.json" | "manifest.sha256"
                    )
                {
                    continue;
                }
                let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                out.insert(format!("{sub}/{name}/{fname}"), bytes);
            }
        }
    }
    let history = project.join("training/evaluations.json");
    out.insert(
        "training/evaluations.json".into(),
        std::fs::read(&history).map_err(|e| format!("{}: {e}", history.display()))?,
    );
    Ok(out)
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shapes-classifier/project")
}

/// Copies the `configs` folders of `from` into `to`.
fn copy_configs(from: &Path, to: &Path) -> Result<(), String> {
    nc7_core::project::copy_configs(from, to).map_err(|e| e.to_string())
}

fn tempdir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("nc7-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}
