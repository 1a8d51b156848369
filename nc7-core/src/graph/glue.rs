//! The glue between a graph's `Nest` values and a nucleotide's typed key structs.
//!
//! `#[derive(Incoming)]` and `#[derive(Generated)]` implement [`Keys`] for a struct with one
//! field per key; what each field's type means (its kind, rank, whether it is optional, nested
//! or dynamic) comes from its [`Field`] implementation here, never from how the type is spelt.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use burn::prelude::Backend;
use burn::tensor::{Bool, Float, Int, Tensor};

use crate::keys::{KeySpec, Signature, ValueKind};
use crate::nest::{Nest, SEPARATOR};
use crate::suggest;

/// A struct whose fields are keys: what `#[derive(Incoming)]` and `#[derive(Generated)]`
/// implement.
pub trait Keys<B: Backend>: Sized {
    /// The keys, one per field, in declaration order (nested structs as nested keys).
    const KEYS: &'static [KeySpec];
    /// Whether a field takes or gives keys beyond the declared ones (a `Nest<B>` field).
    const DYNAMIC: bool;

    /// Builds the struct from a map of keys; `at` names the nucleotide, for errors.
    fn from_nest(nest: Nest<B>, at: &At<'_>) -> Result<Self, GlueError>;

    /// Turns the struct into a map of keys; absent optional keys are left out.
    fn into_nest(self) -> Nest<B>;
}

/// A nucleotide's incoming keys, as a struct (`#[derive(Incoming)]`).
pub trait Incoming<B: Backend>: Keys<B> {}

/// A nucleotide's generated keys, as a struct (`#[derive(Generated)]`).
pub trait Generated<B: Backend>: Keys<B> {}

/// No keys: the input of a nucleotide that reads nothing, or the output of one that writes
/// nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoKeys;

impl<B: Backend> Keys<B> for NoKeys {
    const KEYS: &'static [KeySpec] = &[];
    const DYNAMIC: bool = false;
    fn from_nest(nest: Nest<B>, at: &At<'_>) -> Result<Self, GlueError> {
        ignore_extra(&nest, at);
        Ok(NoKeys)
    }
    fn into_nest(self) -> Nest<B> {
        Nest::map()
    }
}
impl<B: Backend> Incoming<B> for NoKeys {}
impl<B: Backend> Generated<B> for NoKeys {}

/// The signature of a pair of key structs.
pub fn signature_of<B: Backend, I: Keys<B>, O: Keys<B>>() -> Signature {
    Signature::from_keys(I::KEYS, I::DYNAMIC, O::KEYS, O::DYNAMIC)
}

/// Where a value is: the nucleotide and the key path, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    nucleotide: &'a str,
    parent: Option<&'a At<'a>>,
    key: &'a str,
}

impl<'a> At<'a> {
    /// The top of a nucleotide's inputs or outputs.
    pub fn nucleotide(nucleotide: &'a str) -> Self {
        At {
            nucleotide,
            parent: None,
            key: "",
        }
    }

    /// A key below this one.
    pub fn key(&'a self, key: &'a str) -> At<'a> {
        At {
            nucleotide: self.nucleotide,
            parent: Some(self),
            key,
        }
    }

    /// The full key path, levels joined with `:`.
    pub fn path(&self) -> String {
        let mut levels = Vec::new();
        let mut at = Some(self);
        while let Some(a) = at {
            if !a.key.is_empty() {
                levels.push(a.key);
            }
            at = a.parent;
        }
        levels.reverse();
        levels.join(&SEPARATOR.to_string())
    }

    /// The nucleotide's name.
    pub fn nucleotide_name(&self) -> &str {
        self.nucleotide
    }

    fn error(&self, problem: Problem) -> GlueError {
        GlueError {
            nucleotide: self.nucleotide.to_owned(),
            key: self.path(),
            problem,
        }
    }
}

/// A value that does not fit the key struct it is meant for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.render())]
pub struct GlueError {
    /// The nucleotide.
    pub nucleotide: String,
    /// The key path (empty for the whole input).
    pub key: String,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A required key is absent; the keys that are there, and a suggestion.
    Missing {
        /// The keys present at that level.
        present: Vec<String>,
    },
    /// The value has the wrong kind.
    Mismatch {
        /// What the field expects.
        expected: String,
        /// What arrived.
        got: String,
    },
}

impl GlueError {
    fn render(&self) -> String {
        let key = self.key.rsplit(SEPARATOR).next().unwrap_or(&self.key);
        match &self.problem {
            Problem::Missing { present } => format!(
                "missing required key `{}` for nucleotide `{}`; present: {}{}",
                self.key,
                self.nucleotide,
                suggest::list(present),
                suggest::hint(key, present.iter().map(String::as_str))
            ),
            Problem::Mismatch { expected, got } if self.key.is_empty() => format!(
                "inputs of nucleotide `{}`: expected {expected}, got {got}",
                self.nucleotide
            ),
            Problem::Mismatch { expected, got } => format!(
                "key `{}` of nucleotide `{}`: expected {expected}, got {got}",
                self.key, self.nucleotide
            ),
        }
    }
}

/// A type that can be a key's value: what a field of an `Incoming` or `Generated` struct may be.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the type of a nucleotide key",
    label = "not a key type",
    note = "key fields are burn tensors (`Tensor<B, D>`, `Tensor<B, D, Int>`, `Tensor<B, D, Bool>`), \
            `f64`, `f32`, `i64`, `i32`, `bool`, `String`, `Vec<T>` of key types, `Option<T>` for an \
            optional key, a struct deriving `Incoming` or `Generated` for nested keys, `AnyValue<B>` \
            for a value of any kind, or `Nest<B>` for dynamic keys"
)]
pub trait Field<B: Backend>: Sized {
    /// The kind of value the key holds.
    const KIND: ValueKind;
    /// Whether the key may be absent.
    const OPTIONAL: bool = false;
    /// Whether the field takes every key no other field takes (`Nest<B>`).
    const DYNAMIC: bool = false;
    /// The keys inside, for nested structs.
    const CHILDREN: &'static [KeySpec] = &[];

    /// Converts the value at `at` (`None` when the key is absent).
    fn from_value(value: Option<Nest<B>>, at: &At<'_>) -> Result<Self, GlueError>;

    /// Converts back; `None` leaves the key out.
    fn into_value(self) -> Option<Nest<B>>;
}

/// The key's declaration, from a field's type: used by the derives in `const` context.
pub const fn key_spec<B: Backend, T: Field<B>>(name: &'static str, doc: &'static str) -> KeySpec {
    KeySpec {
        name: Cow::Borrowed(name),
        optional: T::OPTIONAL,
        kind: T::KIND,
        doc: Cow::Borrowed(doc),
        children: T::CHILDREN,
    }
}

fn present_keys<B: Backend>(map: &BTreeMap<String, Nest<B>>) -> Vec<String> {
    map.keys().cloned().collect()
}

/// Opens a nest as the map of keys a struct reads.
pub fn open_map<B: Backend>(
    nest: Nest<B>,
    at: &At<'_>,
) -> Result<BTreeMap<String, Nest<B>>, GlueError> {
    match nest {
        Nest::Map(m) => Ok(m),
        other => Err(at.error(Problem::Mismatch {
            expected: "a map of keys".into(),
            got: other.describe(),
        })),
    }
}

/// Takes one field's key out of the map.
pub fn take_field<B: Backend, T: Field<B>>(
    map: &mut BTreeMap<String, Nest<B>>,
    key: &str,
    at: &At<'_>,
) -> Result<T, GlueError> {
    let value = map.remove(key);
    if value.is_none() && !T::OPTIONAL {
        return Err(at.key(key).error(Problem::Missing {
            present: present_keys(map),
        }));
    }
    T::from_value(value, &at.key(key))
}

/// Gives a dynamic field everything no other field took, or logs and drops the extra keys.
pub fn take_rest<B: Backend>(map: BTreeMap<String, Nest<B>>) -> Nest<B> {
    Nest::Map(map)
}

/// Logs keys that no field takes, as nucleus7 drops them: they are not errors.
pub fn ignore_extra<B: Backend>(nest: &Nest<B>, at: &At<'_>) {
    if let Nest::Map(m) = nest
        && !m.is_empty()
    {
        log::debug!(
            "nucleotide `{}` ignores keys it does not take: {}",
            at.nucleotide_name(),
            suggest::list(m.keys())
        );
    }
}

/// Puts one field's value into a map of keys; dynamic fields merge their keys in.
pub fn put_field<B: Backend, T: Field<B>>(
    map: &mut BTreeMap<String, Nest<B>>,
    key: &str,
    value: T,
) {
    match value.into_value() {
        Some(Nest::Map(m)) if T::DYNAMIC => map.extend(m),
        Some(v) => {
            map.insert(key.to_owned(), v);
        }
        None => {}
    }
}

fn mismatch<B: Backend>(at: &At<'_>, expected: ValueKind, got: &Nest<B>) -> GlueError {
    at.error(Problem::Mismatch {
        expected: expected.to_string(),
        got: got.describe_kind(),
    })
}

fn required<B: Backend>(value: Option<Nest<B>>, at: &At<'_>) -> Result<Nest<B>, GlueError> {
    value.ok_or_else(|| {
        at.error(Problem::Missing {
            present: Vec::new(),
        })
    })
}

impl<B: Backend> Nest<B> {
    /// What kind of value this is, in the words of [`ValueKind`]: `int tensor of rank 3`.
    pub fn describe_kind(&self) -> String {
        match self {
            Nest::Tensor(t) => format!("{} tensor of rank {}", t.kind(), t.rank()),
            Nest::Map(_) => ValueKind::Nested.to_string(),
            Nest::List(_) => ValueKind::List.to_string(),
            Nest::Float(_) => ValueKind::Float.to_string(),
            Nest::Int(_) => ValueKind::Int.to_string(),
            Nest::Bool(_) => ValueKind::Bool.to_string(),
            Nest::Str(_) => ValueKind::Str.to_string(),
        }
    }
}

macro_rules! tensor_field {
    ($kind:ty, $ctor:ident) => {
        impl<B: Backend, const D: usize> Field<B> for Tensor<B, D, $kind> {
            const KIND: ValueKind = ValueKind::$ctor(D);
            fn from_value(value: Option<Nest<B>>, at: &At<'_>) -> Result<Self, GlueError> {
                let value = required(value, at)?;
                value
                    .into_tensor::<D, $kind>()
                    .map_err(|v| mismatch(at, <Self as Field<B>>::KIND, &v))
            }
            fn into_value(self) -> Option<Nest<B>> {
                Some(self.into())
            }
        }
    };
}
tensor_field!(Float, float);
tensor_field!(Int, int);
tensor_field!(Bool, bool);

macro_rules! scalar_field {
    ($t:ty, $kind:ident, $variant:ident, |$v:ident| $from:expr, |$w:ident| $to:expr) => {
        impl<B: Backend> Field<B> for $t {
            const KIND: ValueKind = ValueKind::$kind;
            fn from_value(value: Option<Nest<B>>, at: &At<'_>) -> Result<Self, GlueError> {
                match required(value, at)? {
                    // The conversion fails only when the value does not fit; its error says how.
                    Nest::$variant($v) => $from.map_err(|got: String| {
                        at.error(Problem::Mismatch {
                            expected: <Self as Field<B>>::KIND.to_string(),
                            got,
                        })
                    }),
                    other => Err(mismatch(at, <Self as Field<B>>::KIND, &other)),
                }
            }
            fn into_value(self) -> Option<Nest<B>> {
                let $w = self;
                Some(Nest::$variant($to))
            }
        }
    };
}
scalar_field!(f64, Float, Float, |v| Ok(v), |w| w);
scalar_field!(f32, Float, Float, |v| Ok(v as f32), |w| f64::from(w));
scalar_field!(i64, Int, Int, |v| Ok(v), |w| w);
scalar_field!(
    i32,
    Int,
    Int,
    |v| i32::try_from(v).map_err(|_| format!("{v}, which does not fit in 32 bits")),
    |w| i64::from(w)
);
scalar_field!(bool, Bool, Bool, |v| Ok(v), |w| w);
scalar_field!(String, Str, Str, |v| Ok(v), |w| w);

impl<B: Backend, T: Field<B>> Field<B> for Option<T> {
    const KIND: ValueKind = T::KIND;
    const OPTIONAL: bool = true;
    const DYNAMIC: bool = T::DYNAMIC;
    const CHILDREN: &'static [KeySpec] = T::CHILDREN;
    fn from_value(value: Option<Nest<B>>, at: &At<'_>) -> Result<Self, GlueError> {
        match value {
            None => Ok(None),
            some => T::from_value(some, at).map(Some),
        }
    }
    fn into_value(self) -> Option<Nest<B>> {
        self.and_then(T::into_value)
    }
}

impl<B: Backend, T: Field<B>> Field<B> for Vec<T> {
    const KIND: ValueKind = ValueKind::List;
    fn from_value(value: Option<Nest<B>>, at: &At<'_>) -> Result<Self, GlueError> {
        match required(value, at)? {
            Nest::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let index = i.to_string();
                    out.push(T::from_value(Some(item), &at.key(&index))?);
                }
                Ok(out)
            }
            other => Err(mismatch(at, <Self as Field<B>>::KIND, &other)),
        }
    }
    fn into_value(self) -> Option<Nest<B>> {
        Some(Nest::List(
            self.into_iter().filter_map(T::into_value).collect(),
        ))
    }
}

/// Every key no other field of the struct takes: the way to accept or emit dynamic keys.
impl<B: Backend> Field<B> for Nest<B> {
    const KIND: ValueKind = ValueKind::Nested;
    const DYNAMIC: bool = true;
    fn from_value(value: Option<Nest<B>>, _at: &At<'_>) -> Result<Self, GlueError> {
        Ok(value.unwrap_or_else(Nest::map))
    }
    fn into_value(self) -> Option<Nest<B>> {
        Some(self)
    }
}

/// A key whose value may be of any kind.
#[derive(Clone, PartialEq)]
pub struct AnyValue<B: Backend>(pub Nest<B>);

impl<B: Backend> fmt::Debug for AnyValue<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<B: Backend> Field<B> for AnyValue<B> {
    const KIND: ValueKind = ValueKind::Any;
    fn from_value(value: Option<Nest<B>>, at: &At<'_>) -> Result<Self, GlueError> {
        required(value, at).map(AnyValue)
    }
    fn into_value(self) -> Option<Nest<B>> {
        Some(self.0)
    }
}

/// Nested keys: a struct deriving `Incoming` or `Generated` as the type of a field.
pub fn nested_from_value<B: Backend, T: Keys<B>>(
    value: Option<Nest<B>>,
    at: &At<'_>,
) -> Result<T, GlueError> {
    T::from_nest(required(value, at)?, at)
}

/// Builds a nested key struct's map: the other half of [`nested_from_value`].
pub fn nested_into_value<B: Backend, T: Keys<B>>(value: T) -> Option<Nest<B>> {
    Some(value.into_nest())
}
