//! The command line as a process (`nc7-examples`, nc7's CLI with both examples linked): what
//! only a real process shows — output from worker threads, signals, exit codes, two commands
//! on one project at once.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{nc7, project};

/// Runs `nc7-examples` with `args` in the background.
fn spawn(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_nc7-examples"))
        .args(args)
        .env("NC7_MLFLOW", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nc7-examples starts")
}

/// Waits for `child` at most `limit`; its output, or a failed test naming what hung.
fn finish(mut child: std::process::Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "`{what}` still ran after {limit:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A classifier project trained for one epoch, with its predictions recorded.
fn trained_classifier(dir: &Path) -> String {
    let p = project("shapes-classifier", dir);
    let p = p.to_str().unwrap().to_owned();
    nc7(
        "shapes-classifier",
        &["train", &p, "--set", "trainer.num_epochs=1"],
    );
    nc7("shapes-classifier", &["infer", &p]);
    p
}

#[test]
fn warnings_of_worker_threads_never_block_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let p = trained_classifier(dir.path());
    // A broken shard after the good one: the reading thread warns and goes on.
    let records = Path::new(&p).join("inference/last_run/results/records");
    std::fs::write(records.join("zz-broken.safetensors"), b"not safetensors").unwrap();
    let child = spawn(&["evaluate-kpi", &p, "--skip-bad-samples"]);
    let out = finish(
        child,
        Duration::from_secs(120),
        "evaluate-kpi --skip-bad-samples",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("skipped a bad sample") && stderr.contains("zz-broken.safetensors"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("evaluated 200 samples"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Waits until `check` holds, at most `limit`.
fn wait_for(limit: Duration, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_second_command_is_refused_and_signals_stop_a_training_with_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let project = project("shapes-classifier", dir.path());
    let p = project.to_str().unwrap();
    let long = ["train", p, "--set", "trainer.num_epochs=200"];
    let first = spawn(&long);
    let lock = project.join(nc7_core::project::LOCK_FILE);
    wait_for(
        Duration::from_secs(60),
        "the training to hold the project",
        || std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("\"train\"")),
    );
    // `train --continue` alongside it: refused, naming the holder.
    let second = finish(
        spawn(&["train", p, "--continue"]),
        Duration::from_secs(60),
        "train --continue",
    );
    let said = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("is in use by `train` (pid {}", first.id())),
        "{said}"
    );
    // SIGTERM: the step ends, a checkpoint is written, the run is "stopped", the exit code 143.
    let checkpoints = project.join("checkpoints");
    wait_for(Duration::from_secs(60), "a first checkpoint", || {
        std::fs::read_dir(&checkpoints).is_ok_and(|mut d| d.next().is_some())
    });
    signal(&first, "TERM");
    let out = finish(first, Duration::from_secs(60), "train after SIGTERM");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(143),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let step: u64 = text
        .split("interrupted (SIGTERM) at step ")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no interrupted step in {text}"));
    assert!(checkpoints.join(format!("ckpt-{step}")).is_dir(), "{text}");
    let record = std::fs::read_to_string(project.join("nc7_project.json")).unwrap();
    assert!(record.contains("\"status\": \"stopped\""), "{record}");
    // Two SIGINTs: the second ends the process at once (130), and what is on disk still
    // continues.
    let again = spawn(&["train", p, "--continue"]);
    wait_for(Duration::from_secs(60), "the continued training", || {
        std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("\"train\""))
    });
    signal(&again, "INT");
    signal(&again, "INT");
    let out = finish(again, Duration::from_secs(60), "train after two SIGINTs");
    assert_eq!(out.status.code(), Some(130));
    let resumed = finish(
        spawn(&["train", p, "--continue", "--set", "trainer.num_epochs=1"]),
        Duration::from_secs(120),
        "train --continue after the kill",
    );
    assert!(
        resumed.status.success(),
        "{}{}",
        String::from_utf8_lossy(&resumed.stdout),
        String::from_utf8_lossy(&resumed.stderr)
    );
}

#[test]
fn trainings_killed_at_random_moments_continue_to_identical_files() {
    // The short version of `cargo xtask chaos` (30 runs there).
    let mut log = Vec::new();
    let bin = Path::new(env!("CARGO_BIN_EXE_nc7-examples"));
    let outcome = nc7_tests::chaos::run(bin, 3, 7, &mut log).unwrap();
    let log = String::from_utf8(log).unwrap();
    assert_eq!(outcome.identical, outcome.runs, "{log}");
    assert!(log.contains("chaos: 3 of 3 identical"), "{log}");
}

#[test]
fn a_full_disk_fails_a_training_clearly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_nc7-examples");
    let train = |project: &Path, limit: Option<u32>, resume: bool| {
        // A file size limit with SIGXFSZ ignored: a write past it fails with EFBIG, as on a
        // full disk.
        let limit = limit.map_or(String::new(), |kib| {
            format!("ulimit -f {kib}; trap '' XFSZ; ")
        });
        let mut script = format!("{limit}exec \"$0\" train \"$@\"");
        if resume {
            script.push_str(" --continue");
        }
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg(bin)
            .arg(project)
            .args(nc7_tests::chaos::SETTINGS)
            .env("NC7_MLFLOW", "off")
            .output()
            .unwrap()
    };
    let reference = project("shapes-classifier", &dir.path().join("a"));
    assert!(train(&reference, None, false).status.success());
    let full = project("shapes-classifier", &dir.path().join("b"));
    let out = train(&full, Some(4), false);
    let said = String::from_utf8_lossy(&out.stderr);
    // An error that says what could not be written and why; no panic, no crash.
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("File too large"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    // With room again, the run continues to the files of one that never ran out.
    let again = train(&full, None, true);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        nc7_tests::chaos::files(&full).unwrap(),
        nc7_tests::chaos::files(&reference).unwrap()
    );
}

/// Asserts that `again`, the run continued after a fault, succeeded and left in `p` the files of
/// a run that met none (`expected`).
fn ends_as(
    expected: &std::collections::BTreeMap<String, Vec<u8>>,
    p: &Path,
    again: &Output,
    what: &str,
) {
    assert!(
        again.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        nc7_tests::chaos::files(p).unwrap() == *expected,
        "{what}: the continued run's files differ"
    );
}

/// The full-disk shim (`tests/faults/full_disk.c`), built with the system's C compiler.
fn full_disk_shim(dir: &Path) -> std::path::PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("faults/full_disk.c");
    let lib = dir.join("libfull_disk.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&source)
        .arg("-ldl")
        .output()
        .expect("a C compiler (`cc`) builds the full-disk shim");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

/// `nc7-examples` with `args`, where writes to files whose path holds `full` find no room
/// after `room` bytes.
fn with_full_disk(shim: &Path, full: Option<(&str, u64)>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nc7-examples"));
    cmd.args(args)
        .env("NC7_MLFLOW", "off")
        .env("NC7_LOG", "warn");
    if let Some((pattern, room)) = full {
        cmd.env("LD_PRELOAD", shim)
            .env("FAULT_FULL_DISK", pattern)
            .env("FAULT_FULL_DISK_AFTER", room.to_string());
    }
    cmd.output().unwrap()
}

#[test]
fn a_full_disk_at_each_kind_of_write_fails_clearly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shim = full_disk_shim(dir.path());
    let train = |p: &Path, full: Option<(&str, u64)>, resume: bool| {
        let mut args = vec!["train", p.to_str().unwrap()];
        args.extend(nc7_tests::chaos::SETTINGS);
        if resume {
            args.push("--continue");
        }
        with_full_disk(&shim, full, &args)
    };
    let reference = project("shapes-classifier", &dir.path().join("reference"));
    assert!(train(&reference, None, false).status.success());
    let expected = nc7_tests::chaos::files(&reference).unwrap();
    // Each kind of file a training writes, full from its first byte or after some.
    let kinds: [(&str, u64); 10] = [
        ("nc7_project.json", 0),
        ("training/artifacts/", 0),
        ("training/summaries/", 0),
        ("training/summaries/", 2_000),
        ("checkpoints/", 0),
        ("checkpoints/", 20_000),
        ("evaluations.json", 0),
        ("training/kpi/", 0),
        ("saved_models/", 0),
        ("experiments.csv", 0),
    ];
    for (i, (pattern, room)) in kinds.into_iter().enumerate() {
        let p = project("shapes-classifier", &dir.path().join(format!("full-{i}")));
        let out = train(&p, Some((pattern, room)), false);
        let said = String::from_utf8_lossy(&out.stderr);
        let what = format!("{pattern} full after {room} bytes");
        assert_eq!(out.status.code(), Some(1), "{what}: {said}");
        assert!(
            said.contains("error[NC0101]")
                && said.contains("No space left on device")
                && said.contains(pattern.trim_end_matches('/')),
            "{what}: {said}"
        );
        assert!(!said.contains("panicked"), "{what}: {said}");
        // With room again, the run continues (or starts, when nothing was written) to the
        // files of one that never ran out.
        let mut again = train(&p, None, true);
        if String::from_utf8_lossy(&again.stderr).contains("has no training run to continue") {
            again = train(&p, None, false);
        }
        ends_as(&expected, &p, &again, &what);
    }
    // Plots are a view: a full disk there is a warning, and the run ends as it would.
    let p = project("shapes-classifier", &dir.path().join("plots"));
    let out = train(&p, Some(("training/plots/", 0)), false);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("the plots in") && said.contains("No space left"),
        "{said}"
    );
    assert!(nc7_tests::chaos::files(&p).unwrap() == expected);

    // Inference: a full results folder fails the run, which is marked, and `last_run` still
    // names the last finished one.
    let p = reference.to_str().unwrap();
    assert!(with_full_disk(&shim, None, &["infer", p]).status.success());
    let out = with_full_disk(&shim, Some(("inference/run-2/results", 0)), &["infer", p]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("error[NC0101]") && said.contains("inference/run-2/results"),
        "{said}"
    );
    let status = std::fs::read_to_string(reference.join("inference/run-2/status.json")).unwrap();
    assert!(status.contains("failed"), "{status}");
    let last = std::fs::read_link(reference.join("inference/last_run")).unwrap();
    assert!(last.ends_with("run-1"), "{}", last.display());
    // A saved model that cannot be written: `export` fails, and the saved models stay.
    let before = std::fs::read_dir(reference.join("saved_models"))
        .unwrap()
        .count();
    let out = with_full_disk(
        &shim,
        Some(("saved_models/", 0)),
        &["export", p, "--checkpoint", "ckpt-30"],
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("error[NC0101]") && said.contains("saved_models"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_dir(reference.join("saved_models"))
            .unwrap()
            .count(),
        before
    );
}

/// Runs `bin` (a copy of `nc7-examples` that every user can run) as a user the file
/// permissions apply to: this user, or `nobody` when the tests run as root (whom permissions do
/// not stop).
fn as_user(bin: &Path, args: &[&str]) -> Output {
    // SAFETY: `geteuid` only reads the process's effective user id.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args)
        .env("NC7_MLFLOW", "off")
        .env("NC7_LOG", "warn")
        .env("HOME", std::env::temp_dir());
    cmd.output()
        .expect("the command starts (as `nobody` through setpriv when root)")
}

/// Makes `path` and everything under it belong to the user [`as_user`] runs as.
fn give(path: &Path) {
    // SAFETY: as above.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            give(&e.unwrap().path());
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn unwritable_folders_fail_clearly_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    set_mode(dir.path(), 0o755);
    // The checkout may lie where `nobody` cannot reach: a copy of the binary beside the
    // projects.
    let bin = dir.path().join("nc7-examples");
    std::fs::copy(env!("CARGO_BIN_EXE_nc7-examples"), &bin).unwrap();
    set_mode(&bin, 0o755);
    let bin = bin.as_path();
    let settings = nc7_tests::chaos::SETTINGS;
    let train = |p: &Path, resume: bool| {
        let mut args = vec!["train", p.to_str().unwrap()];
        args.extend(settings);
        if resume {
            args.push("--continue");
        }
        as_user(bin, &args)
    };
    let reference = project("shapes-classifier", &dir.path().join("reference"));
    give(&reference);
    let out = train(&reference, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = nc7_tests::chaos::files(&reference).unwrap();

    // A project folder the user cannot write to: refused before anything, naming it.
    let locked = project("shapes-classifier", &dir.path().join("locked"));
    set_mode(&locked, 0o555);
    let out = train(&locked, false);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("error[NC0101]") && said.contains("Permission denied"),
        "{said}"
    );
    assert!(!locked.join("training/summaries").exists());
    set_mode(&locked, 0o755);

    // Folders a training writes into, made read-only before it starts: the training fails
    // naming the folder; made writable again, it continues to the files of one that never
    // failed.
    for sub in ["checkpoints", "saved_models", "training/kpi", "logs"] {
        let p = project("shapes-classifier", &dir.path().join(sub.replace('/', "-")));
        std::fs::create_dir_all(p.join(sub)).unwrap();
        give(&p);
        set_mode(&p.join(sub), 0o555);
        let out = train(&p, false);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{sub}: {said}");
        assert!(
            said.contains("error[NC0101]")
                && said.contains("Permission denied")
                && said.contains(sub),
            "{sub}: {said}"
        );
        assert!(!said.contains("panicked"), "{sub}: {said}");
        set_mode(&p.join(sub), 0o755);
        ends_as(&expected, &p, &train(&p, true), sub);
    }

    // Inference into a read-only `inference/`: refused, naming it; the trained project stays.
    let p = reference.to_str().unwrap();
    std::fs::create_dir_all(reference.join("inference")).unwrap();
    set_mode(&reference.join("inference"), 0o555);
    let out = as_user(bin, &["infer", p]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("error[NC0101]") && said.contains("inference"),
        "{said}"
    );
    assert!(nc7_tests::chaos::files(&reference).unwrap() == expected);
}
