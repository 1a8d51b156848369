//! MLflow's file store (`mlruns/`), written the way MLflow's own `FileStore` writes it: `mlflow
//! ui` and `MlflowClient` read it (with `MLFLOW_ALLOW_FILE_STORE=true` since MLflow 3.13) and
//! `mlflow migrate-filestore` moves it into SQLite.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::yaml::*;
use super::{Metric, RunStatus, now_ms, sanitize, truncate};

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> String {
    let place = format!("{what} {}", path.display());
    move |e| format!("{place}: {e}")
}

/// Writes `text` to `path` through a temporary file renamed over it.
pub(super) fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    crate::project::replace_file(path, text.as_bytes()).map_err(io("write", path))
}

/// A decimal id of 18 digits from `seed`, as MLflow's experiment ids look.
fn decimal_id(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let mut n = u64::from_le_bytes(digest[..8].try_into().expect("eight bytes"));
    n = 100_000_000_000_000_000 + n % 900_000_000_000_000_000;
    n.to_string()
}

/// The experiment named `name` in the store `root`, created when missing (with MLflow's
/// `Default` experiment `0` in a fresh store); a lock keeps two processes from creating it
/// twice.
fn experiment(root: &Path, name: &str) -> Result<String, String> {
    fs::create_dir_all(root.join(".trash")).map_err(io("create", root))?;
    let lock = root.join(".nc7-lock");
    crate::project::with_lock_file(&lock, || find_or_create_experiment(root, name))
        .map_err(io("lock", &lock))?
}

fn find_or_create_experiment(root: &Path, name: &str) -> Result<String, String> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(root).map_err(io("read", root))?.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if !id.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(text) = fs::read_to_string(entry.path().join("meta.yaml"))
            && yaml_field(&text, "name").as_deref() == Some(name)
            && yaml_field(&text, "lifecycle_stage").as_deref() != Some("deleted")
        {
            return Ok(id);
        }
        ids.push(id);
    }
    let now = now_ms();
    if !ids.iter().any(|i| i == "0") {
        write_experiment(root, "0", "Default", now)?;
    }
    let mut id = decimal_id(name);
    while ids.contains(&id) {
        id = decimal_id(&format!("{id}{name}"));
    }
    write_experiment(root, &id, name, now)?;
    Ok(id)
}

fn write_experiment(root: &Path, id: &str, name: &str, now: u128) -> Result<(), String> {
    let dir = root.join(id);
    fs::create_dir_all(dir.join("tags")).map_err(io("create", &dir))?;
    let meta = yaml(&[
        ("artifact_location", quoted(&file_uri(&dir))),
        ("creation_time", now.to_string()),
        ("experiment_id", quoted(id)),
        ("last_update_time", now.to_string()),
        ("lifecycle_stage", "active".into()),
        ("name", quoted(name)),
    ]);
    write_atomic(&dir.join("meta.yaml"), &meta)
}

pub(super) fn file_uri(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    format!("file://{}", abs.display())
}

/// A run in a file store. Methods take `&self`: a run is shared by the parts of a coordinator
/// that log to it. A failed write is a warning, and the run goes on untracked.
#[derive(Debug)]
pub(super) struct FileRun {
    dir: PathBuf,
    /// The run id.
    pub(super) id: String,
    /// The experiment id.
    pub(super) experiment: String,
    meta: Mutex<BTreeMap<&'static str, String>>,
    broken: Mutex<bool>,
    /// Keys MLflow would refuse, and the names they were logged under (also the tag
    /// `nc7.renamed_keys`).
    renamed: Mutex<BTreeMap<String, String>>,
}

impl FileRun {
    /// Starts a run named `run_name` in `root`'s experiment `experiment_name`, or, with
    /// `resume` naming an earlier run of this store (its id, its experiment's id, the step of
    /// the checkpoint continued), continues that run: its metrics after that step are dropped,
    /// the continued run logs them again.
    pub(super) fn start(
        root: &Path,
        experiment_name: &str,
        run_name: &str,
        resume: Option<(&str, &str, u64)>,
    ) -> Result<FileRun, String> {
        let experiment = experiment(root, experiment_name)?;
        if let Some((id, exp, step)) = resume
            && let Some(run) = Self::reopen(root, &experiment, id, exp, step)?
        {
            return Ok(run);
        }
        let start = now_ms();
        let id = format!(
            "{:032x}",
            u128::from_le_bytes(
                Sha256::digest(format!(
                    "{experiment}/{run_name}/{start}/{}",
                    std::process::id()
                ))[..16]
                    .try_into()
                    .expect("sixteen bytes")
            )
        );
        let dir = root.join(&experiment).join(&id);
        for sub in ["metrics", "params", "artifacts", "tags"] {
            fs::create_dir_all(dir.join(sub)).map_err(io("create", &dir))?;
        }
        let user = std::env::var("USER").unwrap_or_else(|_| "nc7".into());
        let meta: BTreeMap<&'static str, String> = [
            ("artifact_uri", quoted(&file_uri(&dir.join("artifacts")))),
            ("end_time", "null".into()),
            ("entry_point_name", quoted("")),
            ("experiment_id", quoted(&experiment)),
            ("lifecycle_stage", "active".into()),
            ("run_id", quoted(&id)),
            ("run_name", quoted(run_name)),
            ("run_uuid", quoted(&id)),
            ("source_name", quoted("")),
            ("source_type", "4".into()),
            ("source_version", quoted("")),
            ("start_time", start.to_string()),
            ("status", "1".into()),
            ("tags", "[]".into()),
            ("user_id", quoted(&user)),
            ("deleted_time", "null".into()),
        ]
        .into_iter()
        .collect();
        let run = FileRun {
            dir,
            id,
            experiment,
            meta: Mutex::new(meta),
            broken: Mutex::new(false),
            renamed: Mutex::new(BTreeMap::new()),
        };
        run.set_tag("mlflow.runName", run_name);
        run.set_tag("mlflow.user", &user);
        run.set_tag("mlflow.source.type", "LOCAL");
        run.set_tag("mlflow.source.name", "nc7");
        run.write_meta()?;
        Ok(run)
    }

    /// The run `id` of experiment `exp` when it is in this store and `experiment`; its metric
    /// lines after `step` are dropped.
    fn reopen(
        root: &Path,
        experiment: &str,
        id: &str,
        exp: &str,
        step: u64,
    ) -> Result<Option<FileRun>, String> {
        let dir = root.join(exp).join(id);
        if exp != experiment || !dir.join("meta.yaml").is_file() {
            return Ok(None);
        }
        let meta_text = fs::read_to_string(dir.join("meta.yaml")).map_err(io("read", &dir))?;
        let meta = parse_meta(&meta_text);
        trim_metrics(&dir.join("metrics"), step)?;
        let run = FileRun {
            id: id.to_owned(),
            experiment: exp.to_owned(),
            dir,
            meta: Mutex::new(meta),
            broken: Mutex::new(false),
            renamed: Mutex::new(BTreeMap::new()),
        };
        {
            let mut m = run.meta.lock().unwrap_or_else(|p| p.into_inner());
            m.insert("status", "1".into());
            m.insert("end_time", "null".into());
        }
        run.write_meta()?;
        log::info!("MLflow: continuing run {id}");
        Ok(Some(run))
    }

    /// The run's folder.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_meta(&self) -> Result<(), String> {
        let meta = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        let pairs: Vec<(&str, String)> = meta.iter().map(|(k, v)| (*k, v.clone())).collect();
        write_atomic(&self.dir.join("meta.yaml"), &yaml(&pairs))
    }

    fn warn(&self, e: &str) {
        let mut broken = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        if !*broken {
            log::warn!("MLflow tracking stopped for this run: {e}");
            *broken = true;
        }
    }

    pub(super) fn ok(&self) -> bool {
        !*self.broken.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file of `key` under `sub` (`metrics`, `params`, `tags`): a name MLflow takes, its
    /// `/` making folders.
    pub(super) fn key_path(&self, sub: &str, key: &str) -> PathBuf {
        let base = self.dir.join(sub);
        let mut clean = sanitize(key);
        // In the file store a name is a file and its `/` make folders, so `loss` and
        // `loss/loss` cannot both be: the later one's last levels are joined with `.`, and a
        // name that is already a folder gets a `_`.
        if sub != "tags" {
            let parts: Vec<&str> = clean.split('/').collect();
            let blocked = (1..parts.len()).any(|n| base.join(parts[..n].join("/")).is_file());
            if blocked {
                clean = format!("{}/{}", parts[0], parts[1..].join("."));
            }
            while base.join(&clean).is_dir() {
                clean.push('_');
            }
        }
        if clean != key && sub != "tags" {
            let mut renamed = self.renamed.lock().unwrap_or_else(|p| p.into_inner());
            if renamed.insert(key.to_owned(), clean.clone()).is_none() {
                let text = serde_json::to_string(&*renamed).expect("strings serialize");
                drop(renamed);
                self.set_tag("nc7.renamed_keys", &text);
            }
        }
        let mut path = base;
        for part in clean.split('/').filter(|p| !p.is_empty()) {
            path.push(part);
        }
        path
    }

    fn write_value(&self, sub: &str, key: &str, value: &str) {
        if !self.ok() {
            return;
        }
        let path = self.key_path(sub, key);
        let written = path
            .parent()
            .map_or(Ok(()), |p| fs::create_dir_all(p).map_err(io("create", p)))
            .and_then(|()| write_atomic(&path, value));
        if let Err(e) = written {
            self.warn(&e);
        }
    }

    /// Sets a tag.
    pub(super) fn set_tag(&self, key: &str, value: &str) {
        self.write_value("tags", key, &truncate(value, 8000));
    }

    /// Logs params; a param already logged keeps its value (params do not change in MLflow).
    pub(super) fn log_params(&self, params: &BTreeMap<String, String>) {
        for (key, value) in params {
            let key = truncate(key, 250);
            if self.key_path("params", &key).exists() {
                continue;
            }
            self.write_value("params", &key, &truncate(value, 6000));
        }
    }

    /// Logs metric points, one line each (`timestamp value step`).
    pub(super) fn log_metrics(&self, metrics: &[Metric]) {
        if !self.ok() {
            return;
        }
        for m in metrics {
            let path = self.key_path("metrics", &m.key);
            let line = format!("{} {} {}\n", m.timestamp, number(m.value), m.step);
            let written = path
                .parent()
                .map_or(Ok(()), |p| fs::create_dir_all(p).map_err(io("create", p)))
                .and_then(|()| {
                    fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .and_then(|mut f| f.write_all(line.as_bytes()))
                        .map_err(io("append to", &path))
                });
            if let Err(e) = written {
                self.warn(&e);
                return;
            }
        }
    }

    /// Writes `bytes` into the run's artifacts as `name`.
    pub(super) fn log_artifact(&self, bytes: &[u8], name: &str) {
        if !self.ok() {
            return;
        }
        let target = self.dir.join("artifacts").join(name);
        let copied = target
            .parent()
            .map_or(Ok(()), |p| fs::create_dir_all(p).map_err(io("create", p)))
            .and_then(|()| {
                crate::project::replace_file(&target, bytes).map_err(io("write", &target))
            });
        if let Err(e) = copied {
            self.warn(&e);
        }
    }

    /// Ends the run with `status`.
    pub(super) fn end(&self, status: RunStatus) {
        {
            let mut m = self.meta.lock().unwrap_or_else(|p| p.into_inner());
            m.insert("status", status.code().to_string());
            m.insert("end_time", now_ms().to_string());
        }
        if let Err(e) = self.write_meta() {
            self.warn(&e);
        }
    }
}

/// A metric value as Python's `float()` reads it.
pub(super) fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:?}")
    }
}

/// Drops the metric lines after `step` (and a torn last line) in every metric file below `dir`.
fn trim_metrics(dir: &Path, step: u64) -> Result<(), String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            trim_metrics(&path, step)?;
            continue;
        }
        let text = fs::read_to_string(&path).map_err(io("read", &path))?;
        let kept: String = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .filter(|l| {
                l.split_whitespace()
                    .nth(2)
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|s| s <= step)
            })
            .collect();
        if kept != text {
            write_atomic(&path, &kept)?;
        }
    }
    Ok(())
}
