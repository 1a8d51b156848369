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
