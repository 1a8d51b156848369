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
use crate::model::{ModelConfig, Part};
use crate::nest::TensorDtype;
use crate::project::{ProjectSettings, SETTINGS_FILE, TrainingDirs};
use crate::registry::Registry;
use crate::suggest;

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
    /// Where the run computes (`--device` over `trainer_config.device`).
    pub device: DeviceChoice,
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
    /// The weights.
    pub source: ModelSource,
    /// The model (plugins and post-processors).
    pub model: ModelPlan,
    /// The data feeder, its file list sharded when asked.
    pub feeder: Part,
    /// The inference callbacks.
    pub callbacks: CallbacksPlan,
    /// The fully resolved config the run records: the inference configs, the model's
    /// sections and the saved model's path.
    pub snapshot: Value,
}

impl TrainPlan {
    /// Resolves and checks `project`'s training configs; `device` is `--device`.
    pub fn load(
        project: &Path,
        overrides: &Overrides,
        device: Option<DeviceChoice>,
        registry: &Registry,
    ) -> Result<TrainPlan, PlanError> {
        let check = ProjectCheck::load(project, RunType::Train, overrides, registry);
        let mut diags = check.diagnostics.clone();
        let trainer = settings(&check, "trainer_config", &mut diags, |v| {
            TrainerConfig::from_value(v)
        });
        let device = trainer.as_ref().and_then(|t| {
            resolve_device(
                &check,
                device,
                t.device.as_deref(),
                "trainer_config",
                &mut diags,
            )
        });
        if let Some(t) = &trainer {
            check_monitors(&check, t, &mut diags);
        }
        let model_config = settings(&check, "model_config", &mut diags, ModelConfig::from_value);
        if let Some(m) = &model_config {
            check_loss_weights(&check, m, &mut diags);
        }
        let parts = Parts::new(&check, &mut diags);
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
            device,
            model,
            train_data,
            eval_data,
            diags.has_errors(),
        ) {
            (
                Some(trainer),
                Some(device),
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
                device,
                model,
                train_data,
                eval_data,
                callbacks_train,
                callbacks_eval,
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
        // The inferer config names the saved model, so it is read before the model's graph.
        let first = ProjectCheck::load(project, RunType::Infer, &request.overrides, registry);
        let mut diags = Diagnostics::default();
        let config = settings(&first, "inferer_config", &mut diags, |v| {
            InfererConfig::from_value(v)
        });
        let Some(config) = config else {
            diags.0.extend(first.diagnostics.0);
            diags.sort();
            return Err(PlanError(diags));
        };
        let source = match model_source(project, request, &config, for_check) {
            Ok(s) => s,
            Err(d) => {
                diags.push(*d);
                diags.0.extend(first.diagnostics.0);
                diags.sort();
                return Err(PlanError(diags));
            }
        };
        let check = match &source {
            ModelSource::Saved(saved) => {
                let file = saved.dir.join(crate::export::GRAPH).display().to_string();
                ProjectCheck::load_with_model(
                    project,
                    RunType::Infer,
                    &request.overrides,
                    registry,
                    ModelGraph::Saved {
                        graph: &saved.graph,
                        file: &file,
                    },
                )
            }
            _ => first,
        };
        diags.0.extend(check.diagnostics.0.iter().cloned());
        let device = resolve_device(
            &check,
            request.device,
            config.device.as_deref(),
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
        if model.is_none() && !diags.has_errors() {
            diags.push(Diagnostic::error(
                Code::MISSING_CONFIG,
                "",
                "the model has no plugins to run".into(),
                "export a saved model from a project with plugins".into(),
            ));
        }
        diags.sort();
        let (Some(device), Some(batch_size), Some(model), Some(feeder), false) =
            (device, batch_size, model, feeder, diags.has_errors())
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
            source,
            model,
            feeder,
            callbacks,
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
pub fn data_parts(check: &ProjectCheck) -> Result<Vec<Part>, PlanError> {
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

/// A plan's error list is never empty: a part that could not be planned without any error
/// having said why (which would be a bug) still gets a line.
fn errors_or_missing(mut diags: Diagnostics) -> Diagnostics {
    if !diags.has_errors() {
        diags.push(Diagnostic::error(
            Code::MISSING_CONFIG,
            "",
            "the run could not be planned".into(),
            "run `check` for the details".into(),
        ));
    }
    diags
}

/// The file a top-level section came from.
fn section_file<'c>(check: &'c ProjectCheck, key: &str) -> Option<&'c str> {
    check
        .config
        .tree
        .get(key)
        .and_then(|t| check.config.sources.file(t.source))
}

/// Reads a settings section with `read`; a problem is a diagnostic naming the file.
fn settings<T>(
    check: &ProjectCheck,
    key: &str,
    diags: &mut Diagnostics,
    read: impl FnOnce(&Value) -> Result<T, String>,
) -> Option<T> {
    let value = check
        .config
        .tree
        .get(key)
        .map(|t| t.to_value())
        .unwrap_or(Value::Null);
    match read(&value) {
        Ok(t) => Some(t),
        Err(message) => {
            let file = section_file(check, key);
            // A missing section is reported as a missing config already.
            if !value.is_null() || key != "trainer_config" {
                for m in message.split("; ") {
                    diags.push(
                        Diagnostic::error(
                            Code::FIELD_TYPE,
                            "",
                            m.to_owned(),
                            settings_help(key, m),
                        )
                        .with_file(file),
                    );
                }
            }
            None
        }
    }
}

/// The fix for a problem `message` with the settings section `key`.
fn settings_help(key: &str, message: &str) -> String {
    if message.contains("expected one of") {
        // serde lists the fields already.
        return format!("use one of `{key}`'s fields");
    }
    if message.contains("must be") {
        return "give a value in the range the message names".to_owned();
    }
    let fields = crate::config::section_fields(key);
    format!("`{key}` has the fields {}", suggest::list(fields))
}

/// The device of a run: `--device`, else the run's config (`<section>.device`), else the
/// project's (`project.toml`), else the CPU; it must be one this build has.
fn resolve_device(
    check: &ProjectCheck,
    given: Option<DeviceChoice>,
    config: Option<&str>,
    section: &str,
    diags: &mut Diagnostics,
) -> Option<DeviceChoice> {
    let mut refuse = |message: String, file: Option<&str>| {
        diags.push(
            Diagnostic::error(
                Code::FIELD_TYPE,
                "",
                message,
                "choose a device this build has (`cpu`; `cuda` with the `cuda` feature)".into(),
            )
            .with_file(file),
        );
        None
    };
    let settings = match ProjectSettings::load(&check.project) {
        Ok(s) => s,
        Err(message) => return refuse(message, Some(SETTINGS_FILE)),
    };
    let (named, field, file) = match (config, &settings.device) {
        (Some(d), _) => (d, format!("{section}.device"), section_file(check, section)),
        (None, Some(d)) => (
            d.as_str(),
            "project.toml: device".to_owned(),
            Some(SETTINGS_FILE),
        ),
        (None, None) => ("cpu", String::new(), None),
    };
    match DeviceChoice::resolve(given, named, &field) {
        Ok(d) => Some(d),
        Err(message) => refuse(message, file),
    }
}

/// The evaluation values a model reports, as monitors name them: `loss`, each loss's
/// `<loss>/<key>` for its generated keys named `loss…`, and `<metric or summary>/<key>` for
/// each scalar key (`scalar_` dropped). `None` for a nucleotide whose keys are dynamic.
fn evaluation_values(parts: &[Part]) -> (Vec<String>, Vec<String>) {
    let mut values = vec!["loss".to_owned()];
    let mut dynamic = Vec::new();
    for p in parts {
        let signature = (p.registration.signature)();
        let scalar = |k: &KeySpec| {
            matches!(
                k.kind,
                ValueKind::Float
                    | ValueKind::Int
                    | ValueKind::Any
                    | ValueKind::Tensor {
                        dtype: TensorDtype::Float | TensorDtype::Int,
                        ..
                    }
            )
        };
        let keys: Vec<String> = match p.kind {
            Kind::ModelLoss => leaf_keys(&signature.generated)
                .into_iter()
                .filter(|(k, _)| k.starts_with("loss"))
                .map(|(k, _)| k)
                .collect(),
            Kind::ModelMetric | Kind::ModelSummary => leaf_keys(&signature.generated)
                .into_iter()
                .filter(|(_, spec)| scalar(spec))
                .map(|(k, _)| k.strip_prefix("scalar_").unwrap_or(&k).to_owned())
                .collect(),
            _ => continue,
        };
        if signature.dynamic_generated {
            dynamic.push(format!("{}/", p.name));
        }
        values.extend(keys.into_iter().map(|k| format!("{}/{k}", p.name)));
    }
    (values, dynamic)
}

/// Every leaf key of a signature's keys, nested keys joined with `:`.
fn leaf_keys(keys: &[KeySpec]) -> Vec<(String, KeySpec)> {
    let mut out = Vec::new();
    for k in keys {
        if k.children.is_empty() {
            out.push((k.name.to_string(), k.clone()));
        } else {
            for (child, spec) in leaf_keys(k.children) {
                out.push((format!("{}:{child}", k.name), spec));
            }
        }
    }
    out
}

/// `keep_best` and `early_stopping` watch a value some evaluation output produces.
fn check_monitors(check: &ProjectCheck, trainer: &TrainerConfig, diags: &mut Diagnostics) {
    let monitors = [
        trainer
            .keep_best
            .as_ref()
            .map(|k| ("keep_best", k.monitor.as_str())),
        trainer
            .early_stopping
            .as_ref()
            .map(|e| ("early_stopping", e.monitor.as_str())),
    ];
    if monitors.iter().all(Option::is_none) {
        return;
    }
    let model: Vec<&NucleotideEntry> = check
        .nucleotides
        .iter()
        .filter(|e| MODEL_SECTIONS.iter().any(|s| s.key == e.section))
        .collect();
    if model.iter().any(|e| e.registration.is_none()) {
        return; // An unknown class name is reported already; its keys are not known.
    }
    let parts: Vec<Part> = model
        .iter()
        .filter_map(|e| Part::from_entry(e).ok())
        .collect();
    let (values, dynamic) = evaluation_values(&parts);
    for (field, monitor) in monitors.into_iter().flatten() {
        if values.iter().any(|v| v == monitor) || dynamic.iter().any(|d| monitor.starts_with(d)) {
            continue;
        }
        diags.push(
            Diagnostic::error(
                Code::UNKNOWN_FIELD,
                "",
                format!(
                    "trainer_config.{field}.monitor `{monitor}` is no evaluation value{}",
                    suggest::hint(monitor, values.iter().map(String::as_str))
                ),
                format!("evaluations give {}", suggest::list(&values)),
            )
            .with_key(field)
            .with_file(section_file(check, "trainer_config")),
        );
    }
}

/// `model_config.loss_weights` names loss nucleotides.
fn check_loss_weights(check: &ProjectCheck, config: &ModelConfig, diags: &mut Diagnostics) {
    let losses: Vec<&str> = check
        .nucleotides
        .iter()
        .filter(|e| e.kind == Kind::ModelLoss)
        .map(NucleotideEntry::name)
        .collect();
    for name in config.loss_weights.keys() {
        if losses.contains(&name.as_str()) {
            continue;
        }
        diags.push(
            Diagnostic::error(
                Code::UNKNOWN_FIELD,
                "",
                format!(
                    "model_config.loss_weights names `{name}`, which is no loss of the model{}",
                    suggest::hint(name, losses.iter().copied())
                ),
                format!("its keys are loss names: {}", suggest::list(&losses)),
            )
            .with_key("loss_weights")
            .with_file(section_file(check, "model_config")),
        );
    }
}

/// The typed parts of a checked project, by entry.
struct Parts<'c> {
    entries: Vec<(&'c NucleotideEntry, Part)>,
}

impl<'c> Parts<'c> {
    /// Types every resolved nucleotide config once; a problem is a diagnostic.
    fn new(check: &'c ProjectCheck, diags: &mut Diagnostics) -> Parts<'c> {
        let mut entries = Vec::new();
        for e in &check.nucleotides {
            if e.common.is_none() || e.registration.is_none() {
                continue; // Reported by the check.
            }
            match Part::from_entry(e) {
                Ok(p) => entries.push((e, p)),
                Err(message) => diags.push(
                    Diagnostic::error(
                        Code::UNKNOWN_FIELD,
                        e.name(),
                        message,
                        "remove the field the message names from this config".into(),
                    )
                    .with_file(e.file.as_deref()),
                ),
            }
        }
        Parts { entries }
    }

    fn of_sections(&self, sections: &[&str]) -> Vec<Part> {
        self.entries
            .iter()
            .filter(|(e, _)| sections.contains(&e.section))
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// The model, with its handler `name` and, if built, the evaluation handler `eval`.
    fn model(
        &self,
        check: &ProjectCheck,
        name: &str,
        eval: Option<&str>,
        config: ModelConfig,
    ) -> Option<ModelPlan> {
        let handler = check.handler(name)?;
        let eval_handler = eval
            .and_then(|e| check.handler(e))
            .unwrap_or_else(|| handler.clone());
        let sections: Vec<&str> = MODEL_SECTIONS.iter().map(|s| s.key).collect();
        Some(ModelPlan {
            handler,
            eval_handler,
            parts: self.of_sections(&sections),
            config,
        })
    }

    /// The data nucleotide of `section` (in `slot` for named sections).
    fn data(&self, section: &str, slot: Option<&str>) -> Option<Part> {
        self.entries
            .iter()
            .find(|(e, _)| e.section == section && e.slot.as_deref() == slot)
            .map(|(_, p)| p.clone())
    }

    /// The callbacks of the handler `name`.
    fn callbacks(&self, check: &ProjectCheck, name: &str) -> CallbacksPlan {
        let Some(handler) = check.handler(name) else {
            return CallbacksPlan::default();
        };
        let names: Vec<&str> = handler
            .helix()
            .names()
            .skip(handler.helix().incoming_len())
            .collect();
        let parts = self
            .entries
            .iter()
            .filter(|(e, p)| p.kind == Kind::CoordinatorCallback && names.contains(&e.name()))
            .map(|(_, p)| p.clone())
            .collect();
        CallbacksPlan {
            handler: Some(handler),
            parts,
        }
    }
}

/// Where an inference run's weights come from: `--checkpoint`, else `--saved-model` or
/// `inferer_config.saved_model`, else the newest saved model.
fn model_source(
    project: &Path,
    request: &InferRequest,
    config: &InfererConfig,
    for_check: bool,
) -> Result<ModelSource, Box<Diagnostic>> {
    let dirs = TrainingDirs::of(project);
    let fail = |message: String, help: &str| {
        Box::new(Diagnostic::error(
            Code::MISSING_CONFIG,
            "",
            message,
            help.to_owned(),
        ))
    };
    if let Some(checkpoint) = &request.checkpoint {
        let cp = find_checkpoint(&dirs, Some(checkpoint)).map_err(|e| {
            fail(
                e.to_string(),
                "name a checkpoint in `checkpoints/`, `best`, or a path",
            )
        })?;
        return Ok(ModelSource::Checkpoint {
            weights: cp.file(crate::coordinator::checkpoint::WEIGHTS),
            dir: cp.dir,
        });
    }
    let named = request
        .saved_model
        .as_deref()
        .or(config.saved_model.as_deref());
    let dir = match named {
        Some(tag) => {
            let path = Path::new(tag);
            let dir = if path.is_absolute() || path.is_dir() {
                path.to_owned()
            } else {
                dirs.saved_models.join(tag)
            };
            if !dir.join(crate::export::WEIGHTS).is_file() {
                let have: Vec<String> = crate::export::list(&dirs.saved_models)
                    .into_iter()
                    .filter_map(|(_, p)| Some(p.file_name()?.to_string_lossy().into_owned()))
                    .collect();
                return Err(fail(
                    format!(
                        "saved model `{tag}`: {} holds no saved model ({} has {})",
                        dir.display(),
                        dirs.saved_models.display(),
                        if have.is_empty() {
                            "none".to_owned()
                        } else {
                            suggest::list(&have)
                        }
                    ),
                    "name a saved model in `saved_models/` (`step-N`) or a path to one",
                ));
            }
            dir
        }
        None => match crate::export::list(&dirs.saved_models).pop() {
            Some((_, dir)) => dir,
            None if for_check => return Ok(ModelSource::TrainingConfigs),
            None => {
                return Err(fail(
                    format!("no saved model in {}", dirs.saved_models.display()),
                    &format!(
                        "train the project first, or export a checkpoint with `export {}`",
                        project.display()
                    ),
                ));
            }
        },
    };
    SavedModel::open(&dir)
        .map(ModelSource::Saved)
        .map_err(|e| fail(e.to_string(), "export the model again"))
}

/// Sets the shard of the data feeder's file list.
fn shard_file_list(
    feeder: &mut Part,
    (number, index): (usize, usize),
) -> Result<(), Box<Diagnostic>> {
    let fail = |message: String, help: &str| {
        Box::new(Diagnostic::error(
            Code::FIELD_TYPE,
            &feeder.name,
            message,
            help.to_owned(),
        ))
    };
    if number == 0 || index >= number {
        return Err(fail(
            format!("shard index {index} is out of range for {number} shards"),
            "give 0 ≤ --shard-index < --number-of-shards",
        ));
    }
    let class = feeder.registration.class_name;
    let name = feeder.name.clone();
    let Some(Value::Object(list)) = feeder.config.get_mut("file_list") else {
        return Err(Box::new(Diagnostic::error(
            Code::FIELD_TYPE,
            &name,
            format!(
                "--number-of-shards: the data feeder `{name}` ({class}) has no `file_list` to split into shards"
            ),
            "use a data feeder with a `file_list`, or leave out the shard options".into(),
        )));
    };
    list.insert("number_of_shards".into(), number.into());
    list.insert("shard_index".into(), index.into());
    Ok(())
}
