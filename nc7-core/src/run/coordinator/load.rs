//! `trainer_config.load_config`: start plugins from another run's weights, by nucleotide name
//! ("use your neighbour's classifier weights for your detector").
//!
//! ```json
//! "load_config": [{
//!     "path": "../classifier",
//!     "nucleotides": {"encoder": "backbone"},
//!     "rename": {"stem.": "blocks.0."}
//! }]
//! ```
//!
//! `path` (relative to the project) is a saved model or checkpoint folder, a `saved_models/`
//! or `checkpoints/` folder (its newest), a project folder (its newest saved model, else its
//! newest checkpoint) or a `.safetensors` file. `nucleotides` lists plugin names found under
//! the same name in the source, or maps this project's plugin to the source's. `rename` maps
//! parameter path prefixes of the source to this plugin's (the longest matching prefix wins).
//! Every parameter of a loaded plugin must be found with its shape; the source's other
//! tensors are ignored. Loading happens before a fresh run only: a continued run takes every
//! weight from its checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::checkpoint::{CheckpointError, Checkpoints};
use crate::gene::Kind;
use crate::model::{TrainModel, read_safetensors};
use crate::nest::AnyTensor;

/// One source of weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadConfig {
    /// Where the weights are (see the module docs).
    pub path: PathBuf,
    /// Which plugins: `["encoder"]` or `{"encoder": "backbone"}` (this project's: source's).
    pub nucleotides: PluginPairs,
    /// Parameter path prefixes renamed from the source's to this project's.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
}

/// Pairs of (plugin in this project, plugin in the source).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct PluginPairs(pub Vec<(String, String)>);

impl TryFrom<Value> for PluginPairs {
    type Error = String;

    fn try_from(v: Value) -> Result<Self, String> {
        let bad = || {
            "expected a list of plugin names (`[\"encoder\"]`) or a map from this project's plugin to the source's (`{\"encoder\": \"backbone\"}`)".to_owned()
        };
        let pairs: Vec<(String, String)> = match v {
            Value::Array(names) => names
                .into_iter()
                .map(|n| match n {
                    Value::String(s) => Ok((s.clone(), s)),
                    _ => Err(bad()),
                })
                .collect::<Result<_, _>>()?,
            Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    _ => Err(bad()),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad()),
        };
        if pairs.is_empty() {
            return Err("names no plugin; list at least one".into());
        }
        Ok(PluginPairs(pairs))
    }
}

impl From<PluginPairs> for Value {
    fn from(p: PluginPairs) -> Value {
        Value::Object(
            p.0.into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    }
}

/// Why `load_config` cannot find or load weights.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The path does not exist.
    #[error("`{}` does not exist", path.display())]
    Missing {
        /// The path, made absolute under the project.
        path: PathBuf,
    },
    /// The folder holds nothing to load.
    #[error("`{}` holds no weights: expected a saved model or checkpoint folder, a folder of them, a project folder that has trained, or a .safetensors file", path.display())]
    NoWeights {
        /// The folder.
        path: PathBuf,
    },
    /// A checkpoint there does not verify.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A saved model does not verify.
    #[error(transparent)]
    SavedModel(#[from] crate::export::SavedModelError),
    /// An entry of `load_config` failed; `at` names it (`trainer_config.load_config[0]`).
    #[error("{at}{}: {source}", source.field())]
    Entry {
        /// The entry.
        at: String,
        /// What went wrong with it.
        source: Box<LoadError>,
    },
    /// The weights file cannot be read.
    #[error(transparent)]
    Read(crate::model::WeightsError),
    /// `nucleotides` names a plugin this project does not have.
    #[error("this project has no model plugin `{plugin}`; it has {}", quoted(have.iter().map(String::as_str)))]
    NoPlugin {
        /// The plugin named.
        plugin: String,
        /// The project's plugins.
        have: Vec<String>,
    },
    /// The source has no weights of the nucleotide named.
    #[error("{} has no weights of a nucleotide `{from}`; it has {}", file.display(), quoted(have.iter().map(String::as_str)))]
    NoSource {
        /// The weights file.
        file: PathBuf,
        /// The source's nucleotide named.
        from: String,
        /// The source's nucleotides.
        have: Vec<String>,
    },
    /// The weights do not fit the plugin.
    #[error("cannot load `{from}` of {} into `{plugin}`: {problem}", file.display())]
    Mismatch {
        /// The weights file.
        file: PathBuf,
        /// The source's nucleotide.
        from: String,
        /// This project's plugin.
        plugin: String,
        /// Which parameters do not fit.
        problem: String,
    },
}

impl LoadError {
    /// The field of a `load_config` entry the problem is in (`.path`, `.nucleotides`).
    fn field(&self) -> &'static str {
        match self {
            LoadError::Missing { .. } | LoadError::NoWeights { .. } | LoadError::Checkpoint(_) => {
                ".path"
            }
            LoadError::NoPlugin { .. } | LoadError::NoSource { .. } => ".nucleotides",
            _ => "",
        }
    }
}

/// The weights file `path` (relative to `project`) stands for.
pub(crate) fn weights_file(project: &Path, path: &Path) -> Result<PathBuf, LoadError> {
    let p = if path.is_absolute() {
        path.to_owned()
    } else {
        project.join(path)
    };
    if p.is_file() {
        return Ok(p);
    }
    if !p.is_dir() {
        return Err(LoadError::Missing { path: p });
    }
    let weights = p.join("model.safetensors");
    if weights.is_file() {
        // Saved models and checkpoints are verified before use.
        if p.join(crate::export::GRAPH).is_file() {
            return Ok(crate::export::SavedModel::open(&p)?.weights);
        }
        if p.join(crate::integrity::MANIFEST).is_file() {
            let cp = Checkpoints::new(p.parent().unwrap_or(&p), usize::MAX).load(&p)?;
            return Ok(cp.file("model.safetensors"));
        }
        return Ok(weights);
    }
    let newest = |dir: &Path| -> Result<Option<PathBuf>, LoadError> {
        if let Some((_, saved)) = crate::export::list(dir).pop() {
            return Ok(Some(crate::export::SavedModel::open(&saved)?.weights));
        }
        Ok(Checkpoints::new(dir, usize::MAX)
            .newest()?
            .map(|cp| cp.file("model.safetensors")))
    };
    if let Some(f) = newest(&p)? {
        return Ok(f);
    }
    for sub in ["saved_models", "checkpoints"] {
        if let Some(f) = newest(&p.join(sub))? {
            return Ok(f);
        }
    }
    Err(LoadError::NoWeights { path: p })
}

/// Loads every `configs` entry into `model`'s plugins; what was loaded, for the log.
pub(crate) fn load_weights<B: AutodiffBackend>(
    model: &mut TrainModel<B>,
    project: &Path,
    configs: &[LoadConfig],
    device: &B::Device,
) -> Result<Vec<String>, LoadError> {
    let mut done = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let entry = |source: LoadError| LoadError::Entry {
            at: format!("trainer_config.load_config[{i}]"),
            source: Box::new(source),
        };
        let file = weights_file(project, &config.path).map_err(entry)?;
        let source = read_safetensors::<B>(&file, device).map_err(|e| entry(LoadError::Read(e)))?;
        for (this, from) in &config.nucleotides.0 {
            let plugins: Vec<&str> = model
                .parts()
                .iter()
                .filter(|p| p.kind == Kind::ModelPlugin)
                .map(|p| p.name.as_str())
                .collect();
            if !plugins.contains(&this.as_str()) {
                return Err(entry(LoadError::NoPlugin {
                    plugin: this.clone(),
                    have: plugins.iter().map(|p| (*p).to_owned()).collect(),
                }));
            }
            let tensors = take_plugin(&source, from, &config.rename);
            if tensors.is_empty() {
                return Err(entry(LoadError::NoSource {
                    file: file.clone(),
                    from: from.clone(),
                    have: plugin_names(&source),
                }));
            }
            let n = tensors.len();
            let mut named: BTreeMap<String, AnyTensor<B>> = tensors
                .into_iter()
                .map(|(path, t)| (format!("{this}.{path}"), t))
                .collect();
            model
                .load_tensors(&mut named, std::slice::from_ref(this))
                .map_err(|problem| {
                    entry(LoadError::Mismatch {
                        file: file.clone(),
                        from: from.clone(),
                        plugin: this.clone(),
                        problem: problem.to_string(),
                    })
                })?;
            let unused: Vec<String> = named
                .keys()
                .map(|k| k[this.len() + 1..].to_owned())
                .collect();
            done.push(format!(
                "plugin `{this}`: {} tensors of `{from}` from {}{}",
                n - unused.len(),
                file.display(),
                if unused.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} of the source's unused: {})",
                        unused.len(),
                        unused.join(", ")
                    )
                }
            ));
        }
    }
    Ok(done)
}

/// The tensors of plugin `name` in `source`, by parameter path after `rename`.
fn take_plugin<B: burn::prelude::Backend>(
    source: &BTreeMap<String, AnyTensor<B>>,
    name: &str,
    rename: &BTreeMap<String, String>,
) -> BTreeMap<String, AnyTensor<B>> {
    let prefix = format!("{name}.");
    source
        .iter()
        .filter_map(|(k, t)| {
            let path = k.strip_prefix(&prefix)?;
            Some((renamed(path, rename), t.clone()))
        })
        .collect()
}

/// `path` with its longest prefix found in `rename` replaced.
fn renamed(path: &str, rename: &BTreeMap<String, String>) -> String {
    rename
        .iter()
        .filter(|(from, _)| path.starts_with(from.as_str()))
        .max_by_key(|(from, _)| from.len())
        .map_or_else(
            || path.to_owned(),
            |(from, to)| format!("{to}{}", &path[from.len()..]),
        )
}

fn plugin_names<B: burn::prelude::Backend>(source: &BTreeMap<String, AnyTensor<B>>) -> Vec<String> {
    let mut names: Vec<String> = source
        .keys()
        .filter_map(|k| k.split_once('.').map(|(p, _)| p.to_owned()))
        .collect();
    names.dedup();
    names
}

fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_pairs_from_lists_and_maps() {
        let p: PluginPairs = serde_json::from_value(serde_json::json!(["a", "b"])).unwrap();
        assert_eq!(p.0, [("a".into(), "a".into()), ("b".into(), "b".into())]);
        let p: PluginPairs =
            serde_json::from_value(serde_json::json!({"enc": "backbone"})).unwrap();
        assert_eq!(p.0, [("enc".into(), "backbone".into())]);
        for bad in [
            serde_json::json!(3),
            serde_json::json!([1]),
            serde_json::json!([]),
        ] {
            assert!(serde_json::from_value::<PluginPairs>(bad).is_err());
        }
    }

    #[test]
    fn the_longest_prefix_is_renamed() {
        let rename: BTreeMap<String, String> = [
            ("stem.".to_owned(), "blocks.0.".to_owned()),
            ("stem.conv.".to_owned(), "first.".to_owned()),
        ]
        .into();
        assert_eq!(renamed("stem.bias", &rename), "blocks.0.bias");
        assert_eq!(renamed("stem.conv.weight", &rename), "first.weight");
        assert_eq!(renamed("head.weight", &rename), "head.weight");
    }

    #[test]
    fn weights_files_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let e = weights_file(root, Path::new("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = weights_file(root, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("holds no weights"), "{e}");
        let saved = root.join("saved_models");
        for step in [4, 12] {
            // A saved model as `export` seals it.
            let d = saved.join(format!("step-{step}"));
            std::fs::create_dir_all(&d).unwrap();
            let files = [
                ("model.safetensors", &b"x"[..]),
                ("graph.json", b"{}"),
                ("signature.json", br#"{"inputs": []}"#),
            ];
            let mut entries = BTreeMap::new();
            for (name, bytes) in files {
                std::fs::write(d.join(name), bytes).unwrap();
                entries.insert(name, crate::integrity::FileEntry::of(bytes));
            }
            let manifest = serde_json::to_vec(&serde_json::json!({"files": entries})).unwrap();
            crate::integrity::seal(&d, &manifest).unwrap();
        }
        let newest = saved.join("step-12").join("model.safetensors");
        assert_eq!(weights_file(root, Path::new(".")).unwrap(), newest);
        assert_eq!(
            weights_file(root, Path::new("saved_models")).unwrap(),
            newest
        );
        assert_eq!(
            weights_file(root, Path::new("saved_models/step-4")).unwrap(),
            saved.join("step-4").join("model.safetensors")
        );
        assert_eq!(
            weights_file(Path::new("/elsewhere"), &newest).unwrap(),
            newest
        );
        let cps = Checkpoints::new(root.join("checkpoints"), 3);
        cps.save(7, 1, &[("model.safetensors", b"w")], &Value::Null)
            .unwrap();
        assert_eq!(
            weights_file(root, Path::new("checkpoints")).unwrap(),
            root.join("checkpoints/ckpt-7/model.safetensors")
        );
        std::fs::write(
            root.join("checkpoints/ckpt-7/model.safetensors"),
            b"changed",
        )
        .unwrap();
        let e = weights_file(root, Path::new("checkpoints/ckpt-7"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.safetensors"), "{e}");
    }
}
