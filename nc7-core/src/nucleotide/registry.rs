//! The registry: every `#[nucleotide]` type registers at link time, so a config's `class_name`
//! always resolves, whatever modules the program happened to use.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::OnceLock;

use burn::prelude::Backend;

use crate::gene::Kind;
use crate::keys::{KeySpec, Signature};
use crate::nucleotide::{Build, NucleotideConfig};
use crate::suggest;

/// One registered nucleotide type, written by `#[nucleotide]`.
#[derive(Debug)]
pub struct Registration {
    /// The type's name.
    pub class_name: &'static str,
    /// Its full path.
    pub path: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Its doc comment.
    pub docs: &'static str,
    /// Its key signature.
    pub signature: fn() -> Signature,
    /// The JSON schema of its config.
    pub config_schema: fn() -> serde_json::Value,
    /// Reads a config (its own fields, defaults filled) into the type's config struct and
    /// says where it does not fit.
    pub check_config: fn(&serde_json::Value) -> Result<(), ConfigTypeError>,
    /// Builds the type on a backend chosen at run time.
    pub runtime: &'static dyn crate::runtime::Erased,
}

impl std::fmt::Debug for dyn crate::runtime::Erased {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Erased")
    }
}

inventory::collect!(Registration);

/// The JSON schema of a nucleotide type's config.
pub fn config_schema<B: Backend, N: Build<B>>() -> serde_json::Value {
    schema_of::<N::Config>()
}

/// A config field whose value does not fit the config struct.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("field `{path}`: ") })]
pub struct ConfigTypeError {
    /// The key path of the field (`layers.0.filters`), empty for the config as a whole.
    pub path: String,
    /// What serde found.
    pub message: String,
}

/// Reads `config` into the config struct of a nucleotide type.
pub fn check_config<B: Backend, N: Build<B>>(
    config: &serde_json::Value,
) -> Result<(), ConfigTypeError> {
    serde_path_to_error::deserialize::<_, N::Config>(config)
        .map(|_| ())
        .map_err(|e| {
            let path = e.path().to_string();
            ConfigTypeError {
                path: if path == "." { String::new() } else { path },
                message: e.into_inner().to_string(),
            }
        })
}

fn schema_of<C: NucleotideConfig>() -> serde_json::Value {
    schemars::schema_for!(C).to_value()
}

/// Why a `class_name` does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No type has this name.
    #[error("unknown class_name `{given}`{hint}; registered {kinds} nucleotides: {known}")]
    Unknown {
        /// The name given.
        given: String,
        /// A "did you mean", or empty.
        hint: String,
        /// The kind(s) the list shows.
        kinds: String,
        /// The registered names of those kinds.
        known: String,
    },
    /// Two types share the name.
    #[error(
        "class_name `{given}` is ambiguous: {paths} all register it; write the full path in `class_name`"
    )]
    Ambiguous {
        /// The name given.
        given: String,
        /// The full paths of the types.
        paths: String,
    },
    /// The type is of another kind than the place it is used in needs.
    #[error(
        "class_name `{given}` is a {found}, but a {expected} is expected here; use a {expected} nucleotide or move this config to where {found} nucleotides belong"
    )]
    WrongKind {
        /// The name given.
        given: String,
        /// The kind it has.
        found: Kind,
        /// The kind needed.
        expected: Kind,
    },
}

/// The registered nucleotide types, by name and path.
#[derive(Debug)]
pub struct Registry {
    entries: Vec<&'static Registration>,
    by_name: HashMap<&'static str, Vec<usize>>,
}

impl Registry {
    /// Everything linked into this program.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(|| Registry::new(inventory::iter::<Registration>.into_iter().collect()))
    }

    /// A registry of the given entries (tests build small ones).
    pub fn new(mut entries: Vec<&'static Registration>) -> Registry {
        entries.sort_by_key(|e| (e.class_name, e.path));
        let mut by_name: HashMap<&'static str, Vec<usize>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            by_name.entry(e.class_name).or_default().push(i);
            if e.path != e.class_name {
                by_name.entry(e.path).or_default().push(i);
            }
        }
        Registry { entries, by_name }
    }

    /// Every entry, sorted by name.
    pub fn entries(&self) -> &[&'static Registration] {
        &self.entries
    }

    /// Names registered by more than one type, with their paths.
    pub fn duplicates(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut out: Vec<_> = self
            .by_name
            .iter()
            .filter(|(name, idx)| idx.len() > 1 && !name.contains("::"))
            .map(|(name, idx)| (*name, idx.iter().map(|&i| self.entries[i].path).collect()))
            .collect();
        out.sort();
        out
    }

    /// Resolves a `class_name` (type name or full path), checking its kind when one is
    /// expected.
    pub fn resolve(
        &self,
        class_name: &str,
        expected: Option<Kind>,
    ) -> Result<&'static Registration, RegistryError> {
        let candidates = self.by_name.get(class_name).map(Vec::as_slice);
        // A project's own type shadows nc7's standard one of the same name: the standard
        // library must not make a project's `CrossEntropy` ambiguous.
        let own: Vec<usize> = candidates
            .unwrap_or(&[])
            .iter()
            .copied()
            .filter(|&i| !crate::standard::is_standard(self.entries[i].path))
            .collect();
        let candidates = match candidates {
            Some(several) if several.len() > 1 && own.len() == 1 => Some(&own[..]),
            other => other,
        };
        match candidates {
            Some([one]) => {
                let entry = self.entries[*one];
                match expected {
                    Some(kind) if kind != entry.kind => Err(RegistryError::WrongKind {
                        given: class_name.to_owned(),
                        found: entry.kind,
                        expected: kind,
                    }),
                    _ => Ok(entry),
                }
            }
            Some(several) => Err(RegistryError::Ambiguous {
                given: class_name.to_owned(),
                paths: suggest::list(several.iter().map(|&i| self.entries[i].path)),
            }),
            None => {
                let of_kind: Vec<&str> = self
                    .entries
                    .iter()
                    .filter(|e| expected.is_none_or(|k| k == e.kind))
                    .map(|e| e.class_name)
                    .collect();
                Err(RegistryError::Unknown {
                    given: class_name.to_owned(),
                    hint: suggest::hint(class_name, of_kind.iter().copied()),
                    kinds: expected.map_or_else(|| "all".to_owned(), |k| k.to_string()),
                    known: suggest::list(&of_kind),
                })
            }
        }
    }

    /// `info <class_name>`: kind, docs, keys and config fields, as text.
    pub fn info(&self, class_name: &str) -> Result<String, RegistryError> {
        let e = self.resolve(class_name, None)?;
        let sig = (e.signature)();
        let mut out = String::new();
        let _ = writeln!(out, "{} ({}, {})", e.class_name, e.kind, e.path);
        if !e.docs.is_empty() {
            let _ = writeln!(out, "\n{}", e.docs);
        }
        let keys = |out: &mut String, title: &str, keys: &[KeySpec], dynamic: bool| {
            let _ = writeln!(out, "\n{title}:");
            if keys.is_empty() {
                let _ = writeln!(out, "  (none)");
            }
            for k in keys {
                let _ = write!(
                    out,
                    "  {}{}: {}",
                    k.name,
                    if k.optional { " (optional)" } else { "" },
                    k.kind
                );
                if !k.doc.is_empty() {
                    let _ = write!(out, " — {}", k.doc);
                }
                out.push('\n');
            }
            if dynamic {
                let _ = writeln!(out, "  ... and dynamic keys");
            }
        };
        keys(
            &mut out,
            "incoming keys",
            &sig.incoming,
            sig.dynamic_incoming,
        );
        keys(
            &mut out,
            "generated keys",
            &sig.generated,
            sig.dynamic_generated,
        );
        let _ = writeln!(out, "\nconfig fields:");
        let fields = config_fields(&(e.config_schema)());
        if fields.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for f in fields {
            let _ = write!(out, "  {}: {}", f.name, f.ty);
            match &f.default {
                Some(d) => {
                    let _ = write!(out, " = {d}");
                }
                None => out.push_str(" (required)"),
            }
            if !f.doc.is_empty() {
                let _ = write!(out, " — {}", f.doc);
            }
            out.push('\n');
        }
        Ok(out)
    }

    /// `sample-config <class_name>`: a config with every field, defaults filled and `TODO`
    /// where there is none, placeholder inbound nodes and mapping; valid JSON or TOML.
    pub fn sample_config(&self, class_name: &str, format: Format) -> Result<String, RegistryError> {
        let e = self.resolve(class_name, None)?;
        let sig = (e.signature)();
        let mut config = serde_json::Map::new();
        config.insert("class_name".into(), e.class_name.into());
        config.insert("name".into(), snake_case(e.class_name).into());
        let incoming: Vec<&KeySpec> = sig.all_incoming().collect();
        if !incoming.is_empty() {
            config.insert(
                "inbound_nodes".into(),
                serde_json::json!(["TODO_INBOUND_NODE"]),
            );
            let rules: serde_json::Map<String, serde_json::Value> = incoming
                .iter()
                .map(|k| {
                    (
                        format!("TODO_GENERATED_KEY_FOR_{}", k.name),
                        k.name.as_ref().into(),
                    )
                })
                .collect();
            config.insert(
                "incoming_keys_mapping".into(),
                serde_json::json!({ "TODO_INBOUND_NODE": rules }),
            );
        }
        if e.kind == Kind::ModelPlugin {
            config.insert("trainable".into(), true.into());
        }
        for f in config_fields(&(e.config_schema)()) {
            config.insert(f.name, f.default.unwrap_or_else(|| "TODO".into()));
        }
        let value = serde_json::Value::Object(config);
        Ok(match format {
            Format::Json => {
                let mut s = serde_json::to_string_pretty(&value).expect("JSON values serialize");
                s.push('\n');
                s
            }
            Format::Toml => to_toml(value),
        })
    }
}

/// A sample config as TOML. TOML has no null: a field that defaults to none is left out and
/// named in a comment, with its type, so the user sees it can be set.
fn to_toml(value: serde_json::Value) -> String {
    fn strip(v: serde_json::Value) -> Option<toml::Value> {
        use serde_json::Value as J;
        Some(match v {
            J::Null => return None,
            J::Bool(b) => toml::Value::Boolean(b),
            J::Number(n) => match n.as_i64() {
                Some(i) => toml::Value::Integer(i),
                None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => toml::Value::String(s),
            J::Array(items) => toml::Value::Array(items.into_iter().filter_map(strip).collect()),
            J::Object(m) => toml::Value::Table(
                m.into_iter()
                    .filter_map(|(k, v)| Some((k, strip(v)?)))
                    .collect(),
            ),
        })
    }
    let serde_json::Value::Object(map) = value else {
        return String::new();
    };
    let unset: Vec<String> = map
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(k, _)| k.clone())
        .collect();
    let table =
        strip(serde_json::Value::Object(map)).unwrap_or(toml::Value::Table(Default::default()));
    // Scalars come before tables in TOML output whatever the order, so every key is written.
    let mut text = toml::to_string_pretty(&table).expect("TOML values without nulls serialize");
    for name in unset {
        text.push_str(&format!("# {name}: none by default; set it to give one\n"));
    }
    text
}

/// The file format of a sample config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON.
    Json,
    /// TOML.
    Toml,
}

/// One field of a config, as its JSON schema describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigField {
    /// The field's name.
    pub name: String,
    /// Its type, in JSON schema words (`number`, `integer`, `string`, `array of number`, ...).
    pub ty: String,
    /// Its default, when it has one.
    pub default: Option<serde_json::Value>,
    /// Its doc comment.
    pub doc: String,
}

/// The fields of a config struct from its JSON schema, in declaration order.
pub fn config_fields(schema: &serde_json::Value) -> Vec<ConfigField> {
    let Some(props) = schema.get("properties").and_then(|p| p.as_object()) else {
        return Vec::new();
    };
    let container_default = schema.get("default");
    props
        .iter()
        .map(|(name, prop)| ConfigField {
            name: name.clone(),
            ty: type_name(prop),
            default: prop
                .get("default")
                .or_else(|| container_default.and_then(|d| d.get(name)))
                .cloned(),
            doc: prop
                .get("description")
                .and_then(|d| d.as_str())
                .unwrap_or("")
                .replace('\n', " "),
        })
        .collect()
}

fn type_name(prop: &serde_json::Value) -> String {
    if let Some(r) = prop.get("$ref").and_then(|r| r.as_str()) {
        return r.rsplit('/').next().unwrap_or(r).to_owned();
    }
    let base = match prop.get("type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(serde_json::Value::Array(ts)) => {
            let names: Vec<&str> = ts
                .iter()
                .filter_map(|t| t.as_str())
                .filter(|t| *t != "null")
                .collect();
            let optional = ts.iter().any(|t| t == "null");
            format!(
                "{}{}",
                names.join(" or "),
                if optional { " or null" } else { "" }
            )
        }
        _ => "any".to_owned(),
    };
    match (base.as_str(), prop.get("items")) {
        ("array", Some(items)) => format!("array of {}", type_name(items)),
        _ => base,
    }
}

/// `CeLoss` → `ce_loss`, `HTTPServer` → `http_server`.
fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower = i > 0 && chars[i - 1].is_lowercase();
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if i > 0 && (prev_lower || (next_lower && chars[i - 1].is_uppercase())) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("UNetEncoder"), "u_net_encoder");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("CeLoss"), "ce_loss");
        assert_eq!(snake_case("Saver"), "saver");
    }

    #[test]
    fn toml_sample_configs_name_fields_without_a_default() {
        let value = serde_json::json!({
            "class_name": "Head",
            "name": "head",
            "limit": null,
            "sizes": [1, 2],
            "nested": {"scale": 0.5, "offset": null},
        });
        let text = to_toml(value);
        let parsed: toml::Table = toml::from_str(&text).expect("valid TOML");
        assert_eq!(parsed["class_name"].as_str(), Some("Head"));
        assert_eq!(parsed["nested"]["scale"].as_float(), Some(0.5));
        assert!(!parsed.contains_key("limit"), "{text}");
        assert!(
            text.contains("# limit: none by default; set it to give one"),
            "{text}"
        );
    }
}
