//! Layers a project's config files, extra config directories, `NC7_…` environment variables
//! and `--set` arguments into one config tree that knows each value's source.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::layout::{RunType, read_configs_dir};
use super::tree::{Node, Tagged, strip_markers, update};
use super::{Source, Sources};
use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::registry::{Registry, config_fields};
use crate::suggest;

/// What is layered over a project's own config files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Extra config directories (same layout as a run's `configs/`), in order.
    pub config_dirs: Vec<PathBuf>,
    /// `(variable, path, value)` from the environment: `NC7_TRAINER__BATCH_SIZE=8` gives
    /// the path `trainer.batch_size`.
    pub env: Vec<(String, String, String)>,
    /// `path=value` arguments, in order.
    pub set: Vec<String>,
}

/// The environment variables' prefix; `__` separates path segments.
pub const ENV_PREFIX: &str = "NC7_";
/// `NC7_…` variables that set nc7 itself, not the config (`NC7_LOG`: the log level,
/// `NC7_MALLOC`: the allocator's tuning, `NC7_MLFLOW`: MLflow tracking on or off,
/// `NC7_MLFLOW_FLUSH_TIMEOUT`: how long a run's end waits for a tracking server,
/// `NC7_SMTP_USER` and `NC7_SMTP_PASSWORD`: the `Notify` callback's login, never recorded).
pub const OWN_VARIABLES: [&str; 6] = [
    "NC7_LOG",
    "NC7_MALLOC",
    "NC7_MLFLOW",
    "NC7_MLFLOW_FLUSH_TIMEOUT",
    "NC7_SMTP_USER",
    "NC7_SMTP_PASSWORD",
];

impl Overrides {
    /// Adds the `NC7_…` variables of this process (read by figment, lower-cased, `__` →
    /// `.`), sorted by name so that the order does not depend on the environment's; `NC7_LOG`
    /// sets the log level and is no config value.
    pub fn with_process_env(self) -> Overrides {
        self.with_env(std::env::vars())
    }

    /// Like [`Overrides::with_process_env`], from the variables given instead of this
    /// process's (a test's own environment, a job's recorded one).
    pub fn with_env<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Overrides
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut found: Vec<(String, String, String)> = vars
            .into_iter()
            .filter_map(|(var, value)| {
                let var = var.as_ref();
                let path = var.strip_prefix(ENV_PREFIX)?;
                if path.is_empty() || OWN_VARIABLES.contains(&var) {
                    return None;
                }
                let key = path.to_lowercase().replace("__", ".");
                Some((var.to_owned(), key, value.as_ref().to_owned()))
            })
            .collect();
        found.sort();
        self.env.extend(found);
        self
    }
}

/// A layered config: the tree and the sources its tags index.
#[derive(Debug, Clone, PartialEq)]
pub struct Layered {
    /// The run type it was read for.
    pub run: RunType,
    /// The config.
    pub tree: Tagged,
    /// Where each part came from.
    pub sources: Sources,
}

impl Layered {
    /// The plain config.
    pub fn to_value(&self) -> Value {
        self.tree.to_value()
    }

    /// `config explain`: each value with the source it came from.
    pub fn explain(&self) -> String {
        self.tree.explain(&|id| self.sources.get(id).to_string())
    }

    /// The values this run sets over the project's own configs of `run` (`--set`, `NC7_…`
    /// variables, `--config-dir` files): what distinguishes it from a plain run of the
    /// project, by path (`trainer.optimization_config.learning_rate`, sections without
    /// `_config`).
    pub fn overridden(&self, run: RunType) -> std::collections::BTreeMap<String, String> {
        let own = format!("{}/configs/", run.dir_name());
        self.tree
            .leaves()
            .into_iter()
            .filter(|(_, _, source)| match self.sources.get(*source) {
                Source::Env(_) | Source::Set(_) => true,
                Source::File(f) => !f.replace('\\', "/").starts_with(&own),
                _ => false,
            })
            .map(|(path, value, _)| (param_name(&path), param_value(value)))
            .collect()
    }
}

/// A config path as a run parameter's name: the top-level section without `_config`
/// (`trainer_config.batch_size` → `trainer.batch_size`).
pub fn param_name(path: &str) -> String {
    match path.split_once('.') {
        Some((section, rest)) => format!(
            "{}.{rest}",
            section.strip_suffix("_config").unwrap_or(section)
        ),
        None => path.strip_suffix("_config").unwrap_or(path).to_owned(),
    }
}

/// A config value as a run parameter's text: strings as they are, the rest as JSON.
pub fn param_value(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Reads and layers the configs of a `run` of `project`. Every problem is pushed to `diags`;
/// what could be read is returned either way.
pub fn layer(
    project: &Path,
    run: RunType,
    overrides: &Overrides,
    registry: &Registry,
    diags: &mut Diagnostics,
) -> Layered {
    let mut sources = Sources::default();
    let builtin = sources.add(Source::Builtin);
    let mut tree = Tagged::map(builtin);
    let configs = run.configs_dir(project);
    if !project.is_dir() {
        diags.push(Diagnostic::error(
            Code::MISSING_CONFIG,
            "",
            format!("project directory `{}` does not exist", project.display()),
            "give the directory that holds `training/`, `inference/`, ...".into(),
        ));
    } else if !configs.is_dir() {
        diags.push(Diagnostic::error(
            Code::MISSING_CONFIG,
            "",
            format!(
                "project `{}` has no `{}/configs/` for a {run} run",
                project.display(),
                run.dir_name()
            ),
            format!(
                "create `{}/configs/` with the run's config files (`nc7 sample-config <class_name>` writes one per nucleotide)",
                run.dir_name()
            ),
        ));
    } else {
        for l in read_configs_dir(&configs, project, run, &mut sources, diags) {
            tree = update(&tree, &l);
        }
    }
    for dir in &overrides.config_dirs {
        if !dir.is_dir() {
            diags.push(Diagnostic::error(
                Code::MISSING_CONFIG,
                "",
                format!("extra config directory `{}` does not exist", dir.display()),
                "give an existing directory laid out like the run's `configs/`".into(),
            ));
            continue;
        }
        for l in read_configs_dir(dir, Path::new(""), run, &mut sources, diags) {
            tree = update(&tree, &l);
        }
    }
    strip_markers(&mut tree);
    unknown_sections(&tree, run, &sources, diags);
    for (var, path, raw) in &overrides.env {
        let id = sources.add(Source::Env(var.clone()));
        if let Err(message) = apply_override(&mut tree, path, parse_value(raw), id, registry) {
            diags.push(override_error(
                &format!("environment variable `{var}`"),
                message,
            ));
        }
    }
    for arg in &overrides.set {
        let id = sources.add(Source::Set(arg.clone()));
        let result = match arg.split_once('=') {
            Some((path, raw)) => {
                apply_override(&mut tree, path.trim(), parse_value(raw), id, registry)
            }
            None => Err("expected `path=value`, such as `trainer.batch_size=8`".to_owned()),
        };
        if let Err(message) = result {
            diags.push(override_error(&format!("`--set {arg}`"), message));
        }
    }
    Layered { run, tree, sources }
}

fn override_error(what: &str, message: String) -> Diagnostic {
    Diagnostic::error(
        Code::OVERRIDE,
        "",
        format!("{what}: {message}"),
        "paths are written `section.key.key`, list items by index or by nucleotide name (`plugins.encoder.filters`); `config explain` lists every path".into(),
    )
}

fn unknown_sections(tree: &Tagged, run: RunType, sources: &Sources, diags: &mut Diagnostics) {
    let known = run.section_keys();
    let Node::Map(entries) = &tree.node else {
        return;
    };
    for (key, value) in entries {
        if !known.contains(key) {
            diags.push(
                Diagnostic::error(
                    Code::UNKNOWN_FIELD,
                    "",
                    format!("unknown config section `{key}` for a {run} run"),
                    format!(
                        "sections are {}{}",
                        suggest::list(&known),
                        suggest::hint(key, known.iter().map(String::as_str))
                    ),
                )
                .with_file(sources.file(value.source)),
            );
        }
    }
}

/// Reads a value given on the command line or in the environment: JSON literals (numbers,
/// booleans, `null`, quoted strings, lists, maps), then figment's looser syntax (TOML-like
/// `[1, 2]`, `{a = 1}`), and anything else as a plain string.
pub(crate) fn parse_value(raw: &str) -> Value {
    let raw = raw.trim();
    if let Ok(v) = serde_json::from_str::<Value>(raw) {
        return v;
    }
    raw.parse::<figment::value::Value>()
        .ok()
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

/// Sets `path` (dot-separated; the first segment may drop `_config`; list items by index or
/// by nucleotide `name`) to `value`. Every segment but the last must exist; the last must
/// exist too, unless it is a field the nucleotide type of the map declares.
pub(crate) fn apply_override(
    tree: &mut Tagged,
    path: &str,
    value: Value,
    source: usize,
    registry: &Registry,
) -> Result<(), String> {
    let segments: Vec<&str> = path.split('.').collect();
    if path.is_empty() || segments.iter().any(|s| s.is_empty()) {
        return Err(format!("`{path}` is not a path"));
    }
    let mut node = tree;
    let mut walked = String::new();
    // Inside a declared field that the files leave out (a map created here), any key may be
    // set: the type of the section or nucleotide checks it when the run is planned.
    let mut created = false;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let here = if walked.is_empty() {
            "the config".to_owned()
        } else {
            format!("`{walked}`")
        };
        let key: String = match &node.node {
            Node::Map(_) => {
                if node.get(seg).is_some() {
                    (*seg).to_owned()
                } else if i == 0 && node.get(&format!("{seg}_config")).is_some() {
                    format!("{seg}_config")
                } else if created
                    || declares(node, seg, registry)
                    || (i == 1 && super::section_fields(&walked).contains(seg))
                {
                    if last {
                        node.set(seg, Tagged::new(&value, source));
                        return Ok(());
                    }
                    node.set(seg, Tagged::map(source));
                    created = true;
                    (*seg).to_owned()
                } else {
                    let keys = node.keys();
                    let mut candidates: Vec<String> = keys
                        .iter()
                        .map(|k| {
                            if i == 0 {
                                k.trim_end_matches("_config").to_owned()
                            } else {
                                (*k).to_owned()
                            }
                        })
                        .collect();
                    let mut declared = declared_fields(node, registry);
                    if i == 1 {
                        declared.extend(
                            super::section_fields(&walked)
                                .iter()
                                .map(|f| (*f).to_owned()),
                        );
                    }
                    candidates.extend(declared.iter().cloned());
                    let also = declared
                        .iter()
                        .filter(|f| !keys.contains(&f.as_str()))
                        .collect::<Vec<_>>();
                    return Err(format!(
                        "{here} has no `{seg}` (it has {}{}){}",
                        suggest::list(&keys),
                        if also.is_empty() {
                            String::new()
                        } else {
                            format!("; its type also declares {}", suggest::list(also))
                        },
                        suggest::hint(seg, candidates.iter().map(String::as_str))
                    ));
                }
            }
            Node::List(items) => {
                let index = seg
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n < items.len())
                    .or_else(|| {
                        items
                            .iter()
                            .position(|it| it.get("name").and_then(Tagged::as_str) == Some(seg))
                    });
                match index {
                    Some(n) => n.to_string(),
                    None => {
                        let names: Vec<&str> = items
                            .iter()
                            .filter_map(|it| it.get("name").and_then(Tagged::as_str))
                            .collect();
                        return Err(format!(
                            "{here} has no item `{seg}` (it has {} item(s){}){}",
                            items.len(),
                            if names.is_empty() {
                                String::new()
                            } else {
                                format!(", named {}", suggest::list(&names))
                            },
                            suggest::hint(seg, names.iter().copied())
                        ));
                    }
                }
            }
            Node::Leaf(v) => {
                return Err(format!("{here} is the value `{v}`, which has no `{seg}`"));
            }
        };
        let label = match &node.node {
            Node::List(items) => key
                .parse::<usize>()
                .ok()
                .and_then(|n| items.get(n))
                .and_then(|it| it.get("name").and_then(Tagged::as_str))
                .map_or_else(|| format!("[{key}]"), |name| format!("[{name}]")),
            _ if walked.is_empty() => key.clone(),
            _ => format!(".{key}"),
        };
        walked.push_str(&label);
        let child = match &mut node.node {
            Node::Map(entries) => entries.iter_mut().find(|(k, _)| *k == key).map(|(_, v)| v),
            Node::List(items) => key.parse::<usize>().ok().and_then(|n| items.get_mut(n)),
            Node::Leaf(_) => None,
        };
        let Some(child) = child else {
            return Err(format!("`{walked}` vanished while it was being set"));
        };
        if last {
            *child = Tagged::new(&value, source);
            return Ok(());
        }
        node = child;
    }
    Ok(())
}

/// Whether `map` is a nucleotide config whose type declares the field `field`.
fn declares(map: &Tagged, field: &str, registry: &Registry) -> bool {
    declared_fields(map, registry).iter().any(|f| f == field)
}

/// The fields a nucleotide config may have (its type's and the common ones); none when `map`
/// is not a nucleotide config of a known type.
fn declared_fields(map: &Tagged, registry: &Registry) -> Vec<String> {
    let Some(class_name) = map.get("class_name").and_then(Tagged::as_str) else {
        return Vec::new();
    };
    match registry.resolve(class_name, None) {
        Ok(r) => config_fields(&(r.config_schema)())
            .into_iter()
            .map(|f| f.name)
            .chain(crate::common::common_fields_of(r.kind).map(str::to_owned))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    proptest::proptest! {
        // Fuzzing (the reliability issue): any `--set` text is applied or refused with a
        // diagnostic that has a code, never a panic.
        #[test]
        fn any_set_value_is_applied_or_refused(
            path in proptest::string::string_regex("[a-z_.0-9\\[\\]*:-]{0,24}").unwrap(),
            value in proptest::string::string_regex("[ -~]{0,24}").unwrap(),
            with_equals in proptest::bool::ANY,
        ) {
            let dir = std::env::temp_dir().join(format!("nc7-fuzz-set-{}", std::process::id()));
            let configs = dir.join("training/configs");
            std::fs::create_dir_all(&configs).unwrap();
            std::fs::write(
                configs.join("trainer.json"),
                r#"{"batch_size": 4, "optimization_config": {"learning_rate": 0.1}}"#,
            )
            .unwrap();
            let arg = if with_equals { format!("{path}={value}") } else { path.clone() };
            let overrides = Overrides { set: vec![arg], ..Overrides::default() };
            let mut diags = Diagnostics::default();
            let _ = layer(&dir, RunType::Train, &overrides, crate::registry::Registry::global(), &mut diags);
            for d in &diags.0 {
                proptest::prop_assert!(d.code.0 > 0, "{d:?}");
            }
        }
    }

    #[test]
    fn nc7s_own_variables_are_no_config_values() {
        let o = Overrides::default().with_env([
            ("NC7_LOG", "debug"),
            ("NC7_MALLOC", "system"),
            ("NC7_MLFLOW", "off"),
            ("NC7_TRAINER__NUM_EPOCHS", "3"),
        ]);
        let paths: Vec<&str> = o.env.iter().map(|(_, p, _)| p.as_str()).collect();
        assert_eq!(paths, ["trainer.num_epochs"]);
    }

    #[test]
    fn typed_values() {
        assert_eq!(parse_value("8"), json!(8));
        assert_eq!(parse_value("0.5"), json!(0.5));
        assert_eq!(parse_value("true"), json!(true));
        assert_eq!(parse_value("[1, 2]"), json!([1, 2]));
        assert_eq!(parse_value("{\"a\": 1}"), json!({"a": 1}));
        assert_eq!(parse_value("\"8\""), json!("8"));
        assert_eq!(parse_value("adam"), json!("adam"));
        assert_eq!(parse_value("{a = 1}"), json!({"a": 1}));
    }

    #[test]
    fn overrides_by_path_alias_and_name() {
        let registry = Registry::new(Vec::new());
        let mut tree = Tagged::new(
            &json!({"trainer_config": {"batch_size": 4}, "plugins_config": [{"name": "enc", "f": 1}]}),
            0,
        );
        apply_override(&mut tree, "trainer.batch_size", json!(8), 1, &registry).unwrap();
        // A trainer field the file leaves to its default.
        apply_override(&mut tree, "trainer.prefetch", json!(0), 1, &registry).unwrap();
        apply_override(&mut tree, "plugins_config.enc.f", json!(2), 1, &registry).unwrap();
        apply_override(&mut tree, "plugins.0.f", json!(3), 1, &registry).unwrap();
        assert_eq!(
            tree.to_value(),
            json!({"trainer_config": {"batch_size": 8, "prefetch": 0}, "plugins_config": [{"name": "enc", "f": 3}]})
        );
        let err =
            apply_override(&mut tree, "trainer.bach_size", json!(8), 1, &registry).unwrap_err();
        assert!(
            err.starts_with(
                "`trainer_config` has no `bach_size` (it has `batch_size`, `prefetch`; its type also declares `num_epochs`, "
            ) && err.ends_with("did you mean `batch_size`?"),
            "{err}"
        );
        let err =
            apply_override(&mut tree, "trainer.summary_step", json!(8), 1, &registry).unwrap_err();
        assert!(err.ends_with("did you mean `summary_steps`?"), "{err}");
        // Only the section's own fields: deeper maps are not declared by it.
        let err = apply_override(&mut tree, "inferer.batch_size", json!(8), 1, &registry);
        assert!(err.is_err(), "no `inferer_config` section in this tree");
        let err =
            apply_override(&mut tree, "trainr.batch_size", json!(8), 1, &registry).unwrap_err();
        assert!(err.contains("did you mean `trainer`?"), "{err}");
        let err = apply_override(&mut tree, "plugins.encc.f", json!(8), 1, &registry).unwrap_err();
        assert!(err.contains("did you mean `enc`?"), "{err}");
        let err =
            apply_override(&mut tree, "trainer.batch_size.x", json!(8), 1, &registry).unwrap_err();
        assert!(err.contains("is the value `8`"), "{err}");
    }
}
