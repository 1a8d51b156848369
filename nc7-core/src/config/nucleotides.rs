//! Turns the nucleotide configs of a layered config into checked entries: common fields split,
//! class names resolved, unknown fields and wrong types found, global-config scopes and the
//! types' defaults filled in (each value tagged with its source).

use serde_json::Value;

use super::global::defaults_for;
use super::layout::{NucleotideSection, SectionShape};
use super::resolve::Layered;
use super::tree::{Node, Tagged};
use super::{GLOBAL_FILE, Source};
use crate::common::{COMMON_FIELDS, CommonConfig};
use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::gene::Kind;
use crate::registry::{Registration, Registry, config_fields};
use crate::suggest;

/// One nucleotide config of a run, checked.
#[derive(Debug, Clone)]
pub struct NucleotideEntry {
    /// The section it is in (`plugins_config`).
    pub section: &'static str,
    /// Its slot in a named section (`train`, `eval` of `datasets_config`).
    pub slot: Option<String>,
    /// Its common fields; `None` when they could not be read.
    pub common: Option<CommonConfig>,
    /// Its type; `None` when the class name does not resolve.
    pub registration: Option<&'static Registration>,
    /// Its kind: the type's, or the section's when the type is unknown.
    pub kind: Kind,
    /// The file it came from.
    pub file: Option<String>,
}

impl NucleotideEntry {
    /// Its name (empty when it has none).
    pub fn name(&self) -> &str {
        self.common.as_ref().map_or("", |c| c.name.as_str())
    }
}

/// Checks and completes every nucleotide config of `sections` in `layered` (filling global
/// config scopes and defaults into the tree). Every problem is pushed to `diags`.
pub fn complete_nucleotides(
    layered: &mut Layered,
    sections: &[NucleotideSection],
    registry: &Registry,
    diags: &mut Diagnostics,
) -> Vec<NucleotideEntry> {
    let global = match layered.tree.get(GLOBAL_FILE).map(Tagged::to_value) {
        Some(Value::Object(m)) => m,
        Some(Value::Null) | None => Default::default(),
        Some(other) => {
            diags.push(Diagnostic::error(
                Code::FIELD_TYPE,
                "",
                format!("`{GLOBAL_FILE}` holds `{other}`, not a map"),
                "the global config is a map of parameters and scopes (`\"ModelPlugin\": {...}`)".into(),
            ).with_file(layered.tree.get(GLOBAL_FILE).and_then(|t| layered.sources.file(t.source))));
            Default::default()
        }
    };
    let mut entries = Vec::new();
    for section in sections {
        let Some(value) = layered.tree.get(section.key) else {
            continue;
        };
        let file = layered.sources.file(value.source).map(str::to_owned);
        // Each config: its slot (named sections) and its index in the section (none when the
        // section is the config itself).
        let mut configs: Vec<(Option<String>, Option<usize>)> = Vec::new();
        match (&value.node, section.shape) {
            (Node::List(items), SectionShape::List) => {
                configs.extend((0..items.len()).map(|i| (None, Some(i))));
            }
            (Node::Map(_), SectionShape::One) => configs.push((None, None)),
            (Node::Map(named), SectionShape::Named(names)) => {
                for (i, (slot, _)) in named.iter().enumerate() {
                    if names.contains(&slot.as_str()) {
                        configs.push((Some(slot.clone()), Some(i)));
                    } else {
                        diags.push(
                            Diagnostic::error(
                                Code::UNKNOWN_FIELD,
                                "",
                                format!("`{}` has no slot `{slot}`", section.key),
                                format!(
                                    "its slots are {}{}",
                                    suggest::list(names),
                                    suggest::hint(slot, names.iter().copied())
                                ),
                            )
                            .with_file(file.as_deref()),
                        );
                    }
                }
            }
            (_, shape) => {
                let expected = match shape {
                    SectionShape::List => "a list of nucleotide configs",
                    SectionShape::One => "one nucleotide config (a map)",
                    SectionShape::Named(_) => "a map of named nucleotide configs",
                };
                diags.push(
                    Diagnostic::error(
                        Code::FIELD_TYPE,
                        "",
                        format!("`{}` is not {expected}", section.key),
                        format!("write `{}` as {expected}", section.key),
                    )
                    .with_file(file.as_deref()),
                );
                continue;
            }
        }
        for (slot, at) in configs {
            let Some(section_value) = layered.tree.get_mut(section.key) else {
                continue;
            };
            let target = match at {
                None => section_value,
                Some(i) => match &mut section_value.node {
                    Node::List(items) => &mut items[i],
                    Node::Map(named) => &mut named[i].1,
                    Node::Leaf(_) => continue,
                },
            };
            let entry = complete_one(
                target,
                section,
                slot,
                &global,
                &mut layered.sources,
                registry,
                diags,
            );
            entries.push(entry);
        }
    }
    entries
}

fn complete_one(
    target: &mut Tagged,
    section: &NucleotideSection,
    slot: Option<String>,
    global: &serde_json::Map<String, Value>,
    sources: &mut super::Sources,
    registry: &Registry,
    diags: &mut Diagnostics,
) -> NucleotideEntry {
    let file = sources.file(target.source).map(str::to_owned);
    let fallback_kind = section.kinds[0];
    let mut entry = NucleotideEntry {
        section: section.key,
        slot,
        common: None,
        registration: None,
        kind: fallback_kind,
        file: file.clone(),
    };
    let field_error = |code: Code, name: &str, field: &str, message: String, help: String| {
        Diagnostic::error(code, name, message, help)
            .with_key(field)
            .with_file(file.as_deref())
    };
    let mut common = match CommonConfig::split(&target.to_value()) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                let code = if e.field == "incoming_keys_mapping" {
                    Code::BAD_MAPPING
                } else {
                    Code::FIELD_TYPE
                };
                diags.push(field_error(
                    code,
                    &e.config,
                    &e.field,
                    format!(
                        "field `{}` of nucleotide `{}` in `{}`: {}",
                        e.field, e.config, section.key, e.message
                    ),
                    "fix the field as the message says".into(),
                ));
            }
            return entry;
        }
    };
    let name = common.name.clone();
    let expected = (section.kinds.len() == 1).then_some(fallback_kind);
    let registration = match registry.resolve(&common.class_name, expected) {
        Ok(r) if section.kinds.contains(&r.kind) => r,
        Ok(r) => {
            diags.push(field_error(
                Code::CLASS_NAME,
                &name,
                "class_name",
                format!(
                    "nucleotide `{name}`: class_name `{}` is a {}, but `{}` holds {}",
                    common.class_name,
                    r.kind,
                    section.key,
                    suggest::list(section.kinds.iter().map(|k| k.name()))
                ),
                format!("move this config to where {} nucleotides belong", r.kind),
            ));
            entry.common = Some(common);
            return entry;
        }
        Err(e) => {
            diags.push(field_error(
                Code::CLASS_NAME,
                &name,
                "class_name",
                format!("nucleotide `{name}`: {e}"),
                "use a registered class name; `nc7 info <class_name>` describes one".into(),
            ));
            entry.common = Some(common);
            return entry;
        }
    };
    entry.kind = registration.kind;
    entry.registration = Some(registration);
    for e in common.unknown_fields(registration) {
        diags.push(field_error(
            Code::UNKNOWN_FIELD,
            &name,
            &e.field,
            format!("unknown field `{}` in nucleotide `{name}`", e.field),
            e.message,
        ));
    }
    let fields = config_fields(&(registration.config_schema)());
    let declared: Vec<String> = fields.iter().map(|f| f.name.clone()).collect();
    for (k, v, scope) in global_defaults(global, registration, &declared, registry) {
        if target.get(&k).is_none() {
            let id = sources.add(Source::Global(scope));
            target.set(&k, Tagged::new(&v, id));
        }
    }
    for f in &fields {
        if let (None, Some(default)) = (target.get(&f.name), &f.default) {
            let id = sources.add(Source::Default(registration.class_name.to_owned()));
            target.set(&f.name, Tagged::new(default, id));
        }
    }
    let own: serde_json::Map<String, Value> = match target.to_value() {
        Value::Object(m) => m
            .into_iter()
            .filter(|(k, _)| !COMMON_FIELDS.contains(&k.as_str()) && declared.contains(k))
            .collect(),
        _ => Default::default(),
    };
    // Nucleotides nested in its fields (a processed data set's processors, a mix's data
    // sets) take the global config's defaults too.
    let mut own = own;
    for value in own.values_mut() {
        fill_nested(value, global, registry);
    }
    // What the nucleotide is built with: its own fields, with the global config's and the
    // type's defaults filled in (the plan builds from `common.rest`).
    common.rest = own.clone();
    if let Err(e) = (registration.check_config)(&Value::Object(own)) {
        let field = if e.path.is_empty() {
            ""
        } else {
            e.path.as_str()
        };
        diags.push(field_error(
            Code::FIELD_TYPE,
            &name,
            field,
            format!("nucleotide `{name}` ({}): {e}", registration.class_name),
            format!(
                "`nc7 info {}` lists its fields and their types",
                registration.class_name
            ),
        ));
    }
    if let Some(class) = target.get_mut("class_name") {
        class.node = Node::Leaf(Value::String(registration.path.to_owned()));
    }
    entry.common = Some(common);
    entry
}

/// What the global config gives a nucleotide of `registration` for the parameters it
/// `declared`, each with its scope.
fn global_defaults(
    global: &serde_json::Map<String, Value>,
    registration: &Registration,
    declared: &[String],
    registry: &Registry,
) -> Vec<(String, Value, super::global::Scope)> {
    let is_scope = |k: &str| registry.resolve(k, None).is_ok();
    defaults_for(
        global,
        registration.kind,
        registration.class_name,
        registration.path,
        declared,
        &is_scope,
    )
}

/// Fills, in every nucleotide config nested in `value` (an object with a registered
/// `class_name`, at any depth), the parameters its type declares that it does not give and the
/// project global config does.
fn fill_nested(value: &mut Value, global: &serde_json::Map<String, Value>, registry: &Registry) {
    match value {
        Value::Object(map) => {
            let registration = map
                .get("class_name")
                .and_then(Value::as_str)
                .and_then(|c| registry.resolve(c, None).ok());
            if let Some(r) = registration {
                let declared: Vec<String> = config_fields(&(r.config_schema)())
                    .into_iter()
                    .map(|f| f.name)
                    .collect();
                for (k, v, _) in global_defaults(global, r, &declared, registry) {
                    map.entry(k).or_insert(v);
                }
            }
            for v in map.values_mut() {
                fill_nested(v, global, registry);
            }
        }
        Value::Array(items) => {
            for v in items {
                fill_nested(v, global, registry);
            }
        }
        _ => {}
    }
}
