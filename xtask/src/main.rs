//! `cargo xtask`: this repository's small build tool.
//!
//! Subcommands:
//! - `ci`: runs exactly what CI runs (`.ci/run`): formatting, clippy, the CUDA build check and
//!   the test suite.
//! - `bench <name>`: runs a benchmark in release mode and prints its table. Names: `dna`, `parity`,
//!   `inferer`, `peer`, `scale`; `bench peer --openblas` measures NdArray with the system's
//!   OpenBLAS instead of plain NdArray.
//! - `template-smoke`: generates a project from `template/` for each starter task with the real
//!   cargo-generate, outside this workspace, and checks, lints, tests, trains, exports and
//!   infers with it; a deliberately broken copy must fail `check` with the expected errors.
//! - `chaos [--runs N] [--seed S]`: trainings of the classifier example stopped with SIGKILL,
//!   SIGTERM or SIGINT at seeded random moments and continued, compared byte for byte with an
//!   uninterrupted one;
//!   prints `chaos: K of N identical` (30 runs by default).
//! - `fuzz [--minutes N]`: runs nc7-core's fuzz properties (key-mapping text, mappings,
//!   `--set` text, trainer configs, damaged safetensors) with fresh random inputs until N
//!   minutes (10) are up; prints `fuzz: N cases, 0 panics`.
//! - `new <name> [--task classification|segmentation] [--device cpu|cuda]`: generates a project
//!   next to this checkout, wired to it.

use std::process::{Command, ExitCode};

mod smoke;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci            run exactly what CI runs (.ci/run)
  bench <name>  run a benchmark in release mode; names: dna, parity, inferer, peer, scale
                (`bench peer --openblas`: its NdArray side with the system's OpenBLAS)
  chaos [--runs N] [--seed S]
                stop trainings at random moments (SIGKILL, SIGTERM, SIGINT),
                continue them, compare with an
                uninterrupted one (30 runs by default)
  fuzz [--minutes N]
                run the fuzz properties with fresh inputs for N minutes (10)
  template-smoke [task…]
                generate, check, lint, test, train, export and infer a project per starter task
                (classification, segmentation, detection; all by default)
  new <name> [--task classification|segmentation|detection] [--device cpu|cuda]
                generate a project from template/ next to this checkout
  help          print this message";

/// Benchmarks: name, the package that holds it, and what it measures.
const BENCHES: &[(&str, &str, &str)] = &[
    (
        "dna",
        "nc7-core",
        "helix build + validate + sort of 100 / 1,000 / 10,000 nucleotides; routing per nucleotide",
    ),
    (
        "parity",
        "nc7-core",
        "the nc7 Trainer vs a hand-written burn loop (ConvNet, 200 steps): time and peak memory",
    ),
    (
        "inferer",
        "nc7-core",
        "the Inferer's reading, network and saving threads vs one thread (PNG in, PNG out)",
    ),
    (
        "peer",
        "nc7-tests",
        "nc7 vs a PyTorch loop and PyTorch Lightning on the shapes classifier (makes a PyTorch venv once)",
    ),
    (
        "scale",
        "nc7-core",
        "data-parallel training on 2 CPU devices vs 1 (parity ConvNet, batch 32): efficiency",
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["ci"] => run(Command::new("bash").arg(".ci/run"), "bash .ci/run"),
        ["bench", name] => bench(name, false),
        ["bench", "peer", "--openblas"] => bench("peer", true),
        ["template-smoke"] => smoke::run_all(&[]),
        ["template-smoke", tasks @ ..] => smoke::run_all(tasks),
        ["chaos", rest @ ..] => chaos(rest),
        ["fuzz"] => fuzz(10.0),
        ["fuzz", "--minutes", m] => match m.parse::<f64>() {
            Ok(m) if m > 0.0 => fuzz(m),
            _ => {
                eprintln!("error: `--minutes` takes a number of minutes, such as 10");
                ExitCode::FAILURE
            }
        },
        ["new", name, rest @ ..] => smoke::new_project(name, rest),
        ["bench"] => {
            eprintln!("error: `bench` needs a benchmark name\n");
            list_benches();
            ExitCode::FAILURE
        }
        [] | ["help"] | ["--help"] | ["-h"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        [other, ..] => {
            eprintln!("error: unknown command `{other}`\n\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

/// `openblas`: the peer bench's NdArray side with the system's OpenBLAS.
fn bench(name: &str, openblas: bool) -> ExitCode {
    let Some((_, package, _)) = BENCHES.iter().find(|(n, _, _)| *n == name) else {
        eprintln!("error: unknown benchmark `{name}`\n");
        list_benches();
        return ExitCode::FAILURE;
    };
    let mut cmd = Command::new(cargo());
    cmd.args(["bench", "--quiet", "--package", package, "--bench", name]);
    // The peer bench measures the NdArray backend beside the default.
    if name == "peer" {
        let feature = if openblas { "openblas" } else { "ndarray" };
        cmd.args(["--features", &format!("nc7-tests/{feature}")]);
    }
    run(
        &mut cmd,
        &format!("cargo bench --package {package} --bench {name}"),
    )
}

fn chaos(args: &[&str]) -> ExitCode {
    let mut build = Command::new(cargo());
    build.args(["build", "--quiet", "--package", "nc7-tests", "--bins"]);
    let built = run(&mut build, "cargo build --package nc7-tests --bins");
    if built != ExitCode::SUCCESS {
        return built;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    run(
        Command::new(target.join("debug/nc7-chaos")).args(args),
        "nc7-chaos",
    )
}

/// nc7-core's fuzz properties (their names start with `any_`, or live in a `fuzz` module).
const FUZZ_PROPERTIES: [&str; 2] = ["::any_", "fuzz::"];
/// How many properties those filters select, and the cases each gets per round.
const FUZZ_COUNT: u64 = 5;
const FUZZ_CASES: u64 = 20_000;

fn fuzz(minutes: f64) -> ExitCode {
    let started = std::time::Instant::now();
    let mut rounds = 0u64;
    while rounds == 0 || started.elapsed().as_secs_f64() < minutes * 60.0 {
        let mut cmd = Command::new(cargo());
        cmd.args(["test", "--quiet", "--package", "nc7-core", "--lib", "--"])
            .args(FUZZ_PROPERTIES)
            .env("PROPTEST_CASES", FUZZ_CASES.to_string());
        if run(
            &mut cmd,
            "cargo test --package nc7-core --lib -- ::any_ fuzz::",
        ) != ExitCode::SUCCESS
        {
            eprintln!(
                "fuzz: a property failed after {} cases (proptest printed the smallest input)",
                rounds * FUZZ_CASES * FUZZ_COUNT
            );
            return ExitCode::FAILURE;
        }
        rounds += 1;
    }
    println!(
        "fuzz: {} cases, 0 panics ({rounds} rounds in {:.1} min)",
        rounds * FUZZ_CASES * FUZZ_COUNT,
        started.elapsed().as_secs_f64() / 60.0
    );
    ExitCode::SUCCESS
}

fn list_benches() {
    eprintln!("benchmarks:");
    for (name, _, what) in BENCHES {
        eprintln!("  {name:<8} {what}");
    }
}

pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The workspace root. `cargo xtask` (cargo run) says where xtask is as it starts it; the path
/// compiled in is only the fallback, since cargo reuses a binary built in another checkout
/// that shares the target folder (CI's fresh clone does).
pub(crate) fn workspace() -> std::path::PathBuf {
    let xtask = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        std::path::PathBuf::from,
    );
    xtask
        .parent()
        .expect("xtask lives in the workspace root")
        .to_owned()
}

/// Runs a command from the workspace root; on failure says what to run to see it again.
fn run(cmd: &mut Command, shown: &str) -> ExitCode {
    match cmd.current_dir(workspace()).status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("error: `{shown}` failed ({status}); run it again to see the failure");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: could not start `{shown}`: {e}");
            ExitCode::FAILURE
        }
    }
}
