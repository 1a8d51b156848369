//! The trainer: train epoch → checkpoint → eval epoch → export, with summaries, callbacks,
//! exact resume from the newest checkpoint and a clean stop on Ctrl-C.
//!
//! Exactness: the backend is reseeded from the run's seed and the global step before every
//! step, the data order is a function of seed and epoch, the learning-rate schedule of the
//! step count, and weights and optimizer state are saved at full precision; so a run
//! continued from a checkpoint computes exactly what the uninterrupted run would have.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use serde_json::Value;

use super::checkpoint::Checkpoints;
use super::handlers::{Callbacks, handler, model_parts};
use super::load::load_weights;
use super::monitor::{BestCheckpoint, Evaluation, History, KeepBest, best_file};
use super::schedule::{EvalSteps, train_position};
use super::trainer_config::TrainerConfig;
use crate::backend::{DeviceChoice, nest_from_inner};
use crate::check::ProjectCheck;
use crate::config::{Overrides, RunType};
use crate::data::{BatchOrder, DataPosition, for_each_batch};
use crate::gene::Kind;
use crate::handler::BoxError;
use crate::model::{
    Model, Part, TrainModel, from_safetensors, losses_of, scalars_of, to_safetensors,
};
use crate::nucleotide::{CallbackContext, IterationInfo, Mode, RunControl, SummaryWriter};
use crate::optim::Schedule;
use crate::project::{ProjectMetadata, TrainingDirs, write_snapshot};
use crate::registry::Registry;
use crate::runtime::{self, DynDataset};
use crate::tracking::summaries::write_images_and_histograms;
use crate::tracking::tensorboard::EventWriter;

/// How to train.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from the newest checkpoint (`--continue`).
    pub resume: bool,
    /// `--device`, over the config's.
    pub device: Option<DeviceChoice>,
    /// Config overrides.
    pub overrides: Overrides,
    /// The command line, for the run record.
    pub command: Vec<String>,
    /// Set (by Ctrl-C) to stop at the end of the current step, with a checkpoint.
    pub stop: Arc<AtomicBool>,
    /// Stop after this many epochs of this run (tests of resuming).
    pub max_epochs_this_run: Option<u64>,
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
    /// The mean losses and metrics of each evaluation of this run.
    pub evaluations: Vec<BTreeMap<String, f64>>,
    /// Saved models written.
    pub exports: Vec<PathBuf>,
    /// Why training stopped before its last epoch, if it did.
    pub stopped: Option<String>,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configs have problems.
    #[error("{0}")]
    Check(String),
    /// Anything else, with what was going on.
    #[error("{0}")]
    Run(String),
}

impl From<BoxError> for TrainError {
    fn from(e: BoxError) -> Self {
        TrainError::Run(e.to_string())
    }
}

impl From<String> for TrainError {
    fn from(e: String) -> Self {
        TrainError::Run(e)
    }
}

fn run_err(what: &str) -> impl Fn(String) -> TrainError + '_ {
    move |e| TrainError::Run(format!("{what}: {e}"))
}

/// Loads and checks a project's training configs, and its trainer config.
pub fn load(
    project: &Path,
    overrides: &Overrides,
    registry: &Registry,
) -> Result<(ProjectCheck, TrainerConfig), TrainError> {
    let check = ProjectCheck::load(project, RunType::Train, overrides, registry);
    if check.diagnostics.has_errors() {
        return Err(TrainError::Check(check.diagnostics.to_string()));
    }
    let value = check
        .config
        .tree
        .get("trainer_config")
        .map(|t| t.to_value())
        .unwrap_or(Value::Null);
    let config = TrainerConfig::from_value(&value).map_err(TrainError::Check)?;
    Ok((check, config))
}

/// Trains a project: `train <project_dir>`.
pub fn train(
    project: &Path,
    options: &TrainOptions,
    registry: &Registry,
) -> Result<TrainReport, TrainError> {
    let (check, config) = load(project, &options.overrides, registry)?;
    let device = DeviceChoice::resolve(options.device, &config.device, "trainer_config.device")
        .map_err(TrainError::Check)?;
    let dirs = TrainingDirs::prepare(project, options.resume)
        .map_err(|e| TrainError::Check(e.to_string()))?;
    write_snapshot(
        &dirs.artifacts,
        RunType::Train,
        &check.config.tree.to_value(),
    )
    .map_err(|e| TrainError::Run(e.to_string()))?;
    let record =
        ProjectMetadata::start_run(project, RunType::Train, &dirs.root, options.command.clone())
            .map_err(|e| TrainError::Run(e.to_string()))?;
    let result = match device {
        DeviceChoice::Cpu => run::<crate::backend::CpuTrain>(
            &check,
            &config,
            &dirs,
            options,
            &Default::default(),
            &Default::default(),
        ),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(i) => {
            let d = burn::backend::cuda::CudaDevice::new(i);
            run::<crate::backend::CudaTrain>(&check, &config, &dirs, options, &d, &d)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda(_) => unreachable!("checked by `available`"),
    };
    let status = match &result {
        Ok(r) if r.stopped.is_some() => "stopped",
        Ok(_) => "finished",
        Err(_) => "failed",
    };
    let _ = ProjectMetadata::end_run(project, record, status);
    result
}

/// The datasets, callbacks and handlers of a training run, built.
struct Setup<B: AutodiffBackend> {
    model: TrainModel<B>,
    train_data: Box<dyn DynDataset<B::InnerBackend>>,
    eval_data: Box<dyn DynDataset<B::InnerBackend>>,
    callbacks_train: Callbacks<B::InnerBackend>,
    callbacks_eval: Callbacks<B::InnerBackend>,
}

fn setup<B: AutodiffBackend>(
    check: &ProjectCheck,
    config: &TrainerConfig,
    device: &B::Device,
    inner: &burn::tensor::Device<B::InnerBackend>,
) -> Result<Setup<B>, TrainError> {
    let model_handler = handler(check, "model")
        .ok_or_else(|| TrainError::Check("the project has no model to train".into()))?;
    let eval_handler = handler(check, "model_eval").unwrap_or_else(|| model_handler.clone());
    let parts = model_parts(check).map_err(TrainError::Check)?;
    let model = TrainModel::build(
        model_handler,
        eval_handler,
        parts,
        &config.optimization_config.optimizer,
        device,
    )?;
    // `dataset` refuses one without samples.
    Ok(Setup {
        model,
        train_data: dataset::<B::InnerBackend>(check, "train", inner)?,
        eval_data: dataset::<B::InnerBackend>(check, "eval", inner)?,
        callbacks_train: Callbacks::build(check, "callbacks_train", inner)?,
        callbacks_eval: Callbacks::build(check, "callbacks_eval", inner)?,
    })
}

/// The dataset of `datasets_config`'s `slot` (`train` or `eval`), built on `device`; one
/// without samples is an error naming it.
fn dataset<B: Backend>(
    check: &ProjectCheck,
    slot: &str,
    device: &B::Device,
) -> Result<Box<dyn DynDataset<B>>, TrainError> {
    let e = check
        .nucleotides
        .iter()
        .find(|e| e.section == "datasets_config" && e.slot.as_deref() == Some(slot))
        .ok_or_else(|| TrainError::Check(format!("datasets_config has no `{slot}` dataset")))?;
    let parts = Part::from_entries([e]).map_err(TrainError::Check)?;
    let p = &parts[0];
    let d = runtime::dataset::<B>(p.registration, &p.name, &p.config, device)
        .map_err(|e| TrainError::Run(e.to_string()))?;
    if d.is_empty() {
        return Err(TrainError::Check(format!(
            "the {slot} dataset `{}` has no samples",
            p.name
        )));
    }
    Ok(d)
}

/// Where a run stands; what a checkpoint's state holds besides weights and optimizer state.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
struct RunState {
    global_step: u64,
    epoch: u64,
    data_epoch: u64,
    data_batch: u64,
    seed: u64,
}

pub(crate) const WEIGHTS: &str = "model.safetensors";

fn optimizer_file(plugin: &str) -> String {
    format!("optimizer-{plugin}.bin")
}

/// Mixes the run's seed with the step, so that each step's random operations are seeded on
/// their own and a resumed run repeats them.
fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn run<B: AutodiffBackend>(
    check: &ProjectCheck,
    config: &TrainerConfig,
    dirs: &TrainingDirs,
    options: &TrainOptions,
    device: &B::Device,
    inner: &burn::tensor::Device<B::InnerBackend>,
) -> Result<TrainReport, TrainError> {
    B::seed(device, config.random_seed);
    let Setup {
        mut model,
        train_data,
        eval_data,
        mut callbacks_train,
        mut callbacks_eval,
    } = setup::<B>(check, config, device, inner)?;
    let mut checkpoints = Checkpoints::new(&dirs.checkpoints, config.checkpoints_to_keep);
    let mut state = RunState {
        seed: config.random_seed,
        data_epoch: 1,
        ..RunState::default()
    };
    let resumed = options.resume && resume(&mut model, &checkpoints, &mut state, device)?;
    if !resumed && !config.load_config.is_empty() {
        for line in load_weights(&mut model, &check.project, &config.load_config, device)
            .map_err(TrainError::Check)?
        {
            log::info!("loaded {line}");
        }
    }
    let mut history =
        History::open(&dirs.root, resumed, state.global_step).map_err(TrainError::Run)?;
    if let Some(keep) = &config.keep_best {
        checkpoints.protect(history.best(keep).map_err(TrainError::Check)?.map(|b| b.0));
    }
    let mut schedule = Schedule::new(&config.optimization_config)
        .map_err(|e| TrainError::Check(format!("trainer_config.optimization_config.{e}")))?;
    schedule.fast_forward(state.global_step as usize);
    let train_order = BatchOrder {
        len: train_data.len(),
        batch_size: config.batch_size.train(),
        shuffle: config.shuffle,
        seed: config.random_seed,
    };
    let eval_order = BatchOrder {
        len: eval_data.len(),
        batch_size: config.batch_size.eval(),
        shuffle: false,
        seed: config.random_seed,
    };
    let train_iterations = config.train_iterations(train_data.len());
    let eval_iterations = config.eval_iterations(eval_data.len());
    let train_writer: Arc<EventWriter> = Arc::new(
        EventWriter::create(&dirs.summaries_train).map_err(|e| TrainError::Run(e.to_string()))?,
    );
    let eval_writer: Arc<EventWriter> = Arc::new(
        EventWriter::create(&dirs.summaries_eval).map_err(|e| TrainError::Run(e.to_string()))?,
    );
    let mut report = TrainReport::default();
    let clip = config.optimization_config.gradient_clip;
    let mut epochs_this_run = 0;
    let control = RunControl::default();
    let ctx =
        |mode: Mode, writer: Arc<EventWriter>, log_dir: &Path, iterations: u64| CallbackContext {
            mode,
            log_dir: log_dir.to_owned(),
            summaries: writer,
            summary_step: 0,
            iteration: IterationInfo::default(),
            iterations_per_epoch: iterations as usize,
            control: control.clone(),
        };
    let mut train_ctx = ctx(
        Mode::Train,
        train_writer.clone(),
        &dirs.callbacks_train,
        train_iterations,
    );
    let mut eval_ctx = ctx(
        Mode::Eval,
        eval_writer.clone(),
        &dirs.callbacks_eval,
        eval_iterations,
    );
    callbacks_train.begin(&train_ctx)?;
    callbacks_eval.begin(&eval_ctx)?;
    // A checkpoint at an epoch's end whose evaluation did not happen (the run stopped in
    // between) is evaluated first, as the uninterrupted run did.
    let mut pending_eval = resumed
        && state.global_step > 0
        && state.global_step.is_multiple_of(train_iterations)
        && !history.has(state.global_step);
    loop {
        if pending_eval {
            let evaluation = evaluate::<B>(
                &model,
                eval_data.as_ref(),
                &eval_order,
                eval_iterations,
                train_iterations,
                state.global_step,
                inner,
                &eval_writer,
                &mut callbacks_eval,
                &mut eval_ctx,
                config.prefetch,
            )?;
            history
                .push(Evaluation {
                    step: state.global_step,
                    epoch: state.epoch,
                    values: evaluation.clone(),
                })
                .map_err(TrainError::Run)?;
            if let Some(keep) = &config.keep_best {
                keep_best(&mut checkpoints, &dirs.checkpoints, &history, keep)?;
            }
            if config.exports_to_keep > 0 {
                let mut valid = model.valid(inner)?;
                let dir = crate::export::export(
                    &check.project,
                    &dirs.saved_models,
                    &mut valid,
                    model.parts(),
                    &check.config.tree.to_value(),
                    eval_data.as_ref(),
                    config.batch_size.eval(),
                    state.global_step,
                    state.epoch,
                    Some(&evaluation),
                    config.exports_to_keep,
                )
                .map_err(TrainError::Run)?;
                report.exports.push(dir);
            }
            report.evaluations.push(evaluation);
        }
        if let Some(stopping) = &config.early_stopping
            && let Some(reason) = history.should_stop(stopping).map_err(TrainError::Check)?
        {
            log::info!("{reason}");
            report.stopped = Some(reason);
            break;
        }
        if let Some(reason) = control.stop_requested() {
            log::info!("stopped: {reason}");
            report.stopped = Some(reason);
            break;
        }
        if state.epoch >= config.num_epochs {
            break;
        }
        if options
            .max_epochs_this_run
            .is_some_and(|m| epochs_this_run >= m)
        {
            report.stopped = Some(format!("stopped after {epochs_this_run} epochs as asked"));
            break;
        }
        // The batches of this epoch, continuing the data order where the last one stopped.
        let done_in_epoch = state.global_step - state.epoch * train_iterations;
        let mut batches = Vec::new();
        let mut position = DataPosition {
            epoch: state.data_epoch,
            batch: state.data_batch,
        };
        while (batches.len() as u64) < train_iterations - done_in_epoch {
            let need = (train_iterations - done_in_epoch) as usize - batches.len();
            let rest: Vec<Vec<usize>> = train_order.batches_from(position).take(need).collect();
            position.batch += rest.len() as u64;
            batches.extend(rest);
            if position.batch >= train_order.batches_per_epoch() {
                position = DataPosition {
                    epoch: position.epoch + 1,
                    batch: 0,
                };
            }
        }
        let progress = progress_bar(
            config.progress_bar,
            batches.len() as u64,
            state.epoch + 1,
            config.num_epochs,
        );
        let started = Instant::now();
        let mut failure: Option<TrainError> = None;
        let mut epoch_losses = Vec::new();
        for_each_batch::<B::InnerBackend, TrainError>(
            train_data.as_ref(),
            batches,
            config.prefetch,
            inner,
            |batch| {
                let step = state.global_step;
                let pos = train_position(step, train_iterations);
                let last = pos.iteration == train_iterations;
                let summary = (step + 1).is_multiple_of(config.summary_steps) || last;
                B::seed(device, step_seed(config.random_seed, step));
                let lr = schedule.next_lr();
                let data = batch.clone();
                let result =
                    model.train_step(nest_from_inner::<B>(batch), lr, clip, summary, summary)?;
                if !result.loss.is_finite() {
                    failure = Some(non_finite(&result.losses, result.loss, step, pos, dirs));
                    return Ok(false);
                }
                state.global_step += 1;
                state.data_batch += 1;
                if state.data_batch >= train_order.batches_per_epoch() {
                    state.data_epoch += 1;
                    state.data_batch = 0;
                }
                report.losses.push(result.loss);
                epoch_losses.push(result.loss);
                progress.inc(1);
                if summary {
                    let s = pos.summary_step;
                    progress.set_message(format!("loss {:.4}", result.loss));
                    train_writer.scalar("loss", result.loss, s);
                    train_writer.scalar("learning_rate", lr, s);
                    if let Some(n) = result.gradient_norm {
                        train_writer.scalar("gradient_norm", n, s);
                    }
                    for (k, v) in &result.losses {
                        train_writer.scalar(k, *v, s);
                    }
                    for (k, v) in scalars_of(
                        model.parts(),
                        &[Kind::ModelMetric, Kind::ModelSummary],
                        &result.outputs,
                    ) {
                        train_writer.scalar(&k, v, s);
                    }
                    write_images_and_histograms(&train_writer, model.parts(), &result.outputs, s)
                        .map_err(TrainError::Run)?;
                }
                train_ctx.summary_step = pos.summary_step;
                train_ctx.iteration = IterationInfo {
                    epoch: pos.epoch as usize,
                    iteration: pos.iteration as usize,
                    execution_time: started.elapsed().as_secs_f64(),
                    is_last: last,
                };
                callbacks_train.iteration(data, result.outputs, &train_ctx)?;
                Ok(!options.stop.load(Ordering::SeqCst) && control.stop_requested().is_none())
            },
        )?;
        progress.finish_and_clear();
        if let Some(f) = failure {
            return Err(f);
        }
        let interrupted = options.stop.load(Ordering::SeqCst);
        let epoch_done = state.global_step.is_multiple_of(train_iterations)
            && state.global_step > state.epoch * train_iterations;
        if epoch_done {
            state.epoch += 1;
            epochs_this_run += 1;
        }
        save_checkpoint(&model, &checkpoints, &state)?;
        let mean = epoch_losses.iter().sum::<f64>() / epoch_losses.len().max(1) as f64;
        log::info!(
            "epoch {} of {}: {} steps, mean loss {mean:.6}, {:.1} s",
            state.epoch,
            config.num_epochs,
            epoch_losses.len(),
            started.elapsed().as_secs_f64()
        );
        if interrupted {
            report.stopped = Some(format!(
                "interrupted at step {}; continue with `--continue`",
                state.global_step
            ));
            break;
        }
        pending_eval = epoch_done;
    }
    callbacks_train.end(&train_ctx)?;
    callbacks_eval.end(&eval_ctx)?;
    train_writer.flush().map_err(TrainError::Run)?;
    eval_writer.flush().map_err(TrainError::Run)?;
    report.global_step = state.global_step;
    report.epochs = state.epoch;
    Ok(report)
}

/// Loads the newest checkpoint into `model` and `state`; whether there was one.
fn resume<B: AutodiffBackend>(
    model: &mut TrainModel<B>,
    checkpoints: &Checkpoints,
    state: &mut RunState,
    device: &B::Device,
) -> Result<bool, TrainError> {
    let Some(cp) = checkpoints
        .newest()
        .map_err(|e| TrainError::Run(e.to_string()))?
    else {
        return Ok(false);
    };
    let weights = std::fs::read(cp.file(WEIGHTS))
        .map_err(|e| TrainError::Run(format!("{}: {e}", cp.file(WEIGHTS).display())))?;
    let mut tensors =
        from_safetensors::<B>(&weights, device).map_err(run_err("checkpoint weights"))?;
    model
        .load_tensors(&mut tensors, &[])
        .map_err(run_err("checkpoint weights"))?;
    for p in model
        .parts()
        .iter()
        .filter(|p| p.kind == Kind::ModelPlugin)
        .map(|p| p.name.clone())
        .collect::<Vec<_>>()
    {
        let path = cp.file(&optimizer_file(&p));
        let bytes = std::fs::read(&path)
            .map_err(|e| TrainError::Run(format!("{}: {e}", path.display())))?;
        model
            .load_optimizer_state(&p, bytes, device)
            .map_err(run_err("checkpoint optimizer state"))?;
    }
    *state = serde_json::from_value(cp.state.clone())
        .map_err(|e| TrainError::Run(format!("checkpoint state: {e}")))?;
    log::info!(
        "continuing from {} (step {})",
        cp.dir.display(),
        state.global_step
    );
    Ok(true)
}

/// The error of a non-finite loss: the step, where it is in the run, the loss keys at fault.
fn non_finite(
    losses: &BTreeMap<String, f64>,
    loss: f64,
    step: u64,
    pos: super::schedule::Position,
    dirs: &TrainingDirs,
) -> TrainError {
    let bad: Vec<String> = losses
        .iter()
        .filter(|(_, v)| !v.is_finite())
        .map(|(k, _)| format!("`{k}`"))
        .collect();
    TrainError::Run(format!(
        "the loss is not finite at step {} (epoch {}, iteration {}): {} is {loss}; training stopped, the last good checkpoint is kept in {}",
        step + 1,
        pos.epoch,
        pos.iteration,
        if bad.is_empty() {
            "the total loss".to_owned()
        } else {
            bad.join(", ")
        },
        dirs.checkpoints.display()
    ))
}

/// Protects the best evaluation's checkpoint and names it in `checkpoints/best.json`.
fn keep_best(
    checkpoints: &mut Checkpoints,
    checkpoints_dir: &Path,
    history: &History,
    keep: &KeepBest,
) -> Result<(), TrainError> {
    let Some((step, value)) = history.best(keep).map_err(TrainError::Check)? else {
        return Ok(());
    };
    checkpoints.protect(Some(step));
    let best = BestCheckpoint {
        checkpoint: Checkpoints::name_of(step),
        step,
        monitor: keep.monitor.clone(),
        value,
    };
    let file = best_file(checkpoints_dir);
    let text = serde_json::to_vec_pretty(&best).expect("best checkpoints serialize");
    crate::project::replace_file(&file, &text)
        .map_err(|e| TrainError::Run(format!("cannot write {}: {e}", file.display())))
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

fn save_checkpoint<B: AutodiffBackend>(
    model: &TrainModel<B>,
    checkpoints: &Checkpoints,
    state: &RunState,
) -> Result<(), TrainError> {
    let weights = to_safetensors(model.tensors(), None).map_err(run_err("saving weights"))?;
    let optimizers = model
        .optimizer_states()
        .map_err(run_err("saving optimizer state"))?;
    let names: Vec<String> = optimizers.iter().map(|(p, _)| optimizer_file(p)).collect();
    let mut files: Vec<(&str, &[u8])> = vec![(WEIGHTS, &weights)];
    for (name, (_, bytes)) in names.iter().zip(&optimizers) {
        files.push((name, bytes));
    }
    checkpoints
        .save(
            state.global_step,
            state.epoch,
            &files,
            &serde_json::to_value(state).expect("run states serialize"),
        )
        .map_err(|e| TrainError::Run(e.to_string()))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn evaluate<B: AutodiffBackend>(
    model: &TrainModel<B>,
    data: &dyn DynDataset<B::InnerBackend>,
    order: &BatchOrder,
    iterations: u64,
    train_iterations: u64,
    global_step: u64,
    device: &burn::tensor::Device<B::InnerBackend>,
    writer: &Arc<EventWriter>,
    callbacks: &mut Callbacks<B::InnerBackend>,
    ctx: &mut CallbackContext,
    prefetch: usize,
) -> Result<BTreeMap<String, f64>, TrainError> {
    let mut valid = model.valid(device)?;
    let parts = model.parts().to_vec();
    let mut steps = EvalSteps::new(iterations, train_iterations);
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let batches: Vec<Vec<usize>> = order
        .batches_from(DataPosition { epoch: 1, batch: 0 })
        .take(iterations as usize)
        .collect();
    let started = Instant::now();
    for_each_batch::<B::InnerBackend, TrainError>(data, batches, prefetch, device, |batch| {
        let pos = steps.next(global_step);
        let outputs = valid
            .run(batch.clone(), Mode::Eval)
            .map_err(|e| TrainError::Run(e.to_string()))?
            .into_map();
        let mut values = BTreeMap::new();
        if let Ok((total, losses)) = losses_of(&parts, &outputs) {
            values.insert("loss".to_owned(), total.into_scalar().elem::<f64>());
            values.extend(losses);
        }
        values.extend(scalars_of(
            &parts,
            &[Kind::ModelMetric, Kind::ModelSummary],
            &outputs,
        ));
        if pos.iteration == 1 {
            // Images and histograms of the first batch.
            write_images_and_histograms(writer, &parts, &outputs, global_step)
                .map_err(TrainError::Run)?;
        }
        for (k, v) in values {
            let e = sums.entry(k).or_insert((0.0, 0));
            e.0 += v;
            e.1 += 1;
        }
        ctx.summary_step = pos.summary_step;
        ctx.iteration = IterationInfo {
            epoch: pos.epoch as usize,
            iteration: pos.iteration as usize,
            execution_time: started.elapsed().as_secs_f64(),
            is_last: pos.iteration == iterations,
        };
        callbacks.iteration(batch, outputs, ctx)?;
        Ok(true)
    })?;
    let means: BTreeMap<String, f64> = sums
        .into_iter()
        .map(|(k, (s, n))| (k, s / n.max(1) as f64))
        .collect();
    for (k, v) in &means {
        writer.scalar(k, *v, global_step);
    }
    log::info!(
        "evaluation after step {global_step}: {}",
        means
            .iter()
            .map(|(k, v)| format!("{k} {v:.6}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(means)
}

use burn::tensor::ElementConversion as _;

/// Writes a saved model from a checkpoint: `export <project_dir> [--checkpoint …]`.
pub fn export_checkpoint(
    project: &Path,
    checkpoint: Option<&Path>,
    overrides: &Overrides,
    registry: &Registry,
) -> Result<PathBuf, TrainError> {
    type B = crate::backend::Cpu;
    let (check, config) = load(project, overrides, registry)?;
    let dirs = TrainingDirs::of(project);
    let cp = find_checkpoint(&dirs, checkpoint).map_err(TrainError::Run)?;
    let device = Default::default();
    B::seed(&device, config.random_seed);
    let model_handler = handler(&check, "model_eval")
        .or_else(|| handler(&check, "model"))
        .ok_or_else(|| TrainError::Check("the project has no model".into()))?;
    let parts = model_parts(&check).map_err(TrainError::Check)?;
    let mut model = Model::<B>::build(model_handler, &parts, &device)?;
    let mut weights =
        crate::model::read_safetensors::<B>(&cp.file(WEIGHTS), &device).map_err(TrainError::Run)?;
    model
        .load_tensors(&mut weights, &[])
        .map_err(run_err("checkpoint weights"))?;
    let data = dataset::<B>(&check, "eval", &device)?;
    crate::export::export(
        project,
        &dirs.saved_models,
        &mut model,
        &parts,
        &check.config.tree.to_value(),
        data.as_ref(),
        config.batch_size.eval(),
        cp.global_step,
        cp.epoch,
        None,
        config.exports_to_keep.max(1),
    )
    .map_err(TrainError::Run)
}

/// The checkpoint `--checkpoint` names: `best` (the one `checkpoints/best.json` names), a
/// folder name in `checkpoints/`, or a path; the newest valid one when `None`.
pub(crate) fn find_checkpoint(
    dirs: &TrainingDirs,
    checkpoint: Option<&Path>,
) -> Result<super::Checkpoint, String> {
    let checkpoints = Checkpoints::new(&dirs.checkpoints, usize::MAX);
    match checkpoint {
        Some(dir) if dir == Path::new("best") && !dir.exists() => {
            let file = best_file(&dirs.checkpoints);
            let best: BestCheckpoint = std::fs::read(&file)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                .map_err(|e| {
                    format!(
                        "--checkpoint best: cannot read {} ({e}); it is written when trainer_config.keep_best is set",
                        file.display()
                    )
                })?;
            checkpoints.load(&dirs.checkpoints.join(best.checkpoint))
        }
        Some(dir) => {
            let dir = if dir.is_absolute() || dir.exists() {
                dir.to_owned()
            } else {
                dirs.checkpoints.join(dir)
            };
            checkpoints.load(&dir)
        }
        None => checkpoints.newest().and_then(|c| {
            c.ok_or_else(|| super::checkpoint::CheckpointError::Io {
                action: "find a checkpoint in",
                path: dirs.checkpoints.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no checkpoint; train first",
                ),
            })
        }),
    }
    .map_err(|e| e.to_string())
}
