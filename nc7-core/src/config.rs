//! A project's configs: nucleus7's layout, layering (defaults < global config < `config_main`
//! < single files < gene folders < extra config directories < `NC7_…` environment <
//! `--set`), nucleus7's update rule, global-config scopes, and where each value came from.

pub mod check;
mod global;
mod layout;
mod nucleotides;
mod resolve;
mod settings;
mod tree;

pub use global::Scope;
pub(crate) use global::check_global;
pub use layout::{
    GLOBAL_FILE, MAIN_FILE, MODEL_SECTIONS, NucleotideSection, RunType, SectionShape,
};
pub use nucleotides::{NucleotideEntry, complete_nucleotides};
pub use resolve::{Layered, Overrides, layer, param_name, param_value};
pub use settings::{SettingsError, SettingsSection};
pub(crate) use settings::{section_fields, serde_fields};
pub use tree::{BASE_MARKER, Node, SourceId, Tagged, UPDATE_MARKER, update};

use std::fmt;

/// Where a config value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// nc7's built-in default.
    Builtin,
    /// A config file or gene folder, as a path relative to the project.
    File(String),
    /// An environment variable.
    Env(String),
    /// A `--set` argument.
    Set(String),
    /// The project global config, with the scope that gave the value.
    Global(Scope),
    /// The default of a nucleotide type's config field.
    Default(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Builtin => f.write_str("built-in default"),
            Source::File(p) => f.write_str(p),
            Source::Env(v) => write!(f, "environment `{v}`"),
            Source::Set(a) => write!(f, "--set {a}"),
            Source::Global(scope) => write!(f, "{GLOBAL_FILE}, {scope}"),
            Source::Default(class) => write!(f, "default of `{class}`"),
        }
    }
}

/// The sources of one resolved config; [`SourceId`]s index it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources(Vec<Source>);

impl Sources {
    /// Adds a source (or finds the same one) and returns its id.
    pub fn add(&mut self, source: Source) -> SourceId {
        match self.0.iter().position(|s| *s == source) {
            Some(i) => i,
            None => {
                self.0.push(source);
                self.0.len() - 1
            }
        }
    }

    /// The source of an id.
    pub fn get(&self, id: SourceId) -> &Source {
        &self.0[id]
    }

    /// The file of an id, when the source is a file.
    pub fn file(&self, id: SourceId) -> Option<&str> {
        match self.0.get(id) {
            Some(Source::File(f)) => Some(f),
            _ => None,
        }
    }
}

/// Reads a section of settings (`trainer_config`, `inferer_config`) into its struct; the error
/// names the field by its path in the section.
pub(crate) fn read_section<T: serde::de::DeserializeOwned>(
    section: &str,
    value: &serde_json::Value,
) -> Result<T, SettingsError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let problem = if path == "." {
            format!("{section}: {}", e.into_inner())
        } else {
            format!("{section}.{path}: {}", e.into_inner())
        };
        SettingsError::one(section, problem)
    })
}
