//! The flat `key: value` YAML of MLflow's `meta.yaml` files, written and read by hand: strings
//! always single-quoted (an id like `0123` or `1e10` would otherwise read as a number).

use std::collections::BTreeMap;

/// A single-quoted YAML string.
pub(super) fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `key: value` lines, in the order given.
pub(super) fn yaml(pairs: &[(&str, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// The value of `key` in a flat YAML text, unquoted.
pub(super) fn yaml_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?.trim();
        Some(unquote(rest))
    })
}

fn unquote(v: &str) -> String {
    if let Some(inner) = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        inner.replace("''", "'")
    } else if let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        inner.to_owned()
    } else {
        v.to_owned()
    }
}

/// A run's `meta.yaml` as its raw values, keyed by the field names nc7 writes.
pub(super) fn parse_meta(text: &str) -> BTreeMap<&'static str, String> {
    const FIELDS: [&str; 16] = [
        "artifact_uri",
        "end_time",
        "entry_point_name",
        "experiment_id",
        "lifecycle_stage",
        "run_id",
        "run_name",
        "run_uuid",
        "source_name",
        "source_type",
        "source_version",
        "start_time",
        "status",
        "tags",
        "user_id",
        "deleted_time",
    ];
    FIELDS
        .iter()
        .filter_map(|f| {
            text.lines().find_map(|l| {
                let rest = l.strip_prefix(f)?.strip_prefix(':')?.trim();
                Some((*f, rest.to_owned()))
            })
        })
        .collect()
}
