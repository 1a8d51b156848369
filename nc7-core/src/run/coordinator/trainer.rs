//! The trainer: train epoch → checkpoint → eval epoch → export, with summaries, callbacks,
//! exact resume from the newest checkpoint and a clean stop on Ctrl-C. It runs a
//! [`TrainPlan`]: everything it builds comes from the plan, nothing from the project's configs.
//!
//! Exactness: the backend is reseeded from the run's seed and the global step before every
//! step, the data order is a function of seed and epoch, the learning-rate schedule of the
//! step count, and weights and optimizer state are saved at full precision; so a run
//! continued from a checkpoint computes exactly what the uninterrupted run would have.
//!
//! Evaluation values are the data set's: each batch's losses and metrics are weighted by its
//! samples, so a smaller last batch counts for what it holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::prelude::Backend;
use burn::tensor::ElementConversion as _;
use burn::tensor::backend::AutodiffBackend;

use super::checkpoint::{
    Checkpoint, CheckpointError, Checkpoints, WEIGHTS, find_checkpoint, optimizer_file,
};
use super::handlers::Callbacks;
use super::load::load_weights;
use super::monitor::{BestCheckpoint, Evaluation, History, KeepBest, best_file};
use super::schedule::{EvalSteps, Position, train_position};
use crate::backend::{OnDevice, nest_from_inner};
use crate::config::RunType;
use crate::data::{BatchOrder, DataPosition, EpochBatch, for_each_batch};
use crate::gene::Kind;
use crate::handler::BoxError;
use crate::kpi::{KpiEvaluator, KpiTargets};
use crate::model::{
    GradientExchange, Model, Part, StepSettings, TrainModel, from_safetensors, metric_scalars,
    to_safetensors,
};
use crate::nucleotide::{
    CallbackContext, IterationInfo, Mode, RunControl, RunEnd, RunOutcome, SummaryWriter,
};
use crate::optim::Schedule;
use crate::plan::{PlanError, TrainPlan};
use crate::project::{ProjectError, ProjectMetadata, TrainingDirs, write_snapshot};
use crate::runtime::{self, DynDataset};
use crate::tracking::mlflow::{self, MlflowRun};
use crate::tracking::plots::PlotValues;
use crate::tracking::profile::Profiler;

/// The file under `training/plots/` that keeps the plotted values.
const PLOT_VALUES: &str = "values.json";
use crate::tracking::summaries::{write_image, write_images_and_histograms};
use crate::tracking::tensorboard::EventWriter;

mod checkpointing;
mod error;
mod evaluate;
mod export;
mod replicas;

pub use error::TrainError;
use error::{failed, non_finite};
use replicas::{Replicas, ShardValues, StepOrder};

pub use export::export_checkpoint;

/// How to run a training plan.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from the newest checkpoint (`--continue`).
    pub resume: bool,
    /// With `resume`: continue from this checkpoint instead of the newest (`--checkpoint`: a
    /// name in `checkpoints/`, `best`, or a path). Newer checkpoints move to
    /// `checkpoints/abandoned/`.
    pub checkpoint: Option<PathBuf>,
    /// The command line, for the run record.
    pub command: Vec<String>,
    /// Set (by Ctrl-C) to stop at the end of the current step, with a checkpoint.
    pub stop: Arc<AtomicBool>,
    /// Stop after this many epochs of this run (tests of resuming).
    pub max_epochs_this_run: Option<u64>,
    /// Write a Chrome trace (`--profile`; also the trainer config's `profile`).
    pub profile: bool,
    /// No progress display (`--quiet`).
    pub quiet: bool,
    /// Continue even when the seed, the batch size, the shuffling or the number of training
    /// samples changed since the checkpoint (`--accept-changed-order`).
    pub accept_changed_order: bool,
    /// The run's name (`--run-name`): its MLflow run's and its experiment row's; by default
    /// its start, `20261202-071500` (UTC).
    pub run_name: Option<String>,
}

/// What a training run did.
#[derive(Debug, Clone, Default)]
pub struct TrainReport {
    /// Steps trained in all runs.
    pub global_step: u64,
    /// Epochs completed in all runs.
    pub epochs: u64,
    /// The total loss of each step of this run.
    pub losses: Vec<f64>,
    /// The losses and metrics of each evaluation of this run, over the evaluation data.
    pub evaluations: Vec<BTreeMap<String, f64>>,
    /// Saved models written.
    pub exports: Vec<PathBuf>,
    /// Why training stopped before its last epoch, if it did.
    pub stopped: Option<String>,
}

/// Trains a planned project: `train <project_dir>`.
pub fn train(plan: &TrainPlan, options: &TrainOptions) -> Result<TrainReport, TrainError> {
    let _lock = crate::project::ProjectLock::acquire(plan.project(), "train")?;
    let dirs = TrainingDirs::prepare(plan.project(), options.resume)?;
    // What refuses a run is found before the run writes anything into the project: the
    // checkpoint it continues and its evaluation history here, the datasets while the trainer
    // is built; the run's record, config snapshot and DNA drawings come after.
    let continued = if options.resume {
        check_continue(&dirs, options)?
    } else {
        None
    };
    let record = std::sync::OnceLock::new();
    let begin = || -> Result<(), TrainError> {
        let snapshot = write_snapshot(
            &dirs.artifacts,
            RunType::Train,
            &plan.check.config.tree.to_value(),
        )?;
        if let Err(e) = plan.check.write_dna(&dirs.artifacts) {
            log::warn!("the DNA drawings could not be written: {e}");
        }
        let id = ProjectMetadata::start_run(
            plan.project(),
            RunType::Train,
            &dirs.root,
            options.command.clone(),
        )?;
        let _ = record.set(id);
        let _ = ProjectMetadata::set_facts(
            plan.project(),
            id,
            &crate::project::RunFacts {
                config_file: Some(&snapshot),
                device: Some(crate::backend::describe_devices(&plan.devices)),
                threads: Some(plan.threads),
                seed: Some(plan.trainer.random_seed),
            },
        );
        Ok(())
    };
    // The loop computes on the run's threads and waits only for the read-ahead, which
    // computes on its own.
    let threads = crate::threads::Threads::new(plan.replica_threads(), "compute")?;
    let result = threads.run(|| {
        plan.device.dispatch(Training {
            plan,
            options,
            dirs: &dirs,
            continued,
            begin: &begin,
        })
    });
    if let Some(&id) = record.get() {
        let status = ended(&result).record_status();
        let metrics = match &result {
            Ok(r) => r.evaluations.last().cloned().unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        };
        let _ = ProjectMetadata::end_run(plan.project(), id, status, &metrics);
    }
    result
}

/// What `--continue` continues: its checkpoint, verified, and the evaluation history up to it.
struct Continued {
    checkpoint: Checkpoint,
    history: History,
}

/// `--continue`'s checkpoint (`--checkpoint`, else the newest) and history, read once, before
/// anything is written; `None` when there is no checkpoint yet.
fn check_continue(
    dirs: &TrainingDirs,
    options: &TrainOptions,
) -> Result<Option<Continued>, TrainError> {
    let checkpoint = match &options.checkpoint {
        Some(chosen) => find_checkpoint(dirs, Some(chosen))?,
        None => match Checkpoints::new(&dirs.checkpoints, usize::MAX).newest()? {
            Some(cp) => cp,
            None => return Ok(None),
        },
    };
    let history = History::open(&dirs.root, true, checkpoint.global_step)?;
    Ok(Some(Continued {
        checkpoint,
        history,
    }))
}

/// A training run, to be dispatched on the plan's device.
struct Training<'a> {
    plan: &'a TrainPlan,
    options: &'a TrainOptions,
    dirs: &'a TrainingDirs,
    /// What `--continue` continues.
    continued: Option<Continued>,
    /// Records the run's start, once the trainer is built.
    begin: &'a (dyn Fn() -> Result<(), TrainError> + Sync),
}

impl OnDevice for Training<'_> {
    type Output = Result<TrainReport, TrainError>;

    fn run<B: AutodiffBackend>(
        self,
        device: &B::Device,
        inner: &burn::tensor::Device<B::InnerBackend>,
    ) -> Self::Output {
        let mut trainer = Trainer::<B>::new(
            self.plan,
            self.options,
            self.dirs,
            self.continued,
            device,
            inner,
        )?;
        let mlflow = trainer.mlflow.clone();
        let profiler = trainer.profiler.clone();
        // With several devices, the other replicas run on threads of this scope, which ends
        // after the trainer (and its hold on them) is gone.
        let result = std::thread::scope(|scope| {
            if self.plan.devices.len() > 1 {
                trainer.replicas = Some(Replicas::start(
                    scope,
                    self.plan,
                    &trainer.model,
                    device,
                    inner,
                )?);
            }
            (self.begin)()?;
            trainer.run()
        });
        if let Some(p) = profiler {
            let table = p.finish();
            log::info!("profile: {}\n{table}", p.path().display());
        }
        if let Some(run) = mlflow {
            end_tracking(&run, self.dirs, &result);
        }
        result
    }
}

/// The MLflow run of a training: a new one with the config as params and the run's record as
/// tags, or, when a checkpoint continues the run, the run it continues.
fn start_tracking(
    plan: &TrainPlan,
    dirs: &TrainingDirs,
    resumed: bool,
    step: u64,
    run_name: &str,
) -> Option<Arc<MlflowRun>> {
    let tracking = &plan.trainer.tracking;
    let target = mlflow::target(plan.project(), tracking.uri.as_deref())?;
    let keep = dirs.root.join(mlflow::RUN_FILE);
    let experiment = tracking
        .experiment
        .clone()
        .unwrap_or_else(|| crate::project::project_name(plan.project()));
    let run = MlflowRun::start(
        &target,
        plan.project(),
        &experiment,
        run_name,
        resumed.then_some((keep.as_path(), step)),
    )?;
    run.remember(&keep);
    let config = plan.check.config.tree.to_value();
    run.log_params(&mlflow::flatten_config(&config));
    let (commit, dirty) = crate::project::git_state(plan.project());
    if let Some(c) = commit {
        run.set_tag("mlflow.source.git.commit", &c);
    }
    if let Some(d) = dirty {
        run.set_tag("mlflow.source.git.dirty", &d.to_string());
    }
    run.set_tag("nc7.run_type", "train");
    run.set_tag("nc7.seed", &plan.trainer.random_seed.to_string());
    run.set_tag("nc7.device", &plan.device.to_string());
    run.set_tag("nc7.version", env!("CARGO_PKG_VERSION"));
    Some(Arc::new(run))
}

/// Ends a training's MLflow run: the resolved config and the last evaluation as artifacts, and
/// its status (an interrupted run is killed, a failed one failed).
fn end_tracking(run: &MlflowRun, dirs: &TrainingDirs, result: &Result<TrainReport, TrainError>) {
    if let Ok(entries) = std::fs::read_dir(&dirs.artifacts) {
        let mut snapshots: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("_config_train_run"))
            })
            .collect();
        snapshots.sort();
        if let Some(last) = snapshots.last() {
            run.log_artifact(last, "config.json");
        }
    }
    if let Ok(r) = result {
        if let Some(dir) = r.exports.last() {
            run.log_artifact(
                &dir.join(crate::export::EVAL_RESULT),
                crate::export::EVAL_RESULT,
            );
        }
        let plots = dirs.root.join("plots");
        for entry in std::fs::read_dir(&plots).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".svg") || name.ends_with(".png") {
                run.log_artifact(&entry.path(), &format!("plots/{name}"));
            }
        }
    }
    run.end(ended(result).into());
}

/// How a training ended.
fn ended(result: &Result<TrainReport, TrainError>) -> RunEnd {
    RunEnd::of(
        result.is_err(),
        result.as_ref().ok().and_then(|r| r.stopped.as_deref()),
    )
}

/// Where a run stands; what a checkpoint's state holds besides weights and optimizer state.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct RunState {
    global_step: u64,
    epoch: u64,
    data_epoch: u64,
    data_batch: u64,
    seed: u64,
    /// What the data order follows besides the seed (0 / none in older checkpoints: not
    /// compared).
    batch_size: u64,
    train_samples: u64,
    shuffle: Option<bool>,
    /// The devices trained on (0 in older checkpoints: one).
    devices: u64,
    /// Mixed precision's loss scale; none in f32.
    loss_scale: Option<crate::precision::LossScaler>,
}

/// Mixes the run's seed with the step, so that each step's random operations are seeded on
/// their own and a resumed run repeats them.
fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The dataset `part` built on `device`; one without samples is an error naming it.
fn dataset<B: Backend>(
    part: &Part,
    slot: &'static str,
    device: &B::Device,
) -> Result<Box<dyn DynDataset<B>>, TrainError> {
    let d = runtime::dataset::<B>(part.registration, &part.name, &part.config, device).map_err(
        failed(&format!("building the {slot} dataset `{}`", part.name)),
    )?;
    if d.is_empty() {
        return Err(TrainError::EmptyDataset {
            slot,
            name: part.name.clone(),
        });
    }
    Ok(d)
}

/// The plan's model, fresh, on `device`.
fn build_model<B: AutodiffBackend>(
    plan: &TrainPlan,
    device: &B::Device,
) -> Result<TrainModel<B>, crate::handler::BoxError> {
    TrainModel::build(
        plan.model.handler.clone(),
        plan.model.eval_handler.clone(),
        plan.model.parts.clone(),
        plan.model.config.clone(),
        &plan.trainer.optimization_config.optimizer,
        device,
    )
}

/// Loads `weights` (safetensors) and each plugin's optimizer state into `model`; `of` says
/// whose they are in the errors (`the checkpoint's`).
fn load_state<B: AutodiffBackend>(
    model: &mut TrainModel<B>,
    weights: &[u8],
    optimizers: Vec<(String, Vec<u8>)>,
    device: &B::Device,
    of: &str,
) -> Result<(), TrainError> {
    let mut tensors =
        from_safetensors::<B>(weights, device).map_err(failed(&format!("reading {of} weights")))?;
    model
        .load_tensors(&mut tensors, &[])
        .map_err(failed(&format!("loading {of} weights")))?;
    for (plugin, bytes) in optimizers {
        model
            .load_optimizer_state(&plugin, bytes, device)
            .map_err(failed(&format!("loading {of} optimizer state")))?;
    }
    Ok(())
}

/// One mode's data and how it is walked.
struct Stage<B: Backend> {
    data: Box<dyn DynDataset<B>>,
    order: BatchOrder,
    iterations: u64,
    writer: Arc<EventWriter>,
    callbacks: Callbacks<B>,
    ctx: CallbackContext,
}

/// A training run in progress.
struct Trainer<'a, B: AutodiffBackend> {
    plan: &'a TrainPlan,
    options: &'a TrainOptions,
    dirs: &'a TrainingDirs,
    device: B::Device,
    inner: burn::tensor::Device<B::InnerBackend>,
    model: TrainModel<B>,
    train: Stage<B::InnerBackend>,
    eval: Stage<B::InnerBackend>,
    checkpoints: Checkpoints,
    history: History,
    schedule: Schedule,
    state: RunState,
    control: RunControl,
    report: TrainReport,
    /// The MLflow run this training logs to, if tracking is on.
    mlflow: Option<Arc<MlflowRun>>,
    /// The Chrome trace being written, when profiling.
    profiler: Option<Arc<Profiler>>,
    /// The values plotted at every evaluation (`training/plots/`).
    plots: PlotValues,
    /// The names of the samples of the step running, for the error of a panic.
    batch_samples: Vec<String>,
    /// The replicas on the other devices, when there are several.
    replicas: Option<Replicas<B::InnerBackend>>,
}

/// The `file_name`s of a batch's samples, when it has them.
fn sample_names<B: Backend>(batch: &crate::Nest<B>) -> Vec<String> {
    match batch.get("file_name") {
        Some(crate::Nest::List(items)) => items
            .iter()
            .filter_map(|i| match i {
                crate::Nest::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl<'a, B: AutodiffBackend> Trainer<'a, B> {
    /// Builds the model, the data and the callbacks, and continues from the newest checkpoint
    /// when asked (else loads `load_config`'s weights).
    fn new(
        plan: &'a TrainPlan,
        options: &'a TrainOptions,
        dirs: &'a TrainingDirs,
        continued: Option<Continued>,
        device: &B::Device,
        inner: &burn::tensor::Device<B::InnerBackend>,
    ) -> Result<Self, TrainError> {
        let config = &plan.trainer;
        B::seed(device, config.random_seed);
        let mut model = build_model(plan, device).map_err(failed("building the model"))?;
        // `load_config` starts a run that has no checkpoint to continue: its weights are read
        // before anything is written, so a wrong path refuses the run.
        if continued.is_none() && !config.load_config.is_empty() {
            for line in load_weights(&mut model, plan.project(), &config.load_config, device)? {
                log::info!("loaded {line}");
            }
        }
        let control = RunControl::default();
        // Both datasets before anything is written: an empty one refuses the run.
        let train_data = dataset::<B::InnerBackend>(&plan.train_data, "train", inner)?;
        let eval_data = dataset::<B::InnerBackend>(&plan.eval_data, "eval", inner)?;
        let stage = |data: Box<dyn DynDataset<B::InnerBackend>>,
                     mode: Mode,
                     callbacks,
                     summaries: &Path,
                     log_dir: &Path|
         -> Result<Stage<B::InnerBackend>, TrainError> {
            let (batch_size, iterations, shuffle) = match mode {
                Mode::Train => (
                    config.batch_size.train(),
                    config.train_iterations(data.len()),
                    config.shuffle,
                ),
                _ => (
                    config.batch_size.eval(),
                    config.eval_iterations(data.len()),
                    false,
                ),
            };
            let writer = Arc::new(
                EventWriter::create(summaries)
                    .map_err(failed(&format!("creating {}", summaries.display())))?,
            );
            Ok(Stage {
                order: BatchOrder {
                    len: data.len(),
                    batch_size,
                    shuffle,
                    seed: config.random_seed,
                },
                data,
                iterations,
                ctx: CallbackContext {
                    mode,
                    log_dir: log_dir.to_owned(),
                    summaries: writer.clone(),
                    summary_step: 0,
                    iteration: IterationInfo::default(),
                    iterations_per_epoch: iterations as usize,
                    control: control.clone(),
                    run: Default::default(),
                },
                writer,
                callbacks: Callbacks::build(callbacks, inner)?,
            })
        };
        let train = stage(
            train_data,
            Mode::Train,
            &plan.callbacks_train,
            &dirs.summaries_train,
            &dirs.callbacks_train,
        )?;
        let eval = stage(
            eval_data,
            Mode::Eval,
            &plan.callbacks_eval,
            &dirs.summaries_eval,
            &dirs.callbacks_eval,
        )?;
        let train_len = train.data.len() as u64;
        let run_steps = config.num_epochs * config.train_iterations(train.data.len());
        // What interrupted writes left (the project's lock says no other command writes now).
        crate::integrity::remove_leftovers(&dirs.checkpoints);
        crate::integrity::remove_leftovers(&dirs.saved_models);
        let mut trainer = Trainer {
            plan,
            options,
            dirs,
            device: device.clone(),
            inner: inner.clone(),
            model,
            train,
            eval,
            checkpoints: Checkpoints::new(&dirs.checkpoints, config.checkpoints_to_keep),
            // Read below when a checkpoint continues the run.
            history: History::fresh(&dirs.root),
            // The plan built this schedule once already: it cannot fail here.
            schedule: Schedule::new(&config.optimization_config, Some(run_steps))?,
            state: RunState {
                seed: config.random_seed,
                data_epoch: 1,
                batch_size: config.batch_size.train() as u64,
                train_samples: train_len,
                shuffle: Some(config.shuffle),
                devices: plan.devices.len() as u64,
                loss_scale: plan
                    .precision
                    .half()
                    .map(|_| crate::precision::LossScaler::default()),
                ..RunState::default()
            },
            control,
            report: TrainReport::default(),
            mlflow: None,
            profiler: None,
            plots: PlotValues::default(),
            batch_samples: Vec::new(),
            replicas: None,
        };
        let resumed = continued.is_some();
        if let Some(c) = continued {
            trainer.resume(c.checkpoint)?;
            trainer.history = c.history;
        }
        if let Some(keep) = &config.keep_best {
            let best = trainer.history.best(keep)?.map(|b| b.0);
            trainer.checkpoints.protect(best);
        }
        trainer
            .schedule
            .fast_forward(trainer.state.global_step as usize);
        trainer.plots = PlotValues::open(
            &dirs.root.join("plots").join(PLOT_VALUES),
            resumed.then_some(trainer.state.global_step),
        );
        let run_name = options.run_name.clone().unwrap_or_else(|| {
            crate::project::rfc3339(std::time::SystemTime::now())
                .replace(['-', ':'], "")
                .replace('T', "-")
                .trim_end_matches('Z')
                .to_owned()
        });
        trainer.mlflow = start_tracking(plan, dirs, resumed, trainer.state.global_step, &run_name);
        let info = Arc::new(crate::nucleotide::RunInfo {
            name: run_name,
            mlflow_run_id: trainer.mlflow.as_ref().map(|m| m.id.clone()),
            hyperparameters: plan.check.config.overridden(RunType::Train),
        });
        trainer.train.ctx.run = info.clone();
        trainer.eval.ctx.run = info;
        if options.profile || config.profile {
            let path = dirs.root.join("profile").join(format!(
                "train-from-step-{}.json",
                trainer.state.global_step
            ));
            match Profiler::create(&path) {
                Ok(p) => trainer.profiler = Some(Arc::new(p)),
                Err(e) => log::warn!("no profile: {} cannot be written: {e}", path.display()),
            }
        }
        Ok(trainer)
    }

    /// Epochs until the configured number, an early stop, a callback's stop or Ctrl-C; then,
    /// however it ended, the callbacks' `on_run_end`.
    fn run(mut self) -> Result<TrainReport, TrainError> {
        let started = Instant::now();
        // A panic in what the run calls (a nucleotide, burn, a callback) fails the run like an
        // error: named with its step and batch, the run marked failed, its end reported.
        let result = crate::failure::catch(|| self.epochs()).unwrap_or_else(|payload| {
            let step = self.state.global_step + 1;
            let samples = std::mem::take(&mut self.batch_samples);
            match payload.downcast::<crate::data::DataError>() {
                // Raised by a loss or metric that found the data wrong.
                Ok(e) => Err(TrainError::Data(crate::data::DataError::from(format!(
                    "step {step}: {e}{}",
                    error::batch_of(&samples)
                )))),
                Err(payload) => Err(TrainError::Panicked {
                    step,
                    message: error::panic_message(payload.as_ref()),
                    samples,
                }),
            }
        });
        let outcome = RunOutcome {
            status: RunEnd::of(result.is_err(), self.report.stopped.as_deref()),
            reason: match &result {
                Err(e) => Some(e.to_string()),
                Ok(()) => self.report.stopped.clone(),
            },
            step: self.state.global_step,
            metrics: self.report.evaluations.last().cloned().unwrap_or_default(),
            elapsed: started.elapsed(),
        };
        self.train.callbacks.run_end(&outcome, &self.train.ctx);
        self.eval.callbacks.run_end(&outcome, &self.eval.ctx);
        result.map(|()| self.report)
    }

    fn epochs(&mut self) -> Result<(), TrainError> {
        self.train.callbacks.begin(&self.train.ctx)?;
        self.eval.callbacks.begin(&self.eval.ctx)?;
        // A checkpoint at an epoch's end whose evaluation did not happen (the run stopped in
        // between) is evaluated first, as the uninterrupted run did.
        let mut pending_eval = self.options.resume
            && self.state.global_step > 0
            && self.state.global_step.is_multiple_of(self.train.iterations)
            && !self.history.has(self.state.global_step);
        // An evaluation recorded whose saved model was not written (the run stopped while
        // exporting it) is exported now, from the same weights: when no saved model is of
        // this step or a later one.
        if self.options.resume && self.plan.trainer.exports_to_keep > 0 {
            let step = self.state.global_step;
            let newest = crate::export::list(&self.dirs.saved_models)
                .last()
                .map(|e| e.0);
            if let Some(values) = self.history.at(step).cloned()
                && newest.is_none_or(|n| n < step)
            {
                let dir = self.export(&values)?;
                self.report.exports.push(dir);
            }
        }
        let mut epochs_this_run = 0;
        loop {
            if pending_eval {
                let profiler = self.profiler.clone();
                let _span = profiler.as_ref().map(|p| p.span("evaluation", "eval"));
                let evaluation = self.evaluate()?;
                self.after_evaluation(evaluation)?;
            }
            if let Some(reason) = self.stop_reason(epochs_this_run)? {
                if !reason.is_empty() {
                    log::info!("{reason}");
                    self.report.stopped = Some(reason);
                }
                break;
            }
            let epoch_done = self.train_epoch()?;
            if epoch_done {
                self.state.epoch += 1;
                epochs_this_run += 1;
            }
            {
                let profiler = self.profiler.clone();
                let _span = profiler.as_ref().map(|p| p.span("checkpoint", "train"));
                // A signal's stop between regular checkpoints (mid-epoch) writes an interim one.
                let interrupted = self.options.stop.load(Ordering::SeqCst);
                self.checkpoint(interrupted && !epoch_done)?;
            }
            if self.options.stop.load(Ordering::SeqCst) {
                self.report.stopped = Some(crate::signals::stop_reason(&format!(
                    "at step {}; continue with `--continue`",
                    self.state.global_step
                )));
                break;
            }
            pending_eval = epoch_done;
        }
        self.train.callbacks.end(&self.train.ctx)?;
        self.eval.callbacks.end(&self.eval.ctx)?;
        self.train
            .writer
            .flush()
            .map_err(failed("ending the summaries"))?;
        self.eval
            .writer
            .flush()
            .map_err(failed("ending the summaries"))?;
        self.report.global_step = self.state.global_step;
        self.report.epochs = self.state.epoch;
        Ok(())
    }

    /// Why the run stops before the next epoch: `Some("")` when all epochs are done, a reason
    /// when it stops early, `None` when it goes on.
    fn stop_reason(&self, epochs_this_run: u64) -> Result<Option<String>, TrainError> {
        let config = &self.plan.trainer;
        if let Some(stopping) = &config.early_stopping
            && let Some(reason) = self.history.should_stop(stopping)?
        {
            return Ok(Some(reason));
        }
        if let Some(reason) = self.control.stop_requested() {
            return Ok(Some(reason));
        }
        if self.state.epoch >= config.num_epochs {
            return Ok(Some(String::new()));
        }
        if self
            .options
            .max_epochs_this_run
            .is_some_and(|m| epochs_this_run >= m)
        {
            return Ok(Some(format!(
                "stopped after {epochs_this_run} epochs as asked"
            )));
        }
        Ok(None)
    }

    /// The batches of the next epoch, continuing the data order where the last one stopped.
    fn epoch_batches(&self) -> Vec<EpochBatch> {
        let iterations = self.train.iterations;
        let done_in_epoch = self
            .state
            .global_step
            .saturating_sub(self.state.epoch * iterations)
            .min(iterations);
        let mut batches = Vec::new();
        let mut position = DataPosition {
            epoch: self.state.data_epoch,
            batch: self.state.data_batch,
        };
        while (batches.len() as u64) < iterations - done_in_epoch {
            let need = (iterations - done_in_epoch) as usize - batches.len();
            let rest: Vec<Vec<usize>> =
                self.train.order.batches_from(position).take(need).collect();
            position.batch += rest.len() as u64;
            batches.extend(rest.into_iter().map(|b| (position.epoch, b)));
            if position.batch >= self.train.order.batches_per_epoch() {
                position = DataPosition {
                    epoch: position.epoch + 1,
                    batch: 0,
                };
            }
        }
        batches
    }

    /// Trains one epoch (or what is left of it); whether the epoch was completed.
    fn train_epoch(&mut self) -> Result<bool, TrainError> {
        let config = &self.plan.trainer;
        let precision = self.plan.precision;
        let batches = self.epoch_batches();
        self.write_epoch_counts(&batches);
        let progress = progress_bar(
            config.progress_bar && !self.options.quiet,
            batches.len() as u64,
            self.state.epoch + 1,
            config.num_epochs,
        );
        let started = Instant::now();
        let mut failure: Option<TrainError> = None;
        let mut epoch_losses = Vec::new();
        let iterations = self.train.iterations;
        let batches_per_epoch = self.train.order.batches_per_epoch();
        let Trainer {
            model,
            train,
            schedule,
            state,
            report,
            device,
            inner,
            dirs,
            options,
            control,
            mlflow,
            profiler,
            plots,
            batch_samples,
            replicas,
            ..
        } = self;
        let profiler = profiler.as_deref();
        // With several devices, this replica reads and trains its shard of each batch.
        let globals: Vec<usize> = batches.iter().map(|b| b.1.len()).collect();
        let batches = match replicas {
            Some(r) => r.epoch(&batches),
            None => batches,
        };
        let own_sizes: Vec<usize> = batches.iter().map(|b| b.1.len()).collect();
        let mut index = 0;
        // Mixed-precision steps skipped because their gradients overflowed.
        let mut skipped = 0;
        // Samples per second, from one step's end to the next (reading included), for the
        // profile's counter.
        let sizes: Vec<usize> = match profiler {
            Some(_) => globals.clone(),
            None => Vec::new(),
        };
        let mut throughput = (0, Instant::now());
        for_each_batch::<B::InnerBackend, TrainError>(
            train.data.as_ref(),
            batches,
            config.random_seed,
            config.prefetch,
            inner,
            profiler,
            |batch| {
                let _step_span = profiler.map(|p| p.span("step", "train"));
                let step = state.global_step;
                let pos = train_position(step, iterations);
                let last = pos.iteration == iterations;
                let summary = (step + 1).is_multiple_of(config.summary_steps) || last;
                B::seed(device, step_seed(config.random_seed, step));
                let lr = schedule.next_lr();
                let data = batch.clone();
                *batch_samples = sample_names(&data);
                let samples = globals[index];
                index += 1;
                if let Some(r) = replicas.as_mut() {
                    let order = StepOrder {
                        step,
                        lr,
                        summaries: summary,
                        loss_scale: state.loss_scale.map_or(1.0, |s| s.scale),
                    };
                    r.step(order, samples);
                }
                let own_samples = own_sizes[index - 1];
                let settings = StepSettings {
                    lr,
                    clip: config.optimization_config.gradient_clip,
                    want_norm: summary,
                    summaries: summary,
                    profiler,
                    exchange: replicas
                        .as_mut()
                        .map(|r| r as &mut dyn GradientExchange<B::InnerBackend>),
                    half: precision.half().zip(state.loss_scale.map(|s| s.scale)),
                };
                let mut result = match model.train_step(nest_from_inner::<B>(batch), settings) {
                    Ok(r) => r,
                    Err(e) => {
                        let e = TrainError::from(e);
                        return Err(match replicas.as_mut() {
                            Some(r) => r.failure(e),
                            None => e,
                        });
                    }
                };
                // The whole batch's values: every replica's, weighted by its samples.
                let mut scalars_all = None;
                if let Some(r) = replicas.as_mut() {
                    let own = ShardValues {
                        samples: own_samples,
                        loss: result.loss,
                        losses: std::mem::take(&mut result.losses),
                        scalars: if summary {
                            metric_scalars(model.parts(), &result.outputs)
                        } else {
                            BTreeMap::new()
                        },
                    };
                    let all = r.gather(own)?;
                    result.loss = all.loss;
                    result.losses = all.losses;
                    scalars_all = Some(all.scalars);
                }
                if let Some(p) = profiler {
                    p.counter("loss", &[("loss", result.loss)]);
                    let (k, since) = &mut throughput;
                    let now = Instant::now();
                    let seconds = now.duration_since(*since).as_secs_f64().max(1e-9);
                    let rate = sizes.get(*k).map_or(0.0, |&n| n as f64 / seconds);
                    p.counter("samples/s", &[("samples/s", rate)]);
                    (*k, *since) = (*k + 1, now);
                }
                if let Some(scaler) = &mut state.loss_scale
                    && !scaler.update(!result.skipped)
                {
                    skipped += 1;
                }
                if !result.loss.is_finite() {
                    failure = Some(non_finite(&result.losses, result.loss, step, pos, dirs));
                    return Ok(false);
                }
                state.global_step += 1;
                state.data_batch += 1;
                if state.data_batch >= batches_per_epoch {
                    state.data_epoch += 1;
                    state.data_batch = 0;
                }
                report.losses.push(result.loss);
                epoch_losses.push(result.loss);
                progress.inc(1);
                if summary {
                    let _span = profiler.map(|p| p.span("summaries", "train"));
                    let s = pos.summary_step;
                    progress.set_message(format!("loss {:.4}", result.loss));
                    let w = &train.writer;
                    let mut scalars = vec![
                        ("loss".to_owned(), result.loss),
                        ("learning_rate".to_owned(), lr),
                    ];
                    if let Some(n) = result.gradient_norm {
                        scalars.push(("gradient_norm".to_owned(), n));
                    }
                    if let Some(s) = state.loss_scale {
                        scalars.push(("loss_scale".to_owned(), s.scale));
                    }
                    scalars.extend(result.losses.iter().map(|(k, v)| (k.clone(), *v)));
                    scalars.extend(
                        scalars_all
                            .take()
                            .unwrap_or_else(|| metric_scalars(model.parts(), &result.outputs)),
                    );
                    for (k, v) in &scalars {
                        w.scalar(k, *v, s);
                    }
                    plots.add("train", s, scalars.iter().map(|(k, v)| (k.as_str(), *v)));
                    if let Some(run) = mlflow {
                        run.log_metrics(scalars.iter().map(|(k, v)| (format!("train/{k}"), *v)), s);
                    }
                    write_images_and_histograms(w, model.parts(), &result.outputs, s)?;
                }
                train.ctx.summary_step = pos.summary_step;
                train.ctx.iteration = IterationInfo {
                    epoch: pos.epoch as usize,
                    iteration: pos.iteration as usize,
                    execution_time: started.elapsed().as_secs_f64(),
                    is_last: last,
                };
                let _span = profiler.map(|p| p.span("callbacks", "train"));
                train
                    .callbacks
                    .iteration(data, result.outputs, &train.ctx)?;
                Ok(!options.stop.load(Ordering::SeqCst) && control.stop_requested().is_none())
            },
        )?;
        if let Some(r) = replicas.as_mut() {
            r.end_epoch(index < globals.len());
        }
        progress.finish_and_clear();
        if let Some(f) = failure {
            return Err(f);
        }
        let epoch_done = state.global_step.is_multiple_of(iterations)
            && state.global_step > state.epoch * iterations;
        let mean = epoch_losses.iter().sum::<f64>() / epoch_losses.len().max(1) as f64;
        if skipped > 0 {
            log::info!(
                "{skipped} steps skipped: their half-precision gradients overflowed (loss scale now {})",
                state.loss_scale.map_or(1.0, |s| s.scale)
            );
        }
        log::info!(
            "epoch {} of {}: {} steps, mean loss {mean:.6}, {:.3} s",
            state.epoch + u64::from(epoch_done),
            config.num_epochs,
            epoch_losses.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(epoch_done)
    }

    /// For each data epoch that starts among `batches`, how many samples each part of the
    /// training data gives to it (a mix of data sets): to the log and the summaries
    /// (`samples/<part>`, at the epoch's first step).
    fn write_epoch_counts(&self, batches: &[EpochBatch]) {
        let mut epochs: Vec<u64> = batches.iter().map(|b| b.0).collect();
        epochs.dedup();
        let mut step = self.state.global_step;
        for epoch in epochs {
            let starts = epoch != self.state.data_epoch || self.state.data_batch == 0;
            let counts = match starts {
                true => self
                    .train
                    .data
                    .epoch_counts(epoch, self.plan.trainer.random_seed),
                false => BTreeMap::new(),
            };
            if !counts.is_empty() {
                log::info!(
                    "data epoch {epoch}: {}",
                    counts
                        .iter()
                        .map(|(k, v)| format!("{v} from `{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let at = train_position(step, self.train.iterations).summary_step;
                for (part, n) in &counts {
                    self.train
                        .writer
                        .scalar(&format!("samples/{part}"), *n as f64, at);
                }
            }
            step += batches.iter().filter(|b| b.0 == epoch).count() as u64;
        }
    }

    /// Records an evaluation, protects the best checkpoint and exports a saved model.
    fn after_evaluation(&mut self, evaluation: BTreeMap<String, f64>) -> Result<(), TrainError> {
        let config = &self.plan.trainer;
        self.history.push(Evaluation {
            step: self.state.global_step,
            epoch: self.state.epoch,
            values: evaluation.clone(),
        })?;
        if let Some(keep) = &config.keep_best {
            self.keep_best(keep)?;
        }
        if config.exports_to_keep > 0 {
            let dir = self.export(&evaluation)?;
            self.report.exports.push(dir);
        }
        self.report.evaluations.push(evaluation);
        Ok(())
    }

    /// Writes the saved model of the current step, with its evaluation.
    fn export(&self, evaluation: &BTreeMap<String, f64>) -> Result<PathBuf, TrainError> {
        let config = &self.plan.trainer;
        let mut valid = self
            .model
            .valid(&self.inner)
            .map_err(failed("building the model to export"))?;
        Ok(crate::export::SavedModel::write(
            self.plan.project(),
            &self.dirs.saved_models,
            &mut valid,
            self.model.parts(),
            &self.plan.check.config.tree.to_value(),
            self.eval.data.as_ref(),
            config.batch_size.eval(),
            self.state.global_step,
            self.state.epoch,
            Some(evaluation),
            config.exports_to_keep,
        )?
        .dir)
    }
}

/// The epoch's progress bar: drawn on stderr when it is a terminal and `show` is on.
fn progress_bar(show: bool, steps: u64, epoch: u64, epochs: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(steps),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("epoch {epoch}/{epochs}"));
    bar
}
