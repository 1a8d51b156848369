//! Runs a Python snippet against the real reader of a format nc7 writes.

use std::process::Command;

/// Runs `script` with `python3` and returns what it printed, or `None` (after saying so)
/// when `module` cannot be imported outside CI. In CI (`CI` set) a missing module fails the
/// test: `.ci/run` installs it.
pub fn run_python(module: &str, script: &str, args: &[&str]) -> Option<String> {
    let probe = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 cannot import `{module}`; `.ci/run` installs it with pip: {probe:?}"
        );
        eprintln!("skipped: python3 cannot import `{module}` (pip install {module})");
        return None;
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the {module} reader failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("UTF-8 output"))
}
