//! nc7's command line, so that a project's `main.rs` is one line: `nc7_core::cli::main()`.
//! Every subcommand's doc comment is its `--help`.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod feed;
mod infer;
mod runs;

use crate::check::ProjectCheck;
use crate::config::{Overrides, RunType};
use crate::plan::{InferPlan, InferRequest, ModelSource, TrainPlan, TrainRequest};
use crate::registry::{Format, Registry};

/// nc7: deep-learning projects as nucleotides wired by configs.
#[derive(Debug, Parser)]
#[command(name = "nc7", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// No progress display and no log lines below warnings.
    #[arg(long, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load a project's configs, resolve every nucleotide, build every handler's DNA helix and
    /// print every problem at once (exit code 1), or a summary of the graph.
    Check(ProjectArgs),
    /// Inspect a project's resolved config.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Describe a registered nucleotide: kind, docs, incoming and generated keys, config fields.
    Info {
        /// Its class name or full path.
        class_name: String,
    },
    /// Print a sample config of a registered nucleotide, every field filled.
    SampleConfig {
        /// Its class name or full path.
        class_name: String,
        /// The file format.
        #[arg(long, value_enum, default_value_t = FormatArg::Json)]
        format: FormatArg,
    },
    /// Write the DOT drawing of each handler's helix to `<run dir>/artifacts/dna_<handler>.dot`.
    Dna(ProjectArgs),
    /// List every registered nucleotide type by kind.
    List,
    /// Match the file list of every dataset and data feeder that has one and write it to
    /// `<run dir>/artifacts/file_list_<nucleotide>.jsonl` (one JSON object per sample).
    FileList(ProjectArgs),
    /// Train a project: train epoch, checkpoint, eval epoch, export, for the configured epochs.
    /// Ctrl-C or SIGTERM stops at the end of the current step with a checkpoint (exit code
    /// 130 or 143); a second one stops at once.
    Train {
        #[command(flatten)]
        overrides: OverrideArgs,
        /// Continue from the newest valid checkpoint (starts fresh when there is none).
        #[arg(long = "continue")]
        resume: bool,
        /// `cpu`, `cuda` or `cuda:N`; overrides the trainer config's `device`.
        #[arg(long)]
        device: Option<String>,
        /// Train data-parallel on several devices, comma-separated (`cpu:0,cpu:1`,
        /// `cuda:0,cuda:1`, `cuda:all`); overrides the trainer config's `devices`.
        #[arg(long, value_delimiter = ',', conflicts_with = "device")]
        devices: Option<Vec<String>>,
        /// `f32`, or mixed precision `f16` / `bf16` (dynamic loss scaling, `f32` master
        /// weights); overrides the trainer config's `precision`.
        #[arg(long)]
        precision: Option<String>,
        /// Compute threads (over the trainer config's `threads`; every core available by
        /// default; shared out between the devices' replicas); results do not depend on it.
        #[arg(long)]
        threads: Option<usize>,
        /// Write a Chrome trace of the run to `training/profile/` (Perfetto, chrome://tracing)
        /// and print the time each part took.
        #[arg(long)]
        profile: bool,
        /// The run's name, for its MLflow run and its experiment row (default: its start,
        /// `20261202-071500`).
        #[arg(long)]
        run_name: Option<String>,
        /// With `--continue`: go on even when the seed, the batch size, the shuffling, the
        /// number of training samples or the number of devices changed since the checkpoint.
        #[arg(long, requires = "resume")]
        accept_changed_order: bool,
        /// With `--continue`: continue from this checkpoint instead of the newest (a name in
        /// `checkpoints/`, `best`, or a path); newer ones move to `checkpoints/abandoned/`.
        #[arg(long, requires = "resume")]
        checkpoint: Option<PathBuf>,
    },
    /// Export the newest (or a chosen) checkpoint to `saved_models/step-<N>/`.
    Export {
        #[command(flatten)]
        overrides: OverrideArgs,
        /// A checkpoint folder (a name in `checkpoints/`, `best` for the best kept, or a path).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Write the procedural shapes data set into a folder as PNG images, PNG masks and JSON
    /// labels (`images/`, `masks/`, `labels/`), to try nc7 on files.
    WriteShapes {
        /// The folder.
        dir: PathBuf,
        /// How many samples.
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// The images' side in pixels.
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// The seed: the same seed writes the same data set.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// List a project's runs (`nc7_project.json`) with their status and final values; `runs
    /// <project> diff A B` shows what differs between two: config values, build and machine,
    /// values.
    Runs(runs::RunsArgs),
    /// Evaluate the KPIs of `kpi_evaluation/configs/kpi/` over the data feeder's samples (for
    /// example an inference run's saved results with their labels), in `kpi_evaluation/run-N/`.
    EvaluateKpi(feed::FeedArgs),
    /// Run the data feeder's samples through the callbacks of `data_extraction/configs/`
    /// without a model (to precompute features or statistics), in `data_extraction/run-N/`.
    ExtractData(feed::FeedArgs),
    /// Run a saved model (the newest, or a chosen one or checkpoint) over the data feeder's
    /// samples with the inference callbacks, in `inference/run-N/`.
    Infer(infer::InferArgs),
}

/// A project's configs and what is layered over them.
#[derive(Debug, Clone, Args)]
struct OverrideArgs {
    /// The project directory.
    project_dir: PathBuf,
    /// An extra config directory laid out like the run's `configs/` (repeatable).
    #[arg(long = "config-dir", value_name = "DIR")]
    config_dirs: Vec<PathBuf>,
    /// Set one config value, such as `trainer.num_epochs=3` (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    set: Vec<String>,
}

impl OverrideArgs {
    /// The config directories and `--set` values over the environment's overrides.
    fn over(&self, env: &Overrides) -> Overrides {
        Overrides {
            config_dirs: self.config_dirs.clone(),
            set: self.set.clone(),
            ..env.clone()
        }
    }
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print every resolved value with the file, variable or argument it came from.
    Explain(ProjectArgs),
}

/// Which project, which run, and what is layered over its configs.
#[derive(Debug, Clone, Args)]
struct ProjectArgs {
    /// The project directory (holding `training/`, `inference/`, ...).
    project_dir: PathBuf,
    /// Which run's configs to read.
    #[arg(long = "type", value_enum, default_value_t = RunType::Train)]
    run: RunType,
    /// An extra config directory laid out like the run's `configs/`, layered on top
    /// (repeatable; later ones win).
    #[arg(long = "config-dir", value_name = "DIR")]
    config_dirs: Vec<PathBuf>,
    /// Set one config value, such as `trainer.batch_size=8` or `plugins.encoder.filters=[8,16]`
    /// (repeatable; applied last, after `NC7_…` environment variables).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    set: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Json,
    Toml,
}

/// Runs the command line of this process and exits with its code: 0 on success, 1 when the
/// project has problems, 2 on a usage error.
pub fn main() -> ExitCode {
    // Before anything reads them: a value nc7 cannot use stops here, named.
    if let Err(e) = crate::environment::check_process() {
        eprintln!("error[{}]: {e}", e.code);
        return ExitCode::from(1);
    }
    init_logging();
    crate::failure::install_panic_hook();
    let tuning = crate::memory::tune_allocator();
    log::debug!("memory allocator: {tuning:?}");
    // The handles, not their locks: a lock held for the whole command would block every log
    // line of the command's other threads (a reading thread's warning hung the command).
    let code = run(
        std::env::args_os(),
        Overrides::default().with_process_env(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    ExitCode::from(code)
}

/// Log records to stderr, as `nc7: …` (info) or `nc7 <level>: …`; the level is `NC7_LOG`
/// (`off`, `error`, `warn`, `info` — the default —, `debug`, `trace`).
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Info => String::new(),
            other => format!(" {}", other.as_str().to_lowercase()),
        };
        eprintln!("nc7{level}: {}", record.args());
    }

    fn flush(&self) {}
}

/// Sends log records to stderr at the level `NC7_LOG` names (info by default).
pub(crate) fn init_logging() {
    static LOGGER: StderrLog = StderrLog;
    let level = std::env::var("NC7_LOG")
        .ok()
        .and_then(|v| v.parse::<log::LevelFilter>().ok())
        .unwrap_or(log::LevelFilter::Info);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Runs one command line. `env` holds the overrides read from the environment (tests pass
/// their own); output goes to `out`, problems to `err`. Returns the exit code.
pub fn run<I, T>(args: I, env: Overrides, out: &mut dyn Write, err: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // The run record keeps the command line this function was given.
    let command: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let to_out = !e.use_stderr();
            let mut text = e.render().to_string();
            if let Some(rest) = text.strip_prefix("error: ") {
                text = format!("error[{}]: {rest}", crate::Code::USAGE);
            }
            let _ = if to_out {
                write!(out, "{text}")
            } else {
                write!(err, "{text}")
            };
            return if to_out { 0 } else { 2 };
        }
    };
    if cli.quiet {
        log::set_max_level(log::LevelFilter::Warn);
    }
    crate::signals::clear();
    match execute(cli.command, env, &command, cli.quiet, out, err) {
        // A run a signal stopped ends with 128 + the signal (130, 143), not success.
        Ok(0) => crate::signals::exit_code().unwrap_or(0),
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "error[{}]: {e}", crate::failure::code_of(&*e));
            1
        }
    }
}

type Failure = Box<dyn std::error::Error>;

/// Writes the file list of each data nucleotide with a `file_list` field; 1 when one fails.
fn write_file_lists(
    parts: &[crate::nucleotide::part::Part],
    dir: &std::path::Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, Failure> {
    use crate::data::{FileList, FileListConfigs};
    let mut code = 0;
    let mut found = false;
    for p in parts {
        let Some(value) = p.config.get("file_list") else {
            continue;
        };
        found = true;
        let listed = serde_json::from_value::<FileListConfigs>(value.clone())
            .map_err(|e| e.to_string())
            .and_then(|c| {
                FileList::build_all(&c, std::path::Path::new(".")).map_err(|e| e.to_string())
            });
        match listed {
            Ok(list) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
                let path = dir.join(format!("file_list_{}.jsonl", p.name));
                std::fs::write(&path, list.to_json_lines())
                    .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
                writeln!(
                    out,
                    "{}: {} samples → {}",
                    p.name,
                    list.len(),
                    path.display()
                )?;
            }
            Err(e) => {
                writeln!(err, "error: `{}` file_list: {e}", p.name)?;
                code = 1;
            }
        }
    }
    if !found {
        writeln!(
            err,
            "no dataset or data feeder of this run has a `file_list`"
        )?;
        code = 1;
    }
    Ok(code)
}

/// Prints the error that ended the command (a plan's: every problem, each with its code;
/// another: `error[NCxxxx]: …`) and gives the exit code 1.
fn refused(e: &dyn crate::failure::Coded, err: &mut dyn Write) -> Result<u8, Failure> {
    crate::failure::report(e, err)?;
    Ok(1)
}

fn execute(
    command: Command,
    env: Overrides,
    command_line: &[String],
    quiet: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, Failure> {
    let registry = Registry::global();
    let overrides_of = |args: &ProjectArgs| Overrides {
        config_dirs: args.config_dirs.clone(),
        set: args.set.clone(),
        ..env.clone()
    };
    let load = |args: &ProjectArgs| {
        ProjectCheck::load(&args.project_dir, args.run, &overrides_of(args), registry)
    };
    let report = |check: &ProjectCheck, err: &mut dyn Write| -> Result<u8, Failure> {
        if check.is_ok() {
            return Ok(0);
        }
        writeln!(err, "{}", check.diagnostics)?;
        Ok(1)
    };
    match command {
        Command::Check(args) => {
            // The same plans `train` and `infer` make, so `check` finds what they would refuse.
            let overrides = overrides_of(&args);
            let summary = match args.run {
                RunType::Train => {
                    let request = TrainRequest {
                        overrides,
                        ..TrainRequest::default()
                    };
                    TrainPlan::load(&args.project_dir, &request, registry)
                        .map(|plan| plan.check.summary())
                }
                RunType::Infer => {
                    let request = InferRequest {
                        overrides,
                        ..InferRequest::default()
                    };
                    InferPlan::load_for_check(&args.project_dir, &request, registry).map(|plan| {
                        let mut summary = plan.check.summary();
                        if matches!(plan.source, ModelSource::TrainingConfigs) {
                            summary.push_str(
                                "\n(no saved model yet: the inference configs were checked against the training configs' model)",
                            );
                        }
                        summary
                    })
                }
                RunType::Kpi | RunType::Data => {
                    let request = crate::plan::FeedRequest {
                        overrides,
                        ..Default::default()
                    };
                    if args.run == RunType::Kpi {
                        crate::plan::KpiPlan::load(&args.project_dir, &request, registry)
                            .map(|plan| plan.feed.check.summary())
                    } else {
                        crate::plan::ExtractPlan::load(&args.project_dir, &request, registry)
                            .map(|plan| plan.feed.check.summary())
                    }
                }
            };
            match summary {
                Ok(summary) => {
                    writeln!(out, "{summary}")?;
                    Ok(0)
                }
                Err(e) => refused(&e, err),
            }
        }
        Command::Config {
            command: ConfigCommand::Explain(args),
        } => {
            let check = load(&args);
            write!(out, "{}", check.config.explain())?;
            report(&check, err)
        }
        Command::Info { class_name } => {
            write!(out, "{}", registry.info(&class_name)?)?;
            Ok(0)
        }
        Command::SampleConfig { class_name, format } => {
            let format = match format {
                FormatArg::Json => Format::Json,
                FormatArg::Toml => Format::Toml,
            };
            write!(out, "{}", registry.sample_config(&class_name, format)?)?;
            Ok(0)
        }
        Command::FileList(args) => {
            let check = load(&args);
            let parts = match crate::plan::data_parts(&check) {
                Ok(parts) => parts,
                Err(e) => return refused(&e, err),
            };
            let dir = args.project_dir.join(args.run.dir_name()).join("artifacts");
            write_file_lists(&parts, &dir, out, err)
        }
        Command::Dna(args) => {
            let check = load(&args);
            let dir = args.project_dir.join(args.run.dir_name()).join("artifacts");
            let files = check.write_dna(&dir).map_err(|e| {
                format!(
                    "cannot write the DNA drawings into `{}`: {e}",
                    dir.display()
                )
            })?;
            for path in files {
                writeln!(out, "wrote {}", path.display())?;
            }
            report(&check, err)
        }
        Command::Train {
            overrides,
            resume,
            device,
            devices,
            precision,
            threads,
            profile,
            run_name,
            accept_changed_order,
            checkpoint,
        } => {
            let device = device
                .map(|d| d.parse::<crate::backend::DeviceChoice>())
                .transpose()?;
            let stop = crate::signals::catch();
            let precision = precision
                .map(|p| p.parse::<crate::precision::Precision>())
                .transpose()?;
            let request = TrainRequest {
                device,
                devices,
                precision,
                threads,
                overrides: overrides.over(&env),
            };
            let plan = match TrainPlan::load(&overrides.project_dir, &request, registry) {
                Ok(plan) => plan,
                Err(e) => return refused(&e, err),
            };
            let options = crate::coordinator::TrainOptions {
                resume,
                checkpoint,
                command: command_line.to_vec(),
                stop,
                max_epochs_this_run: None,
                profile,
                quiet,
                run_name,
                accept_changed_order,
            };
            match crate::coordinator::train(&plan, &options) {
                Ok(r) => {
                    writeln!(
                        out,
                        "trained {} epochs ({} steps){}",
                        r.epochs,
                        r.global_step,
                        r.stopped
                            .as_ref()
                            .map(|s| format!("; {s}"))
                            .unwrap_or_default()
                    )?;
                    if let Some(last) = r.evaluations.last() {
                        let metrics: Vec<String> = last
                            .iter()
                            .filter(|(k, _)| !crate::kpi::is_element(k))
                            .map(|(k, v)| format!("{k} {v:.4}"))
                            .collect();
                        writeln!(out, "last evaluation: {}", metrics.join(", "))?;
                    }
                    if let Some(dir) = r.exports.last() {
                        writeln!(out, "saved model: {}", dir.display())?;
                    }
                    writeln!(
                        out,
                        "summaries: {} (tensorboard --logdir …)",
                        crate::project::TrainingDirs::of(&overrides.project_dir)
                            .root
                            .join("summaries")
                            .display()
                    )?;
                    Ok(0)
                }
                Err(e) => refused(&e, err),
            }
        }
        Command::Export {
            overrides,
            checkpoint,
        } => {
            let request = TrainRequest {
                overrides: overrides.over(&env),
                ..TrainRequest::default()
            };
            let plan = match TrainPlan::load(&overrides.project_dir, &request, registry) {
                Ok(plan) => plan,
                Err(e) => return refused(&e, err),
            };
            match crate::coordinator::export_checkpoint(&plan, checkpoint.as_deref()) {
                Ok(dir) => {
                    writeln!(out, "saved model: {}", dir.display())?;
                    Ok(0)
                }
                Err(e) => refused(&e, err),
            }
        }
        Command::Infer(args) => infer::run_infer(args, &env, command_line, quiet, out, err),
        Command::Runs(args) => runs::run_runs(args, out, err),
        Command::EvaluateKpi(args) => {
            feed::run_feed(RunType::Kpi, args, &env, command_line, quiet, out, err)
        }
        Command::ExtractData(args) => {
            feed::run_feed(RunType::Data, args, &env, command_line, quiet, out, err)
        }
        Command::WriteShapes {
            dir,
            samples,
            size,
            seed,
        } => {
            let config = crate::data::ShapesConfig {
                samples,
                size,
                seed,
                noise: 0.05,
            };
            match crate::data::write_shapes(&dir, &config) {
                Ok(n) => {
                    writeln!(out, "wrote {n} shapes to {}", dir.display())?;
                    Ok(0)
                }
                Err(e) => refused(&e, err),
            }
        }
        Command::List => {
            for e in registry.entries() {
                writeln!(out, "{:<24} {:<20} {}", e.class_name, e.kind, e.path)?;
            }
            Ok(0)
        }
    }
}
