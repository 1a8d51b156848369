//! The inferer: runs a saved model (or a checkpoint) over a data feeder's samples and hands
//! each iteration's data and outputs to the callbacks, in `inference/run-N/`.
//!
//! Reading (the data feeder and batching), prediction and the callbacks run on three threads
//! joined by bounded channels, so that on a machine with spare cores they overlap; or in one
//! thread (`--single-thread`). Each stage may run `prefetch_buffer_size` iterations ahead of the
//! next. An error on any thread stops the others, is reported once, and the callbacks' `end`
//! still runs so that what they hold is written. The last iteration is known because the
//! reader reads one iteration ahead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use serde_json::Value;

use super::handlers::{CallbackError, Callbacks};
use crate::Code;
use crate::backend::OnDevice;
use crate::config::RunType;
use crate::data::{BatchError, Collator};
use crate::data::{collate, concat};
use crate::export::describe;
use crate::failure::{Fault, code_of, code_or};
use crate::kpi::{KpiError, KpiEvaluator, KpiEvaluatorPlan, KpiTargets};
use crate::model::{Model, Part};
use crate::nest::Nest;
use crate::nucleotide::SummaryWriter as _;
use crate::nucleotide::{CallbackContext, IterationInfo, Mode, RunControl};
use crate::plan::{
    CallbacksPlan, ExtractPlan, FeedPlan, InferPlan, InferSettings, KpiPlan, ModelPlan,
    ModelSource, PlanError,
};
use crate::project::{InferenceRun, ProjectError, ProjectMetadata, TrainingDirs, write_snapshot};
use crate::runtime::{self, DynFeeder};
use crate::threads::Threads;
use crate::tracking::mlflow::MlflowRun;
use crate::tracking::summaries::write_image;
use crate::tracking::tensorboard::EventWriter;

mod queue;
mod signature;
mod sink;
mod stages;
use signature::*;
use sink::*;
use stages::*;

/// How to run an inference plan.
#[derive(Debug, Clone, Default)]
pub struct InferOptions {
    /// `--run-name`: the run folder's name instead of the next `run-N`.
    pub run_name: Option<String>,
    /// The command line, for the run record.
    pub command: Vec<String>,
    /// No progress display (`--quiet`).
    pub quiet: bool,
    /// Set, the run stops after its current iteration as if a callback asked it to (the
    /// command line sets it on SIGINT and SIGTERM).
    pub stop: Option<Arc<AtomicBool>>,
}

/// What an inference, KPI evaluation or data extraction run did.
#[derive(Debug, Clone)]
pub struct InferReport {
    /// The run's folders.
    pub run: InferenceRun,
    /// The saved model or checkpoint that ran (none in runs without a model).
    pub model: Option<PathBuf>,
    /// Iterations run.
    pub iterations: u64,
    /// Samples run.
    pub samples: u64,
    /// The samples skipped as bad (`--skip-bad-samples`), each with its error.
    pub skipped: Vec<String>,
    /// Why the run stopped before the data ended, if a callback asked it to.
    pub stopped: Option<String>,
    /// Seconds from the first read to the last callback.
    pub seconds: f64,
    /// Seconds each stage worked (reading, prediction, callbacks and KPIs), waits left out:
    /// with threads, the slowest stage bounds the run.
    pub stage_seconds: [f64; 3],
    /// The KPIs, by name (`kpi/<accumulator>/<key>`); empty without KPI configs.
    pub kpi: BTreeMap<String, f64>,
}

/// Why inference failed.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The configs, the options or the model do not fit: every problem, with its file.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The project's folders cannot be used as asked.
    #[error(transparent)]
    Project(#[from] ProjectError),
    /// The plan has no weights to run (`check --type infer` on a project without a saved
    /// model plans one, which cannot run).
    #[error("no saved model to run in {}: train the project first, or export a checkpoint", dir.display())]
    NoWeights {
        /// The saved models folder.
        dir: PathBuf,
    },
    /// The weights cannot be read or do not fit the model.
    #[error(transparent)]
    Weights(#[from] crate::model::WeightsError),
    /// A callback could not be built, or failed at its start or end.
    #[error(transparent)]
    Callback(#[from] CallbackError),
    /// A KPI nucleotide could not be built or its KPIs not written.
    #[error(transparent)]
    Kpi(#[from] KpiError),
    /// The run's compute threads cannot be started.
    #[error(transparent)]
    Threads(#[from] crate::threads::ThreadsError),
    /// The model, the data or a callback failed while running; the message names it.
    #[error("{0}")]
    Run(Fault),
}

/// Runs an inference plan: `infer <project_dir>`.
pub fn infer(plan: &InferPlan, options: &InferOptions) -> Result<InferReport, InferError> {
    let (weights, model_dir, inputs) = match &plan.source {
        ModelSource::Saved(saved) => (&saved.weights, &saved.dir, Some(&saved.inputs[..])),
        ModelSource::Checkpoint { dir, weights } => (weights, dir, None),
        ModelSource::TrainingConfigs => {
            return Err(InferError::NoWeights {
                dir: TrainingDirs::of(plan.project()).saved_models,
            });
        }
    };
    let model = ModelRun {
        plan: &plan.model,
        weights,
        dir: model_dir,
        inputs,
    };
    let mut report = run_pipeline(
        &plan.check,
        RunType::Infer,
        &plan.snapshot,
        options,
        Pipeline {
            feeder: &plan.feeder,
            settings: &plan.settings,
            model: Some(model),
            callbacks: &plan.callbacks,
            kpi: plan.kpi.as_ref(),
        },
        (plan.device, plan.threads),
    )?;
    report.model = Some(model_dir.clone());
    Ok(report)
}

/// Runs a KPI evaluation plan: `evaluate-kpi <project_dir>`. The KPIs go to the run's
/// `results/`, its summaries and the report.
pub fn evaluate_kpi(plan: &KpiPlan, options: &InferOptions) -> Result<InferReport, InferError> {
    run_feed(&plan.feed, Some(&plan.kpi), options)
}

/// Runs a data extraction plan: `extract-data <project_dir>`, the data feeder's samples through
/// the callbacks, without a model.
pub fn extract_data(plan: &ExtractPlan, options: &InferOptions) -> Result<InferReport, InferError> {
    run_feed(&plan.feed, None, options)
}

fn run_feed(
    plan: &FeedPlan,
    kpi: Option<&KpiEvaluatorPlan>,
    options: &InferOptions,
) -> Result<InferReport, InferError> {
    run_pipeline(
        &plan.check,
        plan.run,
        &plan.snapshot,
        options,
        Pipeline {
            feeder: &plan.feeder,
            settings: &plan.settings,
            model: None,
            callbacks: &plan.callbacks,
            kpi,
        },
        (plan.device, plan.threads),
    )
}

/// Where a run's KPIs go: its results folder (`results/kpi/` in inference, whose results are
/// the callbacks'), and the cache the runs of its type share (`<run type dir>/kpi_cache/`).
fn kpi_targets(project: &Path, run_type: RunType, run: &InferenceRun) -> KpiTargets {
    KpiTargets {
        results: match run_type {
            RunType::Infer => run.results.join("kpi"),
            _ => run.results.clone(),
        },
        cache: Some(project.join(run_type.dir_name()).join("kpi_cache")),
    }
}

/// Makes the run's folder, records the run and its config, and runs the pipeline on `device`
/// with `threads` compute threads.
fn run_pipeline(
    check: &crate::check::ProjectCheck,
    run_type: RunType,
    snapshot: &Value,
    options: &InferOptions,
    pipeline: Pipeline<'_>,
    (device, threads): (crate::backend::DeviceChoice, usize),
) -> Result<InferReport, InferError> {
    let project = check.project.as_path();
    let compute = Threads::new(threads, "compute")?;
    let _lock = crate::project::ProjectLock::acquire(project, run_type.short())?;
    let run = InferenceRun::create_for(project, run_type, options.run_name.as_deref())?;
    let snapshot_file = write_snapshot(&run.artifacts, run_type, snapshot)?;
    if let Err(e) = check.write_dna(&run.artifacts) {
        log::warn!("the DNA drawings could not be written: {e}");
    }
    let record = ProjectMetadata::start_run(project, run_type, &run.dir, options.command.clone())?;
    let _ = ProjectMetadata::set_facts(
        project,
        record,
        &crate::project::RunFacts {
            config_file: Some(&snapshot_file),
            device: Some(device.to_string()),
            threads: Some(threads),
            seed: None,
        },
    );
    let tracking = crate::tracking::mlflow::target(project, None).and_then(|target| {
        MlflowRun::start(
            &target,
            project,
            &crate::project::project_name(project),
            &format!("{}/{}", run_type.dir_name(), run.name),
            None,
        )
    });
    if let Some(t) = &tracking {
        t.log_params(&crate::tracking::mlflow::flatten_config(snapshot));
        t.set_tag("nc7.run_type", run_type.short());
        t.set_tag("nc7.run_dir", &run.dir.display().to_string());
    }
    let result = device.dispatch(OnRun {
        compute,
        kpi: kpi_targets(project, run_type, &run),
        pipeline,
        run: &run,
        run_info: crate::nucleotide::RunInfo {
            name: run.name.clone(),
            mlflow_run_id: tracking.as_ref().map(|t| t.id.clone()),
            hyperparameters: check.config.overridden(run_type),
        },
        stop: options.stop.clone(),
        progress: (!options.quiet).then_some(match run_type {
            RunType::Kpi => "evaluated",
            RunType::Data => "extracted",
            _ => "inferred",
        }),
    });
    let end = run_end(&result);
    if let Err(e) = run.finish(end.name()) {
        log::warn!("{e}");
    }
    let metrics = match &result {
        Ok(counts) => counts.kpi.clone(),
        Err(_) => BTreeMap::new(),
    };
    let _ = ProjectMetadata::end_run(project, record, end.record_status(), &metrics);
    if let Some(t) = &tracking {
        if let Ok(counts) = &result {
            let mut metrics: Vec<(&str, f64)> =
                counts.kpi.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            metrics.push(("samples", counts.samples as f64));
            metrics.push(("seconds", counts.seconds));
            t.log_metrics(metrics, counts.iterations);
        }
        t.end(end.into());
    }
    let counts = result?;
    Ok(InferReport {
        run,
        model: None,
        iterations: counts.iterations,
        samples: counts.samples,
        skipped: counts.skipped,
        stopped: counts.stopped,
        seconds: counts.seconds,
        stage_seconds: counts.stage_seconds,
        kpi: counts.kpi,
    })
}

/// The model a pipeline runs and the weights it loads.
#[derive(Clone, Copy)]
struct ModelRun<'a> {
    plan: &'a ModelPlan,
    weights: &'a Path,
    dir: &'a Path,
    /// The saved model's inputs, checked against the first batch.
    inputs: Option<&'a [Value]>,
}

/// How a run of the pipeline ended.
fn run_end<E>(result: &Result<Counts, E>) -> crate::nucleotide::RunEnd {
    crate::nucleotide::RunEnd::of(
        result.is_err(),
        result.as_ref().ok().and_then(|c| c.stopped.as_deref()),
    )
}

/// The pipeline of a run: a data feeder, a model or none, KPIs and callbacks.
struct Pipeline<'a> {
    feeder: &'a Part,
    settings: &'a InferSettings,
    model: Option<ModelRun<'a>>,
    callbacks: &'a CallbacksPlan,
    kpi: Option<&'a KpiEvaluatorPlan>,
}

/// A pipeline in its run's folders, to be dispatched on the plan's device (its backend
/// without autodiff).
struct OnRun<'a, 'r> {
    pipeline: Pipeline<'a>,
    /// The compute threads.
    compute: Threads,
    run: &'r InferenceRun,
    kpi: KpiTargets,
    /// What the progress display calls the run (`inferred`); `None` shows none.
    progress: Option<&'static str>,
    /// Which run this is, for the callbacks.
    run_info: crate::nucleotide::RunInfo,
    /// Asks the run to stop (a signal).
    stop: Option<Arc<AtomicBool>>,
}

impl OnDevice for OnRun<'_, '_> {
    type Output = Result<Counts, InferError>;

    fn run<T: AutodiffBackend>(
        self,
        _device: &T::Device,
        inner: &burn::tensor::Device<T::InnerBackend>,
    ) -> Self::Output {
        run_on::<T::InnerBackend>(&self, inner)
    }
}

/// What the run counted.
#[derive(Debug, Default)]
struct Counts {
    iterations: u64,
    samples: u64,
    skipped: Vec<String>,
    stopped: Option<String>,
    seconds: f64,
    stage_seconds: [f64; 3],
    kpi: BTreeMap<String, f64>,
}

/// One iteration as read: its batches (one, or several for a feed list), and whether it is the
/// last.
struct Read<B: Backend> {
    batches: Vec<Nest<B>>,
    samples: usize,
    is_last: bool,
}

impl<B: Backend> Read<B> {
    fn new(batches: Vec<Nest<B>>, samples: usize) -> Self {
        Read {
            batches,
            samples,
            is_last: false,
        }
    }
}

fn run_on<B: Backend>(on: &OnRun<'_, '_>, device: &B::Device) -> Result<Counts, InferError> {
    let OnRun {
        pipeline:
            Pipeline {
                feeder,
                settings,
                model,
                callbacks,
                kpi,
            },
        ref compute,
        run,
        kpi: ref targets,
        progress,
        ref run_info,
        ref stop,
    } = *on;
    let reader = Reader {
        name: feeder.name.clone(),
        feeder: runtime::feeder::<B>(feeder.registration, &feeder.name, &feeder.config, device)
            .map_err(|e| InferError::Run(Fault::of(&e)))?,
        batch_size: settings.batch_size,
        skip_bad_samples: settings.skip_bad_samples,
        device: device.clone(),
        skipped: Vec::new(),
        ahead: None,
        busy: 0.0,
    };
    let predictor = Predictor::build(model, device)?;
    let writer: Arc<EventWriter> = Arc::new(
        EventWriter::create(&run.dir.join("summaries"))
            .map_err(|e| InferError::Run(Fault::new(Code::IO, e.to_string())))?,
    );
    let mut sink = Sink {
        kpi: match kpi {
            Some(plan) => Some(KpiEvaluator::new(plan, targets)?),
            None => None,
        },
        callbacks: Callbacks::<B>::build(callbacks, device)?,
        counts: Counts::default(),
        started: Instant::now(),
        progress: Progress::new(progress),
        stop: stop.clone(),
    };
    let mut ctx = CallbackContext {
        mode: Mode::Infer,
        log_dir: run.results.clone(),
        summaries: writer.clone(),
        summary_step: 0,
        iteration: IterationInfo::default(),
        iterations_per_epoch: 0,
        control: RunControl::default(),
        run: Arc::new(run_info.clone()),
    };
    sink.callbacks.begin(&ctx)?;
    let mut call_back = |p: Predicted<B>, ctx: &mut CallbackContext| sink.iteration(p, ctx);
    let stages = if settings.single_thread {
        compute.run(|| one_thread(reader, predictor, &mut ctx, &mut call_back))
    } else {
        threaded(
            reader,
            predictor,
            settings.prefetch,
            compute,
            &mut ctx,
            &mut call_back,
        )
    };
    sink.finish(stages, &ctx, &writer)
}

type CallBack<'c, B> =
    dyn FnMut(Predicted<B>, &mut CallbackContext) -> Result<bool, Fault> + Send + 'c;

/// How the reading and prediction stages ended.
struct Stages {
    /// The first error of any stage.
    result: Result<(), Fault>,
    /// Bad samples skipped.
    skipped: Vec<String>,
    read_seconds: f64,
    predict_seconds: f64,
}

/// Reads, predicts and calls back one iteration after another.
fn one_thread<B: Backend>(
    mut reader: Reader<B>,
    mut predictor: Predictor<'_, B>,
    ctx: &mut CallbackContext,
    call_back: &mut CallBack<'_, B>,
) -> Stages {
    let mut go = || -> Result<(), Fault> {
        while let Some(read) = reader.next()? {
            if !call_back(predictor.predict(read)?, ctx)? {
                break;
            }
        }
        Ok(())
    };
    let result = go();
    Stages {
        result,
        skipped: reader.skipped,
        read_seconds: reader.busy,
        predict_seconds: predictor.busy,
    }
}

/// Reads and predicts on threads of their own, calling back on this one: the prediction on
/// the compute threads, the reading and the callbacks each on one thread of their own.
fn threaded<B: Backend>(
    mut reader: Reader<B>,
    mut predictor: Predictor<'_, B>,
    prefetch: usize,
    compute: &Threads,
    ctx: &mut CallbackContext,
    call_back: &mut CallBack<'_, B>,
) -> Stages {
    std::thread::scope(|scope| {
        let (read_tx, read_rx) = queue::queue::<Read<B>>(prefetch, queue::QUEUE_BYTES);
        let (out_tx, out_rx) = queue::queue::<Predicted<B>>(prefetch, queue::QUEUE_BYTES);
        // A stage whose receiver is gone stops quietly: the stage after it failed or stopped,
        // and reports that itself.
        let reading = scope.spawn(move || {
            crate::threads::serial(move || {
                let result = loop {
                    match reader.next() {
                        Ok(Some(read)) => {
                            let bytes = read.batches.iter().map(queue::nest_bytes).sum();
                            if read_tx.send(read, bytes).is_err() {
                                break Ok(());
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                (result, reader.skipped, reader.busy)
            })
        });
        let predicting = scope.spawn(move || {
            compute.run(move || {
                let mut result = Ok(());
                for read in read_rx {
                    match predictor.predict(read) {
                        Ok(p) => {
                            let bytes = queue::nest_bytes(&p.data)
                                + p.outputs
                                    .values()
                                    .flatten()
                                    .map(queue::nest_bytes)
                                    .sum::<usize>();
                            if out_tx.send(p, bytes).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                (result, predictor.busy)
            })
        });
        let result = crate::threads::serial(move || {
            for predicted in out_rx {
                match call_back(predicted, ctx) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        let (predicted, predict_seconds) = predicting.join().unwrap_or_else(|_| {
            (
                Err(Fault::new(Code::PANICKED, "the prediction thread panicked")),
                0.0,
            )
        });
        let (read, skipped, read_seconds) = reading.join().unwrap_or_else(|_| {
            (
                Err(Fault::new(Code::PANICKED, "the reading thread panicked")),
                Vec::new(),
                0.0,
            )
        });
        Stages {
            // The first stage that failed; later stages only stopped because of it.
            result: read.and(predicted).and(result),
            skipped,
            read_seconds,
            predict_seconds,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Int, Tensor};
    use serde_json::json;

    #[test]
    fn signature_mismatches_list_both_sides() {
        let d = Default::default();
        let mut batch = Nest::<NdArray>::map();
        batch
            .insert(
                "image",
                Tensor::<NdArray, 4>::zeros([2, 3, 8, 8], &d).into(),
            )
            .unwrap();
        batch
            .insert("label", Tensor::<NdArray, 2, Int>::zeros([2, 1], &d).into())
            .unwrap();
        let input = |key: &str, kind: &str, dtype: &str, shape: Value| json!({"key": key, "kind": kind, "dtype": dtype, "shape": shape});
        let dir = Path::new("saved_models/step-4");
        let fits = [
            input("image", "float", "F32", json!([null, 3, 8, 8])),
            input("label", "int", "I64", json!([null, 1])),
        ];
        check_signature(&fits, &batch, dir).unwrap();
        // Integers of another width fit: a model exported on another backend.
        let other_width = [
            fits[0].clone(),
            input("label", "int", "I32", json!([null, 1])),
        ];
        check_signature(&other_width, &batch, dir).unwrap();
        // Keys the model does not know are fine; its extra keys (labels) too.
        check_signature(&fits[..1], &batch, dir).unwrap();
        let cases = [
            (
                vec![input("image", "float", "F32", json!([null, 1, 8, 8]))],
                "key `image`: the model was exported with `image` float F32 [_, 1, 8, 8], the data feeder gives `image` float F32 [_, 3, 8, 8]",
            ),
            (
                vec![input("label", "float", "F32", json!([null, 1]))],
                "key `label`: the model was exported with `label` float F32 [_, 1], the data feeder gives `label` int",
            ),
            (
                vec![input("x", "float", "F32", json!([null, 2]))],
                "gives none of the keys",
            ),
        ];
        for (inputs, expected) in cases {
            let e = check_signature(&inputs, &batch, dir).unwrap_err();
            assert!(e.contains(expected), "{e}");
            assert!(e.contains("the saved model's inputs: `"), "{e}");
            assert!(
                e.contains("the data feeder gives:     `image` float F32 [_, 3, 8, 8]"),
                "{e}"
            );
        }
    }
}
