//! The macros' compile errors, each on the offending token (trybuild snapshots).
//!
//! The snapshots are read with one pinned toolchain, rustc 1.95: compiler messages change
//! between versions, so on another version this test says so and checks nothing.

#[test]
fn ui() {
    let version =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
    if !version.starts_with("rustc 1.95.") {
        eprintln!("skipping UI snapshots: they are pinned to rustc 1.95, this is {version}");
        return;
    }
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
