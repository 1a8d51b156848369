//! The code of every error a command can end with (the `NC01xx` table of [`crate::diagnostic`]),
//! and how the command line prints it: `error[NC0107]: checkpoint … is corrupt: …`. A plan's
//! problems keep their own codes, one line each.
//!
//! Errors that wrap another (a nucleotide's failure around a data error, a boxed cause) take
//! the code of the first error in their chain that has one; what has none is a run failure.

use std::error::Error;
use std::io::Write;

use crate::coordinator::checkpoint::CheckpointError;
use crate::coordinator::handlers::CallbackError;
use crate::coordinator::load::LoadError;
use crate::coordinator::monitor::MonitorError;
use crate::coordinator::{InferError, TrainError};
use crate::export::{ExportError, SavedModelError};
use crate::{Code, Diagnostics};

/// An error that knows its code.
pub trait Coded: Error {
    /// Its code.
    fn code(&self) -> Code;

    /// The problems of a plan, each with its own code, when the error is one.
    fn diagnostics(&self) -> Option<&Diagnostics> {
        None
    }
}

/// A problem met while running, with its code: what the inference pipeline's stages report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Its code.
    pub code: Code,
    /// What went wrong, naming the file, sample or nucleotide.
    pub message: String,
}

impl Fault {
    /// A fault of `code`.
    pub fn new(code: Code, message: impl Into<String>) -> Fault {
        Fault {
            code,
            message: message.into(),
        }
    }

    /// The fault of an error that has a code: its code and its message.
    pub fn of(e: &dyn Coded) -> Fault {
        Fault::new(e.code(), e.to_string())
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for Fault {}

impl Coded for Fault {
    fn code(&self) -> Code {
        self.code
    }
}

std::thread_local! {
    /// Whether a panic on this thread is caught and reported as the run's error.
    static CAUGHT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What a panic said.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `f`, catching a panic in it: a run reports it as its error (with its step and batch),
/// so the panic hook [`install_panic_hook`] installs does not print it a second time.
pub fn catch<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    let before = CAUGHT.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CAUGHT.with(|c| c.set(before));
    result
}

/// Leaves panics that [`catch`] catches to the run's error (the log has them at debug level);
/// every other panic is printed as before.
pub fn install_panic_hook() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if CAUGHT.with(std::cell::Cell::get) {
            log::debug!("caught: {info}");
        } else {
            print(info);
        }
    }));
}

/// Raises `e` from code that cannot return an error (a loss, a metric): a run that catches
/// it ([`catch`]) fails with `e` and its code, not with a panic.
pub fn raise(e: crate::data::DataError) -> ! {
    std::panic::panic_any(e)
}

/// Prints `e` as the command's error: its plan's problems, or `error[NCxxxx]: …`.
pub fn report(e: &dyn Coded, err: &mut dyn Write) -> std::io::Result<()> {
    match e.diagnostics() {
        Some(d) => writeln!(err, "{d}"),
        None => writeln!(err, "error[{}]: {e}", e.code()),
    }
}

/// The code of any error: that of the first error in its chain that has one, else
/// [`Code::RUN_FAILED`].
pub fn code_of(e: &(dyn Error + 'static)) -> Code {
    code_or(e, Code::RUN_FAILED)
}

/// The code of `e`'s chain, or `default` when nothing in it has one.
pub fn code_or(e: &(dyn Error + 'static), default: Code) -> Code {
    chain(e).find_map(known).unwrap_or(default)
}

/// `e` and its causes, outermost first.
fn chain<'e>(e: &'e (dyn Error + 'static)) -> impl Iterator<Item = &'e (dyn Error + 'static)> {
    std::iter::successors(Some(e), |&e| e.source())
}

/// The code of `e` when its type has one (only `e`, not its causes).
fn known(e: &(dyn Error + 'static)) -> Option<Code> {
    macro_rules! coded {
        ($($t:ty),* $(,)?) => {
            $(if let Some(e) = e.downcast_ref::<$t>() {
                return Some(e.code());
            })*
        };
    }
    coded!(
        TrainError,
        InferError,
        crate::project::ProjectError,
        CheckpointError,
        MonitorError,
        crate::model::WeightsError,
        crate::config::SettingsError,
        crate::data::DataError,
        crate::data::BatchError,
        ExportError,
        SavedModelError,
        LoadError,
        CallbackError,
        crate::runtime::BuildError,
        crate::kpi::KpiError,
        crate::backend::DeviceError,
        crate::backend::BadDevice,
        crate::precision::BadPrecision,
        crate::registry::RegistryError,
        crate::plan::PlanError,
        Fault,
    );
    if e.is::<std::io::Error>() {
        return Some(Code::IO);
    }
    None
}

/// The code of a boxed cause.
fn boxed(e: &crate::BoxError) -> Code {
    code_of(&**e)
}

impl Coded for crate::plan::PlanError {
    fn code(&self) -> Code {
        self.0.errors().next().map_or(Code::SETTING, |d| d.code)
    }

    fn diagnostics(&self) -> Option<&Diagnostics> {
        Some(&self.0)
    }
}

impl Coded for TrainError {
    fn code(&self) -> Code {
        match self {
            TrainError::Plan(e) => e.code(),
            TrainError::Project(e) => e.code(),
            TrainError::Checkpoint(e) => e.code(),
            TrainError::Monitor(e) => e.code(),
            TrainError::Weights(e) => e.code(),
            TrainError::Settings(e) => e.code(),
            TrainError::Data(e) => e.code(),
            TrainError::Export(e) => e.code(),
            TrainError::Load(e) => e.code(),
            TrainError::Callback(e) => e.code(),
            TrainError::Threads(_) => Code::SETTING,
            TrainError::EmptyDataset { .. } => Code::EMPTY_DATASET,
            TrainError::NonFinite { .. } => Code::NON_FINITE,
            TrainError::ChangedOrder { .. } => Code::CHANGED_ORDER,
            TrainError::Failed { source, .. } | TrainError::Step(source) => boxed(source),
            TrainError::Panicked { .. } => Code::PANICKED,
        }
    }

    fn diagnostics(&self) -> Option<&Diagnostics> {
        match self {
            TrainError::Plan(e) => e.diagnostics(),
            _ => None,
        }
    }
}

impl Coded for InferError {
    fn code(&self) -> Code {
        match self {
            InferError::Plan(e) => e.code(),
            InferError::Project(e) => e.code(),
            InferError::NoWeights { .. } => Code::NO_WEIGHTS,
            InferError::Weights(e) => e.code(),
            InferError::Callback(e) => e.code(),
            InferError::Kpi(e) => e.code(),
            InferError::Threads(_) => Code::SETTING,
            InferError::Run(f) => f.code,
        }
    }

    fn diagnostics(&self) -> Option<&Diagnostics> {
        match self {
            InferError::Plan(e) => e.diagnostics(),
            _ => None,
        }
    }
}

impl Coded for crate::project::ProjectError {
    fn code(&self) -> Code {
        use crate::project::ProjectError as E;
        match self {
            E::Io { .. } => Code::IO,
            E::TrainingExists { .. } => Code::TRAINING_EXISTS,
            E::NothingToContinue { .. } => Code::NOTHING_TO_CONTINUE,
            E::RunExists { .. } => Code::RUN_EXISTS,
            E::InUse { .. } => Code::IN_USE,
            E::BadRunName { .. } => Code::BAD_RUN_NAME,
        }
    }
}

impl Coded for CheckpointError {
    fn code(&self) -> Code {
        match self {
            CheckpointError::Io { .. } => Code::IO,
            CheckpointError::Corrupt { .. } => Code::CORRUPT,
            CheckpointError::NoCheckpoint { .. }
            | CheckpointError::NoBest { .. }
            | CheckpointError::BadName(_)
            | CheckpointError::NotACheckpoint { .. } => Code::NO_WEIGHTS,
        }
    }
}

impl Coded for MonitorError {
    fn code(&self) -> Code {
        match self {
            MonitorError::Io { .. } => Code::IO,
            MonitorError::Corrupt { .. } => Code::CORRUPT,
            MonitorError::NoValue { .. } => Code::SETTING,
        }
    }
}

impl Coded for crate::model::WeightsError {
    fn code(&self) -> Code {
        use crate::model::WeightsError as E;
        match self {
            E::Read { .. } => Code::IO,
            E::Format { .. } | E::OptimizerState(_) => Code::CORRUPT,
            E::Mismatch(_) | E::NoPlugin(_) => Code::WEIGHTS_MISMATCH,
        }
    }
}

impl Coded for crate::config::SettingsError {
    fn code(&self) -> Code {
        Code::SETTING
    }
}

impl Coded for crate::data::DataError {
    /// A data problem, but one the storage causes (full, read-only, no permission) is the
    /// storage's.
    fn code(&self) -> Code {
        use std::io::ErrorKind as K;
        let storage = self.source().into_iter().flat_map(chain).any(|e| {
            e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    K::StorageFull
                        | K::QuotaExceeded
                        | K::FileTooLarge
                        | K::ReadOnlyFilesystem
                        | K::PermissionDenied
                        | K::WriteZero
                )
            })
        });
        if storage { Code::IO } else { Code::DATA }
    }
}

impl Coded for crate::data::BatchError {
    fn code(&self) -> Code {
        Code::DATA
    }
}

impl Coded for ExportError {
    fn code(&self) -> Code {
        match self {
            ExportError::Io { .. } => Code::IO,
            ExportError::Weights(e) => e.code(),
            ExportError::ReadBack(e) => e.code(),
            ExportError::Signature(_) => Code::RUN_FAILED,
        }
    }
}

impl Coded for SavedModelError {
    fn code(&self) -> Code {
        match self {
            SavedModelError::Read { .. } => Code::IO,
            SavedModelError::Json { .. }
            | SavedModelError::Corrupt { .. }
            | SavedModelError::NoInputs { .. } => Code::CORRUPT,
        }
    }
}

impl Coded for LoadError {
    fn code(&self) -> Code {
        match self {
            LoadError::Missing { .. } | LoadError::NoWeights { .. } => Code::NO_WEIGHTS,
            LoadError::Checkpoint(e) => e.code(),
            LoadError::SavedModel(e) => e.code(),
            LoadError::Entry { source, .. } => source.code(),
            LoadError::Read(e) => e.code(),
            LoadError::NoPlugin { .. }
            | LoadError::NoSource { .. }
            | LoadError::Mismatch { .. } => Code::WEIGHTS_MISMATCH,
        }
    }
}

impl Coded for CallbackError {
    fn code(&self) -> Code {
        match self {
            CallbackError::Build { source, .. } => source.code(),
            CallbackError::Run { source, .. } => boxed(source),
            CallbackError::Route(e) => code_of(e),
        }
    }
}

impl Coded for crate::runtime::BuildError {
    fn code(&self) -> Code {
        use crate::runtime::BuildError as E;
        match self {
            E::Build { source, .. } => boxed(source),
            E::Backend { .. } => Code::DEVICE,
            E::Kind { .. } => Code::CLASS_NAME,
        }
    }
}

impl Coded for crate::kpi::KpiError {
    fn code(&self) -> Code {
        use crate::kpi::KpiError as E;
        match self {
            E::Build(e) => e.code(),
            E::Run { source, .. } => code_of(&**source),
            E::Split(_) => Code::DATA,
            E::Write { .. } => Code::IO,
        }
    }
}

impl Coded for crate::backend::DeviceError {
    fn code(&self) -> Code {
        Code::DEVICE
    }
}

impl Coded for crate::backend::BadDevice {
    fn code(&self) -> Code {
        Code::DEVICE
    }
}

impl Coded for crate::precision::BadPrecision {
    fn code(&self) -> Code {
        Code::SETTING
    }
}

impl Coded for crate::registry::RegistryError {
    fn code(&self) -> Code {
        Code::CLASS_NAME
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_gives_its_code_through_the_errors_around_it() {
        let data = crate::data::DataError::from("image 3.png: not a PNG".to_owned());
        let step = TrainError::Step(Box::new(data));
        assert_eq!(step.code(), Code::DATA);
        let io = std::io::Error::other("disk full");
        let failed = TrainError::Failed {
            what: "saving weights".into(),
            source: Box::new(io),
        };
        assert_eq!(failed.code(), Code::IO);
        let unknown = TrainError::Step("a nucleotide's own error".into());
        assert_eq!(unknown.code(), Code::RUN_FAILED);
        let mut out = Vec::new();
        report(&unknown, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "error[NC0116]: a nucleotide's own error\n"
        );
    }

    #[test]
    fn every_code_of_the_table_is_documented() {
        let table = include_str!("../graph/diagnostic.rs");
        for n in 101..=119 {
            assert!(table.contains(&format!("| `NC0{n}` |")), "NC0{n}");
        }
    }
}
