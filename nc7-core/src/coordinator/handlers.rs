//! What the trainer and the inferer share: the handlers and model parts of a checked
//! project, and the callbacks handler built and run.

use std::collections::BTreeMap;

use burn::prelude::Backend;

use crate::check::{DATASET_NODE, ProjectCheck};
use crate::config::MODEL_SECTIONS;
use crate::gene::Kind;
use crate::handler::GeneHandler;
use crate::model::Part;
use crate::nest::Nest;
use crate::nucleotide::CallbackContext;
use crate::runtime::{self, DynCallback};

/// The handler `name` of a checked project.
pub fn handler(check: &ProjectCheck, name: &str) -> Option<GeneHandler> {
    check.handlers.iter().find(|h| h.name() == name).cloned()
}

/// The model's parts: the nucleotides of the model sections.
pub fn model_parts(check: &ProjectCheck) -> Result<Vec<Part>, String> {
    let sections: Vec<&str> = MODEL_SECTIONS.iter().map(|s| s.key).collect();
    Part::from_entries(
        check
            .nucleotides
            .iter()
            .filter(|e| sections.contains(&e.section)),
    )
}

/// A callbacks handler's nucleotides, built.
pub struct Callbacks<B: Backend> {
    handler: Option<GeneHandler>,
    callbacks: BTreeMap<String, Box<dyn DynCallback<B>>>,
}

fn failed(name: &str) -> impl Fn(crate::BoxError) -> String + '_ {
    move |e| format!("callback `{name}` failed: {e}")
}

impl<B: Backend> Callbacks<B> {
    /// Builds the callbacks of the handler `name` (none when the project has no such handler).
    pub fn build(check: &ProjectCheck, name: &str, device: &B::Device) -> Result<Self, String> {
        let handler = handler(check, name);
        let mut callbacks = BTreeMap::new();
        if let Some(h) = &handler {
            let names: Vec<&str> = h.helix().names().skip(h.helix().incoming_len()).collect();
            for e in check
                .nucleotides
                .iter()
                .filter(|e| names.contains(&e.name()) && e.kind == Kind::CoordinatorCallback)
            {
                let parts = Part::from_entries([e])?;
                let p = &parts[0];
                callbacks.insert(
                    p.name.clone(),
                    runtime::callback::<B>(p.registration, &p.name, &p.config, device)
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        Ok(Callbacks { handler, callbacks })
    }

    /// Whether there are no callbacks.
    pub fn is_empty(&self) -> bool {
        self.callbacks.is_empty()
    }

    /// Calls every callback's `begin`, in name order.
    pub fn begin(&mut self, ctx: &CallbackContext) -> Result<(), String> {
        for (name, c) in &mut self.callbacks {
            c.begin(ctx).map_err(failed(name))?;
        }
        Ok(())
    }

    /// Calls every callback's `end`, in name order; all of them, even after one fails (so that
    /// each flushes what it holds), reporting the first failure.
    pub fn end(&mut self, ctx: &CallbackContext) -> Result<(), String> {
        let mut first = None;
        for (name, c) in &mut self.callbacks {
            if let Err(e) = c.end(ctx).map_err(failed(name)) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Runs every callback on one iteration's data and model outputs, in topological order.
    pub fn iteration(
        &mut self,
        data: Nest<B>,
        mut outputs: BTreeMap<String, Option<Nest<B>>>,
        ctx: &CallbackContext,
    ) -> Result<(), String> {
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
                other => other.to_string(),
            })?;
        Ok(())
    }
}
