//! Watching evaluations: early stopping and keeping the best checkpoint.
//!
//! Every evaluation's means are appended to `training/evaluations.json`, written atomically
//! after each evaluation. Both decisions are functions of that history, so a continued run
//! (which drops entries newer than its checkpoint) decides exactly as the uninterrupted run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Whether smaller or larger values are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MonitorMode {
    /// Smaller is better (losses).
    #[default]
    Min,
    /// Larger is better (accuracy, IoU).
    Max,
}

/// `trainer_config.keep_best`: the checkpoint with the best evaluation of `monitor` is never
/// removed; `checkpoints/best.json` names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepBest {
    /// An evaluation value: `loss`, a loss key, or `<nucleotide>/<key>` of a metric.
    pub monitor: String,
    /// `min` (default) or `max`.
    #[serde(default)]
    pub mode: MonitorMode,
}

/// `trainer_config.early_stopping`: stops training when `monitor` has not improved by more
/// than `min_delta` for `patience` evaluations in a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// An evaluation value: `loss`, a loss key, or `<nucleotide>/<key>` of a metric.
    pub monitor: String,
    /// `min` (default) or `max`.
    #[serde(default)]
    pub mode: MonitorMode,
    /// Evaluations without improvement before stopping (at least 1; default 3).
    #[serde(default = "three")]
    pub patience: u64,
    /// The least change that counts as an improvement (default 0).
    #[serde(default)]
    pub min_delta: f64,
}

fn three() -> u64 {
    3
}

/// One evaluation's means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The global step it evaluated.
    pub step: u64,
    /// Epochs trained.
    pub epoch: u64,
    /// Mean losses and metrics.
    pub values: BTreeMap<String, f64>,
}

/// The evaluations of a training run, kept in `training/evaluations.json`.
#[derive(Debug, Clone)]
pub struct History {
    path: PathBuf,
    /// Oldest first.
    pub evaluations: Vec<Evaluation>,
}

/// Why the evaluation history cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// `evaluations.json` cannot be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `evaluations.json` is not a list of evaluations.
    #[error("{} is not a list of evaluations ({source}); remove it to continue without the evaluation history", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the JSON reader said.
        source: serde_json::Error,
    },
    /// An evaluation lacks the monitored value.
    #[error("trainer_config.{field}.monitor: the evaluation has no value `{monitor}`; it has {}", have.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "))]
    NoValue {
        /// `keep_best` or `early_stopping`.
        field: &'static str,
        /// The monitor.
        monitor: String,
        /// The values the evaluation has.
        have: Vec<String>,
    },
}

impl History {
    /// An empty history of a fresh run in `training_root`: nothing is read.
    pub fn fresh(training_root: &Path) -> History {
        History {
            path: training_root.join("evaluations.json"),
            evaluations: Vec::new(),
        }
    }

    /// The history of the run in `training_root`: empty for a fresh run; for a continued one
    /// the evaluations up to `up_to_step` (the checkpoint's step).
    pub fn open(
        training_root: &Path,
        resume: bool,
        up_to_step: u64,
    ) -> Result<History, MonitorError> {
        let path = training_root.join("evaluations.json");
        let mut evaluations: Vec<Evaluation> = Vec::new();
        if resume && path.exists() {
            let text = std::fs::read(&path).map_err(|source| MonitorError::Io {
                action: "read",
                path: path.clone(),
                source,
            })?;
            evaluations =
                serde_json::from_slice(&text).map_err(|source| MonitorError::Corrupt {
                    path: path.clone(),
                    source,
                })?;
            evaluations.retain(|e| e.step <= up_to_step);
        }
        Ok(History { path, evaluations })
    }

    /// Whether the evaluation of `step` is recorded.
    pub fn has(&self, step: u64) -> bool {
        self.at(step).is_some()
    }

    /// The recorded evaluation of `step`.
    pub fn at(&self, step: u64) -> Option<&BTreeMap<String, f64>> {
        self.evaluations
            .iter()
            .find(|e| e.step == step)
            .map(|e| &e.values)
    }

    /// Records an evaluation and writes the file (a temporary file renamed over it).
    pub fn push(&mut self, evaluation: Evaluation) -> Result<(), MonitorError> {
        self.evaluations.retain(|e| e.step != evaluation.step);
        self.evaluations.push(evaluation);
        let text = serde_json::to_vec_pretty(&self.evaluations).expect("evaluations serialize");
        crate::project::replace_file(&self.path, &text).map_err(|source| MonitorError::Io {
            action: "write",
            path: self.path.clone(),
            source,
        })
    }

    /// The values of `monitor`, oldest first; an error listing the values there are when an
    /// evaluation lacks it.
    fn series(&self, monitor: &str, field: &'static str) -> Result<Vec<(u64, f64)>, MonitorError> {
        self.evaluations
            .iter()
            .map(|e| match e.values.get(monitor) {
                Some(v) => Ok((e.step, *v)),
                None => Err(MonitorError::NoValue {
                    field,
                    monitor: monitor.to_owned(),
                    have: e.values.keys().cloned().collect(),
                }),
            })
            .collect()
    }

    /// The step and value of the best evaluation of `keep.monitor` (the earliest of equals).
    pub fn best(&self, keep: &KeepBest) -> Result<Option<(u64, f64)>, MonitorError> {
        let mut best: Option<(u64, f64)> = None;
        for (step, v) in self.series(&keep.monitor, "keep_best")? {
            if best.is_none_or(|(_, b)| better(keep.mode, v, b, 0.0)) {
                best = Some((step, v));
            }
        }
        Ok(best)
    }

    /// Why training should stop now, if it should.
    pub fn should_stop(&self, stop: &EarlyStopping) -> Result<Option<String>, MonitorError> {
        let mut best: Option<(u64, f64)> = None;
        let mut waited = 0;
        for (step, v) in self.series(&stop.monitor, "early_stopping")? {
            if best.is_none_or(|(_, b)| better(stop.mode, v, b, stop.min_delta)) {
                best = Some((step, v));
                waited = 0;
            } else {
                waited += 1;
            }
        }
        Ok(match best {
            Some((step, value)) if waited >= stop.patience.max(1) => Some(format!(
                "early stopping: `{}` has not improved by more than {} for {waited} evaluations (best {value} after step {step})",
                stop.monitor, stop.min_delta
            )),
            _ => None,
        })
    }
}

/// Whether `v` improves on `best` by more than `delta`.
fn better(mode: MonitorMode, v: f64, best: f64, delta: f64) -> bool {
    if !v.is_finite() {
        return false;
    }
    match mode {
        MonitorMode::Min => v < best - delta,
        MonitorMode::Max => v > best + delta,
    }
}

/// `checkpoints/best.json`: which checkpoint is the best so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestCheckpoint {
    /// Its folder name.
    pub checkpoint: String,
    /// Its global step.
    pub step: u64,
    /// What was monitored.
    pub monitor: String,
    /// Its value.
    pub value: f64,
}

/// The file naming the best checkpoint in `checkpoints_dir`.
pub(crate) fn best_file(checkpoints_dir: &Path) -> PathBuf {
    checkpoints_dir.join("best.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(values: &[f64]) -> History {
        History {
            path: PathBuf::from("unused.json"),
            evaluations: values
                .iter()
                .enumerate()
                .map(|(i, v)| Evaluation {
                    step: (i as u64 + 1) * 10,
                    epoch: i as u64 + 1,
                    values: [("loss".to_owned(), *v)].into(),
                })
                .collect(),
        }
    }

    fn stopping(mode: MonitorMode, patience: u64, min_delta: f64) -> EarlyStopping {
        EarlyStopping {
            monitor: "loss".into(),
            mode,
            patience,
            min_delta,
        }
    }

    #[test]
    fn early_stopping_table() {
        use MonitorMode::*;
        // (values, mode, patience, min_delta, stops)
        let cases: &[(&[f64], MonitorMode, u64, f64, bool)] = &[
            (&[], Min, 1, 0.0, false),
            (&[1.0], Min, 1, 0.0, false),
            (&[1.0, 0.9, 0.8], Min, 1, 0.0, false),
            (&[1.0, 1.0], Min, 1, 0.0, true),
            (&[1.0, 1.1, 1.2], Min, 3, 0.0, false),
            (&[1.0, 1.1, 1.2, 1.3], Min, 3, 0.0, true),
            (&[1.0, 1.1, 0.5, 0.6], Min, 2, 0.0, false),
            (&[1.0, 0.95, 0.92], Min, 2, 0.1, true),
            (&[0.5, 0.6, 0.7], Max, 1, 0.0, false),
            (&[0.5, 0.5], Max, 1, 0.0, true),
            (&[1.0, f64::NAN], Min, 1, 0.0, true),
        ];
        for (values, mode, patience, delta, stops) in cases {
            let got = history(values)
                .should_stop(&stopping(*mode, *patience, *delta))
                .unwrap();
            assert_eq!(
                got.is_some(),
                *stops,
                "{values:?} {mode:?} {patience} {delta}: {got:?}"
            );
        }
        let reason = history(&[1.0, 1.5])
            .should_stop(&stopping(Min, 1, 0.0))
            .unwrap()
            .unwrap();
        assert!(reason.contains("best 1 after step 10"), "{reason}");
    }

    #[test]
    fn best_is_the_earliest_of_the_best() {
        let keep = |mode| KeepBest {
            monitor: "loss".into(),
            mode,
        };
        let h = history(&[0.5, 0.3, 0.3, 0.4]);
        assert_eq!(h.best(&keep(MonitorMode::Min)).unwrap(), Some((20, 0.3)));
        assert_eq!(h.best(&keep(MonitorMode::Max)).unwrap(), Some((10, 0.5)));
        assert_eq!(history(&[]).best(&keep(MonitorMode::Min)).unwrap(), None);
    }

    #[test]
    fn a_missing_monitor_lists_the_values() {
        let e = history(&[1.0])
            .best(&KeepBest {
                monitor: "acc".into(),
                mode: MonitorMode::Max,
            })
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("keep_best.monitor") && e.contains("no value `acc`") && e.contains("`loss`"),
            "{e}"
        );
    }

    #[test]
    fn history_round_trips_and_drops_newer_evaluations() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path(), false, 0).unwrap();
        for step in [10, 20, 30] {
            h.push(Evaluation {
                step,
                epoch: step / 10,
                values: [("loss".to_owned(), 1.0 / step as f64)].into(),
            })
            .unwrap();
        }
        let h = History::open(dir.path(), true, 20).unwrap();
        assert_eq!(
            h.evaluations.iter().map(|e| e.step).collect::<Vec<_>>(),
            [10, 20]
        );
        assert!(h.has(20) && !h.has(30));
        assert!(
            History::open(dir.path(), false, 20)
                .unwrap()
                .evaluations
                .is_empty()
        );
        std::fs::write(dir.path().join("evaluations.json"), "{").unwrap();
        let e = History::open(dir.path(), true, 20).unwrap_err().to_string();
        assert!(e.contains("remove it"), "{e}");
    }
}
