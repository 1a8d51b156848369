//! The inferer's own config (`inference/configs/inferer.json` → `inferer_config`).

use serde::{Deserialize, Serialize};

/// `inferer_config`; every field can also be given on the command line, which wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfererConfig {
    /// Samples per batch (`--batch-size`); one of the two must give it.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Iterations each stage may run ahead of the next (`--prefetch`); each queue also holds at
    /// most 128 MiB of tensors (always one iteration).
    #[serde(default = "sixteen")]
    pub prefetch_buffer_size: usize,
    /// Read, predict and call back in one thread (`--single-thread`).
    #[serde(default)]
    pub single_thread: bool,
    /// Log and skip samples the data feeder fails to read (`--skip-bad-samples`).
    #[serde(default)]
    pub skip_bad_samples: bool,
    /// `cpu`, `cuda` or `cuda:N` (`--device`). When absent, the project's device
    /// (`project.toml`), else the CPU.
    #[serde(default)]
    pub device: Option<String>,
    /// Compute threads (`--threads`); when absent, the project's (`project.toml`), else
    /// every core available.
    #[serde(default)]
    pub threads: Option<usize>,
    /// The saved model (a name in `saved_models/`, or a path); the newest when absent
    /// (`--saved-model`).
    #[serde(default)]
    pub saved_model: Option<String>,
}

inventory::submit! {
    crate::config::SettingsSection {
        key: "inferer_config",
        fields: crate::config::serde_fields::<InfererConfig>,
    }
}

/// Deep queues smooth the stages' jitter (the inferer benchmark: 2 iterations ahead reach 82 %
/// of the machine's ceiling, 8 reach 88 %, 16 reach 93 %); the queues' byte bound keeps large
/// batches from piling up.
fn sixteen() -> usize {
    16
}

impl Default for InfererConfig {
    fn default() -> Self {
        InfererConfig {
            batch_size: None,
            prefetch_buffer_size: sixteen(),
            single_thread: false,
            skip_bad_samples: false,
            device: None,
            threads: None,
            saved_model: None,
        }
    }
}

impl InfererConfig {
    /// Reads `inferer_config` (absent: the defaults); the error names the field.
    pub fn from_value(
        value: &serde_json::Value,
    ) -> Result<InfererConfig, crate::config::SettingsError> {
        if value.is_null() {
            return Ok(InfererConfig::default());
        }
        let config: InfererConfig = crate::config::read_section("inferer_config", value)?;
        if config.batch_size == Some(0) {
            return Err(crate::config::SettingsError::one(
                "inferer_config",
                "inferer_config.batch_size must be at least 1",
            ));
        }
        Ok(config)
    }
}

/// The settings of a run without a model: `kpi_evaluator_config`
/// (`kpi_evaluation/configs/kpi_evaluator.json`) and `data_extraction_config`
/// (`data_extraction/configs/data_extraction.json`); the command line wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Samples per iteration (`--batch-size`).
    #[serde(default = "one")]
    pub batch_size: usize,
    /// Iterations the reading may run ahead of the rest (`--prefetch`; each queue also holds
    /// at most 128 MiB of tensors, always one iteration).
    #[serde(default = "sixteen")]
    pub prefetch_buffer_size: usize,
    /// Read and evaluate in one thread (`--single-thread`).
    #[serde(default)]
    pub single_thread: bool,
    /// Log and skip samples the data feeder fails to read (`--skip-bad-samples`).
    #[serde(default)]
    pub skip_bad_samples: bool,
    /// `cpu`, `cuda` or `cuda:N`: where the data feeder's tensors are made (`--device`).
    #[serde(default)]
    pub device: Option<String>,
    /// Compute threads (`--threads`); when absent, the project's (`project.toml`), else
    /// every core available.
    #[serde(default)]
    pub threads: Option<usize>,
}

fn one() -> usize {
    1
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            batch_size: one(),
            prefetch_buffer_size: sixteen(),
            single_thread: false,
            skip_bad_samples: false,
            device: None,
            threads: None,
        }
    }
}

inventory::submit! {
    crate::config::SettingsSection {
        key: "kpi_evaluator_config",
        fields: crate::config::serde_fields::<FeedConfig>,
    }
}

inventory::submit! {
    crate::config::SettingsSection {
        key: "data_extraction_config",
        fields: crate::config::serde_fields::<FeedConfig>,
    }
}

impl FeedConfig {
    /// Reads the section `key` (absent: the defaults); the error names the field.
    pub fn from_value(
        key: &'static str,
        value: &serde_json::Value,
    ) -> Result<FeedConfig, crate::config::SettingsError> {
        if value.is_null() {
            return Ok(FeedConfig::default());
        }
        let config: FeedConfig = crate::config::read_section(key, value)?;
        if config.batch_size == 0 {
            return Err(crate::config::SettingsError::one(
                key,
                format!("{key}.batch_size must be at least 1"),
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_lists_every_field() {
        let v = serde_json::to_value(InfererConfig::default()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, crate::config::section_fields("inferer_config"));
    }

    #[test]
    fn reads_defaults_fields_and_refuses_bad_ones() {
        assert_eq!(
            InfererConfig::from_value(&serde_json::Value::Null).unwrap(),
            InfererConfig::default()
        );
        let c =
            InfererConfig::from_value(&json!({"batch_size": 4, "single_thread": true})).unwrap();
        assert_eq!(
            (c.batch_size, c.single_thread, c.prefetch_buffer_size),
            (Some(4), true, 16)
        );
        let cases = [
            (
                json!({"batch_sise": 4}),
                "inferer_config.batch_sise: unknown field `batch_sise`, expected one of `batch_size`",
            ),
            (
                json!({"batch_size": "4"}),
                "inferer_config.batch_size: invalid type",
            ),
            (json!({"batch_size": 0}), "batch_size must be at least 1"),
        ];
        for (value, expected) in cases {
            let e = InfererConfig::from_value(&value).unwrap_err().to_string();
            assert!(e.contains(expected), "{value}: {e}");
        }
    }
}
