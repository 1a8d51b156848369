//! Saver callbacks and what they share: where a sample's results go (spec §7), and how a
//! batch splits into samples.
//!
//! `RecordsSaver` (a CoordinatorCallback) writes every incoming key of each sample as
//! records (see [`crate::data::records`]) in its log folder: tensors whose first dimension is
//! the batch size are split per sample, keys named in `not_batch_keys` and scalars are stored
//! whole with each sample; strings are not stored (a `save_names` key names the shards).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use burn::prelude::Backend;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use crate::data::records::{Record, RecordsWriter};
use crate::nest::Nest;
use crate::nucleotide::{CallbackContext, CoordinatorCallback};
use crate::{BoxError, Build, Incoming, NoKeys, nucleotide};

/// Where a sample is saved, before the saver adds its extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveName<'a> {
    /// Put before the name, joined with `-`.
    pub prefix: &'a str,
    /// Put after the name, joined with `-`.
    pub suffix: &'a str,
    /// The sample's own name (from a `save_names` key), if it has one.
    pub name: Option<&'a str>,
    /// Epoch, iteration and the sample's index in its batch, when known.
    pub position: Option<(usize, usize, usize)>,
}

/// The path of a sample's results in `log_dir`: `prefix-name-suffix`, the name being the
/// sample's own or `epoch_EEE_iter_IIIII_sample_SSS`. A name that would leave `log_dir` (an
/// absolute path, `..`, a NUL) is an error; names may make subfolders inside it.
pub fn save_path(log_dir: &Path, n: &SaveName<'_>) -> Result<PathBuf, String> {
    let generated;
    let name = match (n.name, n.position) {
        (Some(name), _) => Some(name),
        (None, Some((epoch, iteration, sample))) => {
            generated = format!("epoch_{epoch:03}_iter_{iteration:05}_sample_{sample:03}");
            Some(generated.as_str())
        }
        (None, None) => None,
    };
    let joined: Vec<&str> = [Some(n.prefix), name, Some(n.suffix)]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    let joined = joined.join("-");
    let relative = Path::new(&joined);
    let inside = !joined.is_empty()
        && !joined.contains('\0')
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(format!(
            "the save name `{}` would leave the results folder {}; save names are plain names or relative paths inside it",
            joined.escape_debug(),
            log_dir.display()
        ));
    }
    Ok(log_dir.join(relative))
}

/// Splits a batch into per-sample records: `n` samples, `not_batch_keys` kept whole.
pub fn split_batch<B: Backend>(
    batch: &Nest<B>,
    n: usize,
    not_batch_keys: &[String],
) -> Result<Vec<Record>, String> {
    let mut out: Vec<Record> = vec![BTreeMap::new(); n];
    for (key, value) in batch.flatten() {
        let whole = not_batch_keys.contains(&key);
        let data = match value {
            Nest::Tensor(t) => t.clone().into_data()?,
            Nest::Float(v) => TensorData::new(vec![*v], [0usize; 0]),
            Nest::Int(v) => TensorData::new(vec![*v], [0usize; 0]),
            Nest::Bool(v) => TensorData::new(vec![*v], [0usize; 0]),
            _ => continue,
        };
        let shape = data.shape.to_vec();
        let scalar = !matches!(value, Nest::Tensor(_));
        if whole || scalar {
            for r in &mut out {
                r.insert(key.clone(), data.clone());
            }
            continue;
        }
        if shape.first() != Some(&n) {
            return Err(format!(
                "key `{key}` has shape {shape:?}, not a batch of {n}; name it in `not_batch_keys` to store it whole"
            ));
        }
        let bytes = data.as_bytes();
        let per = bytes.len() / n.max(1);
        for (i, r) in out.iter_mut().enumerate() {
            r.insert(
                key.clone(),
                TensorData::from_bytes_vec(
                    bytes[i * per..(i + 1) * per].to_vec(),
                    shape[1..].to_vec(),
                    data.dtype,
                ),
            );
        }
    }
    Ok(out)
}

/// The batch size of a batch: the first dimension of its first tensor.
fn batch_size<B: Backend>(batch: &Nest<B>, not_batch_keys: &[String]) -> Option<usize> {
    batch.flatten().into_iter().find_map(|(k, v)| match v {
        Nest::Tensor(t) if !not_batch_keys.contains(&k) => t.shape().to_vec().first().copied(),
        _ => None,
    })
}

/// `RecordsSaver`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordsSaverConfig {
    /// Samples per shard.
    #[serde(default = "hundred")]
    pub samples_per_file: usize,
    /// The shards' name when no `save_names` key gives one.
    #[serde(default = "records_name")]
    pub file_name: String,
    /// Keys stored whole with every sample instead of split along the batch.
    #[serde(default)]
    pub not_batch_keys: Vec<String>,
    /// The subfolder of the callback's log folder the shards go to.
    #[serde(default = "records_name")]
    pub subfolder: String,
}

fn hundred() -> usize {
    100
}
fn records_name() -> String {
    "records".into()
}

/// What `RecordsSaver` reads: an optional `save_names` list and every other key.
#[derive(Incoming)]
pub struct ToSave<B: Backend> {
    /// One save name per sample (the shard's name).
    pub save_names: Option<Vec<String>>,
    /// Everything else.
    pub rest: Nest<B>,
}

/// Saves every sample it is given as records (safetensors shards).
#[nucleotide(kind = CoordinatorCallback)]
pub struct RecordsSaver {
    config: RecordsSaverConfig,
    writer: Option<RecordsWriter>,
}

impl<B: Backend> Build<B> for RecordsSaver {
    type Config = RecordsSaverConfig;
    type Input = ToSave<B>;
    type Output = NoKeys;
    fn build(c: &RecordsSaverConfig, _: &B::Device) -> Result<Self, BoxError> {
        if c.samples_per_file == 0 {
            return Err("samples_per_file must be at least 1".into());
        }
        save_path(
            Path::new("."),
            &SaveName {
                name: Some(&c.file_name),
                ..SaveName::default()
            },
        )?;
        save_path(
            Path::new("."),
            &SaveName {
                name: Some(&c.subfolder),
                ..SaveName::default()
            },
        )?;
        Ok(RecordsSaver {
            config: c.clone(),
            writer: None,
        })
    }
}

impl<B: Backend> CoordinatorCallback<B> for RecordsSaver {
    fn on_iteration_end(
        &mut self,
        input: ToSave<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<NoKeys>, BoxError> {
        let c = &self.config;
        let n = match (
            &input.save_names,
            batch_size(&input.rest, &c.not_batch_keys),
        ) {
            (Some(names), _) => names.len(),
            (None, Some(n)) => n,
            (None, None) => return Err("nothing to save: no tensor among the incoming keys".into()),
        };
        if self.writer.is_none() {
            let dir = save_path(
                &ctx.log_dir,
                &SaveName {
                    name: Some(&c.subfolder),
                    ..SaveName::default()
                },
            )?;
            self.writer = Some(RecordsWriter::new(&dir, c.samples_per_file)?);
        }
        let writer = self.writer.as_mut().expect("made above");
        for (i, record) in split_batch(&input.rest, n, &c.not_batch_keys)?
            .into_iter()
            .enumerate()
        {
            let name = input
                .save_names
                .as_ref()
                .map_or(c.file_name.as_str(), |names| names[i].as_str());
            // Shard names are plain file names.
            if name.is_empty() || name.contains(['/', '\\', '\0']) || name == ".." || name == "." {
                return Err(format!(
                    "save name `{}` of sample {i} is not a plain file name; shards are written into {}",
                    name.escape_debug(),
                    ctx.log_dir.display()
                )
                .into());
            }
            writer.write(name, record)?;
        }
        Ok(Some(NoKeys))
    }

    fn end(&mut self, _: &CallbackContext) -> Result<(), BoxError> {
        if let Some(w) = self.writer.as_mut() {
            w.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_samples() {
        type B = crate::backend::Cpu;
        let d = Default::default();
        let mut batch = Nest::<B>::map();
        let t = |v: Vec<f32>, shape: Vec<usize>| -> Nest<B> {
            Nest::Tensor(crate::nest::AnyTensor::from_data(
                TensorData::new(v, shape),
                &d,
            ))
        };
        batch
            .insert("x", t(vec![1.0, 2.0, 3.0, 4.0], vec![2, 2]))
            .unwrap();
        batch.insert("table", t(vec![9.0; 3], vec![3])).unwrap();
        batch.insert("step", Nest::Int(7)).unwrap();
        batch.insert("name", Nest::Str("skipped".into())).unwrap();
        let e = split_batch(&batch, 2, &[]).unwrap_err();
        assert!(
            e.contains("key `table` has shape [3], not a batch of 2"),
            "{e}"
        );
        let samples = split_batch(&batch, 2, &["table".to_owned()]).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1]["x"].to_vec::<f32>().unwrap(), [3.0, 4.0]);
        assert_eq!(samples[1]["x"].shape.to_vec(), [2]);
        assert_eq!(samples[0]["table"].shape.to_vec(), [3]);
        assert_eq!(samples[0]["step"].to_vec::<i64>().unwrap(), [7]);
        assert!(!samples[0].contains_key("name"));
    }

    #[test]
    fn save_names_table() {
        let dir = Path::new("save_target");
        let with = |name, position| SaveName {
            prefix: "prefix",
            suffix: "suffix",
            name,
            position,
        };
        // Spec §7.
        let cases: &[(SaveName<'_>, &str)] = &[
            (
                with(Some("some_new_name"), None),
                "save_target/prefix-some_new_name-suffix",
            ),
            (
                with(None, Some((5, 10, 3))),
                "save_target/prefix-epoch_005_iter_00010_sample_003-suffix",
            ),
            (with(None, None), "save_target/prefix-suffix"),
            (
                SaveName {
                    name: Some("a/b"),
                    ..SaveName::default()
                },
                "save_target/a/b",
            ),
        ];
        for (n, expected) in cases {
            assert_eq!(save_path(dir, n).unwrap(), Path::new(expected), "{n:?}");
        }
        for bad in ["../x", "/etc/passwd", "a/../../x", "nul\0byte"] {
            let n = SaveName {
                name: Some(bad),
                ..SaveName::default()
            };
            let e = save_path(dir, &n).unwrap_err();
            assert!(
                e.contains("would leave the results folder save_target"),
                "{bad}: {e}"
            );
        }
        assert!(
            save_path(dir, &SaveName::default()).is_err(),
            "an empty name"
        );
    }
}
