//! Saved models (`saved_models/step-<N>/`): the weights as safetensors, the model's graph
//! config (enough to rebuild it from the registry), its signature (inputs and outputs with
//! kinds, dtypes and shapes), `model.info` and the evaluation's `eval_result.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use burn::prelude::Backend;
use serde_json::{Value, json};

use crate::config::MODEL_SECTIONS;
use crate::data::{BatchOrder, DataPosition, collate};
use crate::integrity;
use crate::model::{Model, Part, to_safetensors};
use crate::nest::Nest;
use crate::nucleotide::Mode;
use crate::runtime::DynDataset;

/// The weights file of a saved model.
pub const WEIGHTS: &str = "model.safetensors";
/// The graph config file.
pub const GRAPH: &str = "graph.json";
/// The signature file.
pub const SIGNATURE: &str = "signature.json";
/// The info file.
pub const INFO: &str = "model.info";
/// The evaluation results file.
pub const EVAL_RESULT: &str = "eval_result.json";
const PREFIX: &str = "step-";

/// Why a saved model cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A file or folder operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The weights cannot be saved.
    #[error(transparent)]
    Weights(#[from] crate::model::WeightsError),
    /// The saved model cannot be read back after it was written.
    #[error(transparent)]
    ReadBack(#[from] SavedModelError),
    /// The signature's batch cannot be read or run.
    #[error("the signature's batch: {0}")]
    Signature(String),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + use<> {
    let path = path.to_owned();
    move |source| ExportError::Io {
        action,
        path,
        source,
    }
}

/// A saved model as read back: its folder, weights file, graph config and inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedModel {
    /// The folder (`saved_models/step-<N>/`).
    pub dir: PathBuf,
    /// Its weights file.
    pub weights: PathBuf,
    /// Its graph config: the model sections of the config it was trained with.
    pub graph: Value,
    /// Its inputs, as `signature.json` lists them.
    pub inputs: Vec<Value>,
}

/// Why a saved model cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SavedModelError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not valid JSON.
    #[error("{} is not valid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A file differs from what the saved model's manifest says.
    #[error(
        "saved model {} is corrupt: {problem}; export it again from a checkpoint (`export --checkpoint ckpt-N`)",
        dir.display()
    )]
    Corrupt {
        /// The saved model.
        dir: PathBuf,
        /// What differs.
        problem: String,
    },
    /// `signature.json` has no `inputs` list.
    #[error("{} has no `inputs` list", path.display())]
    NoInputs {
        /// The file.
        path: PathBuf,
    },
}

impl SavedModel {
    /// Writes `model` as the saved model of `global_step` into `saved_models`, then removes
    /// the oldest beyond `keep`. The folder appears complete or not at all, and is read back
    /// with [`SavedModel::open`] before it is returned.
    #[allow(clippy::too_many_arguments)]
    pub fn write<B: Backend>(
        project: &Path,
        saved_models: &Path,
        model: &mut Model<B>,
        parts: &[Part],
        config: &Value,
        data: &dyn DynDataset<B>,
        batch_size: usize,
        global_step: u64,
        epoch: u64,
        eval_result: Option<&BTreeMap<String, f64>>,
        keep: usize,
    ) -> Result<SavedModel, ExportError> {
        fs::create_dir_all(saved_models).map_err(io("create", saved_models))?;
        let name = format!("{PREFIX}{global_step}");
        let tmp = saved_models.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io("remove", &tmp))?;
        }
        fs::create_dir(&tmp).map_err(io("create", &tmp))?;
        // A write that fails takes its half-written folder with it.
        let written = (|| -> Result<(), ExportError> {
            let mut metadata = std::collections::HashMap::new();
            metadata.insert("global_step".to_owned(), global_step.to_string());
            metadata.insert(
                "nc7_version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            );
            let weights = to_safetensors(model.tensors(), Some(metadata))?;
            fs::write(tmp.join(WEIGHTS), weights).map_err(io("write", &tmp.join(WEIGHTS)))?;

            let graph: serde_json::Map<String, Value> = MODEL_SECTIONS
                .iter()
                .filter_map(|s| config.get(s.key).map(|v| (s.key.to_owned(), v.clone())))
                .collect();
            write_json(&tmp.join(GRAPH), &Value::Object(graph))?;
            write_json(
                &tmp.join(SIGNATURE),
                &signature(model, parts, data, batch_size).map_err(ExportError::Signature)?,
            )?;
            let (commit, dirty) = crate::project::git_state(project);
            write_json(
                &tmp.join(INFO),
                &json!({
                    "global_step": global_step,
                    "epoch": epoch,
                    "nc7_version": env!("CARGO_PKG_VERSION"),
                    "git_commit": commit,
                    "git_dirty": dirty,
                    "created": crate::project::rfc3339(std::time::SystemTime::now()),
                }),
            )?;
            if let Some(result) = eval_result {
                write_json(&tmp.join(EVAL_RESULT), &json!(result))?;
            }
            // Sealed: every file's size and sha256, verified whenever the model is opened.
            let mut files = BTreeMap::new();
            for entry in fs::read_dir(&tmp).map_err(io("read", &tmp))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let hashed =
                    integrity::hash_file(&entry.path()).map_err(io("read", &entry.path()))?;
                files.insert(name, hashed);
            }
            let manifest =
                serde_json::to_vec_pretty(&json!({"files": files})).expect("manifests serialize");
            integrity::seal(&tmp, &manifest).map_err(io("write the manifest of", &tmp))?;
            Ok(())
        })();
        integrity::or_remove(&tmp, written)?;
        let target = saved_models.join(&name);
        if target.exists() {
            fs::remove_dir_all(&target).map_err(io("replace", &target))?;
        }
        fs::rename(&tmp, &target).map_err(io("rename", &tmp))?;
        let mut all = list(saved_models);
        while all.len() > keep.max(1) {
            let (_, old) = all.remove(0);
            fs::remove_dir_all(&old).map_err(io("remove", &old))?;
        }
        Ok(SavedModel::open(&target)?)
    }

    /// Reads the saved model in `dir`: its graph and signature (the weights are read when
    /// the model is built), after checking every file against its sealed manifest.
    pub fn open(dir: &Path) -> Result<SavedModel, SavedModelError> {
        verify(dir).map_err(|problem| SavedModelError::Corrupt {
            dir: dir.to_owned(),
            problem,
        })?;
        let read = |name: &str| -> Result<Value, SavedModelError> {
            let path = dir.join(name);
            let bytes = fs::read(&path).map_err(|source| SavedModelError::Read {
                path: path.clone(),
                source,
            })?;
            serde_json::from_slice(&bytes).map_err(|source| SavedModelError::Json { path, source })
        };
        let graph = read(GRAPH)?;
        let inputs = read(SIGNATURE)?
            .get("inputs")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| SavedModelError::NoInputs {
                path: dir.join(SIGNATURE),
            })?;
        Ok(SavedModel {
            dir: dir.to_owned(),
            weights: dir.join(WEIGHTS),
            graph,
            inputs,
        })
    }
}

/// Checks a saved model's files against its sealed manifest.
fn verify(dir: &Path) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        files: BTreeMap<String, integrity::FileEntry>,
    }
    let text = integrity::unseal(dir)?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| format!("its {} is invalid: {e}", integrity::MANIFEST))?;
    if !manifest.files.contains_key(WEIGHTS) {
        return Err(format!("its manifest does not list {WEIGHTS}"));
    }
    integrity::check_files(dir, &manifest.files)
}

/// Saved models in `saved_models`, oldest first, with their steps.
pub fn list(saved_models: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(saved_models)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix(PREFIX)?.parse().ok()?;
            e.path().join(WEIGHTS).is_file().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn write_json(path: &Path, value: &Value) -> Result<(), ExportError> {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    text.push('\n');
    fs::write(path, text).map_err(io("write", path))
}

/// Each key of a batch with its kind, and for tensors dtype and shape (the batch dimension
/// `null`), as `signature.json` lists them. A batch's strings (a list of one per sample) are
/// one key of kind `string`; nested maps and lists give `outer:inner` keys.
pub fn describe<B: Backend>(nest: &Nest<B>) -> Vec<Value> {
    let mut out = Vec::new();
    describe_at(nest, "", &mut out);
    out
}

fn describe_at<B: Backend>(nest: &Nest<B>, key: &str, out: &mut Vec<Value>) {
    let child = |name: &str| {
        if key.is_empty() {
            name.to_owned()
        } else {
            format!("{key}:{name}")
        }
    };
    let kind = match nest {
        Nest::Map(m) => {
            for (k, v) in m {
                describe_at(v, &child(k), out);
            }
            return;
        }
        Nest::List(items)
            if !items.is_empty() && items.iter().all(|i| matches!(i, Nest::Str(_))) =>
        {
            "string"
        }
        Nest::List(items) => {
            for (i, v) in items.iter().enumerate() {
                describe_at(v, &child(&i.to_string()), out);
            }
            return;
        }
        Nest::Tensor(t) => {
            let mut shape: Vec<Value> = t.shape().to_vec().into_iter().map(Value::from).collect();
            // The first dimension is the batch.
            if let Some(first) = shape.first_mut() {
                *first = Value::Null;
            }
            out.push(json!({"key": key, "kind": t.kind().to_string(), "dtype": format!("{:?}", t.dtype()), "shape": shape}));
            return;
        }
        Nest::Str(_) => "string",
        Nest::Float(_) => "float",
        Nest::Int(_) => "int",
        Nest::Bool(_) => "bool",
    };
    out.push(json!({"key": key, "kind": kind}));
}

/// Inputs and outputs of the model on one batch of `data`.
fn signature<B: Backend>(
    model: &mut Model<B>,
    parts: &[Part],
    data: &dyn DynDataset<B>,
    batch_size: usize,
) -> Result<Value, String> {
    let order = BatchOrder {
        len: data.len(),
        batch_size,
        shuffle: false,
        seed: 0,
    };
    let Some(indices) = order
        .batches_from(DataPosition { epoch: 1, batch: 0 })
        .next()
    else {
        return Err("the evaluation dataset has no samples".into());
    };
    let samples = indices
        .iter()
        .map(|&i| data.get(i).map_err(|e| format!("sample {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let device = samples
        .iter()
        .find_map(|s| {
            s.flatten()
                .into_iter()
                .find_map(|(_, v)| v.as_tensor().map(|t| t.device()))
        })
        .unwrap_or_default();
    let batch = collate(samples, &device).map_err(|e| e.to_string())?;
    let inputs = describe(&batch);
    let outputs = model
        .run(batch, Mode::Eval)
        .map_err(|e| e.to_string())?
        .into_map();
    let mut out = serde_json::Map::new();
    for p in parts {
        if let Some(Some(nest)) = outputs.get(&p.name) {
            out.insert(
                p.name.clone(),
                json!({"kind": p.kind.name(), "class_name": p.registration.path, "keys": describe(nest)}),
            );
        }
    }
    Ok(json!({"inputs": inputs, "outputs": out}))
}
