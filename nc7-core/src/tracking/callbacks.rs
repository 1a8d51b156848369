//! Saver callbacks and what they share: where a sample's results go (spec §7), and how a
//! batch splits into samples.
//!
//! `RecordsSaver` (a CoordinatorCallback) writes every incoming key of each sample as
//! records (see [`crate::data::records`]) in its log folder: tensors whose first dimension is
//! the batch size are split per sample, keys named in `not_batch_keys` and scalars are stored
//! whole with each sample; strings are not stored (a `save_names` key names the shards).
//!
//! [`Buffer`] keeps samples, their sum or their mean for callbacks that work on many samples
//! at once, handed over when a batch's `evaluate` flag is set or at the end.
//!
//! `SampleSaver` writes each sample's results as files: the keys in `image_keys` as PNG
//! images (`[C, H, W]` or `[H, W]` in `[0, 1]`), every other value into one JSON file. The
//! file names follow spec §7 (`prefix-name-suffix`, the name from `save_names` or
//! `epoch_EEE_iter_IIIII_sample_SSS`), with `-<key>.png` or `.json` added.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use burn::prelude::Backend;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use crate::data::records::{Record, RecordsWriter};
use crate::nest::Nest;
use crate::nucleotide::{CallbackContext, CoordinatorCallback};
use crate::{BoxError, Build, Incoming, NoKeys, nucleotide};

mod buffer;
mod detections;
mod experiments;
mod records;
mod samples;
pub use buffer::*;
pub use detections::*;
pub use experiments::*;
pub use records::*;
pub use samples::*;

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
pub fn save_path(log_dir: &Path, n: &SaveName<'_>) -> Result<PathBuf, crate::data::DataError> {
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
        ).into());
    }
    Ok(log_dir.join(relative))
}

/// Splits a batch into per-sample records: `n` samples, `not_batch_keys` kept whole.
pub fn split_batch<B: Backend>(
    batch: &Nest<B>,
    n: usize,
    not_batch_keys: &[String],
) -> Result<Vec<Record>, crate::data::DataError> {
    let mut out: Vec<Record> = vec![BTreeMap::new(); n];
    for (key, value) in batch.flatten() {
        let whole = not_batch_keys.contains(&key);
        let data = match value {
            Nest::Tensor(t) => t.clone().into_data().map_err(|e| e.to_string())?,
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
            )
            .into());
        }
        for (r, row) in out.iter_mut().zip(split_rows(&data, n)) {
            r.insert(key.clone(), row);
        }
    }
    Ok(out)
}

/// The `n` rows of a tensor's data whose first dimension is `n`: each `[...]` of `[n, ...]`.
pub(crate) fn split_rows(data: &TensorData, n: usize) -> Vec<TensorData> {
    let bytes = data.as_bytes();
    let per = bytes.len() / n.max(1);
    (0..n)
        .map(|i| {
            TensorData::from_bytes_vec(
                bytes[i * per..(i + 1) * per].to_vec(),
                data.shape[1..].to_vec(),
                data.dtype,
            )
        })
        .collect()
}

/// The batch size of a batch: the first dimension of its first tensor.
fn batch_size<B: Backend>(batch: &Nest<B>, not_batch_keys: &[String]) -> Option<usize> {
    batch.flatten().into_iter().find_map(|(k, v)| match v {
        Nest::Tensor(t) if !not_batch_keys.contains(&k) => t.shape().to_vec().first().copied(),
        _ => None,
    })
}

/// Creates the folder `path` goes in, naming it when that fails.
pub(crate) fn create_parent(path: &Path) -> Result<(), crate::data::DataError> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|e| {
            crate::data::DataError::caused(format!("cannot create {}: {e}", parent.display()), e)
        }),
        None => Ok(()),
    }
}

/// `base` with `tail` appended to its last part (`sample-3` and `.json`: `sample-3.json`).
pub(crate) fn with_tail(base: &Path, tail: &str) -> PathBuf {
    let mut p = base.as_os_str().to_owned();
    p.push(tail);
    PathBuf::from(p)
}

/// Writes `text` to `path`, naming it when that fails.
pub(crate) fn write_text(path: &Path, text: &str) -> Result<(), crate::data::DataError> {
    std::fs::write(path, text).map_err(|e| {
        crate::data::DataError::caused(format!("cannot write {}: {e}", path.display()), e)
    })
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
        let e = split_batch(&batch, 2, &[]).unwrap_err().to_string();
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
    fn sample_saver_writes_pngs_and_json() {
        type B = crate::backend::Cpu;
        let d = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let mut batch = Nest::<B>::map();
        let image = TensorData::new(
            vec![0.0f32, 1.0, 0.5, 0.25, 0.0, 1.0, 0.5, 0.25],
            [2, 1, 2, 2],
        );
        batch
            .insert(
                "mask",
                Nest::Tensor(crate::nest::AnyTensor::from_data(image, &d)),
            )
            .unwrap();
        let score = TensorData::new(vec![1i64, 2, 3, 4], [2, 2]);
        batch
            .insert(
                "score",
                Nest::Tensor(crate::nest::AnyTensor::from_data(score, &d)),
            )
            .unwrap();
        let mut saver = <SampleSaver as Build<B>>::build(
            &SampleSaverConfig {
                image_keys: vec!["mask".into()],
                ..SampleSaverConfig::default()
            },
            &d,
        )
        .unwrap();
        let ctx = CallbackContext {
            mode: crate::Mode::Infer,
            log_dir: dir.path().to_owned(),
            summaries: std::sync::Arc::new(crate::nucleotide::MemorySummaries::default()),
            summary_step: 0,
            iteration: Default::default(),
            iterations_per_epoch: 1,
            control: Default::default(),
            run: Default::default(),
        };
        let input = ToSave {
            save_names: Some(vec!["a".into(), "sub/b".into()]),
            rest: batch,
        };
        CoordinatorCallback::<B>::on_iteration_end(&mut saver, input, &ctx).unwrap();
        let png = crate::data::files::read_image(
            &dir.path().join("sub/b-mask.png"),
            crate::data::files::Color::Grey,
        )
        .unwrap();
        // 8-bit pixels: 0, 255, 128, 64.
        assert_eq!(
            png.to_vec::<f32>().unwrap(),
            [0.0, 1.0, 128.0 / 255.0, 64.0 / 255.0]
        );
        let json = std::fs::read_to_string(dir.path().join("a.json")).unwrap();
        assert_eq!(json, r#"{"score":[1,2]}"#);
    }

    #[test]
    fn buffers_keep_sum_and_average() {
        let rec = |v: f32| -> Record {
            [("x".to_owned(), TensorData::new(vec![v, 2.0 * v], [2]))].into()
        };
        let mut samples = Buffer::new(BufferKind::Samples);
        let mut sum = Buffer::new(BufferKind::Additive);
        let mut mean = Buffer::new(BufferKind::Average);
        for v in [1.0, 2.0, 6.0] {
            for b in [&mut samples, &mut sum, &mut mean] {
                b.push(rec(v)).unwrap();
            }
        }
        assert_eq!(samples.len(), 3);
        assert!(matches!(samples.take(), Buffered::Samples(s) if s.len() == 3));
        assert!(samples.is_empty());
        let Buffered::Reduced(s, 3) = sum.take() else {
            panic!()
        };
        assert_eq!(s["x"].to_vec::<f64>().unwrap(), [9.0, 18.0]);
        let Buffered::Reduced(m, 3) = mean.take() else {
            panic!()
        };
        assert_eq!(m["x"].to_vec::<f64>().unwrap(), [3.0, 6.0]);
        assert!(mean.is_empty());
        mean.push(rec(1.0)).unwrap();
        let e = mean
            .push([("x".to_owned(), TensorData::new(vec![1.0f32], [1]))].into())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key `x` has shape [1] here and [2] before"),
            "{e}"
        );

        // Batches go in split; `evaluate` hands the buffer over.
        type B = crate::backend::Cpu;
        let mut batch = Nest::<B>::map();
        let data = TensorData::new(vec![1.0f32, 3.0], [2, 1]);
        batch
            .insert(
                "y",
                Nest::Tensor(crate::nest::AnyTensor::from_data(data, &Default::default())),
            )
            .unwrap();
        let mut b = Buffer::new(BufferKind::Average);
        assert_eq!(b.push_batch(&batch, &[], false).unwrap(), None);
        let Some(Buffered::Reduced(m, 4)) = b.push_batch(&batch, &[], true).unwrap() else {
            panic!()
        };
        assert_eq!(m["y"].to_vec::<f64>().unwrap(), [2.0]);
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
            let e = save_path(dir, &n).unwrap_err().to_string();
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

    #[test]
    fn experiment_rows_add_columns() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("logs/experiments.csv");
        let row = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ours = |kv: &[(&str, &str)]| {
            let mut r: BTreeMap<String, String> = row(kv);
            r.insert("run".into(), "r".into());
            r.insert("finished".into(), "t".into());
            r
        };
        append_row(&file, ours(&[("loss", "0.5"), ("step", "10")])).unwrap();
        append_row(
            &file,
            ours(&[("accuracy", "0.9"), ("loss", "0.2"), ("step", "20")]),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "finished,loss,run,step,accuracy\nt,0.5,r,10,\nt,0.2,r,20,0.9\n"
        );
        // A table nc7 did not write is left as it is; so is a link.
        let foreign = dir.path().join("theirs.csv");
        std::fs::write(&foreign, "name,secret\nalice,hunter2\n").unwrap();
        let e = append_row(&foreign, ours(&[("step", "1")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("was not written by nc7") && !e.contains("hunter2"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(&foreign).unwrap(),
            "name,secret\nalice,hunter2\n"
        );
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = append_row(&link, ours(&[("step", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a link"), "{e}");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            project_of(Path::new("/p/training/callbacks/eval")),
            Path::new("/p")
        );
        assert_eq!(
            project_of(Path::new("/p/inference/run-1/results")),
            Path::new("/p/inference/run-1/results")
        );
    }
}
