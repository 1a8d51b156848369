//! `nc7-chaos [--runs N] [--seed S]`: trainings killed at random moments and continued, compared
//! with an uninterrupted one (see `nc7_tests::chaos`); `cargo xtask chaos` builds and runs it.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = 30;
    let mut seed = 1;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let value = it.next().and_then(|v| v.parse::<u64>().ok());
        match (arg.as_str(), value) {
            ("--runs", Some(v)) => runs = v as usize,
            ("--seed", Some(v)) => seed = v,
            _ => {
                eprintln!("usage: nc7-chaos [--runs N] [--seed S]");
                return ExitCode::from(2);
            }
        }
    }
    let bin = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("nc7-examples")))
        .filter(|b| b.is_file());
    let Some(bin) = bin else {
        eprintln!("nc7-examples is not built beside nc7-chaos: `cargo build -p nc7-tests --bins`");
        return ExitCode::FAILURE;
    };
    match nc7_tests::chaos::run(&bin, runs, seed, &mut std::io::stdout()) {
        Ok(o) if o.identical == o.runs => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
