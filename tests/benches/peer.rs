//! `cargo xtask bench peer`: nc7 against the frameworks a user would otherwise pick, on one CPU.
//!
//! The shapes classifier's exact model, data, batch (32), optimizer (Adam, 0.005, warm-up +
//! cosine) and epochs (6) in (a) nc7 (its release binary, the example's project), (b) a plain
//! PyTorch loop and (c) a PyTorch Lightning `Trainer` without logger, checkpointing or
//! progress bar (`peer.py`). The images are the ones nc7's `Shapes` data set draws, written once
//! as PNG files for the PyTorch side, which preloads them. Rounds alternate the three; each
//! run's seconds per training epoch are the median of epochs 2–6 (evaluation excluded), and a
//! side's figure is the median over rounds. The three must reach comparable accuracy.
//!
//! The PyTorch side runs in a virtual environment the bench makes once
//! (`~/.cache/nc7-peer/venv`, or `PEER_VENV`): torch, lightning, pillow, numpy from the
//! registry. Its default torch wheel is the CUDA build (about 5.5 GB installed; `import torch`
//! alone holds 0.8 GB), so its peak memory is reported, not compared.
//!
//! Prints a table, then `peer ratio: <nc7 / lightning>` and `torch ratio: <nc7 / torch>`
//! (below 1: nc7 is faster). `PEER_ROUNDS` (3) sets the rounds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const EPOCHS: usize = 6;
const THREADS: usize = 2;

fn main() {
    let rounds: usize = std::env::var("PEER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let python = venv();
    let tmp = std::env::temp_dir().join(format!("nc7-peer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let nc7 = Path::new(env!("CARGO_BIN_EXE_nc7-examples"));
    // The images nc7's data sets draw (the example's seeds), as files for the PyTorch side.
    for (name, samples, seed) in [("train", "2400", "1"), ("eval", "400", "2")] {
        let out = Command::new(nc7)
            .args(["write-shapes"])
            .arg(tmp.join(name))
            .args(["--samples", samples, "--size", "24", "--seed", seed])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer.py");
    // nc7 on its default device, and on NdArray when built in (`--features ndarray`; with
    // `--features openblas`, NdArray's matrix products are OpenBLAS's).
    let mut sides = vec!["nc7", "torch", "lightning"];
    if cfg!(feature = "openblas") {
        sides.insert(1, "nc7-openblas");
    } else if cfg!(feature = "ndarray") {
        sides.insert(1, "nc7-ndarray");
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); sides.len()];
    for round in 0..rounds {
        for (i, side) in sides.iter().enumerate() {
            let run = match *side {
                "nc7" => nc7_run(nc7, "cpu", &tmp.join(format!("project-{round}"))),
                "nc7-ndarray" | "nc7-openblas" => {
                    nc7_run(nc7, "ndarray", &tmp.join(format!("ndarray-{round}")))
                }
                mode => python_run(&python, &script, mode, &tmp),
            };
            eprintln!(
                "round {}: {side:<9} {:.3} s/epoch, accuracy {:.3}, peak RSS {:.0} MB",
                round + 1,
                run.per_epoch,
                run.accuracy,
                run.peak_rss / 1e6
            );
            runs[i].push(run);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let samples_per_epoch = 2400.0;
    println!(
        "\n{:<10} {:>10} {:>10} {:>9} {:>12}",
        "side", "s/epoch", "samples/s", "accuracy", "peak RSS"
    );
    let mut medians = Vec::new();
    for (side, rs) in sides.iter().zip(&runs) {
        let per_epoch = median(rs.iter().map(|r| r.per_epoch).collect());
        let accuracy = median(rs.iter().map(|r| r.accuracy).collect());
        let rss = rs.iter().map(|r| r.peak_rss).fold(0.0, f64::max);
        println!(
            "{side:<10} {per_epoch:>10.3} {:>10.0} {accuracy:>9.3} {:>9.0} MB",
            samples_per_epoch / per_epoch,
            rss / 1e6
        );
        medians.push((per_epoch, accuracy));
    }
    let best = medians.iter().map(|m| m.1).fold(0.0, f64::max);
    for (side, (_, accuracy)) in sides.iter().zip(&medians) {
        assert!(
            *accuracy >= 0.9 && best - accuracy <= 0.05,
            "{side} reached {accuracy:.3} accuracy, the best {best:.3}: not the same training"
        );
    }
    println!("(PyTorch's memory includes its CUDA build's libraries; {THREADS} threads each)");
    let of = |side: &str| medians[sides.iter().position(|s| *s == side).unwrap()].0;
    if let Some(side) = sides.get(1).filter(|s| s.starts_with("nc7-")) {
        println!(
            "peer ratio on {}: {:.3}",
            &side[4..],
            of(side) / of("lightning")
        );
    }
    println!("peer ratio: {:.3}", of("nc7") / of("lightning"));
    println!("torch ratio: {:.3}", of("nc7") / of("torch"));
}

#[derive(Debug, Clone, Copy)]
struct Run {
    per_epoch: f64,
    accuracy: f64,
    peak_rss: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median seconds of epochs 2 and later.
fn per_epoch(seconds: &[f64]) -> f64 {
    assert_eq!(seconds.len(), EPOCHS, "{seconds:?}");
    median(seconds[1..].to_vec())
}

/// One training by nc7's command line on a fresh copy of the example's project.
fn nc7_run(nc7: &Path, device: &str, project: &Path) -> Run {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shapes-classifier/project");
    nc7_core::project::copy_configs(&example, project).unwrap();
    let mut cmd = Command::new(nc7);
    cmd.arg("train")
        .arg(project)
        .args([
            "--set",
            &format!("trainer.num_epochs={EPOCHS}"),
            "--device",
            device,
        ])
        .env("NC7_MLFLOW", "off")
        .env("NC7_LOG", "info");
    let (stdout, stderr, peak_rss) = measured(cmd);
    // `epoch 2 of 6: 75 steps, mean loss 0.9, 0.912 s`
    let seconds: Vec<f64> = stderr
        .lines()
        .filter(|l| l.contains("epoch ") && l.contains(" steps, mean loss "))
        .filter_map(|l| l.rsplit(", ").next()?.strip_suffix(" s")?.parse().ok())
        .collect();
    let accuracy = stdout
        .split("kpi/classification/accuracy ")
        .nth(1)
        .and_then(|t| t.split(',').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {stdout}"));
    Run {
        per_epoch: per_epoch(&seconds),
        accuracy,
        peak_rss,
    }
}

fn python_run(python: &Path, script: &Path, mode: &str, data: &Path) -> Run {
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg(mode)
        .arg("--train")
        .arg(data.join("train"))
        .arg("--eval")
        .arg(data.join("eval"))
        .args([
            "--epochs",
            &EPOCHS.to_string(),
            "--threads",
            &THREADS.to_string(),
        ]);
    let (stdout, _, peak_rss) = measured(cmd);
    let line = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{mode}: {e}: {stdout}"));
    let seconds: Vec<f64> = v["seconds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    Run {
        per_epoch: per_epoch(&seconds),
        accuracy: v["accuracy"].as_f64().unwrap(),
        peak_rss,
    }
}

/// Runs `cmd` to its end: its stdout, stderr and peak resident memory (bytes).
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by `wait4`, which also gives its peak memory"
)]
fn measured(mut cmd: Command) -> (String, String, f64) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let (mut out, mut err) = (child.stdout.unwrap(), child.stderr.unwrap());
    let reading = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).unwrap();
        s
    });
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut out, &mut stdout).unwrap();
    let stderr = reading.join().unwrap();
    let mut status = 0;
    // SAFETY: `wait4` waits for our own child, whose pid `spawn` gave, and fills the rusage
    // we own; the child is not waited for anywhere else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed:\n{stdout}{stderr}"
    );
    (stdout, stderr, usage.ru_maxrss as f64 * 1024.0)
}

/// The virtual environment's python, made (once) when missing.
fn venv() -> PathBuf {
    let dir = std::env::var_os("PEER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/nc7-peer/venv")
        });
    let python = dir.join("bin/python");
    let ready = dir.join(".nc7-ready");
    if ready.exists() {
        return python;
    }
    eprintln!(
        "making the PyTorch environment in {} (once; torch's default wheel is about 5.5 GB installed)",
        dir.display()
    );
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "torch",
                "lightning",
                "pillow",
                "numpy",
            ])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "could not make the PyTorch environment in {}",
        dir.display()
    );
    std::fs::write(&ready, "").unwrap();
    python
}
