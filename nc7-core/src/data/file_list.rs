//! File lists: the files of each sample, matched across keys by name.
//!
//! `file_names` gives one glob per key (relative to the project folder, or absolute). Each
//! file's *match name* is its base name without the extension, with the key's `match_prefix`
//! and `match_suffix` stripped when present. A sample is a match name found for every
//! required key (keys in `optional_keys` may be missing). Samples are sorted by match name,
//! then sharded (`number_of_shards`, `shard_index`: every n-th sample from the index) and
//! downsampled (`downsample_factor`: every n-th of what is left).
//!
//! A `file_list` may also be a list of such configs, as in nucleus7: each is matched, sharded
//! and downsampled on its own, and their samples are joined in order. A key that some of them
//! lack is optional in the joined list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A file list's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileListConfig {
    /// One glob per key, such as `{"image": "data/images/*.png"}`; relative to the project.
    #[schemars(extend("x-nc7-path" = true))]
    pub file_names: BTreeMap<String, String>,
    /// Keys a sample may lack.
    #[serde(default)]
    pub optional_keys: Vec<String>,
    /// Per key, a prefix stripped from base names before matching.
    #[serde(default)]
    pub match_prefix: BTreeMap<String, String>,
    /// Per key, a suffix stripped from base names (after the extension) before matching.
    #[serde(default)]
    pub match_suffix: BTreeMap<String, String>,
    /// Split the list into this many shards …
    #[serde(default = "one")]
    pub number_of_shards: usize,
    /// … and keep this one (from 0).
    #[serde(default)]
    pub shard_index: usize,
    /// Keep every n-th sample (1 keeps all).
    #[serde(default = "one")]
    pub downsample_factor: usize,
}

fn one() -> usize {
    1
}

/// A `file_list` field: one file list, or several joined in order (`[{…}, {…}]`).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum FileListConfigs {
    /// One file list.
    One(FileListConfig),
    /// Several, their samples joined in this order.
    Joined(Vec<FileListConfig>),
}

impl<'de> Deserialize<'de> for FileListConfigs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // Read as JSON first, so that an error names the list it is in, not "no variant".
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Array(items) => {
                if items.is_empty() {
                    return Err(D::Error::custom(
                        "an empty list of file lists; give one file list config or several",
                    ));
                }
                let configs = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        serde_json::from_value(v)
                            .map_err(|e| D::Error::custom(format!("file list {}: {e}", i + 1)))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(FileListConfigs::Joined(configs))
            }
            v @ serde_json::Value::Object(_) => serde_json::from_value(v)
                .map(FileListConfigs::One)
                .map_err(D::Error::custom),
            other => Err(D::Error::custom(format!(
                "expected a file list config (`{{\"file_names\": …}}`) or a list of them, found {other}"
            ))),
        }
    }
}

impl FileListConfigs {
    /// The file lists, in order.
    pub fn lists(&self) -> &[FileListConfig] {
        match self {
            FileListConfigs::One(c) => std::slice::from_ref(c),
            FileListConfigs::Joined(cs) => cs,
        }
    }
}

/// One sample's files, by key (optional keys may be absent).
pub type FileSample = BTreeMap<String, PathBuf>;

/// The matched samples of a file list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FileList {
    /// Match name and files of each sample, sorted by match name.
    pub samples: Vec<(String, FileSample)>,
}

impl FileList {
    /// Matches the files of each list of `configs` and joins their samples in order, globs
    /// relative to `base`. An error names the list (from 1) when there are several.
    pub fn build_all(
        configs: &FileListConfigs,
        base: &Path,
    ) -> Result<FileList, crate::data::DataError> {
        let lists = configs.lists();
        if lists.len() == 1 {
            return FileList::build(&lists[0], base);
        }
        let mut samples = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut repeated = BTreeSet::new();
        for (i, config) in lists.iter().enumerate() {
            let list = FileList::build(config, base)
                .map_err(|e| format!("file list {} of {}: {e}", i + 1, lists.len()))?;
            for (name, _) in &list.samples {
                if let Some(first) = seen.insert(name.clone(), i + 1)
                    && first != i + 1
                {
                    repeated.insert(name.clone());
                }
            }
            samples.extend(list.samples);
        }
        if !repeated.is_empty() {
            log::warn!(
                "joined file lists: {} match name{} in more than one list ({}); callbacks that name results by file name write them over one another",
                repeated.len(),
                if repeated.len() == 1 { "" } else { "s" },
                first_few(repeated.iter().map(String::as_str))
            );
        }
        Ok(FileList { samples })
    }

    /// Matches the files of `config`, globs relative to `base`.
    pub fn build(config: &FileListConfig, base: &Path) -> Result<FileList, crate::data::DataError> {
        if config.file_names.is_empty() {
            return Err("file_names is empty; give one glob per key".into());
        }
        if config.number_of_shards == 0 || config.shard_index >= config.number_of_shards {
            return Err(format!(
                "shard_index {} is out of range for {} shards (0 to {})",
                config.shard_index,
                config.number_of_shards,
                config.number_of_shards.saturating_sub(1)
            )
            .into());
        }
        if config.downsample_factor == 0 {
            return Err("downsample_factor must be at least 1".into());
        }
        for k in config
            .optional_keys
            .iter()
            .chain(config.match_prefix.keys())
            .chain(config.match_suffix.keys())
        {
            if !config.file_names.contains_key(k) {
                return Err(format!(
                    "`{k}` is not a key of file_names ({})",
                    config
                        .file_names
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .into());
            }
        }
        let mut by_key: BTreeMap<&str, BTreeMap<String, PathBuf>> = BTreeMap::new();
        for (key, pattern) in &config.file_names {
            let full = if Path::new(pattern).is_absolute() {
                PathBuf::from(pattern)
            } else {
                base.join(pattern)
            };
            let full = full.to_string_lossy().into_owned();
            let paths = glob::glob(&full)
                .map_err(|e| format!("file_names.{key}: `{pattern}` is not a valid glob: {e}"))?;
            let mut files = BTreeMap::new();
            for path in paths {
                let path = path.map_err(|e| format!("file_names.{key}: {e}"))?;
                if !path.is_file() {
                    continue;
                }
                let name = match_name(
                    &path,
                    config.match_prefix.get(key).map(String::as_str),
                    config.match_suffix.get(key).map(String::as_str),
                );
                if let Some(previous) = files.insert(name.clone(), path.clone()) {
                    return Err(format!(
                        "file_names.{key}: `{}` and `{}` have the same match name `{name}`",
                        previous.display(),
                        path.display()
                    )
                    .into());
                }
            }
            by_key.insert(key, files);
        }
        let required: Vec<&str> = config
            .file_names
            .keys()
            .map(String::as_str)
            .filter(|k| !config.optional_keys.iter().any(|o| o == k))
            .collect();
        if required.is_empty() {
            return Err("every key is optional; at least one must be required".into());
        }
        let names: BTreeSet<&String> = by_key[required[0]]
            .keys()
            .filter(|n| required.iter().all(|k| by_key[k].contains_key(*n)))
            .collect();
        // Files left without a partner: the data is likely incomplete, so it is said.
        for key in &required {
            let alone: Vec<&String> = by_key[key].keys().filter(|n| !names.contains(n)).collect();
            if !alone.is_empty() {
                log::warn!(
                    "file list: {} `{key}` file{} without a file of every other required key left out ({})",
                    alone.len(),
                    if alone.len() == 1 { "" } else { "s" },
                    first_few(alone.iter().map(|n| n.as_str()))
                );
            }
        }
        let samples: Vec<(String, FileSample)> = names
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % config.number_of_shards == config.shard_index)
            .map(|(_, n)| n)
            .enumerate()
            .filter(|(i, _)| i % config.downsample_factor == 0)
            .map(|(_, name)| {
                let files = by_key
                    .iter()
                    .filter_map(|(k, files)| Some(((*k).to_owned(), files.get(name)?.clone())))
                    .collect();
                (name.clone(), files)
            })
            .collect();
        if samples.is_empty() {
            let counts: Vec<String> = by_key
                .iter()
                .map(|(k, f)| format!("{k} `{}`: {} files", config.file_names[*k], f.len()))
                .collect();
            return Err(format!(
                "the file list is empty: no sample has a file for every required key ({}); {}",
                required.join(", "),
                counts.join(", ")
            )
            .into());
        }
        Ok(FileList { samples })
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The list as JSON lines (`{"match_name": …, "<key>": "<path>", …}`), the artifact the
    /// `file-list` command writes.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for (name, files) in &self.samples {
            let mut row = serde_json::Map::new();
            row.insert("match_name".into(), name.clone().into());
            for (k, p) in files {
                row.insert(k.clone(), p.to_string_lossy().into_owned().into());
            }
            out.push_str(&serde_json::Value::Object(row).to_string());
            out.push('\n');
        }
        out
    }
}

/// The first three of `names`, `, …` after them when there are more: for a warning.
fn first_few<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let more = if names.len() > 3 { ", …" } else { "" };
    format!("{}{more}", names.take(3).collect::<Vec<_>>().join(", "))
}

/// A file's base name without its extension, `prefix` and `suffix` stripped when present.
pub fn match_name(path: &Path, prefix: Option<&str>, suffix: Option<&str>) -> String {
    let mut name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(p) = prefix
        && let Some(rest) = name.strip_prefix(p)
    {
        name = rest.to_owned();
    }
    if let Some(s) = suffix
        && let Some(rest) = name.strip_suffix(s)
    {
        name = rest.to_owned();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        dir
    }

    fn config(files: &[(&str, &str)]) -> FileListConfig {
        FileListConfig {
            file_names: files
                .iter()
                .map(|(k, g)| ((*k).to_owned(), (*g).to_owned()))
                .collect(),
            optional_keys: vec![],
            match_prefix: BTreeMap::new(),
            match_suffix: BTreeMap::new(),
            number_of_shards: 1,
            shard_index: 0,
            downsample_factor: 1,
        }
    }

    #[test]
    fn joined_lists_keep_each_lists_order_shards_and_keys() {
        let dir = tree(&[
            "a/img/2.png",
            "a/img/1.png",
            "a/lbl/1.json",
            "a/lbl/2.json",
            "b/img/0.png",
            "b/img/5.png",
            "b/img/7.png",
        ]);
        let json = serde_json::json!([
            {"file_names": {"image": "a/img/*.png", "label": "a/lbl/*.json"}},
            {"file_names": {"image": "b/img/*.png"}, "number_of_shards": 2, "shard_index": 0}
        ]);
        let configs: FileListConfigs = serde_json::from_value(json).unwrap();
        assert_eq!(configs.lists().len(), 2);
        let list = FileList::build_all(&configs, dir.path()).unwrap();
        // Each list sorted and sharded on its own, then joined in order.
        assert_eq!(names(&list), ["1", "2", "0", "7"]);
        assert!(list.samples[0].1.contains_key("label"));
        assert!(!list.samples[2].1.contains_key("label"));
        // One config reads as before.
        let one: FileListConfigs =
            serde_json::from_value(serde_json::json!({"file_names": {"image": "b/img/*.png"}}))
                .unwrap();
        assert_eq!(
            names(&FileList::build_all(&one, dir.path()).unwrap()),
            ["0", "5", "7"]
        );
        // Errors name the list.
        let bad = |json: serde_json::Value| {
            serde_json::from_value::<FileListConfigs>(json)
                .unwrap_err()
                .to_string()
        };
        assert!(bad(serde_json::json!([])).contains("an empty list of file lists"));
        let e = bad(serde_json::json!([{"file_names": {"x": "a/*"}}, {"file_name": {}}]));
        assert!(e.contains("file list 2: unknown field `file_name`"), "{e}");
        assert!(bad(serde_json::json!("a/*.png")).contains("or a list of them"));
        let empty: FileListConfigs = serde_json::from_value(serde_json::json!([
            {"file_names": {"image": "a/img/*.png"}},
            {"file_names": {"image": "c/*.png"}}
        ]))
        .unwrap();
        let e = FileList::build_all(&empty, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("file list 2 of 2: the file list is empty"),
            "{e}"
        );
    }

    fn names(list: &FileList) -> Vec<&str> {
        list.samples.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn matches_across_keys_keeping_complete_samples() {
        let dir = tree(&[
            "img/a.png",
            "img/b.png",
            "img/c.png",
            "lbl/a.json",
            "lbl/c.json",
            "lbl/d.json",
            "mask/mask_a_gt.png",
        ]);
        let mut c = config(&[("image", "img/*.png"), ("label", "lbl/*.json")]);
        let list = FileList::build(&c, dir.path()).unwrap();
        assert_eq!(names(&list), ["a", "c"]);
        assert_eq!(list.samples[0].1["label"], dir.path().join("lbl/a.json"));
        c.file_names.insert("mask".into(), "mask/*.png".into());
        c.optional_keys.push("mask".into());
        c.match_prefix.insert("mask".into(), "mask_".into());
        c.match_suffix.insert("mask".into(), "_gt".into());
        let list = FileList::build(&c, dir.path()).unwrap();
        assert_eq!(names(&list), ["a", "c"]);
        assert!(list.samples[0].1.contains_key("mask"));
        assert!(!list.samples[1].1.contains_key("mask"));
        let lines = list.to_json_lines();
        assert_eq!(lines.lines().count(), 2);
        assert!(lines.starts_with(r#"{"match_name":"a","#), "{lines}");
    }

    #[test]
    fn shards_and_downsampling_table() {
        let files: Vec<String> = (0..10).map(|i| format!("d/{i}.txt")).collect();
        let refs: Vec<&str> = files.iter().map(String::as_str).collect();
        let dir = tree(&refs);
        // (shards, index, factor, expected)
        let cases: &[(usize, usize, usize, &[&str])] = &[
            (1, 0, 1, &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]),
            (3, 0, 1, &["0", "3", "6", "9"]),
            (3, 2, 1, &["2", "5", "8"]),
            (1, 0, 4, &["0", "4", "8"]),
            (2, 1, 2, &["1", "5", "9"]),
        ];
        for (shards, index, factor, expected) in cases {
            let mut c = config(&[("x", "d/*.txt")]);
            c.number_of_shards = *shards;
            c.shard_index = *index;
            c.downsample_factor = *factor;
            let list = FileList::build(&c, dir.path()).unwrap();
            assert_eq!(names(&list), *expected, "{shards} {index} {factor}");
        }
    }

    #[test]
    fn bad_lists_are_clear_errors() {
        let dir = tree(&["img/a.png", "lbl/b.json"]);
        let e = FileList::build(
            &config(&[("image", "img/*.png"), ("label", "lbl/*.json")]),
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("the file list is empty") && e.contains("image `img/*.png`: 1 files"),
            "{e}"
        );
        let mut c = config(&[("image", "img/*.png")]);
        c.number_of_shards = 2;
        c.shard_index = 2;
        let e = FileList::build(&c, dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("shard_index 2 is out of range for 2 shards"),
            "{e}"
        );
        let mut c = config(&[("image", "img/*.png")]);
        c.optional_keys.push("label".into());
        let e = FileList::build(&c, dir.path()).unwrap_err().to_string();
        assert!(e.contains("`label` is not a key of file_names"), "{e}");
        let e = FileList::build(&config(&[("image", "img/[.png")]), dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid glob"), "{e}");
        let dup = tree(&["a/x.png", "a/x.jpg"]);
        let e = FileList::build(&config(&[("image", "a/*")]), dup.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("the same match name `x`"), "{e}");
    }
}
