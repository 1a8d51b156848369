//! KPI evaluation, as nucleus7's `KPIEvaluator` runs it: KPI plugins compute values for one
//! sample at a time (each batch is split first), KPI accumulators keep each sample's inputs and
//! combine them into KPIs when a sample's `evaluate` is true and at the end of the data. Both
//! are ordinary nucleotides in the `kpi` handler, wired by `inbound_nodes` and key mappings.
//!
//! KPIs are computed on the CPU whatever device the run uses: they are a handful of numbers per
//! sample, and host values keep them exact and deterministic. Each KPI nucleotide's `savers`
//! say where its values go (JSON in the run's results folder), and `cache: true` restores its
//! values from the run's cache for inputs it has seen before instead of computing them again.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use burn::prelude::Backend;

use crate::backend::Cpu;
use crate::check::DATASET_NODE;
use crate::gene::Kind;
use crate::handler::{BoxError, GeneHandler, RunError};
use crate::model::Part;
use crate::nest::Nest;
use crate::nucleotide::part::KpiSaver;
use crate::nucleotide::{EVALUATE_KEY, Mode};
use crate::runtime::{self, BuildError, DynAccumulator, DynStep};

mod cache;
mod samples;
mod values;
use cache::Cache;
pub use samples::split_samples;
pub use values::*;

/// A run's KPI handler and its nucleotides, typed: what a plan gives the evaluator.
#[derive(Debug, Clone)]
pub struct KpiEvaluatorPlan {
    /// The handler: its inputs are the data and the nodes before it (the model's outputs in a
    /// training or inference run).
    pub handler: GeneHandler,
    /// Its KPI plugins and accumulators.
    pub parts: Vec<Part>,
}

impl KpiEvaluatorPlan {
    /// The flat keys of the KPIs each accumulator generates (`None` for one with dynamic keys):
    /// what monitors may name as `kpi/<accumulator>/<key>`.
    pub fn kpi_keys(&self) -> Vec<(String, Option<Vec<String>>)> {
        self.parts
            .iter()
            .filter(|p| p.kind == Kind::KpiAccumulator)
            .map(|p| {
                let signature = (p.registration.signature)();
                let keys = (!signature.dynamic_generated).then(|| {
                    signature
                        .generated
                        .iter()
                        .map(|k| k.name.to_string())
                        .collect()
                });
                (p.name.clone(), keys)
            })
            .collect()
    }
}

/// Why a KPI evaluation failed; each names the nucleotide or the file.
#[derive(Debug, thiserror::Error)]
pub enum KpiError {
    /// A KPI nucleotide could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A KPI nucleotide failed on a sample, or its inputs could not be routed.
    #[error("KPI evaluation, sample {sample}: {source}")]
    Run {
        /// The sample's index in the evaluation, from 0.
        sample: u64,
        /// What failed, naming the nucleotide.
        source: Box<RunError>,
    },
    /// A batch could not be split into samples.
    #[error("splitting the batch into samples for the KPIs: {0}")]
    Split(String),
    /// A KPI file could not be written.
    #[error("writing KPIs to {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where an evaluation writes: its results folder, and the cache folder when one is used.
#[derive(Debug, Clone)]
pub struct KpiTargets {
    /// The folder the savers write to (created when something is written).
    pub results: PathBuf,
    /// The folder KPIs are cached in, shared by the runs of a project.
    pub cache: Option<PathBuf>,
}

/// A KPI handler's nucleotides, built on the CPU, with each accumulator's samples.
pub struct KpiEvaluator {
    handler: GeneHandler,
    /// Per handler input, the top-level keys KPI nucleotides read (`None`: all of them), so
    /// that nothing else is split into samples.
    needed: Vec<Option<std::collections::BTreeSet<String>>>,
    nodes: BTreeMap<String, Node>,
    results: PathBuf,
    cache: Option<Cache>,
    device: burn::tensor::Device<Cpu>,
    samples: u64,
}

struct Node {
    part: Part,
    /// What the cache keys by besides the inputs: the class and its config.
    ident: String,
    /// Times its values were computed, not restored from the cache.
    computed: u64,
    kind: NodeKind,
}

enum NodeKind {
    Plugin {
        step: Box<dyn DynStep<Cpu>>,
        lines: Option<std::io::BufWriter<std::fs::File>>,
    },
    Accumulator {
        accumulator: Box<dyn DynAccumulator<Cpu>>,
        buffer: Vec<Nest<Cpu>>,
        evaluations: Vec<Nest<Cpu>>,
        /// Whether its inputs held an `evaluate` key, and whether it was ever true.
        evaluate_seen: (bool, bool),
    },
}

impl KpiEvaluator {
    /// Builds the planned KPI nucleotides; nothing is written yet.
    pub fn new(plan: &KpiEvaluatorPlan, targets: &KpiTargets) -> Result<KpiEvaluator, KpiError> {
        let device = Default::default();
        let mut nodes = BTreeMap::new();
        for p in &plan.parts {
            let kind = match p.kind {
                Kind::KpiAccumulator => NodeKind::Accumulator {
                    accumulator: runtime::accumulator::<Cpu>(
                        p.registration,
                        &p.name,
                        &p.config,
                        &device,
                    )?,
                    buffer: Vec::new(),
                    evaluations: Vec::new(),
                    evaluate_seen: (false, false),
                },
                _ => NodeKind::Plugin {
                    step: runtime::step::<Cpu>(p.registration, &p.name, &p.config, &device)?,
                    lines: None,
                },
            };
            let ident = format!("{}\n{}", p.registration.path, p.config);
            nodes.insert(
                p.name.clone(),
                Node {
                    part: p.clone(),
                    ident,
                    computed: 0,
                    kind,
                },
            );
        }
        let wants_cache = plan.parts.iter().any(|p| p.kpi.cache);
        Ok(KpiEvaluator {
            needed: needed_keys(&plan.handler),
            handler: plan.handler.clone(),
            nodes,
            results: targets.results.clone(),
            cache: targets
                .cache
                .as_ref()
                .filter(|_| wants_cache)
                .and_then(|dir| Cache::open(dir)),
            device,
            samples: 0,
        })
    }

    /// Evaluates one iteration: `data` and the `outputs` of the nodes before the handler, each
    /// a batch of `samples`; `is_last` when it is the last iteration of the data, whose last
    /// sample makes every accumulator combine what it holds.
    pub fn iteration<B: Backend>(
        &mut self,
        data: &Nest<B>,
        outputs: &BTreeMap<String, Option<Nest<B>>>,
        samples: usize,
        is_last: bool,
    ) -> Result<(), KpiError> {
        let helix = self.handler.helix();
        let names: Vec<String> = helix
            .names()
            .take(helix.incoming_len())
            .map(str::to_owned)
            .collect();
        let mut columns = Vec::with_capacity(names.len());
        for (input, name) in names.iter().enumerate() {
            let nest = if name == DATASET_NODE {
                Some(data)
            } else {
                outputs.get(name).and_then(Option::as_ref)
            };
            let pruned;
            let nest = match (nest, &self.needed[input]) {
                (Some(Nest::Map(m)), Some(keys)) => {
                    pruned = Nest::Map(
                        m.iter()
                            .filter(|(k, _)| keys.contains(*k))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    );
                    Some(&pruned)
                }
                (nest, _) => nest,
            };
            columns.push(match nest {
                Some(nest) => Some(
                    split_samples(nest, samples, &self.device)
                        .map_err(|e| KpiError::Split(format!("`{name}`: {e}")))?
                        .into_iter(),
                ),
                None => None,
            });
        }
        for i in 0..samples {
            let inputs = columns
                .iter_mut()
                .map(|c| c.as_mut().and_then(Iterator::next))
                .collect();
            self.sample(inputs, is_last && i + 1 == samples)?;
        }
        Ok(())
    }

    /// Evaluates one sample, given as the handler's inputs.
    pub fn sample(&mut self, inputs: Vec<Option<Nest<Cpu>>>, last: bool) -> Result<(), KpiError> {
        let index = self.samples;
        self.samples += 1;
        let KpiEvaluator {
            handler,
            nodes,
            cache,
            results,
            ..
        } = self;
        handler
            .run(inputs, |node, input| {
                let n = nodes
                    .get_mut(&node.spec.name)
                    .ok_or("the KPI nucleotide was not built")?;
                n.step(input, index, last, cache.as_mut(), results)
            })
            .map_err(|source| KpiError::Run {
                sample: index,
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// Ends the evaluation: accumulators still holding samples combine them (with a note: the
    /// data ended before a last sample was marked), the savers write, and the KPIs of each
    /// accumulator's last evaluation are returned.
    pub fn finish(mut self) -> Result<KpiValues, KpiError> {
        let order: Vec<String> = self
            .handler
            .helix()
            .order_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        for name in &order {
            let Some(node) = self.nodes.get_mut(name) else {
                continue;
            };
            if let NodeKind::Accumulator { buffer, .. } = &node.kind
                && !buffer.is_empty()
            {
                log::info!(
                    "KPI accumulator `{name}` still held {} samples at the end of the data; their KPIs are computed now",
                    buffer.len()
                );
                node.combine(self.cache.as_mut())
                    .map_err(|source| KpiError::Run {
                        sample: self.samples,
                        source: Box::new(RunError::Nucleotide {
                            nucleotide: name.clone(),
                            source,
                        }),
                    })?;
            }
        }
        let mut values = KpiValues::default();
        for name in &order {
            let Some(node) = self.nodes.get_mut(name) else {
                continue;
            };
            values.computed.insert(name.clone(), node.computed);
            match &mut node.kind {
                NodeKind::Plugin { lines, .. } => {
                    if let Some(mut w) = lines.take() {
                        let path = self.results.join(format!("{name}.jsonl"));
                        w.flush()
                            .map_err(|source| KpiError::Write { path, source })?;
                    }
                }
                NodeKind::Accumulator {
                    evaluations,
                    evaluate_seen,
                    ..
                } => {
                    if *evaluate_seen == (true, false) {
                        log::info!(
                            "KPI accumulator `{name}` was given an `{EVALUATE_KEY}` key that was never true: its KPIs are over all {} samples, combined at the end of the data",
                            self.samples
                        );
                    }
                    let Some(last) = evaluations.last() else {
                        continue;
                    };
                    if node.part.kpi.savers.contains(&KpiSaver::Json) {
                        save_evaluations(&self.results, name, evaluations)?;
                    }
                    values.by_accumulator.insert(name.clone(), last.clone());
                }
            }
        }
        values.samples = self.samples;
        Ok(values)
    }
}

impl Node {
    fn step(
        &mut self,
        input: Nest<Cpu>,
        index: u64,
        last: bool,
        cache: Option<&mut Cache>,
        results: &Path,
    ) -> Result<Option<Nest<Cpu>>, BoxError> {
        let cache = cache.filter(|_| self.part.kpi.cache);
        match &mut self.kind {
            NodeKind::Plugin { step, lines } => {
                let name = &self.part.name;
                let key = cache.as_ref().map(|_| Cache::key(&self.ident, [&input]));
                let restored = match (&cache, &key) {
                    (Some(c), Some(k)) => c.restore(name, k),
                    _ => None,
                };
                let out = match restored {
                    Some(out) => out,
                    None => {
                        let out = step.run(input, Mode::Eval)?;
                        self.computed += 1;
                        if let (Some(c), Some(k)) = (cache, &key) {
                            c.store(name, k, &out);
                        }
                        out
                    }
                };
                if self.part.kpi.savers.contains(&KpiSaver::Json) {
                    let w = match lines {
                        Some(w) => w,
                        None => lines.insert(open_lines(results, name)?),
                    };
                    let line = serde_json::json!({
                        "sample": index,
                        "kpi": kpi_json(&out, &format!("{name}[{index}]")),
                    });
                    writeln!(w, "{line}")?;
                }
                Ok(Some(out))
            }
            NodeKind::Accumulator {
                buffer,
                evaluate_seen,
                ..
            } => {
                let flagged = match input.get(EVALUATE_KEY) {
                    None => false,
                    Some(flag) => {
                        evaluate_seen.0 = true;
                        flag.truth_values()
                            .map_err(|e| format!("its `{EVALUATE_KEY}` key: {e}"))?
                            .iter()
                            .all(|b| *b)
                    }
                };
                evaluate_seen.1 |= flagged;
                buffer.push(input);
                if flagged || last {
                    self.combine(cache).map(Some)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Combines an accumulator's samples into KPIs (or restores them from the cache).
    fn combine(&mut self, cache: Option<&mut Cache>) -> Result<Nest<Cpu>, BoxError> {
        let cache = cache.filter(|_| self.part.kpi.cache);
        let NodeKind::Accumulator {
            accumulator,
            buffer,
            evaluations,
            ..
        } = &mut self.kind
        else {
            return Err("only accumulators combine samples".into());
        };
        let samples = std::mem::take(buffer);
        let key = cache.as_ref().map(|_| Cache::key(&self.ident, &samples));
        let restored = match (&cache, &key) {
            (Some(c), Some(k)) => c.restore(&self.part.name, k),
            _ => None,
        };
        let out = match restored {
            Some(out) => out,
            None => {
                let out = accumulator.combine(samples)?;
                self.computed += 1;
                if let (Some(c), Some(k)) = (cache, &key) {
                    c.store(&self.part.name, k, &out);
                }
                out
            }
        };
        evaluations.push(out.clone());
        Ok(out)
    }
}

/// Per handler input, the top-level keys that some KPI nucleotide reads after mapping; `None`
/// when that cannot be known (an input or a reader with dynamic keys).
fn needed_keys(handler: &GeneHandler) -> Vec<Option<std::collections::BTreeSet<String>>> {
    let helix = handler.helix();
    let top = |k: &str| {
        k.split(crate::nest::SEPARATOR)
            .next()
            .unwrap_or(k)
            .to_owned()
    };
    (0..helix.incoming_len())
        .map(|input| {
            let spec = helix.spec(input);
            if spec.signature.dynamic_generated {
                return None;
            }
            let mut keys = std::collections::BTreeSet::new();
            for &i in helix.order() {
                let node = helix.node(i)?;
                let Some(k) = node.inbound.iter().position(|&j| j == input) else {
                    continue;
                };
                let reads = &node.spec.signature;
                for g in spec.signature.generated.iter() {
                    let wanted =
                        node.plan
                            .static_keys(k, [g.name.as_ref()])
                            .iter()
                            .any(|(_, m)| {
                                reads.dynamic_incoming
                                    || reads.incoming.iter().any(|r| top(&r.name) == top(m))
                            });
                    if wanted {
                        keys.insert(top(&g.name));
                    }
                }
            }
            Some(keys)
        })
        .collect()
}

fn open_lines(results: &Path, name: &str) -> Result<std::io::BufWriter<std::fs::File>, BoxError> {
    std::fs::create_dir_all(results).map_err(|e| format!("creating {}: {e}", results.display()))?;
    let path = results.join(format!("{name}.jsonl"));
    let file =
        std::fs::File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    Ok(std::io::BufWriter::new(file))
}

/// Writes an accumulator's KPIs: the last evaluation in `<name>.json` (its images as
/// `<name>-<key>.png`), and every evaluation, one per line, in `<name>.jsonl` when it
/// evaluated more than once.
fn save_evaluations(results: &Path, name: &str, evaluations: &[Nest<Cpu>]) -> Result<(), KpiError> {
    let write = |path: PathBuf, text: String| -> Result<(), KpiError> {
        std::fs::create_dir_all(results).map_err(|source| KpiError::Write {
            path: results.to_owned(),
            source,
        })?;
        std::fs::write(&path, text).map_err(|source| KpiError::Write { path, source })
    };
    let Some(last) = evaluations.last() else {
        return Ok(());
    };
    let mut text = serde_json::to_string_pretty(&kpi_json(last, name)).expect("JSON values print");
    text.push('\n');
    write(results.join(format!("{name}.json")), text)?;
    for (key, image) in kpi_images(last) {
        let path = results.join(format!("{name}-{key}.png"));
        let data = image
            .into_data()
            .map_err(|e| KpiError::Split(e.to_string()))?;
        crate::data::files::write_png(&path, &data).map_err(|e| KpiError::Write {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    if evaluations.len() > 1 {
        let lines: String = evaluations
            .iter()
            .enumerate()
            .map(|(i, e)| {
                format!(
                    "{}\n",
                    kpi_json(e, &format!("{name}, evaluation {}", i + 1))
                )
            })
            .collect();
        write(results.join(format!("{name}.jsonl")), lines)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dna::NodeSpec;
    use crate::gene::KPI_GENES;
    use crate::keys::Signature;
    use crate::mapping::KeysMapping;

    #[test]
    fn only_the_keys_kpi_nucleotides_read_are_split() {
        let data = NodeSpec::new(
            DATASET_NODE,
            Kind::Dataset,
            Signature::nucleus7(&[], &["image", "label", "mask"]),
        );
        let mapping =
            KeysMapping::from_json(&serde_json::json!({"dataset": {"label": "labels"}})).unwrap();
        let acc = NodeSpec::new(
            "acc",
            Kind::KpiAccumulator,
            Signature::nucleus7(&["labels"], &["accuracy"]),
        )
        .inbound(["dataset"])
        .mapping(mapping);
        let handler = GeneHandler::new("kpi", KPI_GENES, vec![data], vec![acc]).unwrap();
        let needed = needed_keys(&handler);
        assert_eq!(needed.len(), 1);
        assert_eq!(
            needed[0].as_ref().unwrap().iter().collect::<Vec<_>>(),
            ["label"]
        );
    }
}
