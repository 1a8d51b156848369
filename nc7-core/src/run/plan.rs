//! Typed run plans: a project resolved and checked once, for one kind of run. Building a plan
//! is what `check` does and what `train`, `export` and `infer` do first, on the same code path:
//! every nucleotide config is split and typed into its [`Part`] exactly once, the run's
//! settings are read into their structs, the device is resolved, and everything that can be
//! known before the first step is checked (keys, kinds, dtypes and ranks on every edge,
//! settings, monitors). A coordinator takes a plan and never looks a section up by name or
//! reads the project's configs again.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::backend::DeviceChoice;
use crate::check::{ModelGraph, ProjectCheck};
use crate::config::{MODEL_SECTIONS, NucleotideEntry, Overrides, RunType};
use crate::coordinator::checkpoint::find_checkpoint;
use crate::coordinator::{InfererConfig, TrainerConfig};
use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::export::SavedModel;
use crate::gene::Kind;
use crate::handler::GeneHandler;
use crate::keys::{KeySpec, ValueKind};
use crate::kpi::KpiEvaluatorPlan;
use crate::model::{ModelConfig, Part};
use crate::nest::TensorDtype;
use crate::project::{ProjectSettings, SETTINGS_FILE, TrainingDirs};
use crate::registry::Registry;
use crate::suggest;

mod feed;
mod monitors;
mod parts;
mod settings;
mod source;
pub use feed::*;
use monitors::*;
use parts::*;
use settings::*;
use source::*;

/// Why a plan could not be made: every problem found, errors first, each with its file, the
/// nucleotide or setting, and the fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub Diagnostics);

/// The model: its handlers and its nucleotides, typed.
#[derive(Debug, Clone)]
pub struct ModelPlan {
    /// The handler that runs on the training data (or the inference data feeder's).
    pub handler: GeneHandler,
    /// The handler that runs on the evaluation data: the training handler unless the
    /// evaluation dataset generates other keys.
    pub eval_handler: GeneHandler,
    /// Plugins, post-processors, losses, metrics and summaries.
    pub parts: Vec<Part>,
    /// `model_config`: loss weights and weight penalties.
    pub config: ModelConfig,
}

/// One callbacks handler and its callbacks, typed; no handler when there are no callbacks.
#[derive(Debug, Clone, Default)]
pub struct CallbacksPlan {
    /// The handler (inputs: the data and every model nucleotide).
    pub handler: Option<GeneHandler>,
    /// Its callbacks.
    pub parts: Vec<Part>,
}

/// A training run, resolved and checked: what `train` and `export` run.
#[derive(Debug, Clone)]
pub struct TrainPlan {
    /// The checked project (the resolved config, its graph, its warnings).
    pub check: ProjectCheck,
    /// `trainer_config`.
    pub trainer: TrainerConfig,
    /// Where the run computes (`--device` over `trainer_config.device`): the first of
    /// `devices`.
    pub device: DeviceChoice,
    /// Every device it trains on, one model replica each (`--devices` over
    /// `trainer_config.devices`; else `device` alone).
    pub devices: Vec<DeviceChoice>,
    /// Its compute threads (`--threads` over `trainer_config.threads`), shared out between
    /// the replicas.
    pub threads: usize,
    /// The precision the plugins compute in (`--precision` over
    /// `trainer_config.precision`).
    pub precision: crate::precision::Precision,
    /// The model.
    pub model: ModelPlan,
    /// The training dataset.
    pub train_data: Part,
    /// The evaluation dataset.
    pub eval_data: Part,
    /// Callbacks of training iterations.
    pub callbacks_train: CallbacksPlan,
    /// Callbacks of evaluation iterations.
    pub callbacks_eval: CallbacksPlan,
    /// The KPIs of every evaluation (`training/configs/kpi/`), if any.
    pub kpi: Option<KpiEvaluatorPlan>,
}

/// What a training run asks for besides the project's configs; each field is over the
/// `trainer_config` field of the same name.
#[derive(Debug, Clone, Default)]
pub struct TrainRequest {
    /// `--device`.
    pub device: Option<DeviceChoice>,
    /// `--devices`, as written (`cpu:0`, `cuda:all`).
    pub devices: Option<Vec<String>>,
    /// `--precision`.
    pub precision: Option<crate::precision::Precision>,
    /// `--threads`.
    pub threads: Option<usize>,
    /// Config overrides of the training configs.
    pub overrides: Overrides,
}

/// What an inference run asks for besides the project's configs; each field is over the
/// `inferer_config` field of the same name.
#[derive(Debug, Clone, Default)]
pub struct InferRequest {
    /// `--saved-model`: a name in `saved_models/` or a path; the newest when absent.
    pub saved_model: Option<String>,
    /// `--checkpoint`: a checkpoint (`ckpt-N`, `best` or a path), run with the training
    /// configs' model.
    pub checkpoint: Option<PathBuf>,
    /// `--batch-size`.
    pub batch_size: Option<usize>,
    /// `--single-thread`.
    pub single_thread: bool,
    /// `--prefetch`.
    pub prefetch: Option<usize>,
    /// `--number-of-shards` and `--shard-index`.
    pub shard: Option<(usize, usize)>,
    /// `--skip-bad-samples`.
    pub skip_bad_samples: bool,
    /// `--device`.
    pub device: Option<DeviceChoice>,
    /// `--threads`.
    pub threads: Option<usize>,
    /// Config overrides of the inference configs.
    pub overrides: Overrides,
}

/// An inference run's settings: the command line over `inferer_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferSettings {
    /// Samples per batch.
    pub batch_size: usize,
    /// Iterations each stage may run ahead of the next.
    pub prefetch: usize,
    /// Read, predict and call back in one thread.
    pub single_thread: bool,
    /// Log bad samples and go on.
    pub skip_bad_samples: bool,
    /// `(number of shards, shard index)` of the data feeder's file list.
    pub shard: Option<(usize, usize)>,
}

/// The weights an inference run loads.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A saved model: its folder, graph and signature.
    Saved(SavedModel),
    /// A checkpoint, with the training configs' model.
    Checkpoint {
        /// The checkpoint's folder.
        dir: PathBuf,
        /// Its weights file.
        weights: PathBuf,
    },
    /// No weights yet: `check --type infer` on a project without a saved model checks the
    /// inference configs against the training configs' model.
    TrainingConfigs,
}

impl ModelSource {
    /// The folder the weights come from (none for the training configs).
    pub fn dir(&self) -> Option<&Path> {
        match self {
            ModelSource::Saved(s) => Some(&s.dir),
            ModelSource::Checkpoint { dir, .. } => Some(dir),
            ModelSource::TrainingConfigs => None,
        }
    }
}

/// An inference run, resolved and checked: what `infer` runs.
#[derive(Debug, Clone)]
pub struct InferPlan {
    /// The checked project, the model's graph included.
    pub check: ProjectCheck,
    /// The settings.
    pub settings: InferSettings,
    /// Where the run computes.
    pub device: DeviceChoice,
    /// Its compute threads.
    pub threads: usize,
    /// The weights.
    pub source: ModelSource,
    /// The model (plugins and post-processors).
    pub model: ModelPlan,
    /// The data feeder, its file list sharded when asked.
    pub feeder: Part,
    /// The inference callbacks.
    pub callbacks: CallbacksPlan,
    /// The KPIs of the predictions (`inference/configs/kpi/`), if any.
    pub kpi: Option<KpiEvaluatorPlan>,
    /// The fully resolved config the run records: the inference configs, the model's
    /// sections and the saved model's path.
    pub snapshot: Value,
}

impl TrainPlan {
    /// The compute threads of each device's replica: `threads` shared out, at least one.
    pub fn replica_threads(&self) -> usize {
        (self.threads / self.devices.len()).max(1)
    }

    /// Resolves and checks `project`'s training configs.
    pub fn load(
        project: &Path,
        request: &TrainRequest,
        registry: &Registry,
    ) -> Result<TrainPlan, PlanError> {
        let check = ProjectCheck::load(project, RunType::Train, &request.overrides, registry);
        let mut diags = check.diagnostics.clone();
        let mut trainer = settings(&check, "trainer_config", &mut diags, |v| {
            TrainerConfig::from_value(v)
        });
        let compute = trainer.as_ref().and_then(|t| {
            resolve_compute(
                &check,
                (request.device, request.threads),
                (t.device.as_deref(), t.threads),
                "trainer_config",
                &mut diags,
            )
        });
        let devices = match (&trainer, compute) {
            (Some(t), Some((device, _))) => resolve_devices(&check, request, t, device, &mut diags),
            _ => None,
        };
        let precision = match (&trainer, &devices) {
            (Some(t), Some(devices)) => {
                resolve_precision(&check, request.precision, t, devices[0], &mut diags)
            }
            _ => None,
        };
        let model_config = settings(&check, "model_config", &mut diags, ModelConfig::from_value);
        if let Some(m) = &model_config {
            check_loss_weights(&check, m, &mut diags);
        }
        let parts = Parts::new(&check, &mut diags);
        let kpi = parts.kpi(&check, "kpi");
        if let Some(t) = &mut trainer {
            check_monitors(&check, &parts, kpi.as_ref(), t, &mut diags);
        }
        let model = model_config.and_then(|m| parts.model(&check, "model", Some("model_eval"), m));
        let train_data = parts.data("datasets_config", Some("train"));
        let eval_data = parts.data("datasets_config", Some("eval"));
        let callbacks_train = parts.callbacks(&check, "callbacks_train");
        let callbacks_eval = parts.callbacks(&check, "callbacks_eval");
        if model.is_none() && !diags.has_errors() {
            diags.push(Diagnostic::error(
                Code::MISSING_CONFIG,
                "",
                "the project has no model to train".into(),
                "add a plugin config to `training/configs/plugins/`".into(),
            ));
        }
        diags.sort();
        match (
            trainer,
            compute.zip(devices).zip(precision),
            model,
            train_data,
            eval_data,
            diags.has_errors(),
        ) {
            (
                Some(trainer),
                Some((((_, threads), devices), precision)),
                Some(model),
                Some(train_data),
                Some(eval_data),
                false,
            ) => Ok(TrainPlan {
                check: ProjectCheck {
                    diagnostics: diags,
                    ..check
                },
                trainer,
                device: devices[0],
                devices,
                threads,
                precision,
                model,
                train_data,
                eval_data,
                callbacks_train,
                callbacks_eval,
                kpi,
            }),
            _ => Err(PlanError(errors_or_missing(diags))),
        }
    }

    /// The training directories of the project.
    pub fn dirs(&self) -> TrainingDirs {
        TrainingDirs::of(&self.check.project)
    }

    /// The project directory.
    pub fn project(&self) -> &Path {
        &self.check.project
    }
}

impl InferPlan {
    /// Resolves and checks `project`'s inference configs and the model `request` names.
    pub fn load(
        project: &Path,
        request: &InferRequest,
        registry: &Registry,
    ) -> Result<InferPlan, PlanError> {
        Self::load_with(project, request, registry, false)
    }

    /// Like [`InferPlan::load`], for `check --type infer`: a project without a saved model is
    /// checked against its training configs' model instead of being refused.
    pub fn load_for_check(
        project: &Path,
        request: &InferRequest,
        registry: &Registry,
    ) -> Result<InferPlan, PlanError> {
        Self::load_with(project, request, registry, true)
    }

    fn load_with(
        project: &Path,
        request: &InferRequest,
        registry: &Registry,
        for_check: bool,
    ) -> Result<InferPlan, PlanError> {
        // The inferer config names the saved model, so the run's configs are read before the
        // model's graph is added to them (once each).
        let first = ProjectCheck::configs(project, RunType::Infer, &request.overrides, registry);
        let mut diags = Diagnostics::default();
        let config = settings(&first, "inferer_config", &mut diags, |v| {
            InfererConfig::from_value(v)
        });
        let source = config
            .as_ref()
            .map(|c| model_source(project, request, c, for_check));
        let check = match &source {
            Some(Ok(ModelSource::Saved(saved))) => {
                let file = saved.dir.join(crate::export::GRAPH).display().to_string();
                first.with_model(
                    ModelGraph::Saved {
                        graph: &saved.graph,
                        file: &file,
                    },
                    registry,
                )
            }
            _ => first.with_model(ModelGraph::Training, registry),
        };
        let (config, source) = match (config, source) {
            (Some(config), Some(Ok(source))) => (config, source),
            (_, source) => {
                if let Some(Err(d)) = source {
                    diags.push(*d);
                }
                diags.0.extend(check.diagnostics.0);
                diags.sort();
                return Err(PlanError(diags));
            }
        };
        diags.0.extend(check.diagnostics.0.iter().cloned());
        let compute = resolve_compute(
            &check,
            (request.device, request.threads),
            (config.device.as_deref(), config.threads),
            "inferer_config",
            &mut diags,
        );
        let batch_size = request.batch_size.or(config.batch_size);
        match batch_size {
            None => diags.push(
                Diagnostic::error(
                    Code::MISSING_CONFIG,
                    "",
                    "no batch size for inference".into(),
                    "give `--batch-size N`, or set `batch_size` in inference/configs/inferer.json"
                        .into(),
                )
                .with_file(section_file(&check, "inferer_config")),
            ),
            Some(0) => diags.push(Diagnostic::error(
                Code::FIELD_TYPE,
                "",
                "--batch-size must be at least 1".into(),
                "give a batch size of 1 or more".into(),
            )),
            Some(_) => {}
        }
        let parts = Parts::new(&check, &mut diags);
        // Losses do not run in inference: the model config has nothing to say there.
        let model = parts.model(&check, "model", None, ModelConfig::default());
        let mut feeder = parts.data("datafeeder_config", None);
        if let (Some(f), Some(shard)) = (&mut feeder, request.shard)
            && let Err(d) = shard_file_list(f, shard)
        {
            diags.push(*d);
        }
        let callbacks = parts.callbacks(&check, "callbacks");
        let kpi = parts.kpi(&check, "kpi");
        if model.is_none() && !diags.has_errors() {
            diags.push(Diagnostic::error(
                Code::MISSING_CONFIG,
                "",
                "the model has no plugins to run".into(),
                "export a saved model from a project with plugins".into(),
            ));
        }
        diags.sort();
        let (Some((device, threads)), Some(batch_size), Some(model), Some(feeder), false) =
            (compute, batch_size, model, feeder, diags.has_errors())
        else {
            return Err(PlanError(errors_or_missing(diags)));
        };
        let mut snapshot = check.config.tree.to_value();
        if let (Value::Object(s), ModelSource::Saved(saved)) = (&mut snapshot, &source)
            && let Value::Object(g) = &saved.graph
        {
            for section in MODEL_SECTIONS {
                if let Some(v) = g.get(section.key) {
                    s.insert(section.key.to_owned(), v.clone());
                }
            }
            s.insert(
                "saved_model".to_owned(),
                Value::String(saved.dir.display().to_string()),
            );
        }
        Ok(InferPlan {
            settings: InferSettings {
                batch_size,
                prefetch: request.prefetch.unwrap_or(config.prefetch_buffer_size),
                single_thread: request.single_thread || config.single_thread,
                skip_bad_samples: request.skip_bad_samples || config.skip_bad_samples,
                shard: request.shard,
            },
            check: ProjectCheck {
                diagnostics: diags,
                ..check
            },
            device,
            threads,
            source,
            model,
            feeder,
            callbacks,
            kpi,
            snapshot,
        })
    }

    /// The project directory.
    pub fn project(&self) -> &Path {
        &self.check.project
    }
}

/// The data nucleotides (datasets and data feeders) of a checked project, typed; what
/// `file-list` lists. The check's errors, if any, are the error.
pub(crate) fn data_parts(check: &ProjectCheck) -> Result<Vec<Part>, PlanError> {
    let mut diags = check.diagnostics.clone();
    let parts = Parts::new(check, &mut diags);
    if diags.has_errors() {
        diags.sort();
        return Err(PlanError(diags));
    }
    Ok(parts
        .entries
        .into_iter()
        .filter(|(_, p)| matches!(p.kind, Kind::Dataset | Kind::DataFeeder))
        .map(|(_, p)| p)
        .collect())
}
