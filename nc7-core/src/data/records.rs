//! Records: saved samples as safetensors shards, readable by any safetensors reader.
//!
//! A shard `<save name>-<index>.safetensors` holds up to `samples_per_file` samples; sample
//! `i`'s key `k` is the tensor `<i>/<k>` (`i` zero-padded to 6 digits), so that Python reads a
//! shard with `safetensors.numpy.load_file` and groups by the part before `/`. The header's
//! metadata says `format: nc7-records`, the number of samples and the keys. A new shard starts
//! every `samples_per_file` samples and whenever the save name changes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;

/// One saved sample: tensors by key.
pub type Record = BTreeMap<String, TensorData>;

const FORMAT: &str = "nc7-records";

/// Writes records into shards in a folder.
#[derive(Debug)]
pub struct RecordsWriter {
    dir: PathBuf,
    samples_per_file: usize,
    name: Option<String>,
    pending: Vec<Record>,
    /// Shards written per save name, for the next index.
    shards: HashMap<String, usize>,
    written: Vec<PathBuf>,
}

impl RecordsWriter {
    /// A writer into `dir` (created when missing), `samples_per_file` (at least 1) per shard.
    pub fn new(
        dir: &Path,
        samples_per_file: usize,
    ) -> Result<RecordsWriter, crate::data::DataError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            crate::data::DataError::caused(format!("cannot create {}: {e}", dir.display()), e)
        })?;
        Ok(RecordsWriter {
            dir: dir.to_owned(),
            samples_per_file: samples_per_file.max(1),
            name: None,
            pending: Vec::new(),
            shards: HashMap::new(),
            written: Vec::new(),
        })
    }

    /// Adds a sample under `save_name` (a plain file name).
    pub fn write(&mut self, save_name: &str, record: Record) -> Result<(), crate::data::DataError> {
        if self.name.as_deref() != Some(save_name) {
            self.flush()?;
            self.name = Some(save_name.to_owned());
        }
        self.pending.push(record);
        if self.pending.len() >= self.samples_per_file {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending samples as a shard.
    pub fn flush(&mut self) -> Result<(), crate::data::DataError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let name = self.name.clone().unwrap_or_else(|| "records".into());
        let index = self.shards.entry(name.clone()).or_insert(0);
        let path = self.dir.join(format!("{name}-{index:05}.safetensors"));
        *index += 1;
        let samples = std::mem::take(&mut self.pending);
        let mut keys: Vec<&String> = samples.iter().flat_map(|r| r.keys()).collect();
        keys.sort();
        keys.dedup();
        let metadata: HashMap<String, String> = [
            ("format".to_owned(), FORMAT.to_owned()),
            ("samples".to_owned(), samples.len().to_string()),
            (
                "keys".to_owned(),
                keys.iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ]
        .into();
        let named = samples.iter().enumerate().flat_map(|(i, record)| {
            record
                .iter()
                .map(move |(key, data)| (format!("{i:06}/{key}"), data))
        });
        let bytes = crate::data::tensor_file::encode_safetensors(named, Some(metadata))?;
        crate::project::replace_file(&path, &bytes).map_err(|e| {
            crate::data::DataError::caused(format!("cannot write {}: {e}", path.display()), e)
        })?;
        self.written.push(path);
        Ok(())
    }

    /// The shards written so far.
    pub fn written(&self) -> &[PathBuf] {
        &self.written
    }
}

impl Drop for RecordsWriter {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            log::error!("records lost when closing the writer: {e}");
        }
    }
}

/// Reads every sample of a records shard, in order.
pub fn read_records(path: &Path) -> Result<Vec<Record>, crate::data::DataError> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let at = |e: String| format!("{}: {e}", path.display());
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| at(e.to_string()))?;
    let format = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format"))
        .cloned();
    if format.as_deref() != Some(FORMAT) {
        return Err(at(format!(
            "not a records shard (its metadata has format {format:?}, `{FORMAT}` expected)"
        ))
        .into());
    }
    let mut samples: BTreeMap<usize, Record> = BTreeMap::new();
    for (name, data) in
        crate::data::tensor_file::decode_safetensors(&bytes).map_err(|e| at(e.to_string()))?
    {
        let (i, key) = name
            .split_once('/')
            .and_then(|(i, k)| Some((i.parse::<usize>().ok()?, k.to_owned())))
            .ok_or_else(|| at(format!("tensor `{name}` is not named `<sample>/<key>`")))?;
        samples.entry(i).or_default().insert(key, data);
    }
    Ok(samples.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: i64) -> Record {
        [
            ("id".to_owned(), TensorData::new(vec![i], [1])),
            (
                "image".to_owned(),
                TensorData::new(vec![i as f32; 6], [1, 2, 3]),
            ),
        ]
        .into()
    }

    #[test]
    fn records_round_trip_split_by_count_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RecordsWriter::new(dir.path(), 2).unwrap();
        for i in 0..5 {
            w.write("train", record(i)).unwrap();
        }
        w.write("eval", record(9)).unwrap();
        w.flush().unwrap();
        let names: Vec<String> = w
            .written()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "train-00000.safetensors",
                "train-00001.safetensors",
                "train-00002.safetensors",
                "eval-00000.safetensors"
            ]
        );
        let first = read_records(&w.written()[0]).unwrap();
        assert_eq!(first, [record(0), record(1)]);
        assert_eq!(read_records(&w.written()[2]).unwrap(), [record(4)]);
        assert_eq!(read_records(&w.written()[3]).unwrap(), [record(9)]);
        std::fs::write(dir.path().join("x.safetensors"), b"nonsense").unwrap();
        let e = read_records(&dir.path().join("x.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.safetensors"), "{e}");
    }
}
