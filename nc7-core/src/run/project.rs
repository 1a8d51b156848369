//! A project's directories and runs (spec §8): the training folders, inference run folders with
//! their `last_run` link, the project metadata file `nc7_project.json`, and config snapshots
//! that are never overwritten.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::RunType;

/// Why a project's directories cannot be used as asked.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// A file system operation failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A training run exists and `--continue` was not given.
    #[error(
        "project `{}` already has a training run ({}); continue it with `--continue`, or move {} out of the project (after keeping what you need) to start a new one; `training/configs/` stays",
        project.display(),
        found.iter().map(|(what, n)| format!("{n} file{} in {what}", if *n == 1 { "" } else { "s" })).collect::<Vec<_>>().join(", "),
        found.iter().map(|(what, _)| format!("`{what}`")).collect::<Vec<_>>().join(", ")
    )]
    TrainingExists {
        /// The project.
        project: PathBuf,
        /// What was found: each path (relative to the project) that a training run wrote,
        /// and how many files it holds.
        found: Vec<(String, usize)>,
    },
    /// `--continue` was given but there is nothing to continue.
    #[error(
        "`--continue` was given, but project `{}` has no training run to continue; run without `--continue` to start one",
        project.display()
    )]
    NothingToContinue {
        /// The project.
        project: PathBuf,
    },
    /// An explicit run name whose folder already has content.
    #[error(
        "inference run folder `{}` already has results; choose another `--run-name`, or leave it out to get the next `run-N`",
        dir.display()
    )]
    RunExists {
        /// The folder.
        dir: PathBuf,
    },
    /// Another command writes into the project now.
    #[error(
        "project `{}` is in use by {holder}; wait for it to end or stop it (two commands writing into one project overwrite each other's checkpoints, saved models and runs)",
        project.display()
    )]
    InUse {
        /// The project.
        project: PathBuf,
        /// Who holds it.
        holder: String,
    },
    /// A run name that is not a plain folder name.
    #[error("run name `{name}` is not a plain folder name; use letters, digits, `-`, `_` and `.`")]
    BadRunName {
        /// The name given.
        name: String,
    },
}

mod lock;
pub use lock::{LOCK_FILE, ProjectLock};

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ProjectError {
    let path = path.to_owned();
    move |source| ProjectError::Io {
        action,
        path,
        source,
    }
}

/// The project's own settings file, beside its run folders.
pub const SETTINGS_FILE: &str = "project.toml";

/// `project.toml`: settings of the whole project, for every kind of run. Optional; an unknown
/// key is an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    /// The device runs use (`cpu`, `cuda`, `cuda:N`) unless their config or `--device` names
    /// one; the CPU when absent.
    #[serde(default)]
    pub device: Option<String>,
    /// The compute threads of runs whose config or command line names none; every core
    /// available when absent.
    #[serde(default)]
    pub threads: Option<usize>,
}

impl ProjectSettings {
    /// Reads `<project>/project.toml`; the defaults when there is none. The error names the
    /// file and the key.
    pub fn load(project: &Path) -> Result<ProjectSettings, crate::config::SettingsError> {
        let file = project.join(SETTINGS_FILE);
        let fail = |problem: String| crate::config::SettingsError::one(SETTINGS_FILE, problem);
        match fs::read_to_string(&file) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| fail(format!("{SETTINGS_FILE}: {}", e.message())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ProjectSettings::default()),
            Err(e) => Err(fail(format!("cannot read {}: {e}", file.display()))),
        }
    }
}

/// The folders of a project's training run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingDirs {
    /// `training/`.
    pub root: PathBuf,
    /// `training/artifacts/`: config snapshots, DNA drawings, file lists.
    pub artifacts: PathBuf,
    /// `training/callbacks/train/`.
    pub callbacks_train: PathBuf,
    /// `training/callbacks/eval/`.
    pub callbacks_eval: PathBuf,
    /// `training/summaries/train/`.
    pub summaries_train: PathBuf,
    /// `training/summaries/eval/`.
    pub summaries_eval: PathBuf,
    /// `training/kpi/`: each evaluation's KPIs (`step-N/`) and the KPI cache (`cache/`).
    pub kpi: PathBuf,
    /// `checkpoints/`.
    pub checkpoints: PathBuf,
    /// `saved_models/`.
    pub saved_models: PathBuf,
}

impl TrainingDirs {
    /// The folders of `project`'s training run (nothing is created).
    pub fn of(project: &Path) -> TrainingDirs {
        let root = project.join("training");
        TrainingDirs {
            artifacts: root.join("artifacts"),
            callbacks_train: root.join("callbacks").join("train"),
            callbacks_eval: root.join("callbacks").join("eval"),
            summaries_train: root.join("summaries").join("train"),
            summaries_eval: root.join("summaries").join("eval"),
            kpi: root.join("kpi"),
            checkpoints: project.join("checkpoints"),
            saved_models: project.join("saved_models"),
            root,
        }
    }

    /// What shows that a training run exists: the files a training run wrote, by path
    /// relative to the project. The configs, and what `dna` and `file-list` write into
    /// `training/artifacts/`, are no training run: only the run's config snapshot there is.
    pub fn existing_run(&self) -> Option<Vec<(String, usize)>> {
        let snapshots = fs::read_dir(&self.artifacts)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name().to_str().is_some_and(|n| {
                    n.starts_with(&format!("_config_{}_run", RunType::Train.short()))
                })
            })
            .count();
        let found: Vec<(String, usize)> = [
            ("checkpoints/", count_files(&self.checkpoints)),
            ("saved_models/", count_files(&self.saved_models)),
            ("training/artifacts/", snapshots),
            (
                "training/summaries/",
                count_files(&self.root.join("summaries")),
            ),
            (
                "training/callbacks/",
                count_files(&self.root.join("callbacks")),
            ),
            (
                "training/evaluations.json",
                usize::from(self.root.join("evaluations.json").is_file()),
            ),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| (what.to_owned(), n))
        .collect();
        (!found.is_empty()).then_some(found)
    }

    /// Creates the folders for a new run, or checks there is one to continue. An existing run
    /// without `resume` is an error that says how to continue or start over.
    pub fn prepare(project: &Path, resume: bool) -> Result<TrainingDirs, ProjectError> {
        let dirs = TrainingDirs::of(project);
        match (dirs.existing_run(), resume) {
            (Some(found), false) => {
                return Err(ProjectError::TrainingExists {
                    project: project.to_owned(),
                    found,
                });
            }
            (None, true) => {
                return Err(ProjectError::NothingToContinue {
                    project: project.to_owned(),
                });
            }
            _ => {}
        }
        for d in [
            &dirs.artifacts,
            &dirs.callbacks_train,
            &dirs.callbacks_eval,
            &dirs.summaries_train,
            &dirs.summaries_eval,
            &dirs.checkpoints,
            &dirs.saved_models,
        ] {
            fs::create_dir_all(d).map_err(io("create", d))?;
        }
        Ok(dirs)
    }
}

/// Files below `dir` (0 when it does not exist).
fn count_files(dir: &Path) -> usize {
    let Ok(read) = fs::read_dir(dir) else {
        return 0;
    };
    read.filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() { count_files(&p) } else { 1 }
        })
        .sum()
}

/// Whether a run folder has content: any file outside its `configs/` but its `status.json`.
fn has_content(dir: &Path) -> bool {
    let Ok(read) = fs::read_dir(dir) else {
        return false;
    };
    read.filter_map(Result::ok).any(|e| {
        e.file_name() != "configs"
            && e.file_name() != RUN_STATUS
            && (!e.path().is_dir() || count_files(&e.path()) > 0)
    })
}

/// One inference, KPI evaluation or data extraction run's folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferenceRun {
    /// The run's name (`run-3`, or the name given).
    pub name: String,
    /// `inference/<name>/` (or `kpi_evaluation/<name>/`, `data_extraction/<name>/`).
    pub dir: PathBuf,
    /// `<dir>/results/`.
    pub results: PathBuf,
    /// `<dir>/artifacts/`.
    pub artifacts: PathBuf,
}

impl InferenceRun {
    /// The folder for a new inference run (spec §8): `run_name` when given (an error if its
    /// folder has content), else the newest `run-N` when it has no content yet, else
    /// `run-(N+1)`. Creates `results/` and `artifacts/` and marks the run `running` in its
    /// `status.json`; [`InferenceRun::finish`] points `inference/last_run` at it when it ends
    /// well.
    pub fn create(project: &Path, run_name: Option<&str>) -> Result<InferenceRun, ProjectError> {
        Self::create_for(project, RunType::Infer, run_name)
    }

    /// Like [`InferenceRun::create`], for the runs of `run` (`kpi_evaluation/run-N`,
    /// `data_extraction/run-N`).
    pub fn create_for(
        project: &Path,
        run: RunType,
        run_name: Option<&str>,
    ) -> Result<InferenceRun, ProjectError> {
        let root = project.join(run.dir_name());
        let name = match run_name {
            Some(name) => {
                let plain = !name.is_empty()
                    && name != "."
                    && name != ".."
                    && name != "last_run"
                    && name
                        .chars()
                        .all(|c| c.is_alphanumeric() || "-_.".contains(c));
                if !plain {
                    return Err(ProjectError::BadRunName {
                        name: name.to_owned(),
                    });
                }
                if has_content(&root.join(name)) {
                    return Err(ProjectError::RunExists {
                        dir: root.join(name),
                    });
                }
                name.to_owned()
            }
            None => {
                let newest = fs::read_dir(&root)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()?
                            .strip_prefix("run-")?
                            .parse::<u64>()
                            .ok()
                    })
                    .max();
                match newest {
                    None => "run-1".to_owned(),
                    Some(n) if !has_content(&root.join(format!("run-{n}"))) => format!("run-{n}"),
                    Some(n) => format!("run-{}", n + 1),
                }
            }
        };
        let dir = root.join(&name);
        let run = InferenceRun {
            results: dir.join("results"),
            artifacts: dir.join("artifacts"),
            dir,
            name,
        };
        for d in [&run.results, &run.artifacts] {
            fs::create_dir_all(d).map_err(io("create", d))?;
        }
        run.write_status("running")?;
        Ok(run)
    }

    /// Records how the run ended in its `status.json` (`finished`, `stopped`, `interrupted`,
    /// `failed`) and, when it finished or a callback stopped it, points `last_run` at it: a
    /// run killed, interrupted or failed never becomes the last run, and a killed one stays
    /// `running` with the process that ran it.
    pub fn finish(&self, status: &str) -> Result<(), ProjectError> {
        self.write_status(status)?;
        if matches!(status, "finished" | "stopped")
            && let Some(root) = self.dir.parent()
        {
            point_last_run(root, &self.name)?;
        }
        Ok(())
    }

    fn write_status(&self, status: &str) -> Result<(), ProjectError> {
        let path = self.dir.join(RUN_STATUS);
        let text = serde_json::json!({
            "status": status,
            "pid": std::process::id(),
            "at": rfc3339(SystemTime::now()),
        });
        replace_file(&path, format!("{text}\n").as_bytes()).map_err(io("write", &path))
    }
}

/// The file in a run folder that says whether the run finished.
pub const RUN_STATUS: &str = "status.json";

/// Points `<root>/last_run` at `<root>/<name>`, replacing the old link in one rename.
fn point_last_run(root: &Path, name: &str) -> Result<(), ProjectError> {
    let link = root.join("last_run");
    let tmp = root.join(format!(".last_run.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(name, &tmp).map_err(io("link", &tmp))?;
    #[cfg(not(unix))]
    fs::write(&tmp, name).map_err(io("write", &tmp))?;
    fs::rename(&tmp, &link).map_err(io("replace", &link))
}

/// Writes the fully resolved config of a run to `artifacts/_config_<type>_run.json`, or to
/// `_config_<type>_run_2.json`, `_3`, ... when earlier runs wrote theirs: never overwriting.
pub fn write_snapshot(
    artifacts: &Path,
    run: RunType,
    config: &Value,
) -> Result<PathBuf, ProjectError> {
    fs::create_dir_all(artifacts).map_err(io("create", artifacts))?;
    let mut text = serde_json::to_string_pretty(config).expect("JSON values serialize");
    text.push('\n');
    for n in 1.. {
        let name = if n == 1 {
            format!("_config_{}_run.json", run.short())
        } else {
            format!("_config_{}_run_{n}.json", run.short())
        };
        let path = artifacts.join(name);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(text.as_bytes()).map_err(io("write", &path))?;
                f.sync_all().map_err(io("sync", &path))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io("create", &path)(e)),
        }
    }
    unreachable!("the loop above returns")
}

/// Copies the project at `from` to `to` without anything its runs wrote: every run type's
/// `configs/` folder and the project's own top-level files (such as `project.toml`), but not
/// `nc7_project.json`. A fresh start from a project's configs, for tests and new experiments.
pub fn copy_configs(from: &Path, to: &Path) -> Result<(), ProjectError> {
    fs::create_dir_all(to).map_err(io("create", to))?;
    for entry in fs::read_dir(from).map_err(io("read", from))? {
        let entry = entry.map_err(io("read", from))?;
        let path = entry.path();
        if path.is_file() && entry.file_name() != METADATA_FILE {
            fs::copy(&path, to.join(entry.file_name())).map_err(io("copy", &path))?;
        }
    }
    for run in RunType::ALL {
        let configs = run.configs_dir(from);
        if configs.is_dir() {
            let target = run.configs_dir(to);
            copy_tree(&configs, &target)?;
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), ProjectError> {
    fs::create_dir_all(to).map_err(io("create", to))?;
    for entry in fs::read_dir(from).map_err(io("read", from))? {
        let path = entry.map_err(io("read", from))?.path();
        let target = to.join(path.file_name().expect("a directory entry has a name"));
        if path.is_dir() {
            copy_tree(&path, &target)?;
        } else {
            fs::copy(&path, &target).map_err(io("copy", &path))?;
        }
    }
    Ok(())
}

/// The project metadata file's name.
pub const METADATA_FILE: &str = "nc7_project.json";

/// `nc7_project.json`: the project's name and a record of every run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectMetadata {
    /// The project's name (its folder's name).
    pub project_name: String,
    /// Every run, oldest first.
    pub runs: Vec<RunRecord>,
}

/// One run in the project metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `train`, `infer`, `kpi` or `data`.
    pub run_type: String,
    /// The run's folder, relative to the project.
    pub run_dir: String,
    /// The command line.
    pub command: Vec<String>,
    /// Start time, RFC 3339 UTC.
    pub start: String,
    /// End time, when it ended.
    pub end: Option<String>,
    /// `running`, `finished` or `failed`.
    pub status: String,
    /// The machine.
    pub host: String,
    /// The user.
    pub user: String,
    /// The project's git commit, when it is a git checkout.
    pub git_commit: Option<String>,
    /// Whether the checkout had uncommitted changes.
    pub git_dirty: Option<bool>,
    /// nc7's version.
    pub nc7_version: String,
    /// nc7's enabled cargo features.
    pub features: Vec<String>,
    /// The compiler that built nc7.
    #[serde(default)]
    pub rustc_version: Option<String>,
    /// SHA-256 of the `Cargo.lock` the project builds with (the nearest one above it).
    #[serde(default)]
    pub cargo_lock_hash: Option<String>,
    /// burn's version in that `Cargo.lock`.
    #[serde(default)]
    pub burn_version: Option<String>,
    /// The resolved config the run recorded, relative to the project.
    #[serde(default)]
    pub config_file: Option<String>,
    /// SHA-256 of that config.
    #[serde(default)]
    pub config_hash: Option<String>,
    /// Where the run computed (`cpu`, `cuda:0`).
    #[serde(default)]
    pub device: Option<String>,
    /// The compute threads it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// The random seed (training).
    #[serde(default)]
    pub seed: Option<u64>,
    /// The run's final values: a training's last evaluation, an evaluation's KPIs (finite
    /// ones).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// What a coordinator tells the run record once it knows it.
#[derive(Debug, Clone, Default)]
pub struct RunFacts<'a> {
    /// The resolved config snapshot the run wrote.
    pub config_file: Option<&'a Path>,
    /// Where it computes.
    pub device: Option<String>,
    /// Its compute threads.
    pub threads: Option<usize>,
    /// Its seed.
    pub seed: Option<u64>,
}

impl ProjectMetadata {
    /// Records the start of a run and returns its index, for [`ProjectMetadata::end_run`].
    pub fn start_run(
        project: &Path,
        run: RunType,
        run_dir: &Path,
        command: Vec<String>,
    ) -> Result<usize, ProjectError> {
        let (commit, dirty) = git_state(project);
        let record = RunRecord {
            run_type: run.short().to_owned(),
            run_dir: run_dir
                .strip_prefix(project)
                .unwrap_or(run_dir)
                .display()
                .to_string(),
            command,
            start: rfc3339(SystemTime::now()),
            end: None,
            status: "running".into(),
            host: host_name(),
            user: std::env::var("USER")
                .or_else(|_| std::env::var("USERNAME"))
                .unwrap_or_else(|_| "unknown".into()),
            git_commit: commit,
            git_dirty: dirty,
            nc7_version: env!("CARGO_PKG_VERSION").into(),
            features: enabled_features(),
            rustc_version: Some(env!("RUSTC_VERSION_OF_NC7").to_owned()),
            cargo_lock_hash: None,
            burn_version: None,
            config_file: None,
            config_hash: None,
            device: None,
            threads: None,
            seed: None,
            metrics: BTreeMap::new(),
        };
        let mut record = record;
        if let Some(lock) = project
            .ancestors()
            .map(|d| d.join("Cargo.lock"))
            .find(|p| p.is_file())
            && let Ok(text) = fs::read_to_string(&lock)
        {
            record.cargo_lock_hash = Some(sha256_hex(text.as_bytes()));
            record.burn_version = locked_version(&text, "burn");
        }
        update_metadata(project, |m| {
            m.runs.push(record);
            m.runs.len() - 1
        })
    }

    /// Adds what the coordinator knows to run `index`: its config (hashed), device and seed.
    pub fn set_facts(
        project: &Path,
        index: usize,
        facts: &RunFacts<'_>,
    ) -> Result<(), ProjectError> {
        let hash = facts
            .config_file
            .and_then(|f| fs::read(f).ok())
            .map(|bytes| sha256_hex(&bytes));
        update_metadata(project, |m| {
            if let Some(r) = m.runs.get_mut(index) {
                r.config_file = facts
                    .config_file
                    .map(|f| f.strip_prefix(project).unwrap_or(f).display().to_string());
                r.config_hash = hash;
                r.device = facts.device.clone();
                r.threads = facts.threads;
                r.seed = facts.seed;
            }
        })
    }

    /// Records the end of run `index` with `status` (`finished`, `stopped` or `failed`) and its
    /// final values.
    pub fn end_run(
        project: &Path,
        index: usize,
        status: &str,
        metrics: &BTreeMap<String, f64>,
    ) -> Result<(), ProjectError> {
        update_metadata(project, |m| {
            if let Some(r) = m.runs.get_mut(index) {
                r.end = Some(rfc3339(SystemTime::now()));
                r.status = status.to_owned();
                // JSON has no NaN: values that are not numbers are left out.
                r.metrics = metrics
                    .iter()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
            }
        })
    }

    /// Reads the metadata file (a fresh record when there is none).
    pub fn read(project: &Path) -> Result<ProjectMetadata, ProjectError> {
        let path = project.join(METADATA_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| ProjectError::Io {
                action: "read",
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ProjectMetadata {
                project_name: project_name(project),
                runs: Vec::new(),
            }),
            Err(e) => Err(io("read", &path)(e)),
        }
    }
}

/// Reads, changes and writes the metadata file under a lock file, so that runs started in
/// parallel (sharded inference) do not lose each other's records.
fn update_metadata<T>(
    project: &Path,
    change: impl FnOnce(&mut ProjectMetadata) -> T,
) -> Result<T, ProjectError> {
    let lock = project.join(format!(".{METADATA_FILE}.lock"));
    with_lock_file(&lock, || {
        let mut meta = ProjectMetadata::read(project)?;
        let out = change(&mut meta);
        let path = project.join(METADATA_FILE);
        let mut text = serde_json::to_string_pretty(&meta).expect("metadata serializes");
        text.push('\n');
        replace_file(&path, text.as_bytes()).map_err(io("replace", &path))?;
        Ok(out)
    })
    .map_err(io("lock", &lock))?
}

/// Runs `f` holding the system's exclusive lock on the file `lock` (created when missing, and
/// left in place: removing it would let a second process lock a new file while a first still
/// holds the old one). The lock goes with its process however it ends, so a crash never
/// leaves it held.
pub(crate) fn with_lock_file<T>(lock: &Path, f: impl FnOnce() -> T) -> std::io::Result<T> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock)?;
    file.lock()?;
    let out = f();
    drop(file);
    Ok(out)
}

pub(crate) fn project_name(project: &Path) -> String {
    project
        .canonicalize()
        .ok()
        .as_deref()
        .unwrap_or(project)
        .file_name()
        .map_or_else(|| "project".into(), |n| n.to_string_lossy().into_owned())
}

/// Writes `bytes` to `path` through a temporary file renamed over it, so that a reader sees
/// the old file or the new one, never part of one.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// This machine's name, for records and file names.
pub(crate) fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

fn enabled_features() -> Vec<String> {
    let mut out = Vec::new();
    if cfg!(feature = "cuda") {
        out.push("cuda".to_owned());
    }
    out
}

/// The commit and dirty flag of the git checkout holding `dir`, when there is one.
pub(crate) fn git_state(dir: &Path) -> (Option<String>, Option<bool>) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "HEAD"]);
    let dirty = commit
        .as_ref()
        .and_then(|_| git(&["status", "--porcelain"]))
        .map(|s| !s.is_empty());
    (commit, dirty)
}

/// `2026-11-22T08:15:00Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Lowercase hex SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(bytes))
}

/// Bytes as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The version of package `name` in a `Cargo.lock`'s text.
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{name}\"") {
            let version = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(version.trim_end_matches('"').to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_335_300)),
            "2026-11-22T08:15:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
