//! What the trainer and the inferer share: a planned callbacks handler, built and run.

use std::collections::BTreeMap;

use burn::prelude::Backend;

use crate::check::DATASET_NODE;
use crate::handler::GeneHandler;
use crate::nest::Nest;
use crate::nucleotide::CallbackContext;
use crate::plan::CallbacksPlan;
use crate::runtime::{self, DynCallback};

/// A callbacks handler's nucleotides, built.
pub struct Callbacks<B: Backend> {
    handler: Option<GeneHandler>,
    callbacks: BTreeMap<String, Box<dyn DynCallback<B>>>,
}

/// A callback that failed: its name and why.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// It could not be built from its config.
    #[error("{source}")]
    Build {
        /// The callback.
        callback: String,
        /// Why.
        source: crate::runtime::BuildError,
    },
    /// It failed while running.
    #[error("callback `{callback}` failed: {source}")]
    Run {
        /// The callback.
        callback: String,
        /// Why.
        source: crate::BoxError,
    },
    /// The callbacks' inputs could not be routed.
    #[error("{0}")]
    Route(crate::handler::RunError),
}

fn failed(name: &str) -> impl Fn(crate::BoxError) -> CallbackError + '_ {
    move |source| CallbackError::Run {
        callback: name.to_owned(),
        source,
    }
}

impl<B: Backend> Callbacks<B> {
    /// Builds the planned callbacks on `device`.
    pub fn build(plan: &CallbacksPlan, device: &B::Device) -> Result<Self, CallbackError> {
        let mut callbacks = BTreeMap::new();
        for p in &plan.parts {
            callbacks.insert(
                p.name.clone(),
                runtime::callback::<B>(p.registration, &p.name, &p.config, device).map_err(
                    |source| CallbackError::Build {
                        callback: p.name.clone(),
                        source,
                    },
                )?,
            );
        }
        Ok(Callbacks {
            handler: plan.handler.clone(),
            callbacks,
        })
    }

    /// Whether there are no callbacks.
    pub fn is_empty(&self) -> bool {
        self.callbacks.is_empty()
    }

    /// Calls every callback's `begin`, in name order.
    pub fn begin(&mut self, ctx: &CallbackContext) -> Result<(), CallbackError> {
        for (name, c) in &mut self.callbacks {
            c.begin(ctx).map_err(failed(name))?;
        }
        Ok(())
    }

    /// Calls every callback's `end`, in name order; all of them, even after one fails (so that
    /// each flushes what it holds), reporting the first failure.
    pub fn end(&mut self, ctx: &CallbackContext) -> Result<(), CallbackError> {
        let mut first = None;
        for (name, c) in &mut self.callbacks {
            if let Err(e) = c.end(ctx).map_err(failed(name)) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Calls every callback's `on_run_end`, in name order; a failure is a warning, and the
    /// others are still called.
    pub fn run_end(&mut self, outcome: &crate::nucleotide::RunOutcome, ctx: &CallbackContext) {
        for (name, c) in &mut self.callbacks {
            if let Err(e) = c.on_run_end(outcome, ctx) {
                log::warn!("callback `{name}` at the run's end: {e}");
            }
        }
    }

    /// Runs every callback on one iteration's data and model outputs, in topological order.
    pub fn iteration(
        &mut self,
        data: Nest<B>,
        mut outputs: BTreeMap<String, Option<Nest<B>>>,
        ctx: &CallbackContext,
    ) -> Result<(), CallbackError> {
        let Some(handler) = &self.handler else {
            return Ok(());
        };
        for (name, c) in &mut self.callbacks {
            c.on_iteration_start(ctx).map_err(failed(name))?;
        }
        let mut data = Some(data);
        let inputs: Vec<Option<Nest<B>>> = handler
            .helix()
            .names()
            .take(handler.helix().incoming_len())
            .map(|n| {
                if n == DATASET_NODE {
                    data.take()
                } else {
                    outputs.remove(n).flatten()
                }
            })
            .collect();
        let callbacks = &mut self.callbacks;
        handler
            .run(inputs, |node, input| {
                match callbacks.get_mut(&node.spec.name) {
                    Some(c) => c.on_iteration_end(input, ctx),
                    None => Ok(None),
                }
            })
            .map_err(|e| match e {
                crate::handler::RunError::Nucleotide { nucleotide, source } => {
                    failed(&nucleotide)(source)
                }
                other => CallbackError::Route(other),
            })?;
        Ok(())
    }
}
