//! The KPI cache: a KPI nucleotide's values stored under a content hash of its class, its
//! config and its inputs, so that an evaluation over inputs seen before restores them instead of
//! computing them again. A cache that cannot be used is a warning: the evaluation goes on
//! without it.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::backend::Cpu;
use crate::nest::{AnyTensor, Nest};

pub(super) struct Cache {
    dir: PathBuf,
    /// Set after the first failed write: the rest of the evaluation runs uncached.
    broken: bool,
}

impl Cache {
    /// The cache in `dir`, created when missing; `None`, with a warning, when it cannot be.
    pub(super) fn open(dir: &Path) -> Option<Cache> {
        match std::fs::create_dir_all(dir) {
            Ok(()) => Some(Cache {
                dir: dir.to_owned(),
                broken: false,
            }),
            Err(e) => {
                log::warn!(
                    "the KPI cache folder {} cannot be used ({e}); KPIs are computed without the cache",
                    dir.display()
                );
                None
            }
        }
    }

    /// The hash of a nucleotide's identity and its inputs.
    pub(super) fn key<'a>(ident: &str, inputs: impl IntoIterator<Item = &'a Nest<Cpu>>) -> String {
        let mut h = Sha256::new();
        h.update(ident.as_bytes());
        for input in inputs {
            h.update(b"\x00sample");
            hash_nest(&mut h, input);
        }
        crate::project::hex(&h.finalize())
    }

    fn path(&self, name: &str, key: &str) -> PathBuf {
        self.dir.join(format!("{name}-{key}.json"))
    }

    /// The values stored under `key`, if any (a file that cannot be read is a warning).
    pub(super) fn restore(&self, name: &str, key: &str) -> Option<Nest<Cpu>> {
        if self.broken {
            return None;
        }
        let path = self.path(name, key);
        let text = std::fs::read_to_string(&path).ok()?;
        let decoded = serde_json::from_str::<Value>(&text)
            .map_err(|e| e.to_string())
            .and_then(|v| decode(&v));
        match decoded {
            Ok(nest) => Some(nest),
            Err(e) => {
                log::warn!(
                    "the cached KPIs {} cannot be read ({e}); they are computed again",
                    path.display()
                );
                None
            }
        }
    }

    /// Stores `values` under `key`; a failure is a warning and turns the cache off.
    pub(super) fn store(&mut self, name: &str, key: &str, values: &Nest<Cpu>) {
        if self.broken {
            return;
        }
        let path = self.path(name, key);
        let written = encode(values).and_then(|v| {
            crate::project::replace_file(&path, v.to_string().as_bytes()).map_err(|e| e.to_string())
        });
        if let Err(e) = written {
            log::warn!(
                "the KPI cache folder {} cannot be written ({e}); the evaluation goes on without the cache",
                self.dir.display()
            );
            self.broken = true;
        }
    }
}

fn hash_nest(h: &mut Sha256, nest: &Nest<Cpu>) {
    for (key, leaf) in nest.flatten() {
        h.update(key.as_bytes());
        h.update(b"\x00");
        match leaf {
            Nest::Tensor(t) => {
                h.update(format!("tensor {:?} {:?}", t.dtype(), t.shape().to_vec()).as_bytes());
                if let Ok(data) = t.clone().into_data() {
                    h.update(data.as_bytes());
                }
            }
            Nest::Float(v) => h.update(format!("float {}", v.to_bits()).as_bytes()),
            Nest::Int(v) => h.update(format!("int {v}").as_bytes()),
            Nest::Bool(v) => h.update(format!("bool {v}").as_bytes()),
            Nest::Str(s) => h.update(format!("str {s}").as_bytes()),
            Nest::Map(_) | Nest::List(_) => h.update(b"empty"),
        }
        h.update(b"\x00");
    }
}

/// A nest as JSON that reads back exactly: every value tagged with its kind.
fn encode(nest: &Nest<Cpu>) -> Result<Value, String> {
    Ok(match nest {
        Nest::Map(m) => json!({"map": m
            .iter()
            .map(|(k, v)| Ok((k.clone(), encode(v)?)))
            .collect::<Result<serde_json::Map<_, _>, String>>()?}),
        Nest::List(l) => json!({"list": l.iter().map(encode).collect::<Result<Vec<_>, _>>()?}),
        Nest::Tensor(t) => {
            let data = t.clone().into_data().map_err(|e| e.to_string())?;
            json!({"tensor": serde_json::to_value(&data).map_err(|e| e.to_string())?})
        }
        Nest::Float(v) => json!({"float_bits": v.to_bits()}),
        Nest::Int(v) => json!({"int": v}),
        Nest::Bool(v) => json!({"bool": v}),
        Nest::Str(s) => json!({"str": s}),
    })
}

fn decode(value: &Value) -> Result<Nest<Cpu>, String> {
    let bad = || format!("unexpected cache entry `{value}`");
    let (tag, inner) = value
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or_else(bad)?;
    Ok(match tag.as_str() {
        "map" => Nest::Map(
            inner
                .as_object()
                .ok_or_else(bad)?
                .iter()
                .map(|(k, v)| Ok((k.clone(), decode(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        "list" => Nest::List(
            inner
                .as_array()
                .ok_or_else(bad)?
                .iter()
                .map(decode)
                .collect::<Result<_, _>>()?,
        ),
        "tensor" => {
            let data: burn::tensor::TensorData =
                serde_json::from_value(inner.clone()).map_err(|e| e.to_string())?;
            Nest::Tensor(AnyTensor::from_data(data, &Default::default()))
        }
        "float_bits" => Nest::Float(f64::from_bits(inner.as_u64().ok_or_else(bad)?)),
        "int" => Nest::Int(inner.as_i64().ok_or_else(bad)?),
        "bool" => Nest::Bool(inner.as_bool().ok_or_else(bad)?),
        "str" => Nest::Str(inner.as_str().ok_or_else(bad)?.to_owned()),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn values_round_trip_exactly_and_keys_follow_content() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(dir.path()).unwrap();
        let mut kpi = Nest::<Cpu>::map();
        kpi.insert("mean", Nest::Float(0.1 + 0.2)).unwrap();
        kpi.insert("nan", Nest::Float(f64::NAN)).unwrap();
        kpi.insert(
            "cm",
            Nest::Tensor(AnyTensor::from_data(
                TensorData::new(vec![1i64, 2, 3, 4], [2, 2]),
                &Default::default(),
            )),
        )
        .unwrap();
        kpi.insert("name", Nest::Str("x".into())).unwrap();
        let key = Cache::key("A\n{}", [&kpi]);
        assert_ne!(key, Cache::key("B\n{}", [&kpi]));
        assert_eq!(key, Cache::key("A\n{}", [&kpi]));
        assert!(cache.restore("a", &key).is_none());
        cache.store("a", &key, &kpi);
        let back = cache.restore("a", &key).unwrap();
        assert_eq!(back.get("mean"), Some(&Nest::Float(0.1 + 0.2)));
        assert!(matches!(back.get("nan"), Some(Nest::Float(v)) if v.is_nan()));
        let cm = back.get("cm").unwrap().as_tensor().unwrap().clone();
        assert_eq!(
            cm.into_data().unwrap().to_vec::<i64>().unwrap(),
            [1, 2, 3, 4]
        );
        // A cache folder that is a file cannot be used: no cache, no failure.
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(Cache::open(&file).is_none());
    }
}
