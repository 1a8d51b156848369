//! `evaluate-kpi` and `extract-data`: the runs without a model.

use std::io::Write;

use clap::Args;

use super::{Failure, OverrideArgs, refused};
use crate::config::{Overrides, RunType};
use crate::coordinator::{InferOptions, InferReport};
use crate::plan::{ExtractPlan, FeedRequest, KpiPlan};
use crate::registry::Registry;

/// The options of a run without a model.
#[derive(Debug, Clone, Args)]
pub(super) struct FeedArgs {
    #[command(flatten)]
    overrides: OverrideArgs,
    /// The run folder's name instead of the next `run-N`.
    #[arg(long)]
    run_name: Option<String>,
    /// Samples per iteration (over the run config's `batch_size`).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Read and evaluate in one thread.
    #[arg(long)]
    single_thread: bool,
    /// Iterations the reading may run ahead.
    #[arg(long)]
    prefetch: Option<usize>,
    /// Log samples the data feeder cannot read and go on.
    #[arg(long)]
    skip_bad_samples: bool,
    /// `cpu`, `cuda` or `cuda:N`: where the data feeder's tensors are made.
    #[arg(long)]
    device: Option<String>,
    /// Compute threads (over the run config's `threads`; every core available by default).
    #[arg(long)]
    threads: Option<usize>,
}

/// Plans and runs `evaluate-kpi` (`run` is `Kpi`) or `extract-data` (`Data`).
pub(super) fn run_feed(
    run: RunType,
    args: FeedArgs,
    env: &Overrides,
    command_line: &[String],
    quiet: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, Failure> {
    let registry = Registry::global();
    let request = FeedRequest {
        batch_size: args.batch_size,
        single_thread: args.single_thread,
        prefetch: args.prefetch,
        skip_bad_samples: args.skip_bad_samples,
        device: args
            .device
            .map(|d| d.parse::<crate::backend::DeviceChoice>())
            .transpose()?,
        threads: args.threads,
        overrides: args.overrides.over(env),
    };
    let options = InferOptions {
        run_name: args.run_name,
        command: command_line.to_vec(),
        quiet,
        stop: Some(crate::signals::catch()),
    };
    let project = &args.overrides.project_dir;
    let result = if run == RunType::Kpi {
        match KpiPlan::load(project, &request, registry) {
            Ok(plan) => crate::coordinator::evaluate_kpi(&plan, &options),
            Err(e) => return refused(&e, err),
        }
    } else {
        match ExtractPlan::load(project, &request, registry) {
            Ok(plan) => crate::coordinator::extract_data(&plan, &options),
            Err(e) => return refused(&e, err),
        }
    };
    match result {
        Ok(r) => {
            let verb = if run == RunType::Kpi {
                "evaluated"
            } else {
                "extracted"
            };
            report(&r, verb, "", out)?;
            Ok(0)
        }
        Err(e) => refused(&e, err),
    }
}

/// What a pipeline run did: `<verb> N samples in M iterations (rate)`, what was skipped or
/// stopped it (and, for inference, ` with <model>` after the rate), its KPIs and its results.
pub(super) fn report(
    r: &InferReport,
    verb: &str,
    with: &str,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    writeln!(
        out,
        "{verb} {} samples in {} iterations ({:.1} samples/s){with}{}{}",
        r.samples,
        r.iterations,
        r.samples as f64 / r.seconds.max(1e-9),
        if r.skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped {} bad samples", r.skipped.len())
        },
        r.stopped
            .as_ref()
            .map(|s| format!("; {s}"))
            .unwrap_or_default()
    )?;
    write_kpis(r, out)?;
    writeln!(out, "results: {}", r.run.results.display())?;
    Ok(())
}

/// One line per KPI (vectors' elements left out: the results folder has them).
fn write_kpis(r: &InferReport, out: &mut dyn Write) -> Result<(), Failure> {
    for (name, value) in r.kpi.iter().filter(|(k, _)| !crate::kpi::is_element(k)) {
        writeln!(out, "  {name:<40} {value:.6}")?;
    }
    Ok(())
}
