//! The fields every nucleotide config has, which nc7 reads so that no nucleotide writes them:
//! `class_name`, `name`, `inbound_nodes`, `incoming_keys_mapping`, `trainable`.

use serde_json::{Map, Value};

use crate::dna::NodeSpec;
use crate::gene::Kind;
use crate::mapping::KeysMapping;
use crate::registry::{Registration, Registry, config_fields};
use crate::suggest;

/// The common fields of one nucleotide config, and what is left for its own config struct.
#[derive(Debug, Clone, PartialEq)]
pub struct CommonConfig {
    /// The registered type to build.
    pub class_name: String,
    /// The instance's unique name.
    pub name: String,
    /// The nodes it reads, in order.
    pub inbound_nodes: Vec<String>,
    /// How their keys are renamed.
    pub mapping: KeysMapping,
    /// Whether its parameters are trained (model plugins; `true` when not given).
    pub trainable: bool,
    /// A model plugin's own `optimization_config` (learning-rate multiplier or optimizer).
    pub optimization: Option<crate::optim::PluginOptimization>,
    /// A loss's `loss_weights`: the weight of each of its `loss…` keys in its total (1 when
    /// absent), as nucleus7's losses take them.
    pub loss_weights: Option<std::collections::BTreeMap<String, f64>>,
    /// A loss's `exclude_from_total_loss`: its keys are reported, but not trained on.
    pub exclude_from_total_loss: Option<bool>,
    /// A KPI nucleotide's `savers`: where its KPIs are written (`"json"`).
    pub savers: Option<Vec<crate::nucleotide::part::KpiSaver>>,
    /// A KPI nucleotide's `cache`: restore its KPIs for inputs it has seen before.
    pub cache: Option<bool>,
    /// Every other field: the nucleotide's own config.
    pub rest: Map<String, Value>,
}

/// The names of the common fields.
pub const COMMON_FIELDS: [&str; 10] = [
    "class_name",
    "name",
    "inbound_nodes",
    "incoming_keys_mapping",
    "trainable",
    "optimization_config",
    "loss_weights",
    "exclude_from_total_loss",
    "savers",
    "cache",
];

/// The common fields a nucleotide of `kind` may have: every nucleotide's, a plugin's
/// `trainable` and `optimization_config`, a loss's `loss_weights` and
/// `exclude_from_total_loss`, a KPI nucleotide's `savers` and `cache`.
pub(crate) fn common_fields_of(kind: Kind) -> impl Iterator<Item = &'static str> {
    COMMON_FIELDS.into_iter().filter(move |f| match *f {
        "trainable" | "optimization_config" => kind == Kind::ModelPlugin,
        "loss_weights" | "exclude_from_total_loss" => kind == Kind::ModelLoss,
        "savers" | "cache" => matches!(kind, Kind::KpiPlugin | Kind::KpiAccumulator),
        _ => true,
    })
}

/// Whether a nucleotide name can name a file or folder on every platform: letters, digits,
/// `_`, `-` and `.`, not `.` or `..`.
fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A problem with one nucleotide config; `field` is the key path inside the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` of nucleotide config `{config}`: {message}")]
pub struct ConfigFieldError {
    /// The nucleotide's name, or its class name when it has none yet.
    pub config: String,
    /// The field.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl CommonConfig {
    /// Splits a nucleotide config into its common fields and the rest. `inbound_nodes` may be a
    /// list, or a map `{node: rules}` that also gives the mapping. Every problem is returned.
    pub fn split(config: &Value) -> Result<CommonConfig, Vec<ConfigFieldError>> {
        let mut errors = Vec::new();
        let Some(obj) = config.as_object() else {
            return Err(vec![ConfigFieldError {
                config: String::new(),
                field: String::new(),
                message: format!("a nucleotide config is a map of fields, got `{config}`"),
            }]);
        };
        let str_field = |field: &str| obj.get(field).and_then(Value::as_str).map(str::to_owned);
        let class_name = str_field("class_name").unwrap_or_default();
        let label = str_field("name").unwrap_or_else(|| class_name.clone());
        let mut error = |field: &str, message: String| {
            errors.push(ConfigFieldError {
                config: label.clone(),
                field: field.to_owned(),
                message,
            });
        };
        if class_name.is_empty() {
            error(
                "class_name",
                "missing: name the registered nucleotide type to build, such as `\"class_name\": \"UNet\"`".into(),
            );
        }
        let name = match obj.get("name") {
            Some(Value::String(s)) if !s.is_empty() && !is_file_name(s) => {
                error(
                    "name",
                    format!(
                        "`{s}` cannot be a file name, and nc7 names files and folders after nucleotides; use letters, digits, `_`, `-` and `.`"
                    ),
                );
                String::new()
            }
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            None => {
                error("name", "missing: give the nucleotide a unique name".into());
                String::new()
            }
            Some(other) => {
                error(
                    "name",
                    format!("expected a non-empty string, got `{other}`"),
                );
                String::new()
            }
        };
        let mut inbound_nodes = Vec::new();
        let mut mapping = KeysMapping::default();
        match obj.get("inbound_nodes") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(s) => inbound_nodes.push(s.to_owned()),
                        None => error(
                            &format!("inbound_nodes:{i}"),
                            format!("expected a node name, got `{item}`"),
                        ),
                    }
                }
            }
            Some(map @ Value::Object(nodes)) => {
                inbound_nodes = nodes.keys().cloned().collect();
                match KeysMapping::from_json(map) {
                    Ok(m) => mapping = m,
                    Err(e) => error("inbound_nodes", e.to_string()),
                }
            }
            Some(other) => error(
                "inbound_nodes",
                format!(
                    "expected a list of node names or a map of node names to their mappings, got `{other}`"
                ),
            ),
        }
        if let Some(m) = obj.get("incoming_keys_mapping") {
            match KeysMapping::from_json(m) {
                Ok(extra) => {
                    for (node, rules) in extra.nodes {
                        if mapping.node_names().any(|n| n == node) && !rules.is_empty() {
                            error(
                                "incoming_keys_mapping",
                                format!(
                                    "rules for `{node}` are given both in `inbound_nodes` and here; keep one place"
                                ),
                            );
                        } else {
                            mapping.nodes.push((node, rules));
                        }
                    }
                    if extra.all_nodes.is_some() {
                        mapping.all_nodes = extra.all_nodes;
                    }
                }
                Err(e) => error("incoming_keys_mapping", e.to_string()),
            }
        }
        let trainable = match obj.get("trainable") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                error(
                    "trainable",
                    format!("expected `true` or `false`, got `{other}`"),
                );
                true
            }
        };
        let optimization = match obj.get("optimization_config") {
            None | Some(Value::Null) => None,
            Some(v) => match serde_json::from_value(v.clone()) {
                Ok(o) => Some(o),
                Err(e) => {
                    error(
                        "optimization_config",
                        format!("{e}; it takes `learning_rate_multiplier` and `optimizer`"),
                    );
                    None
                }
            },
        };
        let loss_weights = match obj.get("loss_weights") {
            None | Some(Value::Null) => None,
            Some(v) => {
                match serde_json::from_value::<std::collections::BTreeMap<String, f64>>(v.clone()) {
                    Ok(w) if w.values().all(|x| x.is_finite()) => Some(w),
                    Ok(_) => {
                        error(
                            "loss_weights",
                            "every weight must be a finite number".into(),
                        );
                        None
                    }
                    Err(e) => {
                        error(
                            "loss_weights",
                            format!(
                                "{e}; it maps the loss's `loss…` keys to numbers, such as `{{\"loss_box\": 2.0}}`"
                            ),
                        );
                        None
                    }
                }
            }
        };
        let exclude_from_total_loss = match obj.get("exclude_from_total_loss") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                error(
                    "exclude_from_total_loss",
                    format!("expected `true` or `false`, got `{other}`"),
                );
                None
            }
        };
        let savers = match obj.get("savers") {
            None | Some(Value::Null) => None,
            Some(v) => match serde_json::from_value(v.clone()) {
                Ok(s) => Some(s),
                Err(e) => {
                    error(
                        "savers",
                        format!(
                            "{e}; it lists where the KPIs are written: `[\"json\"]` (the run's results folder) or `[]`"
                        ),
                    );
                    None
                }
            },
        };
        let cache = match obj.get("cache") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                error(
                    "cache",
                    format!("expected `true` or `false`, got `{other}`"),
                );
                None
            }
        };
        let rest = obj
            .iter()
            .filter(|(k, _)| !COMMON_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(CommonConfig {
            class_name,
            name,
            inbound_nodes,
            mapping,
            trainable,
            optimization,
            loss_weights,
            exclude_from_total_loss,
            savers,
            cache,
            rest,
        })
    }

    /// Fields of `rest` that the nucleotide's config struct does not have, each with a "did you
    /// mean" among its fields and the common ones.
    pub fn unknown_fields(&self, registration: &Registration) -> Vec<ConfigFieldError> {
        let fields: Vec<String> = config_fields(&(registration.config_schema)())
            .into_iter()
            .map(|f| f.name)
            .collect();
        let mut candidates: Vec<&str> = fields.iter().map(String::as_str).collect();
        for f in common_fields_of(registration.kind) {
            candidates.push(f);
        }
        self.rest
            .keys()
            .filter(|k| !fields.contains(k))
            .map(|k| ConfigFieldError {
                config: self.name.clone(),
                field: k.clone(),
                message: format!(
                    "`{}` has no such field{}; its fields are {}",
                    registration.class_name,
                    suggest::hint(k, candidates.iter().copied()),
                    suggest::list(&candidates)
                ),
            })
            .collect()
    }

    /// Resolves the class name (of the expected kind) and describes the node for the helix.
    pub fn node_spec(
        &self,
        registry: &Registry,
        expected: Kind,
        file: Option<&str>,
    ) -> Result<NodeSpec, String> {
        let registration = registry
            .resolve(&self.class_name, Some(expected))
            .map_err(|e| e.to_string())?;
        let mut spec = NodeSpec::new(
            self.name.clone(),
            registration.kind,
            (registration.signature)(),
        )
        .inbound(self.inbound_nodes.iter().cloned())
        .mapping(self.mapping.clone());
        if let Some(f) = file {
            spec = spec.file(f);
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_and_map_inbound_nodes() {
        let c = CommonConfig::split(&json!({
            "class_name": "Net", "name": "net", "inbound_nodes": ["dataset"],
            "incoming_keys_mapping": {"dataset": {"image": "images"}}, "layers": 3
        }))
        .unwrap();
        assert_eq!(c.inbound_nodes, ["dataset"]);
        assert_eq!(
            c.mapping.rules_for("dataset"),
            [("image".to_string(), "images".to_string())]
        );
        assert!(c.trainable);
        assert_eq!(c.rest, json!({"layers": 3}).as_object().unwrap().clone());

        // spec §2: inbound nodes as a map are both the nodes and the mapping.
        let c = CommonConfig::split(&json!({
            "class_name": "Net", "name": "n",
            "inbound_nodes": {"node1": {"out1": "in1"}, "node2": {"out2": "in2"}}
        }))
        .unwrap();
        assert_eq!(c.inbound_nodes, ["node1", "node2"]);
        assert_eq!(
            c.mapping.rules_for("node2"),
            [("out2".to_string(), "in2".to_string())]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let errors = CommonConfig::split(&json!({
            "name": 3, "inbound_nodes": [1], "trainable": "yes",
            "incoming_keys_mapping": {"a": {"b": 1}}
        }))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "class_name",
                "name",
                "inbound_nodes:0",
                "incoming_keys_mapping",
                "trainable"
            ]
        );
        assert!(
            errors[0].message.contains("\"class_name\": \"UNet\""),
            "{}",
            errors[0]
        );
        let both = CommonConfig::split(&json!({
            "class_name": "Net", "name": "n",
            "inbound_nodes": {"a": {"x": "y"}}, "incoming_keys_mapping": {"a": {"z": "w"}}
        }))
        .unwrap_err();
        assert!(
            both[0].message.contains("both in `inbound_nodes` and here"),
            "{}",
            both[0]
        );
    }
}
