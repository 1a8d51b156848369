//! `infer`: a saved model or a checkpoint over the data feeder's samples.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::{Failure, OverrideArgs, refused};
use crate::config::Overrides;
use crate::plan::{InferPlan, InferRequest};
use crate::registry::Registry;

/// The options of `infer`.
#[derive(Debug, Clone, Args)]
pub(super) struct InferArgs {
    #[command(flatten)]
    overrides: OverrideArgs,
    /// The run folder's name instead of the next `run-N`.
    #[arg(long)]
    run_name: Option<String>,
    /// A saved model: a name in `saved_models/` (`step-40`) or a path; the newest by default.
    #[arg(long, conflicts_with = "checkpoint")]
    saved_model: Option<String>,
    /// Run a checkpoint (`ckpt-N`, `best` or a path) with the training configs' model.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Samples per batch (over `inferer.json`'s `batch_size`).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Read, predict and call back in one thread.
    #[arg(long)]
    single_thread: bool,
    /// Iterations each stage may run ahead of the next.
    #[arg(long)]
    prefetch: Option<usize>,
    /// Split the data feeder's file list into this many shards (with `--shard-index`).
    #[arg(long, requires = "shard_index")]
    number_of_shards: Option<usize>,
    /// Which shard this process reads, from 0.
    #[arg(long, requires = "number_of_shards")]
    shard_index: Option<usize>,
    /// Log samples the data feeder cannot read and go on.
    #[arg(long)]
    skip_bad_samples: bool,
    /// `cpu`, `cuda` or `cuda:N`; over `inferer.json`'s `device`.
    #[arg(long)]
    device: Option<String>,
    /// Compute threads (over `inferer.json`'s `threads`; every core available by default).
    #[arg(long)]
    threads: Option<usize>,
}

/// Plans and runs `infer`.
pub(super) fn run_infer(
    args: InferArgs,
    env: &Overrides,
    command_line: &[String],
    quiet: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, Failure> {
    let registry = Registry::global();
    let InferArgs {
        overrides,
        run_name,
        saved_model,
        checkpoint,
        batch_size,
        single_thread,
        prefetch,
        number_of_shards,
        shard_index,
        skip_bad_samples,
        device,
        threads,
    } = args;
    let request = InferRequest {
        saved_model,
        checkpoint,
        batch_size,
        single_thread,
        prefetch,
        shard: number_of_shards.zip(shard_index),
        skip_bad_samples,
        device: device
            .map(|d| d.parse::<crate::backend::DeviceChoice>())
            .transpose()?,
        threads,
        overrides: overrides.over(env),
    };
    let plan = match InferPlan::load(&overrides.project_dir, &request, registry) {
        Ok(plan) => plan,
        Err(e) => return refused(&e, err),
    };
    let options = crate::coordinator::InferOptions {
        run_name,
        command: command_line.to_vec(),
        quiet,
        stop: Some(crate::signals::catch()),
    };
    match crate::coordinator::infer(&plan, &options) {
        Ok(r) => {
            let with = format!(
                " with {}",
                r.model
                    .as_deref()
                    .unwrap_or(std::path::Path::new("-"))
                    .display()
            );
            super::feed::report(&r, "inferred", &with, out)?;
            Ok(0)
        }
        Err(e) => refused(&e, err),
    }
}
