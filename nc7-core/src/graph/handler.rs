//! Gene handlers: own the genes of one part of a run (model, callbacks, KPI, data pipe), build
//! their helix, and run the nucleotides gene after gene, routing each one's inputs.

use std::collections::BTreeMap;

use burn::prelude::Backend;

use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::dna::{Helix, HelixNode, NodeSpec};
use crate::gene::Kind;
use crate::mapping::MappingError;
use crate::nest::{Nest, SEPARATOR};
use crate::suggest;

/// Any error a nucleotide's own step may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure while running a handler; each names the nucleotide it happened in.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The handler was given a different number of inputs than it declares.
    #[error("handler `{handler}` takes {} inputs ({}), got {got}", expected.len(), suggest::list(expected))]
    InputCount {
        /// The handler.
        handler: String,
        /// The input names it declares, in order.
        expected: Vec<String>,
        /// How many it got.
        got: usize,
    },
    /// Routing the inbound outputs failed.
    #[error("routing the inputs of nucleotide `{nucleotide}`: {source}")]
    Routing {
        /// The nucleotide.
        nucleotide: String,
        /// What went wrong.
        source: MappingError,
    },
    /// A required key did not arrive (an inbound node with dynamic keys did not generate it).
    #[error(
        "missing required key `{key}` for nucleotide `{nucleotide}`; its inputs hold: {available}{hint}"
    )]
    MissingKey {
        /// The nucleotide.
        nucleotide: String,
        /// The key.
        key: String,
        /// The keys that did arrive.
        available: String,
        /// A "did you mean" hint, or empty.
        hint: String,
    },
    /// The nucleotide's own step failed.
    #[error("nucleotide `{nucleotide}` failed: {source}")]
    Nucleotide {
        /// The nucleotide.
        nucleotide: String,
        /// Its error.
        source: BoxError,
    },
}

/// The genes of one handler and the helix of their nucleotides, ready to run.
#[derive(Debug, Clone)]
pub struct GeneHandler {
    name: String,
    genes: Vec<Kind>,
    helix: Helix,
    /// Per nucleotide (by position in `helix.order()`): its required keys, split into levels
    /// once so that the per-step check does no parsing.
    required: Vec<Vec<Vec<String>>>,
}

impl GeneHandler {
    /// Builds a handler running `genes` in order over `nodes`, which may read `incoming`.
    /// Nucleotides whose kind is not one of `genes` are errors, reported with every problem
    /// of the helix.
    pub fn new(
        name: impl Into<String>,
        genes: &[Kind],
        incoming: Vec<NodeSpec>,
        nodes: Vec<NodeSpec>,
    ) -> Result<GeneHandler, Diagnostics> {
        let name = name.into();
        let mut wrong = Diagnostics::default();
        for spec in &nodes {
            if !genes.contains(&spec.kind) {
                let expected: Vec<&str> = genes.iter().map(|k| k.name()).collect();
                wrong.push(
                    Diagnostic::error(
                        Code::WRONG_HANDLER,
                        &spec.name,
                        format!(
                            "nucleotide `{}` is a {}, which the {name} handler does not run",
                            spec.name, spec.kind
                        ),
                        format!(
                            "the {name} handler runs {} nucleotides; move the config to where {} nucleotides belong",
                            suggest::list(expected),
                            spec.kind
                        ),
                    )
                    .with_file(spec.file.as_deref()),
                );
            }
        }
        let mut helix = match Helix::build(incoming, nodes) {
            Ok(helix) if !wrong.has_errors() => helix,
            Ok(_) => return Err(wrong),
            Err(mut all) => {
                all.0.splice(0..0, wrong.0);
                return Err(all);
            }
        };
        let gene_index = |kind: Kind| genes.iter().position(|g| *g == kind).unwrap_or(usize::MAX);
        let backwards = helix.order_by_gene(gene_index);
        if !backwards.is_empty() {
            let mut errors = Diagnostics::default();
            for (from, to) in backwards {
                let (f, t) = (helix.spec(from), helix.spec(to));
                errors.push(
                    Diagnostic::error(
                        Code::GENE_DEPENDENCY,
                        &t.name,
                        format!(
                            "{} `{}` reads `{}`, a {} that the {name} handler runs later",
                            t.kind, t.name, f.name, f.kind
                        ),
                        "remove the inbound node: genes run in order and cannot read later genes"
                            .into(),
                    )
                    .with_file(t.file.as_deref()),
                );
            }
            return Err(errors);
        }
        let required = helix
            .order()
            .iter()
            .map(|&i| {
                helix
                    .spec(i)
                    .signature
                    .required_incoming()
                    .map(|k| k.name.split(SEPARATOR).map(str::to_owned).collect())
                    .collect()
            })
            .collect();
        Ok(GeneHandler {
            name,
            genes: genes.to_vec(),
            helix,
            required,
        })
    }

    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The genes, in run order.
    pub fn genes(&self) -> &[Kind] {
        &self.genes
    }

    /// The helix.
    pub fn helix(&self) -> &Helix {
        &self.helix
    }

    /// Runs one step. `inputs` are the values of the incoming nodes, in their declared order
    /// (`None` for an absent one). Each nucleotide, gene after gene, gets its routed inputs and
    /// `step` computes its output; a nucleotide whose inbound output is absent is skipped and
    /// its output is absent too. A `None` output from `step` interrupts its dependents.
    pub fn run<B, F>(
        &self,
        inputs: Vec<Option<Nest<B>>>,
        mut step: F,
    ) -> Result<Outputs<'_, B>, RunError>
    where
        B: Backend,
        F: FnMut(&HelixNode, Nest<B>) -> Result<Option<Nest<B>>, BoxError>,
    {
        let incoming = self.helix.incoming_len();
        if inputs.len() != incoming {
            return Err(RunError::InputCount {
                handler: self.name.clone(),
                expected: self
                    .helix
                    .names()
                    .take(incoming)
                    .map(str::to_owned)
                    .collect(),
                got: inputs.len(),
            });
        }
        let total = incoming + self.helix.order().len();
        let mut values: Vec<Option<Nest<B>>> = Vec::with_capacity(total);
        values.extend(inputs);
        values.resize_with(total, || None);
        for (position, &index) in self.helix.order().iter().enumerate() {
            let node = self.helix.node(index).expect("order holds nucleotides");
            let gathered: Vec<Option<&Nest<B>>> =
                node.inbound.iter().map(|&i| values[i].as_ref()).collect();
            let routed = node
                .plan
                .route(&gathered)
                .map_err(|source| RunError::Routing {
                    nucleotide: node.spec.name.clone(),
                    source,
                })?;
            let Some(input) = routed else {
                continue; // Skipped: its output stays absent.
            };
            self.check_required(position, node, &input)?;
            let output = step(node, input).map_err(|source| RunError::Nucleotide {
                nucleotide: node.spec.name.clone(),
                source,
            })?;
            values[index] = output;
        }
        Ok(Outputs {
            helix: &self.helix,
            values,
        })
    }

    fn check_required<B: Backend>(
        &self,
        position: usize,
        node: &HelixNode,
        input: &Nest<B>,
    ) -> Result<(), RunError> {
        for levels in &self.required[position] {
            let mut at = Some(input);
            for level in levels {
                at = at.and_then(|n| n.as_map()).and_then(|m| m.get(level));
            }
            if at.is_none() {
                let key = levels.join(&SEPARATOR.to_string());
                let available: Vec<&str> = input
                    .as_map()
                    .map(|m| m.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                return Err(RunError::MissingKey {
                    nucleotide: node.spec.name.clone(),
                    hint: suggest::hint(&key, available.iter().copied()),
                    available: suggest::list(&available),
                    key,
                });
            }
        }
        Ok(())
    }
}

/// Every node's output after one step of a handler, by name.
#[derive(Debug)]
pub struct Outputs<'h, B: Backend> {
    helix: &'h Helix,
    values: Vec<Option<Nest<B>>>,
}

impl<B: Backend> Outputs<'_, B> {
    /// The output of a nucleotide or input; `None` when it was skipped, interrupted or unknown.
    pub fn get(&self, name: &str) -> Option<&Nest<B>> {
        self.helix
            .index_of(name)
            .and_then(|i| self.values[i].as_ref())
    }

    /// Takes the output of a nucleotide or input out.
    pub fn take(&mut self, name: &str) -> Option<Nest<B>> {
        self.helix
            .index_of(name)
            .and_then(|i| self.values[i].take())
    }

    /// The nucleotides' outputs by name (absent ones as `None`), without the inputs.
    pub fn into_map(self) -> BTreeMap<String, Option<Nest<B>>> {
        let incoming = self.helix.incoming_len();
        self.values
            .into_iter()
            .enumerate()
            .skip(incoming)
            .map(|(i, v)| (self.helix.name(i).to_owned(), v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gene::MODEL_GENES;
    use crate::keys::Signature;
    use crate::mapping::KeysMapping;
    use burn::backend::NdArray;
    use burn::tensor::Tensor;
    use serde_json::json;

    type N = Nest<NdArray>;

    fn spec(
        name: &str,
        kind: Kind,
        incoming: &[&str],
        generated: &[&str],
        inbound: &[&str],
    ) -> NodeSpec {
        NodeSpec::new(name, kind, Signature::nucleus7(incoming, generated))
            .inbound(inbound.iter().copied())
    }

    fn model() -> GeneHandler {
        let dataset = spec("dataset", Kind::Dataset, &[], &["x", "labels"], &[]);
        let nodes = vec![
            // Declared out of gene order on purpose: summaries last, losses after plugins.
            spec(
                "summary",
                Kind::ModelSummary,
                &["loss", "acc"],
                &[],
                &["loss", "metric"],
            ),
            spec(
                "metric",
                Kind::ModelMetric,
                &["y", "labels"],
                &["acc"],
                &["net", "dataset"],
            ),
            spec(
                "loss",
                Kind::ModelLoss,
                &["y", "labels"],
                &["loss"],
                &["net", "dataset"],
            ),
            spec("net", Kind::ModelPlugin, &["x"], &["y"], &["dataset"]),
        ];
        GeneHandler::new("model", MODEL_GENES, vec![dataset], nodes).unwrap()
    }

    #[test]
    fn runs_genes_in_order_and_returns_outputs_by_name() {
        let handler = model();
        assert_eq!(
            handler.helix().order_names(),
            ["net", "loss", "metric", "summary"]
        );
        let device = Default::default();
        let x = Tensor::<NdArray, 1>::from_floats([1.0, 2.0], &device);
        let mut dataset = N::map();
        dataset.insert("x", x.into()).unwrap();
        dataset.insert("labels", N::Int(1)).unwrap();
        let mut seen = Vec::new();
        let out = handler
            .run(vec![Some(dataset)], |node, input| {
                seen.push(node.spec.name.clone());
                let keys: Vec<String> = input.as_map().unwrap().keys().cloned().collect();
                Ok(Some(match node.spec.name.as_str() {
                    "net" => {
                        let x: Tensor<NdArray, 1> =
                            input.get("x").unwrap().clone().into_tensor().unwrap();
                        [("y".to_string(), N::from(x * 2.0))].into_iter().collect()
                    }
                    "loss" => [("loss".to_string(), N::Float(0.5))].into_iter().collect(),
                    "metric" => [("acc".to_string(), N::Float(1.0))].into_iter().collect(),
                    _ => [("seen".to_string(), N::from(keys.join(",")))]
                        .into_iter()
                        .collect(),
                }))
            })
            .unwrap();
        assert_eq!(seen, ["net", "loss", "metric", "summary"]);
        let y: Tensor<NdArray, 1> = out
            .get("net")
            .unwrap()
            .get("y")
            .unwrap()
            .clone()
            .into_tensor()
            .unwrap();
        assert_eq!(y.to_data().to_vec::<f32>().unwrap(), [2.0, 4.0]);
        assert_eq!(
            out.get("summary").unwrap().get("seen"),
            Some(&N::from("acc,loss"))
        );
        let map = out.into_map();
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            ["loss", "metric", "net", "summary"]
        );
    }

    #[test]
    fn an_absent_output_skips_dependents() {
        let handler = model();
        let dataset: N = N::from_json(&json!({"x": 1, "labels": 2})).unwrap();
        let out = handler
            .run(vec![Some(dataset)], |node, _| {
                // The loss interrupts: the summary reading it is skipped, the metric is not.
                let all = N::from_json(&json!({"y": 1, "loss": 1, "acc": 1})).unwrap();
                Ok((node.spec.name != "loss").then_some(all))
            })
            .unwrap();
        assert!(out.get("loss").is_none());
        assert!(out.get("summary").is_none());
        assert!(out.get("metric").is_some());
        // An absent dataset skips everything.
        let out = handler
            .run::<NdArray, _>(vec![None], |_, _| Ok(Some(N::map())))
            .unwrap();
        assert!(out.into_map().values().all(Option::is_none));
    }

    #[test]
    fn run_time_errors_name_the_nucleotide() {
        let handler = model();
        let err = handler
            .run::<NdArray, _>(vec![], |_, _| Ok(None))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "handler `model` takes 1 inputs (`dataset`), got 0"
        );
        // The dataset lacks `labels` at run time.
        let dataset: N = N::from_json(&json!({"x": 1, "label": 2})).unwrap();
        let err = handler
            .run(vec![Some(dataset.clone())], |_, _| {
                Ok(Some(N::from_json(&json!({"y": 1})).unwrap()))
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing required key `labels` for nucleotide `loss`; its inputs hold: `y`"
        );
        let err = handler
            .run(vec![Some(dataset)], |_, _| Err("boom".into()))
            .unwrap_err();
        assert_eq!(err.to_string(), "nucleotide `net` failed: boom");
    }

    #[test]
    fn kinds_outside_the_handler_are_refused_with_the_other_problems() {
        let nodes = vec![
            spec("cb", Kind::CoordinatorCallback, &[], &[], &[]),
            spec("net", Kind::ModelPlugin, &[], &[], &["nope"]),
        ];
        let d = GeneHandler::new("model", MODEL_GENES, vec![], nodes).unwrap_err();
        assert_eq!(d.codes(), [Code::WRONG_HANDLER, Code::UNKNOWN_INBOUND]);
        assert!(
            d.0[0]
                .message
                .contains("`cb` is a CoordinatorCallback, which the model handler does not run"),
            "{}",
            d.0[0]
        );
    }

    #[test]
    fn genes_in_an_order_that_breaks_dependencies_are_refused() {
        let nodes = vec![
            spec("net", Kind::ModelPlugin, &[], &["y"], &[]),
            spec("loss", Kind::ModelLoss, &["y"], &[], &["net"]),
        ];
        let d = GeneHandler::new("odd", &[Kind::ModelLoss, Kind::ModelPlugin], vec![], nodes)
            .unwrap_err();
        assert_eq!(d.codes(), [Code::GENE_DEPENDENCY]);
        assert!(d.0[0].message.contains("runs later"), "{}", d.0[0]);
    }

    #[test]
    fn mapping_routes_keys_between_genes() {
        let dataset = spec("dataset", Kind::Dataset, &[], &["image"], &[]);
        let mapping = KeysMapping::from_json(&json!({"dataset": {"image": "x"}})).unwrap();
        let net = spec("net", Kind::ModelPlugin, &["x"], &["y"], &["dataset"]).mapping(mapping);
        let handler = GeneHandler::new("model", MODEL_GENES, vec![dataset], vec![net]).unwrap();
        let out = handler
            .run(
                vec![Some(
                    N::from_json(&json!({"image": 3, "extra": 4})).unwrap(),
                )],
                |_, input| Ok(Some(input)),
            )
            .unwrap();
        assert_eq!(out.get("net").unwrap().to_json().unwrap(), json!({"x": 3}));
    }
}
