//! An on-disk cache of decoded samples (`DataPipe`'s `cache`): each sample is kept in one
//! safetensors file named by a hash of what made it — the content of every file of the
//! sample, the configs of the readers and processors that read it, and nc7's version — so a
//! changed file or config reads the sample again, and a cached sample is bitwise the sample
//! the pipe made.
//!
//! Tensors are stored as tensors; the sample's tree (maps, lists, numbers, strings) goes into
//! the file's metadata. An entry that cannot be read is read again from the files and written
//! anew (with a warning); a sample is written to a temporary file and renamed into place, so
//! runs that share a cache folder never see half an entry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::Backend;
use burn::tensor::TensorData;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::file_list::FileSample;
use crate::BoxError;
use crate::nest::{AnyTensor, Nest};

const FORMAT: &str = "nc7-sample-cache";

/// A folder of cached samples, for one pipe's readers and processors.
#[derive(Debug)]
pub(crate) struct SampleCache {
    dir: PathBuf,
    /// Hash of what makes a sample besides its files.
    fingerprint: String,
}

impl SampleCache {
    /// The cache in `dir` (created) for samples made by `makers` (the readers' and
    /// processors' configs).
    pub(crate) fn new(dir: PathBuf, makers: &Value) -> Result<SampleCache, BoxError> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            format!(
                "cache: cannot create the folder `{}`: {e}; give a folder nc7 may write",
                dir.display()
            )
        })?;
        let what = json!({"nc7": env!("CARGO_PKG_VERSION"), "makers": makers});
        Ok(SampleCache {
            dir,
            fingerprint: crate::project::hex(&Sha256::digest(what.to_string().as_bytes())),
        })
    }

    /// The entry of a sample with these files: its path, from the files' content.
    pub(crate) fn entry(&self, files: &FileSample) -> Result<PathBuf, BoxError> {
        let mut hash = Sha256::new();
        hash.update(self.fingerprint.as_bytes());
        for (key, path) in files {
            let content = crate::integrity::hash_file(path)
                .map_err(|e| format!("cache: cannot read `{}`: {e}", path.display()))?;
            hash.update(format!("\n{key}={}", content.sha256).as_bytes());
        }
        let name = crate::project::hex(&hash.finalize());
        Ok(self.dir.join(format!("{name}.safetensors")))
    }

    /// The cached sample at `entry`; `None` when there is none or it cannot be read.
    pub(crate) fn get<B: Backend>(&self, entry: &Path, device: &B::Device) -> Option<Nest<B>> {
        let bytes = match std::fs::read(entry) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!(
                    "cache: `{}` cannot be read ({e}); reading the sample again",
                    entry.display()
                );
                return None;
            }
        };
        match decode(&bytes, device) {
            Ok(nest) => Some(nest),
            Err(e) => {
                log::warn!(
                    "cache: `{}` is damaged ({e}); reading the sample again",
                    entry.display()
                );
                None
            }
        }
    }

    /// Keeps `nest` at `entry`.
    pub(crate) fn put<B: Backend>(&self, entry: &Path, nest: &Nest<B>) -> Result<(), BoxError> {
        let bytes = encode(nest)?;
        crate::project::replace_file(entry, &bytes)
            .map_err(|e| format!("cache: cannot write `{}`: {e}", entry.display()).into())
    }
}

/// The tree of `nest` as JSON, its tensors named by their place in the tree.
fn skeleton<B: Backend>(
    nest: &Nest<B>,
    path: &str,
    tensors: &mut Vec<(String, TensorData)>,
) -> Result<Value, BoxError> {
    Ok(match nest {
        Nest::Map(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                out.insert(k.clone(), skeleton(v, &format!("{path}/{k}"), tensors)?);
            }
            json!({"map": out})
        }
        Nest::List(l) => {
            let items = l
                .iter()
                .enumerate()
                .map(|(i, v)| skeleton(v, &format!("{path}/{i}"), tensors))
                .collect::<Result<Vec<_>, _>>()?;
            json!({"list": items})
        }
        Nest::Tensor(t) => {
            tensors.push((path.to_owned(), t.clone().into_data()?));
            json!({"tensor": path})
        }
        // Bits, so that every float (NaN and infinities included) comes back exactly.
        Nest::Float(v) => json!({"float": v.to_bits().to_string()}),
        Nest::Int(v) => json!({"int": v}),
        Nest::Bool(v) => json!({"bool": v}),
        Nest::Str(s) => json!({"str": s}),
    })
}

fn encode<B: Backend>(nest: &Nest<B>) -> Result<Vec<u8>, BoxError> {
    let mut tensors = Vec::new();
    let tree = skeleton(nest, "", &mut tensors)?;
    let metadata: HashMap<String, String> = [
        ("format".to_owned(), FORMAT.to_owned()),
        ("tree".to_owned(), tree.to_string()),
    ]
    .into();
    Ok(super::tensor_file::encode_safetensors(
        tensors.iter().map(|(name, data)| (name.clone(), data)),
        Some(metadata),
    )?)
}

fn decode<B: Backend>(bytes: &[u8], device: &B::Device) -> Result<Nest<B>, BoxError> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(format!("not a cached sample (format {:?})", meta.get("format")).into());
    }
    let tree: Value = serde_json::from_str(meta.get("tree").ok_or("no tree in its metadata")?)?;
    let mut tensors: HashMap<String, TensorData> = super::tensor_file::decode_safetensors(bytes)?
        .into_iter()
        .collect();
    build(&tree, &mut tensors, device)
}

fn build<B: Backend>(
    tree: &Value,
    tensors: &mut HashMap<String, TensorData>,
    device: &B::Device,
) -> Result<Nest<B>, BoxError> {
    let bad = || -> BoxError { format!("unexpected entry {tree}").into() };
    let (kind, value) = tree
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or_else(bad)?;
    Ok(match (kind.as_str(), value) {
        ("map", Value::Object(m)) => Nest::Map(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), build(v, tensors, device)?)))
                .collect::<Result<_, BoxError>>()?,
        ),
        ("list", Value::Array(l)) => Nest::List(
            l.iter()
                .map(|v| build(v, tensors, device))
                .collect::<Result<_, _>>()?,
        ),
        ("tensor", Value::String(name)) => {
            let data = tensors
                .remove(name)
                .ok_or_else(|| format!("tensor `{name}` is missing"))?;
            Nest::Tensor(AnyTensor::from_data(data, device))
        }
        ("float", Value::String(bits)) => Nest::Float(f64::from_bits(bits.parse()?)),
        ("int", v) => Nest::Int(v.as_i64().ok_or_else(bad)?),
        ("bool", Value::Bool(b)) => Nest::Bool(*b),
        ("str", Value::String(s)) => Nest::Str(s.clone()),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = crate::backend::Cpu;

    #[test]
    fn every_kind_of_value_comes_back_bitwise() {
        let device = Default::default();
        let mut nest = Nest::<B>::map();
        let floats = TensorData::new(vec![0.25f32, f32::NAN, -0.0, 3.5], [2, 2]);
        nest.insert("image", Nest::Tensor(AnyTensor::from_data(floats, &device)))
            .unwrap();
        let ints = TensorData::new(vec![3i64, -7], [2]);
        nest.insert("label", Nest::Tensor(AnyTensor::from_data(ints, &device)))
            .unwrap();
        nest.insert(
            "meta",
            Nest::List(vec![
                Nest::Float(f64::NAN),
                Nest::Float(-1.5e300),
                Nest::Int(-3),
                Nest::Bool(true),
                Nest::Str("a/b".into()),
            ]),
        )
        .unwrap();
        let back: Nest<B> = decode(&encode(&nest).unwrap(), &device).unwrap();
        let bytes = |n: &Nest<B>| encode(n).unwrap();
        assert_eq!(bytes(&back), bytes(&nest));
        let Some(Nest::Tensor(label)) = back.get("label") else {
            panic!("{back:?}")
        };
        let values = label.clone().into_data().unwrap().convert::<i64>();
        assert_eq!(values.to_vec::<i64>().unwrap(), [3, -7]);
        assert!(decode::<B>(b"not safetensors", &device).is_err());
    }
}
