//! Learning-rate schedules: burn's schedulers by name, after an optional linear warm-up, as functions of the step count.

use super::*;

/// A learning-rate schedule by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScheduleSpec {
    /// The learning rate throughout.
    Constant {
        /// Linear warm-up first.
        #[serde(default)]
        warmup: Option<Warmup>,
    },
    /// Multiplied by `gamma` every `step_size` steps.
    Step {
        /// Steps between decays.
        step_size: usize,
        /// The factor.
        #[serde(default = "tenth")]
        gamma: f64,
        /// Linear warm-up first.
        #[serde(default)]
        warmup: Option<Warmup>,
    },
    /// Multiplied by `gamma` every step.
    Exponential {
        /// The factor.
        gamma: f64,
        /// Linear warm-up first.
        #[serde(default)]
        warmup: Option<Warmup>,
    },
    /// Cosine annealing to `min_learning_rate` over `steps`.
    Cosine {
        /// The steps of one cosine period; the training's steps after the warm-up when absent
        /// (`num_epochs` × the iterations of an epoch), so that the schedule follows the data.
        #[serde(default)]
        steps: Option<usize>,
        /// The lowest learning rate.
        #[serde(default)]
        min_learning_rate: f64,
        /// Linear warm-up first.
        #[serde(default)]
        warmup: Option<Warmup>,
    },
    /// Linearly to `final_learning_rate` over `steps`.
    Linear {
        /// The learning rate at the end.
        final_learning_rate: f64,
        /// The steps.
        steps: usize,
        /// Linear warm-up first.
        #[serde(default)]
        warmup: Option<Warmup>,
    },
    /// Several schedules at once (linear, cosine or exponential), their rates multiplied,
    /// summed or averaged (burn's composed scheduler).
    Composed {
        /// The schedules.
        schedules: Vec<ScheduleSpec>,
        /// `prod`, `sum` or `avg`.
        #[serde(default = "prod")]
        reduction: String,
        /// Linear warm-up first.
        #[serde(default)]
        warmup: Option<Warmup>,
    },
}

fn tenth() -> f64 {
    0.1
}
fn prod() -> String {
    "prod".into()
}

/// A linear warm-up from `start_factor` × the learning rate to the learning rate, over `steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    /// The warm-up steps.
    pub steps: usize,
    /// The fraction of the learning rate at the first step.
    #[serde(default = "tenth")]
    pub start_factor: f64,
}

#[derive(Clone)]
enum Sched {
    Constant(ConstantLr),
    Step(StepLrScheduler),
    Exponential(ExponentialLrScheduler),
    Cosine(CosineAnnealingLrScheduler),
    Linear(LinearLrScheduler),
    Composed(ComposedLrScheduler),
}

impl Sched {
    fn step(&mut self) -> f64 {
        match self {
            Sched::Constant(s) => s.step(),
            Sched::Step(s) => s.step(),
            Sched::Exponential(s) => s.step(),
            Sched::Cosine(s) => s.step(),
            Sched::Linear(s) => s.step(),
            Sched::Composed(s) => s.step(),
        }
    }
}

/// The learning rate step after step: an optional linear warm-up, then burn's scheduler.
/// Schedules are functions of the step count, so a resumed run fast-forwards a fresh one.
#[derive(Clone)]
pub struct Schedule {
    warmup: Option<(LinearLrScheduler, usize)>,
    main: Sched,
    taken: usize,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("taken", &self.taken)
            .finish_non_exhaustive()
    }
}

impl Schedule {
    /// The schedule of `config`; an error says which parameter burn refused.
    ///
    /// `run_steps` is the training's steps, when known: a cosine schedule without `steps` spans
    /// them after the warm-up (one step when unknown, as `check` builds it only to validate).
    pub fn new(
        config: &OptimizationConfig,
        run_steps: Option<u64>,
    ) -> Result<Schedule, crate::config::SettingsError> {
        Self::build(config, run_steps).map_err(|e| {
            crate::config::SettingsError::one(
                "trainer_config",
                format!("trainer_config.optimization_config.{e}"),
            )
        })
    }

    fn build(config: &OptimizationConfig, run_steps: Option<u64>) -> Result<Schedule, String> {
        let lr = config.learning_rate;
        let spec = config
            .learning_rate_schedule
            .clone()
            .unwrap_or(ScheduleSpec::Constant { warmup: None });
        let warmup = match &spec {
            ScheduleSpec::Constant { warmup }
            | ScheduleSpec::Step { warmup, .. }
            | ScheduleSpec::Exponential { warmup, .. }
            | ScheduleSpec::Cosine { warmup, .. }
            | ScheduleSpec::Linear { warmup, .. }
            | ScheduleSpec::Composed { warmup, .. } => warmup.clone(),
        };
        let warmup_steps = warmup.as_ref().map_or(0, |w| w.steps);
        let rest = run_steps.map_or(1, |s| (s as usize).saturating_sub(warmup_steps).max(1));
        let warmup = match warmup {
            Some(w) if w.steps > 0 => Some((
                LinearLrSchedulerConfig::new(lr * w.start_factor, lr, w.steps)
                    .init()
                    .map_err(|e| format!("learning_rate_schedule.warmup: {e}"))?,
                w.steps,
            )),
            _ => None,
        };
        Ok(Schedule {
            warmup,
            main: sched(&spec, lr, rest)?,
            taken: 0,
        })
    }

    /// The learning rate of the next step.
    pub fn next_lr(&mut self) -> f64 {
        self.taken += 1;
        match &mut self.warmup {
            Some((w, steps)) if self.taken <= *steps => w.step(),
            _ => self.main.step(),
        }
    }

    /// Steps taken so far.
    pub fn taken(&self) -> usize {
        self.taken
    }

    /// Moves on to where it stood after `steps` steps (a resumed run).
    pub fn fast_forward(&mut self, steps: usize) {
        while self.taken < steps {
            self.next_lr();
        }
    }
}

/// `spec`'s schedule from `lr`; `rest` is the steps a cosine without `steps` spans.
fn sched(spec: &ScheduleSpec, lr: f64, rest: usize) -> Result<Sched, String> {
    let named = |name: &str, r: Result<Sched, String>| {
        r.map_err(|e| format!("learning_rate_schedule `{name}`: {e}"))
    };
    match spec {
        ScheduleSpec::Constant { .. } => Ok(Sched::Constant(ConstantLr::from(lr))),
        ScheduleSpec::Step {
            step_size, gamma, ..
        } => named(
            "step",
            StepLrSchedulerConfig::new(lr, *step_size)
                .with_gamma(*gamma)
                .init()
                .map(Sched::Step),
        ),
        ScheduleSpec::Exponential { gamma, .. } => named(
            "exponential",
            ExponentialLrSchedulerConfig::new(lr, *gamma)
                .init()
                .map(Sched::Exponential),
        ),
        ScheduleSpec::Cosine {
            steps,
            min_learning_rate,
            ..
        } => named(
            "cosine",
            CosineAnnealingLrSchedulerConfig::new(lr, steps.unwrap_or(rest))
                .with_min_lr(*min_learning_rate)
                .init()
                .map(Sched::Cosine),
        ),
        ScheduleSpec::Linear {
            final_learning_rate,
            steps,
            ..
        } => named(
            "linear",
            LinearLrSchedulerConfig::new(lr, *final_learning_rate, *steps)
                .init()
                .map(Sched::Linear),
        ),
        ScheduleSpec::Composed {
            schedules,
            reduction,
            ..
        } => {
            let reduction = match reduction.as_str() {
                "prod" => SchedulerReduction::Prod,
                "sum" => SchedulerReduction::Sum,
                "avg" => SchedulerReduction::Avg,
                other => {
                    return Err(format!(
                        "learning_rate_schedule `composed`: unknown reduction `{other}`, expected `prod`, `sum` or `avg`"
                    ));
                }
            };
            let mut config = ComposedLrSchedulerConfig::new().with_reduction(reduction);
            for s in schedules {
                config = match s {
                    ScheduleSpec::Cosine {
                        steps,
                        min_learning_rate,
                        ..
                    } => config.cosine(
                        CosineAnnealingLrSchedulerConfig::new(lr, steps.unwrap_or(rest))
                            .with_min_lr(*min_learning_rate),
                    ),
                    ScheduleSpec::Linear {
                        final_learning_rate,
                        steps,
                        ..
                    } => config.linear(LinearLrSchedulerConfig::new(
                        lr,
                        *final_learning_rate,
                        *steps,
                    )),
                    ScheduleSpec::Exponential { gamma, .. } => {
                        config.exponential(ExponentialLrSchedulerConfig::new(lr, *gamma))
                    }
                    _ => {
                        return Err(
                            "learning_rate_schedule `composed` combines `linear`, `cosine` and `exponential` schedules only".into(),
                        );
                    }
                };
            }
            named("composed", config.init().map(Sched::Composed))
        }
    }
}
