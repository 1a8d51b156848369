//! The model's own config (`model.json` → `model_config`): what nucleus7's `Model` takes
//! besides its nucleotides. Every field does something; nucleus7 fields that nc7 does not
//! implement are refused with what to do instead.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::SettingsError;

/// `model_config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The coefficient of an L1 penalty on every trainable parameter, added to the total loss
    /// as `regularization_loss_l1 = c · Σ|w|` (0: none).
    #[serde(default)]
    pub regularization_l1: f64,
    /// The coefficient of an L2 penalty on every trainable parameter, added to the total loss
    /// as `regularization_loss_l2 = c · Σw² / 2` (0: none).
    #[serde(default)]
    pub regularization_l2: f64,
    /// The weight of each loss nucleotide's total in the model's total loss, by the loss's
    /// name (1 when absent).
    #[serde(default)]
    pub loss_weights: BTreeMap<String, f64>,
}

inventory::submit! {
    crate::config::SettingsSection {
        key: "model_config",
        fields: crate::config::serde_fields::<ModelConfig>,
    }
}

/// nucleus7 `Model` arguments that nc7 does not take, and what to do instead.
const NOT_IN_NC7: [(&str, &str); 3] = [
    (
        "mixed_precision_config",
        "mixed precision is the trainer's `precision` in nc7 (`\"precision\": \"f16\"` in trainer_config, or `--precision f16`); remove `mixed_precision_config`",
    ),
    (
        "aggregation_method",
        "burn sums gradients itself, so there is no aggregation method to choose; remove `aggregation_method`",
    ),
    (
        "load_config",
        "nc7 loads weights before training with `trainer_config.load_config` (by nucleotide name); move it to trainer.json",
    ),
];

impl ModelConfig {
    /// Reads `model_config` (absent: the defaults); each problem names its field.
    pub fn from_value(value: &serde_json::Value) -> Result<ModelConfig, SettingsError> {
        if value.is_null() {
            return Ok(ModelConfig::default());
        }
        if let Some(map) = value.as_object() {
            let refused: Vec<String> = NOT_IN_NC7
                .iter()
                .filter(|(field, _)| map.contains_key(*field))
                .map(|(field, why)| format!("model_config.{field}: {why}"))
                .collect();
            if !refused.is_empty() {
                return Err(SettingsError {
                    section: "model_config".to_owned(),
                    problems: refused,
                });
            }
        }
        let config: ModelConfig = crate::config::read_section("model_config", value)?;
        let mut problems = Vec::new();
        for (field, c) in [
            ("regularization_l1", config.regularization_l1),
            ("regularization_l2", config.regularization_l2),
        ] {
            if c < 0.0 || !c.is_finite() {
                problems.push(format!(
                    "model_config.{field} must be a number of 0 or more"
                ));
            }
        }
        for (loss, w) in &config.loss_weights {
            if !w.is_finite() {
                problems.push(format!(
                    "model_config.loss_weights.{loss} must be a finite number"
                ));
            }
        }
        SettingsError::check("model_config", config, problems)
    }

    /// Whether a weight penalty is added to the loss.
    pub fn regularizes(&self) -> bool {
        self.regularization_l1 > 0.0 || self.regularization_l2 > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_refuses() {
        assert_eq!(
            ModelConfig::from_value(&serde_json::Value::Null).unwrap(),
            ModelConfig::default()
        );
        let c = ModelConfig::from_value(
            &json!({"regularization_l2": 0.01, "loss_weights": {"ce": 2.0}}),
        )
        .unwrap();
        assert!(c.regularizes());
        assert_eq!(c.loss_weights["ce"], 2.0);
        let e = ModelConfig::from_value(&json!({"mixed_precision_config": {"use": true}}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mixed precision is the trainer's `precision`"),
            "{e}"
        );
        let e = ModelConfig::from_value(&json!({"load_config": {}}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("trainer_config.load_config"), "{e}");
        let e = ModelConfig::from_value(&json!({"regularisation_l2": 0.1}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `regularisation_l2`"), "{e}");
        let e = ModelConfig::from_value(&json!({"regularization_l1": -1.0}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("regularization_l1 must be a number of 0 or more"),
            "{e}"
        );
    }
}
