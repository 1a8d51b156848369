//! The trainer's own config (`trainer.json` → `trainer_config`): batch sizes, epochs, how long
//! an epoch is, seed, device, summaries, what to keep, and the optimization.

use serde::{Deserialize, Serialize};

use super::load::LoadConfig;
use super::monitor::{EarlyStopping, KeepBest};
use crate::config::SettingsError;
use crate::optim::OptimizationConfig;

/// A value for training and evaluation alike (`32`), or for each (`{"train": 32, "eval": 64}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerMode<T> {
    /// The same for both.
    Both(T),
    /// One for each.
    Each {
        /// Training.
        train: T,
        /// Evaluation.
        eval: T,
    },
}

impl<T: Copy> PerMode<T> {
    /// The training value.
    pub fn train(&self) -> T {
        match *self {
            PerMode::Both(v) | PerMode::Each { train: v, .. } => v,
        }
    }
    /// The evaluation value.
    pub fn eval(&self) -> T {
        match *self {
            PerMode::Both(v) | PerMode::Each { eval: v, .. } => v,
        }
    }
}

/// `trainer_config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerConfig {
    /// Samples per batch.
    pub batch_size: PerMode<usize>,
    /// Epochs to train.
    #[serde(default = "one")]
    pub num_epochs: u64,
    /// Iterations in an epoch; one pass over the data when absent.
    #[serde(default)]
    pub iterations_per_epoch: Option<PerMode<u64>>,
    /// Samples in an epoch (instead of `iterations_per_epoch`).
    #[serde(default)]
    pub samples_per_epoch: Option<PerMode<u64>>,
    /// Seeds weights, data order and every random operation.
    #[serde(default)]
    pub random_seed: u64,
    /// `cpu`, `cuda` or `cuda:N`; `--device` overrides it. When absent, the project's device
    /// (`project.toml`), else the CPU.
    #[serde(default)]
    pub device: Option<String>,
    /// Data-parallel training on several devices (`["cpu:0", "cpu:1"]`, `["cuda:all"]`;
    /// `--devices` overrides it): one replica of the model per device, each global batch
    /// split between them, the gradients summed before each step. Instead of `device`.
    #[serde(default)]
    pub devices: Option<Vec<String>>,
    /// The precision the model plugins compute in: `f32`, or `f16` / `bf16` with dynamic
    /// loss scaling and `f32` master weights (`--precision` overrides it).
    #[serde(default)]
    pub precision: crate::precision::Precision,
    /// Compute threads (`--threads` overrides it); when absent, the project's
    /// (`project.toml`), else every core available. Results do not depend on it.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Training summaries every this many steps (and at each epoch's last step).
    #[serde(default = "ten")]
    pub summary_steps: u64,
    /// Checkpoints kept (the newest).
    #[serde(default = "three")]
    pub checkpoints_to_keep: usize,
    /// Saved models kept (the newest); 0 exports nothing after evaluations.
    #[serde(default = "three")]
    pub exports_to_keep: usize,
    /// Whether the training data is shuffled each epoch.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Batches read ahead on a background thread (0: read in the training thread). One keeps
    /// reading and training overlapped at the least memory; more absorbs uneven read times.
    #[serde(default = "one_usize")]
    pub prefetch: usize,
    /// Optimizer, learning rate and its schedule, gradient clipping.
    #[serde(default)]
    pub optimization_config: OptimizationConfig,
    /// Weights loaded into plugins by nucleotide name before a fresh run.
    #[serde(default)]
    pub load_config: Vec<LoadConfig>,
    /// A progress bar on the terminal (never drawn when stderr is not a terminal; the log has
    /// one line per epoch either way).
    #[serde(default = "yes")]
    pub progress_bar: bool,
    /// Write a Chrome trace of the run to `training/profile/` (also `train --profile`): spans
    /// for data reading, each nucleotide's forward, backward, optimizer steps, callbacks,
    /// summaries, checkpoints and evaluations; a time table at the end.
    #[serde(default)]
    pub profile: bool,
    /// Where the run is tracked in MLflow.
    #[serde(default)]
    pub tracking: TrackingConfig,
    /// Stop when an evaluation value stops improving.
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
    /// Keep the checkpoint with the best evaluation value.
    #[serde(default)]
    pub keep_best: Option<KeepBest>,
}

/// `trainer_config.tracking`: where a training is tracked in MLflow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    /// A tracking URI: a path or `file:` URI (MLflow's file store) or an `http(s)://` tracking
    /// server. When absent, `MLFLOW_TRACKING_URI`, else the project's `mlruns/`.
    #[serde(default)]
    pub uri: Option<String>,
    /// The MLflow experiment; the project's name when absent.
    #[serde(default)]
    pub experiment: Option<String>,
}

inventory::submit! {
    crate::config::SettingsSection {
        key: "trainer_config",
        fields: crate::config::serde_fields::<TrainerConfig>,
    }
}

fn one() -> u64 {
    1
}
fn ten() -> u64 {
    10
}
fn three() -> usize {
    3
}
fn yes() -> bool {
    true
}
fn one_usize() -> usize {
    1
}

impl TrainerConfig {
    /// Reads `trainer_config`; the error names the field and what it takes.
    pub fn from_value(value: &serde_json::Value) -> Result<TrainerConfig, SettingsError> {
        let config: TrainerConfig = crate::config::read_section("trainer_config", value)?;
        let problems: Vec<String> = [
            (config.batch_size.train() == 0 || config.batch_size.eval() == 0)
                .then_some("trainer_config.batch_size must be at least 1"),
            (config.num_epochs == 0).then_some("trainer_config.num_epochs must be at least 1"),
            (config.summary_steps == 0).then_some("trainer_config.summary_steps must be at least 1"),
            (config.iterations_per_epoch.is_some() && config.samples_per_epoch.is_some())
                .then_some("trainer_config gives both `iterations_per_epoch` and `samples_per_epoch`; keep one"),
            (config.optimization_config.learning_rate <= 0.0
                || !config.optimization_config.learning_rate.is_finite())
            .then_some("trainer_config.optimization_config.learning_rate must be a positive number"),
            config
                .optimization_config
                .gradient_clip
                .is_some_and(|c| c <= 0.0 || !c.is_finite())
                .then_some("trainer_config.optimization_config.gradient_clip must be a positive number"),
            config
                .early_stopping
                .as_ref()
                .is_some_and(|e| e.patience == 0)
                .then_some("trainer_config.early_stopping.patience must be at least 1"),
            config
                .early_stopping
                .as_ref()
                .is_some_and(|e| e.min_delta < 0.0 || !e.min_delta.is_finite())
                .then_some("trainer_config.early_stopping.min_delta must be a number of 0 or more"),
        ]
        .into_iter()
        .flatten()
        .map(str::to_owned)
        .collect();
        let mut problems = problems;
        if let Some(uri) = &config.tracking.uri
            && let Err(e) = crate::tracking::mlflow::parse_uri(uri)
        {
            problems.push(format!("trainer_config.tracking.uri: {e}"));
        }
        if config
            .tracking
            .experiment
            .as_ref()
            .is_some_and(|e| e.trim().is_empty())
        {
            problems.push("trainer_config.tracking.experiment must name an experiment".into());
        }
        // The schedule is built here once, so that a parameter burn refuses is found by `check`.
        if let Err(e) = crate::optim::Schedule::new(&config.optimization_config, None) {
            problems.extend(e.problems);
        }
        SettingsError::check("trainer_config", config, problems)
    }

    /// Training iterations per epoch for a dataset of `len` samples.
    pub fn train_iterations(&self, len: usize) -> u64 {
        self.iterations(len, self.batch_size.train(), |p| p.train())
    }

    /// Evaluation iterations per epoch for a dataset of `len` samples.
    pub fn eval_iterations(&self, len: usize) -> u64 {
        self.iterations(len, self.batch_size.eval(), |p| p.eval())
    }

    fn iterations(&self, len: usize, batch: usize, pick: impl Fn(&PerMode<u64>) -> u64) -> u64 {
        if let Some(i) = &self.iterations_per_epoch {
            return pick(i).max(1);
        }
        if let Some(s) = &self.samples_per_epoch {
            return pick(s).div_ceil(batch as u64).max(1);
        }
        (len as u64).div_ceil(batch as u64).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn arb_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-z_ ]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            let keys = prop_oneof![
                Just("batch_size".to_owned()),
                Just("num_epochs".to_owned()),
                Just("optimization_config".to_owned()),
                Just("learning_rate".to_owned()),
                Just("learning_rate_schedule".to_owned()),
                Just("early_stopping".to_owned()),
                Just("tracking".to_owned()),
                Just("train".to_owned()),
                "[a-z_]{1,6}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(keys, inner, 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        // Fuzzing (the reliability issue): any JSON as `trainer_config` is a config or an
        // error, never a panic.
        #[test]
        fn any_json_is_a_trainer_config_or_an_error(v in arb_json()) {
            let _ = TrainerConfig::from_value(&v);
            let _ = TrainerConfig::from_value(&json!({"batch_size": 2, "optimization_config": v}));
        }
    }

    #[test]
    fn fields_lists_every_field() {
        let c = TrainerConfig::from_value(&json!({"batch_size": 4})).unwrap();
        let v = serde_json::to_value(c).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, crate::config::section_fields("trainer_config"));
    }

    #[test]
    fn reads_defaults_and_per_mode_values() {
        let c = TrainerConfig::from_value(&json!({"batch_size": {"train": 4, "eval": 8}})).unwrap();
        assert_eq!((c.batch_size.train(), c.batch_size.eval()), (4, 8));
        assert_eq!(c.num_epochs, 1);
        assert_eq!(c.train_iterations(10), 3);
        assert_eq!(c.eval_iterations(10), 2);
        let c =
            TrainerConfig::from_value(&json!({"batch_size": 4, "samples_per_epoch": 9})).unwrap();
        assert_eq!(c.train_iterations(100), 3);
    }

    #[test]
    fn errors_name_the_field() {
        let e = TrainerConfig::from_value(&json!({"batch_size": 4, "num_epoch": 3}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `num_epoch`"), "{e}");
        let e = TrainerConfig::from_value(&json!({"batch_size": 4, "num_epochs": "x"}))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("trainer_config.num_epochs"), "{e}");
        let e = TrainerConfig::from_value(&json!({"batch_size": 0}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch_size must be at least 1"), "{e}");
        for lr in [0.0, -0.1] {
            let e = TrainerConfig::from_value(
                &json!({"batch_size": 4, "optimization_config": {"learning_rate": lr}}),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("learning_rate must be a positive number"), "{e}");
        }
        let e = TrainerConfig::from_value(&json!({}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch_size"), "{e}");
        let e = TrainerConfig::from_value(
            &json!({"batch_size": 4, "early_stopping": {"monitor": "loss", "patience": 0}}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("early_stopping.patience must be at least 1"),
            "{e}"
        );
        let e = TrainerConfig::from_value(
            &json!({"batch_size": 4, "keep_best": {"monitor": "loss", "mode": "lowest"}}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("trainer_config.keep_best.mode"), "{e}");
        let e = TrainerConfig::from_value(
            &json!({"batch_size": 4, "load_config": [{"path": "x", "nucleotides": 3}]}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("trainer_config.load_config[0].nucleotides")
                && e.contains("list of plugin names"),
            "{e}"
        );
    }
}
