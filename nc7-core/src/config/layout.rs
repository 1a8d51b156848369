//! nucleus7's project layout: which config files and gene folders each kind of run reads,
//! how they are found, and how each becomes a layer of the run's config.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::tree::{Node, Tagged};
use super::{Source, Sources};
use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::gene::Kind;
use crate::suggest;

/// What a project is run for; each reads its own configs directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum RunType {
    /// `training/configs/`: train and evaluate a model.
    Train,
    /// `inference/configs/`: run an exported model over data.
    Infer,
    /// `kpi_evaluation/configs/`: evaluate KPIs over data.
    Kpi,
    /// `data_extraction/configs/`: extract data with callbacks.
    Data,
}

/// A section of a run's config that holds nucleotide configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NucleotideSection {
    /// The section's key in the resolved config (`plugins_config`).
    pub key: &'static str,
    /// The kinds its nucleotides may have.
    pub kinds: &'static [Kind],
    /// How the section holds them.
    pub shape: SectionShape,
}

/// How a section holds its nucleotide configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionShape {
    /// A list (a gene folder).
    List,
    /// One config.
    One,
    /// A map of the given names to one config each (`datasets`: `train`, `eval`).
    Named(&'static [&'static str]),
}

const fn section(
    key: &'static str,
    kinds: &'static [Kind],
    shape: SectionShape,
) -> NucleotideSection {
    NucleotideSection { key, kinds, shape }
}

use SectionShape::{List, Named, One};

/// The sections of the model's nucleotides, in the order of the model's genes.
pub const MODEL_SECTIONS: [NucleotideSection; 5] = [
    section("plugins_config", &[Kind::ModelPlugin], List),
    section("postprocessors_config", &[Kind::ModelPostProcessor], List),
    section("losses_config", &[Kind::ModelLoss], List),
    section("metrics_config", &[Kind::ModelMetric], List),
    section("summaries_config", &[Kind::ModelSummary], List),
];
const CALLBACKS: NucleotideSection =
    section("callbacks_config", &[Kind::CoordinatorCallback], List);
const KPI: NucleotideSection =
    section("kpi_config", &[Kind::KpiPlugin, Kind::KpiAccumulator], List);
const DATAFEEDER: NucleotideSection = section("datafeeder_config", &[Kind::DataFeeder], One);

impl RunType {
    /// Every run type.
    pub const ALL: [RunType; 4] = [RunType::Train, RunType::Infer, RunType::Kpi, RunType::Data];

    /// The short name (`train`, `infer`, `kpi`, `data`), used in file names.
    pub fn short(self) -> &'static str {
        match self {
            RunType::Train => "train",
            RunType::Infer => "infer",
            RunType::Kpi => "kpi",
            RunType::Data => "data",
        }
    }

    /// The run's directory in the project.
    pub fn dir_name(self) -> &'static str {
        match self {
            RunType::Train => "training",
            RunType::Infer => "inference",
            RunType::Kpi => "kpi_evaluation",
            RunType::Data => "data_extraction",
        }
    }

    /// `<project>/<run dir>/configs`.
    pub fn configs_dir(self, project: &Path) -> PathBuf {
        project.join(self.dir_name()).join("configs")
    }

    /// The single config files the run reads (without extension), in layering order.
    pub fn single_files(self) -> &'static [&'static str] {
        match self {
            RunType::Train => &["datasets", "trainer", "model"],
            RunType::Infer => &["datafeeder", "inferer"],
            RunType::Kpi => &["datafeeder", "kpi_evaluator"],
            RunType::Data => &["datafeeder", "data_extraction"],
        }
    }

    /// The gene folders the run reads, in layering order.
    pub fn gene_folders(self) -> &'static [&'static str] {
        match self {
            RunType::Train => &[
                "plugins",
                "losses",
                "postprocessors",
                "summaries",
                "metrics",
                "callbacks",
                "callbacks_train",
                "callbacks_eval",
                "kpi",
            ],
            RunType::Infer | RunType::Kpi => &["callbacks", "kpi"],
            RunType::Data => &["callbacks"],
        }
    }

    /// Every top-level key the run's config may have.
    pub fn section_keys(self) -> Vec<String> {
        std::iter::once(GLOBAL_FILE.to_owned())
            .chain(
                self.single_files()
                    .iter()
                    .chain(self.gene_folders())
                    .map(|n| section_key(n)),
            )
            .collect()
    }

    /// The sections that hold nucleotide configs.
    pub fn nucleotide_sections(self) -> Vec<NucleotideSection> {
        let mut out = Vec::new();
        match self {
            RunType::Train => {
                out.push(section(
                    "datasets_config",
                    &[Kind::Dataset],
                    Named(&["train", "eval"]),
                ));
                out.extend(MODEL_SECTIONS);
                out.push(CALLBACKS);
                out.push(section(
                    "callbacks_train_config",
                    &[Kind::CoordinatorCallback],
                    List,
                ));
                out.push(section(
                    "callbacks_eval_config",
                    &[Kind::CoordinatorCallback],
                    List,
                ));
                out.push(KPI);
            }
            RunType::Infer | RunType::Kpi => out.extend([DATAFEEDER, CALLBACKS, KPI]),
            RunType::Data => out.extend([DATAFEEDER, CALLBACKS]),
        }
        out
    }

    /// What a run cannot start without: a section key and what the user should add.
    pub fn mandatory(self) -> &'static [(&'static str, &'static str)] {
        match self {
            RunType::Train => &[
                (
                    "datasets_config",
                    "datasets.json with a `train` and an `eval` dataset",
                ),
                ("trainer_config", "trainer.json"),
                ("plugins_config", "a model plugin in plugins/"),
                ("losses_config", "a loss in losses/"),
            ],
            RunType::Infer => &[("datafeeder_config", "datafeeder.json")],
            RunType::Kpi => &[
                ("datafeeder_config", "datafeeder.json"),
                ("kpi_config", "a KPI plugin in kpi/"),
            ],
            RunType::Data => &[
                ("datafeeder_config", "datafeeder.json"),
                ("callbacks_config", "a callback in callbacks/"),
            ],
        }
    }
}

impl fmt::Display for RunType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

/// The project global config file's name (and key).
pub const GLOBAL_FILE: &str = "project_global_config";
/// The file that may hold every section at once.
pub const MAIN_FILE: &str = "config_main";

/// The key a file or folder fills: `datasets` → `datasets_config`,
/// `project_global_config` stays as it is.
pub(crate) fn section_key(name: &str) -> String {
    if name == GLOBAL_FILE {
        name.to_owned()
    } else {
        format!("{name}_config")
    }
}

/// Whether a directory entry is skipped: names starting with `_` or `.`.
pub(crate) fn is_ignored(name: &str) -> bool {
    name.starts_with('_') || name.starts_with('.')
}

/// Reads one config file (JSON or TOML, by extension). Parse errors give line and column.
pub(crate) fn read_file(path: &Path, shown: &str) -> Result<Value, Box<Diagnostic>> {
    let syntax = |message: String, help: &str| {
        Box::new(
            Diagnostic::error(Code::CONFIG_SYNTAX, "", message, help.to_owned())
                .with_file(Some(shown)),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        syntax(
            format!("cannot read `{shown}`: {e}"),
            "check the file's permissions and encoding (UTF-8)",
        )
    })?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str::<Value>(&text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(&text, s.start))
                .unwrap_or((0, 0));
            syntax(
                format!(
                    "invalid TOML in `{shown}` at line {line}, column {column}: {}",
                    e.message()
                ),
                "fix the TOML at that position",
            )
        }),
        _ => serde_json::from_str::<Value>(&text).map_err(|e| {
            syntax(
                format!(
                    "invalid JSON in `{shown}` at line {}, column {}: {e}",
                    e.line(),
                    e.column()
                ),
                "fix the JSON at that position",
            )
        }),
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The layers one configs directory gives, in layering order: the global config, the main
/// config, the single files, the gene folders. Problems are pushed to `diags`.
pub(crate) fn read_configs_dir(
    dir: &Path,
    project: &Path,
    run: RunType,
    sources: &mut Sources,
    diags: &mut Diagnostics,
) -> Vec<Tagged> {
    let shown = |p: &Path| p.strip_prefix(project).unwrap_or(p).display().to_string();
    let layout = |message: String, help: String, file: &Path| {
        Diagnostic::error(Code::LAYOUT, "", message, help).with_file(Some(&shown(file)))
    };
    let mut singles: Vec<&str> = vec![GLOBAL_FILE, MAIN_FILE];
    singles.extend(run.single_files());
    let folders = run.gene_folders();
    let known: Vec<&str> = singles.iter().chain(folders).copied().collect();

    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut dirs: Vec<(String, PathBuf)> = Vec::new();
    for (name, path, is_dir) in entries(dir, diags, &shown) {
        if is_dir {
            if folders.contains(&name.as_str()) {
                dirs.push((name, path));
            } else {
                diags.push(layout(
                    format!("stray folder `{name}` in `{}`", shown(dir)),
                    format!(
                        "gene folders are {}{}; rename it, or start its name with `_` to keep it unread",
                        suggest::list(folders),
                        suggest::hint(&name, folders.iter().copied())
                    ),
                    &path,
                ));
            }
            continue;
        }
        let (stem, ext) = split_name(&name);
        if !matches!(ext, "json" | "toml") || !singles.contains(&stem) {
            let what = if matches!(ext, "json" | "toml") {
                format!(
                    "the config files here are {}{}",
                    suggest::list(singles.iter().map(|s| format!("{s}.json"))),
                    suggest::hint(stem, known.iter().copied())
                )
            } else {
                "config files end in `.json` or `.toml`".to_owned()
            };
            diags.push(layout(
                format!("stray file `{name}` in `{}`", shown(dir)),
                format!("{what}; rename it, or start its name with `_` to keep it unread"),
                &path,
            ));
            continue;
        }
        files.push((stem.to_owned(), path));
    }

    let files = by_stem(files);
    let mut layers = Vec::new();
    for single in &singles {
        let Some((_, paths)) = files.iter().find(|(stem, _)| stem == single) else {
            continue;
        };
        let Some(path) = one_format(paths, diags, &shown) else {
            continue;
        };
        let file = shown(&path);
        let Ok(value) = read_file(&path, &file).map_err(|d| diags.push(*d)) else {
            continue;
        };
        let id = sources.add(Source::File(file.clone()));
        if *single == MAIN_FILE {
            match value {
                Value::Object(_) => layers.push(Tagged::new(&value, id)),
                other => diags.push(not_a_map(&file, &other)),
            }
        } else {
            let mut layer = Tagged::map(id);
            layer.set(&section_key(single), Tagged::new(&value, id));
            layers.push(layer);
        }
    }
    for folder in folders {
        let Some((_, path)) = dirs.iter().find(|(n, _)| n == folder) else {
            continue;
        };
        if let Some(layer) = read_gene_folder(folder, path, sources, diags, &shown) {
            layers.push(layer);
        }
    }
    layers
}

fn read_gene_folder(
    folder: &str,
    dir: &Path,
    sources: &mut Sources,
    diags: &mut Diagnostics,
    shown: &dyn Fn(&Path) -> String,
) -> Option<Tagged> {
    let mut items = Vec::new();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for (name, path, is_dir) in entries(dir, diags, shown) {
        let (stem, ext) = split_name(&name);
        if is_dir || !matches!(ext, "json" | "toml") {
            diags.push(
                Diagnostic::error(
                    Code::LAYOUT,
                    "",
                    format!("stray {} `{name}` in gene folder `{}`", if is_dir { "folder" } else { "file" }, shown(dir)),
                    "a gene folder holds `.json` or `.toml` files only; move it, or start its name with `_` to keep it unread".into(),
                )
                .with_file(Some(&shown(&path))),
            );
            continue;
        }
        files.push((stem.to_owned(), path));
    }
    for (_, paths) in by_stem(files) {
        let Some(path) = one_format(&paths, diags, shown) else {
            continue;
        };
        let file = shown(&path);
        let Ok(value) = read_file(&path, &file).map_err(|d| diags.push(*d)) else {
            continue;
        };
        let id = sources.add(Source::File(file.clone()));
        match &value {
            Value::Object(_) => items.push(Tagged::new(&value, id)),
            Value::Array(list)
                if list
                    .iter()
                    .all(|v| v.is_object() || v == super::tree::BASE_MARKER) =>
            {
                items.extend(list.iter().map(|v| Tagged::new(v, id)));
            }
            other => diags.push(
                Diagnostic::error(
                    Code::FIELD_TYPE,
                    "",
                    format!("`{file}` holds `{}`", short(other)),
                    "a gene folder file holds one nucleotide config (a map) or a list of them"
                        .into(),
                )
                .with_file(Some(&file)),
            ),
        }
    }
    let folder_id = sources.add(Source::File(shown(dir)));
    let mut layer = Tagged::map(folder_id);
    layer.set(
        &section_key(folder),
        Tagged {
            node: Node::List(items),
            source: folder_id,
        },
    );
    Some(layer)
}

/// Files grouped by stem, in the order their stems first appear.
fn by_stem(files: Vec<(String, PathBuf)>) -> Vec<(String, Vec<PathBuf>)> {
    let mut out: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for (stem, path) in files {
        match out.iter_mut().find(|(s, _)| *s == stem) {
            Some((_, paths)) => paths.push(path),
            None => out.push((stem, vec![path])),
        }
    }
    out
}

/// The one file of a stem, or an error when it is there in both formats.
fn one_format(
    paths: &[PathBuf],
    diags: &mut Diagnostics,
    shown: &dyn Fn(&Path) -> String,
) -> Option<PathBuf> {
    match paths {
        [one] => Some(one.clone()),
        [json, toml, ..] => {
            diags.push(
                Diagnostic::error(
                    Code::LAYOUT,
                    "",
                    format!(
                        "`{}` and `{}` are the same config in two formats",
                        shown(json),
                        shown(toml)
                    ),
                    "keep one of the two files".into(),
                )
                .with_file(Some(&shown(json))),
            );
            None
        }
        [] => None,
    }
}

/// The entries of a directory, sorted by name, ignored names left out.
fn entries(
    dir: &Path,
    diags: &mut Diagnostics,
    shown: &dyn Fn(&Path) -> String,
) -> Vec<(String, PathBuf, bool)> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) => {
            diags.push(
                Diagnostic::error(
                    Code::CONFIG_SYNTAX,
                    "",
                    format!("cannot read directory `{}`: {e}", shown(dir)),
                    "check that it exists and can be read".into(),
                )
                .with_file(Some(&shown(dir))),
            );
            return Vec::new();
        }
    };
    let mut out: Vec<(String, PathBuf, bool)> = read
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            (!is_ignored(&name)).then(|| (name, path.clone(), path.is_dir()))
        })
        .collect();
    out.sort();
    out
}

fn split_name(name: &str) -> (&str, &str) {
    name.rsplit_once('.').unwrap_or((name, ""))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

fn not_a_map(file: &str, v: &Value) -> Diagnostic {
    Diagnostic::error(
        Code::FIELD_TYPE,
        "",
        format!(
            "`{file}` holds `{}`, not a map of config sections",
            short(v)
        ),
        "config_main holds a map such as `{\"trainer_config\": {...}, \"plugins_config\": [...]}`"
            .into(),
    )
    .with_file(Some(file))
}
