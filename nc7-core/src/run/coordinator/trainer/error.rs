//! Why training failed: typed, with the source of each failure kept.

use super::*;

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The project's configs have problems: every one, with its file and the fix.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The project's folders cannot be used as asked.
    #[error(transparent)]
    Project(#[from] ProjectError),
    /// A checkpoint cannot be written or used.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The evaluation history cannot be read, written or used.
    #[error(transparent)]
    Monitor(#[from] super::super::monitor::MonitorError),
    /// Weights or optimizer state cannot be saved, read or loaded.
    #[error(transparent)]
    Weights(#[from] crate::model::WeightsError),
    /// A setting turned out wrong when it was used (a plan checks them all first).
    #[error(transparent)]
    Settings(#[from] crate::config::SettingsError),
    /// The summaries or another data file cannot be written.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A saved model cannot be written.
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    /// `load_config` cannot load its weights.
    #[error(transparent)]
    Load(#[from] super::super::load::LoadError),
    /// A callback failed.
    #[error(transparent)]
    Callback(#[from] super::super::handlers::CallbackError),
    /// The run's compute threads cannot be started.
    #[error(transparent)]
    Threads(#[from] crate::threads::ThreadsError),
    /// A dataset has no samples.
    #[error("the {slot} dataset `{name}` has no samples; give it data, or check its file list")]
    EmptyDataset {
        /// `train` or `eval`.
        slot: &'static str,
        /// The dataset's name.
        name: String,
    },
    /// The loss is not finite.
    #[error(
        "the loss is not finite at step {step} (epoch {epoch}, iteration {iteration}): {what} is {loss}; training stopped, the last good checkpoint is kept in {}",
        checkpoints.display()
    )]
    NonFinite {
        /// The step (from 1).
        step: u64,
        /// Its epoch.
        epoch: u64,
        /// Its iteration in the epoch.
        iteration: u64,
        /// The loss keys at fault, or the total loss.
        what: String,
        /// The total loss.
        loss: f64,
        /// The checkpoints folder.
        checkpoints: PathBuf,
    },
    /// `--continue` would walk the data in another order than the run it continues.
    #[error(
        "cannot continue from {}: the data order or the devices changed since it was written ({}); a continued run would not be the run it continues. Undo the change, start a fresh run (move `training/`, `checkpoints/` and `saved_models/` away), or continue anyway with `--accept-changed-order`",
        checkpoint.display(),
        changes.join(", ")
    )]
    ChangedOrder {
        /// The checkpoint.
        checkpoint: PathBuf,
        /// What changed: `random_seed 3 → 4`.
        changes: Vec<String>,
    },
    /// Something failed while doing `what`.
    #[error("{what}: {source}")]
    Failed {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: BoxError,
    },
    /// A nucleotide, a callback or the data failed; the message names it.
    #[error(transparent)]
    Step(BoxError),
    /// Code the run called panicked (a nucleotide, burn, a callback).
    #[error(
        "training failed at step {step}: {message}{}; the run is marked failed, and the last good checkpoint is kept",
        batch_of(samples)
    )]
    Panicked {
        /// The step it was in (from 1).
        step: u64,
        /// The panic's message.
        message: String,
        /// The names (`file_name`) of the batch's samples, when the data gives them.
        samples: Vec<String>,
    },
}

/// ` (the batch held a, b)`, or nothing when the data names no samples.
pub(crate) fn batch_of(samples: &[String]) -> String {
    if samples.is_empty() {
        String::new()
    } else {
        format!(" (the batch held {})", samples.join(", "))
    }
}

/// The message of a caught panic.
pub(crate) use crate::failure::panic_message;

impl From<BoxError> for TrainError {
    fn from(e: BoxError) -> Self {
        TrainError::Step(e)
    }
}

impl From<String> for TrainError {
    fn from(e: String) -> Self {
        TrainError::Step(e.into())
    }
}

/// A `map_err` that says what was being done.
pub(super) fn failed<E: Into<BoxError>>(what: &str) -> impl FnOnce(E) -> TrainError + '_ {
    move |e| TrainError::Failed {
        what: what.to_owned(),
        source: e.into(),
    }
}

/// The error of a non-finite loss: the step, where it is in the run, the loss keys at fault.
pub(super) fn non_finite(
    losses: &BTreeMap<String, f64>,
    loss: f64,
    step: u64,
    pos: Position,
    dirs: &TrainingDirs,
) -> TrainError {
    let bad: Vec<String> = losses
        .iter()
        .filter(|(_, v)| !v.is_finite())
        .map(|(k, _)| format!("`{k}`"))
        .collect();
    TrainError::NonFinite {
        step: step + 1,
        epoch: pos.epoch,
        iteration: pos.iteration,
        what: if bad.is_empty() {
            "the total loss".to_owned()
        } else {
            bad.join(", ")
        },
        loss,
        checkpoints: dirs.checkpoints.clone(),
    }
}
