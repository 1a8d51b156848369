//! Key mapping: nucleus7's rules for renaming, copying, nesting and dropping the keys that
//! inbound nucleotides generate, and for collapsing several inbound outputs into one input.
//!
//! A [`KeysMapping`] is what a config says. It is compiled once into a [`RoutePlan`], a trie of
//! rule levels per inbound node; running the plan walks the inbound outputs level by level and
//! never parses or joins key strings. Subtrees that no rule reaches inside are moved whole.
//!
//! The semantics, per inbound node (see `shared/spec/nucleus7-cases.md` §2):
//! 1. every rule whose key equals a level of a flat key (`a`, `a:b`, ...) fires, replacing that
//!    level by its target; several rules copy the value; the target `_` drops it;
//! 2. only when no rule fired, the deepest wildcard `p:*` (or `*`) above the key applies;
//! 3. otherwise the key is kept;
//! 4. levels whose keys are numbers become lists; then the per-node results are collapsed.

use std::collections::HashSet;
use std::fmt;

use burn::prelude::Backend;

use crate::nest::{Builder, Nest, NestError, SEPARATOR, Segment};

mod route;
pub use route::*;

/// The level that matches every key below a prefix (`*`, `features:*`).
pub const WILDCARD: &str = "*";
/// The target that drops a key.
pub const DROP: &str = "_";

/// A nucleotide's `incoming_keys_mapping` as written in its config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeysMapping {
    /// Rules per inbound node name, in config order: `(old key, new key)`.
    pub nodes: Vec<(String, Vec<(String, String)>)>,
    /// The top-level `"*": target` rule, added to every inbound node without its own `*`.
    pub all_nodes: Option<String>,
}

/// A mapping that cannot be compiled or a routing step that fails.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    /// A rule is malformed.
    #[error("invalid mapping rule `{key}` -> `{target}` for inbound node `{node}`: {reason}")]
    BadRule {
        /// The inbound node the rule is for.
        node: String,
        /// The rule's key.
        key: String,
        /// The rule's target.
        target: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The mapping's JSON has the wrong shape.
    #[error("invalid incoming keys mapping at `{path}`: {reason}")]
    BadShape {
        /// Where in the mapping.
        path: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Two inbound nodes give the same key and the values cannot be combined.
    #[error("cannot collapse key `{key}` from inbound nodes {nodes}: {reason}")]
    Collapse {
        /// The key.
        key: String,
        /// The inbound nodes that gave it, as a list.
        nodes: String,
        /// Why.
        reason: String,
    },
    /// Placing a routed value failed.
    #[error("routing the output of inbound node `{node}`: {source}")]
    Nest {
        /// The inbound node.
        node: String,
        /// The structural problem.
        source: NestError,
    },
}

impl KeysMapping {
    /// Reads `{"node": {"old": "new", "nested": {"old": "new"}}, "*": "target"}`. Nested rule
    /// maps are flattened with `:`, so `{"a": {"b": "c"}}` is the rule `a:b` -> `c`.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, MappingError> {
        let obj = value.as_object().ok_or_else(|| MappingError::BadShape {
            path: String::new(),
            reason: "expected a map from inbound node names to their rules".into(),
        })?;
        let mut mapping = KeysMapping::default();
        for (node, rules) in obj {
            if node == WILDCARD {
                let target = rules.as_str().ok_or_else(|| MappingError::BadShape {
                    path: WILDCARD.into(),
                    reason: "the top-level `*` rule takes a target key string, such as `\"_\"`"
                        .into(),
                })?;
                mapping.all_nodes = Some(target.to_owned());
                continue;
            }
            let mut flat = Vec::new();
            flatten_rules(rules, node, String::new(), &mut flat)?;
            mapping.nodes.push((node.clone(), flat));
        }
        Ok(mapping)
    }

    /// The rules for one inbound node, or an empty list.
    pub fn rules_for(&self, node: &str) -> &[(String, String)] {
        self.nodes
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, r)| r.as_slice())
            .unwrap_or(&[])
    }

    /// The names of the nodes that have rules.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|(n, _)| n.as_str())
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.nodes.iter().all(|(_, r)| r.is_empty()) && self.all_nodes.is_none()
    }
}

fn flatten_rules(
    value: &serde_json::Value,
    node: &str,
    prefix: String,
    out: &mut Vec<(String, String)>,
) -> Result<(), MappingError> {
    let obj = value.as_object().ok_or_else(|| MappingError::BadShape {
        path: if prefix.is_empty() {
            node.to_owned()
        } else {
            format!("{node} / {prefix}")
        },
        reason: "expected a map from generated keys to new keys".into(),
    })?;
    for (key, target) in obj {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}{SEPARATOR}{key}")
        };
        match target {
            serde_json::Value::String(t) => out.push((key, t.clone())),
            serde_json::Value::Object(_) => flatten_rules(target, node, key, out)?,
            other => {
                return Err(MappingError::BadShape {
                    path: format!("{node} / {key}"),
                    reason: format!("a rule's target is a key string, got `{other}`"),
                });
            }
        }
    }
    Ok(())
}

/// Where a rule sends a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `_`: the key is dropped.
    Drop,
    /// The levels that replace the matched prefix.
    To(Vec<Segment>),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Drop => f.write_str(DROP),
            Target::To(segments) => f.write_str(&join_segments(segments)),
        }
    }
}

/// Joins segments with `:`.
pub(crate) fn join_segments(segments: &[Segment]) -> String {
    let parts: Vec<String> = segments.iter().map(Segment::to_string).collect();
    parts.join(&SEPARATOR.to_string())
}

/// One level of the rule trie.
#[derive(Debug, Default, Clone)]
struct TrieNode {
    /// Children by level text (map keys and numeric list indices alike).
    children: Vec<(String, usize)>,
    /// Children whose level text is a number, for list elements: `(index, child)`.
    index_children: Vec<(usize, usize)>,
    /// The rule whose key ends at this level.
    explicit: Option<Target>,
    /// The `prefix:*` rule at this level.
    wildcard: Option<Target>,
}

/// The compiled rules for one inbound node.
#[derive(Debug, Clone)]
pub struct NodeRules {
    nodes: Vec<TrieNode>,
}

const ROOT: usize = 0;

impl NodeRules {
    /// Compiles rules for `node`; each malformed rule is an error naming it and the fix.
    pub fn compile(node: &str, rules: &[(String, String)]) -> Result<NodeRules, Vec<MappingError>> {
        let mut trie = NodeRules {
            nodes: vec![TrieNode::default()],
        };
        let mut errors = Vec::new();
        for (key, target) in rules {
            if let Err(reason) = trie.add(key, target) {
                errors.push(MappingError::BadRule {
                    node: node.to_owned(),
                    key: key.clone(),
                    target: target.clone(),
                    reason,
                });
            }
        }
        if errors.is_empty() {
            Ok(trie)
        } else {
            Err(errors)
        }
    }

    fn add(&mut self, key: &str, target: &str) -> Result<(), String> {
        let target = parse_target(target)?;
        let levels: Vec<&str> = key.split(SEPARATOR).collect();
        if levels.iter().any(|l| l.is_empty()) {
            return Err("the key has an empty level; separate levels with a single `:`".into());
        }
        let (last, parents) = levels.split_last().expect("split gives at least one level");
        if parents.contains(&WILDCARD) {
            return Err("`*` may only be the last level of a key, as in `features:*`".into());
        }
        let mut at = ROOT;
        for level in parents {
            at = self.child_or_insert(at, level);
        }
        if *last == WILDCARD {
            self.nodes[at].wildcard = Some(target);
        } else {
            let leaf = self.child_or_insert(at, last);
            self.nodes[leaf].explicit = Some(target);
        }
        Ok(())
    }

    fn child_or_insert(&mut self, at: usize, level: &str) -> usize {
        if let Some(child) = self.child_by_name(at, level) {
            return child;
        }
        let child = self.nodes.len();
        self.nodes.push(TrieNode::default());
        self.nodes[at].children.push((level.to_owned(), child));
        if let Segment::Index(i) = Segment::parse(level) {
            self.nodes[at].index_children.push((i, child));
        }
        child
    }

    fn child_by_name(&self, at: usize, level: &str) -> Option<usize> {
        self.nodes[at]
            .children
            .iter()
            .find(|(l, _)| l == level)
            .map(|(_, c)| *c)
    }

    fn child_by_index(&self, at: usize, index: usize) -> Option<usize> {
        self.nodes[at]
            .index_children
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, c)| *c)
    }

    fn has_children(&self, at: usize) -> bool {
        !self.nodes[at].children.is_empty()
    }

    /// Adds the `*` rule shared by all inbound nodes, unless this node has its own.
    fn add_default_wildcard(&mut self, target: &Target) {
        if self.nodes[ROOT].wildcard.is_none() {
            self.nodes[ROOT].wildcard = Some(target.clone());
        }
    }

    /// Whether no rule is present: the node's output passes through unchanged.
    pub fn is_empty(&self) -> bool {
        let root = &self.nodes[ROOT];
        root.children.is_empty() && root.wildcard.is_none()
    }
}

fn parse_target(target: &str) -> Result<Target, String> {
    if target == DROP {
        return Ok(Target::Drop);
    }
    let levels: Vec<&str> = target.split(SEPARATOR).collect();
    if levels.iter().any(|l| l.is_empty()) {
        return Err(
            "the target has an empty level; use `_` to drop a key, or a key like `a:b`".into(),
        );
    }
    if levels.contains(&WILDCARD) {
        return Err("a target cannot contain `*`; wildcards belong on the key side".into());
    }
    Ok(Target::To(levels.into_iter().map(Segment::parse).collect()))
}

/// The most rules that may fire on the levels of one key.
const MAX_FIRED: usize = 8;

/// The rules in force at one position of a walk: those that fired on the path so far, and the
/// deepest wildcard above it.
#[derive(Clone, Copy)]
struct Position<'r> {
    /// The trie node the path has reached, if rules continue below.
    cursor: Option<usize>,
    /// Rules fired on the way down, as `(depth after the matched level, target)`; at most one per
    /// level, so a small fixed array avoids allocating.
    fired: [Option<(usize, &'r Target)>; MAX_FIRED],
    /// More fired rules than fit in `fired`: an error when the key is emitted.
    overflow: bool,
    /// The deepest wildcard above, as `(depth of its prefix, target)`.
    wildcard: Option<(usize, &'r Target)>,
}

impl<'r> Position<'r> {
    fn start(rules: &'r NodeRules) -> Self {
        Position {
            cursor: Some(ROOT),
            fired: [None; MAX_FIRED],
            overflow: false,
            wildcard: rules.nodes[ROOT].wildcard.as_ref().map(|t| (0, t)),
        }
    }

    /// The position one level down, at `depth` (the number of levels now on the path).
    fn descend(mut self, rules: &'r NodeRules, child: Option<usize>, depth: usize) -> Self {
        self.cursor = child;
        if let Some(c) = child {
            let node = &rules.nodes[c];
            if let Some(t) = &node.explicit {
                match self.fired.iter_mut().find(|f| f.is_none()) {
                    Some(slot) => *slot = Some((depth, t)),
                    None => self.overflow = true,
                }
            }
            if let Some(t) = &node.wildcard {
                self.wildcard = Some((depth, t));
            }
        }
        self
    }

    /// Whether every key below this position resolves the same way, so a subtree can move whole.
    fn settled(&self, rules: &NodeRules) -> bool {
        self.cursor.is_none_or(|c| !rules.has_children(c))
    }

    /// Calls `emit(target prefix, depth)` for each place the value at this position goes: the
    /// value's path with its first `depth` levels replaced by the prefix. Dropped values emit
    /// nothing.
    fn resolve(&self, mut emit: impl FnMut(&'r [Segment], usize)) {
        let mut any = false;
        for (depth, target) in self.fired.iter().flatten() {
            any = true;
            if let Target::To(t) = target {
                emit(t, *depth);
            }
        }
        if any {
            return;
        }
        match self.wildcard {
            Some((_, Target::Drop)) => {}
            Some((depth, Target::To(t))) => emit(t, depth),
            None => emit(&[], 0),
        }
    }
}

/// Values of one key, with the inbound node each came from.
type FromNodes<'a, B> = Vec<(&'a str, Nest<B>)>;

/// Collapses the remapped outputs of several inbound nodes, key by key in node order: lists are
/// concatenated, maps merged (a key in two maps is an error), a list and a map together are an
/// error, and other values become a list of them.
pub fn collapse<B: Backend>(inputs: FromNodes<'_, B>) -> Result<Nest<B>, MappingError> {
    let mut by_key: Vec<(String, FromNodes<'_, B>)> = Vec::new();
    for (node, input) in inputs {
        let Nest::Map(m) = input else {
            return Err(MappingError::Collapse {
                key: String::new(),
                nodes: format!("`{node}`"),
                reason: format!("the output is a {}, not a map of keys", input.describe()),
            });
        };
        for (k, v) in m {
            match by_key.iter_mut().find(|(key, _)| *key == k) {
                Some((_, values)) => values.push((node, v)),
                None => by_key.push((k, vec![(node, v)])),
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for (key, mut values) in by_key {
        let value = if values.len() == 1 {
            values.pop().map(|(_, v)| v).expect("one value")
        } else {
            collapse_values(&key, values)?
        };
        out.insert(key, value);
    }
    Ok(Nest::Map(out))
}

fn collapse_values<B: Backend>(
    key: &str,
    values: Vec<(&str, Nest<B>)>,
) -> Result<Nest<B>, MappingError> {
    let all_lists = values.iter().all(|(_, v)| matches!(v, Nest::List(_)));
    let all_maps = values.iter().all(|(_, v)| matches!(v, Nest::Map(_)));
    let any_list = values.iter().any(|(_, v)| matches!(v, Nest::List(_)));
    let any_map = values.iter().any(|(_, v)| matches!(v, Nest::Map(_)));
    let nodes = crate::suggest::list(values.iter().map(|(n, _)| *n));
    if all_lists {
        let mut out = Vec::new();
        for (_, v) in values {
            if let Nest::List(l) = v {
                out.extend(l);
            }
        }
        return Ok(Nest::List(out));
    }
    if all_maps {
        let mut out = std::collections::BTreeMap::new();
        let mut owner: Vec<(String, &str)> = Vec::new();
        for (node, v) in values {
            if let Nest::Map(m) = v {
                for (k, inner) in m {
                    if let Some((_, first)) = owner.iter().find(|(o, _)| *o == k) {
                        return Err(MappingError::Collapse {
                            key: format!("{key}{SEPARATOR}{k}"),
                            nodes,
                            reason: format!(
                                "both `{first}` and `{node}` generate it; map one of them to another key or drop it with `_`"
                            ),
                        });
                    }
                    owner.push((k.clone(), node));
                    out.insert(k, inner);
                }
            }
        }
        return Ok(Nest::Map(out));
    }
    if any_list && any_map {
        return Err(MappingError::Collapse {
            key: key.to_owned(),
            nodes,
            reason: "some give a list and some a map, which cannot be combined; map them to different keys".into(),
        });
    }
    Ok(Nest::List(values.into_iter().map(|(_, v)| v).collect()))
}

#[cfg(test)]
mod tests;
