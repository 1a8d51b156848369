//! Nucleotides built at run time, on a backend chosen at run time, from their registration.
//!
//! `#[nucleotide]` implements, for each type, a *family* trait of its kind: a generic
//! associated type `On<B>` naming the type on any backend. The registration keeps a small
//! object ([`Erased`]) that builds the type on one of the backends nc7 runs on (picked by
//! `TypeId`) and hands it back as the kind's object-safe trait ([`DynPlugin`],
//! [`TrainPlugin`], [`DynStep`], [`DynDataset`], [`DynFeeder`], [`DynCallback`],
//! [`DynAccumulator`]): the coordinators run graphs of nucleotides without knowing their types.

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::{Backend, Tensor};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, Int};
use serde_json::Value;

use crate::backend::{on_inner_backend, on_train_backend, tensor_to_inner};
use crate::glue::{At, Keys};
use crate::handler::BoxError;
use crate::nest::{AnyTensor, Nest};
use crate::nucleotide::{self as k, Build, CallbackContext, Mode};
use crate::optim::{PluginOptimizer, square_sum};
use crate::registry::Registration;

mod params;

use params::*;

/// One trait per kind, implemented by a marker type that `#[nucleotide]` writes: `On<B>` is the
/// nucleotide type on backend `B`.
#[allow(non_snake_case)]
pub mod family {
    use burn::module::Module;
    use burn::prelude::Backend;

    use crate::nucleotide as k;

    /// Model plugins are burn modules: their parameters are trained and saved.
    pub trait ModelPlugin: Sync + 'static {
        /// The plugin on backend `B`.
        type On<B: Backend>: k::ModelPlugin<B> + Module<B> + Send + 'static;
    }

    macro_rules! families {
        ($($kind:ident),*) => {$(
            #[doc = concat!("The family of a ", stringify!($kind), " nucleotide.")]
            pub trait $kind: Sync + 'static {
                /// The nucleotide on backend `B`.
                type On<B: Backend>: k::$kind<B> + Send + 'static;
            }
        )*};
    }
    /// Datasets are read from a background thread while the model trains.
    pub trait Dataset: Sync + 'static {
        /// The dataset on backend `B`.
        type On<B: Backend>: k::Dataset<B> + Send + Sync + 'static;
    }

    families!(
        ModelLoss,
        ModelPostProcessor,
        ModelSummary,
        ModelMetric,
        DataFeeder,
        DataReader,
        DataProcessor,
        CoordinatorCallback,
        KpiPlugin,
        KpiAccumulator
    );
}

/// Builds a registered type on a backend given by `TypeId`: what a [`Registration`] keeps.
pub trait Erased: Sync + 'static {
    /// Builds the nucleotide `name` from its own config fields on the backend `backend` (whose
    /// device `device` is); `None` when nc7 does not run this kind on that backend. The box
    /// holds the kind's trait object (`Box<dyn DynStep<B>>`, ...).
    fn build(
        &self,
        backend: TypeId,
        name: &str,
        config: &Value,
        device: &dyn Any,
    ) -> Option<Result<Box<dyn Any>, BoxError>>;
}

/// Why a nucleotide could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Its config does not fit its config struct (checked before, so rare).
    #[error("nucleotide `{name}` ({class}): {source}")]
    Build {
        /// The nucleotide.
        name: String,
        /// Its class.
        class: &'static str,
        /// What went wrong.
        source: BoxError,
    },
    /// The backend is not one nc7 builds this kind on.
    #[error("nucleotide `{name}` ({class}) cannot be built on backend `{backend}`")]
    Backend {
        /// The nucleotide.
        name: String,
        /// Its class.
        class: &'static str,
        /// The backend's type name.
        backend: &'static str,
    },
    /// The type is of another kind than the place it is used in.
    #[error("nucleotide `{name}` ({class}) is a {kind}, which cannot be used here")]
    Kind {
        /// The nucleotide.
        name: String,
        /// Its class.
        class: &'static str,
        /// Its kind.
        kind: crate::gene::Kind,
    },
}

fn build_as<T: 'static, B: Backend>(
    reg: &Registration,
    name: &str,
    config: &Value,
    device: &B::Device,
) -> Result<T, BuildError> {
    let built = reg
        .runtime
        .build(TypeId::of::<B>(), name, config, device)
        .ok_or_else(|| BuildError::Backend {
            name: name.to_owned(),
            class: reg.class_name,
            backend: std::any::type_name::<B>(),
        })?
        .map_err(|source| BuildError::Build {
            name: name.to_owned(),
            class: reg.class_name,
            source,
        })?;
    built
        .downcast::<T>()
        .map(|b| *b)
        .map_err(|_| BuildError::Kind {
            name: name.to_owned(),
            class: reg.class_name,
            kind: reg.kind,
        })
}

/// Builds a model plugin for inference or evaluation on `B`.
pub fn plugin<B: Backend>(
    reg: &Registration,
    name: &str,
    config: &Value,
    device: &B::Device,
) -> Result<Box<dyn DynPlugin<B>>, BuildError> {
    build_as::<Box<dyn DynPlugin<B>>, B>(reg, name, config, device)
}

/// Builds a model plugin for training on the autodiff backend `B`.
pub(crate) fn train_plugin<B: AutodiffBackend>(
    reg: &Registration,
    name: &str,
    config: &Value,
    device: &B::Device,
) -> Result<Box<dyn TrainPlugin<B>>, BuildError> {
    build_as::<Box<dyn TrainPlugin<B>>, B>(reg, name, config, device)
}

/// Builds a loss, post-processor, metric, summary, data reader, data processor or KPI plugin.
pub fn step<B: Backend>(
    reg: &Registration,
    name: &str,
    config: &Value,
    device: &B::Device,
) -> Result<Box<dyn DynStep<B>>, BuildError> {
    build_as::<Box<dyn DynStep<B>>, B>(reg, name, config, device)
}

/// Builds a dataset.
pub fn dataset<B: Backend>(
    reg: &Registration,
    name: &str,
    config: &Value,
    device: &B::Device,
) -> Result<Box<dyn DynDataset<B>>, BuildError> {
    build_as::<Box<dyn DynDataset<B>>, B>(reg, name, config, device)
}

/// Builds a data feeder.
pub fn feeder<B: Backend>(
    reg: &Registration,
    name: &str,
    config: &Value,
    device: &B::Device,
) -> Result<Box<dyn DynFeeder<B>>, BuildError> {
    build_as::<Box<dyn DynFeeder<B>>, B>(reg, name, config, device)
}

/// Builds a callback.
pub fn callback<B: Backend>(
    reg: &Registration,
    name: &str,
    config: &Value,
    device: &B::Device,
) -> Result<Box<dyn DynCallback<B>>, BuildError> {
    build_as::<Box<dyn DynCallback<B>>, B>(reg, name, config, device)
}

/// Builds a KPI accumulator.
pub fn accumulator<B: Backend>(
    reg: &Registration,
    name: &str,
    config: &Value,
    device: &B::Device,
) -> Result<Box<dyn DynAccumulator<B>>, BuildError> {
    build_as::<Box<dyn DynAccumulator<B>>, B>(reg, name, config, device)
}

/// A model plugin on a backend, its type erased.
pub trait DynPlugin<B: Backend>: Send {
    /// Computes the outputs.
    fn forward(&self, input: Nest<B>, mode: Mode) -> Result<Nest<B>, BoxError>;
    /// Every parameter by its path in the module (`encoder.conv1.weight`); handles, not copies.
    fn tensors(&self) -> Vec<(String, AnyTensor<B>)>;
    /// Replaces each parameter by the tensor of its path taken out of `tensors`; a parameter
    /// without one, or with another shape or kind, is an error naming it.
    fn load_tensors(&mut self, tensors: &mut BTreeMap<String, AnyTensor<B>>) -> Result<(), String>;
    /// The number of parameter values.
    fn num_params(&self) -> usize;
    /// `(Σ|w|, Σw²)` over its float parameters, on the graph when they are trained (weight
    /// penalties); `None` when it has none.
    fn weight_sums(&self) -> Option<(Tensor<B, 1>, Tensor<B, 1>)>;
}

/// A model plugin being trained on an autodiff backend.
pub trait TrainPlugin<B: AutodiffBackend>: DynPlugin<B> {
    /// The sum of its gradients' squares (on the device, not read back); `None` when it has
    /// no gradients.
    fn square_grad_sum(&self, grads: &B::Gradients) -> Option<Tensor<B::InnerBackend, 1>>;
    /// Its forward pass with its float weights cast to `dtype` (mixed precision; the
    /// gradients reach the weights through the cast).
    fn forward_in(
        &self,
        input: Nest<B>,
        mode: Mode,
        dtype: burn::tensor::FloatDType,
    ) -> Result<Nest<B>, BoxError>;
    /// Its trainable parameters' gradients, each flattened, in a fixed order (zeros for one
    /// without a gradient): what data-parallel replicas exchange.
    fn flat_grads(&self, grads: &B::Gradients) -> Vec<Tensor<B::InnerBackend, 1>>;
    /// Replaces its trainable parameters' gradients by consecutive pieces of `flat` from
    /// `offset`, in [`TrainPlugin::flat_grads`]'s order; the offset after them.
    fn set_grads(
        &self,
        grads: &mut B::Gradients,
        flat: &Tensor<B::InnerBackend, 1>,
        offset: usize,
    ) -> usize;
    /// Takes its gradients out of `grads`, scales them by `scale` (global-norm clipping) and
    /// steps its parameters with `optimizer` at learning rate `lr`.
    fn step(
        &mut self,
        optimizer: &mut PluginOptimizer<B>,
        lr: f64,
        grads: &mut B::Gradients,
        scale: f64,
    );
    /// Stops computing gradients for its parameters (`trainable: false`).
    fn freeze(&mut self);
    /// The plugin with the same weights on the inner backend, for evaluation and export.
    fn valid(
        &self,
        device: &burn::tensor::Device<B::InnerBackend>,
    ) -> Result<Box<dyn DynPlugin<B::InnerBackend>>, BoxError>;
}

/// One step of a loss, post-processor, metric, summary, data reader or processor, or KPI
/// plugin: routed inputs in, outputs out.
pub trait DynStep<B: Backend>: Send {
    /// Runs the step.
    fn run(&mut self, input: Nest<B>, mode: Mode) -> Result<Nest<B>, BoxError>;
}

/// A dataset, its type erased.
pub trait DynDataset<B: Backend>: Send + Sync {
    /// The number of samples.
    fn len(&self) -> usize;
    /// Whether it has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// One sample, for the epoch and run `key` names.
    fn get_for(&self, key: crate::data::SampleKey) -> Result<Nest<B>, BoxError>;
    /// How many samples of each part an epoch draws (a mix of data sets); none by default.
    fn epoch_counts(&self, epoch: u64, seed: u64) -> BTreeMap<String, usize> {
        let _ = (epoch, seed);
        BTreeMap::new()
    }
    /// One sample by its index alone (epoch 0, seed 0).
    fn get(&self, index: usize) -> Result<Nest<B>, BoxError> {
        self.get_for(crate::data::SampleKey::unkeyed(index))
    }
}

/// A data feeder, its type erased.
pub trait DynFeeder<B: Backend>: Send {
    /// The next sample, `None` at the end.
    fn next_sample(&mut self) -> Result<Option<Nest<B>>, BoxError>;
    /// Whether it gives feed lists (see [`k::DataFeeder::feed_lists`]).
    fn feed_lists(&self) -> bool;
    /// The next feed list, `None` at the end.
    fn next_feeds(&mut self) -> Result<Option<Vec<Nest<B>>>, BoxError>;
}

/// A callback, its type erased.
pub trait DynCallback<B: Backend>: Send {
    /// Before the first iteration.
    fn begin(&mut self, ctx: &CallbackContext) -> Result<(), BoxError>;
    /// Before each iteration.
    fn on_iteration_start(&mut self, ctx: &CallbackContext) -> Result<(), BoxError>;
    /// After each iteration.
    fn on_iteration_end(
        &mut self,
        input: Nest<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<Nest<B>>, BoxError>;
    /// After the last iteration.
    fn end(&mut self, ctx: &CallbackContext) -> Result<(), BoxError>;
    /// When the run is over, however it ended.
    fn on_run_end(
        &mut self,
        outcome: &super::kinds::RunOutcome,
        ctx: &CallbackContext,
    ) -> Result<(), BoxError>;
}

/// A KPI accumulator, its type erased.
pub trait DynAccumulator<B: Backend>: Send {
    /// The KPIs of the samples given (each one's routed inputs).
    fn combine(&mut self, samples: Vec<Nest<B>>) -> Result<Nest<B>, BoxError>;
}

fn make<B: Backend, N: Build<B>>(config: &Value, device: &dyn Any) -> Result<N, BoxError> {
    let device = device
        .downcast_ref::<B::Device>()
        .ok_or("the device given is not the backend's")?;
    let config: N::Config = serde_json::from_value(config.clone())?;
    N::build(&config, device)
}

fn input<B: Backend, N: Build<B>>(name: &str, nest: Nest<B>) -> Result<N::Input, BoxError> {
    Ok(<N::Input as Keys<B>>::from_nest(
        nest,
        &At::nucleotide(name),
    )?)
}

/// The runtime objects `#[nucleotide]` registers, one generic struct per kind.
#[allow(non_snake_case)]
pub mod rt {
    use super::*;

    macro_rules! runtime_struct {
        ($($kind:ident),*) => {$(
            #[doc = concat!("Builds a ", stringify!($kind), " of family `F` on a backend.")]
            pub struct $kind<F>(pub PhantomData<fn() -> F>);
        )*};
    }
    runtime_struct!(
        ModelPlugin,
        ModelLoss,
        ModelPostProcessor,
        ModelSummary,
        ModelMetric,
        Dataset,
        DataFeeder,
        DataReader,
        DataProcessor,
        CoordinatorCallback,
        KpiPlugin,
        KpiAccumulator
    );

    impl<F: family::ModelPlugin> Erased for ModelPlugin<F> {
        fn build(
            &self,
            backend: TypeId,
            name: &str,
            config: &Value,
            device: &dyn Any,
        ) -> Option<Result<Box<dyn Any>, BoxError>> {
            on_train_backend!(backend, B => {
                make::<B, F::On<B>>(config, device).map(|n| {
                    let node: Box<dyn TrainPlugin<B>> =
                        Box::new(PluginNode::<B, F>::new(name, config, n));
                    Box::new(node) as Box<dyn Any>
                })
            })
            .or_else(|| {
                on_inner_backend!(backend, B => {
                    make::<B, F::On<B>>(config, device).map(|n| {
                        let node: Box<dyn DynPlugin<B>> =
                            Box::new(PluginNode::<B, F>::new(name, config, n));
                        Box::new(node) as Box<dyn Any>
                    })
                })
            })
        }
    }

    macro_rules! step_runtime {
        ($($kind:ident => |$n:ident, $i:ident, $mode:ident| $call:expr;)*) => {$(
            impl<F: family::$kind> Erased for $kind<F> {
                fn build(
                    &self,
                    backend: TypeId,
                    name: &str,
                    config: &Value,
                    device: &dyn Any,
                ) -> Option<Result<Box<dyn Any>, BoxError>> {
                    struct Node<B: Backend, F: family::$kind> {
                        name: String,
                        inner: F::On<B>,
                    }
                    impl<B: Backend, F: family::$kind> DynStep<B> for Node<B, F> {
                        #[allow(unused_variables)]
                        fn run(&mut self, nest: Nest<B>, $mode: Mode) -> Result<Nest<B>, BoxError> {
                            let $i = input::<B, F::On<B>>(&self.name, nest)?;
                            let $n = &mut self.inner;
                            let out = $call;
                            Ok(Keys::into_nest(out))
                        }
                    }
                    fn one<B: Backend, F: family::$kind>(
                        name: &str,
                        config: &Value,
                        device: &dyn Any,
                    ) -> Result<Box<dyn Any>, BoxError> {
                        let inner = make::<B, F::On<B>>(config, device)?;
                        let node: Box<dyn DynStep<B>> =
                            Box::new(Node::<B, F> { name: name.to_owned(), inner });
                        Ok(Box::new(node))
                    }
                    on_train_backend!(backend, B => one::<B, F>(name, config, device))
                        .or_else(|| on_inner_backend!(backend, B => one::<B, F>(name, config, device)))
                }
            }
        )*};
    }
    step_runtime! {
        ModelLoss => |n, i, mode| k::ModelLoss::loss(&*n, i, mode);
        ModelPostProcessor => |n, i, mode| k::ModelPostProcessor::process(&*n, i, mode);
        ModelMetric => |n, i, mode| k::ModelMetric::metric(&*n, i, mode);
        ModelSummary => |n, i, mode| k::ModelSummary::summarize(&*n, i, mode);
        DataReader => |n, i, mode| k::DataReader::read(n, i)?;
        DataProcessor => |n, i, mode| k::DataProcessor::process(n, i)?;
        KpiPlugin => |n, i, mode| k::KpiPlugin::evaluate(n, i)?;
    }

    /// Implements `Erased` for a kind whose object wraps the nucleotide in `$node`, on the
    /// backends without autodiff (data and callbacks never need gradients).
    macro_rules! inner_runtime {
        ($($kind:ident => $node:ident as $dyn:ident;)*) => {$(
            impl<F: family::$kind> Erased for $kind<F> {
                fn build(
                    &self,
                    backend: TypeId,
                    name: &str,
                    config: &Value,
                    device: &dyn Any,
                ) -> Option<Result<Box<dyn Any>, BoxError>> {
                    on_inner_backend!(backend, B => {
                        make::<B, F::On<B>>(config, device).map(|inner| {
                            let node: Box<dyn $dyn<B>> =
                                Box::new($node::<B, F::On<B>> { name: name.to_owned(), inner, _b: PhantomData });
                            Box::new(node) as Box<dyn Any>
                        })
                    })
                }
            }
        )*};
    }
    inner_runtime! {
        Dataset => DatasetNode as DynDataset;
        DataFeeder => FeederNode as DynFeeder;
        CoordinatorCallback => CallbackNode as DynCallback;
        KpiAccumulator => AccumulatorNode as DynAccumulator;
    }
}

struct DatasetNode<B: Backend, N> {
    #[allow(dead_code)]
    name: String,
    inner: N,
    _b: PhantomData<fn() -> B>,
}

impl<B: Backend, N: k::Dataset<B> + Send> DynDataset<B> for DatasetNode<B, N>
where
    N: Sync,
{
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn get_for(&self, key: crate::data::SampleKey) -> Result<Nest<B>, BoxError> {
        Ok(self.inner.get_for(key)?.into_nest())
    }
    fn epoch_counts(&self, epoch: u64, seed: u64) -> BTreeMap<String, usize> {
        self.inner.epoch_counts(epoch, seed)
    }
}

struct FeederNode<B: Backend, N> {
    #[allow(dead_code)]
    name: String,
    inner: N,
    _b: PhantomData<fn() -> B>,
}

impl<B: Backend, N: k::DataFeeder<B> + Send> DynFeeder<B> for FeederNode<B, N> {
    fn next_sample(&mut self) -> Result<Option<Nest<B>>, BoxError> {
        Ok(self.inner.next_sample()?.map(Keys::into_nest))
    }
    fn feed_lists(&self) -> bool {
        self.inner.feed_lists()
    }
    fn next_feeds(&mut self) -> Result<Option<Vec<Nest<B>>>, BoxError> {
        Ok(self
            .inner
            .next_feeds()?
            .map(|feeds| feeds.into_iter().map(Keys::into_nest).collect()))
    }
}

struct CallbackNode<B: Backend, N> {
    name: String,
    inner: N,
    _b: PhantomData<fn() -> B>,
}

impl<B: Backend, N: k::CoordinatorCallback<B> + Send> DynCallback<B> for CallbackNode<B, N> {
    fn begin(&mut self, ctx: &CallbackContext) -> Result<(), BoxError> {
        self.inner.begin(ctx)
    }
    fn on_iteration_start(&mut self, ctx: &CallbackContext) -> Result<(), BoxError> {
        self.inner.on_iteration_start(ctx)
    }
    fn on_iteration_end(
        &mut self,
        nest: Nest<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<Nest<B>>, BoxError> {
        let i = input::<B, N>(&self.name, nest)?;
        Ok(self.inner.on_iteration_end(i, ctx)?.map(Keys::into_nest))
    }
    fn end(&mut self, ctx: &CallbackContext) -> Result<(), BoxError> {
        self.inner.end(ctx)
    }
    fn on_run_end(
        &mut self,
        outcome: &super::kinds::RunOutcome,
        ctx: &CallbackContext,
    ) -> Result<(), BoxError> {
        self.inner.on_run_end(outcome, ctx)
    }
}

struct AccumulatorNode<B: Backend, N> {
    name: String,
    inner: N,
    _b: PhantomData<fn() -> B>,
}

impl<B: Backend, N: k::KpiAccumulator<B> + Send> DynAccumulator<B> for AccumulatorNode<B, N> {
    fn combine(&mut self, samples: Vec<Nest<B>>) -> Result<Nest<B>, BoxError> {
        let inputs = samples
            .into_iter()
            .map(|nest| input::<B, N>(&self.name, nest))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.inner.combine(inputs)?.into_nest())
    }
}

/// A model plugin with what it was built from, so that it can be rebuilt on the inner backend.
struct PluginNode<B: Backend, F: family::ModelPlugin> {
    name: String,
    config: Value,
    module: Option<F::On<B>>,
    frozen: bool,
}

impl<B: Backend, F: family::ModelPlugin> PluginNode<B, F> {
    fn new(name: &str, config: &Value, module: F::On<B>) -> Self {
        // Parameter ids follow from the plugin's name and the parameter's path, so that a
        // resumed run's optimizer state finds its parameters again.
        let module = module.map(&mut StableIds {
            plugin: name,
            path: Vec::new(),
        });
        PluginNode {
            name: name.to_owned(),
            config: config.clone(),
            module: Some(module),
            frozen: false,
        }
    }

    fn module(&self) -> &F::On<B> {
        self.module
            .as_ref()
            .expect("the module is only taken while mapped")
    }

    fn map_module(&mut self, mapper: &mut impl ModuleMapper<B>) {
        let module = self
            .module
            .take()
            .expect("the module is only taken while mapped");
        self.module = Some(module.map(mapper));
    }
}

impl<B: Backend, F: family::ModelPlugin> DynPlugin<B> for PluginNode<B, F> {
    fn forward(&self, nest: Nest<B>, mode: Mode) -> Result<Nest<B>, BoxError> {
        let i = input::<B, F::On<B>>(&self.name, nest)?;
        Ok(k::ModelPlugin::forward(self.module(), i, mode).into_nest())
    }

    fn tensors(&self) -> Vec<(String, AnyTensor<B>)> {
        let mut collect = Collect {
            path: Vec::new(),
            out: Vec::new(),
        };
        self.module().visit(&mut collect);
        collect.out
    }

    fn load_tensors(&mut self, tensors: &mut BTreeMap<String, AnyTensor<B>>) -> Result<(), String> {
        let mut load = Load {
            path: Vec::new(),
            tensors,
            require_grad: !self.frozen,
            problems: Vec::new(),
        };
        self.map_module(&mut load);
        if load.problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "plugin `{}`: {}",
                self.name,
                load.problems.join("; ")
            ))
        }
    }

    fn num_params(&self) -> usize {
        self.module().num_params()
    }

    fn weight_sums(&self) -> Option<(Tensor<B, 1>, Tensor<B, 1>)> {
        let mut sums = WeightSums::<B> { sums: None };
        self.module().visit(&mut sums);
        sums.sums
    }
}

impl<B: AutodiffBackend, F: family::ModelPlugin> TrainPlugin<B> for PluginNode<B, F> {
    fn square_grad_sum(&self, grads: &B::Gradients) -> Option<Tensor<B::InnerBackend, 1>> {
        let mut sum = SquareSum::<B> { grads, sum: None };
        self.module().visit(&mut sum);
        sum.sum
    }

    fn forward_in(
        &self,
        nest: Nest<B>,
        mode: Mode,
        dtype: burn::tensor::FloatDType,
    ) -> Result<Nest<B>, BoxError> {
        let i = input::<B, F::On<B>>(&self.name, nest)?;
        let module = self.module().clone().map(&mut CastParams { dtype });
        Ok(k::ModelPlugin::forward(&module, i, mode).into_nest())
    }

    fn flat_grads(&self, grads: &B::Gradients) -> Vec<Tensor<B::InnerBackend, 1>> {
        let mut flat = FlatGrads::<B> {
            grads,
            out: Vec::new(),
        };
        self.module().visit(&mut flat);
        flat.out
    }

    fn set_grads(
        &self,
        grads: &mut B::Gradients,
        flat: &Tensor<B::InnerBackend, 1>,
        offset: usize,
    ) -> usize {
        let mut set = SetGrads::<B> {
            grads,
            flat,
            offset,
        };
        self.module().visit(&mut set);
        set.offset
    }

    fn step(
        &mut self,
        optimizer: &mut PluginOptimizer<B>,
        lr: f64,
        grads: &mut B::Gradients,
        scale: f64,
    ) {
        if self.frozen {
            return;
        }
        self.map_module(&mut Step {
            optimizer,
            lr,
            grads,
            scale,
        });
    }

    fn freeze(&mut self) {
        self.frozen = true;
        let module = self
            .module
            .take()
            .expect("the module is only taken while mapped");
        self.module = Some(module.no_grad());
    }

    fn valid(
        &self,
        device: &burn::tensor::Device<B::InnerBackend>,
    ) -> Result<Box<dyn DynPlugin<B::InnerBackend>>, BoxError> {
        let module = make::<B::InnerBackend, F::On<B::InnerBackend>>(&self.config, device)?;
        let mut node = PluginNode::<B::InnerBackend, F>::new(&self.name, &self.config, module);
        let mut tensors: BTreeMap<String, AnyTensor<B::InnerBackend>> = self
            .tensors()
            .into_iter()
            .map(|(k, t)| (k, tensor_to_inner::<B>(t)))
            .collect();
        node.load_tensors(&mut tensors)?;
        Ok(Box::new(node))
    }
}
