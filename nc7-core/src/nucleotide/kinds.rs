//! What a nucleotide is, as Rust traits: what `#[nucleotide]` writes ([`Nucleotide`]), what
//! every kind shares ([`Build`]) and one trait per kind with that kind's contract.

use std::path::PathBuf;

use burn::prelude::{Backend, Tensor};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::gene::Kind;
use crate::glue::{Keys, signature_of};
use crate::handler::BoxError;
use crate::keys::Signature;
use crate::nest::Nest;

/// What `#[nucleotide]` writes for a type: its name, where it lives, its kind and its docs.
pub trait Nucleotide {
    /// The type's name: what a config's `class_name` says.
    const CLASS_NAME: &'static str;
    /// The full path, `crate::module::Type`, which a `class_name` may also say.
    const PATH: &'static str;
    /// The kind.
    const KIND: Kind;
    /// The type's doc comment.
    const DOCS: &'static str;
}

/// A nucleotide's constructor parameters: a serde struct whose JSON schema (with `schemars`)
/// gives `info` and `sample-config` the fields, their types, defaults and docs.
pub trait NucleotideConfig: Serialize + DeserializeOwned + schemars::JsonSchema {}
impl<T: Serialize + DeserializeOwned + schemars::JsonSchema> NucleotideConfig for T {}

/// What every kind shares: how the nucleotide is built from its config, and its key structs.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is declared a nucleotide but does not implement `Build<{B}>`",
    label = "needs `impl<B: Backend> Build<B> for {Self}`",
    note = "`Build` gives a nucleotide its `Config`, its `Input` and `Output` key structs, and `build`"
)]
pub trait Build<B: Backend>: Sized {
    /// The constructor parameters (the common fields `name`, `inbound_nodes`,
    /// `incoming_keys_mapping` and `trainable` are nc7's, not part of it).
    type Config: NucleotideConfig;
    /// The incoming keys: a struct deriving `Incoming` (or `Generated`: one nucleotide's
    /// generated keys are often the next one's incoming keys).
    type Input: Keys<B>;
    /// The generated keys.
    type Output: Keys<B>;

    /// Builds the nucleotide on a device.
    fn build(config: &Self::Config, device: &B::Device) -> Result<Self, BoxError>;
}

/// The signature of a nucleotide type, on any backend.
pub fn signature<B: Backend, N: Build<B>>() -> Signature {
    signature_of::<B, N::Input, N::Output>()
}

/// The optional key every KPI accumulator takes: when a sample's `evaluate` is true, the
/// samples accumulated so far are combined into KPIs.
pub const EVALUATE_KEY: &str = "evaluate";

/// The signature nc7 routes a registered type by: its own keys, and the keys nc7 gives every
/// nucleotide of its kind (a KPI accumulator's optional `evaluate`).
pub fn registered_signature<B: Backend, N: Build<B> + Nucleotide>() -> Signature {
    let mut signature = signature::<B, N>();
    if N::KIND == Kind::KpiAccumulator && !signature.incoming.iter().any(|k| k.name == EVALUATE_KEY)
    {
        signature.incoming.to_mut().push(crate::keys::KeySpec {
            name: std::borrow::Cow::Borrowed(EVALUATE_KEY),
            optional: true,
            kind: crate::keys::ValueKind::Bool,
            doc: std::borrow::Cow::Borrowed(
                "combine the samples accumulated so far into KPIs after this one",
            ),
            children: &[],
        });
    }
    signature
}

/// The config of a nucleotide without parameters: `{}` (or the common fields alone).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// What part of a run is going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Training: gradients are taken.
    Train,
    /// Evaluation during training.
    Eval,
    /// Inference.
    Infer,
}

/// Where in a run an iteration is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IterationInfo {
    /// The epoch, from 1.
    pub epoch: usize,
    /// The iteration within the epoch, from 1.
    pub iteration: usize,
    /// Seconds the iteration took so far.
    pub execution_time: f64,
    /// Whether it is the last iteration of the epoch or run.
    pub is_last: bool,
}

/// Where scalar summaries go: the trainer's TensorBoard writer in a run, [`MemorySummaries`]
/// in tests. Writers take `&self` so that callbacks can share one.
pub trait SummaryWriter: Send + Sync {
    /// Records `value` under `tag` at `step`.
    fn scalar(&self, tag: &str, value: f64, step: u64);
}

/// A summary writer that keeps everything in memory.
#[derive(Debug, Default)]
pub struct MemorySummaries {
    scalars: std::sync::Mutex<Vec<(String, f64, u64)>>,
}

impl MemorySummaries {
    /// Everything recorded so far: `(tag, value, step)`.
    pub fn scalars(&self) -> Vec<(String, f64, u64)> {
        self.scalars
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

impl SummaryWriter for MemorySummaries {
    fn scalar(&self, tag: &str, value: f64, step: u64) {
        let mut scalars = self
            .scalars
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        scalars.push((tag.to_owned(), value, step));
    }
}

/// What a callback knows about the run it is in.
#[derive(Clone)]
pub struct CallbackContext {
    /// Train, eval or infer.
    pub mode: Mode,
    /// The directory the callback may write to.
    pub log_dir: PathBuf,
    /// Where the callback writes summaries.
    pub summaries: std::sync::Arc<dyn SummaryWriter>,
    /// The step summaries are written at.
    pub summary_step: u64,
    /// The current iteration.
    pub iteration: IterationInfo,
    /// Iterations in one epoch of this mode.
    pub iterations_per_epoch: usize,
    /// Asks the run to stop (early stopping, a budget, an external signal).
    pub control: RunControl,
    /// Which run this is: its name, its MLflow run, what it sets over the project's configs.
    pub run: std::sync::Arc<RunInfo>,
}

/// Which run a callback is in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunInfo {
    /// The run's name (`--run-name`; a training's default is its start, `20261202-071500`).
    pub name: String,
    /// Its MLflow run id, when tracking is on.
    pub mlflow_run_id: Option<String>,
    /// The config values it sets over the project's own configs (`--set`, `NC7_…`,
    /// `--config-dir`), by path: its hyperparameters in an experiment.
    pub hyperparameters: std::collections::BTreeMap<String, String>,
}

/// How a run ended, for [`CoordinatorCallback::on_run_end`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// Finished, stopped early, interrupted or failed.
    pub status: RunEnd,
    /// Why it stopped early, was interrupted, or failed (the error).
    pub reason: Option<String>,
    /// The last step (training) or iteration (inference) it reached.
    pub step: u64,
    /// The last evaluation's values (training) or the KPIs (inference), by name.
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// How long it ran.
    pub elapsed: std::time::Duration,
}

/// How a run ended.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// It ran to its end.
    Finished,
    /// It stopped early as configured (early stopping, a callback, `max_epochs`).
    Stopped,
    /// Ctrl-C (or a stop signal) interrupted it.
    Interrupted,
    /// It failed with an error.
    Failed,
}

impl RunEnd {
    /// How a run ended that failed or not, with the reason it stopped early, if it did: a
    /// signal's stop ([`crate::signals::stop_reason`]) is an interruption.
    pub fn of(failed: bool, stopped: Option<&str>) -> RunEnd {
        match (failed, stopped) {
            (true, _) => RunEnd::Failed,
            (false, Some(r)) if crate::signals::is_interruption(r) => RunEnd::Interrupted,
            (false, Some(_)) => RunEnd::Stopped,
            (false, None) => RunEnd::Finished,
        }
    }

    /// The run record's word for it (`nc7_project.json`): an interrupted run is `stopped`.
    pub fn record_status(self) -> &'static str {
        match self {
            RunEnd::Finished => "finished",
            RunEnd::Stopped | RunEnd::Interrupted => "stopped",
            RunEnd::Failed => "failed",
        }
    }

    /// The lower-case name (`finished`).
    pub fn name(self) -> &'static str {
        match self {
            RunEnd::Finished => "finished",
            RunEnd::Stopped => "stopped",
            RunEnd::Interrupted => "interrupted",
            RunEnd::Failed => "failed",
        }
    }
}

/// How a callback asks the run it is in to stop: the trainer stops after the current step,
/// writes a checkpoint and reports the reason.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    stop: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl RunControl {
    /// Asks the run to stop, saying why; the first reason given is kept.
    pub fn request_stop(&self, reason: impl Into<String>) {
        let mut s = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_none() {
            *s = Some(reason.into());
        }
    }

    /// Why a stop was asked for, if it was.
    pub fn stop_requested(&self) -> Option<String> {
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl std::fmt::Debug for CallbackContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackContext")
            .field("mode", &self.mode)
            .field("log_dir", &self.log_dir)
            .field("summary_step", &self.summary_step)
            .field("iteration", &self.iteration)
            .field("iterations_per_epoch", &self.iterations_per_epoch)
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

/// A part of the network: turns inputs into predictions.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is declared a ModelPlugin nucleotide but does not implement `ModelPlugin<{B}>`",
    label = "needs `impl<B: Backend> ModelPlugin<B> for {Self}`"
)]
pub trait ModelPlugin<B: Backend>: Build<B> {
    /// Computes the outputs.
    fn forward(&self, input: Self::Input, mode: Mode) -> Self::Output;
}

/// Computes losses from plugin outputs. The total loss is the weighted sum of the generated
/// keys whose names start with `loss` (see [`total_loss`]).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is declared a ModelLoss nucleotide but does not implement `ModelLoss<{B}>`",
    label = "needs `impl<B: Backend> ModelLoss<B> for {Self}`"
)]
pub trait ModelLoss<B: Backend>: Build<B> {
    /// Computes the losses.
    fn loss(&self, input: Self::Input, mode: Mode) -> Self::Output;
}

/// Turns raw predictions into final results; not run in training.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is declared a ModelPostProcessor nucleotide but does not implement `ModelPostProcessor<{B}>`",
    label = "needs `impl<B: Backend> ModelPostProcessor<B> for {Self}`"
)]
pub trait ModelPostProcessor<B: Backend>: Build<B> {
    /// Post-processes.
    fn process(&self, input: Self::Input, mode: Mode) -> Self::Output;
}

/// Computes metrics; runs after losses and before summaries.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is declared a ModelMetric nucleotide but does not implement `ModelMetric<{B}>`",
    label = "needs `impl<B: Backend> ModelMetric<B> for {Self}`"
)]
pub trait ModelMetric<B: Backend>: Build<B> {
    /// Computes the metrics.
    fn metric(&self, input: Self::Input, mode: Mode) -> Self::Output;
}

/// Produces summaries: generated keys named `scalar_…`, `image_…`, `histogram_…`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is declared a ModelSummary nucleotide but does not implement `ModelSummary<{B}>`",
    label = "needs `impl<B: Backend> ModelSummary<B> for {Self}`"
)]
pub trait ModelSummary<B: Backend>: Build<B> {
    /// Computes the summaries.
    fn summarize(&self, input: Self::Input, mode: Mode) -> Self::Output;
}

/// Gives training or evaluation samples by index.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is declared a Dataset nucleotide but does not implement `Dataset<{B}>`",
    label = "needs `impl<B: Backend> Dataset<B> for {Self}`"
)]
pub trait Dataset<B: Backend>: Build<B> {
    /// The number of samples.
    fn len(&self) -> usize;
    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// One sample.
    fn get(&self, index: usize) -> Result<Self::Output, BoxError>;
    /// One sample, knowing the epoch it is read for and the run's seed: what the trainer
    /// calls. By default [`Dataset::get`] of its index; a data set that augments its samples
    /// implements this and draws from [`SampleKey::sample_seed`](crate::data::SampleKey).
    fn get_for(&self, key: crate::data::SampleKey) -> Result<Self::Output, BoxError> {
        self.get(key.index)
    }
    /// How many samples of each part an epoch of a run with `seed` draws (a mix of data sets
    /// says, by data set); none by default. The trainer writes them to the summaries.
    fn epoch_counts(&self, epoch: u64, seed: u64) -> std::collections::BTreeMap<String, usize> {
        let _ = (epoch, seed);
        std::collections::BTreeMap::new()
    }
}

/// Gives inference samples one after another.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is declared a DataFeeder nucleotide but does not implement `DataFeeder<{B}>`",
    label = "needs `impl<B: Backend> DataFeeder<B> for {Self}`"
)]
pub trait DataFeeder<B: Backend>: Build<B> {
    /// The next sample, or `None` at the end.
    fn next_sample(&mut self) -> Result<Option<Self::Output>, BoxError>;

    /// Whether the feeder gives *feed lists*: several samples that make up one iteration
    /// (the tiles of one large image, say). The inferer then runs each list's samples in
    /// batches and hands the callbacks one iteration whose data and outputs are the batches
    /// put back together along the first dimension.
    fn feed_lists(&self) -> bool {
        false
    }

    /// The next feed list (see [`DataFeeder::feed_lists`]), or `None` at the end. By default
    /// a list of one sample from [`DataFeeder::next_sample`].
    fn next_feeds(&mut self) -> Result<Option<Vec<Self::Output>>, BoxError> {
        Ok(self.next_sample()?.map(|s| vec![s]))
    }
}

/// Reads raw data, such as files named in its input.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is declared a DataReader nucleotide but does not implement `DataReader<{B}>`",
    label = "needs `impl<B: Backend> DataReader<B> for {Self}`"
)]
pub trait DataReader<B: Backend>: Build<B> {
    /// Reads one sample.
    fn read(&mut self, input: Self::Input) -> Result<Self::Output, BoxError>;
}

/// Transforms read data.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is declared a DataProcessor nucleotide but does not implement `DataProcessor<{B}>`",
    label = "needs `impl<B: Backend> DataProcessor<B> for {Self}`"
)]
pub trait DataProcessor<B: Backend>: Build<B> {
    /// Transforms one sample.
    fn process(&mut self, input: Self::Input) -> Result<Self::Output, BoxError>;
}

/// Reacts to the iterations of a trainer or inferer.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is declared a CoordinatorCallback nucleotide but does not implement `CoordinatorCallback<{B}>`",
    label = "needs `impl<B: Backend> CoordinatorCallback<B> for {Self}`"
)]
pub trait CoordinatorCallback<B: Backend>: Build<B> {
    /// Before the first iteration.
    fn begin(&mut self, _ctx: &CallbackContext) -> Result<(), BoxError> {
        Ok(())
    }
    /// Before each iteration.
    fn on_iteration_start(&mut self, _ctx: &CallbackContext) -> Result<(), BoxError> {
        Ok(())
    }
    /// After each iteration, with the data and model outputs; `None` interrupts the callbacks
    /// that read this one, for this iteration.
    fn on_iteration_end(
        &mut self,
        input: Self::Input,
        ctx: &CallbackContext,
    ) -> Result<Option<Self::Output>, BoxError>;
    /// After the last iteration.
    fn end(&mut self, _ctx: &CallbackContext) -> Result<(), BoxError> {
        Ok(())
    }
    /// When the run is over, however it ended (finished, stopped, interrupted, failed; after
    /// `end` where `end` ran): the place to tell someone about it. An error here is a warning,
    /// never the run's failure.
    fn on_run_end(
        &mut self,
        _outcome: &RunOutcome,
        _ctx: &CallbackContext,
    ) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Computes KPIs for one sample: the batch is split before a KPI plugin sees it, so a key of
/// batch shape `[N, ...]` arrives as `[...]` (an `[N]` tensor as a scalar).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is declared a KpiPlugin nucleotide but does not implement `KpiPlugin<{B}>`",
    label = "needs `impl<B: Backend> KpiPlugin<B> for {Self}`"
)]
pub trait KpiPlugin<B: Backend>: Build<B> {
    /// Evaluates one sample.
    fn evaluate(&mut self, sample: Self::Input) -> Result<Self::Output, BoxError>;
}

/// Combines per-sample values into KPIs over many samples. nc7 keeps each sample's inputs and
/// hands them over when the optional `evaluate` key of a sample is true, and at the end of the
/// data; every accumulator takes `evaluate` without declaring it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is declared a KpiAccumulator nucleotide but does not implement `KpiAccumulator<{B}>`",
    label = "needs `impl<B: Backend> KpiAccumulator<B> for {Self}`"
)]
pub trait KpiAccumulator<B: Backend>: Build<B> {
    /// The KPIs of the samples accumulated since the last evaluation, in the order they came.
    fn combine(&mut self, samples: Vec<Self::Input>) -> Result<Self::Output, BoxError>;
}

/// The total loss of a loss nucleotide's outputs: every generated float tensor whose key starts
/// with `loss`, each reduced to its mean and multiplied by its weight in `loss_weights`
/// (1 when absent), summed. `None` when no key starts with `loss`.
pub fn total_loss<B: Backend>(
    outputs: &Nest<B>,
    loss_weights: &std::collections::BTreeMap<String, f64>,
) -> Option<Tensor<B, 1>> {
    let map = outputs.as_map()?;
    let mut total: Option<Tensor<B, 1>> = None;
    for (key, value) in map.iter().filter(|(k, _)| k.starts_with("loss")) {
        let Some(flat) = value.as_tensor().and_then(|t| t.clone().flatten_float()) else {
            continue;
        };
        let weight = loss_weights.get(key).copied().unwrap_or(1.0);
        let term = flat.mean().mul_scalar(weight);
        total = Some(match total {
            Some(t) => t + term,
            None => term,
        });
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::Int;

    #[test]
    fn total_loss_weights_the_loss_keys() {
        let device = Default::default();
        let mut out = Nest::<NdArray>::map();
        out.insert(
            "loss",
            Tensor::<NdArray, 1>::from_floats([1.0, 3.0], &device).into(),
        )
        .unwrap();
        out.insert(
            "loss_aux",
            Tensor::<NdArray, 2>::from_floats([[4.0]], &device).into(),
        )
        .unwrap();
        out.insert(
            "accuracy",
            Tensor::<NdArray, 1>::from_floats([100.0], &device).into(),
        )
        .unwrap();
        out.insert(
            "loss_count",
            Tensor::<NdArray, 1, Int>::from_ints([7], &device).into(),
        )
        .unwrap();
        let weights = [("loss_aux".to_string(), 0.5)].into_iter().collect();
        let total = total_loss(&out, &weights).unwrap();
        // mean(1, 3) * 1 + mean(4) * 0.5; int tensors and other keys are not losses.
        assert_eq!(total.into_scalar(), 4.0);
        assert!(total_loss(&Nest::<NdArray>::map(), &weights).is_none());
    }
}
