//! The macros' compile errors, each on the offending token (trybuild snapshots). What the
//! macros accept is tested in `derives.rs`, an ordinary test: with only failing cases, trybuild
//! checks its scratch crate instead of building it, and does not build every dependency again.
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
    t.compile_fail("tests/ui/fail/*.rs");
}
