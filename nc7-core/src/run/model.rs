//! The model at run time: the model handler's nucleotides built on a backend and run gene
//! after gene (plugins → post-processors → losses → metrics → summaries), its weights read
//! and written as safetensors under `<plugin>.<parameter path>` names.

use burn::tensor::ElementConversion as _;
use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::{Backend, Tensor};
use burn::tensor::TensorPrimitive;
use burn::tensor::backend::AutodiffBackend;

use crate::gene::Kind;
use crate::handler::{BoxError, GeneHandler, Outputs, RunError};
use crate::nest::{AnyTensor, Nest};
use crate::nucleotide::{Mode, total_loss};
use crate::optim::{OptimizerSpec, PluginOptimizer, clip_factor};
use crate::runtime::{self, DynPlugin, DynStep, TrainPlugin};

mod config;
pub use crate::nucleotide::part::{LossSettings, Part};
pub use config::ModelConfig;

mod weights;
pub use weights::*;

fn boxed(e: impl std::fmt::Display) -> BoxError {
    e.to_string().into()
}

/// The model on a backend without autodiff: evaluation and inference.
pub struct Model<B: Backend> {
    handler: GeneHandler,
    parts: Vec<Part>,
    config: ModelConfig,
    plugins: BTreeMap<String, Box<dyn DynPlugin<B>>>,
    steps: BTreeMap<String, Box<dyn DynStep<B>>>,
}

impl<B: Backend> std::fmt::Debug for Model<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("handler", &self.handler.name())
            .field("plugins", &self.plugins.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn build_steps<B: Backend>(
    parts: &[Part],
    device: &B::Device,
) -> Result<BTreeMap<String, Box<dyn DynStep<B>>>, BoxError> {
    let mut steps = BTreeMap::new();
    for p in parts.iter().filter(|p| p.kind != Kind::ModelPlugin) {
        steps.insert(
            p.name.clone(),
            runtime::step::<B>(p.registration, &p.name, &p.config, device)?,
        );
    }
    Ok(steps)
}

/// Runs one step of a model handler: plugins through `plugin`, the rest through `steps`.
/// Post-processors are skipped in training; summaries run when `summaries` is set.
fn run_handler<'h, B: Backend>(
    handler: &'h GeneHandler,
    batch: Nest<B>,
    mode: Mode,
    summaries: bool,
    profiler: Option<&crate::tracking::profile::Profiler>,
    mut plugin: impl FnMut(&str, Nest<B>) -> Result<Nest<B>, BoxError>,
    steps: &mut BTreeMap<String, Box<dyn DynStep<B>>>,
) -> Result<Outputs<'h, B>, RunError> {
    handler.run(vec![Some(batch)], |node, input| {
        let name = node.spec.name.as_str();
        let _span = profiler.map(|p| p.span(format!("forward/{name}"), "model"));
        match node.spec.kind {
            Kind::ModelPlugin => plugin(name, input).map(Some),
            Kind::ModelPostProcessor if mode == Mode::Train => Ok(None),
            Kind::ModelLoss if mode == Mode::Infer => Ok(None),
            Kind::ModelSummary if !summaries => Ok(None),
            _ => match steps.get_mut(name) {
                Some(s) => s.run(input, mode).map(Some),
                None => Err(format!("nucleotide `{name}` was not built").into()),
            },
        }
    })
}

impl<B: Backend> Model<B> {
    /// Builds every part on `device` (plugins with fresh weights).
    pub fn build(
        handler: GeneHandler,
        parts: &[Part],
        device: &B::Device,
    ) -> Result<Self, BoxError> {
        let mut plugins = BTreeMap::new();
        for p in parts.iter().filter(|p| p.kind == Kind::ModelPlugin) {
            plugins.insert(
                p.name.clone(),
                runtime::plugin::<B>(p.registration, &p.name, &p.config, device)?,
            );
        }
        Ok(Model {
            handler,
            parts: parts.to_vec(),
            config: ModelConfig::default(),
            plugins,
            steps: build_steps(parts, device)?,
        })
    }

    /// Runs a batch.
    pub fn run(&mut self, batch: Nest<B>, mode: Mode) -> Result<Outputs<'_, B>, RunError> {
        let plugins = &self.plugins;
        run_handler(
            &self.handler,
            batch,
            mode,
            true,
            None,
            |name, input| match plugins.get(name) {
                Some(p) => p.forward(input, mode),
                None => Err(format!("plugin `{name}` was not built").into()),
            },
            &mut self.steps,
        )
    }

    /// The total loss of one batch's outputs and each loss key's value, weighted as the model
    /// config says and with its weight penalties (as in training, so evaluation losses are
    /// the trained ones).
    pub fn losses(
        &self,
        outputs: &BTreeMap<String, Option<Nest<B>>>,
    ) -> Result<(Tensor<B, 1>, BTreeMap<String, f64>), BoxError> {
        model_losses(&self.parts, &self.config, outputs, |name| {
            self.plugins.get(name).map(|p| p.as_ref())
        })
    }

    /// The handler.
    pub fn handler(&self) -> &GeneHandler {
        &self.handler
    }

    /// Every plugin's weights, `<plugin>.<path>`.
    pub fn tensors(&self) -> Vec<(String, AnyTensor<B>)> {
        named_tensors(self.plugins.iter().map(|(n, p)| (n.as_str(), p.tensors())))
    }

    /// Loads weights into the plugins `only` names (all when empty), each plugin's tensors
    /// found under `<plugin>.`; what no parameter takes stays in `tensors`.
    pub fn load_tensors(
        &mut self,
        tensors: &mut BTreeMap<String, AnyTensor<B>>,
        only: &[String],
    ) -> Result<(), WeightsError> {
        load_into(
            self.plugins
                .iter_mut()
                .map(|(n, p)| (n.as_str(), p.as_mut())),
            tensors,
            only,
        )
    }
}

fn named_tensors<'a, B: Backend>(
    plugins: impl Iterator<Item = (&'a str, Vec<(String, AnyTensor<B>)>)>,
) -> Vec<(String, AnyTensor<B>)> {
    plugins
        .flat_map(|(name, tensors)| {
            tensors
                .into_iter()
                .map(move |(path, t)| (format!("{name}.{path}"), t))
        })
        .collect()
}

fn load_into<'a, B: Backend>(
    plugins: impl Iterator<Item = (&'a str, &'a mut (dyn DynPlugin<B> + 'static))>,
    tensors: &mut BTreeMap<String, AnyTensor<B>>,
    only: &[String],
) -> Result<(), WeightsError> {
    let mut problems = Vec::new();
    for (name, plugin) in plugins {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let prefix = format!("{name}.");
        let keys: Vec<String> = tensors
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        let mut own: BTreeMap<String, AnyTensor<B>> = keys
            .into_iter()
            .filter_map(|k| {
                let t = tensors.remove(&k)?;
                Some((k[prefix.len()..].to_owned(), t))
            })
            .collect();
        if let Err(e) = plugin.load_tensors(&mut own) {
            problems.push(e);
        }
        // What the plugin has no parameter for stays with the caller.
        tensors.extend(own.into_iter().map(|(k, t)| (format!("{prefix}{k}"), t)));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(WeightsError::Mismatch(problems.join("\n")))
    }
}

/// The model being trained on an autodiff backend, with one optimizer per plugin.
pub struct TrainModel<B: AutodiffBackend> {
    handler: GeneHandler,
    eval_handler: GeneHandler,
    parts: Vec<Part>,
    config: ModelConfig,
    plugins: BTreeMap<String, Box<dyn TrainPlugin<B>>>,
    optimizers: BTreeMap<String, PluginOptimizer<B>>,
    steps: BTreeMap<String, Box<dyn DynStep<B>>>,
}

impl<B: AutodiffBackend> std::fmt::Debug for TrainModel<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainModel")
            .field("plugins", &self.plugins.keys().collect::<Vec<_>>())
            .field("optimizers", &self.optimizers)
            .finish_non_exhaustive()
    }
}

/// What one training step gives back.
#[derive(Debug)]
pub struct StepResult<B: Backend> {
    /// The total loss (read back).
    pub loss: f64,
    /// The loss keys and their values, for the non-finite guard and summaries.
    pub losses: BTreeMap<String, f64>,
    /// Every nucleotide's outputs, detached from the graph.
    pub outputs: BTreeMap<String, Option<Nest<B>>>,
    /// The global norm of the gradients, when asked for or clipping.
    pub gradient_norm: Option<f64>,
    /// Mixed precision: the gradients overflowed and the optimizer did not step.
    pub skipped: bool,
}

/// How one training step runs besides its batch.
pub struct StepSettings<'a, B: Backend> {
    /// The learning rate.
    pub lr: f64,
    /// Global-norm gradient clipping.
    pub clip: Option<f64>,
    /// Whether to compute the gradients' global norm without clipping (summaries).
    pub want_norm: bool,
    /// Whether this step's summaries are written (the summary nucleotides run).
    pub summaries: bool,
    /// The profile being written.
    pub profiler: Option<&'a crate::tracking::profile::Profiler>,
    /// Data-parallel training: what this replica's gradients are exchanged through before
    /// clipping and the optimizer step.
    pub exchange: Option<&'a mut dyn GradientExchange<B>>,
    /// Mixed precision: the dtype the plugins compute in, and the loss scale. A step whose
    /// unscaled gradients are not finite is skipped.
    pub half: Option<(burn::tensor::FloatDType, f64)>,
}

/// A nest's float tensors in `dtype` (other leaves as they are).
fn cast_floats<B: Backend>(nest: Nest<B>, dtype: burn::tensor::FloatDType) -> Nest<B> {
    crate::backend::map_nest(nest, &mut |t| match t {
        AnyTensor::Float(TensorPrimitive::Float(p)) => {
            AnyTensor::Float(TensorPrimitive::Float(B::float_cast(p, dtype)))
        }
        other => other,
    })
}

/// Where a data-parallel replica's gradients meet the others'.
pub trait GradientExchange<B: Backend> {
    /// Takes this replica's gradients, flattened (every trainable parameter in the model's
    /// order) and gives back what every replica steps with: the sum of all replicas'.
    fn exchange(&mut self, flat: Tensor<B, 1>) -> Result<Tensor<B, 1>, BoxError>;
}

impl<B: AutodiffBackend> TrainModel<B> {
    /// Builds the model's parts on `device`: plugins with fresh weights (`trainable: false`
    /// frozen), each with the trainer's optimizer or its own.
    pub fn build(
        handler: GeneHandler,
        eval_handler: GeneHandler,
        parts: Vec<Part>,
        config: ModelConfig,
        optimizer: &OptimizerSpec,
        device: &B::Device,
    ) -> Result<Self, BoxError> {
        let mut plugins = BTreeMap::new();
        let mut optimizers = BTreeMap::new();
        for p in parts.iter().filter(|p| p.kind == Kind::ModelPlugin) {
            let mut plugin =
                runtime::train_plugin::<B>(p.registration, &p.name, &p.config, device)?;
            if !p.trainable {
                plugin.freeze();
            }
            plugins.insert(p.name.clone(), plugin);
            optimizers.insert(
                p.name.clone(),
                PluginOptimizer::new(
                    p.optimization.optimizer.as_ref().unwrap_or(optimizer),
                    p.optimization.learning_rate_multiplier,
                ),
            );
        }
        Ok(TrainModel {
            steps: build_steps(&parts, device)?,
            handler,
            eval_handler,
            parts,
            config,
            plugins,
            optimizers,
        })
    }

    /// One training step: forward, total loss, backward, optional global-norm clipping and
    /// every plugin's optimizer step at learning rate `lr`.
    pub fn train_step(
        &mut self,
        batch: Nest<B>,
        settings: StepSettings<'_, B::InnerBackend>,
    ) -> Result<StepResult<B::InnerBackend>, BoxError> {
        let StepSettings {
            summaries,
            profiler,
            half,
            ..
        } = settings;
        let plugins = &self.plugins;
        // When profiling, each span ends with the device's work done, so that GPU times are real.
        let device = profiler.and_then(|_| {
            batch
                .flatten()
                .into_iter()
                .find_map(|(_, v)| v.as_tensor().map(|t| t.device()))
        });
        let sync = || {
            if let Some(d) = &device {
                let _ = B::sync(d);
            }
        };
        let outputs = run_handler(
            &self.handler,
            batch,
            Mode::Train,
            summaries,
            profiler,
            |name, input| match plugins.get(name) {
                Some(p) => {
                    // In mixed precision the plugin computes in half precision and its
                    // outputs go on in f32.
                    let out = match half {
                        Some((dtype, _)) => p
                            .forward_in(cast_floats(input, dtype), Mode::Train, dtype)
                            .map(|o| cast_floats(o, burn::tensor::FloatDType::F32)),
                        None => p.forward(input, Mode::Train),
                    };
                    sync();
                    out
                }
                None => Err(format!("plugin `{name}` was not built").into()),
            },
            &mut self.steps,
        )
        .map_err(boxed)?
        .into_map();
        let (total, losses) = model_losses(&self.parts, &self.config, &outputs, |name| {
            self.plugins
                .get(name)
                .map(|p| p.as_ref() as &dyn DynPlugin<B>)
        })?;
        // Detached before the backward pass: an output still on the graph would keep its
        // ancestors' saved activations alive while the gradients are computed.
        let outputs: BTreeMap<String, Option<Nest<B::InnerBackend>>> = outputs
            .into_iter()
            .map(|(k, v)| (k, v.map(crate::backend::nest_to_inner::<B>)))
            .collect();
        let loss = total.clone().into_scalar().elem::<f64>();
        let backward = profiler.map(|p| p.span("backward", "train"));
        let grads = match half {
            Some((_, scale)) => total.mul_scalar(scale).backward(),
            None => total.backward(),
        };
        sync();
        drop(backward);
        let (gradient_norm, skipped) = self.apply(grads, settings)?;
        sync();
        Ok(StepResult {
            loss,
            losses,
            outputs,
            gradient_norm,
            skipped,
        })
    }

    /// A data-parallel replica's step without samples (a global batch smaller than the
    /// replicas): it gives zeros to the gradients' exchange and steps with the sum.
    pub fn step_without_samples(
        &mut self,
        settings: StepSettings<'_, B::InnerBackend>,
    ) -> Result<bool, BoxError> {
        let mut zero: Option<Tensor<B, 1>> = None;
        for p in self.plugins.values() {
            if let Some((_, squares)) = p.weight_sums() {
                let z = squares.mul_scalar(0.0);
                zero = Some(match zero {
                    Some(t) => t + z,
                    None => z,
                });
            }
        }
        let Some(zero) = zero else {
            return Ok(false);
        };
        Ok(self.apply(zero.backward(), settings)?.1)
    }

    /// The part of a step after the backward pass: the exchange between replicas, the
    /// global norm and clipping, every plugin's optimizer step; the norm when asked for, and
    /// whether the step was skipped (mixed precision, gradients not finite).
    fn apply(
        &mut self,
        mut grads: B::Gradients,
        settings: StepSettings<'_, B::InnerBackend>,
    ) -> Result<(Option<f64>, bool), BoxError> {
        let StepSettings {
            lr,
            clip,
            want_norm,
            profiler,
            exchange,
            half,
            ..
        } = settings;
        let loss_scale = half.map_or(1.0, |h| h.1);
        if let Some(exchange) = exchange {
            let _span = profiler.map(|p| p.span("exchange", "train"));
            let pieces: Vec<Tensor<B::InnerBackend, 1>> = self
                .plugins
                .values()
                .flat_map(|p| p.flat_grads(&grads))
                .collect();
            if !pieces.is_empty() {
                let summed = exchange.exchange(Tensor::cat(pieces, 0))?;
                let mut offset = 0;
                for p in self.plugins.values() {
                    offset = p.set_grads(&mut grads, &summed, offset);
                }
            }
        }
        let gradient_norm = if clip.is_some() || want_norm || half.is_some() {
            let mut sum: Option<Tensor<B::InnerBackend, 1>> = None;
            for p in self.plugins.values() {
                if let Some(s) = p.square_grad_sum(&grads) {
                    sum = Some(match sum {
                        Some(t) => t + s,
                        None => s,
                    });
                }
            }
            Some(sum.map_or(0.0, |s| s.into_scalar().elem::<f64>().sqrt()) / loss_scale)
        } else {
            None
        };
        if half.is_some() && !gradient_norm.is_some_and(f64::is_finite) {
            return Ok((gradient_norm, true));
        }
        let scale = match (clip, gradient_norm) {
            (Some(c), Some(n)) => clip_factor(n, c),
            _ => 1.0,
        } / loss_scale;
        let _optimizer = profiler.map(|p| p.span("optimizer", "train"));
        for (name, plugin) in self.plugins.iter_mut() {
            let optimizer = self
                .optimizers
                .get_mut(name)
                .expect("every plugin has an optimizer");
            plugin.step(optimizer, lr, &mut grads, scale);
        }
        Ok((gradient_norm, false))
    }

    /// The model with the current weights on the inner backend, for evaluation and export.
    pub fn valid(
        &self,
        device: &burn::tensor::Device<B::InnerBackend>,
    ) -> Result<Model<B::InnerBackend>, BoxError> {
        let mut plugins = BTreeMap::new();
        for (name, p) in &self.plugins {
            plugins.insert(name.clone(), p.valid(device)?);
        }
        Ok(Model {
            handler: self.eval_handler.clone(),
            parts: self.parts.clone(),
            config: self.config.clone(),
            plugins,
            steps: build_steps(&self.parts, device)?,
        })
    }

    /// Every plugin's weights, `<plugin>.<path>`.
    pub fn tensors(&self) -> Vec<(String, AnyTensor<B>)> {
        named_tensors(self.plugins.iter().map(|(n, p)| (n.as_str(), p.tensors())))
    }

    /// Loads weights into the plugins `only` names (all when empty); what no parameter takes
    /// stays in `tensors`.
    pub fn load_tensors(
        &mut self,
        tensors: &mut BTreeMap<String, AnyTensor<B>>,
        only: &[String],
    ) -> Result<(), WeightsError> {
        load_into(
            self.plugins
                .iter_mut()
                .map(|(n, p)| (n.as_str(), p.as_mut() as &mut (dyn DynPlugin<B> + 'static))),
            tensors,
            only,
        )
    }

    /// Every optimizer's state, by plugin.
    pub fn optimizer_states(&self) -> Result<Vec<(String, Vec<u8>)>, WeightsError> {
        Ok(self
            .optimizers
            .iter()
            .map(|(n, o)| o.save().map(|b| (n.clone(), b)))
            .collect::<Result<_, _>>()?)
    }

    /// Restores an optimizer's state.
    pub fn load_optimizer_state(
        &mut self,
        plugin: &str,
        bytes: Vec<u8>,
        device: &B::Device,
    ) -> Result<(), WeightsError> {
        match self.optimizers.get_mut(plugin) {
            Some(o) => Ok(o.load(bytes, device)?),
            None => Err(WeightsError::NoPlugin(plugin.to_owned())),
        }
    }

    /// The parts.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }
}

/// The total loss of the loss nucleotides' outputs, and each `loss…` key's mean by
/// `<nucleotide>/<key>`. Each loss's keys are weighted by its `loss_weights`, its total by the
/// model's `loss_weights`; an `exclude_from_total_loss` loss is reported but not summed.
pub(crate) fn losses_of<B: Backend>(
    parts: &[Part],
    model_weights: &BTreeMap<String, f64>,
    outputs: &BTreeMap<String, Option<Nest<B>>>,
) -> Result<(Tensor<B, 1>, BTreeMap<String, f64>), BoxError> {
    let mut total: Option<Tensor<B, 1>> = None;
    let mut losses = BTreeMap::new();
    for p in parts.iter().filter(|p| p.kind == Kind::ModelLoss) {
        let Some(Some(out)) = outputs.get(&p.name) else {
            continue;
        };
        if !p.loss.exclude_from_total
            && let Some(t) = total_loss(out, &p.loss.weights)
        {
            let t = match model_weights.get(&p.name) {
                Some(w) => t.mul_scalar(*w),
                None => t,
            };
            total = Some(match total {
                Some(sum) => sum + t,
                None => t,
            });
        }
        for (key, value) in out.as_map().into_iter().flatten() {
            if key.starts_with("loss")
                && let Some(flat) = value.as_tensor().and_then(|t| t.clone().flatten_float())
            {
                losses.insert(
                    format!("{}/{key}", p.name),
                    flat.mean().into_scalar().elem::<f64>(),
                );
            }
        }
    }
    let total = total.ok_or(
        "no loss: no loss nucleotide gave a key starting with `loss` to the total (its generated keys named `loss…` are summed, unless it is `exclude_from_total_loss`)",
    )?;
    Ok((total, losses))
}

/// The model's total loss and its loss keys, as training and evaluation both make it: the
/// weighted losses (`losses_of`) and the weight penalties over the trainable plugins, which
/// `plugin` finds by name.
fn model_losses<'a, B: Backend>(
    parts: &[Part],
    config: &ModelConfig,
    outputs: &BTreeMap<String, Option<Nest<B>>>,
    plugin: impl Fn(&str) -> Option<&'a dyn DynPlugin<B>>,
) -> Result<(Tensor<B, 1>, BTreeMap<String, f64>), BoxError> {
    let (total, mut losses) = losses_of(parts, &config.loss_weights, outputs)?;
    let trainable = parts
        .iter()
        .filter(|p| p.kind == Kind::ModelPlugin && p.trainable)
        .filter_map(|p| plugin(&p.name));
    let total = add_regularization(config, trainable, total, &mut losses);
    Ok((total, losses))
}

/// Adds the weight penalties of `config` over `plugins` (the trainable ones) to `total`, and
/// reports each as `regularization_loss_l1` / `regularization_loss_l2`.
fn add_regularization<'a, B: Backend>(
    config: &ModelConfig,
    plugins: impl Iterator<Item = &'a dyn DynPlugin<B>>,
    total: Tensor<B, 1>,
    losses: &mut BTreeMap<String, f64>,
) -> Tensor<B, 1> {
    if !config.regularizes() {
        return total;
    }
    let mut l1: Option<Tensor<B, 1>> = None;
    let mut l2: Option<Tensor<B, 1>> = None;
    let add = |sum: &mut Option<Tensor<B, 1>>, t: Tensor<B, 1>| {
        *sum = Some(match sum.take() {
            Some(s) => s + t,
            None => t,
        });
    };
    for p in plugins {
        if let Some((abs, squares)) = p.weight_sums() {
            add(&mut l1, abs);
            add(&mut l2, squares);
        }
    }
    let mut total = total;
    for (name, sum, factor) in [
        ("regularization_loss_l1", l1, config.regularization_l1),
        ("regularization_loss_l2", l2, config.regularization_l2 / 2.0),
    ] {
        if let (Some(sum), true) = (sum, factor > 0.0) {
            let term = sum.mul_scalar(factor);
            losses.insert(name.to_owned(), term.clone().into_scalar().elem::<f64>());
            total = total + term;
        }
    }
    total
}

/// The metrics' and summaries' scalars among outputs (what summaries and evaluations report).
pub(crate) fn metric_scalars<B: Backend>(
    parts: &[Part],
    outputs: &BTreeMap<String, Option<Nest<B>>>,
) -> BTreeMap<String, f64> {
    scalars_of(parts, &[Kind::ModelMetric, Kind::ModelSummary], outputs)
}

/// Scalars among outputs: every float tensor of one element or scalar number, by
/// `<nucleotide>/<key>`; nucleotides of `kinds` only.
pub(crate) fn scalars_of<B: Backend>(
    parts: &[Part],
    kinds: &[Kind],
    outputs: &BTreeMap<String, Option<Nest<B>>>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for p in parts.iter().filter(|p| kinds.contains(&p.kind)) {
        let Some(Some(nest)) = outputs.get(&p.name) else {
            continue;
        };
        for (key, value) in nest.flatten() {
            let key = key.strip_prefix("scalar_").unwrap_or(&key).to_owned();
            let v = match value {
                Nest::Float(x) => Some(*x),
                Nest::Int(x) => Some(*x as f64),
                Nest::Tensor(t) if t.shape().num_elements() == 1 => t
                    .clone()
                    .flatten_float()
                    .map(|f| f.into_scalar().elem::<f64>()),
                _ => None,
            };
            if let Some(v) = v {
                out.insert(format!("{}/{key}", p.name), v);
            }
        }
    }
    out
}
