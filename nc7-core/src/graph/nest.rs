//! `Nest`: the nested, keyed value that flows between nucleotides.
//!
//! A nest is a tree of maps (ordered by key), lists and leaves. Leaves are burn tensors of any
//! rank and kind (float, int, bool), scalars and strings. Tensors are stored as burn's
//! reference-counted primitives, so putting a tensor into a nest, moving it between nucleotides
//! and taking it out again never copies its data.

use std::collections::BTreeMap;
use std::fmt;

use burn::prelude::Backend;
use burn::tensor::{
    BasicOps, Bool, DType, Float, Int, Shape, Tensor, TensorData, TensorKind, TensorMetadata,
    TensorPrimitive,
};

mod builder;
mod tensor;
pub(crate) use builder::Builder;
pub use tensor::*;

/// Separator between the levels of a flat key: `features:low`, `outputs:0`.
pub const SEPARATOR: char = ':';

/// A nested, keyed value: what a nucleotide receives and what it generates.
pub enum Nest<B: Backend> {
    /// Named children, ordered by key.
    Map(BTreeMap<String, Nest<B>>),
    /// Ordered children, addressed by index (`outputs:0`).
    List(Vec<Nest<B>>),
    /// A float, int or bool tensor of any rank.
    Tensor(AnyTensor<B>),
    /// A floating point scalar.
    Float(f64),
    /// An integer scalar.
    Int(i64),
    /// A boolean scalar.
    Bool(bool),
    /// A string.
    Str(String),
}

impl<B: Backend> Clone for Nest<B> {
    /// Clones the tree; tensor leaves share their data with the original.
    fn clone(&self) -> Self {
        match self {
            Nest::Map(m) => Nest::Map(m.clone()),
            Nest::List(l) => Nest::List(l.clone()),
            Nest::Tensor(t) => Nest::Tensor(t.clone()),
            Nest::Float(v) => Nest::Float(*v),
            Nest::Int(v) => Nest::Int(*v),
            Nest::Bool(v) => Nest::Bool(*v),
            Nest::Str(v) => Nest::Str(v.clone()),
        }
    }
}

impl<B: Backend> fmt::Debug for Nest<B> {
    /// Shows the structure with shapes and dtypes of tensors, never their data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Nest::Map(m) => f.debug_map().entries(m.iter()).finish(),
            Nest::List(l) => f.debug_list().entries(l.iter()).finish(),
            Nest::Tensor(t) => write!(f, "<{}>", t.describe()),
            Nest::Float(v) => write!(f, "{v:?}"),
            Nest::Int(v) => write!(f, "{v}"),
            Nest::Bool(v) => write!(f, "{v}"),
            Nest::Str(v) => write!(f, "{v:?}"),
        }
    }
}

impl<B: Backend> PartialEq for Nest<B> {
    /// Structural equality. Tensors compare by kind, shape and dtype only: comparing data would
    /// need a device round trip, which equality on a routing value must never do.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Nest::Map(a), Nest::Map(b)) => a == b,
            (Nest::List(a), Nest::List(b)) => a == b,
            (Nest::Tensor(a), Nest::Tensor(b)) => {
                a.kind() == b.kind() && a.shape() == b.shape() && a.dtype() == b.dtype()
            }
            (Nest::Float(a), Nest::Float(b)) => a == b,
            (Nest::Int(a), Nest::Int(b)) => a == b,
            (Nest::Bool(a), Nest::Bool(b)) => a == b,
            (Nest::Str(a), Nest::Str(b)) => a == b,
            _ => false,
        }
    }
}

impl<B: Backend, const D: usize, K: NestTensorKind<B>> From<Tensor<B, D, K>> for Nest<B> {
    fn from(tensor: Tensor<B, D, K>) -> Self {
        Nest::Tensor(AnyTensor::new(tensor))
    }
}

impl<B: Backend> From<AnyTensor<B>> for Nest<B> {
    fn from(tensor: AnyTensor<B>) -> Self {
        Nest::Tensor(tensor)
    }
}

macro_rules! nest_from_scalar {
    ($($t:ty => $variant:ident as $as:ty),* $(,)?) => {$(
        impl<B: Backend> From<$t> for Nest<B> {
            fn from(v: $t) -> Self {
                Nest::$variant(v as $as)
            }
        }
    )*};
}
nest_from_scalar!(f64 => Float as f64, f32 => Float as f64, i64 => Int as i64, i32 => Int as i64,
    u32 => Int as i64, bool => Bool as bool);

impl<B: Backend> From<String> for Nest<B> {
    fn from(v: String) -> Self {
        Nest::Str(v)
    }
}

impl<B: Backend> From<&str> for Nest<B> {
    fn from(v: &str) -> Self {
        Nest::Str(v.to_owned())
    }
}

impl<B: Backend, T: Into<Nest<B>>> From<Vec<T>> for Nest<B> {
    fn from(v: Vec<T>) -> Self {
        Nest::List(v.into_iter().map(Into::into).collect())
    }
}

impl<B: Backend, T: Into<Nest<B>>> FromIterator<(String, T)> for Nest<B> {
    fn from_iter<I: IntoIterator<Item = (String, T)>>(iter: I) -> Self {
        Nest::Map(iter.into_iter().map(|(k, v)| (k, v.into())).collect())
    }
}

/// Why a nest operation failed; each variant names the key path it is about.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NestError {
    /// A path step does not exist.
    #[error("no value at key `{path}`{hint}")]
    Missing {
        /// The full path that was asked for.
        path: String,
        /// A "did you mean" hint, or empty.
        hint: String,
    },
    /// Two flat keys disagree about the structure: `a` is a leaf and `a:b` wants it to be a map.
    #[error(
        "key `{path}` is given both as a value and as a parent of other keys; rename one of them"
    )]
    Conflict {
        /// The path given twice.
        path: String,
    },
    /// A value cannot be turned into JSON or back.
    #[error("value at `{path}` cannot be converted: {reason}")]
    Json {
        /// The path of the value.
        path: String,
        /// Why.
        reason: String,
    },
    /// A tensor's values cannot be read (from its device, or as the element type asked for).
    #[error("reading a tensor's values: {reason}")]
    Read {
        /// What the backend said.
        reason: String,
    },
    /// A value that is no flag (a boolean, a number or a tensor).
    #[error("{value} is not a flag")]
    NotAFlag {
        /// The value, described.
        value: String,
    },
    /// An empty level in a key such as `a::b` or `:a`.
    #[error("key `{path}` has an empty level; levels are separated by a single `:`")]
    EmptyLevel {
        /// The key as written.
        path: String,
    },
}

/// One step of a key path: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Segment {
    /// A list index (sorted before names).
    Index(usize),
    /// A map key.
    Name(String),
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Index(i) => write!(f, "{i}"),
            Segment::Name(n) => f.write_str(n),
        }
    }
}

impl Segment {
    /// A segment from its text: all-digit text is an index, anything else a name.
    pub fn parse(text: &str) -> Segment {
        if !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && let Ok(i) = text.parse()
        {
            return Segment::Index(i);
        }
        Segment::Name(text.to_owned())
    }
}

/// Splits a flat key into its levels, refusing empty levels.
pub(crate) fn split_key(path: &str) -> Result<Vec<&str>, NestError> {
    let levels: Vec<&str> = path.split(SEPARATOR).collect();
    if levels.iter().any(|l| l.is_empty()) {
        return Err(NestError::EmptyLevel {
            path: path.to_owned(),
        });
    }
    Ok(levels)
}

impl<B: Backend> Nest<B> {
    /// An empty map.
    pub fn map() -> Self {
        Nest::Map(BTreeMap::new())
    }

    /// The children of a map, or `None`.
    pub fn as_map(&self) -> Option<&BTreeMap<String, Nest<B>>> {
        match self {
            Nest::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The children of a map, mutably, or `None`.
    pub fn as_map_mut(&mut self) -> Option<&mut BTreeMap<String, Nest<B>>> {
        match self {
            Nest::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The tensor of a tensor leaf, or `None`.
    pub fn as_tensor(&self) -> Option<&AnyTensor<B>> {
        match self {
            Nest::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// Whether this is a leaf (not a map or list, or an empty one, which flattens to itself).
    pub fn is_leaf(&self) -> bool {
        match self {
            Nest::Map(m) => m.is_empty(),
            Nest::List(l) => l.is_empty(),
            _ => true,
        }
    }

    /// A one-word description of what this value is, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Nest::Map(_) => "map".into(),
            Nest::List(l) => format!("list of {}", l.len()),
            Nest::Tensor(t) => t.describe(),
            Nest::Float(_) => "float".into(),
            Nest::Int(_) => "int".into(),
            Nest::Bool(_) => "bool".into(),
            Nest::Str(_) => "string".into(),
        }
    }

    fn child(&self, level: &str) -> Option<&Nest<B>> {
        match self {
            Nest::Map(m) => m.get(level),
            Nest::List(l) => level.parse::<usize>().ok().and_then(|i| l.get(i)),
            _ => None,
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Nest<B>> {
        match self {
            Nest::Map(m) => m.get_mut(level),
            Nest::List(l) => level.parse::<usize>().ok().and_then(|i| l.get_mut(i)),
            _ => None,
        }
    }

    /// The value at a flat key such as `a:b:0`.
    pub fn get(&self, path: &str) -> Option<&Nest<B>> {
        path.split(SEPARATOR)
            .try_fold(self, |node, level| node.child(level))
    }

    /// The value at a flat key, mutably.
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Nest<B>> {
        path.split(SEPARATOR)
            .try_fold(self, |node, level| node.child_mut(level))
    }

    /// The value at a flat key, or an error naming the first missing level and the keys that
    /// exist there.
    pub fn try_get(&self, path: &str) -> Result<&Nest<B>, NestError> {
        let mut node = self;
        for level in path.split(SEPARATOR) {
            match node.child(level) {
                Some(next) => node = next,
                None => {
                    let candidates: Vec<String> = match node {
                        Nest::Map(m) => m.keys().cloned().collect(),
                        Nest::List(l) => (0..l.len()).map(|i| i.to_string()).collect(),
                        _ => Vec::new(),
                    };
                    return Err(NestError::Missing {
                        path: path.to_owned(),
                        hint: crate::suggest::hint(level, candidates.iter().map(String::as_str)),
                    });
                }
            }
        }
        Ok(node)
    }

    /// Inserts a value at a flat key, creating maps on the way; returns the value it replaced.
    /// Fails when a level on the way is a leaf.
    pub fn insert(&mut self, path: &str, value: Nest<B>) -> Result<Option<Nest<B>>, NestError> {
        let levels = split_key(path)?;
        let (last, parents) = levels.split_last().expect("split gives one level at least");
        let mut node = self;
        for level in parents {
            node = match node {
                Nest::Map(m) => m.entry((*level).to_owned()).or_insert_with(Nest::map),
                Nest::List(l) => match level.parse::<usize>().ok().and_then(|i| l.get_mut(i)) {
                    Some(n) => n,
                    None => {
                        return Err(NestError::Missing {
                            path: path.to_owned(),
                            hint: format!(" (list index `{level}` out of range)"),
                        });
                    }
                },
                _ => {
                    return Err(NestError::Conflict {
                        path: path.to_owned(),
                    });
                }
            };
        }
        match node {
            Nest::Map(m) => Ok(m.insert((*last).to_owned(), value)),
            Nest::List(l) => match last.parse::<usize>().ok() {
                Some(i) if i < l.len() => Ok(Some(std::mem::replace(&mut l[i], value))),
                Some(i) if i == l.len() => {
                    l.push(value);
                    Ok(None)
                }
                _ => Err(NestError::Missing {
                    path: path.to_owned(),
                    hint: format!(" (list index `{last}` out of range)"),
                }),
            },
            _ => Err(NestError::Conflict {
                path: path.to_owned(),
            }),
        }
    }

    /// Removes and returns the value at a flat key (list elements after it move up).
    pub fn remove(&mut self, path: &str) -> Option<Nest<B>> {
        let (parent, last) = match path.rsplit_once(SEPARATOR) {
            Some((p, l)) => (self.get_mut(p)?, l),
            None => (self, path),
        };
        match parent {
            Nest::Map(m) => m.remove(last),
            Nest::List(l) => {
                let i = last.parse::<usize>().ok().filter(|i| *i < l.len())?;
                Some(l.remove(i))
            }
            _ => None,
        }
    }

    /// Flattens into `(flat key, leaf)` pairs in key order: maps by key, lists by index. Empty
    /// maps and lists are leaves, so `unflatten(flatten(x)) == x`.
    pub fn flatten(&self) -> Vec<(String, &Nest<B>)> {
        let mut out = Vec::new();
        let mut prefix = String::new();
        self.flatten_into(&mut prefix, &mut out);
        out
    }

    fn flatten_into<'a>(&'a self, prefix: &mut String, out: &mut Vec<(String, &'a Nest<B>)>) {
        let mut visit = |key: &dyn fmt::Display, child: &'a Nest<B>, prefix: &mut String| {
            let len = prefix.len();
            if len > 0 {
                prefix.push(SEPARATOR);
            }
            use fmt::Write;
            let _ = write!(prefix, "{key}");
            child.flatten_into(prefix, out);
            prefix.truncate(len);
        };
        match self {
            Nest::Map(m) if !m.is_empty() => {
                for (k, v) in m {
                    visit(k, v, prefix);
                }
            }
            Nest::List(l) if !l.is_empty() => {
                for (i, v) in l.iter().enumerate() {
                    visit(&i, v, prefix);
                }
            }
            _ => out.push((prefix.clone(), self)),
        }
    }

    /// A flag's values: a boolean, a number (not zero is true) or a tensor's elements (any
    /// kind; not zero is true). Anything else is an error describing it.
    pub fn truth_values(&self) -> Result<Vec<bool>, NestError> {
        match self {
            Nest::Bool(b) => Ok(vec![*b]),
            Nest::Int(v) => Ok(vec![*v != 0]),
            Nest::Float(v) => Ok(vec![*v != 0.0]),
            Nest::Tensor(t) => {
                let data = t.clone().into_data()?;
                let read = |e| NestError::Read {
                    reason: format!("{e:?}"),
                };
                if matches!(data.dtype, DType::Bool(_)) {
                    data.to_vec::<bool>().map_err(read)
                } else {
                    Ok(data
                        .convert::<f64>()
                        .to_vec::<f64>()
                        .map_err(read)?
                        .into_iter()
                        .map(|v| v != 0.0)
                        .collect())
                }
            }
            other => Err(NestError::NotAFlag {
                value: other.describe(),
            }),
        }
    }

    /// Builds a nest from flat keys. A level whose keys are all numbers becomes a list ordered
    /// by number and compacted (keys `1`, `2` give a list of two).
    pub fn unflatten<I, K>(flat: I) -> Result<Nest<B>, NestError>
    where
        I: IntoIterator<Item = (K, Nest<B>)>,
        K: AsRef<str>,
    {
        let mut builder = Builder::default();
        for (key, value) in flat {
            let key = key.as_ref();
            let segments: Vec<Segment> = split_key(key)?.into_iter().map(Segment::parse).collect();
            builder.insert(&segments, value, key)?;
        }
        Ok(builder.finish())
    }

    /// Converts the non-tensor parts to JSON; a tensor leaf is an error naming its key.
    pub fn to_json(&self) -> Result<serde_json::Value, NestError> {
        self.to_json_at("")
    }

    fn to_json_at(&self, path: &str) -> Result<serde_json::Value, NestError> {
        use serde_json::Value;
        let join = |k: &dyn fmt::Display| child_path(path, k);
        Ok(match self {
            Nest::Map(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), v.to_json_at(&join(k))?)))
                    .collect::<Result<_, NestError>>()?,
            ),
            Nest::List(l) => Value::Array(
                l.iter()
                    .enumerate()
                    .map(|(i, v)| v.to_json_at(&join(&i)))
                    .collect::<Result<_, _>>()?,
            ),
            Nest::Tensor(t) => {
                return Err(NestError::Json {
                    path: path.to_owned(),
                    reason: format!("a {} has no JSON form; read its data first", t.describe()),
                });
            }
            Nest::Float(v) => serde_json::Number::from_f64(*v)
                .map(Value::Number)
                .ok_or_else(|| NestError::Json {
                    path: path.to_owned(),
                    reason: format!("{v} is not a finite number"),
                })?,
            Nest::Int(v) => Value::from(*v),
            Nest::Bool(v) => Value::Bool(*v),
            Nest::Str(v) => Value::String(v.clone()),
        })
    }

    /// Builds a nest from JSON: objects become maps, arrays lists, integers `Int`, other numbers
    /// `Float`. `null` has no nest form and is an error naming its key.
    pub fn from_json(value: &serde_json::Value) -> Result<Nest<B>, NestError> {
        Self::from_json_at(value, "")
    }

    fn from_json_at(value: &serde_json::Value, path: &str) -> Result<Nest<B>, NestError> {
        use serde_json::Value;
        let join = |k: &dyn fmt::Display| child_path(path, k);
        Ok(match value {
            Value::Null => {
                return Err(NestError::Json {
                    path: path.to_owned(),
                    reason: "`null` has no value; leave the key out instead".into(),
                });
            }
            Value::Bool(b) => Nest::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Nest::Int(i),
                None => Nest::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Nest::Str(s.clone()),
            Value::Array(a) => Nest::List(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| Self::from_json_at(v, &join(&i)))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => Nest::Map(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), Self::from_json_at(v, &join(k))?)))
                    .collect::<Result<_, NestError>>()?,
            ),
        })
    }

    /// Takes a typed tensor out of a tensor leaf.
    pub fn into_tensor<const D: usize, K: NestTensorKind<B>>(
        self,
    ) -> Result<Tensor<B, D, K>, Nest<B>> {
        match self {
            Nest::Tensor(t) => t.into_tensor().map_err(Nest::Tensor),
            other => Err(other),
        }
    }
}

/// The flat key of `key` below `path` (`path` empty at the top).
fn child_path(path: &str, key: &dyn fmt::Display) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}{SEPARATOR}{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use serde_json::json;

    type B = NdArray;
    type N = Nest<B>;

    fn nest(v: serde_json::Value) -> N {
        N::from_json(&v).unwrap()
    }

    #[test]
    fn path_access_reads_maps_and_lists() {
        let n = nest(json!({"a": {"b": [10, 20]}, "c": "x"}));
        assert_eq!(n.get("a:b:1"), Some(&N::Int(20)));
        assert_eq!(n.get("c"), Some(&N::Str("x".into())));
        assert_eq!(n.get("a:b:2"), None);
        assert_eq!(n.get("a:x"), None);
        let err = n.try_get("a:bb").unwrap_err().to_string();
        assert!(err.contains("`a:bb`") && err.contains("`b`"), "{err}");
    }

    #[test]
    fn insert_creates_maps_and_refuses_leaf_parents() {
        let mut n = N::map();
        n.insert("a:b:c", N::Int(1)).unwrap();
        n.insert("a:d", N::Int(2)).unwrap();
        assert_eq!(n, nest(json!({"a": {"b": {"c": 1}, "d": 2}})));
        let err = n.insert("a:d:e", N::Int(3)).unwrap_err();
        assert_eq!(
            err,
            NestError::Conflict {
                path: "a:d:e".into()
            }
        );
        assert!(matches!(
            n.insert("a::e", N::Int(3)),
            Err(NestError::EmptyLevel { .. })
        ));
        assert_eq!(n.remove("a:b"), Some(nest(json!({"c": 1}))));
        assert_eq!(n, nest(json!({"a": {"d": 2}})));
    }

    #[test]
    fn flatten_and_unflatten_round_trip() {
        let n = nest(json!({"a": [1, {"x": 2}], "b": {"c": "s", "d": {}}, "e": []}));
        let flat: Vec<(String, N)> = n
            .flatten()
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        let keys: Vec<&str> = flat.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a:0", "a:1:x", "b:c", "b:d", "e"]);
        assert_eq!(N::unflatten(flat).unwrap(), n);
    }

    #[test]
    fn unflatten_turns_number_levels_into_compacted_lists() {
        let n =
            N::unflatten([("l:2", N::Int(2)), ("l:1", N::Int(1)), ("l:10", N::Int(10))]).unwrap();
        assert_eq!(n, nest(json!({"l": [1, 2, 10]})));
        let err = N::unflatten([("a", N::Int(1)), ("a:b", N::Int(2))]).unwrap_err();
        assert_eq!(err, NestError::Conflict { path: "a:b".into() });
    }

    #[test]
    fn json_round_trip_and_errors() {
        let v = json!({"f": 1.5, "i": -3, "b": true, "s": "x", "l": [1, [2]]});
        assert_eq!(nest(v.clone()).to_json().unwrap(), v);
        let err = N::from_json(&json!({"a": [null]})).unwrap_err().to_string();
        assert!(err.contains("`a:0`") && err.contains("null"), "{err}");
    }

    #[test]
    fn tensors_move_without_copies_and_debug_shows_shapes() {
        let device = Default::default();
        let t = Tensor::<B, 3>::zeros([2, 3, 4], &device);
        let mut n = N::map();
        n.insert("x:y", t.into()).unwrap();
        n.insert("i", Tensor::<B, 1, Int>::arange(0..5, &device).into())
            .unwrap();
        let dbg = format!("{n:?}");
        assert!(dbg.contains("float tensor [2, 3, 4] F32"), "{dbg}");
        assert!(dbg.contains("int tensor [5]"), "{dbg}");
        assert!(!dbg.contains("0.0"), "debug must not print data: {dbg}");
        let err = n.to_json().unwrap_err().to_string();
        assert!(err.contains("`i`"), "{err}");
        let back: Tensor<B, 3> = n.remove("x:y").unwrap().into_tensor().unwrap();
        assert_eq!(back.dims(), [2, 3, 4]);
        // Wrong rank or kind gives the value back untouched.
        let i = n.remove("i").unwrap();
        let i = i.into_tensor::<2, Int>().unwrap_err();
        let i = i.into_tensor::<1, Float>().unwrap_err();
        assert!(i.into_tensor::<1, Int>().is_ok());
    }

    #[test]
    fn tensors_of_rank_one_to_six() {
        let device = Default::default();
        let ranks: Vec<N> = vec![
            Tensor::<B, 1>::zeros([1], &device).into(),
            Tensor::<B, 2, Int>::zeros([1, 1], &device).into(),
            Tensor::<B, 3, Bool>::empty([1, 1, 1], &device).into(),
            Tensor::<B, 4>::zeros([1, 1, 1, 1], &device).into(),
            Tensor::<B, 5>::zeros([1, 1, 1, 1, 1], &device).into(),
            Tensor::<B, 6>::zeros([1, 1, 1, 1, 1, 2], &device).into(),
        ];
        for (i, n) in ranks.iter().enumerate() {
            assert_eq!(n.as_tensor().unwrap().rank(), i + 1);
        }
    }
}
