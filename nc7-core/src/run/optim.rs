//! Optimization: the trainer's `optimization_config` (optimizer by name, learning rate and its
//! schedule, gradient clipping by the global norm) and one optimizer per model plugin, each
//! with its own state, learning-rate multiplier or optimizer.
//!
//! The optimizers are burn's (`Sgd`, `Adam`, `AdamW`, `RmsProp`), stepped one parameter at a
//! time through their `SimpleOptimizer` interface, so that nc7 decides which parameters step
//! with which learning rate, and clipping can use the norm over every plugin's gradients.

use hashbrown::HashMap;

use burn::lr_scheduler::LrScheduler;
use burn::lr_scheduler::composed::{
    ComposedLrScheduler, ComposedLrSchedulerConfig, SchedulerReduction,
};
use burn::lr_scheduler::constant::ConstantLr;
use burn::lr_scheduler::cosine::{CosineAnnealingLrScheduler, CosineAnnealingLrSchedulerConfig};
use burn::lr_scheduler::exponential::{ExponentialLrScheduler, ExponentialLrSchedulerConfig};
use burn::lr_scheduler::linear::{LinearLrScheduler, LinearLrSchedulerConfig};
use burn::lr_scheduler::step::{StepLrScheduler, StepLrSchedulerConfig};
use burn::module::ParamId;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::record::AdaptorRecord;
use burn::optim::{
    Adam, AdamConfig, AdamW, AdamWConfig, RmsProp, RmsPropConfig, Sgd, SgdConfig, SimpleOptimizer,
};
use burn::prelude::{Backend, Tensor};
use burn::record::RecorderError;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

mod schedule;
pub use schedule::*;

/// The trainer's `optimization_config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizationConfig {
    /// The optimizer and its parameters: `{"name": "adam", "beta_1": 0.9}`.
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// The base learning rate.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// How the learning rate changes with the step; constant when absent.
    #[serde(default)]
    pub learning_rate_schedule: Option<ScheduleSpec>,
    /// Gradients are scaled down so that their norm over all parameters of all plugins is at
    /// most this (nucleus7's global-norm clipping); no clipping when absent.
    #[serde(default)]
    pub gradient_clip: Option<f64>,
}

fn default_learning_rate() -> f64 {
    1e-3
}

impl Default for OptimizationConfig {
    fn default() -> Self {
        OptimizationConfig {
            optimizer: OptimizerSpec::default(),
            learning_rate: default_learning_rate(),
            learning_rate_schedule: None,
            gradient_clip: None,
        }
    }
}

/// A model plugin's own `optimization_config`: a learning-rate multiplier, or an optimizer of
/// its own (stepped with the trainer's learning rate and schedule).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginOptimization {
    /// Multiplies the trainer's learning rate for this plugin's parameters.
    #[serde(default = "one")]
    pub learning_rate_multiplier: f64,
    /// An optimizer for this plugin instead of the trainer's.
    #[serde(default)]
    pub optimizer: Option<OptimizerSpec>,
}

fn one() -> f64 {
    1.0
}

/// An optimizer by name with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase", deny_unknown_fields)]
pub enum OptimizerSpec {
    /// Stochastic gradient descent, with optional momentum.
    Sgd {
        /// Momentum factor; none when 0.
        #[serde(default)]
        momentum: f64,
        /// Dampening of the momentum.
        #[serde(default)]
        dampening: f64,
        /// Nesterov momentum.
        #[serde(default)]
        nesterov: bool,
        /// L2 penalty added to the gradient.
        #[serde(default)]
        weight_decay: f32,
    },
    /// Adam.
    Adam {
        /// First moment decay.
        #[serde(default = "beta_1")]
        beta_1: f32,
        /// Second moment decay.
        #[serde(default = "beta_2")]
        beta_2: f32,
        /// Numerical stability term.
        #[serde(default = "epsilon")]
        epsilon: f32,
        /// L2 penalty added to the gradient.
        #[serde(default)]
        weight_decay: f32,
        /// AMSGrad.
        #[serde(default)]
        amsgrad: bool,
    },
    /// AdamW: Adam with decoupled weight decay.
    #[serde(rename = "adamw")]
    AdamW {
        /// First moment decay.
        #[serde(default = "beta_1")]
        beta_1: f32,
        /// Second moment decay.
        #[serde(default = "beta_2")]
        beta_2: f32,
        /// Numerical stability term.
        #[serde(default = "epsilon")]
        epsilon: f32,
        /// Decoupled weight decay.
        #[serde(default = "adamw_decay")]
        weight_decay: f32,
        /// AMSGrad.
        #[serde(default)]
        amsgrad: bool,
    },
    /// RMSProp.
    #[serde(rename = "rmsprop")]
    RmsProp {
        /// Smoothing constant.
        #[serde(default = "rms_alpha")]
        alpha: f32,
        /// Momentum.
        #[serde(default)]
        momentum: f32,
        /// Numerical stability term.
        #[serde(default = "epsilon")]
        epsilon: f32,
        /// Centered RMSProp.
        #[serde(default)]
        centered: bool,
        /// L2 penalty added to the gradient.
        #[serde(default)]
        weight_decay: f32,
    },
}

fn beta_1() -> f32 {
    0.9
}
fn beta_2() -> f32 {
    0.999
}
fn epsilon() -> f32 {
    1e-8
}
fn adamw_decay() -> f32 {
    1e-2
}
fn rms_alpha() -> f32 {
    0.99
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        OptimizerSpec::Sgd {
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

fn decay(penalty: f32) -> Option<WeightDecayConfig> {
    (penalty != 0.0).then_some(WeightDecayConfig { penalty })
}

/// One optimizer with the state of each parameter it has stepped.
struct Stateful<O: SimpleOptimizer<B::InnerBackend>, B: AutodiffBackend> {
    optimizer: O,
    states: HashMap<ParamId, AdaptorRecord<O, B>>,
}

impl<O: SimpleOptimizer<B::InnerBackend>, B: AutodiffBackend> Stateful<O, B> {
    fn new(optimizer: O) -> Self {
        Stateful {
            optimizer,
            states: HashMap::new(),
        }
    }

    fn step<const D: usize>(
        &mut self,
        id: ParamId,
        lr: f64,
        tensor: Tensor<B::InnerBackend, D>,
        grad: Tensor<B::InnerBackend, D>,
    ) -> Tensor<B::InnerBackend, D> {
        let device = grad.device();
        let state = self
            .states
            .remove(&id)
            .map(|r| O::to_device(r.into_state::<D>(), &device));
        let (tensor, state) = self.optimizer.step(lr, tensor, grad, state);
        if let Some(state) = state {
            self.states.insert(id, AdaptorRecord::from_state(state));
        }
        tensor
    }

    /// The states as bytes, ordered by parameter id: identical runs write identical files (a
    /// map would be written in its hash order, another one each run).
    fn save(&self) -> Result<Vec<u8>, RecorderError> {
        let mut ordered: Vec<(String, AdaptorRecord<O, B>)> = self
            .states
            .iter()
            .map(|(id, r)| (id.serialize(), r.clone()))
            .collect();
        ordered.sort_by(|a, b| a.0.cmp(&b.0));
        Recorder::<B>::record(
            &BinBytesRecorder::<FullPrecisionSettings>::default(),
            ordered,
            (),
        )
    }

    fn load(&mut self, bytes: Vec<u8>, device: &B::Device) -> Result<(), RecorderError> {
        let ordered: Vec<(String, AdaptorRecord<O, B>)> = Recorder::<B>::load(
            &BinBytesRecorder::<FullPrecisionSettings>::default(),
            bytes,
            device,
        )?;
        self.states = ordered
            .into_iter()
            .map(|(id, r)| (ParamId::deserialize(&id), r))
            .collect();
        Ok(())
    }
}

enum Any<B: AutodiffBackend> {
    Sgd(Stateful<Sgd<B::InnerBackend>, B>),
    Adam(Stateful<Adam, B>),
    AdamW(Stateful<AdamW, B>),
    RmsProp(Stateful<RmsProp, B>),
}

macro_rules! each {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            Any::Sgd($s) => $body,
            Any::Adam($s) => $body,
            Any::AdamW($s) => $body,
            Any::RmsProp($s) => $body,
        }
    };
}

/// The optimizer of one model plugin: which optimizer, its state per parameter, and the
/// multiplier of the trainer's learning rate.
pub struct PluginOptimizer<B: AutodiffBackend> {
    inner: Any<B>,
    multiplier: f64,
}

impl<B: AutodiffBackend> std::fmt::Debug for PluginOptimizer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match &self.inner {
            Any::Sgd(_) => "sgd",
            Any::Adam(_) => "adam",
            Any::AdamW(_) => "adamw",
            Any::RmsProp(_) => "rmsprop",
        };
        f.debug_struct("PluginOptimizer")
            .field("optimizer", &name)
            .field("multiplier", &self.multiplier)
            .finish()
    }
}

impl<B: AutodiffBackend> PluginOptimizer<B> {
    /// An optimizer as `spec` says, its learning rate multiplied by `multiplier`.
    pub fn new(spec: &OptimizerSpec, multiplier: f64) -> Self {
        let inner = match *spec {
            OptimizerSpec::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
            } => {
                let momentum = (momentum != 0.0).then_some(MomentumConfig {
                    momentum,
                    dampening,
                    nesterov,
                });
                Any::Sgd(Stateful::new(
                    SgdConfig::new()
                        .with_momentum(momentum)
                        .with_weight_decay(decay(weight_decay))
                        .build::<B::InnerBackend>(),
                ))
            }
            OptimizerSpec::Adam {
                beta_1,
                beta_2,
                epsilon,
                weight_decay,
                amsgrad,
            } => Any::Adam(Stateful::new(
                AdamConfig::new()
                    .with_beta_1(beta_1)
                    .with_beta_2(beta_2)
                    .with_epsilon(epsilon)
                    .with_amsgrad(amsgrad)
                    .with_weight_decay(decay(weight_decay))
                    .build(),
            )),
            OptimizerSpec::AdamW {
                beta_1,
                beta_2,
                epsilon,
                weight_decay,
                amsgrad,
            } => Any::AdamW(Stateful::new(
                AdamWConfig::new()
                    .with_beta_1(beta_1)
                    .with_beta_2(beta_2)
                    .with_epsilon(epsilon)
                    .with_weight_decay(weight_decay)
                    .with_amsgrad(amsgrad)
                    .build(),
            )),
            OptimizerSpec::RmsProp {
                alpha,
                momentum,
                epsilon,
                centered,
                weight_decay,
            } => Any::RmsProp(Stateful::new(
                RmsPropConfig::new()
                    .with_alpha(alpha)
                    .with_momentum(momentum)
                    .with_epsilon(epsilon)
                    .with_centered(centered)
                    .with_weight_decay(decay(weight_decay))
                    .build(),
            )),
        };
        PluginOptimizer { inner, multiplier }
    }

    /// Steps one parameter with its gradient at the trainer's learning rate `lr`.
    pub fn step<const D: usize>(
        &mut self,
        id: ParamId,
        lr: f64,
        tensor: Tensor<B::InnerBackend, D>,
        grad: Tensor<B::InnerBackend, D>,
    ) -> Tensor<B::InnerBackend, D> {
        let lr = lr * self.multiplier;
        each!(&mut self.inner, s => s.step(id, lr, tensor, grad))
    }

    /// The state of every parameter, as bytes (burn's binary record, full precision).
    pub fn save(&self) -> Result<Vec<u8>, RecorderError> {
        each!(&self.inner, s => s.save())
    }

    /// Restores the state written by [`PluginOptimizer::save`].
    pub fn load(&mut self, bytes: Vec<u8>, device: &B::Device) -> Result<(), RecorderError> {
        each!(&mut self.inner, s => s.load(bytes, device))
    }
}

/// The squared L2 norm of a gradient, summed on the device (no read-back).
pub(crate) fn square_sum<B: Backend, const D: usize>(grad: &Tensor<B, D>) -> Tensor<B, 1> {
    grad.clone().powi_scalar(2).sum()
}

/// The factor gradients are scaled by so that their global norm is at most `clip`
/// (nucleus7's `clip_by_global_norm`): `clip / max(norm, clip)`.
pub(crate) fn clip_factor(global_norm: f64, clip: f64) -> f64 {
    if global_norm.is_finite() && global_norm > clip {
        clip / global_norm
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(schedule: serde_json::Value) -> OptimizationConfig {
        serde_json::from_value(serde_json::json!({
            "learning_rate": 0.1,
            "learning_rate_schedule": schedule,
        }))
        .unwrap()
    }

    #[test]
    fn warmup_then_step_schedule() {
        let mut s = Schedule::new(
            &config(serde_json::json!({
                "name": "step", "step_size": 2, "gamma": 0.5,
                "warmup": {"steps": 2, "start_factor": 0.5}
            })),
            None,
        )
        .unwrap();
        let lrs: Vec<f64> = (0..6).map(|_| s.next_lr()).collect();
        assert!((lrs[0] - 0.05).abs() < 1e-12, "{lrs:?}");
        assert!((lrs[2] - 0.1).abs() < 1e-12, "{lrs:?}");
        assert!((lrs[4] - 0.05).abs() < 1e-12, "{lrs:?}");
        let mut again = Schedule::new(
            &config(serde_json::json!({
                "name": "step", "step_size": 2, "gamma": 0.5,
                "warmup": {"steps": 2, "start_factor": 0.5}
            })),
            None,
        )
        .unwrap();
        again.fast_forward(4);
        assert_eq!(again.next_lr(), lrs[4]);
    }

    #[test]
    fn a_cosine_without_steps_spans_the_run_after_the_warmup() {
        let spec = serde_json::json!({
            "name": "cosine", "min_learning_rate": 0.001,
            "warmup": {"steps": 4, "start_factor": 0.1}
        });
        let mut s = Schedule::new(&config(spec.clone()), Some(24)).unwrap();
        let lrs: Vec<f64> = (0..24).map(|_| s.next_lr()).collect();
        assert!(lrs[0] < 0.02, "{lrs:?}");
        assert!(
            (lrs[4] - 0.1).abs() < 1e-9,
            "the warm-up reaches the rate: {lrs:?}"
        );
        assert!(lrs[5..].windows(2).all(|w| w[1] < w[0]), "{lrs:?}");
        // The last step of the run is the cosine's last: the lowest rate.
        assert!((lrs[23] - 0.001).abs() < 1e-3, "{lrs:?}");
        // Twice the run: twice as slow.
        let mut longer = Schedule::new(&config(spec), Some(44)).unwrap();
        let slow: Vec<f64> = (0..24).map(|_| longer.next_lr()).collect();
        assert!(slow[23] > 0.04, "{slow:?}");
    }

    #[test]
    fn schedules_by_name_and_their_errors() {
        for spec in [
            serde_json::json!({"name": "constant"}),
            serde_json::json!({"name": "exponential", "gamma": 0.9}),
            serde_json::json!({"name": "cosine", "steps": 10}),
            serde_json::json!({"name": "linear", "final_learning_rate": 0.01, "steps": 10}),
            serde_json::json!({"name": "composed", "schedules": [
                {"name": "cosine", "steps": 10}, {"name": "exponential", "gamma": 0.9}]}),
        ] {
            let mut s = Schedule::new(&config(spec.clone()), None).unwrap();
            let first = s.next_lr();
            assert!(first > 0.0 && first <= 0.1 + 1e-12, "{spec}: {first}");
        }
        let err = Schedule::new(
            &config(serde_json::json!({"name": "exponential", "gamma": 2.0})),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("exponential"), "{err}");
        let unknown = serde_json::from_value::<OptimizationConfig>(serde_json::json!({
            "learning_rate_schedule": {"name": "cosinus", "steps": 3}
        }))
        .unwrap_err();
        assert!(unknown.to_string().contains("cosinus"), "{unknown}");
    }

    #[test]
    fn global_norm_clip_factor() {
        assert_eq!(clip_factor(10.0, 5.0), 0.5);
        assert_eq!(clip_factor(3.0, 5.0), 1.0);
        assert_eq!(clip_factor(f64::NAN, 5.0), 1.0);
    }
}
