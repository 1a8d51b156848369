//! `check`: loads a project's configs for one kind of run, resolves every nucleotide, builds
//! every handler's DNA helix and reports every problem at once, before a tensor is allocated.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::config::{
    Layered, MODEL_SECTIONS, NucleotideEntry, Overrides, RunType, complete_nucleotides, layer,
};
use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::dna::NodeSpec;
use crate::gene::{CALLBACK_GENES, KPI_GENES, Kind, MODEL_GENES};
use crate::handler::GeneHandler;
use crate::keys::{Signature, ValueKind};
use crate::nest::TensorDtype;
use crate::registry::Registry;

/// The node name under which a handler's data (dataset or data feeder) is read.
pub const DATASET_NODE: &str = "dataset";

/// The model sections an inference run builds: plugins and post-processors (losses, metrics
/// and summaries need labels and belong to training).
pub const INFER_MODEL_SECTIONS: [crate::config::NucleotideSection; 2] =
    [MODEL_SECTIONS[0], MODEL_SECTIONS[1]];

/// Where an inference run's model comes from.
#[derive(Debug, Clone, Copy)]
pub enum ModelGraph<'a> {
    /// The project's training configs (what `check --type infer` reads).
    Training,
    /// A saved model's graph: the `graph.json` value, and its path as messages show it.
    Saved {
        /// The graph config.
        graph: &'a serde_json::Value,
        /// Its file.
        file: &'a str,
    },
}

/// A project's configs for one kind of run, checked.
#[derive(Debug, Clone)]
pub struct ProjectCheck {
    /// The project directory.
    pub project: PathBuf,
    /// The kind of run.
    pub run: RunType,
    /// The layered config (global scopes and defaults filled in).
    pub config: Layered,
    /// Every nucleotide config, resolved as far as it could be.
    pub nucleotides: Vec<NucleotideEntry>,
    /// The handlers whose helix could be built.
    pub handlers: Vec<GeneHandler>,
    /// Every problem found, errors first.
    pub diagnostics: Diagnostics,
}

impl ProjectCheck {
    /// Loads and checks the configs of a `run` of `project`, collecting every problem.
    pub fn load(
        project: &Path,
        run: RunType,
        overrides: &Overrides,
        registry: &Registry,
    ) -> ProjectCheck {
        Self::load_with_model(project, run, overrides, registry, ModelGraph::Training)
    }

    /// Like [`ProjectCheck::load`], with an inference run's model taken from `model`.
    pub fn load_with_model(
        project: &Path,
        run: RunType,
        overrides: &Overrides,
        registry: &Registry,
        model: ModelGraph<'_>,
    ) -> ProjectCheck {
        Self::configs(project, run, overrides, registry).with_model(model, registry)
    }

    /// The run's own configs, layered and their nucleotides resolved; no handler is built yet
    /// ([`ProjectCheck::with_model`] builds them). An inference plan reads its settings from
    /// here before it knows which saved model's graph to add.
    pub fn configs(
        project: &Path,
        run: RunType,
        overrides: &Overrides,
        registry: &Registry,
    ) -> ProjectCheck {
        let mut diags = Diagnostics::default();
        let mut config = layer(project, run, overrides, registry, &mut diags);
        let sections = run.nucleotide_sections();
        let nucleotides = complete_nucleotides(&mut config, &sections, registry, &mut diags);
        crate::config::check_global(&config, &nucleotides, registry, &mut diags);
        check_preprocessing(&nucleotides, registry, &mut diags);
        // Without the run's configs directory that one error says it all.
        if run.configs_dir(project).is_dir() {
            missing_sections(&config, run, &mut diags);
        }
        ProjectCheck {
            project: project.to_owned(),
            run,
            config,
            nucleotides,
            handlers: Vec::new(),
            diagnostics: diags,
        }
    }

    /// Adds an inference run's model (plugins and post-processors of a saved model's graph,
    /// or of the project's training configs) and builds every handler.
    pub fn with_model(mut self, model: ModelGraph<'_>, registry: &Registry) -> ProjectCheck {
        let diags = &mut self.diagnostics;
        if self.run == RunType::Infer {
            let graph = match model {
                ModelGraph::Saved { graph, file } => {
                    let mut sources = crate::config::Sources::default();
                    let source = sources.add(crate::config::Source::File(file.to_owned()));
                    Some(Layered {
                        run: RunType::Train,
                        tree: crate::config::Tagged::new(graph, source),
                        sources,
                    })
                }
                ModelGraph::Training if RunType::Train.configs_dir(&self.project).is_dir() => {
                    Some(layer(
                        &self.project,
                        RunType::Train,
                        &Overrides::default(),
                        registry,
                        diags,
                    ))
                }
                ModelGraph::Training => None,
            };
            if let Some(mut graph) = graph {
                self.nucleotides.extend(complete_nucleotides(
                    &mut graph,
                    &INFER_MODEL_SECTIONS,
                    registry,
                    diags,
                ));
                check_preprocessing(&self.nucleotides, registry, diags);
            }
        }
        self.handlers = build_handlers(self.run, &self.nucleotides, diags);
        diags.sort();
        self
    }

    /// The handler `name` (`model`, `model_eval`, `callbacks_train`, ...), when it was built.
    pub fn handler(&self, name: &str) -> Option<GeneHandler> {
        self.handlers.iter().find(|h| h.name() == name).cloned()
    }

    /// Whether the run may start.
    pub fn is_ok(&self) -> bool {
        !self.diagnostics.has_errors()
    }

    /// The graph summary `check` prints: each handler's nucleotides in run order.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "project `{}`, {} run: {} nucleotides in {} handlers",
            self.project.display(),
            self.run,
            self.nucleotides.len(),
            self.handlers.len()
        );
        for h in &self.handlers {
            let helix = h.helix();
            let inputs: Vec<&str> = helix.names().take(helix.incoming_len()).collect();
            let genes: Vec<&str> = h.genes().iter().map(|k| k.name()).collect();
            let _ = writeln!(
                out,
                "\nhandler `{}` (genes: {}; inputs: {})",
                h.name(),
                genes.join(" → "),
                inputs.join(", ")
            );
            for (n, &i) in helix.order().iter().enumerate() {
                let spec = helix.spec(i);
                let class = self
                    .nucleotides
                    .iter()
                    .find(|e| e.name() == spec.name)
                    .and_then(|e| e.registration)
                    .map_or("?", |r| r.class_name);
                let _ = write!(
                    out,
                    "  {:>2}. {} ({}, {class})",
                    n + 1,
                    spec.name,
                    spec.kind
                );
                if !spec.inbound_nodes.is_empty() {
                    let _ = write!(out, " ← {}", spec.inbound_nodes.join(", "));
                }
                out.push('\n');
            }
        }
        let warnings = self.diagnostics.warnings().count();
        if warnings > 0 {
            let _ = writeln!(out);
            for w in self.diagnostics.warnings() {
                let _ = writeln!(out, "{w}");
            }
        }
        let _ = write!(
            out,
            "\nok: no errors, {warnings} warning{}",
            if warnings == 1 { "" } else { "s" }
        );
        out
    }

    /// Writes every handler's helix as `dna_<handler>.dot` (Graphviz) and `dna_<handler>.svg`
    /// (drawn by nc7) into `dir`, and returns the files written.
    pub fn write_dna(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        if self.handlers.is_empty() {
            return Ok(written);
        }
        std::fs::create_dir_all(dir)?;
        for h in &self.handlers {
            for (ext, text) in [("dot", h.helix().to_dot()), ("svg", h.helix().to_svg())] {
                let path = dir.join(format!("dna_{}.{ext}", h.name()));
                std::fs::write(&path, text)?;
                written.push(path);
            }
        }
        Ok(written)
    }
}

/// NC0019 (warning): a model plugin that expects a data processor in front of it (nc7's
/// backbones: `Standardize`) while no data config of the run (data sets or data feeder, at any
/// depth: a processed data set's processors, a pipe's) has one.
fn check_preprocessing(entries: &[NucleotideEntry], registry: &Registry, diags: &mut Diagnostics) {
    fn has(value: &serde_json::Value, wanted: &str, registry: &Registry) -> bool {
        match value {
            serde_json::Value::Object(map) => {
                let named = map
                    .get("class_name")
                    .and_then(serde_json::Value::as_str)
                    .and_then(|c| registry.resolve(c, None).ok())
                    .is_some_and(|r| r.class_name == wanted);
                named || map.values().any(|v| has(v, wanted, registry))
            }
            serde_json::Value::Array(items) => items.iter().any(|v| has(v, wanted, registry)),
            _ => false,
        }
    }
    let data: Vec<&NucleotideEntry> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::Dataset | Kind::DataFeeder))
        .collect();
    // No data config here (a model-only check, or one reported missing already).
    if data.is_empty() {
        return;
    }
    for e in entries.iter().filter(|e| e.kind == Kind::ModelPlugin) {
        let Some(registration) = e.registration else {
            continue;
        };
        let Some(wanted) = crate::standard::vision::expected_preprocessing(registration.path)
        else {
            continue;
        };
        // The processor is a data processor: it stands in a data config's fields, never as one.
        let found = data.iter().any(|d| {
            d.common
                .as_ref()
                .is_some_and(|c| c.rest.values().any(|v| has(v, wanted, registry)))
        });
        if !found {
            let name = e.name().to_owned();
            diags.push(
                Diagnostic::warning(
                    Code::PREPROCESSING,
                    &name,
                    format!(
                        "nucleotide `{name}` ({}) expects images preprocessed by `{wanted}`, which no data config of this run has",
                        registration.class_name
                    ),
                    format!(
                        "wrap the data in a `ProcessedDataset` (a `ProcessedFeeder` for inference) with {{\"class_name\": \"{wanted}\", \"name\": \"{}\", \"inbound_nodes\": [\"data\"]}} among its `processors`",
                        wanted.to_lowercase()
                    ),
                )
                .with_file(e.file.as_deref()),
            );
        }
    }
}

fn missing_sections(config: &Layered, run: RunType, diags: &mut Diagnostics) {
    let configs = format!("{}/configs", run.dir_name());
    // Sections that are not nucleotide configs (trainer, model, inferer, ...) are maps.
    let nucleotide_keys: Vec<&str> = run.nucleotide_sections().iter().map(|s| s.key).collect();
    for key in run.section_keys() {
        let Some(section) = config.tree.get(&key) else {
            continue;
        };
        if !nucleotide_keys.contains(&key.as_str())
            && !section.is_empty()
            && !matches!(section.node, crate::config::Node::Map(_))
        {
            diags.push(
                Diagnostic::error(
                    Code::FIELD_TYPE,
                    "",
                    format!("`{key}` is `{}`, not a map of settings", section.to_value()),
                    format!("write `{key}` as a map, such as `{{\"key\": value}}`"),
                )
                .with_file(config.sources.file(section.source)),
            );
        }
    }
    for (key, what) in run.mandatory() {
        let section = config.tree.get(key);
        if section.is_none_or(|s| s.is_empty()) {
            diags.push(Diagnostic::error(
                Code::MISSING_CONFIG,
                "",
                format!("a {run} run needs `{key}`, which no config gives"),
                format!("add {what} to `{configs}/` (or a `{key}` section to config_main)"),
            ));
        } else if *key == "datasets_config" {
            let have = section.map(|s| s.keys()).unwrap_or_default();
            for slot in ["train", "eval"] {
                if !have.contains(&slot) {
                    diags.push(
                        Diagnostic::error(
                            Code::MISSING_CONFIG,
                            "",
                            format!("`datasets_config` has no `{slot}` dataset"),
                            format!("add a `{slot}` dataset config to datasets.json"),
                        )
                        .with_file(section.and_then(|s| config.sources.file(s.source))),
                    );
                }
            }
        }
    }
}

/// A node for a nucleotide: its signature when its type is known, else one that generates
/// and takes anything, so that a bad class name does not also give missing-key errors.
fn node(entry: &NucleotideEntry) -> Option<NodeSpec> {
    let common = entry.common.as_ref()?;
    let signature = entry
        .registration
        .map_or_else(unknown_signature, |r| (r.signature)());
    let mut spec = NodeSpec::new(common.name.clone(), entry.kind, signature)
        .inbound(common.inbound_nodes.iter().cloned())
        .mapping(common.mapping.clone());
    if let Some(f) = &entry.file {
        spec = spec.file(f);
    }
    Some(spec)
}

fn unknown_signature() -> Signature {
    Signature {
        dynamic_incoming: true,
        dynamic_generated: true,
        ..Signature::default()
    }
}

/// What a data nucleotide's samples look like to the handlers, which get them in batches:
/// every tensor of a known rank gains the batch dimension.
fn batched(mut signature: Signature) -> Signature {
    for key in signature.generated.to_mut() {
        if let ValueKind::Tensor {
            rank: Some(rank), ..
        } = &mut key.kind
        {
            *rank += 1;
        }
    }
    signature
}

/// What a handler input looks like to KPI nucleotides, which take one sample at a time: every
/// tensor of a known rank loses the batch dimension (a rank-1 tensor becomes a scalar).
fn per_sample(mut spec: NodeSpec) -> NodeSpec {
    for key in spec.signature.generated.to_mut() {
        if let ValueKind::Tensor {
            dtype,
            rank: Some(rank),
        } = key.kind
        {
            key.kind = match (rank, dtype) {
                (0 | 1, TensorDtype::Float) => ValueKind::Float,
                (0 | 1, TensorDtype::Int) => ValueKind::Int,
                (0 | 1, TensorDtype::Bool) => ValueKind::Bool,
                (rank, dtype) => ValueKind::Tensor {
                    dtype,
                    rank: Some(rank - 1),
                },
            };
        }
    }
    spec
}

/// A nucleotide as a handler input: only its name, kind and what it generates.
fn as_input(spec: &NodeSpec) -> NodeSpec {
    NodeSpec::new(spec.name.clone(), spec.kind, spec.signature.clone())
}

fn build_handlers(
    run: RunType,
    entries: &[NucleotideEntry],
    diags: &mut Diagnostics,
) -> Vec<GeneHandler> {
    let of = |sections: &[&str]| -> Vec<NodeSpec> {
        entries
            .iter()
            .filter(|e| sections.contains(&e.section))
            .filter_map(node)
            .collect()
    };
    // A missing or broken dataset is reported already; a stand-in that generates anything
    // keeps it from also failing every key check downstream.
    let data = |slot: Option<&str>, section: &str| -> NodeSpec {
        let e = entries
            .iter()
            .find(|e| e.section == section && e.slot.as_deref() == slot);
        let kind = e.map_or(Kind::Dataset, |e| e.kind);
        let signature = e
            .and_then(|e| e.registration)
            .map_or_else(unknown_signature, |r| batched((r.signature)()));
        NodeSpec::new(DATASET_NODE, kind, signature)
    };
    let mut handlers = Vec::new();
    let mut build = |name: &str,
                     genes: &[Kind],
                     incoming: Vec<NodeSpec>,
                     nodes: Vec<NodeSpec>,
                     diags: &mut Diagnostics| {
        if nodes.is_empty() {
            return;
        }
        match GeneHandler::new(name, genes, incoming, nodes) {
            Ok(h) => {
                diags.0.extend(h.helix().warnings().0.iter().cloned());
                handlers.push(h);
            }
            Err(mut errors) => {
                for d in &mut errors.0 {
                    d.message = format!("{} (handler `{name}`)", d.message);
                }
                diags.0.extend(errors.0);
            }
        }
    };
    let model = of(&MODEL_SECTIONS.map(|s| s.key));
    let model_inputs: Vec<NodeSpec> = model.iter().map(as_input).collect();
    let with_data = |data: &NodeSpec, more: &[NodeSpec]| -> Vec<NodeSpec> {
        std::iter::once(data).chain(more).cloned().collect()
    };
    match run {
        RunType::Train => {
            let train = data(Some("train"), "datasets_config");
            let eval = data(Some("eval"), "datasets_config");
            build(
                "model",
                MODEL_GENES,
                with_data(&train, &[]),
                model.clone(),
                diags,
            );
            if eval.signature != train.signature {
                build(
                    "model_eval",
                    MODEL_GENES,
                    with_data(&eval, &[]),
                    model.clone(),
                    diags,
                );
            }
            let mut train_callbacks = of(&["callbacks_config"]);
            let mut eval_callbacks = train_callbacks.clone();
            train_callbacks.extend(of(&["callbacks_train_config"]));
            eval_callbacks.extend(of(&["callbacks_eval_config"]));
            build(
                "callbacks_train",
                CALLBACK_GENES,
                with_data(&train, &model_inputs),
                train_callbacks,
                diags,
            );
            build(
                "callbacks_eval",
                CALLBACK_GENES,
                with_data(&eval, &model_inputs),
                eval_callbacks,
                diags,
            );
            build(
                "kpi",
                KPI_GENES,
                with_data(&eval, &model_inputs)
                    .into_iter()
                    .map(per_sample)
                    .collect(),
                of(&["kpi_config"]),
                diags,
            );
        }
        RunType::Infer => {
            let feeder = data(None, "datafeeder_config");
            build(
                "model",
                MODEL_GENES,
                with_data(&feeder, &[]),
                model.clone(),
                diags,
            );
            build(
                "callbacks",
                CALLBACK_GENES,
                with_data(&feeder, &model_inputs),
                of(&["callbacks_config"]),
                diags,
            );
            build(
                "kpi",
                KPI_GENES,
                with_data(&feeder, &model_inputs)
                    .into_iter()
                    .map(per_sample)
                    .collect(),
                of(&["kpi_config"]),
                diags,
            );
        }
        RunType::Kpi => {
            let feeder = data(None, "datafeeder_config");
            build(
                "kpi",
                KPI_GENES,
                vec![per_sample(feeder.clone())],
                of(&["kpi_config"]),
                diags,
            );
            build(
                "callbacks",
                CALLBACK_GENES,
                with_data(&feeder, &[]),
                of(&["callbacks_config"]),
                diags,
            );
        }
        RunType::Data => {
            let feeder = data(None, "datafeeder_config");
            build(
                "callbacks",
                CALLBACK_GENES,
                with_data(&feeder, &[]),
                of(&["callbacks_config"]),
                diags,
            );
        }
    }
    handlers
}
