//! Key signatures: the named incoming and generated keys of a nucleotide.
//!
//! A signature is plain data that can live in a `const` (the `#[nucleotide]` macro emits it
//! that way) or be built at run time (from configs, tests, or nucleus7-style key lists).

use std::borrow::Cow;
use std::fmt;

use burn::prelude::Backend;

use crate::nest::{Nest, TensorDtype};

/// What a key's value is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// A tensor of a given element kind; `rank: None` accepts any rank.
    Tensor {
        /// Float, int or bool.
        dtype: TensorDtype,
        /// The number of dimensions, or `None` for any.
        rank: Option<usize>,
    },
    /// A float scalar.
    Float,
    /// An integer scalar.
    Int,
    /// A boolean scalar.
    Bool,
    /// A string.
    Str,
    /// A list of values.
    List,
    /// A nested map with its own keys.
    Nested,
    /// Anything.
    Any,
}

impl ValueKind {
    /// A float tensor of the given rank.
    pub const fn float(rank: usize) -> Self {
        ValueKind::Tensor {
            dtype: TensorDtype::Float,
            rank: Some(rank),
        }
    }

    /// An int tensor of the given rank.
    pub const fn int(rank: usize) -> Self {
        ValueKind::Tensor {
            dtype: TensorDtype::Int,
            rank: Some(rank),
        }
    }

    /// A bool tensor of the given rank.
    pub const fn bool(rank: usize) -> Self {
        ValueKind::Tensor {
            dtype: TensorDtype::Bool,
            rank: Some(rank),
        }
    }

    /// Whether a value matches this kind.
    pub fn accepts<B: Backend>(&self, value: &Nest<B>) -> bool {
        match (self, value) {
            (ValueKind::Any, _) => true,
            (ValueKind::Tensor { dtype, rank }, Nest::Tensor(t)) => {
                t.kind() == *dtype && rank.is_none_or(|r| r == t.rank())
            }
            (ValueKind::Float, Nest::Float(_))
            | (ValueKind::Int, Nest::Int(_))
            | (ValueKind::Bool, Nest::Bool(_))
            | (ValueKind::Str, Nest::Str(_))
            | (ValueKind::List, Nest::List(_))
            | (ValueKind::Nested, Nest::Map(_)) => true,
            _ => false,
        }
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueKind::Tensor {
                dtype,
                rank: Some(r),
            } => write!(f, "{dtype} tensor of rank {r}"),
            ValueKind::Tensor { dtype, rank: None } => write!(f, "{dtype} tensor of any rank"),
            ValueKind::Float => f.write_str("float"),
            ValueKind::Int => f.write_str("int"),
            ValueKind::Bool => f.write_str("bool"),
            ValueKind::Str => f.write_str("string"),
            ValueKind::List => f.write_str("list"),
            ValueKind::Nested => f.write_str("nested map"),
            ValueKind::Any => f.write_str("any value"),
        }
    }
}

/// One key of a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// The key, levels separated by `:` (`features:low`).
    pub name: Cow<'static, str>,
    /// Whether the nucleotide runs without it.
    pub optional: bool,
    /// What the value must be.
    pub kind: ValueKind,
    /// One line of documentation.
    pub doc: Cow<'static, str>,
    /// The keys inside a nested key (`features` holds `low` and `high`); empty for leaves.
    pub children: &'static [KeySpec],
}

impl KeySpec {
    /// Whether this is a field that takes every key no other field takes (a `Nest` field):
    /// nested, with no declared children.
    pub fn is_dynamic(&self) -> bool {
        self.kind == ValueKind::Nested && self.children.is_empty()
    }

    /// A required key of any kind, without docs.
    pub fn required(name: impl Into<Cow<'static, str>>) -> Self {
        KeySpec {
            name: name.into(),
            optional: false,
            kind: ValueKind::Any,
            doc: Cow::Borrowed(""),
            children: &[],
        }
    }

    /// An optional key of any kind, without docs.
    pub fn optional(name: impl Into<Cow<'static, str>>) -> Self {
        KeySpec {
            optional: true,
            ..KeySpec::required(name)
        }
    }

    /// A key written the nucleus7 way: a leading `_` marks it optional and is not part of the
    /// name (`_mask` is the optional key `mask`).
    pub fn nucleus7(written: &str) -> Self {
        match written.strip_prefix('_') {
            Some(name) => KeySpec::optional(name.to_owned()),
            None => KeySpec::required(written.to_owned()),
        }
    }

    /// Sets the expected kind.
    pub fn with_kind(mut self, kind: ValueKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the doc line.
    pub fn with_doc(mut self, doc: impl Into<Cow<'static, str>>) -> Self {
        self.doc = doc.into();
        self
    }

    /// The first level of the key: the name a nucleotide's output map holds it under.
    pub fn top_level(&self) -> &str {
        self.name.split(crate::nest::SEPARATOR).next().unwrap_or("")
    }
}

/// The keys a nucleotide takes and generates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    /// Incoming keys, as declared.
    pub incoming: Cow<'static, [KeySpec]>,
    /// Generated keys, as declared.
    pub generated: Cow<'static, [KeySpec]>,
    /// Takes keys beyond the declared ones (all routed keys are passed in).
    pub dynamic_incoming: bool,
    /// Generates keys beyond the declared ones (downstream checks cannot know them in advance).
    pub dynamic_generated: bool,
}

/// Flattens nested keys into `parent:child` keys; borrows when nothing is nested. A nested key
/// is optional when it or its parent is.
pub(crate) fn flatten_keys(keys: &'static [KeySpec]) -> Cow<'static, [KeySpec]> {
    if keys
        .iter()
        .all(|k| k.children.is_empty() && !k.is_dynamic())
    {
        return Cow::Borrowed(keys);
    }
    let mut out = Vec::new();
    flatten_into(keys, "", false, &mut out);
    Cow::Owned(out)
}

fn flatten_into(keys: &[KeySpec], prefix: &str, optional: bool, out: &mut Vec<KeySpec>) {
    for k in keys {
        let name = if prefix.is_empty() {
            k.name.to_string()
        } else {
            format!("{prefix}{}{}", crate::nest::SEPARATOR, k.name)
        };
        if k.is_dynamic() {
            // A `Nest` field takes whatever keys are left: it names no key itself.
            continue;
        }
        if k.children.is_empty() {
            out.push(KeySpec {
                name: Cow::Owned(name),
                optional: optional || k.optional,
                children: &[],
                ..k.clone()
            });
        } else {
            flatten_into(k.children, &name, optional || k.optional, out);
        }
    }
}

impl Signature {
    /// A signature from declared key trees (as the derives emit them), nested keys flattened.
    pub fn from_keys(
        incoming: &'static [KeySpec],
        dynamic_incoming: bool,
        generated: &'static [KeySpec],
        dynamic_generated: bool,
    ) -> Self {
        Signature {
            incoming: flatten_keys(incoming),
            generated: flatten_keys(generated),
            dynamic_incoming,
            dynamic_generated,
        }
    }

    /// A signature from nucleus7-style key lists (`_key` = optional).
    pub fn nucleus7(incoming: &[&str], generated: &[&str]) -> Self {
        Signature {
            incoming: incoming.iter().map(|k| KeySpec::nucleus7(k)).collect(),
            generated: generated.iter().map(|k| KeySpec::nucleus7(k)).collect(),
            dynamic_incoming: false,
            dynamic_generated: false,
        }
    }

    /// Marks incoming keys as dynamic.
    pub fn with_dynamic_incoming(mut self) -> Self {
        self.dynamic_incoming = true;
        self
    }

    /// Marks generated keys as dynamic.
    pub fn with_dynamic_generated(mut self) -> Self {
        self.dynamic_generated = true;
        self
    }

    /// Optional incoming keys, in declared order.
    pub fn optional_incoming(&self) -> impl Iterator<Item = &KeySpec> {
        self.incoming.iter().filter(|k| k.optional)
    }

    /// Required incoming keys, in declared order.
    pub fn required_incoming(&self) -> impl Iterator<Item = &KeySpec> {
        self.incoming.iter().filter(|k| !k.optional)
    }

    /// All incoming keys: optional ones first, then required ones (nucleus7's order).
    pub fn all_incoming(&self) -> impl Iterator<Item = &KeySpec> {
        self.optional_incoming().chain(self.required_incoming())
    }

    /// Optional generated keys, in declared order.
    pub fn optional_generated(&self) -> impl Iterator<Item = &KeySpec> {
        self.generated.iter().filter(|k| k.optional)
    }

    /// Required generated keys, in declared order.
    pub fn required_generated(&self) -> impl Iterator<Item = &KeySpec> {
        self.generated.iter().filter(|k| !k.optional)
    }

    /// All generated keys: optional ones first, then required ones.
    pub fn all_generated(&self) -> impl Iterator<Item = &KeySpec> {
        self.optional_generated().chain(self.required_generated())
    }

    /// The incoming key with this name.
    pub fn incoming_key(&self, name: &str) -> Option<&KeySpec> {
        self.incoming.iter().find(|k| k.name == name)
    }

    /// Whether an incoming key with this top level is declared (or incoming keys are dynamic).
    pub fn takes(&self, top_level: &str) -> bool {
        self.dynamic_incoming || self.incoming.iter().any(|k| k.top_level() == top_level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Int, Tensor};

    fn names<'a>(keys: impl Iterator<Item = &'a KeySpec>) -> Vec<&'a str> {
        keys.map(|k| k.name.as_ref()).collect()
    }

    /// spec §1: nucleus7's key classification and order.
    #[test]
    fn classification_and_order() {
        let s = Signature::nucleus7(
            &[
                "_in_optional1",
                "_in_optional2",
                "in_required1",
                "in_required2",
            ],
            &[],
        );
        assert_eq!(
            names(s.optional_incoming()),
            ["in_optional1", "in_optional2"]
        );
        assert_eq!(
            names(s.required_incoming()),
            ["in_required1", "in_required2"]
        );
        assert_eq!(
            names(s.all_incoming()),
            [
                "in_optional1",
                "in_optional2",
                "in_required1",
                "in_required2"
            ]
        );
        // Declared out of order, optional keys still come first.
        let s = Signature::nucleus7(&["a", "_b", "c", "_d"], &["_x", "y"]);
        assert_eq!(names(s.all_incoming()), ["b", "d", "a", "c"]);
        assert_eq!(names(s.all_generated()), ["x", "y"]);
    }

    #[test]
    fn kinds_accept_matching_values() {
        let device = Default::default();
        let f: Nest<NdArray> = Tensor::<NdArray, 4>::zeros([1, 1, 1, 1], &device).into();
        let i: Nest<NdArray> = Tensor::<NdArray, 3, Int>::zeros([1, 1, 1], &device).into();
        assert!(ValueKind::float(4).accepts(&f));
        assert!(!ValueKind::float(3).accepts(&f));
        assert!(!ValueKind::int(4).accepts(&f));
        assert!(ValueKind::int(3).accepts(&i));
        let any_int = ValueKind::Tensor {
            dtype: TensorDtype::Int,
            rank: None,
        };
        assert!(any_int.accepts(&i));
        assert!(ValueKind::Any.accepts(&i));
        assert!(ValueKind::Str.accepts(&Nest::<NdArray>::Str("x".into())));
        assert_eq!(ValueKind::float(4).to_string(), "float tensor of rank 4");
        assert_eq!(any_int.to_string(), "int tensor of any rank");
    }

    #[test]
    fn nested_keys_flatten_with_their_optional_flag() {
        const INNER: &[KeySpec] = &[
            KeySpec {
                name: Cow::Borrowed("low"),
                optional: false,
                kind: ValueKind::float(4),
                doc: Cow::Borrowed(""),
                children: &[],
            },
            KeySpec {
                name: Cow::Borrowed("high"),
                optional: true,
                kind: ValueKind::float(4),
                doc: Cow::Borrowed(""),
                children: &[],
            },
        ];
        const OUTER: &[KeySpec] = &[
            KeySpec {
                name: Cow::Borrowed("logits"),
                optional: false,
                kind: ValueKind::float(2),
                doc: Cow::Borrowed(""),
                children: &[],
            },
            KeySpec {
                name: Cow::Borrowed("features"),
                optional: false,
                kind: ValueKind::Nested,
                doc: Cow::Borrowed(""),
                children: INNER,
            },
        ];
        let s = Signature::from_keys(&[], false, OUTER, false);
        let flat: Vec<(&str, bool)> = s
            .generated
            .iter()
            .map(|k| (k.name.as_ref(), k.optional))
            .collect();
        assert_eq!(
            flat,
            [
                ("logits", false),
                ("features:low", false),
                ("features:high", true)
            ]
        );
        assert!(matches!(flatten_keys(INNER), Cow::Borrowed(_)));
    }

    #[test]
    fn signatures_are_const_data() {
        const KEYS: &[KeySpec] = &[KeySpec {
            name: Cow::Borrowed("images"),
            optional: false,
            kind: ValueKind::float(4),
            doc: Cow::Borrowed("input images"),
            children: &[],
        }];
        const SIG: Signature = Signature {
            incoming: Cow::Borrowed(KEYS),
            generated: Cow::Borrowed(&[]),
            dynamic_incoming: false,
            dynamic_generated: true,
        };
        assert_eq!(SIG.incoming_key("images").unwrap().doc, "input images");
        assert!(SIG.takes("images") && !SIG.takes("labels"));
    }
}
