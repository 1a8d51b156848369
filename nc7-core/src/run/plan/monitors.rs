//! Checks of what the trainer watches and weights: monitors name evaluation values, loss weights name losses.

use super::*;

/// The evaluation values a model reports, as monitors name them: `loss`, each loss's
/// `<loss>/<key>` for its generated keys named `loss…`, and `<metric or summary>/<key>` for
/// each scalar key (`scalar_` dropped). `None` for a nucleotide whose keys are dynamic.
pub(super) fn evaluation_values(parts: &[Part]) -> (Vec<String>, Vec<String>) {
    let mut values = vec!["loss".to_owned()];
    let mut dynamic = Vec::new();
    for p in parts {
        let signature = (p.registration.signature)();
        let scalar = |k: &KeySpec| {
            matches!(
                k.kind,
                ValueKind::Float
                    | ValueKind::Int
                    | ValueKind::Any
                    | ValueKind::Tensor {
                        dtype: TensorDtype::Float | TensorDtype::Int,
                        ..
                    }
            )
        };
        let keys: Vec<String> = match p.kind {
            Kind::ModelLoss => leaf_keys(&signature.generated)
                .into_iter()
                .filter(|(k, _)| k.starts_with("loss"))
                .map(|(k, _)| k)
                .collect(),
            Kind::ModelMetric | Kind::ModelSummary => leaf_keys(&signature.generated)
                .into_iter()
                .filter(|(_, spec)| scalar(spec))
                .map(|(k, _)| k.strip_prefix("scalar_").unwrap_or(&k).to_owned())
                .collect(),
            _ => continue,
        };
        if signature.dynamic_generated {
            dynamic.push(format!("{}/", p.name));
        }
        values.extend(keys.into_iter().map(|k| format!("{}/{k}", p.name)));
    }
    (values, dynamic)
}

/// Every leaf key of a signature's keys, nested keys joined with `:`.
pub(super) fn leaf_keys(keys: &[KeySpec]) -> Vec<(String, KeySpec)> {
    let mut out = Vec::new();
    for k in keys {
        if k.children.is_empty() {
            out.push((k.name.to_string(), k.clone()));
        } else {
            for (child, spec) in leaf_keys(k.children) {
                out.push((format!("{}:{child}", k.name), spec));
            }
        }
    }
    out
}

/// The KPI values evaluations give, as monitors name them: `kpi/<accumulator>/<key>` for each
/// number, nested keys joined by `/`; prefixes (ending in `/`) for vectors, whose elements are
/// `…/<i>`, and for accumulators whose keys are dynamic.
pub(super) fn kpi_values(kpi: &KpiEvaluatorPlan) -> (Vec<String>, Vec<String>) {
    let mut values = Vec::new();
    let mut prefixes = Vec::new();
    for p in kpi.parts.iter().filter(|p| p.kind == Kind::KpiAccumulator) {
        let signature = (p.registration.signature)();
        if signature.dynamic_generated {
            prefixes.push(format!("kpi/{}/", p.name));
        }
        for (key, spec) in leaf_keys(&signature.generated) {
            if key.split(':').any(|k| k.starts_with("image_")) {
                continue;
            }
            let name = format!("kpi/{}/{}", p.name, key.replace(':', "/"));
            match spec.kind {
                ValueKind::Float | ValueKind::Int | ValueKind::Bool | ValueKind::Any => {
                    values.push(name)
                }
                ValueKind::List => prefixes.push(format!("{name}/")),
                ValueKind::Tensor {
                    dtype: TensorDtype::Float | TensorDtype::Int,
                    rank,
                } => {
                    if rank != Some(1) {
                        values.push(name.clone()); // A one-element tensor is a number.
                    }
                    if matches!(rank, Some(1) | None) {
                        prefixes.push(format!("{name}/"));
                    }
                }
                _ => {}
            }
        }
    }
    (values, prefixes)
}

/// `keep_best` and `early_stopping` watch a value some evaluation output produces. A KPI
/// monitor may leave out the accumulator's name (`kpi/f1_macro`) when one accumulator alone
/// gives that key: it is written out in full in the plan.
pub(super) fn check_monitors(
    check: &ProjectCheck,
    parts: &Parts<'_>,
    kpi: Option<&KpiEvaluatorPlan>,
    trainer: &mut TrainerConfig,
    diags: &mut Diagnostics,
) {
    let monitors = [
        trainer
            .keep_best
            .as_mut()
            .map(|k| ("keep_best", &mut k.monitor)),
        trainer
            .early_stopping
            .as_mut()
            .map(|e| ("early_stopping", &mut e.monitor)),
    ];
    if monitors.iter().all(Option::is_none) {
        return;
    }
    let model: Vec<&NucleotideEntry> = check
        .nucleotides
        .iter()
        .filter(|e| MODEL_SECTIONS.iter().any(|s| s.key == e.section))
        .collect();
    if model.iter().any(|e| e.registration.is_none()) {
        return; // An unknown class name is reported already; its keys are not known.
    }
    let sections: Vec<&str> = MODEL_SECTIONS.iter().map(|s| s.key).collect();
    let parts = parts.of_sections(&sections);
    let (mut values, mut dynamic) = evaluation_values(&parts);
    if let Some(kpi) = kpi {
        let (v, d) = kpi_values(kpi);
        values.extend(v);
        dynamic.extend(d);
    }
    let element = |monitor: &str, prefix: &str| {
        monitor.strip_prefix(prefix).is_some_and(|rest| {
            !rest.is_empty() && (prefix.ends_with('/') || rest.starts_with('/'))
        })
    };
    for (field, monitor) in monitors.into_iter().flatten() {
        if let Some(short) = monitor.strip_prefix("kpi/") {
            let full: Vec<&String> = values
                .iter()
                .filter(|v| v.splitn(3, '/').nth(2) == Some(short))
                .collect();
            if let [one] = full[..]
                && !values.contains(monitor)
            {
                *monitor = one.clone();
            }
        }
        let monitor = monitor.as_str();
        if values.iter().any(|v| v == monitor) || dynamic.iter().any(|d| element(monitor, d)) {
            continue;
        }
        diags.push(
            Diagnostic::error(
                Code::FIELD_TYPE,
                "",
                format!(
                    "trainer_config.{field}.monitor `{monitor}` is no evaluation value{}",
                    suggest::hint(monitor, values.iter().map(String::as_str))
                ),
                format!("evaluations give {}", suggest::list(&values)),
            )
            .with_key(field)
            .with_file(section_file(check, "trainer_config")),
        );
    }
}

/// `model_config.loss_weights` names loss nucleotides.
pub(super) fn check_loss_weights(
    check: &ProjectCheck,
    config: &ModelConfig,
    diags: &mut Diagnostics,
) {
    let losses: Vec<&str> = check
        .nucleotides
        .iter()
        .filter(|e| e.kind == Kind::ModelLoss)
        .map(NucleotideEntry::name)
        .collect();
    for name in config.loss_weights.keys() {
        if losses.contains(&name.as_str()) {
            continue;
        }
        diags.push(
            Diagnostic::error(
                Code::UNKNOWN_FIELD,
                "",
                format!(
                    "model_config.loss_weights names `{name}`, which is no loss of the model{}",
                    suggest::hint(name, losses.iter().copied())
                ),
                format!("its keys are loss names: {}", suggest::list(&losses)),
            )
            .with_key("loss_weights")
            .with_file(section_file(check, "model_config")),
        );
    }
}
