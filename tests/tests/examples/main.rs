//! The workspace's end-to-end tests: each example's command line (`check`, `train`, `export`,
//! `infer`) on its shipped project, in one binary. Both examples' nucleotides are linked, as in
//! a project that uses a colleague's crate.

use std::path::{Path, PathBuf};

use shapes_classifier as _;
use shapes_unet as _;

mod bad_inputs;
mod classifier;
mod process;
mod unet;

/// Runs one command line of an example's binary (`name`) and returns what it printed; a
/// non-zero exit fails the test with everything it said. burn's CPU backend seeds one
/// process-wide generator: commands run one at a time, so each training is the same as from
/// the command line.
fn nc7(name: &str, args: &[&str]) -> String {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = nc7_core::cli::run(
        std::iter::once(name).chain(args.iter().copied()),
        Default::default(),
        &mut out,
        &mut err,
    );
    let text = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(code, 0, "{text}{}", String::from_utf8_lossy(&err));
    text
}

/// An example's shipped project folder.
fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .join("project")
}

/// A fresh copy of an example's project (configs only) in `dir`.
fn project(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    nc7_core::project::copy_configs(&example(name), &to).unwrap();
    to
}
