//! The project global config: parameter defaults shared by many nucleotides, by scope from
//! general to specific (global → kind → concrete type), injected only into parameters a type
//! declares and never over a value its own config gives.

use serde_json::{Map, Value};

use crate::gene::Kind;

/// Which scope of the global config a default came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A top-level parameter.
    Global,
    /// The section named after a kind (`"ModelPlugin": {...}`).
    Kind(Kind),
    /// The section named after the type (`"UNet": {...}` or its full path).
    Type(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Global => f.write_str("global scope"),
            Scope::Kind(k) => write!(f, "scope `{k}`"),
            Scope::Type(t) => write!(f, "scope `{t}`"),
        }
    }
}

/// The defaults the global config gives a nucleotide of `kind` and type `class_name` (also
/// matched by `path`), for the parameters in `declared`, each with the scope it came from.
/// `is_scope` tells which top-level map keys name types (so they are not taken for
/// parameters). Values the nucleotide's own config gives are not touched here: the caller
/// injects only absent keys.
pub(crate) fn defaults_for(
    global: &Map<String, Value>,
    kind: Kind,
    class_name: &str,
    path: &str,
    declared: &[String],
    is_scope: &dyn Fn(&str) -> bool,
) -> Vec<(String, Value, Scope)> {
    let mut out: Vec<(String, Value, Scope)> = Vec::new();
    let mut take = |map: &Map<String, Value>, scope: Scope| {
        for (k, v) in map {
            if !declared.contains(k) {
                continue;
            }
            match out.iter_mut().find(|(name, _, _)| name == k) {
                Some(slot) => *slot = (k.clone(), v.clone(), scope.clone()),
                None => out.push((k.clone(), v.clone(), scope.clone())),
            }
        }
    };
    let top: Map<String, Value> = global
        .iter()
        .filter(|(k, v)| !(v.is_object() && (k.parse::<Kind>().is_ok() || is_scope(k))))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    take(&top, Scope::Global);
    if let Some(Value::Object(m)) = global.get(kind.name()) {
        take(m, Scope::Kind(kind));
    }
    for name in [class_name, path] {
        if let Some(Value::Object(m)) = global.get(name) {
            take(m, Scope::Type(name.to_owned()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Checks every scope and parameter of the global config against the nucleotides of the run
/// (`entries`): a scope must name a kind or a registered type, and each parameter must be one
/// that some nucleotide in its scope declares. A typo would otherwise be ignored without a
/// word. A kind scope with no nucleotide of that kind in the run is checked against every
/// registered type of the kind. Skipped while a class name is unknown (its fields are not).
pub(crate) fn check_global(
    layered: &super::Layered,
    entries: &[super::NucleotideEntry],
    registry: &crate::registry::Registry,
    diags: &mut crate::diagnostic::Diagnostics,
) {
    use crate::diagnostic::{Code, Diagnostic};
    use crate::registry::{Registration, config_fields};
    use crate::suggest;
    let Some(tagged) = layered.tree.get(super::GLOBAL_FILE) else {
        return;
    };
    let Value::Object(global) = tagged.to_value() else {
        return; // Reported where the global config is read.
    };
    if entries.iter().any(|e| e.registration.is_none()) {
        return;
    }
    let file = layered.sources.file(tagged.source);
    let fields = |r: &Registration| -> Vec<String> {
        config_fields(&(r.config_schema)())
            .into_iter()
            .map(|f| f.name)
            .collect()
    };
    let union = |regs: &mut dyn Iterator<Item = &'static Registration>| -> Vec<String> {
        let mut all: Vec<String> = regs.flat_map(&fields).collect();
        all.sort();
        all.dedup();
        all
    };
    let in_run: Vec<&'static Registration> =
        entries.iter().filter_map(|e| e.registration).collect();
    let run_fields = union(&mut in_run.iter().copied());
    // (key path, message, fix) of each problem.
    let mut problems: Vec<(String, String, String)> = Vec::new();
    let unused = |scope: &str, params: &Map<String, Value>, declared: &[String], who: &str| {
        params
            .keys()
            .filter(|name| !declared.contains(name))
            .map(|name| {
                (
                    format!("{scope}.{name}"),
                    format!(
                        "`{}` parameter `{name}` of scope `{scope}` is declared by no {who}{}",
                        super::GLOBAL_FILE,
                        suggest::hint(name, declared.iter().map(String::as_str))
                    ),
                    format!("{who} declares {}", suggest::list(declared)),
                )
            })
            .collect::<Vec<_>>()
    };
    for (key, value) in &global {
        if let Ok(kind) = key.parse::<Kind>() {
            let Value::Object(params) = value else {
                problems.push((
                    key.clone(),
                    format!(
                        "`{}` scope `{key}` is `{value}`, not a map of parameters",
                        super::GLOBAL_FILE
                    ),
                    format!("write `\"{key}\": {{\"parameter\": value}}`"),
                ));
                continue;
            };
            let mut of_kind = in_run.iter().copied().filter(|r| r.kind == kind).peekable();
            let declared = if of_kind.peek().is_some() {
                union(&mut of_kind)
            } else {
                union(
                    &mut registry
                        .entries()
                        .iter()
                        .copied()
                        .filter(|r| r.kind == kind),
                )
            };
            problems.extend(unused(
                key,
                params,
                &declared,
                &format!("{kind} nucleotide"),
            ));
            continue;
        }
        if let (Value::Object(params), Ok(r)) = (value, registry.resolve(key, None)) {
            problems.extend(unused(
                key,
                params,
                &fields(r),
                &format!("`{}`", r.class_name),
            ));
            continue;
        }
        if run_fields.contains(key) {
            continue;
        }
        let scopes: Vec<&str> = Kind::ALL
            .iter()
            .map(|k| k.name())
            .chain(registry.entries().iter().map(|r| r.class_name))
            .collect();
        let candidates: Vec<&str> = if value.is_object() {
            scopes
                .iter()
                .copied()
                .chain(run_fields.iter().map(String::as_str))
                .collect()
        } else {
            run_fields.iter().map(String::as_str).collect()
        };
        problems.push((
            key.clone(),
            format!(
                "`{}` has `{key}`, which is no nucleotide kind, registered type or parameter that a nucleotide of this run declares{}",
                super::GLOBAL_FILE,
                suggest::hint(key, candidates.iter().copied())
            ),
            format!(
                "scopes are kinds (`ModelPlugin`, ...) or class names; parameters of this run are {}",
                suggest::list(&run_fields)
            ),
        ));
    }
    for (key, message, help) in problems {
        diags.push(
            Diagnostic::error(Code::UNKNOWN_FIELD, "", message, help)
                .with_key(&key)
                .with_file(file),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolved(kind: Kind, class: &str, params: &[&str], explicit: Value) -> Value {
        let global = json!({
            "param1": 10, "param2": 100, "param3": 200,
            "ModelPlugin": {"param1": 11, "param4": 100},
            "Dataset": {"param1": 200, "ds_param": 150, "ds_param2": 5},
            "DatasetChild": {"param1": 300, "ds_param": 200, "param3": 1}
        });
        let declared: Vec<String> = params.iter().map(|s| s.to_string()).collect();
        let mut out = explicit.as_object().unwrap().clone();
        let is_scope = |k: &str| k == "DatasetChild";
        for (k, v, _) in defaults_for(
            global.as_object().unwrap(),
            kind,
            class,
            class,
            &declared,
            &is_scope,
        ) {
            out.entry(k).or_insert(v);
        }
        Value::Object(out)
    }

    /// spec §5, every case.
    #[test]
    fn scopes_from_general_to_specific() {
        let ds = ["param1", "param3", "ds_param", "ds_param2"];
        assert_eq!(
            resolved(Kind::Dataset, "DatasetChild", &ds, json!({})),
            json!({"ds_param": 200, "ds_param2": 5, "param1": 300, "param3": 1})
        );
        assert_eq!(
            resolved(
                Kind::ModelPlugin,
                "Plugin",
                &["param1", "param3"],
                json!({})
            ),
            json!({"param1": 11, "param3": 200})
        );
        assert_eq!(
            resolved(Kind::Dataset, "DatasetChild", &ds, json!({"ds_param": 10})),
            json!({"ds_param": 10, "ds_param2": 5, "param1": 300, "param3": 1})
        );
    }

    #[test]
    fn scope_of_each_default() {
        let global = json!({"a": 1, "ModelLoss": {"a": 2, "b": 3}, "Ce": {"b": 4}});
        let got = defaults_for(
            global.as_object().unwrap(),
            Kind::ModelLoss,
            "Ce",
            "losses::Ce",
            &["a".into(), "b".into()],
            &|k| k == "Ce",
        );
        assert_eq!(
            got,
            [
                ("a".into(), json!(2), Scope::Kind(Kind::ModelLoss)),
                ("b".into(), json!(4), Scope::Type("Ce".into()))
            ]
        );
    }
}
