//! MLflow tracking. Every `train`, `infer`, `evaluate-kpi` and `extract-data` run is an MLflow
//! run in the experiment named after the project: params are the resolved config flattened
//! (`trainer.optimization_config.learning_rate`), metrics every training and evaluation scalar
//! and KPI with its step, tags the reproducibility record, artifacts the resolved config, the
//! plots and the evaluation. `--continue` continues the same MLflow run.
//!
//! Where: the trainer's `tracking.uri`, else `MLFLOW_TRACKING_URI`, else `<project>/mlruns`. A
//! path or a `file:` URI is MLflow's own file store, written by nc7 ([`file`]); an `http://` or
//! `https://` URI is a tracking server, reached through MLflow's REST API ([`rest`]).
//! `NC7_MLFLOW=off` turns tracking off.
//!
//! Tracking never stops a run: a store that cannot be written is a warning and the run goes on
//! untracked; a server that cannot be reached at the start is a warning and the run is tracked
//! in the project's `mlruns/` instead; a server that stops answering later gets the data when
//! it answers again, and what it has not taken when the run ends is written to `mlruns/`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

mod file;
mod rest;
mod yaml;

use file::FileRun;
pub use rest::Policy as RetryPolicy;
use rest::ServerRun;

/// How an MLflow run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// It ran to its end (or stopped early as configured).
    Finished,
    /// It failed.
    Failed,
    /// It was interrupted (Ctrl-C).
    Killed,
}

impl RunStatus {
    /// The number MLflow's file store keeps.
    fn code(self) -> u8 {
        match self {
            RunStatus::Finished => 3,
            RunStatus::Failed => 4,
            RunStatus::Killed => 5,
        }
    }

    /// The name MLflow's REST API takes.
    fn name(self) -> &'static str {
        match self {
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

impl From<crate::nucleotide::RunEnd> for RunStatus {
    fn from(end: crate::nucleotide::RunEnd) -> RunStatus {
        use crate::nucleotide::RunEnd;
        match end {
            RunEnd::Finished | RunEnd::Stopped => RunStatus::Finished,
            RunEnd::Interrupted => RunStatus::Killed,
            RunEnd::Failed => RunStatus::Failed,
        }
    }
}

/// Where runs are tracked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// MLflow's file store in this folder.
    Files(PathBuf),
    /// The tracking server at this `http(s)://` address (no trailing `/`).
    Server(String),
}

impl Target {
    /// The target as a tracking URI.
    pub fn uri(&self) -> String {
        match self {
            Target::Files(root) => file::file_uri(root),
            Target::Server(url) => url.clone(),
        }
    }
}

/// Where MLflow runs of `project` go: `configured` (the trainer's `tracking.uri`) when given,
/// else `MLFLOW_TRACKING_URI`, else the project's `mlruns/`; `None` when `NC7_MLFLOW` turns
/// tracking off. A URI nc7 cannot track into is a warning, and the project's `mlruns/` is used.
pub fn target(project: &Path, configured: Option<&str>) -> Option<Target> {
    let env = std::env::var("MLFLOW_TRACKING_URI").ok();
    target_of(
        project,
        configured.or(env.as_deref()),
        std::env::var("NC7_MLFLOW").ok().as_deref(),
    )
}

/// [`target`] given the URI and the value of `NC7_MLFLOW`.
fn target_of(project: &Path, uri: Option<&str>, switch: Option<&str>) -> Option<Target> {
    if switch.is_some_and(|v| {
        crate::environment::TRACKING_OFF.contains(&v.trim().to_lowercase().as_str())
    }) {
        return None;
    }
    let local = project.join("mlruns");
    let uri = uri.unwrap_or_default().trim();
    if uri.is_empty() {
        return Some(Target::Files(local));
    }
    match parse_uri(uri) {
        Ok(target) => Some(target),
        Err(e) => {
            log::warn!("{e}; this run is tracked in {}", local.display());
            Some(Target::Files(local))
        }
    }
}

/// Reads a tracking URI: a path, a `file:` URI, or an `http(s)://` server. The error says what
/// to use instead.
pub fn parse_uri(uri: &str) -> Result<Target, String> {
    let uri = uri.trim();
    if let Some(path) = uri.strip_prefix("file://") {
        return Ok(Target::Files(PathBuf::from(path)));
    }
    if let Some(path) = uri.strip_prefix("file:") {
        return Ok(Target::Files(PathBuf::from(path)));
    }
    let lower = uri.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let host = uri.split_once("://").map_or("", |(_, r)| r);
        if host.is_empty() || host.starts_with('/') {
            return Err(format!(
                "tracking URI `{uri}` names no server; write it as `http://host:port`"
            ));
        }
        return Ok(Target::Server(uri.trim_end_matches('/').to_owned()));
    }
    match uri.split_once(':') {
        // `C:\…` is a Windows path, not a scheme.
        Some((scheme, _)) if !scheme.contains(['/', '\\']) && scheme.len() > 1 => Err(format!(
            "tracking URI `{uri}`: nc7 tracks into MLflow's file store (a path or a `file:` URI) or a tracking server (`http://` or `https://`), not `{scheme}:`; to get the runs into a database, track into a file store and move them with `mlflow migrate-filestore --source mlruns --target {uri}`, or start `mlflow server --backend-store-uri {uri}` and track into it over `http://`"
        )),
        _ => Ok(Target::Files(PathBuf::from(uri))),
    }
}

pub(crate) fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// One point of a metric's history.
#[derive(Debug, Clone, PartialEq)]
struct Metric {
    key: String,
    value: f64,
    /// Milliseconds since the epoch, when it was logged.
    timestamp: u128,
    step: u64,
}

/// An MLflow run being written, in a file store or on a server. Methods take `&self`: a run is
/// shared by the parts of a coordinator that log to it. Nothing it does fails the run: problems
/// are warnings.
#[derive(Debug)]
pub struct MlflowRun {
    /// The run id.
    pub id: String,
    /// The experiment id.
    pub experiment: String,
    /// Where the run is tracked (the project's `mlruns/` when a server could not be reached).
    pub target: Target,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Files(FileRun),
    Server(ServerRun),
}

/// Where a training run keeps the id of its MLflow run, for `--continue`.
pub const RUN_FILE: &str = "mlflow_run.json";

/// What a training keeps of its MLflow run in [`RUN_FILE`].
struct Kept {
    run_id: String,
    experiment_id: String,
    /// Absent in files written before servers were tracked: the file store.
    tracking_uri: Option<String>,
}

impl Kept {
    fn read(file: &Path) -> Option<Kept> {
        let saved: Value = serde_json::from_str(&fs::read_to_string(file).ok()?).ok()?;
        Some(Kept {
            run_id: saved["run_id"].as_str()?.to_owned(),
            experiment_id: saved["experiment_id"].as_str()?.to_owned(),
            tracking_uri: saved["tracking_uri"].as_str().map(str::to_owned),
        })
    }

    /// Whether the kept run is tracked at `target`.
    fn is_at(&self, target: &Target) -> bool {
        match (target, self.tracking_uri.as_deref()) {
            (Target::Files(_), None) => true,
            (t, Some(uri)) => t.uri() == uri,
            (Target::Server(_), None) => false,
        }
    }
}

impl MlflowRun {
    /// Starts a run named `run_name` of `project` in the experiment `experiment_name` at
    /// `target`, or, with `resume_from` naming a file where an earlier run of the same target
    /// was kept and the step of the checkpoint continued, continues that run. `None`, with a
    /// warning, when nothing can be tracked.
    pub fn start(
        target: &Target,
        project: &Path,
        experiment_name: &str,
        run_name: &str,
        resume_from: Option<(&Path, u64)>,
    ) -> Option<MlflowRun> {
        let policy = match target {
            Target::Server(_) => RetryPolicy::from_env(),
            Target::Files(_) => RetryPolicy::default(),
        };
        Self::start_with(
            target,
            policy,
            project,
            experiment_name,
            run_name,
            resume_from,
        )
    }

    /// [`MlflowRun::start`] with a server's retry policy instead of the one the environment
    /// sets.
    pub fn start_with(
        target: &Target,
        policy: RetryPolicy,
        project: &Path,
        experiment_name: &str,
        run_name: &str,
        resume_from: Option<(&Path, u64)>,
    ) -> Option<MlflowRun> {
        let kept = resume_from
            .and_then(|(file, step)| Kept::read(file).map(|k| (k, step)))
            .filter(|(k, _)| k.is_at(target));
        let resume = kept
            .as_ref()
            .map(|(k, step)| (k.run_id.as_str(), k.experiment_id.as_str(), *step));
        let local =
            |root: &Path, resume| match FileRun::start(root, experiment_name, run_name, resume) {
                Ok(run) => Some(run),
                Err(e) => {
                    log::warn!("MLflow tracking is off for this run: {e}");
                    None
                }
            };
        let (target, backend) = match target {
            Target::Files(root) => (target.clone(), Backend::Files(local(root, resume)?)),
            Target::Server(url) => {
                match ServerRun::start(url, policy, project, experiment_name, run_name, resume) {
                    Ok(run) => (target.clone(), Backend::Server(run)),
                    Err(e) => {
                        let root = project.join("mlruns");
                        log::warn!(
                            "MLflow: the tracking server {url} cannot be used ({e}); this run is tracked in {} instead",
                            root.display()
                        );
                        let run = local(&root, None)?;
                        run.set_tag("nc7.unreachable_tracking_uri", url);
                        (Target::Files(root), Backend::Files(run))
                    }
                }
            }
        };
        let (id, experiment) = match &backend {
            Backend::Files(r) => (r.id.clone(), r.experiment.clone()),
            Backend::Server(r) => (r.id.clone(), r.experiment.clone()),
        };
        Some(MlflowRun {
            id,
            experiment,
            target,
            backend,
        })
    }

    /// Keeps this run's id and where it is tracked in `file`, for `--continue`.
    pub fn remember(&self, file: &Path) {
        let text = serde_json::json!({
            "experiment_id": self.experiment,
            "run_id": self.id,
            "tracking_uri": self.target.uri(),
        });
        if let Err(e) = file::write_atomic(file, &format!("{text}\n")) {
            log::warn!("MLflow: `--continue` will start a new run: {e}");
        }
    }

    /// Sets a tag.
    pub fn set_tag(&self, key: &str, value: &str) {
        match &self.backend {
            Backend::Files(r) => r.set_tag(key, value),
            Backend::Server(r) => r.set_tag(key, value),
        }
    }

    /// Logs params; a param already logged keeps its value (params do not change in MLflow).
    pub fn log_params(&self, params: &BTreeMap<String, String>) {
        match &self.backend {
            Backend::Files(r) => r.log_params(params),
            Backend::Server(r) => r.log_params(params),
        }
    }

    /// Logs metrics at `step`.
    pub fn log_metrics<K: AsRef<str>>(
        &self,
        metrics: impl IntoIterator<Item = (K, f64)>,
        step: u64,
    ) {
        let timestamp = now_ms();
        let points: Vec<Metric> = metrics
            .into_iter()
            .map(|(key, value)| Metric {
                key: key.as_ref().to_owned(),
                value,
                timestamp,
                step,
            })
            .collect();
        match &self.backend {
            Backend::Files(r) => r.log_metrics(&points),
            Backend::Server(r) => r.log_metrics(points),
        }
    }

    /// Stores a file in the run's artifacts as `name` (`/` makes folders).
    pub fn log_artifact(&self, file: &Path, name: &str) {
        match fs::read(file) {
            Ok(bytes) => match &self.backend {
                Backend::Files(r) => r.log_artifact(&bytes, name),
                Backend::Server(r) => r.log_artifact(bytes, name),
            },
            Err(e) => log::warn!("MLflow: the artifact {} is left out: {e}", file.display()),
        }
    }

    /// Ends the run with `status`. A server gets what it has not yet taken first, for as long
    /// as `NC7_MLFLOW_FLUSH_TIMEOUT` (60 s by default); the rest goes to the project's
    /// `mlruns/`.
    pub fn end(&self, status: RunStatus) {
        match &self.backend {
            Backend::Files(r) => r.end(status),
            Backend::Server(r) => r.end(status),
        }
    }
}

/// A key MLflow accepts: letters, digits, `_ - . / space`; anything else becomes `_`, and no
/// part is empty, `.` or `..`.
pub fn sanitize(key: &str) -> String {
    let clean: String = key
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect();
    clean
        .split('/')
        .filter(|p| !p.is_empty())
        .map(|p| if p == "." || p == ".." { "_" } else { p })
        .collect::<Vec<_>>()
        .join("/")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        s.chars().take(max).collect()
    }
}

/// A resolved config as MLflow params: every leaf by its dotted path, top-level sections
/// without `_config` (`trainer.optimization_config.learning_rate`), a list of nucleotide
/// configs by their names (`plugins.cnn.filters`), lists of values as JSON.
pub fn flatten_config(config: &Value) -> BTreeMap<String, String> {
    crate::config::Tagged::new(config, 0)
        .leaves()
        .into_iter()
        .filter(|(_, v, _)| !v.is_null() && v.as_object().is_none_or(|m| !m.is_empty()))
        .map(|(path, value, _)| {
            (
                crate::config::param_name(&path),
                crate::config::param_value(value),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
