//! Config values that remember which source gave each part, and nucleus7's update rule for
//! layering one config over another.

use std::fmt::Write;

use serde_json::{Map, Value};

/// Index of a [`Source`](super::Source) in the list the resolved config keeps.
pub type SourceId = usize;

/// A config value whose every map, list and leaf knows the source that gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tagged {
    /// The value.
    pub node: Node,
    /// Where it came from.
    pub source: SourceId,
}

/// The shape of a [`Tagged`] value.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A scalar, a string or null.
    Leaf(Value),
    /// A map, in the order its keys were written.
    Map(Vec<(String, Tagged)>),
    /// A list.
    List(Vec<Tagged>),
}

/// A map with this key set to `true` updates the map it is layered over instead of replacing it.
pub const UPDATE_MARKER: &str = "__UPDATE_CONFIG__";
/// A list item with this value stands for all items of the list it is layered over.
pub const BASE_MARKER: &str = "__BASE__";

impl Tagged {
    /// Tags every part of `value` with `source`.
    pub fn new(value: &Value, source: SourceId) -> Tagged {
        let node = match value {
            Value::Object(map) => Node::Map(
                map.iter()
                    .map(|(k, v)| (k.clone(), Tagged::new(v, source)))
                    .collect(),
            ),
            Value::Array(items) => {
                Node::List(items.iter().map(|v| Tagged::new(v, source)).collect())
            }
            leaf => Node::Leaf(leaf.clone()),
        };
        Tagged { node, source }
    }

    /// An empty map.
    pub fn map(source: SourceId) -> Tagged {
        Tagged {
            node: Node::Map(Vec::new()),
            source,
        }
    }

    /// The plain value.
    pub fn to_value(&self) -> Value {
        match &self.node {
            Node::Leaf(v) => v.clone(),
            Node::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect::<Map<String, Value>>(),
            ),
            Node::List(items) => Value::Array(items.iter().map(Tagged::to_value).collect()),
        }
    }

    /// The entry `key` of a map.
    pub fn get(&self, key: &str) -> Option<&Tagged> {
        match &self.node {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The entry `key` of a map, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Tagged> {
        match &mut self.node {
            Node::Map(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets `key` of a map (appending a new key at the end); does nothing on other values.
    pub fn set(&mut self, key: &str, value: Tagged) {
        if let Node::Map(entries) = &mut self.node {
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => entries.push((key.to_owned(), value)),
            }
        }
    }

    /// The keys of a map (none for other values).
    pub fn keys(&self) -> Vec<&str> {
        match &self.node {
            Node::Map(entries) => entries.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// The string value of a leaf.
    pub fn as_str(&self) -> Option<&str> {
        match &self.node {
            Node::Leaf(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// nucleus7's "empty": null, an empty string, an empty map or an empty list. Unlike
    /// nucleus7 (Python's falsiness), `0` and `false` are values, so a layer can set them.
    pub fn is_empty(&self) -> bool {
        match &self.node {
            Node::Leaf(Value::Null) => true,
            Node::Leaf(Value::String(s)) => s.is_empty(),
            Node::Leaf(_) => false,
            Node::Map(entries) => entries.is_empty(),
            Node::List(items) => items.is_empty(),
        }
    }

    fn is_base_marker(&self) -> bool {
        self.as_str() == Some(BASE_MARKER)
    }

    /// Every value with its source: `(path, value, source)`, paths dotted, list items of
    /// nucleotide configs by their names (`plugins.cnn.filters`), lists of plain values whole.
    pub fn leaves(&self) -> Vec<(String, Value, SourceId)> {
        let mut out = Vec::new();
        self.leaves_into("", &mut out);
        out
    }

    fn leaves_into(&self, path: &str, out: &mut Vec<(String, Value, SourceId)>) {
        let join = |k: &str| {
            if path.is_empty() {
                k.to_owned()
            } else {
                format!("{path}.{k}")
            }
        };
        match &self.node {
            Node::Map(entries) if !entries.is_empty() => {
                for (k, v) in entries {
                    v.leaves_into(&join(k), out);
                }
            }
            Node::List(items)
                if items
                    .iter()
                    .all(|i| i.get("name").and_then(Tagged::as_str).is_some())
                    && !items.is_empty() =>
            {
                for item in items {
                    let name = item
                        .get("name")
                        .and_then(Tagged::as_str)
                        .unwrap_or_default();
                    item.leaves_into(&join(name), out);
                }
            }
            _ => out.push((path.to_owned(), self.to_value(), self.source)),
        }
    }

    /// Lines `path = value  (source)` for every leaf, with list items of maps that have a
    /// `name` addressed by it (`plugins_config[encoder].filters`).
    pub fn explain(&self, source_name: &dyn Fn(SourceId) -> String) -> String {
        let mut out = String::new();
        self.explain_into("", source_name, &mut out);
        out
    }

    fn explain_into(&self, path: &str, source_name: &dyn Fn(SourceId) -> String, out: &mut String) {
        let leaf = |value: String, source: SourceId, out: &mut String| {
            let _ = writeln!(out, "{path} = {value}  ({})", source_name(source));
        };
        match &self.node {
            Node::Leaf(v) => leaf(v.to_string(), self.source, out),
            Node::Map(entries) if entries.is_empty() => leaf("{}".into(), self.source, out),
            Node::Map(entries) => {
                for (k, v) in entries {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    v.explain_into(&p, source_name, out);
                }
            }
            Node::List(items)
                if items
                    .iter()
                    .all(|i| matches!(i.node, Node::Leaf(_)) && i.source == self.source) =>
            {
                leaf(self.to_value().to_string(), self.source, out)
            }
            Node::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    let label = item
                        .get("name")
                        .and_then(Tagged::as_str)
                        .map_or_else(|| i.to_string(), str::to_owned);
                    item.explain_into(&format!("{path}[{label}]"), source_name, out);
                }
            }
        }
    }
}

/// nucleus7's update rule (spec §4): `base` updated by `other`, both maps; neither is changed.
///
/// For each key of `other`: a missing or empty value in `base` takes `other`'s; an empty value
/// in `other` keeps `base`'s; when either is a list, the list rule applies (non-lists are
/// wrapped, `"__BASE__"` in `other` stands for all of `base`'s items, else `other` replaces);
/// otherwise `other` replaces, unless it is a map with `"__UPDATE_CONFIG__": true`, which
/// updates `base`'s map key by key (one level, the marker removed).
pub fn update(base: &Tagged, other: &Tagged) -> Tagged {
    let mut out = base.clone();
    let (Node::Map(_), Node::Map(entries)) = (&base.node, &other.node) else {
        return other.clone();
    };
    for (key, new) in entries {
        let merged = match base.get(key) {
            None => new.clone(),
            Some(old) if old.is_empty() => new.clone(),
            Some(old) if new.is_empty() => old.clone(),
            Some(old) => update_value(old, new),
        };
        out.set(key, merged);
    }
    out
}

fn update_value(old: &Tagged, new: &Tagged) -> Tagged {
    match (&old.node, &new.node) {
        (Node::List(_), _) | (_, Node::List(_)) => {
            let as_items = |t: &Tagged| match &t.node {
                Node::List(items) => items.clone(),
                _ => vec![t.clone()],
            };
            let mut items = Vec::new();
            for item in as_items(new) {
                if item.is_base_marker() {
                    items.extend(as_items(old));
                } else {
                    items.push(item);
                }
            }
            Tagged {
                node: Node::List(items),
                source: new.source,
            }
        }
        (Node::Map(old_entries), Node::Map(new_entries)) if is_update(new) => {
            let mut out = Tagged {
                node: Node::Map(old_entries.clone()),
                source: old.source,
            };
            for (k, v) in new_entries.iter().filter(|(k, _)| k != UPDATE_MARKER) {
                out.set(k, v.clone());
            }
            out
        }
        _ => strip_update_marker(new),
    }
}

fn is_update(t: &Tagged) -> bool {
    matches!(
        t.get(UPDATE_MARKER),
        Some(Tagged {
            node: Node::Leaf(Value::Bool(true)),
            ..
        })
    )
}

fn strip_update_marker(t: &Tagged) -> Tagged {
    match &t.node {
        Node::Map(entries) => Tagged {
            node: Node::Map(
                entries
                    .iter()
                    .filter(|(k, _)| k != UPDATE_MARKER)
                    .cloned()
                    .collect(),
            ),
            source: t.source,
        },
        _ => t.clone(),
    }
}

/// Removes the markers of the update rule left at the top of a layered config (in the first
/// layer there is nothing to update or to take the base from).
pub(crate) fn strip_markers(t: &mut Tagged) {
    if let Node::Map(entries) = &mut t.node {
        entries.retain(|(k, _)| k != UPDATE_MARKER);
        for (_, v) in entries.iter_mut() {
            match &mut v.node {
                Node::Map(inner) => inner.retain(|(k, _)| k != UPDATE_MARKER),
                Node::List(items) => items.retain(|i| !i.is_base_marker()),
                Node::Leaf(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn updated(c1: &Value, c2: &Value) -> Value {
        update(&Tagged::new(c1, 0), &Tagged::new(c2, 1)).to_value()
    }

    /// spec §4, the whole table.
    #[test]
    fn nucleus7_update_rule() {
        let c1 = json!({
            "config1": {"a": 10, "b": {"b1": [1, 2], "b2": [1]}, "c": [1]},
            "config3": [{"a": 1, "b": 2}, {"d": 5}],
            "config4": {"c": 10},
            "config5": {"bar": 5},
            "config6": {"a": 5, "c": 1}
        });
        let table = [
            (
                json!([{"d": 10}, {"e": -10}]),
                json!([{"d": 10}, {"e": -10}]),
            ),
            (
                json!(["__BASE__", {"d": 10}, {"e": -10}]),
                json!([{"a": 1, "b": 2}, {"d": 5}, {"d": 10}, {"e": -10}]),
            ),
            (
                json!([{"d": 10}, "__BASE__", {"e": -10}]),
                json!([{"d": 10}, {"a": 1, "b": 2}, {"d": 5}, {"e": -10}]),
            ),
            (
                json!([{"d": 10}, {"e": -10}, "__BASE__"]),
                json!([{"d": 10}, {"e": -10}, {"a": 1, "b": 2}, {"d": 5}]),
            ),
        ];
        let before = c1.clone();
        for (x, y) in table {
            let c2 = json!({
                "config1": {"a": 20, "b": null},
                "config2": [{"bar": 1, "foo": 20}],
                "config5": ["__BASE__", {"foo": 5}],
                "config6": {"__UPDATE_CONFIG__": true, "c": 20},
                "config3": x
            });
            let c2_before = c2.clone();
            let got = updated(&c1, &c2);
            let want = json!({
                "config1": {"a": 20, "b": null},
                "config2": [{"bar": 1, "foo": 20}],
                "config4": {"c": 10},
                "config5": [{"bar": 5}, {"foo": 5}],
                "config6": {"a": 5, "c": 20},
                "config3": y
            });
            // Key order differs between the two (new keys are appended); compare as maps.
            assert_eq!(
                got.as_object()
                    .unwrap()
                    .clone()
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
                want.as_object()
                    .unwrap()
                    .clone()
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
                "X = {}",
                c2_before["config3"]
            );
            assert_eq!(c2, c2_before, "inputs are not mutated");
        }
        assert_eq!(c1, before, "inputs are not mutated");
    }

    #[test]
    fn empty_values_and_falsy_values() {
        // Empty in base: other's value; empty in other: base's value.
        assert_eq!(
            updated(&json!({"a": null, "b": [1]}), &json!({"a": 3, "b": []})),
            json!({"a": 3, "b": [1]})
        );
        // `0` and `false` are values here, not "empty" as in Python.
        assert_eq!(
            updated(&json!({"a": 1, "b": true}), &json!({"a": 0, "b": false})),
            json!({"a": 0, "b": false})
        );
        // A scalar layered on a list is wrapped.
        assert_eq!(
            updated(&json!({"a": [1, 2]}), &json!({"a": ["__BASE__", 3]})),
            json!({"a": [1, 2, 3]})
        );
        assert_eq!(
            updated(&json!({"a": 1}), &json!({"a": ["__BASE__", 2]})),
            json!({"a": [1, 2]})
        );
    }

    #[test]
    fn sources_follow_the_values() {
        let c1 = Tagged::new(&json!({"l": [1], "m": {"x": 1, "y": 2}}), 0);
        let c2 = Tagged::new(
            &json!({"l": ["__BASE__", 2], "m": {"__UPDATE_CONFIG__": true, "y": 3}}),
            1,
        );
        let u = update(&c1, &c2);
        let text = u.explain(&|s| format!("s{s}"));
        assert_eq!(
            text,
            "l[0] = 1  (s0)\nl[1] = 2  (s1)\nm.x = 1  (s0)\nm.y = 3  (s1)\n"
        );
    }
}
